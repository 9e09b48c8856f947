#!/usr/bin/env python3
"""Session-level fuzzer for the real supermachine-agent binary (issue 11).

    agent-fuzz.py [--sessions N] [--seconds S] [--seed X] [--agent PATH] [--batch B]
                  [--concurrency C] [--deadline D] [--from I] [--only I] [-v]

Starts the agent (by default the committed static x86_64 payload) as PID 1 of a fresh
pid+mount+net namespace (scripts/lib/agentharness/: private tmpfs root, read-only /usr and
/etc, no host clock/RNG/kmsg access) listening on a Unix socket, and drives generated sessions
against it, C at a time, in batches of B: valid and mutated REQUEST/CONTROL frames for every
action of docs/PROTOCOL.md, FIFOs, /dev devices and /proc files as paths, huge declared
lengths, truncated and trickled frames, half-closes, disconnects mid-stream, stalls past the
first-frame timeout, bursts over the connection cap, chunked uploads with bad offsets and
tokens, port_forward to an echo server, stdin/RESIZE/SIGNAL/unknown frames during execs.
Valid sessions also check the answers (file contents, exit codes, output, errors).

Checked for every connection: the agent answers (EXIT, a CONTROL reply or an ERROR) or closes
within the deadline, every frame it sends is well formed and allowed at that point, it never
closes inside a frame. Checked after every batch: the agent is alive and answers a probe; no
zombie and no stray process is left in the namespace; its thread count and fd count are back to
their baseline; its RSS is back within 64 KiB of the baseline (the highest RSS after the first 3
batches: the allocator's working set; RSS here is VmRSS without the binary's own file pages, its
code; VmRSS is reported too) after at least one of the last 5 batches, and never more than 512
KiB over it (musl's malloc keeps the last emptied group of a busy size class, up to 128 KiB,
until that class is used again: one batch can end above the slack, a leak stays above it); no
write_file temp file (`.sm-tmp.`) is left behind.

Session i is generated from (seed, i) alone: a violation prints the seed and session index;
`--only I --seed X` replays that session, `--from A --sessions B --seed X` its whole batch.
Exit status 1 on a violation. Needs root (namespaces). Python 3.11 standard library only.
"""
import argparse
import base64
import os
import random
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import agentharness as H  # noqa: E402
from agentharness import (CONTROL, ERROR, EXIT, REQUEST, RESIZE, SIGNAL, STDERR, STDIN, STDOUT,  # noqa: E402
                          Conn, Exclusive, Violation, frame, jdump, jframe)

ECHO_PORT = 7777
RSS_SLACK_KIB = H.RSS_SLACK_KIB


def b64(data):
    return base64.b64encode(data).decode()


def rbytes(rng, n):
    return rng.getrandbits(8 * n).to_bytes(n, "little") if n else b""


def ctl(obj, shut_early=False):
    steps = [("send", jframe(CONTROL, obj))]
    if shut_early:
        steps.append(("shutwr",))
    steps.append(("wait", "answer"))
    return Conn(steps, label=f"CONTROL {obj.get('action') if isinstance(obj, dict) else '?'}")


def reply_of(c, what):
    r = c.reply()
    if r is None:
        raise Violation(f"{what}: no CONTROL reply: {c.describe()}")
    return r


def expect_ok(c, what):
    r = reply_of(c, what)
    if r.get("ok") is not True:
        raise Violation(f"{what}: expected ok, got {r}")
    return r


def expect_err(c, what, *needles):
    r = reply_of(c, what)
    if r.get("ok") is not False:
        raise Violation(f"{what}: expected ok:false, got {str(r)[:300]}")
    for n in needles:
        if n not in r.get("error", ""):
            raise Violation(f"{what}: error {r.get('error')!r} lacks {n!r}")
    return r


def busy(c):
    """The agent refused for want of shared budget (other sessions hold it): a valid answer."""
    r = c.reply() or {}
    return any(e.startswith("REQUEST: agent busy") for e in c.errors()) or "agent busy" in str(r.get("error", ""))


def read_back(path):
    """read_file of a path; yields the connection, returns the bytes."""
    c = yield ctl({"action": "read_file", "path": path})
    r = expect_ok(c, f"read_file {path}")
    return base64.b64decode(r["data_b64"])


# ---------------------------------------------------------------------------------------------
# Value pools

INT_EDGE = [0, 1, -1, 2, 7, 255, 256, 4095, 4096, 65535, 65536, 8 << 20, 2**31 - 1, 2**31, 2**32 - 1,
            2**32, 2**40, 2**53, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), 10**30]
SAFE_SIGNUMS = [0, 18, 23, 28]  # for `signal`: never kills or stops the recorded workload
READ_SPECIAL = ["/dev/null", "/dev/zero", "/dev/full", "/dev/urandom", "/dev/random", "/dev/tty", "/dev/ptmx",
                "/dev/pts/ptmx", "/dev/pts", "/proc/self/status", "/proc/self/maps", "/proc/1/status",
                "/proc/self/environ", "/proc/self/fd/0", "/proc/uptime", "/proc/loadavg", "/proc/self/mem",
                "/proc/kmsg", "/proc/self/task", "/proc/sys/kernel/ostype", "/sock/agent.sock", "/etc/hostname",
                "/", "/tmp", "/nonexistent", "", ".", "..", "/proc/self/pagemap"]
WRITE_HOSTILE = ["/dev/null", "/dev/zero", "/proc/self/status", "/proc/sys/kernel/ostype", "/usr/bin/zz-fuzz",
                 "/etc/zz-fuzz", "/sys/zz", "/dev/pts/zz", "/", "/tmp", "/proc", "", ".", "..", "/dev/shm/zz-fuzz"]
REMOVE_HOSTILE = ["/", "/proc", "/etc", "/sys", "/dev/null", "/dev/pts", "/proc/self/status", "/usr/bin/true",
                  "..", ".", "", "/proc/1"]
NAMES = ["a", "b.txt", "sub/c", "d/e/f/g", "with space", "new\nline", "ünï", ".hidden", "x" * 255,
         "tab\tname", "q'\"", "-dash"]  # all valid file names (NAME_MAX is 255 bytes)


def own_path(rng, d, valid=False):
    n = rng.choice(NAMES if valid or rng.random() < 0.9 else ["y" * 256, "z" * 4096])
    return f"{d}/{n}"


def weird_path(rng, d):
    return rng.choice([f"{d}/", f"{d}/..", f"{d}/.", f"{d}/../{os.path.basename(d)}/w", f"{d}//x", f"{d}/a\u0000b",
                       "\u0000", "a" * 5000, f"{d}/" + "z/" * 300 + "deep", f"tmp/{os.path.basename(d)}rel",
                       f"{d}/\udcff".encode("utf-8", "surrogatepass").decode("utf-8", "replace")])


def any_path(rng, d, pool):
    r = rng.random()
    if r < 0.5:
        return own_path(rng, d)
    if r < 0.85:
        return rng.choice(pool)
    return weird_path(rng, d)


def rand_scalar(rng):
    r = rng.randrange(10)
    if r < 3:
        return rng.choice(INT_EDGE)
    if r == 3:
        return rng.choice([0.5, -0.0, 1e300, -1e-9, 3.0])
    if r == 4:
        return rng.choice([True, False, None])
    if r == 5:
        return rng.choice(["", "0755", "0o644", "rwx", "x" * rng.randint(1, 3000), "\u0000", "\ud7ff\ue000", "9"])
    if r == 6:
        return [rand_scalar(rng) for _ in range(rng.randint(0, 3))]
    if r == 7:
        return {rng.choice(["a", "path", "ok", ""]): rand_scalar(rng)}
    return rng.randint(-10, 10**6)


def rand_b64(rng):
    r = rng.randrange(8)
    if r == 0:
        return rng.choice(["!!!!", "QQ", "QQ=", "Q===", "====", "QUJD\nREVG", "QUJD REVG", "\u00e9\u00e9", "A"])
    if r == 1:
        return ""
    return b64(rbytes(rng, rng.choice([1, 2, 3, 100, 4096, 70000])))


