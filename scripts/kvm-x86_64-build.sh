#!/usr/bin/env bash
# Build the x86_64 guest kernel payload: crates/supermachine-kernel-x86-64/payload/kernel.xz
#
#   scripts/kvm-x86_64-build.sh [--work DIR] [--out DIR] [--no-record] [--compression gzip|lz4|zstd|xz|none]
#
# Pinned inputs: Debian linux-source-6.12, gcc-12, binutils, xz-utils (versions in
# scripts/lib/pins.sh) and the config fragments in scripts/kconfig/{common,x86_64}/, applied to
# `make tinyconfig`; every requested option is asserted after olddefconfig. The result is
# bit-for-bit reproducible (docs/REPRODUCING.md). The final .config goes to
# scripts/kconfig/x86_64.config (review it in diffs) and payload/kernel.config (KERNEL_CONFIG).
# The in-kernel compression was chosen by measurement: docs/kernel-compression.md.
#
# Prerequisites (Debian 12): apt-get install linux-source-6.12=<pin> build-essential flex bison
#   bc libelf-dev libssl-dev cpio xz-utils python3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/kernel.sh"

require_pkg gcc-12 "$PIN_GCC_VERSION"
require_pkg binutils "$PIN_BINUTILS_VERSION"
KERNEL_TOOLCHAIN="gcc-12 $PIN_GCC_VERSION, binutils $PIN_BINUTILS_VERSION"
kernel_recipe x86_64 "ARCH=x86_64" arch/x86/boot/bzImage supermachine-kernel-x86-64 \
    scripts/kvm-x86_64-build.sh "$@"
