//! File actions under hostile input: FIFOs, devices, /proc files (sandboxed agent binary).

mod common;

use common::*;
use std::sync::Arc;
use supermachine_agent_client::Error;

fn agent_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Agent(m)) => m,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

#[test]
fn reading_a_fifo_or_a_device_is_refused_without_blocking() {
    let d = Arc::new(TempDir::new("fifo"));
    let fifo = d.s("fifo");
    let c = std::ffi::CString::new(fifo.clone()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, kind) in [(fifo.clone(), "fifo"), ("/dev/ptmx".to_string(), "character device"), ("/dev/null".to_string(), "character device")] {
        let (d1, p1) = (d.clone(), path.clone());
        let e = within(20, &format!("read_file {path}"), move || agent_err(stdio_client(&d1, Opts::default()).read_file(&p1, None)));
        assert!(e.contains(&path) && e.contains(kind) && e.contains("not a regular file"), "{e}");
        let (d1, p1) = (d.clone(), path.clone());
        let e = within(20, &format!("read_file_chunk {path}"), move || {
            agent_err(stdio_client(&d1, Opts::default()).read_file_chunk(&p1, 0, 4096, None))
        });
        assert!(e.contains(&path) && e.contains(kind), "{e}");
    }
    let e = agent_err(stdio_client(&d, Opts::default()).read_file(&d.s("run"), None));
    assert!(e.contains("directory"), "{e}");
}

#[test]
fn read_file_chunk_reads_proc_files_to_their_end() {
    // /proc files have st_size 0: the chunk must hold their content, not "" with eof.
    let d = TempDir::new("procchunk");
    let c = stdio_client(&d, Opts::default());
    let (data, total) = c.read_file_chunk("/proc/self/status", 0, 1 << 20, None).unwrap();
    let text = String::from_utf8(data).unwrap();
    assert!(text.contains("Pid:") && text.contains("VmRSS:"), "{text:?}");
    assert_eq!(total, text.len() as u64, "total_len of a file read to its end");
    let mut all = Vec::new();
    c.read_file_chunked("/proc/self/status", None, &mut all).unwrap();
    assert!(String::from_utf8(all).unwrap().contains("Pid:"));
}
