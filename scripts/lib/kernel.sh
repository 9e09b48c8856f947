# Shared kernel recipe: tinyconfig + fragments, asserted, pinned, reproducible.
# Sourced by scripts/kvm-x86_64-build.sh and scripts/hvf-aarch64-build.sh.
# shellcheck shell=bash
# Needs scripts/lib/common.sh.

# unpack_source WORKDIR: extract the pinned linux-source tarball once.
unpack_source() {
    local work=$1 tarball=/usr/src/linux-source-6.12.tar.xz
    require_pkg "$PIN_LINUX_SOURCE_PKG" "$PIN_LINUX_SOURCE_VERSION"
    if [ ! -f "$work/.unpacked-$PIN_LINUX_SOURCE_VERSION" ]; then
        rm -rf "$work"; mkdir -p "$work"
        echo "==> unpacking $tarball into $work"
        tar -xf "$tarball" -C "$work" --strip-components=1
        touch "$work/.unpacked-$PIN_LINUX_SOURCE_VERSION"
    fi
}

# fragment_options FILE...: every CONFIG_X=value or "# CONFIG_X is not set" line, normalised.
fragment_options() {
    sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*=.*\)$/\1/p' \
           -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1=n/p' "$@"
}

# configure_kernel SRC MAKEARGS FRAGMENT...: tinyconfig, merge, olddefconfig, assert.
configure_kernel() {
    local src=$1; shift
    local -a makeargs; read -r -a makeargs <<<"$1"; shift
    make -C "$src" "${makeargs[@]}" -s tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$@" >/dev/null
    make -C "$src" "${makeargs[@]}" -s olddefconfig
    # A dependency that is not met makes Kconfig drop an option silently: refuse that.
    local missing=0 opt want got
    while IFS= read -r opt; do
        want=${opt#*=}; opt=${opt%%=*}
        got=$(grep -E "^$opt=" "$src/.config" | cut -d= -f2- || true)
        [ -n "$got" ] || got=n
        if [ "$got" != "$want" ]; then
            echo "error: $opt: the fragments ask for $want, olddefconfig gave $got" >&2
            missing=1
        fi
    done < <(fragment_options "$@")
    [ $missing = 0 ] || die "kernel config does not hold every requested option (see above)"
}

# build_kernel SRC MAKEARGS TARGET
build_kernel() {
    local src=$1 target=$3
    local -a makeargs; read -r -a makeargs <<<"$2"
    make -C "$src" "${makeargs[@]}" -j"$(nproc)" LOCALVERSION= "$target"
}
