#!/usr/bin/env bash
# What each group of kernel options costs: builds the kernel once per variant (the committed
# fragments minus one fragment, or with some options forced off), then reports the image size
# and the TCG boot time to /init of every variant against the full kernel, interleaved.
#
#   scripts/kernel-cost.sh [--arch x86_64|aarch64] [--work DIR] [--runs N] [--variants V,…]
#
# A variant is NAME, defined in variants() below: "-FRAGMENT" drops a fragment file,
# "!CONFIG_X" turns one option off (the line asking for it is removed from the fragments).
# The full kernel is the committed payload. Each variant builds in a copy of the kernel tree
# that `kvm-x86_64-build.sh` / `hvf-aarch64-build.sh` left (--work, default as those scripts),
# so only what the variant changes is recompiled. Output: target/kernel-cost/<arch>.json and a
# table on stdout (docs/KERNEL.md holds the latest). Never part of `cargo test`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/kernel.sh"

ARCH=x86_64 WORK='' RUNS=5 ONLY=''
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=$2; shift 2 ;;
        --work) WORK=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --variants) ONLY=${2//,/ }; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $ARCH in
    x86_64) MAKEARGS="ARCH=x86_64" IMAGE=arch/x86/boot/bzImage MACHINE=microvm CRATE=supermachine-kernel-x86-64 ;;
    aarch64) MAKEARGS="ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-" IMAGE=arch/arm64/boot/Image MACHINE=virt CRATE=supermachine-kernel-aarch64 ;;
    *) die "--arch x86_64|aarch64" ;;
esac
WORK=${WORK:-${TMPDIR:-/tmp}/supermachine-kbuild-$ARCH}
[ -f "$WORK/.config" ] || die "$WORK holds no configured kernel tree: run the arch's build script first (or pass --work)"

# name -> spec (space-separated "-fragment" / "!CONFIG_X")
variants() {
    case $1 in
        no-netfilter) echo "-common/netfilter.config" ;;
        no-net-cluster) echo "-common/net-cluster.config" ;;
        no-bpf) echo "-common/bpf.config" ;;
        no-memory) echo "-common/memory.config !CONFIG_FS_DAX !CONFIG_FUSE_DAX" ;;
        no-debug) echo "-common/debug.config" ;;
        no-keys-binfmt) echo "-common/keys.config -common/binfmt.config" ;;
        no-hardening) echo "!CONFIG_VMAP_STACK !CONFIG_RANDOMIZE_KSTACK_OFFSET !CONFIG_HARDENED_USERCOPY !CONFIG_SLAB_FREELIST_HARDENED !CONFIG_SLAB_FREELIST_RANDOM !CONFIG_LIST_HARDENED" ;;
        no-kaslr) echo "!CONFIG_RANDOMIZE_BASE !CONFIG_RANDOMIZE_MEMORY" ;;
        no-mitigations) echo "!CONFIG_CPU_MITIGATIONS" ;;
        no-kallsyms) echo "!CONFIG_KALLSYMS" ;;
        no-x86-smp-extras) echo "!CONFIG_PARAVIRT_SPINLOCKS !CONFIG_X86_X2APIC !CONFIG_JUMP_LABEL" ;;
        *) die "unknown variant $1" ;;
    esac
}
ALL="no-netfilter no-net-cluster no-bpf no-memory no-debug no-keys-binfmt no-hardening no-kallsyms"
[ "$ARCH" = x86_64 ] && ALL="$ALL no-kaslr no-mitigations no-x86-smp-extras"
[ "$ARCH" = aarch64 ] && ALL="$ALL no-kaslr"
OUT=$ROOT/target/kernel-cost/$ARCH
mkdir -p "$OUT"
xz -dc "$ROOT/crates/$CRATE/payload/kernel.xz" >"$OUT/full"

