"""Blocking one-shot calls (setup, probes) and the helper processes in the sandbox, and its settled state."""
import base64
import ctypes
import errno
import json
import lzma
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from .wire import *  # noqa: F401,F403
from .probes import *  # noqa: F401,F403

# ---------------------------------------------------------------------------------------------
# Blocking helpers (setup, probes)

def _recv_frames(s, until):
    buf, frames = bytearray(), []
    while True:
        while len(buf) >= 5:
            kind, n = struct.unpack(">BI", buf[:5])
            if len(buf) < 5 + n:
                break
            frames.append((kind, bytes(buf[5:5 + n])))
            del buf[:5 + n]
            if until(frames):
                return frames
        b = s.recv(1 << 16)
        if not b:
            return frames
        buf += b


def control(sock_path, obj, timeout=10):
    """One CONTROL call; the reply as a dict (a frame-level ERROR raises Violation)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(jframe(CONTROL, obj))
        frames = _recv_frames(s, lambda f: True)
    if not frames:
        raise Violation(f"no reply to {obj.get('action')}")
    kind, payload = frames[0]
    if kind != CONTROL:
        raise Violation(f"{obj.get('action')}: {NAMES.get(kind, hex(kind))} {payload[:200]!r}")
    return json.loads(payload)


def run(sock_path, argv, stdin=b"", timeout=30, **fields):
    """One exec; (exit code, stdout, stderr)."""
    req = dict(argv=argv, **fields)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(jframe(REQUEST, req) + (frame(STDIN, stdin) if stdin else b"") + frame(STDIN))
        frames = _recv_frames(s, lambda f: f[-1][0] in (EXIT, ERROR))
    out = b"".join(p for k, p in frames if k == STDOUT)
    err = b"".join(p for k, p in frames if k == STDERR)
    for k, p in frames:
        if k == EXIT:
            return struct.unpack(">I", p[:4])[0], out, err
    raise Violation(f"exec {argv}: no EXIT ({[(NAMES.get(k), p[:200]) for k, p in frames]})")


# ---------------------------------------------------------------------------------------------
# Helpers in the sandbox, and its state

def start_helpers(sb, port):
    """An echo server on 127.0.0.1:port and a sleeping 'workload' whose pid `signal` uses,
    both started through the agent (they become its orphans, as daemons in a guest do)."""
    server = ("import socket,threading\n"
              "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
              f"s.bind(('127.0.0.1',{port}));s.listen(256)\n"
              "def h(c):\n"
              " try:\n"
              "  while True:\n"
              "   b=c.recv(65536)\n"
              "   if not b: break\n"
              "   c.sendall(b)\n"
              "  c.shutdown(socket.SHUT_WR)\n"
              " except OSError: pass\n"
              " c.close()\n"
              "while True:\n"
              " c,_=s.accept();threading.Thread(target=h,args=(c,),daemon=True).start()\n")
    code, out, err = run(sb.socket, ["sh", "-c", "python3 -c \"$0\" </dev/null >/dev/null 2>&1 & "
                                                   "sleep 1000000 </dev/null >/dev/null 2>&1 & echo $!", server])
    if code != 0:
        raise SystemExit(f"error: starting the helpers: {code} {err!r}")
    wl = int(out.strip())
    r = control(sb.socket, {"action": "write_file", "path": "/run/supermachine-workload.pid", "data_b64": base64.b64encode(b"%d\n" % wl).decode()})
    assert r["ok"], r
    os.makedirs(sb.root("work"), exist_ok=True)
    t = time.monotonic()
    while time.monotonic() - t < 10:  # the echo server is up when a forward gets its bytes back
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                s.connect(sb.socket)
                s.sendall(jframe(CONTROL, {"action": "port_forward", "port": port}))
                f = _recv_frames(s, lambda f: True)
                if f and b'"ok":true' in f[0][1]:
                    s.sendall(b"ping")
                    s.shutdown(socket.SHUT_WR)
                    if s.recv(4) == b"ping":
                        break
        except OSError:
            pass
        time.sleep(0.2)
    else:
        raise SystemExit("error: the echo server did not come up")


def helper_pids(sb):
    return {p[0] for p in sb.ns_processes() if p[2] in ("python3", "sleep") and p[1] == sb.apid}


def settled_stats(sb, steady=1.0, timeout=15):
    """The agent's stats once its thread and fd counts have not changed for `steady` seconds."""
    t = since = time.monotonic()
    last = None
    while time.monotonic() - t < timeout:
        st = sb.stats()
        key = (st.get("Threads"), st.get("fds"))
        if key != last:
            last, since = key, time.monotonic()
        elif time.monotonic() - since >= steady:
            return st
        time.sleep(0.1)
    return sb.stats()


def quiesce(sb, base, helpers, settle, slack=RSS_SLACK_KIB):
    """Waits until the namespace is back to baseline; returns (ok, problems, stats)."""
    t = time.monotonic()
    while True:
        procs = sb.ns_processes()
        zombies = [p for p in procs if p[3] == "Z"]
        strays = [p for p in procs if p[3] != "Z" and p[0] not in helpers and p[1] not in helpers]
        st = sb.stats()
        problems = []
        if zombies:
            problems.append(f"{len(zombies)} zombies {zombies[:5]}")
        if strays:
            problems.append(f"{len(strays)} processes left running {strays[:5]}")
        if st.get("Threads") != base["Threads"]:
            problems.append(f"{st.get('Threads')} threads (baseline {base['Threads']})")
        if st.get("fds") != base["fds"]:
            problems.append(f"{st.get('fds')} fds (baseline {base['fds']})")
        if "Rss" in base and st.get("Rss", 0) > base["Rss"] + slack:
            grown = (f"; grown since the baseline: {rss_growth(base['maps'], rss_by_mapping(sb.apid))}"
                     if "maps" in base else "")
            problems.append(f"RSS {st.get('Rss')} KiB without code pages (baseline {base['Rss']} KiB + {slack}; "
                            f"VmRSS {st.get('VmRSS')}, RssAnon {st.get('RssAnon')}, code {st.get('code')}){grown}")
        if not problems or time.monotonic() - t > settle:
            return not problems, problems, st
        time.sleep(0.1)
