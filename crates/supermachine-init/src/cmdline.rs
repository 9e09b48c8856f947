//! The kernel command line: which `sm.*` tokens init-oci reads (docs/INIT-OCI.md has the table).
//! Unknown tokens are ignored; a malformed `sm.*` value is an error.

use crate::config::ImageConfig;
use supermachine_agent_proto::b64;

/// An extra block-device volume (`sm.volume=/dev/vdb:/data[:ro]`), mounted as ext4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// The block device, e.g. `/dev/vdb`.
    pub device: String,
    /// Absolute mount point inside the image root.
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// A virtio-fs share (`sm.virtiofs=TAG:/mnt[:ro]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioFs {
    /// The virtio-fs tag.
    pub tag: String,
    /// Absolute mount point inside the image root.
    pub target: String,
    /// Mount read-only.
    pub read_only: bool,
}

/// Process settings given on the cmdline; they win over the image config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// A whole image config (`sm.config_b64=`, base64 of the same JSON as the file): fields it
    /// sets replace the file's.
    pub config: Option<ImageConfig>,
    /// `sm.entrypoint=` (whitespace-separated; empty clears the image's Entrypoint).
    pub entrypoint: Option<Vec<String>>,
    /// `sm.cmd=` (whitespace-separated; empty clears the image's Cmd).
    pub cmd: Option<Vec<String>>,
    /// `sm.env=KEY=VALUE`, repeatable; added after the image's Env (same key: replaced).
    pub env: Vec<String>,
    /// `sm.workdir=`.
    pub workdir: Option<String>,
    /// `sm.user=`.
    pub user: Option<String>,
}

/// What init-oci does when the entrypoint exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnExit {
    /// Keep the VM (and the agent) running — the runtime's behaviour. Default.
    #[default]
    Stay,
    /// Power off.
    Poweroff,
}

/// Everything init-oci reads from /proc/cmdline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmdline {
    /// `supermachine.host_time=SECS[.FRACTION]` as (seconds, nanoseconds).
    pub host_time: Option<(i64, i64)>,
    /// `sm.rootfs=/dev/vda,/dev/vdb`: the image layers, bottom first. Empty: scan `/dev/vd?`.
    pub rootfs: Vec<String>,
    /// `sm.volume=` tokens, in order.
    pub volumes: Vec<Volume>,
    /// `sm.virtiofs=` tokens, in order.
    pub virtiofs: Vec<VirtioFs>,
    /// `sm.config=`: the config file inside the image.
    pub config_path: String,
    /// `sm.agent=`: the agent inside the image; `none` starts no agent.
    pub agent: Option<String>,
    /// `sm.hostname=`.
    pub hostname: Option<String>,
    /// `sm.stop_timeout=SECS`: grace between SIGTERM to the workload and power-off (default 5).
    pub stop_timeout_secs: u32,
    /// `sm.on_exit=stay|poweroff`.
    pub on_exit: OnExit,
    /// `tsi_hijack` present (supermachine's TSI networking).
    pub tsi: bool,
    /// `supermachine.host_ipv6=0|1`: whether the host has an IPv6 route (0: /etc/gai.conf
    /// prefers IPv4, as the runtime's own init does).
    pub host_ipv6: Option<bool>,
    /// `supermachine.kcache=1`: the runtime's kernel-boot-cache pause (print
    /// `[SUPERMACHINE-KCACHE] ready`, wait for a line on the console).
    pub kcache: bool,
    /// `supermachine.pre_exec_sync=1`: the runtime's pre-exec pause (print
    /// `[SUPERMACHINE-PRE-EXEC] ready`, wait for a line on the console before the fork).
    pub pre_exec_sync: bool,
    /// Process overrides.
    pub overrides: Overrides,
}

impl Default for Cmdline {
    fn default() -> Self {
        Cmdline {
            host_time: None,
            rootfs: Vec::new(),
            volumes: Vec::new(),
            virtiofs: Vec::new(),
            config_path: crate::DEFAULT_CONFIG_PATH.into(),
            agent: Some(crate::DEFAULT_AGENT_PATH.into()),
            hostname: None,
            stop_timeout_secs: 5,
            on_exit: OnExit::Stay,
            tsi: false,
            host_ipv6: None,
            kcache: false,
            pre_exec_sync: false,
            overrides: Overrides::default(),
        }
    }
}

