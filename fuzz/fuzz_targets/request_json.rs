//! REQUEST and CONTROL payloads (JSON) on arbitrary bytes: the parsers never panic; whatever
//! they accept obeys their own rules and survives a serialise / parse round trip unchanged;
//! an unknown action is reported as such; base64 fields decode without panicking, what decodes
//! re-encodes to the same bytes, and the incremental decoder fed in pieces agrees with the
//! one-shot decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use supermachine_agent_proto::{b64, parse_control_request, parse_exec_request, ControlRequest, ParseError, ACTIONS};

fn b64_roundtrip(s: &str) {
    let whole = b64::decode(s);
    if let Ok(bytes) = &whole {
        let again = b64::encode(bytes);
        assert_eq!(again.len(), b64::encoded_len(bytes.len()));
        assert_eq!(&b64::decode(&again).unwrap(), bytes);
    }
    // The same text in pieces (sizes taken from the text itself): same bytes, or an error too.
    let (mut d, mut out) = (b64::Decoder::default(), Vec::new());
    let mut rest = s.as_bytes();
    let mut pieced = Ok(());
    while !rest.is_empty() && pieced.is_ok() {
        let n = (rest[0] as usize % 7 + 1).min(rest.len());
        pieced = d.push(&rest[..n], &mut out);
        rest = &rest[n..];
    }
    let pieced = pieced.and_then(|()| d.finish(&mut out)).map(|()| out);
    match (&whole, &pieced) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("b64::decode {whole:?} and Decoder in pieces {pieced:?} disagree on {s:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    match parse_exec_request(data) {
        Ok(r) => {
            assert!(!r.argv.is_empty() && r.chain.iter().all(|c| !c.is_empty()));
            assert!(r.argv.iter().chain(r.chain.iter().flatten()).all(|a| !a.contains('\0')));
            assert!(r.env.keys().all(|k| !k.is_empty() && !k.contains('=') && !k.contains('\0')));
            let json = serde_json::to_vec(&r).expect("an accepted request serialises");
            assert_eq!(parse_exec_request(&json).expect("a serialised request parses"), r);
            for f in &r.stage_files {
                b64_roundtrip(&f.data_b64);
            }
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    match parse_control_request(data) {
        Ok(c) => {
            assert!(ACTIONS.contains(&c.action()));
            let json = c.to_json();
            assert_eq!(parse_control_request(&json).expect("a serialised request parses"), c);
            match &c {
                ControlRequest::WriteFile { data_b64, .. }
                | ControlRequest::WriteFileChunk { data_b64, .. }
                | ControlRequest::Reseed { data_b64 } => b64_roundtrip(data_b64),
                _ => {}
            }
        }
        Err(ParseError::UnknownAction(a)) => assert!(!ACTIONS.contains(&a.as_str())),
        Err(e) => assert!(!e.to_string().is_empty()),
    }

    if let Ok(s) = std::str::from_utf8(data) {
        b64_roundtrip(s);
    }
});
