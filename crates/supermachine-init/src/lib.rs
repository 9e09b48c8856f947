//! The host-testable half of `init-oci`: kernel-cmdline parsing, OCI image-config parsing,
//! user/group resolution and the exit-status table. The PID-1 half (mounts, switch root,
//! supervision) is the binary's `pid1/` modules; docs/INIT-OCI.md describes both.

#![forbid(unsafe_code)]

pub mod cmdline;
pub mod config;
pub mod process;
pub mod rosetta;
pub mod runtime;
pub mod user;

/// Where init-oci looks for the process config inside the image (override: `sm.config=`).
pub const DEFAULT_CONFIG_PATH: &str = "/.supermachine/config.json";
/// Where the agent lives inside the new root (override: `sm.agent=`).
pub const DEFAULT_AGENT_PATH: &str = "/.supermachine/agent";
/// Where the entrypoint's pid is recorded (read by the agent's `signal` action).
pub const WORKLOAD_PID_FILE: &str = "/run/supermachine-workload.pid";

/// Why init-oci gave up. Each one prints `init-oci: error: ...` and then
/// `init-oci: exit status N` before the power-off; `N` is [`Status::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Orderly shutdown (SIGTERM to PID 1, or `sm.on_exit=poweroff` after the workload ended).
    Ok,
    /// Internal error (a bug: a panic, or init-oci run as something other than PID 1).
    Internal,
    /// Mounting /proc, /sys, /dev, /dev/pts, /dev/shm or /run failed.
    EarlyMount,
    /// The kernel command line could not be parsed (a bad `sm.*` value).
    BadCmdline,
    /// No image rootfs: no `/dev/vd?` holds a squashfs, or a device named by `sm.rootfs=` is missing.
    NoRootfs,
    /// Mounting a rootfs layer, the tmpfs upper layer or the overlay failed.
    RootfsMount,
    /// An `sm.volume=` or `sm.virtiofs=` mount failed.
    VolumeMount,
    /// Moving the mounts into the new root or switching root failed.
    SwitchRoot,
    /// The config file exists but cannot be read or is not a valid image config.
    BadConfig,
    /// No entrypoint: neither Entrypoint nor Cmd (in the file or on the cmdline).
    NoEntrypoint,
    /// The entrypoint program does not exist or is not executable, or exec failed.
    EntrypointExec,
    /// `User` names a user or group that the image's /etc/passwd or /etc/group lacks.
    BadUser,
    /// `WorkingDir` cannot be created or entered.
    BadWorkdir,
    /// The agent binary is missing from the new root (and the initramfs) or cannot start.
    Agent,
}

impl Status {
    /// Every status, in table order (docs/INIT-OCI.md lists the same).
    pub const ALL: [Status; 14] = [
        Status::Ok,
        Status::Internal,
        Status::EarlyMount,
        Status::BadCmdline,
        Status::NoRootfs,
        Status::RootfsMount,
        Status::VolumeMount,
        Status::SwitchRoot,
        Status::BadConfig,
        Status::NoEntrypoint,
        Status::EntrypointExec,
        Status::BadUser,
        Status::BadWorkdir,
        Status::Agent,
    ];

    /// The number printed as `init-oci: exit status N`.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Internal => 1,
            Status::EarlyMount => 10,
            Status::BadCmdline => 11,
            Status::NoRootfs => 20,
            Status::RootfsMount => 21,
            Status::VolumeMount => 22,
            Status::SwitchRoot => 23,
            Status::BadConfig => 30,
            Status::NoEntrypoint => 31,
            Status::EntrypointExec => 32,
            Status::BadUser => 33,
            Status::BadWorkdir => 34,
            Status::Agent => 40,
        }
    }
}

/// A fatal error: what to print and which status to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The status.
    pub status: Status,
    /// One line, without the `init-oci: error: ` prefix.
    pub msg: String,
}

impl Fatal {
    /// A fatal error with `status`.
    pub fn new(status: Status, msg: impl Into<String>) -> Fatal {
        Fatal { status, msg: msg.into().replace('\n', " ") }
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::Status;
    #[test]
    fn status_codes_are_distinct() {
        let mut codes: Vec<u8> = Status::ALL.iter().map(|s| s.code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), Status::ALL.len());
    }
}
