#!/usr/bin/env bash
# Detection-driven quarantine (issue 4), through the lab's own commands:
# `dfw-lab up` runs one dfw-scan per host beside dfwd; `dfw-lab infect`
# writes a test file into a VM's sandbox (its disk); the scanner tags the VM
# at once and the agent isolates it, except for the VDI connection server;
# `dfw-lab scan VM --full` releases it when clean.  Also: the event channel
# (the guest thin driver's messages), the scan cache, files that cannot be
# scanned, the policy's [detection] settings followed live, and bad input.
source "$(dirname "$0")/lib.sh"
lab_up kdet "$TOP/configs/vdi.ini"
RUN=/run/dfw-lab/$LAB
SB=$RUN/sandbox/hv1
AUDIT=$RUN/hv1.audit.jsonl
SLOG=$RUN/hv1.scan.log
EVSOCK=$RUN/hv1.events.sock
SCAN_BIN=$(cd "$BUILD" && pwd)/dfw-scan
EICAR='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
TMPD=$(mktemp -d)
trap 'stop_streams; wait 2>/dev/null; rm -rf "$TMPD"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"
SCAN_PID=$(cat "$RUN/hv1.scan.pid")

in_quarantine() { "$LAB_BIN" ctl --lab "$LAB" -- groups quarantine | grep -qw "$1"; }
wait_quarantined() { # wait_quarantined VM: up to 3 s
	local i
	for i in $(seq 150); do in_quarantine "$1" && return 0; sleep 0.02; done
	return 1
}
tags_of() { "$LAB_BIN" ctl --lab "$LAB" -- tags "$1" 2>/dev/null; }
# audit_has PATTERN...: one audit line matches every grep pattern.
audit_has() {
	local lines
	lines=$(cat "$AUDIT")
	for p in "$@"; do lines=$(printf '%s\n' "$lines" | grep -F -- "$p") || return 1; done
}
audit_count() { grep -cF -- "$1" "$AUDIT"; }
# wait_audit PATTERN...: up to 3 s for audit_has.
wait_audit() { local i; for i in $(seq 60); do audit_has "$@" && return 0; sleep 0.05; done; return 1; }
scanner_alive() { kill -0 "$SCAN_PID" 2>/dev/null; }
# events LINE...: sends the lines on the event channel in one connection,
# prints the answers (one JSON line each).
events() { printf '%s\n' "$@" | timeout 5 nc -U -q1 "$EVSOCK" 2>/dev/null; }

echo "# the lab's scanner"
check "dfw-lab up started dfw-scan (pidfile names a live dfw-scan)" sh -c "test \"\$(readlink /proc/$SCAN_PID/exe)\" = '$SCAN_BIN'"
check "it watches the 7 sandboxes" grep -q "watching 7 sandbox(es) under $SB" "$SLOG"
check "it took its settings from the policy in the store" audit_has '"event":"policy"' '"revision":1' '"tag_low":"threat.low"' '"auto_release":true'
check "its event socket is root-only (0600)" test "$(stat -c %a "$EVSOCK")" = 600

echo "# a clean file, and the scan cache"
echo "quarterly report" >"$SB/desktop1/report.txt"
sleep 0.3
check "a clean file changes nothing" exits 1 in_quarantine desktop1
check "the clean file stays" test -f "$SB/desktop1/report.txt"
exec 4>>"$SB/desktop1/report.txt"; exec 4>&- # opened for writing, closed unchanged
check "an unchanged file closed again is not scanned again (skipped-cached)" \
	wait_audit '"vm":"desktop1"' 'report.txt' '"verdict":"skipped-cached"' '"source":"watch"'
echo "more" >>"$SB/desktop1/report.txt"
sleep 0.3
check "a changed file is scanned again (no second skipped-cached)" test "$(audit_count 'report.txt","verdict":"skipped-cached')" -eq 1
check "desktop1 reaches the file server" reach desktop1 fs1 tcp/445

# Two long-lived TCP streams from desktop1: to the file server (cut by the
# quarantine) and to the connection server (kept by the exception rule).
stream fs fs1 10.10.0.22 445
stream cs cs1 10.10.0.21 8443
sleep 1
check "stream to the file server flows before the infection" test "$(lines fs)" -gt 5
check "stream to the connection server flows before the infection" test "$(lines cs)" -gt 5

