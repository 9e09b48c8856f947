#!/usr/bin/env bash
# Does the published `supermachine` runtime compile against our kernel crates?
#
# Creates a throwaway crate outside the workspace (default: target/compat-check, its own
# [workspace] and target dir) that depends on `supermachine` from crates.io and redirects
# `supermachine-kernel` and its arch crates to this repository with [patch.crates-io], then runs
# `cargo check`. Needs network (crates.io) and downloads/compiles a lot: not part of `cargo test`.
#
# Usage: scripts/check-supermachine-compat.sh [SUPERMACHINE_VERSION_REQ...]
#   default requirements tried in order: =0.7.108, then 0.7 (newest 0.7.x) if the first
#   cannot be resolved
# Env: COMPAT_DIR (work folder), CARGO (cargo binary), KEEP_GOING=1 (try every requirement).
# Exit status: 0 if one requirement compiled, 1 otherwise. The log of each attempt is kept in
# $COMPAT_DIR/check-<req>.log.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo="${CARGO:-cargo}"
dir="${COMPAT_DIR:-$repo/target/compat-check}"
reqs=("$@")
[ ${#reqs[@]} -gt 0 ] || reqs=("=0.7.108" "0.7")

# The family crates that are workspace members (an excluded folder, e.g. an arch crate still
# waiting for its payloads, cannot be loaded as a path dependency).
meta="$("$cargo" metadata --no-deps --format-version 1 --manifest-path "$repo/Cargo.toml")"
patches=""
patched=""
for name in supermachine-kernel supermachine-kernel-x86-64 supermachine-kernel-aarch64; do
    if grep -q "\"manifest_path\":\"$repo/crates/$name/Cargo.toml\"" <<<"$meta"; then
        patches+="$name = { path = \"$repo/crates/$name\" }"$'\n'
        patched+=" $name"
    else
        echo "note: $name is not a workspace member here; not patched" >&2
    fi
done

mkdir -p "$dir/src"
# `cargo check` of the dependency graph is the point: main needs no API of supermachine.
echo 'fn main() {}' > "$dir/src/main.rs"

status=1
for req in "${reqs[@]}"; do
    cat > "$dir/Cargo.toml" <<EOF
[package]
name = "supermachine-compat-check"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
supermachine = "$req"

[patch.crates-io]
$patches
EOF
    rm -f "$dir/Cargo.lock"
    log="$dir/check-${req//[^0-9A-Za-z.]/_}.log"
    echo "== supermachine $req, patched:$patched"
    start=$(date +%s)
    if (cd "$dir" && "$cargo" check --color never 2>&1) > "$log"; then
        resolved="$(grep -A1 '^name = "supermachine"$' "$dir/Cargo.lock" | sed -n 's/^version = "\(.*\)"/\1/p')"
        kernel="$(grep -A2 '^name = "supermachine-kernel"$' "$dir/Cargo.lock" | grep -c '^source' || true)"
        if [ "$kernel" != "0" ]; then
            echo "FAILED: supermachine-kernel still comes from a registry (patch not applied?)" >&2
        else
            echo "OK: supermachine $resolved compiles against our crates ($(( $(date +%s) - start )) s; log $log)"
            status=0
        fi
        grep -i 'patch.*was not used' "$log" >&2 || true
        [ "${KEEP_GOING:-0}" = 1 ] || break
    else
        echo "FAILED: supermachine $req (log $log); the errors:" >&2
        grep -E '^error|^ *--> |^[0-9 ]+\| .*supermachine_kernel|^Caused by|^warning: Patch' "$log" | head -60 >&2 || true
        # Only a requirement that cannot be resolved moves on to the next one.
        grep -qE 'failed to select a version|no matching package' "$log" || [ "${KEEP_GOING:-0}" = 1 ] || break
    fi
done
exit $status
