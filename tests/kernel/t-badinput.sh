#!/usr/bin/env bash
# Bad input changes nothing: bad configs, unknown VMs or tags on the CLI,
# malformed control-socket requests, bad store contents, a damaged store.
source "$(dirname "$0")/lib.sh"
lab_up kbad "$TOP/configs/vdi.ini"
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"; finish' EXIT
STORE=/run/dfw-lab/$LAB/store.db
SOCK=/run/dfw-lab/$LAB/hv1.sock
wait_realized 1 || bad "dfwd realized the first revision"
rev0=$(store_rev)

echo "# a bad config"
sed -e 's/^action = drop$/action = dorp/' -e 's/^members = fs1$/members = fs9/' \
	"$TOP/configs/vdi.ini" >"$TMPD/bad.ini"
out=$("$CTL_BIN" --store "$STORE" apply "$TMPD/bad.ini" 2>&1); rc=$?
check "apply of a bad config exits 1" test $rc -eq 1

check "the store revision did not move" test "$(store_rev)" = "$rev0"
check "the running policy stays: east-west still blocked" blocked desktop1 desktop2 tcp/445
check "the running policy stays: allowed flow passes" reach desktop1 fs1 tcp/445

echo "# the CLI"
out=$(ctl tag desktp1 threat.high 2>&1); rc=$?
check "tag of an unknown VM exits 1" test $rc -eq 1
check "unknown VM gets a suggestion" has "$out" "unknown VM 'desktp1' (did you mean 'desktop1'?)"
out=$(ctl tag desktop1 threat.hihg 2>&1); rc=$?
check "tag with an unknown tag exits 1" test $rc -eq 1
check "unknown tag gets a suggestion" has "$out" "unknown tag 'threat.hihg' (did you mean 'threat.high'?)"
check "the store revision did not move" test "$(store_rev)" = "$rev0"
check "unknown command exits 1" exits 1 ctl frobnicate
check "tag without a tag exits 1" exits 1 ctl tag desktop1
check "rules for an unknown VM exits 1" exits 1 ctl rules nosuchvm
out=$("$CTL_BIN" --store /nonexistent/store.db tag desktop1 threat.high 2>&1); rc=$?
check "a missing store exits 3" test $rc -eq 3

echo "# the control socket"
check "status answers ok" test "$(ask "$SOCK" status)" = ok
check "an unknown request is an error" has "$(ask "$SOCK" bogus)" "^error: unknown request 'bogus'"
check "an empty request is an error" has "$(ask "$SOCK" "")" "^error: empty request"
check "control characters are rejected" has "$(ask "$SOCK" "$(printf 'status\001')")" "^error: request contains control characters"
check "an overlong request is rejected" has "$(ask "$SOCK" "$(printf 'a%.0s' $(seq 5000))")" "^error: request too long"
check "too many words are rejected" has "$(ask "$SOCK" "rules a b c d e")" "^error: too many words"
check "an unknown group gets a suggestion" has "$(ask "$SOCK" "groups desktps")" "did you mean 'desktops'"
check "dfwd still answers after bad requests" ctl status
check "the socket is root-only (0600)" test "$(stat -c %a "$SOCK")" = 600

echo "# bad store contents written behind our back"
sqlite3 "$STORE" "BEGIN IMMEDIATE;
UPDATE meta SET value = value + 1 WHERE name = 'rev';
UPDATE kv SET value = '[vm broken', mod_rev = (SELECT value FROM meta WHERE name = 'rev') WHERE key = 'policy';
INSERT INTO changes (rev, key, value) VALUES ((SELECT value FROM meta WHERE name = 'rev'), 'policy', '[vm broken');
UPDATE meta SET value = value + 1 WHERE name = 'rev';
INSERT INTO kv (key, value, mod_rev) VALUES ('tag/ghost/threat.high', '', (SELECT value FROM meta WHERE name = 'rev'));
INSERT INTO changes (rev, key, value) VALUES ((SELECT value FROM meta WHERE name = 'rev'), 'tag/ghost/threat.high', '');
COMMIT;"
sleep 1.5
check "dfwd reports the bad policy with its key" grep -q "store key 'policy' is not a valid policy" "/run/dfw-lab/$LAB/hv1.log"
check "dfwd reports the bad tag key" grep -q "store key 'tag/ghost/threat.high': no VM 'ghost'" "/run/dfw-lab/$LAB/hv1.log"
check "status shows the rejection" sh -c "'$LAB_BIN' ctl --lab $LAB -- status | grep -q 'last_error: store key .policy. rejected'"
check "the last good policy stays: east-west still blocked" blocked desktop1 desktop2 tcp/445
check "the last good policy stays: allowed flow passes" reach desktop1 fs1 tcp/445
rev=$(ctl apply "$TOP/configs/vdi.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "a good apply recovers" wait_realized "$rev"

echo "# a damaged store file"
head -c 8192 /dev/urandom >"$TMPD/damaged.db"
out=$("$CTL_BIN" --store "$TMPD/damaged.db" tags 2>&1); rc=$?
check "a damaged store file is refused with exit 3" test $rc -eq 3
check "the reason names the file" has "$out" "damaged.db: not a dfw store"