echo "# dfw-lab infect desktop1 (EICAR)"
t0=$(date +%s%N)
check "dfw-lab infect writes the test file" lab infect desktop1
check "desktop1 is quarantined after the detection" wait_quarantined desktop1
echo "# file written -> desktop1 in the quarantine group: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
sleep 0.3
fs_at=$(lines fs); cs_at=$(lines cs)
sleep 1.5
check "its open connection to the file server is cut" test "$(lines fs)" -le $((fs_at + 1))
check "its connection to the connection server survives" test "$(lines cs)" -gt $((cs_at + 10))
stop_streams
sleep 0.2
check "the infected file left the sandbox" test ! -e "$SB/desktop1/eicar.com"
check "the infected file is in quarantine" sh -c "ls '$SB/.quarantine/desktop1/' | grep -q '^eicar.com\.'"
check "the detection is in the audit log" audit_has '"event":"detection"' '"vm":"desktop1"' '"signature":"EICAR-Test-File"' '"tag":"threat.high"' '"source":"watch"'
line=$(grep '"event":"detection","vm":"desktop1"' "$AUDIT" | head -1)
ev=$(printf '%s' "$line" | sed -n 's/.*"event_ns":\([0-9]*\).*/\1/p')
sc=$(printf '%s' "$line" | sed -n 's/.*"scanned_ns":\([0-9]*\).*/\1/p')
tg=$(printf '%s' "$line" | sed -n 's/.*"tagged_ns":\([0-9]*\).*/\1/p')
check "it carries the stage times in order (event <= scanned <= tagged)" test -n "$ev" -a -n "$sc" -a -n "$tg" -a "${ev:-1}" -le "${sc:-0}" -a "${sc:-1}" -le "${tg:-0}"
echo "# stages: event->scanned $(( (${sc:-0} - ${ev:-0}) / 1000 )) us, scanned->tagged $(( (${tg:-0} - ${sc:-0}) / 1000 )) us"
check "the tag is in the audit log" audit_has '"event":"tag"' '"vm":"desktop1"' '"tag":"threat.high"' '"revision":'
check "the guest got a notice" grep -q "found in eicar.com" "$SB/desktop1/DFW-NOTICE.txt"
check "desktop1 carries threat.high" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop1 | grep -q threat.high"
check "desktop1 is cut off from the file server" blocked desktop1 fs1 tcp/445
check "desktop1 is cut off from DNS" blocked desktop1 dc1 udp/53
check "desktop1 keeps the connection server" reach desktop1 cs1 tcp/443
check "the connection server keeps desktop1's agent" reach cs1 desktop1 tcp/4001
check "other desktops are unaffected" reach desktop2 fs1 tcp/445

echo "# a clean full scan releases desktop1 (auto_release = yes)"
check "dfw-lab scan desktop1 --full exits 0" lab scan desktop1 --full
check "desktop1 left the quarantine group" exits 1 in_quarantine desktop1
check "desktop1 reaches the file server again" reach desktop1 fs1 tcp/445
check "the release is in the audit log" audit_has '"event":"untag"' '"vm":"desktop1"' '"tag":"threat.high"'
check "the full scan is in the audit log" audit_has '"event":"full-scan"' '"vm":"desktop1"' '"result":"clean"'
check "the guest got a release notice" grep -q "network access is restored" "$SB/desktop1/DFW-NOTICE.txt"

echo "# two VMs infected at once"
lab infect desktop2 >/dev/null & p1=$!
lab infect desktop3 --severity medium >/dev/null & p2=$!
wait $p1; r1=$?; wait $p2; r2=$?
check "both infections were written" test $r1 -eq 0 -a $r2 -eq 0
check "desktop2 is quarantined" wait_quarantined desktop2
check "desktop3 is quarantined" wait_quarantined desktop3
check "desktop2 is cut off" blocked desktop2 fs1 tcp/445
check "desktop3 is cut off" blocked desktop3 fs1 tcp/445
check "desktop3 got the medium tag" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop3 | grep -q threat.medium"
check "desktop1 is not affected" reach desktop1 fs1 tcp/445

