# Shared recipe for the static Rust guest programs (agent, init-oci): pinned rustc, musl,
# reproducible flags, xz, manifest entry. Sourced by scripts/agent-build.sh and
# scripts/init-build.sh after scripts/lib/pins.sh and scripts/lib/common.sh.
# shellcheck shell=bash

# The Rust pins live here, not in scripts/lib/pins.sh: only the Rust recipes hash this file, so
# bumping the toolchain asks for an agent/init-oci rebuild but not a kernel or busybox one.
PIN_RUST_TOOLCHAIN=1.95.0
PIN_RUSTC_VERSION='rustc 1.95.0 (59807616e 2026-04-14)'

# rust_guest_recipe PACKAGE BINARY RECIPE "INPUTS" ARGS...
#   ARGS: [--arch x86_64|aarch64] [--target-dir DIR] [--no-record] [--out FILE]
# Builds BINARY of PACKAGE with --profile guest for <arch>-unknown-linux-musl, then (unless
# --no-record) writes payload/BINARY.xz of the arch crate and records it with INPUTS.
# Reproducible: pinned rustc (checked), --locked, no incremental state, build paths remapped,
# symbols stripped, no build-id, fixed SOURCE_DATE_EPOCH, single-threaded xz.
rust_guest_recipe() {
    local package=$1 binary=$2 recipe=$3 inputs=$4; shift 4
    local arch=x86_64 target_dir='' record=1 out=''
    while [ $# -gt 0 ]; do
        case "$1" in
            --arch) arch=$2; shift 2 ;;
            --arch=*) arch=${1#--arch=}; shift ;;
            --target-dir) target_dir=$2; shift 2 ;;
            --no-record) record=0; shift ;;
            --out) out=$2; shift 2 ;;
            -h|--help) sed -n '2,/^set -e/p' "$ROOT/$recipe" | grep '^#'; return 0 ;;
            *) die "unknown argument $1 (see the header of $recipe)" ;;
        esac
    done

    local triple crate toolchain
    case "$arch" in
        x86_64)
            triple=x86_64-unknown-linux-musl; crate=supermachine-kernel-x86-64
            require_pkg binutils "$PIN_BINUTILS_VERSION"
            require_pkg gcc-12 "$PIN_GCC_VERSION"
            toolchain="gcc-12 $PIN_GCC_VERSION, binutils $PIN_BINUTILS_VERSION"
            ;;
        aarch64)
            triple=aarch64-unknown-linux-musl; crate=supermachine-kernel-aarch64
            # The cross gcc drives the link against Rust's self-contained musl objects.
            require_pkg gcc-12-aarch64-linux-gnu "$PIN_GCC_AARCH64_VERSION"
            require_pkg binutils-aarch64-linux-gnu "$PIN_BINUTILS_AARCH64_VERSION"
            export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
            toolchain="gcc-12-aarch64-linux-gnu $PIN_GCC_AARCH64_VERSION, binutils-aarch64-linux-gnu $PIN_BINUTILS_AARCH64_VERSION"
            ;;
        *) die "unsupported --arch $arch (x86_64 or aarch64)" ;;
    esac
    require_pkg xz-utils "$PIN_XZ_VERSION"
    local have_rustc
    have_rustc=$(rustc "+$PIN_RUST_TOOLCHAIN" --version 2>/dev/null) || have_rustc=none
    [ "$have_rustc" = "$PIN_RUSTC_VERSION" ] || die "rustc is '$have_rustc', this recipe is pinned to '$PIN_RUSTC_VERSION'
  fix: rustup toolchain install $PIN_RUST_TOOLCHAIN && rustup target add --toolchain $PIN_RUST_TOOLCHAIN $triple"
    rustup target list --installed --toolchain "$PIN_RUST_TOOLCHAIN" | grep -qx "$triple" \
        || die "the $triple target is not installed: rustup target add --toolchain $PIN_RUST_TOOLCHAIN $triple"
    rustup component list --installed --toolchain "$PIN_RUST_TOOLCHAIN" | grep -q '^rust-src' \
        || die "rust-src is not installed: rustup component add --toolchain $PIN_RUST_TOOLCHAIN rust-src"

    target_dir=${target_dir:-$ROOT/target/$binary-payload}
    local cargo_home=${CARGO_HOME:-$HOME/.cargo} rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
    export SOURCE_DATE_EPOCH CARGO_INCREMENTAL=0 LC_ALL=C TZ=UTC
    unset RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_ENCODED_RUSTFLAGS || true
    # Applied to the target crates only (--target is given), not to build scripts.
    export RUSTFLAGS="--remap-path-prefix=$cargo_home=/cargo --remap-path-prefix=$rustup_home=/rustup \
--remap-path-prefix=$ROOT=/src -C strip=symbols -C relocation-model=static -C target-feature=+crt-static \
-C link-arg=-Wl,--build-id=none -C debuginfo=0"

    # std is rebuilt from the pinned toolchain's own rust-src without its `backtrace` feature:
    # a guest program never prints a symbolised backtrace, and gimli/addr2line/demangling are
    # ~40% of a small static binary. -Zbuild-std is unstable, so RUSTC_BOOTSTRAP=1 lets the
    # pinned stable toolchain use it. Panics still run our hook (panic=abort, not immediate).
    echo "building $binary for $triple with $have_rustc (std without backtrace)" >&2
    (cd "$ROOT" && RUSTC_BOOTSTRAP=1 cargo "+$PIN_RUST_TOOLCHAIN" build --locked --quiet -p "$package" \
        --bin "$binary" --profile guest --target "$triple" --target-dir "$target_dir" \
        -Zbuild-std=std,panic_abort -Zbuild-std-features=)
    local bin=$target_dir/$triple/guest/$binary
    [ -f "$bin" ] || die "build produced no $bin"
    file "$bin" | grep -q "statically linked" || die "$bin is not statically linked: $(file "$bin")"
    echo "$binary ($arch): $(stat -c %s "$bin") bytes, sha256 $(sha256sum "$bin" | cut -d' ' -f1)" >&2
    [ -z "$out" ] || cp "$bin" "$out"
    [ "$record" = 1 ] || return 0

    local payload_dir=$ROOT/crates/$crate/payload version
    [ -d "$payload_dir" ] || die "$payload_dir does not exist"
    # x86_64 gets the x86 branch filter, as the kernel and busybox do (scripts/busybox-build.sh).
    xz_payload "$bin" "$payload_dir/$binary.xz" "$arch"
    version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
    python3 "$ROOT/scripts/lib/payload.py" record \
        --manifest "$payload_dir/manifest.toml" --name "$binary" --file "$binary.xz" \
        --source "crates/$package $version (this repository), Rust crates pinned by Cargo.lock" \
        --toolchain "$have_rustc + rust-src, -Zbuild-std without backtrace ($triple, profile guest), $toolchain, xz-utils $PIN_XZ_VERSION" \
        --recipe "$recipe" \
        --inputs "$recipe scripts/lib/pins.sh scripts/lib/common.sh scripts/lib/rust-guest.sh Cargo.toml $inputs"
}
