//! Modified UTF-7 for mailbox names (RFC 3501 §5.1.3). The store keeps names in UTF-8; the wire
//! carries them in modified UTF-7 (`Входящие` is `&BBIERQQ+BDQETwRJBDgENQ-`).

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// UTF-8 → modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        let mut bits = 0u32;
        let mut nbits = 0;
        for b in bytes {
            bits = (bits << 8) | b as u32;
            nbits += 8;
            while nbits >= 6 {
                nbits -= 6;
                out.push(ALPHABET[((bits >> nbits) & 63) as usize] as char);
            }
        }
        if nbits > 0 {
            out.push(ALPHABET[((bits << (6 - nbits)) & 63) as usize] as char);
        }
        out.push('-');
        pending.clear();
    };
    for c in name.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Modified UTF-7 → UTF-8. `None` when the input is not valid modified UTF-7. Bytes outside
/// printable ASCII (a client sending raw UTF-8) are accepted when they form valid UTF-8, as
/// several servers do, since the intent is unambiguous.
pub fn decode(wire: &[u8]) -> Option<String> {
    if !wire.is_ascii() {
        return std::str::from_utf8(wire).ok().map(String::from);
    }
    let mut out = String::with_capacity(wire.len());
    let mut i = 0;
    while i < wire.len() {
        let c = wire[i];
        if c != b'&' {
            if !(0x20..=0x7e).contains(&c) {
                return None;
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = i + 1 + wire[i + 1..].iter().position(|&b| b == b'-')?;
        let b64 = &wire[i + 1..end];
        i = end + 1;
        if b64.is_empty() {
            out.push('&');
            continue;
        }
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut units: Vec<u16> = Vec::new();
        let mut bytes: Vec<u8> = Vec::new();
        for &b in b64 {
            let v = ALPHABET.iter().position(|&a| a == b)? as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                bytes.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        // Leftover bits must be zero padding (fewer than 6).
        if nbits >= 6 || bits != 0 || !bytes.len().is_multiple_of(2) {
            return None;
        }
        for pair in bytes.chunks(2) {
            units.push(u16::from_be_bytes([pair[0], pair[1]]));
        }
        let s = String::from_utf16(&units).ok()?;
        // Printable ASCII must not be base64-encoded (RFC 3501 §5.1.3).
        if s.chars().any(|c| (' '..='~').contains(&c)) {
            return None;
        }
        out.push_str(&s);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "INBOX",
            "Входящие",
            "a&b",
            "Отправленные/2024",
            "日本語",
            "x😀y",
            "&",
        ] {
            let e = encode(s);
            assert!(e.is_ascii(), "{e}");
            assert_eq!(decode(e.as_bytes()).as_deref(), Some(s), "{e}");
        }
        assert_eq!(encode("a&b"), "a&-b");
        assert_eq!(
            encode("~peter/mail/日本語/台北"),
            "~peter/mail/&ZeVnLIqe-/&U,BTFw-"
        );
    }

    #[test]
    fn rejects_invalid() {
        assert_eq!(decode(b"&Jjo"), None);
        assert_eq!(decode(b"&AGE-"), None); // "a" must not be encoded
        assert_eq!(decode(b"&*-"), None);
        assert_eq!(decode("Входящие".as_bytes()).as_deref(), Some("Входящие"));
    }
}
