//! arm64 `Image`: its header and, for an EFI-stub kernel, the PE sections
//! (Documentation/arch/arm64/booting.rst).

use super::*;

// arm64 Image header (Documentation/arch/arm64/booting.rst).
const ARM64_TEXT_OFFSET: usize = 0x08;
const ARM64_IMAGE_SIZE: usize = 0x10;
const ARM64_FLAGS: usize = 0x18;
const ARM64_MAGIC: usize = 0x38;
const ARM64_PE_OFFSET: usize = 0x3c;
const ARM64_HEADER_LEN: usize = 0x40;

pub(super) fn check_arm64_image(b: &[u8]) -> Result<(), FormatError> {
    use ErrorKind::*;
    if b.get(ARM64_MAGIC..ARM64_MAGIC + 4) != Some(b"ARMd") {
        return Err(FormatError::new(WrongFormat, "no arm64 Image magic (`ARMd` at 0x38)"));
    }
    if b.len() < ARM64_HEADER_LEN {
        return Err(FormatError::new(Truncated, format!("the 64-byte Image header is cut short at {} bytes", b.len())));
    }
    let text_offset = u64_at(b, ARM64_TEXT_OFFSET).unwrap_or(0);
    let image_size = u64_at(b, ARM64_IMAGE_SIZE).unwrap_or(0);
    let flags = u64_at(b, ARM64_FLAGS).unwrap_or(0);
    if flags & 1 != 0 {
        return Err(FormatError::new(
            Unsupported,
            "a big-endian kernel (flags bit 0 set); the guest needs a \
                                                  little-endian one",
        ));
    }
    if flags >> 4 != 0 {
        return Err(FormatError::new(Corrupt, format!("reserved header flag bits are set (flags 0x{flags:x})")));
    }
    if image_size == 0 {
        return Err(FormatError::new(
            Unsupported,
            "image_size is 0 (a kernel older than 3.17): the loader cannot tell \
                                                  how much memory the kernel needs",
        ));
    }
    if text_offset % 4096 != 0 || text_offset >= 2 << 20 {
        return Err(FormatError::new(
            Corrupt,
            format!("text_offset 0x{text_offset:x} is not a 4 KiB-aligned offset below 2 MiB"),
        ));
    }
    let len = b.len() as u64;
    if len > image_size {
        return Err(FormatError::new(
            Corrupt,
            format!(
            "the file has {len} bytes, more than the {image_size} bytes of image_size in its header (the whole kernel \
             once loaded): not a plain Image (compressed, or with data appended?)"),
        ));
    }
    // With an EFI stub the PE/COFF section table says exactly where the file's data ends.
    let pe = u64::from(u32_at(b, ARM64_PE_OFFSET).unwrap_or(0));
    if pe != 0 {
        return check_pe_sections(b, pe);
    }
    // Without one, the file is the loaded image minus its zero-filled .bss and page tables,
    // which are a small part of it: a file under half of image_size has been cut short.
    if len < image_size / 2 {
        return Err(FormatError::new(
            Truncated,
            format!(
            "the file has {len} bytes, but its header declares image_size {image_size}: an Image is that size minus \
             its zero-filled .bss, so at least {} bytes are expected", image_size / 2),
        ));
    }
    Ok(())
}

/// Checks the PE/COFF header an EFI-stub arm64 Image carries at `pe`: every section's raw data
/// lies inside the file.
fn check_pe_sections(b: &[u8], pe: u64) -> Result<(), FormatError> {
    use ErrorKind::*;
    let len = b.len();
    let truncated = |what: String| {
        Err(FormatError::new(Truncated, format!("{what} extends past the end of the file ({len} bytes)")))
    };
    let Some(pe_end) = range_end(pe, 24, len) else {
        return truncated(format!("the PE/COFF header at 0x{pe:x} (named at 0x3c)"));
    };
    let pe = pe as usize;
    if &b[pe..pe + 4] != b"PE\0\0" {
        return Err(FormatError::new(Corrupt, format!("no `PE\\0\\0` signature at 0x{pe:x}, where 0x3c points")));
    }
    let sections = u64::from(u16_at(b, pe + 6).unwrap_or(0));
    let optional = u64::from(u16_at(b, pe + 20).unwrap_or(0));
    let table = pe_end + optional;
    if range_end(table, sections * 40, len).is_none() {
        return truncated(format!("the PE section table ({sections} sections at 0x{table:x})"));
    }
    for i in 0..sections {
        let s = (table + i * 40) as usize;
        let name = String::from_utf8_lossy(&b[s..s + 8]).trim_end_matches('\0').to_string();
        let raw_size = u64::from(u32_at(b, s + 16).unwrap_or(0));
        let raw_ptr = u64::from(u32_at(b, s + 20).unwrap_or(0));
        if range_end(raw_ptr, raw_size, len).is_none() {
            return truncated(format!("PE section {name:?} (bytes {raw_ptr}..{})", raw_ptr + raw_size));
        }
    }
    Ok(())
}
