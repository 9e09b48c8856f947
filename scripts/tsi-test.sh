#!/usr/bin/env bash
# Guest networking (TSI) through the supermachine runtime's own host muxer, under QEMU TCG.
#
#   scripts/tsi-test.sh [--arch x86_64|aarch64|all] [--kernel FILE] [--out DIR] [--only CHECK,...]
#                       [--docs]
#
# Builds tools/tsi-backend (a vhost-user vsock backend whose device model is the runtime's
# VsockMuxer, linked from supermachine =0.7.108 outside our workspace) and the harness's
# tsi-test, takes the Debian root of the workload suite's quick tier (python3 for the guest's
# half of the checks), and runs, inside a network namespace of its own whose loopback carries
# 10.200.0.1 (the host servers' address; nothing leaves the namespace):
#   1. every check with the backend and the guest sharing a random supermachine.tsi_token=;
#   2. the backend armed with a token the guest does not have: connects time out, bounded.
# The checks: src/bin/tsi-test.rs and scripts/tsi/guest.py; what they prove: docs/NETWORKING.md
# (--docs rewrites its table).
# Default kernel: ours, from the arch crate. Needs root (the network namespace).
# Exit status 1 if a check fails.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"

ARCHES=x86_64 KERNEL='' OUT=$ROOT/target/tsi-test ONLY=() DOCS=()
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCHES=$2; shift 2 ;;
        --kernel) KERNEL=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --only) ONLY=(--only "$2"); shift 2 ;;
        --docs) DOCS=(--docs "$ROOT/docs/NETWORKING.md"); shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $ARCHES in all) ARCHES="x86_64 aarch64" ;; x86_64|aarch64) ;; *) die "--arch x86_64|aarch64|all" ;; esac
[ "$(id -u)" = 0 ] || die "run as root: the test makes a network namespace for its host servers"
command -v ip >/dev/null || die "ip (iproute2) is needed"
log() { echo "==> $*" >&2; }
mkdir -p "$OUT"

log "building tools/tsi-backend and the tsi-test harness binary"
cargo build --quiet --release --locked --manifest-path "$ROOT/tools/Cargo.toml" -p tsi-backend
(cd "$ROOT" && cargo build --quiet --locked -p supermachine-guest-harness --bin tsi-test)
backend=$ROOT/tools/target/release/tsi-backend
bin=$ROOT/target/debug/tsi-test

status=0
runs=()
for ARCH in $ARCHES; do
    runs+=("$ARCH=$OUT")
    image=$("$ROOT/scripts/workload-test.sh" --arch "$ARCH" --tier quick --image-only)
    kernel=$KERNEL
    if [ -z "$kernel" ]; then
        kernel=$OUT/kernel-$ARCH
        xz -dc "$ROOT/crates/supermachine-kernel-${ARCH//_/-}/payload/kernel.xz" >"$kernel"
    fi
    token=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
    modes="shared mismatch"; [ ${#ONLY[@]} = 0 ] || modes=shared
    for mode in $modes; do
        extra=(--token "$token")
        [ "$mode" = mismatch ] && extra+=(--mismatch)
        log "$ARCH: checks with the token $mode"
        unshare --net -- sh -c 'ip link set lo up && ip addr add 10.200.0.1/32 dev lo && exec "$@"' sh \
            "$bin" --arch "$ARCH" --kernel "$kernel" --image "$image" --backend "$backend" \
            --host-ip 10.200.0.1 --label "$mode" --json "$OUT/$ARCH-$mode.json" "${extra[@]}" "${ONLY[@]}" >/dev/null \
            || status=1
    done
done
python3 "$ROOT/scripts/tsi/report.py" "${DOCS[@]}" "${runs[@]}" || status=1
exit $status
