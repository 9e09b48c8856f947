#!/usr/bin/env bash
# Image conformance: every file an image holds reads back intact in the guest, for the images
# the supermachine runtime itself writes, on our kernel and (as the control) the published one.
#
#   scripts/image-test.sh [--arch x86_64|aarch64|all] [--tier quick|full]
#                         [--kernel published|ours|both] [--docs] [--out DIR]
#
# 1. scripts/image-test/trees.py makes two OCI layers of what real images hold (empty files,
#    sizes at the squashfs block size, hard and symbolic links, device nodes, FIFOs, set-id and
#    sticky modes, ids above 65535, xattrs incl. security.capability, long and unicode names,
#    deep directories, a directory of 2,000 (full: 10,000) entries, whiteouts and an opaque
#    directory; full adds a sparse file of 4 GiB + 1 byte) and the tree they must merge to.
# 2. Bakes them into images from two sources:
#      runtime          the runtime's own code, unchanged: tools/runtime-bake (links supermachine
#                       =0.7.108, outside our workspace) calls Image::bake_kvm on the layer tars
#      squashfs-tools   mksquashfs of the merged tree (how our workload suite packs its images)
#    and puts the runtime's data-volume ext4 (supermachine::ext4::make_empty_ext4) in layer 1.
# 3. Reads every image back on the host (unsquashfs, as root, then scripts/image-test/walk.c),
#    which says what the image holds; where that differs from the source tree the writer lost
#    something (reported, not our kernel's doing).
# 4. Boots each image with each kernel (the `workload` harness binary: the runtime's initramfs
#    flow, our agent and busybox; only the kernel differs) and runs scripts/image-test/checks.sh:
#    conform (the guest reads exactly what the image holds), source (... what was baked) and
#    volume (the runtime's ext4 volume written and read back through a loop device).
# 5. Prints the table, writes results.json, table.md and the host report to the output folder
#    (default target/image-test/<arch>-<tier>) and with --docs the section of docs/WORKLOADS.md.
#
# Exit status 1 when conform or volume fails on our kernel. Needs root (device nodes, owners).
# The quick tier (x86_64, both kernels) runs in scripts/test.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/upstream.sh"

ARCHES=x86_64 KERNELS=both TIER=quick DOCS=0 OUT_BASE=
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCHES=$2; shift 2 ;;
        --tier) TIER=$2; shift 2 ;;
        --kernel) KERNELS=$2; shift 2 ;;
        --docs) DOCS=1; shift ;;
        --out) OUT_BASE=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $ARCHES in all) ARCHES="x86_64 aarch64" ;; x86_64|aarch64) ;; *) die "--arch x86_64|aarch64|all" ;; esac
case $KERNELS in both) KERNELS="published ours" ;; published|ours) ;; *) die "--kernel published|ours|both" ;; esac
case $TIER in quick|full) ;; *) die "--tier quick|full" ;; esac
[ "$(id -u)" = 0 ] || die "run as root: the test trees hold device nodes, owners and trusted.* attributes"
OUT_BASE=${OUT_BASE:-$ROOT/target/image-test}
log() { echo "==> $*" >&2; }

# --- prerequisites ------------------------------------------------------------------------------
"$ROOT/scripts/install-prereqs.sh"
need=()
command -v unsquashfs >/dev/null || need+=(squashfs-tools)
case " $ARCHES " in *" aarch64 "*)
    command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
    [ -e /usr/aarch64-linux-gnu/lib/libc.a ] || need+=(libc6-dev-arm64-cross)
esac
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi

log "building tools/runtime-bake (links the supermachine 0.7.108 runtime; the first build takes minutes)"
cargo build --quiet --release --locked --manifest-path "$ROOT/tools/Cargo.toml" -p runtime-bake
BAKE=$ROOT/tools/target/release/runtime-bake
log "building the workload harness"
(cd "$ROOT" && cargo build --quiet --locked -p supermachine-guest-harness --bin workload)
WORKLOAD=$ROOT/target/debug/workload
mkdir -p "$OUT_BASE"
case " $KERNELS " in *" published "*)
    upstream_fetch "$ROOT/target/bench-upstream" "$OUT_BASE/upstream-metadata.json"
esac

# The walker on the host: one build for every arch (the guests get static ones below).
WALK_HOST=$OUT_BASE/walk-host
cc -O2 -Wall -Werror -o "$WALK_HOST" "$ROOT/scripts/image-test/walk.c"

