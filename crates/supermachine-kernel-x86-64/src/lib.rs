//! x86_64 guest payloads for the [supermachine] microVM runtime.
//!
//! This crate embeds a minimal Linux kernel (a bzImage that boots with the 64-bit boot
//! protocol; the whole agent flow runs in 30 MiB of guest RAM), a static busybox, the in-VM agent
//! (`supermachine-agent`, protocol v5 on vsock port 1028) and `init-oci`, decoded from
//! `payload/*.xz` by the build script and checked against the SHA-256 manifest. Every byte
//! comes from a pinned public source; see the crate's NOTICE and `payload/manifest.toml`.
//!
//! Most users depend on the [`supermachine-kernel`](https://crates.io/crates/supermachine-kernel)
//! facade, which re-exports this crate on x86_64.
//!
//! [supermachine]: https://crates.io/crates/supermachine
//!
//! # Extract the payloads at run time
//!
//! ```no_run
//! use supermachine_kernel_x86_64 as guest;
//!
//! let dir = std::env::temp_dir().join("my-vmm-assets");
//! // Atomic and idempotent: safe with many processes extracting into one folder.
//! let paths = guest::extract_all_to(&dir)?;
//! println!("{} payloads, build id {}", paths.len(), guest::BUILD_ID);
//! guest::extract_kernel_to_with_parents(&dir.join("boot/bzImage"))?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Use the bytes directly
//!
//! ```
//! use supermachine_kernel_x86_64::{KERNEL_BYTES, KERNEL_LEN, KERNEL_CMDLINE};
//! assert_eq!(&KERNEL_BYTES[0x202..0x206], b"HdrS"); // an x86 bzImage
//! assert_eq!(KERNEL_BYTES.len(), KERNEL_LEN);
//! assert!(KERNEL_CMDLINE.contains("console=ttyS0"));
//! ```
//!
//! # Use your own kernel (or busybox, or agent, or init-oci)
//!
//! Set an override when building; the build script validates the file (a complete bzImage for
//! the kernel, a complete, statically linked x86_64 ELF executable for programs) and embeds it
//! instead. While an override is set the file is re-read on every build, so its current
//! content is always what gets embedded:
//!
//! ```text
//! SUPERMACHINE_X86_64_KERNEL_PATH=/abs/path/bzImage cargo build
//! ```
//!
//! Accepted names, highest priority first: `SUPERMACHINE_X86_64_<P>_PATH`, the upstream
//! `SUPERMACHINE_X86_<P>_PATH`, then `SUPERMACHINE_<P>_PATH`, with `<P>` one of `KERNEL`,
//! `BUSYBOX`, `AGENT`, `INIT_OCI`. A relative path is resolved against the root of the workspace being built.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
pub use supermachine_kernel_build::Asset;

include!(concat!(env!("OUT_DIR"), "/payloads.rs"));

/// A kernel command line that works with this kernel under the supermachine KVM backend
/// (ttyS0 console, virtio-mmio devices appended by the VMM). Under QEMU `-M microvm` with TCG,
/// add `tsc_early_khz=<host TSC kHz>` so the guest does not stall calibrating its clock.
pub const KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 reboot=t quiet";

supermachine_kernel_build::extract_fns!(
    extract_kernel_to,
    extract_kernel_to_with_parents,
    KERNEL_BYTES,
    false,
    "kernel (bzImage)"
);
supermachine_kernel_build::extract_fns!(
    extract_busybox_to,
    extract_busybox_to_with_parents,
    BUSYBOX_BYTES,
    true,
    "busybox binary (mode 0755)"
);
supermachine_kernel_build::extract_fns!(
    extract_supermachine_agent_to,
    extract_supermachine_agent_to_with_parents,
    SUPERMACHINE_AGENT_BYTES,
    true,
    "in-VM agent binary (mode 0755)"
);
supermachine_kernel_build::extract_fns!(
    extract_init_oci_to,
    extract_init_oci_to_with_parents,
    INIT_OCI_BYTES,
    true,
    "init-oci binary (mode 0755)"
);

/// Writes every payload into `dir` (created if missing) as `bzImage`, `busybox`, … and
/// returns the paths written. Files that already hold the right bytes are left untouched.
pub fn extract_all_to(dir: &Path) -> io::Result<Vec<PathBuf>> {
    supermachine_kernel_build::extract_all_to(dir, ASSETS)
}
