# shellcheck shell=bash
# The TCG instruction-counting plugin (scripts/tcg-profile/tbprof.c), built against the installed
# QEMU's plugin API header. The header comes from the Debian source package of that QEMU
# (apt-get source: needs a deb-src entry, see scripts/busybox-build.sh), cached in
# target/tcg-profile/cache. Sourced after scripts/lib/common.sh (ROOT, die).

# Where build_tbprof_plugin puts the plugin.
TBPROF_PLUGIN=$ROOT/target/tcg-profile/cache/tbprof.so

# build_tbprof_plugin: compile the plugin to $TBPROF_PLUGIN.
build_tbprof_plugin() {
    local cache=$ROOT/target/tcg-profile/cache version header tmp
    version=$(dpkg-query -W -f='${source:Version}' qemu-system-x86)
    header=$cache/qemu-$version/qemu-plugin.h
    if [ ! -f "$header" ]; then
        echo "==> fetching qemu-plugin.h from the Debian source package qemu=$version"
        tmp=$(mktemp -d)
        (cd "$tmp" && apt-get source -q --download-only "qemu=$version" >/dev/null 2>&1) \
            || die "apt-get source qemu=$version failed: the apt sources need a deb-src entry (see scripts/busybox-build.sh)"
        mkdir -p "$(dirname "$header")"
        tar -xJf "$tmp"/qemu_*.orig.tar.xz -C "$tmp" --wildcards '*/include/qemu/qemu-plugin.h'
        cp "$tmp"/*/include/qemu/qemu-plugin.h "$header"
        rm -rf "$tmp"
    fi
    gcc -O2 -shared -fPIC -pthread -I "$(dirname "$header")" -o "$TBPROF_PLUGIN" "$ROOT/scripts/tcg-profile/tbprof.c"
}
