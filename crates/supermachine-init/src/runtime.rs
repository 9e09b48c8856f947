//! The published `supermachine` runtime's contract (0.7.108, HVF): the files its bake writes into
//! the image's top ("delta") layer, and the env JSON it serves on vsock port 1026.
//! docs/INIT-OCI.md ("The supermachine runtime's delta layer") has the formats and precedence.

use crate::config::ImageConfig;

/// argv, one per line (the runtime's resolved Entrypoint ++ Cmd). Its presence switches on
/// runtime mode.
pub const CMD_FILE: &str = "/.supermachine-cmd";
/// WorkingDir, one line (absent when it is `/`).
pub const WORKDIR_FILE: &str = "/.supermachine-workdir";
/// User spec, one line (`uid`, `name`, `uid:gid`, `name:group`).
pub const USER_FILE: &str = "/.supermachine-user";
/// Hostname, one line.
pub const HOSTNAME_FILE: &str = "/.supermachine-hostname";
/// Volume guest paths, one per line; volume i is the i-th of the last N `/dev/vd?` devices.
pub const VOLUMES_FILE: &str = "/.supermachine-volumes";
/// virtio-fs binds, `TAG\tGUEST_PATH` per line.
pub const VIRTIOFS_FILE: &str = "/.supermachine-virtiofs-binds";
/// Where the runtime's delta layer puts the agent.
pub const AGENT_PATH: &str = "/supermachine-agent";
/// Host vsock port that serves `{"env":{..},"secrets":{..}}`.
pub const ENV_PORT: u32 = 1026;

/// The delta-layer files found in the image (each `None` when the file is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaFiles {
    /// `/.supermachine-cmd`: `Some` (possibly empty) when the file exists.
    pub cmd: Option<Vec<String>>,
    /// `/.supermachine-workdir`.
    pub workdir: Option<String>,
    /// `/.supermachine-user`.
    pub user: Option<String>,
    /// `/.supermachine-hostname`.
    pub hostname: Option<String>,
    /// `/.supermachine-volumes`.
    pub volumes: Vec<String>,
    /// `/.supermachine-virtiofs-binds`: (tag, guest path).
    pub virtiofs: Vec<(String, String)>,
}

impl DeltaFiles {
    /// Reads the files through `read` (path inside the image → contents, `None` if absent).
    pub fn load(mut read: impl FnMut(&str) -> Option<String>) -> Result<DeltaFiles, String> {
        let mut d = DeltaFiles { cmd: read(CMD_FILE).map(|t| parse_cmd(&t)), ..DeltaFiles::default() };
        if let Some(t) = read(WORKDIR_FILE) {
            d.workdir = one_line(&t);
            if let Some(w) = &d.workdir {
                if !w.starts_with('/') {
                    return Err(format!("{WORKDIR_FILE}: {w:?} is not an absolute path"));
                }
            }
        }
        d.user = read(USER_FILE).and_then(|t| one_line(&t));
        d.hostname = read(HOSTNAME_FILE).and_then(|t| one_line(&t));
        if let Some(t) = read(VOLUMES_FILE) {
            d.volumes = parse_volumes(&t)?;
        }
        if let Some(t) = read(VIRTIOFS_FILE) {
            d.virtiofs = parse_virtiofs_binds(&t)?;
        }
        Ok(d)
    }

    /// True when the runtime's delta layer is present (`/.supermachine-cmd` exists).
    pub fn runtime_mode(&self) -> bool {
        self.cmd.is_some()
    }

    /// The process fields these files set, as an image config layered over the config file.
    /// An empty cmd file sets nothing.
    pub fn as_config(&self) -> ImageConfig {
        ImageConfig {
            entrypoint: self.cmd.clone().filter(|c| !c.is_empty()),
            cmd: self.cmd.as_ref().filter(|c| !c.is_empty()).map(|_| Vec::new()),
            env: None,
            working_dir: self.workdir.clone(),
            user: self.user.clone(),
        }
    }
}

