//! Exec sessions against the real agent binary in `--exec-stdio` mode (sandboxed).

mod common;

use common::*;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};
use supermachine_agent_client::{Event, Exec, ExecInput};
use supermachine_agent_proto::{self as proto, ExecRequest, FrameType};

fn sh(script: &str) -> ExecRequest {
    ExecRequest::new(["sh", "-c", script])
}

#[test]
fn echo_reports_output_exit_code_and_peak_rss() {
    let d = TempDir::new("echo");
    let c = stdio_client(&d, Opts::default());
    let out = c.exec(&ExecRequest::new(["echo", "hi"]), None).unwrap();
    assert_eq!(out.stdout, b"hi\n");
    assert!(out.stderr.is_empty());
    assert_eq!(out.status.code, 0);
    let rss = out.status.peak_rss_kib.expect("EXIT carries peak RSS");
    assert!(rss > 0 && rss < 1 << 20, "peak rss {rss} KiB");
}

#[test]
fn exit_codes_and_stderr() {
    let d = TempDir::new("exit");
    let c = stdio_client(&d, Opts::default());
    let out = c.exec(&sh("echo out; echo err >&2; exit 3"), None).unwrap();
    assert_eq!((out.stdout.as_slice(), out.stderr.as_slice(), out.status.code), (&b"out\n"[..], &b"err\n"[..], 3));
    // killed by a signal: 128 + signal, as a shell reports it
    let out = c.exec(&sh("kill -9 $$"), None).unwrap();
    assert_eq!(out.status.code, 137);
    // command not found / not executable
    let out = c.exec(&ExecRequest::new(["definitely-not-a-command-xyz"]), None).unwrap();
    assert_eq!(out.status.code, 127);
    assert!(String::from_utf8_lossy(&out.stderr).contains("command not found"), "{out:?}");
    std::fs::write(d.path("noexec"), "x").unwrap();
    let out = c.exec(&ExecRequest::new([d.s("noexec")]), None).unwrap();
    assert_eq!(out.status.code, 126, "{out:?}");
}

#[test]
fn env_and_cwd_are_honoured() {
    let d = TempDir::new("env");
    let c = stdio_client(&d, Opts::default());
    let req = sh("echo \"$FOO|$PWD|$PPID\"; test -n \"$PATH\"").env("FOO", "bar baz").cwd(d.s("run"));
    let out = c.exec(&req, None).unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = s.trim().split('|').collect();
    assert_eq!(parts[0], "bar baz");
    assert_eq!(parts[1], d.s("run"));
    // The agent is not PID 1 in the sandbox (sh is): it is pid 2 in the namespace.
    assert_ne!(parts[2], "1", "the agent must not be PID 1 in tests");
    assert_eq!(out.status.code, 0);
    // a cwd that does not exist
    let out = c.exec(&ExecRequest::new(["true"]).cwd("/nonexistent-dir-xyz"), None).unwrap();
    assert_ne!(out.status.code, 0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("chdir /nonexistent-dir-xyz"), "{out:?}");
}

#[test]
fn stdin_streaming_and_eof() {
    let d = TempDir::new("stdin");
    let c = stdio_client(&d, Opts::default());
    let out = c.exec(&ExecRequest::new(["cat"]), Some(b"abc\ndef")).unwrap();
    assert_eq!(out.stdout, b"abc\ndef");
    assert_eq!(out.status.code, 0);
    // EOF alone
    let out = c.exec(&ExecRequest::new(["wc", "-c"]), Some(b"")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");

    // 24 MiB through cat, fed from another thread while output is read
    let agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let mut input = ExecInput::new(agent.writer());
    let exec = Exec::start(agent, &ExecRequest::new(["sha256sum"])).unwrap();
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i * 7 + (i >> 13)) as u8).collect();
    let expect = {
        let mut p = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(p.stdin.as_mut().unwrap(), &data).unwrap();
        drop(p.stdin.take());
        p.wait_with_output().unwrap().stdout
    };
    let feeder = std::thread::spawn(move || {
        input.send_stdin(&data).unwrap();
        input.close_stdin().unwrap();
    });
    let out = exec.wait_output().unwrap();
    feeder.join().unwrap();
    assert_eq!(out.stdout, expect);
}

