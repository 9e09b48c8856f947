#!/usr/bin/env python3
"""Where a TCG boot's wall-clock time goes: a sampling profiler of the guest kernel.

    scripts/boot-profile/tcg-sample.py --kernel K --busybox B [--arch x86_64|aarch64]
                                       [--append STR] [--window-ms 100] [--out DIR]

Boots K under QEMU TCG (x86_64 `-M microvm`, aarch64 `-M virt`, as the harness does) with `nokaslr`
and a tiny initramfs whose /init (busybox B, static, of the guest's architecture) prints the
kernel's text symbols from /proc/kallsyms to the console and powers off. Meanwhile it asks QEMU's
monitor for the guest program counter about once a millisecond and names each sample after the
symbol it falls in. Prints, per window of host time, the sample count and the top symbols, then
the top symbols of the whole boot up to /init. Sampling slows the guest a little; read the shares,
not the absolute times.

This is the tool that found why "last initcall -> /init" took ~350 ms of wall time and only
~23 ms of guest instructions on our x86_64 kernel (docs/BOOT-PROFILE.md, finding 3): the icount
profile (scripts/boot-profile.sh) counts guest instructions; this one shows what the host spends
its time on, e.g. an emulator slow path that executes few instructions.
"""
import argparse
import bisect
import collections
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

INIT = """#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo SM-SAMPLE-INIT
/bin/busybox grep -i ' t ' /proc/kallsyms
/bin/busybox poweroff -f
"""


def initramfs(busybox, work):
    root = os.path.join(work, "root")
    for d in ("bin", "proc", "dev"):
        os.makedirs(os.path.join(root, d))
    shutil.copy(busybox, os.path.join(root, "bin/busybox"))
    os.chmod(os.path.join(root, "bin/busybox"), 0o755)
    with open(os.path.join(root, "init"), "w") as f:
        f.write(INIT)
    os.chmod(os.path.join(root, "init"), 0o755)
    os.mknod(os.path.join(root, "dev/console"), 0o600 | 0o020000, os.makedev(5, 1))  # needs root
    out = os.path.join(work, "initrd.cpio")
    names = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    with open(out, "wb") as f:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=names, stdout=f, check=True)
    return out


def qemu_command(arch, kernel, initrd, append, monitor, console):
    if arch == "x86_64":
        mhz = next(float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.startswith("cpu MHz"))
        return ["qemu-system-x86_64", "-M", "microvm,pit=on,pic=on,rtc=on,acpi=on", "-cpu", "max",
                "-accel", "tcg", "-m", "256M", "-smp", "1", "-kernel", kernel, "-initrd", initrd,
                "-append", f"console=ttyS0 tsc_early_khz={round(mhz * 1000)} nokaslr quiet {append}",
                "-nodefaults", "-no-reboot", "-display", "none", "-serial", f"file:{console}",
                "-monitor", f"unix:{monitor},server,nowait"]
    return ["qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a72", "-accel", "tcg", "-m", "256M",
            "-smp", "1", "-kernel", kernel, "-initrd", initrd,
            "-append", f"console=ttyAMA0 nokaslr quiet {append}",
            "-nodefaults", "-no-reboot", "-display", "none", "-serial", f"file:{console}",
            "-monitor", f"unix:{monitor},server,nowait"]


class Monitor:
    """QEMU's human monitor over a unix socket: one command, its answer up to the next prompt."""

    def __init__(self, path, qemu):
        deadline = time.time() + 30
        while not os.path.exists(path):
            if qemu.poll() is not None or time.time() > deadline:
                sys.exit(f"tcg-sample: QEMU did not open its monitor socket {path}")
            time.sleep(0.001)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(path)
        self.sock.settimeout(5)
        self.buf = b""
        self.ask("")  # the banner

    def ask(self, command):
        self.sock.sendall(command.encode() + b"\n")
        while b"(qemu) " not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise OSError("monitor closed")
            self.buf += data
        answer, _, self.buf = self.buf.partition(b"(qemu) ")
        return answer.decode(errors="replace")


def sample(cmd, monitor_path):
    pc = re.compile(r"\b(?:RIP|PC)=([0-9a-f]+)")
    t0 = time.time()
    qemu = subprocess.Popen(cmd)
    mon = Monitor(monitor_path, qemu)
    samples = []
    while qemu.poll() is None:
        try:
            m = pc.search(mon.ask("info registers"))
        except (OSError, socket.timeout):
            break
        if m:
            samples.append((time.time() - t0, int(m.group(1), 16)))
        time.sleep(0.001)
    qemu.wait(timeout=60)
    return samples


def symbols(console):
    text = open(console, errors="replace").read()
    if "SM-SAMPLE-INIT" not in text:
        sys.exit(f"tcg-sample: the guest never reached /init (console: {console})")
    syms = []
    for line in text.split("SM-SAMPLE-INIT", 1)[1].splitlines():
        p = line.split()
        if len(p) >= 3 and p[1] in "tT" and re.fullmatch(r"[0-9a-f]{16}", p[0]):
            syms.append((int(p[0], 16), p[2]))
    if not syms:
        sys.exit("tcg-sample: /proc/kallsyms gave no text symbols (CONFIG_KALLSYMS off?)")
    syms.sort()
    return syms


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--busybox", required=True, help="a static busybox of the guest's architecture")
    ap.add_argument("--arch", default="x86_64", choices=("x86_64", "aarch64"))
    ap.add_argument("--append", default="", help="extra kernel command line")
    ap.add_argument("--window-ms", type=int, default=100)
    ap.add_argument("--top", type=int, default=4)
    ap.add_argument("--out", help="keep the console log and samples here")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="tcg-sample.")
    try:
        console = os.path.join(work, "console.log")
        cmd = qemu_command(a.arch, a.kernel, initramfs(a.busybox, work), a.append,
                           os.path.join(work, "mon.sock"), console)
        samples = sample(cmd, os.path.join(work, "mon.sock"))
        syms = symbols(console)
        if a.out:
            os.makedirs(a.out, exist_ok=True)
            shutil.copy(console, os.path.join(a.out, "console.log"))
            with open(os.path.join(a.out, "samples.tsv"), "w") as f:
                f.writelines(f"{t:.4f}\t{pc:x}\n" for t, pc in samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    addrs = [s[0] for s in syms]

    def name(pc):
        if pc < syms[0][0]:
            return "<user or firmware>"
        return syms[bisect.bisect_right(addrs, pc) - 1][1]

    windows = collections.OrderedDict()
    whole = collections.Counter()
    for t, pc in samples:
        n = name(pc)
        windows.setdefault(int(t * 1000 // a.window_ms), collections.Counter())[n] += 1
        whole[n] += 1
    print(f"{len(samples)} samples; per {a.window_ms} ms of host time since QEMU launch:")
    for w, c in windows.items():
        top = ", ".join(f"{k} {v}" for k, v in c.most_common(a.top))
        print(f"{w * a.window_ms / 1000:7.2f} s  n={sum(c.values()):4d}  {top}")
    print("whole run (the kallsyms dump at the end included):")
    for k, v in whole.most_common(15):
        print(f"  {v:5d}  {100 * v / len(samples):5.1f}%  {k}")


if __name__ == "__main__":
    main()
