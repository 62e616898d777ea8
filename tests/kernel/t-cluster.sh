#!/usr/bin/env bash
# Cluster mode: three hypervisors (each a namespace with its own bridge,
# dfwd and nftables) joined by VXLAN over an underlay, one etcd as the
# store.  The VDI truth table across hosts equals the single-host one;
# quarantine from any CLI with --wait; `dfwctl hosts`; migration (policy
# first, fail closed, quarantine survives); an agent killed and restarted;
# etcd stopped and back; concurrent taggers; bad store contents.
source "$(dirname "$0")/lib.sh"
TMPD=$(mktemp -d)
PING_PID=""
cleanup() { [ -n "$PING_PID" ] && kill "$PING_PID" 2>/dev/null; stop_streams; rm -rf "$TMPD"; }
PORTS=tcp/443,tcp/445,tcp/4001,udp/53,icmp

echo "# the single-host truth table, for comparison"
LAB=kclone
trap 'cleanup; finish' EXIT
"$LAB_BIN" down --lab kclone >/dev/null 2>&1
if "$LAB_BIN" up "$TOP/configs/vdi.ini" --lab kclone >/dev/null; then
	"$LAB_BIN" matrix --lab kclone --ports $PORTS >"$TMPD/one-host"
	ok "single-host lab ran its matrix"
else
	bad "single-host lab comes up"
fi
"$LAB_BIN" down --lab kclone >/dev/null 2>&1

