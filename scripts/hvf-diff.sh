#!/usr/bin/env bash
# The runtime's HVF guest (Apple Silicon), published pieces against ours, under
# qemu-system-aarch64 -M virt (TCG): the published 0.7.70 aarch64 kernel, init-oci, agent and
# smpark.ko, and ours, each booted as the supermachine runtime boots them (its initramfs, image
# and delta layers, env service, HVF command line, 2 vCPUs). Prints the table of differences in
# what a workload and the host observe; fails on any difference docs/INIT-OCI.md does not list
# with its reason ("Differences from the runtime's own init that remain").
#
#   scripts/hvf-diff.sh [--full] [--out DIR]
#
# --full adds both crosses (the published kernel with our init-oci and agent, and ours with the
# published ones), each compared with the published pieces. Writes DIR/table.md and
# DIR/facts.json (default target/hvf-diff).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/upstream.sh"
OUT=$ROOT/target/hvf-diff FULL=0
while [ $# -gt 0 ]; do
    case $1 in
        --full) FULL=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
mkdir -p "$OUT/ours" "$OUT/published"
"$ROOT/scripts/install-prereqs.sh"
upstream_fetch "$ROOT/target/bench-upstream" "$OUT/upstream-metadata.json"
decode_payloads "$ROOT/crates/supermachine-kernel-aarch64/payload" "$OUT/ours"
decode_payloads "$(upstream_src "$OUT/upstream-metadata.json" supermachine-kernel-aarch64)" "$OUT/published"
(cd "$ROOT" && cargo build --quiet --locked -p supermachine-guest-harness --bin hvf-diff)
o=$OUT/ours p=$OUT/published
sides=(--side "published=$p/kernel,$p/init-oci,$p/supermachine-agent,$p/smpark.ko"
       --side "ours=$o/kernel,$o/init-oci,$o/supermachine-agent")
if [ "$FULL" = 1 ]; then
    sides+=(--side "published kernel, our init and agent=$p/kernel,$o/init-oci,$o/supermachine-agent"
            --side "our kernel, published init, agent and smpark.ko=$o/kernel,$p/init-oci,$p/supermachine-agent,$p/smpark.ko")
fi
"$ROOT/target/debug/hvf-diff" "${sides[@]}" --allowed "$ROOT/docs/INIT-OCI.md" --json "$OUT/facts.json" | tee "$OUT/table.md"
