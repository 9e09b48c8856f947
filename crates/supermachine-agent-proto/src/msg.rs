//! Typed JSON messages carried in REQUEST and CONTROL frames.

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The exact error text for an unknown CONTROL action (kept identical to upstream).
pub const UNKNOWN_ACTION: &str = "unknown CONTROL action";

/// Capabilities this protocol implementation advertises in the `probe` reply.
pub const CAPABILITIES: &[&str] = &[
    "exec",
    "tty",
    "stage_files",
    "chain",
    "write_file",
    "write_file_chunk",
    "read_file",
    "read_file_chunk",
    "signal",
    "sync_time",
    "sync",
    "drop_vfs_caches",
    "smpark",
    "reseed",
    "port_forward",
    "stat",
    "mkdir",
    "remove",
];

/// Every CONTROL action this crate knows.
pub const ACTIONS: &[&str] = &[
    "probe",
    "write_file",
    "write_file_chunk",
    "read_file",
    "read_file_chunk",
    "signal",
    "sync_time",
    "sync",
    "drop_vfs_caches",
    "smpark_park",
    "smpark_unpark",
    "reseed",
    "port_forward",
    "stat",
    "mkdir",
    "remove",
];

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A file mode: a JSON number (e.g. `420` = `0o644`) or an octal string (`"0644"`, `"755"`).
fn mode_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum M {
        N(u32),
        S(String),
    }
    match Option::<M>::deserialize(d)? {
        None => Ok(None),
        Some(M::N(n)) => Ok(Some(n)),
        Some(M::S(s)) => {
            let t = s.trim_start_matches("0o");
            u32::from_str_radix(t, 8).map(Some).map_err(|_| {
                serde::de::Error::custom(format!("invalid mode {s:?}: expected a number or an octal string"))
            })
        }
    }
}

/// A file written before the exec starts (`stage_files`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageFile {
    pub path: String,
    pub data_b64: String,
    #[serde(default, deserialize_with = "mode_opt", skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// The JSON of a REQUEST frame.
///
/// ```
/// use supermachine_agent_proto::{parse_exec_request, ExecRequest};
/// let r = parse_exec_request(br#"{"argv":["echo","hi"],"env":{"A":"1"},"tty":false}"#).unwrap();
/// assert_eq!(r.argv, ["echo", "hi"]);
/// assert_eq!(r.env["A"], "1");
/// let e = parse_exec_request(br#"{"env":{}}"#).unwrap_err();
/// assert!(e.to_string().contains("missing field `argv`"));
/// let json = serde_json::to_string(&ExecRequest::new(["true"])).unwrap();
/// assert_eq!(json, r#"{"argv":["true"],"tty":false}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub argv: Vec<String>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub stage_files: Vec<StageFile>,
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Vec<String>>,
}

impl ExecRequest {
    /// A request that runs `argv` with everything else defaulted.
    pub fn new<I, S>(argv: I) -> ExecRequest
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest { argv: argv.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: impl Into<String>) -> Self {
        self.cwd = Some(cwd.into());
        self
    }

    /// Runs on a pseudo-terminal of the given size.
    pub fn tty(mut self, cols: u16, rows: u16) -> Self {
        self.tty = true;
        self.cols = Some(cols);
        self.rows = Some(rows);
        self
    }

    /// Appends a command run after the previous ones succeeded (`&&`).
    pub fn then<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.chain.push(argv.into_iter().map(Into::into).collect());
        self
    }

    /// Writes a file before the exec starts.
    pub fn stage(mut self, path: impl Into<String>, data: &[u8], mode: Option<u32>) -> Self {
        self.stage_files.push(StageFile { path: path.into(), data_b64: crate::b64::encode(data), mode });
        self
    }
}

