//! The build-script half: decode, verify, override, generate.
//!
//! An arch crate's `build.rs` is one line:
//!
//! ```no_run
//! supermachine_kernel_build::build::main(supermachine_kernel_build::build::Arch::X86_64);
//! ```

use crate::format::{self, Format, EM_AARCH64, EM_X86_64};
use crate::manifest::{self, Entry};
use sha2::{Digest, Sha256};
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The guest architectures the family ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `supermachine-kernel-x86-64`: KVM on x86_64 Linux hosts.
    X86_64,
    /// `supermachine-kernel-aarch64`: HVF on Apple Silicon.
    Aarch64,
}

impl Arch {
    /// Every architecture, one arch crate each.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The arch crate's package name (its folder under `crates/`).
    pub fn crate_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "supermachine-kernel-x86-64",
            Arch::Aarch64 => "supermachine-kernel-aarch64",
        }
    }

    fn env_tag(self) -> &'static str {
        match self {
            Arch::X86_64 => "X86_64",
            Arch::Aarch64 => "AARCH64",
        }
    }
    fn elf(self) -> Format {
        Format::Elf(match self {
            Arch::X86_64 => EM_X86_64,
            Arch::Aarch64 => EM_AARCH64,
        })
    }
    fn rebuild_script(self) -> &'static str {
        match self {
            Arch::X86_64 => "scripts/kvm-x86_64-build.sh",
            Arch::Aarch64 => "scripts/hvf-aarch64-build.sh",
        }
    }

    /// The payloads this arch's crate embeds, in `ASSETS` order: the one list of payloads.
    /// `tests/payload_list.rs` checks the manifests, the arch crates' `extract_fns!` lines and
    /// docs, and the guest harness against it (`src/payload_list_tests.rs`).
    pub fn assets(self) -> Vec<AssetSpec> {
        let elf = self.elf();
        match self {
            Arch::X86_64 => vec![
                AssetSpec::new("kernel", "KERNEL", "bzImage", "KERNEL", Format::BzImage, false)
                    .upstream(&["SUPERMACHINE_X86_KERNEL_PATH"]),
                AssetSpec::new("busybox", "BUSYBOX", "busybox", "BUSYBOX", elf, true)
                    .upstream(&["SUPERMACHINE_X86_BUSYBOX_PATH"]),
                AssetSpec::new("supermachine-agent", "SUPERMACHINE_AGENT", "supermachine-agent", "AGENT", elf, true)
                    .upstream(&["SUPERMACHINE_X86_AGENT_PATH"]),
                // The published x86_64 crate ships no init-oci; the name follows its pattern,
                // which the docs promise for every payload.
                AssetSpec::new("init-oci", "INIT_OCI", "init-oci", "INIT_OCI", elf, true)
                    .upstream(&["SUPERMACHINE_X86_INIT_OCI_PATH"]),
            ],
            Arch::Aarch64 => vec![
                AssetSpec::new("kernel", "KERNEL", "Image", "KERNEL", Format::Arm64Image, false),
                AssetSpec::new("busybox", "BUSYBOX", "busybox", "BUSYBOX", elf, true),
                AssetSpec::new("supermachine-agent", "SUPERMACHINE_AGENT", "supermachine-agent", "AGENT", elf, true),
                AssetSpec::new("init-oci", "INIT_OCI", "init-oci", "INIT_OCI", elf, true),
            ],
        }
    }
}

/// How one payload is found, checked and named.
#[derive(Debug, Clone)]
pub struct AssetSpec {
    /// Manifest table name and `Asset::name`.
    pub name: &'static str,
    /// Prefix of the generated constants (`KERNEL` → `KERNEL_BYTES`, `KERNEL_LEN`, …).
    pub ident: &'static str,
    /// File name used by `extract_all_to`.
    pub file_name: &'static str,
    /// Override key: `SUPERMACHINE_<ARCH>_<key>_PATH` and `SUPERMACHINE_<key>_PATH`.
    pub env_key: &'static str,
    /// Older variable names still honoured (after the arch-specific one).
    pub upstream_env: &'static [&'static str],
    /// Expected format of the decoded bytes.
    pub format: Format,
    /// Extracted with mode 0755.
    pub executable: bool,
}

