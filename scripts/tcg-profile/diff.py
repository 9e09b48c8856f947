#!/usr/bin/env python3
"""What one profile executed beyond another: the difference of two `profile.json` files written by
scripts/tcg-profile.sh (attribute.py --json), by function and by folder.

    diff.py BASE.json PROBE.json [--per N] [--top N]

Typical use: profile a boot with `--probe-step CMD` and one with `--probe-step true`; the
difference is what CMD cost in the kernel. --per N divides by N (e.g. the number of operations
CMD performed) to print instructions per operation. Run-to-run noise is a few hundred thousand
instructions (code that waits on time), so make CMD repeat its work until it stands well above that."""
import argparse, json

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("base")
    ap.add_argument("probe")
    ap.add_argument("--per", type=float, default=1.0, help="divide every figure by this")
    ap.add_argument("--top", type=int, default=30)
    a = ap.parse_args()
    base, probe = (json.load(open(p)) for p in (a.base, a.probe))
    total = probe["total"] - base["total"]
    print(f"kernel instructions, {a.probe} minus {a.base}: {total:,}"
          + (f" ({total / a.per:,.0f} per operation)" if a.per != 1 else ""))
    if total <= 0:
        print("(no more than the base: nothing to attribute)")
        return
    for title in ("folder", "function"):
        keys = set(base[title]) | set(probe[title])
        diff = sorted(((probe[title].get(k, 0) - base[title].get(k, 0), k) for k in keys), reverse=True)
        print(f"\n{'instructions':>14} {'share':>6}  {title}")
        for n, k in diff[:a.top]:
            print(f"{n / a.per:14,.0f} {n / total * 100:5.1f}%  {k}")

if __name__ == "__main__":
    main()
