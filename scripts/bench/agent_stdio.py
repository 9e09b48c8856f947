#!/usr/bin/env python3
"""Agent in --exec-stdio mode on the host, several binaries interleaved (a, b, a, b, ...).

    agent_stdio.py RUNS WORKDIR NAME=BINARY [NAME=BINARY ...]   (prints one JSON object)

Per binary: exec round trip of `true` (agent start + REQUEST -> EXIT), p50/p99/min over RUNS,
and the agent's RSS while it idles waiting for its request (median of a few samples). Run it
inside `unshare --pid --fork --mount-proc` (scripts/bench.sh does): the only command the agents
execute is `true`.
"""
import json, os, statistics, struct, subprocess, sys, time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from agentharness.wire import ERROR, EXIT, REQUEST, frame  # noqa: E402  (the one copy of the wire format)

runs, work = int(sys.argv[1]), sys.argv[2]
agents = [a.split("=", 1) for a in sys.argv[3:]]
run_dir = os.path.join(work, "run")
os.makedirs(run_dir, exist_ok=True)

REQ_TRUE = frame(REQUEST, json.dumps({"argv": ["true"]}).encode())


def read_exact(f, n):
    b = bytearray()
    while len(b) < n:
        c = f.read(n - len(b))
        if not c:
            raise EOFError("agent closed stdout")
        b += c
    return bytes(b)


def until_exit(f):
    while True:
        t, n = struct.unpack(">BI", read_exact(f, 5))
        p = read_exact(f, n)
        if t == EXIT:
            return struct.unpack(">I", p[:4])[0]
        if t == ERROR:
            raise RuntimeError(p.decode(errors="replace"))


def start(binary):
    return subprocess.Popen([binary, "--exec-stdio", "--run-dir", run_dir], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)


def one(binary):
    t0 = time.perf_counter()
    p = start(binary)
    p.stdin.write(REQ_TRUE)
    p.stdin.flush()
    code = until_exit(p.stdout)
    dt = time.perf_counter() - t0
    p.stdin.close()
    p.wait()
    assert code == 0, f"{binary}: true exited {code}"
    return dt


def idle_rss_kib(binary):
    p = start(binary)
    time.sleep(0.2)
    rss = None
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    p.stdin.write(REQ_TRUE)
    p.stdin.flush()
    until_exit(p.stdout)
    p.stdin.close()
    p.wait()
    return rss


def pct(v, q):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


lat = {n: [] for n, _ in agents}
rss = {n: [] for n, _ in agents}
for n, b in agents:  # warm the page cache
    one(b)
for i in range(runs):
    for n, b in agents:
        lat[n].append(one(b) * 1000)
for _ in range(5):
    for n, b in agents:
        rss[n].append(idle_rss_kib(b))
out = {}
for n, b in agents:
    out[n] = {"binary": b, "runs": runs, "p50_ms": pct(lat[n], .5), "p99_ms": pct(lat[n], .99),
              "min_ms": min(lat[n]), "idle_rss_kib": statistics.median(rss[n])}
print(json.dumps(out))
