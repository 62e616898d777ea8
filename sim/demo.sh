#!/usr/bin/env bash
# make demo: a simulated VDI host, a desktop tagged as infected and
# isolated at the hypervisor, then released.  Everything runs in network
# namespaces that are removed at the end, also after a failure.
set -eu
BUILD=${1:-build}
LABBIN=$(cd "$BUILD" && pwd)/dfw-lab
LAB=demo
PORTS=tcp/443,tcp/4001,tcp/445,udp/53,icmp
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "the demo needs root (network namespaces, nftables)" >&2; exit 2; }

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" 2>/dev/null || printf '\n==> %s\n' "$*"; }
[ -t 1 ] || say() { printf '\n==> %s\n' "$*"; }
ctl() { "$LABBIN" ctl --lab $LAB -- "$@"; }
guest() { "$LABBIN" exec --lab $LAB desktop1 -- sh -c 'ip -br addr show dev eth0; ip -br link show dev eth0'; }
trap '"$LABBIN" down --lab $LAB >/dev/null 2>&1 || true' EXIT

say "Build a hypervisor (a namespace with a Linux bridge) and 7 VMs from configs/vdi.ini, apply the policy to the store, start dfwd."
"$LABBIN" down --lab $LAB >/dev/null 2>&1 || true
"$LABBIN" up configs/vdi.ini --lab $LAB
ctl status

say "Who can reach whom (real connection attempts; a cell lists what got through). Desktops reach the servers they need and never each other."
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "The guest desktop1 as it sees itself:"
guest
before=$(guest)

say "The scanner found malware on desktop1: tag it threat.high. It leaves group 'desktops' and joins 'quarantine'."
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

say "A clean scan later: untag desktop1. It returns to 'desktops' and its normal access."
ctl untag desktop1 threat.high
sleep 0.5
"$LABBIN" matrix --lab $LAB --ports $PORTS

say "Tear everything down."
"$LABBIN" down --lab $LAB
trap - EXIT
