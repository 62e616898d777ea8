#!/usr/bin/env bash
# Bad input changes nothing: bad configs, unknown VMs or tags on the CLI,
# malformed control-socket requests, bad store contents, a damaged store.
source "$(dirname "$0")/lib.sh"
lab_up kbad "$TOP/configs/vdi.ini"
TMPD=$(mktemp -d)
STRAY=
trap 'test -n "$STRAY" && kill "$STRAY" 2>/dev/null; rm -rf "$TMPD"; finish' EXIT
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
check "tags of an unknown VM exits 1" exits 1 ctl tags desktop11
check "block with --for twice exits 1" exits 1 ctl block 10.10.0.99 --for 1m --for 2m
check "naming the VM it may mean" sh -c "'$LAB_BIN' ctl --lab $LAB -- tags desktop11 2>&1 | grep -q \"unknown VM 'desktop11' (did you mean 'desktop1'?)\""
out=$("$CTL_BIN" --store /nonexistent/store.db tag desktop1 threat.high 2>&1); rc=$?
check "a missing store exits 3" test $rc -eq 3
out=$("$CTL_BIN" --store etcd://h:99999/x tags 2>&1); rc=$?
check "a malformed etcd URI is bad input (exit 1)" test $rc -eq 1
check "naming the port" has "$out" 'bad port "99999"'
check "an unknown store scheme exits 1" exits 1 "$CTL_BIN" --store foo://x tags
out=$(ctl trace desktp1 cs1 tcp/443 2>&1); rc=$?
check "trace of an unknown VM exits 1" test $rc -eq 1
check "trace of an unknown VM gets a suggestion" has "$out" "did you mean 'desktop1'"
check "trace with a bad service exits 1" exits 1 ctl trace desktop1 cs1 tcp/99999
check "trace with a port range exits 1" exits 1 ctl trace desktop1 cs1 tcp/1-2
check "trace with icmpv6 to IPv4 addresses exits 1" exits 1 ctl trace 10.10.0.11 10.10.0.21 icmpv6
check "trace between two non-VMs exits 1" exits 1 ctl trace 192.0.2.1 192.0.2.2 tcp/80
check "trace --assume-tag with an undeclared tag exits 1" exits 1 ctl trace desktop1 cs1 tcp/443 --assume-tag desktop1=threat.hihg
check "trace --assume-tag without = exits 1" exits 1 ctl trace desktop1 cs1 tcp/443 --assume-tag desktop1
check "an option of another command exits 1" exits 1 ctl tag desktop1 threat.high --for 1m
check "--check with block exits 1 (no dry run there)" exits 1 ctl block 10.0.0.1 --for 1m --check
check "trace of tcp without a port exits 1" exits 1 ctl trace desktop1 cs1 tcp
check "trace --matrix without a service exits 1" exits 1 ctl trace --matrix ""
check "trace --matrix of only commas exits 1" exits 1 ctl trace --matrix ,,
check "trace --ipv6 with IPv4 addresses exits 1" exits 1 ctl trace 10.10.0.11 10.10.0.21 tcp/443 --ipv6
check "plan of a bad config exits 1" exits 1 ctl plan "$TMPD/bad.ini"
check "apply --check of a bad config exits 1" exits 1 ctl apply --check "$TMPD/bad.ini"
check "counters of an unknown rule exits 1" exits 1 ctl counters --rule 999
check "mode with an unknown category exits 1" exits 1 ctl mode monitor --category emergancy
check "mode with an unknown rule exits 1" exits 1 ctl mode monitor 999
check "block of a prefix exits 1" exits 1 ctl block 10.0.0.0/8 --for 1m
check "block of 0.0.0.0 (every DHCP client's source) exits 1" exits 1 ctl block 0.0.0.0 --for 1m
check "block of the broadcast address exits 1" exits 1 ctl block 255.255.255.255 --for 1m
check "block of an IPv4-mapped address (it would block nothing) exits 1" exits 1 ctl block ::ffff:10.10.0.21 --for 1m
check "block with an unknown scope exits 1" exits 1 ctl block 10.0.0.1 --for 1m --scope nosuch
check "unblock of what is not blocked exits 1" exits 1 ctl unblock 10.0.0.1
check "learned forget of a VM that does not learn exits 1" exits 1 ctl learned forget desktop1
out=$(ctl place desktop1 hv11 2>&1); rc=$?
check "place on an unknown host exits 1" test $rc -eq 1
check "place on an unknown host says so" has "$out" "unknown host 'hv11' (did you mean 'hv1'?)"
check "the store revision did not move" test "$(store_rev)" = "$rev0"

echo "# the control socket"
check "status answers ok and its length" has "$(ask "$SOCK" status)" "^ok [0-9][0-9]*$"
check "an unknown request is an error" has "$(ask "$SOCK" bogus)" "^error: unknown request 'bogus'"
check "an empty request is an error" has "$(ask "$SOCK" "")" "^error: empty request"
check "control characters are rejected" has "$(ask "$SOCK" "$(printf 'status\001')")" "^error: request contains control characters"
check "an overlong request is rejected" has "$(ask "$SOCK" "$(printf 'a%.0s' $(seq 5000))")" "^error: request too long"
check "too many words are rejected" has "$(ask "$SOCK" "rules a b c d e")" "^error: too many words"
check "plan without a file is an error" has "$(ask "$SOCK" plan)" "^error: usage: plan FILE"
check "plan of a missing file is an error" has "$(ask "$SOCK" "plan /nonexistent.ini")" "^error: /nonexistent.ini"
mkfifo "$TMPD/fifo.ini"
check "plan of a FIFO is refused (dfwd would block on it)" has "$(ask "$SOCK" "plan $TMPD/fifo.ini")" "^error: .*fifo.ini: not a regular file"
check "counters of a bad rule id is an error" has "$(ask "$SOCK" "counters x1")" "^error: 'x1' is not a rule id"
check "an unknown group gets a suggestion" has "$(ask "$SOCK" "groups desktps")" "did you mean 'desktops'"
# raw SOCKET BYTES...: printf's output, then 2 s of silence before the end of
# input; the first line of the answer.
raw() { local sock=$1; shift; { printf "$@"; sleep 2; } | timeout 6 nc -U -q1 "$sock" 2>/dev/null | head -1; }
check "a line not whole within 1 s is refused, not run in part" has "$(raw "$SOCK" 'rules desktop')" "^error: no whole request line within 1000 ms; nothing done"
check "a CRLF request is answered" has "$(ask "$SOCK" "$(printf 'status\r')")" "^ok [0-9]"
check "input after the request line does not lose the answer" test "$(printf 'status\nstatus\nbogus\n' | timeout 3 nc -U -q1 "$SOCK" 2>/dev/null | head -1 | cut -d' ' -f1)" = ok
check "json first asks for JSON" has "$(printf 'json status\n' | timeout 3 nc -U -q1 "$SOCK" 2>/dev/null | sed -n 2p)" '^{'
check "a group named json is a name, not the JSON flag" has "$(ask "$SOCK" "groups json")" "^error: .*'json'"
check "dfwctl groups json exits 1 (no such group)" exits 1 ctl groups json
check "dfwctl: a request longer than dfwd takes exits 1" exits 1 ctl groups "$(printf 'g%.0s' $(seq 600))"
check "dfwctl mode --wait without a change exits 1" exits 1 ctl mode --wait
check "dfwd still answers after bad requests" ctl status
check "the socket is root-only (0600)" test "$(stat -c %a "$SOCK")" = 600
# An answer that ends before its length (dfwd dropped a reader that took
# too long): dfwctl says so and exits 3, not 0 with half a group list.
{ printf 'ok 100\n  group=desktops\n' | timeout 5 nc -lU -N "$TMPD/cut.sock" >/dev/null 2>&1; } &
for _ in $(seq 50); do test -S "$TMPD/cut.sock" && break; sleep 0.1; done
out=$("$CTL_BIN" --socket "$TMPD/cut.sock" groups 2>&1); rc=$?
check "dfwctl: an answer cut short exits 3" test $rc -eq 3
check "dfwctl: an answer cut short says so" has "$out" "the answer broke off after 17 of its 100 bytes"
wait
# A second dfwd on the running one's socket: it refuses before it touches
# the kernel, and the first keeps its socket (it was replaced, then removed).
ino=$(stat -c %i "$SOCK")
out=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- timeout 5 "$(dirname "$CTL_BIN")/dfwd" --host hv1 --store "$STORE" \
	--socket "$SOCK" 2>&1); rc=$?
