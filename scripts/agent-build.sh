#!/usr/bin/env bash
# Builds the static guest agent (crates/supermachine-agent) reproducibly and records it as the
# `supermachine-agent` payload of the kernel crate for the architecture.
#
#   scripts/agent-build.sh [--arch x86_64|aarch64] [--target-dir DIR] [--no-record] [--out FILE]
#
# Reproducible: pinned rustc (checked), --locked, no incremental state, build paths remapped,
# symbols stripped, no build-id, fixed SOURCE_DATE_EPOCH, single-threaded xz. Building twice into
# different target dirs gives the same bytes (scripts/agent-build.sh --no-record --out X twice and
# compare; the bench and CI do this).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/pins.sh
. "$ROOT/scripts/lib/pins.sh"
# shellcheck source=lib/common.sh
. "$ROOT/scripts/lib/common.sh"

# --- pins of this recipe -------------------------------------------------------------------
PIN_AGENT_RUST_TOOLCHAIN=1.95.0
PIN_AGENT_RUSTC_VERSION='rustc 1.95.0 (59807616e 2026-04-14)'

ARCH=x86_64
TARGET_DIR=""
RECORD=1
OUT=""
while [ $# -gt 0 ]; do
    case "$1" in
        --arch) ARCH=$2; shift 2 ;;
        --arch=*) ARCH=${1#--arch=}; shift ;;
        --target-dir) TARGET_DIR=$2; shift 2 ;;
        --no-record) RECORD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done

case "$ARCH" in
    x86_64)
        TRIPLE=x86_64-unknown-linux-musl
        CRATE=supermachine-kernel-x86-64
        ;;
    aarch64)
        TRIPLE=aarch64-unknown-linux-musl
        CRATE=supermachine-kernel-aarch64
        # The host's cross gcc drives the link against Rust's self-contained musl objects.
        command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc missing (apt-get install gcc-aarch64-linux-gnu)"
        export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
        ;;
    *) die "unsupported --arch $ARCH (x86_64 or aarch64)" ;;
esac

CARGO=(cargo "+$PIN_AGENT_RUST_TOOLCHAIN")
have_rustc=$(rustc "+$PIN_AGENT_RUST_TOOLCHAIN" --version 2>/dev/null) || have_rustc=none
[ "$have_rustc" = "$PIN_AGENT_RUSTC_VERSION" ] || die "rustc is '$have_rustc', this recipe is pinned to '$PIN_AGENT_RUSTC_VERSION'
  fix: rustup toolchain install $PIN_AGENT_RUST_TOOLCHAIN && rustup target add --toolchain $PIN_AGENT_RUST_TOOLCHAIN $TRIPLE"
rustup target list --installed --toolchain "$PIN_AGENT_RUST_TOOLCHAIN" | grep -qx "$TRIPLE" \
    || die "the $TRIPLE target is not installed: rustup target add --toolchain $PIN_AGENT_RUST_TOOLCHAIN $TRIPLE"
require_pkg xz-utils "$PIN_XZ_VERSION"
if [ "$ARCH" = x86_64 ]; then
    # cc (gcc + binutils) links the x86_64 binary.
    require_pkg binutils "$PIN_BINUTILS_VERSION"
    require_pkg gcc-12 "$PIN_GCC_VERSION"
fi

TARGET_DIR=${TARGET_DIR:-$ROOT/target/agent-payload}
CARGO_HOME_DIR=${CARGO_HOME:-$HOME/.cargo}
RUSTUP_HOME_DIR=${RUSTUP_HOME:-$HOME/.rustup}
export SOURCE_DATE_EPOCH CARGO_INCREMENTAL=0 LC_ALL=C TZ=UTC
unset RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER CARGO_ENCODED_RUSTFLAGS || true
# Applied to the target crates only (--target is given), not to build scripts.
export RUSTFLAGS="--remap-path-prefix=$CARGO_HOME_DIR=/cargo --remap-path-prefix=$RUSTUP_HOME_DIR=/rustup \
--remap-path-prefix=$ROOT=/src -C strip=symbols -C relocation-model=static -C target-feature=+crt-static \
-C link-arg=-Wl,--build-id=none -C debuginfo=0"

echo "building supermachine-agent for $TRIPLE with $have_rustc" >&2
(cd "$ROOT" && "${CARGO[@]}" build --locked --quiet -p supermachine-agent --bin supermachine-agent \
    --profile guest --target "$TRIPLE" --target-dir "$TARGET_DIR")
BIN="$TARGET_DIR/$TRIPLE/guest/supermachine-agent"
[ -f "$BIN" ] || die "build produced no $BIN"
file "$BIN" | grep -q "statically linked" || die "$BIN is not statically linked: $(file "$BIN")"
size=$(stat -c %s "$BIN")
echo "supermachine-agent ($ARCH): $size bytes, sha256 $(sha256sum "$BIN" | cut -d' ' -f1)" >&2

if [ -n "$OUT" ]; then
    cp "$BIN" "$OUT"
fi
[ "$RECORD" = 1 ] || exit 0

PAYLOAD_DIR="$ROOT/crates/$CRATE/payload"
[ -d "$PAYLOAD_DIR" ] || die "$PAYLOAD_DIR does not exist"
xz_payload "$BIN" "$PAYLOAD_DIR/supermachine-agent.xz"
toolchain="$have_rustc ($TRIPLE, profile guest)"
if [ "$ARCH" = x86_64 ]; then
    toolchain="$toolchain, gcc-12 $PIN_GCC_VERSION, binutils $PIN_BINUTILS_VERSION"
else
    toolchain="$toolchain, $(aarch64-linux-gnu-gcc --version | head -1)"
fi
python3 "$ROOT/scripts/lib/payload.py" record \
    --manifest "$PAYLOAD_DIR/manifest.toml" \
    --name supermachine-agent \
    --file supermachine-agent.xz \
    --source "crates/supermachine-agent $(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1) (this repository), Rust crates pinned by Cargo.lock" \
    --toolchain "$toolchain, xz-utils $PIN_XZ_VERSION" \
    --recipe scripts/agent-build.sh \
    --inputs "scripts/agent-build.sh scripts/lib/pins.sh scripts/lib/common.sh Cargo.toml lock:supermachine-agent crates/supermachine-agent/src/**/*.rs crates/supermachine-agent/Cargo.toml crates/supermachine-agent-proto/src/**/*.rs crates/supermachine-agent-proto/Cargo.toml"
