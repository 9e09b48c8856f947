#!/usr/bin/env bash
# The floor of launch → /init (issue 12): the same QEMU microvm launch as the boot profile, with
# the smallest x86_64 kernel that reaches /init and prints from it: `make tinyconfig` plus 64BIT,
# BLK_DEV_INITRD, PRINTK, TTY + SERIAL_8250(_CONSOLE), BINFMT_ELF, zstd compression (like ours),
# and an initramfs whose /init is the counter helper (scripts/boot-profile/clk.c); the same launch
# with other kernels (same minimal /init) is measured alongside, interleaved.
#
#   scripts/boot-profile/floor.sh OUTDIR CLK_HELPER ICOUNT_RUNS WALL_RUNS [NAME=BZIMAGE ...] > floor.json
#
# NAME=BZIMAGE: the kernels to compare with the floor; by default ours=… and published=… from
# scripts/boot-profile.sh's decoded payloads (target/boot-profile/payloads). FLOOR_IMAGE_BUSYBOX:
# the static busybox the harness needs for its (unused here) image, by default ours from there.
# The kernel is built once from /usr/src/linux-source-6.12.tar.xz (the pinned source the real
# kernels use, without our patches) into OUTDIR and reused; `make -j$(nproc)`, a few minutes.
# Built with the payload recipes' KBUILD_* identity (scripts/lib/pins.sh), so a rebuild gives the
# same bzImage and the sha256 in the docs' floor line means one kernel.
# Called by scripts/boot-profile.sh --floor and scripts/bench.sh (section floor). FLOOR_BUILD_ONLY=1:
# build the kernel, boot nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$1 CLK=$2 RUNS=$3 WALL_RUNS=$4
shift 4
TARBALL=${LINUX_TARBALL:-/usr/src/linux-source-6.12.tar.xz}
BIN=$ROOT/target/release/boot-profile
. "$ROOT/scripts/lib/pins.sh"
mkdir -p "$OUT"
if [ ! -f "$OUT/bzImage" ]; then
    echo "== floor: building a tinyconfig x86_64 kernel in $OUT/src" >&2
    rm -rf "$OUT/src"; mkdir -p "$OUT/src"
    tar -xf "$TARBALL" -C "$OUT/src" --strip-components=1
    make -C "$OUT/src" -s ARCH=x86_64 tinyconfig >&2
    "$OUT/src/scripts/config" --file "$OUT/src/.config" -e 64BIT -e BLK_DEV_INITRD -e PRINTK -e TTY -e SERIAL_8250 \
        -e SERIAL_8250_CONSOLE -e BINFMT_ELF -d KERNEL_GZIP -d KERNEL_XZ -d KERNEL_LZMA -d KERNEL_BZIP2 -d KERNEL_LZO \
        -d KERNEL_LZ4 -e KERNEL_ZSTD -d RD_GZIP -d RD_BZIP2 -d RD_LZMA -d RD_XZ -d RD_LZO -d RD_LZ4 -d RD_ZSTD
    make -C "$OUT/src" -s ARCH=x86_64 olddefconfig >&2
    for o in 64BIT BLK_DEV_INITRD PRINTK SERIAL_8250_CONSOLE BINFMT_ELF KERNEL_ZSTD; do
        grep -q "^CONFIG_$o=y" "$OUT/src/.config" || { echo "floor: CONFIG_$o did not stick" >&2; exit 1; }
    done
    nice make -C "$OUT/src" -s ARCH=x86_64 -j"$(nproc)" bzImage >&2
    cp "$OUT/src/arch/x86/boot/bzImage" "$OUT/bzImage"
    cp "$OUT/src/.config" "$OUT/kernel.config"
    rm -rf "$OUT/src"
fi
if [ "${FLOOR_BUILD_ONLY:-0}" = 1 ]; then exit 0; fi
PAYK=$ROOT/target/boot-profile/payloads
img=${FLOOR_IMAGE_BUSYBOX:-$PAYK/ours/x86_64/busybox}
[ -f "$img" ] || { echo "floor: no busybox at $img (set FLOOR_IMAGE_BUSYBOX)" >&2; exit 2; }
# The kernels: the floor first, then each NAME=BZIMAGE. A default one that boot-profile.sh has not
# decoded is left out; a named one that is missing is an error.
names=(floor) kernels=("$OUT/bzImage") defaults=0
[ $# -gt 0 ] || { defaults=1; set -- "ours=$PAYK/ours/x86_64/kernel" "published=$PAYK/published/x86_64/kernel"; }
for nk in "$@"; do
    case $nk in *=?*) ;; *) echo "floor: '$nk' is not NAME=BZIMAGE" >&2; exit 2 ;; esac
    if [ ! -f "${nk#*=}" ]; then
        [ "$defaults" = 1 ] && continue
        echo "floor: ${nk%%=*}: no kernel at ${nk#*=}" >&2; exit 2
    fi
    names+=("${nk%%=*}"); kernels+=("${nk#*=}")
done
: >"$OUT/icount.jsonl"; : >"$OUT/wall.jsonl"
# boot I RUNS [ARGS...]: RUNS boots of kernel I to the minimal /init, its JSON lines named names[I].
boot() {
    local i=$1 runs=$2
    shift 2
    "$BIN" --arch x86_64 --image-busybox "$img" --clk "$CLK" --floor-kernel "${kernels[$i]}" --runs "$runs" "$@" \
        | sed "s/\"config\":\"floor\"/\"config\":\"${names[$i]}\"/"
}
for i in "${!names[@]}"; do
    boot "$i" "$RUNS" --icount "${ICOUNT_OPTS:-shift=0}" >>"$OUT/icount.jsonl"
done
for _ in $(seq "$WALL_RUNS"); do
    for i in "${!names[@]}"; do boot "$i" 1 >>"$OUT/wall.jsonl"; done
done
python3 - "$OUT" <<'PY'
import hashlib, json, os, statistics, sys
out = sys.argv[1]
rows = lambda f: [json.loads(l) for l in open(os.path.join(out, f))]
ic, wa = rows("icount.jsonl"), rows("wall.jsonl")
k = open(os.path.join(out, "bzImage"), "rb").read()
res = {"kernel_bytes": len(k), "kernel_sha256": hashlib.sha256(k).hexdigest(), "kernels": {}}
for name in dict.fromkeys(r["config"] for r in ic + wa):
    i = [r["init_virtual_ms"] for r in ic if r["config"] == name]
    w = [r["init_host_ms"] for r in wa if r["config"] == name]
    res["kernels"][name] = {"icount_ms": min(i) if i else None, "icount_runs": len(i),
                            "wall_ms_median": statistics.median(w) if w else None, "wall_ms": w, "wall_runs": len(w)}
f = res["kernels"]["floor"]
res.update(icount_ms=f["icount_ms"], wall_ms_median=f["wall_ms_median"], wall_runs=f["wall_runs"])
print(json.dumps(res))
PY
