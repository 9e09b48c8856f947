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
