#!/usr/bin/env bash
# Benchmarks our crates against the published supermachine-kernel 0.7.70 family, side by side in
# one run, every timing interleaved (ours, upstream, ours, …), min and median reported.
#
#   scripts/bench.sh [--quick] [--skip S[,S…]] [--only S[,S…]] [--docs | --no-docs] [--boot-runs N]
#
# Sections (each skippable): size (.crate and payload bytes), agent (binary size, stdio-mode exec
# round trip and idle RSS on the host), binsize (consumer release binary using KERNEL_BYTES from
# two crates), build (scripts/bench-build.sh: consumer cold build and build-script time), boot
# (boot-bench: TCG boot to /init), floor (scripts/boot-profile/floor.sh: the same x86_64 launch to a
# minimal /init with a `make tinyconfig` kernel, against ours and upstream; builds that kernel once
# into target/boot-profile/floor, a few minutes, which --quick skips), guest (bench-guest: supermachine-style guest, boot
# to /init and to agent ready, agent RSS as PID 1, exec round trip over vsock), kvmentry (the x86_64
# kernel entered as the runtime's KVM loader enters it, no firmware and no ACPI: kvm-entry-test,
# launch -> agent ready; see scripts/kvm-entry-test.sh), minmem (bench-guest --min-mem: lowest RAM
# that boots and answers an exec), footprint (footprint: the guest RAM a snapshot keeps, non-zero
# and distinct 4 KiB pages, at agent ready and after `python3 -c 'import json, ssl'` on the workload
# suite's Debian root, for ours, upstream and the two mixes; its Debian image is built once by
# scripts/workload-test.sh --image-only).
#
# The upstream crates are fetched by cargo into a separate, non-member workspace
# (target/bench-upstream, its own [workspace]), so normal builds never download them; their
# payloads are decoded with `xz -dc`. Guests boot under QEMU TCG: x86_64 `-M microvm`, aarch64
# `-M virt -cpu cortex-a72`; ours and upstream get the same busybox (ours) and initramfs flow,
# only kernel and agent differ.
#
# Output: target/bench/results.json, target/bench/BENCHMARKS.md, target/bench/bench-boot.svg, the
# table on stdout; a full run (no --quick, nothing skipped) also writes docs/BENCHMARKS.md and
# docs/bench-boot.svg (--docs / --no-docs override). Never part of `cargo test`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ALL="size agent binsize build boot floor guest kvmentry minmem footprint"
QUICK=0 SKIP="" ONLY="" DOCS="" BOOT_RUNS_ARG=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1; shift ;;
        --skip) SKIP="${2//,/ }"; shift 2 ;;
        --only) ONLY="${2//,/ }"; shift 2 ;;
        --docs) DOCS=1; shift ;;
        --no-docs) DOCS=0; shift ;;
        --boot-runs) BOOT_RUNS_ARG=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
for s in $SKIP $ONLY; do
    case " $ALL " in *" $s "*) ;; *) echo "unknown section $s (sections: $ALL)" >&2; exit 2 ;; esac
done
want() { # section
    if [ -n "$ONLY" ]; then case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; fi
    case " $SKIP " in *" $1 "*) return 1 ;; esac
    return 0
}
if [ -z "$DOCS" ]; then
    DOCS=1
    if [ "$QUICK" = 1 ] || [ -n "$SKIP$ONLY" ]; then DOCS=0; fi
fi

if [ "$QUICK" = 1 ]; then
    BOOT_RUNS=2 BUILD_RUNS=1 EXECS=20 STDIO_RUNS=50 MINMEM_STEP=16
else
    BOOT_RUNS=7 BUILD_RUNS=3 EXECS=200 STDIO_RUNS=300 MINMEM_STEP=1
fi
# More interleaved boots give steadier medians on a busy machine (the boot and guest sections).
if [ -n "$BOOT_RUNS_ARG" ]; then
    case "$BOOT_RUNS_ARG" in
        ''|*[!0-9]*|0) echo "--boot-runs wants a positive number, got '$BOOT_RUNS_ARG'" >&2; exit 2 ;;
    esac
    BOOT_RUNS=$BOOT_RUNS_ARG
