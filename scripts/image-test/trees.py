#!/usr/bin/env python3
"""The image conformance test's input trees (scripts/image-test.sh). Run as root.

    trees.py OUT --busybox FILE [--tier quick|full]

Writes, under OUT:
  layers/1/   the lower OCI layer: a busybox root (/bin/sh for the agent's execs) and /t, a tree
              of what real images hold (see TREE below)
  layers/2/   the upper OCI layer: whiteouts (.wh.NAME), an opaque directory (.wh..wh..opq), a
              file replaced by a directory, a file rewritten
  merged/     what an image of the two layers must show: layer 1 with layer 2 applied as the
              OCI image spec says
Every name, size, mode, owner, time and attribute is fixed, so two runs give the same trees.
"""
import argparse
import os
import random
import shutil
import stat
import subprocess
import sys

BASE_MTIME = 1_700_000_000
# vfs_cap_data revision 2, little-endian: magic_etc 0x02000001 (revision 2, effective), permitted =
# CAP_NET_BIND_SERVICE.
CAPABILITY = bytes.fromhex("01000002" "00040000" "00000000" "00000000" "00000000")


class Tree:
    """Creates paths under a root with fixed metadata; times are applied last (children change
    their directory's mtime)."""

    def __init__(self, root):
        self.root = root
        self.times = []
        self.n = 0
        os.makedirs(root, exist_ok=True)

    def _t(self, rel):
        self.n += 1
        self.times.append((rel, BASE_MTIME + self.n * 37))

    def path(self, rel):
        return os.path.join(self.root, rel)

    def dir(self, rel, mode=0o755, uid=0, gid=0):
        p = self.path(rel)
        os.makedirs(p, exist_ok=True)
        os.chown(p, uid, gid)
        os.chmod(p, mode)
        self._t(rel)

    def file(self, rel, data=b"", mode=0o644, uid=0, gid=0, xattrs=None):
        p = self.path(rel)
        with open(p, "wb") as f:
            f.write(data)
        os.chown(p, uid, gid)
        os.chmod(p, mode)
        for k, v in (xattrs or {}).items():
            os.setxattr(p, k, v)
        self._t(rel)

    def sparse(self, rel, size, tail):
        p = self.path(rel)
        with open(p, "wb") as f:
            f.truncate(size - len(tail))
            f.seek(size - len(tail))
            f.write(tail)
        self._t(rel)

    def link(self, rel, target):
        os.link(self.path(target), self.path(rel))

    def symlink(self, rel, target):
        os.symlink(target, self.path(rel))
        self.times.append((rel, BASE_MTIME))

    def node(self, rel, kind, major=0, minor=0, mode=0o644):
        os.mknod(self.path(rel), mode | kind, os.makedev(major, minor))
        os.chmod(self.path(rel), mode)  # mknod applies the umask
        self._t(rel)

    def finish(self):
        # Deepest first, so a directory's time is set after its children were made.
        for rel, t in sorted(self.times, key=lambda x: -x[0].count("/")):
            os.utime(self.path(rel), (t, t), follow_symlinks=False)
        os.utime(self.root, (BASE_MTIME, BASE_MTIME))


def data(seed, size):
    return random.Random(seed).randbytes(size)


