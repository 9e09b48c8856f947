//! An exact-size device tree for arm64 `-M virt` guests, as the supermachine VMM gives them.
//!
//! QEMU builds the virt machine's DTB in a 1 MiB buffer and hands the guest all of it (the
//! header's `totalsize` is 1 MiB, `/sys/firmware/fdt` in the guest is 1,048,576 bytes), and the
//! kernel keeps that MiB reserved for good. supermachine's HVF backend writes its DTB with
//! `vm_fdt::FdtWriter::finish()`, whose `totalsize` is the blob's length (a few KiB). So that the
//! lowest-RAM figures and memory-hungry tests see what the runtime's guests see, the harness asks
//! QEMU for the DTB it would build (`-machine dumpdtb=`), cuts it to its used blocks
//! ([`compact`]) and boots with `-dtb`. QEMU still sets `/chosen` (bootargs, initrd) and the
//! memory node itself on the file it is given.

use std::path::Path;
use std::process::{Command, Stdio};

const FDT_MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().unwrap())
}

/// `fdt` cut to the end of its last block (memory reservation map, structure or strings) with
/// `totalsize` set to match: what libfdt's `fdt_pack` gives when the blocks are already in
/// order, as they are in QEMU's output. Errors name the header field that is wrong.
pub fn compact(fdt: &[u8]) -> Result<Vec<u8>, String> {
    if fdt.len() < HEADER_LEN {
        return Err(format!("{} bytes is shorter than an FDT header", fdt.len()));
    }
    if be32(fdt, 0) != FDT_MAGIC {
        return Err(format!("magic is {:#x}, not {FDT_MAGIC:#x}", be32(fdt, 0)));
    }
    let field = |off: usize| be32(fdt, off) as usize;
    let (total, off_struct, off_strings, off_rsvmap) = (field(4), field(8), field(12), field(16));
    let (size_strings, size_struct) = (field(32), field(36));
    if total > fdt.len() {
        return Err(format!("totalsize {total} is past the end of the {}-byte blob", fdt.len()));
    }
    // The reservation map: 16-byte (address, size) entries up to an all-zero one.
    let mut rsv_end = off_rsvmap;
    loop {
        let entry = fdt.get(rsv_end..rsv_end + 16).ok_or("the memory reservation map has no terminator")?;
        rsv_end += 16;
        if entry.iter().all(|&b| b == 0) {
            break;
        }
    }
    let end = [rsv_end, off_struct + size_struct, off_strings + size_strings].into_iter().max().unwrap();
    if end > total {
        return Err(format!("blocks end at {end}, past totalsize {total}"));
    }
    let mut out = fdt[..end].to_vec();
    out[4..8].copy_from_slice(&(end as u32).to_be_bytes());
    Ok(out)
}

/// Runs `qemu` (a full virt command line, without `-dtb`) with `-machine dumpdtb=` to get the
/// DTB it would give the guest, and writes its [`compact`] form to `out`.
pub fn write_compact_virt_dtb(mut qemu: Command, out: &Path) -> Result<(), String> {
    let dump = out.with_extension("qemu.dtb");
    let status = qemu
        .arg("-machine")
        .arg(format!("dumpdtb={}", dump.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("running QEMU to dump the DTB: {e}"))?;
    let bytes = std::fs::read(&dump).map_err(|e| {
        format!(
            "QEMU wrote no DTB to {} ({e}); it said: {}",
            dump.display(),
            String::from_utf8_lossy(&status.stderr).trim()
        )
    })?;
    let _ = std::fs::remove_file(&dump);
    let packed = compact(&bytes).map_err(|e| format!("the DTB QEMU dumped: {e}"))?;
    std::fs::write(out, packed).map_err(|e| format!("writing {}: {e}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal FDT: header, an empty reservation map, a root node, one string, then `pad`
    /// bytes of free space counted in totalsize (as QEMU leaves it).
    fn blob(pad: usize) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        let rsv = b.len();
        b.extend([0u8; 16]);
        let st = b.len();
        for w in [1u32, 0, 3, 4, 0, 0, 2, 9] {
            // BEGIN_NODE "" , PROP len=4 nameoff=0 value=0, END_NODE, END
            b.extend(w.to_be_bytes());
        }
        let st_len = b.len() - st;
        let strs = b.len();
        b.extend(b"model\0");
        let strs_len = b.len() - strs;
        b.extend(vec![0u8; pad]);
        let total = b.len() as u32;
        for (off, v) in [
            (0, FDT_MAGIC),
            (4, total),
            (8, st as u32),
            (12, strs as u32),
            (16, rsv as u32),
            (20, 17),
            (24, 16),
            (32, strs_len as u32),
            (36, st_len as u32),
        ] {
            b[off..off + 4].copy_from_slice(&v.to_be_bytes());
        }
        b
    }

    #[test]
    fn cuts_the_free_space_and_sets_totalsize() {
        let padded = blob(4096);
        let packed = compact(&padded).unwrap();
        assert_eq!(packed.len(), padded.len() - 4096);
        assert_eq!(be32(&packed, 4) as usize, packed.len());
        assert_eq!(&packed[8..], &padded[8..packed.len()], "only totalsize changes");
        assert_eq!(compact(&packed).unwrap(), packed, "packing twice changes nothing");
    }

    #[test]
    fn bad_blobs_name_what_is_wrong() {
        assert!(compact(&[0; 8]).unwrap_err().contains("shorter than an FDT header"));
        let mut b = blob(0);
        b[0] = 0;
        assert!(compact(&b).unwrap_err().contains("magic"));
        let mut b = blob(0);
        b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(compact(&b).unwrap_err().contains("totalsize"));
        let mut b = blob(0);
        let end = b.len() as u32;
        b[32..36].copy_from_slice(&end.to_be_bytes());
        assert!(compact(&b).unwrap_err().contains("past totalsize"));
    }
}
