//! Recognises payload formats, so a wrong file in an override fails the build with a reason.

/// What a payload must look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// x86 bzImage with a 64-bit entry point (boot protocol `HdrS`, XLF_KERNEL_64).
    BzImage,
    /// arm64 `Image` (magic `ARM\x64` at offset 0x38).
    Arm64Image,
    /// A 64-bit ELF executable for the given `e_machine`.
    Elf(u16),
}

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

impl Format {
    /// What the format is, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Format::BzImage => "an x86 bzImage (boot sector 0x55AA, `HdrS` at 0x202, 64-bit entry)",
            Format::Arm64Image => "an arm64 Linux Image (`ARMd` magic at 0x38)",
            Format::Elf(EM_X86_64) => "a 64-bit x86_64 ELF executable",
            Format::Elf(EM_AARCH64) => "a 64-bit aarch64 ELF executable",
            Format::Elf(_) => "a 64-bit ELF executable",
        }
    }

    /// `Ok(())` if `bytes` look like this format, else what is wrong.
    pub fn check(self, bytes: &[u8]) -> Result<(), String> {
        if bytes.is_empty() {
            return Err("the file is empty".into());
        }
        if bytes.starts_with(b"version https://git-lfs") {
            return Err("this is a Git LFS pointer, not the payload (run `git lfs pull`)".into());
        }
        match self {
            Format::BzImage => {
                if bytes.len() < 0x240 || bytes[0x1fe..0x200] != [0x55, 0xaa] || &bytes[0x202..0x206] != b"HdrS" {
                    return Err("no x86 boot-protocol header (`HdrS` at 0x202)".into());
                }
                let xloadflags = u16::from_le_bytes([bytes[0x236], bytes[0x237]]);
                if xloadflags & 1 == 0 {
                    return Err("the bzImage has no 64-bit entry point (XLF_KERNEL_64)".into());
                }
                Ok(())
            }
            Format::Arm64Image => {
                if bytes.len() < 0x40 || &bytes[0x38..0x3c] != b"ARMd" {
                    return Err("no arm64 Image magic (`ARMd` at 0x38)".into());
                }
                Ok(())
            }
            Format::Elf(machine) => {
                if bytes.len() < 0x14 || &bytes[..4] != b"\x7fELF" {
                    return Err("not an ELF file".into());
                }
                if bytes[4] != 2 {
                    return Err("a 32-bit ELF file; a 64-bit one is needed".into());
                }
                let got = u16::from_le_bytes([bytes[0x12], bytes[0x13]]);
                if got != machine {
                    return Err(format!("ELF e_machine is {got} ({}), expected {machine} ({})",
                        machine_name(got), machine_name(machine)));
                }
                Ok(())
            }
        }
    }
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

    #[test]
    fn rejects_what_is_not_the_format() {
        assert!(Format::BzImage.check(b"").unwrap_err().contains("empty"));
        assert!(Format::BzImage.check(&[0u8; 4096]).unwrap_err().contains("HdrS"));
        assert!(Format::Elf(EM_X86_64).check(b"version https://git-lfs.github.com/spec/v1\n").unwrap_err().contains("LFS"));
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x12..0x14].copy_from_slice(&EM_AARCH64.to_le_bytes());
        assert!(Format::Elf(EM_AARCH64).check(&elf).is_ok());
        let e = Format::Elf(EM_X86_64).check(&elf).unwrap_err();
        assert!(e.contains("183 (aarch64)") && e.contains("62 (x86_64)"), "{e}");
        let mut img = vec![0u8; 64];
        img[0x38..0x3c].copy_from_slice(b"ARMd");
        assert!(Format::Arm64Image.check(&img).is_ok());
        let mut bz = vec![0u8; 0x300];
        bz[0x1fe] = 0x55;
        bz[0x1ff] = 0xaa;
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert!(Format::BzImage.check(&bz).unwrap_err().contains("64-bit"));
        bz[0x236] = 1;
        assert!(Format::BzImage.check(&bz).is_ok());
    }
}
