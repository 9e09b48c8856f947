#!/usr/bin/env python3
"""Folds the parts written by scripts/bench.sh into results.json, a markdown report and an SVG bar
chart of the boot-time breakdown. Standard library only.

    report.py --parts DIR --out DIR [--docs DIR] [--quick 0|1] [--runs k=v,...] [--upstream V] [--repo DIR]
"""
import argparse, datetime, glob, json, os, platform, shutil, subprocess, sys
from html import escape

ap = argparse.ArgumentParser()
ap.add_argument("--parts", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--docs")
ap.add_argument("--quick", default="0")
ap.add_argument("--runs", default="")
ap.add_argument("--upstream", default="0.7.70")
ap.add_argument("--repo", default=".")
a = ap.parse_args()
ARCHES = ("x86_64", "aarch64")


def load(name):
    p = os.path.join(a.parts, name)
    if not os.path.exists(p):
        return None
    if p.endswith(".jsonl"):
        return [json.loads(l) for l in open(p) if l.strip().startswith("{")]
    return json.load(open(p))


def cmd(*c):
    try:
        return subprocess.run(c, capture_output=True, text=True, cwd=a.repo).stdout.strip()
    except OSError:
        return ""


def by_name(rows, key="name"):
    out = {}
    for r in rows or []:
        n = r.get(key, "")
        out["ours" if "/ours/" in n or n == "ours" else "upstream" if "/upstream/" in n or n == "upstream" else n] = r
    return out


# ---- formatting -------------------------------------------------------------------------------
def fbytes(b):
    if b is None:
        return "—"
    if b >= 1 << 20:
        return f"{b / (1 << 20):.2f} MiB"
    if b >= 10 << 10:
        return f"{b / 1024:.0f} KiB"
    return f"{b:,} B"


def fms(x):
    if x is None:
        return "—"
    return f"{x:.0f} ms" if x >= 100 else f"{x:.1f} ms" if x >= 10 else f"{x:.2f} ms"


def fs(x):
    return "—" if x is None else f"{x:.2f} s"


def ratio(o, u):
    if not isinstance(o, (int, float)) or not isinstance(u, (int, float)) or not u:
        return "—"
    return f"{o / u:.2f}×"


rows = []  # (figure, ours, upstream, ratio)
notes = []
res = {"upstream_version": a.upstream, "figures": []}


def row(fig, o, u, fmt, ro=None, ru=None, unit=""):
    """A table row; `ro`/`ru` are the numbers the ratio is taken from (default o/u)."""
    ro = o if ro is None else ro
    ru = u if ru is None else ru
    rows.append((fig, fmt(o) if not isinstance(o, str) else o, fmt(u) if not isinstance(u, str) else u, ratio(ro, ru)))
    res["figures"].append({"figure": fig, "ours": ro, "upstream": ru, "unit": unit,
                           "ratio": (ro / ru) if isinstance(ro, (int, float)) and isinstance(ru, (int, float)) and ru else None})


def section(title):
    rows.append((f"**{title}**", "", "", ""))


def minmed(d, k, fmt=fms):
    if not d or d.get(k + "_min") is None:
        return "—"
    return f"{fmt(d[k + '_min'])} / {fmt(d[k + '_median'])}"


# ---- size ------------------------------------------------------------------------------------
size = load("size.json")
payload_detail = []
if size:
    section(".crate size (ours: `cargo package`; upstream: the published file)")
    cr = size["crates"]
    for c in ("supermachine-kernel-x86-64", "supermachine-kernel-aarch64", "supermachine-kernel", "supermachine-kernel-build"):
        d = cr.get(c, {})
        row(f"`{c}`", d.get("ours"), d.get("upstream"), fbytes, unit="bytes")
    for arch in ARCHES:
        ac = f"supermachine-kernel-{arch.replace('_', '-')}"
        fam = lambda s: sum(cr.get(c, {}).get(s, 0) for c in ("supermachine-kernel", ac, "supermachine-kernel-build"))
        row(f"{arch} consumer downloads (facade + arch crate + build crate)", fam("ours"), fam("upstream"), fbytes, unit="bytes")
    section("payload bytes (xz-compressed in the crate / decoded)")
    for arch in ARCHES:
        p = size["payloads"].get(arch, {})
        o, u = p.get("ours", {}), p.get("upstream", {})
        tot = lambda d, k: sum(v[k] for v in d.values()) if d else None
        row(f"{arch} all payloads, compressed", tot(o, "xz"), tot(u, "xz"), fbytes, unit="bytes")
        row(f"{arch} all payloads, decoded", tot(o, "decoded"), tot(u, "decoded"), fbytes, unit="bytes")
        for n in ("kernel",):
            row(f"{arch} kernel, compressed", o.get(n, {}).get("xz"), u.get(n, {}).get("xz"), fbytes, unit="bytes")
            row(f"{arch} kernel, decoded", o.get(n, {}).get("decoded"), u.get(n, {}).get("decoded"), fbytes, unit="bytes")
        for n in sorted(set(o) | set(u), key=lambda n: ("kernel", "busybox", "supermachine-agent", "init-oci").index(n) if n in ("kernel", "busybox", "supermachine-agent", "init-oci") else 9):
            payload_detail.append((arch, n, o.get(n), u.get(n)))

# ---- build -----------------------------------------------------------------------------------
build = load("build.json")
if build:
    r = build["results"]
    o, u = r[0], r[1]
    section(f"consumer build ({build['profile']} profile, {build['runs']} interleaved cold builds; min / median)")
    row("cold `cargo build` of a consumer", f"{fs(o['cold_build_min'])} / {fs(o['cold_build_median'])}",
        f"{fs(u['cold_build_min'])} / {fs(u['cold_build_median'])}", str, o["cold_build_median"], u["cold_build_median"], "s (median)")
    row("build-script run time (supermachine-kernel* crates)", f"{fs(o['build_script_min'])} / {fs(o['build_script_median'])}",
        f"{fs(u['build_script_min'])} / {fs(u['build_script_median'])}", str, o["build_script_median"], u["build_script_median"], "s (median)")

binsize = load("binsize.json")
if binsize:
    section(f"consumer release binary, `KERNEL_BYTES` used from two crates ({binsize['arch']})")
    o, u = binsize["ours"], binsize["upstream"]
    row("binary size", o["bytes"], u["bytes"], fbytes, unit="bytes")
    row("copies of the kernel in the binary", str(o["kernel_copies"]), str(u["kernel_copies"]), str, o["kernel_copies"], u["kernel_copies"], "copies")

# ---- boot ------------------------------------------------------------------------------------
boot = {arch: by_name(load(f"boot-{arch}.jsonl"), "kernel") for arch in ARCHES}
guest = {arch: by_name(load(f"guest-{arch}.jsonl")) for arch in ARCHES}
minmem = {arch: by_name(load(f"minmem-{arch}.jsonl")) for arch in ARCHES}
MACH = {"x86_64": "x86_64 microvm", "aarch64": "aarch64 virt"}
if any(boot.values()) or any(guest.values()) or any(minmem.values()):
    runs = next((d["ours"]["runs"] for d in list(guest.values()) + list(boot.values()) if d.get("ours")), "?")
    section(f"TCG boot (QEMU {cmd('qemu-system-x86_64', '--version').split()[3] if cmd('qemu-system-x86_64', '--version') else '?'}; "
            f"interleaved runs; min / median)")
    for arch in ARCHES:
        b, g = boot[arch], guest[arch]
        if b:
            row(f"{MACH[arch]}: boot to /init, minimal initramfs ({b['ours']['runs']} runs)", minmed(b.get("ours"), "init_ms"),
                minmed(b.get("upstream"), "init_ms"), str, b["ours"]["init_ms_median"], b["upstream"]["init_ms_median"], "ms (median)")
        if g:
            o, u = g.get("ours"), g.get("upstream")
            row(f"{MACH[arch]}: supermachine flow, launch → /init ({o['runs']} runs)", minmed(o, "init_ms"), minmed(u, "init_ms"), str,
                o["init_ms_median"], u["init_ms_median"], "ms (median)")
            row(f"{MACH[arch]}: supermachine flow, /init → agent ready", minmed(o, "init_to_ready_ms"), minmed(u, "init_to_ready_ms"), str,
                o["init_to_ready_ms_median"], u["init_to_ready_ms_median"], "ms (median)")
            row(f"{MACH[arch]}: supermachine flow, launch → agent ready", minmed(o, "ready_ms"), minmed(u, "ready_ms"), str,
                o["ready_ms_median"], u["ready_ms_median"], "ms (median)")
            for s, d in (("ours", o), ("upstream", u)):
                if d.get("failed"):
                    notes.append(f"{arch} {s}: {d['failed']} of {d['runs'] + d['failed']} guest boots failed (not counted).")
                if d.get("exec_errors"):
                    notes.append(f"{arch} {s} agent: {d['exec_errors']} of {d['execs'] + d['exec_errors']} vsock execs failed "
                                 f"(\"{d.get('exec_error_first', '')}\"); they are retried and not timed.")
    for arch in ARCHES:
        m = minmem[arch]
        if m:
            o, u = m.get("ours", {}), m.get("upstream", {})
            step = o.get("step_mib", 1)
            fm = lambda v: "—" if v is None else f"{v} MiB"
            row(f"{MACH[arch]}: lowest RAM that boots and answers an exec" + (f" ({step} MiB steps)" if step > 1 else ""),
                o.get("min_mem_mib"), u.get("min_mem_mib"), fm, unit="MiB")

# ---- kvmentry: the x86_64 kernel through the runtime's own KVM loader (no firmware, no ACPI) ------
kvmentry = load("kvmentry.jsonl")
if kvmentry:
    import statistics
    ke = {}
    for r in kvmentry:
        ke.setdefault(r["label"], []).append(r)
    ok = {s: sorted(r["ready_ms"] for r in ke.get(s, []) if not r.get("failed")) for s in ("ours", "upstream")}
    runs = max(len(v) for v in ke.values())
    section(f"x86_64 through the runtime's own KVM loader (`tools/kvm-entry` + PVH stub, no ACPI, 1 vCPU, 64 MiB; "
            f"{runs} interleaved runs; min / median)")
    mm = lambda v: f"{fms(v[0])} / {fms(statistics.median(v))}" if v else "—"
    row("launch → agent ready (kernel differs; busybox and agent ours on both sides)", mm(ok["ours"]), mm(ok["upstream"]), str,
        statistics.median(ok["ours"]) if ok["ours"] else None, statistics.median(ok["upstream"]) if ok["upstream"] else None,
        "ms (median)")
    for s in ("ours", "upstream"):
        failed = sum(1 for r in ke.get(s, []) if r.get("failed"))
        if failed:
            notes.append(f"kvmentry {s}: {failed} of {len(ke[s])} boots failed (not counted).")

# ---- footprint: the guest RAM a snapshot keeps (non-zero 4 KiB pages) ----------------------------
fp = {(flow, arch): by_name(load(f"footprint{flow}-{arch}.jsonl")) for flow in ("", "-initoci", "-python") for arch in ARCHES}
if any(fp.values()):
    section("snapshot footprint: guest RAM pages a snapshot keeps (256 MiB guests; median of the runs)")
    fpages = lambda v: "—" if v is None else f"{v:,.0f} ({v * 4 / 1024:.1f} MiB)"
    for flow, what in (("", "at agent ready"), ("-initoci", "at the init-oci heartbeat (HVF flow)"),
                       ("-python", "after `python3 -c 'import json, ssl'`, Debian root")):
        for arch in ARCHES:
            d = fp[(flow, arch)]
            if not d:
                continue
            o, u = d.get("ours", {}), d.get("upstream", {})
            row(f"{arch} non-zero pages {what}", o.get("nonzero"), u.get("nonzero"), fpages, unit="pages")
            row(f"{arch} distinct non-zero pages {what}", o.get("distinct"), u.get("distinct"), fpages, unit="pages")
            if not flow:
                for mix in ("our kernel, upstream agent", "upstream kernel, our agent"):
                    if mix in d:
                        row(f"{arch} non-zero pages at agent ready: {mix} (against upstream)", d[mix].get("nonzero"),
                            u.get("nonzero"), fpages, unit="pages")
                if o.get("owners"):
                    owners = ", ".join(f"{n} {name}" for name, n in o["owners"])
                    notes.append(f"{arch} ours at agent ready, non-zero pages by owner (the guest's /proc/kpageflags): {owners}.")

# ---- floor: the same x86_64 launch to a minimal /init with a `make tinyconfig` kernel ----------
floor = load("floor.json")
if floor:
    k = floor["kernels"]
    fl, o, u = k["floor"], k.get("ours", {}), k.get("upstream", {})
    section(f"floor: x86_64 microvm launch → a minimal `/init` ({fl['wall_runs']} interleaved runs; the `make tinyconfig` "
            f"kernel takes {fms(fl['wall_ms_median'])} wall median, {fms(fl['icount_ms'])} icount)")
    row("launch → minimal `/init`, wall median", o.get("wall_ms_median"), u.get("wall_ms_median"), fms, unit="ms (median)")
    above = lambda d: None if d.get("wall_ms_median") is None else d["wall_ms_median"] - fl["wall_ms_median"]
    row("… of it above the floor: the kernel's own time (wall median)", above(o), above(u), fms, unit="ms (median)")
    row("launch → minimal `/init`, guest-virtual (icount)", o.get("icount_ms"), u.get("icount_ms"), fms, unit="ms")

# ---- agent -----------------------------------------------------------------------------------
stdio = load("agent-stdio.json")
if size or stdio or any(guest.values()):
    section("agent")
    if size:
        for arch in ARCHES:
            p = size["payloads"].get(arch, {})
            o = p.get("ours", {}).get("supermachine-agent", {})
            u = p.get("upstream", {}).get("supermachine-agent", {})
            row(f"{arch} agent binary (decoded / xz)", f"{fbytes(o.get('decoded'))} / {fbytes(o.get('xz'))}",
                f"{fbytes(u.get('decoded'))} / {fbytes(u.get('xz'))}", str, o.get("decoded"), u.get("decoded"), "bytes")
    for arch in ARCHES:
        g = guest[arch]
        if g:
            o, u = g["ours"], g["upstream"]
            fk = lambda v: "—" if v is None else f"{v:,} KiB"
            row(f"{arch} agent RSS as PID 1 in the guest, idle", o.get("agent_rss_kib"), u.get("agent_rss_kib"), fk, unit="KiB")
            errs = lambda d: f" ({d['exec_errors']} failed)" if d.get("exec_errors") else ""
            row(f"{arch} exec `true` over vsock, p50 / p99 ({o['execs']} execs)", f"{fms(o['exec_ms_p50'])} / {fms(o['exec_ms_p99'])}{errs(o)}",
                f"{fms(u['exec_ms_p50'])} / {fms(u['exec_ms_p99'])}{errs(u)}", str, o["exec_ms_p50"], u["exec_ms_p50"], "ms (p50)")
    if stdio:
        o, u = stdio["sides"]["ours"], stdio["sides"]["upstream"]
        fk = lambda v: f"{v:,.0f} KiB"
        row(f"{stdio['arch']} exec `true` in `--exec-stdio` mode on the host, p50 / p99 ({o['runs']} runs)",
            f"{fms(o['p50_ms'])} / {fms(o['p99_ms'])}", f"{fms(u['p50_ms'])} / {fms(u['p99_ms'])}", str, o["p50_ms"], u["p50_ms"], "ms (p50)")
        row(f"{stdio['arch']} agent RSS in `--exec-stdio` mode, idle before its request", o["idle_rss_kib"], u["idle_rss_kib"], fk, unit="KiB")
        if stdio["arch"] != "aarch64":
            notes.append("`--exec-stdio` timings run on the host, so only for the host arch; the aarch64 agents would run "
                         "under qemu-user emulation, which measures the emulator. Their in-guest figures are above.")

# ---- meta ------------------------------------------------------------------------------------
qv = lambda q: (cmd(q, "--version").splitlines() or ["?"])[0]
meta = {
    "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "commit": cmd("git", "rev-parse", "--short", "HEAD") + (" (dirty tree)" if cmd("git", "status", "--porcelain", "--untracked-files=no") else ""),
    "host": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
    "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?") if os.path.exists("/proc/cpuinfo") else "?",
    "qemu": [qv("qemu-system-x86_64"), qv("qemu-system-aarch64")],
    "rustc": cmd("rustc", "--version"),
    "quick": a.quick == "1",
    "runs": dict(kv.split("=", 1) for kv in a.runs.split(",") if "=" in kv),
}
res["meta"] = meta
res["parts"] = {os.path.basename(p): load(os.path.basename(p)) for p in sorted(glob.glob(os.path.join(a.parts, "*")))}
res["table"] = [dict(zip(("figure", "ours", "upstream", "ratio"), r)) for r in rows]


