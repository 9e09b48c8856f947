"""What /proc says about the sandboxed agent: its memory, fds, processes and environment."""
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
