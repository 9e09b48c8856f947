//! Host side of the guest tests, demo and benchmarks: builds initramfs and rootfs images from
//! the crates' own payload constants and boots them under QEMU with TCG.
//!
//! Not published; the workspace's tests and `scripts/demo.sh` use it.
#![forbid(unsafe_code)]

pub mod cli;
pub mod cpio;
pub mod dtb;
pub mod footprint;
pub mod guest;
pub mod initramfs;
pub mod oci;
pub mod payloads;
pub mod profile;
pub mod qemu;
pub mod rootfs;
pub mod tsi;
pub mod virtiofs;
pub mod vsock;

use std::path::PathBuf;

/// True when running in CI (`CI=true`): missing tools are failures there, not skips. The one
/// CI check of the Rust side (scripts/test.sh makes the same decision for the ignored tests).
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// `tool` on PATH, if it is there.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(tool)).find(|p| p.is_file()))
}

/// For the VM tests. They are `#[ignore = "needs ..."]`, so a plain `cargo test` reports them as
/// ignored instead of as passes that did nothing; scripts/test.sh runs them
/// (`--include-ignored`) where the tools exist and always in CI. Once running, a missing tool
/// is a failure with the fix in the message.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| find_tool(t).is_none()).collect();
    assert!(
        missing.is_empty(),
        "this test needs {} on PATH (scripts/install-prereqs.sh installs them)",
        missing.join(", ")
    );
}

/// Finds `tool` on PATH for the tools (demo, benchmarks). Outside CI a missing tool returns
/// `None` with a message; in CI it panics.
pub fn require_tool(tool: &str) -> Option<PathBuf> {
    let found = find_tool(tool);
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

/// Kernel log lines that mean something went wrong during boot: a WARN or BUG with its trace,
/// an oops, or a page-attribute (CPA) complaint such as a W^X violation. A clean boot has none.
pub fn suspicious_dmesg_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    const MARKS: [&str; 6] = ["WARNING:", "BUG:", "Oops", "Call Trace", "CPA ", "W^X"];
    lines.into_iter().filter(|l| MARKS.iter().any(|m| l.contains(m))).collect()
}
