//! Shared helpers of the integration tests that build consumer crates with cargo.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

/// `<workspace target dir>/consumer-tests`: one place for every consumer build of these tests,
/// reused across runs so only the first run compiles the dependencies.
pub fn consumer_tests_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")); // <target>/tmp
    let dir = tmp.parent().expect("target dir").join("consumer-tests");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The target dir every consumer build shares. It sits inside the consumer workspace
/// (`consumer-tests/ws/target`) because the build helper resolves relative override paths
/// against the nearest ancestor of OUT_DIR that holds a Cargo.toml.
pub fn shared_target_dir() -> PathBuf {
    consumer_tests_dir().join("ws").join("target")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A `cargo` command with a clean, hermetic environment: no payload overrides or target-dir
/// settings leak in from the caller's shell.
pub fn cargo(cwd: &Path) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SUPERMACHINE_")
            || k == "CARGO_TARGET_DIR"
            || k == "CARGO_BUILD_TARGET_DIR"
            || k == "CARGO_BUILD_TARGET"
            || k.starts_with("CARGO_PKG_")
            || k == "CARGO_MANIFEST_DIR"
            || k == "CARGO_MANIFEST_PATH"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_CRATE_NAME"
        {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd.env("CARGO_TERM_COLOR", "never");
    cmd
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let Output { status, stdout, stderr } = cmd.output().unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    (status.success(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// Copies a folder tree; symlinks are skipped (the crates' LICENSE links point outside).
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if skip.iter().any(|s| OsStr::new(s) == name) {
            continue;
        }
        let ty = entry.file_type().unwrap();
        let dest = to.join(&name);
        if ty.is_dir() {
            copy_tree(&entry.path(), &dest, skip);
        } else if ty.is_file() {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Positions where `needle` occurs in `hay`.
pub fn count_occurrences(hay: &[u8], needle: &[u8]) -> usize {
    let first = needle[0];
    let mut n = 0;
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1].iter().position(|&b| b == first) {
            None => break,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    n += 1;
                }
                i += 1;
            }
        }
    }
    n
}

/// `n` 64-byte windows spread evenly over `bytes`, each distinctive (many distinct byte values)
/// and occurring in `bytes` exactly once. If a payload is embedded twice, every window occurs at
/// least twice in the binary; one window may also match elsewhere by chance (static binaries
/// share library code), so callers check the *smallest* count. Each window is searched outwards
/// from its evenly spaced base over the whole payload: the uncompressed x86_64 kernel has
/// megabytes of uniform padding (int3 fill, zeros) where no window is distinctive.
pub fn distinctive_windows(bytes: &[u8], n: usize) -> Vec<&[u8]> {
    assert!(bytes.len() >= 4096, "payload too small for windows ({} bytes)", bytes.len());
    (0..n)
        .map(|i| {
            let base = bytes.len() / (n + 1) * (i + 1);
            // Steps of 61 bytes on both sides until both run off the payload.
            for step in 0..=(bytes.len() / 61 + 1) * 2 {
                // base, base+61, base-61, base+122, ...
                let delta = step.div_ceil(2) * 61;
                let Some(off) = (if step % 2 == 0 { base.checked_add(delta) } else { base.checked_sub(delta) }) else {
                    continue;
                };
                if off + 64 > bytes.len() {
                    continue;
                }
                let w = &bytes[off..off + 64];
                let mut seen = [false; 256];
                w.iter().for_each(|&b| seen[b as usize] = true);
                if seen.iter().filter(|&&s| s).count() >= 32 && count_occurrences(bytes, w) == 1 {
                    return w;
                }
            }
            panic!("no distinctive 64-byte window anywhere around offset {base} of {} bytes", bytes.len());
        })
        .collect()
}

/// A small x86 bzImage that passes the build helper's checks (complete setup header, length
/// = setup + syssize × 16, XLF_KERNEL_64), holding `tag` so every fake kernel has its own hash.
pub fn fake_bzimage(tag: &str) -> Vec<u8> {
    supermachine_kernel_build::fixtures::bzimage(tag)
}

/// A small static 64-bit ELF executable for `machine` (62 = x86_64, 183 = aarch64) holding `tag`.
pub fn fake_elf(machine: u16, tag: &str) -> Vec<u8> {
    supermachine_kernel_build::fixtures::elf(machine, supermachine_kernel_build::fixtures::ElfKind::Static, tag)
}

/// Parses `KEY=VALUE` lines of the consumer app's output.
pub fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key}= line in:\n{stdout}"))
}
