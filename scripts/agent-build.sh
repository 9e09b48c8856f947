#!/usr/bin/env bash
# Builds the static guest agent (crates/supermachine-agent) reproducibly and records it as the
# `supermachine-agent` payload of the arch crate.
#
#   scripts/agent-build.sh [--arch x86_64|aarch64] [--target-dir DIR] [--no-record] [--out FILE]
#
# Building twice into different target dirs gives the same bytes (--no-record --out X twice and
# compare). Recipe details: scripts/lib/rust-guest.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/scripts/lib/pins.sh"
. "$ROOT/scripts/lib/common.sh"
. "$ROOT/scripts/lib/rust-guest.sh"

rust_guest_recipe supermachine-agent supermachine-agent scripts/agent-build.sh \
    "lock:supermachine-agent crates/supermachine-agent/Cargo.toml crates/supermachine-agent/src/**/*.rs crates/supermachine-agent-proto/Cargo.toml crates/supermachine-agent-proto/src/**/*.rs crates/supermachine-guest-sys/Cargo.toml crates/supermachine-guest-sys/src/**/*.rs" \
    "$@"
