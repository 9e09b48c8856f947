#!/usr/bin/env bash
# Guest instructions an x86_64 kernel image executes from reset up to one kernel function, split
# into firmware, the bzImage entry/decompressor and the kernel's functions. It is how the
# "before the printk clock" phase of scripts/boot-profile.sh was taken apart (docs/BOOT-PROFILE.md,
# finding 8): QEMU `-icount shift=0` on the harness's microvm machine, the TCG plugin of
# scripts/tcg-profile.sh counting every block (all addresses), and gdb stopping the guest at the
# function's first instruction.
#
#   scripts/tcg-count-to.sh --kernel BZIMAGE --symbols KALLSYMS [--to FUNCTION] [--out DIR]
#
# KALLSYMS: /proc/kallsyms of the same kernel booted with `nokaslr` (e.g. `scripts/demo.sh
# --kernel BZIMAGE --cmdline nokaslr cat /proc/kallsyms`), or its System.map. FUNCTION defaults to
# tsc_early_init, where the x86 printk clock starts. Needs gdb and the plugin header (see
# scripts/lib/tcg-plugin.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/tcg-plugin.sh"

KERNEL='' SYMS='' TO=tsc_early_init OUT=$ROOT/target/tcg-count-to
while [ $# -gt 0 ]; do
    case $1 in
        --kernel) KERNEL=$2; shift 2 ;;
        --symbols) SYMS=$2; shift 2 ;;
        --to) TO=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        *) die "unknown argument $1 (see the header of $0)" ;;
    esac
done
{ [ -f "$KERNEL" ] && [ -f "$SYMS" ]; } || die "--kernel BZIMAGE and --symbols KALLSYMS are required (files)"
command -v gdb >/dev/null || die "gdb not found (apt-get install gdb)"
addr=$(awk -v f="$TO" '$3 == f && $2 ~ /^[tT]$/ {print $1; exit}' "$SYMS")
[ -n "$addr" ] || die "$SYMS has no text symbol $TO"
mkdir -p "$OUT"
build_tbprof_plugin
PLUGIN=$TBPROF_PLUGIN
prof=$OUT/tbprof
rm -f "$prof"

# The machine of the harness's x86_64 guests (crates/supermachine-guest-harness/src/qemu.rs),
# halted at reset (-S) until gdb has set its breakpoint; port 0 is not allowed, so a free one.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
qemu-system-x86_64 -M microvm,pit=on,pic=on,rtc=on,acpi=on -cpu max -accel tcg,thread=single \
    -m 256 -smp 1 -kernel "$KERNEL" -append "console=ttyS0 tsc_early_khz=1000000 panic=-1 nokaslr" \
    -nodefaults -no-reboot -display none -serial "file:$OUT/console" \
    -icount shift=0 -plugin "$PLUGIN,out=$prof,min=0" -gdb "tcp:127.0.0.1:$port" -S &
qemu=$!
trap 'kill $qemu 2>/dev/null || true' EXIT
# The plugin rewrites its file every 250 ms: wait at the breakpoint for one more write, then end.
timeout 300 gdb -q -batch -ex "target remote 127.0.0.1:$port" -ex "hbreak *0x$addr" -ex continue \
    -ex "shell sleep 1" -ex kill >"$OUT/gdb.log" 2>&1 || die "gdb did not reach $TO: $OUT/gdb.log"
wait $qemu 2>/dev/null || true
grep -q "0x$addr" "$OUT/gdb.log" || die "the guest did not stop at $TO (0x$addr): $OUT/gdb.log"
echo "== $(basename "$KERNEL"): reset -> $TO (0x$addr)"
python3 "$ROOT/scripts/tcg-profile/regions.py" "$prof" "$SYMS"