check "a second dfwd on the same socket exits 1" test $rc -eq 1
check "saying why" has "$out" "another dfwd answers there; not starting"
check "the first dfwd keeps its socket" test "$(stat -c %i "$SOCK")" = "$ino"
check "and answers" ctl status
echo keep >"$TMPD/not-a-socket"
out=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- timeout 5 "$(dirname "$CTL_BIN")/dfwd" --host hv1 --store "$STORE" \
	--table kbadx --socket "$TMPD/not-a-socket" 2>&1); rc=$?
check "dfwd with --socket naming a regular file exits 1" test $rc -eq 1
check "and leaves the file alone" test "$(cat "$TMPD/not-a-socket")" = keep
check "nor loads a table" sh -c "! '$LAB_BIN' exec --lab $LAB host:hv1 -- nft list tables | grep -q kbadx"

echo "# a lab whose hosts' files would clash"
awk '/^host = hv1$/ && !done { print "host = hv1.scan"; done = 1; next } { print }' \
	"$TOP/configs/vdi.ini" >"$TMPD/clash.ini"
out=$("$LAB_BIN" up "$TMPD/clash.ini" --lab kbadclash --no-daemon 2>&1); rc=$?
check "dfw-lab up of hosts hv1 and hv1.scan exits 1" test $rc -eq 1
check "naming both hosts and a file" has "$out" "host names 'hv1.scan' and 'hv1': both would use the file hv1.scan.[a-z]*"
check "and makes nothing" sh -c "test ! -e /run/dfw-lab/kbadclash && ! ip netns list | grep -q '^dfwl-kbadclash-'"
"$LAB_BIN" down --lab kbadclash >/dev/null 2>&1

