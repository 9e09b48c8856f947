#!/usr/bin/env bash
# Installs what the tests and the demo need, saying what it installs. Idempotent.
#   QEMU (x86_64 and aarch64 system emulators), squashfs-tools (image layers),
#   vhost-device-vsock 0.3.0 (virtio-vsock backend for QEMU without /dev/vhost-vsock),
#   gcc and libc6-dev (a static guest test program), shellcheck (scripts/lint.sh).
set -euo pipefail
need_apt=()
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)
command -v qemu-system-aarch64 >/dev/null || need_apt+=(qemu-system-arm)
command -v mksquashfs >/dev/null || need_apt+=(squashfs-tools)
command -v unshare >/dev/null || need_apt+=(util-linux)
command -v python3 >/dev/null || need_apt+=(python3)
command -v shellcheck >/dev/null || need_apt+=(shellcheck)
# a C compiler with a static libc: the guest program of tests/tcg_cross_modifying_code.rs
command -v cc >/dev/null || need_apt+=(gcc)
[ -e "/usr/lib/$(uname -m)-linux-gnu/libc.a" ] || need_apt+=(libc6-dev)
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    echo "==> installing Debian packages: ${need_apt[*]}"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi
if ! command -v vhost-device-vsock >/dev/null; then
    echo "==> installing vhost-device-vsock 0.3.0 with cargo (about 80 s)"
    cargo install --locked -q vhost-device-vsock --version 0.3.0
fi