def lower(t, busybox, tier):
    """Layer 1: a busybox root plus /t."""
    for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev", "run"):
        t.dir(d, 0o1777 if d == "tmp" else 0o755)
    shutil.copyfile(busybox, t.path("bin/busybox"))
    os.chmod(t.path("bin/busybox"), 0o755)
    for applet in ("sh", "cat", "ls", "true", "stat", "mkdir", "rm", "env", "id", "uname"):
        t.symlink(f"bin/{applet}", "busybox")
    t.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    t.file("etc/group", b"root:x:0:\n")

    t.dir("t")
    # Regular files: empty ones (package markers), sizes around the 128 KiB squashfs block.
    t.dir("t/files")
    for name in ("empty", "__init__.py", "py.typed", ".lock"):
        t.file(f"t/files/{name}")
    t.file("t/files/empty-0600", mode=0o600)
    t.file("t/files/empty-with-xattr", xattrs={"user.marker": b"1"})
    t.file("t/files/one-byte", b"x")
    for i, size in enumerate((4095, 4096, 4097, 131071, 131072, 131073, 262144, 1048583)):
        t.file(f"t/files/size-{size}", data(i, size))
    t.file("t/files/zeros-262144", bytes(262144))
    # Hard links, including to an empty file.
    t.dir("t/links")
    t.file("t/links/a", b"linked content\n")
    t.link("t/links/a-hard", "t/links/a")
    t.file("t/links/empty")
    t.link("t/links/empty-hard", "t/links/empty")
    t.symlink("t/links/short", "a")
    t.symlink("t/links/absolute", "/t/links/a")
    t.symlink("t/links/dangling", "does/not/exist")
    t.symlink("t/links/to-dir", "../files")
    # 255 bytes: the longest target the runtime's writer takes (backhand 0.23 panics on 256 and
    # more, which aborts the whole bake: docs/WORKLOADS.md).
    t.symlink("t/links/long", ("/" + "/".join(["segment-%03d" % i for i in range(30)]))[:255])
    # Device nodes and FIFOs (the OCI layer format, tar, has no sockets).
    t.dir("t/nodes")
    t.node("t/nodes/null", stat.S_IFCHR, 1, 3, 0o666)
    t.node("t/nodes/loop0", stat.S_IFBLK, 7, 0, 0o660)
    t.node("t/nodes/big-minor", stat.S_IFCHR, 259, 300, 0o600)
    t.node("t/nodes/fifo", stat.S_IFIFO, mode=0o644)
    # Modes and owners.
    t.dir("t/modes")
    t.file("t/modes/setuid", b"#!/bin/sh\n", 0o4755)
    t.file("t/modes/setgid", b"#!/bin/sh\n", 0o2755)
    t.file("t/modes/none", b"secret", 0o000)
    t.file("t/modes/readonly", b"ro", 0o444)
    t.dir("t/modes/sticky", 0o1777)
    t.dir("t/modes/private", 0o700)
    t.dir("t/owners")
    t.file("t/owners/user-1000", b"u", uid=1000, gid=1000)
    t.file("t/owners/nobody", b"n", uid=65534, gid=65534)
    t.file("t/owners/high-ids", b"h", uid=70000, gid=80000)
    t.dir("t/owners/dir-1000", uid=1000, gid=100)
    # Extended attributes.
    t.dir("t/xattrs")
    t.file("t/xattrs/user", b"u", xattrs={"user.test": b"hello", "user.empty": b""})
    t.file("t/xattrs/capability", b"\x7fELF", 0o755, xattrs={"security.capability": CAPABILITY})
    t.file("t/xattrs/trusted", b"t", xattrs={"trusted.test": b"y"})
    # Names.
    t.dir("t/names")
    t.file("t/names/" + "n" * 255, b"longest name")
    t.file("t/names/ünïcödé-名前-🙂", b"unicode")
    t.file("t/names/with space", b"s")
    t.file("t/names/-leading-dash", b"d")
    # Deep directories.
    deep = "t/deep"
    t.dir(deep)
    for i in range(60):
        deep += "/level-%02d-abcdefghijklmnopqrstu" % i
        t.dir(deep)
    t.file(deep + "/bottom", b"bottom\n")
    # A directory with many entries, all empty files.
    t.dir("t/many")
    for i in range(10000 if tier == "full" else 2000):
        t.file("t/many/f%05d" % i)
    if tier == "full":
        t.sparse("t/files/sparse-4GiB-plus-1", (4 << 30) + 1, b"!")
    # What layer 2 acts on.
    t.dir("t/wh")
    t.file("t/wh/deleted", b"gone in layer 2")
    t.dir("t/wh/deleted-dir")
    t.file("t/wh/deleted-dir/inner", b"gone too")
    t.dir("t/wh/opaque")
    t.file("t/wh/opaque/old", b"hidden by the opaque marker")
    t.file("t/wh/becomes-dir", b"a file in layer 1")
    t.file("t/wh/rewritten", b"version 1")
    t.file("t/wh/kept", b"untouched")


def upper(t):
    """Layer 2, in OCI form: whiteouts, an opaque directory, a file replaced by a directory."""
    t.dir("t")
    t.dir("t/wh")
    t.file("t/wh/.wh.deleted")
    t.file("t/wh/.wh.deleted-dir")
    t.dir("t/wh/opaque")
    t.file("t/wh/opaque/.wh..wh..opq")
    t.file("t/wh/opaque/new", b"layer 2")
    t.file("t/wh/.wh.becomes-dir")
    t.dir("t/wh/becomes-dir")
    t.file("t/wh/becomes-dir/inside", b"layer 2")
    t.file("t/wh/rewritten", b"version 2, longer")
    t.file("t/wh/added-empty")


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def copy_meta(src, dst):
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for k in os.listxattr(src):
        os.setxattr(dst, k, os.getxattr(src, k))


def apply_layer(layer, merged):
    """What an image of `merged` plus the OCI layer `layer` must show (OCI image spec, "Applying
    Changesets"): whiteouts remove, an opaque marker hides the lower directory's entries, a
    path in the layer replaces the lower one; directories keep the layer's metadata."""
    dirs = []
    for dirpath, dirnames, filenames in os.walk(layer):
        rel = os.path.relpath(dirpath, layer)
        dst_dir = os.path.normpath(os.path.join(merged, rel))
        names = sorted(dirnames + filenames)
        if ".wh..wh..opq" in names:
            for child in os.listdir(dst_dir):
                remove(os.path.join(dst_dir, child))
        for n in names:
            src, dst = os.path.join(dirpath, n), os.path.join(dst_dir, n)
            if n == ".wh..wh..opq":
                continue
            if n.startswith(".wh."):
                remove(os.path.join(dst_dir, n[4:]))
            elif os.path.isdir(src) and not os.path.islink(src):
                if not (os.path.isdir(dst) and not os.path.islink(dst)):
                    remove(dst)
                    os.mkdir(dst)
                copy_meta(src, dst)
                dirs.append((src, dst))
            else:
                remove(dst)
                subprocess.run(["cp", "-a", "--", src, dst], check=True)
    copy_meta(layer, merged)
    dirs.append((layer, merged))
    for src, dst in reversed(dirs):
        st = os.lstat(src)
        os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--busybox", required=True)
    ap.add_argument("--tier", choices=("quick", "full"), default="quick")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("trees.py: needs root (device nodes, owners, trusted.* attributes)")
    if os.path.exists(a.out):
        shutil.rmtree(a.out)
    l1 = Tree(os.path.join(a.out, "layers/1"))
    lower(l1, a.busybox, a.tier)
    l2 = Tree(os.path.join(a.out, "layers/2"))
    l2.n = l1.n  # layer 2's times follow layer 1's
    upper(l2)
    l1.finish()
    l2.finish()
    merged = os.path.join(a.out, "merged")
    subprocess.run(["cp", "-a", "--", l1.root, merged], check=True)
    apply_layer(l2.root, merged)

if __name__ == "__main__":
    main()