impl AssetSpec {
    fn new(
        name: &'static str,
        ident: &'static str,
        file_name: &'static str,
        env_key: &'static str,
        format: Format,
        executable: bool,
    ) -> Self {
        AssetSpec { name, ident, file_name, env_key, upstream_env: &[], format, executable }
    }
    fn upstream(mut self, names: &'static [&'static str]) -> Self {
        self.upstream_env = names;
        self
    }
    /// Override variables, highest priority first.
    pub fn env_vars(&self, arch: Arch) -> Vec<String> {
        let mut v = vec![format!("SUPERMACHINE_{}_{}_PATH", arch.env_tag(), self.env_key)];
        v.extend(self.upstream_env.iter().map(|s| s.to_string()));
        let neutral = format!("SUPERMACHINE_{}_PATH", self.env_key);
        if !v.contains(&neutral) {
            v.push(neutral);
        }
        v
    }
}

/// The result of preparing one payload in OUT_DIR.
struct Prepared {
    spec: AssetSpec,
    out_path: PathBuf,
    len: u64,
    sha256: String,
    /// `Some(var)` when the bytes came from an override.
    overridden_by: Option<String>,
}

/// Entry point for an arch crate's build.rs: prints a readable error and exits on failure.
pub fn main(arch: Arch) {
    if let Err(msg) = run(arch) {
        eprintln!("\nerror: supermachine-kernel payload build failed\n\n{msg}\n");
        std::process::exit(1);
    }
}

/// Decodes, verifies and stages every payload, then writes `OUT_DIR/payloads.rs`.
pub fn run(arch: Arch) -> Result<(), String> {
    let crate_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);
    let payload_dir = crate_dir.join("payload");
    let manifest_path = payload_dir.join("manifest.toml");
    println!("cargo:rerun-if-changed={}", manifest_path.display());
    let manifest_text = fs::read_to_string(&manifest_path)
        .map_err(|e| format!("cannot read the payload manifest {}: {e}", manifest_path.display()))?;
    let entries = manifest::parse(&manifest_text).map_err(|e| format!("{}: {e}", manifest_path.display()))?;

    warn_retired_overrides();
    let specs = arch.assets();
    let jobs: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            let entry = entries.iter().find(|e| e.name == spec.name).cloned();
            (spec, entry)
        })
        .collect();
    // Decoding is CPU-bound (the kernel is the big one): one thread per payload.
    let results: Vec<Result<Prepared, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(spec, entry)| {
                let (payload_dir, out_dir, manifest_path) = (&payload_dir, &out_dir, &manifest_path);
                s.spawn(move || prepare(arch, spec, entry, payload_dir, manifest_path, out_dir))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("payload thread panicked".into()))).collect()
    });
    let mut prepared = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(p) => prepared.push(p),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n\n"));
    }
    let kernel_entry = entries.iter().find(|e| e.name == "kernel");
    let code = generate(&prepared, kernel_entry, &payload_dir, &out_dir)?;
    write_file_atomic(&out_dir.join("payloads.rs"), code.as_bytes())
}

/// Override names the published crates honour for payloads we do not ship: set, they would be
/// silently ignored, so the build says so.
pub const RETIRED_OVERRIDES: [(&str, &str); 1] =
    [("SUPERMACHINE_SMPARK_PATH", "smpark is built into the aarch64 kernel (there are no modules to load)")];

fn warn_retired_overrides() {
    for (var, why) in RETIRED_OVERRIDES {
        println!("cargo:rerun-if-env-changed={var}");
        if env::var_os(var).is_some() {
            println!("cargo:warning={var} is set but ignored: {why}");
        }
    }
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set: this helper runs inside a cargo build script"))
}

