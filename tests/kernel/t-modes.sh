#!/usr/bin/env bash
# Monitor mode and timed operator blocks on the VDI farm (configs/vdi.ini),
# with real traffic.  Monitor mode: a quarantined desktop, its emergency
# drop rules switched to monitor (they log and count, and let the packets
# through), per category and per rule id, shown by `dfwctl mode`, kept
# across a new policy revision, back to enforce.  Blocks: a
# block everywhere cuts new flows both ways and the kernel lifts it by
# itself; a scoped block holds at one group's vNICs only; blocks survive a
# restart of dfwd with the time they have left; unblock lifts at once.
# Bad input to both changes nothing.
source "$(dirname "$0")/lib.sh"
lab_up kmodes "$TOP/configs/vdi.ini"
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"
FLOWS=/run/dfw-lab/$LAB/hv1.flows.jsonl
nft_set() { "$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list set inet dfw "$1" 2>/dev/null; }

T="--timeout 300"
expect() { # expect yes|no SRC DST PROTO [-6]
	local want=$1; shift
	if [ "$want" = yes ]; then check "$* reachable" reach "$@" $T
	else check "$* blocked" blocked "$@" $T; fi
}
# flow_logged PATTERN: a line of dfwd's flow log matches, within 2 s.
flow_logged() {
	local i
	for i in $(seq 20); do grep -q -- "$1" "$FLOWS" 2>/dev/null && return 0; sleep 0.1; done
	return 1
}

echo "# a quarantined desktop, enforced"
check "tag desktop1 threat.high --wait" ctl tag desktop1 threat.high --wait
expect no  desktop1 fs1 tcp/445
expect yes desktop1 cs1 tcp/443
expect yes desktop2 fs1 tcp/445
check "mode shows every category enforced" test "$(ctl mode | grep -c 'mode=enforce')" = 4

echo "# the emergency category in monitor mode"
c0=$(rule_counter 110 out_packets)
check "mode monitor --category emergency --wait" ctl mode monitor --category emergency --wait
out=$(ctl mode)
check "mode shows emergency in monitor" has "$out" "category=emergency mode=monitor"
check "mode shows application still enforced" has "$out" "category=application mode=enforce"
check "mode lists the emergency drop rules as monitored (allow rules are alike in both modes)" has "$out" "monitored_rules: 110 111$"
check "mode --json says the same" has "$(ctl mode --json)" '{"category":"emergency","mode":"monitor"}'
check "counters mark rule 110 as monitored" has "$(ctl counters --rule 110)" "monitor=yes"
# A monitored drop logs and counts, and lets the packet through: the
# quarantine rules report what they would stop, and stop nothing.
expect yes desktop1 fs1 tcp/445
expect yes desktop1 fs1 tcp/445 -6
expect yes desktop1 dc1 udp/53
expect yes dc1 desktop1 icmp        # rule 111 (incoming) too
expect yes desktop1 cs1 tcp/443     # the exception (an allow) is unaffected
expect no  desktop2 desktop3 tcp/445 # application rules still enforce (rule 230)
check "rule 110 counted the monitored packets" test "$(rule_counter 110 out_packets)" -gt "${c0:-0}"
check "rule 111 counted too" test "$(rule_counter 111 in_packets)" -gt 0
check "the flow log says monitor for rule 110" flow_logged '"rule":110,"direction":"out","verdict":"monitor"'

echo "# the mode is kept across a new policy revision"
{ cat "$TOP/configs/vdi.ini"; echo "; t-modes.sh: a new revision"; } >"$TMPD/vdi2.ini"
rev=$(ctl apply "$TMPD/vdi2.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "apply a new revision of the policy" wait_realized "${rev:-999999}"
check "emergency is still in monitor" has "$(ctl mode)" "category=emergency mode=monitor"
c0=$(rule_counter 110 out_packets)
expect yes desktop1 fs1 tcp/445
check "rule 110 counters went on growing (named counters)" test "$(rule_counter 110 out_packets)" -gt "${c0:-0}"

echo "# back to enforce"
check "mode enforce --all --wait" ctl mode enforce --all --wait
out=$(ctl mode)
check "mode shows every category enforced again" test "$(printf '%s\n' "$out" | grep -c 'mode=enforce')" = 4
check "no rule is monitored" has "$out" "monitored_rules: -"
check "counters mark rule 110 as enforced" has "$(ctl counters --rule 110)" "monitor=no"
expect no  desktop1 fs1 tcp/445
expect no  desktop1 fs1 tcp/445 -6
expect yes desktop1 cs1 tcp/443
expect yes desktop2 fs1 tcp/445

echo "# monitor mode for one rule id"
check "mode monitor 110 --wait" ctl mode monitor 110 --wait
check "mode lists rule 110 alone" has "$(ctl mode)" "monitored_rules: 110$"
check "the emergency category itself stays enforced" has "$(ctl mode)" "category=emergency mode=enforce"
expect yes desktop1 fs1 tcp/445
check "mode enforce 110 --wait" ctl mode enforce 110 --wait
expect no  desktop1 fs1 tcp/445

echo "# bad mode requests change nothing"
check "mode monitor 110 --wait (a mode to keep)" ctl mode monitor 110 --wait
rev0=$(store_rev)
modes0=$(ctl mode)
out=$(ctl mode monitor --category emergncy 2>&1); rc=$?
check "an unknown category exits 1" test $rc -eq 1
check "an unknown category gets a suggestion" has "$out" "did you mean 'emergency'"
check "an unknown rule id exits 1" exits 1 ctl mode monitor 999
out=$(ctl mode monitor 200 2>&1); rc=$?
check "monitor mode of an allow rule (200) exits 1" test $rc -eq 1
check "and says why" has "$out" "rule 200 allows: monitor mode is for drop and reject rules"
check "mode monitor without a target exits 1" exits 1 ctl mode monitor
check "mode enforce without a target exits 1" exits 1 ctl mode enforce
check "an unknown mode exits 1" exits 1 ctl mode frobnicate
check "a rule id that is no number exits 1" exits 1 ctl mode monitor abc
check "rule id 0 exits 1" exits 1 ctl mode monitor 0
check "enforce --all with a rule id exits 1" exits 1 ctl mode enforce --all 110
check "monitor --all exits 1" exits 1 ctl mode monitor --all
check "the store revision did not move" test "$(store_rev)" = "$rev0"
check "the modes did not change" test "$(ctl mode)" = "$modes0"
check "mode enforce --all --wait" ctl mode enforce --all --wait
check "untag desktop1 --wait" ctl untag desktop1 threat.high --wait

echo "# a timed block everywhere, lifted by the kernel"
D2=10.10.0.12
expect yes desktop2 cs1 tcp/443
expect yes cs1 desktop2 tcp/4001
t0=$(date +%s%N)
check "block $D2 --for 4s --wait" ctl block $D2 --for 4s --wait
expect no  desktop2 cs1 tcp/443     # from it
expect no  cs1 desktop2 tcp/4001    # to it
expect yes desktop2 cs1 tcp/443 -6  # its IPv6 address is not blocked
expect yes desktop3 cs1 tcp/443
check "blocks lists it with at most 4 s left" has "$(ctl blocks)" "address=$D2 scope=everywhere left_s=[1-4]$"
check "blocks --json too" has "$(ctl blocks --json)" "{\"address\":\"$D2\",\"scope\":\"everywhere\",\"left_s\":[1-4]}"
check "the kernel set holds it with a timeout" has "$(nft_set opblock4)" "$D2 timeout [0-4]s"
passed=no
for i in $(seq 40); do
	if reach desktop2 cs1 tcp/443 --timeout 200; then passed=yes; break; fi
done
elapsed_ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "# desktop2 passed again ${elapsed_ms} ms after the block"
check "desktop2 passes again by itself, no command" test $passed = yes
check "not before 3 s, not after 8 s (${elapsed_ms} ms)" test "$elapsed_ms" -ge 3000 -a "$elapsed_ms" -le 8000
expect yes cs1 desktop2 tcp/4001
check "blocks no longer lists it" sh -c "! '$LAB_BIN' ctl --lab $LAB -- blocks | grep -q '$D2'"
check "the kernel set is empty again" sh -c "! '$LAB_BIN' exec --lab $LAB host:hv1 -- nft list set inet dfw opblock4 | grep -q '$D2'"

echo "# a scoped block: at the file servers' vNICs only"
expect yes desktop2 fs1 tcp/445
expect yes desktop2 cs1 tcp/443
check "block $D2 --for 60s --scope file-servers --wait" ctl block $D2 --for 60s --scope file-servers --wait
expect no  desktop2 fs1 tcp/445
expect yes desktop2 cs1 tcp/443
expect yes desktop2 fs1 tcp/445 -6
expect yes desktop3 fs1 tcp/445
check "blocks lists it with its scope" has "$(ctl blocks)" "address=$D2 scope=file-servers left_s=[0-9]*$"
D4=fd00:10::14
check "block $D4 --for 60s --wait (IPv6, everywhere)" ctl block $D4 --for 60s --wait
expect no  desktop4 cs1 tcp/443 -6
expect yes desktop4 cs1 tcp/443

echo "# bad block requests change nothing"
rev0=$(store_rev)
blocks0=$(ctl blocks | sed 's/ left_s=.*//')
out=$(ctl block 10.10.0.0/24 --for 4s 2>&1); rc=$?
check "a prefix exits 1" test $rc -eq 1
check "a prefix is refused as such" has "$out" "a prefix cannot be blocked"
check "an IPv6 prefix exits 1" exits 1 ctl block fd00:10::/64 --for 4s
check "a VM name exits 1" exits 1 ctl block desktop2 --for 4s
out=$(ctl block $D2 --for 4x 2>&1); rc=$?
check "a bad duration exits 1" test $rc -eq 1
check "a bad duration is named" has "$out" "'4x'"
check "a zero duration exits 1" exits 1 ctl block $D2 --for 0s
check "a duration over 30 days exits 1" exits 1 ctl block $D2 --for 31d
out=$(ctl block $D2 --for 4s --scope file-srvers 2>&1); rc=$?
check "an unknown scope group exits 1" test $rc -eq 1
check "an unknown scope group gets a suggestion" has "$out" "did you mean 'file-servers'"
check "block without --for exits 1" exits 1 ctl block $D2
check "unblock of an address not blocked exits 1" exits 1 ctl unblock 10.10.0.99
check "unblock of the wrong scope exits 1" exits 1 ctl unblock $D2 --scope connection-servers
check "the store revision did not move" test "$(store_rev)" = "$rev0"
check "blocks did not change" test "$(ctl blocks | sed 's/ left_s=.*//')" = "$blocks0"
check "block --for 1d (days) is taken" ctl block 10.10.0.99 --for 1d
check "and lasts a day" sh -c "'$LAB_BIN' ctl --lab $LAB -- blocks | grep -q 'address=10.10.0.99 scope=everywhere left_s=86[34][0-9][0-9]$'"
check "unblock lifts it" ctl unblock 10.10.0.99

echo "# blocks survive a restart of dfwd, with the time they have left"
sleep 1
lab daemon stop hv1 >/dev/null 2>&1
expect no  desktop2 fs1 tcp/445     # the kernel enforces while dfwd is down
# Watch the kernel's transactions while dfwd reloads everything.
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft monitor >"$TMPD/monitor" 2>&1 &
MON=$!
sleep 0.3
lab daemon start hv1 >/dev/null 2>&1
check "dfwd is back" wait_realized "$rev0"
sleep 0.3
kill "$MON"; wait "$MON" 2>/dev/null
# The operator blocks are in the same transaction as the tables they live
# in: no generation ends between the new inet table and their elements.
check "the operator blocks come with the full load, in its transaction" sh -c "
	awk '/^add table inet dfw/ { t = 1; next }
	     t && /^# new generation/ { exit 1 }
	     t && /^add element inet dfw opscope4 / { ok = 1; exit 0 }
	     END { exit !ok }' '$TMPD/monitor'"
check "blocks lists the scoped block" has "$(ctl blocks)" "address=$D2 scope=file-servers left_s=[1-5][0-9]$"
check "blocks lists the IPv6 block" has "$(ctl blocks)" "address=$D4 scope=everywhere left_s=[1-5][0-9]$"
expect no  desktop2 fs1 tcp/445
expect yes desktop2 cs1 tcp/443
expect no  desktop4 cs1 tcp/443 -6
check "the kernel's scoped element has less than 60 s left (not restarted)" \
	has "$(nft_set opscope4)" "$D2 . 0x[0-9a-f]* timeout [1-5][0-9]s"
check "the kernel's IPv6 element too" has "$(nft_set opblock6)" "$D4 timeout [1-5][0-9]s"

echo "# unblock lifts a block at once"
check "unblock $D2 --scope file-servers --wait" ctl unblock $D2 --scope file-servers --wait
expect yes desktop2 fs1 tcp/445
check "unblock $D4 --wait" ctl unblock $D4 --wait
expect yes desktop4 cs1 tcp/443 -6
check "blocks is empty" test -z "$(ctl blocks)"
check "blocks --json is an empty list" test "$(ctl blocks --json)" = "[]"
