#!/usr/bin/env python3
"""The README's comparison table, taken row by row from the last full `scripts/bench.sh` run
(docs/bench-results.json, written with docs/BENCHMARKS.md), so the README cannot show a figure
the benchmark report does not. Standard library only.

    readme_table.py --write    rewrite the table under the marker in README.md
    readme_table.py --check    exit 1 if README.md's table is not what the results give
"""
import argparse, json, os, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MARKER = "<!-- scripts/bench/readme_table.py -->"
# (README label, the start of the BENCHMARKS.md figure it shows)
ROWS = [
    ("x86_64 consumer download (facade + arch + build crate)", "x86_64 consumer downloads"),
    ("aarch64 consumer download", "aarch64 consumer downloads"),
    ("x86_64 kernel payload (xz)", "x86_64 kernel, compressed"),
    ("aarch64 kernel payload (xz)", "aarch64 kernel, compressed"),
    ("x86_64 launch → agent ready, runtime-style boot (min / median)", "x86_64 microvm: supermachine flow, launch → agent ready"),
    ("x86_64 launch → agent ready, the runtime's own KVM loader", "launch → agent ready (kernel differs"),
    ("aarch64 launch → agent ready, runtime-style boot", "aarch64 virt: supermachine flow, launch → agent ready"),
    ("x86_64 kernel's own boot time above a `make tinyconfig` kernel", "… of it above the floor"),
    ("lowest RAM that boots and answers an exec, x86_64", "x86_64 microvm: lowest RAM"),
    ("lowest RAM that boots and answers an exec, aarch64", "aarch64 virt: lowest RAM"),
    ("guest RAM a snapshot keeps at agent ready, x86_64 (non-zero 4 KiB pages)", "x86_64 non-zero pages at agent ready"),
    ("guest RAM a snapshot keeps at agent ready, aarch64", "aarch64 non-zero pages at agent ready"),
    ("copies of the kernel in a binary using `KERNEL_BYTES` from two crates", "copies of the kernel in the binary"),
    ("x86_64 agent binary (decoded / xz)", "x86_64 agent binary"),
    ("exec `true` over vsock, x86_64 (p50 / p99)", "x86_64 exec `true` over vsock"),
    ("exec `true` over vsock, aarch64 (p50 / p99)", "aarch64 exec `true` over vsock"),
    ("cold `cargo build` of a consumer (min / median)", "cold `cargo build` of a consumer"),
]


def render(results):
    table = results["table"]
    out = [f"| | ours | {results.get('upstream_version', '0.7.70')} | ratio |", "|---|---:|---:|---:|"]
    for label, prefix in ROWS:
        row = next((r for r in table if r["figure"].startswith(prefix)), None)
        if row is None:
            sys.exit(f"readme_table.py: docs/bench-results.json has no figure starting {prefix!r}; "
                     "run a full scripts/bench.sh (or fix ROWS in scripts/bench/readme_table.py)")
        out.append(f"| {label} | {row['ours']} | {row['upstream']} | {row['ratio']} |")
    meta = results.get("meta", {})
    out.append("")
    out.append(f"From the run of {meta.get('date', '?')} (commit {meta.get('commit', '?')}).")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", action="store_true")
    g.add_argument("--check", action="store_true")
    ap.add_argument("--results", default=os.path.join(ROOT, "docs", "bench-results.json"))
    ap.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    a = ap.parse_args()
    text = open(a.readme).read()
    if MARKER not in text:
        sys.exit(f"readme_table.py: {a.readme} has no {MARKER} line")
    head, tail = text.split(MARKER, 1)
    # The generated block runs from the marker to the first blank line after its last line.
    rest = tail.lstrip("\n")
    if rest.startswith("|"):
        end = rest.find("\n\n", rest.find("From the run of"))
        rest = rest[end + 2:] if end >= 0 else ""
    want = head + MARKER + "\n" + render(json.load(open(a.results))) + "\n\n" + rest
    if a.write:
        open(a.readme, "w").write(want)
        print(f"wrote the comparison table in {a.readme}")
    elif want != text:
        sys.exit(f"FAIL {a.readme}'s comparison table is not the last benchmark run's "
                 f"({a.results})\n     fix: python3 scripts/bench/readme_table.py --write")
    else:
        print(f"ok   {a.readme}'s comparison table matches {os.path.relpath(a.results, ROOT)}")


main()
