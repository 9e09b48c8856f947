//! Command-line parsing: turns argv into a [`Config`]. No I/O here, so it is unit-tested.

use std::path::PathBuf;

/// The runtime's guest CID (`SM:kvm/run.rs:81`); also vhost-device-vsock's usual choice.
pub const DEFAULT_GUEST_CID: u64 = 3;

pub const USAGE: &str = "\
usage: tsi-backend --socket VHOST_USER_SOCK (--dir RUN_DIR | --uds-path HYBRID_SOCK)
                   [--guest-cid 3] [--tsi-token HEX64] [--egress-policy POLICY]
                   [--env-json FILE]
  --socket PATH         vhost-user socket QEMU connects to (-chardev socket,path=PATH)
  --dir DIR             run folder: mux.sock, exec.sock, vm.vsock and control.sock go here
  --uds-path PATH       where the hybrid-vsock (CONNECT <port>) socket goes; default DIR/vm.vsock.
                        Without --dir, DIR is this path's folder (vhost-device-vsock's CLI shape)
  --guest-cid N         guest CID served in the device config (default 3)
  --tsi-token HEX64     arm the muxer's TSI control-channel token (64 hex digits = 32 bytes)
  --egress-policy P     allow_all | deny_private | allowlist:CIDR,... | denylist:CIDR,...
                        (default: unset, which the runtime treats as allow_all)
  --env-json FILE       JSON the muxer's env service (guest connect to CID 2 port 1026) returns
                        (default: the runtime's {\"env\":{},\"secrets\":{}})";

/// Everything the program needs, resolved (paths filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket: PathBuf,
    pub dir: PathBuf,
    pub uds_path: PathBuf,
    pub guest_cid: u64,
    pub tsi_token: Option<[u8; 32]>,
    pub egress_policy: Option<String>,
    pub env_json: Option<PathBuf>,
}

impl Config {
    pub fn mux_sock(&self) -> PathBuf {
        self.dir.join("mux.sock")
    }
    pub fn exec_sock(&self) -> PathBuf {
        self.dir.join("exec.sock")
    }
    pub fn control_sock(&self) -> PathBuf {
        self.dir.join("control.sock")
    }
}

/// Parses the arguments after argv[0]. `Err` carries a message meant for the user.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Config, String> {
    let mut socket = None;
    let mut dir = None;
    let mut uds_path = None;
    let mut guest_cid = DEFAULT_GUEST_CID;
    let mut tsi_token = None;
    let mut egress_policy = None;
    let mut env_json = None;
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (flag.clone(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(USAGE.to_string());
        }
        let mut value = || inline.clone().or_else(|| it.next()).ok_or_else(|| format!("{name} needs a value\n{USAGE}"));
        match name.as_str() {
            "--socket" => socket = Some(PathBuf::from(value()?)),
            "--dir" => dir = Some(PathBuf::from(value()?)),
            "--uds-path" => uds_path = Some(PathBuf::from(value()?)),
            "--guest-cid" => {
                let v = value()?;
                guest_cid = v.parse().map_err(|_| format!("--guest-cid: not a number: {v:?}"))?;
                if guest_cid < 3 {
                    return Err(format!("--guest-cid: {guest_cid} is reserved (guest CIDs start at 3)"));
                }
            }
            "--tsi-token" => tsi_token = Some(parse_token(&value()?)?),
            "--egress-policy" => egress_policy = Some(check_policy(&value()?)?),
            "--env-json" => env_json = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag:?}\n{USAGE}")),
        }
    }
    let socket = socket.ok_or_else(|| format!("--socket is required\n{USAGE}"))?;
    let dir = match (dir, &uds_path) {
        (Some(d), _) => d,
        (None, Some(u)) => match u.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        },
        (None, None) => return Err(format!("--dir or --uds-path is required\n{USAGE}")),
    };
    let uds_path = uds_path.unwrap_or_else(|| dir.join("vm.vsock"));
    Ok(Config { socket, dir, uds_path, guest_cid, tsi_token, egress_policy, env_json })
}

