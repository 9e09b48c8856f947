#!/usr/bin/env bash
# Measure the x86_64 kernel's in-kernel compression choices side by side:
# bzImage size, crate payload size after `xz -9e`, and TCG boot time (microvm) to /init.
#
#   scripts/bench-kernel-compression.sh [--runs N] [--work DIR]
#
# Rebuilds the kernel once per method in one tree (only the compressed wrapper changes), then
# boots all of them interleaved with the boot-bench tool. Prints a markdown table; the chosen
# setting lives in scripts/kconfig/x86_64/compression.config, the last table in
# docs/kernel-compression.md. Does not touch the committed payload.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=7
WORK=${TMPDIR:-/tmp}/supermachine-kbuild-x86_64
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
OUT=$(mktemp -d)
METHODS="gzip lz4 zstd xz none"
for m in $METHODS; do
    "$ROOT/scripts/kvm-x86_64-build.sh" --work "$WORK" --compression "$m" --out "$OUT/$m" --no-record >"$OUT/$m.log" 2>&1 \
        || { tail -20 "$OUT/$m.log"; exit 1; }
    xz -dc "$OUT/$m/kernel.xz" >"$OUT/$m/bzImage"
done
cargo build -q --release -p supermachine-guest-harness --bin boot-bench --manifest-path "$ROOT/Cargo.toml"
args=()
for m in $METHODS; do args+=(--kernel "$OUT/$m/bzImage"); done
"$ROOT/target/release/boot-bench" --machine microvm --runs "$RUNS" "${args[@]}" >"$OUT/boot.json"
echo "| compression | bzImage bytes | payload (.xz) bytes | boot to /init, min ms | median ms |"
echo "|---|---:|---:|---:|---:|"
for m in $METHODS; do
    line=$(grep "\"$OUT/$m/bzImage\"" "$OUT/boot.json")
    [[ $line =~ \"init_ms_min\":([0-9.]+) ]] && min=${BASH_REMATCH[1]}
    [[ $line =~ \"init_ms_median\":([0-9.]+) ]] && med=${BASH_REMATCH[1]}
    echo "| $m | $(stat -c %s "$OUT/$m/bzImage") | $(stat -c %s "$OUT/$m/kernel.xz") | $min | $med |"
done
echo
echo "($RUNS interleaved boots each, QEMU $(qemu-system-x86_64 --version | head -1 | awk '{print $4}') TCG -M microvm, 128 MiB, $(nproc) cores, $(date -u +%F))"
rm -rf "$OUT"
