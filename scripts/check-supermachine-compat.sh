#!/usr/bin/env bash
# The README's "Use it with supermachine" block, run: does the published `supermachine` runtime
# build against our kernel crates the way the README tells its users to point it at them?
#
# Takes the ```toml block after the README's `use-with-supermachine` marker, replaces its
# placeholder path (/path/to/supermachine-kernel) with this checkout, writes it into a throwaway
# crate outside the workspace (default target/compat-check, its own [workspace]) and runs
# `cargo check`; then every patched crate must resolve to this checkout, not to crates.io.
# Compiled dependencies are shared with tools/ (same target folder, its lock file as the start),
# which builds the same runtime. Needs crates.io (the runtime and its dependencies).
#
#   scripts/check-supermachine-compat.sh
#
# Env: COMPAT_DIR (work folder), CARGO (cargo binary). Exit status 1 on any failure; the build
# log is kept in $COMPAT_DIR/check.log.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo="${CARGO:-cargo}"
dir="${COMPAT_DIR:-$repo/target/compat-check}"
die() { echo "check-supermachine-compat: $*" >&2; exit 1; }

block=$(awk '/<!-- use-with-supermachine/ {m=1; next} m && /^```toml/ {b=1; next} b && /^```/ {exit} b {print}' "$repo/README.md")
[ -n "$block" ] || die "README.md has no \`\`\`toml block after a <!-- use-with-supermachine --> marker"
grep -q '^\[patch.crates-io\]' <<<"$block" || die "the README block has no [patch.crates-io] table"
block=${block//\/path\/to\/supermachine-kernel/$repo}
patched=$(sed -n 's/^\(supermachine-kernel[a-z0-9-]*\) *=.*path *=.*/\1/p' <<<"$block")
[ -n "$patched" ] || die "the README block patches no supermachine-kernel crate by path"

mkdir -p "$dir/src"
echo 'fn main() {}' >"$dir/src/main.rs"
{
    printf '[package]\nname = "supermachine-compat-check"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[workspace]\n\n'
    printf '%s\n' "$block"
} >"$dir/Cargo.toml"
cp "$repo/tools/Cargo.lock" "$dir/Cargo.lock"
log=$dir/check.log
echo "== the README's supermachine block: cargo check in $dir (patched: ${patched//$'\n'/ })"
start=$(date +%s)
if ! (cd "$dir" && CARGO_TARGET_DIR="$repo/tools/target" "$cargo" check --color never 2>&1) >"$log"; then
    grep -E '^(error|warning: Patch)|^ *--> |^Caused by' "$log" | head -40 >&2 || true
    die "supermachine did not build against our crates (log $log)"
fi
! grep -i 'patch.*was not used' "$log" >&2 || die "a patch in the README block was not used (log $log)"
for name in $patched; do
    # A crate from a registry has a `source` line in its lock entry; ours (a path) has none.
    entry=$(awk -v n="$name" '$0 == "name = \"" n "\"" {p=1} p && /^$/ {exit} p' "$dir/Cargo.lock")
    [ -n "$entry" ] || continue  # the other arch's crate is in the lock file only when selected
    ! grep -q '^source' <<<"$entry" || die "$name still comes from a registry: the patch did not apply"
done
runtime=$(awk '$0 == "name = \"supermachine\"" {getline; print $3}' "$dir/Cargo.lock" | tr -d '"')
echo "OK: supermachine $runtime builds against this checkout's crates ($(( $(date +%s) - start )) s)"
