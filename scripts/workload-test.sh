#!/usr/bin/env bash
# Workload conformance: real Debian 12 software against our kernel and, in the same run, the
# published supermachine-kernel 0.7.70 kernel, booted the supermachine way under QEMU (TCG).
#
#   scripts/workload-test.sh [--arch x86_64|aarch64] [--kernel published|ours|both]
#                            [--tier quick|full] [--checks NAME,…] [--docs] [--out DIR]
#                            [--image-source mksquashfs|runtime] [--image-only]
#
# 1. Builds a Debian bookworm root with mmdebstrap from the Debian package registry (cached in
#    $SM_WORKLOAD_CACHE, default target/workload/cache; the installed package set is recorded
#    in the output as packages-<arch>-<tier>.txt), adds a static busybox of the other
#    architecture (from our other arch crate) and a tiny container image tree under
#    /opt/sm-workload, and packs it as a zstd squashfs image: with mksquashfs (default), or with
#    --image-source runtime by the supermachine runtime's own bake (Image::bake_kvm through
#    tools/runtime-bake, the root as one OCI layer), the writer users' images come from.
#    scripts/workload/checks.sh is copied into each booted guest, not into the image.
# 2. Boots that image with each kernel (`workload` harness binary: our initramfs flow, our
#    agent and busybox, only the kernel differs) and runs every check of the tier through the
#    agent: scripts/workload/checks.sh says what each one does (`sh checks.sh list full`).
# 3. Prints the table (check × published × ours), writes results.json and table.md to the
#    output folder (default target/workload/<arch>-<tier>), and with --docs docs/WORKLOADS.md.
#
# --image-only builds (or finds in the cache) the image, prints its path and stops.
# Exit status 1 when a check fails on ours and passes on published (--kernel both), or fails on
# ours at all (--kernel ours). The quick tier runs in scripts/test.sh; the full tier (CPython's
# regression tests, dockerd, ...) takes about an hour per kernel under TCG.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/upstream.sh"

ARCH=x86_64 KERNELS=both TIER=quick CHECKS='' DOCS=0 OUT='' SOURCE=mksquashfs IMAGE_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=$2; shift 2 ;;
        --kernel) KERNELS=$2; shift 2 ;;
        --tier) TIER=$2; shift 2 ;;
        --quick) TIER=quick; shift ;;
        --full) TIER=full; shift ;;
        --checks) CHECKS=$2; shift 2 ;;
        --docs) DOCS=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --image-source) SOURCE=$2; shift 2 ;;
        --image-only) IMAGE_ONLY=1; shift ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case $ARCH in
    x86_64) DEB_ARCH=amd64 OTHER=aarch64 ;;
    aarch64) DEB_ARCH=arm64 OTHER=x86_64 ;;
    *) die "--arch $ARCH: x86_64 or aarch64" ;;
esac
case $KERNELS in both) KERNELS="published ours" ;; published|ours) ;; *) die "--kernel published|ours|both" ;; esac
case $TIER in quick|full) ;; *) die "--tier quick|full" ;; esac
case $SOURCE in mksquashfs|runtime) ;; *) die "--image-source mksquashfs|runtime" ;; esac
[ -n "$CHECKS" ] || CHECKS=$(sh "$ROOT/scripts/workload/checks.sh" list "$TIER" | tr ' ' ',')
CACHE=${SM_WORKLOAD_CACHE:-$ROOT/target/workload/cache}
SUFFIX=; [ "$SOURCE" = mksquashfs ] || SUFFIX=-runtime-bake
OUT=${OUT:-$ROOT/target/workload/$ARCH-$TIER$SUFFIX}
mkdir -p "$CACHE" "$OUT"
log() { echo "==> $*" >&2; }

# --- prerequisites ------------------------------------------------------------------------------
"$ROOT/scripts/install-prereqs.sh"
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v xz >/dev/null || need+=(xz-utils)
if [ "$ARCH" = aarch64 ] && ! [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    # mmdebstrap runs the arm64 packages' scripts through qemu-user.
    command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static binfmt-support)
    command -v arch-test >/dev/null || need+=(arch-test)
