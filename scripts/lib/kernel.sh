# Shared kernel recipe: tinyconfig + fragments, asserted, pinned, reproducible.
# Sourced by scripts/kvm-x86_64-build.sh and scripts/hvf-aarch64-build.sh.
# shellcheck shell=bash
# Needs scripts/lib/common.sh.

# unpack_source WORKDIR ARCH: extract the pinned linux-source tarball and apply
# scripts/kernel-patches/ARCH/*.patch in name order. The tree is reused while the source pin and
# the patch set are unchanged; a changed patch set re-extracts it (patches never stack up).
unpack_source() {
    local work=$1 arch=$2 tarball=/usr/src/linux-source-6.12.tar.xz
    require_pkg "$PIN_LINUX_SOURCE_PKG" "$PIN_LINUX_SOURCE_VERSION"
    local -a patches=()
    local p stamp
    for p in "$ROOT/scripts/kernel-patches/$arch"/*.patch; do [ -e "$p" ] && patches+=("$p"); done
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

# patch_inputs ARCH: " scripts/kernel-patches/ARCH/*.patch" when there are any (manifest inputs).
patch_inputs() {
    compgen -G "$ROOT/scripts/kernel-patches/$1/*.patch" >/dev/null && printf ' %s' "scripts/kernel-patches/$1/*.patch"
    return 0
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

# report_x86_text_layout SRC: how close the code is to the next 2 MiB boundary. x86_64 places the
# entry text on a 2 MiB boundary (PTI maps it with large pages), and nothing frees the padding in
# front of it: code that ends just past a boundary keeps up to 2 MiB of RAM reserved for good.
report_x86_text_layout() {
    local map=$1/System.map code_end entry
    code_end=$(awk '$3 == "__static_call_text_end" {print $1}' "$map")
    entry=$(awk '$3 == "srso_alias_untrain_ret" || $3 == "__entry_text_start" {print $1}' "$map" | sort | head -1)
    [ -n "$code_end" ] && [ -n "$entry" ] || return 0
    local pad=$(( (0x$entry - 0x$code_end) / 1024 ))
    echo "==> x86_64 text layout: code ends $(( (0x$code_end & 0x1fffff) / 1024 )) KiB into a 2 MiB page;" \
         "entry-text padding $pad KiB (resident for good)"
    if [ "$pad" -gt 1024 ]; then
        echo "warning: the code just crossed a 2 MiB boundary: $pad KiB of RAM stays reserved as padding;" \
             "$(( (0x$code_end & 0x1fffff) / 1024 + 1 )) KiB less code would give it back (docs/KERNEL.md, Memory)" >&2
    fi
}

# kernel_recipe ARCH "MAKEARGS" IMAGE_PATH CRATE RECIPE ARGS...: the whole recipe, shared by
# kvm-x86_64-build.sh and hvf-aarch64-build.sh. Options in ARGS:
#   --work DIR   kernel tree (default $TMPDIR/supermachine-kbuild-ARCH; reused when present)
#   --compression M  override the in-kernel compression (measurement only)
#   --out DIR    write the payload elsewhere (measurement / reproducibility checks)
#   --no-record  do not touch the manifest
kernel_recipe() {
    local arch=$1 makeargs=$2 image_rel=$3 crate=$4 recipe=$5; shift 5
    local work=${TMPDIR:-/tmp}/supermachine-kbuild-$arch compression= record=1
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
        echo "CONFIG_KERNEL_$(echo "$compression" | tr a-z A-Z)=y" >"$work/compression-override.config"
        fragments+=("$work/compression-override.config")
    fi
    configure_kernel "$work" "$makeargs" "${fragments[@]}"
    build_kernel "$work" "$makeargs" "$(basename "$image_rel")"

    local image=$work/$image_rel release
    # shellcheck disable=SC2086
    release=$(make -C "$work" -s $makeargs LOCALVERSION= kernelrelease)
    mkdir -p "$out"
    xz_payload "$image" "$out/kernel.xz"
    cp "$work/.config" "$out/kernel.config"
    [ "$out" != "$default_out" ] || cp "$work/.config" "$ROOT/scripts/kconfig/$arch.config"
    echo "==> $(basename "$image") $(stat -c %s "$image") bytes, kernel.xz $(stat -c %s "$out/kernel.xz") bytes, release $release"
    echo "    sha256 $(sha256sum "$image" | cut -d' ' -f1)"
    [ "$arch" != x86_64 ] || report_x86_text_layout "$work"
    [ "$record" = 1 ] || return 0
    python3 "$ROOT/scripts/lib/payload.py" record --manifest "$out/manifest.toml" \
        --name kernel --file kernel.xz \
        --source "Debian $PIN_LINUX_SOURCE_PKG $PIN_LINUX_SOURCE_VERSION (Linux $release)" \
        --toolchain "$KERNEL_TOOLCHAIN, xz-utils $PIN_XZ_VERSION" \
        --recipe "$recipe" \
        --inputs "$recipe scripts/lib/common.sh scripts/lib/kernel.sh scripts/lib/pins.sh scripts/kconfig/common/*.config scripts/kconfig/$arch/*.config$(patch_inputs "$arch")" \
        --extra "kernel_release=$release"
}
