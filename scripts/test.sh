#!/usr/bin/env bash
# The test command: install prerequisites, check payload manifests, run every test
# (including the QEMU boots; with CI=true a missing tool fails instead of skipping).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/install-prereqs.sh
echo "==> payload manifests"
python3 scripts/lib/payload.py check
echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"