echo "# reinfection while quarantined"
check "a second infection of desktop2 is written" lab infect desktop2 --file again.com
check "it is detected too" wait_audit '"event":"detection"' '"vm":"desktop2"' 'again.com'
check "desktop2 stays quarantined" in_quarantine desktop2
mkdir "$SB/desktop2/Downloads"
printf '%s' "$EICAR" >"$SB/desktop2/Downloads/setup.exe" # below the watched top: only a full scan sees it
out=$(lab scan desktop2 --full 2>&1); rc=$?
check "the full scan finds it and exits 4" test $rc -eq 4
check "it says the tags stay" has "$out" "threats found; its tags stay"
check "desktop2 keeps its tag" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop2 | grep -q threat.high"
check "desktop2 is still cut off" blocked desktop2 fs1 tcp/445
check "the file found was moved to quarantine" sh -c "ls '$SB/.quarantine/desktop2/' | grep -q '^setup.exe\.'"
check "a second full scan is clean and releases desktop2" lab scan desktop2 --full
check "desktop2 reaches the file server again" reach desktop2 fs1 tcp/445

echo "# each severity maps to the policy's tag"
check "low: desktop4 infected with a low-severity signature" lab infect desktop4 --severity low
check "desktop4 is quarantined" wait_quarantined desktop4
check "desktop4 got the policy's low tag (threat.low)" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop4 | grep -q threat.low"
check "release desktop3 and desktop4" sh -c "'$LAB_BIN' scan desktop3 --full --lab $LAB && '$LAB_BIN' scan desktop4 --full --lab $LAB"
check "desktop3 and desktop4 are free" exits 1 sh -c "'$LAB_BIN' ctl --lab $LAB -- groups quarantine | grep -qw 'desktop[34]'"
# A policy whose [detection] maps low to threat.medium, deletes infected
# files and does not auto-release: dfw-scan follows it without a restart.
sed -e 's/^tag_low = threat.low/tag_low = threat.medium/' -e 's/^auto_release = yes/auto_release = no/' \
	-e 's/^file_action = quarantine/file_action = delete/' "$TOP/configs/vdi.ini" >"$TMPD/vdi2.ini"
