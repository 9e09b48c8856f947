#!/usr/bin/env bash
# Build the static busybox payload from Debian's busybox source, linked against musl.
#
#   scripts/busybox-build.sh [--arch x86_64|aarch64] [--out DIR] [--no-record]
#
# Inputs, each pinned below or in scripts/lib/pins.sh:
#   - the Debian source package busybox (apt-get source: the signed Sources index hashes the .dsc,
#     the .dsc hashes the tarballs, so any mirror gives the same tree; Debian's patches applied);
#   - musl-dev (libc, headers, the musl-gcc specs) and the Linux UAPI headers;
#   - gcc-12 and binutils (the aarch64 cross ones for --arch aarch64), xz-utils.
# Configuration: upstream `make defconfig` plus scripts/busybox/supermachine.config, every line
# of which is asserted after `oldconfig`. The result must be static and hold every applet the
# supermachine init and our tests use. Writes payload/busybox.xz and its manifest entry.
#
# Needs deb-src entries in the apt sources (see the error message) and, once:
#   apt-get install musl-tools musl-dev musl-dev:arm64 linux-libc-dev dpkg-dev
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/kconfig.sh"

# Pins only this recipe uses (a bump here does not stale the kernels or the Rust payloads).
BUSYBOX_SOURCE_VERSION=1:1.35.0-4+deb12u1
MUSL_VERSION=1.2.3-1
LINUX_LIBC_DEV_VERSION=6.1.187-1
LINUX_LIBC_DEV_ARM64_CROSS_VERSION=6.1.4-1cross1

ARCH=x86_64 OUT='' RECORD=1
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-record) RECORD=0; shift ;;
        *) die "unknown argument $1 (see the header of $0)" ;;
    esac
done
case $ARCH in
    x86_64)
        CRATE=supermachine-kernel-x86-64; RUN=
        CC=musl-gcc; CROSS=; UAPI=/usr/include; UAPI_ASM=/usr/include/x86_64-linux-gnu/asm
        require_pkg musl-dev:amd64 "$MUSL_VERSION"
        require_pkg linux-libc-dev:amd64 "$LINUX_LIBC_DEV_VERSION"
        require_pkg gcc-12 "$PIN_GCC_VERSION"
        require_pkg binutils "$PIN_BINUTILS_VERSION"
        TOOLCHAIN="gcc-12 $PIN_GCC_VERSION, binutils $PIN_BINUTILS_VERSION, musl $MUSL_VERSION, linux-libc-dev $LINUX_LIBC_DEV_VERSION"
        ;;
    aarch64)
        CRATE=supermachine-kernel-aarch64; RUN=qemu-aarch64-static
        CC=aarch64-linux-musl-gcc; CROSS=aarch64-linux-gnu-
        UAPI=/usr/aarch64-linux-gnu/include; UAPI_ASM=$UAPI/asm
        require_pkg musl-dev:arm64 "$MUSL_VERSION"
        require_pkg linux-libc-dev-arm64-cross "$LINUX_LIBC_DEV_ARM64_CROSS_VERSION"
        require_pkg gcc-12-aarch64-linux-gnu "$PIN_GCC_AARCH64_VERSION"
        require_pkg binutils-aarch64-linux-gnu "$PIN_BINUTILS_AARCH64_VERSION"
        TOOLCHAIN="gcc-12-aarch64-linux-gnu $PIN_GCC_AARCH64_VERSION, binutils $PIN_BINUTILS_AARCH64_VERSION, musl $MUSL_VERSION, linux-libc-dev-arm64-cross $LINUX_LIBC_DEV_ARM64_CROSS_VERSION"
        ;;
    *) die "--arch must be x86_64 or aarch64" ;;
esac
[ -z "$OUT" ] || [ $RECORD = 0 ] || die "--out needs --no-record: the manifest describes the crate's own payload folder"
require_pkg musl-tools "$MUSL_VERSION"
require_pkg xz-utils "$PIN_XZ_VERSION"
FRAGMENT=$ROOT/scripts/busybox/supermachine.config

# Applets the supermachine-generated /init uses (supermachine-compat.md §3), plus what our
# boot tests, demo and init-oci fallbacks run.
APPLETS="sh mount cat date ip mkdir ln rmdir cp chmod grep printf echo insmod switch_root
         umount poweroff reboot true false uname nc zcat gunzip ls sleep head tail wc sync mknod"