/// The image config init-oci resolves: the config file (`None`: no file) with the delta files on
/// top (their argv replaces Entrypoint and Cmd; workdir/user replace), then the env service's
/// variables set on top of the file's `Env`. `None` when there is no file and nothing was set.
pub fn layer_config(file: Option<ImageConfig>, delta: &DeltaFiles, served_env: &[String]) -> Option<ImageConfig> {
    let d = delta.as_config();
    if file.is_none() && d == ImageConfig::default() && served_env.is_empty() {
        return None;
    }
    let mut c = file.unwrap_or_default();
    if d.entrypoint.is_some() {
        c.entrypoint = d.entrypoint;
        c.cmd = d.cmd;
    }
    c.working_dir = d.working_dir.or(c.working_dir);
    c.user = d.user.or(c.user);
    if !served_env.is_empty() {
        let mut env = c.env.take().unwrap_or_default();
        for kv in served_env {
            crate::process::set_env(&mut env, kv);
        }
        c.env = Some(env);
    }
    Some(c)
}

/// The runtime's init runs `/bin/sh` when its cmd file is empty or missing: an image whose
/// config (after the delta files) names no Entrypoint and no Cmd gets that Cmd here.
pub fn default_shell(image: &mut Option<ImageConfig>) {
    let c = image.get_or_insert_with(ImageConfig::default);
    if c.entrypoint.as_ref().is_none_or(|e| e.is_empty()) && c.cmd.as_ref().is_none_or(|e| e.is_empty()) {
        c.entrypoint = None;
        c.cmd = Some(vec![DEFAULT_SHELL.to_string()]);
    }
}

/// What [`default_shell`] runs.
pub const DEFAULT_SHELL: &str = "/bin/sh";

/// In the runtime's mode every process PID 1 starts has this set to `1`: the runtime's init
/// re-execs itself with it as its whole environment after its first pass (and it marks the
/// kernel-cache pause as done), so the image's workloads and execs inherit it.
pub const KCACHE_DONE_VAR: &str = "SUPERMACHINE_KCACHE_DONE";

/// `/.supermachine-cmd`: one argument per line (`\n` or `\r` ends a line); leading blanks of a
/// line are dropped and blank lines skipped, as the runtime's own init does.
pub fn parse_cmd(text: &str) -> Vec<String> {
    text.split(['\n', '\r'])
        .map(|l| l.trim_start_matches([' ', '\t']))
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A one-line file: trailing newline/blanks trimmed; empty → `None`.
pub fn one_line(text: &str) -> Option<String> {
    let l = text.lines().next().unwrap_or("").trim_end_matches([' ', '\t', '\r', '\n']);
    (!l.is_empty()).then(|| l.to_string())
}

fn check_abs(file: &str, p: &str) -> Result<(), String> {
    if p.starts_with('/') && !p.split('/').any(|c| c == "..") {
        Ok(())
    } else {
        Err(format!("{file}: {p:?} is not an absolute path without '..'"))
    }
}

/// `/.supermachine-volumes`: absolute guest paths, one per line (blank lines skipped).
pub fn parse_volumes(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for l in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
        check_abs(VOLUMES_FILE, l)?;
        out.push(l.to_string());
    }
    Ok(out)
}

/// `/.supermachine-virtiofs-binds`: `TAG\tGUEST_PATH` per line (blank lines skipped).
pub fn parse_virtiofs_binds(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for l in text.lines().map(|l| l.trim_end_matches('\r')).filter(|l| !l.is_empty()) {
        let (tag, path) =
            l.split_once('\t').ok_or_else(|| format!("{VIRTIOFS_FILE}: {l:?}: expected TAG<tab>GUEST_PATH"))?;
        if tag.is_empty() {
            return Err(format!("{VIRTIOFS_FILE}: {l:?}: empty tag"));
        }
        check_abs(VIRTIOFS_FILE, path)?;
        out.push((tag.to_string(), path.to_string()));
    }
    Ok(out)
}

