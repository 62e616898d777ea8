#!/usr/bin/env bash
# dfwctl plan / apply --check: what a new policy would change, and the very
# batch apply sends, checked by the kernel without a commit.  Then apply it
# and see that the realized batch is the planned one.
source "$(dirname "$0")/lib.sh"
lab_up kplan "$TOP/configs/vdi.ini"
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"; finish' EXIT
wait_realized 1 || bad "dfwd realized the first revision"

# The edit: rule 210 gains tcp/139, a new rule 245 lets desktops reach fs1
# on tcp/8080, dc1 moves from infra-servers to file-servers, and rule 240
# is deleted.
sed -e 's|^services = tcp/445$|services = tcp/445, tcp/139|' \
    -e 's|^members = fs1$|members = fs1, dc1|' \
    -e 's|^members = dc1$|members = |' \
    -e '/^\[rule 240\]/,$d' "$TOP/configs/vdi.ini" >"$TMPD/new.ini"
sed -i 's|^members = $|match = name equals nosuchvm|' "$TMPD/new.ini"
cat >>"$TMPD/new.ini" <<'INI'
[rule 245]
name = desktops to the file server's web
sources = desktops
destinations = file-servers
services = tcp/8080
action = allow
INI
rev0=$(store_rev)
# -s: without counter values, which background traffic moves.
nft0=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft -s list ruleset | md5sum)

out=$(ctl plan "$TMPD/new.ini" 2>&1); rc=$?
check "plan exits 0" test $rc -eq 0
check "plan: rule 210 changed" has "$out" "change=changed name=210"
check "plan: rule 245 added" has "$out" "change=added name=245"
check "plan: rule 240 removed" has "$out" "change=removed name=240"
check "plan: dc1 joins file-servers" has "$out" "group=file-servers vm=dc1 change=joins"
check "plan: dc1 leaves infra-servers" has "$out" "group=infra-servers vm=dc1 change=leaves"
check "plan: the kernel accepted the batch" has "$out" "kernel_check: accepted (nothing committed)"
check "plan: vNICs touched are listed" has "$out" "vnics: .*vnet-dc1"
planned=$(echo "$out" | sed -n 's/^batch_messages: //p')
check "plan: the batch has messages" test "${planned:-0}" -gt 0
check "plan wrote nothing to the store" test "$(store_rev)" = "$rev0"
check "plan changed nothing in the kernel" test "$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft -s list ruleset | md5sum)" = "$nft0"
check "nothing changed: fs1 still closed on tcp/139" blocked desktop1 fs1 tcp/139

out=$(ctl apply --check "$TMPD/new.ini" 2>&1); rc=$?
check "apply --check exits 0" test $rc -eq 0
check "apply --check shows the same plan" has "$out" "change=added name=245"
check "apply --check wrote nothing" test "$(store_rev)" = "$rev0"

out=$(ctl plan --json "$TMPD/new.ini")
check "plan --json is JSON with the kernel's answer" has "$out" '"kernel_check":"accepted (nothing committed)"'

echo "# apply: the realized batch is the planned one"
check "apply --wait" ctl apply --wait "$TMPD/new.ini"
# Check mode sends the batch without its batch-end message (the kernel
# then validates everything and aborts); the commit is the same batch
# with it.
check "the realized batch is the planned one plus its batch end" \
	test "$(ctl status | sed -n 's/^last_batch_messages: //p')" = "$((planned + 1))"
check "now fs1 is open on tcp/139" reach desktop1 fs1 tcp/139
check "a plan of the applied file changes nothing" has "$(ctl plan "$TMPD/new.ini")" "^changes: 0"

echo "# dispatch by port (the vdi policy's in chain has a run of port rules)"
table=$("$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list table inet dfw)
check "the in chain enters its port rules through a verdict map" \
	has "$table" "tcp dport vmap @i-[0-9a-f]*\.0\.tcp"
# Every chain and map of a policy chain is named after it: after the
# apply replaced both, only the new ones' objects are left.
names=$(printf '%s\n' "$table" | sed -n 's/^\t\(chain\|map\) \([io]-[0-9a-f]*\).*/\2/p' | sort -u)
check "the replaced chains' dispatch chains and maps are gone" test "$(printf '%s\n' "$names" | wc -l)" -eq 2
in_chain=$(printf '%s\n' "$names" | grep '^i-')
check "the new in chain is fs1's" has "$(ctl rules fs1)" "$in_chain"
out=$(ctl --json rules fs1)
check "rule 210's hits count at fs1, from its port's chain" \
	jq -e '[.. | objects | select(.id? == 210 and (.hits? // 0) > 0)] | length > 0' <<<"$out"

echo "# a static group that outgrows its kernel set: the revision goes in by a full load"
# file-servers' address set was made for fs1 alone, with room for 65 (at
# least 64 more than it held), and kept when dc1 joined; now 70 VMs on
# another host join it.
sed 's|^members = fs1, dc1$|members = fs1, dc1, '"$(seq -s ', ' -f 'far%g' 70)"'|' \
	"$TMPD/new.ini" >"$TMPD/grown.ini"
for i in $(seq 70); do
	printf '[vm far%d]\nhost = hv9\nport = vnet-far%d\nmac = 02:00:00:19:%02x:%02x\naddresses = 10.19.%d.%d\n\n' \
		"$i" "$i" $((i / 256)) $((i % 256)) $((i / 256)) $((i % 256 + 1))
done >>"$TMPD/grown.ini"
set4() { "$LAB_BIN" exec --lab "$LAB" host:hv1 -- nft list set inet dfw g-file-servers-4; }
check "before: the set's size is 65" has "$(set4)" "size 65$"
out=$(ctl plan "$TMPD/grown.ini" 2>&1)
check "plan says the revision needs a full load" has "$out" "full_load: set g-file-servers-4: 72 elements, more than the kernel's set holds (65)"
check "plan: the kernel accepted the full load's batch" has "$out" "kernel_check: accepted (nothing committed)"
check "apply --wait the grown policy" ctl apply --wait "$TMPD/grown.ini"
check "dfwd says why it loaded everything" wait_log "g-file-servers-4: 72 elements, more than the kernel's set holds (65): a full load"
check_not "no batch was refused on the way (the kernel's set full)" grep -q "not realized" "/run/dfw-lab/$LAB/hv1.log"
check "after: the set holds the 72 with room for 144" has "$(set4)" "size 144$"
check "after: far70's address is in it" has "$(set4)" "10\.19\.0\.71"
check "the realized revision is the store's" test "$(ctl status | sed -n 's/^realized_revision: //p')" = "$(store_rev)"
check "desktops still reach fs1 on tcp/139" reach desktop1 fs1 tcp/139
check "and still not on tcp/22" blocked desktop1 fs1 tcp/22
out=$(ctl --json rules fs1)
check "rule 210's hits at fs1 survived the full load" \
	jq -e '[.. | objects | select(.id? == 210 and (.hits? // 0) > 0)] | length > 0' <<<"$out"
check "a plan of the applied file changes nothing" has "$(ctl plan "$TMPD/grown.ini")" "^changes: 0"