lab_up kclu "$TOP/configs/cluster.ini" --store etcd
trap 'cleanup; finish' EXIT
FAB=dfwl-$LAB-fabric
etcd_put() { # etcd_put KEY VALUE: a write behind dfw's back, through the gateway
	ip netns exec "$FAB" curl -s -m 3 "http://127.0.0.1:2379/v3/kv/put" -d \
		"{\"key\":\"$(printf %s "$LAB/kv/$1" | base64 -w0)\",\"value\":\"$(printf %s "$2" | base64 -w0)\"}"
}
etcd_reads() { # range requests etcd served so far
	ip netns exec "$FAB" curl -s -m 3 "http://127.0.0.1:2379/metrics" | awk '$1 == "etcd_mvcc_range_total" { print $2 }'
}
host_field() { # host_field HOST FIELD: from `dfwctl hosts`
	ctl hosts | awk -v h="$1" -v f="$2" '$0 ~ "host="h" " { for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }'
}
wait_hosts() { # wait_hosts FIELD VALUE HOST...: up to 10 s
	local f=$1 v=$2 h i ok_all; shift 2
	for i in $(seq 100); do
		ok_all=1
		for h in "$@"; do [ "$(host_field "$h" "$f")" = "$v" ] || ok_all=0; done
		[ $ok_all = 1 ] && return 0
		sleep 0.1
	done
	return 1
}
# The guest's view of eth0 (not its peer's: that moves with the port).
hosts_at() { # hosts_at REV HOST...: each host realized REV or later (10 s)
	local rev=$1 h i r ok_all; shift
	for i in $(seq 100); do
		ok_all=1
		for h in "$@"; do r=$(host_field "$h" revision); [ "${r:-0}" -ge "$rev" ] || ok_all=0; done
		[ $ok_all = 1 ] && return 0
		sleep 0.1
	done
	return 1
}
guest() { vmexec "$1" ip -o link show dev eth0 | sed 's/@if[0-9]*//; s/ link-netns.*//'; vmexec "$1" ip -o addr show dev eth0; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

echo "# three hosts, one store"
check "all three agents are alive" wait_hosts alive yes hv1 hv2 hv3
check "hv1 holds 3 vNICs" test "$(host_field hv1 vnics)" = 3
check "hv2 holds 2 vNICs" test "$(host_field hv2 vnics)" = 2
check "hv3 holds 2 vNICs" test "$(host_field hv3 vnics)" = 2
check "each host bridge has a VXLAN uplink" ip -n "dfwl-$LAB-h-hv2" -d link show dfw-uplink type vxlan
check "hv2's dfwd knows the uplink" sh -c "ip netns exec dfwl-$LAB-h-hv2 nft list map bridge dfw port_src | grep -q dfw-uplink"

echo "# the truth table across hosts equals the single-host one"
"$LAB_BIN" matrix --lab "$LAB" --ports $PORTS >"$TMPD/three-hosts"
check "3-host matrix == 1-host matrix" cmp "$TMPD/one-host" "$TMPD/three-hosts"
check "east-west blocked across hosts (desktop1@hv1 -> desktop3@hv2)" blocked desktop1 desktop3 tcp/445
check "east-west blocked across hosts (desktop3@hv2 -> desktop4@hv3)" blocked desktop3 desktop4 icmp
check "desktop3@hv2 reaches cs1@hv1" reach desktop3 cs1 tcp/443
check "desktop1@hv1 reaches fs1@hv2" reach desktop1 fs1 tcp/445
check "cross-host IPv6 (desktop4@hv3 -> dc1@hv3, desktop1@hv1 -> cs1)" sh -c \
	"'$LAB_BIN' probe desktop1 cs1 tcp/443 -6 --lab $LAB >/dev/null"
check "a 1 MB TCP transfer crosses the overlay (desktop3 -> cs1:443)" sh -c \
	"'$LAB_BIN' exec --lab $LAB cs1 -- sh -c 'timeout 5 nc -l -p 443 | wc -c' >$TMPD/bytes & sleep 0.3;
	 head -c 1000000 /dev/zero | '$LAB_BIN' exec --lab $LAB desktop3 -- timeout 5 nc -q1 10.10.0.21 443; wait; test \$(cat $TMPD/bytes) = 1000000"

echo "# an open connection across hosts is cut when its server is quarantined"
stream xhost fs1 10.10.0.22 445
sleep 0.5
n1=$(lines xhost)
ctl --wait tag fs1 threat.high >/dev/null 2>&1
sleep 0.3; n2=$(lines xhost); sleep 0.5; n3=$(lines xhost)
check "the desktop1@hv1 -> fs1@hv2 stream flowed ($n1 lines)" test "$n1" -gt 3
check "and stopped once fs1 was quarantined ($n2 -> $n3)" test "$n2" = "$n3"
check "hv2 (fs1's host) cut its connections" grep -q "quarantine: cut [1-9][0-9]* connection(s) of 1 VM(s) (fs1)" "/run/dfw-lab/$LAB/hv2.log"
check "hv1 did not walk its conntrack for a VM it does not hold" sh -c "! grep -q 'quarantine: cut' /run/dfw-lab/$LAB/hv1.log"
ctl --wait untag fs1 threat.high >/dev/null 2>&1
stop_streams

echo "# quarantine a VM on hv2 from a CLI anywhere, with --wait"
out=$(ctl --wait tag desktop3 threat.high 2>&1)
check "tag --wait reports all 3 hosts realized" has "$out" "^realized on 3 host(s) in"
check "quarantined desktop3@hv2 cannot reach fs1 (same host)" blocked desktop3 fs1 tcp/445
check "quarantined desktop3@hv2 cannot reach dc1@hv3" blocked desktop3 dc1 udp/53
check "quarantined desktop3@hv2 still reaches cs1@hv1:443 (exception)" reach desktop3 cs1 tcp/443
check "cs1@hv1 still reaches desktop3's agent port (exception)" reach cs1 desktop3 tcp/4001
check "cs1@hv1 cannot reach quarantined desktop3 on 443" blocked cs1 desktop3 tcp/443
out=$(ctl --wait untag desktop3 threat.high 2>&1)
check "untag --wait reports all 3 hosts realized" has "$out" "^realized on 3 host(s) in"
check "released desktop3 reaches fs1 again" reach desktop3 fs1 tcp/445

echo "# migration: desktop1 hv1 -> hv2"
before=$(guest desktop1)
out=$("$LAB_BIN" migrate desktop1 hv2 --lab "$LAB" 2>&1)
check "migrate succeeds" has "$out" "moved from hv1 to hv2"
check "migrate waited for every host to realize the placement" has "$out" "^realized on 3 host(s)"
check "the port now sits on hv2's bridge" ip -n "dfwl-$LAB-h-hv2" link show vnet-desktop1
check "the port is gone from hv1" exits 1 ip -n "dfwl-$LAB-h-hv1" link show vnet-desktop1
check "guest eth0 untouched (ifindex, MAC, addresses, link up)" test "$before" = "$(guest desktop1)"
check "hv1 no longer realizes desktop1's port" sh -c \
	"! ip netns exec dfwl-$LAB-h-hv1 nft list map bridge dfw port_src | grep -q vnet-desktop1"
check "hosts: hv1 2 vNICs, hv2 3" wait_hosts vnics 2 hv1
check "hosts: hv2 has 3 vNICs" test "$(host_field hv2 vnics)" = 3
check "migrated desktop1@hv2 reaches cs1@hv1" reach desktop1 cs1 tcp/443
check "migrated desktop1@hv2 reaches fs1 (now same host)" reach desktop1 fs1 tcp/445
check "east-west still blocked: desktop1 -> desktop3 (now same host)" blocked desktop1 desktop3 tcp/445
check "east-west still blocked: desktop2@hv1 -> desktop1@hv2" blocked desktop2 desktop1 icmp

echo "# quarantine survives a migration"
ctl --wait tag desktop4 threat.medium >/dev/null 2>&1
check "quarantined desktop4@hv3 blocked to fs1" blocked desktop4 fs1 tcp/445
"$LAB_BIN" migrate desktop4 hv1 --lab "$LAB" >/dev/null 2>&1
check "desktop4 moved to hv1" ip -n "dfwl-$LAB-h-hv1" link show vnet-desktop4
check "quarantined desktop4@hv1 still blocked to fs1" blocked desktop4 fs1 tcp/445
check "quarantined desktop4@hv1 still blocked to desktop2 (same host)" blocked desktop4 desktop2 icmp
check "quarantined desktop4@hv1 still reaches cs1 (exception)" reach desktop4 cs1 tcp/443
ctl --wait untag desktop4 threat.medium >/dev/null 2>&1
check "released desktop4@hv1 reaches fs1" reach desktop4 fs1 tcp/445

echo "# fail closed: a port that arrives before its policy passes nothing"
"$LAB_BIN" migrate desktop2 hv3 --no-place --lab "$LAB" >/dev/null 2>&1
check "desktop2's port arrived on hv3 unannounced to the store" ip -n "dfwl-$LAB-h-hv3" link show vnet-desktop2
check "unrealized desktop2@hv3 cannot reach cs1" blocked desktop2 cs1 tcp/443
check "hv3 counted drops from the unknown port" sh -c \
	"ip netns exec dfwl-$LAB-h-hv3 nft list chain bridge dfw classify | grep 'unknown port' | grep -vq 'packets 0 '"
ctl --wait place desktop2 hv3 >/dev/null 2>&1
check "after place --wait, desktop2@hv3 reaches cs1" reach desktop2 cs1 tcp/443
check "and is still blocked east-west" blocked desktop2 desktop4 icmp

echo "# an agent killed with SIGKILL, then restarted"
lab daemon kill hv2 >/dev/null
check "hosts shows hv2 dead once its lease expires" wait_hosts alive no hv2
check "enforcement stays on hv2: east-west blocked" blocked desktop3 desktop1 tcp/445
check "enforcement stays on hv2: allowed flow passes" reach desktop3 cs1 tcp/443
r0=$(etcd_reads)
out=$(ctl --wait=1500ms tag desktop2 threat.low 2>&1); rc=$?
r1=$(etcd_reads)
check "tag --wait with hv2 dead exits 2" test $rc = 2
check "etcd counts its reads" test -n "$r0" -a -n "$r1"
echo "# tag --wait=1500ms with hv2 dead: $((${r1:-0} - ${r0:-0})) etcd reads"
check "--wait reads a lagging host's status gently (< 1000 etcd reads in 1.5 s)" test $((${r1:-0} - ${r0:-0})) -lt 1000
check "... and names the lagging host" has "$out" "hv2 (at [0-9]*, no live agent"
rev=$(printf '%s\n' "$out" | sed -n 's/^revision //p')
vmexec desktop3 ping -i 0.02 -W 1 -c 150 10.10.0.11 >"$TMPD/ping" 2>&1 &
PING_PID=$!
sleep 0.4
lab daemon start hv2 >/dev/null
check "restarted hv2 resyncs to the tag made while it was dead" hosts_at "$rev" hv2
check "restarted hv2 is alive" wait_hosts alive yes hv2
wait $PING_PID; PING_PID=""
check "no east-west packet passed during hv2's restart" grep -q " 0 received" "$TMPD/ping"
check "desktop2@hv3 is quarantined" blocked desktop2 fs1 tcp/445
ctl --wait untag desktop2 threat.low >/dev/null 2>&1

echo "# etcd stopped, and back"
lab daemon stop --etcd >/dev/null
check "a tag while etcd is down fails cleanly (exit 3)" exits 3 ctl tag desktop1 threat.high
check "hosts is unreachable (exit 3)" exits 3 ctl hosts
check "enforcement stays: east-west blocked" blocked desktop1 desktop3 tcp/445
check "enforcement stays: allowed flow passes" reach desktop1 cs1 tcp/443
pid=$(cat "/run/dfw-lab/$LAB/hv1.pid")
t0=$(cpu_ticks "$pid"); sleep 3; t1=$(cpu_ticks "$pid")
echo "# dfwd on hv1 used $((t1 - t0)) CPU ticks in 3 s with etcd down"
check "dfwd uses little CPU while etcd is down (< 5% of a core)" test $((t1 - t0)) -lt 15
lab daemon start --etcd >/dev/null
out=$(ctl --wait=15s tag desktop1 threat.high 2>&1)
check "after etcd returns, a tag reaches all 3 hosts" has "$out" "^realized on 3 host(s)"
check "quarantined desktop1 blocked to fs1" blocked desktop1 fs1 tcp/445
ctl --wait untag desktop1 threat.high >/dev/null 2>&1

echo "# etcd unreachable from hv1 (its packets dropped, not refused)"
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft add table inet kblk
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft add chain inet kblk out "{ type filter hook output priority 0; }"
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft add rule inet kblk out tcp dport 2379 drop
ctl status >/dev/null 2>&1 # its wake-up reads the store, and fails after the read's timeout
# The reads and status publishes that failed wait before their next try
# (1 s, doubling): most requests meanwhile are answered at once.
fast=0 times=""
for i in 1 2 3 4 5; do
	t0=$(date +%s%N); ctl status >/dev/null 2>&1; t1=$(date +%s%N)
	ms=$(( (t1 - t0) / 1000000 )); times="$times $ms"
	[ $ms -lt 1000 ] && fast=$((fast + 1))
	sleep 0.2
done
echo "# status with etcd unreachable, ms:$times"
check "dfwd answers most requests at once while etcd is unreachable (3 of 5 within 1 s)" test $fast -ge 3
check "and says when it reads again" grep -q "reading store changes: .*(next try in [0-9]* ms, or when the store's watch fires)" "/run/dfw-lab/$LAB/hv1.log"
check "enforcement stays on hv1" blocked desktop1 desktop2 tcp/445
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft delete table inet kblk
out=$(ctl --wait=40s tag desktop1 threat.high 2>&1)
check "once etcd is reachable again, a tag reaches all 3 hosts" has "$out" "^realized on 3 host(s)"
ctl --wait untag desktop1 threat.high >/dev/null 2>&1

echo "# concurrent taggers"
for p in 1 2 3 4; do
	(
		for i in $(seq 15); do
			vm=desktop$(( (RANDOM % 4) + 1 )); op=tag; [ $((RANDOM % 2)) = 0 ] && op=untag
			t=threat.$(echo high medium low | cut -d' ' -f$(( (RANDOM % 3) + 1 )))
			out=$(ctl $op $vm $t 2>&1)
			r=$(printf '%s\n' "$out" | sed -n 's/^revision //p')
			# A tag already there (untag: not there) writes nothing.
			case $out in *"nothing changed"*) same=same ;; *) same=write ;; esac
			echo "$r $op $vm $t $same"
		done
	) >"$TMPD/ops.$p" &
