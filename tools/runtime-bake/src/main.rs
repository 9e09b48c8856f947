//! Bakes test images with the `supermachine` 0.7.108 runtime's own code, unchanged, so the
//! image conformance test (`scripts/image-test.sh`) reads what users' guests read.
//!
//! ```text
//! runtime-bake kvm --out DIR --kernel FILE --initrd FILE LAYER.tar [LAYER.tar ...]
//!     Image::bake_kvm: the OCI layers, bottom-up, staged with their whiteouts applied and
//!     written as one squashfs by the runtime's writer (backhand): DIR/rootfs.squashfs.
//!     The kernel and initrd are only recorded in DIR/metadata.json.
//! runtime-bake ext4 --out FILE --size BYTES
//!     supermachine::ext4::make_empty_ext4: the runtime's data-volume formatter.
//! ```
//! Exit status 2 with the runtime's error on stderr when a bake fails.

use std::path::PathBuf;
use std::process::exit;

fn die(msg: &str) -> ! {
    eprintln!("runtime-bake: {msg}");
    exit(2)
}

#[derive(Default)]
struct Args {
    out: Option<PathBuf>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    size: Option<u64>,
    layers: Vec<PathBuf>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Args {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| die(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--out" => a.out = Some(value().into()),
            "--kernel" => a.kernel = Some(value().into()),
            "--initrd" => a.initrd = Some(value().into()),
            "--size" => a.size = Some(value().parse().unwrap_or_else(|_| die("--size takes bytes"))),
            s if s.starts_with("--") => die(&format!("unknown option {s} (see src/main.rs)")),
            _ => a.layers.push(arg.into()),
        }
    }
    a
}

fn main() {
    let mut argv = std::env::args().skip(1);
    let cmd = argv.next().unwrap_or_else(|| die("usage: runtime-bake kvm|ext4 ... (see src/main.rs)"));
    let a = parse(argv);
    let out = a.out.unwrap_or_else(|| die("--out is required"));
    match cmd.as_str() {
        "kvm" => {
            let kernel = a.kernel.unwrap_or_else(|| die("kvm: --kernel FILE is required"));
            let initrd = a.initrd.unwrap_or_else(|| die("kvm: --initrd FILE is required"));
            if a.layers.is_empty() {
                die("kvm: give at least one layer tar");
            }
            if let Err(e) = supermachine::Image::bake_kvm(&a.layers, &kernel, &initrd, &out) {
                die(&format!("Image::bake_kvm into {}: {e}", out.display()));
            }
            let squashfs = out.join("rootfs.squashfs");
            if !squashfs.is_file() {
                die(&format!("Image::bake_kvm returned Ok but wrote no {}", squashfs.display()));
            }
            println!("{}", squashfs.display());
        }
        "ext4" => {
            let size = a.size.unwrap_or_else(|| die("ext4: --size BYTES is required"));
            if let Err(e) = supermachine::ext4::make_empty_ext4(&out, size) {
                die(&format!("ext4::make_empty_ext4 {}: {e}", out.display()));
            }
            println!("{}", out.display());
        }
        other => die(&format!("unknown command {other}: kvm or ext4")),
    }
}
