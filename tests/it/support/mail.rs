//! Reading the header of a stamped or stored message: its fields, a field by name, and the
//! RFC 2047 encoded words of the stamp headers.

use base64::Engine;

/// Decodes RFC 2047 encoded words in a header value (B encoding, UTF-8), unfolding first:
/// white space between two encoded words disappears, elsewhere it stays.
pub fn decode_2047(v: &str) -> String {
    let unfolded = v.replace("\r\n", "");
    let mut out = String::new();
    let mut prev: Option<bool> = None; // Some(true) after an encoded word
    for token in unfolded.split(' ').filter(|t| !t.is_empty()) {
        let word = token
            .strip_prefix("=?UTF-8?B?")
            .and_then(|t| t.strip_suffix("?="));
        match word {
            Some(b) => {
                if prev == Some(false) {
                    out.push(' ');
                }
                let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                out.push_str(&String::from_utf8(bytes).unwrap());
            }
            None => {
                if prev.is_some() {
                    out.push(' ');
                }
                out.push_str(token);
            }
        }
        prev = Some(word.is_some());
    }
    out
}

/// The header fields of a message (name, unfolded raw value).
pub fn header_fields(msg: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(msg);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut() {
                last.1.push_str("\r\n");
                last.1.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.trim_start().to_string()));
        }
    }
    out
}

/// The value of the first header field called `name` (any case).
pub fn header<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}