# ---- SVG -------------------------------------------------------------------------------------
def svg():
    bars = []
    for arch in ARCHES:
        for side in ("ours", "upstream"):
            d = guest[arch].get(side)
            if d and d.get("ready_ms_median") is not None:
                init = d["init_ms_median"]
                bars.append((f"{arch} {'ours' if side == 'ours' else 'upstream ' + a.upstream}", init, d["ready_ms_median"] - init, d["runs"]))
    if not bars:
        return None
    W, left, right, top, bh, gap = 860, 190, 150, 78, 26, 12
    scale = (W - left - right) / max(i + r for _, i, r, _ in bars)
    H = top + len(bars) * (bh + gap) + 40
    c1, c2 = "#4e79a7", "#f28e2b"
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
         f'font-family="sans-serif" font-size="13">',
         f'<rect width="{W}" height="{H}" fill="#fff"/>',
         f'<text x="{left}" y="24" font-size="16" font-weight="bold">Boot to agent ready under QEMU TCG (median ms)</text>',
         f'<text x="{left}" y="44" fill="#555">x86_64 -M microvm, aarch64 -M virt; supermachine-style initramfs; '
         f'{bars[0][3]} interleaved runs each</text>',
         f'<rect x="{left}" y="54" width="12" height="12" fill="{c1}"/><text x="{left + 18}" y="65">kernel → /init</text>',
         f'<rect x="{left + 140}" y="54" width="12" height="12" fill="{c2}"/><text x="{left + 158}" y="65">/init → agent ready (first /bin/true)</text>']
    for k, (label, init, rest, _) in enumerate(bars):
        y = top + k * (bh + gap) + (8 if k >= 2 else 0)
        w1, w2 = init * scale, rest * scale
        o.append(f'<text x="{left - 8}" y="{y + bh * 0.68:.1f}" text-anchor="end">{escape(label)}</text>')
        o.append(f'<rect x="{left}" y="{y}" width="{w1:.1f}" height="{bh}" fill="{c1}"><title>kernel → /init {init:.0f} ms</title></rect>')
        o.append(f'<rect x="{left + w1:.1f}" y="{y}" width="{w2:.1f}" height="{bh}" fill="{c2}"><title>/init → agent ready {rest:.0f} ms</title></rect>')
        for x0, w, v in ((left, w1, init), (left + w1, w2, rest)):
            if w > 44:
                o.append(f'<text x="{x0 + w / 2:.1f}" y="{y + bh * 0.68:.1f}" text-anchor="middle" fill="#fff">{v:.0f}</text>')
        o.append(f'<text x="{left + w1 + w2 + 6:.1f}" y="{y + bh * 0.68:.1f}">{init + rest:.0f} ms</text>')
    o.append(f'<text x="{left}" y="{H - 12}" fill="#555" font-size="11">{escape(meta["date"])}, {escape(meta["host"])}; '
             f'scripts/bench.sh</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ---- markdown --------------------------------------------------------------------------------
md = ["| figure | ours | upstream " + a.upstream + " | ours / upstream |", "|---|---:|---:|---:|"]
md += [f"| {f} | {o} | {u} | {r} |" for f, o, u, r in rows]
table = "\n".join(md)
detail = ""
if payload_detail:
    d = ["| arch | payload | ours .xz | ours decoded | upstream .xz | upstream decoded |", "|---|---|---:|---:|---:|---:|"]
    for arch, n, o, u in payload_detail:
        g = lambda x, k: fbytes(x[k]) if x else "—"
        d.append(f"| {arch} | {n} | {g(o, 'xz')} | {g(o, 'decoded')} | {g(u, 'xz')} | {g(u, 'decoded')} |")
    detail = "\n".join(d)
svg_text = svg()

doc = f"""# Benchmarks: ours vs supermachine-kernel {a.upstream}

Generated by `scripts/bench.sh` ({'quick run' if meta['quick'] else 'full run'}, {meta['date']}, commit {meta['commit']}).
Both sides are measured on the same machine in the same run; timings are interleaved (ours,
upstream, ours, …) and reported as min / median. The ratio column is ours ÷ upstream (for
timings: of the medians), so below 1 means ours is smaller or faster.

Machine: {meta['host']} ({meta['cpu']}); {meta['qemu'][0]}; {meta['rustc']}. Guests run under
TCG (software emulation): x86_64 `-M microvm` (ACPI, `tsc_early_khz=` added by the harness),
aarch64 `-M virt -cpu cortex-a72`, 1 vCPU; `quiet` on the cmdline. The upstream crates are
fetched by cargo into `target/bench-upstream` (its own `[workspace]`), never by normal builds.

{table}
"""
if svg_text:
    doc += "\n![Boot-time breakdown: kernel → /init and /init → agent ready](bench-boot.svg)\n"
if detail:
    doc += f"\nPayloads one by one:\n\n{detail}\n"
doc += f"""
## How each figure is measured

* **.crate size**: ours from `cargo package --no-verify -p …` of the family (the packaging that
  `crates/supermachine-kernel-build/tests/package.rs` verifies); upstream the `.crate` files
  cargo downloaded. The consumer-download row adds facade + arch crate + `supermachine-kernel-build`
  (upstream has no build crate).
* **Payload bytes**: each `*.xz` in the crate and its `xz -dc` output. Upstream ships `smpark.ko`
  (aarch64) and no busybox for aarch64 / no init-oci for x86_64.
* **Consumer build**: `scripts/bench-build.sh` (a throwaway binary depending on
  `supermachine-kernel`; cold `cargo build` after deleting its target dir; build-script time from
  cargo's `--timings` report).
* **Release binary**: a two-crate consumer workspace (a library returning `KERNEL_BYTES` and a
  binary using it too, both through `black_box`), `cargo build --release`; copies counted by
  searching the binary for a 4 KiB window that occurs once in the kernel itself.
* **Boot to /init, minimal initramfs**: `boot-bench` (busybox + an `/init` that prints a marker),
  launch → marker on the serial console, 128 MiB.
* **Supermachine flow**: `bench-guest`: the initramfs of `initramfs::supermachine` (busybox,
  agent, generated `/init`: squashfs image from /dev/vda → overlay → `switch_root` → agent as
  PID 1) with one marker line added at the top of `/init`; virtio-mmio blk + vhost-user vsock;
  256 MiB. Ours and upstream boot with the same busybox (ours) and image; only kernel + agent
  differ. Agent ready = the first successful `/bin/true` exec over vsock (the runtime's check),
  polled every ~5 ms. Where the time of such a boot goes, phase by phase (initcalls, each
  step of `/init`, agent start) and payload by payload (mixes of our and the published kernel,
  agent and busybox), as deterministic guest-virtual time (`-icount`) and wall-clock medians:
  `scripts/boot-profile.sh`, [BOOT-PROFILE.md](BOOT-PROFILE.md).
* **How much of it is ours to cut** (section `floor`): `scripts/boot-profile/floor.sh` boots the
  same x86_64 VMM launch into a minimal `/init` (a static counter helper) with a `make tinyconfig`
  kernel, ours and the published one, interleaved, plus one `-icount` boot each. The wall time
  below the tinyconfig figure belongs to QEMU, the firmware and the boot protocol, not to any
  kernel; "above the floor" is what a kernel adds. Under icount our kernel is below the floor:
  the tinyconfig kernel spends ~216 ms of guest time setting up its memory map
  ([BOOT-PROFILE.md](BOOT-PROFILE.md) finding 4).
* **Through the runtime's KVM loader** (section `kvmentry`): `kvm-entry-test`, as in
  `scripts/kvm-entry-test.sh`: guest RAM laid out by the runtime's own `setup_boot` and
  `write_mptable` (supermachine 0.7.108, `tools/kvm-entry`), entered through a 33-instruction PVH
  stub that switches to the runtime's long-mode state, `-M microvm,acpi=off`, the runtime's
  cold-boot command line. No firmware and no real-mode setup code run, so this is closer to what a
  KVM user of the runtime sees than the microvm rows. Launch → the first answered `/bin/true` exec.
* **Snapshot footprint** (section `footprint`): `footprint` boots the same supermachine flow
  (256 MiB, the same busybox on both sides, `quiet`), waits for agent ready (and, for the second
  flow, runs `python3 -c 'import json, ssl'` through the agent on the workload suite's Debian
  root), settles 500 ms, stops QEMU as a VMM stops its vCPUs, reads guest RAM from QEMU's memory
  file and counts 4 KiB pages with any non-zero byte (the supermachine runtime's snapshot keeps
  exactly those) and distinct non-zero contents (a deduplicating store). The mixes swap kernel
  and agent to show each payload's share. Owners come from the guest's `/proc/kpageflags` read
  right after (where the kernel has it): [SNAPSHOTS.md](SNAPSHOTS.md).
* **Lowest RAM**: `bench-guest --min-mem`, bisecting between 8 and 512 MiB for the lowest size
  at which 3 boots out of 3 reach an agent that answers `/bin/true` (near the limit single boots
  pass or fail by chance; before 2026-12-01 the figure was the luckier of two boots).
* **Agent**: RSS of PID 1 from `/proc/1/status` in the booted guest (after readiness, idle);
  exec round trip = connect through hybrid vsock + REQUEST → EXIT of `/bin/true`, one connection
  per exec, spread over the timed boots. `--exec-stdio` mode: `scripts/bench/agent_stdio.py` on
  the host in `unshare --pid --fork --mount-proc`, process start + REQUEST → EXIT.
"""
if notes:
    doc += "\n## Notes\n\n" + "\n".join(f"* {n}" for n in notes) + "\n"

os.makedirs(a.out, exist_ok=True)
json.dump(res, open(os.path.join(a.out, "results.json"), "w"), indent=1)
open(os.path.join(a.out, "BENCHMARKS.md"), "w").write(doc)
if svg_text:
    open(os.path.join(a.out, "bench-boot.svg"), "w").write(svg_text)
print(table)
if detail:
    print("\n" + detail)
for n in notes:
    print("note:", n)
print(f"\nJSON: {os.path.join(a.out, 'results.json')}; report: {os.path.join(a.out, 'BENCHMARKS.md')}")
if a.docs:
    shutil.copy(os.path.join(a.out, "BENCHMARKS.md"), os.path.join(a.docs, "BENCHMARKS.md"))
    # The figures the README's table is drawn from (scripts/bench/readme_table.py checks it).
    slim = {k: res[k] for k in ("upstream_version", "meta", "table", "figures")}
    with open(os.path.join(a.docs, "bench-results.json"), "w") as f:
        json.dump(slim, f, indent=1, ensure_ascii=False)
        f.write("\n")
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "readme_table.py"),
                    "--write", "--results", os.path.join(a.docs, "bench-results.json"),
                    "--readme", os.path.join(a.repo, "README.md")], check=True)
    if svg_text:
        shutil.copy(os.path.join(a.out, "bench-boot.svg"), os.path.join(a.docs, "bench-boot.svg"))
    print(f"wrote {a.docs}/BENCHMARKS.md" + (" and bench-boot.svg" if svg_text else ""))
