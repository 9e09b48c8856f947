//! The guest side of a microVM, as data: a minimal Linux kernel, a static busybox and the
//! in-VM control agent, for the architecture you build for.
//!
//! This facade re-exports `supermachine-kernel-x86-64` when `target_arch = "x86_64"`; other
//! architectures are a compile error that names the supported ones. It is a drop-in for the
//! published `supermachine-kernel` 0.7.x: same item names, same payload semantics.
//!
//! ```
//! // The kernel for this host's arch, ready to hand to a VMM.
//! let kernel: &[u8] = supermachine_kernel::KERNEL_BYTES;
//! assert_eq!(kernel.len(), supermachine_kernel::KERNEL_LEN);
//! for asset in supermachine_kernel::ASSETS {
//!     println!("{:<20} {:>9} bytes  sha256 {}", asset.name, asset.bytes.len(), &asset.sha256[..16]);
//! }
//! ```
#![no_std]
#![forbid(unsafe_code)]

cfg_if::cfg_if! {
    if #[cfg(target_arch = "x86_64")] {
        pub use supermachine_kernel_x86_64::*;
    } else {
        compile_error!("supermachine-kernel supports target_arch \"x86_64\" (KVM) only; the aarch64 (HVF) payloads are in progress");
    }
}