def mutate(rng, data, n):
    """Byte-level mutations of a serialised request."""
    data = bytearray(data)
    tokens = [b"null", b"0", b"-1", b"1e999", b"18446744073709551616", b'""', b"[]", b"{}", b"true", b'"\\u0000"',
              b"\\", b'"', b"{", b"}", b"[", b"]", b",", b":", b"\xff", b"\xc3\x28", b'"\\ud800"', b" " * 10]
    for _ in range(n):
        if not data:
            data += b"{"
        pos = rng.randrange(len(data))
        op = rng.randrange(8)
        if op == 0:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos] = rng.randrange(256)
        elif op == 2:
            del data[pos:pos + rng.randint(1, 8)]
        elif op == 3:
            data[pos:pos] = rng.choice(tokens)
        elif op == 4:
            seg = data[pos:pos + rng.randint(1, 16)]
            data[pos:pos] = seg * rng.randint(1, 4)
        elif op == 5:
            data[pos:pos] = rbytes(rng, rng.randint(1, 4))
        elif op == 6 and rng.random() < 0.3:
            del data[pos:]
        else:
            data[pos] = rng.choice(b'{}[]":,0\\')
    return bytes(data)


def framed(rng, kind, payload):
    """A frame, sometimes with a wrong declared length; (bytes, whether the length is right)."""
    if rng.random() < 0.85:
        return frame(kind, payload), True
    n = max(0, len(payload) + rng.choice([-3, -1, 1, 7, 1000]))
    return struct.pack(">BI", kind, n) + payload, False


