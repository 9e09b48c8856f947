//! Builds the consumer workspace in `tests/consumer-fixtures/consumer` against this crate and the
//! facade, the way a user would, and checks what ends up in the binary:
//!
//! * the build never runs `xz` (a failing fake `xz` first on PATH leaves a marker if called)
//!   and works `--offline`;
//! * each payload is embedded once in a `--release` binary that uses `KERNEL_BYTES` from two
//!   crates (the payloads are `static`s): of 16 windows spread over each payload, unique within
//!   it, the least frequent occurs exactly once in the binary;
//! * every override variable works, in priority order, relative paths resolve against the
//!   consumer's workspace root, and a changed override file triggers a rebuild;
//! * a set override is re-read on every build, so new content is embedded even when its mtime
//!   is older (a repointed symlink, `mv` or `cp -p` of an older file);
//! * every bad override (including a truncated kernel and programs that are not complete,
//!   static executables) fails the build with its own message.
//!
//! Scenarios run in one test, in sequence, in one consumer workspace and target dir
//! (`target/consumer-tests/ws`), so the dependencies are compiled once (and only on the first run).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use supermachine_kernel_build::fixtures::{self, ElfKind};
use supermachine_kernel_x86_64 as guest;

/// An x86_64 ELF stand-in of the given kind.
fn elf_of(kind: ElfKind, tag: &str) -> Vec<u8> {
    fixtures::elf(62, kind, tag)
}

struct Consumer {
    root: PathBuf,
    fake_bin: PathBuf,
    marker: PathBuf,
}

impl Consumer {
    /// A fresh copy of the fixture in `target/consumer-tests/ws` (its `target/` is kept).
    fn setup() -> Consumer {
        let root = consumer_tests_dir().join("ws");
        fs::create_dir_all(&root).unwrap();
        for entry in fs::read_dir(&root).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() != "target" {
                let p = entry.path();
                if p.is_dir() {
                    fs::remove_dir_all(&p).unwrap()
                } else {
                    fs::remove_file(&p).unwrap()
                }
            }
        }
        let repo = repo_root();
        copy_tree(&repo.join("tests/consumer-fixtures/consumer"), &root, &["target"]);
        instantiate_templates(&root, &repo);
        // Same dependency versions as the workspace (already downloaded: `--offline` works).
        if repo.join("Cargo.lock").is_file() {
            fs::copy(repo.join("Cargo.lock"), root.join("Cargo.lock")).unwrap();
        }
        // A fake `xz` (and friends) that fails and leaves a marker: the build must not call it.
        let fake_bin = root.join("fake-bin");
        let marker = root.join("xz-was-called");
        fs::create_dir_all(&fake_bin).unwrap();
        for tool in ["xz", "unxz", "xzcat", "xzdec", "lzma", "unlzma"] {
            let p = fake_bin.join(tool);
            fs::write(&p, format!("#!/bin/sh\necho \"$0 $*\" >> '{}'\nexit 1\n", marker.display())).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        Consumer { root, fake_bin, marker }
    }

    fn path_env(&self) -> std::ffi::OsString {
        let mut paths = vec![self.fake_bin.clone()];
        paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
        std::env::join_paths(paths).unwrap()
    }

    /// `cargo build --release --offline` with the given env vars, from `cwd` (relative to root).
    fn build_in(&self, cwd: &str, env: &[(&str, &Path)]) -> (bool, String) {
        let mut cmd = cargo(&self.root.join(cwd));
        cmd.args(["build", "--release", "--offline", "-p", "consumer-app"])
            .env("CARGO_TARGET_DIR", shared_target_dir())
            .env("PATH", self.path_env());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let (ok, _out, err) = run(&mut cmd);
        assert!(!self.marker.exists(), "the build called xz: {}", fs::read_to_string(&self.marker).unwrap_or_default());
        (ok, err)
    }

    fn build(&self, env: &[(&str, &Path)]) -> (bool, String) {
        self.build_in(".", env)
    }

    fn build_ok(&self, what: &str, env: &[(&str, &Path)]) -> String {
        let (ok, err) = self.build(env);
        assert!(ok, "{what}: the consumer build failed:\n{err}");
        err
    }

