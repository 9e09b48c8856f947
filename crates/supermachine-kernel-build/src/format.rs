//! Recognises payload formats, so a wrong file in an override fails the build with a reason.
//!
//! The checks read only the file's own headers, with checked arithmetic: a kernel must be as
//! long as its header says, and a program must be a complete, static executable of the guest's
//! machine (the guest has no dynamic loader and no shared libraries).

use std::fmt;

/// What a payload must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// x86 bzImage with a 64-bit entry point (boot protocol `HdrS` ≥ 2.12, XLF_KERNEL_64).
    BzImage,
    /// arm64 `Image` (magic `ARM\x64` at offset 0x38).
    Arm64Image,
    /// A static 64-bit little-endian ELF executable for the given `e_machine`.
    Elf(u16),
}

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// What kind of problem a file has (decides the fix the build error suggests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Zero bytes.
    Empty,
    /// A Git LFS pointer file instead of the real content.
    LfsPointer,
    /// Not this kind of file at all (wrong magic, not an executable).
    WrongFormat,
    /// The right kind of file, but shorter than its own headers say.
    Truncated,
    /// The headers contradict themselves.
    Corrupt,
    /// An ELF file for another machine.
    WrongMachine,
    /// Well-formed, but a variant the guest cannot boot (32-bit, big-endian, too old).
    Unsupported,
    /// A dynamically linked program (program interpreter or shared-library dependencies).
    NotStatic,
    /// A shared library, not a program.
    SharedLibrary,
    /// A relocatable object file (`.o`), not a linked program.
    Relocatable,
}

/// Why a file is not a valid payload of some [`Format`]: the kind and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub kind: ErrorKind,
    /// What was found, e.g. `the file has 4096 bytes, its header declares 2761728`.
    pub found: String,
}

impl FormatError {
    fn new(kind: ErrorKind, found: impl Into<String>) -> FormatError {
        FormatError { kind, found: found.into() }
    }

    /// How to fix it, for a file that should have been `format`.
    pub fn fix(&self, format: Format) -> String {
        let static_hint = match format {
            Format::Elf(EM_AARCH64) => "for Rust build with `--target aarch64-unknown-linux-musl`",
            _ => "for Rust build with `--target x86_64-unknown-linux-musl`",
        };
        match self.kind {
            ErrorKind::Empty => {
                "point it at the real file (an interrupted copy or download leaves an empty one)".into()
            }
            ErrorKind::LfsPointer => "run `git lfs pull` where the file came from, or point at the real file".into(),
            ErrorKind::WrongFormat => format!("point it at {}", format.describe()),
            ErrorKind::Truncated => "the file is incomplete: copy or download it again (an interrupted copy, a \
                                     full disk or a size-limited transfer cuts files short)"
                .into(),
            ErrorKind::Corrupt => "the file is damaged or not what its name says: rebuild or download it again".into(),
            ErrorKind::WrongMachine | ErrorKind::Unsupported => format!("use {}", format.describe()),
            ErrorKind::NotStatic => format!(
                "link it statically: the guest has no dynamic loader and no shared libraries ({static_hint}; \
                 for C link with `-static` or `-static-pie`)"
            ),
            ErrorKind::SharedLibrary => "point it at the program, not at a shared library".into(),
            ErrorKind::Relocatable => format!(
                "link the object file into a static executable ({static_hint}; for C \
                                               `cc -static -o prog prog.o`)"
            ),
        }
    }
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.found)
    }
}

impl std::error::Error for FormatError {}