def split_sends(rng, data, trickle=False):
    """Sends `data` in pieces (sometimes with short pauses in between)."""
    if not trickle and rng.random() < 0.7:
        return [("send", data)]
    steps, i = [], 0
    while i < len(data):
        n = rng.randint(1, 7) if trickle else rng.randint(1, max(1, len(data) // 3))
        steps.append(("send", data[i:i + n]))
        if rng.random() < 0.3:
            steps.append(("pause", rng.choice([0.0, 0.001, 0.01])))
        i += n
        if len(steps) > 400:
            steps.append(("send", data[i:]))
            break
    return steps


# ---------------------------------------------------------------------------------------------
# Control requests

def control_request(rng, d, valid=True):
    """A CONTROL request object (valid: every field well typed, paths from the pools)."""
    a = rng.choices(
        ["probe", "write_file", "write_file_chunk", "read_file", "read_file_chunk", "signal", "sync_time", "sync",
         "drop_vfs_caches", "smpark_park", "smpark_unpark", "reseed", "port_forward", "stat", "mkdir", "remove",
         "no_such_action"],
        [8, 10, 8, 12, 12, 3, 2, 0.3, 0.3, 1, 1, 2, 2, 10, 6, 6, 2])[0]
    o = {"action": a}
    if a == "write_file":
        o["path"] = any_path(rng, d, WRITE_HOSTILE)
        if rng.random() < 0.5:
            o["mode"] = rng.choice([0o644, 0o600, 0o755, "0640", "755", 0o7777, 0])
        o["data_b64"] = b64(rbytes(rng, rng.choice([0, 1, 5, 300, 5000, 40000])))
    elif a == "write_file_chunk":
        o.update(path=any_path(rng, d, WRITE_HOSTILE), offset=rng.choice([0, 0, 4, 2**40]),
                 last=rng.random() < 0.5, token=rng.choice(["t1", "t2", "", "../up", "a/b", "z" * 129, "ü"]))
        o["data_b64"] = b64(rbytes(rng, rng.choice([0, 4, 100, 5000])))
    elif a == "read_file":
        o["path"] = any_path(rng, d, READ_SPECIAL)
        if rng.random() < 0.3:
            o["max_bytes"] = rng.choice([0, 1, 100, 2**64 - 1])
    elif a == "read_file_chunk":
        o.update(path=any_path(rng, d, READ_SPECIAL), offset=rng.choice([0, 0, 1, 100, 4096, 2**40, 2**64 - 1]),
                 len=rng.choice([0, 1, 100, 4096, 65536, 1 << 20, 2**64 - 1]))
        if rng.random() < 0.2:
            o["max_bytes"] = rng.choice([0, 10, 2**63])
    elif a == "signal":
        o["signum"] = rng.choice(SAFE_SIGNUMS)
    elif a == "sync_time":
        o["host_unix_ns"] = rng.choice([0, 1, time.time_ns(), 2**63, 2**64 - 1])
    elif a == "reseed":
        o["data_b64"] = b64(rbytes(rng, rng.choice([0, 16, 64, 65536, 65537])))
    elif a == "port_forward":
        o["port"] = rng.choice([ECHO_PORT, 1, 65535])
    elif a == "stat":
        o["path"] = any_path(rng, d, READ_SPECIAL)
        if rng.random() < 0.5:
            o["follow"] = rng.random() < 0.5
    elif a == "mkdir":
        o["path"] = any_path(rng, d, WRITE_HOSTILE)
        if rng.random() < 0.6:
            o["parents"] = rng.random() < 0.7
        if rng.random() < 0.4:
            o["mode"] = rng.choice([0o700, 0o755, 0, 0o7777])
    elif a == "remove":
        o["path"] = own_path(rng, d) if rng.random() < 0.6 else rng.choice(REMOVE_HOSTILE + [d + "/..", d + "/."])
        if rng.random() < 0.6:
            o["recursive"] = rng.random() < 0.6
    if not valid:
        keys = [k for k in o if k != "action"]
        for _ in range(rng.randint(1, 3)):
            r = rng.random()
            if keys and r < 0.4:
                o[rng.choice(keys)] = rand_scalar(rng)
            elif keys and r < 0.55:
                o.pop(rng.choice(keys), None)
            elif r < 0.7:
                o[rng.choice(["extra", "path", "offset", "len", "data_b64", "argv"])] = rand_scalar(rng)
            elif r < 0.8:
                o["action"] = rand_scalar(rng) if rng.random() < 0.5 else rng.choice(["PROBE", "", "read_file "])
            elif r < 0.9 and "data_b64" in o:
                o["data_b64"] = rand_b64(rng)
            else:
                o[rng.choice(["signum", "port"])] = rand_scalar(rng)
        if o.get("action") == "signal" and not (isinstance(o.get("signum"), int) and o["signum"] in SAFE_SIGNUMS):
            o["signum"] = rng.choice([-1, 65, 1000, 2**31 - 1, -(2**31), "9", 9.5, None, 2**32 + 9])
        if o.get("action") in ("sync", "drop_vfs_caches") and rng.random() < 0.9:
            o["action"] = "probe"  # host-wide sync(2): keep them rare
    return o


def s_control_valid(rng, i, d, ctx):
    o = control_request(rng, d)
    c = yield ctl(o, shut_early=rng.random() < 0.3)
    r = reply_of(c, o["action"])
    a = o["action"]
    if a == "probe" and not (r.get("ok") and r.get("protocol") == 5 and "capabilities" in r):
        raise Violation(f"probe: {r}")
    if a == "no_such_action" and r != {"ok": False, "error": "unknown CONTROL action"}:
        raise Violation(f"unknown action: {r}")
    if a in ("read_file", "read_file_chunk") and o["path"] in READ_SPECIAL:
        p = o["path"]
        if p.startswith("/dev/") or p in ("/dev/pts", "/sock/agent.sock", "/", "/tmp", "/proc/self/task"):
            expect_err(c, f"{a} {p}", "not a regular file")
        if p in ("/proc/self/status", "/proc/1/status", "/proc/uptime") and "max_bytes" not in o and o.get("offset", 0) == 0:
            rr = expect_ok(c, f"{a} {p}")
            if not base64.b64decode(rr["data_b64"]) and o.get("len", 1) > 0:
                raise Violation(f"{a} {p}: empty: {rr}")
            if a == "read_file_chunk" and o["len"] >= 65536 and not (rr["eof"] and rr["total_len"] == len(base64.b64decode(rr["data_b64"]))):
                raise Violation(f"{a} {p}: eof/total_len wrong: {str(rr)[:300]}")
    if a == "remove" and o["path"] in ("/", d + "/..", d + "/.", "..", ".") and o.get("recursive"):
        expect_err(c, f"remove {o['path']} recursive")
    if a == "sync_time" and r.get("ok"):
        raise Violation(f"sync_time succeeded in the sandbox (the host clock!): {r}")


def s_control_grammar(rng, i, d, ctx):
    o = control_request(rng, d, valid=False)
    yield ctl(o, shut_early=rng.random() < 0.3)


def s_control_bytes(rng, i, d, ctx):
    o = control_request(rng, d)
    if o.get("action") in ("sync", "drop_vfs_caches", "signal"):
        o = {"action": "stat", "path": d}
    payload = mutate(rng, jdump(o), rng.randint(1, 4))
    f, exact = framed(rng, CONTROL, payload)
    # (a frame longer than what is sent is answered at the half-close, or after 10 s)
    steps = split_sends(rng, f) + ([("wait", "answer")] if exact else [("shutwr",), ("wait", "answer")])
    yield Conn(steps, label="CONTROL mutated")


# ---------------------------------------------------------------------------------------------
# Exec

def exec_req(rng, i, argv, **kw):
    r = {"argv": argv, "env": {"FZ_SESSION": str(i)}}
    r.update(kw)
    return r


def run_conn(req, stdin=b"", shut=True, extra=()):
    steps = [("send", jframe(REQUEST, req))]
    steps += list(extra)
    if stdin:
        steps.append(("send", frame(STDIN, stdin)))
    if shut:
        steps.append(("shutwr",))
    steps.append(("wait", "answer"))
    return Conn(steps, label=f"REQUEST {req.get('argv')}"[:80])


def expect_exit(c, code, what):
    got = c.exit_code()
    if got != code:
        raise Violation(f"{what}: exit {got}, expected {code}; errors {c.errors()[:2]} stderr {c.stderr()[:200]!r}")


def s_exec_valid(rng, i, d, ctx):
    case = rng.randrange(16)
    if case == 0:
        c = yield run_conn(exec_req(rng, i, ["true"]), shut=rng.random() < 0.5)
        expect_exit(c, 0, "true")
    elif case == 1:
        c = yield run_conn(exec_req(rng, i, ["sh", "-c", "echo out; echo err >&2; exit 7"]))
        expect_exit(c, 7, "sh exit 7")
        if c.stdout() != b"out\n" or c.stderr() != b"err\n":
            raise Violation(f"sh output: {c.stdout()!r} {c.stderr()!r}")
    elif case == 2:
        data = rbytes(rng, rng.choice([0, 1, 1000, 100000, 300000]))
        eof = rng.choice(["frame", "shut"])
        steps = [("send", jframe(REQUEST, exec_req(rng, i, ["cat"])))]
        for k in range(0, len(data), 50000):
            steps.append(("send", frame(STDIN, data[k:k + 50000])))
        steps.append(("send", frame(STDIN)) if eof == "frame" else ("shutwr",))
        steps.append(("wait", "answer"))
        c = yield Conn(steps, label="cat")
        expect_exit(c, 0, "cat")
        if c.stdout() != data:
            raise Violation(f"cat: {len(c.stdout())} bytes out for {len(data)} in")
    elif case == 3:
        c = yield run_conn(exec_req(rng, i, ["/nonexistent/prog"]))
        expect_exit(c, 127, "not found")
        if not c.stderr().startswith(b"supermachine-agent: "):
            raise Violation(f"not found: stderr {c.stderr()!r}")
    elif case == 4:
        c = yield run_conn(exec_req(rng, i, ["/etc"]))
        expect_exit(c, 126, "a directory as argv[0]")
    elif case == 5:
        c = yield run_conn(exec_req(rng, i, ["sh", "-c", "kill -9 $$"]))
        expect_exit(c, 137, "killed by 9")
    elif case == 6:
        n = rng.choice([1, 70000, 1 << 20])
        c = yield run_conn(exec_req(rng, i, ["head", "-c", str(n), "/dev/zero"]))
        expect_exit(c, 0, "head")
        if c.stdout_bytes != n:
            raise Violation(f"head -c {n}: {c.stdout_bytes} bytes")
    elif case == 7:
        c = yield run_conn(exec_req(rng, i, ["sh", "-c", "(sleep 0.2; echo late) & echo early"]))
        expect_exit(c, 0, "background")
        if not c.stdout().startswith(b"early\n"):
            raise Violation(f"background: {c.stdout()!r}")
    elif case == 8:
        c = yield run_conn(exec_req(rng, i, ["pwd"], cwd="/proc"))
        expect_exit(c, 0, "pwd")
        if c.stdout() != b"/proc\n":
            raise Violation(f"pwd in /proc: {c.stdout()!r}")
    elif case == 9:
        c = yield run_conn(exec_req(rng, i, ["true"], cwd=rng.choice(["/nonexistent", "/etc/hostname", f"{d}/fifo"])))
        expect_exit(c, 1, "bad cwd")
    elif case == 10:
        c = yield run_conn(exec_req(rng, i, ["echo", "a"], chain=[["true"], ["echo", "b"], ["false"], ["echo", "never"]]))
        expect_exit(c, 1, "chain")
        if c.stdout() != b"a\nb\n":
            raise Violation(f"chain: {c.stdout()!r}")
    elif case == 11:
        data = rbytes(rng, rng.choice([0, 10, 5000, 100000]))
        p = f"{d}/stage/{rng.choice(['f', 'g/h'])}"
        req = exec_req(rng, i, ["sh", "-c", f"cat '{p}'; stat -c %a '{p}'"],
                       stage_files=[{"path": p, "data_b64": b64(data), "mode": rng.choice([0o600, "0750"])}])
        c = yield run_conn(req)
        expect_exit(c, 0, "stage_files")
        want_mode = b"600\n" if req["stage_files"][0]["mode"] == 0o600 else b"750\n"
        if c.stdout() != data + want_mode:
            raise Violation(f"stage_files: {len(c.stdout())} bytes out, tail {c.stdout()[-8:]!r}")
    elif case == 12:
        req = exec_req(rng, i, ["true"], stage_files=[{"path": "/proc/zz", "data_b64": "QQ=="}])
        c = yield run_conn(req)
        if c.exit_code() is not None or not any("stage_files[0]" in e for e in c.errors()):
            raise Violation(f"stage_files to /proc: {c.describe()}")
    elif case == 13:
        rows, cols = rng.randint(1, 200), rng.randint(1, 300)
        c = yield run_conn(exec_req(rng, i, ["stty", "size"], tty=True, rows=rows, cols=cols))
        expect_exit(c, 0, "stty size")
        if f"{rows} {cols}".encode() not in c.stdout():
            raise Violation(f"tty size {rows}x{cols}: {c.stdout()!r}")
    elif case == 14:
        env = {f"V{k}": "x" * rng.randint(0, 20) for k in range(rng.choice([1, 100, 3000]))}
        env["FZ_SESSION"] = str(i)
        c = yield run_conn({"argv": ["sh", "-c", 'echo "$V0"'], "env": env})
        if busy(c):
            return
        expect_exit(c, 0, "env")
        if c.stdout() != env["V0"].encode() + b"\n":
            raise Violation(f"env: {c.stdout()!r}")
    else:
        c = yield run_conn(exec_req(rng, i, ["sleep", "5"]), shut=False,
                           extra=[("pause", rng.choice([0, 0.05])), ("send", sig_frame(rng, 9))])
        expect_exit(c, 137, "SIGNAL 9")


def sig_frame(rng, n):
    # (one byte is a binary number: ASCII digits only from two of them on)
    enc = rng.randrange(5 if n >= 10 else 4)
    if enc == 0:
        return frame(SIGNAL, struct.pack(">I", n))
    if enc == 1:
        return frame(SIGNAL, bytes([n]))
    if enc == 2:
        return frame(SIGNAL, struct.pack(">H", n))
    if enc == 3:
        return frame(SIGNAL, struct.pack(">Q", n))
    return frame(SIGNAL, str(n).encode())


EXEC_ARGVS = [["true"], ["false"], ["echo", "x"], ["cat"], ["sh", "-c", "exit 3"], ["head", "-c", "1000", "/dev/zero"],
              ["/nonexistent"], ["/etc"], ["env"], ["pwd"], [""], ["sh", "-c", "echo $FZ_SESSION"]]


def exec_request_grammar(rng, i, d):
    req = exec_req(rng, i, list(rng.choice(EXEC_ARGVS)))
    for _ in range(rng.randint(1, 4)):
        r = rng.randrange(12)
        if r == 0:
            req["argv"] = rand_scalar(rng)
        elif r == 1:
            req["env"] = rng.choice([None, [], {"": "x"}, {"A=B": "c"}, {"A": "\u0000"}, {"A": 1}, "x"])
        elif r == 2:
            req["cwd"] = rng.choice([None, "", "/nonexistent", f"{d}", "/proc/self", "/dev/null", 7, "a" * 5000])
        elif r == 3:
            req["tty"] = rng.choice([True, False, None, 1, "yes"])
        elif r == 4:
            req["cols"], req["rows"] = rng.choice(INT_EDGE), rng.choice(INT_EDGE)
        elif r == 5:
            req["stage_files"] = [{"path": any_path(rng, d, WRITE_HOSTILE), "data_b64": rand_b64(rng),
                                   "mode": rand_scalar(rng) if rng.random() < 0.5 else 0o644}
                                  for _ in range(rng.randint(0, 3))]
        elif r == 6:
            req["chain"] = rng.choice([[], [[]], [["true"]], [["echo", "c"]] * 20, "x", [["/nonexistent"]], None])
        elif r == 7:
            req["argv"] = ["echo"] + ["a"] * rng.choice([1, 1000, 20000])
        elif r == 8:
            req["argv"] = ["echo", "\u0000"]
        elif r == 9:
            req[rng.choice(["extra", "ARGV", ""])] = rand_scalar(rng)
        elif r == 10:
            req["argv"] = ["echo", "y" * rng.choice([100, 100000])]
        else:
            req.pop("env", None)
    return req


def s_exec_grammar(rng, i, d, ctx):
    req = exec_request_grammar(rng, i, d)
    steps = [("send", jframe(REQUEST, req))]
    if rng.random() < 0.5:
        steps.append(("send", frame(STDIN, b"in\n")))
    steps += [("shutwr",), ("wait", "answer")]
    yield Conn(steps, label="REQUEST grammar")


def s_exec_bytes(rng, i, d, ctx):
    req = exec_req(rng, i, list(rng.choice(EXEC_ARGVS)))
    if rng.random() < 0.3:
        req["tty"] = True
    if rng.random() < 0.3:
        req["stage_files"] = [{"path": f"/tmp/m{i}/s", "data_b64": b64(b"staged")}]
    payload = mutate(rng, jdump(req), rng.randint(1, 4))
    steps = split_sends(rng, framed(rng, REQUEST, payload)[0])
    steps += [("send", frame(STDIN, b"in\n")), ("shutwr",), ("wait", "answer")]
    yield Conn(steps, label="REQUEST mutated")


def junk_frame(rng):
    r = rng.randrange(10)
    if r == 0:
        return frame(RESIZE, rbytes(rng, rng.choice([0, 3, 4, 5, 100])))
    if r == 1:  # never all ASCII digits (that could be a stop signal)
        n = rng.choice([0, 3, 5, 9, 100])
        return frame(SIGNAL, (b"\xff" + rbytes(rng, n))[:n])
    if r == 2:
        return frame(rng.choice([STDOUT, STDERR, EXIT, ERROR, 0x07, 0x42, 0xFD, 0x80]), rbytes(rng, rng.randint(0, 50)))
    if r == 3:
        return jframe(rng.choice([REQUEST, CONTROL]), {"argv": ["true"], "action": "probe"})
    if r == 4:
        return frame(RESIZE, struct.pack(">HH", rng.choice([0, 1, 80, 65535]), rng.choice([0, 1, 24, 65535])))
    if r == 5:
        return frame(SIGNAL, str(rng.choice([28, 18, 23, 65, 255, 4294967295, -1])).encode())
    if r == 6:
        return frame(RESIZE, b"x" * rng.choice([65, 70000]))
    return frame(STDIN, rbytes(rng, rng.randint(1, 3000)))


def s_exec_interactive(rng, i, d, ctx):
    case = rng.randrange(9)
    if case == 0:
        # cat with stdin frames mixed with RESIZE/SIGNAL/unknown frames; output must be the input
        tty = rng.random() < 0.3
        data, steps = bytearray(), [("send", jframe(REQUEST, exec_req(rng, i, ["cat"], tty=tty)))]
        for _ in range(rng.randint(0, 12)):
            if rng.random() < 0.5:
                b = rbytes(rng, rng.randint(1, 20000)) if not tty else b"line %d\n" % rng.randint(0, 99)
                data += b
                steps.append(("send", frame(STDIN, b)))
            else:
                f = junk_frame(rng)
                if f[0] == STDIN:
                    if tty:
                        continue
                    data += f[5:]
                steps.append(("send", f))
            if rng.random() < 0.2:
                steps.append(("pause", 0.01))
        end = rng.choice(["frame", "shut", "close"])
        steps.append(("send", frame(STDIN)) if end == "frame" else ("shutwr",) if end == "shut" else ("close",))
        steps.append(("wait", "answer"))
        c = yield Conn(steps, label=f"cat interactive tty={tty}")
        if end != "close":
            expect_exit(c, 0, "cat interactive")
            if not tty and c.stdout() != bytes(data):
                raise Violation(f"cat interactive: {len(c.stdout())} bytes out, {len(data)} in")
    elif case == 1:
        # SIGSTOP then SIGCONT then SIGTERM
        steps = [("send", jframe(REQUEST, exec_req(rng, i, ["sleep", "5"]))), ("send", sig_frame(rng, 19)),
                 ("pause", 0.05), ("send", sig_frame(rng, 18)), ("send", sig_frame(rng, 15)), ("wait", "answer")]
        c = yield Conn(steps, label="stop/cont/term")
        expect_exit(c, 143, "SIGTERM after STOP/CONT")
    elif case == 2:
        # SIGNAL in the same write as the REQUEST: delivered when the command starts
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["sleep", "5"])) + sig_frame(rng, 15)),
                        ("wait", "answer")], label="signal before start")
        expect_exit(c, 143, "SIGNAL before start")
    elif case == 3:
        # stdin backlog to a process that does not read, then SIGNAL 9: must not wait behind it
        data = b"z" * rng.choice([200000, 1 << 20, 3 << 20])
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["sleep", "5"]))), ("send", frame(STDIN, data)[:5]),
                        ("send", data[:rng.randint(0, len(data))]), ("pause", 0.1), ("close",)], label="backlog+close")
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["sleep", "5"])) + frame(STDIN, b"q" * 900000)),
                        ("send", sig_frame(rng, 9)), ("wait", "answer")], label="backlog+kill")
        if c.exit_code() == 0:
            # The stdin queue could not grow: other sessions held the shared budget (8 MiB), so
            # the agent stopped reading this connection and the SIGNAL behind the stdin came
            # too late (PROTOCOL.md: with an empty budget "stdin: the connection waits").
            ctx.notes["SIGNAL behind stdin delayed past the command's end (shared budget in use)"] = \
                ctx.notes.get("SIGNAL behind stdin delayed past the command's end (shared budget in use)", 0) + 1
        else:
            expect_exit(c, 137, "SIGNAL 9 behind 900 kB of stdin")
    elif case == 4:
        # disconnect in the middle of a large output
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["head", "-c", "20000000", "/dev/zero"],
                                                            tty=rng.random() < 0.3))),
                        ("wait", "frame", STDOUT), rng.choice([("close",), ("pause", 0.05)]), ("close",)],
                       label="close mid-output")
    elif case == 5:
        # an oversized frame during an exec ends the host's input; the exec still finishes
        tty = rng.random() < 0.5
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["cat"], tty=tty))),
                        ("send", frame(STDIN, b"abc\n")), ("send", struct.pack(">BI", STDIN, H.MAX_FRAME + 1)),
                        ("wait", "answer")], label=f"oversized mid-exec tty={tty}")
        expect_exit(c, 0, "oversized frame during exec")
        if not any("no more input" in e for e in c.errors()):
            raise Violation(f"oversized frame: errors {c.errors()}")
    elif case == 6:
        # a truncated frame at half-close
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["cat"]))),
                        ("send", struct.pack(">BI", STDIN, 100) + b"0123456789"), ("shutwr",), ("wait", "answer")],
                       label="truncated stdin")
        expect_exit(c, 0, "truncated stdin frame")
        if not any("truncated" in e for e in c.errors()):
            raise Violation(f"truncated stdin frame: errors {c.errors()}")
    elif case == 7:
        # tty: a half-close is ^D
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["cat"], tty=True))),
                        ("send", frame(STDIN, b"hello\n")), ("shutwr",), ("wait", "answer")], label="tty half-close")
        expect_exit(c, 0, "tty cat after half-close")
    else:
        # disconnect before the command even starts / right after
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["sleep", "3"]))[:rng.randint(1, 40)]), ("close",)],
                       label="close in REQUEST")
        c = yield Conn([("send", jframe(REQUEST, exec_req(rng, i, ["sleep", "3"]))),
                        ("pause", rng.choice([0, 0.02, 0.2])), ("close",)], label="close during exec")


