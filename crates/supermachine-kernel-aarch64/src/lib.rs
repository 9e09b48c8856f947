//! aarch64 guest payloads for the [supermachine] microVM runtime (HVF on Apple Silicon).
//!
//! This crate embeds a minimal Linux kernel (an uncompressed arm64 `Image`, as HVF and QEMU
//! load it), a static busybox, the in-VM agent and init-oci, decoded from `payload/*.xz` by the build script and checked
//! against the SHA-256 manifest. Every byte comes from a pinned public source; see NOTICE and
//! `payload/manifest.toml`.
//!
//! Most users depend on the [`supermachine-kernel`](https://crates.io/crates/supermachine-kernel)
//! facade, which re-exports this crate on aarch64.
//!
//! [supermachine]: https://crates.io/crates/supermachine
//!
//! # Extract the payloads at run time
//!
//! ```no_run
//! use supermachine_kernel_aarch64 as guest;
//!
//! let dir = std::env::temp_dir().join("my-vmm-assets");
//! let paths = guest::extract_all_to(&dir)?; // atomic, idempotent, safe in parallel
//! println!("{} payloads, build id {}", paths.len(), guest::BUILD_ID);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Use the bytes directly
//!
//! ```
//! use supermachine_kernel_aarch64::{KERNEL_BYTES, KERNEL_LEN};
//! assert_eq!(&KERNEL_BYTES[0x38..0x3c], b"ARMd"); // an arm64 Image
//! assert_eq!(KERNEL_BYTES.len(), KERNEL_LEN);
//! ```
//!
//! # Use your own kernel
//!
//! ```text
//! SUPERMACHINE_AARCH64_KERNEL_PATH=/abs/path/Image cargo build
//! ```
//!
//! Accepted names, highest priority first: `SUPERMACHINE_AARCH64_<P>_PATH`, then
//! `SUPERMACHINE_<P>_PATH` (the upstream names), with `<P>` one of `KERNEL`,
//! `BUSYBOX`, `AGENT`, `INIT_OCI`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::path::{Path, PathBuf};
pub use supermachine_kernel_build::Asset;

include!(concat!(env!("OUT_DIR"), "/payloads.rs"));

/// A kernel command line that works with this kernel (PL011 console; the VMM declares
/// virtio-mmio devices in the device tree or with `virtio_mmio.device=` tokens).
pub const KERNEL_CMDLINE: &str = "console=ttyAMA0 panic=-1 quiet";

supermachine_kernel_build::extract_fns!(
    extract_kernel_to,
    extract_kernel_to_with_parents,
    KERNEL_BYTES,
    false,
    "kernel (arm64 Image)"
);
supermachine_kernel_build::extract_fns!(
    extract_busybox_to,
    extract_busybox_to_with_parents,
    BUSYBOX_BYTES,
    true,
    "busybox binary (mode 0755)"
);
supermachine_kernel_build::extract_fns!(
    extract_init_oci_to,
    extract_init_oci_to_with_parents,
    INIT_OCI_BYTES,
    true,
    "init-oci binary (mode 0755)"
);
supermachine_kernel_build::extract_fns!(
    extract_supermachine_agent_to,
    extract_supermachine_agent_to_with_parents,
    SUPERMACHINE_AGENT_BYTES,
    true,
    "in-VM agent binary (mode 0755)"
);

/// Upstream shipped `smpark.ko`, a kernel module that parked secondary vCPUs before a
/// snapshot. This kernel has no modules: the agent's `smpark_park` / `smpark_unpark` take the
/// secondary vCPUs offline and online through CPU hotplug instead. Kept, empty, so code written
/// for 0.7.x compiles; our init-oci loads no modules, so a staged `/supermachine-smpark.ko` is
/// ignored.
pub static SMPARK_KO_BYTES: &[u8] = &[];
/// Length of [`SMPARK_KO_BYTES`] (0).
pub const SMPARK_KO_LEN: usize = 0;
supermachine_kernel_build::extract_fns!(
    extract_smpark_ko_to,
    extract_smpark_ko_to_with_parents,
    SMPARK_KO_BYTES,
    false,
    "(empty) smpark.ko placeholder, see [`SMPARK_KO_BYTES`]"
);

/// Deprecated upstream name of [`extract_kernel_to`].
#[deprecated(note = "use extract_kernel_to")]
pub fn extract_to(path: &Path) -> io::Result<()> {
    extract_kernel_to(path)
}

/// Deprecated upstream name of [`extract_kernel_to_with_parents`].
#[deprecated(note = "use extract_kernel_to_with_parents")]
pub fn extract_to_with_parents(path: &Path) -> io::Result<()> {
    extract_kernel_to_with_parents(path)
}

/// Writes every payload into `dir` (created if missing) as `Image`, `busybox`, … and returns
/// the paths written. Files that already hold the right bytes are left untouched.
pub fn extract_all_to(dir: &Path) -> io::Result<Vec<PathBuf>> {
    supermachine_kernel_build::extract_all_to(dir, ASSETS)
}
