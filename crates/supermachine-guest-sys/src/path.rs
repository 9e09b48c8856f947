//! Finding a program the way execvp does.

use std::os::unix::fs::MetadataExt;

/// PATH given to a process whose environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finds `argv0` the way execvp does: as given when it has a `/`, else in each `path` entry (an
/// empty entry is the current folder). `is_exec` tells whether a candidate can be executed.
pub fn find_program(argv0: &str, path: &str, is_exec: impl Fn(&str) -> bool) -> Option<String> {
    if argv0.contains('/') {
        return is_exec(argv0).then(|| argv0.to_string());
    }
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
        .find(|p| is_exec(p))
}

/// True when `path` is a regular file with an execute bit (the guest programs run as root,
/// for which any x bit is enough; exec reports anything else).
pub fn is_executable_file(path: &str) -> bool {
    std::fs::metadata(path).map(|md| md.is_file() && md.mode() & 0o111 != 0).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_follows_execvp() {
        let exec = |p: &str| matches!(p, "/bin/sh" | "./tool" | "/opt/x/app");
        assert_eq!(find_program("sh", "/usr/bin:/bin", exec).as_deref(), Some("/bin/sh"));
        assert_eq!(find_program("tool", "/usr/bin::/bin", exec).as_deref(), Some("./tool"));
        assert_eq!(find_program("app", "/opt/x/", exec).as_deref(), Some("/opt/x/app"));
        assert_eq!(find_program("/bin/sh", "", exec).as_deref(), Some("/bin/sh"));
        assert_eq!(find_program("/bin/nope", "/bin", exec), None);
        assert_eq!(find_program("nope", DEFAULT_PATH, exec), None);
    }

    #[test]
    fn executable_files() {
        assert!(is_executable_file("/bin/sh"));
        assert!(!is_executable_file("/"));
        assert!(!is_executable_file("/etc/passwd"));
        assert!(!is_executable_file("/no/such/file"));
    }
}
