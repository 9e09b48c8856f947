#!/usr/bin/env bash
# Boot profile: where every millisecond goes from QEMU launch to the first exec answered, for our
# payloads, the published supermachine-kernel 0.7.70 ones and the mixes (issue 12).
#
#   scripts/boot-profile.sh [--arch x86_64|aarch64|all] [--runs N] [--wall-runs N]
#                           [--configs ours,published,mix-kernel,mix-userland] [--no-icount] [--no-wall]
#                           [--threshold-ms MS] [--floor] [--docs] [--worktree]
#
# Configurations (kernel / agent / initramfs busybox):
#   ours          our kernel      / our agent       / our busybox
#   published     published kernel/ published agent / published busybox
#   mix-kernel    our kernel      / published agent / published busybox   (only the kernel is ours)
#   mix-userland  published kernel/ our agent       / our busybox         (only the userland is ours)
# Our payloads are the committed ones (HEAD: the *.xz files git has, decoded), so a payload being
# rebuilt in the working tree does not change what is measured; --worktree takes the working tree's.
# The published aarch64 crate ships no busybox: there every configuration uses ours.
# The root image (a busybox squashfs, the "container image") is the same for all (our busybox).
#
# Each boot runs the supermachine flow (harness `boot-profile`, the traced /init of
# crates/supermachine-guest-harness/src/profile.rs) with `quiet initcall_debug printk.time=1`, reads
# the guest's dmesg through the agent and builds a timeline of named phases.
#   * icount runs (default --runs 3): QEMU `-icount shift=0` (ICOUNT_OPTS overrides): guest-virtual
#     time, one ns per guest instruction; repeatable to ~0.5 ms per phase on a busy machine.
#     Anchored by scripts/boot-profile/clk.c (built here with gcc / aarch64-linux-gnu-gcc), which
#     prints the raw counter into dmesg from /init. (`sleep=off` is fully deterministic for
#     computation but turns every wait for host I/O into a jump to the next guest timer deadline,
#     up to a second; the default `sleep=on` counts those waits in real time instead.)
#   * wall runs (default --wall-runs 3): plain TCG, host wall clock, medians; printk times
#     anchored by the host arrival of /init's first console line (x86: guest TSC rate set to the
#     host's so printk times are real time). Noisy on a shared machine.
# Boots are interleaved across configurations, one QEMU at a time.
#
# x86_64 icount runs also boot each kernel that has a PVH entry (ours) from its ELF vmlinux, without
# the decompressor (scripts/boot-profile/vmlinux.py): the difference is the decompression phase.
#
# --floor additionally builds (once, cached in target/boot-profile/floor) a `make tinyconfig`
# x86_64 kernel plus the few options needed to print from /init, and times the same VMM launch
# with an initramfs whose /init is the counter helper (and our and the published kernel the same
# way, for comparison): the floor of launch → /init.
#
# Output: target/boot-profile/<arch>-{icount,wall}.jsonl (one timeline per boot, with dmesg),
# target/boot-profile/boot-profile.json (icount minima and wall medians per phase), target/boot-profile/BOOT-PROFILE.tables.md,
# target/boot-profile/boot-profile.svg; --docs also writes the tables into docs/BOOT-PROFILE.md
# (between its generated-section markers) and docs/boot-profile.svg. Never part of `cargo test`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCHES="x86_64" RUNS=3 WALL_RUNS=3 CONFIGS="ours,published,mix-kernel,mix-userland" ICOUNT=1 WALL=1
THRESHOLD=1 FLOOR=0 DOCS=0 ICOUNT_OPTS=${ICOUNT_OPTS:-shift=0} WORKTREE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCHES=$2; [ "$ARCHES" = all ] && ARCHES="x86_64 aarch64"; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --wall-runs) WALL_RUNS=$2; shift 2 ;;
        --configs) CONFIGS=$2; shift 2 ;;
        --no-icount) ICOUNT=0; shift ;;
        --no-wall) WALL=0; shift ;;
        --threshold-ms) THRESHOLD=$2; shift 2 ;;
        --floor) FLOOR=1; shift ;;
        --docs) DOCS=1; shift ;;
        --worktree) WORKTREE=1; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for a in $ARCHES; do case $a in x86_64|aarch64) ;; *) echo "unknown arch $a" >&2; exit 2 ;; esac; done
for c in ${CONFIGS//,/ }; do
    case $c in ours|published|mix-kernel|mix-userland) ;; *) echo "unknown configuration $c" >&2; exit 2 ;; esac
