#!/usr/bin/env bash
# The rule model's truth table with real packets through a real bridge
# (policy: tests/kernel/policies/rules.ini), both sides of each rule, IPv4
# and IPv6: negated sources, destinations and CIDRs; port ranges, single
# UDP ports, all-port TCP, nested service objects; ICMP and ICMPv6 types
# and codes; protocols by number or name (raw IP datagrams, proto/N);
# reject (refused at once, not timed out); categories before file order,
# first match, disabled rules; a rule sent factored (a product of its
# sides' alternatives); tag criteria with a scope (scope|tag); the rules'
# named hit counters; a VM sending from (or reached at) its IPv6
# link-local address is that VM, quarantined too; a quarantined VM is
# out of a group of networks that excludes the quarantine.
source "$(dirname "$0")/lib.sh"
POLICY=$TOP/tests/kernel/policies/rules.ini
lab_up krules "$POLICY"
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"

# A blocked probe waits out its timeout: on the lab's veths an answer takes
# well under a millisecond, so 300 ms is plenty and keeps the test short.
T="--timeout 300"
expect() { # expect yes|no SRC DST PROTO [-6]
	local want=$1; shift
	if [ "$want" = yes ]; then check "$* reachable" reach "$@" $T
	else check "$* blocked" blocked "$@" $T; fi
}
both() { # both yes|no SRC DST PROTO: the same over IPv4 and IPv6
	expect "$@"
	expect "$@" -6
}

echo "# negation"
both no  app1 web1 tcp/80            # rule 101: sources = not apps
both no  app2 web1 tcp/80
both yes db1  web1 tcp/80
expect yes ops1 web1 tcp/80
expect yes ops1 web1 tcp/22          # rule 102: destinations = not dbs, app1
both yes ops1 app2 tcp/22
both no  ops1 db1  tcp/22
expect no  ops1 app1 tcp/22
expect yes web1 db1  tcp/5432        # rule 103: not 10.20.0.0/28, fd00:20::/123
expect yes ops1 db1  tcp/5432
both no  app1 db1  tcp/5432
expect no  app2 db1  tcp/5432 -6
expect yes web1 db1  tcp/5432 -6
expect no  app1 web1 tcp/81          # rule 104: not 10.20.0.0/28 (IPv4 only) ...
expect yes db1  web1 tcp/81
expect yes app1 web1 tcp/81 -6       # ... admits every IPv6 address

echo "# port ranges, UDP, all of TCP, service objects"
for p in 8000 8005 8010; do expect yes app1 web1 tcp/$p; done   # rule 201: tcp/8000-8010
for p in 7999 8011; do expect no app1 web1 tcp/$p; done
expect yes app1 web1 tcp/8010 -6
expect no  app1 web1 tcp/8011 -6
expect no  app2 web1 tcp/8005        # the range is app1's only
both yes app1 db1 udp/5353           # rule 202: udp/5353
expect no  app1 db1 udp/5354
expect no  app1 db1 tcp/5353         # the protocol counts, not only the port
expect no  db1  app1 udp/5353        # one way only
expect yes db1  ops1 tcp/1           # rule 204: tcp (every port)
both yes db1  ops1 tcp/65535
expect no  db1  ops1 udp/53
expect no  db1  ops1 icmp
both yes ops1 app2 tcp/9100          # rule 203: monitoring = node-exporter (tcp/9100),
expect yes ops1 app2 udp/161         #   udp/161, tcp/9200-9201
expect yes ops1 app2 tcp/9200
both yes ops1 app2 tcp/9201
expect no  ops1 app2 tcp/9202
expect no  ops1 app2 udp/162
expect no  ops1 app2 tcp/161
expect no  ops1 app2 icmp

echo "# ICMP types and codes"
both yes app2 web1 icmp              # rule 301: icmp/echo-request, icmpv6/echo-request
both no  app1 web1 icmp
both no  app2 db1  icmp              # rule 302: timestamp-request, icmpv6/144 only
both yes ops1 db1  icmp              # rule 303: icmp/8:0, icmpv6/128
both no  web1 app1 icmp              # rule 304: icmp/8:1, icmpv6/128:1 (ping's code is 0)

