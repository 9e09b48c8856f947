#!/usr/bin/env python3
"""The table of scripts/image-test.sh: image source x check, one column per kernel.

    report.py --arch A --tier T --out DIR --host-report FILE [--docs docs/WORKLOADS.md]
              SOURCE/KERNEL=results.json...

Each results.json is what the `workload` harness binary wrote for one image and one kernel.
Writes DIR/results.json and DIR/table.md, prints the table (and the output of every check that
failed on ours), and with --docs replaces this arch and tier's section of the docs file.
Exit status 1 when `conform` or `volume` fails on "ours": those differences are our kernel's.
"""
import argparse
import datetime
import json
import os
import re
import sys

MUST_PASS = ("conform", "volume")
MEANING = {
    "conform": "the guest reads exactly what the image holds",
    "source": "... and that equals the tree the image was baked from",
    "volume": "the runtime's ext4 volume written and read back",
}


def first_line(detail):
    for line in detail.splitlines():
        if line.startswith("summary:"):
            return line[len("summary: "):]
    lines = [l for l in detail.splitlines() if l.strip()]
    return lines[-1][:160] if lines else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", required=True)
    ap.add_argument("--tier", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--host-report", required=True)
    ap.add_argument("--docs")
    ap.add_argument("runs", nargs="+", help="SOURCE/KERNEL=results.json")
    a = ap.parse_args()

    runs = {}
    for r in a.runs:
        key, path = r.split("=", 1)
        source, kernel = key.split("/", 1)
        try:
            runs[(source, kernel)] = json.load(open(path))
        except (OSError, ValueError) as e:
            runs[(source, kernel)] = {"checks": [], "error": f"no results ({e}): the guest did not boot?"}
    sources = list(dict.fromkeys(s for s, _ in runs))
    kernels = [k for k in ("published", "ours") if any(k == kk for _, kk in runs)]
    releases = {k: next((runs[(s, k)].get("kernel_release") for s in sources if runs[(s, k)].get("kernel_release")), "?")
                for k in kernels}

    failures = []

    def cell(source, kernel, check):
        run = runs.get((source, kernel), {})
        c = next((c for c in run.get("checks", []) if c["name"] == check), None)
        if c is None:
            ok, note = False, run.get("error", "not run")
        else:
            ok, note = c["ok"], "" if c["ok"] else first_line(c["detail"])
        if kernel == "ours" and check in MUST_PASS and not ok:
            failures.append((source, check, c["detail"] if c else note))
        if ok:
            return "pass"
        if check not in MUST_PASS:
            return f"differs: {note}"
        return f"**FAIL**: {note}" if kernel == "ours" else f"fail: {note}"

    lines = [f"Arch {a.arch}, tier {a.tier}, {datetime.date.today().isoformat()}. Kernels: "
             + ", ".join(f"{k} `{releases[k]}`" for k in kernels) + ".", "",
             "| image source | check | " + " | ".join(kernels) + " |",
             "|---|---|" + "---|" * len(kernels)]
    for s in sources:
        for check in ("conform", "source", "volume"):
            lines.append(f"| {s} | {check}: {MEANING[check]} | "
                         + " | ".join(cell(s, k, check) for k in kernels) + " |")
    host = open(a.host_report).read()
    writer_lines = []
    for block in host.split("## ")[1:]:
        name = block.split(":", 1)[0]
        summary = next((l[len("summary: "):] for l in block.splitlines() if l.startswith("summary:")), None)
        writer_lines.append(f"- {name}: " + (summary if summary else "holds the source tree exactly"))
    lines += ["", "What each image holds against the source tree (read on the host with unsquashfs: "
              "the writer's doing, not the kernel's):", ""] + writer_lines
    table = "\n".join(lines) + "\n"

    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "table.md"), "w").write(table)
    json.dump({"arch": a.arch, "tier": a.tier,
               "runs": {f"{s}/{k}": v for (s, k), v in runs.items()}},
              open(os.path.join(a.out, "results.json"), "w"), indent=1)
    print(table)
    for source, check, detail in failures:
        print(f"--- ours, {source} image, {check} failed:\n{detail[-3000:]}\n", file=sys.stderr)
    if a.docs:
        begin, end = f"<!-- image-test {a.arch} {a.tier} -->", f"<!-- end image-test {a.arch} {a.tier} -->"
        doc = open(a.docs).read()
        block = f"{begin}\n{table}{end}"
        if begin in doc:
            doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
        else:
            doc = doc.rstrip("\n") + f"\n\n### Image conformance, {a.arch}, {a.tier} tier\n\n{block}\n"
        open(a.docs, "w").write(doc)
    if failures:
        print("image-test: fails on our kernel: " + ", ".join(f"{s} {c}" for s, c, _ in failures), file=sys.stderr)
        sys.exit(1)


main()