# ---------------------------------------------------------------------------------------------
# Frame level

def s_frames(rng, i, d, ctx):
    case = rng.randrange(12)
    kind = rng.choice([REQUEST, CONTROL])
    good = jframe(CONTROL, {"action": "probe"}) if kind == CONTROL else jframe(REQUEST, exec_req(rng, i, ["true"]))
    if case == 0:
        t = rng.choice([STDIN, STDOUT, STDERR, RESIZE, SIGNAL, EXIT, ERROR, 0x07, 0x42, 0x80, 0xFD, rng.randrange(256)])
        if t in (REQUEST, CONTROL):
            t = 0x42
        steps = [("send", framed(rng, t, rbytes(rng, rng.randint(0, 100)))[0])]
    elif case == 1:
        steps = [("send", struct.pack(">BI", kind, rng.choice([H.MAX_FRAME + 1, 2**31, 2**32 - 1])))]
    elif case == 2:
        steps = [("send", struct.pack(">BI", kind, H.MAX_FRAME) + b'{"action":"probe"' + b" " * rng.randint(0, 5000)),
                 ("shutwr",)]
    elif case == 3:
        steps = [("send", good[:rng.randint(1, 4)]), ("shutwr",)]
    elif case == 4:
        steps = [("send", good[:rng.randint(5, len(good) - 1)]), ("shutwr",)]
    elif case == 5:
        steps = rng.choice([[("shutwr",)], [("close",)], [("pause", 0.01), ("close",)]])
    elif case == 6:
        steps = [("send", frame(kind))]
    elif case == 7:
        steps = split_sends(rng, good, trickle=True)
    elif case == 8:
        steps = [("send", good + b"".join(junk_frame(rng) for _ in range(rng.randint(1, 5))))]
    elif case == 9:
        body = rng.choice([b"[]", b"null", b"1", b'"x"', b"{", b"}", b"\xef\xbb\xbf{}", b"\xff\xfe", b"{}" * 3,
                           b"[" * 100000, b'{"a":' * 50000, b'{"action":"probe","action":"probe"}',
                           b'{"action":"write_file","path":"/tmp/m%d/dup","data_b64":"QQ==","data_b64":"QQ=="}' % i,
                           b'{"action":"write_file","data_b64":"QQ==","path":"/tmp/m%d/d"' % i,
                           b'{"argv":["true"],"stage_files":[{"path":"/tmp/m%d/x","data_b64":"QQ==' % i])
        steps = [("send", frame(kind, body))]
    elif case == 10:
        steps = [("send", good), ("send", good)]
    else:
        steps = [("send", good[:5]), ("pause", rng.choice([0.05, 0.5, 2.0])), ("send", good[5:])]
    if rng.random() < 0.5:
        steps.append(("wait", "answer"))
    yield Conn(steps, label=f"frames case {case}")