echo "# other IP protocols (raw datagrams, echoed back)"
# Conntrack keys GRE (version 0) and unknown protocols by the address pair
# alone: once web1 -> db1 proto/47 passed, db1 -> web1 proto/47 would be its
# reply.  So the direction the policy forbids is probed first.
expect no  db1  web1 proto/47
both yes web1 db1  proto/47          # rule 401: proto/gre
expect no  web1 db1  proto/253
both yes app1 ops1 proto/253         # rule 402: proto/253
expect no  app1 ops1 proto/47
expect no  app2 ops1 proto/253       # rule 402 is app1's only
expect no  ops1 app1 proto/254

m=$("$LAB_BIN" matrix --lab "$LAB" --ports proto/253 --json $T 2>/dev/null)
check "matrix --json: app1 -> ops1 on proto/253" has "$m" '"app1":{[^}]*"ops1":\["proto/253"\]'
check "matrix --json: nothing else reaches db1 on proto/253" \
	test "$(printf '%s\n' "$m" | grep -o '"db1":\["proto/253"\]' | wc -l)" = 0
check "the probe refuses proto/6 (tcp has its own kind)" exits 2 "$LAB_BIN" probe app1 ops1 proto/6 --lab "$LAB"
check "the probe refuses proto/132 (conntrack checks SCTP headers)" exits 2 "$LAB_BIN" probe app1 ops1 proto/132 --lab "$LAB"
check "the probe refuses proto/0" exits 2 "$LAB_BIN" probe app1 ops1 proto/0 --lab "$LAB"
check "the probe refuses proto/256" exits 2 "$LAB_BIN" probe app1 ops1 proto/256 --lab "$LAB"

echo "# reject"
# docs/CONFIG.md: a reject answers with a TCP reset (TCP) or an ICMP
# administratively prohibited (otherwise): the client fails at once
# instead of timing out.  The probe says how long it took.
# Observed on 6.18: the inet table's reject builds its answer in the
# hypervisor's namespace and routes it there (nf_send_reset, icmp_send).
# A hypervisor with no route to its VMs' networks (the lab's hosts have no
# address on br-dfw) sends nothing, and the client times out; with a
# route (`ip route add 10.20.0.0/24 dev br-dfw` in the host's namespace)
# the reset and the "prohibited" arrive at once.
refused() { # refused SRC DST PROTO [-6]
	local out rc ms
	out=$("$LAB_BIN" probe "$@" --timeout 1000 --lab "$LAB" 2>&1); rc=$?
	ms=$(printf '%s\n' "$out" | sed -n 's/.*(\([0-9]*\) ms)$/\1/p')
	echo "#   $out"
	check "$* refused at once by rule 501 (reject, under 200 ms of a 1000 ms timeout)" \
		test "$rc" = 1 -a "${ms:-99999}" -lt 200
}
before=$(rule_counter 501 out_packets)
refused app2 ops1 tcp/3389
refused app2 ops1 tcp/3389 -6
refused app2 ops1 udp/3389
refused app2 ops1 udp/3389 -6
# An echo request's "prohibited" comes from the hypervisor (192.0.0.8 or
# the bridge's link-local address), not from ops1, so the probe (which
# reads only what ops1 sends) cannot tell it from a drop: blocked is all
# that is checked.
both no app2 ops1 icmp
check "rule 501 counted the rejected packets" test "$(rule_counter 501 out_packets)" -ge $((${before:-0} + 6))
expect no app2 ops1 tcp/3390         # the rest is dropped by the default, silently
expect yes db1 ops1 tcp/3389         # rule 204, untouched by rule 501

echo "# categories, first match, disabled rules"
both no  app1 web1 tcp/443           # rule 602 (emergency, later in the file) before 601
both yes app2 web1 tcp/443           # rule 601 (application) for the other apps
expect no  ops1 app2 tcp/7000        # rule 603 drop, first match ...
expect yes ops1 app2 tcp/7001        # ... rule 604 allow decides the rest of its range
expect yes ops1 web1 tcp/22          # rule 605 (emergency drop) is disabled
expect no  app1 app2 tcp/6000        # rule 606 (allow) is disabled
out=$(ctl rules web1 2>&1)
check "the disabled rules are not in force at a vNIC (dfwctl rules)" \
	test "$(printf '%s\n' "$out" | grep -c 'id=60[56] ')" = 0
check "rule 602 (emergency, later in the file) comes first in web1's chains" \
	test "$(printf '%s\n' "$out" | grep -m1 -o 'id=[0-9a-z]*')" = id=602

echo "# a product of alternatives, sent factored (rule 801, dfw/factor.c)"
table=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list table inet dfw)
check "rule 801 has a leaf chain in each direction" \
	test "$(printf '%s\n' "$table" | grep -c '^\s*chain [io]-[0-9a-f]*\.r801 {')" = 2
