//! ELF64 programs: a complete, statically linked executable of the guest's machine.

use super::*;

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
pub(super) const PT_INTERP: u32 = 3;
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

pub(super) fn check_elf(b: &[u8], machine: u16) -> Result<(), FormatError> {
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
