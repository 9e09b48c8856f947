# The published supermachine-kernel crates, fetched by cargo into a throwaway workspace (never
# a member of ours, so normal builds do not download them) and their payloads decoded.
# Sourced by scripts/bench.sh and scripts/workload-test.sh.
# shellcheck shell=bash

UPV=${UPV:-0.7.70}

# upstream_fetch WORKSPACE METADATA_JSON: cargo fetch of the published family; metadata for
# upstream_src goes to METADATA_JSON.
upstream_fetch() {
    local ws=$1 meta=$2
    mkdir -p "$ws/src"
    cat >"$ws/Cargo.toml" <<TOML
[package]
name = "bench-upstream"
version = "0.0.0"
edition = "2021"
publish = false

# Not a member of the supermachine-kernel workspace: only here so cargo fetches the published crates.
[workspace]

[dependencies]
supermachine-kernel = "=$UPV"
supermachine-kernel-x86-64 = "=$UPV"
supermachine-kernel-aarch64 = "=$UPV"
TOML
    : >"$ws/src/lib.rs"
    (cd "$ws" && "${CARGO:-cargo}" fetch --quiet)
    (cd "$ws" && "${CARGO:-cargo}" metadata --offline --format-version 1) >"$meta"
}

# upstream_src METADATA_JSON CRATE: the unpacked source folder of CRATE at $UPV.
upstream_src() {
    python3 - "$1" "$2" "$UPV" <<'PY'
import json, os, sys
m = json.load(open(sys.argv[1]))
print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == sys.argv[2] and p["version"] == sys.argv[3]))
PY
}

# decode_payloads SRC_DIR OUT_DIR: every SRC_DIR/*.xz decoded (and made executable) into OUT_DIR.
decode_payloads() {
    local x n
    rm -rf "$2"; mkdir -p "$2"
    for x in "$1"/*.xz; do
        n=$(basename "$x" .xz); xz -dc "$x" >"$2/$n"; chmod +x "$2/$n"
    done
}