echo "# bad store contents written behind our back"
# A policy with 30 errors: the log shows 20 of them.
bad=$(printf '[vm broken\n'; seq -f 'junk%g' 1 29)
sqlite3 "$STORE" "BEGIN IMMEDIATE;
UPDATE meta SET value = value + 1 WHERE name = 'rev';
UPDATE kv SET value = '$bad', mod_rev = (SELECT value FROM meta WHERE name = 'rev') WHERE key = 'policy';
INSERT INTO changes (rev, key, value) VALUES ((SELECT value FROM meta WHERE name = 'rev'), 'policy', '$bad');
UPDATE meta SET value = value + 1 WHERE name = 'rev';
INSERT INTO kv (key, value, mod_rev) VALUES ('tag/ghost/threat.high', '', (SELECT value FROM meta WHERE name = 'rev'));
INSERT INTO changes (rev, key, value) VALUES ((SELECT value FROM meta WHERE name = 'rev'), 'tag/ghost/threat.high', '');
COMMIT;"
sleep 1.5
check "dfwd reports the bad policy with its key" grep -q "store key 'policy' is not a valid policy" "/run/dfw-lab/$LAB/hv1.log"
check "with 20 of its 30 errors" test "$(grep -c "expected 'key = value', got 'junk" "/run/dfw-lab/$LAB/hv1.log")" -eq 19
check "and how many more" grep -q "  \.\.\. and 10 more error(s) ('dfwctl validate' lists them all)" "/run/dfw-lab/$LAB/hv1.log"
check "dfwd reports the bad tag key" grep -q "store key 'tag/ghost/threat.high': no VM 'ghost'" "/run/dfw-lab/$LAB/hv1.log"
check "status shows the rejection" sh -c "'$LAB_BIN' ctl --lab $LAB -- status | grep -q 'last_error: store key .policy. rejected'"
check "the last good policy stays: east-west still blocked" blocked desktop1 desktop2 tcp/445
check "the last good policy stays: allowed flow passes" reach desktop1 fs1 tcp/445
sqlite3 "$STORE" "BEGIN IMMEDIATE;
UPDATE meta SET value = value + 1 WHERE name = 'rev';
INSERT INTO kv (key, value, mod_rev) VALUES ('block/not-an-address', '1', (SELECT value FROM meta WHERE name = 'rev'));
INSERT INTO changes (rev, key, value) VALUES ((SELECT value FROM meta WHERE name = 'rev'), 'block/not-an-address', '1');
UPDATE meta SET value = value + 1 WHERE name = 'rev';
INSERT INTO kv (key, value, mod_rev) VALUES ('block/10.10.0.99', '-1', (SELECT value FROM meta WHERE name = 'rev'));
INSERT INTO changes (rev, key, value) VALUES ((SELECT value FROM meta WHERE name = 'rev'), 'block/10.10.0.99', '-1');
COMMIT;"
sleep 1.5
check "dfwd reports the bad block key" grep -q "store key 'block/not-an-address'" "/run/dfw-lab/$LAB/hv1.log"
check "dfwd reports a block value that is not a time" grep -q "store key 'block/10.10.0.99': value '-1' is not a time" "/run/dfw-lab/$LAB/hv1.log"
check "dfwd still answers after a bad block key" ctl status
# Restarted while the store's policy is bad, dfwd has no policy at all: the
# ruleset its predecessor left in the kernel stays (not the empty one).
lab daemon stop hv1 >/dev/null
lab daemon start hv1 >/dev/null
sleep 1
check "restarted over a bad policy, dfwd keeps the kernel's ruleset" grep -q "no valid policy read yet: the dfw ruleset in the kernel (the last realized) stays in force" "/run/dfw-lab/$LAB/hv1.log"
check "east-west still blocked after the restart" blocked desktop1 desktop2 tcp/445
check "the allowed flow still passes after the restart" reach desktop1 fs1 tcp/445
check "status says why" sh -c "'$LAB_BIN' ctl --lab $LAB -- status | grep -q 'last_error: no valid policy read yet'"
rev=$(ctl apply "$TOP/configs/vdi.ini" | sed -n 's/.* as revision \([0-9]*\).*/\1/p')
check "a good apply recovers" wait_realized "$rev"

