#!/usr/bin/env bash
# Benchmarks the static guest agent on the host (not part of cargo test):
#   - exec round trip of `true` in --exec-stdio mode (agent start + REQUEST → EXIT), p50/p99
#   - the same over one long-running agent (--listen-unix), i.e. the per-connection cost
#   - stdout throughput (256 MiB through STDOUT frames)
#   - agent RSS at idle
#   - static binary size (and its xz size)
# Prints a markdown table. Everything runs inside `unshare --pid --fork --mount-proc`; the only
# commands executed are `true` and `head`.
#
#   scripts/bench-agent.sh [--runs N] [--bin PATH]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=300
BIN=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --bin) BIN=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
WORK=$(mktemp -d /tmp/bench-agent.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
if [ -z "$BIN" ]; then
    "$ROOT/scripts/agent-build.sh" --no-record --out "$WORK/supermachine-agent" >&2
    BIN="$WORK/supermachine-agent"
fi
SIZE=$(stat -c %s "$BIN")
XZSIZE=$(xz -T1 -9e -c "$BIN" | wc -c)

cat >"$WORK/bench.py" <<'EOF'
import json, os, socket, struct, subprocess, sys, time

BIN, RUNS, WORK = sys.argv[1], int(sys.argv[2]), sys.argv[3]
RUN = os.path.join(WORK, "run"); os.makedirs(RUN, exist_ok=True)

def frame(t, p): return struct.pack(">BI", t, len(p)) + p
REQ_TRUE = frame(0xff, json.dumps({"argv": ["true"]}).encode())

def read_exact(f, n):
    b = bytearray()
    while len(b) < n:
        c = f.read(n - len(b))
        if not c: raise EOFError
        b += c
    return bytes(b)

def until_exit(read, count_stdout=False):
    total = 0
    while True:
        t, n = struct.unpack(">BI", read(5))
        p = read(n)
        if t == 1: total += n
        elif t == 5: return total, struct.unpack(">I", p[:4])[0]
        elif t == 6: raise RuntimeError(p.decode())

def pct(v, q):
    v = sorted(v); return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]

# 1. stdio mode: one agent process per exec
lat = []
for _ in range(RUNS):
    t0 = time.perf_counter()
    p = subprocess.Popen([BIN, "--exec-stdio", "--run-dir", RUN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
    p.stdin.write(REQ_TRUE); p.stdin.flush()
    _, code = until_exit(lambda n: read_exact(p.stdout, n))
    lat.append(time.perf_counter() - t0)
    assert code == 0
    p.stdin.close(); p.wait()

# 2. one listening agent, one connection per exec
sock = os.path.join(WORK, "agent.sock")
agent = subprocess.Popen([BIN, "--listen-unix", sock, "--run-dir", RUN], stderr=subprocess.DEVNULL)
while not os.path.exists(os.path.join(RUN, "supermachine-agent-ready")): time.sleep(0.005)
time.sleep(0.2)
def status_kib(pid, key):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key): return int(l.split()[1])
idle_rss = status_kib(agent.pid, "VmRSS:")
lat2 = []
for _ in range(RUNS):
    t0 = time.perf_counter()
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.sendall(REQ_TRUE)
    f = s.makefile("rb", buffering=0)
    _, code = until_exit(lambda n: read_exact(f, n))
    lat2.append(time.perf_counter() - t0)
    s.close()

# 3. throughput: 256 MiB of stdout
N = 256 << 20
s = socket.socket(socket.AF_UNIX); s.connect(sock)
s.sendall(frame(0xff, json.dumps({"argv": ["head", "-c", str(N), "/dev/zero"]}).encode()))
f = s.makefile("rb", buffering=1 << 20)
t0 = time.perf_counter()
got, code = until_exit(lambda n: read_exact(f, n))
dt = time.perf_counter() - t0
s.close()
assert got == N and code == 0, (got, code)
hwm = status_kib(agent.pid, "VmHWM:")
time.sleep(0.2)
idle_after = status_kib(agent.pid, "VmRSS:")
agent.kill(); agent.wait()
ms = lambda x: f"{x * 1000:.2f} ms"
print(json.dumps({
    "stdio_p50": ms(pct(lat, .5)), "stdio_p99": ms(pct(lat, .99)),
    "conn_p50": ms(pct(lat2, .5)), "conn_p99": ms(pct(lat2, .99)),
    "mbps": f"{N / dt / 1e6:.0f} MB/s ({N / dt / (1 << 20):.0f} MiB/s)",
    "idle_rss": f"{idle_rss} KiB", "idle_after": f"{idle_after} KiB", "hwm": f"{hwm} KiB",
}))
EOF

# shellcheck disable=SC2016 # the inner sh expands $0 and $@, not this one
RES=$(unshare --pid --fork --mount-proc sh -c 'python3 "$0" "$@"; exit $?' "$WORK/bench.py" "$BIN" "$RUNS" "$WORK")
get() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$RES" "$1"; }

echo "| metric | value |"
echo "|---|---|"
echo "| exec \`true\` round trip, --exec-stdio (agent start + REQUEST → EXIT), $RUNS runs | p50 $(get stdio_p50), p99 $(get stdio_p99) |"
echo "| exec \`true\` round trip, one listening agent (connect + REQUEST → EXIT), $RUNS runs | p50 $(get conn_p50), p99 $(get conn_p99) |"
echo "| stdout throughput, 256 MiB | $(get mbps) |"
echo "| agent RSS at idle (listening) | $(get idle_rss) (after the 256 MiB run: $(get idle_after), peak $(get hwm)) |"
echo "| static binary size (x86_64 musl) | $SIZE bytes ($(( SIZE / 1024 )) KiB); xz -9e: $XZSIZE bytes |"
