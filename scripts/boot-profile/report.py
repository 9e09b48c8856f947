#!/usr/bin/env python3
"""Summarises the boot-profile timelines (target/boot-profile/<arch>-<mode>.jsonl): medians per
phase and configuration, the attribution of each ours-vs-published difference to the kernel or
the userland (agent + busybox), the slowest initcalls per kernel, the floor; writes JSON, a
markdown table file and an SVG chart; with --docs also docs/BOOT-PROFILE.md's generated section
and docs/boot-profile.svg. Run by scripts/boot-profile.sh."""
import argparse, datetime, hashlib, json, os, platform, re, statistics, subprocess
from html import escape

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--threshold-ms", type=float, default=1.0)
ap.add_argument("--upstream", default="0.7.70")
ap.add_argument("--repo", required=True)
ap.add_argument("--docs")
a = ap.parse_args()

CONFIGS = ["ours", "published", "mix-kernel", "mix-userland"]
CONFIG_LABEL = {"ours": "ours", "published": "published", "mix-kernel": "our kernel + published userland",
                "mix-userland": "published kernel + our userland"}
MODES = ["icount", "wall"]


def median(v):
    return statistics.median(v) if v else None


def load(arch, mode):
    p = os.path.join(a.out, f"{arch}-{mode}.jsonl")
    if not os.path.exists(p):
        return {}
    runs = {}
    for line in open(p):
        d = json.loads(line)
        runs.setdefault(d["config"], []).append(d)
    return runs


def sha256(path):
    try:
        return hashlib.sha256(open(path, "rb").read()).hexdigest()
    except OSError:
        return None


arches = [x for x in ("x86_64", "aarch64") if any(os.path.exists(os.path.join(a.out, f"{x}-{m}.jsonl")) for m in MODES)]
res = {"meta": {}, "arches": {}}
try:
    commit = subprocess.run(["git", "-C", a.repo, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    commit = "?"
qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
res["meta"] = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit,
               "qemu": qemu, "host": f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}",
               "threshold_ms": a.threshold_ms, "upstream": a.upstream}

for arch in arches:
    A = res["arches"][arch] = {"payloads": {}, "modes": {}}
    for side in ("ours", "published"):
        for n in ("kernel", "supermachine-agent", "busybox"):
            p = os.path.join(a.out, "payloads", side, arch, n)
            if os.path.exists(p):
                A["payloads"].setdefault(side, {})[n] = {"sha256": sha256(p), "bytes": os.path.getsize(p)}
    for mode in MODES:
        runs = load(arch, mode)
        if not runs:
            continue
        M = A["modes"][mode] = {}
        for cfg, boots in runs.items():
            order = [p[0] for p in boots[0]["phases"]]
            # icount: the minimum over the boots. Instruction counts repeat; what varies is time
            # spent waiting for the host (disk I/O, in real time or as a jump to the next timer),
            # which can only add, so the minimum is the guest's own work. Wall: the median.
            agg = (lambda v: min(v) if v else None) if mode == "icount" else median
            ph = {n: agg([dict((p[0], p[1]) for p in b["phases"]).get(n) for b in boots if n in dict((p[0], p[1]) for p in b["phases"])]) for n in order}
            ev = {}
            for b in boots:
                for n, t in b["events"]:
                    ev.setdefault(n, []).append(t)
            ev = {n: agg(v) for n, v in ev.items()}
            # Per-boot totals, then the minimum / median over the boots (not sums of per-phase figures).
            def seg(b, x, y):
                e = dict((n, t) for n, t in b["events"])
                return e[y] - e[x] if x in e and y in e else None
            tot = {k: agg([v for v in (seg(b, x, y) for b in boots) if v is not None]) for k, (x, y) in {
                "launch_to_init": ("launch", "init-start"),
                "init_to_listening": ("init-start", "agent-listening"),
                "init_to_first_exec": ("init-start", "first-exec"),
                "launch_to_listening": ("launch", "agent-listening"),
                "launch_to_first_exec": ("launch", "first-exec")}.items()}
            ics = {}
            for b in boots:
                for c in b["initcalls"]:  # [name, start_ms, usecs, reported_usecs]
                    ics.setdefault(c[0], []).append(c[2])
            ic = sorted(((n, agg(v)) for n, v in ics.items()), key=lambda x: -x[1])
            notes = {}
            for b in boots:
                for text, t in b.get("notes", []):
                    if "crng init done" in text:
                        notes.setdefault("crng_init_done_ms", []).append(t)
            phase_runs = {n: [dict((p[0], p[1]) for p in b["phases"]).get(n) for b in boots] for n in order}
            M[cfg] = {"runs": len(boots), "phases": ph, "phase_runs": phase_runs, "phase_order": order, "events": ev, "totals": tot,
                      "initcalls_over_threshold": [[n, u] for n, u in ic if u >= a.threshold_ms * 1000],
                      "initcalls_total_us": sum(u for _, u in ic), "initcall_count": len(ic),
                      "crng_init_done_ms": median(notes.get("crng_init_done_ms", [])),
                      "spread_ms": (lambda v: max(v) - min(v) if len(v) > 1 else None)(
                          [dict((n, t) for n, t in b["events"]).get("first-exec", 0) for b in boots]),
                      "totals_min": {k: min([v for v in (seg(b, x, y) for b in boots) if v is not None], default=None) for k, (x, y) in {
                          "launch_to_init": ("launch", "init-start"), "init_to_listening": ("init-start", "agent-listening"),
                          "init_to_first_exec": ("init-start", "first-exec"), "launch_to_first_exec": ("launch", "first-exec")}.items()},
                      "cmdline": boots[0].get("cmdline"), "icount": boots[0].get("icount")}