# The build path does not reach the binary (two builds in different folders gave the same bytes).
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "==> apt-get source busybox=$BUSYBOX_SOURCE_VERSION"
if ! (cd "$WORK" && apt-get source -q --download-only "busybox=$BUSYBOX_SOURCE_VERSION" >"$WORK/apt.log" 2>&1); then
    cat "$WORK/apt.log" >&2
    die "could not download the source package busybox=$BUSYBOX_SOURCE_VERSION
  fix: give apt a deb-src entry for bookworm and bookworm-security, e.g. change 'Types: deb' to
       'Types: deb deb-src' in /etc/apt/sources.list.d/debian.sources, then apt-get update"
fi
(cd "$WORK" && dpkg-source -q -x busybox_*.dsc src >/dev/null)

# musl-gcc looks only in musl's include folder; the applets also need the kernel's UAPI headers.
mkdir -p "$WORK/uapi"
for d in linux asm-generic mtd; do ln -s "$UAPI/$d" "$WORK/uapi/$d"; done
ln -s "$UAPI_ASM" "$WORK/uapi/asm"

# Configure: defconfig, then the fragment's lines replace defconfig's, then oldconfig settles
# what depends on them. Kconfig drops an option whose dependency is missing without a word, so
# every line of the fragment is checked against the result.
B=$WORK/build
mkdir -p "$B"
MAKE_ARGS=(-C "$B" -f "$WORK/src/Makefile" KBUILD_SRC="$WORK/src" KCONFIG_NOTIMESTAMP=1)
make "${MAKE_ARGS[@]}" -s defconfig >/dev/null
for o in $(fragment_options "$FRAGMENT" | cut -d= -f1); do sed -i -e "/^$o=/d" -e "/^# $o is not set\$/d" "$B/.config"; done
grep -E '^(CONFIG_|# CONFIG_)' "$FRAGMENT" >>"$B/.config"
{ yes "" || true; } | make "${MAKE_ARGS[@]}" -s oldconfig >/dev/null
assert_fragments busybox "$B/.config" "$FRAGMENT"

echo "==> building busybox ($ARCH, musl)"
make "${MAKE_ARGS[@]}" -j"$(nproc)" CC="$CC" CROSS_COMPILE="$CROSS" \
    BB_EXTRA_VERSION="supermachine-kernel, Debian source $BUSYBOX_SOURCE_VERSION, musl $MUSL_VERSION" \
    CONFIG_EXTRA_CFLAGS="-isystem $WORK/uapi" >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; die "busybox build failed (last lines above)"; }
BIN=$B/busybox
file "$BIN" | grep -q 'statically linked' || die "$BIN is not statically linked: $(file "$BIN")"
have=$($RUN "$BIN" --list)
for a in $APPLETS; do
    grep -qx "$a" <<<"$have" || die "the busybox build ($ARCH) lacks the applet '$a': check $FRAGMENT"
done
echo "==> busybox $(stat -c %s "$BIN") bytes, $(wc -l <<<"$have") applets"

DEST=$ROOT/crates/$CRATE/payload
mkdir -p "${OUT:-$DEST}"
xz_payload "$BIN" "${OUT:-$DEST}/busybox.xz" "$ARCH"
echo "==> busybox.xz $(stat -c %s "${OUT:-$DEST}/busybox.xz") bytes, sha256 $(sha256sum "$BIN" | cut -c1-16)…"
[ $RECORD = 1 ] || exit 0
python3 "$ROOT/scripts/lib/payload.py" record --manifest "$DEST/manifest.toml" \
    --name busybox --file busybox.xz \
    --source "busybox 1.35.0 from the Debian source package busybox $BUSYBOX_SOURCE_VERSION (Debian patches applied), upstream defconfig + scripts/busybox/supermachine.config, static" \
    --toolchain "$TOOLCHAIN; xz-utils $PIN_XZ_VERSION" \
    --recipe scripts/busybox-build.sh \
    --inputs "scripts/busybox-build.sh scripts/busybox/supermachine.config scripts/lib/pins.sh scripts/lib/common.sh scripts/lib/kconfig.sh"
