#!/usr/bin/env bash
# `dfwctl trace` against real packets: for every ordered pair of VMs and a
# list of services, `dfwctl trace --matrix` (the compiled policy evaluated
# without a packet) must equal `dfw-lab matrix` (real TCP, UDP and ICMP
# probes through the kernel), in IPv4 and IPv6:
#   - the VDI farm untagged, then with desktop1 quarantined, where the
#     what-if `trace --assume-tag desktop1=threat.high` made BEFORE the tag
#     must predict the matrix measured after it;
#   - random policies of the whole rule model (dfw-gen --rich: negation,
#     ranges, ICMP types, proto/N, service objects, reject, disabled rules,
#     applied_to, directions, scoped tags) on 5-8 VMs, untagged and with
#     tags on two VMs; every third seed on two hosts joined by VXLAN, so
#     that flows cross the uplinks.
# A disagreement is probed once more, alone and with a longer timeout; one
# that stays is a failure, printed with the pair, the service, both verdicts
# and the trace's explanation.
#
# DFW_TRACE_SEEDS (default 5) random policies from seed DFW_TRACE_SEED
# (default 1); DFW_TRACE_VALIDATE (default 100) seeds only validated.
source "$(dirname "$0")/lib.sh"
GEN_BIN=$(cd "$BUILD" && pwd)/dfw-gen
SEEDS=${DFW_TRACE_SEEDS:-5}
SEED0=${DFW_TRACE_SEED:-1}
NVALIDATE=${DFW_TRACE_VALIDATE:-100}
VDI_SVCS=tcp/443,tcp/445,tcp/4001,udp/53,tcp/22,icmp
# 85, 8080 and 55 fall in the generator's ranges (tcp/80-90, tcp/8000-8099,
# udp/50-60), 443 in a range and alone, the others alone; icmp is an echo
# request (v4 or v6).  Not proto/N: conntrack keys it by the address pair,
# so B -> A passes as the reply of an earlier A -> B (sim/lab.h), which is
# not the new connection a trace evaluates.
GEN_SVCS=tcp/22,tcp/85,tcp/443,tcp/8080,udp/53,udp/55,udp/123,icmp
TMPD=$(mktemp -d)
trap 'rm -rf "$TMPD"; finish' EXIT

if ! command -v python3 >/dev/null; then
	bad "python3 is needed to compare the JSON of matrix and trace"
	exit 1
fi

# The comparison: matrix.json trace.json SERVICES prints a "# ..." summary
# line, then one line per disagreement: "SRC DST SERVICE PROBE TRACE" with
# reachable/blocked (SERVICE '*' and absent when a pair is in one only).
# Exit 0 when they agree, 1 when they do not, 2 when a file is no JSON.
cat >"$TMPD/cmp.py" <<'EOF'
import json, sys
try:
    m, t = (json.load(open(f)) for f in sys.argv[1:3])
except (OSError, ValueError) as e:
    print(f"# cannot compare: {e}")
    sys.exit(2)
svcs = sys.argv[3].split(',')
word = lambda b: 'reachable' if b else 'blocked'
pairs = allowed = 0
out = []
for src in sorted(set(m) | set(t)):
    ms, ts = m.get(src, {}), t.get(src, {})
    for dst in sorted(set(ms) | set(ts)):
        if dst not in ms or dst not in ts:
            out.append(f"{src} {dst} * {'present' if dst in ms else 'absent'} "
                       f"{'present' if dst in ts else 'absent'}")
            continue
        pairs += 1
        for lst in (ms[dst], ts[dst]):
            for s in lst:
                if s not in svcs:
                    out.append(f"{src} {dst} {s} unknown-service listed")
        for s in svcs:
            a, b = s in ms[dst], s in ts[dst]
            allowed += a
            if a != b:
                out.append(f"{src} {dst} {s} {word(a)} {word(b)}")
print(f"# {pairs} pairs, {allowed} of {pairs * len(svcs)} (pair, service) reachable by probe")
if out:
    print('\n'.join(out))
sys.exit(1 if out else 0)
EOF
cmpjson() { python3 "$TMPD/cmp.py" "$@"; }