/// A CONTROL request, tagged by `action`.
///
/// ```
/// use supermachine_agent_proto::{parse_control_request, ControlRequest, ParseError};
/// assert_eq!(parse_control_request(br#"{"action":"probe"}"#).unwrap(), ControlRequest::Probe);
/// assert!(matches!(parse_control_request(br#"{"action":"nope"}"#), Err(ParseError::UnknownAction(_))));
/// let e = parse_control_request(br#"{"action":"read_file"}"#).unwrap_err();
/// assert!(e.to_string().contains("missing field `path`"), "{e}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlRequest {
    Probe,
    // The file data comes last in each request (fields serialise in this order): an agent
    // that streams it to the target then knows the target before the data arrives.
    WriteFile {
        path: String,
        #[serde(default, deserialize_with = "mode_opt", skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        data_b64: String,
    },
    WriteFileChunk {
        path: String,
        offset: u64,
        #[serde(default, deserialize_with = "null_default")]
        last: bool,
        token: String,
        #[serde(default, deserialize_with = "mode_opt", skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
        data_b64: String,
    },
    ReadFile {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes: Option<u64>,
    },
    ReadFileChunk {
        path: String,
        offset: u64,
        len: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_bytes: Option<u64>,
    },
    Signal {
        signum: i32,
    },
    SyncTime {
        host_unix_ns: u64,
    },
    Sync,
    DropVfsCaches,
    SmparkPark,
    SmparkUnpark,
    /// Extension: mix host-provided bytes into the guest RNG and force a CRNG reseed.
    Reseed {
        data_b64: String,
    },
    /// Extension: after the ack, the connection becomes a byte pipe to `127.0.0.1:port`.
    PortForward {
        port: u16,
    },
    /// Extension: file metadata.
    Stat {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        follow: Option<bool>,
    },
    /// Extension: create a directory.
    Mkdir {
        path: String,
        #[serde(default, deserialize_with = "null_default")]
        parents: bool,
        #[serde(default, deserialize_with = "mode_opt", skip_serializing_if = "Option::is_none")]
        mode: Option<u32>,
    },
    /// Extension: remove a file, symlink or (empty, or with `recursive`) directory.
    Remove {
        path: String,
        #[serde(default, deserialize_with = "null_default")]
        recursive: bool,
    },
}

impl ControlRequest {
    /// The `action` string of this request.
    pub fn action(&self) -> &'static str {
        match self {
            ControlRequest::Probe => "probe",
            ControlRequest::WriteFile { .. } => "write_file",
            ControlRequest::WriteFileChunk { .. } => "write_file_chunk",
            ControlRequest::ReadFile { .. } => "read_file",
            ControlRequest::ReadFileChunk { .. } => "read_file_chunk",
            ControlRequest::Signal { .. } => "signal",
            ControlRequest::SyncTime { .. } => "sync_time",
            ControlRequest::Sync => "sync",
            ControlRequest::DropVfsCaches => "drop_vfs_caches",
            ControlRequest::SmparkPark => "smpark_park",
            ControlRequest::SmparkUnpark => "smpark_unpark",
            ControlRequest::Reseed { .. } => "reseed",
            ControlRequest::PortForward { .. } => "port_forward",
            ControlRequest::Stat { .. } => "stat",
            ControlRequest::Mkdir { .. } => "mkdir",
            ControlRequest::Remove { .. } => "remove",
        }
    }

    /// The JSON payload for a CONTROL frame.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Why a REQUEST or CONTROL payload was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON at all (serde's message: what and where).
    InvalidJson(String),
    /// JSON, but not the expected shape (missing field, wrong type, ...).
    Invalid(String),
    /// A CONTROL request whose `action` is not known. Display is exactly [`UNKNOWN_ACTION`].
    UnknownAction(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::InvalidJson(m) => write!(f, "invalid JSON: {m}"),
            ParseError::Invalid(m) => write!(f, "invalid request: {m}"),
            ParseError::UnknownAction(_) => f.write_str(UNKNOWN_ACTION),
        }
    }
}

