//! `cargo package` works for every publishable crate of the family, offline, and each `.crate`
//! is at most 10 MiB and carries README.md, NOTICE and the three license files.
//!
//! All family crates are packaged in one `cargo package -p … -p …` call: cargo then resolves
//! the `=0.7.70` dependencies between them through a temporary local registry, so the data
//! crates need neither network nor a prior publish. Verification (building each packaged crate)
//! is on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_CRATE_BYTES: u64 = 10 * 1024 * 1024;
const REQUIRED: &[&str] = &["README.md", "NOTICE", "LICENSE-MIT", "LICENSE-APACHE", "LICENSE-GPL-2.0", "Cargo.toml"];

/// `supermachine-kernel*` workspace members under crates/ that are not `publish = false`
/// (a crate folder the workspace excludes, e.g. one still waiting for its payloads, is skipped).
fn family(repo: &Path) -> Vec<(String, String)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let meta = Command::new(cargo)
        .current_dir(repo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .output()
        .unwrap();
    assert!(meta.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&meta.stderr));
    let meta = String::from_utf8_lossy(&meta.stdout).replace("\\", "/");
    let mut out = Vec::new();
    for entry in fs::read_dir(repo.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(manifest) = fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        let member = meta.contains(&format!("\"manifest_path\":\"{}\"", dir.join("Cargo.toml").display()));
        if !member || !name.starts_with("supermachine-kernel") || manifest.lines().any(|l| l.replace(' ', "") == "publish=false") {
            continue;
        }
        let version = if manifest.contains("version.workspace = true") {
            let root = fs::read_to_string(repo.join("Cargo.toml")).unwrap();
            root.split("[workspace.package]").nth(1).unwrap().lines()
                .find_map(|l| l.trim().strip_prefix("version").map(|v| v.trim_start_matches([' ', '=']).trim_matches('"').to_string()))
                .unwrap()
        } else {
            manifest.lines().find_map(|l| l.trim().strip_prefix("version = ").map(|v| v.trim_matches('"').to_string())).unwrap()
        };
        out.push((name, version));
    }
    out.sort();
    out
}

#[test]
fn cargo_package_each_crate_small_and_complete() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let crates = family(&repo);
    for must in ["supermachine-kernel", "supermachine-kernel-build", "supermachine-kernel-x86-64"] {
        assert!(crates.iter().any(|(n, _)| n == must), "{must} is missing from {crates:?}");
    }
    let target: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("consumer-tests/ws/target");
    let pkg_dir = target.join("package");
    for (name, version) in &crates {
        let _ = fs::remove_file(pkg_dir.join(format!("{name}-{version}.crate")));
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&repo)
        .args(["package", "--offline", "--allow-dirty"])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_TERM_COLOR", "never");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SUPERMACHINE_") {
            cmd.env_remove(k);
        }
    }
    for (name, _) in &crates {
        cmd.args(["-p", name]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "cargo package failed:\n{}", String::from_utf8_lossy(&out.stderr));

    let mut report = String::new();
    for (name, version) in &crates {
        let file = pkg_dir.join(format!("{name}-{version}.crate"));
        let size = fs::metadata(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())).len();
        report.push_str(&format!("{name}-{version}.crate: {size} bytes\n"));
        assert!(size <= MAX_CRATE_BYTES, "{}: {size} bytes > 10 MiB", file.display());
        let list = Command::new("tar").arg("tzf").arg(&file).output().unwrap();
        assert!(list.status.success(), "tar tzf {}", file.display());
        let list = String::from_utf8_lossy(&list.stdout);
        let prefix = format!("{name}-{version}/");
        for required in REQUIRED {
            assert!(list.lines().any(|l| l == format!("{prefix}{required}")), "{}: no {required} in:\n{list}", file.display());
        }
        if name.starts_with("supermachine-kernel-") && name != "supermachine-kernel-build" {
            for required in ["payload/manifest.toml", "build.rs"] {
                assert!(list.lines().any(|l| l == format!("{prefix}{required}")), "{}: no {required}", file.display());
            }
            assert!(list.lines().any(|l| l.starts_with(&format!("{prefix}payload/")) && l.ends_with(".xz")), "{}: no payload", file.display());
        }
    }
    eprint!("{report}");
}