check "its outer rules jump to it" has "$table" 'ip saddr @g-apps-4 jump i-[0-9a-f]*\.r801'
both yes app1 db1  tcp/7100
both yes ops1 web1 udp/7101
both yes app2 web1 tcp/7100
expect yes ops1 db1 udp/7101 -6
expect no  app1 db1  tcp/7101        # the service counts: tcp/7100, udp/7101
expect no  app1 db1  udp/7100
both no  web1 db1  tcp/7100          # web1 is no source
both no  ops1 app2 tcp/7100          # app2 is no destination
expect no  db1  app1 tcp/7100        # one way only

echo "# hit counters"
json=$(ctl counters --json 2>/dev/null)
check "counters --json answers" test -n "$json"
for id in 101 102 103 104 201 202 203 204 301 303 401 402 601 604 801; do
	check "rule $id counted packets out and in" \
		test "$(rule_counter $id out_packets)" -gt 0 -a "$(rule_counter $id in_packets)" -gt 0
done
for id in 602 603; do # drops at the source vNIC: nothing reaches the in side
	check "drop rule $id counted packets out" test "$(rule_counter $id out_packets)" -gt 0
done
check "rule 302 (timestamp only) counted no echo request" test "$(rule_counter 302 out_packets)" = 0
check "rule 304 (code 1 only) counted no ping" test "$(rule_counter 304 out_packets)" = 0
check "the default rule counted the probes no rule allowed" \
	has "$(printf '%s\n' "$json" | tr '{' '\n' | grep '"rule":"default"')" '"out_packets":[1-9]'
nrules=$(printf '%s\n' "$json" | grep -o '"rule":' | wc -l)
check "unfiltered counters list every enabled rule and the default ($nrules)" test "$nrules" = 21
one=$(ctl counters --json --rule 201 2>/dev/null)
check "--rule 201 lists rule 201 only" test "$(printf '%s\n' "$one" | grep -o '"rule":[0-9a-z"]*' | tr '\n' ' ')" = '"rule":201 '
check "--rule 201 in text" has "$(ctl counters --rule 201)" "rule=201 .*out_packets=[1-9]"
check "--rule of a disabled rule (no kernel rule) lists nothing" \
	test "$(ctl counters --json --rule 606 2>/dev/null)" = "[]"
check "--rule of an unknown rule exits 1" exits 1 ctl counters --rule 9999
check "--rule abc exits 1" exits 1 ctl counters --rule abc

echo "# tag criteria with a scope (scope|tag)"
cp "$POLICY" "$TMPD/tags.ini"
cat >>"$TMPD/tags.ini" <<'EOF'

[tags]
names = dept|finance, dept|hr

[group finance]
match = tag equals dept|finance