status=0
for ARCH in $ARCHES; do
    OUT=$OUT_BASE/$ARCH-$TIER
    rm -rf "$OUT"; mkdir -p "$OUT/kernels" "$OUT/images" "$OUT/manifests" "$OUT/guest"
    crate=supermachine-kernel-${ARCH//_/-}

    # The walker for the guest.
    case $ARCH in
        x86_64) cc -O2 -Wall -Werror -static -o "$OUT/guest/walk" "$ROOT/scripts/image-test/walk.c" ;;
        aarch64) aarch64-linux-gnu-gcc -O2 -Wall -Werror -static -o "$OUT/guest/walk" "$ROOT/scripts/image-test/walk.c" ;;
    esac

    # Kernels: ours from the crate, the published one from crates.io.
    xz -dc "$ROOT/crates/$crate/payload/kernel.xz" >"$OUT/kernels/ours"
    case " $KERNELS " in *" published "*)
        xz -dc "$(upstream_src "$OUT_BASE/upstream-metadata.json" "$crate")/kernel.xz" >"$OUT/kernels/published"
    esac

    # Trees and layers.
    log "$ARCH: test trees ($TIER)"
    xz -dc "$ROOT/crates/$crate/payload/busybox.xz" >"$OUT/busybox"
    python3 "$ROOT/scripts/image-test/trees.py" "$OUT/trees" --busybox "$OUT/busybox" --tier "$TIER"
    mkdir -p "$OUT/trees/layers/1/opt/sm-image"
    "$BAKE" ext4 --out "$OUT/trees/layers/1/opt/sm-image/volume.ext4" --size $((64 << 20)) >/dev/null
    cp -a "$OUT/trees/layers/1/opt" "$OUT/trees/merged/"
    for n in 1 2; do
        # GNU tar as image builders write layers: numeric owners, xattrs. No --sparse: with
        # --xattrs it writes PAX sparse entries, which the runtime extracts as GNUSparseFile.N/NAME.
        tar -C "$OUT/trees/layers/$n" --numeric-owner --xattrs --xattrs-include='*' \
            --sort=name -cf "$OUT/layer$n.tar" .
    done

    # Images.
    log "$ARCH: baking with the runtime (Image::bake_kvm) and with mksquashfs"
    "$BAKE" kvm --out "$OUT/images/runtime-bake" --kernel "$OUT/kernels/ours" --initrd "$OUT/busybox" \
        "$OUT/layer1.tar" "$OUT/layer2.tar" >/dev/null
    mv "$OUT/images/runtime-bake/rootfs.squashfs" "$OUT/images/runtime.squashfs"
    mksquashfs "$OUT/trees/merged" "$OUT/images/squashfs-tools.squashfs" -comp zstd -noappend -quiet -no-progress >/dev/null

    # What each image holds, read on the host; what the writer lost.
    "$WALK_HOST" "$OUT/trees/merged/t" >"$OUT/manifests/source.txt"
    : >"$OUT/host-report.txt"
    for src in runtime squashfs-tools; do
        x=$OUT/images/$src.extract
        unsquashfs -quiet -no-progress -d "$x" "$OUT/images/$src.squashfs" >/dev/null
        "$WALK_HOST" "$x/t" >"$OUT/manifests/$src.txt"
        { echo "## $src: what the image holds against the source tree (the writer's doing)"
          "$WALK_HOST" --compare "$OUT/manifests/source.txt" "$x/t" || true
          echo
        } >>"$OUT/host-report.txt"
        rm -rf "$x"
    done

    # Guests.
    results=()
    for src in runtime squashfs-tools; do
        for k in $KERNELS; do
            log "$ARCH: $src image, $k kernel"
            "$WORKLOAD" --arch "$ARCH" --kernel "$OUT/kernels/$k" --image "$OUT/images/$src.squashfs" \
                --label "$k" --checks conform,source,volume --script "$ROOT/scripts/image-test/checks.sh" \
                --stage "$OUT/guest/walk=/opt/sm-image/walk" \
                --stage "$OUT/manifests/$src.txt=/opt/sm-image/writer.txt" \
                --stage "$OUT/manifests/source.txt=/opt/sm-image/source.txt" \
                --mem 1024 --cpus 1 --check-timeout 600 --json "$OUT/$src-$k.json" >/dev/null || true
            results+=("$src/$k=$OUT/$src-$k.json")
        done
    done
    docs=()
    [ "$DOCS" = 1 ] && docs=(--docs "$ROOT/docs/WORKLOADS.md")
    python3 "$ROOT/scripts/image-test/report.py" --arch "$ARCH" --tier "$TIER" --out "$OUT" \
        --host-report "$OUT/host-report.txt" "${docs[@]}" "${results[@]}" || status=1
done
exit $status