#[test]
fn stdin_half_close_is_eof_not_disconnect() {
    // Closing only the agent's input (after the request) is stdin EOF; output still arrives.
    let d = TempDir::new("halfclose");
    let mut agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let req = serde_json::to_vec(&sh("cat; echo done")).unwrap();
    proto::write_frame(&mut agent, FrameType::Request, &req).unwrap();
    proto::write_frame(&mut agent, FrameType::Stdin, b"x").unwrap();
    agent.stdin.lock().unwrap().take();
    let frames = read_all_frames(&mut agent);
    let out: Vec<u8> = frames.iter().filter(|f| f.kind == FrameType::Stdout).flat_map(|f| f.payload.clone()).collect();
    assert_eq!(out, b"xdone\n");
    assert_eq!(frames.last().unwrap().kind, FrameType::Exit);
}

#[test]
fn tty_mode_with_resize() {
    let d = TempDir::new("tty");
    let agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let req = sh("tty; stty size; read x; stty size; echo got:$x").tty(80, 24);
    let mut e = Exec::start(agent, &req).unwrap();
    let mut out = Vec::new();
    // wait for the first `stty size`
    while !String::from_utf8_lossy(&out).contains("24 80") {
        match e.next_event().unwrap() {
            Event::Stdout(b) => out.extend(b),
            other => panic!("unexpected {other:?} after {:?}", String::from_utf8_lossy(&out)),
        }
    }
    e.resize(100, 40).unwrap();
    e.send_stdin(b"hello\n").unwrap();
    let status = loop {
        match e.next_event().unwrap() {
            Event::Stdout(b) => out.extend(b),
            Event::Exit(s) => break s,
            other => panic!("{other:?}"),
        }
    };
    let s = String::from_utf8_lossy(&out);
    assert!(s.contains("/dev/pts/"), "{s}");
    assert!(s.contains("40 100"), "resize not applied: {s}");
    assert!(s.contains("got:hello"), "{s}");
    assert!(s.contains("\r\n"), "tty output uses CRLF: {s}");
    assert_eq!(status.code, 0);

    // stdin EOF on a tty is ^D: cat ends
    let c = stdio_client(&d, Opts::default());
    let out = c.exec(&ExecRequest::new(["cat"]).tty(80, 24), Some(b"line\n")).unwrap();
    assert_eq!(out.status.code, 0);
    assert!(String::from_utf8_lossy(&out.stdout).matches("line").count() >= 1);
    // stderr goes to the tty too
    let out = c.exec(&sh("echo e >&2").tty(80, 24), None).unwrap();
    assert!(out.stderr.is_empty());
    assert_eq!(out.stdout, b"e\r\n");
}