# Decompression split (x86_64): the same kernel through PVH (no decompressor) vs the bzImage.
for arch in arches:
    p = os.path.join(a.out, f"{arch}-pvh.jsonl")
    M = res["arches"][arch]["modes"].get("icount", {})
    if not os.path.exists(p) or not M:
        continue
    pre = lambda b: b["phases"][0][1]
    by = {}
    for line in open(p):
        d = json.loads(line)
        by.setdefault(d["config"].removesuffix("-pvh"), []).append(d)
    split = {}
    for side, boots in by.items():
        bz = M.get(side)
        if not bz:
            continue
        pvh_pre = min(pre(b) for b in boots)
        bz_pre = bz["phases"][bz["phase_order"][0]]
        split[side] = {"pre_clock_bzimage_ms": bz_pre, "pre_clock_pvh_ms": pvh_pre, "decompression_ms": bz_pre - pvh_pre,
                       "pvh_launch_to_listening_ms": min([dict((n, t) for n, t in b["events"])["agent-listening"] for b in boots]),
                       "runs": len(boots)}
    res["arches"][arch]["decompression"] = split

floor_path = os.path.join(a.out, "floor.json")
if os.path.exists(floor_path):
    res["floor"] = json.load(open(floor_path))


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def attribution(M, name, key="phases"):
    """Kernel's and userland's share of ours − published (both average two estimates; they add up)."""
    g = lambda c: M.get(c, {}).get(key, {}).get(name)
    o, p, mk, mu = g("ours"), g("published"), g("mix-kernel"), g("mix-userland")
    if None in (o, p, mk, mu):
        return None, None, (o - p if None not in (o, p) else None)
    k = ((o - mu) + (mk - p)) / 2
    u = ((o - mk) + (mu - p)) / 2
    return k, u, o - p


