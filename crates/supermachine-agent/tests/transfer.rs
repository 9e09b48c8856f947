//! Large transfers and large requests: the agent's memory stays bounded.

mod common;

use common::*;
use std::time::Instant;
use supermachine_agent_client::Error;
use supermachine_agent_proto::{self as proto, ExecRequest, FrameType};

fn agent_err<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::Agent(m)) => m,
        other => panic!("expected an agent error, got {other:?}"),
    }
}

#[test]
fn file_transfers_of_64_mib_each_way_keep_the_agent_small() {
    let d = TempDir::new("xfer");
    let agent = ListeningAgent::spawn(&d, &Opts::default());
    let c = agent.client();
    let apid = agent.agent_pid().expect("agent running");
    let base = proc_status_kib(apid, "VmHWM:").unwrap();
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i ^ (i >> 9)) as u8).collect();
    let p = d.s("big");
    let t = Instant::now();
    assert_eq!(c.write_file_chunked(&p, data.as_slice(), None).unwrap(), data.len() as u64);
    let up = t.elapsed();
    let mut back = Vec::new();
    assert_eq!(c.read_file_chunked(&p, None, &mut back).unwrap(), data.len() as u64);
    assert!(back == data);
    // The largest inline forms: write_file of 8 MiB, read_file of (12 MiB - 64 KiB).
    let inline = &data[..proto::MAX_INLINE_READ];
    c.write_file(&p, &data[..proto::CHUNK_SIZE], None).unwrap();
    std::fs::write(&p, inline).unwrap();
    assert!(c.read_file(&p, None).unwrap() == inline);
    let hwm = proc_status_kib(apid, "VmHWM:").unwrap();
    eprintln!("64 MiB up in {up:?}, down, inline 8/12 MiB: agent VmHWM {hwm} KiB (at start {base} KiB)");
    assert!(hwm < base + 8 * 1024, "agent peak RSS {hwm} KiB (at start {base} KiB): file data is buffered");
}

#[test]
fn requests_over_the_argument_limits_are_refused_at_once() {
    let d = TempDir::new("bigreq");
    let c = stdio_client(&d, Opts::default());
    // 3 MiB of argv: more than the 2 MiB the agent (and, by default, execve) takes.
    let big = "x".repeat(3 << 20);
    let e = agent_err(c.exec(&ExecRequest::new(["echo", &big]), None));
    assert!(e.contains("REQUEST") && e.contains("2097152"), "{e}");
    // 200,000 environment variables: answered (refused, naming the limit) without delay.
    let mut req = ExecRequest::new(["true"]);
    for i in 0..200_000 {
        req.env.insert(format!("V{i}"), "1".into());
    }
    let e = within(20, "REQUEST with 200,000 env vars", move || {
        agent_err(stdio_client(&TempDir::new("env200k"), Opts::default()).exec(&req, None))
    });
    assert!(e.contains("65536 strings"), "{e}");
}

#[test]
fn a_large_environment_is_handled_in_linear_time() {
    // 30,000 variables (the old agent searched its list once per variable: ~1 minute here).
    let mut req = ExecRequest::new(["sh", "-c", "echo $V29999 $V0; env | grep -c '^V'"]);
    for i in 0..30_000 {
        req.env.insert(format!("V{i}"), format!("v{i}"));
    }
    let out = within(20, "REQUEST with 30,000 env vars", move || {
        stdio_client(&TempDir::new("env30k"), Opts::default()).exec(&req, None).unwrap()
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v29999 v0\n30000\n");
}

#[test]
fn a_truncated_request_with_stage_files_leaves_nothing_behind() {
    let d = TempDir::new("stagecut");
    let mut a = StdioAgent::spawn(&d, &Opts::default()).unwrap();
    let json = format!(r#"{{"argv":["true"],"stage_files":[{{"path":"{}","data_b64":"AAAA"#, d.s("staged"));
    let mut frame = proto::header(FrameType::Request, json.len() + 100).to_vec();
    frame.extend_from_slice(json.as_bytes());
    std::io::Write::write_all(&mut a, &frame).unwrap();
    a.stdin.lock().unwrap().take();
    let frames = read_all_frames(&mut a);
    assert!(frames.len() == 1 && String::from_utf8_lossy(&frames[0].payload).contains("truncated"), "{frames:?}");
    assert!(!exists(&d.path("staged")));
}