def s_stall(rng, i, d, ctx):
    """The first frame never completes: ERROR 'timed out' and close after 10 s."""
    good = jframe(rng.choice([REQUEST, CONTROL]), {"action": "probe", "argv": ["true"]})
    pre = rng.choice([b"", good[:rng.randint(1, 4)], good[:rng.randint(5, len(good) - 1)]])
    steps = [("send", pre)] if pre else []
    steps.append(("wait", "eof", H.FIRST_FRAME_TIMEOUT + 15))
    c = yield Conn(steps, label="stall")
    msgs = c.errors()
    if len(msgs) != 1 or not msgs[0].startswith("timed out"):
        raise Violation(f"stalled first frame: {c.describe()}")


def wait_threads(ctx, secs=15):
    """Until the connection threads of earlier sessions are gone (their slots are free)."""
    t = time.monotonic()
    while time.monotonic() - t < secs and ctx.sandbox.stats().get("Threads", 0) > ctx.base_threads:
        time.sleep(0.05)


def s_burst(rng, i, d, ctx):
    """More connections than the cap at once: the extra ones get 'agent busy', the others serve."""
    extra = rng.randint(1, 30)
    conns = [Conn([("pause", 1.0), ("send", jframe(CONTROL, {"action": "probe"})), ("wait", "answer")], label=f"burst {k}")
             for k in range(H.MAX_CONNECTIONS + extra)]
    done = yield Exclusive(conns, before=lambda: wait_threads(ctx))
    busy = sum(1 for c in done if any("agent busy" in e for e in c.errors()))
    ok = sum(1 for c in done if (c.reply() or {}).get("ok"))
    if busy != extra or ok != H.MAX_CONNECTIONS:
        raise Violation(f"burst of {len(conns)}: {busy} busy (expected {extra}), {ok} probes answered")


# ---------------------------------------------------------------------------------------------
# Files

