//! Lays out guest RAM exactly as the supermachine 0.7.108 runtime's KVM backend does before it
//! starts vCPU 0, with the runtime's own code: `arch::x86_64::boot::setup_boot` (kernel at 1 MiB,
//! zero page, command line, initramfs, identity page tables, GDT, the long-mode register state)
//! and `arch::x86_64::mptable::write_mptable` (no ACPI). QEMU cannot start a vCPU in long mode,
//! so the harness boots a small PVH stub (`scripts/kvm-entry/stub.S`) that loads the register
//! state written here and jumps to the kernel; everything else is these bytes, unchanged.
//!
//! ```text
//! kvm-entry --bzimage FILE --initrd FILE --cmdline STR --mem-mib N --cpus N --out DIR
//! ```
//! Writes DIR/ram-<hex address>.bin for every run of non-zero 4 KiB pages from 1 MiB up, and
//! DIR/low.bin: the first 640 KiB of RAM (page tables, GDT, zero page, command line, MP table)
//! followed by the stub's input block (CR3, CR4, EFER, CR0, the selectors, RIP, RSI, the GDT
//! descriptor, RFLAGS; layout in stub.S), to be loaded at the first free MiB of guest RAM above
//! the kernel (DIR/stage holds its address, which the stub is linked with): QEMU's firmware runs
//! in low memory before the stub, so the stub copies this block into place itself. Prints one
//! QEMU `-device loader,...` argument per line.
//! Exit status 2 with the loader's error (a bad bzImage, RAM too small, ...) on stderr.

use std::path::PathBuf;
use std::process::exit;
use supermachine::internal::arch::x86_64::{boot, mptable};

const PAGE: usize = 4096;

fn die(msg: &str) -> ! {
    eprintln!("kvm-entry: {msg}");
    exit(2)
}

struct Args {
    bzimage: PathBuf,
    initrd: PathBuf,
    cmdline: String,
    mem_mib: usize,
    cpus: u8,
    out: PathBuf,
}

/// The low RAM the stub copies into place; the stub itself lives at STUB_LO..STUB_HI, which the
/// runtime's loader leaves untouched (it uses 0x1000-0x4fff, 0x10000, 0x20000 and 0x9fc00).
const LOW_END: usize = 0xa_0000;
const STUB_LO: usize = 0x5000;
const STUB_HI: usize = 0x8000;

fn parse() -> Args {
    let (mut bzimage, mut initrd, mut cmdline, mut mem, mut cpus, mut out) = (None, None, None, None, 1u8, None);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| die(&format!("{a} needs a value")));
        match a.as_str() {
            "--bzimage" => bzimage = Some(PathBuf::from(v())),
            "--initrd" => initrd = Some(PathBuf::from(v())),
            "--cmdline" => cmdline = Some(v()),
            "--mem-mib" => mem = Some(v().parse().unwrap_or_else(|_| die("--mem-mib takes MiB"))),
            "--cpus" => cpus = v().parse().unwrap_or_else(|_| die("--cpus takes a count")),
            "--out" => out = Some(PathBuf::from(v())),
            _ => die(&format!("unknown argument {a} (see src/main.rs)")),
        }
    }
    Args {
        bzimage: bzimage.unwrap_or_else(|| die("--bzimage is required")),
        initrd: initrd.unwrap_or_else(|| die("--initrd is required")),
        cmdline: cmdline.unwrap_or_else(|| die("--cmdline is required")),
        mem_mib: mem.unwrap_or_else(|| die("--mem-mib is required")),
        cpus,
        out: out.unwrap_or_else(|| die("--out is required")),
    }
}

