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

# xz_payload IN OUT: the crate payload compression (single-threaded: reproducible).
xz_payload() {
    xz -T1 -9e --check=crc64 -c "$1" >"$2.tmp" && mv "$2.tmp" "$2"
}