GROUPS = [
    ("VMM + firmware + decompression + early setup", "#4e79a7", ["launch"]),
    ("early kernel", "#a0cbe8", ["clock"]),
    ("initcalls", "#f28e2b", ["first-initcall"]),
    ("last initcall → /init", "#ffbe7d", ["last-initcall"]),
    ("/init: setup, mounts, overlay", "#59a14f", ["init-start", "busybox-install", "mount-proc-dev-sys", "cmdline-clock", "net-lo",
                                                   "dev-shm-links", "squashfs-layers", "overlay", "etc-files", "volumes"]),
    ("/init: copy agent + busybox, launch script", "#8cd17d", ["copy-agent-busybox", "launch-script"]),
    ("move mounts, switch_root, launch", "#b6992d", ["move-mounts", "switch-root", "launch-start"]),
    ("agent start → listening", "#e15759", ["agent-exec"]),
    ("listening → first exec answered", "#bab0ac", ["agent-listening"]),
]


def event_phase(M, cfg):
    """phase medians keyed by the event each starts at."""
    d = M[cfg]
    order = ["launch", "clock", "first-initcall", "last-initcall", "init-start"] + [
        "busybox-install", "mount-proc-dev-sys", "cmdline-clock", "net-lo", "dev-shm-links", "squashfs-layers", "overlay",
        "etc-files", "volumes", "copy-agent-busybox", "launch-script", "move-mounts", "switch-root", "launch-start",
        "agent-exec", "agent-listening"]
    ev = d["events"]
    names = [n for n in order if n in ev] + ["first-exec"]
    return {names[i]: ev[names[i + 1]] - ev[names[i]] for i in range(len(names) - 1) if names[i + 1] in ev}


