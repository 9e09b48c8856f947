"""Sessions over non-blocking sockets, many at once, in one thread."""
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
from .sandbox import *  # noqa: F401,F403
from .blocking import *  # noqa: F401,F403

# ---------------------------------------------------------------------------------------------
# Sessions over non-blocking sockets, many at once, in one thread

class Conn:
    """One connection and its script.

    Steps: ("send", bytes) · ("pause", s) · ("shutwr",) half-close · ("close",) disconnect
    (ends the connection; nothing more is checked) · ("wait", "answer") until the agent answered
    (EXIT, a CONTROL reply, or an ERROR that ends the session; or it closed) · ("wait", "frame",
    kind) · ("wait", "raw", n) n bytes after a port_forward ack · ("wait", "eof", s) the agent
    must close within s seconds (e.g. the first-frame timeout).
    After the last step the connection is half-closed and the agent must close within the
    deadline.
    """

    def __init__(self, steps, label=""):
        self.steps = list(steps)
        self.label = label
        self.frames = []
        self.raw = bytearray()
        self.raw_mode = False
        self.rx = bytearray()
        self.out = bytearray()
        self.sent = bytearray()
        self.sock = None
        self.eof = False
        self.aborted = False
        self.wdead = False
        self.shut = False
        self.done = False
        self.violation = None
        self.slow = False
        self.t0 = self.t_answer = self.t1 = None
        self.wait_until = None
        self.wait_since = None
        self.stdout_bytes = 0
        self.received = 0
        self.seen = set()
        self.nframes = 0
        self.kept = 0
        self.step_i = 0

    # results
    def kinds(self):
        """The frame types received (a set)."""
        return self.seen

    def first(self, kind):
        for k, p in self.frames:
            if k == kind:
                return p
        return None

    def reply(self):
        """The CONTROL reply as a dict (None without one)."""
        p = self.first(CONTROL)
        return None if p is None else json.loads(p)

    def stdout(self):
        return b"".join(p for k, p in self.frames if k == STDOUT)

    def stderr(self):
        return b"".join(p for k, p in self.frames if k == STDERR)

    def exit_code(self):
        p = self.first(EXIT)
        return None if p is None else struct.unpack(">I", p[:4])[0]

    def errors(self):
        return [p.decode(errors="replace") for k, p in self.frames if k == ERROR]

    def answered(self):
        if self.eof:
            return True
        ks = self.seen
        if EXIT in ks or CONTROL in ks:
            return True
        first = self.sent[:1]
        return ERROR in ks and first != bytes([REQUEST])

    def describe(self):
        fr = ", ".join(f"{NAMES.get(k, hex(k))}({len(p)}){' ' + repr(p[:120]) if k in (ERROR, CONTROL) else ''}"
                       for k, p in self.frames[:8])
        more = f" +{self.nframes - 8} frames" if self.nframes > 8 else ""
        return (f"[{self.label}] sent {len(self.sent)} bytes {bytes(self.sent[:160])!r}; got {fr}{more}"
                f"{'; eof' if self.eof else ''}")


class Exclusive(list):
    """Connections a session runs with no other session active (e.g. a burst over the cap);
    `before` (if given) is called once the others have ended, before these connect."""

    def __init__(self, conns, before=None):
        super().__init__(conns)
        self.before = before


