#!/usr/bin/env python3
"""Prints how a zstd squashfs image encodes its empty regular files (a diagnostic for
scripts/image-test.sh; needs the `zstandard` package from PyPI).

    empty-inodes.py IMAGE.squashfs

Walks the inode table and, for every regular file of size 0, prints its inode number, type, the
fragment index it names (0xffffffff means "no fragment", which is what mksquashfs writes) and the
inode's bytes. The supermachine runtime's writer (backhand 0.23) names fragment 0 instead, which
Linux 6.12.54 and later reject with EINVAL unless kernel-patches/common/0005 is applied.
"""
import struct, sys, zstandard
img = open(sys.argv[1], 'rb').read()
(magic, icount, mtime, bsize, fcount, comp, blog, flags, idc, vmaj, vmin, root, used,
 idt, xat, inode_start, dir_start, frag_start, exp_start) = struct.unpack_from('<IIIIIHHHHHHQQQQQQQQ', img, 0)
def meta(start, end):
    out, pos = b'', start
    d = zstandard.ZstdDecompressor()
    while pos < end:
        h, = struct.unpack_from('<H', img, pos); n = h & 0x7fff; blk = img[pos+2:pos+2+n]
        out += blk if h & 0x8000 else d.decompress(blk, max_output_size=8192)
        pos += 2 + n
    return out
t = meta(inode_start, dir_start)
p = 0; empties = []; nonempty_frag = 0
while p < len(t):
    typ, perm, uid, gid, mt, ino = struct.unpack_from('<HHHHII', t, p); q = p + 16
    if typ == 1: q += 16
    elif typ == 8:
        _, _, _, _, icnt, _, _ = struct.unpack_from('<IIIIHHI', t, q); q += 24
        for _ in range(icnt):
            nsz, = struct.unpack_from('<I', t, q + 8); q += 12 + nsz + 1
    elif typ in (2, 9):
        if typ == 2: start, frag, off, size = struct.unpack_from('<IIII', t, q); q += 16
        else:
            start, size, sparse, nl, frag, off, xa = struct.unpack_from('<QQQIIII', t, q); q += 40
        nb = (size + bsize - 1) // bsize if frag == 0xffffffff else size // bsize
        q += 4 * nb
        if size == 0: empties.append((ino, typ, frag, off, t[p:q].hex()))
    elif typ in (3, 10):
        nl, ts = struct.unpack_from('<II', t, q); q += 8 + ts + (4 if typ == 10 else 0)
    elif typ in (4, 5): q += 8
    elif typ in (11, 12): q += 12
    elif typ in (6, 7): q += 4
    elif typ in (13, 14): q += 8
    else: raise SystemExit(f'unknown inode type {typ} at {p}')
    p = q
print(f'{sys.argv[1]}: block size {bsize}, {fcount} fragments, {icount} inodes, {len(empties)} empty regular files')
for e in empties[:3]:
    print(f'  inode {e[0]} type {e[1]} fragment {e[2]:#x} offset {e[3]}  bytes {e[4]}')
print('  empty files naming a fragment:', sum(1 for e in empties if e[2] != 0xffffffff))

