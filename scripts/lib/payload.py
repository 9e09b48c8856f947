#!/usr/bin/env python3
"""Payload manifests: record a built payload, or check that every manifest is current.

A manifest (crates/supermachine-kernel-*/payload/manifest.toml) has one table per payload:

    [kernel]
    file = "kernel.xz"            # the committed, xz-compressed payload
    xz_sha256 = "..."             # sha256 of that .xz file
    sha256 = "..."                # sha256 of the decoded bytes (what the crate embeds)
    size = 3145728                # decoded size in bytes
    source = "..."                # exact public source (Debian package + version)
    toolchain = "..."             # compiler / packer versions used
    recipe = "scripts/kvm-x86_64-build.sh"
    inputs = "scripts/... scripts/kconfig/common/*.config ..."   # globs, repo-relative;
                                  # `lock:CRATE` = CRATE's dependency closure in Cargo.lock
    inputs_sha256 = "..."         # hash over the paths and contents of those inputs

`check` is cheap (no rebuild): it fails when a payload file does not match its hashes, or when
a recipe input changed without the payload being rebuilt (the inputs hash went stale).
The crate build helper reads the same file (only `key = "string"` / `key = int` lines).
"""
import argparse
import glob
import hashlib
import lzma
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIELD_ORDER = ["file", "xz_sha256", "sha256", "size", "source", "toolchain", "recipe",
               "inputs", "inputs_sha256"]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def expand_inputs(spec):
    files = set()
    for pattern in spec.split():
        matches = [p for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
                   if os.path.isfile(p)]
        if not matches:
            sys.exit(f"error: input pattern {pattern!r} matches no file")
        files.update(os.path.relpath(p, ROOT) for p in matches)
    # Build outputs never count as inputs.
    return sorted(f for f in files if "/target/" not in f and not f.startswith("target/"))


def lock_closure(crate):
    """The Cargo.lock entries `crate` depends on (itself included), as sorted text blocks.

    Hashing only this closure keeps a payload's inputs stable when unrelated workspace crates
    add or bump dependencies."""
    text = open(os.path.join(ROOT, "Cargo.lock"), encoding="utf-8").read()
    packages = {}
    for block in text.split("[[package]]")[1:]:
        name = re.search(r'^name = "([^"]+)"', block, re.M).group(1)
        version = re.search(r'^version = "([^"]+)"', block, re.M).group(1)
        deps = re.search(r"^dependencies = \[(.*?)\]", block, re.M | re.S)
        deps = re.findall(r'"([^"]+)"', deps.group(1)) if deps else []
        packages.setdefault(name, []).append((version, block.strip(), [d.split(" ")[0] for d in deps]))
    if crate not in packages:
        sys.exit(f"error: {crate} is not in Cargo.lock")
    seen, todo, blocks = set(), [crate], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for _version, block, deps in packages.get(name, []):
            blocks.append(block)
            todo.extend(deps)
    return sorted(blocks)


def inputs_sha256(spec):
    h = hashlib.sha256()
    for token in spec.split():
        if token.startswith("lock:"):
            for block in lock_closure(token[5:]):
                h.update(block.encode() + b"\n")
    spec = " ".join(t for t in spec.split() if not t.startswith("lock:"))
    for rel in expand_inputs(spec):
        h.update(rel.encode() + b"\0" + sha256_file(os.path.join(ROOT, rel)).encode() + b"\n")
    return h.hexdigest()


def parse(path):
    tables, current = {}, None
    if not os.path.exists(path):
        return tables
    for lineno, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[([A-Za-z0-9_-]+)\]", line)
        if m:
            current = tables.setdefault(m.group(1), {})
            continue
        m = re.fullmatch(r'([a-z0-9_]+)\s*=\s*(?:"([^"\\]*)"|(\d+))', line)
        if not m or current is None:
            sys.exit(f"error: {path}:{lineno}: expected [name] or key = \"value\"")
        current[m.group(1)] = m.group(2) if m.group(2) is not None else int(m.group(3))
    return tables


def write(path, tables):
    out = ["# Payload manifest. Written by scripts/lib/payload.py record; checked by",
           "# `scripts/lib/payload.py check` and by the crate's build script. Do not edit by hand.", ""]
    for name in sorted(tables):
        out.append(f"[{name}]")
        t = tables[name]
        for key in FIELD_ORDER + sorted(set(t) - set(FIELD_ORDER)):
            if key in t:
                v = t[key]
                out.append(f"{key} = {v}" if isinstance(v, int) else f'{key} = "{v}"')
        out.append("")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(out))
    os.replace(tmp, path)