    fn build_fails(&self, what: &str, env: &[(&str, &Path)], expect: &[&str]) {
        let (ok, err) = self.build(env);
        assert!(!ok, "{what}: the build succeeded but should have failed");
        for e in expect {
            assert!(err.contains(e), "{what}: the error does not mention {e:?}:\n{err}");
        }
    }

    fn binary(&self) -> PathBuf {
        shared_target_dir().join("release/consumer-app")
    }

    fn run_app(&self) -> String {
        let (ok, out, err) = run(&mut std::process::Command::new(self.binary()));
        assert!(ok, "consumer-app failed: {err}");
        out
    }

    /// (KERNEL_SHA256, KERNEL_LEN) of the last build, checked against the bytes it printed.
    fn kernel(&self) -> (String, usize) {
        let out = self.run_app();
        let len: usize = value(&out, "KERNEL_LEN").parse().unwrap();
        assert_eq!(value(&out, "KERNEL_BYTES_LEN"), format!("{len} {len}"));
        (value(&out, "KERNEL_SHA256").to_string(), len)
    }

    fn assert_kernel_is(&self, what: &str, bytes: &[u8]) {
        assert_eq!(self.kernel(), (sha256_hex(bytes), bytes.len()), "{what}: wrong kernel embedded");
    }
}

fn instantiate_templates(dir: &Path, repo: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            instantiate_templates(&p, repo);
        } else if p.file_name().unwrap() == "Cargo.toml.in" {
            let text = fs::read_to_string(&p).unwrap().replace("@REPO@", &repo.display().to_string());
            fs::write(p.with_file_name("Cargo.toml"), text).unwrap();
            fs::remove_file(&p).unwrap();
        }
    }
}

/// `ASSET name file len sha exec` lines of the app's output.
fn assets_of(out: &str) -> BTreeMap<String, (String, usize, String, bool)> {
    out.lines()
        .filter_map(|l| l.strip_prefix("ASSET "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), (f[1].to_string(), f[2].parse().unwrap(), f[3].to_string(), f[4] == "true"))
        })
        .collect()
}

