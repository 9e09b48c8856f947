//! The guest side of a microVM, as data: a minimal Linux kernel, a static busybox and the
//! in-VM control agent, for the architecture you build for.
//!
//! This facade re-exports `supermachine-kernel-x86-64` when `target_arch = "x86_64"` and
//! `supermachine-kernel-aarch64` when `target_arch = "aarch64"`; other architectures are a
//! compile error that names the supported ones. It is a drop-in for the
//! published `supermachine-kernel` 0.7.x: same item names, same payload semantics.
//!
//! # Runtime extraction
//!
//! ```no_run
//! // Atomic (temp file + rename), idempotent, safe with many processes at once.
//! let dir = std::env::temp_dir().join("my-vmm");
//! let paths = supermachine_kernel::extract_all_to(&dir)?;
//! supermachine_kernel::extract_kernel_to_with_parents(&dir.join("boot/kernel"))?;
//! // One key for snapshot caches: changes whenever any payload changes.
//! println!("{} files, build id {}", paths.len(), supermachine_kernel::BUILD_ID);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Staging from a build script (e.g. into a macOS `.app` bundle)
//!
//! With `supermachine-kernel` under `[build-dependencies]`, a `build.rs` can write the
//! payloads next to what it builds:
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("guest");
//!     for path in supermachine_kernel::extract_all_to(&out).expect("stage guest payloads") {
//!         println!("cargo:warning=staged {}", path.display());
//!     }
//!     println!("cargo:rustc-env=GUEST_DIR={}", out.display());
//! }
//! ```
//!
//! # A custom kernel through an environment override
//!
//! ```text
//! SUPERMACHINE_KERNEL_PATH=/abs/path/to/bzImage cargo build
//! ```
//!
//! The build script checks the file (a complete bzImage or arm64 Image; a complete, static ELF
//! executable of the right machine for the programs), embeds it instead of the bundled one and
//! re-reads it on every build while the variable is set, so a changed file is never missed; the
//! constants then describe the override:
//!
//! ```
//! // With no override set, this is the bundled, checksummed kernel.
//! assert_eq!(supermachine_kernel::KERNEL_BYTES.len(), supermachine_kernel::KERNEL_LEN);
//! assert_eq!(supermachine_kernel::KERNEL_SHA256.len(), 64);
//! for asset in supermachine_kernel::ASSETS {
//!     println!("{:<20} {:>9} bytes  sha256 {}", asset.name, asset.bytes.len(), &asset.sha256[..16]);
//! }
//! ```
#![no_std]
#![forbid(unsafe_code)]
// The build-script example needs its `fn main`.
#![allow(clippy::needless_doctest_main)]

cfg_if::cfg_if! {
    if #[cfg(target_arch = "x86_64")] {
        pub use supermachine_kernel_x86_64::*;
    } else if #[cfg(target_arch = "aarch64")] {
        pub use supermachine_kernel_aarch64::*;
    } else {
        compile_error!("supermachine-kernel ships guests for target_arch \"x86_64\" (KVM) and \"aarch64\" (HVF on Apple Silicon) only");
    }
}