fn prepare(
    arch: Arch,
    spec: AssetSpec,
    entry: Option<Entry>,
    payload_dir: &Path,
    manifest: &Path,
    out_dir: &Path,
) -> Result<Prepared, String> {
    let out_path = out_dir.join(format!("{}.bin", spec.name));
    for var in spec.env_vars(arch) {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some((var, path)) = find_override(arch, &spec)? {
        rerun_on_every_build(out_dir, &path);
        // Read once: the bytes checked are the bytes hashed and embedded.
        let bytes = fs::read(&path).map_err(|e| format!("{var}={}: cannot read the override: {e}", path.display()))?;
        spec.format.check(&bytes).map_err(|why| {
            format!(
                "{var}={}: {why}\n  expected {} for the {} payload\n  fix: {}, or unset {var} to embed \
                     the shipped {}",
                path.display(),
                spec.format.describe(),
                spec.name,
                why.fix(spec.format),
                spec.name
            )
        })?;
        // Rewritten only when the content differs, so an unchanged override leaves the
        // generated files (and their mtimes) alone.
        write_file_atomic(&out_path, &bytes)?;
        println!("cargo:warning=using {} from {var}={}", spec.name, path.display());
        return Ok(Prepared {
            len: bytes.len() as u64,
            sha256: hex(&Sha256::digest(&bytes)),
            spec,
            out_path,
            overridden_by: Some(var),
        });
    }

    let rebuild = arch.rebuild_script();
    let entry = entry.ok_or_else(|| {
        format!(
            "{}: no [{}] table; the crate's payloads are incomplete (rebuild with {rebuild})",
            manifest.display(),
            spec.name
        )
    })?;
    let field = |k: &str| entry.get(k).map_err(|e| format!("{}: {e}", manifest.display()));
    let xz_path = payload_dir.join(field("file")?);
    println!("cargo:rerun-if-changed={}", xz_path.display());
    let recipe = entry.get("recipe").unwrap_or(rebuild).to_string();
    let how = |what: String| {
        format!(
            "{}: {what}\n  the payload is corrupt or does not match {}\n  fix: restore it from git \
         (`git checkout -- {}`, `git lfs pull` if it is a pointer) or rebuild it with {recipe}, or point \
         {} at a file of your own",
            xz_path.display(),
            manifest.display(),
            xz_path.display(),
            spec.env_vars(arch)[0]
        )
    };

    let compressed = fs::read(&xz_path).map_err(|e| format!("{}: cannot read: {e}", xz_path.display()))?;
    let want_xz = field("xz_sha256")?;
    let got_xz = hex(&Sha256::digest(&compressed));
    if got_xz != want_xz {
        let lfs = if compressed.starts_with(b"version https://git-lfs") {
            "this is a Git LFS pointer, not the payload; "
        } else {
            ""
        };
        return Err(how(format!(
            "{lfs}sha256 of the .xz is {got_xz}, expected {want_xz} ({} bytes read)",
            compressed.len()
        )));
    }
    let (len, sha) = decode_xz_to(&compressed, &out_path).map_err(|e| how(format!("xz decode failed: {e}")))?;
    let want_sha = field("sha256")?;
    if sha != want_sha || len.to_string() != field("size")? {
        let _ = fs::remove_file(&out_path);
        return Err(how(format!("decoded sha256 {sha} ({len} bytes), expected {want_sha} ({} bytes)", field("size")?)));
    }
    Ok(Prepared { spec, out_path, len, sha256: sha, overridden_by: None })
}

/// A path in OUT_DIR that never exists: cargo reruns a build script whose `rerun-if-changed`
/// path is missing, on every build.
const ALWAYS_RERUN: &str = "override-set.rerun-every-build.never-created";

/// Makes cargo rerun this build script on every build while an override is set.
///
/// cargo decides by mtime alone, and an override can change content without a newer mtime:
/// a symlink repointed at an older file, `mv` or `cp -p` of an older file into place. So the
/// script runs each time, re-reads and re-hashes the file, and rewrites OUT_DIR only when the
/// bytes differ: a stale embed cannot happen. (The price: the arch crate and its dependents
/// are recompiled on each build while an override is set, as cargo does after any rerun.)
fn rerun_on_every_build(out_dir: &Path, override_path: &Path) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let marker = out_dir.join(ALWAYS_RERUN);
        let _ = fs::remove_file(&marker);
        println!("cargo:rerun-if-changed={}", marker.display());
    });
    println!("cargo:rerun-if-changed={}", override_path.display());
}

/// The first override variable that is set, resolved to an absolute, existing, non-empty file.
fn find_override(arch: Arch, spec: &AssetSpec) -> Result<Option<(String, PathBuf)>, String> {
    for var in spec.env_vars(arch) {
        let Some(value) = env::var_os(&var) else { continue };
        if value.is_empty() {
            continue; // `VAR=` means unset, as in a shell.
        }
        let raw = PathBuf::from(&value);
        let path = if raw.is_absolute() {
            raw
        } else {
            let base = consumer_root().ok_or_else(|| {
                format!(
                    "{var}={}: a relative path, and the consuming workspace could not be found from \
                 OUT_DIR; use an absolute path",
                    raw.display()
                )
            })?;
            let abs = base.join(&raw);
            println!(
                "cargo:warning={var}={} is relative: resolved against the workspace root {} → {}",
                raw.display(),
                base.display(),
                abs.display()
            );
            abs
        };
        let meta = fs::metadata(&path).map_err(|e| {
            format!(
                "{var}={}: {e}\n  expected a path to {} for the {} payload",
                path.display(),
                spec.format.describe(),
                spec.name
            )
        })?;
        if meta.is_dir() {
            return Err(format!(
                "{var}={}: is a directory; expected a file ({})",
                path.display(),
                spec.format.describe()
            ));
        }
        if meta.len() == 0 {
            return Err(format!("{var}={}: the file is empty; expected {}", path.display(), spec.format.describe()));
        }
        return Ok(Some((var, path)));
    }
    Ok(None)
}