class Engine:
    """Runs sessions (generators yielding Conn, [Conn...], Exclusive([...]) or ("host", fn)) with at
    most `concurrency` active at once; sessions marked light (mostly idle) have their own limit.
    A ("host", fn) step runs fn in the loop: it must be quick (mkfifo, not waiting)."""

    def __init__(self, sock_path, concurrency=8, deadline=30.0, light_concurrency=24, sandbox=None):
        self.sock_path = sock_path
        self.total_limit = max(120.0, 4 * deadline)
        self.concurrency = concurrency
        self.light_concurrency = light_concurrency
        self.deadline = deadline
        self.sel = selectors.DefaultSelector()
        self.sandbox = sandbox
        self.conns = set()
        self.connections = 0

    # --- one connection -----------------------------------------------------------------------
    def _open(self, c, now):
        c.t0 = c.t0 or now
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(self.sock_path)
        except BlockingIOError:  # backlog full: try again shortly
            s.close()
            if now - c.t0 > self.deadline:
                self._violate(c, f"cannot connect for {self.deadline:.0f} s (backlog full)")
                return
            c.retry_at = now + 0.005
            return
        except OSError as e:
            s.close()
            self._violate(c, f"connect: {e}")
            return
        c.retry_at = None
        c.sock = s
        self.connections += 1
        self.sel.register(s, selectors.EVENT_READ, c)

    def _violate(self, c, msg):
        if c.violation is None and not c.done:
            c.violation = msg
        self._finish(c)

    def _finish(self, c):
        if c.done:
            return
        c.done = True
        c.t1 = time.monotonic()
        if c.sock is not None:
            try:
                self.sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()
        self.conns.discard(c)

    def _events(self, c):
        ev = 0 if c.eof else selectors.EVENT_READ
        if c.out and not c.wdead:
            ev |= selectors.EVENT_WRITE
        return ev

    def _update(self, c):
        if c.done or c.sock is None:
            return
        ev = self._events(c)
        try:
            if ev:
                self.sel.modify(c.sock, ev, c)
            else:
                self.sel.unregister(c.sock)
        except (KeyError, ValueError):
            if ev:
                self.sel.register(c.sock, ev, c)

    def _on_read(self, c, now):
        try:
            b = c.sock.recv(1 << 18)
        except BlockingIOError:
            return
        except ConnectionResetError:  # the agent closed with our bytes unread: the same as EOF
            b = b""
        if not b:
            c.eof = True
            self._check_end_of_stream(c)
            return
        c.wait_since = now
        c.received += len(b)
        if c.received > RX_CAP:
            if getattr(c, "marker", None) and c.sent[:1] == bytes([REQUEST]) and c.seen & {STDOUT, STDERR}:
                # A mutated command streaming endless, well-formed output (`head` of /dev/zero with
                # its arguments mangled). The agent is doing its job; the mutation may also have
                # mangled the environment marker _overrun looks for. Drop the connection: the
                # batch's stray-process check then proves the agent killed the command.
                c.slow = True
                c.aborted = True
                return self._finish(c)
            return self._overrun(c, f"the agent sent more than {RX_CAP >> 20} MiB on one connection")
        if c.raw_mode:
            c.raw += b
            return
        c.rx += b
        while len(c.rx) >= 5:
            kind, n = struct.unpack(">BI", c.rx[:5])
            if kind not in AGENT_TO_HOST or n > MAX_FRAME:
                return self._violate(c, f"the agent sent an invalid frame header {bytes(c.rx[:5]).hex()}")
            if len(c.rx) < 5 + n:
                break
            payload = bytes(c.rx[5:5 + n])
            del c.rx[:5 + n]
            self._on_frame(c, kind, payload, now)
            if c.done:
                return
            if c.raw_mode:
                c.raw += c.rx
                c.rx.clear()
                break

    def _on_frame(self, c, kind, payload, now):
        first = c.sent[0] if c.sent else None
        prior = c.nframes
        if EXIT in c.seen:
            return self._violate(c, f"a {NAMES[kind]} frame after EXIT")
        if first == REQUEST:
            if kind == CONTROL:
                return self._violate(c, "a CONTROL frame in an exec")
            if kind == EXIT and len(payload) not in (4, 12):
                return self._violate(c, f"EXIT payload of {len(payload)} bytes")
        else:
            if prior:
                return self._violate(c, f"a second frame ({NAMES[kind]}) after the answer to a non-exec first frame")
            if kind not in (CONTROL, ERROR):
                return self._violate(c, f"{NAMES[kind]} frame answering a non-exec first frame")
            if kind == CONTROL:
                try:
                    rep = json.loads(payload)
                except ValueError as e:
                    return self._violate(c, f"CONTROL reply is not JSON ({e}): {payload[:200]!r}")
                if not isinstance(rep, dict) or next(iter(rep), None) != "ok" or not isinstance(rep["ok"], bool):
                    return self._violate(c, f"CONTROL reply without a leading ok: {payload[:200]!r}")
                if rep["ok"] and set(rep) == {"ok", "port"}:
                    c.raw_mode = True
        c.seen.add(kind)
        c.nframes += 1
        if kind == STDOUT:
            c.stdout_bytes += len(payload)
        if kind in (STDOUT, STDERR):
            if c.kept > KEEP_OUTPUT:
                return  # counted, not kept
            c.kept += len(payload)
        c.frames.append((kind, payload))
        if c.t_answer is None and c.answered():
            c.t_answer = now

    def _check_end_of_stream(self, c):
        if c.aborted:
            return
        if c.rx and not c.raw_mode:
            return self._violate(c, f"the agent closed inside a frame ({len(c.rx)} bytes of it)")
        if c.sent and not c.frames:
            return self._violate(c, "the agent closed without an answer")
        if c.sent[:1] == bytes([REQUEST]) and EXIT not in c.seen and ERROR not in c.seen:
            return self._violate(c, "the agent closed an exec without EXIT or ERROR")
        if c.t_answer is None:
            c.t_answer = time.monotonic()

    def _on_write(self, c, now):
        try:
            n = c.sock.send(c.out[:1 << 16])
        except BlockingIOError:
            return
        except (BrokenPipeError, ConnectionResetError):
            c.wdead = True  # the agent stopped reading (after an error); not ours to judge
            c.out.clear()
            return
        c.sent += c.out[:n]
        del c.out[:n]
        c.wait_since = now

    def _advance(self, c, now):
        """Runs the script as far as it can go now."""
        while not c.done:
            if c.sock is None:
                if getattr(c, "retry_at", None) is None or now >= c.retry_at:
                    self._open(c, now)
                if c.sock is None:
                    return
            if c.step_i >= len(c.steps):
                # end of script: half-close, then the agent must close
                if not c.shut and not c.out:
                    self._shutwr(c)
                if c.eof:
                    return self._finish(c)
                return self._waiting(c, now, self.deadline, "no close")
            step = c.steps[c.step_i]
            op = step[0]
            if op == "send":
                if not c.wdead and not c.shut:
                    c.out += step[1]
                c.step_i += 1
                c.wait_since = now
                continue
            if c.out and not c.wdead:
                return self._waiting(c, now, self.deadline, "the agent stopped reading")
            if op == "pause":
                if c.wait_until is None:
                    c.wait_until = now + step[1]
                if now < c.wait_until:
                    return
                c.wait_until = None
            elif op == "shutwr":
                self._shutwr(c)
            elif op == "close":
                c.aborted = True
                return self._finish(c)
            elif op == "wait":
                what = step[1]
                if what == "answer":
                    ok = c.answered()
                elif what == "frame":
                    ok = c.eof or step[2] in c.kinds()
                elif what == "raw":
                    ok = c.eof or len(c.raw) >= step[2]
                elif what == "eof":
                    ok = c.eof
                else:
                    raise ValueError(step)
                if not ok:
                    limit = step[2] if what == "eof" else self.deadline
                    return self._waiting(c, now, limit, f"no {what}")
                c.wait_since = None
            else:
                raise ValueError(step)
            c.step_i += 1
            c.wait_since = now

    def _waiting(self, c, now, limit, what):
        if c.wait_since is None:
            c.wait_since = now
        if now - c.wait_since > limit:
            self._overrun(c, f"{what} within {limit:.0f} s (waiting at step {c.step_i}/{len(c.steps)})")
        elif now - c.t0 > self.total_limit:
            self._overrun(c, f"{what} within {self.total_limit:.0f} s of the connection, though bytes kept moving "
                             f"(waiting at step {c.step_i}/{len(c.steps)})")

    def _overrun(self, c, msg):
        """No answer in time (or endless output): a violation, unless the connection is a mutated
        request's whose command is still running (e.g. `head` reading /dev/zero): then the
        connection is dropped (the agent kills the command) and the session counted as slow."""
        if getattr(c, "marker", None) and self.sandbox is not None:
            procs = self.sandbox.ns_processes()
            if any(environ_has(p[0], c.marker) for p in procs if p[3] not in "ZX"):
                c.slow = True
                c.aborted = True
                return self._finish(c)
        self._violate(c, msg)

    def _shutwr(self, c):
        if not c.shut:
            c.shut = True
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    # --- sessions ------------------------------------------------------------------------------
    def run(self, sessions, on_done=None):
        """Runs an iterable of Session objects; `on_done(session)` is called as each ends."""
        it = iter(sessions)
        active = []
        pending = None
        exhausted = False
        while True:
            now = time.monotonic()
            # start sessions while there is room
            while not exhausted:
                if pending is None:
                    pending = next(it, None)
                    if pending is None:
                        exhausted = True
                        break
                heavy = sum(1 for s in active if not s.light)
                light = len(active) - heavy
                if any(s.exclusive for s in active):
                    break
                if pending.light and light >= self.light_concurrency:
                    break
                if not pending.light and heavy >= self.concurrency:
                    break
                active.append(pending)
                pending.t0 = now
                self._step_session(pending, None, now)
                pending = None
            for s in list(active):
                if s.finished:
                    active.remove(s)
                    if on_done:
                        on_done(s)
            if exhausted and not active:
                return
            # exclusive sessions wait for the others to end
            for s in active:
                if s.waiting_exclusive and all(o is s or o.finished for o in active):
                    s.waiting_exclusive = False
                    if s.before:
                        s.before()
                    for c in s.current:
                        self.conns.add(c)
            for c in list(self.conns):
                self._advance(c, now)
                self._update(c)
            for s in active:
                if not s.finished and not s.waiting_exclusive and s.current and all(c.done for c in s.current):
                    cur = s.current
                    self._step_session(s, cur if s.many else cur[0], now)
            if any(s.finished for s in active):
                continue
            timeout = 0.02
            if self.sel.get_map():
                for key, _ in self.sel.select(timeout):
                    c = key.data
                    if c.done:
                        continue
                    t = time.monotonic()
                    if key.events & selectors.EVENT_READ:
                        self._on_read(c, t)
                    if not c.done and key.events & selectors.EVENT_WRITE and c.sock is not None:
                        self._on_write(c, t)
            else:
                time.sleep(0.002)

    def _step_session(self, s, value, now):
        while True:
            try:
                if s.current and any(c.violation for c in s.current):
                    bad = next(c for c in s.current if c.violation)
                    s.violation = f"{bad.violation}: {bad.describe()}"
                    s.gen.close()
                    s.finished = True
                    return
                if s.current and any(c.slow for c in s.current):
                    s.slow = True
                    s.gen.close()
                    s.finished = True
                    return
                item = s.gen.send(value)
            except StopIteration:
                s.finished = True
                return
            except Violation as e:
                s.violation = str(e)
                s.finished = True
                return
            except Exception as e:  # a bug in a generator is a bug in the fuzzer: say where
                import traceback
                s.violation = f"harness error: {e!r}\n{traceback.format_exc()}"
                s.finished = True
                return
            if isinstance(item, tuple) and item and item[0] == "host":
                value = item[1]()
                continue
            many = isinstance(item, list)
            conns = list(item) if many else [item]
            for c in conns:
                if s.marker and not hasattr(c, "marker"):
                    c.marker = s.marker if s.mutated else None
            s.many = many
            s.current = conns
            s.connections += len(conns)
            if isinstance(item, Exclusive):
                s.exclusive = True
                s.waiting_exclusive = True
                s.before = item.before
            else:
                for c in conns:
                    self.conns.add(c)
            return


class Session:
    def __init__(self, index, gen, light=False, mutated=False, kind="", marker=None):
        self.index = index
        self.gen = gen
        self.light = light
        self.mutated = mutated
        self.kind = kind
        self.marker = marker
        self.current = []
        self.many = False
        self.finished = False
        self.violation = None
        self.slow = False
        self.exclusive = False
        self.waiting_exclusive = False
        self.before = None
        self.connections = 0
        self.t0 = None