#[test]
fn large_stdout_streams_with_bounded_agent_memory() {
    const TOTAL: usize = 64 << 20;
    let d = TempDir::new("big");
    let agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let child_pid = agent.child.id();
    // Hold the exec open after the output so the agent's memory can be read while it runs.
    let req = sh(&format!("head -c {TOTAL} /dev/zero; sleep 1"));
    let mut e = Exec::start(agent, &req).unwrap();
    let mut got = 0usize;
    let mut agent_pid = None;
    let mut max_rss = 0;
    let t = Instant::now();
    let status = loop {
        match e.next_event().unwrap() {
            Event::Stdout(b) => {
                assert!(b.iter().all(|&x| x == 0));
                got += b.len();
                // a slow reader at the start: the agent must block, not buffer
                if got < 8 << 20 {
                    std::thread::sleep(Duration::from_millis(2));
                }
                if agent_pid.is_none() {
                    agent_pid = find_descendant(child_pid, &agent_comm());
                }
                if let Some(p) = agent_pid {
                    max_rss = max_rss.max(proc_status_kib(p, "VmRSS:").unwrap_or(0));
                }
                if got == TOTAL {
                    if let Some(p) = agent_pid {
                        tx.send(proc_status_kib(p, "VmHWM:")).unwrap();
                    }
                }
            }
            Event::Exit(s) => break s,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(got, TOTAL);
    assert_eq!(status.code, 0);
    let hwm = rx.recv_timeout(Duration::from_secs(1)).unwrap().expect("agent VmHWM");
    eprintln!("64 MiB in {:?}; agent VmHWM {hwm} KiB, sampled VmRSS max {max_rss} KiB", t.elapsed());
    assert!(hwm < 16 * 1024, "agent peak RSS {hwm} KiB: output is buffered without bound");
}

#[test]
fn signals_are_forwarded() {
    let d = TempDir::new("sig");
    let agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let mut e =
        Exec::start(agent, &sh("trap 'echo term; exit 7' TERM; echo ready; while :; do sleep 0.05; done")).unwrap();
    assert_eq!(e.next_event().unwrap(), Event::Stdout(b"ready\n".to_vec()));
    e.signal(libc::SIGTERM).unwrap();
    let out = e.wait_output().unwrap();
    assert_eq!(out.stdout, b"term\n");
    assert_eq!(out.status.code, 7);

    let agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let mut e = Exec::start(agent, &ExecRequest::new(["sleep", "30"])).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    e.signal(libc::SIGKILL).unwrap();
    let t = Instant::now();
    let out = e.wait_output().unwrap();
    assert_eq!(out.status.code, 128 + 9);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn double_forked_orphans_are_reaped() {
    // The inner sh exits at once; its background sleep is orphaned and must be reparented to the
    // agent (a subreaper when not PID 1) and reaped by it: no zombie left behind.
    let d = TempDir::new("orphan");
    let c = stdio_client(&d, Opts::default());
    let script = r#"
        sh -c 'sleep 0.3 >/dev/null 2>&1 & echo $! > bgpid'
        bg=$(cat bgpid)
        ppid=$(cut -d' ' -f4 /proc/$bg/stat)
        echo "agent=$PPID orphan_parent=$ppid"
        sleep 1
        if [ -e /proc/$bg ]; then echo "left: $(cut -d' ' -f3 /proc/$bg/stat)"; else echo reaped; fi
        for f in /proc/[0-9]*/stat; do read -r l < $f 2>/dev/null && case "$l" in *") Z "*) echo "zombie: $l";; esac; done
    "#;
    let out = c.exec(&sh(script).cwd(d.s("run")), None).unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let first = s.lines().next().unwrap();
    let agent = first.split(' ').next().unwrap().trim_start_matches("agent=");
    assert_eq!(first, format!("agent={agent} orphan_parent={agent}"), "orphan not reparented to the agent: {s}");
    assert!(s.contains("reaped"), "orphan not reaped: {s}");
    assert!(!s.contains("zombie"), "{s}");
    assert_eq!(out.status.code, 0);
}

#[test]
fn disconnect_mid_exec_kills_the_process() {
    let d = TempDir::new("disc");
    // The namespace outlives the agent by a few seconds so that only the agent can have killed
    // the sleep.
    let mut agent = StdioAgent::spawn(&d, &Opts { linger_secs: 5, ..Opts::default() }).unwrap();
    let marker = format!("{}", 400000 + std::process::id() % 100000);
    let req = serde_json::to_vec(&sh(&format!("echo started; exec sleep {marker}"))).unwrap();
    proto::write_frame(&mut agent, FrameType::Request, &req).unwrap();
    let f = proto::read_frame(&mut agent).unwrap().unwrap();
    assert_eq!(f.payload, b"started\n");
    let root = agent.child.id();
    let sleeping = || {
        descendants(root).into_iter().any(|p| {
            p.2 == "sleep"
                && std::fs::read(format!("/proc/{}/cmdline", p.0))
                    .map(|c| String::from_utf8_lossy(&c).contains(&marker))
                    .unwrap_or(false)
        })
    };
    assert!(wait_until(Duration::from_secs(3), sleeping), "sleep not running");
    agent.disconnect();
    assert!(wait_until(Duration::from_secs(3), || !sleeping()), "process still running after the host disconnected");
    // and the agent itself finished the session without crashing
    assert!(wait_until(Duration::from_secs(3), || find_descendant(root, &agent_comm()).is_none()));
}

#[test]
fn stage_files_and_chain() {
    let d = TempDir::new("stage");
    let c = stdio_client(&d, Opts::default());
    let script = d.s("sub/dir/run.sh");
    let req = ExecRequest::new([script.as_str()])
        .stage(&script, b"#!/bin/sh\necho staged \"$1\"\n", Some(0o755))
        .stage(d.s("data.txt"), b"payload", None)
        .then(["cat", &d.s("data.txt")])
        .then(["sh", "-c", "echo; stat -c %a \"$0\"", &d.s("data.txt")]);
    let out = c.exec(&req, None).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "staged \npayload\n644\n");
    assert_eq!(out.status.code, 0);

    // && semantics: stop at the first failure and report its code
    let req = ExecRequest::new(["echo", "a"]).then(["sh", "-c", "exit 4"]).then(["echo", "never"]);
    let out = c.exec(&req, None).unwrap();
    assert_eq!((out.stdout.as_slice(), out.status.code), (&b"a\n"[..], 4));
    // a missing command in the chain stops it with 127
    let req = ExecRequest::new(["true"]).then(["no-such-command-xyz"]).then(["echo", "never"]);
    let out = c.exec(&req, None).unwrap();
    assert_eq!(out.status.code, 127);
    assert!(out.stdout.is_empty());
    // a stage file that cannot be written is an ERROR
    let req = ExecRequest::new(["true"]).stage("/proc/version/x", b"", None);
    let err = c.exec(&req, None).unwrap_err().to_string();
    assert!(err.contains("stage_files[0]") && err.contains("/proc/version/x"), "{err}");
    let mut req = ExecRequest::new(["true"]);
    req.stage_files.push(proto::StageFile { path: d.s("bad"), data_b64: "!!".into(), mode: None });
    let err = c.exec(&req, None).unwrap_err().to_string();
    assert!(err.contains("invalid base64"), "{err}");
}

#[test]
fn frames_during_exec_that_do_not_belong_get_an_error_but_the_exec_goes_on() {
    let d = TempDir::new("midexec");
    let mut agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    proto::write_frame(&mut agent, FrameType::Request, &serde_json::to_vec(&ExecRequest::new(["cat"])).unwrap())
        .unwrap();
    proto::write_frame(&mut agent, FrameType::Control, br#"{"action":"probe"}"#).unwrap();
    proto::write_frame(&mut agent, FrameType::Resize, &[1, 2, 3]).unwrap();
    proto::write_frame(&mut agent, FrameType::Signal, &[]).unwrap();
    std::io::Write::write_all(&mut agent, &[0x42, 0, 0, 0, 1, 0]).unwrap();
    proto::write_frame(&mut agent, FrameType::Resize, &proto::resize_payload(10, 10)).unwrap(); // no tty: ignored
    proto::write_frame(&mut agent, FrameType::Stdin, b"still here").unwrap();
    proto::write_frame(&mut agent, FrameType::Stdin, b"").unwrap();
    let frames = read_all_frames(&mut agent);
    let errors: Vec<String> = frames
        .iter()
        .filter(|f| f.kind == FrameType::Error)
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].contains("unexpected CONTROL"), "{errors:?}");
    assert!(errors[1].contains("RESIZE payload must be 4 bytes"), "{errors:?}");
    assert!(errors[2].contains("SIGNAL payload"), "{errors:?}");
    assert!(errors[3].contains("unknown frame type 0x42"), "{errors:?}");
    let out: Vec<u8> = frames.iter().filter(|f| f.kind == FrameType::Stdout).flat_map(|f| f.payload.clone()).collect();
    assert_eq!(out, b"still here");
    let last = frames.last().unwrap();
    assert_eq!(last.kind, FrameType::Exit);
    assert_eq!(proto::parse_exit(&last.payload).unwrap().0, 0);

    // an oversized frame mid-exec ends the input (stdin EOF) but the exec still reports EXIT
    let mut agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    proto::write_frame(&mut agent, FrameType::Request, &serde_json::to_vec(&ExecRequest::new(["cat"])).unwrap())
        .unwrap();
    std::io::Write::write_all(&mut agent, &[0, 0x7f, 0, 0, 0]).unwrap();
    let frames = read_all_frames(&mut agent);
    assert!(String::from_utf8_lossy(&frames[0].payload).contains("2130706432"), "{frames:?}");
    assert_eq!(frames.last().unwrap().kind, FrameType::Exit);
    let mut rest = Vec::new();
    let _ = agent.read_to_end(&mut rest);
}

