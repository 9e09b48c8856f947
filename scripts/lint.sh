#!/usr/bin/env bash
# The rules the workspace declares, enforced (part of scripts/test.sh, so CI and developers run
# the same): rustfmt (rustfmt.toml) over the main workspace, tools/ and fuzz/; clippy on every
# target with warnings as errors (the lints Cargo.toml declares, e.g. undocumented_unsafe_blocks);
# and the shellcheck linter on every shell script, following sourced files. A finding fails.
#
#   scripts/lint.sh [--fix]     --fix runs cargo fmt instead of checking it
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
fix=0
[ "${1:-}" != --fix ] || fix=1
for c in rustfmt clippy; do
    cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1 || rustup component add "$c"
done
command -v shellcheck >/dev/null || { echo "lint.sh: shellcheck is needed (apt-get install shellcheck)" >&2; exit 2; }

status=0
for manifest in Cargo.toml tools/Cargo.toml fuzz/Cargo.toml; do
    if [ $fix = 1 ]; then
        cargo fmt --all --manifest-path "$manifest"
    elif ! cargo fmt --all --check --manifest-path "$manifest" >/dev/null; then
        echo "lint: cargo fmt: $manifest's workspace is not formatted ($(cargo fmt --all --check --manifest-path "$manifest" | grep -c '^Diff in') hunks; fix: scripts/lint.sh --fix)" >&2
        status=1
    fi
done
echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --quiet --locked --workspace --all-targets -- -D warnings || status=1
cargo clippy --quiet --locked --manifest-path tools/Cargo.toml --workspace --all-targets -- -D warnings || status=1
echo "==> shellcheck -x"
mapfile -t scripts < <(git ls-files '*.sh' .ci/run)
shellcheck -x "${scripts[@]}" || status=1
[ $status = 0 ] && echo "lint: clean" || echo "lint: findings above" >&2
exit $status
