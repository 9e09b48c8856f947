#!/usr/bin/env python3
"""Merges the per-kernel results of scripts/workload-test.sh into one table.

    report.py --arch A --tier T --packages FILE --out DIR [--docs docs/WORKLOADS.md] LABEL=JSON...

Writes DIR/results.json and DIR/table.md, prints the table, and with --docs replaces the
section for this arch and tier in the docs file. Exit status 1 when a check fails on "ours"
and passes on "published" (both given), or fails on "ours" (only ours given).
"""
import argparse, json, os, re, sys, datetime

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--tier", required=True)
    ap.add_argument("--packages", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--docs")
    ap.add_argument("--checks", help="NAME,… : report only these rows (e.g. the tier's current list after a rename)")
    ap.add_argument("runs", nargs="+", help="LABEL=results.json (a label given again: its checks replace the earlier ones, e.g. a rerun)")
    a = ap.parse_args()
    runs = {}
    for r in a.runs:
        label, path = r.split("=", 1)
        j = json.load(open(path))
        if label in runs:
            again = {c["name"]: c for c in j["checks"]}
            runs[label]["checks"] = [again.pop(c["name"], c) for c in runs[label]["checks"]] + list(again.values())
        else:
            runs[label] = j
    labels = [l for l in ("published", "ours") if l in runs]
    names = []
    for l in labels:
        for c in runs[l]["checks"]:
            if c["name"] not in names:
                names.append(c["name"])
    if a.checks:
        keep = a.checks.split(",")
        names = [n for n in keep if any(n == c["name"] for l in labels for c in runs[l]["checks"])]
        for l in labels:
            runs[l]["checks"] = [c for c in runs[l]["checks"] if c["name"] in keep]
    by = {l: {c["name"]: c for c in runs[l]["checks"]} for l in labels}

    def cell(l, n):
        c = by[l].get(n)
        if c is None:
            return "—"
        return ("pass" if c["ok"] else "**FAIL**") + f" ({c['secs']:.0f} s)"

    regressions = []
    for n in names:
        ours = by.get("ours", {}).get(n)
        pub = by.get("published", {}).get(n)
        if ours is not None and not ours["ok"] and (pub is None or pub["ok"]):
            regressions.append(n)
    pkgs = open(a.packages).read().splitlines()
    keyp = [p for p in pkgs if p.split()[0] in ("python3.11", "docker.io", "iptables", "nftables", "util-linux",
                                                   "qemu-user-static", "bpftool", "e2fsprogs", "iproute2", "containerd", "runc")]
    lines = [f"Arch {a.arch}, tier {a.tier}, {datetime.date.today().isoformat()}. Kernels: " +
             ", ".join(f"{l} `{runs[l].get('kernel_release', '')}`" for l in labels) + ".",
             f"Root file system: Debian bookworm via mmdebstrap, {len(pkgs)} packages; key versions: " +
             ", ".join(f"{p.split()[0]} {p.split()[1]}" for p in keyp) + ".", "",
             "| check | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(cell(l, n) for l in labels) + " |")
    passed = {l: sum(1 for c in runs[l]["checks"] if c["ok"]) for l in labels}
    lines.append("| **passed** | " + " | ".join(f"**{passed[l]} / {len(runs[l]['checks'])}**" for l in labels) + " |")
    table = "\n".join(lines) + "\n"
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "table.md"), "w").write(table)
    json.dump({"arch": a.arch, "tier": a.tier, "packages": pkgs, "runs": runs, "regressions": regressions},
              open(os.path.join(a.out, "results.json"), "w"), indent=1)
    print(table)
    for l in labels:
        for c in runs[l]["checks"]:
            if not c["ok"] and l == "ours":
                print(f"--- {l} {c['name']} failed; output tail:\n{c['detail'][-1500:]}\n", file=sys.stderr)
    if a.docs:
        begin, end = f"<!-- workload {a.arch} {a.tier} -->", f"<!-- end workload {a.arch} {a.tier} -->"
        doc = open(a.docs).read() if os.path.exists(a.docs) else "# Workload conformance\n"
        block = f"{begin}\n{table}{end}"
        if begin in doc:
            doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
        else:
            doc = doc.rstrip("\n") + f"\n\n## {a.arch}, {a.tier} tier\n\n{block}\n"
        open(a.docs, "w").write(doc)
    if regressions:
        print("workload-test: fails on ours where published passes (or fails on ours): " + ", ".join(regressions),
              file=sys.stderr)
        sys.exit(1)

main()