def s_files(rng, i, d, ctx):
    case = rng.randrange(9)
    if case == 0:
        data = rbytes(rng, rng.choice([0, 1, 3, 4096, 100000, 700000]))
        p = own_path(rng, d, valid=True)
        mode = rng.choice([None, 0o600, "0751"])
        o = {"action": "write_file", "path": p}
        if mode is not None:
            o["mode"] = mode
        o["data_b64"] = b64(data)
        if rng.random() < 0.3:  # data first: the agent spools it
            o = {"data_b64": o.pop("data_b64"), **o}
        c = yield ctl(o)
        r = expect_ok(c, f"write_file {p!r}")
        if r.get("bytes") != len(data):
            raise Violation(f"write_file bytes {r}")
        got = yield from read_back(p)
        if got != data:
            raise Violation(f"read_file {p!r}: {len(got)} bytes back for {len(data)} written")
        off = rng.randint(0, len(data))
        c = yield ctl({"action": "read_file_chunk", "path": p, "offset": off, "len": rng.randint(0, 200000)})
        r = expect_ok(c, "read_file_chunk")
        chunk = base64.b64decode(r["data_b64"])
        if chunk != data[off:off + len(chunk)] or r["total_len"] != len(data) or r["eof"] != (off + len(chunk) >= len(data)):
            raise Violation(f"read_file_chunk at {off}: {len(chunk)} bytes, {str(r)[-80:]}")
        c = yield ctl({"action": "stat", "path": p})
        r = expect_ok(c, "stat")
        want = {None: 0o644, 0o600: 0o600, "0751": 0o751}[mode]
        if r["type"] != "file" or r["size"] != len(data) or r["mode"] & 0o7777 != want:
            raise Violation(f"stat {p!r}: {r}, mode {want:o} expected")
    elif case == 1:
        # JSON escapes inside data_b64
        p = f"{d}/esc"
        c = yield Conn([("send", frame(CONTROL, b'{"action":"write_file","path":"%s","data_b64":"\\u0061GVs\\/bG8="}'
                                       % p.encode().replace(b"\\", b"\\\\"))), ("wait", "answer")], label="b64 escapes")
        r = reply_of(c, "write_file with escapes")
        if r.get("ok"):
            got = yield from read_back(p)
            if got != base64.b64decode("aGVs/bG8="):
                raise Violation(f"write_file with JSON escapes in data_b64: {got!r}")
    elif case == 2:
        # FIFO, devices, a socket, a directory: refused without blocking
        fifo = f"{d}/fifo"
        yield ("host", lambda: (os.makedirs(ctx.sandbox.root(d), exist_ok=True), os.mkfifo(ctx.sandbox.root(fifo))))
        for p in [fifo, "/dev/ptmx", "/dev/tty", "/dev/zero", "/sock/agent.sock", d]:
            a = rng.choice(["read_file", "read_file_chunk"])
            o = {"action": a, "path": p}
            if a == "read_file_chunk":
                o.update(offset=0, len=100)
            c = yield ctl(o)
            expect_err(c, f"{a} {p}", "not a regular file")
        c = yield ctl({"action": "stat", "path": fifo})
        if expect_ok(c, "stat fifo")["type"] != "other":
            raise Violation("stat of a FIFO")
    elif case == 3:
        # /proc files read to their end
        p = rng.choice(["/proc/self/status", "/proc/self/maps", "/proc/1/cmdline", "/proc/mounts"])
        c = yield ctl({"action": "read_file", "path": p})
        whole = base64.b64decode(expect_ok(c, f"read_file {p}")["data_b64"])
        c = yield ctl({"action": "read_file_chunk", "path": p, "offset": 0, "len": 1 << 20})
        r = expect_ok(c, f"read_file_chunk {p}")
        chunk = base64.b64decode(r["data_b64"])
        if not whole or not chunk or not r["eof"] or r["total_len"] != len(chunk):
            raise Violation(f"{p}: read_file {len(whole)} bytes, chunk {len(chunk)} {str(r)[-60:]}")
    elif case == 4:
        # mkdir -p, stat, remove -r
        p = f"{d}/m/n/o"
        c = yield ctl({"action": "mkdir", "path": p, "parents": True, "mode": 0o700})
        expect_ok(c, "mkdir -p")
        c = yield ctl({"action": "write_file", "path": f"{p}/f", "data_b64": "QQ=="})
        expect_ok(c, "write_file in new dir")
        c = yield ctl({"action": "remove", "path": f"{d}/m"})
        expect_err(c, "remove non-empty dir")
        c = yield ctl({"action": "remove", "path": f"{d}/m", "recursive": True})
        expect_ok(c, "remove -r")
        c = yield ctl({"action": "stat", "path": p})
        expect_err(c, "stat after remove", "No such file")
    elif case == 5:
        # a disconnect in the middle of write_file: no file, no temp file left
        p = f"{d}/cut"
        data = rbytes(rng, rng.choice([10, 100000, 2 << 20]))
        f = jframe(CONTROL, {"action": "write_file", "path": p, "data_b64": b64(data)})
        yield Conn([("send", f[:rng.randint(1, len(f) - 1)]), ("pause", rng.choice([0, 0.05])), ("close",)],
                   label="close mid write_file")
        c = yield ctl({"action": "stat", "path": p})
        expect_err(c, "stat after a cut write_file", "No such file")
    elif case == 6:
        # read_file limits
        p = f"{d}/lim"
        c = yield ctl({"action": "write_file", "path": p, "data_b64": b64(b"x" * 1000)})
        expect_ok(c, "write_file")
        c = yield ctl({"action": "read_file", "path": p, "max_bytes": 999})
        expect_err(c, "read_file over max_bytes", "max_bytes")
        c = yield ctl({"action": "read_file_chunk", "path": p, "offset": 2000, "len": 10})
        r = expect_ok(c, "read_file_chunk past the end")
        if r["data_b64"] != "" or not r["eof"]:
            raise Violation(f"chunk past the end: {r}")
    elif case == 7:
        # write over things that are not files
        p = rng.choice(["/dev/null", "/proc/self/status", "/usr/bin/zz-fuzz", "/sys/zz", "/", "/proc"])
        c = yield ctl({"action": "write_file", "path": p, "data_b64": "QQ=="})
        expect_err(c, f"write_file {p}")
    else:
        # reseed / sync_time are refused in the sandbox (no CAP_SYS_ADMIN / CAP_SYS_TIME), smpark works on fakesys
        c = yield ctl({"action": "reseed", "data_b64": b64(rbytes(rng, 32))})
        expect_err(c, "reseed without CAP_SYS_ADMIN")
        c = yield ctl({"action": "sync_time", "host_unix_ns": time.time_ns()})
        expect_err(c, "sync_time without CAP_SYS_TIME")
        c = yield ctl({"action": rng.choice(["smpark_park", "smpark_unpark"])})
        if expect_ok(c, "smpark")["cpus"] != [1, 2, 3]:
            raise Violation(f"smpark: {c.reply()}")


