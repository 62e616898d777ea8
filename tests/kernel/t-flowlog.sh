#!/usr/bin/env bash
# Flow logs: dfwd --flow-log (the lab always passes HOST.flows.jsonl) writes
# one JSON line per packet of a rule with log = yes, with the rule, the
# direction, the vNIC and the 5-tuple; at most --flow-log-rate lines a
# second (DFW_LAB_FLOW_LOG_RATE in the lab), with the lines left out
# counted so that every packet is accounted for; the file is reopened on
# SIGHUP (logrotate).
source "$(dirname "$0")/lib.sh"
TMP=$(mktemp -d)
lab_up kflow "$TOP/configs/vdi.ini"
trap 'rm -rf "$TMP"; finish' EXIT
DIR=/run/dfw-lab/$LAB
FLOWS=$DIR/hv1.flows.jsonl
wait_realized 1 || bad "dfwd realized the first revision"

# count: lines in the flow log.  after N: the lines after the first N.
count() { wc -l <"$FLOWS"; }
after() { tail -n +$(($1 + 1)) "$FLOWS"; }
# valid FILE: every line is one JSON object.
valid() {
	python3 -c 'import json, sys
for n, l in enumerate(open(sys.argv[1]), 1):
    if not isinstance(json.loads(l), dict): sys.exit("line %d: not an object" % n)' "$1"
}
# line N JQ-FILTER: the first line after N for which the filter holds,
# waiting for it up to 3 s.
line() {
	local i l
	for i in $(seq 30); do
		l=$(after "$1" | jq -c "select($2)" 2>/dev/null | head -1)
		[ -n "$l" ] && break
		sleep 0.1
	done
	printf '%s\n' "$l"
}
# holds JSON JQ-EXPR: the expression is true of the JSON object.
holds() { [ -n "$1" ] && printf '%s\n' "$1" | jq -e "$2" >/dev/null 2>&1; }

echo "# a logged drop rule (230: desktop to desktop)"
check "the lab passes --flow-log HOST.flows.jsonl to dfwd" \
	grep -qz -- "--flow-log" "/proc/$(cat "$DIR/hv1.pid")/cmdline"
check "the flow log exists, not world-readable" sh -c "test \$(stat -c %a '$FLOWS') = 640"
n=$(count)
check "desktop1 -> desktop2 tcp/445 is blocked" blocked desktop1 desktop2 tcp/445
l=$(line "$n" '.dport == 445')
echo "# $l"
check "a line for it: rule 230, out, at desktop1's vNIC" \
	holds "$l" '.rule == 230 and .direction == "out" and .vnic == "vnet-desktop1"'
check "with the 5-tuple" holds "$l" \
	'.proto == "tcp" and .src == "10.10.0.11" and .dst == "10.10.0.12" and .sport > 1023 and .dport == 445'
check "host, verdict (the rule's action)" holds "$l" '.host == "hv1" and .verdict == "drop"'
check "time: ISO-8601 UTC with milliseconds, now" holds "$l" \
	".time | test(\"^$(date -u +%Y-%m-%d)T[0-9]{2}:[0-9]{2}:[0-9]{2}[.][0-9]{3}Z\$\")"

n=$(count)
check "desktop2 -> desktop3 udp/53 over IPv6 is blocked" blocked desktop2 desktop3 udp/53 -6
l=$(line "$n" '.proto == "udp"')
check "IPv6: addresses, ports, desktop2's vNIC" holds "$l" \
	'.rule == 230 and .src == "fd00:10::12" and .dst == "fd00:10::13" and .dport == 53 and .vnic == "vnet-desktop2"'
n=$(count)
check "desktop1 -> desktop3 icmp is blocked" blocked desktop1 desktop3 icmp
l=$(line "$n" '.proto == "icmp"')
check "ICMP: type and code, no ports" holds "$l" \
	'.type == 8 and .code == 0 and (has("sport") | not) and .dst == "10.10.0.13"'

n=$(count)
check "desktop1 reaches the connection server (rule 200, not logged)" reach desktop1 cs1 tcp/443
sleep 0.3
check "an allowed flow of a rule without log writes nothing" test "$(count)" -eq "$n"

echo "# the in direction: the destination vNIC's rule"
sed 's/^default_action = drop/default_action = allow/' "$TOP/configs/vdi.ini" >"$TMP/in.ini"
cat >>"$TMP/in.ini" <<'EOF'

[rule 250]
name = nothing reaches the file server on tcp/22
sources = any
destinations = file-servers
services = tcp/22
action = drop
log = yes
applied_to = file-servers
EOF
check "apply a policy whose rule 250 drops at fs1's vNIC" ctl apply "$TMP/in.ini"
wait_realized 2 || bad "revision 2 realized"
n=$(count)
check "desktop1 -> fs1 tcp/22 is blocked" blocked desktop1 fs1 tcp/22
l=$(line "$n" '.dport == 22')
echo "# $l"
check "a line for it: rule 250, in, at fs1's vNIC" \
	holds "$l" '.rule == 250 and .direction == "in" and .vnic == "vnet-fs1" and .src == "10.10.0.11" and .verdict == "drop"'
