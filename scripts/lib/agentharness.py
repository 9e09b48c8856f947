"""The real supermachine-agent in a sandbox, and an event loop that drives sessions against it.

Used by scripts/agent-fuzz.py and scripts/agent-soak.py (Python 3.11 standard library only).

Sandbox: `unshare --pid --fork --mount --net` runs a setup shell that mounts a private root
(a 256 MiB tmpfs with /usr and /etc bound read-only, its own /proc with /proc/sys read-only, an
empty read-only /sys, a /dev tmpfs holding only null, zero, full, random, urandom and tty bound
from the host plus a private devpts, tmpfs /run and /dev/shm) and execs the agent in it as PID 1
of the namespace, listening on a Unix socket (`--listen-unix`) in a host folder bound at /sock,
with `--sys-root /fakesys`. Its capability bounding set lacks sys_time, sys_admin, syslog,
sys_module, sys_rawio, sys_chroot and mknod: `sync_time`, `reseed` and /proc/kmsg fail with
EPERM instead of touching the host's clock, RNG or kernel log. Nothing a session writes can
reach the host's file systems; the whole namespace dies with the harness (PR_SET_PDEATHSIG).
The host side reaches the sandbox's files through /proc/<agent>/root.
"""
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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAYLOAD = os.path.join(ROOT, "crates/supermachine-kernel-x86-64/payload/supermachine-agent.xz")

REQUEST, CONTROL, STDIN, STDOUT, STDERR, RESIZE, SIGNAL, EXIT, ERROR = 0xFF, 0xFE, 0, 1, 2, 3, 4, 5, 6
NAMES = {REQUEST: "REQUEST", CONTROL: "CONTROL", STDIN: "STDIN", STDOUT: "STDOUT", STDERR: "STDERR",
         RESIZE: "RESIZE", SIGNAL: "SIGNAL", EXIT: "EXIT", ERROR: "ERROR"}
MAX_FRAME = 16 * 1024 * 1024
FIRST_FRAME_TIMEOUT = 10.0  # crates/supermachine-agent/src/limits.rs
MAX_CONNECTIONS = 128
AGENT_TO_HOST = {STDOUT, STDERR, EXIT, ERROR, CONTROL}
RX_CAP = 64 << 20  # more than this on one connection is endless output
KEEP_OUTPUT = 8 << 20  # STDOUT/STDERR bytes kept per connection (the rest is only counted)
RSS_SLACK_KIB = 64  # "back to baseline": RSS (without the binary's code pages) within this much of it
# musl's malloc (mallocng) keeps the last, emptied group of a size class that is "bouncing"
# (freed and re-created in a short span) instead of unmapping it: up to 128 KiB for the largest
# class, resident until that class is used again. So the RSS after one busy stretch can sit
# ~130 KiB above the baseline and come back later; a leak raises the floor instead.
RSS_SPIKE_KIB = 512  # the most RSS over the baseline allowed at any check, retained or not


def frame(kind, payload=b""):
    return struct.pack(">BI", kind, len(payload)) + payload


