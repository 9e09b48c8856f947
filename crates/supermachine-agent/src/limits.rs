//! Every resource limit of the agent, in one place. docs/PROTOCOL.md ("Resource limits") states
//! them as policy; change both together.

use std::time::Duration;

/// `port_forward`: how long the agent tries to reach the guest's 127.0.0.1:port.
pub const PORT_FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Power-off (the `poweroff` action, or PID 1 told to stop): how long every process has
/// between SIGTERM and SIGKILL.
pub const POWEROFF_GRACE: Duration = Duration::from_secs(2);

/// `read_file`: raw bytes read and base64-encoded per piece (a multiple of 3: no padding until
/// the end), so a reply's memory stays bounded whatever the file's size.
pub const FILE_READ_BLOCK: usize = 12 * 1024;

/// The first frame of a connection must start arriving within this time, and its bytes must not
/// pause longer than this; otherwise the agent answers ERROR and closes the connection.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once (exec, control, port_forward and ones still waiting for their
/// first frame). Further connections get an ERROR frame ([`busy_message`]) and are closed.
pub const MAX_CONNECTIONS: usize = 128;

/// The ERROR text a connection over [`MAX_CONNECTIONS`] gets.
pub fn busy_message() -> String {
    format!(
        "agent busy: {MAX_CONNECTIONS} connections are open, the most it serves at once; try again when one has closed"
    )
}

/// Stack of a connection thread, and of an exec's input thread.
pub const CONN_STACK: usize = 256 * 1024;
pub const INPUT_STACK: usize = 128 * 1024;

/// Input buffer of a connection (frames are read through it, never whole).
pub const INPUT_BUF: usize = 16 * 1024;

/// Output buffer of an exec: the most read from its stdout/stderr (or terminal) per frame.
pub const OUTPUT_BUF: usize = 32 * 1024;

/// STDIN bytes one exec may hold that its process has not read yet. While the queue is full the
/// agent stops reading that connection (backpressure); below it, SIGNAL and RESIZE frames behind
/// the stdin are acted on at once.
pub const STDIN_QUEUE_MAX: usize = 1024 * 1024;

/// The shared pool (see `budget.rs`) for buffers whose size the peer decides: queued stdin,
/// request JSON, exec arguments. A connection that finds it empty waits (stdin) or is refused.
pub const SHARED_BUDGET: usize = 8 * 1024 * 1024;

/// A first frame's JSON without its file data (`data_b64` strings are streamed to files, not
/// kept): at most this many bytes — about what Linux's exec takes in argv and environment with
/// the default 8 MiB stack limit — ...
pub const MAX_REQUEST_JSON: usize = 2 * 1024 * 1024;
/// ... and at most this many strings (keys and values: each env variable is two).
pub const MAX_REQUEST_STRINGS: usize = 65_536;
/// What one parsed string costs the agent besides its bytes (allocation, map node), for the
/// shared-budget lease of a first frame.
pub const REQUEST_STRING_COST: usize = 96;

/// `reseed` data is kept in memory: at most this many bytes.
pub const RESEED_MAX: usize = 64 * 1024;

/// A chunked upload (`write_file_chunk`) with no chunk for this long is abandoned: its temp file
/// is removed.
pub const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
