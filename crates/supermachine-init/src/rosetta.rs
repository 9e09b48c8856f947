//! What init-oci hands the kernel and runs for Rosetta (linux/amd64 images on Apple Silicon):
//! the runtime shares Apple's Rosetta directory into the guest at [`DIR`] (virtio-fs tag
//! `rosetta`), and its init registers the interpreter with binfmt_misc, starts `rosettad` and
//! runs one x86-64 program to warm the translator up. The data is here (host-testable); the
//! PID-1 side is `pid1/rosetta.rs`.

/// Where the runtime mounts the Rosetta share.
pub const DIR: &str = "/run/rosetta";
/// The interpreter binfmt_misc runs x86-64 ELF files with.
pub const INTERPRETER: &str = "/run/rosetta/rosetta";
/// Rosetta's ahead-of-time translation daemon.
pub const DAEMON: &str = "/run/rosetta/rosettad";
/// The daemon's cache (the runtime shares a host folder there, tag `rosettad-cache`).
pub const CACHE_DIR: &str = "/var/cache/rosettad";
/// Where the warm-up program is written and run (then removed).
pub const WARMUP_PATH: &str = "/tmp/.supermachine-rosetta-warmup";

/// The x86-64 ELF header binfmt_misc matches: class 64-bit, little-endian, version 1, SysV or
/// any OS ABI, ABI version 0, type EXEC or DYN, machine x86-64 (0x3e).
pub const MAGIC: [u8; 20] =
    [0x7f, b'E', b'L', b'F', 0x02, 0x01, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00, 0x3e, 0x00];
/// Which bits of [`MAGIC`] count: the low bit of EI_DATA, EI_VERSION and e_type and all of
/// EI_OSABI are ignored (the mask the runtime and `qemu-binfmt-conf.sh` use).
pub const MASK: [u8; 20] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfe, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff,
    0xff,
];

/// The line written to `/proc/sys/fs/binfmt_misc/register`: entry `amd64`, magic at offset 0,
/// flags `OCF` (the interpreter gets the binary as an open fd, credentials come from the binary,
/// and the interpreter is opened now, so the share must already be mounted).
pub fn registration() -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("\\x{x:02x}")).collect::<String>();
    format!(":amd64:M::{}:{}:{INTERPRETER}:OCF", hex(&MAGIC), hex(&MASK))
}

/// A complete x86-64 Linux program that exits with status 0 (`xor edi, edi; mov eax, 60;
/// syscall`): one ELF header, one loadable segment, 129 bytes.
pub fn warmup_program() -> Vec<u8> {
    const BASE: u64 = 0x40_0000;
    const EHDR: u16 = 64;
    const PHDR: u16 = 56;
    let code: [u8; 9] = [0x31, 0xff, 0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05];
    let total = (EHDR + PHDR) as u64 + code.len() as u64;
    let mut f = Vec::with_capacity(total as usize);
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    f.extend_from_slice(&2u16.to_le_bytes()); // e_type: EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // e_machine: x86-64
    f.extend_from_slice(&1u32.to_le_bytes()); // e_version
    f.extend_from_slice(&(BASE + (EHDR + PHDR) as u64).to_le_bytes()); // e_entry: the code
    f.extend_from_slice(&(EHDR as u64).to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff: no sections
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [EHDR, PHDR, 1, 0, 0, 0] {
        f.extend_from_slice(&v.to_le_bytes()); // e_ehsize e_phentsize e_phnum e_shentsize e_shnum e_shstrndx
    }
    f.extend_from_slice(&1u32.to_le_bytes()); // p_type: LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // p_flags: R X
    for v in [0, BASE, BASE, total, total, 0x1000] {
        f.extend_from_slice(&v.to_le_bytes()); // p_offset p_vaddr p_paddr p_filesz p_memsz p_align
    }
    f.extend_from_slice(&code);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warmup_program_matches_the_registration() {
        let p = warmup_program();
        assert_eq!(p.len(), 129);
        assert!(p.iter().zip(MAGIC.iter().zip(MASK)).all(|(b, (m, k))| b & k == m & k));
        let r = registration();
        assert!(r.starts_with(":amd64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00"), "{r}");
        assert!(r.ends_with(":/run/rosetta/rosetta:OCF"), "{r}");
        assert_eq!(r.matches("\\x").count(), 40);
    }

    /// On an x86-64 host the program really runs and exits 0.
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn the_warmup_program_runs_on_x86_64() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rosetta-warmup-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("warmup");
        std::fs::write(&path, warmup_program()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let status = std::process::Command::new(&path).status().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(status.success(), "{status:?}");
    }
}
