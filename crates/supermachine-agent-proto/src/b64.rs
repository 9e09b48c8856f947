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
    // Only ASCII from the alphabet was pushed.
    String::from_utf8(out).unwrap_or_default()
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
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n = 0u32;
    let mut padding = 0usize;
    for (i, &c) in bytes.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        if c == b'=' {
            padding += 1;
            if padding > 2 {
                return Err(format!("invalid base64: too much padding at position {i}"));
            }
            continue;
        }
        if padding > 0 {
            return Err(format!("invalid base64: data after padding at position {i}"));
        }
        let v = val(c).ok_or_else(|| format!("invalid base64: unexpected character {:?} at position {i}", c as char))?;
        acc = acc << 6 | v;
        n += 1;
        if n == 4 {
            out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        0 => {}
        1 => return Err("invalid base64: truncated input (a lone trailing character)".into()),
        2 => out.push((acc >> 4) as u8),
        _ => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors() {
        let v = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")];
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
    fn errors() {
        assert!(decode("Zg=a").is_err());
        assert!(decode("Z").is_err());
        assert!(decode("Zg===").is_err());
        assert!(decode("Zm9v!").unwrap_err().contains("position 4"));
    }
}
