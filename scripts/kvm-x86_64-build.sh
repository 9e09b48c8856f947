#!/usr/bin/env bash
# Build the x86_64 guest kernel payload: crates/supermachine-kernel-x86-64/payload/kernel.xz
#
#   scripts/kvm-x86_64-build.sh [--work DIR] [--compression gzip|lz4|zstd|xz] [--no-record]
#
# Pinned inputs: Debian linux-source-6.12 (version in scripts/lib/pins.sh), gcc-12, binutils,
# xz-utils, and the config fragments in scripts/kconfig/{common,x86_64}/. The result is
# bit-for-bit reproducible: same pins + same fragments -> same sha256 (see docs/REPRODUCING.md).
#
# Prerequisites (Debian 12): apt-get install linux-source-6.12=<pin> build-essential flex bison bc
#   libelf-dev libssl-dev cpio xz-utils python3
#
# The final .config is written to scripts/kconfig/x86_64.config (review it in diffs) and shipped
# in the crate as payload/kernel.config. In-kernel compression was chosen by measurement; the
# table is in docs/kernel-compression.md (--compression rebuilds with another one to re-measure).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/kernel.sh"

WORK=${TMPDIR:-/tmp}/supermachine-kbuild-x86_64
COMPRESSION=
RECORD=1
OUT=$ROOT/crates/supermachine-kernel-x86-64/payload
while [ $# -gt 0 ]; do
    case $1 in
        --work) WORK=$2; shift 2 ;;
        --compression) COMPRESSION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-record) RECORD=0; shift ;;
        *) die "unknown argument $1 (see the header of $0)" ;;
    esac
done

require_pkg gcc-12 "$PIN_GCC_VERSION"
require_pkg binutils "$PIN_BINUTILS_VERSION"
require_pkg xz-utils "$PIN_XZ_VERSION"
unpack_source "$WORK"

FRAGMENTS=("$ROOT"/scripts/kconfig/common/*.config "$ROOT"/scripts/kconfig/x86_64/*.config)
if [ -n "$COMPRESSION" ]; then
    upper=$(echo "$COMPRESSION" | tr a-z A-Z)
    echo "CONFIG_KERNEL_$upper=y" >"$WORK/compression-override.config"
    FRAGMENTS+=("$WORK/compression-override.config")
fi
MAKEARGS="ARCH=x86_64"
configure_kernel "$WORK" "$MAKEARGS" "${FRAGMENTS[@]}"
build_kernel "$WORK" "$MAKEARGS" bzImage

IMAGE=$WORK/arch/x86/boot/bzImage
RELEASE=$(make -C "$WORK" -s $MAKEARGS LOCALVERSION= kernelrelease)
mkdir -p "$OUT"
xz_payload "$IMAGE" "$OUT/kernel.xz"
cp "$WORK/.config" "$OUT/kernel.config"
[ "$OUT" != "$ROOT/crates/supermachine-kernel-x86-64/payload" ] || cp "$WORK/.config" "$ROOT/scripts/kconfig/x86_64.config"
echo "==> bzImage $(stat -c %s "$IMAGE") bytes, kernel.xz $(stat -c %s "$OUT/kernel.xz") bytes, release $RELEASE"
echo "    sha256 $(sha256sum "$IMAGE" | cut -d' ' -f1)"

if [ "$RECORD" = 1 ]; then
    python3 "$ROOT/scripts/lib/payload.py" record --manifest "$OUT/manifest.toml" \
        --name kernel --file kernel.xz \
        --source "Debian $PIN_LINUX_SOURCE_PKG $PIN_LINUX_SOURCE_VERSION (Linux $RELEASE)" \
        --toolchain "gcc-12 $PIN_GCC_VERSION, binutils $PIN_BINUTILS_VERSION, xz-utils $PIN_XZ_VERSION" \
        --recipe scripts/kvm-x86_64-build.sh \
        --inputs "scripts/kvm-x86_64-build.sh scripts/lib/common.sh scripts/lib/kernel.sh scripts/lib/pins.sh scripts/kconfig/common/*.config scripts/kconfig/x86_64/*.config" \
        --extra "kernel_release=$RELEASE"
fi