[rule 701]
name = finance to the database
sources = finance
destinations = db1
services = tcp/1521
action = allow
EOF
out=$("$CTL_BIN" validate "$TMPD/tags.ini" 2>&1); rc=$?
check "a policy with scoped tags validates" test $rc -eq 0
if [ $rc -eq 0 ]; then
	rev=$(ctl apply "$TMPD/tags.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
	check "apply the policy with scoped tags" wait_realized "${rev:-999999}"
	expect no app2 db1 tcp/1521
	check "tag app2 dept|finance --wait" ctl tag --wait app2 'dept|finance'
	check "tags shows it" has "$(ctl tags app2)" 'dept|finance'
	check "app2 is in the finance group" sh -c "'$LAB_BIN' ctl --lab $LAB -- groups finance | grep -qw app2"
	both yes app2 db1 tcp/1521
	expect no app1 db1 tcp/1521
	check "tag app1 dept|hr --wait (another value in the scope)" ctl tag --wait app1 'dept|hr'
	check "app1 is not in the finance group" sh -c "! '$LAB_BIN' ctl --lab $LAB -- groups finance | grep -qw app1"
	expect no app1 db1 tcp/1521
	check "untag app2 dept|finance --wait" ctl untag --wait app2 'dept|finance'
	expect no app2 db1 tcp/1521
	check "rule 701 counted app2's packets" test "$(rule_counter 701 in_packets)" -gt 0
	check "an undeclared scoped tag exits 1" exits 1 ctl tag app2 'dept|sales'
else
	echo "# scope|tag checks not run: $out"
fi

echo "# a VM's IPv6 link-local address is the VM's; exclusion wins over a group's networks"
# docs/CONFIG.md: a vNIC may send from its EUI-64 link-local address, so
# rules that name the VM (or a group of it) name that address too.  The
# probes bind the guest's socket to it (nc -s fe80::…%eth0), towards a
# listener on the destination.
ll() { # ll VM: the guest's link-local address, as its kernel made it
	vmexec "$1" ip -6 -o addr show dev eth0 scope link 2>/dev/null |
		sed -n 's/.*inet6 \(fe80::[0-9a-f:]*\)\/64.*/\1/p' | head -n1
}
tcp6() { # tcp6 SRC SADDR DST DADDR PORT: one TCP connection; exit 0 when it connected
	local pgid rc
	setsid "$LAB_BIN" exec --lab "$LAB" "$3" -- timeout 5 nc -6 -l -p "$5" >/dev/null 2>&1 &
	pgid=$!
	sleep 0.3
	vmexec "$1" timeout 3 nc -6 -z -w 1 -s "$2" "$4" "$5" >/dev/null 2>&1; rc=$?
	kill -- "-$pgid" 2>/dev/null
	wait "$pgid" 2>/dev/null
	return $rc
}
llexpect() { # llexpect yes|no SRC DST DADDR PORT: from SRC's link-local address
	local from
	from="$(ll "$2")%eth0"
	if [ "$1" = yes ]; then check "$2 from $from -> $3 $4 tcp/$5 reachable" tcp6 "$2" "$from" "$3" "$4" "$5"
	else check_not "$2 from $from -> $3 $4 tcp/$5 blocked" tcp6 "$2" "$from" "$3" "$4" "$5"; fi
}
check "app1's link-local address is the EUI-64 of its MAC (02:00:00:20:00:11)" test "$(ll app1)" = fe80::ff:fe20:11
cp "$POLICY" "$TMPD/ll.ini"
rev=$(ctl apply "$TMPD/ll.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "apply rules.ini again" wait_realized "${rev:-999999}"
llexpect no  app1 web1 fd00:20::21 80          # rule 101: sources = not apps
llexpect yes db1  web1 fd00:20::21 80
llexpect yes app1 web1 fd00:20::21 8005        # rule 201: sources = app1 (a VM)
llexpect yes app2 web1 "$(ll web1)%eth0" 443   # rule 601: apps to webs, to web1's link-local
llexpect yes ops1 app2 "$(ll app2)%eth0" 22    # rule 102: ops1 to not dbs, app1
llexpect no  ops1 db1  "$(ll db1)%eth0" 22
llexpect no  ops1 app1 "$(ll app1)%eth0" 22

cat >>"$TMPD/ll.ini" <<'EOF2'

[tags]
names = threat.high

[group quarantine]
match = tag equals threat.high
quarantine = yes

; The lab's networks, but not what quarantine holds.
[group lab-nets]
addresses = 10.20.0.0/24, fd00:20::/64
exclude_groups = quarantine

[rule 901]
name = emergency: the quarantine sends nothing
category = emergency
sources = quarantine
action = drop

; To them, so that rule 901 does not decide first.
[rule 902]
name = db1 to the lab's networks 5000
sources = db1
destinations = lab-nets
services = tcp/5000
action = allow
EOF2
rev=$(ctl apply "$TMPD/ll.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "apply a policy with a quarantine" wait_realized "${rev:-999999}"
llexpect yes app2 web1 fd00:20::21 81          # rule 104 admits every IPv6 address
both yes db1 app2 tcp/5000                     # rule 902: in the lab's networks
llexpect no  db1 app2 "$(ll app2)%eth0" 5000   # a link-local address is not in them
check "tag app2 threat.high --wait" ctl tag --wait app2 threat.high
check "quarantine's IPv6 set holds app2's link-local address" \
	has "$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list set inet dfw g-quarantine-6)" "$(ll app2)"
llexpect no  app2 web1 fd00:20::21 81          # rule 901: from its link-local address too
expect no app2 web1 tcp/81 -6
both no  db1 app2 tcp/5000                     # excluded from the lab's networks
both yes db1 app1 tcp/5000
check "untag app2 threat.high --wait" ctl untag --wait app2 threat.high
check "quarantine's IPv6 set is empty again" \
	sh -c "! '$LAB_BIN' exec --lab '$LAB' host:hv1 -- nft list set inet dfw g-quarantine-6 | grep -q fe80"
llexpect yes app2 web1 fd00:20::21 81
both yes db1 app2 tcp/5000