impl Format {
    /// What the format is, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Format::BzImage => "a complete x86 bzImage (boot sector 0xAA55, `HdrS` at 0x202, boot protocol 2.12 or \
                                later with a 64-bit entry point, at least (setup_sects + 1) × 512 + syssize × 16 bytes long)",
            Format::Arm64Image => "a complete little-endian arm64 Linux Image (`ARMd` magic at 0x38, its image_size \
                                   at least the file's length)",
            Format::Elf(EM_X86_64) => "a complete, statically linked 64-bit x86_64 ELF executable (ET_EXEC, or a \
                                       static-pie ET_DYN with no program interpreter and no shared libraries)",
            Format::Elf(EM_AARCH64) => "a complete, statically linked 64-bit aarch64 ELF executable (ET_EXEC, or a \
                                        static-pie ET_DYN with no program interpreter and no shared libraries)",
            Format::Elf(_) => "a complete, statically linked 64-bit ELF executable",
        }
    }

    /// `Ok(())` if `bytes` are a complete, usable file of this format, else what is wrong.
    pub fn check(self, bytes: &[u8]) -> Result<(), FormatError> {
        if bytes.is_empty() {
            return Err(FormatError::new(ErrorKind::Empty, "the file is empty"));
        }
        if bytes.starts_with(b"version https://git-lfs") {
            return Err(FormatError::new(
                ErrorKind::LfsPointer,
                "this is a Git LFS pointer, not the payload (run `git lfs pull`)",
            ));
        }
        match self {
            Format::BzImage => check_bzimage(bytes),
            Format::Arm64Image => check_arm64_image(bytes),
            Format::Elf(machine) => check_elf(bytes, machine),
        }
    }
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}
fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}
fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// `off + len`, if the range lies inside a file of `file_len` bytes.
fn range_end(off: u64, len: u64, file_len: usize) -> Option<u64> {
    off.checked_add(len).filter(|&end| end <= file_len as u64)
}

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

