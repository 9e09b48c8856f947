//! The process config baked into the image: the OCI *image* config's `config` object
//! (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`, `User`), bare or wrapped as `{"config": {...}}`
//! (also `"Config"`, the `docker inspect` spelling), or an OCI *runtime* spec `process` object
//! (`{"process": {"args", "env", "cwd", "user": {"uid", "gid"}}}`).

use crate::cmdline::Overrides;
use crate::{Fatal, Status};
use serde_json::{Map, Value};

/// The fields init-oci uses. `None` = not set (absent or `null`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageConfig {
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `Env` (`KEY=VALUE` strings).
    pub env: Option<Vec<String>>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `User` (`uid`, `uid:gid`, `name`, `name:group`, …).
    pub user: Option<String>,
}

fn strings(obj: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items.iter().map(|v| match v {
            Value::String(s) if !s.contains('\0') => Ok(s.clone()),
            _ => Err(format!("{key}: expected an array of strings without NUL bytes")),
        }).collect::<Result<Vec<_>, _>>().map(Some),
        Some(_) => Err(format!("{key}: expected an array of strings")),
    }
}

fn string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.contains('\0') => Ok(Some(s.clone())),
        Some(_) => Err(format!("{key}: expected a string")),
    }
}

impl ImageConfig {
    /// Parses the JSON file's bytes. The error is one line (serde_json's position included).
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(top) = v else { return Err("expected a JSON object".into()) };
        if let Some(p) = top.get("process") {
            let Value::Object(p) = p else { return Err("process: expected an object".into()) };
            return Self::from_runtime_process(p);
        }
        let obj = match top.get("config").or_else(|| top.get("Config")) {
            Some(Value::Object(o)) => o,
            Some(Value::Null) => return Ok(ImageConfig::default()),
            Some(_) => return Err("config: expected an object".into()),
            None => &top,
        };
        Ok(ImageConfig {
            entrypoint: strings(obj, "Entrypoint")?,
            cmd: strings(obj, "Cmd")?,
            env: strings(obj, "Env")?,
            working_dir: string(obj, "WorkingDir")?,
            user: string(obj, "User")?,
        })
    }

    fn from_runtime_process(p: &Map<String, Value>) -> Result<ImageConfig, String> {
        let user = match p.get("user") {
            None | Some(Value::Null) => None,
            Some(Value::Object(u)) => {
                let id = |k: &str| match u.get(k) {
                    None | Some(Value::Null) => Ok(0),
                    Some(v) => v.as_u64().filter(|n| *n <= u32::MAX as u64)
                        .ok_or_else(|| format!("process.user.{k}: expected a number")),
                };
                Some(format!("{}:{}", id("uid")?, id("gid")?))
            }
            Some(_) => return Err("process.user: expected an object".into()),
        };
        Ok(ImageConfig {
            entrypoint: strings(p, "args").map_err(|e| format!("process.{e}"))?,
            cmd: None,
            env: strings(p, "env").map_err(|e| format!("process.{e}"))?,
            working_dir: string(p, "cwd").map_err(|e| format!("process.{e}"))?,
            user,
        })
    }
}

/// The process init-oci starts: argv, environment, working folder and the unresolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// argv (non-empty).
    pub args: Vec<String>,
    /// `KEY=VALUE` strings, one per key.
    pub env: Vec<String>,
    /// Absolute working folder.
    pub cwd: String,
    /// The `User` spec (empty = root).
    pub user: String,
}

/// Sets `kv` (`KEY=VALUE`) in `env`, replacing an earlier value of the same key.
pub fn set_env(env: &mut Vec<String>, kv: &str) {
    let key = kv.split('=').next().unwrap_or("");
    env.retain(|e| e.split('=').next() != Some(key));
    env.push(kv.to_string());
}

