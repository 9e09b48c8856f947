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
    // SAFETY: `c` is a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, kind) in [
        (fifo.clone(), "fifo"),
        ("/dev/ptmx".to_string(), "character device"),
        ("/dev/null".to_string(), "character device"),
    ] {
        let (d1, p1) = (d.clone(), path.clone());
        let e = within(20, &format!("read_file {path}"), move || {
            agent_err(stdio_client(&d1, Opts::default()).read_file(&p1, None))
        });
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

fn chunk(
    c: &supermachine_agent_client::Client<impl supermachine_agent_client::Connector>,
    path: &str,
    offset: u64,
    data: &[u8],
    last: bool,
    token: &str,
) -> Result<(), Error> {
    let req = supermachine_agent_proto::ControlRequest::WriteFileChunk {
        path: path.into(),
        offset,
        data_b64: supermachine_agent_proto::b64::encode(data),
        last,
        token: token.into(),
        mode: None,
    };
    c.control(&req).map(|_| ())
}

fn chunk_files(d: &TempDir) -> Vec<String> {
    std::fs::read_dir(&d.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".sm-chunk."))
        .collect()
}

#[test]
fn chunk_offsets_must_follow_each_other_and_tokens_are_not_reused() {
    let d = TempDir::new("chunkseq");
    let c = stdio_client(&d, Opts::default());
    let p = d.s("f");
    chunk(&c, &p, 0, b"0123", false, "t").unwrap();
    // The same token again from offset 0 would silently restart (or hole) the upload.
    let e = agent_err(chunk(&c, &p, 0, b"xxxx", false, "t"));
    assert!(e.contains(&p) && e.contains("already used") && e.contains("4 bytes so far"), "{e}");
    // A gap, an overlap and an absurd offset.
    for off in [8, 2, 1 << 40] {
        let e = agent_err(chunk(&c, &p, off, b"zz", false, "t"));
        assert!(
            e.contains(&format!("offset {off}")) && e.contains("4 bytes so far") && e.contains("without gaps"),
            "{e}"
        );
    }
    chunk(&c, &p, 4, b"4567", false, "t").unwrap();
    chunk(&c, &p, 8, b"89ab", true, "t").unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"0123456789ab");
    assert!(chunk_files(&d).is_empty(), "{:?}", chunk_files(&d));
    // After it completed, the token names no upload.
    let e = agent_err(chunk(&c, &p, 12, b"cd", true, "t"));
    assert!(e.contains("no upload in progress"), "{e}");
}

