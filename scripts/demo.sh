#!/usr/bin/env bash
# Boot the bundled guest under QEMU (TCG) and run a command in it through the agent.
#
#   scripts/demo.sh                    # self-check: uname, kernel config, file round trip
#   scripts/demo.sh uname -a           # any command
#   scripts/demo.sh --arch aarch64 uname -m
#   scripts/demo.sh --mem 32 cat /proc/meminfo    # a small guest (--cmdline adds kernel parameters)
#
# Installs what is missing first (QEMU, squashfs-tools, vhost-device-vsock) and says so.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/install-prereqs.sh"
cargo build -q --release -p supermachine-guest-harness --bin demo --manifest-path "$ROOT/Cargo.toml"
exec "$ROOT/target/release/demo" "$@"