rev=$(ctl apply "$TMPD/vdi2.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "the new policy is applied" test -n "$rev"
check "dfw-scan reloads the policy at its revision" wait_audit '"event":"policy"' "\"revision\":$rev" '"tag_low":"threat.medium"' '"file_action":"delete"'
lab infect desktop4 --severity low --file adware2.exe >/dev/null
check "desktop4 is quarantined again" wait_quarantined desktop4
check "now with threat.medium, the new mapping" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop4 | grep -q threat.medium"
check "and not threat.low" exits 1 sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop4 | grep -q threat.low"
check "the file was deleted (file_action = delete)" sh -c "test ! -e '$SB/desktop4/adware2.exe' && ! ls '$SB/.quarantine/desktop4/' 2>/dev/null | grep -q adware2"
check "a clean full scan exits 0" lab scan desktop4 --full
check "but does not release it (auto_release = no)" in_quarantine desktop4
check "--auto-release yes overrides the policy" lab scan desktop4 --full --auto-release yes
check "desktop4 is released" exits 1 in_quarantine desktop4
rev=$(ctl apply "$TOP/configs/vdi.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "back to configs/vdi.ini" wait_audit '"event":"policy"' "\"revision\":$rev" '"tag_low":"threat.low"'

echo "# a file the full scan skips (max_file_bytes) is not known clean"
sed -e 's/^max_file_bytes = .*/max_file_bytes = 4096/' "$TOP/configs/vdi.ini" >"$TMPD/vdi3.ini"
rev=$(ctl apply "$TMPD/vdi3.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "dfw-scan follows max_file_bytes = 4096" wait_audit '"event":"policy"' "\"revision\":$rev"
lab infect desktop4 >/dev/null
check "desktop4 is quarantined" wait_quarantined desktop4
head -c 8192 /dev/zero >"$SB/desktop4/big.bin"
check "a full scan that skipped a file exits 4" exits 4 lab scan desktop4 --full
check "its result is incomplete, the skip counted" audit_has '"event":"full-scan"' '"vm":"desktop4"' '"skipped_by_policy":1' '"result":"incomplete"'
check "desktop4 stays quarantined" in_quarantine desktop4
rm -f "$SB/desktop4/big.bin"
check "without the file, the full scan releases it" lab scan desktop4 --full
check "desktop4 is free" exits 1 in_quarantine desktop4
rev=$(ctl apply "$TOP/configs/vdi.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "back to configs/vdi.ini again" wait_audit '"event":"policy"' "\"revision\":$rev" '"max_file_bytes":67108864'

echo "# a huge file and unscannable files fail cleanly"
truncate -s 100M "$SB/desktop1/huge.iso" # sparse: above max_file_bytes (64 MiB)
check "a file above max_file_bytes is skipped with the reason" \
	wait_audit '"vm":"desktop1"' 'huge.iso' '"verdict":"skipped-policy"' 'larger than max_bytes'
mkfifo "$SB/desktop1/pipe.exe"
exec 4<>"$SB/desktop1/pipe.exe"; exec 4>&- # a FIFO opened for writing and closed: root cannot read it as a file
check "a FIFO is an error verdict" wait_audit '"vm":"desktop1"' 'pipe.exe' '"verdict":"error"' 'not a regular file (fifo)'
mkdir "$SB/desktop1/report.doc"
ans=$(events '{"vm":"desktop1","file":"huge.iso"}' '{"vm":"desktop1","file":"pipe.exe"}' \
	'{"vm":"desktop1","file":"report.doc"}' '{"vm":"desktop1","file":"vanished.exe"}')
check "event: the huge file is skipped" has "$(echo "$ans" | sed -n 1p)" '"verdict":"skipped-policy"'
check "event: the FIFO cannot be read" has "$(echo "$ans" | sed -n 2p)" '"why":"not a regular file (fifo)"'
check "event: a directory named like a file cannot be read" has "$(echo "$ans" | sed -n 3p)" '"why":"not a regular file (directory)"'
check "event: a file gone before its scan" has "$(echo "$ans" | sed -n 4p)" '"why":"No such file or directory"'
check "the scanner logs what it could not scan" grep -q "cannot scan $SB/desktop1/pipe.exe: not a regular file (fifo)" "$SLOG"
check "dfw-scan keeps running" scanner_alive
check "and detects the next infection" lab infect desktop1 --file next.com
check "desktop1 is quarantined" wait_quarantined desktop1
check "a full scan with the huge file present cannot vouch for it (exit 4)" exits 4 lab scan desktop1 --full
check "and keeps desktop1 quarantined" in_quarantine desktop1
rm -f "$SB/desktop1/huge.iso"
check "without it (the FIFO and the directory stay) the full scan releases it" lab scan desktop1 --full
check "desktop1 is free again" reach desktop1 fs1 tcp/445

echo "# the event channel: a detection, then malformed events"
# A hard link is a new file without a write: the watcher (close after
# writing) does not see it, so only the event makes it scanned.
printf '%s' "$EICAR" >"$RUN/linked.src"
ln "$RUN/linked.src" "$SB/desktop3/.hidden.com"
sleep 0.3
check "the watcher did not scan the linked file" test -e "$SB/desktop3/.hidden.com"
ans=$(events '{"vm":"desktop3","file":".hidden.com"}')
check "the event's answer reports the detection and the tag" has "$ans" '"verdict":"infected","signature":"EICAR-Test-File","severity":"high","tag":"threat.high"'
check "the detection is audited as coming from the event channel" audit_has '"event":"detection"' '"vm":"desktop3"' '.hidden.com' '"source":"event"' '"event_ns":'
check "desktop3 is quarantined" wait_quarantined desktop3
check "release desktop3" lab scan desktop3 --full
rmdir "$SB/dc1"
long=$(printf 'a%.0s' $(seq 5000))
ans=$(events 'not json' '{"vm":"desktop1"}' '{"vm":"desktop1","file":"a","extra":"b"}' \
	'{"vm":"nosuchvm","file":"a.exe"}' '{"vm":"desktop1","file":"../../etc/passwd"}' \
	'{"vm":"desktop1","file":".."}' '{"vm":"desktop1","file":"a"} trailing' '{"vm":1,"file":"a"}' \
	"$long" '{"vm":"dc1","file":"x.exe"}' '{"vm":"desktop1","file":"report.txt"}')
reply() { echo "$ans" | sed -n "$1p"; }
check "bad JSON is rejected" has "$(reply 1)" '"status":"rejected","error":"not a JSON object'
check "a missing member is rejected" has "$(reply 2)" 'missing member \\"file\\"'
check "an unknown member is rejected" has "$(reply 3)" 'unknown member \\"extra\\"'
check "an unknown VM is rejected, with a suggestion" has "$(reply 4)" "unknown VM 'nosuchvm'"
check "a path escaping the sandbox is rejected" has "$(reply 5)" "file name '../../etc/passwd' contains '/'"
check "'..' is rejected" has "$(reply 6)" "file name '..' would leave the sandbox"
check "text after the object is rejected" has "$(reply 7)" "unexpected text after the object"
check "a non-string is rejected" has "$(reply 8)" 'vm must be a string'
check "an over-long line is rejected" has "$(reply 9)" 'line longer than 4096 bytes'
check "a VM without a sandbox is rejected" has "$(reply 10)" "no sandbox for VM 'dc1'"
check "a good event after them is still answered" has "$(reply 11)" '"status":"scanned","vm":"desktop1","file":"report.txt"'
check "rejections go to the scanner's log with the reason" grep -q "event rejected: unknown VM 'nosuchvm'" "$SLOG"
check "and to the audit log" audit_has '"event":"event-rejected"' "file name '../../etc/passwd' contains '/'"
check "ten rejections in the audit log" test "$(audit_count '"event":"event-rejected"')" -eq 10
check "nothing was written outside the sandbox" test ! -e "$SB/../etc/passwd"
printf '{"vm":"desktop1","file":"x"' | timeout 5 nc -U -q0 "$EVSOCK" >/dev/null 2>&1
check "a line cut off by the end of the stream is rejected" wait_audit '"event":"event-rejected"' 'incomplete line'
mkdir "$SB/dc1"
check "dfw-scan keeps running after all of them" scanner_alive
check "it still detects" lab infect dc1
check "dc1 is quarantined (its sandbox watched again after it came back)" wait_quarantined dc1
check "release dc1" lab scan dc1 --full
# 16 connections that send nothing take every slot; after a second idle,
# a driver's event still gets in (the one idle longest makes room).
for i in $(seq 16); do
	setsid sh -c "sleep 30 | exec nc -U '$EVSOCK' >/dev/null 2>&1" &
	PGIDS="$PGIDS $!"
done
sleep 1.5
check "with every slot held by idle connections, an event is answered" \
	has "$(events '{"vm":"desktop1","file":"report.txt"}')" '"status":"scanned","vm":"desktop1","file":"report.txt"'
check "the scanner says it closed an idle one" grep -q "the one idle for [0-9]* ms closed to make room" "$SLOG"
stop_streams

echo "# device nodes and a hard-linked notice planted by the guest"
mknod "$SB/desktop4/tty.com" c 5 2 # /dev/ptmx: its driver's open fails away from a devpts
ans=$(events '{"vm":"desktop4","file":"tty.com"}')
check "a device node is not opened, only named" has "$ans" '"why":"not a regular file (character device)"'
rm -f "$SB/desktop4/tty.com"
: >"$RUN/notice.src"
rm -f "$SB/desktop4/DFW-NOTICE.txt" # the notice of an earlier infection
ln "$RUN/notice.src" "$SB/desktop4/DFW-NOTICE.txt"
check "desktop4 is infected" lab infect desktop4
check "desktop4 is quarantined" wait_quarantined desktop4
check "the hard link's other name is untouched" test ! -s "$RUN/notice.src"
check "the scanner says why there is no notice" grep -q "desktop4: no notice written to $SB/desktop4/DFW-NOTICE.txt: not a regular file of one link" "$SLOG"
rm -f "$SB/desktop4/DFW-NOTICE.txt" "$RUN/notice.src"
check "release desktop4" lab scan desktop4 --full

echo "# a sandbox of no known VM"
mkdir "$SB/ghost"
sleep 0.2
printf '%s' "$EICAR" >"$SB/ghost/x.com"
check "the refused tag is in the audit log" wait_audit '"event":"tag-refused","by":"dfw-scan","vm":"ghost"'
check "dfw-scan keeps running" scanner_alive

echo "# a notice file planted as a symbolic link"
: >"$TMPD/outside"
rm -f "$SB/desktop4/DFW-NOTICE.txt"
ln -s "$TMPD/outside" "$SB/desktop4/DFW-NOTICE.txt"
check "desktop4 is infected" lab infect desktop4
check "desktop4 is quarantined" wait_quarantined desktop4
check "the file the link points to is untouched" test ! -s "$TMPD/outside"
check "the scanner says why there is no notice" grep -q "desktop4: no notice written to $SB/desktop4/DFW-NOTICE.txt" "$SLOG"
check "a full scan still releases desktop4" lab scan desktop4 --full
check "the file the link points to is still untouched" test ! -s "$TMPD/outside"
rm -f "$SB/desktop4/DFW-NOTICE.txt"

echo "# guest-chosen names cannot forge log lines or break the audit's JSON"
printf '%s' "$EICAR" >"$SB/desktop4/$(printf 'x.com\ndfw-scan: full scan of desktop9: clean')"
printf '%s' "$EICAR" >"$SB/desktop4/$(printf 'inv\xff.com')"
check "desktop4 is quarantined" wait_quarantined desktop4
check "the name that is not UTF-8 is audited, as U+FFFD" wait_audit '"event":"detection"' 'inv\ufffd.com'
check "the newline in a name is shown, not written" grep -qF 'x.com\x0adfw-scan: full scan of desktop9' "$SLOG"
check "no forged line in the scanner's log" exits 1 grep -q '^dfw-scan: full scan of desktop9' "$SLOG"
check "every audit line is UTF-8 JSON" python3 -c 'import json, sys
for line in open(sys.argv[1], encoding="utf-8"): json.loads(line)' "$AUDIT"
check "release desktop4" lab scan desktop4 --full

echo "# a file that lands while the scanner is down"
check "dfw-lab daemon stop hv1 --scanner" sh -c "'$LAB_BIN' daemon stop hv1 --scanner --lab $LAB | grep -q 'dfw-scan of host hv1 stopped'"
check "its event socket is gone" test ! -e "$EVSOCK"
check "dfwd still runs" ctl status
printf '%s' "$EICAR" >"$SB/desktop2/while-down.com"
sleep 0.3
check "nothing saw the file" exits 1 in_quarantine desktop2
check "dfw-lab daemon start hv1 --scanner" sh -c "'$LAB_BIN' daemon start hv1 --scanner --lab $LAB | grep -q 'dfw-scan of host hv1 started'"
check "a second start is refused" exits 1 lab daemon start hv1 --scanner
SCAN_PID=$(cat "$RUN/hv1.scan.pid")
check "the restarted scanner does not see an old file" exits 1 in_quarantine desktop2
check "a full scan finds it (exit 4)" exits 4 lab scan desktop2 --full
check "and quarantines desktop2" wait_quarantined desktop2
check "the next full scan is clean and releases it" lab scan desktop2 --full
check "desktop2 reaches the file server" reach desktop2 fs1 tcp/445

echo "# a detection deep in a tree of long names is audited"
dname=$(printf 'd%.0s' $(seq 200))
(cd "$SB/desktop4" && for i in $(seq 40); do mkdir "$dname" && cd "$dname" || exit 1; done &&
	printf '%s' "$EICAR" >deep.com) # 8 KB of path: made one directory at a time
check "a full scan finds it (exit 4)" exits 4 lab scan desktop4 --full
check "its detection is in the audit log" audit_has '"event":"detection"' '"vm":"desktop4"' '/deep.com"' '"source":"full-scan"'
rm -rf "${SB:?}/desktop4/$dname"
check "release desktop4" lab scan desktop4 --full

echo "# bad input to the commands"
check "infect: unknown VM is exit 1" exits 1 lab infect desktopx
check "infect: unknown severity is exit 1" exits 1 lab infect desktop1 --severity extreme
check "infect: a path as file name is exit 1" exits 1 lab infect desktop1 --file ../x.com
check "scan without --full is exit 1" exits 1 lab scan desktop1
check "scan: unknown VM is exit 1" exits 1 lab scan nosuchvm --full

echo "# a malformed signature file"
printf '# test\nBad.Sig extreme "x"\nOk.Sig low hex:4g\n' >"$TMPD/bad-sigs.txt"
out=$("$SCAN_BIN" --store "$RUN/store.db" --sandbox "$SB" --signatures "$TMPD/bad-sigs.txt" 2>&1); rc=$?
check "dfw-scan refuses it with exit 1" test $rc -eq 1
check "with file:line for each error" has "$out" "bad-sigs.txt:3: bad hex digit"
check "with file:line for the first error too" has "$out" "bad-sigs.txt:2: unknown severity 'extreme'"
out=$("$LAB_BIN" up "$TOP/configs/vdi.ini" --lab kdetbad --signatures "$TMPD/bad-sigs.txt" 2>&1); rc=$?
check "dfw-lab up refuses it with exit 1" test $rc -eq 1
check "naming file:line" has "$out" "bad-sigs.txt:2: unknown severity 'extreme'"
check "and makes nothing" sh -c "test ! -e /run/dfw-lab/kdetbad && ! ip netns list | grep -q '^dfwl-kdetbad-'"
"$LAB_BIN" down --lab kdetbad >/dev/null 2>&1
