#!/usr/bin/env bash
# The compiler's golden files (what `plan_print_nft` writes) are valid
# nftables: each one is checked by nft itself in a private namespace.
source "$(dirname "$0")/lib.sh"
NS=dfwt-golden-$$
trap 'ip netns del "$NS" 2>/dev/null; finish' EXIT
ip netns add "$NS"
for f in "$TOP"/tests/golden/*.nft; do
	check "$(basename "$f") is accepted by nft -c" ip netns exec "$NS" nft -c -f "$f"
done