def cmd_record(a):
    payload_dir = os.path.dirname(os.path.abspath(a.manifest))
    xz_path = os.path.join(payload_dir, a.file)
    decoded = lzma.open(xz_path).read()
    tables = parse(a.manifest)
    entry = {
        "file": a.file,
        "xz_sha256": sha256_file(xz_path),
        "sha256": hashlib.sha256(decoded).hexdigest(),
        "size": len(decoded),
        "source": a.source,
        "toolchain": a.toolchain,
        "recipe": a.recipe,
        "inputs": a.inputs,
        "inputs_sha256": inputs_sha256(a.inputs),
    }
    for kv in a.extra or []:
        k, _, v = kv.partition("=")
        entry[k] = v
    tables[a.name] = entry
    write(a.manifest, tables)
    print(f"recorded {a.name}: {a.file} {entry['xz_sha256'][:16]}… decoded {entry['size']} bytes "
          f"sha256 {entry['sha256'][:16]}…")


def cmd_check(a):
    manifests = a.manifests or sorted(glob.glob(os.path.join(ROOT, "crates/*/payload/manifest.toml")))
    problems = 0
    for m in manifests:
        payload_dir = os.path.dirname(os.path.abspath(m))
        for name, t in sorted(parse(m).items()):
            rel = os.path.relpath(m, ROOT)
            path = os.path.join(payload_dir, t["file"])
            if not os.path.exists(path):
                print(f"FAIL {rel} [{name}]: {t['file']} is missing"); problems += 1; continue
            got = sha256_file(path)
            if got != t["xz_sha256"]:
                print(f"FAIL {rel} [{name}]: {t['file']} sha256 is {got}, manifest says {t['xz_sha256']}")
                problems += 1
            if not a.skip_decode:
                data = lzma.open(path).read()
                if hashlib.sha256(data).hexdigest() != t["sha256"] or len(data) != t["size"]:
                    print(f"FAIL {rel} [{name}]: decoded {t['file']} does not match sha256/size")
                    problems += 1
            now = inputs_sha256(t["inputs"])
            if now != t["inputs_sha256"]:
                print(f"FAIL {rel} [{name}]: the inputs of {t['recipe']} changed since {t['file']} "
                      f"was built (inputs_sha256 {now[:16]}… != recorded {t['inputs_sha256'][:16]}…)\n"
                      f"     fix: rerun {t['recipe']} and commit the new payload and manifest")
                problems += 1
            else:
                print(f"ok   {rel} [{name}]")
    readme = readme_table_problem()
    if readme:
        print(f"FAIL {readme}")
        problems += 1
    if problems:
        sys.exit(f"{problems} manifest problem(s)")


README_MARKER = "<!-- scripts/lib/payload.py table -->"


def payload_table():
    """Markdown table of every payload (the README's copy is checked against it)."""
    rows = ["| crate | payload | .xz bytes | decoded bytes | sha256 (decoded) | source |",
            "|---|---|---:|---:|---|---|"]
    for m in sorted(glob.glob(os.path.join(ROOT, "crates/*/payload/manifest.toml"))):
        crate = os.path.basename(os.path.dirname(os.path.dirname(m)))
        for name, t in sorted(parse(m).items()):
            xz = os.path.getsize(os.path.join(os.path.dirname(m), t["file"]))
            rows.append(f"| {crate} | {name} | {xz:,} | {t['size']:,} | `{t['sha256'][:16]}…` | {t['source']} |")
    return "\n".join(rows)


def readme_table_problem():
    """None if README.md's payload table is current, else what to do."""
    readme = os.path.join(ROOT, "README.md")
    if not os.path.exists(readme):
        return None
    text = open(readme, encoding="utf-8").read()
    if README_MARKER not in text:
        return None
    after = text.split(README_MARKER, 1)[1].lstrip("\n")
    current = after.split("\n\n", 1)[0].strip()
    if current != payload_table():
        return ("README.md's payload table is stale\n"
                "     fix: python3 scripts/lib/payload.py table --write-readme")
    return None


def cmd_table(a):
    table = payload_table()
    if not a.write_readme:
        print(table)
        return
    readme = os.path.join(ROOT, "README.md")
    text = open(readme, encoding="utf-8").read()
    head, after = text.split(README_MARKER, 1)
    rest = after.lstrip("\n").split("\n\n", 1)
    text = head + README_MARKER + "\n" + table + ("\n\n" + rest[1] if len(rest) > 1 else "\n")
    with open(readme + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(readme + ".tmp", readme)
    print("README.md payload table updated")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("record")
    r.add_argument("--manifest", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--file", required=True)
    r.add_argument("--source", required=True)
    r.add_argument("--toolchain", required=True)
    r.add_argument("--recipe", required=True)
    r.add_argument("--inputs", required=True)
    r.add_argument("--extra", action="append", help="key=value")
    r.set_defaults(fn=cmd_record)
    c = sub.add_parser("check")
    c.add_argument("manifests", nargs="*")
    c.add_argument("--skip-decode", action="store_true")
    c.set_defaults(fn=cmd_check)
    h = sub.add_parser("inputs-hash")
    h.add_argument("inputs")
    h.set_defaults(fn=lambda a: print(inputs_sha256(a.inputs)))
    t = sub.add_parser("table")
    t.add_argument("--write-readme", action="store_true", help="replace the table in README.md")
    t.set_defaults(fn=cmd_table)
    a = p.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