done
wait
cat "$TMPD"/ops.* | sort -n >"$TMPD/all"
grep ' write$' "$TMPD/all" >"$TMPD/ops"
check "all 60 requests succeeded" test "$(grep -c '^[0-9]' "$TMPD/all")" = 60
check "every write that changed something got its own revision" \
	test "$(cut -d' ' -f1 "$TMPD/ops" | sort -u | wc -l)" = "$(wc -l <"$TMPD/ops")"
echo "# $(wc -l <"$TMPD/ops") of the 60 changed something"
# The serial outcome: replay the writes in revision order.
awk '{ k = $3 " " $4; s[k] = ($2 == "tag") } END { for (k in s) if (s[k]) print k }' "$TMPD/ops" | sort >"$TMPD/want"
ctl tags | sed -n 's/^ *vm=\([^ ]*\) tags=\(.*\)/\1 \2/p' | while read -r vm tags; do
	for t in $tags; do echo "$vm $t"; done
done | sort >"$TMPD/got"
check "final store state equals the serial outcome" cmp "$TMPD/want" "$TMPD/got"
last=$(tail -1 "$TMPD/ops" | cut -d' ' -f1)
check "every host realized the last write" hosts_at "$last" hv1 hv2 hv3
want_q=$(cut -d' ' -f1 "$TMPD/want" | sort -u | tr '\n' ' ')
for h in hv1 hv2 hv3; do
	got_q=$("$LAB_BIN" ctl --lab "$LAB" --host $h -- groups quarantine |
		sed -n 's/.* members=\(.*\) addresses=.*/\1/p' | tr ' ' '\n' | grep -v '^-$' | grep . | sort -u | tr '\n' ' ')
	check "$h's quarantine group matches the store ($want_q)" test "$got_q" = "$want_q"