# agree WHAT MATRIX TRACE SERVICES FAMILY-OPT [TRACE-ARGS...]: the two JSON
# files agree, or each disagreement survives a lone re-probe (then fails).
agree() {
	local what=$1 mfile=$2 tfile=$3 svcs=$4 fam=$5 res rc src dst svc probe tr again n=0 flaky=0
	shift 5
	res=$(cmpjson "$mfile" "$tfile" "$svcs")
	rc=$?
	if [ $rc -eq 0 ]; then
		ok "$what: trace equals the probes ($(sed -n 's/^# //p' <<<"$res" | head -1))"
		return 0
	fi
	sed -n 's/^# /# /p' <<<"$res"
	if [ $rc -ne 1 ]; then
		bad "$what: matrix and trace could be compared"
		return 1
	fi
	while read -r src dst svc probe tr; do
		[ "${src:0:1}" = "#" ] && continue
		again=""
		if [ "$svc" != "*" ] && [ "$tr" != listed ]; then
			"$LAB_BIN" probe "$src" "$dst" "$svc" $fam --timeout 2000 --lab "$LAB" >/dev/null 2>&1
			case $? in 0) again=reachable ;; 1) again=blocked ;; *) again=error ;; esac
			if [ "$again" = "$tr" ]; then
				echo "#   flaky probe: $src -> $dst $svc $fam: matrix said $probe, a lone re-probe $again, as trace"
				flaky=$((flaky + 1))
				continue
			fi
		fi
		n=$((n + 1))
		echo "#   DISAGREE $what: $src -> $dst $svc $fam: probe $probe (re-probe ${again:-n/a}), trace $tr"
		[ "$svc" != "*" ] && [ "$tr" != listed ] &&
			ctl trace "$src" "$dst" "$svc" ${fam:+--ipv6} "$@" 2>&1 | sed 's/^/#     /'
	done <<<"$res"
	if [ $n -eq 0 ]; then
		ok "$what: trace equals the probes ($flaky flaky probe(s) settled by a re-probe)"
	else
		bad "$what: trace and probes disagree on $n (pair, service)"
	fi
}

# compare TAG SERVICES [-6]: measures the matrix and traces it (into
# $TMPD/TAG.{m,t}.json), then agree.
compare() {
	local tag=$1 svcs=$2 fam=${3:-}
	"$LAB_BIN" matrix --ports "$svcs" --json $fam --lab "$LAB" >"$TMPD/$tag.m.json" 2>"$TMPD/$tag.m.err" ||
		{ bad "$tag: dfw-lab matrix ran"; sed 's/^/#   /' "$TMPD/$tag.m.err"; return; }
	ctl trace --matrix "$svcs" --json ${fam:+--ipv6} >"$TMPD/$tag.t.json" 2>"$TMPD/$tag.t.err" ||
		{ bad "$tag: dfwctl trace --matrix ran"; sed 's/^/#   /' "$TMPD/$tag.t.err"; return; }
	echo "# $tag: $(cat "$TMPD/$tag.m.err")"
	agree "$tag" "$TMPD/$tag.m.json" "$TMPD/$tag.t.json" "$svcs" "$fam"
}

echo "# dfw-gen --rich: $NVALIDATE seeds in four shapes validate"
shapes=("--hosts 1 --vms 6 --groups 10 --rules 25 --tags 4"
	"--hosts 1 --vms 8 --groups 6 --rules 40 --tags 2"
	"--hosts 3 --vms 300 --groups 60 --rules 300"
	"--hosts 2 --vms 5 --local-vms 3 --groups 3 --rules 10 --tags 0")
nbad=0
for s in $(seq "$NVALIDATE"); do
	# shellcheck disable=SC2086
	if ! "$GEN_BIN" --rich --seed "$s" ${shapes[$((s % 4))]} -o "$TMPD/v.ini" ||
	   ! "$CTL_BIN" validate "$TMPD/v.ini" >"$TMPD/v.out" 2>&1; then
		[ $nbad -lt 3 ] && { echo "# seed $s (${shapes[$((s % 4))]}):"; head -5 "$TMPD/v.out" | sed 's/^/#   /'; }
		nbad=$((nbad + 1))
	fi
done
check "every dfw-gen --rich policy validates ($nbad of $NVALIDATE failed)" test $nbad -eq 0
has_all() { # has_all FILE PATTERN...: every grep pattern matches a line
	local f=$1 p rc=0
	shift
	for p in "$@"; do grep -q -- "$p" "$f" || { echo "# missing: $p"; rc=1; }; done
	return $rc
}
"$GEN_BIN" --rich --seed 1 --hosts 1 --vms 6 --groups 10 --rules 60 --tags 4 -o "$TMPD/all.ini"
if has_all "$TMPD/all.ini" \
	'^sources = not ' '^destinations = not ' '= not .*[0-9]/[0-9]' \
	'^action = reject' '^action = drop' '^action = allow' '^default_action = ' '^disabled = yes' \
	'^\[service ' '^entries = .*svc[0-9]' '^services = .*svc[0-9]' '^applied_to = g' \
	'tcp/[0-9]*-[0-9]' 'udp/[0-9]*-[0-9]' 'icmp/echo-request' 'icmp/[0-9]*:[0-9]' \
	'icmpv6/[0-9a-z]' 'proto/[0-9]' 'proto/gre' '[ =]tcp\(,\|$\)' \
	'^names = .*, app|t1' 'tag equals [a-z]*|t[0-9]' 'tag equals [a-z]*|\( \|$\)' 'tag equals t[0-9]' \
	'^category = emergency' '^category = infrastructure' '^category = environment' \
	'^category = application' '^direction = in$' '^direction = out$' '^direction = in-out$'; then
	ok "dfw-gen --rich uses every construct of the rule model"
else
	bad "dfw-gen --rich uses every construct of the rule model"
fi