/// Maps the volume paths to devices: volumes come after the image layers, so with `devices`
/// `/dev/vd?` present (vda, vdb, … contiguous), volume i is `/dev/vd{devices - n + i}`.
pub fn volume_devices(volumes: &[String], devices: usize) -> Result<Vec<(String, String)>, String> {
    if volumes.len() > devices || devices > 26 {
        return Err(format!(
            "{VOLUMES_FILE} names {} volumes but there are only {devices} /dev/vd? devices",
            volumes.len()
        ));
    }
    let first = devices - volumes.len();
    Ok(volumes
        .iter()
        .enumerate()
        .map(|(i, p)| (format!("/dev/vd{}", (b'a' + (first + i) as u8) as char), p.clone()))
        .collect())
}

/// The env service's reply `{"env":{"K":"V",…},"secrets":{"K":"V",…}}` → `K=V` pairs, env first
/// then secrets (a secret replaces an env var of the same name). Non-string values are skipped.
pub fn parse_env_json(bytes: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("env JSON: {e}"))?;
    let mut out: Vec<String> = Vec::new();
    for section in ["env", "secrets"] {
        let Some(map) = v.get(section).and_then(|m| m.as_object()) else { continue };
        for (k, val) in map {
            let Some(val) = val.as_str() else { continue };
            if k.is_empty() || k.contains('=') || k.contains('\0') || val.contains('\0') {
                continue;
            }
            crate::process::set_env(&mut out, &format!("{k}={val}"));
        }
    }
    Ok(out)
}

