#!/usr/bin/env bash
# Packet-path benchmark (issue #5): what the firewall costs traffic between
# two lab VMs on one bridge, with no firewall, with dfw at ~100 and ~10k
# rules, and with the same 10k-rule policy written as one linear nftables
# chain of literal addresses.
#
#   bash tests/bench/bench-packet.sh BUILD [--tiny]     (from the repo root)
#
# Figures ("name: value unit", tests/bench/bench.h), each the median of 3 runs:
#   pkt_tcp_gbps_*          iperf3 TCP throughput, client -> server
#   pkt_udp64_pps_*         iperf3 UDP, 64-byte payloads, unlimited rate:
#                           datagrams/s that reached the server
#   pkt_newflows_per_s_*    new TCP flows/s: back-to-back connects from one
#                           shell loop (no fork) to an allowed closed port;
#                           every SYN is a new conntrack entry that walks the
#                           rules, the RST back is "established"
# for * = nofw, 100, 10k, linear10k; and the ratios
#   pkt_tcp_ratio_10k_vs_nofw, pkt_udp64_ratio_10k_vs_nofw (medians of the
#   ratios of paired rounds: dfw at 10k, then no firewall, in the same
#   minute; REPS rounds after the runs above),
#   pkt_newflow_cost_ratio_10k_vs_100 (cost = 1/rate),
#   pkt_newflow_ratio_sets_vs_linear (rate with dfw / rate with the linear chain),
#   pkt_newflows_per_s_100_netthreat and pkt_newflow_cost_ratio_netthreat_vs_off:
#   the 100-rule policy with dfwd's network threat detector reading every
#   new flow (monitor mode), and what that costs a new flow.
#
# iperf3's client runs on CPU 0 and its server on the last CPU.
#
# --tiny: tiny policies, 1-second runs, one repetition (exercised by
# `make check`; the figures mean nothing).
#
# The lab (dfw-lab, namespaces dfwl-bpkt-*) has one host and three VMs:
# client, server, and other (never allowed; the blocked sanity probe).  The
# scale is in the rules and groups, which is what the packet path sees.  The
# flow under test is allowed only by the LAST rule, after N-1 rules that do
# not match it, and the rule counters are checked to show it.  The policies
# are written here, not by build/dfw-gen: dfw-gen draws a realistic mix
# (sources = any, groups by name, tag or OS), where the flow under test may
# match early, and whose groups would have to be resolved to write the
# linear version.  Everything runs in the lab's namespaces and is removed on
# exit, also on failure or interruption.
set -u
BUILD=${1:-build}
TINY=0
case "${2:-}" in
'') ;;
--tiny) TINY=1 ;;
*) echo "bench-packet.sh: unknown argument '$2'; usage: bench-packet.sh BUILD [--tiny]" >&2; exit 1 ;;
esac
[ $# -le 2 ] || { echo "bench-packet.sh: too many arguments; usage: bench-packet.sh BUILD [--tiny]" >&2; exit 1; }
cd "$(dirname "$0")/../.." || exit 2
LAB_BIN=$(cd "$BUILD" 2>/dev/null && pwd)/dfw-lab
LAB=bpkt
HOST=hv1
CLIENT_IP=10.77.0.11
SERVER_IP=10.77.0.12
OTHER_IP=10.77.0.13
IPERF_PORT=5201
FLOW_PORT=5202 # allowed, nothing listens: SYN -> RST

if [ $TINY -eq 1 ]; then
	SMALL_RULES=10 SMALL_GROUPS=5 BIG_RULES=50 BIG_GROUPS=10 SECS=1 REPS=1
else
	SMALL_RULES=100 SMALL_GROUPS=20 BIG_RULES=10000 BIG_GROUPS=1000 SECS=5 REPS=3
fi
FLOW_SECS=$SECS
# iperf3's client and server each on a CPU of its own, as two VMs on their
# own vCPUs: left to the scheduler, their moves between this machine's
# two CPUs changed the UDP rate by 30% from run to run.
CPU_CLIENT=0
CPU_SERVER=$(( $(nproc) - 1 ))
[ $TINY -eq 0 ] && FLOW_SECS=2

die() { echo "bench-packet: $*" >&2; exit 1; }
for t in iperf3 nft awk taskset; do
	command -v "$t" >/dev/null || die "$t is missing (make deps installs it)"
done
[ -x "$LAB_BIN" ] || die "$LAB_BIN is missing (make)"
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"

TMP=$(mktemp -d /tmp/bench-packet.XXXXXX)
IPERF_PID=""
cleanup() {
	local rc=$?
	[ -n "$IPERF_PID" ] && kill "$IPERF_PID" 2>/dev/null && wait "$IPERF_PID" 2>/dev/null
	"$LAB_BIN" down --lab "$LAB" >/dev/null 2>&1
	rm -rf "$TMP"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lab() { "$LAB_BIN" "$@" --lab "$LAB"; }
ctl() { "$LAB_BIN" ctl --lab "$LAB" -- "$@"; }
vm() { local v=$1; shift; "$LAB_BIN" exec --lab "$LAB" "$v" -- "$@"; }
hostns() { "$LAB_BIN" exec --lab "$LAB" "host:$HOST" -- "$@"; }

# --- policies --------------------------------------------------------------

# gen_policy RULES GROUPS SEED OUT_INI OUT_NFT: the dfw policy, and the same
# policy as one linear inet chain of literal addresses (one nft rule per
# policy rule: every group is one /24, so no rule expands).
#  - groups g0..g(G-1): 172.(16+i/256).(i%256).0/24, none holding a lab VM;
#  - rules 1..N-1: every 10th is clients -> servers on a port that is not
#    the one under test (so it matches source and destination, then fails
#    on the port); the others are group -> group on random tcp/udp ports;
#    each an allow or a drop at random;
#  - rule N, last: clients -> servers tcp/5201-5202, udp/5201: allow.
gen_policy() {
	awk -v N="$1" -v G="$2" -v SEED="$3" -v INI="$4" -v NFT="$5" \
	    -v C="$CLIENT_IP" -v S="$SERVER_IP" -v O="$OTHER_IP" '
	function cidr(i) { return sprintf("172.%d.%d.0/24", 16 + int(i / 256), i % 256) }
	BEGIN {
		srand(SEED)
		print "; generated by tests/bench/bench-packet.sh: " N " rules, " G " groups" > INI
		print "[global]\ndefault_action = drop\n" > INI
		split(C " " S " " O, ip, " ")
		split("client server other", name, " ")
		for (k = 1; k <= 3; k++)
			printf "[vm %s]\nhost = hv1\nport = vnet-%s\nmac = 02:00:00:77:00:%02d\naddresses = %s\n\n",
			       name[k], name[k], 10 + k, ip[k] > INI
		print "[group clients]\nmembers = client\n" > INI
		print "[group servers]\nmembers = server\n" > INI
		print "[group others]\nmembers = other\n" > INI
		for (i = 0; i < G; i++)
			printf "[group g%d]\naddresses = %s\n\n", i, cidr(i) > INI

		print "table inet benchlinear {" > NFT
		print "\tchain forward {" > NFT
		print "\t\ttype filter hook forward priority 0; policy accept;" > NFT
		print "\t\tct state established,related accept" > NFT
		print "\t\tct state invalid drop" > NFT
		for (r = 1; r < N; r++) {
			act = rand() < 0.5 ? "allow" : "drop"
			if (r % 10 == 0) {
				src = "clients"; dst = "servers"; sa = C; da = S
				proto = "tcp"; port = 6000 + int(rand() * 3000)
			} else {
				a = int(rand() * G); b = int(rand() * G)
				src = "g" a; dst = "g" b; sa = cidr(a); da = cidr(b)
				proto = rand() < 0.8 ? "tcp" : "udp"; port = 1000 + int(rand() * 59000)
			}
			printf "[rule %d]\nsources = %s\ndestinations = %s\nservices = %s/%d\naction = %s\n\n",
			       r, src, dst, proto, port, act > INI
			printf "\t\tip saddr %s ip daddr %s %s dport %d counter %s\n", sa, da, proto, port,
			       (act == "allow" ? "accept" : "drop") > NFT
		}
		printf "[rule %d]\nname = the flow under test\nsources = clients\ndestinations = servers\nservices = tcp/5201-5202, udp/5201\naction = allow\n",
		       N > INI
		printf "\t\tip saddr %s ip daddr %s tcp dport 5201-5202 counter accept comment \"last\"\n", C, S > NFT
		printf "\t\tip saddr %s ip daddr %s udp dport 5201 counter accept comment \"last\"\n", C, S > NFT
		print "\t\tdrop\n\t}\n}" > NFT
	}'
}

# --- measurements -----------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", (b > 0 ? a / b : 0) }'; }

# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'; }

# A number out of iperf3's --json text: KEY of the end summary's SECTION
# (e.g. "sum_received"), from the first "SECTION": line after "end": {.
json_num() {
	awk -v sec="\"$2\":" -v key="\"$3\":" '
		/^\t"end":/ { in_end = 1 }
		in_end && index($0, sec) { in_sec = 1 }
		in_sec && index($0, key) { gsub(/[",]/, ""); split($0, f, ":"); print f[2] + 0; exit }' "$1"
}

tcp_gbps() {
	local out=$TMP/tcp.json bps
	vm client taskset -c $CPU_CLIENT timeout $((SECS + 10)) iperf3 -c "$SERVER_IP" -p $IPERF_PORT -t "$SECS" -J >"$out" 2>&1 ||
		die "iperf3 TCP failed: $(grep -m1 error "$out")"
	bps=$(json_num "$out" sum_received bits_per_second)
	[ -n "$bps" ] || die "no throughput in iperf3's output: $(head -c 300 "$out")"
	awk -v b="$bps" 'BEGIN { printf "%.3f\n", b / 1e9 }'
}

# Received datagrams/s: the client's UDP summary carries the server's count
# of lost datagrams.
udp_pps() {
	local out=$TMP/udp.json pk lost secs
	vm client taskset -c $CPU_CLIENT timeout $((SECS + 10)) iperf3 -c "$SERVER_IP" -p $IPERF_PORT -u -l 64 -b 0 -t "$SECS" -J >"$out" 2>&1 ||
		die "iperf3 UDP failed: $(grep -m1 error "$out")"
	pk=$(json_num "$out" sum packets)
	lost=$(json_num "$out" sum lost_packets)
	secs=$(json_num "$out" sum seconds)
	[ -n "$pk" ] && [ -n "$lost" ] && [ -n "$secs" ] ||
		die "no UDP counts in iperf3's output: $(head -c 300 "$out")"
	awk -v p="$pk" -v l="$lost" -v s="$secs" 'BEGIN { printf "%.0f\n", (s > 0 ? (p - l) / s : 0) }'
}

# New flows/s: a bash loop in the client opening /dev/tcp connections to the
# allowed closed port for FLOW_SECS seconds; each is refused by the server's
# kernel (a full SYN / RST round trip through the bridge and the firewall).
newflows() {
	vm client timeout $((FLOW_SECS + 10)) bash -c '
		ip=$1 port=$2 secs=$3 n=0 fail=0
		t0=${EPOCHREALTIME/./}; end=$((t0 + secs * 1000000)); now=$t0
		while [ "$now" -lt "$end" ]; do
			for i in 1 2 3 4 5 6 7 8 9 10; do
				: 2>/dev/null 3<>"/dev/tcp/$ip/$port" && fail=$((fail + 1))
			done
			n=$((n + 10)); now=${EPOCHREALTIME/./}
		done
		# a connect that succeeded would mean something listens: not this test
		[ $fail -eq 0 ] || { echo "connected $fail times" >&2; exit 1; }
		awk -v n=$n -v us=$((now - t0)) "BEGIN { printf \"%.0f\n\", n / (us / 1e6) }"
	' newflows "$SERVER_IP" "$FLOW_PORT" "$FLOW_SECS" || die "new-flow loop failed"
}

# measure SUFFIX: the three figures, median of REPS runs each.
declare -A FIG
measure() {
	local sfx=$1 i v tcp="" udp="" nf=""
	# (a die in $(...) ends only the subshell: hence the "|| exit 1")
	for i in $(seq "$REPS"); do v=$(tcp_gbps) || exit 1; tcp+="$v"$'\n'; done
	for i in $(seq "$REPS"); do v=$(udp_pps) || exit 1; udp+="$v"$'\n'; done
	for i in $(seq "$REPS"); do v=$(newflows) || exit 1; nf+="$v"$'\n'; done
	FIG[tcp_$sfx]=$(printf '%s' "$tcp" | median)
	FIG[udp_$sfx]=$(printf '%s' "$udp" | median)
	FIG[nf_$sfx]=$(printf '%s' "$nf" | median)
	echo "pkt_tcp_gbps_$sfx: ${FIG[tcp_$sfx]} Gbit/s"
	echo "pkt_udp64_pps_$sfx: ${FIG[udp_$sfx]} packets/s"
	echo "pkt_newflows_per_s_$sfx: ${FIG[nf_$sfx]} flows/s"
	echo "# $sfx runs: tcp [$(echo $tcp)] udp64 [$(echo $udp)] newflows [$(echo $nf)]"
}

# --- sanity -----------------------------------------------------------------

probe() { "$LAB_BIN" probe "$@" --lab "$LAB" --timeout 1000 >/dev/null 2>&1; }
sanity() { # sanity WHAT [fw]: the flow under test passes; with fw, others do not
	probe client server tcp/$FLOW_PORT || die "$1: client -> server tcp/$FLOW_PORT is blocked"
	probe client server udp/$IPERF_PORT || die "$1: client -> server udp/$IPERF_PORT is blocked"
	[ "${2:-}" = fw ] || return 0
	probe other server tcp/$FLOW_PORT
	[ $? -eq 1 ] || die "$1: other -> server tcp/$FLOW_PORT is not blocked"
	probe server client tcp/$FLOW_PORT
	[ $? -eq 1 ] || die "$1: server -> client tcp/$FLOW_PORT is not blocked"
}

# only_last_hit WHAT TABLE LAST: after a measurement, LAST is the one rule
# that counted packets in TABLE (dfw's, or the linear one), besides dfw's
# default drop (the blocked sanity probes): the flow under test really
# walked past all the other rules.  The linear table's rules have their own
# counters; dfw's rules count in named counters, r-ID-out / r-ID-in (and
# r-default-*), read as "rule ID".
only_last_hit() {
	local hit
	hit=$({
		hostns nft list table $2 | grep 'counter packets' | grep -v 'counter packets 0 ' |
			sed -n 's/.*comment "\([^"]*\)".*/\1/p'
		hostns nft list counters table $2 | awk '
			$1 == "counter" { name = $2 }
			$1 == "packets" && $2 != "0" && name ~ /^r-/ {
				split(name, f, "-")
				print f[2] == "default" ? "default" : "rule " f[2]
			}'
	} | grep -vx default | sort -u)
	[ "$hit" = "$3" ] || die "$1: expected hits on '$3' only, got: $(echo $hit)"
}

# realized REV: dfwd reports at least revision REV and the three vNICs.
realized() {
	local want=$1 st i
	for i in $(seq 600); do
		st=$(ctl status 2>/dev/null)
		local got
		got=$(printf '%s\n' "$st" | sed -n 's/^realized_revision: *//p')
		if [ -n "$got" ] && [ "$got" -ge "$want" ]; then
			printf '%s\n' "$st" | grep -qx 'vnics: 3' &&
				printf '%s\n' "$st" | grep -qx 'in_sync: yes' ||
				die "dfwd realized revision $got but not 3 vNICs in sync:
$st"
			return 0
		fi
		sleep 0.1
	done
	die "dfwd did not realize revision $want in 60 s:
$st"
}

# apply FILE: publish a policy in the lab's store; prints its revision.
apply() {
	local out
	out=$(ctl apply "$1" 2>&1) || die "dfwctl apply $1 failed: $out"
	out=$(printf '%s\n' "$out" | sed -n 's/.* as revision \([0-9][0-9]*\).*/\1/p')
	[ -n "$out" ] || die "dfwctl apply $1: no revision in its output"
	echo "$out"
}

# --- run --------------------------------------------------------------------

T0=${EPOCHREALTIME/./}
gen_policy "$SMALL_RULES" "$SMALL_GROUPS" 1 "$TMP/small.ini" "$TMP/small.nft"
gen_policy "$BIG_RULES" "$BIG_GROUPS" 2 "$TMP/big.ini" "$TMP/big.nft"
echo "# policies: $SMALL_RULES rules / $SMALL_GROUPS groups and $BIG_RULES rules / $BIG_GROUPS groups (written by this script)"
echo "# $REPS run(s) of ${SECS}s per figure (new flows: ${FLOW_SECS}s); medians"
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (other jobs on the machine skew the figures)"
echo "# conntrack: only a flow's first packet walks the rules; TCP and UDP runs show the established-flow path, new flows the rule walk"
echo "# iperf3 client on CPU $CPU_CLIENT, server on CPU $CPU_SERVER"

lab down >/dev/null 2>&1
lab up "$TMP/small.ini" --no-daemon >/dev/null || die "dfw-lab up failed"
# Not through vm(): a backgrounded function is a subshell, and $! would be
# the subshell's pid, not the server's (dfw-lab exec execs in place).
"$LAB_BIN" exec --lab "$LAB" server -- taskset -c $CPU_SERVER iperf3 -s -p $IPERF_PORT >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5
kill -0 "$IPERF_PID" 2>/dev/null || die "iperf3 server did not start"

# a) no firewall
hostns nft list ruleset | grep -q . && die "no-daemon lab has nftables rules"
sanity nofw
measure nofw

# b) dfw, ~100 rules then ~10k rules
rev=$(apply "$TMP/small.ini") || exit 1
lab daemon start $HOST >/dev/null || die "dfwd did not start"
realized "$rev"
sanity "dfw $SMALL_RULES rules" fw
measure 100
only_last_hit "dfw $SMALL_RULES rules" "inet dfw" "rule $SMALL_RULES"

# The same policy with the network threat detector listening (monitor mode,
# thresholds out of reach): every new flow's first packet is copied to dfwd
# through nflog and counted.
{ cat "$TMP/small.ini"; printf '\n[netthreat]\nmode = monitor\nmax_ports = 65536\nmax_hosts = 65536\n'; } >"$TMP/small-nt.ini"
rev=$(apply "$TMP/small-nt.ini") || exit 1
realized "$rev"
ctl threats | grep -qx 'mode: monitor' || die "dfwd's detector is not in monitor mode"
seen0=$(ctl threats | sed -n 's/^new_flows_seen: //p')
nf=""
for i in $(seq "$REPS"); do v=$(newflows) || exit 1; nf+="$v"$'\n'; done
FIG[nf_100nt]=$(printf '%s' "$nf" | median)
seen=$(( $(ctl threats | sed -n 's/^new_flows_seen: //p') - seen0 ))
echo "pkt_newflows_per_s_100_netthreat: ${FIG[nf_100nt]} flows/s"
echo "# 100_netthreat runs: newflows [$(echo $nf)]; dfwd's detector read $seen new-flow record(s), $(ctl threats | sed -n 's/^overruns: //p') overrun(s)"
rev=$(apply "$TMP/small.ini") || exit 1
realized "$rev"

rev=$(apply "$TMP/big.ini") || exit 1
t=${EPOCHREALTIME/./}
realized "$rev"
echo "# dfwd realized $BIG_RULES rules in $(( (${EPOCHREALTIME/./} - t) / 1000 )) ms"
# The layout is dfw's business (docs/DATAPLANE.md): count what a new flow
# walks instead of assuming it.
# Per policy chain (C, and its dispatch by port: the atoms' chains C.k.j
# behind verdict maps): its kernel rules, how many of them every new flow
# meets in C, and the atoms' chains with the longest.
echo "# dfw's policy chains (a new flow walks its source's out chain and its destination's in chain): $(
	hostns nft list table inet dfw | awk -v n="$BIG_RULES" '
		/^\tchain / { c = $2; split(c, part, "."); base = part[1]; atom = c ~ /\..*\./
			       if (atom) { na[base]++ } }
		/comment "(rule [0-9]+|default)"/ { k[base]++; if (atom) { ka[c]++; if (ka[c] > mx[base]) mx[base] = ka[c] } else kin[base]++ }
		/^\t\t.* vmap @/ { kin[base]++ }
		END { for (b in k) printf "%s: %d kernel rules (%.1f per policy rule), %d met by every new flow, %d atom chains of at most %d; ",
					   b, k[b], k[b] / n, kin[b], na[b], mx[b] }')the linear chain: 1 per policy rule"
# Rule counters outlive policy changes (named per rule: the small policy's
# rule 10 is counted on here); start this measurement from zero.
hostns nft reset counters table inet dfw >/dev/null || die "cannot reset dfw's counters"
sanity "dfw $BIG_RULES rules" fw
measure 10k
only_last_hit "dfw $BIG_RULES rules" "inet dfw" "rule $BIG_RULES"

# d) paired rounds, for the established-flow ratios: dfw at 10k rules, then
# no firewall (dfwd stopped, its tables deleted), then dfw again (dfwd
# restarted loads them whole), ... Each round's ratio compares runs of the
# same minute; the medians above come minutes apart on a machine that
# drifts by 10-30%.
fw_off() {
	lab daemon stop $HOST >/dev/null || die "cannot stop dfwd"
	hostns nft delete table bridge dfw || die "cannot delete table bridge dfw"
	hostns nft delete table inet dfw || die "cannot delete table inet dfw"
}
tcp_r="" udp_r="" pairs=""
for i in $(seq "$REPS"); do
	t_fw=$(tcp_gbps) || exit 1
	u_fw=$(udp_pps) || exit 1
	fw_off
	sanity "round $i, no firewall"
	t_no=$(tcp_gbps) || exit 1
	u_no=$(udp_pps) || exit 1
	lab daemon start $HOST >/dev/null || die "dfwd did not restart"
	realized "$rev"
	sanity "round $i, dfw $BIG_RULES rules" fw
	tcp_r+="$(ratio "$t_fw" "$t_no")"$'\n'
	udp_r+="$(ratio "$u_fw" "$u_no")"$'\n'
	pairs+=" [tcp $t_fw/$t_no, udp $u_fw/$u_no]"
done
echo "# paired rounds (dfw 10k / no firewall):$pairs"
FIG[tcp_ratio]=$(printf '%s' "$tcp_r" | median)
FIG[udp_ratio]=$(printf '%s' "$udp_r" | median)

# c) the same policy as one linear chain
fw_off
hostns nft -f "$TMP/big.nft" || die "cannot load the linear ruleset"
echo "# linear chain: $(hostns nft list chain inet benchlinear forward | grep -c dport) rules with literal prefixes, IPv4 only, in inet forward; dfw's bridge table (port ids, anti-spoofing) is gone too"
sanity "linear $BIG_RULES rules" fw
measure linear10k
only_last_hit "linear $BIG_RULES rules" "inet benchlinear" last

echo "pkt_tcp_ratio_10k_vs_nofw: ${FIG[tcp_ratio]} ratio"
echo "pkt_udp64_ratio_10k_vs_nofw: ${FIG[udp_ratio]} ratio"
echo "# the same from the sequential medians: tcp $(ratio "${FIG[tcp_10k]}" "${FIG[tcp_nofw]}"), udp $(ratio "${FIG[udp_10k]}" "${FIG[udp_nofw]}")"
echo "pkt_newflow_cost_ratio_10k_vs_100: $(ratio "${FIG[nf_100]}" "${FIG[nf_10k]}") ratio"
echo "pkt_newflow_cost_ratio_netthreat_vs_off: $(ratio "${FIG[nf_100]}" "${FIG[nf_100nt]}") ratio"
echo "pkt_newflow_ratio_sets_vs_linear: $(ratio "${FIG[nf_10k]}" "${FIG[nf_linear10k]}") ratio"
echo "# bench-packet: $(( (${EPOCHREALTIME/./} - T0) / 1000000 )) s; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