echo "# the VDI farm"
lab_up ktrace "$TOP/configs/vdi.ini"
trap 'rm -rf "$TMPD"; finish' EXIT
check "dfwd realized the policy" wait_realized 1
compare vdi-v4 $VDI_SVCS
compare vdi-v6 $VDI_SVCS -6
# The what-if, before the tag exists.
check "trace --matrix --assume-tag desktop1=threat.high (IPv4)" sh -c \
	"'$LAB_BIN' ctl --lab $LAB -- trace --matrix $VDI_SVCS --json --assume-tag desktop1=threat.high >'$TMPD/whatif-v4.json'"
check "trace --matrix --assume-tag desktop1=threat.high (IPv6)" sh -c \
	"'$LAB_BIN' ctl --lab $LAB -- trace --matrix $VDI_SVCS --json --ipv6 --assume-tag desktop1=threat.high >'$TMPD/whatif-v6.json'"
check "the what-if predicts a change (it differs from the untagged trace)" \
	exits 1 cmpjson "$TMPD/vdi-v4.t.json" "$TMPD/whatif-v4.json" $VDI_SVCS

echo "# desktop1 quarantined"
check "tag desktop1 threat.high --wait" ctl --wait tag desktop1 threat.high
compare vdi-q-v4 $VDI_SVCS
compare vdi-q-v6 $VDI_SVCS -6
agree "what-if made before tagging vs matrix after (IPv4)" "$TMPD/vdi-q-v4.m.json" \
	"$TMPD/whatif-v4.json" $VDI_SVCS "" --assume-tag desktop1=threat.high
agree "what-if made before tagging vs matrix after (IPv6)" "$TMPD/vdi-q-v6.m.json" \
	"$TMPD/whatif-v6.json" $VDI_SVCS -6 --assume-tag desktop1=threat.high
# The comparison can fail: the untagged prediction is wrong now.
check "the comparison catches a wrong prediction (untagged trace vs quarantined probes)" \
	exits 1 cmpjson "$TMPD/vdi-q-v4.m.json" "$TMPD/vdi-v4.t.json" $VDI_SVCS
"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1

echo "# configs/segmentation.ini: every construct, several subnets, two hosts"
SEG_SVCS=tcp/443,tcp/22,udp/53,icmp,tcp/8080,tcp/5432,tcp/445,udp/500
LAB=ktrseg
"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
if "$LAB_BIN" up "$TOP/configs/segmentation.ini" --lab "$LAB" >"$TMPD/up.out" 2>&1; then
	check "segmentation: dfwd realized the policy" wait_realized 1
	compare seg-v4 $SEG_SVCS
	compare seg-v6 $SEG_SVCS -6
	check "segmentation: the policy lets something through (a test that can fail)" \
		sh -c "grep -q '\"tcp/8080\"' '$TMPD/seg-v4.m.json'"
else
	bad "segmentation: the lab comes up"
	sed 's/^/#   /' "$TMPD/up.out"
fi
"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1

echo "# $SEEDS random policies (dfw-gen --rich) from seed $SEED0"
tag_two() { ctl --wait tag vm00001 'app|t1' t1 && ctl --wait tag vm00002 threat.medium; }
# all_at N REV: N hosts' dfwd are alive and realized REV (10 s at most).
all_at() {
	local i
	for i in $(seq 100); do
		ctl hosts 2>/dev/null | awk -v want="$1" -v rev="$2" '
			{ n++; for (i = 1; i <= NF; i++) { split($i, kv, "=");
			  if ((kv[1] == "alive" && kv[2] != "yes") || (kv[1] == "revision" && kv[2] + 0 < rev + 0)) bad++ } }
			END { exit !(n == want && !bad) }' && return 0
		sleep 0.1
	done
	return 1
}
for seed in $(seq "$SEED0" $((SEED0 + SEEDS - 1))); do
	nvms=$((5 + seed % 4))
	nhosts=$((seed % 3 == 0 ? 2 : 1))
	gen=(--rich --seed "$seed" --hosts $nhosts --vms $nvms --local-vms $(((nvms + nhosts - 1) / nhosts))
	     --groups 10 --rules 25 --tags 4)
	echo "# seed $seed: dfw-gen ${gen[*]}"
	if ! "$GEN_BIN" "${gen[@]}" -o "$TMPD/gen-$seed.ini"; then
		bad "seed $seed: dfw-gen wrote the policy"
		continue
	fi
	LAB=ktrgen
	"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
	if ! "$LAB_BIN" up "$TMPD/gen-$seed.ini" --lab "$LAB" >"$TMPD/up.out" 2>&1; then
		bad "seed $seed: the lab comes up"
		sed 's/^/#   /' "$TMPD/up.out"
		continue
	fi
	check "seed $seed: every host's dfwd realized the policy" all_at $nhosts 1
	compare "seed$seed-v4" $GEN_SVCS
	compare "seed$seed-v6" $GEN_SVCS -6
	# Tag groups (scoped tags too) and quarantine at work: tags on two VMs.
	check "seed $seed: tag vm00001 app|t1 t1, vm00002 threat.medium (--wait)" tag_two
	compare "seed$seed-tagged-v4" $GEN_SVCS
	compare "seed$seed-tagged-v6" $GEN_SVCS -6
	"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
done