/// The folder of the workspace being built: the nearest ancestor of OUT_DIR with a Cargo.toml
/// (OUT_DIR is `<root>/target/<profile>/build/<pkg>/out` unless CARGO_TARGET_DIR moves it).
fn consumer_root() -> Option<PathBuf> {
    let out = PathBuf::from(env::var_os("OUT_DIR")?);
    out.ancestors().skip(1).find(|d| d.join("Cargo.toml").is_file()).map(Path::to_path_buf)
}

/// Streams the xz data into `out` (temp + rename), returning the decoded length and sha256.
fn decode_xz_to(compressed: &[u8], out: &Path) -> io::Result<(u64, String)> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let name = out.file_name().unwrap_or(std::ffi::OsStr::new("payload"));
    let mut tmp = crate::extract::TempFile::new_in(dir, name)?;
    let mut decoder = xz2::read::XzDecoder::new(compressed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = decoder.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        tmp.file().write_all(&buf[..n])?;
        len += n as u64;
    }
    tmp.persist(out)?;
    Ok((len, hex(&hasher.finalize())))
}

fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    crate::extract::write_atomic(path, bytes, false).map_err(|e| format!("writing {}: {e}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn generate(
    prepared: &[Prepared],
    kernel_entry: Option<&Entry>,
    payload_dir: &Path,
    out_dir: &Path,
) -> Result<String, String> {
    let mut code = String::from("// @generated by supermachine-kernel-build. Do not edit.\n\n");
    let mut id = Sha256::new();
    for p in prepared {
        let s = &p.spec;
        let origin = match &p.overridden_by {
            Some(var) => format!("Overridden at build time by `{var}`."),
            None => "Decoded from the crate's `payload/` at build time; SHA-256 checked against its manifest.".into(),
        };
        let _ = write!(
            code,
            "/// The {name} payload ({len} bytes). {origin}\n\
             ///\n/// A `static`, so every crate that uses it shares one embedded copy.\n\
             pub static {id}_BYTES: &[u8] = include_bytes!({path:?});\n\
             /// Length of [`{id}_BYTES`].\npub const {id}_LEN: usize = {len};\n\
             /// Lowercase hex SHA-256 of [`{id}_BYTES`].\npub const {id}_SHA256: &str = {sha:?};\n\n",
            name = s.name,
            len = p.len,
            id = s.ident,
            path = p.out_path.display().to_string(),
            sha = p.sha256
        );
        id.update(s.name.as_bytes());
        id.update(b"\0");
        id.update(p.sha256.as_bytes());
        id.update(b"\n");
    }
    let _ = write!(
        code,
        "/// SHA-256 over every payload's name and hash: one key for snapshot caches.\n\
         pub const BUILD_ID: &str = {:?};\n\n",
        hex(&id.finalize())
    );

    // Kernel metadata: from the image itself when possible, so overrides stay truthful.
    let kernel = prepared.iter().find(|p| p.spec.name == "kernel").ok_or("no kernel payload")?;
    let version = if kernel.spec.format == Format::BzImage {
        fs::read(&kernel.out_path).ok().and_then(|b| format::bzimage_version(&b))
    } else {
        None
    }
    .or_else(|| {
        kernel_entry.filter(|_| kernel.overridden_by.is_none()).and_then(|e| e.fields.get("kernel_release").cloned())
    })
    .unwrap_or_default();
    let _ = write!(
        code,
        "/// The kernel's version string (empty if unknown, e.g. for an overridden arm64 Image).\n\
         pub const KERNEL_VERSION: &str = {version:?};\n\n"
    );
    let config_src = payload_dir.join("kernel.config");
    let config_out = out_dir.join("kernel.config");
    let config = if kernel.overridden_by.is_none() {
        println!("cargo:rerun-if-changed={}", config_src.display());
        fs::read(&config_src).map_err(|e| format!("{}: {e}", config_src.display()))?
    } else {
        Vec::new()
    };
    write_file_atomic(&config_out, &config)?;
    let _ = write!(
        code,
        "/// The kernel's `.config` (empty when the kernel was overridden).\n\
         pub const KERNEL_CONFIG: &str = include_str!({:?});\n\n",
        config_out.display().to_string()
    );

    code.push_str(
        "/// Every embedded payload, for [`extract_all_to`] and inspection.\npub static ASSETS: &[Asset] = &[\n",
    );
    for p in prepared {
        let s = &p.spec;
        let _ = writeln!(
            code,
            "    Asset {{ name: {:?}, file_name: {:?}, bytes: {}_BYTES, sha256: {}_SHA256, executable: {} }},",
            s.name, s.file_name, s.ident, s.ident, s.executable
        );
    }
    code.push_str("];\n");
    Ok(code)
}
