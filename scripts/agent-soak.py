#!/usr/bin/env python3
"""Soak test of the real supermachine-agent binary: N concurrent clients, mixed sessions, fixed time.

    agent-soak.py [--clients N] [--seconds S] [--agent PATH] [--seed X] [--json FILE]

One agent in the sandbox of scripts/lib/agentharness/ (PID 1 of a fresh pid+mount+net
namespace, private tmpfs root). N clients run well-formed sessions back to back for S seconds,
each checked: probe and stat; exec of echo/cat with stdin (output compared), a tty exec;
write_file then read_file (contents compared); read_file_chunk of a 1 MiB file; a chunked
upload read back; mkdir -p + remove -r; port_forward to an echo server. Reports throughput
(sessions and connections per second), latency per operation (p50/p99/max, connect to
answer), the agent's peak RSS (VmHWM) and, at the end against the start (after a warm-up), its
RSS (VmRSS without the binary's code pages; VmRSS too), thread count and fd count (leaks),
zombies and stray processes. Exit status 1 if any session got a
wrong answer or no answer in time, or the agent did not come back to its start state.
"""
import argparse
import base64
import json
import os
import random
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import agentharness as H  # noqa: E402
from agentharness import CONTROL, REQUEST, STDIN, Conn, Violation, frame, jframe  # noqa: E402

ECHO_PORT = 7777
LAT = {}


def timed(op, c):
    end = c.t_answer or c.t1
    LAT.setdefault(op, []).append(end - c.t0)


def ctl(obj):
    return Conn([("send", jframe(CONTROL, obj)), ("wait", "answer")], label=obj["action"])


def ok(c, what):
    r = c.reply()
    if not r or r.get("ok") is not True:
        raise Violation(f"{what}: {r if r else c.describe()}")
    return r


def soak_session(rng, i):
    d = f"/work/c{i % 1000}"
    op = rng.choices(["probe", "stat", "exec", "cat", "tty", "write_read", "read_chunk", "upload", "mkdir_remove",
                      "port_forward"], [15, 10, 15, 10, 5, 15, 10, 10, 5, 5])[0]
    if op == "probe":
        c = yield ctl({"action": "probe"})
        if ok(c, op).get("protocol") != 5:
            raise Violation(f"probe: {c.reply()}")
    elif op == "stat":
        c = yield ctl({"action": "stat", "path": "/usr/bin/python3.11"})
        if ok(c, op)["type"] != "file":
            raise Violation(f"stat: {c.reply()}")
    elif op in ("exec", "cat"):
        data = b"x" * 4096 if op == "cat" else b""
        argv = ["cat"] if op == "cat" else ["echo", f"hello {i}"]
        c = yield Conn([("send", jframe(REQUEST, {"argv": argv}) + frame(STDIN, data) + frame(STDIN)), ("wait", "answer")],
                       label=op)
        want = data if op == "cat" else f"hello {i}\n".encode()
        if c.exit_code() != 0 or c.stdout() != want:
            raise Violation(f"{op}: exit {c.exit_code()}, {len(c.stdout())} bytes: {c.describe()}")
    elif op == "tty":
        c = yield Conn([("send", jframe(REQUEST, {"argv": ["stty", "size"], "tty": True, "rows": 33, "cols": 99})),
                        ("wait", "answer")], label=op)
        if c.exit_code() != 0 or b"33 99" not in c.stdout():
            raise Violation(f"tty: {c.describe()}")
    elif op == "write_read":
        data = os.urandom(65536)
        c = yield ctl({"action": "write_file", "path": f"{d}/f{i}", "data_b64": base64.b64encode(data).decode()})
        ok(c, "write_file")
        timed("write_file", c)
        c = yield ctl({"action": "read_file", "path": f"{d}/f{i}"})
        if base64.b64decode(ok(c, "read_file")["data_b64"]) != data:
            raise Violation("read_file: content differs")
        timed("read_file", c)
        c = yield ctl({"action": "remove", "path": f"{d}/f{i}"})
        ok(c, "remove")
        op = "remove"
    elif op == "read_chunk":
        off = rng.randrange(0, 1 << 20)
        c = yield ctl({"action": "read_file_chunk", "path": "/work/onemeg", "offset": off, "len": 65536})
        got = base64.b64decode(ok(c, op)["data_b64"])
        if got != ONEMEG[off:off + 65536]:
            raise Violation(f"read_file_chunk at {off}: content differs")
    elif op == "upload":
        pieces = [os.urandom(65536) for _ in range(3)]
        off = 0
        for k, p in enumerate(pieces):
            c = yield ctl({"action": "write_file_chunk", "path": f"{d}/u{i}", "offset": off, "last": k == 2,
                           "token": f"t{i}", "data_b64": base64.b64encode(p).decode()})
            ok(c, f"chunk {k}")
            timed("write_file_chunk", c)
            off += len(p)
        c = yield ctl({"action": "read_file_chunk", "path": f"{d}/u{i}", "offset": 0, "len": 1 << 20})
        if base64.b64decode(ok(c, "read back")["data_b64"]) != b"".join(pieces):
            raise Violation("chunked upload: content differs")
        timed("read_file_chunk", c)
        c = yield ctl({"action": "remove", "path": f"{d}/u{i}"})
        ok(c, "remove")
        op = "remove"
    elif op == "mkdir_remove":
        c = yield ctl({"action": "mkdir", "path": f"{d}/m{i}/a/b", "parents": True})
        ok(c, "mkdir")
        timed("mkdir", c)
        c = yield ctl({"action": "remove", "path": f"{d}/m{i}", "recursive": True})
        ok(c, "remove")
        op = "remove"
    else:
        data = os.urandom(16384)
        c = yield Conn([("send", jframe(CONTROL, {"action": "port_forward", "port": ECHO_PORT})), ("wait", "answer"),
                        ("send", data), ("shutwr",), ("wait", "eof", 30)], label=op)
        if bytes(c.raw) != data:
            raise Violation(f"port_forward: {len(c.raw)} bytes back: {c.describe()}")
        c.t_answer = c.t1
    timed(op, c)


