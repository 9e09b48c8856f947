//! x86 bzImage: the setup header's fields (Documentation/arch/x86/boot.rst).

use super::*;

// x86 boot protocol (Documentation/arch/x86/boot.rst): offsets into the setup header.
const BZ_SETUP_SECTS: usize = 0x1f1;
const BZ_SYSSIZE: usize = 0x1f4;
const BZ_BOOT_FLAG: usize = 0x1fe;
const BZ_HEADER_MAGIC: usize = 0x202;
const BZ_VERSION: usize = 0x206;
const BZ_LOADFLAGS: usize = 0x211;
const BZ_XLOADFLAGS: usize = 0x236;
const BZ_PAYLOAD_OFFSET: usize = 0x248;
const BZ_PAYLOAD_LENGTH: usize = 0x24c;
/// End of the 2.12 setup header fields read here.
const BZ_HEADER_END: usize = 0x250;

pub(super) fn check_bzimage(b: &[u8]) -> Result<(), FormatError> {
    use ErrorKind::*;
    if b.get(BZ_HEADER_MAGIC..BZ_HEADER_MAGIC + 4) != Some(b"HdrS") {
        let found = if b.len() < BZ_HEADER_MAGIC + 4 {
            format!("no x86 boot-protocol header (`HdrS` at 0x202): the file has only {} bytes", b.len())
        } else {
            "no x86 boot-protocol header (`HdrS` at 0x202)".to_string()
        };
        return Err(FormatError::new(WrongFormat, found));
    }
    if b[BZ_BOOT_FLAG..BZ_BOOT_FLAG + 2] != [0x55, 0xaa] {
        return Err(FormatError::new(
            WrongFormat,
            format!(
                "boot sector signature at 0x1fe is 0x{:04x}, expected 0xAA55",
                u16::from_le_bytes([b[BZ_BOOT_FLAG], b[BZ_BOOT_FLAG + 1]])
            ),
        ));
    }
    let version = u16_at(b, BZ_VERSION).unwrap_or(0);
    if version < 0x020c {
        return Err(FormatError::new(
            Unsupported,
            format!(
                "boot protocol {}.{:02} is older than 2.12: no 64-bit entry point can be declared (xloadflags)",
                version >> 8,
                version & 0xff
            ),
        ));
    }
    let setup_sects = match b[BZ_SETUP_SECTS] {
        0 => 4, // "if this field is 0, the real value is 4"
        n => u64::from(n),
    };
    let setup_len = (setup_sects + 1) * 512;
    let Some(syssize) = u32_at(b, BZ_SYSSIZE) else {
        return Err(FormatError::new(
            Truncated,
            format!("the setup header is cut short: the file has only {} bytes", b.len()),
        ));
    };
    let kernel_len = u64::from(syssize) * 16;
    let declared = setup_len + kernel_len;
    if declared > b.len() as u64 || b.len() < BZ_HEADER_END {
        return Err(FormatError::new(Truncated, format!(
            "the file has {} bytes, but its setup header declares {declared}: ({setup_sects} setup sectors + the boot \
             sector) × 512 = {setup_len} bytes of setup code, then syssize {syssize} × 16 = {kernel_len} bytes of kernel",
            b.len())));
    }
    if syssize == 0 {
        return Err(FormatError::new(Corrupt, "syssize is 0: the bzImage declares no protected-mode kernel"));
    }
    if b[BZ_LOADFLAGS] & 1 == 0 {
        return Err(FormatError::new(
            Unsupported,
            "LOADED_HIGH is not set in loadflags: a zImage loaded below 1 MiB, \
                                                  not a bzImage",
        ));
    }
    let xloadflags = u16_at(b, BZ_XLOADFLAGS).unwrap_or(0);
    if xloadflags & 1 == 0 {
        return Err(FormatError::new(Unsupported, "the bzImage has no 64-bit entry point (XLF_KERNEL_64)"));
    }
    let payload_offset = u64::from(u32_at(b, BZ_PAYLOAD_OFFSET).unwrap_or(0));
    let payload_length = u64::from(u32_at(b, BZ_PAYLOAD_LENGTH).unwrap_or(0));
    if payload_offset + payload_length > kernel_len {
        return Err(FormatError::new(
            Corrupt,
            format!(
            "the compressed kernel (payload_offset {payload_offset}, payload_length {payload_length}) lies past the \
             {kernel_len}-byte protected-mode part (syssize {syssize} × 16)"),
        ));
    }
    Ok(())
}

/// The version string an x86 bzImage carries in its setup header, e.g. `6.12.117 (…) #1 …`.
pub fn bzimage_version(bytes: &[u8]) -> Option<String> {
    let ptr = u16::from_le_bytes([*bytes.get(0x20e)?, *bytes.get(0x20f)?]) as usize;
    if ptr == 0 {
        return None;
    }
    let start = 0x200 + ptr;
    let tail = bytes.get(start..)?;
    let end = tail.iter().take(256).position(|&b| b == 0)?;
    String::from_utf8(tail[..end].to_vec()).ok()
}
