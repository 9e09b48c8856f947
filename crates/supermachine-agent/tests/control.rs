//! CONTROL actions and bad input against the real agent binary (sandboxed).

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;
use supermachine_agent_client::{control_raw, Error, Exec};
use supermachine_agent_proto::{self as proto, ControlRequest, ExecRequest, FrameType};

fn agent_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Agent(m)) => m,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

fn raw(d: &TempDir, bytes: &[u8]) -> Vec<proto::Frame> {
    let mut a = StdioAgent::spawn(d, &Opts::default()).unwrap();
    a.write_all(bytes).unwrap();
    a.stdin.lock().unwrap().take();
    let frames = read_all_frames(&mut a);
    let status = a.wait_exit(Duration::from_secs(5)).expect("agent exits after the session");
    assert!(status.success(), "agent did not end cleanly: {status:?}");
    frames
}

fn one_error(frames: &[proto::Frame], kind: FrameType) -> String {
    assert_eq!(frames.len(), 1, "{frames:?}");
    assert_eq!(frames[0].kind, kind, "{frames:?}");
    String::from_utf8_lossy(&frames[0].payload).into_owned()
}

#[test]
fn probe_reports_protocol_and_capabilities() {
    let d = TempDir::new("probe");
    let c = stdio_client(&d, Opts::default());
    let p = c.probe().unwrap();
    assert!(p.protocol >= 5);
    for cap in ["reseed", "port_forward", "stat", "mkdir", "remove", "smpark", "tty"] {
        assert!(p.capabilities.iter().any(|c| c == cap), "{cap} missing from {:?}", p.capabilities);
    }
    assert_eq!(p.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
}

#[test]
fn unknown_action_has_the_upstream_text() {
    let d = TempDir::new("unknown");
    let mut a = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let ack = control_raw(&mut a, br#"{"action":"frobnicate"}"#).unwrap();
    assert_eq!(serde_json::Value::Object(ack), serde_json::json!({"ok": false, "error": "unknown CONTROL action"}));
    let frames = raw(&d, &proto::encode_frame(FrameType::Control, br#"{"action":"nope"}"#));
    assert_eq!(one_error(&frames, FrameType::Control), r#"{"ok":false,"error":"unknown CONTROL action"}"#);
}

#[test]
fn bad_input_is_named_and_never_crashes() {
    let d = TempDir::new("bad");
    // oversized length (payload not even sent)
    let e = one_error(&raw(&d, &[0xff, 0x01, 0x00, 0x00, 0x01]), FrameType::Error);
    assert!(e.contains("16777217") && e.contains("16777216"), "{e}");
    // truncated header / payload
    let e = one_error(&raw(&d, &[0xff, 0, 0]), FrameType::Error);
    assert!(e.contains("truncated"), "{e}");
    let e = one_error(&raw(&d, &[0xff, 0, 0, 0, 50, b'{']), FrameType::Error);
    assert!(e.contains("truncated") && e.contains("55"), "{e}");
    // unknown type
    let e = one_error(&raw(&d, &[0x42, 0, 0, 0, 0]), FrameType::Error);
    assert!(e.contains("unknown frame type 0x42"), "{e}");
    // wrong first frame
    for k in
        [FrameType::Stdin, FrameType::Stdout, FrameType::Resize, FrameType::Signal, FrameType::Exit, FrameType::Error]
    {
        let e = one_error(&raw(&d, &proto::encode_frame(k, b"")), FrameType::Error);
        assert!(e.contains("first frame must be REQUEST or CONTROL") && e.contains(k.name()), "{e}");
    }
    // REQUEST: invalid JSON, missing field, wrong type, empty argv
    let e = one_error(&raw(&d, &proto::encode_frame(FrameType::Request, b"{\"argv\": [")), FrameType::Error);
    assert!(e.contains("invalid JSON") && e.contains("EOF"), "{e}");
    let e = one_error(&raw(&d, &proto::encode_frame(FrameType::Request, br#"{"cwd":"/"}"#)), FrameType::Error);
    assert!(e.contains("missing field `argv`"), "{e}");
    let e = one_error(&raw(&d, &proto::encode_frame(FrameType::Request, br#"{"argv":[1]}"#)), FrameType::Error);
    assert!(e.contains("invalid type"), "{e}");
    let e = one_error(&raw(&d, &proto::encode_frame(FrameType::Request, br#"{"argv":[]}"#)), FrameType::Error);
    assert!(e.contains("argv"), "{e}");
    // CONTROL: invalid JSON, missing action, missing field
    let e = one_error(&raw(&d, &proto::encode_frame(FrameType::Control, b"not json")), FrameType::Control);
    assert!(e.starts_with(r#"{"ok":false,"error":"invalid JSON: expected"#), "{e}");
    let e = one_error(&raw(&d, &proto::encode_frame(FrameType::Control, br#"{"path":"/"}"#)), FrameType::Control);
    assert!(e.contains("missing field `action`"), "{e}");
    let e = one_error(
        &raw(&d, &proto::encode_frame(FrameType::Control, br#"{"action":"write_file","path":"/x"}"#)),
        FrameType::Control,
    );
    assert!(e.contains("missing field `data_b64`"), "{e}");
    // empty connection: nothing at all
    assert!(raw(&d, b"").is_empty());
}

#[test]
fn write_and_read_files() {
    let d = TempDir::new("files");
    let c = stdio_client(&d, Opts::default());
    let p = d.s("a/b/file.txt");
    c.write_file(&p, b"hello", Some(0o600)).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"hello");
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o600);
    // overwrite keeps the mode when none is given; no temp files are left behind
    c.write_file(&p, b"world!", None).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read_dir(d.path("a/b")).unwrap().count(), 1);
    assert_eq!(c.read_file(&p, None).unwrap(), b"world!");
    assert_eq!(c.read_file(&p, Some(6)).unwrap(), b"world!");
    let e = agent_err(c.read_file(&p, Some(5)));
    assert!(e.contains("6 bytes") && e.contains("max_bytes 5"), "{e}");
    let e = agent_err(c.read_file(&d.s("missing"), None));
    assert!(e.contains(&d.s("missing")) && e.contains("No such file"), "{e}");
    // /proc files (size 0 in stat) are read fully
    assert!(String::from_utf8(c.read_file("/proc/self/status", None).unwrap()).unwrap().contains("Pid:"));
    let e = agent_err(c.control(&ControlRequest::WriteFile { path: d.s("x"), data_b64: "@@".into(), mode: None }));
    assert!(e.contains("invalid base64"), "{e}");
    let e = agent_err(c.write_file("/proc/version", b"x", None));
    assert!(e.contains("write_file /proc/version"), "{e}");

    // read_file_chunk
    let (data, total) = c.read_file_chunk(&p, 2, 3, None).unwrap();
    assert_eq!((data.as_slice(), total), (&b"rld"[..], 6));
    let (data, total) = c.read_file_chunk(&p, 10, 3, None).unwrap();
    assert_eq!((data.len(), total), (0, 6));
    let e = agent_err(c.read_file_chunk(&p, 0, 3, Some(4)));
    assert!(e.contains("max_bytes 4"), "{e}");
}

#[test]
fn chunked_upload_and_download_of_a_large_file() {
    let d = TempDir::new("chunks");
    let c = stdio_client(&d, Opts::default());
    let data: Vec<u8> = (0..(20u32 << 20) + 12345).map(|i| (i ^ (i >> 11)) as u8).collect();
    let p = d.s("big.bin");
    assert_eq!(c.write_file_chunked(&p, data.as_slice(), Some(0o640)).unwrap(), data.len() as u64);
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o640);
    assert!(std::fs::read(&p).unwrap() == data);
    assert_eq!(
        std::fs::read_dir(&d.0)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains("sm-chunk"))
            .count(),
        0
    );
    let mut back = Vec::new();
    assert_eq!(c.read_file_chunked(&p, None, &mut back).unwrap(), data.len() as u64);
    assert!(back == data);
    // too large for read_file
    let e = agent_err(c.read_file(&p, None));
    assert!(e.contains("read_file_chunk"), "{e}");
    // a chunk at offset > 0 without an upload in progress
    let e = agent_err(c.control(&ControlRequest::WriteFileChunk {
        path: d.s("y"),
        offset: 8,
        data_b64: "AA==".into(),
        last: true,
        token: "nope".into(),
        mode: None,
    }));
    assert!(e.contains("no upload in progress"), "{e}");
    // the target does not appear before the last chunk
    c.control(&ControlRequest::WriteFileChunk {
        path: d.s("z"),
        offset: 0,
        data_b64: "AAAA".into(),
        last: false,
        token: "t1".into(),
        mode: None,
    })
    .unwrap();
    assert!(!exists(&d.path("z")));
    c.control(&ControlRequest::WriteFileChunk {
        path: d.s("z"),
        offset: 3,
        data_b64: "AQ==".into(),
        last: true,
        token: "t1".into(),
        mode: None,
    })
    .unwrap();
    assert_eq!(std::fs::read(d.path("z")).unwrap(), [0, 0, 0, 1]);
}

#[test]
fn stat_mkdir_remove() {
    let d = TempDir::new("fsops");
    let c = stdio_client(&d, Opts::default());
    let dir = d.s("x/y/z");
    let e = agent_err(c.mkdir(&dir, false, None));
    assert!(e.contains("mkdir") && e.contains("No such file"), "{e}");
    c.mkdir(&dir, true, Some(0o700)).unwrap();
    c.mkdir(&dir, true, None).unwrap(); // like mkdir -p
    assert!(agent_err(c.mkdir(&dir, false, None)).contains("exists"));
    let st = c.stat(&dir).unwrap();
    assert_eq!((st.kind.as_str(), st.mode & 0o7777), ("dir", 0o700));
    std::fs::write(d.path("x/f"), b"12345").unwrap();
    std::os::unix::fs::symlink("f", d.path("x/l")).unwrap();
    let st = c.stat(&d.s("x/f")).unwrap();
    assert_eq!((st.kind.as_str(), st.size), ("file", 5));
    assert!(st.mtime > 1_600_000_000);
    let md = std::fs::metadata(d.path("x/f")).unwrap();
    let (uid, gid) = seen_owner(&md);
    assert_eq!((st.uid, st.gid), (Some(uid), Some(gid)));
    assert_eq!(c.stat(&d.s("x/l")).unwrap().kind, "file");
    assert_eq!(c.lstat(&d.s("x/l")).unwrap().kind, "symlink");
    assert!(agent_err(c.stat(&d.s("nope"))).contains("No such file"));
    c.remove(&d.s("x/l"), false).unwrap();
    assert!(!exists(&d.path("x/l")));
    let e = agent_err(c.remove(&d.s("x"), false));
    assert!(e.contains("remove") && e.contains(&d.s("x")), "{e}");
    c.remove(&d.s("x"), true).unwrap();
    assert!(!exists(&d.path("x")));
    assert!(agent_err(c.remove(&d.s("x"), true)).contains("No such file"));
}

#[test]
fn sync_drop_caches_and_smpark_use_the_sandboxed_paths() {
    let d = TempDir::new("sysops");
    let c = stdio_client(&d, Opts::default());
    c.sync().unwrap();
    // drop_vfs_caches writes under --sys-root (never the host's /proc/sys in tests)
    assert!(agent_err(c.drop_vfs_caches()).contains("drop_caches"));
    std::fs::create_dir_all(d.path("sysroot/proc/sys/vm")).unwrap();
    std::fs::write(d.path("sysroot/proc/sys/vm/drop_caches"), b"").unwrap();
    c.drop_vfs_caches().unwrap();
    assert_eq!(std::fs::read(d.path("sysroot/proc/sys/vm/drop_caches")).unwrap(), b"3\n");

    let cpu = d.path("sysroot/sys/devices/system/cpu");
    for n in 0..4 {
        std::fs::create_dir_all(cpu.join(format!("cpu{n}"))).unwrap();
        if n > 0 {
            std::fs::write(cpu.join(format!("cpu{n}/online")), b"1").unwrap();
        }
    }
    std::fs::create_dir_all(cpu.join("cpufreq")).unwrap();
    std::fs::write(cpu.join("online"), b"0-3").unwrap();
    assert_eq!(c.smpark_park().unwrap(), [1, 2, 3]);
    for n in 1..4 {
        assert_eq!(std::fs::read(cpu.join(format!("cpu{n}/online"))).unwrap(), b"0");
    }
    assert_eq!(c.smpark_unpark().unwrap(), [1, 2, 3]);
    assert_eq!(std::fs::read(cpu.join("cpu2/online")).unwrap(), b"1");
    assert_eq!(std::fs::read(cpu.join("online")).unwrap(), b"0-3");
}

#[test]
fn sync_time_reaches_clock_settime_without_changing_the_host_clock() {
    // The agent runs without CAP_SYS_TIME, so clock_settime must fail with EPERM: that proves
    // the request was parsed and the call made, while the host clock cannot change. (The time
    // sent is "now" anyway.) Setting the clock for real is left to the VM tests.
    // setpriv (util-linux, like the unshare every agent test uses) drops the capability.
    let d = TempDir::new("time");
    let c = stdio_client(&d, Opts { drop_caps: Some("-sys_time".into()), ..Opts::default() });
    let e = agent_err(c.sync_time_now());
    assert!(e.contains("clock_settime") && e.contains("not permitted"), "{e}");
    let e = agent_err(c.control(&ControlRequest::DropVfsCaches));
    assert!(e.contains("drop_caches"), "{e}");
    let mut a = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let ack = control_raw(&mut a, br#"{"action":"sync_time"}"#).unwrap();
    assert!(ack["error"].as_str().unwrap().contains("missing field `host_unix_ns`"), "{ack:?}");
}

#[test]
fn reseed_feeds_the_kernel_rng() {
    let d = TempDir::new("reseed");
    let c = stdio_client(&d, Opts::default());
    let mut entropy = [0u8; 64];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut entropy).unwrap();
    if is_root() {
        c.reseed(&entropy).unwrap();
        c.reseed(&[]).unwrap();
    } else {
        assert!(agent_err(c.reseed(&entropy)).contains("reseed"));
    }
    // without CAP_SYS_ADMIN the ioctl is refused and the error says so
    let c2 = stdio_client(&d, Opts { drop_caps: Some("-sys_admin".into()), ..Opts::default() });
    let e = agent_err(c2.reseed(&entropy));
    assert!(e.contains("reseed") && e.contains("not permitted"), "{e}");
    assert!(agent_err(c.control(&ControlRequest::Reseed { data_b64: "*".into() })).contains("invalid base64"));
}

#[test]
fn port_forward_splices_to_a_guest_tcp_port() {
    let d = TempDir::new("pf");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got.to_ascii_uppercase()).unwrap();
    });
    let c = stdio_client(&d, Opts::default());
    let mut s = c.port_forward(port).unwrap();
    let payload = vec![b'a'; 3 << 20];
    s.write_all(&payload).unwrap();
    s.stdin.lock().unwrap().take(); // EOF towards the guest port
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back.iter().all(|&b| b == b'A'));
    server.join().unwrap();
    // nothing listening
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let e = agent_err(c.port_forward(dead).map(|_| ()));
    assert!(e.contains("port_forward") && e.contains("refused"), "{e}");
}

#[test]
fn listening_agent_serves_concurrent_connections_and_survives_bad_ones() {
    let d = TempDir::new("listen");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let c = agent.client();
    // a long exec holds one connection while others come and go
    let pidfile = d.s("run/supermachine-workload.pid");
    let script =
        format!("trap 'echo usr1; exit 9' USR1; echo $$ > {pidfile}; echo ready; while :; do sleep 0.05; done");
    let mut long = Exec::start(agent.connect(), &ExecRequest::new(["sh", "-c", &script])).unwrap();
    assert_eq!(long.next_event().unwrap(), supermachine_agent_client::Event::Stdout(b"ready\n".to_vec()));
    // bad connections
    for bad in [&[0xff, 0x7f, 0xff, 0xff, 0xff][..], &[0x99, 0, 0, 0, 0], &[0xfe, 0, 0, 0, 9, b'{'], b"\x01\x00"] {
        let mut s = agent.connect();
        s.write_all(bad).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let frames = read_all_frames(&mut s);
        assert_eq!(frames.len(), 1, "{bad:?}: {frames:?}");
        assert_eq!(frames[0].kind, FrameType::Error);
    }
    // someone connecting and leaving without a word
    drop(agent.connect());
    // parallel good ones
    let hs: Vec<_> = (0..4)
        .map(|i| {
            let sock = agent.socket.clone();
            std::thread::spawn(move || {
                let c = supermachine_agent_client::Client::new(move || std::os::unix::net::UnixStream::connect(&sock));
                c.exec(&ExecRequest::new(["echo", &i.to_string()]), None).unwrap().stdout
            })
        })
        .collect();
    for (i, h) in hs.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("{i}\n").as_bytes());
    }
    // control `signal` reaches the workload recorded in the pid file
    let pid = c.signal(libc::SIGUSR1).unwrap();
    assert!(pid > 1);
    let out = long.wait_output().unwrap();
    assert_eq!((out.stdout.as_slice(), out.status.code), (&b"usr1\n"[..], 9));
    std::fs::write(&pidfile, "").unwrap();
    assert!(agent_err(c.signal(15)).contains("no workload pid recorded"));
    std::fs::remove_file(&pidfile).unwrap();
    let e = agent_err(c.signal(15));
    assert!(e.contains("no workload pid recorded") && e.contains("No such file"), "{e}");
    std::fs::write(&pidfile, "999999").unwrap();
    assert!(agent_err(c.signal(15)).contains("No such process"));
    assert!(c.probe().unwrap().protocol >= 5);
    // agent is still alive and its RSS at idle is small
    let apid = agent.agent_pid().expect("agent running");
    let rss = proc_status_kib(apid, "VmRSS:").unwrap();
    assert!(rss < 8 * 1024, "idle RSS {rss} KiB");
    drop(c);
    let log = agent.stop();
    assert!(log.contains("listening on unix socket"), "{log}");
}

#[test]
fn hybrid_vsock_connect_retries_until_ok_then_speaks_the_protocol() {
    use std::os::unix::net::{UnixListener, UnixStream};
    use supermachine_agent_client::{connect_hybrid_vsock, Client, HybridVsock};
    let d = TempDir::new("hybrid");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let uds = d.path("vm.vsock");
    let listener = UnixListener::bind(&uds).unwrap();
    let target = agent.socket.clone();
    // A fake VMM: the first two connections end in EOF (guest not listening yet), later ones
    // answer OK and splice to the agent.
    std::thread::spawn(move || {
        for (i, s) in listener.incoming().enumerate() {
            let mut s = s.unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                line.push(b[0]);
            }
            assert_eq!(line, b"CONNECT 1028");
            if i < 2 {
                continue;
            }
            s.write_all(b"OK 7777\n").unwrap();
            let a = UnixStream::connect(&target).unwrap();
            let (mut s2, mut a2) = (s.try_clone().unwrap(), a.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s2, &mut a2);
                let _ = a2.shutdown(std::net::Shutdown::Write);
            });
            let (mut a, mut s) = (a, s);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut a, &mut s);
                let _ = s.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    let c = Client::new(HybridVsock::new(&uds, 1028, Duration::from_secs(10)));
    assert!(c.probe().unwrap().protocol >= 5);
    let out = c.exec(&ExecRequest::new(["echo", "via vsock"]), None).unwrap();
    assert_eq!(out.stdout, b"via vsock\n");
    // nothing there: gives up at the deadline with a useful error
    let t = std::time::Instant::now();
    let e = connect_hybrid_vsock(d.path("absent.sock"), 1028, Duration::from_millis(300)).unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(e.to_string().contains("absent.sock"), "{e}");
}
