#!/usr/bin/env bash
# Detection-driven quarantine (issue 4, first path): a file written into a
# VM's sandbox is scanned by dfw-scan; a detection tags the VM at once and
# the agent isolates it, except for the VDI connection server.
source "$(dirname "$0")/lib.sh"
lab_up kdet "$TOP/configs/vdi.ini"
SCAN_BIN=$(cd "$BUILD" && pwd)/dfw-scan
SB=$(mktemp -d)
SCAN_PID=""
trap '[ -n "$SCAN_PID" ] && kill $SCAN_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$SB"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"
for vm in desktop1 desktop2 desktop3 desktop4 cs1 fs1 dc1 ghost; do mkdir -p "$SB/$vm"; done
"$SCAN_BIN" --store "/run/dfw-lab/$LAB/store.db" --sandbox "$SB" \
	--signatures "$TOP/configs/signatures.txt" --audit "$SB/audit.jsonl" 2>"$SB/scan.log" &
SCAN_PID=$!
sleep 0.5
check "dfw-scan watches the sandboxes" grep -q "watching 8 sandbox" "$SB/scan.log"

in_quarantine() { "$LAB_BIN" ctl --lab "$LAB" -- groups quarantine | grep -qw "$1"; }
wait_quarantined() { # wait_quarantined VM: up to 3 s
	local i
	for i in $(seq 150); do in_quarantine "$1" && return 0; sleep 0.02; done
	return 1
}

echo "# a clean file"
echo "quarterly report" >"$SB/desktop1/report.txt"
sleep 0.5
check "a clean file changes nothing" exits 1 in_quarantine desktop1
check "the clean file stays" test -f "$SB/desktop1/report.txt"
check "desktop1 reaches the file server" reach desktop1 fs1 tcp/445

echo "# EICAR in desktop1's sandbox"
t0=$(date +%s%N)
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >"$SB/desktop1/invoice.com"
check "desktop1 is quarantined after the detection" wait_quarantined desktop1
echo "# file written -> desktop1 in the quarantine group: $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check "the infected file left the sandbox" test ! -e "$SB/desktop1/invoice.com"
check "the infected file is in quarantine" sh -c "ls '$SB/.quarantine/desktop1/' | grep -q '^invoice.com\.'"
check "the detection is in the audit log" grep -q '"signature":"EICAR-Test-File"' "$SB/audit.jsonl"
check "the tag is in the audit log" grep -q '"event":"tag","vm":"desktop1","tag":"threat.high"' "$SB/audit.jsonl"
check "the guest got a notice" grep -q "invoice.com" "$SB/desktop1/DFW-NOTICE.txt"
check "desktop1 carries threat.high" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop1 | grep -q threat.high"
check "desktop1 is cut off from the file server" blocked desktop1 fs1 tcp/445
check "desktop1 keeps the connection server" reach desktop1 cs1 tcp/443
check "other desktops are unaffected" reach desktop2 fs1 tcp/445

echo "# a medium-severity signature on desktop2"
printf 'header DFW-SIM-WORM trailer' >"$SB/desktop2/tool.exe"
check "desktop2 is quarantined" wait_quarantined desktop2
check "desktop2 carries threat.medium" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop2 | grep -q threat.medium"
check "desktop2 is cut off from the file server" blocked desktop2 fs1 tcp/445

echo "# release after a clean full scan (auto-release)"
SCAN1=("$SCAN_BIN" --store "/run/dfw-lab/$LAB/store.db" --sandbox "$SB" --signatures "$TOP/configs/signatures.txt" --audit "$SB/audit.jsonl")
check "a clean full scan of desktop2 exits 0" "${SCAN1[@]}" --full-scan desktop2 --auto-release
check "desktop2 lost its threat tag" exits 1 in_quarantine desktop2
check "desktop2 reaches the file server again" reach desktop2 fs1 tcp/445
check "the release is in the audit log" grep -q '"event":"untag","vm":"desktop2"' "$SB/audit.jsonl"
check "the guest got a release notice" grep -q "network access is restored" "$SB/desktop2/DFW-NOTICE.txt"

echo "# a reinfection found by the full scan keeps the VM quarantined"
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >"$SB/desktop1/.hidden.com"
check "the full scan of desktop1 reports threats (exit 4)" exits 4 "${SCAN1[@]}" --full-scan desktop1 --auto-release
check "desktop1 stays quarantined" in_quarantine desktop1
check "desktop1 is still cut off" blocked desktop1 fs1 tcp/445

echo "# manual release"
rev=$(ctl untag desktop1 threat.high | sed -n 's/^revision //p')
check "the untag is realized" wait_realized "$rev"
check "desktop1 reaches the file server again" reach desktop1 fs1 tcp/445

echo "# a sandbox of no known VM"
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >"$SB/ghost/x.com"
sleep 0.5
check "the refused tag is in the audit log" grep -q '"event":"tag-refused","vm":"ghost"' "$SB/audit.jsonl"
check "dfw-scan keeps running" kill -0 "$SCAN_PID"

echo "# a malformed signature file"
printf 'Bad.Sig extreme "x"\nOk.Sig low hex:4g\n' >"$SB/bad-sigs.txt"
out=$("$SCAN_BIN" --store "/run/dfw-lab/$LAB/store.db" --sandbox "$SB" --signatures "$SB/bad-sigs.txt" 2>&1); rc=$?
check "dfw-scan refuses it with exit 1" test $rc -eq 1
check "with file:line for each error" has "$out" "bad-sigs.txt:2:"
check "with file:line for the first error too" has "$out" "bad-sigs.txt:1:"
