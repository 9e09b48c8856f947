#!/usr/bin/env bash
# Where a guest kernel spends its instructions under QEMU TCG, by folder, object and function:
# boots a built kernel tree's image in the supermachine flow (bench-guest: to agent ready, then
# a few execs) with a TCG plugin that counts the guest instructions of every kernel translation
# block, then attributes them with the tree's System.map and objects. It is how the folders of
# patch x86_64/0007-hot-paths-O2 were chosen (docs/KERNEL.md): profile the tree built -Os and
# built -O2, and compare instructions saved per byte of code.
#
#   scripts/tcg-profile.sh --tree KERNEL_TREE [--arch x86_64|aarch64] [--runs N] [--execs N] [--out DIR]
#                          [--probe-step CMD]
#
# --probe-step CMD profiles one step instead: the boot runs boot-profile's flow (the traced /init,
# CMD as its own step before the mounts move; docs/BOOT-PROFILE.md) and no execs after the first.
# Profile once with CMD and once with `--probe-step true`, then scripts/tcg-profile/diff.py
# BASE.json PROBE.json shows what CMD cost, function by function (BOOT-PROFILE.md finding 9).
#
# Plain TCG, not -icount: under -icount the local APIC timer calibration spins for hundreds of
# millions of instructions. So code that waits on time (calibration, polling, the timer tick)
# counts more on a busy host: profile on an idle one, and compare two kernels folder by folder.
# KERNEL_TREE: a built tree, e.g. the --work folder of scripts/kvm-x86_64-build.sh. The agent and
# busybox are this checkout's payloads. The kernel boots with `nokaslr`, so System.map applies.
# Needs the QEMU plugin header, taken from the Debian source package of the installed QEMU
# (apt-get source: a deb-src entry, see scripts/busybox-build.sh), cached in target/tcg-profile.
# Output: OUT/profile.txt (the tables), OUT/profile.json, OUT/tbprof.N (raw, one per boot).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/tcg-plugin.sh"

ARCH=x86_64 TREE='' RUNS=1 EXECS=20 OUT=$ROOT/target/tcg-profile PROBE=''
while [ $# -gt 0 ]; do
    case $1 in
        --tree) TREE=$(cd "$2" && pwd); shift 2 ;;
        --arch) ARCH=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --execs) EXECS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --probe-step) PROBE=$2; shift 2 ;;
        *) die "unknown argument $1 (see the header of $0)" ;;
    esac
done
[ -n "$TREE" ] || die "--tree KERNEL_TREE is required (a built kernel tree)"
case $ARCH in
    x86_64) IMAGE=$TREE/arch/x86/boot/bzImage; CRATE=supermachine-kernel-x86-64; MIN=ffffffff80000000 ;;
    aarch64) IMAGE=$TREE/arch/arm64/boot/Image; CRATE=supermachine-kernel-aarch64; MIN=ffff800000000000 ;;
    *) die "--arch must be x86_64 or aarch64" ;;
esac
{ [ -f "$IMAGE" ] && [ -f "$TREE/System.map" ]; } || die "$TREE has no built $IMAGE and System.map"
mkdir -p "$OUT"

# The plugin, built against the installed QEMU's plugin API header.
build_tbprof_plugin
PLUGIN=$TBPROF_PLUGIN

# A QEMU in front of the real one on PATH: the plugin for boot N, and nokaslr.
WRAP=$OUT/bin
mkdir -p "$WRAP"
rm -f "$OUT"/tbprof.* "$OUT/boots"
real=$(command -v "qemu-system-$ARCH")
cat >"$WRAP/qemu-system-$ARCH" <<SH
#!/usr/bin/env bash
n=\$(cat "$OUT/boots" 2>/dev/null || echo 0); echo \$((n + 1)) >"$OUT/boots"
args=()
while [ \$# -gt 0 ]; do
    if [ "\$1" = -append ]; then args+=(-append "\$2 nokaslr"); shift 2; else args+=("\$1"); shift; fi
done
exec "$real" -plugin "$PLUGIN,out=$OUT/tbprof.\$n,min=$MIN" "\${args[@]}"
SH
chmod +x "$WRAP/qemu-system-$ARCH"

PAY=$OUT/payloads
mkdir -p "$PAY"
for p in busybox supermachine-agent; do
    xz -dc "$ROOT/crates/$CRATE/payload/$p.xz" >"$PAY/$p"; chmod +x "$PAY/$p"
done
if [ -n "$PROBE" ]; then
    (cd "$ROOT" && cargo build --quiet --release -p supermachine-guest-harness --bin boot-profile)
    echo "==> $RUNS boot(s) of $IMAGE under the profiler, probe step: $PROBE"
    PATH=$WRAP:$PATH "$ROOT/target/release/boot-profile" --arch "$ARCH" --image-busybox "$PAY/busybox" \
        --runs "$RUNS" --probe-step "$PROBE" \
        --config "profiled=$IMAGE,$PAY/supermachine-agent,$PAY/busybox" >/dev/null
else
    (cd "$ROOT" && cargo build --quiet --release -p supermachine-guest-harness --bin bench-guest)
    echo "==> $RUNS boot(s) of $IMAGE under the profiler ($EXECS execs each)"
    PATH=$WRAP:$PATH "$ROOT/target/release/bench-guest" --arch "$ARCH" --busybox "$PAY/busybox" \
        --runs "$RUNS" --execs "$EXECS" --guest "profiled=$IMAGE,$PAY/supermachine-agent" >/dev/null
fi
cat "$OUT"/tbprof.* | awk '{n[$1] += $2} END {for (a in n) print a, n[a]}' >"$OUT/tbprof.all"
python3 "$ROOT/scripts/tcg-profile/attribute.py" --tree "$TREE" --profile "$OUT/tbprof.all" \
    --json "$OUT/profile.json" | tee "$OUT/profile.txt"
