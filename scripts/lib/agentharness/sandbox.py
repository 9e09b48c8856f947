"""The sandbox the real agent runs in (see the package's docstring)."""
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
from .blocking import control

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