echo "# dfwd's tables are its own: no other process changes them while it runs"
ctl tag desktop1 threat.high >/dev/null
check "the quarantine of desktop1 is realized" wait_realized "$(store_rev)"
out=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft delete element inet dfw g-quarantine-4 '{ 10.10.0.11 }' 2>&1); rc=$?
check "deleting a quarantine element by hand is refused" test $rc -ne 0
check "with EPERM" has "$out" "Operation not permitted"
check "desktop1 stays quarantined" blocked desktop1 fs1 tcp/445
check_not "deleting the table by hand is refused" "$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft delete table inet dfw
check "nft flush ruleset leaves them" sh -c "'$LAB_BIN' exec --lab $LAB host:hv1 -- nft flush ruleset &&
	'$LAB_BIN' exec --lab $LAB host:hv1 -- nft list tables | grep -q 'table inet dfw'"
check "east-west still blocked after the flush" blocked desktop2 desktop3 tcp/445
check "and desktop1 still quarantined" blocked desktop1 fs1 tcp/445
# A second dfwd for this host with a control socket of its own: it finds
# the tables owned by the first and refuses before it publishes anything
# (it would have marked the host not loaded, then dead when it stopped).
hosts0=$(ctl hosts | grep '^host=hv1' | sed 's/ updated=.*//')
out=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- timeout 5 "$(dirname "$CTL_BIN")/dfwd" --host hv1 --store "$STORE" \
	--socket "$TMPD/second.sock" 2>&1); rc=$?
check "a second dfwd with its own socket exits 1" test $rc -eq 1
check "saying the tables belong to another process" has "$out" "the tables dfw belong to another process (netlink port [0-9]*): another dfwd for this host?; not starting"
check "the host's published status is the first dfwd's" test "$(ctl hosts | grep '^host=hv1' | sed 's/ updated=.*//')" = "$hosts0"
lab daemon kill hv1 >/dev/null
check "killed, dfwd leaves its tables in force" sh -c "'$LAB_BIN' exec --lab $LAB host:hv1 -- nft list tables | grep -q 'table inet dfw'"
check "east-west still blocked with dfwd dead" blocked desktop2 desktop3 tcp/445
ctl untag desktop1 threat.high >/dev/null
# The next dfwd of this test shares its tables: the checks below change
# them behind its back.
DFW_LAB_SHARED_TABLES=1 "$LAB_BIN" daemon start hv1 --lab "$LAB" >/dev/null
check "restarted (sharing its tables), dfwd realizes the release" wait_realized "$(store_rev)"
check "desktop1 reaches fs1 again" reach desktop1 fs1 tcp/445

echo "# a batch the kernel refuses: a set element deleted behind dfwd's back"
ctl tag desktop1 threat.high >/dev/null
check "the quarantine is realized" wait_realized "$(store_rev)"
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft delete element inet dfw g-quarantine-4 '{ 10.10.0.11 }'
ctl untag desktop1 threat.high >/dev/null
rev=$(store_rev)
sleep 1
check "dfwd names the refused message and the kernel's reason" grep -q \
	"revision $rev not realized: kernel refused the change (delete 1 element(s) of set g-quarantine-4): No such file or directory" \
	"/run/dfw-lab/$LAB/hv1.log"