/// The stub's input block (little-endian; offsets as in stub.S).
fn params(r: &boot::BootRegs) -> Vec<u8> {
    let mut p = vec![0u8; 0x48];
    p[0x00..0x08].copy_from_slice(&r.cr3.to_le_bytes());
    p[0x08..0x10].copy_from_slice(&r.cr4.to_le_bytes());
    p[0x10..0x18].copy_from_slice(&r.efer.to_le_bytes());
    p[0x18..0x20].copy_from_slice(&r.cr0.to_le_bytes());
    // 0x20: the far pointer the stub fills with its own 64-bit label, then CS.
    p[0x24..0x26].copy_from_slice(&r.cs.selector.to_le_bytes());
    p[0x26..0x28].copy_from_slice(&r.ds.selector.to_le_bytes());
    p[0x28..0x30].copy_from_slice(&r.rip.to_le_bytes());
    p[0x30..0x38].copy_from_slice(&r.rsi.to_le_bytes());
    p[0x38..0x3a].copy_from_slice(&r.gdt_limit.to_le_bytes());
    p[0x3a..0x3e].copy_from_slice(&(r.gdt_base as u32).to_le_bytes());
    p[0x40..0x48].copy_from_slice(&r.rflags.to_le_bytes());
    p
}

fn main() {
    let a = parse();
    let read = |p: &PathBuf| std::fs::read(p).unwrap_or_else(|e| die(&format!("{}: {e}", p.display())));
    let (bz, initrd) = (read(&a.bzimage), read(&a.initrd));
    let mut mem = vec![0u8; a.mem_mib << 20];
    let cfg = boot::BootConfig { mem_size: mem.len(), cmdline: &a.cmdline, bzimage: &bz, initrd: Some(&initrd) };
    let regs = boot::setup_boot(&mut mem, &cfg).unwrap_or_else(|e| die(&format!("setup_boot: {e}")));
    mptable::write_mptable(&mut mem, a.cpus).unwrap_or_else(|e| die(&format!("write_mptable: {e:?}")));
    std::fs::create_dir_all(&a.out).unwrap_or_else(|e| die(&format!("{}: {e}", a.out.display())));
    let zero = |r: std::ops::Range<usize>| mem[r].iter().all(|&b| b == 0);
    if !zero(STUB_LO..STUB_HI) || !zero(LOW_END..0x10_0000) {
        die("the runtime's loader wrote where the stub lives (0x5000-0x7fff) or into 640 KiB-1 MiB");
    }
    let stage_len = LOW_END + 0x1000;
    let stage = (1..mem.len() >> 20)
        .map(|mib| mib << 20)
        .find(|&at| at + stage_len <= mem.len() && zero(at..at + stage_len))
        .unwrap_or_else(|| die("no free MiB of guest RAM to stage the low memory in"));
    let file = a.out.join("stage");
    std::fs::write(&file, format!("{stage:#x}\n")).unwrap_or_else(|e| die(&format!("{}: {e}", file.display())));
    let mut low = mem[..LOW_END].to_vec();
    low.extend_from_slice(&params(&regs));
    let file = a.out.join("low.bin");
    std::fs::write(&file, &low).unwrap_or_else(|e| die(&format!("{}: {e}", file.display())));
    println!("loader,file={},addr={:#x},force-raw=on", file.display(), stage);
    let pages = mem.len() / PAGE;
    let nonzero = |i: usize| mem[i * PAGE..(i + 1) * PAGE].iter().any(|&b| b != 0);
    let mut i = 0x10_0000 / PAGE;
    while i < pages {
        if !nonzero(i) {
            i += 1;
            continue;
        }
        let start = i;
        while i < pages && nonzero(i) {
            i += 1;
        }
        let file = a.out.join(format!("ram-{:x}.bin", start * PAGE));
        std::fs::write(&file, &mem[start * PAGE..i * PAGE])
            .unwrap_or_else(|e| die(&format!("{}: {e}", file.display())));
        println!("loader,file={},addr={:#x},force-raw=on", file.display(), start * PAGE);
    }
    eprintln!(
        "kvm-entry: rip={:#x} rsi={:#x} cr3={:#x} cr0={:#x} cr4={:#x} efer={:#x} gdt={:#x}/{} cs={:#x} ds={:#x}",
        regs.rip,
        regs.rsi,
        regs.cr3,
        regs.cr0,
        regs.cr4,
        regs.efer,
        regs.gdt_base,
        regs.gdt_limit,
        regs.cs.selector,
        regs.ds.selector
    );
}