/// Splits a kernel cmdline into tokens the way the kernel does: whitespace separates, double
/// quotes group (and are removed), so `sm.cmd="echo hi"` is one token `sm.cmd=echo hi`.
pub fn split(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in cmdline.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

fn words(v: &str) -> Vec<String> {
    v.split_whitespace().map(str::to_string).collect()
}

fn abs_path(key: &str, v: &str) -> Result<String, String> {
    if v.starts_with('/') && !v.split('/').any(|c| c == "..") {
        Ok(v.to_string())
    } else {
        Err(format!("{key}: {v:?} is not an absolute path without '..'"))
    }
}

/// `SOURCE:/target[:ro]`.
fn mount_spec(key: &str, v: &str) -> Result<(String, String, bool), String> {
    let (src, rest) = v.split_once(':').ok_or_else(|| format!("{key}={v}: expected SOURCE:/path[:ro]"))?;
    let (target, ro) = match rest.rsplit_once(':') {
        Some((t, "ro")) => (t, true),
        Some((t, "rw")) => (t, false),
        _ => (rest, false),
    };
    if src.is_empty() {
        return Err(format!("{key}={v}: empty source"));
    }
    Ok((src.to_string(), abs_path(key, target)?, ro))
}

impl Cmdline {
    /// Parses the contents of /proc/cmdline.
    pub fn parse(text: &str) -> Result<Cmdline, String> {
        let mut c = Cmdline::default();
        for tok in split(text) {
            if tok == "--" {
                break;
            }
            if tok == "tsi_hijack" {
                c.tsi = true;
                continue;
            }
            let Some((key, v)) = tok.split_once('=') else { continue };
            match key {
                "supermachine.host_time" => {
                    c.host_time = Some(parse_time(v).ok_or_else(|| format!("{key}={v}: not a time in seconds"))?)
                }
                // Only the first character counts, as in the runtime's init.
                "supermachine.host_ipv6" => c.host_ipv6 = v.chars().next().map(|ch| ch != '0'),
                "sm.rootfs" => {
                    c.rootfs =
                        v.split(',').filter(|s| !s.is_empty()).map(|s| abs_path(key, s)).collect::<Result<_, _>>()?;
                }
                "sm.volume" => {
                    let (device, target, read_only) = mount_spec(key, v)?;
                    abs_path(key, &device)?;
                    c.volumes.push(Volume { device, target, read_only });
                }
                "sm.virtiofs" => {
                    let (tag, target, read_only) = mount_spec(key, v)?;
                    c.virtiofs.push(VirtioFs { tag, target, read_only });
                }
                "supermachine.kcache" => c.kcache = v == "1",
                "supermachine.pre_exec_sync" => c.pre_exec_sync = v == "1",
                "sm.config" => c.config_path = abs_path(key, v)?,
                "sm.config_b64" => {
                    let json = b64::decode(v).map_err(|_| format!("{key}: not valid base64"))?;
                    let cfg = ImageConfig::parse(&json).map_err(|e| format!("{key}: {e}"))?;
                    c.overrides.config = Some(cfg);
                }
                "sm.entrypoint" => c.overrides.entrypoint = Some(words(v)),
                "sm.cmd" => c.overrides.cmd = Some(words(v)),
                "sm.env" => {
                    if !v.contains('=') || v.starts_with('=') {
                        return Err(format!("{key}={v}: expected KEY=VALUE"));
                    }
                    c.overrides.env.push(v.to_string());
                }
                "sm.workdir" => c.overrides.workdir = Some(abs_path(key, v)?),
                "sm.user" => c.overrides.user = Some(v.to_string()),
                "sm.hostname" => c.hostname = Some(v.to_string()),
                "sm.agent" => c.agent = if v == "none" { None } else { Some(abs_path(key, v)?) },
                "sm.stop_timeout" => {
                    c.stop_timeout_secs = v.parse().map_err(|_| format!("{key}={v}: not a number of seconds"))?
                }
                "sm.on_exit" => {
                    c.on_exit = match v {
                        "stay" => OnExit::Stay,
                        "poweroff" => OnExit::Poweroff,
                        _ => return Err(format!("{key}={v}: expected stay or poweroff")),
                    }
                }
                _ => {}
            }
        }
        Ok(c)
    }
}

/// `SECS` or `SECS.FRACTION` → (seconds, nanoseconds).
fn parse_time(v: &str) -> Option<(i64, i64)> {
    let (s, f) = v.split_once('.').unwrap_or((v, ""));
    let secs: i64 = s.parse().ok()?;
    if secs < 0 || !f.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut frac = f.chars().take(9).collect::<String>();
    while frac.len() < 9 {
        frac.push('0');
    }
    Some((secs, frac.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_honours_quotes() {
        assert_eq!(split(" a  b=\"c d\"\n\"e f\" "), vec!["a", "b=c d", "e f"]);
        assert_eq!(split(""), Vec::<String>::new());
        assert_eq!(split("x=\"\""), vec!["x="]);
    }

    #[test]
    fn supermachine_cold_boot_cmdline() {
        let c = Cmdline::parse(
            "console=ttyS0 panic=-1 reboot=t tsi_hijack supermachine.host_time=1795305600 \
            virtio_mmio.device=0x1000@0xd0000000:5 sm.volume=/dev/vdb:/data sm.virtiofs=share:/mnt/host:ro \
            root=/dev/vda unknown.token=1 flag",
        )
        .unwrap();
        assert_eq!(c.host_time, Some((1795305600, 0)));
        assert!(c.tsi);
        assert_eq!(c.volumes, vec![Volume { device: "/dev/vdb".into(), target: "/data".into(), read_only: false }]);
        assert_eq!(c.virtiofs, vec![VirtioFs { tag: "share".into(), target: "/mnt/host".into(), read_only: true }]);
        assert!(c.rootfs.is_empty());
        assert_eq!(c.config_path, "/.supermachine/config.json");
        assert_eq!(c.agent.as_deref(), Some("/.supermachine/agent"));
        assert_eq!(c.overrides, Overrides::default());
        assert_eq!(c.stop_timeout_secs, 5);
        assert_eq!(c.on_exit, OnExit::Stay);
        assert!(!c.kcache && !c.pre_exec_sync);
    }

    #[test]
    fn supermachine_hvf_cmdline() {
        // What supermachine 0.7.108 passes on HVF (bake with kcache + pre-exec sync), plus the
        // worker's appended tokens.
        let c = Cmdline::parse(
            "earlycon=pl011,mmio32,0x09000000 console=ttyAMA0 quiet loglevel=4 tsi_hijack \
            supermachine.host_time=1795305600 supermachine.kcache=1 supermachine.pre_exec_sync=1 \
            supermachine.tsi_token=00ff supermachine.host_ipv6=0 ipv6.disable=1",
        )
        .unwrap();
        assert!(c.tsi && c.kcache && c.pre_exec_sync);
        assert_eq!(c.host_ipv6, Some(false));
        assert_eq!(c.host_time, Some((1795305600, 0)));
        let c = Cmdline::parse("supermachine.kcache=0").unwrap();
        assert!(!c.kcache);
    }

    #[test]
    fn overrides() {
        let c = Cmdline::parse(
            "sm.entrypoint=\"/bin/sh -c\" sm.cmd= sm.env=A=1 sm.env=B=x=y sm.workdir=/srv \
            sm.user=nobody:nogroup sm.rootfs=/dev/vdb,/dev/vdc sm.agent=none sm.on_exit=poweroff sm.stop_timeout=2 \
            sm.hostname=box supermachine.host_time=12.5 -- sm.user=ignored",
        )
        .unwrap();
        assert_eq!(c.overrides.entrypoint, Some(vec!["/bin/sh".to_string(), "-c".to_string()]));
        assert_eq!(c.overrides.cmd, Some(vec![]));
        assert_eq!(c.overrides.env, vec!["A=1", "B=x=y"]);
        assert_eq!(c.overrides.workdir.as_deref(), Some("/srv"));
        assert_eq!(c.overrides.user.as_deref(), Some("nobody:nogroup"));
        assert_eq!(c.rootfs, vec!["/dev/vdb", "/dev/vdc"]);
        assert_eq!(c.agent, None);
        assert_eq!(c.on_exit, OnExit::Poweroff);
        assert_eq!(c.stop_timeout_secs, 2);
        assert_eq!(c.hostname.as_deref(), Some("box"));
        assert_eq!(c.host_time, Some((12, 500_000_000)));
    }

    #[test]
    fn config_b64_override() {
        // {"Cmd":["echo","hi there"]}
        let c = Cmdline::parse("sm.config_b64=eyJDbWQiOlsiZWNobyIsImhpIHRoZXJlIl19").unwrap();
        assert_eq!(c.overrides.config.unwrap().cmd, Some(vec!["echo".to_string(), "hi there".to_string()]));
        assert!(Cmdline::parse("sm.config_b64=e30").unwrap().overrides.config.is_some()); // {}
        assert!(Cmdline::parse("sm.config_b64=!!").is_err());
        assert!(Cmdline::parse("sm.config_b64=bm90IGpzb24").is_err()); // "not json"
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "sm.volume=/dev/vdb",
            "sm.volume=/dev/vdb:data",
            "sm.volume=vdb:/data",
            "sm.virtiofs=:/x",
            "sm.workdir=relative",
            "sm.config=/a/../b",
            "sm.env=NOEQUALS",
            "sm.env==x",
            "supermachine.host_time=abc",
            "supermachine.host_time=-5",
            "sm.on_exit=maybe",
            "sm.stop_timeout=soon",
            "sm.rootfs=vda",
        ] {
            assert!(Cmdline::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn base64_variants() {
        assert_eq!(b64::decode("aGk=").unwrap(), b"hi");
        assert_eq!(b64::decode("aGk").unwrap(), b"hi");
        assert_eq!(b64::decode("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(b64::decode("+/8=").unwrap(), vec![0xfb, 0xff]);
    }
}
