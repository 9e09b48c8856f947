#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ (the agent frame decoder and the JSON requests of
# supermachine-agent-proto) for N seconds each, on the nightly toolchain. Not part of cargo
# test. New corpus entries go to fuzz/corpus/<target> (git-ignored), seeded from
# fuzz/seeds/<target>; a crash leaves its input in fuzz/artifacts/<target>/ and fails the run.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]      (default: 60 s, 1 job, every target)
#
# Installs cargo-fuzz (crates.io, via cargo install) if it is missing, and says so first.
# Reproduce a crash: cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_PER_TARGET=60
JOBS=1
TARGETS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECONDS_PER_TARGET=$2; shift 2 ;;
        --jobs) JOBS=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        -*) echo "unknown argument $1" >&2; exit 2 ;;
        *) TARGETS+=("$1"); shift ;;
    esac
done
cd "$ROOT"
if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: the nightly toolchain is needed (libFuzzer instrumentation)
  fix: rustup toolchain install nightly" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked
fi
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(cargo +nightly fuzz list)
fi
echo "==> building ${TARGETS[*]}"
cargo +nightly fuzz build
failed=()
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    dict=()
    [ -f "fuzz/$t.dict" ] && dict=(-dict="fuzz/$t.dict")
    echo "==> $t for ${SECONDS_PER_TARGET}s"
    parallel=()
    # With -jobs libFuzzer writes fuzz-N.log into the current folder: keep them under fuzz/.
    [ "$JOBS" -gt 1 ] && parallel=(-jobs="$JOBS" -workers="$JOBS")
    if ! cargo +nightly fuzz run "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        "${parallel[@]}" "${dict[@]}"; then
        failed+=("$t")
    fi
    if compgen -G "fuzz-*.log" >/dev/null; then
        mkdir -p "fuzz/artifacts/$t" && mv fuzz-*.log "fuzz/artifacts/$t/"
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "FAIL: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "OK: ${TARGETS[*]}, ${SECONDS_PER_TARGET}s each, no crash"