fi
if [ ${#need[@]} -gt 0 ]; then
    log "installing Debian packages: ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$ARCH" = aarch64 ]; then
    mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64
fi

# --- the root file system -------------------------------------------------------------------------
# Everything the checks drive. quick: kernel-facing tools; full adds CPython's tests and dockerd.
PKGS=util-linux,mount,e2fsprogs,iproute2,iptables,nftables,python3,keyutils,bpftool,qemu-user-static,procps,kmod
[ "$TIER" = full ] && PKGS=$PKGS,libpython3.11-testsuite,docker.io,dosfstools,erofs-utils
key=$(printf "%s %s" "$DEB_ARCH" "$PKGS" | sha256sum | cut -c1-16)
tarball=$CACHE/rootfs-$DEB_ARCH-$TIER-$key.tar
if [ ! -s "$tarball" ]; then
    log "mmdebstrap bookworm ($DEB_ARCH, $TIER): $PKGS"
    mmdebstrap --quiet --variant=minbase --format=tar --architectures="$DEB_ARCH" --include="$PKGS" \
        bookworm "$tarball.tmp"
    mv "$tarball.tmp" "$tarball"
fi
# Bump PACK when what goes into the image (below) changes: cached images are keyed by it.
PACK=2
image=$CACHE/image-$DEB_ARCH-$TIER-$key-p$PACK-$(cat "$ROOT"/crates/supermachine-kernel-{x86-64,aarch64}/payload/busybox.xz | sha256sum | cut -c1-12)$SUFFIX.squashfs
if [ ! -s "$image" ]; then
    log "packing $image"
    tree=$(mktemp -d "$CACHE/tree.XXXXXX")
    trap 'rm -rf "$tree"' EXIT
    tar -C "$tree" -xf "$tarball"
    # qemu-user-static ships an emulator for every arch (~400 MB): keep the one the binfmt check uses.
    find "$tree/usr/bin" -name 'qemu-*-static' ! -name "qemu-$OTHER-static" -delete
    sm=$tree/opt/sm-workload
    mkdir -p "$sm/image/bin" "$sm/image/www"
    # Named busybox: busybox picks the applet from argv[0], which the P flag preserves.
    mkdir -p "$sm/foreign"
    xz -dc "$ROOT/crates/supermachine-kernel-${OTHER//_/-}/payload/busybox.xz" >"$sm/foreign/busybox"
    chmod 0755 "$sm/foreign/busybox"
    # The container image dockerd imports: our busybox of this arch and a page to serve.
    xz -dc "$ROOT/crates/supermachine-kernel-${ARCH//_/-}/payload/busybox.xz" >"$sm/image/bin/busybox"
    chmod 0755 "$sm/image/bin/busybox"
    echo "hello from a container" >"$sm/image/www/index.html"
    if [ "$ARCH" = x86_64 ] && [ "$TIER" = full ]; then
        # The ia32 check runs Debian's i386 static busybox (gcc-multilib would conflict with the
        # aarch64 cross compiler the kernel recipe needs). Without it that check fails, loudly.
        dpkg --print-foreign-architectures | grep -qx i386 || dpkg --add-architecture i386
        apt-get update -q >/dev/null 2>&1 || true
        if (cd "$CACHE" && apt-get download -q "busybox-static:i386" >/dev/null 2>&1); then
            # shellcheck disable=SC2012 # the newest by mtime; Debian package file names have no blanks
            deb=$(ls -t "$CACHE"/busybox-static_*_i386.deb | head -n1)
            dpkg-deb --fsys-tarfile "$deb" | tar -xO ./bin/busybox >"$sm/busybox-i386"
            chmod 0755 "$sm/busybox-i386"
        else
            echo "warning: could not download busybox-static:i386; the ia32 check will fail" >&2
        fi
    fi
    if [ "$SOURCE" = runtime ]; then
        log "baking the image with the runtime's Image::bake_kvm (tools/runtime-bake)"
        cargo build --quiet --release --locked --manifest-path "$ROOT/tools/Cargo.toml" -p runtime-bake
        tar -C "$tree" --numeric-owner --xattrs --xattrs-include='*' -cf "$tree.layer.tar" .
        rm -rf "$image.bake"
        # --kernel/--initrd are only recorded in the bake's metadata.json (which is discarded);
        # the runtime insists they name files.
        "$ROOT/tools/target/release/runtime-bake" kvm --out "$image.bake" --kernel "$tree.layer.tar" \
            --initrd "$tree.layer.tar" "$tree.layer.tar" >/dev/null
        mv "$image.bake/rootfs.squashfs" "$image"
        rm -rf "$image.bake" "$tree.layer.tar"
    else
        mksquashfs "$tree" "$image.tmp" -comp zstd -noappend -quiet -no-progress >/dev/null
        mv "$image.tmp" "$image"
    fi
    rm -rf "$tree"; trap - EXIT
fi
tar -xOf "$tarball" ./var/lib/dpkg/status | awk '/^Package:/ {p=$2} /^Version:/ {print p, $2}' | sort \
    >"$OUT/packages-$ARCH-$TIER.txt"
log "root: $(wc -l <"$OUT/packages-$ARCH-$TIER.txt") Debian packages, image $(du -m "$image" | cut -f1) MiB"
if [ "$IMAGE_ONLY" = 1 ]; then echo "$image"; exit 0; fi

# --- kernels ----------------------------------------------------------------------------------------
KDIR=$OUT/kernels
mkdir -p "$KDIR"

xz -dc "$ROOT/crates/supermachine-kernel-${ARCH//_/-}/payload/kernel.xz" >"$KDIR/ours"
case " $KERNELS " in *" published "*)
    log "fetching the published supermachine-kernel $UPV"
    upstream_fetch "$ROOT/target/bench-upstream" "$KDIR/upstream-metadata.json"
    xz -dc "$(upstream_src "$KDIR/upstream-metadata.json" "supermachine-kernel-${ARCH//_/-}")/kernel.xz" >"$KDIR/published"
esac

# --- run ---------------------------------------------------------------------------------------------
log "building the workload harness"
(cd "$ROOT" && cargo build --quiet --locked -p supermachine-guest-harness --bin workload)
bin=$ROOT/target/debug/workload
mem=1024; [ "$TIER" = full ] && mem=2048
timeout_s=300; [ "$TIER" = full ] && timeout_s=900
results=()
for k in $KERNELS; do
    log "$ARCH, $k kernel: $(echo "$CHECKS" | tr ',' '\n' | wc -l) checks"
    "$bin" --arch "$ARCH" --kernel "$KDIR/$k" --image "$image" --label "$k" --checks "$CHECKS" \
        --script "$ROOT/scripts/workload/checks.sh" \
        --mem "$mem" --cpus 2 --check-timeout "$timeout_s" --json "$OUT/$k.json" >/dev/null
    results+=("$k=$OUT/$k.json")
done
docs=()
[ "$DOCS" = 1 ] && docs=(--docs "$ROOT/docs/WORKLOADS.md")
# The image source is part of the tier's name, so --docs keeps the two tables apart.
python3 "$ROOT/scripts/workload/report.py" --arch "$ARCH" --tier "$TIER$SUFFIX" --packages "$OUT/packages-$ARCH-$TIER.txt" \
    --out "$OUT" "${docs[@]}" "${results[@]}"