def svg():
    panels = []
    for arch in arches:
        for mode in MODES:
            M = res["arches"][arch]["modes"].get(mode)
            if not M:
                continue
            bars = []
            for cfg in CONFIGS:
                if cfg not in M:
                    continue
                ep = event_phase(M, cfg)
                segs = []
                for label, color, evs in GROUPS:
                    segs.append((label, color, sum(ep.get(e, 0) for e in evs)))
                bars.append((cfg, segs))
            panels.append((arch, mode, bars))
    if not panels:
        return None
    W, left, right, top, bh, gap = 980, 250, 70, 60, 22, 8
    leg_h = 20 * ((len(GROUPS) + 2) // 3)
    H = top + leg_h + sum(36 + len(b) * (bh + gap) for _, _, b in panels) + 30
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="#fff"/>',
         f'<text x="20" y="24" font-size="16" font-weight="bold">Boot profile: QEMU launch → agent listening / first exec (ms; icount minima, wall medians)</text>',
         f'<text x="20" y="42" fill="#555">icount = guest-virtual time under -icount shift=0 (1 ns per guest instruction, repeatable); '
         f'wall = plain TCG on a shared 2-core host</text>']
    for i, (label, color, _) in enumerate(GROUPS):
        x, y = 20 + (i % 3) * 320, top + (i // 3) * 20
        o.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{color}"/><text x="{x + 18}" y="{y}">{escape(label)}</text>')
    y = top + leg_h + 10
    for arch, mode, bars in panels:
        o.append(f'<text x="20" y="{y + 14}" font-weight="bold">{arch} — {mode}</text>')
        y += 24
        mx = max(sum(s[2] for s in segs) for _, segs in bars) or 1
        scale = (W - left - right) / mx
        for cfg, segs in bars:
            o.append(f'<text x="{left - 8}" y="{y + bh * 0.72:.1f}" text-anchor="end">{escape(CONFIG_LABEL[cfg])}</text>')
            x = left
            for label, color, v in segs:
                w = max(v, 0) * scale
                o.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bh}" fill="{color}"><title>{escape(label)}: {v:.1f} ms</title></rect>')
                if w > 34:
                    o.append(f'<text x="{x + w / 2:.1f}" y="{y + bh * 0.72:.1f}" text-anchor="middle" font-size="11">{v:.0f}</text>')
                x += w
            o.append(f'<text x="{x + 6:.1f}" y="{y + bh * 0.72:.1f}">{sum(s[2] for s in segs):.0f}</text>')
            y += bh + gap
        y += 12
    m = res["meta"]
    o.append(f'<text x="20" y="{H - 10}" fill="#555" font-size="11">{escape(m["date"])}, commit {escape(m["commit"])}, '
             f'{escape(m["qemu"])}; scripts/boot-profile.sh</text>')
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ---- markdown ---------------------------------------------------------------------------------
md = []
m = res["meta"]
md.append(f"Generated by `scripts/boot-profile.sh` ({m['date']}, commit {m['commit']}; {m['qemu']}; host {m['host']}).")
for arch in arches:
    A = res["arches"][arch]
    md.append(f"\n### {arch}\n")
    for side, pl in A["payloads"].items():
        md.append(f"- {side} payloads: " + ", ".join(f"{n} `{v['sha256'][:16]}…` ({v['bytes'] / 1048576:.2f} MiB)" for n, v in pl.items()))
    if "published" in A["payloads"] and "busybox" not in A["payloads"]["published"]:
        md.append("- the published aarch64 crate has no busybox: every configuration uses ours (so \"userland\" = the agent)")
    for mode in MODES:
        M = A["modes"].get(mode)
        if not M:
            continue
        cfgs = [c for c in CONFIGS if c in M]
        runs = ", ".join(f"{c} {M[c]['runs']}" for c in cfgs)
        unit = (f"guest-virtual ms (`-icount {M[cfgs[0]]['icount']}`), minimum over the boots" if mode == "icount" else "wall-clock ms, median")
        md.append(f"\n#### {arch}, {unit} (boots: {runs})\n")
        hdr = "| phase | " + " | ".join(CONFIG_LABEL[c] for c in cfgs) + " | ours − published | of which kernel | of which userland |"
        md.append(hdr)
        md.append("|---|" + "---:|" * (len(cfgs) + 3))
        for name in M[cfgs[0]]["phase_order"]:
            k, u, d = attribution(M, name)
            vals = " | ".join(fmt(M[c]["phases"].get(name)) for c in cfgs)
            note = " (incl. ≤5 ms of host probe interval)" if mode == "icount" and name.startswith("listening") else ""
            md.append(f"| {name}{note} | {vals} | {fmt(d)} | {fmt(k)} | {fmt(u)} |")
        for key, label in [("launch_to_init", "**launch → /init**"), ("init_to_listening", "**/init → agent listening**"),
                           ("init_to_first_exec", "**/init → first exec answered**"), ("launch_to_listening", "**launch → agent listening**"),
                           ("launch_to_first_exec", "**launch → first exec answered**")]:
            k, u, d = attribution(M, key, "totals")
            vals = " | ".join(fmt(M[c]["totals"].get(key)) for c in cfgs)
            md.append(f"| {label} | {vals} | {fmt(d)} | {fmt(k)} | {fmt(u)} |")
        if mode == "wall":
            md.append("| *minimum over the boots:* | | | | | | | |")
            for key, label in [("launch_to_init", "launch → /init (min)"), ("init_to_listening", "/init → agent listening (min)"),
                               ("init_to_first_exec", "/init → first exec answered (min)"), ("launch_to_first_exec", "launch → first exec answered (min)")]:
                k, u, d = attribution(M, key, "totals_min")
                vals = " | ".join(fmt(M[c]["totals_min"].get(key)) for c in cfgs)
                md.append(f"| {label} | {vals} | {fmt(d)} | {fmt(k)} | {fmt(u)} |")
        sp = ", ".join(f"{c} {fmt(M[c]['spread_ms'], 2)} ms" for c in cfgs if M[c]["spread_ms"] is not None)
        if sp:
            what = "launch → first exec answered"
            md.append(f"\nSpread (max − min) of {what} over the boots: {sp}.")
        if mode == "icount":
            # Phases whose boots disagree: waits for the host (disk I/O), counted in real time
            # (sleep=on) or as a jump to the next guest timer deadline (sleep=off).
            jumpy = []
            for c in cfgs:
                for name in M[c]["phase_order"]:
                    v = M[c]["phase_runs"].get(name, [])
                    if len(v) > 1 and max(v) - min(v) > 1.0:
                        jumpy.append(f"{c} / {name} ({', '.join(fmt(x) for x in v)})")
            if jumpy:
                md.append("\nPhases whose boots disagree by more than 1 ms (waits for the host, which icount cannot make "
                          "deterministic; the table takes the minimum): " + "; ".join(jumpy) + ".")
        crng = ", ".join(f"{c} {fmt(M[c]['crng_init_done_ms'])} ms" for c in cfgs if M[c]["crng_init_done_ms"] is not None)
        if crng:
            md.append(f"`random: crng init done` at: {crng}.")
    if A.get("decompression"):
        md.append(f"\n#### {arch}: decompression (icount; the same kernel booted through PVH from its ELF vmlinux, no decompressor)\n")
        md.append("| kernel | before the printk clock, bzImage | same, PVH | decompression (+ bzImage entry path) |")
        md.append("|---|---:|---:|---:|")
        for side, v in A["decompression"].items():
            md.append(f"| {side} | {fmt(v['pre_clock_bzimage_ms'])} | {fmt(v['pre_clock_pvh_ms'])} | {fmt(v['decompression_ms'])} |")
        if "published" not in A["decompression"]:
            md.append("\nThe published x86_64 kernel has no PVH entry (CONFIG_PVH off), so its decompression is not split out.")
    M = A["modes"].get("icount") or A["modes"].get("wall")
    if M:
        mode = "icount" if A["modes"].get("icount") else "wall"
        md.append(f"\n#### {arch}: initcalls of at least {a.threshold_ms:g} ms ({mode}, from printk times, {'minimum' if mode == 'icount' else 'median'} over the boots)\n")
        for cfg, label in (("ours", "our kernel"), ("published", "published kernel")):
            if cfg not in M:
                continue
            d = M[cfg]
            md.append(f"- **{label}** ({d['initcall_count']} initcalls, {d['initcalls_total_us'] / 1000:.1f} ms in all): " +
                      (", ".join(f"`{n}` {u / 1000:.1f}" for n, u in d["initcalls_over_threshold"]) or "none"))
