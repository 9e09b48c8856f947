#!/usr/bin/env bash
# Build cost of our kernel crates for a consumer, side by side with the published
# supermachine-kernel 0.7.70, in the same run.
#
# Two throwaway consumer workspaces (each its own [workspace] and target dir) under $BENCH_DIR
# (default target/bench-build): `ours` depends on crates/supermachine-kernel by path, `upstream`
# on supermachine-kernel =0.7.70 from crates.io. Dependencies are fetched first, so no network
# time is measured. Then, RUNS times, interleaved (ours, upstream, ours, …):
#   * cold build: `cargo build` (profile $PROFILE) after deleting the target dir — wall time;
#   * build-script run time: the `run-custom-build` units of the supermachine-kernel* packages,
#     read from cargo's own `--timings` report of that same build (stable cargo, HTML report
#     with an embedded JSON unit table).
# Prints a markdown table (min / median) and writes the raw numbers as JSON.
#
# Usage: scripts/bench-build.sh            env: RUNS (3), PROFILE (dev|release, dev),
#        BENCH_DIR, JSON (default $BENCH_DIR/bench-build.json), UPSTREAM_VERSION (=0.7.70)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cargo="${CARGO:-cargo}"
runs="${RUNS:-3}"
profile="${PROFILE:-dev}"
bench="${BENCH_DIR:-$repo/target/bench-build}"
json="${JSON:-$bench/bench-build.json}"
upstream_version="${UPSTREAM_VERSION:-=0.7.70}"
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
# Our build scripts honour these; a stray one would change what is measured.
for v in $(env | sed -n 's/^\(SUPERMACHINE_[A-Z0-9_]*_PATH\)=.*/\1/p'); do unset "$v"; done

command -v python3 >/dev/null || { echo "python3 is needed to read cargo's timings report" >&2; exit 2; }
command -v xz >/dev/null || echo "note: no xz on PATH: the upstream crate's build script needs it" >&2

make_ws() { # name dependency-line
    local d="$bench/$1"
    mkdir -p "$d/src"
    cat > "$d/Cargo.toml" <<EOF
[package]
name = "bench-consumer-$1"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
$2
EOF
    cat > "$d/src/main.rs" <<'EOF'
fn main() {
    println!("{}", supermachine_kernel::KERNEL_LEN + supermachine_kernel::BUSYBOX_BYTES.len());
}
EOF
}
make_ws ours "supermachine-kernel = { path = \"$repo/crates/supermachine-kernel\" }"
make_ws upstream "supermachine-kernel = \"$upstream_version\""
[ -f "$repo/Cargo.lock" ] && cp "$repo/Cargo.lock" "$bench/ours/Cargo.lock"
for w in ours upstream; do
    (cd "$bench/$w" && "$cargo" fetch --quiet)
done

profile_flag=()
[ "$profile" = release ] && profile_flag=(--release)

# One cold build; prints "<wall seconds> <build-script seconds> <payload bytes>".
cold_build() {
    local d="$bench/$1"
    rm -rf "$d/target"
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$d" && "$cargo" build --offline --quiet --timings "${profile_flag[@]}" --color never) >"$d/build.log" 2>&1 \
        || { cat "$d/build.log" >&2; echo "cold build of $1 failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    local out_dir=debug; [ "$profile" = release ] && out_dir=release
    local payload; payload="$("$d/target/$out_dir/bench-consumer-$1")"
    python3 - "$d/target/cargo-timings/cargo-timing.html" "$t0" "$t1" "$payload" <<'EOF'
import json, re, sys
html = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r"const UNIT_DATA = (\[.*?\]);\s*\n", html, re.S)
if not m:
    sys.exit("no UNIT_DATA in cargo's timings report (format changed?)")
units = json.loads(m.group(1))
bs = sum(u["duration"] for u in units
         if u["name"].startswith("supermachine-kernel") and u.get("mode") == "run-custom-build")
print(f"{float(sys.argv[3]) - float(sys.argv[2]):.2f} {bs:.2f} {sys.argv[4]}")
EOF
}

declare -A wall script
for i in $(seq 1 "$runs"); do
    for w in ours upstream; do
        read -r t s p < <(cold_build "$w")
        wall[$w]+="$t "
        script[$w]+="$s "
        echo "run $i $w: cold build ${t}s, build scripts ${s}s (payload check value $p)" >&2
    done
done

python3 - "$json" "$profile" "$runs" "$upstream_version" "$(rustc --version)" \
    "${wall[ours]}" "${script[ours]}" "${wall[upstream]}" "${script[upstream]}" <<'EOF'
import json, statistics, sys
path, profile, runs, upv, rustc = sys.argv[1:6]
vals = [list(map(float, s.split())) for s in sys.argv[6:10]]
names = [("ours (path)", vals[0], vals[1]), (f"supermachine-kernel {upv.lstrip('=')} (crates.io)", vals[2], vals[3])]
res = {"profile": profile, "runs": int(runs), "rustc": rustc, "results": []}
print(f"\nCold consumer build ({profile} profile), {runs} interleaved runs, seconds\n")
print("| crates | cold build min | cold build median | build script min | build script median |")
print("|---|---:|---:|---:|---:|")
for n, w, s in names:
    print(f"| {n} | {min(w):.2f} | {statistics.median(w):.2f} | {min(s):.2f} | {statistics.median(s):.2f} |")
    res["results"].append({"crates": n, "cold_build_s": w, "build_script_s": s,
                           "cold_build_min": min(w), "cold_build_median": statistics.median(w),
                           "build_script_min": min(s), "build_script_median": statistics.median(s)})
json.dump(res, open(path, "w"), indent=2)
print(f"\nJSON: {path}")
EOF

# Where the cold build time goes (last run of each): the slowest units from cargo's report.
for w in ours upstream; do
    python3 - "$bench/$w/target/cargo-timings/cargo-timing.html" "$w" <<'EOF2'
import json, re, sys
html = open(sys.argv[1], encoding="utf-8").read()
units = json.loads(re.search(r"const UNIT_DATA = (\[.*?\]);\s*\n", html, re.S).group(1))
top = sorted(units, key=lambda u: -u["duration"])[:8]
print(f"\nslowest units, {sys.argv[2]} (last run): " + ", ".join(
    f"{u['name']}{' (build script run)' if u.get('mode') == 'run-custom-build' else ''} {u['duration']:.1f}s" for u in top))
EOF2
done
