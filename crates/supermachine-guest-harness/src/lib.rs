//! Host side of the guest tests, demo and benchmarks: builds initramfs and rootfs images from
//! the crates' own payload constants and boots them under QEMU with TCG.
//!
//! Not published; the workspace's tests and `scripts/demo.sh` use it.

pub mod cpio;
pub mod guest;
pub mod initramfs;
pub mod payloads;
pub mod profile;
pub mod oci;
pub mod qemu;
pub mod rootfs;
pub mod vsock;

use std::path::PathBuf;

/// True when running in CI (`CI=true`): missing tools are failures there, not skips.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// Finds `tool` on PATH. Outside CI a missing tool returns `None` so tests can skip with a
/// message; in CI it panics, because the VM tests must run there.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!("{tool} not found on PATH (install it, or run scripts/test.sh which does)");
        if in_ci() {
            panic!("{msg}; CI=true so VM tests may not be skipped");
        }
        eprintln!("SKIP: {msg}");
    }
    found
}

/// The workspace root (for reading config fragments in tests).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}
