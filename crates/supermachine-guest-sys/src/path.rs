//! Finding a program the way execvp does.

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

/// True when `path` is a regular file this process may execute (access(2) with X_OK, so a
/// non-root caller is judged by its own ids).
pub fn is_executable_file(path: &str) -> bool {
    let Ok(md) = std::fs::metadata(path) else { return false };
    if !md.is_file() {
        return false;
    }
    let Ok(c) = crate::cstring(path) else { return false };
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
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
