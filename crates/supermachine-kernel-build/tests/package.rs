//! `cargo package` works for every publishable crate of the family, offline, and each `.crate`
//! is at most 10 MiB (crates.io's cap; an arch data crate at most 5 MB, the family's size
//! budget) and carries README.md, NOTICE and the three license files.
//!
//! All family crates are packaged in one `cargo package -p … -p …` call: cargo then resolves
//! the `=0.7.70` dependencies between them through a temporary local registry, so the data
//! crates need neither network nor a prior publish. Verification (building each packaged crate)
//! is on, in a fresh target dir (see below), so this test costs a cold build of the crates'
//! dependencies.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const MAX_CRATE_BYTES: u64 = 10 * 1024 * 1024;
/// The size budget of an arch data crate (issue 14; decimal MB, as the budgets are stated).
/// A payload change that breaks it must come with a decision, not slip in.
const MAX_DATA_CRATE_BYTES: u64 = 5_000_000;
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
        if !member
            || !name.starts_with("supermachine-kernel")
            || manifest.lines().any(|l| l.replace(' ', "") == "publish=false")
        {
            continue;
        }
        let version = if manifest.contains("version.workspace = true") {
            let root = fs::read_to_string(repo.join("Cargo.toml")).unwrap();
            root.split("[workspace.package]")
                .nth(1)
                .unwrap()
                .lines()
                .find_map(|l| {
                    l.trim()
                        .strip_prefix("version")
                        .map(|v| v.trim_start_matches([' ', '=']).trim_matches('"').to_string())
                })
                .unwrap()
        } else {
            manifest
                .lines()
                .find_map(|l| l.trim().strip_prefix("version = ").map(|v| v.trim_matches('"').to_string()))
                .unwrap()
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
    // A fresh target dir per run. Verification builds each packaged crate against its siblings
    // unpacked from a temporary registry at `<target>/package/tmp-registry`; cargo unpacks that
    // registry under $CARGO_HOME/registry/src/<hash of its path>/ and never re-unpacks or
    // rebuilds a registry crate of the same name and version, so a reused target dir would
    // verify stale sources. The unpacked copies made by this run are removed at the end.
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let target: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join(format!("consumer-tests/package-{}-{stamp}", std::process::id()));
    let pkg_dir = target.join("package");
    let unpack_root = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .map(|h| h.join("registry/src"));
    let listing = |root: &Option<PathBuf>| -> Vec<PathBuf> {
        root.as_ref()
            .and_then(|r| fs::read_dir(r).ok())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    };
    let before = listing(&unpack_root);

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
    // Remove what this run unpacked: folders that are new and hold only our crates.
    for dir in listing(&unpack_root).into_iter().filter(|d| !before.contains(d)) {
        let ours = fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()).all(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    crates.iter().any(|(c, v)| n == format!("{c}-{v}"))
                })
            })
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_dir_all(&dir);
        }
    }
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
            assert!(
                list.lines().any(|l| l == format!("{prefix}{required}")),
                "{}: no {required} in:\n{list}",
                file.display()
            );
        }
        if name.starts_with("supermachine-kernel-") && name != "supermachine-kernel-build" {
            for required in ["payload/manifest.toml", "build.rs"] {
                assert!(list.lines().any(|l| l == format!("{prefix}{required}")), "{}: no {required}", file.display());
            }
            assert!(
                list.lines().any(|l| l.starts_with(&format!("{prefix}payload/")) && l.ends_with(".xz")),
                "{}: no payload",
                file.display()
            );
            assert!(
                size <= MAX_DATA_CRATE_BYTES,
                "{}: {size} bytes, over the 5 MB budget of an arch data crate (docs/KERNEL.md, Size)",
                file.display()
            );
        }
    }
    eprint!("{report}");
    let _ = fs::remove_dir_all(&target);
}