/// The value of `key` in `env`.
pub fn get_env<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    env.iter().find_map(|e| e.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Entrypoint/Cmd layering with Docker's rule: a layer that sets Entrypoint but not Cmd clears
/// the Cmd below it (like `docker run --entrypoint`).
fn layer(ep: &mut Option<Vec<String>>, cmd: &mut Option<Vec<String>>, new_ep: &Option<Vec<String>>, new_cmd: &Option<Vec<String>>) {
    if new_ep.is_some() {
        *ep = new_ep.clone();
        *cmd = new_cmd.clone();
    } else if new_cmd.is_some() {
        *cmd = new_cmd.clone();
    }
}

impl Process {
    /// Combines the image config (`None`: no file) with the cmdline overrides.
    /// `config_path` is only used in messages.
    pub fn resolve(image: Option<&ImageConfig>, ov: &Overrides, config_path: &str) -> Result<Process, Fatal> {
        let base = image.cloned().unwrap_or_default();
        let (mut ep, mut cmd) = (base.entrypoint.clone(), base.cmd.clone());
        let mut env = Vec::new();
        for kv in base.env.iter().flatten() {
            set_env(&mut env, kv);
        }
        let (mut cwd, mut user) = (base.working_dir.clone(), base.user.clone());
        if let Some(c) = &ov.config {
            layer(&mut ep, &mut cmd, &c.entrypoint, &c.cmd);
            if let Some(e) = &c.env {
                env.clear();
                for kv in e {
                    set_env(&mut env, kv);
                }
            }
            cwd = c.working_dir.clone().or(cwd);
            user = c.user.clone().or(user);
        }
        layer(&mut ep, &mut cmd, &ov.entrypoint, &ov.cmd);
        for kv in &ov.env {
            set_env(&mut env, kv);
        }
        cwd = ov.workdir.clone().or(cwd);
        user = ov.user.clone().or(user);

        let args: Vec<String> = ep.into_iter().flatten().chain(cmd.into_iter().flatten()).collect();
        if args.is_empty() || args[0].is_empty() {
            let src = if image.is_some() { format!("{config_path} has") } else { format!("no {config_path} in the image and") };
            return Err(Fatal::new(Status::NoEntrypoint,
                format!("no entrypoint: {src} no Entrypoint or Cmd, and the cmdline gives no sm.entrypoint= or sm.cmd=")));
        }
        env.retain(|e| e.contains('=') && !e.starts_with('='));
        if get_env(&env, "PATH").is_none() {
            env.insert(0, format!("PATH={}", crate::DEFAULT_PATH));
        }
        let cwd = match cwd.as_deref() {
            None | Some("") => "/".to_string(),
            Some(c) if c.starts_with('/') => c.to_string(),
            Some(c) => return Err(Fatal::new(Status::BadConfig, format!("WorkingDir {c:?} is not absolute"))),
        };
        Ok(Process { args, env, cwd, user: user.unwrap_or_default() })
    }
}

/// Finds `argv0` the way execvp does: as given when it has a `/`, else in each `PATH` entry.
/// `is_exec` tells whether a path is an executable regular file.
pub fn find_program(argv0: &str, path: &str, is_exec: impl Fn(&str) -> bool) -> Option<String> {
    if argv0.contains('/') {
        return is_exec(argv0).then(|| argv0.to_string());
    }
    path.split(':').map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
        .find(|p| is_exec(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"architecture":"amd64","os":"linux","config":{"User":"app","Env":["PATH=/usr/bin:/bin","A=1"],
        "Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],"WorkingDir":"/srv","Labels":{"x":"y"}},
        "rootfs":{"type":"layers","diff_ids":[]}}"#;

    #[test]
    fn wrapped_and_bare_shapes() {
        let wrapped = ImageConfig::parse(FULL.as_bytes()).unwrap();
        assert_eq!(wrapped.entrypoint, Some(vec!["/docker-entrypoint.sh".to_string()]));
        assert_eq!(wrapped.cmd.as_ref().unwrap().len(), 3);
        assert_eq!(wrapped.user.as_deref(), Some("app"));
        assert_eq!(wrapped.working_dir.as_deref(), Some("/srv"));
        let bare = ImageConfig::parse(br#"{"Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g","daemon off;"],
            "Env":["PATH=/usr/bin:/bin","A=1"],"WorkingDir":"/srv","User":"app"}"#).unwrap();
        assert_eq!(bare, wrapped);
        let inspect = ImageConfig::parse(br#"{"Id":"sha256:x","Config":{"Cmd":["sh"],"Entrypoint":null,"Env":null}}"#).unwrap();
        assert_eq!(inspect, ImageConfig { cmd: Some(vec!["sh".into()]), ..Default::default() });
        assert_eq!(ImageConfig::parse(b"{}").unwrap(), ImageConfig::default());
        assert_eq!(ImageConfig::parse(br#"{"config":null}"#).unwrap(), ImageConfig::default());
    }

    #[test]
    fn runtime_spec_process() {
        let c = ImageConfig::parse(br#"{"ociVersion":"1.0.2","process":{"args":["/bin/app","-v"],"env":["X=1"],
            "cwd":"/work","user":{"uid":1000,"gid":100}}}"#).unwrap();
        assert_eq!(c.entrypoint, Some(vec!["/bin/app".to_string(), "-v".to_string()]));
        assert_eq!(c.user.as_deref(), Some("1000:100"));
        assert_eq!(c.working_dir.as_deref(), Some("/work"));
        assert!(ImageConfig::parse(br#"{"process":{"user":{"uid":-1}}}"#).is_err());
    }

    #[test]
    fn bad_json_and_types() {
        for bad in [&b"{"[..], b"[]", b"\"x\"", b"{\"Cmd\":\"echo hi\"}", b"{\"Cmd\":[1]}", b"{\"Env\":{}}",
                    b"{\"User\":0}", b"{\"config\":[]}", b"{\"Cmd\":[\"a\\u0000b\"]}", b"", b"{\"process\":1}"] {
            assert!(ImageConfig::parse(bad).is_err(), "{:?} should be rejected", String::from_utf8_lossy(bad));
        }
        let e = ImageConfig::parse(b"{\"Cmd\": [").unwrap_err();
        assert!(e.starts_with("invalid JSON:") && !e.contains('\n'), "{e}");
    }

    fn ov() -> Overrides {
        Overrides::default()
    }

    #[test]
    fn entrypoint_plus_cmd_and_defaults() {
        let img = ImageConfig::parse(FULL.as_bytes()).unwrap();
        let p = Process::resolve(Some(&img), &ov(), "/c").unwrap();
        assert_eq!(p.args, vec!["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]);
        assert_eq!(p.env, vec!["PATH=/usr/bin:/bin", "A=1"]);
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/srv", "app"));
        let p = Process::resolve(Some(&ImageConfig { cmd: Some(vec!["sh".into()]), ..Default::default() }), &ov(), "/c").unwrap();
        assert_eq!(p.env, vec![format!("PATH={}", crate::DEFAULT_PATH)]);
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/", ""));
    }

    #[test]
    fn cmdline_overrides_follow_docker_rules() {
        let img = ImageConfig::parse(FULL.as_bytes()).unwrap();
        // New entrypoint without cmd clears the image's Cmd.
        let o = Overrides { entrypoint: Some(vec!["/bin/sh".into()]), ..ov() };
        assert_eq!(Process::resolve(Some(&img), &o, "/c").unwrap().args, vec!["/bin/sh"]);
        // Cmd alone keeps the entrypoint.
        let o = Overrides { cmd: Some(vec!["x".into()]), ..ov() };
        assert_eq!(Process::resolve(Some(&img), &o, "/c").unwrap().args, vec!["/docker-entrypoint.sh", "x"]);
        // Env adds/replaces; workdir and user win.
        let o = Overrides { env: vec!["A=2".into(), "B=3".into()], workdir: Some("/tmp".into()), user: Some("0:0".into()), ..ov() };
        let p = Process::resolve(Some(&img), &o, "/c").unwrap();
        assert_eq!(p.env, vec!["PATH=/usr/bin:/bin", "A=2", "B=3"]);
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/tmp", "0:0"));
        // sm.config_b64 layer, then sm.cmd on top.
        let o = Overrides { config: Some(ImageConfig { entrypoint: Some(vec!["/e".into()]), env: Some(vec!["Z=1".into()]), ..Default::default() }),
                            cmd: Some(vec!["c".into()]), ..ov() };
        let p = Process::resolve(Some(&img), &o, "/c").unwrap();
        assert_eq!(p.args, vec!["/e", "c"]);
        assert_eq!(p.env[1..], ["Z=1".to_string()]);
        // No file at all: the cmdline alone is enough.
        let o = Overrides { cmd: Some(vec!["/bin/true".into()]), ..ov() };
        assert_eq!(Process::resolve(None, &o, "/c").unwrap().args, vec!["/bin/true"]);
    }

    #[test]
    fn missing_entrypoint_and_bad_workdir() {
        let e = Process::resolve(Some(&ImageConfig::default()), &ov(), "/.supermachine/config.json").unwrap_err();
        assert_eq!(e.status, Status::NoEntrypoint);
        assert!(e.msg.contains("/.supermachine/config.json has no Entrypoint or Cmd"), "{}", e.msg);
        let e = Process::resolve(None, &ov(), "/cfg").unwrap_err();
        assert_eq!(e.status, Status::NoEntrypoint);
        let img = ImageConfig { entrypoint: Some(vec!["/e".into()]), cmd: Some(vec!["x".into()]), ..Default::default() };
        let o = Overrides { entrypoint: Some(vec![]), ..ov() }; // sm.entrypoint= clears both
        assert_eq!(Process::resolve(Some(&img), &o, "/c").unwrap_err().status, Status::NoEntrypoint);
        let img = ImageConfig { cmd: Some(vec!["x".into()]), working_dir: Some("rel".into()), ..Default::default() };
        assert_eq!(Process::resolve(Some(&img), &ov(), "/c").unwrap_err().status, Status::BadConfig);
    }

    #[test]
    fn program_lookup() {
        let exists = |p: &str| p == "/usr/bin/env" || p == "/bin/sh";
        assert_eq!(find_program("sh", "/usr/bin:/bin", exists).as_deref(), Some("/bin/sh"));
        assert_eq!(find_program("env", "/usr/bin/:/bin", exists).as_deref(), Some("/usr/bin/env"));
        assert_eq!(find_program("/bin/sh", "", exists).as_deref(), Some("/bin/sh"));
        assert_eq!(find_program("nope", "/usr/bin:/bin", exists), None);
        assert_eq!(find_program("/bin/nope", "/bin", exists), None);
    }
}