fn check_bzimage(b: &[u8]) -> Result<(), FormatError> {
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

// arm64 Image header (Documentation/arch/arm64/booting.rst).
const ARM64_TEXT_OFFSET: usize = 0x08;
const ARM64_IMAGE_SIZE: usize = 0x10;
const ARM64_FLAGS: usize = 0x18;
const ARM64_MAGIC: usize = 0x38;
const ARM64_PE_OFFSET: usize = 0x3c;
const ARM64_HEADER_LEN: usize = 0x40;

fn check_arm64_image(b: &[u8]) -> Result<(), FormatError> {
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

// ELF64 (System V ABI): header and table entry layouts.
const ET_REL: u16 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const ET_CORE: u16 = 4;
const EHDR_LEN: usize = 64;
const PHDR_LEN: u64 = 56;
const SHDR_LEN: u64 = 64;
const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PF_X: u32 = 1;
const SHT_NULL: u32 = 0;
const SHT_NOBITS: u32 = 8;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_SONAME: u64 = 14;
const DT_FLAGS_1: u64 = 0x6fff_fffb;
const DF_1_PIE: u64 = 0x0800_0000;

struct Segment {
    kind: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
}

fn check_elf(b: &[u8], machine: u16) -> Result<(), FormatError> {
    use ErrorKind::*;
    let len = b.len();
    if !b.starts_with(b"\x7fELF") {
        return Err(FormatError::new(WrongFormat, "not an ELF file (no `\\x7fELF` magic)"));
    }
    match b.get(4) {
        Some(2) => {}
        Some(1) => return Err(FormatError::new(Unsupported, "a 32-bit ELF file; a 64-bit one is needed")),
        _ => return Err(FormatError::new(Truncated, format!("the ELF header is cut short at {len} bytes"))),
    }
    if len < EHDR_LEN {
        return Err(FormatError::new(
            Truncated,
            format!("the ELF header is cut short: the file has {len} bytes, the header alone is {EHDR_LEN}"),
        ));
    }
    if b[5] != 1 {
        return Err(FormatError::new(Unsupported, "a big-endian ELF file; the guest needs a little-endian one"));
    }
    let field16 = |off| u16_at(b, off).unwrap_or(0);
    let field64 = |off| u64_at(b, off).unwrap_or(0);
    let (e_type, e_machine, e_entry) = (field16(0x10), field16(0x12), field64(0x18));
    let (e_phoff, e_shoff) = (field64(0x20), field64(0x28));
    let (e_phentsize, e_phnum) = (u64::from(field16(0x36)), u64::from(field16(0x38)));
    let (e_shentsize, e_shnum) = (u64::from(field16(0x3a)), u64::from(field16(0x3c)));
    if e_machine != machine {
        return Err(FormatError::new(
            WrongMachine,
            format!(
                "ELF e_machine is {e_machine} ({}), expected {machine} ({})",
                machine_name(e_machine),
                machine_name(machine)
            ),
        ));
    }
    match e_type {
        ET_EXEC | ET_DYN => {}
        ET_REL => {
            return Err(FormatError::new(
                Relocatable,
                "a relocatable object file (ELF type ET_REL, e.g. a `.o`), \
                                                            not a linked executable",
            ))
        }
        ET_CORE => return Err(FormatError::new(WrongFormat, "a core dump (ELF type ET_CORE), not an executable")),
        t => return Err(FormatError::new(WrongFormat, format!("ELF type {t} is not an executable"))),
    }
    if e_phnum == 0 {
        return Err(FormatError::new(WrongFormat, "no program headers: not a loadable executable"));
    }
    if e_phentsize != PHDR_LEN {
        return Err(FormatError::new(
            Corrupt,
            format!("program header entries are {e_phentsize} bytes, ELF64 has {PHDR_LEN}"),
        ));
    }
    let Some(_) = range_end(e_phoff, e_phnum * PHDR_LEN, len) else {
        return Err(FormatError::new(Truncated, format!(
            "the program header table ({e_phnum} entries at offset {e_phoff}) extends past the end of the file ({len} bytes)")));
    };
    if e_shoff != 0 && e_shnum != 0 {
        if e_shentsize != SHDR_LEN {
            return Err(FormatError::new(
                Corrupt,
                format!("section header entries are {e_shentsize} bytes, ELF64 has {SHDR_LEN}"),
            ));
        }
        if range_end(e_shoff, e_shnum * SHDR_LEN, len).is_none() {
            return Err(FormatError::new(
                Truncated,
                format!(
                "the section header table ({e_shnum} entries at offset {e_shoff}) extends past the end of the file \
                 ({len} bytes)"),
            ));
        }
        for i in 0..e_shnum {
            let s = (e_shoff + i * SHDR_LEN) as usize;
            let sh_type = u32_at(b, s + 4).unwrap_or(0);
            let (off, size) = (u64_at(b, s + 0x18).unwrap_or(0), u64_at(b, s + 0x20).unwrap_or(0));
            if sh_type != SHT_NULL && sh_type != SHT_NOBITS && range_end(off, size, len).is_none() {
                return Err(FormatError::new(
                    Truncated,
                    format!(
                        "section {i} (bytes {off}..{}) extends past the end of the file ({len} bytes)",
                        off.saturating_add(size)
                    ),
                ));
            }
        }
    }

    let mut segments = Vec::with_capacity(e_phnum as usize);
    for i in 0..e_phnum {
        let p = (e_phoff + i * PHDR_LEN) as usize;
        let seg = Segment {
            kind: u32_at(b, p).unwrap_or(0),
            flags: u32_at(b, p + 4).unwrap_or(0),
            offset: u64_at(b, p + 0x08).unwrap_or(0),
            vaddr: u64_at(b, p + 0x10).unwrap_or(0),
            filesz: u64_at(b, p + 0x20).unwrap_or(0),
            memsz: u64_at(b, p + 0x28).unwrap_or(0),
        };
        if range_end(seg.offset, seg.filesz, len).is_none() {
            return Err(FormatError::new(
                Truncated,
                format!(
                    "segment {i} (bytes {}..{}) extends past the end of the file ({len} bytes)",
                    seg.offset,
                    seg.offset.saturating_add(seg.filesz)
                ),
            ));
        }
        if seg.kind == PT_LOAD && seg.filesz > seg.memsz {
            return Err(FormatError::new(
                Corrupt,
                format!(
                    "loadable segment {i} has more bytes in the file ({}) than in memory ({})",
                    seg.filesz, seg.memsz
                ),
            ));
        }
        segments.push(seg);
    }

    let dynamic = segments.iter().find(|s| s.kind == PT_DYNAMIC).map(|s| read_dynamic(b, s, &segments));
    let dynamic = dynamic.unwrap_or_default();
    let pie = dynamic.flags_1 & DF_1_PIE != 0;
    if e_type == ET_DYN && (e_entry == 0 || (dynamic.soname.is_some() && !pie)) {
        let soname = dynamic.soname.as_deref().map(|s| format!(" {s}")).unwrap_or_default();
        return Err(FormatError::new(
            SharedLibrary,
            format!(
                "a shared library{soname} (ELF type ET_DYN{}), not a program",
                if e_entry == 0 { " with no entry point" } else { " with a DT_SONAME" }
            ),
        ));
    }
    let what = if e_type == ET_DYN { "a dynamically linked PIE" } else { "a dynamically linked executable" };
    if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
        let raw = &b[interp.offset as usize..(interp.offset + interp.filesz) as usize];
        let name = String::from_utf8_lossy(raw.split(|&c| c == 0).next().unwrap_or_default()).into_owned();
        return Err(FormatError::new(
            NotStatic,
            format!("{what} (program interpreter {name}{}); it must be statically linked", needs(&dynamic.needed)),
        ));
    }
    if !dynamic.needed.is_empty() {
        return Err(FormatError::new(
            NotStatic,
            format!("{what} (no program interpreter{}); it must be statically linked", needs(&dynamic.needed)),
        ));
    }
    if !segments.iter().any(|s| s.kind == PT_LOAD) {
        return Err(FormatError::new(WrongFormat, "no loadable segment (PT_LOAD): not an executable"));
    }
    let in_code =
        |s: &&Segment| s.kind == PT_LOAD && s.flags & PF_X != 0 && e_entry >= s.vaddr && e_entry - s.vaddr < s.memsz;
    if !segments.iter().any(|s| in_code(&s)) {
        return Err(FormatError::new(
            Corrupt,
            format!("the entry point 0x{e_entry:x} is not inside an executable loadable segment"),
        ));
    }
    Ok(())
}

fn needs(needed: &[String]) -> String {
    if needed.is_empty() {
        String::new()
    } else {
        format!(", needs the shared libraries {}", needed.join(", "))
    }
}

#[derive(Default)]
struct Dynamic {
    needed: Vec<String>,
    soname: Option<String>,
    flags_1: u64,
}

/// The entries of `PT_DYNAMIC` this check cares about (ranges were checked by the caller).
fn read_dynamic(b: &[u8], dyn_seg: &Segment, segments: &[Segment]) -> Dynamic {
    let mut needed = Vec::new();
    let mut soname = None;
    let mut strtab = None;
    let mut flags_1 = 0;
    let start = dyn_seg.offset as usize;
    for i in 0..(dyn_seg.filesz / 16) as usize {
        let (Some(tag), Some(val)) = (u64_at(b, start + i * 16), u64_at(b, start + i * 16 + 8)) else { break };
        match tag {
            DT_NULL => break,
            DT_NEEDED => needed.push(val),
            DT_SONAME => soname = Some(val),
            DT_STRTAB => strtab = Some(val),
            DT_FLAGS_1 => flags_1 = val,
            _ => {}
        }
    }
    // DT_STRTAB is an address: find the loadable segment that holds it.
    let strtab_off = strtab.and_then(|addr| {
        segments
            .iter()
            .find(|s| s.kind == PT_LOAD && addr >= s.vaddr && addr - s.vaddr < s.filesz)
            .map(|s| s.offset + (addr - s.vaddr))
    });
    let name = |off: u64| -> String {
        strtab_off
            .and_then(|base| base.checked_add(off))
            .and_then(|at| b.get(at as usize..))
            .map(|tail| {
                let end = tail.iter().take(256).position(|&c| c == 0).unwrap_or(tail.len().min(256));
                String::from_utf8_lossy(&tail[..end]).into_owned()
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("(string at 0x{off:x})"))
    };
    Dynamic { needed: needed.into_iter().take(8).map(name).collect(), soname: soname.map(name), flags_1 }
}

fn machine_name(m: u16) -> &'static str {
    match m {
        EM_X86_64 => "x86_64",
        EM_AARCH64 => "aarch64",
        3 => "i386",
        40 => "arm",
        _ => "other",
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, ElfKind};

    fn kind(r: Result<(), FormatError>) -> ErrorKind {
        r.expect_err("accepted").kind
    }

    #[test]
    fn rejects_what_is_not_the_format() {
        assert!(Format::BzImage.check(b"").unwrap_err().found.contains("empty"));
        assert!(Format::BzImage.check(&[0u8; 4096]).unwrap_err().found.contains("HdrS"));
        let lfs = Format::Elf(EM_X86_64).check(b"version https://git-lfs.github.com/spec/v1\n").unwrap_err();
        assert_eq!(lfs.kind, ErrorKind::LfsPointer);
        let arm = fixtures::elf(EM_AARCH64, ElfKind::Static, "arm");
        assert!(Format::Elf(EM_AARCH64).check(&arm).is_ok());
        let e = Format::Elf(EM_X86_64).check(&arm).unwrap_err();
        assert!(e.found.contains("183 (aarch64)") && e.found.contains("62 (x86_64)"), "{e}");
        assert!(Format::Arm64Image.check(&fixtures::arm64_image("img")).is_ok());
        assert!(Format::BzImage.check(&fixtures::bzimage("bz")).is_ok());
        assert_eq!(kind(Format::Elf(EM_X86_64).check(&fixtures::bzimage("bz"))), ErrorKind::WrongFormat);
    }

    #[test]
    fn bzimage_header_fields_are_all_checked() {
        let good = fixtures::bzimage("a kernel");
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            Format::BzImage.check(&b)
        };
        assert_eq!(kind(with(&|b| b[0x1fe] = 0)), ErrorKind::WrongFormat);
        assert_eq!(kind(with(&|b| b[0x236] = 0)), ErrorKind::Unsupported);
        assert_eq!(kind(with(&|b| b[0x211] = 0)), ErrorKind::Unsupported);
        assert_eq!(kind(with(&|b| b[0x206..0x208].copy_from_slice(&0x020bu16.to_le_bytes()))), ErrorKind::Unsupported);
        // One more setup sector or 16 more bytes of kernel than the file has.
        assert_eq!(kind(with(&|b| b[0x1f1] += 1)), ErrorKind::Truncated);
        let e = with(&|b| {
            let s = u32_at(b, 0x1f4).unwrap() + 1;
            b[0x1f4..0x1f8].copy_from_slice(&s.to_le_bytes())
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Truncated);
        assert!(e.found.contains("syssize") && e.found.contains(&format!("{} bytes", good.len())), "{e}");
        assert_eq!(kind(with(&|b| b[0x1f4..0x1f8].fill(0))), ErrorKind::Corrupt);
        assert_eq!(kind(with(&|b| b[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes()))), ErrorKind::Corrupt);
        // Trailing bytes (e.g. an appended signature) are fine; a missing byte is not.
        assert!(with(&|b| b.extend_from_slice(&[0; 100])).is_ok());
        assert_eq!(kind(Format::BzImage.check(&good[..good.len() - 1])), ErrorKind::Truncated);
    }

    #[test]
    fn arm64_image_size_must_match_the_file() {
        let good = fixtures::arm64_image("an arm64 kernel");
        assert!(Format::Arm64Image.check(&good).is_ok());
        let image_size = u64_at(&good, 0x10).unwrap() as usize;
        assert_eq!(kind(Format::Arm64Image.check(&good[..image_size / 2 - 1])), ErrorKind::Truncated);
        assert_eq!(kind(Format::Arm64Image.check(&good[..0x3c])), ErrorKind::Truncated);
        let mut long = good.clone();
        long.resize(image_size + 1, 0);
        assert_eq!(kind(Format::Arm64Image.check(&long)), ErrorKind::Corrupt);
        let mut be = good.clone();
        be[0x18] |= 1;
        assert_eq!(kind(Format::Arm64Image.check(&be)), ErrorKind::Unsupported);
        let mut old = good.clone();
        old[0x10..0x18].fill(0);
        assert_eq!(kind(Format::Arm64Image.check(&old)), ErrorKind::Unsupported);
        let mut odd = good.clone();
        odd[0x08] = 1;
        assert_eq!(kind(Format::Arm64Image.check(&odd)), ErrorKind::Corrupt);
    }

    #[test]
    fn arm64_pe_sections_must_be_in_the_file() {
        // A fixture Image with a PE header at 0x40 and one section covering the whole file.
        let mut img = fixtures::arm64_image("efi stub");
        let len = img.len() as u32;
        img[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
        img[0x40..0x44].copy_from_slice(b"PE\0\0");
        img[0x46..0x48].copy_from_slice(&1u16.to_le_bytes()); // one section, no optional header
        let s = 0x40 + 24;
        img[s..s + 8].copy_from_slice(b".text\0\0\0");
        img[s + 16..s + 20].copy_from_slice(&(len - 0x1000).to_le_bytes());
        img[s + 20..s + 24].copy_from_slice(&0x1000u32.to_le_bytes());
        assert!(Format::Arm64Image.check(&img).is_ok());
        let e = Format::Arm64Image.check(&img[..img.len() - 1]).unwrap_err();
        assert!(e.kind == ErrorKind::Truncated && e.found.contains(".text"), "{e}");
    }

    #[test]
    fn elf_must_be_a_complete_static_executable() {
        let x86 = Format::Elf(EM_X86_64);
        for ok in [ElfKind::Static, ElfKind::StaticPie] {
            let b = fixtures::elf(EM_X86_64, ok, "ok");
            assert!(x86.check(&b).is_ok(), "{ok:?}: {:?}", x86.check(&b));
        }
        let e = x86.check(&fixtures::elf(EM_X86_64, ElfKind::DynamicPie, "pie")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotStatic);
        assert!(
            e.found.contains("dynamically linked PIE")
                && e.found.contains("/lib64/ld-linux-x86-64.so.2")
                && e.found.contains("libc.so.6")
                && e.found.contains("statically linked"),
            "{e}"
        );
        assert!(e.fix(x86).contains("x86_64-unknown-linux-musl"), "{}", e.fix(x86));
        let e = x86.check(&fixtures::elf(EM_X86_64, ElfKind::SharedLibrary, "so")).unwrap_err();
        assert!(e.kind == ErrorKind::SharedLibrary && e.found.contains("libfixture.so.1"), "{e}");
        let e = x86.check(&fixtures::elf(EM_X86_64, ElfKind::Relocatable, "o")).unwrap_err();
        assert!(e.kind == ErrorKind::Relocatable && e.found.contains("ET_REL"), "{e}");
        // A dynamic executable without an interpreter but with DT_NEEDED is not static either.
        let mut needs = fixtures::elf(EM_X86_64, ElfKind::DynamicPie, "needs");
        let interp = (0..3).map(|i| 64 + 56 * i).find(|&p| u32_at(&needs, p) == Some(PT_INTERP)).unwrap();
        needs[interp..interp + 4].copy_from_slice(&0u32.to_le_bytes()); // PT_INTERP → PT_NULL
        assert_eq!(kind(x86.check(&needs)), ErrorKind::NotStatic);
    }

    #[test]
    fn truncated_elf_is_refused_at_every_length() {
        let x86 = Format::Elf(EM_X86_64);
        for k in [ElfKind::Static, ElfKind::StaticPie] {
            let b = fixtures::elf(EM_X86_64, k, "a complete program with some text in it");
            for cut in 1..b.len() {
                let e = x86.check(&b[..cut]).unwrap_err();
                assert!(matches!(e.kind, ErrorKind::Truncated | ErrorKind::WrongFormat), "{k:?} cut at {cut}: {e}");
            }
        }
        let e = x86.check(&fixtures::elf(EM_X86_64, ElfKind::Static, "x")[..64]).unwrap_err();
        assert!(e.kind == ErrorKind::Truncated && e.found.contains("program header table"), "{e}");
    }

    #[test]
    fn bad_elf_headers_do_not_panic() {
        let x86 = Format::Elf(EM_X86_64);
        let good = fixtures::elf(EM_X86_64, ElfKind::StaticPie, "fuzz me");
        // Every single-byte change in the headers and tables: an answer, never a panic.
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                let _ = x86.check(&b);
            }
        }
    }

    /// Real toolchain output, when a C compiler is on PATH: static and static-pie programs pass;
    /// a dynamic PIE, a shared library and a `.o` are refused; so is the host's /bin/ls.
    #[test]
    fn real_compiler_outputs() {
        let x86 = Format::Elf(EM_X86_64);
        if let Ok(ls) = std::fs::read("/bin/ls") {
            if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
                assert_eq!(kind(x86.check(&ls)), ErrorKind::NotStatic, "/bin/ls");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t.c");
        std::fs::write(&src, "int main(void) { return 0; }\n").unwrap();
        let cc = |args: &[&str], out: &str| -> Option<Vec<u8>> {
            let o = dir.path().join(out);
            let ok = std::process::Command::new("cc")
                .args(args)
                .arg(&src)
                .arg("-o")
                .arg(&o)
                .stderr(std::process::Stdio::null())
                .status()
                .ok()?
                .success();
            if ok {
                std::fs::read(&o).ok()
            } else {
                None
            }
        };
        if !cfg!(all(target_os = "linux", target_arch = "x86_64")) || cc(&["-c"], "probe.o").is_none() {
            return crate::testing::skip("real_compiler_outputs needs an x86_64 Linux C compiler (cc)");
        }
        let e = x86.check(&cc(&["-c"], "t.o").unwrap()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Relocatable, "{e}");
        let e = x86.check(&cc(&["-pie", "-fPIE"], "pie").unwrap()).unwrap_err();
        assert!(e.kind == ErrorKind::NotStatic && e.found.contains("PIE"), "{e}");
        let e = x86.check(&cc(&["-shared", "-fPIC", "-Wl,-soname,libt.so.1"], "libt.so").unwrap()).unwrap_err();
        assert!(e.kind == ErrorKind::SharedLibrary && e.found.contains("libt.so.1"), "{e}");
        let e = x86.check(&cc(&["-shared", "-fPIC"], "libt-nosoname.so").unwrap()).unwrap_err();
        assert!(matches!(e.kind, ErrorKind::SharedLibrary | ErrorKind::NotStatic), "{e}");
        // Static variants need a static libc (libc6-dev ships libc.a; musl-gcc works too).
        for (args, name) in [(&["-static"][..], "static"), (&["-static-pie"][..], "static-pie")] {
            match cc(args, name) {
                Some(b) => assert_eq!(x86.check(&b), Ok(()), "{name}"),
                None => crate::testing::skip(&format!("cc {args:?} failed (no static libc? libc6-dev ships libc.a)")),
            }
        }
    }

    /// The shipped payloads themselves pass the checks overrides must pass.
    #[test]
    fn shipped_payloads_pass() {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (krate, kernel, machine) in [
            ("supermachine-kernel-x86-64", Format::BzImage, EM_X86_64),
            ("supermachine-kernel-aarch64", Format::Arm64Image, EM_AARCH64),
        ] {
            let dir = crates.join(krate).join("payload");
            if !dir.is_dir() {
                crate::testing::skip(&format!("{} is not here (a packaged crate)", dir.display()));
                continue;
            }
            for (file, format) in [
                ("kernel.xz", kernel),
                ("busybox.xz", Format::Elf(machine)),
                ("supermachine-agent.xz", Format::Elf(machine)),
                ("init-oci.xz", Format::Elf(machine)),
            ] {
                let mut bytes = Vec::new();
                let xz = std::fs::read(dir.join(file)).unwrap();
                std::io::Read::read_to_end(&mut xz2::read::XzDecoder::new(&xz[..]), &mut bytes).unwrap();
                assert_eq!(format.check(&bytes), Ok(()), "{krate}/{file}");
                // Cut to 4 KiB (issue 11), or by one byte: refused.
                assert!(format.check(&bytes[..4096]).is_err(), "{krate}/{file} cut to 4 KiB was accepted");
                if format != Format::Arm64Image {
                    assert!(format.check(&bytes[..bytes.len() - 1]).is_err(), "{krate}/{file} minus one byte");
                }
            }
        }
    }
}
