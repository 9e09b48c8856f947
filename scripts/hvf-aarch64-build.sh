#!/usr/bin/env bash
# Build the aarch64 guest kernel payload: crates/supermachine-kernel-aarch64/payload/kernel.xz
#
#   scripts/hvf-aarch64-build.sh [--work DIR] [--out DIR] [--no-record] [--compression ...]
#
# Same pinned source and recipe as scripts/kvm-x86_64-build.sh, cross-compiled with Debian's
# gcc-aarch64-linux-gnu; fragments from scripts/kconfig/{common,aarch64}/. Output is the
# uncompressed arm64 `Image` (what HVF/QEMU load directly), xz'd only for the crate.
#
# Prerequisites (Debian 12): as for x86_64, plus gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu
# libc6-dev-arm64-cross
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/kernel.sh"

require_pkg gcc-12-aarch64-linux-gnu "$PIN_GCC_AARCH64_VERSION"
require_pkg binutils-aarch64-linux-gnu "$PIN_BINUTILS_AARCH64_VERSION"
# Kconfig records whether $(CC) can link a user program (CONFIG_CC_CAN_LINK{,_STATIC}, embedded in
# the Image as /proc/config.gz), so the cross libc is an input of the kernel bytes even though the
# kernel never links against it: without it the Image differs. Only this recipe needs it, so the
# pin lives here (a pin in pins.sh would ask for every payload to be rebuilt).
PIN_LIBC_DEV_ARM64_CROSS_VERSION=2.36-8cross1
require_pkg libc6-dev-arm64-cross "$PIN_LIBC_DEV_ARM64_CROSS_VERSION"
KERNEL_TOOLCHAIN="gcc-12-aarch64-linux-gnu $PIN_GCC_AARCH64_VERSION, binutils-aarch64-linux-gnu $PIN_BINUTILS_AARCH64_VERSION, libc6-dev-arm64-cross $PIN_LIBC_DEV_ARM64_CROSS_VERSION"
kernel_recipe aarch64 "ARCH=arm64 CROSS_COMPILE=aarch64-linux-gnu-" arch/arm64/boot/Image \
    supermachine-kernel-aarch64 scripts/hvf-aarch64-build.sh "$@"