check "dfwd recovers with a full load" wait_realized "$rev"
check "status's last error is over once the full load went in" sh -c "'$LAB_BIN' ctl --lab $LAB -- status | grep -q 'last_error: none'"
check "desktop1 is released: it reaches fs1 again" reach desktop1 fs1 tcp/445
# A quarantine in a refused batch (its table deleted behind dfwd's back)
# is still cut once the full load that follows commits.
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft delete table inet dfw
ctl tag desktop2 threat.high >/dev/null
rev=$(store_rev)
check "the quarantine of desktop2 is realized by a full load" wait_realized "$rev"
check "dfwd said the tag's batch was refused" grep -q "revision $rev not realized: kernel refused the change (add 1 element(s) of set g-quarantine-4)" "/run/dfw-lab/$LAB/hv1.log"
check "and cut desktop2's connections after the full load" wait_log "quarantine: cut [0-9]* connection(s) of 1 VM(s) (desktop2)"
check "the cut came after the refusal" sh -c "grep -n -e 'revision $rev not realized' -e 'cut .* (desktop2)' /run/dfw-lab/$LAB/hv1.log | tail -2 | head -1 | grep -q 'not realized'"
# A change that rebuilds the membership engine (a monitor-mode change)
# must not cut the VMs already quarantined again.
n0=$(grep -c "quarantine: cut .*desktop2" "/run/dfw-lab/$LAB/hv1.log")
ctl mode monitor 110 >/dev/null
check "a mode change is realized" wait_realized "$(store_rev)"
check "desktop2, quarantined before, is not cut again" test "$(grep -c "quarantine: cut .*desktop2" "/run/dfw-lab/$LAB/hv1.log")" -eq "$n0"
ctl mode enforce 110 >/dev/null
ctl untag desktop2 threat.high >/dev/null
check "desktop2 released" wait_realized "$(store_rev)"
lab daemon stop hv1 >/dev/null
lab daemon start hv1 >/dev/null
wait_realized "$(store_rev)" || bad "dfwd restarted as usual realized the store"
check_not "restarted as usual, its tables are its own again" "$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft delete table inet dfw
# br_netfilter switched off at runtime (bridged IP would meet no policy):
# the heartbeat switches it on again.
"$LAB_BIN" exec --lab "$LAB" host:hv1 -- sysctl -qw net.bridge.bridge-nf-call-iptables=0
on=no
for i in $(seq 120); do
	[ "$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- sysctl -n net.bridge.bridge-nf-call-iptables)" = 1 ] && { on=yes; break; }
	sleep 0.1
done
check "bridge-nf-call-iptables switched off is on again within the heartbeat" test $on = yes
check "dfwd says so" wait_log "heartbeat: bridge-nf-call-iptables/ip6tables was off (bridged traffic bypassed the policy); set to 1 again"
check "east-west blocked again" blocked desktop2 desktop3 tcp/445

echo "# a damaged store file"
head -c 8192 /dev/urandom >"$TMPD/damaged.db"
out=$("$CTL_BIN" --store "$TMPD/damaged.db" tags 2>&1); rc=$?
check "a damaged store file is refused with exit 3" test $rc -eq 3
check "the reason names the file" has "$out" "damaged.db: not a dfw store"
# A store in a read-only directory (a bind mount in a mount namespace of
# this test's own): SQLite cannot make its -wal and -shm files there.
mkdir "$TMPD/ro"
sqlite3 "$STORE" ".backup '$TMPD/ro/s.db'"
out=$(unshare -m sh -c "mount --bind '$TMPD/ro' '$TMPD/ro' && mount -o remount,ro,bind '$TMPD/ro' &&
	'$CTL_BIN' --store '$TMPD/ro/s.db' tags" 2>&1); rc=$?
check "a store in a read-only directory is refused with exit 3" test $rc -eq 3
check "saying the directory is read-only" has "$out" "s.db: cannot open store: its directory is read-only"

echo "# a pidfile that names a process of no lab"
# dfw-lab signals only a live dfwd, dfw-scan or etcd of this lab, and
# through a pidfd opened before it checks the process.
sleep 300 &
STRAY=$!
"$LAB_BIN" daemon stop hv1 --scanner --lab "$LAB" >/dev/null 2>&1
echo "$STRAY" >"/run/dfw-lab/$LAB/hv1.scan.pid"
out=$("$LAB_BIN" daemon stop hv1 --scanner --lab "$LAB" 2>&1); rc=$?
check "stop with a stale pidfile leaves that process alone" kill -0 "$STRAY"
"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
check "and so does down" kill -0 "$STRAY"
check "down removed the lab" test ! -e "/run/dfw-lab/$LAB"