/// `SUPERMACHINE_GUEST_STDIO` truthy (`1 true yes on console inherit`): in runtime mode the
/// workload's stdio then goes to the console; otherwise to /dev/null, as the runtime's init does.
pub fn guest_stdio_to_console(value: Option<&str>) -> bool {
    matches!(value, Some("1" | "true" | "yes" | "on" | "console" | "inherit"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn an_image_without_a_command_runs_the_shell() {
        let mut none = None;
        default_shell(&mut none);
        assert_eq!(none.unwrap().cmd, Some(vec!["/bin/sh".to_string()]));
        let mut empty = Some(ImageConfig { entrypoint: Some(vec![]), cmd: Some(vec![]), ..ImageConfig::default() });
        default_shell(&mut empty);
        assert_eq!(empty.as_ref().unwrap().cmd, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(empty.unwrap().entrypoint, None);
        let mut given = Some(ImageConfig { entrypoint: Some(vec!["/app".into()]), ..ImageConfig::default() });
        default_shell(&mut given);
        assert_eq!(given.unwrap().cmd, None, "an Entrypoint alone is a command");
    }

    #[test]
    fn cmd_file() {
        assert_eq!(parse_cmd("/bin/sh\n-c\necho hi there\n"), vec!["/bin/sh", "-c", "echo hi there"]);
        assert_eq!(parse_cmd("  nginx\r\n\n-g\ndaemon off;"), vec!["nginx", "-g", "daemon off;"]);
        assert_eq!(parse_cmd(""), Vec::<String>::new());
        assert_eq!(parse_cmd("\n\n"), Vec::<String>::new());
    }

    #[test]
    fn one_line_files() {
        assert_eq!(one_line("/srv/app\n").as_deref(), Some("/srv/app"));
        assert_eq!(one_line("app:staff \r\n").as_deref(), Some("app:staff"));
        assert_eq!(one_line("\n"), None);
        assert_eq!(one_line(""), None);
    }

    #[test]
    fn volumes_and_binds() {
        assert_eq!(parse_volumes("/data\n/var/lib/db\n\n").unwrap(), vec!["/data", "/var/lib/db"]);
        assert!(parse_volumes("data\n").is_err());
        assert_eq!(
            parse_virtiofs_binds("share\t/mnt/host\nsrc\t/work space\n").unwrap(),
            vec![("share".to_string(), "/mnt/host".to_string()), ("src".to_string(), "/work space".to_string())]
        );
        assert!(parse_virtiofs_binds("share /mnt\n").is_err());
        assert!(parse_virtiofs_binds("\t/mnt\n").is_err());
        assert!(parse_virtiofs_binds("t\trel\n").is_err());
        // 2 layers (vda, vdb) + delta (vdc) + 2 volumes.
        let v = vec!["/data".to_string(), "/cache".to_string()];
        assert_eq!(
            volume_devices(&v, 5).unwrap(),
            vec![("/dev/vdd".to_string(), "/data".to_string()), ("/dev/vde".to_string(), "/cache".to_string())]
        );
        assert!(volume_devices(&v, 1).is_err());
        assert_eq!(volume_devices(&[], 3).unwrap(), vec![]);
    }

    #[test]
    fn env_json() {
        let j = br#"{"env":{"PATH":"/usr/bin:/bin","A":"1","Q":"x\"y"},"secrets":{"A":"secret","N":7}}"#;
        let mut e = parse_env_json(j).unwrap();
        e.sort();
        assert_eq!(e, vec!["A=secret", "PATH=/usr/bin:/bin", "Q=x\"y"]);
        assert_eq!(parse_env_json(br#"{"env":{},"secrets":{}}"#).unwrap(), Vec::<String>::new());
        assert!(parse_env_json(b"{").is_err());
        assert!(guest_stdio_to_console(Some("console")) && guest_stdio_to_console(Some("1")));
        assert!(!guest_stdio_to_console(Some("0")) && !guest_stdio_to_console(None));
    }

    #[test]
    fn load_and_layer() {
        let files: HashMap<&str, &str> = [
            (CMD_FILE, "/bin/app\n--port\n80\n"),
            (WORKDIR_FILE, "/srv\n"),
            (USER_FILE, "1000:1000\n"),
            (HOSTNAME_FILE, "box\n"),
            (VOLUMES_FILE, "/data\n"),
            (VIRTIOFS_FILE, "t\t/mnt\n"),
        ]
        .into();
        let d = DeltaFiles::load(|p| files.get(p).map(|s| s.to_string())).unwrap();
        assert!(d.runtime_mode());
        assert_eq!(d.hostname.as_deref(), Some("box"));
        let c = d.as_config();
        assert_eq!(c.entrypoint, Some(vec!["/bin/app".to_string(), "--port".into(), "80".into()]));
        assert_eq!(c.cmd, Some(vec![]));
        assert_eq!((c.working_dir.as_deref(), c.user.as_deref()), (Some("/srv"), Some("1000:1000")));
        // Nothing there: not runtime mode, sets nothing.
        let d = DeltaFiles::load(|_| None).unwrap();
        assert!(!d.runtime_mode());
        assert_eq!(d.as_config(), ImageConfig::default());
        // An empty cmd file is runtime mode but sets no argv.
        let d = DeltaFiles::load(|p| (p == CMD_FILE).then(String::new)).unwrap();
        assert!(d.runtime_mode() && d.as_config().entrypoint.is_none());
        // Layering over a config file: delta argv/workdir/user win, served env on top of Env.
        let file = ImageConfig {
            entrypoint: Some(vec!["/e".into()]),
            cmd: Some(vec!["c".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=1".into()]),
            working_dir: Some("/w".into()),
            user: Some("app".into()),
        };
        let d = DeltaFiles::load(|p| files.get(p).map(|s| s.to_string())).unwrap();
        let c = layer_config(Some(file.clone()), &d, &["A=2".into(), "B=3".into()]).unwrap();
        assert_eq!(c.entrypoint.as_ref().unwrap()[0], "/bin/app");
        assert_eq!(c.cmd, Some(vec![]));
        assert_eq!(c.env, Some(vec!["PATH=/bin".to_string(), "A=2".into(), "B=3".into()]));
        assert_eq!((c.working_dir.as_deref(), c.user.as_deref()), (Some("/srv"), Some("1000:1000")));
        let none = DeltaFiles::default();
        assert_eq!(layer_config(Some(file.clone()), &none, &[]), Some(file));
        assert_eq!(layer_config(None, &none, &[]), None);
        assert!(DeltaFiles::load(|p| (p == WORKDIR_FILE).then(|| "rel\n".to_string())).is_err());
    }
}
