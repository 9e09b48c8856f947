#!/usr/bin/env python3
"""Attribute a tbprof profile (guest instructions per translation block) to the kernel's
functions (System.map), object files and source folders (nm of each object in the tree).

    attribute.py --tree KERNEL_TREE --profile FILE [--system-map MAP] [--top N] [--json OUT]

The kernel must have run at its link address (the profile boots with `nokaslr`). A function
name that two objects define (static functions) is given to the first object found."""
import argparse, bisect, collections, json, os, subprocess

def text_symbols(system_map):
    syms = []
    with open(system_map) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwW":
                syms.append((int(parts[0], 16), parts[2]))
    syms.sort()
    return [a for a, _ in syms], [n for _, n in syms]

def owners(tree):
    """Function name -> object file (relative to the tree), over every object the build left."""
    skip = ("built-in", "vmlinux", ".mod.o", ".tmp_")
    out = {}
    for root, dirs, files in os.walk(tree):
        rel = os.path.relpath(root, tree)
        if rel.split(os.sep)[0] in ("scripts", "tools", ".git") or rel.startswith("arch/x86/boot"):
            continue
        for f in files:
            if not f.endswith(".o") or any(s in f for s in skip):
                continue
            path = os.path.normpath(os.path.join(rel, f))
            nm = subprocess.run(["nm", "--defined-only", os.path.join(root, f)],
                                capture_output=True, text=True).stdout
            for line in nm.splitlines():
                p = line.split()
                if len(p) == 3 and p[1] in "tTwW":
                    out.setdefault(p[2], path)
    return out

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--system-map", help="default: TREE/System.map (the map of the profiled kernel)")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--json")
    a = ap.parse_args()
    addrs, names = text_symbols(a.system_map or os.path.join(a.tree, "System.map"))
    owner = owners(a.tree)
    by_func, by_obj, by_dir = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    with open(a.profile) as f:
        for line in f:
            va, n = line.split()
            va, n = int(va, 16), int(n)
            i = bisect.bisect_right(addrs, va) - 1
            name = names[i] if i >= 0 else "?"
            obj = owner.get(name, "?")
            by_func[name] += n
            by_obj[obj] += n
            by_dir[os.path.dirname(obj) or "?"] += n
            total += n
    print(f"kernel instructions executed: {total:,}")
    for title, c in (("folder", by_dir), ("object", by_obj), ("function", by_func)):
        print(f"\n{'instructions':>14} {'share':>6}  {title}")
        for k, n in c.most_common(a.top):
            print(f"{n:14,} {n / total * 100:5.1f}%  {k}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"total": total, "folder": by_dir, "object": by_obj, "function": by_func}, f)

if __name__ == "__main__":
    main()