def jdump(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


def jframe(kind, obj):
    return frame(kind, jdump(obj))


class Violation(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# /proc of the host

def proc_status(pid):
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem (KiB) and Threads of `pid`, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            text = f.read()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "Threads", "State"):
            v = v.split()
            out[k] = v[0] if k == "State" else int(v[0])
    return out


def smaps(pid):
    """Each mapping of `pid` as (the fields of its header line: range perms offset dev inode
    [path], {"Rss": KiB, "Anonymous": KiB, ...}); [] when the process is gone."""
    maps = []
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                head = line.split()
                if not head:
                    continue
                if not head[0].endswith(":"):
                    maps.append((head, {}))
                elif maps and len(head) >= 2 and head[1].isdigit():
                    maps[-1][1][head[0][:-1]] = int(head[1])
    except OSError:
        return []
    return maps


def _is_binary(head, binary):
    # the path as the host sees it: .../root/supermachine-agent
    return len(head) >= 6 and head[5].endswith(binary)


def code_kib(pid, binary="/supermachine-agent"):
    """KiB of the agent binary's own file pages mapped by `pid` (its code and read-only data).
    They come in as code paths first run (fault-around) and stay: not a leak."""
    return sum(v.get("Rss", 0) - v.get("Anonymous", 0) for head, v in smaps(pid) if _is_binary(head, binary))


def rss_by_mapping(pid, binary="/supermachine-agent"):
    """{"start-end name": KiB of RSS} of every mapping of `pid` with resident pages, but the
    binary's own file pages: to name what grew when an RSS check fails (heap, a thread's stack,
    an allocator's mmap)."""
    out = {}
    for head, v in smaps(pid):
        if v.get("Rss") and not _is_binary(head, binary):
            name = head[5] if len(head) >= 6 else "[anon]"
            # [heap] and [stack] grow in place: key them by name, the rest by range
            out[name if name in ("[heap]", "[stack]") else f"{head[0]} {name}"] = v["Rss"]
    return out


def rss_growth(before, after, top=8):
    """The mappings whose RSS grew from `before` to `after` (rss_by_mapping results), largest
    first, as text."""
    grown = sorted(((k, v - before.get(k, 0)) for k, v in after.items() if v > before.get(k, 0)),
                   key=lambda kv: -kv[1])
    gone = sum(v for k, v in before.items() if k not in after)
    text = ", ".join(f"{k} +{d} KiB" + ("" if k in before else " (new)") for k, d in grown[:top])
    return (text or "no mapping grew") + (f"; {gone} KiB in mappings since unmapped" if gone else "")


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def processes():
    """{pid: (ppid, comm, state)} of every process on the host."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                s = f.read().decode(errors="replace")
        except OSError:
            continue
        l, r = s.find("("), s.rfind(")")
        rest = s[r + 2:].split()
        out[int(name)] = (int(rest[1]), s[l + 1:r], rest[0])
    return out


def descendants(root, procs=None):
    procs = processes() if procs is None else procs
    kids = {}
    for pid, (ppid, _, _) in procs.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        for c in kids.get(p, []):
            out.append((c,) + procs[c])
            todo.append(c)
    return out


def environ_has(pid, needle):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return needle in f.read().split(b"\0")
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------
# The sandbox

SETUP = r"""
set -eu
R=$1 S=$2 A=$3
mount -t tmpfs -o size=256m,mode=0755 agent-sandbox "$R"
cd "$R"
mkdir -p usr etc proc sys dev run tmp sock fakesys/proc/sys/vm
for n in 1 2 3; do mkdir -p fakesys/sys/devices/system/cpu/cpu$n; echo 1 > fakesys/sys/devices/system/cpu/cpu$n/online; done
echo 0 > fakesys/proc/sys/vm/drop_caches
chmod 1777 tmp
for d in usr etc; do mount --rbind "/$d" "$d"; mount -o remount,bind,ro "$d"; done
for l in bin lib lib64 sbin; do [ -e "/usr/$l" ] && ln -s "usr/$l" "$l"; done
mount --bind "$S" sock
mount -t proc -o nosuid,nodev,noexec proc proc
for p in proc/sys proc/sysrq-trigger; do [ -e "$p" ] || continue; mount --bind "$p" "$p"; mount -o remount,bind,ro "$p"; done
mount -t tmpfs -o ro,mode=0755 agent-sandbox-sys sys
mount -t tmpfs -o size=1m,mode=0755 agent-sandbox-dev dev
for n in null zero full random urandom tty; do touch "dev/$n"; mount --bind "/dev/$n" "dev/$n"; done
mkdir dev/pts dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts dev/pts
ln -s pts/ptmx dev/ptmx
mount -t tmpfs -o size=16m,mode=1777 agent-sandbox-shm dev/shm
mount -t tmpfs -o size=16m,mode=0755 agent-sandbox-run run
cp "$A" supermachine-agent
D=-sys_time,-sys_admin,-syslog,-sys_module,-sys_rawio,-sys_chroot,-mknod
exec chroot "$R" /usr/bin/setpriv --bounding-set "$D" --inh-caps "$D" -- \
    /supermachine-agent --listen-unix /sock/agent.sock --sys-root /fakesys
"""


def _pdeathsig():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def agent_binary(path, workdir):
    """The agent to test: `path`, or the committed x86_64 payload decoded into `workdir`."""
    if path:
        return os.path.abspath(path)
    out = os.path.join(workdir, "supermachine-agent")
    with lzma.open(PAYLOAD) as f, open(out, "wb") as o:
        shutil.copyfileobj(f, o)
    os.chmod(out, 0o755)
    return out


class Sandbox:
    def __init__(self, agent=None):
        if os.geteuid() != 0:
            raise SystemExit("error: the agent sandbox needs root (unshare --pid --mount --net)")
        self.work = tempfile.mkdtemp(prefix="agent-sandbox-")
        self.agent = agent_binary(agent, self.work)
        os.mkdir(os.path.join(self.work, "root"))
        os.mkdir(os.path.join(self.work, "sock"))
        self.socket = os.path.join(self.work, "sock", "agent.sock")
        self.log_path = os.path.join(self.work, "agent.log")
        self.proc = None
        self.apid = None

    def start(self, timeout=15):
        log = open(self.log_path, "wb")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--net", "--kill-child", "sh", "-c", SETUP, "sh",
             os.path.join(self.work, "root"), os.path.join(self.work, "sock"), self.agent],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_pdeathsig)
        log.close()
        t = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"error: the sandbox exited ({self.proc.returncode}):\n{self.log_tail()}")
            kids = [p for p in descendants(self.proc.pid) if p[2].startswith("supermachine-ag")]
            if kids and os.path.exists(self.socket):
                self.apid = kids[0][0]
                try:
                    if control(self.socket, {"action": "probe"}, timeout=5).get("ok"):
                        return self
                except (OSError, Violation):
                    pass
            if time.monotonic() - t > timeout:
                raise SystemExit(f"error: the agent did not answer a probe within {timeout} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def root(self, rel=""):
        """A path inside the sandbox, seen from the host."""
        return f"/proc/{self.apid}/root/{rel.lstrip('/')}"

    def alive(self):
        st = proc_status(self.apid)
        return self.proc.poll() is None and st is not None and st.get("State") not in ("Z", "X")

    def stats(self):
        """/proc status figures, plus fds and Rss: VmRSS without the binary's file pages."""
        st = proc_status(self.apid) or {}
        st["fds"] = fd_count(self.apid)
        if "VmRSS" in st:
            st["code"] = code_kib(self.apid)
            st["Rss"] = st["VmRSS"] - st["code"]
        return st

    def ns_processes(self):
        """(pid, ppid, comm, state) of every process in the namespace but the agent."""
        return descendants(self.apid)

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # The tmpfs root went with the mount namespace; only the host folders remain.
        shutil.rmtree(self.work, ignore_errors=True)


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
