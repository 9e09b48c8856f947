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
# One module per concern: wire (frames, limits), probes (/proc), sandbox, blocking (one-shot
# calls, helpers, settled state), engine (many sessions in one thread).
from .wire import *  # noqa: F401,F403
from .probes import *  # noqa: F401,F403
from .sandbox import *  # noqa: F401,F403
from .blocking import *  # noqa: F401,F403
from .blocking import _recv_frames  # noqa: F401
from .engine import *  # noqa: F401,F403
