# Helpers shared by every payload recipe.
# shellcheck shell=bash

die() { echo "error: $*" >&2; exit 1; }

# require_pkg NAME VERSION: fail unless the installed Debian package matches the pin.
require_pkg() {
    local have
    have=$(dpkg-query -W -f='${Version}' "$1" 2>/dev/null) || have=none
    [ "$have" = "$2" ] || die "package $1 is $have, the recipe is pinned to $2
  fix: apt-get install $1=$2   (or update the pin in scripts/lib/pins.sh and rebuild every payload)"
}

# xz_payload IN OUT ARCH: the crate payload compression (single-threaded: reproducible), the one
# place that chooses the filter per architecture. x86_64: the x86 branch filter (BCJ) in front of
# LZMA2 packs uncompressed machine code ~5% smaller, and every liblzma decodes it, including the
# 5.2 that the xz2 crate bundles. aarch64: plain LZMA2 (liblzma 5.2 has no arm64 filter).
xz_payload() {
    local filter
    case $3 in
        x86_64) filter=(--x86 --lzma2=preset=9e) ;;
        aarch64) filter=(-9e) ;;
        *) die "xz_payload: unknown architecture '$3' (x86_64 or aarch64)" ;;
    esac
    xz -T1 "${filter[@]}" --check=crc64 -c "$1" >"$2.tmp" && mv "$2.tmp" "$2"
}
