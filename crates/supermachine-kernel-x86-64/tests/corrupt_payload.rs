//! A damaged `payload/*.xz` (one flipped byte, truncated, a Git LFS pointer) or a manifest
//! that does not match must fail the build with a message that names the file, the expected and
//! the actual hash, and says how to get the right file back.
//!
//! Works on a copy of this crate and the build helper (`target/consumer-tests/corrupt`), built
//! with the shared consumer target dir.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// (name, file, xz_sha256, sha256) per manifest table, read with the build helper's reader.
fn manifest(dir: &Path) -> Vec<(String, String, String, String)> {
    let text = fs::read_to_string(dir.join("payload/manifest.toml")).unwrap();
    supermachine_kernel_build::manifest::parse(&text)
        .unwrap()
        .into_iter()
        .map(|e| {
            let field = |k: &str| e.get(k).unwrap().to_string();
            (e.name.clone(), field("file"), field("xz_sha256"), field("sha256"))
        })
        .collect()
}

#[test]
fn corrupt_truncated_or_lfs_payload_fails_with_hashes_and_a_fix() {
    let repo = repo_root();
    let ws = consumer_tests_dir().join("corrupt");
    if ws.exists() {
        fs::remove_dir_all(&ws).unwrap();
    }
    let crates = ws.join("crates");
    for name in ["supermachine-kernel-build", "supermachine-kernel-x86-64"] {
        copy_tree(&repo.join("crates").join(name), &crates.join(name), &["target", "tests"]);
    }
    // The crates inherit version/edition/… from the workspace: reuse its root manifest (its
    // `crates/*` glob now matches only the two copies) and lock file.
    fs::copy(repo.join("Cargo.toml"), ws.join("Cargo.toml")).unwrap();
    if repo.join("Cargo.lock").is_file() {
        fs::copy(repo.join("Cargo.lock"), ws.join("Cargo.lock")).unwrap();
    }
    let krate = crates.join("supermachine-kernel-x86-64");
    let build = || {
        let mut cmd = cargo(&ws);
        cmd.args(["build", "--release", "--offline", "-p", "supermachine-kernel-x86-64"])
            .env("CARGO_TARGET_DIR", shared_target_dir());
        let (ok, _, err) = run(&mut cmd);
        (ok, err)
    };

    let (ok, err) = build();
    assert!(ok, "the intact copy does not build:\n{err}");

    let entries = manifest(&krate);
    assert!(entries.iter().any(|e| e.0 == "kernel"), "no [kernel] in the manifest");
    let check = |what: &str, file: &Path, expected: &str, actual: &str| {
        let (ok, err) = build();
        assert!(!ok, "{what}: the build succeeded");
        for needle in [&file.display().to_string(), expected, actual, "git checkout", "rebuild it with scripts/"] {
            assert!(err.contains(needle), "{what}: the error does not mention {needle:?}:\n{err}");
        }
    };

    for (name, file, xz_sha, _) in &entries {
        let path = krate.join("payload").join(file);
        let good = fs::read(&path).unwrap();
        assert_eq!(sha256_hex(&good), *xz_sha, "{file}: the repository's copy does not match its manifest");

        // One flipped byte in the middle.
        let mut bad = good.clone();
        bad[good.len() / 2] ^= 0x01;
        fs::write(&path, &bad).unwrap();
        check(&format!("{name}: flipped byte"), &path, xz_sha, &sha256_hex(&bad));

        if name == "kernel" {
            let half = &good[..good.len() / 2];
            fs::write(&path, half).unwrap();
            check("kernel: truncated", &path, xz_sha, &sha256_hex(half));

            let lfs = format!("version https://git-lfs.github.com/spec/v1\noid sha256:{xz_sha}\nsize {}\n", good.len());
            fs::write(&path, &lfs).unwrap();
            check("kernel: Git LFS pointer", &path, xz_sha, &sha256_hex(lfs.as_bytes()));
            let (_, err) = build();
            assert!(err.contains("Git LFS pointer") && err.contains("git lfs pull"), "LFS case not named:\n{err}");
        }
        fs::write(&path, &good).unwrap();
    }

    // An intact .xz whose decoded hash does not match the manifest (e.g. a stale manifest).
    let manifest_path = krate.join("payload/manifest.toml");
    let original = fs::read_to_string(&manifest_path).unwrap();
    let kernel_sha = &entries.iter().find(|e| e.0 == "kernel").unwrap().3;
    let wrong = "0".repeat(64);
    let tampered = original.replacen(&format!("sha256 = \"{kernel_sha}\""), &format!("sha256 = \"{wrong}\""), 1);
    assert_ne!(tampered, original);
    fs::write(&manifest_path, tampered).unwrap();
    let (ok, err) = build();
    assert!(!ok, "a manifest with a wrong decoded sha256 was accepted");
    for needle in [kernel_sha.as_str(), wrong.as_str(), "kernel.xz"] {
        assert!(err.contains(needle), "stale manifest: the error does not mention {needle:?}:\n{err}");
    }
    fs::write(&manifest_path, &original).unwrap();

    let (ok, err) = build();
    assert!(ok, "the restored copy does not build:\n{err}");
    fs::remove_dir_all(&ws).unwrap();
}