fi
. "$ROOT/scripts/lib/upstream.sh"
. "$ROOT/scripts/lib/clk.sh"
ARCHES="x86_64 aarch64"
OUT=$ROOT/target/bench
PARTS=$OUT/parts
PAY=$OUT/payloads
UPWS=$ROOT/target/bench-upstream
CARGO=${CARGO:-cargo}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR
# Our build scripts honour these; a stray one would change what is measured.
for v in $(env | sed -n 's/^\(SUPERMACHINE_[A-Z0-9_]*\)=.*/\1/p'); do unset "$v"; done
for t in xz python3 "$CARGO"; do
    command -v "$t" >/dev/null || { echo "bench.sh: $t is needed" >&2; exit 2; }
done
rm -rf "$PARTS"
mkdir -p "$PARTS" "$PAY"
log() { echo "== $*" >&2; }
crate_dir() { echo "$ROOT/crates/supermachine-kernel-${1//_/-}"; } # ours, by arch

# --- upstream crates: a throwaway workspace that only exists to make cargo fetch them ---------
log "fetching supermachine-kernel $UPV (x86_64 + aarch64) into $UPWS"
upstream_fetch "$UPWS" "$OUT/upstream-metadata.json"
upstream_crate_file() { # crate name -> .crate in cargo's download cache
    local f
    for f in "$CARGO_HOME"/registry/cache/*/"$1-$UPV.crate"; do
        if [ -e "$f" ]; then echo "$f"; return 0; fi
    done
    return 0 # none: the crate has no upstream counterpart (supermachine-kernel-build)
}

# --- decoded payloads: $PAY/<side>/<arch>/<name> (+ <name>.xz size recorded) ------------------
log "decoding payloads"
for arch in $ARCHES; do
    decode_payloads "$(crate_dir "$arch")/payload" "$PAY/ours/$arch"
    decode_payloads "$(upstream_src "$OUT/upstream-metadata.json" "supermachine-kernel-${arch//_/-}")" "$PAY/upstream/$arch"
done
# Both sides boot with our busybox (the upstream aarch64 crate ships none): only kernel + agent differ.
bb() { echo "$PAY/ours/$1/busybox"; }

# --- size: .crate files and payload bytes -------------------------------------------------------
if want size; then
    log "size: cargo package (ours, --no-verify) and the cached upstream .crate files"
    pkg=$OUT/package
    rm -rf "$pkg"
    (cd "$ROOT" && CARGO_TARGET_DIR="$pkg" CARGO_TERM_COLOR=never "$CARGO" package --offline --allow-dirty --no-verify \
        -p supermachine-kernel -p supermachine-kernel-build -p supermachine-kernel-x86-64 -p supermachine-kernel-aarch64) \
        >"$OUT/package.log" 2>&1 || { cat "$OUT/package.log" >&2; exit 1; }
    args=()
    for c in supermachine-kernel supermachine-kernel-build supermachine-kernel-x86-64 supermachine-kernel-aarch64; do
        v=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
        args+=("ours:$c:$pkg/package/$c-$v.crate")
        f=$(upstream_crate_file "$c")
        if [ -n "$f" ]; then args+=("upstream:$c:$f"); fi
    done
    for arch in $ARCHES; do
        for x in "$(crate_dir "$arch")"/payload/*.xz; do args+=("payload:ours:$arch:$x:$PAY/ours/$arch/$(basename "$x" .xz)"); done
        up=$(upstream_src "$OUT/upstream-metadata.json" "supermachine-kernel-${arch//_/-}")
        for x in "$up"/*.xz; do args+=("payload:upstream:$arch:$x:$PAY/upstream/$arch/$(basename "$x" .xz)"); done
    done
    python3 - "$PARTS/size.json" "${args[@]}" <<'EOF'
import json, os, sys
res = {"crates": {}, "payloads": {}}
for a in sys.argv[2:]:
    f = a.split(":")
    if f[0] == "payload":
        _, side, arch, xz, dec = f
        name = os.path.basename(xz)[:-3]
        res["payloads"].setdefault(arch, {}).setdefault(side, {})[name] = {"xz": os.path.getsize(xz), "decoded": os.path.getsize(dec)}
    else:
        side, crate, path = f
        res["crates"].setdefault(crate, {})[side] = os.path.getsize(path)
json.dump(res, open(sys.argv[1], "w"), indent=1)
EOF
fi

# --- agent: size, stdio-mode round trip and idle RSS (host arch only) ---------------------------
if want agent; then
    host=$(uname -m)
    log "agent: --exec-stdio round trip of true, $STDIO_RUNS interleaved runs each ($host)"
    work=$(mktemp -d /tmp/bench-agent.XXXXXX)
    unshare --pid --fork --mount-proc python3 "$ROOT/scripts/bench/agent_stdio.py" "$STDIO_RUNS" "$work" \
        "ours=$PAY/ours/$host/supermachine-agent" "upstream=$PAY/upstream/$host/supermachine-agent" \
        >"$PARTS/agent-stdio.json"
    rm -rf "$work"
    python3 - "$PARTS/agent-stdio.json" "$host" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1])); d = {"arch": sys.argv[2], "sides": d}
json.dump(d, open(sys.argv[1], "w"), indent=1)
EOF
fi

# --- binsize: a consumer that uses KERNEL_BYTES from two crates, release build -------------------
if want binsize; then
    log "binsize: consumer release binary with KERNEL_BYTES used from two crates"
    for side in ours upstream; do
        d=$OUT/binsize/$side
        rm -rf "$d"; mkdir -p "$d/app/src" "$d/kernel-user/src"
        if [ $side = ours ]; then dep="supermachine-kernel = { path = \"$ROOT/crates/supermachine-kernel\" }"
        else dep="supermachine-kernel = \"=$UPV\""; fi
        printf '[workspace]\nmembers = ["app", "kernel-user"]\nresolver = "2"\n' >"$d/Cargo.toml"
        printf '[package]\nname = "kernel-user"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\n%s\n' "$dep" >"$d/kernel-user/Cargo.toml"
        printf '[package]\nname = "app"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n[dependencies]\nkernel-user = { path = "../kernel-user" }\n%s\n' "$dep" >"$d/app/Cargo.toml"
        cat >"$d/kernel-user/src/lib.rs" <<'EOF'
/// The kernel as seen from a second crate.
#[inline(never)]
pub fn kernel_bytes() -> &'static [u8] {
    std::hint::black_box(supermachine_kernel::KERNEL_BYTES)
}
EOF
        cat >"$d/app/src/main.rs" <<'EOF'
fn main() {
    let here: &'static [u8] = std::hint::black_box(supermachine_kernel::KERNEL_BYTES);
    let there = kernel_user::kernel_bytes();
    println!("{} {} {}", here.len(), there.len(), here.as_ptr() == there.as_ptr());
}
EOF
        if [ $side = ours ]; then cp "$ROOT/Cargo.lock" "$d/Cargo.lock"; fi
        (cd "$d" && "$CARGO" fetch --quiet && "$CARGO" build --offline --release --quiet) >"$d/build.log" 2>&1 \
            || { cat "$d/build.log" >&2; exit 1; }
    done
    host=$(uname -m)
    python3 - "$PARTS/binsize.json" "$OUT/binsize" "$PAY" "$host" <<'EOF'
import json, os, subprocess, sys
out, base, pay, arch = sys.argv[1:]
res = {"arch": arch}
for side in ("ours", "upstream"):
    b = os.path.join(base, side, "target/release/app")
    data = open(b, "rb").read()
    kernel = open(os.path.join(pay, side, arch, "kernel"), "rb").read()
    # A 4 KiB window that occurs once in the kernel itself (padding or tables repeat), so its
    # count in the binary is the number of embedded copies. Tried from the middle onwards, then
    # the first half, at 64 evenly spaced offsets (the uncompressed x86_64 kernel has megabytes
    # of uniform padding).
    offsets = [len(kernel) * i // 64 for i in list(range(32, 64)) + list(range(0, 32))]
    probe = next((w for w in (kernel[o:o + 4096] for o in offsets)
                  if len(w) == 4096 and kernel.count(w) == 1), None)
    if probe is None:
        sys.exit(f"binsize: no 4 KiB window of {side}'s {arch} kernel ({len(kernel)} bytes) occurs only "
                 "once in it, so its copies in the binary cannot be counted; the probe needs a new "
                 "way to pick a distinctive window (scripts/bench.sh, binsize)")
    printed = subprocess.run([b], capture_output=True, text=True, check=True).stdout.split()
    res[side] = {"bytes": len(data), "kernel_bytes": len(kernel), "kernel_copies": data.count(probe),
                 "same_static": printed[2] == "true"}
json.dump(res, open(out, "w"), indent=1)
EOF
fi

# --- build: consumer cold build time and build-script time (scripts/bench-build.sh) -------------
if want build; then
    log "build: scripts/bench-build.sh, $BUILD_RUNS interleaved cold builds each"
    RUNS=$BUILD_RUNS BENCH_DIR="$OUT/build" JSON="$PARTS/build.json" UPSTREAM_VERSION="=$UPV" \
        "$ROOT/scripts/bench-build.sh" >"$OUT/build.log" 2>&1 || { cat "$OUT/build.log" >&2; exit 1; }
fi

# --- boot and guest: QEMU TCG --------------------------------------------------------------------
machine() { if [ "$1" = x86_64 ]; then echo microvm; else echo virt; fi; }
if want boot || want guest || want minmem; then
    log "building boot-bench and bench-guest (release)"
    (cd "$ROOT" && "$CARGO" build --quiet --release -p supermachine-guest-harness --bin boot-bench --bin bench-guest)
fi
if want boot; then
    for arch in $ARCHES; do
        log "boot: $arch $(machine "$arch"), to /init (minimal initramfs), $BOOT_RUNS interleaved runs each"
        "$ROOT/target/release/boot-bench" --machine "$(machine "$arch")" --runs "$BOOT_RUNS" --busybox "$(bb "$arch")" \
            --kernel "$PAY/ours/$arch/kernel" --kernel "$PAY/upstream/$arch/kernel" >"$PARTS/boot-$arch.jsonl"
    done
fi
FLOOR_DIR=$ROOT/target/boot-profile/floor
if want floor && [ "$QUICK" = 1 ] && [ ! -f "$FLOOR_DIR/bzImage" ]; then
    log "floor: skipped in --quick: its tinyconfig kernel is not built yet (a full run or scripts/boot-profile.sh --floor builds it once)"
elif want floor; then
    log "floor: x86_64 microvm, launch → a minimal /init with a make tinyconfig kernel, ours and upstream; $BOOT_RUNS interleaved runs + 1 icount run each"
    build_clk_helper x86_64 "$OUT/clk-x86_64" || exit 2
    (cd "$ROOT" && "$CARGO" build --quiet --release -p supermachine-guest-harness --bin boot-profile)
    FLOOR_IMAGE_BUSYBOX=$(bb x86_64) "$ROOT/scripts/boot-profile/floor.sh" "$FLOOR_DIR" \
        "$OUT/clk-x86_64" 1 "$BOOT_RUNS" "ours=$PAY/ours/x86_64/kernel" "upstream=$PAY/upstream/x86_64/kernel" \
        >"$PARTS/floor.json" 2>"$OUT/floor.log" || { tail -30 "$OUT/floor.log" >&2; exit 1; }
fi
guests() { # arch -> --guest args
    for side in ours upstream; do
        echo "--guest"; echo "$side=$PAY/$side/$1/kernel,$PAY/$side/$1/supermachine-agent"
    done
}
if want guest; then
    for arch in $ARCHES; do
        log "guest: $arch, to /init and agent ready, $BOOT_RUNS interleaved runs each, $EXECS vsock execs"
        mapfile -t g < <(guests "$arch")
        "$ROOT/target/release/bench-guest" --arch "$arch" --busybox "$(bb "$arch")" --runs "$BOOT_RUNS" \
            --execs "$EXECS" "${g[@]}" >"$PARTS/guest-$arch.jsonl" 2>"$OUT/guest-$arch.log" \
            || { tail -30 "$OUT/guest-$arch.log" >&2; exit 1; }
        grep -E '^run ' "$OUT/guest-$arch.log" >&2 || true
    done
fi
if want kvmentry; then
    log "kvmentry: x86_64, the runtime's own KVM loader (tools/kvm-entry) + PVH stub, no ACPI, launch → agent ready, $BOOT_RUNS interleaved runs each"
    cargo build --quiet --release --locked --manifest-path "$ROOT/tools/Cargo.toml" -p kvm-entry
    (cd "$ROOT" && "$CARGO" build --quiet --release -p supermachine-guest-harness --bin kvm-entry-test)
    ke=$OUT/kvmentry
    rm -rf "$ke"; mkdir -p "$ke"
    : >"$PARTS/kvmentry.jsonl"
    for i in $(seq "$BOOT_RUNS"); do
        for side in ours upstream; do
            # One vCPU, 64 MiB, KASLR on: the runtime's defaults for a small guest.
            if ! "$ROOT/target/release/kvm-entry-test" --kvm-entry "$ROOT/tools/target/release/kvm-entry" \
                --kernel "$PAY/$side/x86_64/kernel" --label "$side" --cpus 1 --mem 64 --json "$ke/$side-$i.json" \
                --mmio-tokens "$ke/mmio-tokens" 2>"$ke/$side-$i.log"; then
                echo "kvmentry: $side boot $i failed: $(grep -o 'last console line: .*' "$ke/$side-$i.log" | head -1)" >&2
                echo "{\"label\":\"$side\",\"failed\":true}" >>"$PARTS/kvmentry.jsonl"
                continue
            fi
            cat "$ke/$side-$i.json" >>"$PARTS/kvmentry.jsonl"; echo >>"$PARTS/kvmentry.jsonl"
        done
    done
fi
if want minmem; then
    for arch in $ARCHES; do
        log "minmem: $arch, lowest RAM that boots and answers an exec (bisect, ${MINMEM_STEP} MiB steps)"
        mapfile -t g < <(guests "$arch")
        "$ROOT/target/release/bench-guest" --arch "$arch" --busybox "$(bb "$arch")" --min-mem \
            --min-mem-step "$MINMEM_STEP" --timeout 90 "${g[@]}" >"$PARTS/minmem-$arch.jsonl" 2>"$OUT/minmem-$arch.log" \
            || { tail -30 "$OUT/minmem-$arch.log" >&2; exit 1; }
    done
fi

if want footprint; then
    (cd "$ROOT" && "$CARGO" build --quiet --release -p supermachine-guest-harness --bin footprint)
    fp_runs=2; [ "$QUICK" = 1 ] && fp_runs=1
    for arch in $ARCHES; do
        o=$PAY/ours/$arch u=$PAY/upstream/$arch
        sides=(--guest "ours=$o/kernel,$o/supermachine-agent" --guest "upstream=$u/kernel,$u/supermachine-agent"
               --guest "our kernel, upstream agent=$o/kernel,$u/supermachine-agent"
               --guest "upstream kernel, our agent=$u/kernel,$o/supermachine-agent")
        log "footprint: $arch, non-zero guest RAM pages at agent ready (256 MiB, $fp_runs runs each)"
        "$ROOT/target/release/footprint" --arch "$arch" --busybox "$(bb "$arch")" --runs "$fp_runs" "${sides[@]}" \
            >"$PARTS/footprint-$arch.jsonl" 2>"$OUT/footprint-$arch.log" || { tail -30 "$OUT/footprint-$arch.log" >&2; exit 1; }
        image=$("$ROOT/scripts/workload-test.sh" --arch "$arch" --tier quick --image-only 2>>"$OUT/footprint-$arch.log" | tail -1)
        log "footprint: $arch, after python3 -c 'import json, ssl' on the Debian root ($image)"
        "$ROOT/target/release/footprint" --arch "$arch" --busybox "$(bb "$arch")" --runs "$fp_runs" "${sides[@]:0:4}" \
            --image "$image" --exec "python3 -c 'import json, ssl'" \
            >"$PARTS/footprint-python-$arch.jsonl" 2>>"$OUT/footprint-$arch.log" || { tail -30 "$OUT/footprint-$arch.log" >&2; exit 1; }
    done
    o=$PAY/ours/aarch64 u=$PAY/upstream/aarch64
    log "footprint: aarch64 init-oci flow (the runtime's HVF flow), non-zero pages at the heartbeat"
    "$ROOT/target/release/footprint" --arch aarch64 --busybox "$(bb aarch64)" --runs "$fp_runs" --flow init-oci \
        --guest "ours=$o/kernel,$o/supermachine-agent,$o/init-oci" --guest "upstream=$u/kernel,$u/supermachine-agent,$u/init-oci" \
        >"$PARTS/footprint-initoci-aarch64.jsonl" 2>>"$OUT/footprint-aarch64.log" || { tail -30 "$OUT/footprint-aarch64.log" >&2; exit 1; }
fi

# --- report ----------------------------------------------------------------------------------
docs_args=()
if [ "$DOCS" = 1 ]; then docs_args=(--docs "$ROOT/docs"); fi
python3 "$ROOT/scripts/bench/report.py" --parts "$PARTS" --out "$OUT" --quick "$QUICK" \
    --runs "boot=$BOOT_RUNS,build=$BUILD_RUNS,execs=$EXECS,stdio=$STDIO_RUNS,minmem_step=$MINMEM_STEP" \
    --upstream "$UPV" --repo "$ROOT" "${docs_args[@]}"
