//! What the harness's command-line programs share: their argument walk, failing with a message,
//! and the end of a long text for error output.

/// Prints `PROGRAM: msg` on stderr and exits with status 2 (bad usage, or a step that failed).
pub fn die(msg: &str) -> ! {
    let program = std::env::args().next().unwrap_or_default();
    let name = std::path::Path::new(&program).file_name().map(|n| n.to_string_lossy().into_owned());
    eprintln!("{}: {msg}", name.unwrap_or_else(|| "harness".into()));
    std::process::exit(2)
}

/// The last `n` lines of `s`.
pub fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Reads a payload file into `&'static [u8]` (leaked: a tool lives as long as its payloads), so
/// payloads from files fit the `GuestPayloads` the harness is built around; an unreadable file
/// ends the program with its name.
pub fn leak_file(path: &std::path::Path) -> &'static [u8] {
    let bytes = std::fs::read(path).unwrap_or_else(|e| die(&format!("{}: {e}", path.display())));
    Box::leak(bytes.into_boxed_slice())
}

/// One `--guest NAME=KERNEL,AGENT[,EXTRA]` value: (name, kernel, agent, extra), extra empty when
/// absent (the tools read it as kernel parameters or a third file). A malformed one ends the
/// program, naming `flag` and its form.
pub fn guest_spec(flag: &str, v: &str) -> (String, std::path::PathBuf, std::path::PathBuf, String) {
    let bad = || die(&format!("{flag} takes NAME=KERNEL,AGENT[,EXTRA], got {v:?}"));
    let (name, files) = v.split_once('=').unwrap_or_else(bad);
    let (kernel, rest) = files.split_once(',').unwrap_or_else(bad);
    let (agent, extra) = rest.split_once(',').unwrap_or((rest, ""));
    (name.into(), kernel.into(), agent.into(), extra.into())
}

/// The command line after the program name, walked flag by flag.
pub struct Args(std::iter::Skip<std::env::Args>);

impl Args {
    /// This process's arguments.
    pub fn from_env() -> Args {
        Args(std::env::args().skip(1))
    }

    /// The next argument (a flag, or an operand), `None` at the end.
    #[allow(clippy::should_implement_trait)] // a walk with `value`, not a plain iterator
    pub fn next(&mut self) -> Option<String> {
        self.0.next()
    }

    /// The value that follows `flag`; a missing one ends the program with a message.
    pub fn value(&mut self, flag: &str) -> String {
        self.0.next().unwrap_or_else(|| die(&format!("{flag} needs a value")))
    }

    /// The rest of the arguments.
    pub fn rest(self) -> Vec<String> {
        self.0.collect()
    }
}
