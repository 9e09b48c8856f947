# Shared kernel recipe: tinyconfig + fragments, asserted, pinned, reproducible.
# Sourced by scripts/kvm-x86_64-build.sh and scripts/hvf-aarch64-build.sh.
# shellcheck shell=bash
# Needs scripts/lib/common.sh.
. "$ROOT/scripts/lib/kconfig.sh"

# kernel_patches ARCH: the patch set, one path per line: scripts/kernel-patches/common/*.patch,
# then scripts/kernel-patches/ARCH/*.patch, each in name order.
kernel_patches() {
    local p
    for p in "$ROOT/scripts/kernel-patches/common"/*.patch "$ROOT/scripts/kernel-patches/$1"/*.patch; do
        [ -e "$p" ] && echo "$p"
    done
    return 0
}

# unpack_source WORKDIR ARCH: extract the pinned linux-source tarball and apply the patch set
# (kernel_patches). The tree is reused while the source pin and the patch set are unchanged; a
# changed patch set re-extracts it (patches never stack up).
unpack_source() {
    local work=$1 arch=$2 tarball=/usr/src/linux-source-6.12.tar.xz
    require_pkg "$PIN_LINUX_SOURCE_PKG" "$PIN_LINUX_SOURCE_VERSION"
    local -a patches=()
    local p stamp
    mapfile -t patches < <(kernel_patches "$arch")
    stamp=$PIN_LINUX_SOURCE_VERSION
    [ ${#patches[@]} = 0 ] || stamp=$stamp-$(cat "${patches[@]}" | sha256sum | cut -c1-16)
    if [ ! -f "$work/.unpacked-$stamp" ]; then
        rm -rf "$work"; mkdir -p "$work"
        echo "==> unpacking $tarball into $work"
        tar -xf "$tarball" -C "$work" --strip-components=1
        for p in "${patches[@]}"; do
            echo "==> applying $(basename "$p")"
            patch -d "$work" -p1 --quiet --no-backup-if-mismatch <"$p" || die "kernel patch $p does not apply to $PIN_LINUX_SOURCE_PKG $PIN_LINUX_SOURCE_VERSION"
        done
        touch "$work/.unpacked-$stamp"
    fi
}

# patch_inputs ARCH: the patch globs that match anything, each with a leading space (manifest inputs).
patch_inputs() {
    local d
    for d in common "$1"; do
        compgen -G "$ROOT/scripts/kernel-patches/$d/*.patch" >/dev/null && printf ' %s' "scripts/kernel-patches/$d/*.patch"
    done
    return 0
}

# configure_kernel SRC MAKEARGS FRAGMENT...: tinyconfig, merge, olddefconfig, assert.
configure_kernel() {
    local src=$1; shift
    local -a makeargs; read -r -a makeargs <<<"$1"; shift
    make -C "$src" "${makeargs[@]}" -s tinyconfig
    "$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$@" >/dev/null
    make -C "$src" "${makeargs[@]}" -s olddefconfig
    assert_fragments kernel "$src/.config" "$@"
}

# build_kernel SRC MAKEARGS TARGET
build_kernel() {
    local src=$1 target=$3
    local -a makeargs; read -r -a makeargs <<<"$2"
    make -C "$src" "${makeargs[@]}" -j"$(nproc)" LOCALVERSION= "$target"
}

# check_x86_text_padding SRC: x86_64 aligns the entry text to 2 MiB on both sides, which leaves up
# to ~4 MiB of padding inside the text section; kernel-patches/x86_64/0004-free-text-padding.patch
# names it (__text_pad_N_start/end) and frees it at boot. Fail if the names are gone (a source bump
# that dropped the patch's effect), else report how much the guest gets back.
check_x86_text_padding() {
    local map=$1/System.map n start end total=0
    for n in 1 2 3; do
        start=$(awk -v s="__text_pad_${n}_start" '$3 == s {print $1}' "$map")
        end=$(awk -v s="__text_pad_${n}_end" '$3 == s {print $1}' "$map")
        if [ -z "$start" ] || [ -z "$end" ]; then
            die "$map has no __text_pad_${n}_start/end: kernel-patches/x86_64/0004-free-text-padding.patch did not take effect"
        fi
        # Whole pages only, as the kernel frees them.
        start=$(( (0x$start + 4095) / 4096 )); end=$(( 0x$end / 4096 ))
        [ "$end" -le "$start" ] || total=$(( total + (end - start) * 4 ))
    done
    echo "==> x86_64 text padding freed at boot: $total KiB"
}

# kernel_recipe ARCH "MAKEARGS" IMAGE_PATH CRATE RECIPE ARGS...: the whole recipe, shared by
# kvm-x86_64-build.sh and hvf-aarch64-build.sh. Options in ARGS:
#   --work DIR   kernel tree (default $TMPDIR/supermachine-kbuild-ARCH; reused when present)
#   --compression M  override the in-kernel compression: gzip|lz4|zstd|xz|none (measurement only)
#   --out DIR    write the payload elsewhere (measurement / reproducibility checks)
#   --no-record  do not touch the manifest
kernel_recipe() {
    local arch=$1 makeargs_words=$2 image_rel=$3 crate=$4 recipe=$5; shift 5
    local work=${TMPDIR:-/tmp}/supermachine-kbuild-$arch compression='' record=1
    local out=$ROOT/crates/$crate/payload default_out
    default_out=$out
    while [ $# -gt 0 ]; do
        case $1 in
            --work) work=$2; shift 2 ;;
            --compression) compression=$2; shift 2 ;;
            --out) out=$2; shift 2 ;;
            --no-record) record=0; shift ;;
            *) die "unknown argument $1 (see the header of $recipe)" ;;
        esac
    done
    require_pkg xz-utils "$PIN_XZ_VERSION"
    unpack_source "$work" "$arch"

    local -a fragments=("$ROOT"/scripts/kconfig/common/*.config "$ROOT"/scripts/kconfig/"$arch"/*.config)
    if [ -n "$compression" ]; then
        # Replace the committed choice (compression.config) with the one being measured.
        local -a kept=()
        local f
        for f in "${fragments[@]}"; do [ "$(basename "$f")" = compression.config ] || kept+=("$f"); done
        fragments=("${kept[@]}")
        local symbol=${compression^^}
        [ "$compression" != none ] || symbol=UNCOMPRESSED
        echo "CONFIG_KERNEL_$symbol=y" >"$work/compression-override.config"
        fragments+=("$work/compression-override.config")
    fi
    configure_kernel "$work" "$makeargs_words" "${fragments[@]}"
    build_kernel "$work" "$makeargs_words" "$(basename "$image_rel")"

    local image=$work/$image_rel release
    local -a makeargs; read -r -a makeargs <<<"$makeargs_words"
    release=$(make -C "$work" -s "${makeargs[@]}" LOCALVERSION= kernelrelease)
    mkdir -p "$out"
    # x86_64: the bzImage carries its kernel uncompressed (compression.config), so the crate's xz
    # gets the x86 branch filter (BCJ), which makes machine code compress ~9% better.
    xz_payload "$image" "$out/kernel.xz" "$arch"
    cp "$work/.config" "$out/kernel.config"
    [ "$out" != "$default_out" ] || cp "$work/.config" "$ROOT/scripts/kconfig/$arch.config"
    echo "==> $(basename "$image") $(stat -c %s "$image") bytes, kernel.xz $(stat -c %s "$out/kernel.xz") bytes, release $release"
    echo "    sha256 $(sha256sum "$image" | cut -d' ' -f1)"
    [ "$arch" != x86_64 ] || check_x86_text_padding "$work"
    [ "$record" = 1 ] || return 0
    python3 "$ROOT/scripts/lib/payload.py" record --manifest "$out/manifest.toml" \
        --name kernel --file kernel.xz \
        --source "Debian $PIN_LINUX_SOURCE_PKG $PIN_LINUX_SOURCE_VERSION (Linux $release)" \
        --toolchain "$KERNEL_TOOLCHAIN, xz-utils $PIN_XZ_VERSION" \
        --recipe "$recipe" \
        --inputs "$recipe scripts/lib/common.sh scripts/lib/kernel.sh scripts/lib/kconfig.sh scripts/lib/pins.sh scripts/kconfig/common/*.config scripts/kconfig/$arch/*.config$(patch_inputs "$arch")" \
        --extra "kernel_release=$release"
}