ONEMEG = b""


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def main():
    global ONEMEG
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--agent", help="agent binary (default: the committed x86_64 payload)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--deadline", type=float, default=30.0)
    ap.add_argument("--json", help="also write the figures here")
    a = ap.parse_args()
    sb = H.Sandbox(a.agent).start()
    try:
        H.start_helpers(sb, ECHO_PORT)
        ONEMEG = random.Random(a.seed).randbytes(1 << 20)
        with open(sb.root("work/onemeg"), "wb") as f:
            f.write(ONEMEG)
        helpers = H.helper_pids(sb)
        fresh = H.settled_stats(sb)
        print(f"agent-soak: {a.clients} clients for {a.seconds:.0f} s, agent {a.agent or H.PAYLOAD}")
        rng = random.Random(a.seed)
        engine = H.Engine(sb.socket, concurrency=a.clients, deadline=a.deadline, sandbox=sb)
        # Warm-up (not measured): every operation a few times, so that the start figures include
        # the code pages and allocator arenas a busy agent has anyway.
        warm = []
        engine.run((H.Session(-k, soak_session(random.Random(k), k), kind="warm-up") for k in range(20 * a.clients)),
                   on_done=lambda s: warm.append(s.violation) if s.violation else None)
        if warm:
            print(f"FAIL: warm-up: {warm[0]}")
            return 1
        LAT.clear()
        st0 = H.settled_stats(sb)
        print(f"  fresh agent: VmRSS {fresh['VmRSS']} KiB; after a warm-up of {20 * a.clients} sessions (the start): "
              f"VmRSS {st0['VmRSS']} KiB (without code pages {st0.get('Rss')}, RssAnon {st0.get('RssAnon')}), "
              f"{st0['Threads']} threads, {st0['fds']} fds")
        engine.connections = 0
        stats = {"sessions": 0, "bad": [], "peak_threads": 0, "peak_fds": 0, "peak_rss": 0, "last": 0}
        t0 = time.monotonic()

        def sessions():
            i = 0
            while time.monotonic() - t0 < a.seconds:
                yield H.Session(i, soak_session(random.Random(rng.random()), i), kind="soak")
                i += 1

        def sample():
            st = sb.stats()
            stats["peak_threads"] = max(stats["peak_threads"], st.get("Threads", 0))
            stats["peak_fds"] = max(stats["peak_fds"], st.get("fds", 0))
            stats["peak_rss"] = max(stats["peak_rss"], st.get("VmRSS", 0))

        def done(s):
            stats["sessions"] += 1
            if s.violation:
                stats["bad"].append((s.index, s.violation))
            now = time.monotonic()
            if now - stats["last"] > 0.25:
                stats["last"] = now
                sample()

        engine.run(sessions(), on_done=done)
        elapsed = time.monotonic() - t0
        sample()
        alive = sb.alive()
        ok_end, problems, st1 = H.quiesce(sb, {"Threads": st0["Threads"], "fds": st0["fds"], "Rss": st0["Rss"]},
                                          helpers, settle=20)
        conns = engine.connections
        out = {
            "clients": a.clients, "seconds": round(elapsed, 1), "sessions": stats["sessions"], "connections": conns,
            "sessions_per_s": round(stats["sessions"] / elapsed, 1), "connections_per_s": round(conns / elapsed, 1),
            "latency_ms": {op: {"n": len(v), "p50": round(1000 * pct(v, 50), 2), "p99": round(1000 * pct(v, 99), 2),
                                "max": round(1000 * max(v), 2)} for op, v in sorted(LAT.items())},
            "all_latency_ms": {},
            "agent": {"vmrss_fresh_kib": fresh["VmRSS"], "vmrss_start_kib": st0["VmRSS"], "vmrss_end_kib": st1.get("VmRSS"),
                      "rss_nocode_start_kib": st0.get("Rss"), "rss_nocode_end_kib": st1.get("Rss"),
                      "rssanon_start_kib": st0.get("RssAnon"), "rssanon_end_kib": st1.get("RssAnon"),
                      "vmhwm_kib": st1.get("VmHWM"),
                      "vmrss_peak_sampled_kib": stats["peak_rss"], "threads_start": st0["Threads"],
                      "threads_end": st1.get("Threads"), "threads_peak_sampled": stats["peak_threads"],
                      "fds_start": st0["fds"], "fds_end": st1.get("fds"), "fds_peak_sampled": stats["peak_fds"]},
            "failures": len(stats["bad"]), "back_to_start": ok_end, "problems": problems,
        }
        every = [x for v in LAT.values() for x in v]
        if every:
            out["all_latency_ms"] = {"p50": round(1000 * pct(every, 50), 2), "p99": round(1000 * pct(every, 99), 2),
                                     "max": round(1000 * max(every), 2)}
        print(f"  {stats['sessions']} sessions, {conns} connections in {elapsed:.1f} s: "
              f"{out['sessions_per_s']} sessions/s, {out['connections_per_s']} connections/s")
        print(f"  latency (connect to answer), all operations: p50 {out['all_latency_ms'].get('p50')} ms, "
              f"p99 {out['all_latency_ms'].get('p99')} ms, max {out['all_latency_ms'].get('max')} ms")
        for op, v in out["latency_ms"].items():
            print(f"    {op:17} n={v['n']:6}  p50 {v['p50']:8.2f} ms  p99 {v['p99']:8.2f} ms  max {v['max']:8.2f} ms")
        ag = out["agent"]
        print(f"  agent peak RSS (VmHWM) {ag['vmhwm_kib']} KiB; peak sampled: {ag['threads_peak_sampled']} threads, "
              f"{ag['fds_peak_sampled']} fds")
        print(f"  start -> end: RSS without code pages {ag['rss_nocode_start_kib']} -> {ag['rss_nocode_end_kib']} KiB, "
              f"VmRSS {ag['vmrss_start_kib']} -> {ag['vmrss_end_kib']} KiB (RssAnon {ag['rssanon_start_kib']} -> "
              f"{ag['rssanon_end_kib']}), threads {ag['threads_start']} -> "
              f"{ag['threads_end']}, fds {ag['fds_start']} -> {ag['fds_end']}")
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=1)
        fail = False
        if not alive:
            print(f"FAIL: the agent died:\n{sb.log_tail()}")
            fail = True
        if stats["bad"]:
            print(f"FAIL: {len(stats['bad'])} sessions failed, e.g.:")
            for idx, msg in stats["bad"][:5]:
                print(f"  session {idx}: {msg[:500]}")
            fail = True
        if not ok_end:
            print("FAIL: not back to the start state: " + "; ".join(problems))
            fail = True
        if not fail:
            print(f"OK: every session answered correctly; threads, fds back to start, RSS within {H.RSS_SLACK_KIB} KiB, "
                  "no zombie, no stray process")
        return 1 if fail else 0
    finally:
        sb.stop()


if __name__ == "__main__":
    sys.exit(main())
