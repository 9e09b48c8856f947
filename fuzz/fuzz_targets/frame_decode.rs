//! The frame codec on arbitrary bytes: `decode_frame` (buffering callers), `read_frame`
//! (streams) and `read_header` / `parse_header` (callers that stream payloads themselves) never
//! panic, never allocate past what arrived, agree with each other frame by frame, and every
//! frame they return re-encodes to exactly the bytes it came from. The small binary payload
//! parsers (RESIZE, SIGNAL, EXIT) run on the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use supermachine_agent_proto::{
    decode_frame, encode_frame, parse_exit, parse_header, parse_resize, parse_signal, read_frame, read_header, Decoded,
    FrameError, HEADER_LEN, MAX_PAYLOAD,
};

fuzz_target!(|data: &[u8]| {
    let mut cur = Cursor::new(data);
    let mut rest = data;
    loop {
        let streamed = read_frame(&mut cur);
        let buffered = decode_frame(rest);
        match (streamed, buffered) {
            (Ok(None), Ok(Decoded::NeedMore(n))) => {
                assert!(rest.is_empty() && n == HEADER_LEN);
                break;
            }
            (Ok(Some(f)), Ok(Decoded::Frame(g, used))) => {
                assert_eq!(f, g);
                assert_eq!(used, HEADER_LEN + f.payload.len());
                assert_eq!(encode_frame(f.kind, &f.payload), rest[..used]);
                rest = &rest[used..];
            }
            // The stream ended inside a frame: both say how long the frame is.
            (Err(FrameError::Truncated { expected, got }), Ok(Decoded::NeedMore(n))) => {
                assert_eq!(got, rest.len());
                assert!(got < expected && expected == n && n <= HEADER_LEN + MAX_PAYLOAD);
                break;
            }
            (Err(FrameError::Oversized { kind, len }), Err(FrameError::Oversized { kind: k, len: l })) => {
                assert_eq!((kind, len), (k, l));
                assert!(len as usize > MAX_PAYLOAD && kind == rest[0]);
                break;
            }
            // An unknown type: the stream reader consumed the payload and can go on.
            (Err(e @ FrameError::UnknownType { kind, len }), Err(FrameError::UnknownType { kind: k, len: l })) => {
                assert!(e.resynchronisable() && (kind, len) == (k, l));
                rest = &rest[HEADER_LEN + len as usize..];
            }
            // An unknown type whose payload never fully arrived.
            (Err(FrameError::Truncated { expected, got }), Err(FrameError::UnknownType { len, .. })) => {
                assert_eq!((expected, got), (HEADER_LEN + len as usize, rest.len()));
                break;
            }
            (streamed, buffered) => panic!("read_frame {streamed:?} and decode_frame {buffered:?} disagree"),
        }
        assert_eq!(cur.position() as usize, data.len() - rest.len());
    }

    // Header by header, skipping each payload the way a streaming caller does.
    let mut cur = Cursor::new(data);
    loop {
        let at = cur.position() as usize;
        match read_header(&mut cur) {
            Ok(None) => {
                assert_eq!(at, data.len());
                break;
            }
            Ok(Some(h)) => {
                let raw: &[u8; HEADER_LEN] = data[at..at + HEADER_LEN].try_into().unwrap();
                assert_eq!(parse_header(raw).unwrap(), h);
                assert!(h.len as usize <= MAX_PAYLOAD && h.kind_byte == raw[0]);
                match (h.kind(), decode_frame(&data[at..])) {
                    (Ok(kind), Ok(Decoded::Frame(f, used))) => {
                        assert!(f.kind == kind && used == HEADER_LEN + h.len as usize)
                    }
                    (Ok(_), Ok(Decoded::NeedMore(n))) => assert_eq!(n, HEADER_LEN + h.len as usize),
                    (Err(FrameError::UnknownType { kind, len }), Err(FrameError::UnknownType { .. })) => {
                        assert_eq!((kind, len), (h.kind_byte, h.len))
                    }
                    (k, d) => panic!("header {h:?} ({k:?}) and decode_frame {d:?} disagree"),
                }
                let next = cur.position() + u64::from(h.len);
                if next > data.len() as u64 {
                    break;
                }
                cur.set_position(next);
            }
            Err(FrameError::Truncated { expected, got }) => {
                assert_eq!((expected, got), (HEADER_LEN, data.len() - at));
                break;
            }
            Err(e @ FrameError::Oversized { .. }) => {
                let raw: &[u8; HEADER_LEN] = data[at..at + HEADER_LEN].try_into().unwrap();
                assert!(matches!(parse_header(raw), Err(FrameError::Oversized { .. })), "{e}");
                break;
            }
            Err(e) => panic!("read_header: {e}"),
        }
    }

    if let Ok((cols, rows)) = parse_resize(data) {
        assert_eq!(supermachine_agent_proto::resize_payload(cols, rows), data);
    }
    if let Ok(sig) = parse_signal(data) {
        assert!((1..=64).contains(&sig));
    }
    if let Ok((code, rss)) = parse_exit(data) {
        if let Some(rss) = rss {
            assert_eq!(supermachine_agent_proto::exit_payload(code, rss), data);
        }
    }
});
