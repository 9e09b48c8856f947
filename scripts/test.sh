#!/usr/bin/env bash
# The test command (CI runs it through .ci/run). In order: install prerequisites; check the
# payload manifests and that the README's comparison table is the last benchmark run's; lint
# (scripts/lint.sh: rustfmt, clippy -D warnings, shellcheck); every test, including the QEMU
# boots that plain `cargo test` lists as ignored (with CI=true a missing tool fails instead of
# skipping); a short agent fuzz run; the quick workload tier on our x86_64 kernel (a real Debian
# root; `scripts/workload-test.sh --tier full` is the long one); the tools/ tests; the README's
# "Use it with supermachine" block, built (scripts/check-supermachine-compat.sh); the quick image
# conformance tier (images the runtime's own code bakes; `--arch all --tier full` by hand); guest
# networking through the runtime's own muxer (scripts/tsi-test.sh; `--arch all` by hand); the
# Rosetta path on aarch64 (scripts/rosetta-test.sh); the runtime's HVF guest, published pieces
# against ours (scripts/hvf-diff.sh); the x86_64 kernel through the runtime's own KVM loader
# (scripts/kvm-entry-test.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/install-prereqs.sh
echo "==> payload manifests"
python3 scripts/lib/payload.py check
python3 scripts/lib/docs_check.py
echo "==> the README's comparison table is the last benchmark run's (scripts/bench/readme_table.py)"
python3 scripts/bench/readme_table.py --check
echo "==> lint: rustfmt, clippy -D warnings, shellcheck (scripts/lint.sh)"
scripts/lint.sh
# Tests that need a tool or root are #[ignore = "needs ..."] (a plain `cargo test` reports them
# as ignored, not as passes); here they run (--include-ignored) wherever the tools exist, and
# always with CI=true, where a missing tool is a failure.
vm_tools=(qemu-system-x86_64 qemu-system-aarch64 vhost-device-vsock mksquashfs unshare setpriv)
missing=()
for t in "${vm_tools[@]}"; do command -v "$t" >/dev/null || missing+=("$t"); done
test_args=()
if [ ${#missing[@]} -eq 0 ] || [ "${CI:-}" = true ]; then
    test_args+=(--include-ignored)
    [ ${#missing[@]} -eq 0 ] || echo "CI=true: the ignored tests run although ${missing[*]} is missing (they will fail)"
else
    echo "NOTE: ${missing[*]} not found: the VM tests stay ignored (scripts/install-prereqs.sh installs them)"
fi
if [ "$(id -u)" != 0 ]; then
    echo "NOTE: not root: the *_as_root tests are skipped"
    test_args+=(--skip _as_root)
fi
# The Rosetta test needs an interpreter fetched by scripts/rosetta-test.sh (below).
test_args+=(--skip aarch64_rosetta_runs_an_amd64_program)
echo "==> cargo test --workspace -- ${test_args[*]}"
case " $* " in
    *" -- "*) cargo test --workspace --locked "$@" "${test_args[@]}" ;;
    *) cargo test --workspace --locked "$@" -- "${test_args[@]}" ;;
esac
echo "==> agent session fuzzer, short run (scripts/agent-fuzz.sh)"
scripts/agent-fuzz.sh --sessions 2000 --seconds 45 --batch 500 --seed 1
echo "==> workload conformance, quick tier (scripts/workload-test.sh)"
scripts/workload-test.sh --tier quick --kernel ours
echo "==> unit tests of the test-only tools that link the runtime (tools/: runtime-bake, tsi-backend)"
cargo test --locked --manifest-path tools/Cargo.toml
echo "==> the README's 'Use it with supermachine' block builds the runtime (scripts/check-supermachine-compat.sh)"
scripts/check-supermachine-compat.sh
echo "==> image conformance, quick tier (scripts/image-test.sh)"
if [ "$(id -u)" = 0 ]; then
    scripts/image-test.sh --arch x86_64 --tier quick
elif [ "${CI:-}" = true ]; then
    echo "CI=true: scripts/image-test.sh needs root (device nodes and owners in its test trees)" >&2
    exit 1
else
    echo "NOTE: not root: scripts/image-test.sh skipped (it makes device nodes and owned files)"
fi
echo "==> guest networking (TSI) through the runtime's own muxer (scripts/tsi-test.sh)"
if [ "$(id -u)" = 0 ]; then
    scripts/tsi-test.sh --arch x86_64
elif [ "${CI:-}" = true ]; then
    echo "CI=true: scripts/tsi-test.sh needs root (a network namespace for its host servers)" >&2
    exit 1
else
    echo "NOTE: not root: scripts/tsi-test.sh skipped (it makes a network namespace)"
fi
echo "==> the Rosetta path on aarch64: virtio-fs share, binfmt_misc, an amd64 program (scripts/rosetta-test.sh)"
if [ "$(id -u)" = 0 ]; then
    scripts/rosetta-test.sh
elif [ "${CI:-}" = true ]; then
    echo "CI=true: scripts/rosetta-test.sh needs root (QEMU's virtiofsd)" >&2
    exit 1
else
    echo "NOTE: not root: scripts/rosetta-test.sh skipped (QEMU's virtiofsd needs root)"
fi
echo "==> the runtime's HVF guest, published pieces against ours (scripts/hvf-diff.sh; both crosses: --full)"
scripts/hvf-diff.sh
echo "==> the x86_64 kernel through the runtime's own KVM loader (scripts/kvm-entry-test.sh)"
scripts/kvm-entry-test.sh
