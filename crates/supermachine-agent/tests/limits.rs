//! Resource limits of the listening agent: first-frame timeout and connection cap.

mod common;

use common::*;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use supermachine_agent_proto::FrameType;

/// Every frame the agent sends on `s` until it closes (or `secs` pass).
fn frames_until_close(s: &mut UnixStream, secs: u64) -> Vec<supermachine_agent_proto::Frame> {
    s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
    read_all_frames(s)
}

#[test]
fn connections_without_a_complete_first_frame_are_closed_after_the_timeout() {
    let d = TempDir::new("firstframe");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let t = Instant::now();
    let silent = agent.connect();
    let mut partial_header = agent.connect();
    partial_header.write_all(&[0xfe, 0, 0]).unwrap();
    let mut partial_payload = agent.connect();
    partial_payload.write_all(&[0xfe, 0, 0, 0, 100, b'{', b'"']).unwrap();
    let hs: Vec<_> = [silent, partial_header, partial_payload]
        .into_iter()
        .map(|mut s| std::thread::spawn(move || frames_until_close(&mut s, 40)))
        .collect();
    for h in hs {
        let frames = h.join().unwrap();
        assert_eq!(frames.len(), 1, "{frames:?}");
        assert_eq!(frames[0].kind, FrameType::Error);
        let msg = String::from_utf8_lossy(&frames[0].payload);
        assert!(msg.contains("first frame") && msg.contains("10 s"), "{msg}");
    }
    assert!(t.elapsed() < Duration::from_secs(40));
    // The agent still serves.
    assert!(agent.client().probe().unwrap().protocol >= 5);
}

#[test]
fn connections_over_the_cap_get_an_error_and_threads_stay_bounded() {
    const CAP: usize = 128;
    let d = TempDir::new("cap");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let apid = agent.agent_pid().expect("agent running");
    let mut idle = Vec::new();
    let mut refused = 0;
    for _ in 0..1000 {
        let mut s = agent.connect();
        if idle.len() < CAP {
            idle.push(s);
            continue;
        }
        let frames = frames_until_close(&mut s, 5);
        assert_eq!(frames.len(), 1, "connection {} over the cap: {frames:?}", idle.len() + refused);
        let msg = String::from_utf8_lossy(&frames[0].payload);
        assert!(
            frames[0].kind == FrameType::Error && msg.contains("agent busy") && msg.contains("128 connections"),
            "{msg}"
        );
        refused += 1;
    }
    assert_eq!(refused, 1000 - CAP);
    let threads = proc_status_kib(apid, "Threads:").unwrap();
    let rss = proc_status_kib(apid, "VmRSS:").unwrap();
    let hwm = proc_status_kib(apid, "VmHWM:").unwrap();
    eprintln!(
        "{} idle connections + {refused} refused: agent {threads} threads, VmRSS {rss} KiB, VmHWM {hwm} KiB",
        idle.len()
    );
    assert!(threads <= CAP as u64 + 4, "{threads} threads");
    // Once they close, their slots are free again.
    drop(idle);
    assert!(wait_until(Duration::from_secs(10), || proc_status_kib(apid, "Threads:").unwrap() <= 4));
    assert!(agent.client().probe().unwrap().protocol >= 5);
}

#[test]
fn a_hundred_concurrent_execs_keep_the_agent_small() {
    let d = TempDir::new("execs");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let apid = agent.agent_pid().expect("agent running");
    let base = proc_status_kib(apid, "VmHWM:").unwrap();
    let script = "echo started; head -c 200000 /dev/zero | tr '\\0' x; sleep 2; echo done";
    let execs: Vec<_> = (0..100)
        .map(|_| {
            let sock = agent.socket.clone();
            std::thread::spawn(move || {
                let c = supermachine_agent_client::Client::new(move || UnixStream::connect(&sock));
                c.exec(&supermachine_agent_proto::ExecRequest::new(["sh", "-c", script]), Some(b"input")).unwrap()
            })
        })
        .collect();
    let mut threads = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        threads = threads.max(proc_status_kib(apid, "Threads:").unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    for h in execs {
        let out = h.join().unwrap();
        assert_eq!((out.status.code, out.stdout.len()), (0, "started\n".len() + 200_000 + "done\n".len()));
    }
    let hwm = proc_status_kib(apid, "VmHWM:").unwrap();
    eprintln!("100 concurrent execs: agent VmHWM {hwm} KiB (at start {base} KiB), up to {threads} threads");
    assert!(hwm < base + 16 * 1024, "agent peak RSS {hwm} KiB (at start {base} KiB)");
}