for v in ${ONLY:-$ALL}; do
    spec=$(variants "$v")
    frag=$OUT/$v.fragments; rm -rf "$frag"; mkdir -p "$frag/common" "$frag/$ARCH"
    cp "$ROOT"/scripts/kconfig/common/*.config "$frag/common/"
    cp "$ROOT"/scripts/kconfig/"$ARCH"/*.config "$frag/$ARCH/"
    off=$frag/zz-off.config; : >"$off"
    for s in $spec; do
        case $s in
            -*) rm -f "$frag/${s#-}" ;;
            '!'*) o=${s#!}; sed -i "/^$o=/d; /^# $o is not set/d" "$frag"/*/*.config; echo "# $o is not set" >>"$off" ;;
        esac
    done
    tree=$OUT/tree-$v
    if [ ! -d "$tree" ]; then echo "==> $v: copying $WORK"; cp -a "$WORK" "$tree"; fi
    echo "==> $v: $spec"
    # The "off" requests are not asserted (an option other fragments select may stay on):
    # the report shows the resulting config difference instead.
    configure_kernel "$tree" "$MAKEARGS" "$frag"/common/*.config "$frag/$ARCH"/*.config
    "$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$off" >/dev/null
    read -r -a make_args <<<"$MAKEARGS"
    make -C "$tree" "${make_args[@]}" -s olddefconfig
    build_kernel "$tree" "$MAKEARGS" "$(basename "$IMAGE")" >"$OUT/$v.build.log" 2>&1 \
        || { tail -n 30 "$OUT/$v.build.log"; die "$v: build failed"; }
    cp "$tree/$IMAGE" "$OUT/$v"
    xz -T1 -9e -c "$OUT/$v" | wc -c >"$OUT/$v.xz-bytes"
    rm -rf "$tree"
done
xz -T1 -9e -c "$OUT/full" | wc -c >"$OUT/full.xz-bytes"

echo "==> boot to /init, $RUNS runs each, interleaved"
(cd "$ROOT" && cargo build --quiet --release -p supermachine-guest-harness --bin boot-bench)
bb=$OUT/busybox; xz -dc "$ROOT/crates/$CRATE/payload/busybox.xz" >"$bb"
args=(--kernel "$OUT/full")
read -r -a variants <<<"${ONLY:-$ALL}"
for v in "${variants[@]}"; do args+=(--kernel "$OUT/$v"); done
"$ROOT/target/release/boot-bench" --machine "$MACHINE" --runs "$RUNS" --busybox "$bb" "${args[@]}" >"$OUT/boot.jsonl"
python3 - "$OUT" "$ARCH" "${variants[@]}" <<'PY'
import json, os, sys
out, arch, names = sys.argv[1], sys.argv[2], sys.argv[3:]
boots = {}
for line in open(os.path.join(out, "boot.jsonl")):
    j = json.loads(line)
    boots[os.path.basename(j["kernel"])] = j
def row(n):
    size = os.path.getsize(os.path.join(out, n))
    xz = int(open(os.path.join(out, n + ".xz-bytes")).read())
    b = boots.get(n, {})
    return size, xz, b.get("init_ms_median")
full = row("full")
res = {"arch": arch, "full": dict(zip(("image", "xz", "boot_ms"), full)), "variants": {}}
print(f"| {arch}: without | image bytes saved | payload (xz) bytes saved | boot to /init saved (median) |")
print("|---|---:|---:|---:|")
for n in names:
    s, x, b = row(n)
    res["variants"][n] = dict(image=s, xz=x, boot_ms=b)
    db = f"{full[2] - b:+.0f} ms" if b is not None and full[2] is not None else "n/a"
    print(f"| {n} | {full[0] - s:+,} | {full[1] - x:+,} | {db} |")
print(f"| (full kernel) | {full[0]:,} | {full[1]:,} | {full[2]} ms |")
json.dump(res, open(os.path.join(out, "..", f"{arch}.json"), "w"), indent=1)
PY