impl std::error::Error for ParseError {}

fn classify(e: serde_json::Error) -> ParseError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ParseError::InvalidJson(e.to_string()),
        Category::Data => ParseError::Invalid(e.to_string()),
    }
}

/// Parses and validates the payload of a REQUEST frame.
pub fn parse_exec_request(payload: &[u8]) -> Result<ExecRequest, ParseError> {
    let r: ExecRequest = serde_json::from_slice(payload).map_err(classify)?;
    if r.argv.is_empty() {
        return Err(ParseError::Invalid("`argv` must not be empty".into()));
    }
    if let Some(i) = r.chain.iter().position(Vec::is_empty) {
        return Err(ParseError::Invalid(format!("`chain[{i}]` must not be empty")));
    }
    for (i, a) in r.argv.iter().chain(r.chain.iter().flatten()).enumerate() {
        if a.contains('\0') {
            return Err(ParseError::Invalid(format!("argument {i} contains a NUL byte")));
        }
    }
    if r.env.iter().any(|(k, v)| k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0')) {
        return Err(ParseError::Invalid("`env` keys must be non-empty without '=' or NUL, values without NUL".into()));
    }
    Ok(r)
}

/// Parses the payload of a CONTROL frame. An unknown `action` gives
/// [`ParseError::UnknownAction`], whose text is exactly [`UNKNOWN_ACTION`].
pub fn parse_control_request(payload: &[u8]) -> Result<ControlRequest, ParseError> {
    /// First pass: only the action (parsing straight from bytes keeps the agent binary small).
    #[derive(Deserialize)]
    struct Action {
        action: Option<String>,
    }
    let a: Action = serde_json::from_slice(payload).map_err(|e| match classify(e) {
        ParseError::Invalid(m) => {
            ParseError::Invalid(format!("a CONTROL request must be a JSON object with a string `action`: {m}"))
        }
        other => other,
    })?;
    let action = a.action.ok_or_else(|| ParseError::Invalid("missing field `action`".into()))?;
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ParseError::UnknownAction(action));
    }
    serde_json::from_slice(payload).map_err(|e| ParseError::Invalid(format!("{action}: {e}")))
}

/// A JSON ack: `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
pub type Ack = serde_json::Map<String, serde_json::Value>;

/// `{"ok":true}` plus the given fields, serialised with `ok` first.
pub fn ack_ok(fields: Ack) -> Vec<u8> {
    let mut out = b"{\"ok\":true".to_vec();
    for (k, v) in fields {
        if k == "ok" {
            continue;
        }
        out.push(b',');
        out.extend(serde_json::to_vec(&k).unwrap_or_default());
        out.push(b':');
        out.extend(serde_json::to_vec(&v).unwrap_or_default());
    }
    out.push(b'}');
    out
}

/// `{"ok":false,"error":msg}`, serialised (`ok` first, like upstream).
///
/// ```
/// assert_eq!(supermachine_agent_proto::ack_err("x"), br#"{"ok":false,"error":"x"}"#);
/// ```
pub fn ack_err(msg: &str) -> Vec<u8> {
    let mut out = b"{\"ok\":false,\"error\":".to_vec();
    out.extend(serde_json::to_vec(msg).unwrap_or_default());
    out.push(b'}');
    out
}

/// Reply to `probe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReply {
    pub protocol: u32,
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub version: Option<String>,
}

/// Reply to `read_file_chunk` (`read_file` has only `data_b64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadChunkReply {
    pub data_b64: String,
    pub total_len: u64,
}

/// Reply to `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatReply {
    /// `"file"`, `"dir"`, `"symlink"` or `"other"`.
    #[serde(rename = "type")]
    pub kind: String,
    pub size: u64,
    /// Permission bits and file type bits as `st_mode`.
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Owner uid (`None` when an agent does not send it: the field is additive in v5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Owner gid (`None` when an agent does not send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

#[cfg(test)]
mod tests;