done
echo "# (last concurrent write: revision $last)"

echo "# bad store contents"
etcd_put policy "[vm broken" >/dev/null
sleep 1
check "hv1 reports the bad policy key and keeps the last good one" grep -q "store key 'policy' is not a valid policy" "/run/dfw-lab/$LAB/hv1.log"
check "hv3 does too" grep -q "store key 'policy' is not a valid policy" "/run/dfw-lab/$LAB/hv3.log"
check "the last good policy stays in force (east-west blocked)" blocked desktop1 desktop3 tcp/445
check "the last good policy stays in force (allowed flow passes)" reach desktop3 cs1 tcp/443
etcd_put tag/ghost/threat.high "" >/dev/null
sleep 0.5
check "a tag of an unknown VM is reported with its key" grep -q "store key 'tag/ghost/threat.high': no VM 'ghost'" "/run/dfw-lab/$LAB/hv2.log"
etcd_put nonsense/key "x" >/dev/null
sleep 0.5
check "a key dfw does not write is reported when it arrives" grep -q "store key 'nonsense/key': not a key dfw writes" "/run/dfw-lab/$LAB/hv3.log"
etcd_put tag/desktop2/threat.high "$(printf '\377\376')" >/dev/null
sleep 0.5
check "a value that is not UTF-8 is reported with its key" grep -q 'store: .*key "tag/desktop2/threat.high".*skipped' "/run/dfw-lab/$LAB/hv1.log"
check "and ignored: desktop2 is not quarantined" reach desktop2 cs1 tcp/443
check "and ignored: desktop2 still blocked east-west" blocked desktop2 desktop4 icmp
out=$(ctl --wait apply "$TOP/configs/cluster.ini" 2>&1)
check "a good apply --wait recovers on all hosts" has "$out" "^realized on 3 host(s)"
check "and their last error, the rejected policy, is over" wait_hosts last_error none hv1 hv2 hv3
