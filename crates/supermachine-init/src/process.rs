//! The process init-oci starts, resolved from the image config, the runtime's delta files and
//! the kernel cmdline (this module sits above `config` and `cmdline`, which know nothing of each
//! other's use here).

use crate::cmdline::Overrides;
use crate::config::ImageConfig;
use crate::{Fatal, Status};

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
fn layer(
    ep: &mut Option<Vec<String>>,
    cmd: &mut Option<Vec<String>>,
    new_ep: &Option<Vec<String>>,
    new_cmd: &Option<Vec<String>>,
) {
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
            let src = if image.is_some() {
                format!("{config_path} has")
            } else {
                format!("no {config_path} in the image and")
            };
            return Err(Fatal::new(
                Status::NoEntrypoint,
                format!(
                    "no entrypoint: {src} no Entrypoint or Cmd, and the cmdline gives no sm.entrypoint= or sm.cmd="
                ),
            ));
        }
        env.retain(|e| e.contains('=') && !e.starts_with('='));
        if get_env(&env, "PATH").is_none() {
            env.insert(0, format!("PATH={}", supermachine_guest_sys::path::DEFAULT_PATH));
        }
        let cwd = match cwd.as_deref() {
            None | Some("") => "/".to_string(),
            Some(c) if c.starts_with('/') => c.to_string(),
            Some(c) => return Err(Fatal::new(Status::BadConfig, format!("WorkingDir {c:?} is not absolute"))),
        };
        let process = Process { args, env, cwd, user: user.unwrap_or_default() };
        process.check_no_nul(config_path)?;
        Ok(process)
    }

    /// Every string reaches exec as a C string: one with a NUL byte is refused here (the delta
    /// files and the cmdline are not JSON, so nothing else caught it).
    fn check_no_nul(&self, config_path: &str) -> Result<(), Fatal> {
        let mut strings = self.args.iter().chain(&self.env).chain([&self.cwd, &self.user]);
        match strings.find(|s| s.as_bytes().contains(&0)) {
            Some(s) => Err(Fatal::new(Status::BadConfig, format!("{config_path}: {s:?} contains a NUL byte"))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::FULL;

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
        let p =
            Process::resolve(Some(&ImageConfig { cmd: Some(vec!["sh".into()]), ..Default::default() }), &ov(), "/c")
                .unwrap();
        assert_eq!(p.env, vec![format!("PATH={}", supermachine_guest_sys::path::DEFAULT_PATH)]);
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
        let o = Overrides {
            env: vec!["A=2".into(), "B=3".into()],
            workdir: Some("/tmp".into()),
            user: Some("0:0".into()),
            ..ov()
        };
        let p = Process::resolve(Some(&img), &o, "/c").unwrap();
        assert_eq!(p.env, vec!["PATH=/usr/bin:/bin", "A=2", "B=3"]);
        assert_eq!((p.cwd.as_str(), p.user.as_str()), ("/tmp", "0:0"));
        // sm.config_b64 layer, then sm.cmd on top.
        let o = Overrides {
            config: Some(ImageConfig {
                entrypoint: Some(vec!["/e".into()]),
                env: Some(vec!["Z=1".into()]),
                ..Default::default()
            }),
            cmd: Some(vec!["c".into()]),
            ..ov()
        };
        let p = Process::resolve(Some(&img), &o, "/c").unwrap();
        assert_eq!(p.args, vec!["/e", "c"]);
        assert_eq!(p.env[1..], ["Z=1".to_string()]);
        // No file at all: the cmdline alone is enough.
        let o = Overrides { cmd: Some(vec!["/bin/true".into()]), ..ov() };
        assert_eq!(Process::resolve(None, &o, "/c").unwrap().args, vec!["/bin/true"]);
    }

    #[test]
    fn nul_bytes_are_an_error_not_an_empty_string() {
        // The delta file's argv is plain text: a NUL there must not silently become "".
        let delta =
            crate::runtime::DeltaFiles { cmd: Some(vec!["/bin/echo".into(), "a\0b".into()]), ..Default::default() };
        let img = crate::runtime::layer_config(None, &delta, &[]);
        let e = Process::resolve(img.as_ref(), &ov(), "/.supermachine-cmd").unwrap_err();
        assert_eq!(e.status, Status::BadConfig);
        assert!(e.msg.contains("\"a\\0b\" contains a NUL byte"), "{}", e.msg);
        let o = Overrides { cmd: Some(vec!["/bin/true".into()]), env: vec!["A=\0".into()], ..ov() };
        assert_eq!(Process::resolve(None, &o, "/c").unwrap_err().status, Status::BadConfig);
    }

    #[test]
    fn missing_entrypoint_and_bad_workdir() {
        let e = Process::resolve(Some(&ImageConfig::default()), &ov(), "/.supermachine/config.json").unwrap_err();
        assert_eq!(e.status, Status::NoEntrypoint);
        assert!(e.msg.contains("/.supermachine/config.json has no Entrypoint or Cmd"), "{}", e.msg);
        let e = Process::resolve(None, &ov(), "/cfg").unwrap_err();
        assert_eq!(e.status, Status::NoEntrypoint);
        let img =
            ImageConfig { entrypoint: Some(vec!["/e".into()]), cmd: Some(vec!["x".into()]), ..Default::default() };
        let o = Overrides { entrypoint: Some(vec![]), ..ov() }; // sm.entrypoint= clears both
        assert_eq!(Process::resolve(Some(&img), &o, "/c").unwrap_err().status, Status::NoEntrypoint);
        let img = ImageConfig { cmd: Some(vec!["x".into()]), working_dir: Some("rel".into()), ..Default::default() };
        assert_eq!(Process::resolve(Some(&img), &ov(), "/c").unwrap_err().status, Status::BadConfig);
    }
}
