#!/usr/bin/env python3
"""Checks the docs that list code against the code, where that is cheap (run by scripts/test.sh):
every crate folder is in the README's crate table, and every integration test file is named in
TESTING.md (by its path, or by its crate's `tests/` folder). Standard library only."""
import glob, os, re, sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
read = lambda p: open(os.path.join(ROOT, p)).read()
problems = []

readme = read("README.md")
table = readme[readme.index("## Crates"):]
table = table[:table.index("\n## ", 4)]
for d in sorted(glob.glob(os.path.join(ROOT, "crates", "*", "Cargo.toml"))):
    name = re.search(r'^name = "([^"]+)"', open(d).read(), re.M).group(1)
    short = "-" + name.split("-")[-1]
    if f"`{name}`" not in table and f"[`{short}`]" not in table:
        problems.append(f"README.md's crate table does not list {name}")

testing = read("TESTING.md")
for t in sorted(glob.glob(os.path.join(ROOT, "crates", "*", "tests", "*.rs"))):
    rel = os.path.relpath(t, os.path.join(ROOT, "crates"))
    crate, _, file = rel.split(os.sep)
    if rel not in testing and f"{crate}/tests/`" not in testing and f"`{file}`" not in testing:
        problems.append(f"TESTING.md's test table does not name {rel}")

for p in problems:
    print(f"FAIL {p}")
if problems:
    sys.exit("     fix: add it where the others are described")
print("ok   README.md's crate table and TESTING.md's test table name every crate and test file")
