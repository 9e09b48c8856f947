#!/usr/bin/env python3
"""The table of scripts/tsi-test.sh: one row per check, one column per arch.

    report.py [--docs docs/NETWORKING.md] ARCH=DIR...

DIR holds ARCH-shared.json and ARCH-mismatch.json (what src/bin/tsi-test.rs wrote). Prints the
table; with --docs replaces the block between the tsi-test markers of the docs file.
"""
import argparse
import datetime
import json
import os
import re

MEANING = {
    "agent_output_4mib": "4 MiB of exec output on the agent's native vsock stream, through the runtime's muxer",
    "tcp_egress": "`urllib` GET of a host HTTP server",
    "nonblocking_connect": "`connect_ex` → `EINPROGRESS`, `select` writable, `SO_ERROR` 0, then a GET",
    "refused": "`ECONNREFUSED` from a closed host port, blocking and non-blocking",
    "peer_names": "`getpeername()` on `AF_INET`, and on `AF_INET6` to a v4-mapped address",
    "bulk_host_to_guest": "8 MiB host → guest, content checked",
    "bulk_guest_to_host": "1, 8 and 12 MiB guest → host (past the host's 8 MiB window), host checksum",
    "udp_echo": "unconnected `sendto`/`recvfrom` (source reported right) and connected UDP",
    "udp_two_destinations": "one socket, two destinations: each reply names its own source",
    "loopback_refused": "`127.0.0.1` with nothing listening: `ECONNREFUSED` in the guest, no host `CONNECT`",
    "dns": "`getaddrinfo` through `resolv.conf` to a host DNS server on port 53",
    "parallel_connections": "40 concurrent GETs",
    "loopback_stays_local": "a guest server on `127.0.0.1` reached from the guest, no host `CONNECT`",
    "ingress_ipv4_listener": "`0.0.0.0:8080` in the guest reached through the runtime's ingress (`SMUX-PORT-V1` 8080)",
    "ingress_dual_stack": "`[::]:8081` reached the same way; the guest sees `::ffff:127.0.0.1` as the peer",
    "ingress_no_header": "ingress without a port header lands on the best listener (the `AF_INET` one)",
    "listener_restart": "a restarted server on the same port is the one reached",
    "snapshot_restore": "the runtime's capture → reset → restore: ingress and new connections work",
    "token_hidden": "with `supermachine.tsi_token=` (backend armed with it, every check above too): the token in neither `/proc/cmdline` nor dmesg",
    "mismatch_times_out": "backend armed with another token: a connect fails with `ETIMEDOUT`, bounded",
    "mismatch_fails_fast_after": "the next connect fails at once (`ENETUNREACH`)",
    "guest_responsive": "the agent still answers",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs")
    ap.add_argument("runs", nargs="+", help="ARCH=DIR")
    a = ap.parse_args()
    cols, results, releases = [], {}, {}
    for r in a.runs:
        arch, d = r.split("=", 1)
        cols.append(arch)
        for mode in ("shared", "mismatch"):
            path = os.path.join(d, f"{arch}-{mode}.json")
            if not os.path.exists(path):
                continue
            j = json.load(open(path))
            releases[arch] = j.get("kernel_release", "?")
            for c in j["checks"]:
                results[(c["name"], arch)] = c
    names = [n for n in MEANING if any((n, c) in results for c in cols)]
    names += sorted({n for n, _ in results} - set(names))
    lines = [f"{datetime.date.today().isoformat()}, kernels: "
             + ", ".join(f"{c} `{releases.get(c, '?')}`" for c in cols) + ".", "",
             "| check | what it proves | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    failed = False
    for n in names:
        cells = []
        for c in cols:
            r = results.get((n, c))
            if r is None:
                cells.append("—")
            elif r["ok"]:
                cells.append(f"pass ({r['secs']:.1f} s)")
            else:
                failed = True
                cells.append("**FAIL**: " + (r["detail"].splitlines() or [""])[-1][:120])
        lines.append(f"| {n} | {MEANING.get(n, '')} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    if a.docs:
        begin, end = "<!-- tsi-test table -->", "<!-- end tsi-test table -->"
        doc = open(a.docs).read()
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: f"{begin}\n{table}{end}", doc, flags=re.S)
        open(a.docs, "w").write(doc)
    return 1 if failed else 0


raise SystemExit(main())
