//! Small, well-formed stand-ins for payloads, for tests (feature `fixtures`; not a public API).
//!
//! Each builder makes a file that passes (or, for the refused [`ElfKind`]s, fails in one
//! specific way) the build helper's format checks, with `tag` inside so every fixture has its
//! own hash.

/// An x86 bzImage that passes every header check: boot protocol 2.15, four setup sectors, a
/// protected-mode part of `syssize × 16` bytes holding `tag`, LOADED_HIGH and XLF_KERNEL_64.
/// The file is exactly as long as its header declares.
pub fn bzimage(tag: &str) -> Vec<u8> {
    let setup_len = 5 * 512;
    let mut kernel = tag.as_bytes().to_vec();
    kernel.resize(kernel.len().div_ceil(16).max(1) * 16, 0);
    let mut b = vec![0u8; setup_len];
    b[0x1f1] = 4; // setup_sects
    b[0x1f4..0x1f8].copy_from_slice(&((kernel.len() / 16) as u32).to_le_bytes()); // syssize
    b[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
    b[0x202..0x206].copy_from_slice(b"HdrS");
    b[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    b[0x211] = 1; // loadflags: LOADED_HIGH
    b[0x236..0x238].copy_from_slice(&1u16.to_le_bytes()); // xloadflags: XLF_KERNEL_64
    b[0x24c..0x250].copy_from_slice(&(kernel.len() as u32).to_le_bytes()); // payload_length
    b.extend_from_slice(&kernel);
    b
}

/// A little-endian arm64 Image without an EFI stub: the 64-byte header and `tag`, padded to
/// 4 KiB pages, with an `image_size` one page (the ".bss") larger than the file.
pub fn arm64_image(tag: &str) -> Vec<u8> {
    let mut b = vec![0u8; 0x40];
    b[0x38..0x3c].copy_from_slice(b"ARMd");
    b.extend_from_slice(tag.as_bytes());
    b.resize(b.len().div_ceil(4096) * 4096, 0);
    let image_size = b.len() as u64 + 4096;
    b[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
    b[0x18..0x20].copy_from_slice(&0xau64.to_le_bytes()); // 4 KiB pages, anywhere in RAM, LE
    b
}

/// What [`elf`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfKind {
    /// ET_EXEC, no dynamic section: accepted.
    Static,
    /// ET_DYN with DF_1_PIE, a dynamic section without DT_NEEDED, no interpreter: accepted.
    StaticPie,
    /// ET_DYN with DF_1_PIE, PT_INTERP and DT_NEEDED libc.so.6: refused (not static).
    DynamicPie,
    /// ET_DYN with DT_SONAME libfixture.so.1, DT_NEEDED libc.so.6 and no entry: refused.
    SharedLibrary,
    /// ET_REL with sections and no program headers: refused (a `.o`).
    Relocatable,
}

/// A 64-bit little-endian ELF file for `machine` (62 = x86_64, 183 = aarch64) holding `tag`
/// as its code. Layout: header, program headers, interpreter path, dynamic string table,
/// dynamic section, code, then the section headers last (so cutting any byte off the end
/// cuts into a table the header points at).
pub fn elf(machine: u16, kind: ElfKind, tag: &str) -> Vec<u8> {
    const DT_NEEDED: u64 = 1;
    const DT_STRTAB: u64 = 5;
    const DT_STRSZ: u64 = 10;
    const DT_SONAME: u64 = 14;
    const DT_FLAGS_1: u64 = 0x6fff_fffb;
    const DF_1_PIE: u64 = 0x0800_0000;
    let interp: &[u8] = if machine == 183 { b"/lib/ld-linux-aarch64.so.1\0" } else { b"/lib64/ld-linux-x86-64.so.2\0" };
    let dynstr: &[u8] = b"\0libc.so.6\0libfixture.so.1\0";
    let (needed_at, soname_at) = (1u64, 11u64);
    let (e_type, has_interp, has_dynamic) = match kind {
        ElfKind::Static => (2u16, false, false),
        ElfKind::StaticPie => (3, false, true),
        ElfKind::DynamicPie => (3, true, true),
        ElfKind::SharedLibrary => (3, false, true),
        ElfKind::Relocatable => (1, false, false),
    };
    let base: u64 = if e_type == 2 { 0x40_0000 } else { 0 };
    let phnum: u64 = if kind == ElfKind::Relocatable { 0 } else { 1 + has_interp as u64 + has_dynamic as u64 };

    let phoff = 64u64;
    let interp_off = phoff + phnum * 56;
    let dynstr_off = interp_off + if has_interp { interp.len() as u64 } else { 0 };
    let dyn_off = (dynstr_off + if has_dynamic { dynstr.len() as u64 } else { 0 }).div_ceil(8) * 8;
    let mut dynamic: Vec<(u64, u64)> = Vec::new();
    if has_dynamic {
        dynamic.push((DT_STRTAB, base + dynstr_off));
        dynamic.push((DT_STRSZ, dynstr.len() as u64));
        match kind {
            ElfKind::DynamicPie => dynamic.extend([(DT_NEEDED, needed_at), (DT_FLAGS_1, DF_1_PIE)]),
            ElfKind::SharedLibrary => dynamic.extend([(DT_NEEDED, needed_at), (DT_SONAME, soname_at)]),
            _ => dynamic.push((DT_FLAGS_1, DF_1_PIE)),
        }
        dynamic.push((0, 0));
    }
    let code_off = dyn_off + dynamic.len() as u64 * 16;
    let code_len = tag.len().max(1) as u64;
    let shoff = (code_off + code_len).div_ceil(8) * 8;
    let shnum = 2u64; // SHT_NULL, .text
    let file_len = shoff + shnum * 64;
    let entry = if kind == ElfKind::SharedLibrary { 0 } else { base + code_off };

    let mut b = vec![0u8; file_len as usize];
    let put16 = |b: &mut Vec<u8>, at: u64, v: u16| b[at as usize..at as usize + 2].copy_from_slice(&v.to_le_bytes());
    let put32 = |b: &mut Vec<u8>, at: u64, v: u32| b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |b: &mut Vec<u8>, at: u64, v: u64| b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes());
    b[..4].copy_from_slice(b"\x7fELF");
    b[4] = 2; // ELFCLASS64
    b[5] = 1; // little endian
    b[6] = 1; // EV_CURRENT
    put16(&mut b, 0x10, e_type);
    put16(&mut b, 0x12, machine);
    put32(&mut b, 0x14, 1);
    put64(&mut b, 0x18, entry);
    put64(&mut b, 0x20, if phnum == 0 { 0 } else { phoff });
    put64(&mut b, 0x28, shoff);
    put16(&mut b, 0x34, 64); // e_ehsize
    put16(&mut b, 0x36, 56);
    put16(&mut b, 0x38, phnum as u16);
    put16(&mut b, 0x3a, 64);
    put16(&mut b, 0x3c, shnum as u16);

    let phdr = |b: &mut Vec<u8>, i: u64, p_type: u32, flags: u32, off: u64, len: u64, align: u64| {
        let p = phoff + i * 56;
        put32(b, p, p_type);
        put32(b, p + 4, flags);
        put64(b, p + 0x08, off);
        put64(b, p + 0x10, base + off);
        put64(b, p + 0x18, base + off);
        put64(b, p + 0x20, len);
        put64(b, p + 0x28, len);
        put64(b, p + 0x30, align);
    };
    if phnum > 0 {
        phdr(&mut b, 0, 1, 5, 0, file_len, 0x1000); // PT_LOAD, R+X: the whole file
    }
    let mut next = 1;
    if has_interp {
        phdr(&mut b, next, 3, 4, interp_off, interp.len() as u64, 1); // PT_INTERP
        b[interp_off as usize..][..interp.len()].copy_from_slice(interp);
        next += 1;
    }
    if has_dynamic {
        phdr(&mut b, next, 2, 6, dyn_off, dynamic.len() as u64 * 16, 8); // PT_DYNAMIC
        b[dynstr_off as usize..][..dynstr.len()].copy_from_slice(dynstr);
        for (i, (tag, val)) in dynamic.iter().enumerate() {
            put64(&mut b, dyn_off + i as u64 * 16, *tag);
            put64(&mut b, dyn_off + i as u64 * 16 + 8, *val);
        }
    }
    b[code_off as usize..][..tag.len()].copy_from_slice(tag.as_bytes());
    // Section 1: .text (SHT_PROGBITS, alloc + exec) over the code.
    let s = shoff + 64;
    put32(&mut b, s + 4, 1);
    put64(&mut b, s + 8, 6);
    put64(&mut b, s + 0x10, base + code_off);
    put64(&mut b, s + 0x18, code_off);
    put64(&mut b, s + 0x20, code_len);
    b
}