if "floor" in res:
    f = res["floor"]
    md.append("\n### Floor: the same x86_64 VMM launch to a minimal /init\n")
    md.append(f"QEMU launch → `/init` (the counter helper as `/init`, no initcall_debug) with a `make tinyconfig` kernel "
              f"({f.get('kernel_bytes', 0) / 1048576:.2f} MiB bzImage, sha256 `{(f.get('kernel_sha256') or '')[:16]}…`) and, for "
              "comparison, our and the published kernel; icount minimum, wall median of interleaved boots.\n")
    md.append("| kernel | icount ms | wall ms (median) |")
    md.append("|---|---:|---:|")
    for name, v in f.get("kernels", {"floor": f}).items():
        md.append(f"| {'tinyconfig (floor)' if name == 'floor' else name} | {fmt(v.get('icount_ms'))} | {fmt(v.get('wall_ms_median'))} |")
tables = "\n".join(md) + "\n"

os.makedirs(a.out, exist_ok=True)
json.dump(res, open(os.path.join(a.out, "boot-profile.json"), "w"), indent=1)
open(os.path.join(a.out, "BOOT-PROFILE.tables.md"), "w").write(tables)
s = svg()
if s:
    open(os.path.join(a.out, "boot-profile.svg"), "w").write(s)
print(tables)
if a.docs:
    doc = os.path.join(a.docs, "BOOT-PROFILE.md")
    begin, end = "<!-- boot-profile tables: begin (generated by scripts/boot-profile.sh --docs) -->", "<!-- boot-profile tables: end -->"
    text = open(doc).read() if os.path.exists(doc) else f"# Boot profile\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    text = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: f"{begin}\n{tables}{end}", text, flags=re.S)
    open(doc, "w").write(text)
    if s:
        open(os.path.join(a.docs, "boot-profile.svg"), "w").write(s)
    print(f"wrote {doc}" + (" and boot-profile.svg" if s else ""))
