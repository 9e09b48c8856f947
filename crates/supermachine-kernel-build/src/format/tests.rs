//! Tests of every format check, on fixtures and on real toolchain output.

use super::elf::PT_INTERP;
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
