//! What every part of the agent shares: its configuration (set once by `main` from the command
//! line), its log line, and how it ends on a fatal error.

use crate::{pid1, sys};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The agent's configuration, from its command line.
pub struct Config {
    /// Where `supermachine-agent-ready` and `supermachine-workload.pid` live (default /run).
    pub run_dir: PathBuf,
    /// Prefix for /sys and /proc/sys paths written by smpark and drop_vfs_caches (default /).
    pub sys_root: PathBuf,
    /// The agent is PID 1 (it then powers off instead of exiting).
    pub pid1: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets the configuration; the first call wins (`main` makes the only one).
pub fn set(c: Config) {
    let _ = CONFIG.set(c);
}

/// The configuration (the defaults until `main` has set it).
pub fn config() -> &'static Config {
    CONFIG.get_or_init(|| Config { run_dir: "/run".into(), sys_root: "/".into(), pid1: false })
}

/// One `supermachine-agent: …` line on stderr (the console as PID 1).
pub fn log(msg: &str) {
    let line = format!("supermachine-agent: {msg}\n");
    let _ = sys::write_all(2, line.as_bytes());
}

/// Logs and ends: power off as PID 1, exit 1 otherwise.
pub fn fatal(msg: &str) -> ! {
    log(&format!("fatal: {msg}"));
    if config().pid1 {
        pid1::poweroff(msg);
    }
    std::process::exit(1)
}
