//! 16 processes run `extract_all_to` into one folder at the same moment. Every file must end
//! complete and correct (the `ASSETS` bytes and sha256), programs 0755 and data 0644, with no
//! temp file left, and no process may ever see a partial file after its call returns.
//! The folder starts with the temp files a killed extractor leaves behind
//! (`.bzImage.<pid>.<n>.<nanos>.tmp`, issue 11 item 9): the 16 racing sweepers remove them.
//!
//! The child processes are this test binary itself, re-run with a filter that selects this same
//! test and an environment variable naming the folder, which makes the test play the child.

use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use supermachine_kernel_build::extract::STALE_AFTER;
use supermachine_kernel_x86_64 as guest;

const DIR_VAR: &str = "SMK_TEST_EXTRACT_DIR";
const PROCESSES: usize = 16;
const ROUNDS: usize = 3;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// One child process's part: extract into `dir` [`ROUNDS`] times once the parent says go.
fn child(dir: &Path) {
    // Start together: wait for the parent's go file.
    let go = dir.with_extension("go");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !go.exists() {
        assert!(Instant::now() < deadline, "no go signal");
        std::thread::sleep(Duration::from_millis(1));
    }
    for _ in 0..ROUNDS {
        let paths = guest::extract_all_to(dir).expect("extract_all_to");
        assert_eq!(paths.len(), guest::ASSETS.len());
        for (p, a) in paths.iter().zip(guest::ASSETS) {
            assert_eq!(p, &dir.join(a.file_name));
            // Whatever another process is doing, the file is complete once the call returns.
            let got = fs::read(p).unwrap();
            assert!(got == a.bytes, "{}: {} bytes, expected {}", p.display(), got.len(), a.bytes.len());
        }
    }
}

#[test]
fn sixteen_processes_extract_into_one_folder() {
    if let Some(dir) = std::env::var_os(DIR_VAR) {
        return child(&PathBuf::from(dir)); // this process is one of the sixteen
    }
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("concurrent-extract-{}", std::process::id()));
    let _ = fs::remove_dir_all(&base);
    let dir = base.join("assets");
    fs::create_dir_all(&dir).unwrap();
    // Stale content everywhere (truncated, wrong mode), so every process has to write.
    for a in guest::ASSETS {
        fs::write(dir.join(a.file_name), &a.bytes[..a.bytes.len() / 3]).unwrap();
    }
    // Leftovers of a killed extractor: its PID is gone and it stopped writing a while ago.
    let mut exited = Command::new("true").spawn().unwrap();
    let dead = exited.id();
    exited.wait().unwrap();
    let then = std::time::SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
    for (i, a) in guest::ASSETS.iter().enumerate() {
        let p = dir.join(format!(".{}.{dead}.{i}.1f2e3d.tmp", a.file_name));
        fs::write(&p, &a.bytes[..a.bytes.len() / 2]).unwrap();
        fs::File::options().write(true).open(&p).unwrap().set_modified(then).unwrap();
    }

    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            Command::new(&exe)
                .args(["sixteen_processes_extract_into_one_folder", "--exact", "--nocapture", "--test-threads=1"])
                .env(DIR_VAR, &dir)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    fs::write(dir.with_extension("go"), b"").unwrap();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "process {i} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("1 passed"), "process {i} did not run the child test:\n{text}");
    }

    for a in guest::ASSETS {
        let p = dir.join(a.file_name);
        let bytes = fs::read(&p).unwrap();
        assert_eq!(bytes.len(), a.bytes.len(), "{}: wrong length", p.display());
        assert!(bytes == a.bytes, "{}: wrong content", p.display());
        assert_eq!(sha256_hex(&bytes), a.sha256, "{}: wrong sha256", p.display());
        assert_eq!(mode(&p), if a.executable { 0o755 } else { 0o644 }, "{}: wrong mode", p.display());
    }
    let mut names: Vec<String> =
        fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    let mut want: Vec<String> = guest::ASSETS.iter().map(|a| a.file_name.to_string()).collect();
    want.sort();
    assert_eq!(names, want, "leftover temp files or unexpected entries");
    fs::remove_dir_all(&base).unwrap();
}
