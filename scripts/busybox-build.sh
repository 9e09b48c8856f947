#!/usr/bin/env bash
# Ship Debian's static busybox as a crate payload.
#
#   scripts/busybox-build.sh [--arch x86_64|aarch64]
#
# Downloads busybox-static at the version pinned in scripts/lib/pins.sh (apt-get download, so
# any Debian mirror gives the same bytes), checks that it is a static binary holding every
# applet the supermachine init and our tests use, then writes payload/busybox.xz and its
# manifest entry in the arch crate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"

ARCH=x86_64
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
case $ARCH in
    x86_64) DEBARCH=amd64; CRATE=supermachine-kernel-x86-64; RUN= ;;
    aarch64) DEBARCH=arm64; CRATE=supermachine-kernel-aarch64; RUN=qemu-aarch64-static ;;
    *) die "--arch must be x86_64 or aarch64" ;;
esac
require_pkg xz-utils "$PIN_XZ_VERSION"

# Applets the supermachine-generated /init uses (supermachine-compat.md §3), plus what our
# boot tests, demo and init-oci fallbacks run.
APPLETS="sh mount cat date ip mkdir ln rmdir cp chmod grep printf echo insmod switch_root
         umount poweroff reboot true false uname nc zcat gunzip ls sleep head tail wc sync mknod"

WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
( cd "$WORK" && apt-get download -q "busybox-static:$DEBARCH=$PIN_BUSYBOX_VERSION" >/dev/null )
dpkg-deb -x "$WORK"/busybox-static_*.deb "$WORK/x"
BIN=$WORK/x/bin/busybox
file "$BIN" | grep -q 'statically linked' || die "$BIN is not statically linked: $(file "$BIN")"
have=$($RUN "$BIN" --list)
for a in $APPLETS; do
    grep -qx "$a" <<<"$have" || die "busybox $PIN_BUSYBOX_VERSION ($DEBARCH) lacks the applet '$a'"
done

OUT=$ROOT/crates/$CRATE/payload
mkdir -p "$OUT"
xz_payload "$BIN" "$OUT/busybox.xz" "$ARCH"
python3 "$ROOT/scripts/lib/payload.py" record --manifest "$OUT/manifest.toml" \
    --name busybox --file busybox.xz \
    --source "Debian busybox-static $PIN_BUSYBOX_VERSION ($DEBARCH), source package busybox" \
    --toolchain "Debian build of busybox; xz-utils $PIN_XZ_VERSION" \
    --recipe scripts/busybox-build.sh \
    --inputs "scripts/busybox-build.sh scripts/lib/pins.sh scripts/lib/common.sh"