done
. "$ROOT/scripts/lib/upstream.sh"
. "$ROOT/scripts/lib/clk.sh"
OUT=$ROOT/target/boot-profile
PAY=$OUT/payloads
CARGO=${CARGO:-cargo}
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
for v in $(env | sed -n 's/^\(SUPERMACHINE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
for t in xz python3 "$CARGO" mksquashfs vhost-device-vsock; do
    command -v "$t" >/dev/null || { echo "boot-profile.sh: $t is needed" >&2; exit 2; }
done
mkdir -p "$OUT"
log() { echo "== $*" >&2; }

log "fetching the published supermachine-kernel $UPV crates (cargo, cached) into target/bench-upstream"
upstream_fetch "$ROOT/target/bench-upstream" "$OUT/upstream-metadata.json"
ours_payload_dir() { # arch -> folder with our *.xz payloads: committed (HEAD) unless --worktree
    local rel=crates/supermachine-kernel-${1//_/-}/payload f
    if [ "$WORKTREE" = 1 ]; then echo "$ROOT/$rel"; return; fi
    rm -rf "$OUT/committed/$1"; mkdir -p "$OUT/committed/$1"
    for f in $(git -C "$ROOT" ls-tree --name-only HEAD "$rel/" | grep '\.xz$'); do
        git -C "$ROOT" show "HEAD:$f" >"$OUT/committed/$1/$(basename "$f")"
    done
    echo "$OUT/committed/$1"
}
for arch in $ARCHES; do
    decode_payloads "$(ours_payload_dir "$arch")" "$PAY/ours/$arch"
    log "$arch: our payloads from $([ "$WORKTREE" = 1 ] && echo "the working tree" || echo "HEAD ($(git -C "$ROOT" rev-parse --short HEAD))"), kernel sha256 $(sha256sum <"$PAY/ours/$arch/kernel" | cut -c1-16)…"
    decode_payloads "$(upstream_src "$OUT/upstream-metadata.json" "supermachine-kernel-${arch//_/-}")" "$PAY/published/$arch"
    build_clk_helper "$arch" "$OUT/clk-$arch" || exit 2
done
log "building boot-profile (release)"
(cd "$ROOT" && "$CARGO" build --quiet --release -p supermachine-guest-harness --bin boot-profile)
BIN=$ROOT/target/release/boot-profile

config_arg() { # arch name -> NAME=KERNEL,AGENT,BUSYBOX
    local o=$PAY/ours/$1 p=$PAY/published/$1 pbb
    pbb=$p/busybox; [ -f "$pbb" ] || pbb=$o/busybox
    case $2 in
        ours) echo "ours=$o/kernel,$o/supermachine-agent,$o/busybox" ;;
        published) echo "published=$p/kernel,$p/supermachine-agent,$pbb" ;;
        mix-kernel) echo "mix-kernel=$o/kernel,$p/supermachine-agent,$pbb" ;;
        mix-userland) echo "mix-userland=$p/kernel,$o/supermachine-agent,$o/busybox" ;;
    esac
}
host_tsc_khz() { # the host TSC rate (TCG guests read the host TSC)
    local mhz
    mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Refined TSC clocksource calibration: \([0-9.]*\) MHz.*/\1/p' | tail -1)
    [ -n "$mhz" ] || mhz=$(dmesg 2>/dev/null | sed -n 's/.*tsc: Detected \([0-9.]*\) MHz processor.*/\1/p' | tail -1)
    [ -n "$mhz" ] || mhz=$(sed -n 's/^cpu MHz[^:]*: *//p' /proc/cpuinfo | head -1)
    python3 -c "print(round(float('$mhz') * 1000))"
}

for arch in $ARCHES; do
    args=(--arch "$arch" --image-busybox "$PAY/ours/$arch/busybox" --clk "$OUT/clk-$arch" --keep-dmesg)
    for c in ${CONFIGS//,/ }; do args+=(--config "$(config_arg "$arch" "$c")"); done
    if [ "$ICOUNT" = 1 ]; then
        log "$arch: $RUNS icount boot(s) per configuration (-icount $ICOUNT_OPTS)"
        "$BIN" "${args[@]}" --runs "$RUNS" --icount "$ICOUNT_OPTS" >"$OUT/$arch-icount.jsonl"
        if [ "$arch" = x86_64 ]; then
            # Decompression: the same kernel booted through PVH (QEMU loads the ELF vmlinux, no
            # decompressor), where the kernel has a PVH entry (ours does; the published one not).
            pvh=()
            for side in ours published; do
                rc=0; python3 "$ROOT/scripts/boot-profile/vmlinux.py" "$PAY/$side/$arch/kernel" "$OUT/vmlinux-$side" || rc=$?
                case $rc in
                    0) cfg=$(config_arg "$arch" "$side"); pvh+=(--config "$side-pvh=$OUT/vmlinux-$side,${cfg#*,}") ;;
                    3) log "$side x86_64 kernel has no PVH entry: its decompression is not split out" ;;
                    *) exit 1 ;;
                esac
            done
            if [ ${#pvh[@]} -gt 0 ]; then
                log "$arch: the kernels with a PVH entry booted without the decompressor, $RUNS icount boot(s)"
                "$BIN" --arch "$arch" --image-busybox "$PAY/ours/$arch/busybox" --clk "$OUT/clk-$arch" \
                    "${pvh[@]}" --runs "$RUNS" --icount "$ICOUNT_OPTS" >"$OUT/$arch-pvh.jsonl"
            fi
        fi
    fi
    if [ "$WALL" = 1 ]; then
        log "$arch: $WALL_RUNS wall-clock boot(s) per configuration"
        tsc=()
        if [ "$arch" = x86_64 ] && [ "$(uname -m)" = x86_64 ]; then tsc=(--tsc-khz "$(host_tsc_khz)"); fi
        "$BIN" "${args[@]}" --runs "$WALL_RUNS" "${tsc[@]}" >"$OUT/$arch-wall.jsonl"
    fi
done

if [ "$FLOOR" = 1 ]; then
    ICOUNT_OPTS=$ICOUNT_OPTS "$ROOT/scripts/boot-profile/floor.sh" "$OUT/floor" "$OUT/clk-x86_64" "$RUNS" "$WALL_RUNS" >"$OUT/floor.json"
fi

docs_args=()
if [ "$DOCS" = 1 ]; then docs_args=(--docs "$ROOT/docs"); fi
python3 "$ROOT/scripts/boot-profile/report.py" --out "$OUT" --threshold-ms "$THRESHOLD" --upstream "$UPV" \
    --repo "$ROOT" "${docs_args[@]}"
