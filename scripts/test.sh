#!/usr/bin/env bash
# The test command: install prerequisites, check payload manifests, run every test
# (including the QEMU boots; with CI=true a missing tool fails instead of skipping), then the
# quick tier of the workload conformance suite on our x86_64 kernel (a real Debian root;
# the full suite against the published kernel is `scripts/workload-test.sh --tier full`).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/install-prereqs.sh
echo "==> payload manifests"
python3 scripts/lib/payload.py check
echo "==> cargo test --workspace"
cargo test --workspace --locked "$@"
echo "==> agent session fuzzer, short run (scripts/agent-fuzz.sh)"
scripts/agent-fuzz.sh --sessions 2000 --seconds 45 --batch 500 --seed 1
echo "==> workload conformance, quick tier (scripts/workload-test.sh)"
scripts/workload-test.sh --tier quick --kernel ours