/// 64 hex digits (either case) → the 32 raw token bytes the guest kernel prefixes.
pub fn parse_token(hex: &str) -> Result<[u8; 32], String> {
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return Err(format!("--tsi-token: need 64 hex digits, got {}", digits.len()));
    }
    let nibble = |c: u8| -> Result<u8, String> {
        (c as char)
            .to_digit(16)
            .map(|d| d as u8)
            .ok_or_else(|| format!("--tsi-token: {:?} is not a hex digit", c as char))
    };
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Ok(out)
}

/// Rejects policy strings the runtime would treat as "unknown" — which denies every connect
/// (`egress_policy::check_addr`), a confusing failure for a typo.
pub fn check_policy(p: &str) -> Result<String, String> {
    let ok = p == "allow_all"
        || p == "deny_private"
        || p.strip_prefix("allowlist:").is_some_and(|l| !l.is_empty())
        || p.strip_prefix("denylist:").is_some_and(|l| !l.is_empty());
    if ok {
        Ok(p.to_string())
    } else {
        Err(format!(
            "--egress-policy: {p:?} is not one of allow_all, deny_private, allowlist:CIDR,..., denylist:CIDR,..."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn dir_mode_puts_every_socket_in_the_dir() {
        let c = parse(args("--socket /r/vhu.sock --dir /r")).unwrap();
        assert_eq!(c.socket, PathBuf::from("/r/vhu.sock"));
        assert_eq!(c.uds_path, PathBuf::from("/r/vm.vsock"));
        assert_eq!(c.mux_sock(), PathBuf::from("/r/mux.sock"));
        assert_eq!(c.exec_sock(), PathBuf::from("/r/exec.sock"));
        assert_eq!(c.control_sock(), PathBuf::from("/r/control.sock"));
        assert_eq!(c.guest_cid, 3);
        assert_eq!(c.tsi_token, None);
        assert_eq!(c.egress_policy, None);
    }

    #[test]
    fn vhost_device_vsock_invocation_is_accepted() {
        // Exactly what crates/supermachine-guest-harness/src/vsock.rs passes.
        let c = parse(args("--guest-cid 3 --socket /t/x/vhu.sock --uds-path /t/x/vm.vsock")).unwrap();
        assert_eq!(c.dir, PathBuf::from("/t/x"));
        assert_eq!(c.uds_path, PathBuf::from("/t/x/vm.vsock"));
        let c = parse(args("--socket=vhu.sock --uds-path=vm.vsock")).unwrap();
        assert_eq!(c.dir, PathBuf::from("."));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(args("--dir /r")).unwrap_err().contains("--socket"));
        assert!(parse(args("--socket s")).unwrap_err().contains("--dir"));
        assert!(parse(args("--socket s --dir d --bogus")).unwrap_err().contains("--bogus"));
        assert!(parse(args("--socket s --dir d --guest-cid 2")).is_err());
        assert!(parse(args("--socket s --dir d --guest-cid x")).is_err());
        assert!(parse(args("--socket s --dir")).unwrap_err().contains("needs a value"));
        assert!(parse(args("--socket s --dir d --egress-policy allow")).is_err());
    }

    #[test]
    fn token_hex_round_trip() {
        let hex = "00112233445566778899aabbccddeeffFFEEDDCCBBAA99887766554433221100";
        let t = parse_token(hex).unwrap();
        assert_eq!(t[0], 0x00);
        assert_eq!(t[1], 0x11);
        assert_eq!(t[15], 0xff);
        assert_eq!(t[16], 0xff);
        assert_eq!(t[31], 0x00);
        assert!(parse_token(&hex[..63]).is_err());
        assert!(parse_token(&format!("{}g", &hex[..63])).is_err());
        assert!(parse_token("é").is_err());
    }

    #[test]
    fn policies() {
        for p in ["allow_all", "deny_private", "allowlist:1.1.1.1/32", "denylist:10.0.0.0/8,::1/128"] {
            assert_eq!(check_policy(p).unwrap(), p);
        }
        for p in ["", "allowall", "allowlist:", "deny"] {
            assert!(check_policy(p).is_err(), "{p}");
        }
    }
}
