#!/usr/bin/env python3
"""Splits a tbprof profile ("vaddr instructions" lines, the plugin run with min=0) by address
region, and the kernel's part by function. Used by scripts/tcg-count-to.sh.

    regions.py PROFILE SYMBOLS [--top N]

SYMBOLS: /proc/kallsyms of a nokaslr boot, or the tree's System.map."""
import argparse
import bisect

REGIONS = [  # (first address, end address, name), x86_64 guest addresses
    (0, 0x100000, "below 1 MiB: firmware, option ROMs, real-mode setup"),
    (0x100000, 0x80000000, "physical addresses: bzImage entry, decompressor, early identity-mapped kernel"),
    (0xFFFFFFFF80000000, 1 << 64, "kernel image, virtual"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("symbols")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    syms = sorted((int(p[0], 16), p[2]) for p in (l.split() for l in open(a.symbols))
                  if len(p) >= 3 and p[1] in "tTwW")
    starts = [s for s, _ in syms]
    by_region, by_fn, total = {}, {}, 0
    for line in open(a.profile):
        addr, n = (int(x, 16 if i == 0 else 10) for i, x in enumerate(line.split()))
        total += n
        name = next((r for lo, hi, r in REGIONS if lo <= addr < hi), "other addresses")
        by_region[name] = by_region.get(name, 0) + n
        if name.startswith("kernel image"):
            i = bisect.bisect_right(starts, addr) - 1
            fn = syms[i][1] if i >= 0 else "?"
            by_fn[fn] = by_fn.get(fn, 0) + n
    print(f"{total / 1e6:9.2f} M guest instructions in all")
    for name, n in sorted(by_region.items(), key=lambda x: -x[1]):
        print(f"{n / 1e6:9.2f} M  {name}")
    for fn, n in sorted(by_fn.items(), key=lambda x: -x[1])[:a.top]:
        print(f"{n / 1e6:13.3f} M  {fn}")


if __name__ == "__main__":
    main()
