#!/usr/bin/env python3
"""Splits a tbprof profile ("vaddr instructions" lines, the plugin run with min=0) by address
region, and the kernel's part by function. Used by scripts/tcg-count-to.sh.

    regions.py PROFILE SYMBOLS [--top N]

SYMBOLS: /proc/kallsyms of a nokaslr boot, or the tree's System.map."""
import argparse
import bisect
from collections import Counter

from attribute import text_symbols  # the symbol table loader of scripts/tcg-profile.sh

KERNEL_IMAGE = "kernel image, virtual"  # the region split further by function
REGIONS = [  # (first address, end address, name), x86_64 guest addresses
    (0, 0x100000, "below 1 MiB: firmware, option ROMs, real-mode setup"),
    (0x100000, 0x80000000, "physical addresses: bzImage entry, decompressor, early identity-mapped kernel"),
    (0xFFFFFFFF80000000, 1 << 64, KERNEL_IMAGE),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("profile")
    ap.add_argument("symbols")
    ap.add_argument("--top", type=int, default=12)
    a = ap.parse_args()
    starts, names = text_symbols(a.symbols)
    by_region, by_fn, total = Counter(), Counter(), 0
    for line in open(a.profile):
        va, n = line.split()
        addr, n = int(va, 16), int(n)
        total += n
        name = next((r for lo, hi, r in REGIONS if lo <= addr < hi), "other addresses")
        by_region[name] += n
        if name == KERNEL_IMAGE:
            i = bisect.bisect_right(starts, addr) - 1
            by_fn[names[i] if i >= 0 else "?"] += n
    print(f"{total / 1e6:9.2f} M guest instructions in all")
    for name, n in by_region.most_common():
        print(f"{n / 1e6:9.2f} M  {name}")
    for fn, n in by_fn.most_common(a.top):
        print(f"{n / 1e6:13.3f} M  {fn}")


if __name__ == "__main__":
    main()
