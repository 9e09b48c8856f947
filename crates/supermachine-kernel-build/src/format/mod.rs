//! Recognises payload formats, so a wrong file in an override fails the build with a reason.
//!
//! The checks read only the file's own headers, with checked arithmetic: a kernel must be as
//! long as its header says, and a program must be a complete, static executable of the guest's
//! machine (the guest has no dynamic loader and no shared libraries).

use std::fmt;

mod arm64;
mod bzimage;
mod elf;
#[cfg(test)]
mod tests;

use arm64::check_arm64_image;
pub use bzimage::bzimage_version;
use bzimage::check_bzimage;
use elf::check_elf;

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