check "apply configs/vdi.ini again" ctl apply "$TOP/configs/vdi.ini"
wait_realized 3 || bad "revision 3 realized"

echo "# a monitored rule: logged as monitor, let through (to the next rules)"
check "mode monitor 230 --wait" ctl mode monitor 230 --wait
n=$(count)
"$LAB_BIN" probe desktop4 desktop1 tcp/445 --lab "$LAB" >/dev/null 2>&1
l=$(line "$n" '.dport == 445')
echo "# $l"
check "a line for it: rule 230, verdict monitor" \
	holds "$l" '.rule == 230 and .verdict == "monitor" and .vnic == "vnet-desktop4" and .dst == "10.10.0.11"'
check "mode enforce 230 --wait" ctl mode enforce 230 --wait

echo "# SIGHUP reopens the file (logrotate)"
mv "$FLOWS" "$FLOWS.1"
old=$(wc -l <"$FLOWS.1")
kill -HUP "$(cat "$DIR/hv1.pid")"
sleep 0.3
check "dfwd made the file again" test -f "$FLOWS"
check "desktop3 -> desktop4 tcp/80 is blocked" blocked desktop3 desktop4 tcp/80
check "the new file has the new line" holds "$(line 0 '.dport == 80')" '.src == "10.10.0.13"'
check "the rotated file did not grow" test "$(wc -l <"$FLOWS.1")" -eq "$old"
check "every line of the rotated file is JSON" valid "$FLOWS.1"
check "dfwd is still running" exits 0 ctl status

echo "# the rate limit"
lab daemon stop hv1 >/dev/null 2>&1
if ! DFW_LAB_FLOW_LOG_RATE=0 "$LAB_BIN" daemon start hv1 --lab "$LAB" >"$TMP/out" 2>&1; then
	ok "a rate of 0 is refused"
	check "with the reason" grep -q -- "--flow-log-rate '0'" "$TMP/out"
else
	bad "a rate of 0 is refused"
	lab daemon stop hv1 >/dev/null 2>&1
fi
RATE=20
DFW_LAB_FLOW_LOG_RATE=$RATE "$LAB_BIN" daemon start hv1 --lab "$LAB" >/dev/null 2>&1
check "dfwd runs with --flow-log-rate $RATE" \
	sh -c "tr '\\0' ' ' </proc/\$(cat '$DIR/hv1.pid')/cmdline | grep -q -- '--flow-log-rate $RATE'"
wait_realized 3 || bad "dfwd realized again"
n=$(count)
# One second of echo requests, 200 at once and 500 a second (ping slows
# down to 100 a second when nothing answers, unless preloaded), all
# dropped by rule 230 and each one a new flow (so each one logged).
vmexec desktop1 ping -q -l 200 -i 0.002 -w 1 10.10.0.12 >"$TMP/ping" 2>&1
sent=$(sed -n 's/^\([0-9]*\) packets transmitted.*/\1/p' "$TMP/ping")
echo "# $sent echo requests sent"
check "the flood sent hundreds of packets" test "${sent:-0}" -ge 200
# Lines of the flood, and the counts of lines left out, until every
# packet is accounted for (a count comes once the limit allows, at most
# once a second).
total=0
for i in $(seq 50); do
	lines=$(after "$n" | jq -s '[.[] | select(.rule == 230)] | length')
	supp=$(after "$n" | jq -s '[.[] | .suppressed // 0] | add // 0')
	total=$((lines + supp))
	[ "$total" -ge "${sent:-0}" ] && break
	sleep 0.1
done
reports=$(after "$n" | jq -s '[.[] | select(has("suppressed"))] | length')
echo "# $lines line(s), $supp suppressed in $reports count line(s)"
check "every packet is a line or counted as suppressed" test "$total" -eq "${sent:-0}"
check "at most the limit: a burst of $RATE and $RATE a second" test "$lines" -le $((RATE + RATE * 2))
check "and the limit was used" test "$lines" -ge "$RATE"
check "counts of suppressed lines: at least one, about one a second" \
	test "$reports" -ge 1 -a "$reports" -le 3
check "a count line has time, host and nothing else" holds "$(line "$n" 'has("suppressed")')" \
	'(keys == ["host", "suppressed", "time"]) and .host == "hv1" and .suppressed > 0'
check "no socket overruns" test -z "$(after "$n" | jq -c 'select(has("overruns"))')"
check "after the flood, the limit allows again" blocked desktop2 desktop1 tcp/445
check "a line for it" holds "$(line "$n" '.dport == 445')" '.src == "10.10.0.12"'
check "every line of the flow log is JSON" valid "$FLOWS"
check "dfwd logged no flow log errors" sh -c "! grep -q 'flow log' '$DIR/hv1.log'"
