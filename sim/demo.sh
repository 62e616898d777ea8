#!/usr/bin/env bash
# make demo: a simulated VDI host, a desktop tagged as infected and
# isolated at the hypervisor, then released; then the same through the
# host's scanner: malware lands on the desktop's disk, is detected, the
# desktop is isolated with no person involved, and a clean full scan
# releases it.  Everything runs in network namespaces that are removed at
# the end, also after a failure.
set -eu
BUILD=${1:-build}
LABBIN=$(cd "$BUILD" && pwd)/dfw-lab
LAB=demo
RUN=/run/dfw-lab/$LAB
PORTS=tcp/443,tcp/4001,tcp/445,udp/53,icmp
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo needs root (network namespaces, nftables)" >&2; exit 2; }

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" 2>/dev/null || printf '\n==> %s\n' "$*"; }
[ -t 1 ] || say() { printf '\n==> %s\n' "$*"; }
ctl() { "$LABBIN" ctl --lab $LAB -- "$@"; }
guest() { "$LABBIN" exec --lab $LAB desktop1 -- sh -c 'ip -br addr show dev eth0; ip -br link show dev eth0'; }
trap '"$LABBIN" down --lab $LAB >/dev/null 2>&1 || true' EXIT

say "Build a hypervisor (a namespace with a Linux bridge) and 7 VMs from configs/vdi.ini, apply the policy to the store, start dfwd and the host's scanner, dfw-scan."
"$LABBIN" down --lab $LAB >/dev/null 2>&1 || true
"$LABBIN" up configs/vdi.ini --lab $LAB
ctl status

say "Who can reach whom (real connection attempts; a cell lists what got through). Desktops reach the servers they need and never each other."
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "The guest desktop1 as it sees itself:"
guest
before=$(guest)

say "Act 1, by hand: an administrator tags desktop1 threat.high. It leaves group 'desktops' and joins 'quarantine'."
ctl tag desktop1 threat.high
sleep 0.5
ctl groups quarantine
ctl groups desktops

say "desktop1 is isolated at the hypervisor: only the VDI connection server (cs1) still reaches it and is reached by it."
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "The rules now in force at desktop1's vNIC, with hit counts:"
ctl rules desktop1

say "The guest was not touched: same IP, same MAC, link up."
guest
[ "$(guest)" = "$before" ] && echo "unchanged" || { echo "CHANGED"; exit 1; }

say "The administrator untags desktop1. It returns to 'desktops' and its normal access."
ctl untag desktop1 threat.high
sleep 0.5
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "Act 2, no person involved: malware lands on desktop1's disk (its sandbox directory). dfw-lab infect writes the EICAR test file there."
"$LABBIN" infect desktop1 --lab $LAB
sleep 0.5

say "The host's scanner saw the file closed, found EICAR, moved the file to quarantine and wrote the tag its policy maps severity high to. Its audit log (stage times in CLOCK_MONOTONIC ns):"
grep -e '"event":"detection"' -e '"event":"tag"' "$RUN/hv1.audit.jsonl"

say "The guest was told, with a notice in its sandbox (nothing runs inside it):"
cat "$RUN/sandbox/hv1/desktop1/DFW-NOTICE.txt"

say "desktop1 is isolated again, by the detection alone; the connection server still reaches it:"
ctl groups quarantine
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "A full scan of desktop1 finds nothing more. The policy says auto_release = yes, so the scanner removes the threat tags."
"$LABBIN" scan desktop1 --full --lab $LAB
sleep 0.5
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "And the guest's second notice:"
tail -n 3 "$RUN/sandbox/hv1/desktop1/DFW-NOTICE.txt"

say "Tear everything down."
"$LABBIN" down --lab $LAB
trap - EXIT
