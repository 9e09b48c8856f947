//! The payload list is defined once, by `Arch::assets()` (the `AssetSpec` table). Everything
//! else that names payloads is checked against it here: each arch crate's manifest tables, its
//! `extract_fns!` lines, its crate docs and Cargo description, and the guest harness.

use crate::build::Arch;
use crate::manifest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A repository file; `None` (after a visible skip, a failure under `CI=true`) where the sibling
/// crates are not there, as in a packaged crate.
fn read(rel: &str) -> Option<String> {
    let text = std::fs::read_to_string(repo().join(rel)).ok();
    if text.is_none() {
        crate::testing::skip(&format!("{rel} is not here (a packaged crate has no sibling crates)"));
    }
    text
}

/// How a crate description names each payload.
fn described_as(name: &str) -> &'static str {
    match name {
        "kernel" => "kernel",
        "busybox" => "busybox",
        "supermachine-agent" => "agent",
        "init-oci" => "init-oci",
        other => panic!("payload {other} is new: say here how the Cargo descriptions name it"),
    }
}

#[test]
fn manifests_list_exactly_the_asset_table() {
    for arch in Arch::ALL {
        let rel = format!("crates/{}/payload/manifest.toml", arch.crate_name());
        let Some(text) = read(&rel) else { continue };
        let tables: BTreeSet<String> = manifest::parse(&text).unwrap().into_iter().map(|e| e.name).collect();
        let assets: BTreeSet<String> = arch.assets().iter().map(|a| a.name.to_string()).collect();
        assert_eq!(tables, assets, "{rel} and Arch::{arch:?}.assets() disagree");
    }
}

#[test]
fn arch_crates_expose_every_asset() {
    for arch in Arch::ALL {
        let rel = format!("crates/{}/src/lib.rs", arch.crate_name());
        let Some(lib) = read(&rel) else { continue };
        let cargo = read(&format!("crates/{}/Cargo.toml", arch.crate_name())).unwrap();
        let description = cargo.lines().find(|l| l.starts_with("description")).unwrap_or("");
        for a in arch.assets() {
            let fn_name = format!("extract_{}_to", a.ident.to_lowercase());
            let line = format!("extract_fns!({fn_name}, {fn_name}_with_parents, {}_BYTES, {},", a.ident, a.executable);
            // Compared without whitespace: rustfmt may break the macro call over lines.
            let squeeze = |t: &str| t.split_whitespace().collect::<String>();
            assert!(squeeze(&lib).contains(&squeeze(&line)), "{rel}: no `{line} ...)` for the {} payload", a.name);
            assert!(lib.contains(&format!("`{}`", a.env_key)), "{rel}: the override docs do not list `{}`", a.env_key);
            assert!(
                description.contains(described_as(a.name)),
                "{}'s Cargo description omits {}",
                arch.crate_name(),
                a.name
            );
        }
    }
}

#[test]
fn guest_harness_takes_every_asset() {
    let Some(text) = read("crates/supermachine-guest-harness/src/payloads.rs") else { return };
    for arch in Arch::ALL {
        let key = match arch {
            Arch::X86_64 => "pub fn x86_64()",
            Arch::Aarch64 => "pub fn aarch64()",
        };
        let body = text.split(key).nth(1).unwrap_or_else(|| panic!("payloads.rs has no `{key}`"));
        let body = body.split("\npub fn").next().unwrap();
        for a in arch.assets() {
            assert!(body.contains(&format!("p::{}_BYTES", a.ident)), "payloads.rs `{key}` does not take {}", a.name);
        }
    }
}

/// The override variable names the docs mention, as written (`SUPERMACHINE_X86_<P>_PATH`,
/// `SUPERMACHINE_{X86_64,AARCH64}_<P>_PATH`, …), each with the file naming it.
fn documented_override_names() -> Vec<(String, String)> {
    let mut files = vec!["README.md".to_string(), "DESIGN.md".to_string(), "TESTING.md".to_string()];
    for dir in ["crates", "docs"] {
        let Ok(entries) = std::fs::read_dir(repo().join(dir)) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            let rel = |f: &str| format!("{dir}/{}/{f}", e.file_name().to_string_lossy());
            if p.is_dir() {
                files.extend([rel("README.md"), rel("src/lib.rs")]);
            } else if p.extension().is_some_and(|x| x == "md") {
                files.push(format!("{dir}/{}", e.file_name().to_string_lossy()));
            }
        }
    }
    let mut names = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(repo().join(&f)) else { continue };
        for (i, _) in text.match_indices("SUPERMACHINE_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_{},<>".contains(*c))
                .collect();
            if name.ends_with("_PATH") {
                names.push((name, f.clone()));
            }
        }
    }
    names
}

/// `SUPERMACHINE_{X86_64,AARCH64}_<P>_PATH` and the like, spelled out.
fn expand(name: &str, keys: &[&str]) -> Vec<String> {
    if let (Some(a), Some(b)) = (name.find('{'), name.find('}')) {
        return name[a + 1..b]
            .split(',')
            .flat_map(|alt| expand(&format!("{}{alt}{}", &name[..a], &name[b + 1..]), keys))
            .collect();
    }
    if name.contains("<P>") {
        return keys.iter().map(|k| name.replace("<P>", k)).collect();
    }
    vec![name.to_string()]
}

/// One list of override names, the build helper's: every name the docs mention is honoured (or
/// is a published name we say we ignore), and every name the helper honours is documented.
#[test]
fn documented_override_names_are_the_honoured_ones() {
    if read("README.md").is_none() {
        return;
    }
    let honoured: BTreeSet<String> =
        Arch::ALL.iter().flat_map(|&a| a.assets().into_iter().flat_map(move |s| s.env_vars(a))).collect();
    let retired: BTreeSet<String> = crate::build::RETIRED_OVERRIDES.iter().map(|(n, _)| n.to_string()).collect();
    let keys: BTreeSet<&str> = Arch::ALL.iter().flat_map(|a| a.assets().into_iter().map(|s| s.env_key)).collect();
    let keys: Vec<&str> = keys.into_iter().collect();
    let mut documented = BTreeSet::new();
    for (name, file) in documented_override_names() {
        for n in expand(&name, &keys) {
            assert!(
                honoured.contains(&n) || retired.contains(&n),
                "{file} mentions {n} (as {name}), which the build helper does not honour (build::Arch::assets)"
            );
            documented.insert(n);
        }
    }
    let undocumented: Vec<_> = honoured.difference(&documented).collect();
    assert!(undocumented.is_empty(), "the build helper honours {undocumented:?}, which no doc mentions");
    for r in &retired {
        assert!(documented.contains(r), "{r} is ignored with a warning but no doc says so");
    }
}
