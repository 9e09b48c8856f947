#!/usr/bin/env bash
# The Rosetta path (linux/amd64 images on Apple Silicon) without macOS: init-oci on
# qemu-system-aarch64 in the runtime's mode, a virtio-fs share `rosetta` served by QEMU's
# virtiofsd, and Debian's arm64 qemu-x86_64-static as the stand-in for Apple's translator
# (crates/supermachine-guest-harness/tests/rosetta_aarch64.rs). Needs root (virtiofsd).
#
#   scripts/rosetta-test.sh
#
# Fetches qemu-user-static:arm64 (pinned below; not in scripts/lib/pins.sh, whose hash is a
# payload input) with apt once: the first run
# adds the arm64 architecture to dpkg (`dpkg --add-architecture arm64`, then `apt-get update`)
# and keeps the extracted interpreter under target/rosetta-standin.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/common.sh"
# The same QEMU release as the qemu-system packages the tests boot with.
PIN_QEMU_USER_STATIC_VERSION=1:7.2+dfsg-7+deb12u18+b3
[ "$(id -u)" = 0 ] || die "scripts/rosetta-test.sh needs root (QEMU's virtiofsd runs as root)"
"$ROOT/scripts/install-prereqs.sh"
[ -x /usr/lib/qemu/virtiofsd ] || die "/usr/lib/qemu/virtiofsd is missing (package qemu-system-common)"
dir=$ROOT/target/rosetta-standin
standin=$dir/$PIN_QEMU_USER_STATIC_VERSION/usr/bin/qemu-x86_64-static
if [ ! -x "$standin" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        echo "==> dpkg --add-architecture arm64 (for qemu-user-static:arm64)" >&2
        dpkg --add-architecture arm64
        apt-get update -qq
    fi
    mkdir -p "$dir/deb"
    (cd "$dir/deb" && apt-get download -qq "qemu-user-static:arm64=$PIN_QEMU_USER_STATIC_VERSION") ||
        { apt-get update -qq && (cd "$dir/deb" && apt-get download -qq "qemu-user-static:arm64=$PIN_QEMU_USER_STATIC_VERSION"); } ||
        die "cannot download qemu-user-static:arm64=$PIN_QEMU_USER_STATIC_VERSION (apt-cache policy qemu-user-static:arm64 lists the versions; update the pin in $0)"
    dpkg-deb -x "$dir"/deb/qemu-user-static_*_arm64.deb "$dir/$PIN_QEMU_USER_STATIC_VERSION"
    rm -rf "$dir/deb"
fi
file_type=$(od -An -tx1 -j18 -N2 "$standin" | tr -d ' ')
[ "$file_type" = b700 ] || die "$standin is not an arm64 ELF (e_machine $file_type)"
echo "==> Rosetta path: rosetta_aarch64 with $standin" >&2
cd "$ROOT"
ROSETTA_STANDIN=$standin cargo test --locked -p supermachine-guest-harness --test rosetta_aarch64 -- --include-ignored