def s_chunks(rng, i, d, ctx):
    """write_file_chunk sequences, with bad offsets and tokens in between."""
    p = f"{d}/up/{rng.choice(['file', 'x y'])}"
    token = rng.choice(["tok", "t-" + str(i), "ü/..", "a" * 128])
    pieces = [rbytes(rng, rng.choice([0, 1, 5, 1000, 65536, 100000])) for _ in range(rng.randint(1, 5))]
    if len(pieces) > 1 and not pieces[0]:
        pieces[0] = b"0"  # an empty first chunk leaves the next one at offset 0, which starts uploads
    data = b"".join(pieces)
    off = 0

    def chunk(offset, piece, last, tok=token, **kw):
        o = {"action": "write_file_chunk", "path": p, "offset": offset, "last": last, "token": tok}
        o.update(kw)
        o["data_b64"] = b64(piece)
        return ctl(o)

    if rng.random() < 0.3:
        c = yield chunk(4, b"abcd", False)
        expect_err(c, "chunk without an upload", "no upload in progress")
    for k, piece in enumerate(pieces):
        last = k == len(pieces) - 1
        bad = rng.random()
        if off > 0 and bad < 0.15:
            c = yield chunk(off + rng.choice([1, 100]), b"gap", False)
            expect_err(c, "chunk with a gap", "chunks must follow")
        elif off > 1 and bad < 0.3:
            c = yield chunk(off - 1, b"ovl", False)
            expect_err(c, "overlapping chunk", "chunks must follow")
        elif off > 0 and bad < 0.4:
            c = yield chunk(0, b"again", False)
            expect_err(c, "offset 0 for a token in use", "already used")
        elif bad < 0.45:
            c = yield chunk(2**40, b"far", False)
            expect_err(c, "chunk at 2^40")
        elif off > 0 and bad < 0.55:
            # two chunks at the same offset at once: exactly one is taken
            a, b = yield [chunk(off, b"A" * 1000, False), chunk(off, b"B" * 1000, False)]
            oks = [x for x in (a, b) if reply_of(x, "racing chunk").get("ok")]
            if len(oks) != 1:
                raise Violation(f"racing chunks at {off}: {a.reply()} / {b.reply()}")
            # that upload is now ahead of `data`: abandon it and start again with a new token
            c = yield chunk(off + 1000, b"", True, mode=0o600)
            expect_ok(c, "finishing the raced upload")
            token = token[:100] + "-2"
            off = 0
            for q in pieces[:k]:
                c = yield chunk(off, q, False)
                expect_ok(c, "re-upload")
                off += len(q)
        elif bad < 0.6:
            c = yield chunk(off, piece, False, tok="")
            expect_err(c, "empty token", "token")
        c = yield chunk(off, piece, last, **({"mode": 0o640} if last else {}))
        r = expect_ok(c, f"chunk {k} at {off}")
        if r.get("bytes") != len(piece):
            raise Violation(f"chunk bytes: {r}")
        off += len(piece)
    got = yield from read_back(p)
    if got != data:
        raise Violation(f"chunked upload: {len(got)} bytes back for {len(data)}")
    if off > 0:
        c = yield chunk(off, b"late", True)
        expect_err(c, "a chunk after the last", "no upload in progress")
    if rng.random() < 0.5:
        # an upload cut in the middle of a chunk is abandoned
        t2 = token[:100] + "-cut"
        c = yield chunk(0, b"first", False, tok=t2)
        expect_ok(c, "first chunk")
        f = jframe(CONTROL, {"action": "write_file_chunk", "path": p, "offset": 5, "last": False, "token": t2,
                             "data_b64": b64(b"y" * 200000)})
        yield Conn([("send", f[:rng.randint(len(f) // 2, len(f) - 1)]), ("close",)], label="cut chunk")
        c = yield chunk(5, b"more", True, tok=t2)
        r = expect_err(c, "chunk after a cut chunk")
        if "no upload in progress" not in r["error"] and "being written now" not in r["error"]:
            raise Violation(f"chunk after a cut chunk: {r}")


def s_port_forward(rng, i, d, ctx):
    case = rng.randrange(4)
    if case <= 1:
        data = rbytes(rng, rng.choice([1, 100, 70000, 300000]))
        steps = [("send", jframe(CONTROL, {"action": "port_forward", "port": ECHO_PORT}))]
        if rng.random() < 0.5:
            steps.append(("wait", "answer"))
        steps += split_sends(rng, data) + [("shutwr",), ("wait", "eof", 30)]
        c = yield Conn(steps, label="port_forward echo")
        r = reply_of(c, "port_forward")
        if r != {"ok": True, "port": ECHO_PORT} or bytes(c.raw) != data:
            raise Violation(f"port_forward: {r}, {len(c.raw)} bytes back for {len(data)}")
    elif case == 2:
        c = yield ctl({"action": "port_forward", "port": rng.choice([1, 9, 65535])})
        expect_err(c, "port_forward to a closed port", "port_forward")
    else:
        yield Conn([("send", jframe(CONTROL, {"action": "port_forward", "port": ECHO_PORT})), ("wait", "answer"),
                    ("send", rbytes(rng, 50000)), ("pause", rng.choice([0, 0.01])), ("close",)], label="port_forward cut")


def s_big(rng, i, d, ctx):
    case = rng.randrange(6)
    if case == 0:
        c = yield run_conn(exec_req(rng, i, ["echo", "x" * (3 << 20)]))
        if not busy(c) and not any("larger than 2097152" in e for e in c.errors()):
            raise Violation(f"3 MiB argv: {c.describe()}")
    elif case == 1:
        env = {f"K{k}": "" for k in range(40000)}
        c = yield run_conn({"argv": ["true"], "env": env})
        if not busy(c) and not any("65536 strings" in e for e in c.errors()):
            raise Violation(f"80k strings: {c.describe()}")
    elif case == 2:
        c = yield ctl({"action": "stat", "path": "/" + "p" * (3 << 20)})
        if not busy(c):
            expect_err(c, "3 MiB path", "larger than 2097152")
    elif case == 3:
        data = rbytes(rng, 8 << 20)
        p = f"{d}/big"
        c = yield ctl({"action": "write_file", "path": p, "data_b64": b64(data)})
        expect_ok(c, "write_file 8 MiB")
        c = yield ctl({"action": "read_file_chunk", "path": p, "offset": 0, "len": 8 << 20})
        if base64.b64decode(expect_ok(c, "read 8 MiB")["data_b64"]) != data:
            raise Violation("8 MiB round trip")
    elif case == 4:
        data = rbytes(rng, 3 << 20)
        c = yield run_conn(exec_req(rng, i, ["cat"]), stdin=data)
        expect_exit(c, 0, "cat 3 MiB")
        if c.stdout() != data:
            raise Violation(f"cat 3 MiB: {len(c.stdout())} bytes")
    else:
        c = yield ctl({"action": "read_file", "path": "/usr/bin/python3.11"})
        r = expect_ok(c, "read_file of a 6.8 MB file")
        if len(base64.b64decode(r["data_b64"])) != os.path.getsize("/usr/bin/python3.11"):
            raise Violation("read_file of /usr/bin/python3.11: wrong size")


KINDS = [  # (name, generator, weight, mutated, light)
    ("control", s_control_valid, 22, False, False),
    ("control-grammar", s_control_grammar, 14, True, False),
    ("control-bytes", s_control_bytes, 9, True, False),
    ("exec", s_exec_valid, 12, False, False),
    ("exec-grammar", s_exec_grammar, 6, True, False),
    ("exec-bytes", s_exec_bytes, 5, True, False),
    ("exec-interactive", s_exec_interactive, 7, False, False),
    ("frames", s_frames, 10, False, False),
    ("files", s_files, 6, False, False),
    ("chunks", s_chunks, 4, False, False),
    ("port-forward", s_port_forward, 2, False, False),
    ("stall", s_stall, 0.6, False, True),
    ("big", s_big, 0.25, False, False),
    ("burst", s_burst, 0.03, False, False),
]
WEIGHTS = [k[2] for k in KINDS]


def make_session(seed, i, ctx):
    rng = random.Random(f"{seed}/{i}")
    name, gen, _, mutated, light = rng.choices(KINDS, ctx.weights)[0]
    d = f"/tmp/m{i}" if mutated else f"/work/s{i}"
    return H.Session(i, gen(rng, i, d, ctx), light=light, mutated=mutated, kind=name,
                     marker=f"FZ_SESSION={i}".encode())


# ---------------------------------------------------------------------------------------------
# The run

class Ctx:
    pass


def leftovers(sb):
    """write_file temp files anywhere in the sandbox's writable tree."""
    found = []
    root = sb.root()
    for top in ("work", "tmp", "run", "dev/shm", ""):
        base = os.path.join(root, top)
        if top == "":
            try:
                names = os.listdir(base)
            except OSError:
                continue
            found += [os.path.join("/", n) for n in names if ".sm-tmp." in n]
            continue
        for dp, dns, fns in os.walk(base):
            for n in fns + dns:
                if ".sm-tmp." in n:
                    found.append(os.path.join(dp, n)[len(root) - 1:])
    return found


def clean(sb):
    for top in ("work", "tmp"):
        base = sb.root(top)
        for n in os.listdir(base):
            p = os.path.join(base, n)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                try:
                    os.unlink(p)
                except OSError:
                    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, help="sessions to run (default 2000; with --seconds: no limit)")
    ap.add_argument("--seconds", type=float, help="stop starting batches after this many seconds")
    ap.add_argument("--seed", type=int, help="default: random (printed)")
    ap.add_argument("--agent", help="agent binary (default: the committed x86_64 payload)")
    ap.add_argument("--batch", type=int, default=1000, help="sessions between checks (default 1000)")
    ap.add_argument("--concurrency", type=int, default=8, help="sessions at once (default 8)")
    ap.add_argument("--deadline", type=float, default=30.0, help="seconds the agent has to answer or close (default 30)")
    ap.add_argument("--from", dest="start", type=int, default=0, help="first session index (default 0)")
    ap.add_argument("--only", type=int, help="run just this session index (a reproducer)")
    ap.add_argument("--rss-slack", type=int, default=H.RSS_SLACK_KIB,
                    help=f"KiB over the baseline the RSS must be back within, after at least one of the last "
                         f"--rss-window batches (default {H.RSS_SLACK_KIB})")
    ap.add_argument("--rss-window", type=int, default=5,
                    help="batches the RSS may stay over the slack before it counts as a leak (default 5)")
    ap.add_argument("--rss-spike", type=int, default=H.RSS_SPIKE_KIB,
                    help=f"KiB over the baseline the RSS may never exceed, after any batch (default {H.RSS_SPIKE_KIB})")
    ap.add_argument("--warmup", type=int, default=3,
                    help="batches whose highest RSS is the baseline for the later ones (default 3)")
    ap.add_argument("--kinds", help="only these session kinds, comma-separated (" + ", ".join(k[0] for k in KINDS) + ")")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    if a.only is not None:
        a.start, a.sessions, a.batch = a.only, 1, 1
    if a.sessions is None and a.seconds is None:
        a.sessions = 2000
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1, 2**31)
    t_start = time.monotonic()
    sb = H.Sandbox(a.agent).start()
    ctx = Ctx()
    ctx.sandbox = sb
    ctx.notes = {}
    only = set(a.kinds.split(",")) if a.kinds else None
    ctx.weights = [k[2] if only is None or k[0] in only else 0 for k in KINDS]
    try:
        return fuzz(a, seed, sb, ctx, t_start)
    finally:
        sb.stop()


def rss_leak_text(a, sb, base, hist):
    """The violation when the RSS stayed over baseline + slack for the last batches."""
    n = min(a.rss_window, len(hist))
    return (f"RSS not back within {a.rss_slack} KiB of the baseline ({base['Rss']} KiB) after any of the last "
            f"{n} batches: {', '.join(str(r) for r in hist[-n:])} KiB; grown since the baseline: "
            f"{H.rss_growth(base['maps'], H.rss_by_mapping(sb.apid))}")


def fuzz(a, seed, sb, ctx, t_start):
    print(f"agent-fuzz: seed {seed}, agent {a.agent or H.PAYLOAD} (pid {sb.apid} on the host), batches of {a.batch}, "
          f"concurrency {a.concurrency}, deadline {a.deadline:.0f} s", flush=True)
    H.start_helpers(sb, ECHO_PORT)
    helpers = H.helper_pids(sb)
    st0 = H.settled_stats(sb)
    base = {"Threads": st0["Threads"], "fds": st0["fds"]}
    ctx.base_threads = st0["Threads"]
    print(f"  start: VmRSS {st0['VmRSS']} KiB (code pages {st0.get('code')}), {st0['Threads']} threads, {st0['fds']} fds, "
          f"{len(helpers)} helper processes (echo server, workload)", flush=True)
    counts, kinds, durations = {"sessions": 0, "connections": 0, "slow": 0}, {}, {}
    violations = []
    engine = H.Engine(sb.socket, concurrency=a.concurrency, deadline=a.deadline, sandbox=sb)
    index = a.start
    end = None if a.sessions is None else a.start + a.sessions
    t_fuzz = time.monotonic()
    last_print = 0
    batch_no = 0
    peak_threads = st0["Threads"]
    rss_hist = []
    over_streak = spikes = 0  # batches in a row / in all, past the warm-up, that ended over baseline + slack
    while end is None or index < end:
        if a.seconds is not None and time.monotonic() - t_start > a.seconds:
            break
        lo, hi = index, index + a.batch if end is None else min(end, index + a.batch)
        batch_violations = []

        def done(s):
            counts["sessions"] += 1
            counts["connections"] += s.connections
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
            durations[s.kind] = durations.get(s.kind, 0) + time.monotonic() - s.t0
            if s.slow:
                counts["slow"] += 1
            if s.violation:
                batch_violations.append((s.index, s.kind, s.violation))
                if a.verbose:
                    print(f"  session {s.index} ({s.kind}): {s.violation}", flush=True)

        # Mostly idle sessions (waiting out the first-frame timeout) first: they overlap the rest.
        batch = sorted((make_session(seed, i, ctx) for i in range(lo, hi)), key=lambda s: not s.light)
        engine.run(batch, on_done=done)
        index = hi
        batch_no += 1
        # after the batch: alive, answering, back to baseline
        if not sb.alive():
            batch_violations.append((None, "batch", f"the agent died (log: {sb.log_tail()})"))
        else:
            try:
                r = H.control(sb.socket, {"action": "probe"}, timeout=a.deadline)
                if not r.get("ok"):
                    batch_violations.append((None, "batch", f"probe after the batch: {r}"))
            except (OSError, Violation, ValueError) as e:
                batch_violations.append((None, "batch", f"probe after the batch failed: {e!r}"))
        st = sb.stats()
        peak_threads = max(peak_threads, st.get("Threads", 0))
        if not batch_violations:
            helpers &= {p[0] for p in sb.ns_processes()}
            # The per-batch RSS limit is the spike cap; "back within the slack" is judged over a
            # window of batches below (allocator retention comes and goes, a leak stays).
            ok, problems, st = H.quiesce(sb, base, helpers, settle=15, slack=a.rss_spike)
            if not ok:
                batch_violations.append((None, "batch", "not back to baseline after the batch: " + "; ".join(problems)))
            if "Rss" in base:
                over = st["Rss"] > base["Rss"] + a.rss_slack
                over_streak, spikes = (over_streak + 1 if over else 0), spikes + over
                if over_streak >= a.rss_window:
                    batch_violations.append((None, "batch", rss_leak_text(a, sb, base, rss_hist + [st["Rss"]])))
            left = leftovers(sb)
            if left:
                batch_violations.append((None, "batch", f"write_file temp files left: {left[:5]}"))
            rss_hist.append(st["Rss"])
            if "Rss" not in base and len(rss_hist) >= a.warmup:
                # The allocator's working set after the warm-up batches: musl's malloc keeps some
                # freed memory, so the RSS after a batch wanders (by ~100 KiB) without a trend.
                base["Rss"], base["VmRSS"] = max(rss_hist), st["VmRSS"]
                base["maps"] = H.rss_by_mapping(sb.apid)  # named in a later RSS failure
                print(f"  baseline after {a.warmup} warm-up batch(es): RSS {base['Rss']} KiB without the binary's code "
                      f"pages (their highest; VmRSS now {st['VmRSS']} KiB: anon {st.get('RssAnon')}, code {st.get('code')}), "
                      f"{st['Threads']} threads, {st['fds']} fds", flush=True)
            clean(sb)
        if batch_violations:
            violations += batch_violations
            break
        now = time.monotonic()
        if now - last_print > 10 or a.verbose or (end is not None and index >= end):
            last_print = now
            el = now - t_fuzz
            print(f"  {counts['sessions']} sessions, {counts['connections']} connections, {el:.0f} s, "
                  f"{counts['sessions'] / el:.0f} sessions/s; agent RSS {st.get('Rss')} KiB + code {st.get('code')} KiB, "
                  f"VmHWM {st.get('VmHWM')} KiB, "
                  f"{st.get('Threads')} threads, {st.get('fds')} fds", flush=True)
    el = time.monotonic() - t_fuzz
    st = sb.stats()
    print(f"agent-fuzz: seed {seed}: {counts['sessions']} sessions (indices {a.start}..{index - 1}), "
          f"{counts['connections']} connections in {el:.0f} s ({counts['sessions'] / max(el, 1e-9):.0f} sessions/s, "
          f"{counts['connections'] / max(el, 1e-9):.0f} connections/s), {batch_no} batches")
    print("  by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])))
    print(f"  agent RSS without code pages: start {st0.get('Rss')} KiB, baseline {base.get('Rss')} KiB, end {st.get('Rss')} KiB "
          f"(VmRSS start {st0.get('VmRSS')}, baseline {base.get('VmRSS')}, end {st.get('VmRSS')} KiB); peak (VmHWM) "
          f"{st.get('VmHWM')} KiB; threads start {st0['Threads']}, end {st.get('Threads')}; "
          f"fds start {st0['fds']}, end {st.get('fds')}")
    if rss_hist:
        srt = sorted(rss_hist)
        n = min(10, len(rss_hist))
        med = lambda v: sorted(v)[len(v) // 2]
        print(f"  agent RSS after each batch (without code pages): min {srt[0]}, median {med(rss_hist)}, max {srt[-1]} KiB; "
              f"median of the first {n} batches {med(rss_hist[:n])}, of the last {n} {med(rss_hist[-n:])} KiB")
        if len(rss_hist) >= 20:
            tenth = len(rss_hist) // 10
            print("  median RSS by tenth of the run: " + ", ".join(
                str(med(rss_hist[k * tenth:(k + 1) * tenth])) for k in range(10)) + " KiB")
    if a.verbose:
        print("  mean session time: " + ", ".join(f"{k} {1000 * durations[k] / kinds[k]:.0f} ms" for k in sorted(kinds)))
    for note, n in sorted(ctx.notes.items()):
        print(f"  note: {note}: {n}")
    if counts["slow"]:
        print(f"  {counts['slow']} mutated sessions ran a command longer than the deadline (not counted as hangs)")
    if violations:
        print(f"FAIL: {len(violations)} violation(s)")
        for idx, kind, msg in violations[:20]:
            if idx is None:
                print(f"  batch {lo}..{hi - 1}: {msg}")
                # with the warm-up batches (the RSS baseline) and the RSS window before it
                first = max(a.start, lo - (a.warmup + a.rss_window - 1) * a.batch)
                print(f"    reproduce: scripts/agent-fuzz.sh --seed {seed} --from {first} --sessions {hi - first} "
                      f"--batch {a.batch}")
            else:
                print(f"  session {idx} ({kind}): {msg}")
                print(f"    reproduce: scripts/agent-fuzz.sh --seed {seed} --only {idx}   "
                      f"(its batch: --seed {seed} --from {lo} --sessions {hi - lo})")
        tail = sb.log_tail(10)
        if tail:
            print("  agent log (last lines):\n    " + tail.replace("\n", "\n    "))
        return 1
    rss_note = (f"RSS within {a.rss_slack} KiB of the baseline again within {a.rss_window} batches whenever it left "
                f"({spikes} batch(es) ended above it, none more than {a.rss_spike} KiB over; after the last batch "
                f"{rss_hist[-1]} KiB, baseline {base.get('Rss')} KiB)" if "Rss" in base
                else f"RSS not checked (no more batches than the {a.warmup} warm-up ones)")
    print(f"OK: no crash, no hang, no zombie, threads/fds back to baseline after every batch, {rss_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
