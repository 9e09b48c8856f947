# Pinned inputs shared by the payload recipes (Debian packages, kernel build identity). The Rust
# toolchain pin lives in scripts/lib/rust-guest.sh, so that a toolchain bump rebuilds only the
# agent and init-oci. Changing a pin changes the inputs hash recorded in the manifests, so the
# CI check asks for a rebuild.
# shellcheck shell=bash

# Debian bookworm packages (apt-get install PKG=VERSION).
PIN_LINUX_SOURCE_PKG=linux-source-6.12
PIN_LINUX_SOURCE_VERSION=6.12.117-1~deb12u1
PIN_GCC_VERSION=12.2.0-14+deb12u1
PIN_BINUTILS_VERSION=2.40-2
PIN_XZ_VERSION=5.4.1-1+deb12u2
PIN_GCC_AARCH64_VERSION=12.2.0-14cross1
PIN_BINUTILS_AARCH64_VERSION=2.40-2

# Kernel build identity (what `uname -v` and /proc/version print).
export KBUILD_BUILD_TIMESTAMP='Sun Nov 22 00:00:00 UTC 2026'
export KBUILD_BUILD_USER=supermachine
export KBUILD_BUILD_HOST=supermachine-kernel
export KBUILD_BUILD_VERSION=1
export LC_ALL=C
export TZ=UTC
export SOURCE_DATE_EPOCH=1795305600
