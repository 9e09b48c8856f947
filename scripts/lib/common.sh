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

# xz_payload IN OUT [--x86]: the crate payload compression (single-threaded: reproducible).
# --x86 puts the x86 branch filter (BCJ) in front of LZMA2, for uncompressed x86 machine code;
# every liblzma decodes it, including the one xz2 bundles.
xz_payload() {
    if [ "${3:-}" = --x86 ]; then
        xz -T1 --x86 --lzma2=preset=9e --check=crc64 -c "$1" >"$2.tmp" && mv "$2.tmp" "$2"
        return
    fi
    xz -T1 -9e --check=crc64 -c "$1" >"$2.tmp" && mv "$2.tmp" "$2"
}