#[test]
fn abandoned_chunk_uploads_are_removed() {
    let d = TempDir::new("chunkidle");
    let c = stdio_client(&d, Opts::default());
    // An upload that never gets its last chunk...
    chunk(&c, &d.s("a"), 0, b"part", false, "idle").unwrap();
    let files = chunk_files(&d);
    assert_eq!(files.len(), 1, "{files:?}");
    // ... goes once it had no chunk for the idle timeout (5 min; its temp file is aged here).
    let tmp = std::ffi::CString::new(d.s(&files[0])).unwrap();
    let old = libc::timespec { tv_sec: now_secs() - 600, tv_nsec: 0 };
    // SAFETY: `tmp` is a NUL-terminated path, the times array has the two entries utimensat reads.
    assert_eq!(unsafe { libc::utimensat(libc::AT_FDCWD, tmp.as_ptr(), [old, old].as_ptr(), 0) }, 0);
    c.probe().unwrap();
    assert!(chunk_files(&d).is_empty(), "{:?}", chunk_files(&d));
    assert!(agent_err(chunk(&c, &d.s("a"), 4, b"more", true, "idle")).contains("no upload in progress"));
    // A chunk whose connection drops half-way takes its upload with it.
    chunk(&c, &d.s("b"), 0, b"first", false, "cut").unwrap();
    let mut a = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let json = format!(
        r#"{{"action":"write_file_chunk","path":"{}","offset":5,"token":"cut","last":true,"data_b64":"AAAA"#,
        d.s("b")
    );
    let mut frame =
        supermachine_agent_proto::header(supermachine_agent_proto::FrameType::Control, json.len() + 1000).to_vec();
    frame.extend_from_slice(json.as_bytes());
    std::io::Write::write_all(&mut a, &frame).unwrap();
    a.stdin.lock().unwrap().take();
    let frames = read_all_frames(&mut a);
    assert!(String::from_utf8_lossy(&frames[0].payload).contains("truncated"), "{frames:?}");
    assert!(chunk_files(&d).is_empty(), "{:?}", chunk_files(&d));
    assert!(!exists(&d.path("b")));
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[test]
fn file_data_before_the_path_is_written_all_the_same() {
    // A client that sorts its JSON keys sends data_b64 before path (and before token).
    let d = TempDir::new("keyorder");
    let c = stdio_client(&d, Opts::default());
    let p = d.s("sub/x");
    let raw = |json: String| {
        let mut a = StdioAgent::spawn(&d, &Opts::default()).unwrap();
        supermachine_agent_client::control_raw(&mut a, json.as_bytes()).unwrap()
    };
    let ack = raw(format!(r#"{{"action":"write_file","data_b64":"aGVsbG8=","mode":"0600","path":"{p}"}}"#));
    assert_eq!(ack["ok"], true, "{ack:?}");
    assert_eq!(ack["bytes"], 5);
    assert_eq!(std::fs::read(&p).unwrap(), b"hello");
    let ack = raw(format!(
        r#"{{"data_b64":"MDEy","last":false,"offset":0,"path":"{p}","token":"k","action":"write_file_chunk"}}"#
    ));
    assert_eq!(ack["ok"], true, "{ack:?}");
    let ack = raw(format!(
        r#"{{"action":"write_file_chunk","data_b64":"Mw==","last":true,"offset":3,"path":"{p}","token":"k"}}"#
    ));
    assert_eq!(ack["ok"], true, "{ack:?}");
    assert_eq!(std::fs::read(&p).unwrap(), b"0123");
    // Escaped slashes in the base64 are JSON, not base64 errors.
    let ack = raw(format!(r#"{{"action":"write_file","path":"{p}","data_b64":"\/\/8="}}"#));
    assert_eq!(ack["ok"], true, "{ack:?}");
    assert_eq!(std::fs::read(&p).unwrap(), [0xff, 0xff]);
    assert_eq!(c.read_file(&p, None).unwrap(), [0xff, 0xff]);
}

#[test]
fn names_of_the_longest_length_are_written_too() {
    // A 255-byte file name is valid, but `.<name>.sm-tmp.<pid>.<n>` beside it is not: the temp
    // names are shortened (found by scripts/agent-fuzz.sh). Chunked uploads too, with the
    // longest token (128 characters that are all escaped), and stage_files.
    let d = TempDir::new("longname");
    let c = stdio_client(&d, Opts::default());
    let long = d.s(&"x".repeat(255));
    c.write_file(&long, b"written", None).unwrap();
    assert_eq!(std::fs::read(&long).unwrap(), b"written");

    let token = "/".repeat(128);
    let target = d.s(&"y".repeat(255));
    chunk(&c, &target, 0, b"one ", false, &token).unwrap();
    // another token for the same long name is another upload
    chunk(&c, &target, 0, b"other", false, &"-".repeat(128)).unwrap();
    let e = agent_err(chunk(&c, &target, 0, b"again", false, &token));
    assert!(e.contains("already used"), "{e}");
    chunk(&c, &target, 4, b"two", true, &token).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"one two");
    let names: Vec<String> =
        std::fs::read_dir(&d.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(names.iter().all(|n| n.len() <= 255), "{names:?}");

    let staged = d.s(&"z".repeat(255));
    let mut req = supermachine_agent_proto::ExecRequest::new(["cat", &staged]);
    req.stage_files.push(supermachine_agent_proto::StageFile {
        path: staged.clone(),
        data_b64: supermachine_agent_proto::b64::encode(b"staged"),
        mode: None,
    });
    let out = c.exec(&req, None).unwrap();
    assert_eq!((out.status.code, out.stdout.as_slice()), (0, &b"staged"[..]));
}

#[test]
fn a_chunk_waits_for_a_lock_that_outlives_the_previous_chunk_by_a_moment() {
    // The previous chunk's lock can still be held for a moment after its reply: a child the
    // agent forked for an exec holds a copy of the fd until its execve. The next chunk waits
    // for it instead of failing with "being written now" (found by scripts/agent-fuzz.sh).
    let d = TempDir::new("lockwait");
    let c = stdio_client(&d, Opts::default());
    let target = d.s("f");
    chunk(&c, &target, 0, b"one ", false, "tok").unwrap();
    let tmp = std::fs::File::open(d.path(".f.sm-chunk.tok")).unwrap();
    // SAFETY: flock on an open fd.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&tmp), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(tmp);
    });
    chunk(&c, &target, 4, b"two", true, "tok").unwrap();
    holder.join().unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"one two");

    // The holder fails half-way instead and abandons the upload (removes its file) while the
    // next chunk waits: that chunk must not be written into the removed file.
    chunk(&c, &target, 0, b"one ", false, "tok2").unwrap();
    let tmp_path = d.path(".f.sm-chunk.tok2");
    let tmp = std::fs::File::open(&tmp_path).unwrap();
    // SAFETY: flock on an open fd.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&tmp), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let holder = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(500));
        std::fs::remove_file(&tmp_path).unwrap();
        drop(tmp);
    });
    let e = agent_err(chunk(&c, &target, 4, b"two", true, "tok2"));
    holder.join().unwrap();
    assert!(e.contains("no upload in progress"), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"one two");
}
