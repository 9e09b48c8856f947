#!/usr/bin/env bash
# Builds init-oci (crates/supermachine-init, the PID-1 shim that boots an OCI image)
# reproducibly and records it as the `init-oci` payload of the arch crate.
#
#   scripts/init-build.sh [--arch x86_64|aarch64] [--target-dir DIR] [--no-record] [--out FILE]
#
# Building twice into different target dirs gives the same bytes (--no-record --out X twice and
# compare). Recipe details: scripts/lib/rust-guest.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/rust-guest.sh"

rust_guest_recipe supermachine-init init-oci scripts/init-build.sh \
    "lock:supermachine-init crates/supermachine-init/Cargo.toml crates/supermachine-init/src/**/*.rs crates/supermachine-guest-sys/Cargo.toml crates/supermachine-guest-sys/src/**/*.rs crates/supermachine-agent-proto/Cargo.toml crates/supermachine-agent-proto/src/**/*.rs" \
    "$@"
