//! Property tests: the frame decoder and the request parsers never panic, and encoding
//! round-trips.
use proptest::prelude::*;
use std::io::Cursor;
use supermachine_agent_proto::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = decode_frame(&data);
        let mut cur = Cursor::new(&data);
        for _ in 0..8 {
            match read_frame(&mut cur) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => { prop_assert!(!e.to_string().is_empty()); if !e.resynchronisable() { break } }
            }
        }
    }

    #[test]
    fn frame_roundtrip(kind in prop::sample::select(vec![0xffu8, 0xfe, 0, 1, 2, 3, 4, 5, 6]),
                       payload in proptest::collection::vec(any::<u8>(), 0..2048),
                       split in 0usize..2100) {
        let kind = FrameType::from_u8(kind).unwrap();
        let enc = encode_frame(kind, &payload);
        // streaming: a prefix asks for more, the whole buffer decodes
        let cut = split.min(enc.len());
        if cut < enc.len() {
            prop_assert!(matches!(decode_frame(&enc[..cut]).unwrap(), Decoded::NeedMore(_)));
            let e = read_frame(&mut Cursor::new(&enc[..cut]));
            if cut == 0 { prop_assert!(e.unwrap().is_none()); } else {
                let is_truncated = matches!(e, Err(FrameError::Truncated { .. }));
                prop_assert!(is_truncated);
            }
        }
        match decode_frame(&enc).unwrap() {
            Decoded::Frame(f, used) => { prop_assert_eq!(used, enc.len()); prop_assert_eq!(f.kind, kind); prop_assert_eq!(f.payload, payload.clone()); }
            Decoded::NeedMore(_) => prop_assert!(false),
        }
        let f = read_frame(&mut Cursor::new(&enc)).unwrap().unwrap();
        prop_assert_eq!(f.payload, payload);
    }

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_exec_request(&data);
        let _ = parse_control_request(&data);
        let _ = parse_signal(&data);
        let _ = parse_resize(&data);
        let _ = parse_exit(&data);
        let _ = b64::decode(&String::from_utf8_lossy(&data));
    }

    #[test]
    fn json_shaped_requests_never_panic(
        action in prop::sample::select(ACTIONS.to_vec()),
        key in "[a-z_]{1,12}",
        val in prop_oneof![Just("1".to_string()), Just("\"x\"".to_string()), Just("null".to_string()),
                           Just("[]".to_string()), Just("{}".to_string()), Just("-1".to_string()),
                           Just("true".to_string()), Just("1e400".to_string())]) {
        let j = format!("{{\"action\":\"{action}\",\"{key}\":{val}}}");
        match parse_control_request(j.as_bytes()) {
            Ok(r) => prop_assert_eq!(r.action(), action),
            Err(e) => prop_assert!(!matches!(e, ParseError::UnknownAction(_))),
        }
        let j = format!("{{\"argv\":[\"a\"],\"{key}\":{val}}}");
        let _ = parse_exec_request(j.as_bytes());
    }

    #[test]
    fn b64_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assert_eq!(b64::decode(&b64::encode(&data)).unwrap(), data);
    }
}