#[test]
fn signal_is_not_stuck_behind_stdin_the_process_does_not_read() {
    // 1 MiB of STDIN to a process that never reads it, then SIGNAL 9: the signal is decoded
    // and delivered at once (the stdin waits in a bounded queue), with and without a terminal.
    for tty in [false, true] {
        let d = TempDir::new("hol");
        let agent = StdioAgent::spawn(&d, &Opts::default()).unwrap();
        let mut input = ExecInput::new(agent.writer());
        let req = if tty { ExecRequest::new(["sleep", "60"]).tty(80, 24) } else { ExecRequest::new(["sleep", "60"]) };
        let exec = Exec::start(agent, &req).unwrap();
        let feeder = std::thread::spawn(move || {
            input.send_stdin(&vec![b'x'; 1 << 20]).unwrap();
            input.signal(libc::SIGKILL).unwrap();
        });
        let out = within(30, &format!("EXIT after SIGNAL behind 1 MiB of stdin (tty {tty})"), move || {
            exec.wait_output().unwrap()
        });
        assert_eq!(out.status.code, 128 + 9, "tty {tty}");
        feeder.join().unwrap();
    }
}

#[test]
fn on_a_tty_half_close_and_an_oversized_frame_are_stdin_eof() {
    let d = Arc::new(TempDir::new("ttyeof"));
    // The host half-closes after its input: cat on the terminal sees EOF (^D) and ends.
    let d1 = d.clone();
    let frames = within(30, "tty exec after a half-close", move || {
        let mut agent = StdioAgent::spawn(&d1, &Opts::default()).unwrap();
        let req = serde_json::to_vec(&ExecRequest::new(["cat"]).tty(80, 24)).unwrap();
        proto::write_frame(&mut agent, FrameType::Request, &req).unwrap();
        proto::write_frame(&mut agent, FrameType::Stdin, b"hello\n").unwrap();
        agent.stdin.lock().unwrap().take();
        read_all_frames(&mut agent)
    });
    let out: Vec<u8> = frames.iter().filter(|f| f.kind == FrameType::Stdout).flat_map(|f| f.payload.clone()).collect();
    assert!(String::from_utf8_lossy(&out).contains("hello"), "{out:?}");
    let last = frames.last().unwrap();
    assert_eq!((last.kind, proto::parse_exit(&last.payload).unwrap().0), (FrameType::Exit, 0));
    // An oversized frame ends the input: that is EOF too.
    let d1 = d.clone();
    let frames = within(30, "tty exec after an oversized frame", move || {
        let mut agent = StdioAgent::spawn(&d1, &Opts::default()).unwrap();
        let req = serde_json::to_vec(&ExecRequest::new(["cat"]).tty(80, 24)).unwrap();
        proto::write_frame(&mut agent, FrameType::Request, &req).unwrap();
        proto::write_frame(&mut agent, FrameType::Stdin, b"hi\n").unwrap();
        std::io::Write::write_all(&mut agent, &[0, 0x7f, 0, 0, 0]).unwrap();
        read_all_frames(&mut agent)
    });
    let errors: Vec<String> = frames
        .iter()
        .filter(|f| f.kind == FrameType::Error)
        .map(|f| String::from_utf8_lossy(&f.payload).into_owned())
        .collect();
    assert!(errors.len() == 1 && errors[0].contains("2130706432"), "{errors:?}");
    let last = frames.last().unwrap();
    assert_eq!((last.kind, proto::parse_exit(&last.payload).unwrap().0), (FrameType::Exit, 0));
}

#[test]
fn nothing_follows_exit_even_with_frames_still_coming() {
    // The host keeps sending frames that each earn an ERROR "(ignored)" while `true` exits: the
    // input thread must not send one after EXIT (found by scripts/agent-fuzz.sh).
    let d = TempDir::new("afterexit");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    for round in 0..20 {
        let mut s = agent.connect();
        let mut w = s.try_clone().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = proto::write_frame(
                &mut w,
                FrameType::Request,
                &serde_json::to_vec(&ExecRequest::new(["true"])).unwrap(),
            );
            let t = Instant::now();
            while t.elapsed() < Duration::from_millis(300) {
                if std::io::Write::write_all(&mut w, &[0x42, 0, 0, 0, 0].repeat(64)).is_err() {
                    break;
                }
            }
            let _ = w.shutdown(std::net::Shutdown::Write);
        });
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let frames = read_all_frames(&mut s);
        feeder.join().unwrap();
        let exit = frames.iter().position(|f| f.kind == FrameType::Exit).expect("an EXIT");
        assert_eq!(exit, frames.len() - 1, "round {round}: {} frames after EXIT", frames.len() - 1 - exit);
    }
}
