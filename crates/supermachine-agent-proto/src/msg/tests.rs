//! Unit tests of the message types and parsers.
use super::*;

#[test]
fn stat_reply_owner_is_optional() {
    let r: StatReply =
        serde_json::from_str(r#"{"type":"file","size":3,"mode":33188,"mtime":5,"uid":1000,"gid":100}"#).unwrap();
    assert_eq!((r.uid, r.gid), (Some(1000), Some(100)));
    let old: StatReply = serde_json::from_str(r#"{"type":"dir","size":0,"mode":16877,"mtime":5}"#).unwrap();
    assert_eq!((old.uid, old.gid), (None, None));
}

#[test]
fn exec_request_fields() {
    let r = parse_exec_request(
        br#"{"argv":["sh","-c","x"],"env":{"A":"b"},"cwd":"/tmp","tty":true,"cols":80,"rows":24,
            "stage_files":[{"path":"/a","data_b64":"aGk=","mode":"0755"},{"path":"/b","data_b64":""}],
            "chain":[["true"],["echo","x"]],"unknown_extra":1}"#,
    )
    .unwrap();
    assert_eq!(r.cwd.as_deref(), Some("/tmp"));
    assert!(r.tty);
    assert_eq!((r.cols, r.rows), (Some(80), Some(24)));
    assert_eq!(r.stage_files[0].mode, Some(0o755));
    assert_eq!(r.stage_files[1].mode, None);
    assert_eq!(r.chain.len(), 2);
    let back = parse_exec_request(&serde_json::to_vec(&r).unwrap()).unwrap();
    assert_eq!(back, r);
    // nulls are defaults
    let r = parse_exec_request(br#"{"argv":["x"],"env":null,"tty":null,"chain":null,"stage_files":null}"#).unwrap();
    assert!(r.env.is_empty() && !r.tty);
}

#[test]
fn exec_request_errors() {
    let e = parse_exec_request(b"{not json").unwrap_err();
    assert!(matches!(e, ParseError::InvalidJson(_)), "{e}");
    assert!(e.to_string().starts_with("invalid JSON: key must be a string"), "{e}");
    let e = parse_exec_request(br#"{"argv":[]}"#).unwrap_err();
    assert!(e.to_string().contains("argv"), "{e}");
    let e = parse_exec_request(br#"{"argv":"ls"}"#).unwrap_err();
    assert!(e.to_string().contains("invalid type"), "{e}");
    let e = parse_exec_request(br#"{"argv":["a"],"chain":[[]]}"#).unwrap_err();
    assert!(e.to_string().contains("chain[0]"), "{e}");
    let e = parse_exec_request(br#"{"argv":["a"],"stage_files":[{"path":"/x"}]}"#).unwrap_err();
    assert!(e.to_string().contains("missing field `data_b64`"), "{e}");
    let e =
        parse_exec_request(br#"{"argv":["a"],"stage_files":[{"path":"/x","data_b64":"","mode":"9z"}]}"#).unwrap_err();
    assert!(e.to_string().contains("invalid mode"), "{e}");
    assert!(parse_exec_request(b"").unwrap_err().to_string().contains("EOF"));
}

#[test]
fn control_roundtrip_every_action() {
    let all = vec![
        ControlRequest::Probe,
        ControlRequest::WriteFile { path: "/a".into(), data_b64: "".into(), mode: Some(0o600) },
        ControlRequest::WriteFileChunk {
            path: "/a".into(),
            offset: 8,
            data_b64: "AA==".into(),
            last: true,
            token: "t".into(),
            mode: None,
        },
        ControlRequest::ReadFile { path: "/a".into(), max_bytes: Some(10) },
        ControlRequest::ReadFileChunk { path: "/a".into(), offset: 0, len: 4, max_bytes: None },
        ControlRequest::Signal { signum: 15 },
        ControlRequest::SyncTime { host_unix_ns: 1_700_000_000_000_000_000 },
        ControlRequest::Sync,
        ControlRequest::DropVfsCaches,
        ControlRequest::SmparkPark,
        ControlRequest::SmparkUnpark,
        ControlRequest::Reseed { data_b64: "AAAA".into() },
        ControlRequest::PortForward { port: 8080 },
        ControlRequest::Stat { path: "/".into(), follow: None },
        ControlRequest::Mkdir { path: "/d".into(), parents: true, mode: None },
        ControlRequest::Remove { path: "/d".into(), recursive: true },
    ];
    assert_eq!(all.len(), ACTIONS.len());
    for r in all {
        let j = r.to_json();
        let v: serde_json::Value = serde_json::from_slice(&j).unwrap();
        assert_eq!(v["action"], r.action());
        assert_eq!(parse_control_request(&j).unwrap(), r);
    }
}

#[test]
fn control_errors() {
    assert_eq!(parse_control_request(br#"{"action":"frobnicate"}"#).unwrap_err().to_string(), UNKNOWN_ACTION);
    let e = parse_control_request(br#"{"path":"/"}"#).unwrap_err();
    assert_eq!(e.to_string(), "invalid request: missing field `action`");
    let e = parse_control_request(br#"[1]"#).unwrap_err();
    assert!(e.to_string().contains("JSON object"), "{e}");
    let e = parse_control_request(br#"{"action":"signal","signum":"x"}"#).unwrap_err();
    assert!(e.to_string().contains("signal: invalid type"), "{e}");
    let e =
        parse_control_request(br#"{"action":"write_file_chunk","path":"/a","offset":0,"data_b64":""}"#).unwrap_err();
    assert!(e.to_string().contains("missing field `token`"), "{e}");
    let e = parse_control_request(b"{\"action\":").unwrap_err();
    assert!(matches!(e, ParseError::InvalidJson(_)));
}

#[test]
fn acks() {
    let mut f = Ack::new();
    f.insert("protocol".into(), 5.into());
    assert_eq!(ack_ok(f), br#"{"ok":true,"protocol":5}"#);
    assert_eq!(ack_ok(Ack::new()), br#"{"ok":true}"#);
}
