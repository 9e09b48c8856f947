//! The webpki-roots rule: committed payloads must match their manifests, and no recipe input
//! (config fragment, pin, script, agent source) may change without the payload being rebuilt.
//! `scripts/lib/payload.py check` does the work; this makes `cargo test` run it.

use std::path::Path;
use std::process::Command;

#[test]
fn payload_manifests_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("scripts/lib/payload.py");
    if !script.exists() {
        return supermachine_kernel_build::testing::skip(
            "scripts/lib/payload.py is not here (a packaged crate ships no recipes)",
        );
    }
    // python3 is a prerequisite of the repository's scripts: missing it is a failure, not a skip.
    let out =
        Command::new("python3").arg(&script).arg("check").current_dir(&root).output().unwrap_or_else(|e| {
            panic!("python3 runs the manifest check (scripts/install-prereqs.sh installs it): {e}")
        });
    assert!(
        out.status.success(),
        "payload manifests are stale or broken:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
