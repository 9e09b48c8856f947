#!/usr/bin/env python3
"""Extracts the ELF vmlinux from an x86 bzImage (the decompressor's payload) so the boot profile
can boot the same kernel through PVH (QEMU loads the ELF, no decompressor) and so split the x86
"before the printk clock" phase into decompression and the rest.

    vmlinux.py BZIMAGE OUT      exit 0: OUT written and has a PVH entry note
                                exit 3: the kernel has no PVH entry (CONFIG_PVH off): nothing to split
"""
import lzma, shutil, struct, subprocess, sys, zlib

src, out = sys.argv[1], sys.argv[2]
d = open(src, "rb").read()
if d[0x202:0x206] != b"HdrS":
    sys.exit(f"{src}: not a bzImage")
setup_sects = d[0x1F1] or 4
payload_offset, payload_length = struct.unpack_from("<II", d, 0x248)
start = (setup_sects + 1) * 512 + payload_offset
p = d[start:start + payload_length]


def tool(name, data):
    if not shutil.which(name):
        sys.exit(f"{name} is needed to decompress {src}")
    return subprocess.run([name, "-dc"], input=data, capture_output=True, check=False).stdout


if p[:4] == b"\x28\xb5\x2f\xfd":
    elf = tool("zstd", p)
elif p[:2] == b"\x1f\x8b":
    elf = zlib.decompressobj(31).decompress(p)
elif p[:6] == b"\xfd7zXZ\x00":
    elf = lzma.LZMADecompressor().decompress(p)
elif p[:3] == b"\x5d\x00\x00":
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(p)
elif p[:4] == b"\x02\x21\x4c\x18":
    elf = tool("lz4", p)
elif p[:4] == b"\x7fELF":
    elf = p  # CONFIG_KERNEL_UNCOMPRESSED (our x86 patch): the payload is the ELF itself
else:
    sys.exit(f"{src}: unknown payload compression {p[:6].hex()}")
if elf[:4] != b"\x7fELF":
    sys.exit(f"{src}: payload did not decompress to an ELF")

# ELF64 program headers: look for a PT_NOTE with owner "Xen" and type 18 (XEN_ELFNOTE_PHYS32_ENTRY).
phoff, = struct.unpack_from("<Q", elf, 0x20)
phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
pvh = False
for i in range(phnum):
    ptype, _, off, _, _, filesz = struct.unpack_from("<IIQQQQ", elf, phoff + i * phentsize)
    if ptype != 4:
        continue
    pos, end = off, off + filesz
    while pos + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
        name = elf[pos + 12:pos + 12 + namesz].rstrip(b"\0")
        if name == b"Xen" and ntype == 18:
            pvh = True
        pos += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
if not pvh:
    sys.exit(3)
open(out, "wb").write(elf)