#[test]
fn consumer_builds_embeds_once_and_honours_overrides() {
    let c = Consumer::setup();
    let kernel_sha = guest::KERNEL_SHA256;

    // 1. Plain build: no xz, offline, release.
    c.build_ok("plain build", &[]);
    let out = c.run_app();
    assert_eq!(value(&out, "KERNEL_SHA256"), kernel_sha);
    assert_eq!(value(&out, "SAME_KERNEL_STATIC"), "true", "KERNEL_BYTES differs between the two crates");
    assert_eq!(value(&out, "SAME_BUSYBOX_STATIC"), "true");
    assert_eq!(value(&out, "BUILD_ID"), guest::BUILD_ID);
    let listed = assets_of(&out);
    assert_eq!(listed.len(), guest::ASSETS.len());
    let total: usize = guest::ASSETS.iter().map(|a| a.bytes.len()).sum();
    assert_eq!(value(&out, "ASSETS_TOTAL_LEN"), total.to_string());
    for a in guest::ASSETS {
        assert_eq!(listed[a.name], (a.file_name.to_string(), a.bytes.len(), a.sha256.to_string(), a.executable));
        assert_eq!(sha256_hex(a.bytes), a.sha256, "{}: ASSETS sha256 does not match its bytes", a.name);
    }

    // 2. Each payload is in the release binary exactly once.
    let bin = fs::read(c.binary()).unwrap();
    for a in guest::ASSETS {
        let counts: Vec<usize> = distinctive_windows(a.bytes, 16).iter().map(|w| count_occurrences(&bin, w)).collect();
        assert!(counts.iter().all(|&c| c >= 1), "{}: payload not in the release binary: {counts:?}", a.name);
        assert_eq!(
            counts.iter().min(),
            Some(&1),
            "{}: 16 distinctive 64-byte windows of the payload occur {counts:?} times in the release binary \
             ({} bytes): embedded more than once",
            a.name,
            bin.len()
        );
    }
    assert!(bin.len() < total + 8 * 1024 * 1024, "release binary {} bytes for {total} bytes of payload", bin.len());

    // The binary's extract_all_to writes every asset with its mode.
    let extract_dir = c.root.join("extracted");
    let (ok, out, err) = run(std::process::Command::new(c.binary()).arg("extract").arg(&extract_dir));
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), guest::ASSETS.len());
    for a in guest::ASSETS {
        let p = extract_dir.join(a.file_name);
        assert_eq!(fs::read(&p).unwrap(), a.bytes, "{}", p.display());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, if a.executable { 0o755 } else { 0o644 }, "{}", p.display());
        }
    }

    // 3. Overrides, each name alone, then in combination (priority order).
    let files = c.root.join("override-files");
    fs::create_dir_all(&files).unwrap();
    let put = |name: &str, bytes: &[u8]| -> PathBuf {
        let p = files.join(name);
        fs::write(&p, bytes).unwrap();
        p
    };
    let k_arch = fake_bzimage("arch-specific SUPERMACHINE_X86_64_KERNEL_PATH");
    let k_up = fake_bzimage("upstream SUPERMACHINE_X86_KERNEL_PATH");
    let k_neutral = fake_bzimage("neutral SUPERMACHINE_KERNEL_PATH");
    let (p_arch, p_up, p_neutral) = (put("k-arch", &k_arch), put("k-up", &k_up), put("k-neutral", &k_neutral));
    const ARCH: &str = "SUPERMACHINE_X86_64_KERNEL_PATH";
    const UP: &str = "SUPERMACHINE_X86_KERNEL_PATH";
    const NEUTRAL: &str = "SUPERMACHINE_KERNEL_PATH";

    let err = c.build_ok(ARCH, &[(ARCH, &p_arch)]);
    assert!(err.contains(ARCH), "no note that the kernel came from {ARCH}:\n{err}");
    c.assert_kernel_is(ARCH, &k_arch);
    c.build_ok(UP, &[(UP, &p_up)]);
    c.assert_kernel_is(UP, &k_up);
    c.build_ok(NEUTRAL, &[(NEUTRAL, &p_neutral)]);
    c.assert_kernel_is(NEUTRAL, &k_neutral);
    c.build_ok("all three", &[(ARCH, &p_arch), (UP, &p_up), (NEUTRAL, &p_neutral)]);
    c.assert_kernel_is("all three set: the arch-specific name wins", &k_arch);
    c.build_ok("upstream + neutral", &[(UP, &p_up), (NEUTRAL, &p_neutral)]);
    c.assert_kernel_is("upstream + neutral: the upstream name wins", &k_up);

    // A relative path is resolved against the consumer's workspace root, even when cargo runs
    // in a member's folder.
    let k_rel = fake_bzimage("relative path");
    fs::write(c.root.join("relative-kernel"), &k_rel).unwrap();
    let (ok, err) = c.build_in("app", &[(NEUTRAL, Path::new("relative-kernel"))]);
    assert!(ok, "relative override:\n{err}");
    assert!(err.contains("relative"), "no note about the relative path:\n{err}");
    c.assert_kernel_is("relative override", &k_rel);

    // A busybox override (an x86_64 ELF) replaces only busybox.
    let bb = fake_elf(62, "busybox override");
    let p_bb = put("busybox-x86_64", &bb);
    c.build_ok("busybox override", &[("SUPERMACHINE_X86_64_BUSYBOX_PATH", &p_bb)]);
    let out = c.run_app();
    let listed = assets_of(&out);
    assert_eq!(listed["busybox"].2, sha256_hex(&bb));
    assert_eq!(listed["kernel"].2, kernel_sha);
    assert_ne!(value(&out, "BUILD_ID"), guest::BUILD_ID, "BUILD_ID ignores an overridden payload");

    // 4. Same override path, new content: cargo must rebuild.
    let changing = files.join("changing-kernel");
    let v1 = fake_bzimage("content v1");
    fs::write(&changing, &v1).unwrap();
    c.build_ok("changing v1", &[(ARCH, &changing)]);
    c.assert_kernel_is("changing v1", &v1);
    std::thread::sleep(std::time::Duration::from_millis(1100)); // coarse mtime filesystems
    let v2 = fake_bzimage("content v2, a bit longer");
    fs::write(&changing, &v2).unwrap();
    c.build_ok("changing v2", &[(ARCH, &changing)]);
    c.assert_kernel_is("changed override file (same path, new content) was not picked up", &v2);

    // 4b. New content whose mtime does not move forward: a symlink repointed at an older file,
    // an older file moved into place, an in-place copy that keeps the old mtime (`cp -p`).
    // cargo's mtime check alone keeps the old kernel (issue 11, item 8); the build script
    // re-hashes a set override on every build, so the new bytes are always embedded.
    let now = SystemTime::now();
    let aged = |p: &Path, secs: u64| {
        let f = fs::OpenOptions::new().write(true).open(p).unwrap();
        f.set_modified(now - Duration::from_secs(secs)).unwrap();
    };
    let (old_a, old_b, old_c) =
        (fake_bzimage("older file A"), fake_bzimage("older file B, longer"), fake_bzimage("older file C"));
    let (p_a, p_b) = (put("old-a", &old_a), put("old-b", &old_b));
    aged(&p_a, 3600);
    aged(&p_b, 7200);
    let link = files.join("kernel-link");
    let _ = fs::remove_file(&link);
    std::os::unix::fs::symlink(&p_a, &link).unwrap();
    c.build_ok("symlink to A", &[(ARCH, &link)]);
    c.assert_kernel_is("symlink to A", &old_a);
    let id_a = value(&c.run_app(), "BUILD_ID").to_string();
    fs::remove_file(&link).unwrap(); // `ln -sf`: a new link, pointing at an older file
    std::os::unix::fs::symlink(&p_b, &link).unwrap();
    c.build_ok("symlink repointed to B", &[(ARCH, &link)]);
    c.assert_kernel_is("symlink repointed at an older file: stale kernel embedded", &old_b);
    assert_ne!(value(&c.run_app(), "BUILD_ID"), id_a, "BUILD_ID did not change with the kernel");

    let moved = files.join("kernel-moved");
    fs::write(&moved, &old_a).unwrap();
    c.build_ok("regular file A", &[(ARCH, &moved)]);
    c.assert_kernel_is("regular file A", &old_a);
    let p_c = put("old-c", &old_c);
    aged(&p_c, 10_800);
    fs::rename(&p_c, &moved).unwrap(); // `mv old-c kernel-moved`
    c.build_ok("older file moved into place", &[(ARCH, &moved)]);
    c.assert_kernel_is("older file moved over the override: stale kernel embedded", &old_c);
    fs::write(&moved, &old_b).unwrap(); // `cp -p old-b kernel-moved`: same inode, older mtime
    aged(&moved, 14_400);
    c.build_ok("in-place copy keeping an old mtime", &[(ARCH, &moved)]);
    c.assert_kernel_is("in-place copy with an older mtime: stale kernel embedded", &old_b);

    // Unsetting every override brings the shipped kernel back.
    c.build_ok("no override", &[]);
    assert_eq!(c.kernel().0, kernel_sha);

    // 5. Bad overrides: each fails the build with its own message.
    let missing = files.join("does-not-exist");
    c.build_fails("missing file", &[(ARCH, &missing)], &[ARCH, "does-not-exist", "No such file"]);
    let empty = put("empty", b"");
    c.build_fails("empty file", &[(ARCH, &empty)], &[ARCH, "the file is empty"]);
    c.build_fails("directory", &[(ARCH, &files)], &[ARCH, "is a directory"]);
    let text = put("not-a-kernel", b"this is not a kernel image, just some text padding it out...");
    c.build_fails("text as kernel", &[(NEUTRAL, &text)], &[NEUTRAL, "HdrS", "bzImage"]);
    let elf_kernel = put("elf-as-kernel", &fake_elf(62, "an ELF is not a bzImage"));
    c.build_fails("ELF as kernel", &[(UP, &elf_kernel)], &[UP, "HdrS"]);
    let mut bz32 = fake_bzimage("no 64-bit entry");
    bz32[0x236] = 0;
    let bz32 = put("bzimage-32", &bz32);
    c.build_fails("32-bit-only bzImage", &[(ARCH, &bz32)], &[ARCH, "64-bit entry"]);
    let lfs = put("lfs-pointer", b"version https://git-lfs.github.com/spec/v1\noid sha256:0000\nsize 1\n");
    c.build_fails("LFS pointer as kernel", &[(ARCH, &lfs)], &[ARCH, "Git LFS pointer"]);
    let arm = put("busybox-aarch64", &fake_elf(183, "aarch64 busybox"));
    c.build_fails(
        "aarch64 ELF as busybox",
        &[("SUPERMACHINE_X86_64_BUSYBOX_PATH", &arm)],
        &["SUPERMACHINE_X86_64_BUSYBOX_PATH", "183 (aarch64)", "62 (x86_64)"],
    );
    c.build_fails(
        "text as busybox",
        &[("SUPERMACHINE_X86_BUSYBOX_PATH", &text)],
        &["SUPERMACHINE_X86_BUSYBOX_PATH", "not an ELF file"],
    );
    c.build_fails(
        "bzImage as busybox",
        &[("SUPERMACHINE_BUSYBOX_PATH", &p_arch)],
        &["SUPERMACHINE_BUSYBOX_PATH", "not an ELF file"],
    );
    // Issue 11, item 8: kernels and programs that would build wrong, each named with a fix.
    let cut = put("bzImage-4k", &guest::KERNEL_BYTES[..4096]);
    c.build_fails(
        "bzImage cut to 4 KiB",
        &[(ARCH, &cut)],
        &[ARCH, "bzImage-4k", "the file has 4096 bytes", "syssize", "fix:", "incomplete"],
    );
    const AGENT: &str = "SUPERMACHINE_X86_64_AGENT_PATH";
    let pie = put("agent-dynamic-pie", &elf_of(ElfKind::DynamicPie, "dynamic PIE agent"));
    c.build_fails(
        "dynamic PIE as agent",
        &[(AGENT, &pie)],
        &[
            AGENT,
            "agent-dynamic-pie",
            "dynamically linked PIE",
            "/lib64/ld-linux-x86-64.so.2",
            "must be statically linked",
            "x86_64-unknown-linux-musl",
            "supermachine-agent payload",
        ],
    );
    let so = put("agent-shared-lib", &elf_of(ElfKind::SharedLibrary, "shared library agent"));
    c.build_fails("shared library as agent", &[(AGENT, &so)], &[AGENT, "agent-shared-lib", "a shared library", "fix:"]);
    let obj = put("agent.o", &elf_of(ElfKind::Relocatable, "object file agent"));
    c.build_fails("relocatable object as agent", &[(AGENT, &obj)], &[AGENT, "agent.o", "relocatable object", "link"]);
    let short = put("agent-64-bytes", &guest::SUPERMACHINE_AGENT_BYTES[..64]);
    c.build_fails(
        "64-byte ELF as agent",
        &[(AGENT, &short)],
        &[AGENT, "agent-64-bytes", "program header table", "past the end of the file (64 bytes)", "incomplete"],
    );
    let half = put("busybox-half", &guest::BUSYBOX_BYTES[..guest::BUSYBOX_BYTES.len() / 2]);
    c.build_fails(
        "half a busybox",
        &[("SUPERMACHINE_BUSYBOX_PATH", &half)],
        &["SUPERMACHINE_BUSYBOX_PATH", "busybox-half", "past the end of the file"],
    );
    let init = put("init-oci-pie", &elf_of(ElfKind::DynamicPie, "dynamic init-oci"));
    c.build_fails(
        "dynamic PIE as init-oci",
        &[("SUPERMACHINE_X86_64_INIT_OCI_PATH", &init)],
        &["SUPERMACHINE_X86_64_INIT_OCI_PATH", "must be statically linked"],
    );
    // A static-pie program is fine.
    let spie = elf_of(ElfKind::StaticPie, "static-pie agent");
    c.build_ok("static-pie agent", &[(AGENT, &put("agent-static-pie", &spie))]);
    assert_eq!(assets_of(&c.run_app())["supermachine-agent"].2, sha256_hex(&spie));

    // Two bad overrides at once: both are reported.
    c.build_fails(
        "two bad overrides",
        &[(ARCH, &empty), ("SUPERMACHINE_X86_64_BUSYBOX_PATH", &arm)],
        &["the file is empty", "183 (aarch64)"],
    );

    // Leave the workspace built with the shipped payloads.
    c.build_ok("final plain build", &[]);
    assert_eq!(c.kernel().0, kernel_sha);
}
