//! Standard base64 (RFC 4648 alphabet, `=` padding), small enough for the static agent.
//!
//! ```
//! use supermachine_agent_proto::b64;
//! assert_eq!(b64::encode(b"hi!"), "aGkh");
//! assert_eq!(b64::decode("aGk=").unwrap(), b"hi");
//! assert_eq!(b64::decode("aGk").unwrap(), b"hi"); // padding is optional
//! assert!(b64::decode("a*==").unwrap_err().contains("position 1"));
//! ```

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Length of the encoding of `n` bytes.
pub fn encoded_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Encodes `data` with padding.
pub fn encode(data: &[u8]) -> String {
    let mut out = Vec::with_capacity(encoded_len(data.len()));
    encode_into(data, &mut out);
    // Only ASCII from the alphabet was pushed.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends the encoding of `data` to `out`. For a stream encoded piece by piece, every piece
/// but the last must be a multiple of 3 bytes long (padding appears only at the end).
pub fn encode_into(data: &[u8], out: &mut Vec<u8>) {
    let mut chunks = data.chunks_exact(3);
    for c in &mut chunks {
        let v = (c[0] as u32) << 16 | (c[1] as u32) << 8 | c[2] as u32;
        out.extend_from_slice(&[
            ALPHABET[(v >> 18) as usize & 63],
            ALPHABET[(v >> 12) as usize & 63],
            ALPHABET[(v >> 6) as usize & 63],
            ALPHABET[v as usize & 63],
        ]);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let b1 = rest.get(1).copied().unwrap_or(0) as u32;
        let v = (rest[0] as u32) << 16 | b1 << 8;
        out.push(ALPHABET[(v >> 18) as usize & 63]);
        out.push(ALPHABET[(v >> 12) as usize & 63]);
        out.push(if rest.len() == 2 { ALPHABET[(v >> 6) as usize & 63] } else { b'=' });
        out.push(b'=');
    }
}

fn val(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' | b'-' => 62,
        b'/' | b'_' => 63,
        _ => return None,
    } as u32)
}

/// Decodes base64 (standard or URL-safe alphabet; padding optional; ASCII whitespace ignored).
/// The error names the offending position.
pub fn decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    let mut d = Decoder::default();
    d.push(s.as_bytes(), &mut out)?;
    d.finish(&mut out)?;
    Ok(out)
}

/// Incremental [`decode`]: feed the text in pieces of any size, then [`Decoder::finish`].
///
/// ```
/// use supermachine_agent_proto::b64::Decoder;
/// let (mut d, mut out) = (Decoder::default(), Vec::new());
/// d.push(b"aG", &mut out).unwrap();
/// d.push(b"kh", &mut out).unwrap();
/// d.finish(&mut out).unwrap();
/// assert_eq!(out, b"hi!");
/// ```
/// The error text (out of line: the decode loop stays small in the static guest binaries).
#[cold]
#[inline(never)]
fn invalid(what: &str, position: usize) -> String {
    format!("invalid base64: {what} at position {position}")
}

#[derive(Debug, Default, Clone)]
pub struct Decoder {
    acc: u32,
    n: u32,
    padding: usize,
    /// Characters seen so far (positions in errors count from the start of the whole text).
    pos: usize,
}

impl Decoder {
    /// Decodes `input`, appending whole bytes to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        for &c in input {
            let i = self.pos;
            self.pos += 1;
            if c.is_ascii_whitespace() {
                continue;
            }
            if c == b'=' {
                self.padding += 1;
                if self.padding > 2 {
                    return Err(invalid("too much padding", i));
                }
                continue;
            }
            if self.padding > 0 {
                return Err(invalid("data after padding", i));
            }
            let Some(v) = val(c) else {
                return Err(invalid(&format!("unexpected character {:?}", c as char), i));
            };
            self.acc = self.acc << 6 | v;
            self.n += 1;
            if self.n == 4 {
                out.extend_from_slice(&[(self.acc >> 16) as u8, (self.acc >> 8) as u8, self.acc as u8]);
                self.acc = 0;
                self.n = 0;
            }
        }
        Ok(())
    }

    /// Ends the text: appends the last partial group.
    pub fn finish(self, out: &mut Vec<u8>) -> Result<(), String> {
        match self.n {
            0 => {}
            1 => return Err("invalid base64: truncated input (a lone trailing character)".into()),
            2 => out.push((self.acc >> 4) as u8),
            _ => out.extend_from_slice(&[(self.acc >> 10) as u8, (self.acc >> 2) as u8]),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let v = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in v {
            assert_eq!(encode(plain.as_bytes()), enc);
            assert_eq!(decode(enc).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn all_bytes_roundtrip() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        for l in 0..data.len() {
            assert_eq!(decode(&encode(&data[..l])).unwrap(), &data[..l]);
        }
    }

    #[test]
    fn pieces_decode_like_the_whole() {
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let text = encode(&data);
        for step in [1, 2, 3, 5, 7, 64] {
            let (mut d, mut out) = (Decoder::default(), Vec::new());
            for piece in text.as_bytes().chunks(step) {
                d.push(piece, &mut out).unwrap();
            }
            d.finish(&mut out).unwrap();
            assert_eq!(out, data);
        }
        let mut enc = Vec::new();
        for piece in data.chunks(99) {
            encode_into(piece, &mut enc);
        }
        assert_eq!(enc, text.as_bytes());
    }

    #[test]
    fn errors() {
        assert!(decode("Zg=a").is_err());
        assert!(decode("Z").is_err());
        assert!(decode("Zg===").is_err());
        assert!(decode("Zm9v!").unwrap_err().contains("position 4"));
    }
}
