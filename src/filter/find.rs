//! Where a message carries CMS signatures (SPEC §5): walks the MIME tree of the exact received
//! bytes (mail-parser gives structure and offsets; every byte we hash is sliced from the
//! original message) and lists each signature entity with what it signs.
//!
//! Shapes: `multipart/signed` with `application/(x-)pkcs7-signature` (top level, nested in other
//! multiparts or in forwarded `message/rfc822`); `application/(x-)pkcs7-mime` signed-data; and
//! attachments that are CMS SignedData by name (`.p7s .p7m .cms .sig`) or by content (DER, BER,
//! PEM, base64 text), with embedded content or detached beside the file they sign
//! (`contract.pdf` ↔ `contract.pdf.p7s`, else the only other attachment).
//!
//! Bounded: a message beyond the limits of [`crate::mime_guard`] is never handed to mail-parser
//! (it is reported as one malformed signature: permerror); the walk examines at most
//! [`MAX_DEPTH`] nested entities, [`MAX_PARTS`] entities and [`MAX_SIGNATURES`] signatures.

use mail_parser::{Encoding, Message, MessageParser, MessagePart, MimeHeaders, PartType};

use super::cms;
use super::report::Kind;

/// Deepest MIME nesting walked.
pub const MAX_DEPTH: usize = 16;
/// Most MIME entities examined.
pub const MAX_PARTS: usize = 1000;
/// Most signatures examined per message.
pub const MAX_SIGNATURES: usize = 32;

const SIGNATURE_EXTENSIONS: &[&str] = &[".p7s", ".p7m", ".cms", ".sig"];

/// The bytes a detached signature covers: candidates tried in order (the canonical form first).
#[derive(Debug, Clone)]
pub enum Content {
    /// The CMS carries its content (or should): nothing outside it is signed.
    Embedded,
    /// Candidates for the signed bytes.
    Detached(Vec<Vec<u8>>),
    /// A detached signature whose content could not be found, and why.
    Missing(String),
}

/// One signature entity found in a message.
#[derive(Debug, Clone)]
pub struct Found {
    /// IMAP section of the entity carrying the signature.
    pub part: String,
    pub kind: Kind,
    /// Name of the signature attachment (attachments only).
    pub file: Option<String>,
    /// Name of the attachment a detached signature covers.
    pub covers: Option<String>,
    /// The signature entity's transfer-decoded body (CMS in some encoding), or why it could
    /// not be had.
    pub cms: Result<Vec<u8>, String>,
    /// What it signs, unless the CMS embeds its content.
    pub content: Content,
}

/// Lists every signature entity of `raw`, in document order.
pub fn find(raw: &[u8]) -> Vec<Found> {
    find_guarded(raw, true)
}

/// [`find`] for bytes the caller has just had accepted by [`crate::mime_guard::scan`]: the
/// walk skips its own scan (the filter's [`super::Filter::process`] scans every message once,
/// before this).
pub(crate) fn find_scanned(raw: &[u8]) -> Vec<Found> {
    find_guarded(raw, false)
}

fn find_guarded(raw: &[u8], scan: bool) -> Vec<Found> {
    // mail-parser is a third-party parser run on hostile input; should it ever panic (its
    // nested-message offset arithmetic is unchecked), the message is reported as one
    // unparseable signature (permerror) instead of taking the caller down. `tanba verify`
    // relies on this; the server's filter has its own guard around the whole run too.
    match std::panic::catch_unwind(|| find_parsed(raw, scan)) {
        Ok(found) => found,
        Err(_) => vec![Found {
            part: "TEXT".into(),
            kind: Kind::Attachment,
            file: None,
            covers: None,
            cms: Err("the MIME structure of the message could not be parsed".into()),
            content: Content::Embedded,
        }],
    }
}

fn find_parsed(raw: &[u8], scan: bool) -> Vec<Found> {
    // mail-parser builds one nested value per message/rfc822 level, and converting and dropping
    // that tree recurses: an over-deep message would overflow the stack (issue 11, finding 1).
    // The bounded pre-scan decides first (here, or in the caller of `find_scanned`); such a
    // message carries one unreadable "signature", so its verdict is permerror and the reason
    // says why.
    let guard = if scan {
        crate::mime_guard::scan(raw).map(|_| ())
    } else {
        Ok(())
    };
    if let Err(e) = guard {
        return vec![Found {
            part: "TEXT".into(),
            kind: Kind::Attachment,
            file: None,
            covers: None,
            cms: Err(e.to_string()),
            content: Content::Embedded,
        }];
    }
    let Some(msg) = MessageParser::default().parse(raw) else {
        return Vec::new();
    };
    let mut w = Walker {
        out: Vec::new(),
        visited: 0,
        overflow: false,
    };
    w.message(&msg, "", 0);
    if w.overflow {
        w.out.push(Found {
            part: "TEXT".into(),
            kind: Kind::Attachment,
            file: None,
            covers: None,
            cms: Err(format!(
                "the message has more than {MAX_SIGNATURES} signatures or {MAX_PARTS} MIME parts; \
                 the rest were not examined"
            )),
            content: Content::Embedded,
        });
    }
    w.out
}

struct Walker {
    out: Vec<Found>,
    visited: usize,
    overflow: bool,
}

/// A leaf entity that is an attachment (for detached matching).
struct Attachment<'a> {
    name: Option<String>,
    part: &'a MessagePart<'a>,
    is_signature: bool,
}

impl Walker {
    fn message(&mut self, msg: &Message<'_>, prefix: &str, depth: usize) {
        if msg.parts.is_empty() {
            return;
        }
        self.entity(msg, 0, &format!("{prefix}TEXT"), prefix, depth);
    }

    fn push(&mut self, f: Found) {
        if self.out.len() >= MAX_SIGNATURES {
            self.overflow = true;
        } else {
            self.out.push(f);
        }
    }

    /// Visits entity `id` of `msg`. `section` is how the entity is addressed in reports (the
    /// root of a message is `<prefix>TEXT`); `child_prefix` is what its children's numbers
    /// start with.
    fn entity(
        &mut self,
        msg: &Message<'_>,
        id: usize,
        section: &str,
        child_prefix: &str,
        depth: usize,
    ) {
        self.visited += 1;
        if depth > MAX_DEPTH || self.visited > MAX_PARTS {
            self.overflow = true;
            return;
        }
        let Some(part) = msg.parts.get(id) else {
            return;
        };
        let raw: &[u8] = &msg.raw_message;
        let (ctype, subtype) = content_type(part);
        match &part.body {
            PartType::Multipart(children) => {
                let numbered: Vec<(usize, String)> = children
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (*c as usize, format!("{child_prefix}{}", i + 1)))
                    .collect();
                if ctype == "multipart" && subtype == "signed" && numbered.len() >= 2 {
                    if let Some(f) = self.multipart_signed(msg, part, &numbered, section) {
                        self.push(f);
                        // Signatures inside the signed content are reported too.
                        let (first, sec) = &numbered[0];
                        self.entity(msg, *first, sec, &format!("{sec}."), depth + 1);
                        return;
                    }
                }
                let attachments: Vec<Attachment<'_>> = numbered
                    .iter()
                    .filter_map(|(c, _)| msg.parts.get(*c))
                    .filter(|p| is_attachment(p))
                    .map(|p| Attachment {
                        name: p.attachment_name().map(str::to_string),
                        is_signature: is_signature_name(p.attachment_name())
                            || is_signature_type(p),
                        part: p,
                    })
                    .collect();
                for (c, sec) in &numbered {
                    let Some(child) = msg.parts.get(*c) else {
                        continue;
                    };
                    if matches!(child.body, PartType::Multipart(_) | PartType::Message(_)) {
                        self.entity(msg, *c, sec, &format!("{sec}."), depth + 1);
                    } else {
                        self.visited += 1;
                        if let Some(f) = leaf_signature(raw, child, sec, &attachments) {
                            self.push(f);
                        }
                    }
                }
            }
            PartType::Message(inner) => {
                // A forwarded message: its body is `<section>.TEXT`, its parts `<section>.N`.
                self.message(inner, child_prefix, depth + 1);
            }
            _ => {
                // A single-part body (the root of a message): the signature entity is the body.
                if let Some(f) = leaf_signature(raw, part, section, &[]) {
                    self.push(f);
                }
            }
        }
    }

    fn multipart_signed(
        &self,
        msg: &Message<'_>,
        part: &MessagePart<'_>,
        children: &[(usize, String)],
        section: &str,
    ) -> Option<Found> {
        let sig_part = msg.parts.get(children.get(1)?.0)?;
        if !is_signature_type(sig_part) {
            return None;
        }
        let raw: &[u8] = &msg.raw_message;
        let boundary = part
            .content_type()
            .and_then(|ct| ct.attribute("boundary"))
            .map(str::to_string)?;
        let body = raw.get(part.offset_body as usize..part.offset_end as usize)?;
        let content = match first_part(body, boundary.as_bytes()) {
            Some(bytes) => {
                let canonical = canonical_crlf(bytes);
                let mut cands = vec![canonical.clone()];
                if canonical != bytes {
                    cands.push(bytes.to_vec());
                }
                Content::Detached(cands)
            }
            None => Content::Missing("the first part of multipart/signed is malformed".into()),
        };
        Some(Found {
            part: section.to_string(),
            kind: Kind::MultipartSigned,
            file: None,
            covers: None,
            cms: Ok(decoded_body(raw, sig_part)),
            content,
        })
    }
}

/// A leaf entity that carries a signature: pkcs7-mime signed-data, a pkcs7-signature outside
/// multipart/signed, a file named like a signature, or any attachment whose content is CMS
/// SignedData.
fn leaf_signature(
    raw: &[u8],
    part: &MessagePart<'_>,
    section: &str,
    siblings: &[Attachment<'_>],
) -> Option<Found> {
    let (ctype, subtype) = content_type(part);
    let name = part.attachment_name().map(str::to_string);
    let pkcs7_mime =
        ctype == "application" && (subtype == "pkcs7-mime" || subtype == "x-pkcs7-mime");
    if pkcs7_mime {
        let smime_type = part
            .content_type()
            .and_then(|ct| ct.attribute("smime-type"))
            .map(|s| s.to_ascii_lowercase());
        match smime_type.as_deref() {
            Some("signed-data") => {}
            // Encrypted or compressed: not a signature we can see into.
            Some(_) => return None,
            None => {
                if !cms::sniff(&decoded_prefix(raw, part)) {
                    return None;
                }
            }
        }
        return Some(Found {
            part: section.to_string(),
            kind: Kind::Pkcs7Mime,
            file: None,
            covers: None,
            cms: Ok(decoded_body(raw, part)),
            content: Content::Embedded,
        });
    }
    let by_name = is_signature_name(name.as_deref());
    let by_type = is_signature_type(part);
    if !by_name && !by_type && !is_attachment(part) {
        return None;
    }
    let sniffed = cms::sniff(&decoded_prefix(raw, part));
    let strong_name = name
        .as_deref()
        .map(|n| n.to_ascii_lowercase())
        .is_some_and(|n| [".p7s", ".p7m", ".cms"].iter().any(|e| n.ends_with(e)));
    // `.sig` is also PGP's extension: only CMS content counts there.
    if !(sniffed || strong_name || by_type) {
        return None;
    }
    let (covers, content) = detached_content(raw, part, name.as_deref(), siblings);
    Some(Found {
        part: section.to_string(),
        kind: Kind::Attachment,
        file: name,
        covers,
        cms: Ok(decoded_body(raw, part)),
        content,
    })
}

/// The sibling a detached attachment signature covers: by name (`x.pdf.p7s` → `x.pdf`), else
/// the only other attachment that is not itself a signature.
fn detached_content(
    raw: &[u8],
    sig: &MessagePart<'_>,
    sig_name: Option<&str>,
    siblings: &[Attachment<'_>],
) -> (Option<String>, Content) {
    let others: Vec<&Attachment<'_>> = siblings
        .iter()
        .filter(|a| !std::ptr::eq(a.part, sig))
        .collect();
    let by_name = sig_name.and_then(|n| {
        let lower = n.to_ascii_lowercase();
        let ext = SIGNATURE_EXTENSIONS.iter().find(|e| lower.ends_with(*e))?;
        let stem = &n[..n.len() - ext.len()];
        others
            .iter()
            .find(|a| a.name.as_deref() == Some(stem))
            .copied()
    });
    let chosen = by_name.or_else(|| {
        let candidates: Vec<&&Attachment<'_>> = others.iter().filter(|a| !a.is_signature).collect();
        match candidates.as_slice() {
            [only] => Some(**only),
            _ => None,
        }
    });
    match chosen {
        Some(a) => {
            let bytes = decoded_body(raw, a.part);
            let mut cands = vec![bytes.clone()];
            // Text sent without base64 travels with CRLF line ends; the file may have had LF.
            if a.part.encoding != Encoding::Base64 && bytes.windows(2).any(|w| w == b"\r\n") {
                let lf: Vec<u8> = strip_cr(&bytes);
                cands.push(lf);
            }
            (a.name.clone(), Content::Detached(cands))
        }
        None => (
            None,
            Content::Missing(
                "detached signature: no attachment with the matching name, and not exactly one \
                 other attachment"
                    .into(),
            ),
        ),
    }
}

fn strip_cr(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn content_type(part: &MessagePart<'_>) -> (String, String) {
    match part.content_type() {
        Some(ct) => (
            ct.c_type.to_ascii_lowercase(),
            ct.c_subtype
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase(),
        ),
        None => ("text".into(), "plain".into()),
    }
}

fn is_signature_type(part: &MessagePart<'_>) -> bool {
    let (t, s) = content_type(part);
    t == "application" && (s == "pkcs7-signature" || s == "x-pkcs7-signature")
}

fn is_signature_name(name: Option<&str>) -> bool {
    name.map(|n| n.to_ascii_lowercase())
        .is_some_and(|n| SIGNATURE_EXTENSIONS.iter().any(|e| n.ends_with(e)))
}

/// A leaf that is a file rather than the message text: it has a name, says `attachment`, or is
/// not text.
fn is_attachment(part: &MessagePart<'_>) -> bool {
    if matches!(part.body, PartType::Multipart(_) | PartType::Message(_)) {
        return false;
    }
    if part.attachment_name().is_some() {
        return true;
    }
    if part
        .content_disposition()
        .is_some_and(|d| d.c_type.eq_ignore_ascii_case("attachment"))
    {
        return true;
    }
    matches!(part.body, PartType::Binary(_) | PartType::InlineBinary(_))
}

/// The transfer-decoded body of a leaf entity, sliced from the raw bytes (mail-parser would
/// convert text to UTF-8; signed bytes must not be converted).
pub fn decoded_body(raw: &[u8], part: &MessagePart<'_>) -> Vec<u8> {
    let Some(body) = raw.get(part.offset_body as usize..part.offset_end as usize) else {
        return Vec::new();
    };
    match part.encoding {
        Encoding::Base64 => {
            // The base64 alphabet only; data after the first padding is garbage some mailers
            // leave: stop there.
            let text: Vec<u8> = body
                .iter()
                .copied()
                .take_while(|&b| b != b'=')
                .filter(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                .collect();
            cms::base64_clean(&text).unwrap_or_default()
        }
        Encoding::QuotedPrintable => quoted_printable(body),
        Encoding::None => body.to_vec(),
    }
}

/// The first bytes of a leaf's decoded body: enough to recognise CMS without decoding a large
/// attachment.
fn decoded_prefix(raw: &[u8], part: &MessagePart<'_>) -> Vec<u8> {
    let Some(body) = raw.get(part.offset_body as usize..part.offset_end as usize) else {
        return Vec::new();
    };
    match part.encoding {
        Encoding::Base64 => {
            let mut text: Vec<u8> = body
                .iter()
                .copied()
                .filter(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
                .take(1024)
                .collect();
            text.truncate(text.len() / 4 * 4);
            cms::base64_clean(&text).unwrap_or_default()
        }
        Encoding::QuotedPrintable => quoted_printable(&body[..body.len().min(1024)]),
        Encoding::None => body[..body.len().min(1024)].to_vec(),
    }
}

/// RFC 2045 §6.7 quoted-printable decoding (lenient: a malformed `=` is kept as it is).
fn quoted_printable(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        if b == b'=' {
            match (body.get(i + 1), body.get(i + 2)) {
                (Some(b'\r'), Some(b'\n')) => {
                    i += 3;
                    continue;
                }
                (Some(b'\n'), _) => {
                    i += 2;
                    continue;
                }
                (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                    let v = (hexval(h) << 4) | hexval(l);
                    out.push(v);
                    i += 3;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hexval(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

/// The exact bytes of the first body part of a multipart body (RFC 2046 §5.1.1): from after the
/// first delimiter line to before the line break that precedes the next delimiter (that line
/// break belongs to the delimiter).
pub fn first_part<'a>(body: &'a [u8], boundary: &[u8]) -> Option<&'a [u8]> {
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    // First delimiter: at the very start or right after a line break.
    let mut pos = 0;
    let start = loop {
        let i = memfind(&body[pos..], &delim)? + pos;
        if i == 0 || body[i - 1] == b'\n' {
            // Skip transport padding and the line break.
            let mut j = i + delim.len();
            while matches!(body.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            match (body.get(j), body.get(j + 1)) {
                (Some(b'\r'), Some(b'\n')) => break j + 2,
                (Some(b'\n'), _) => break j + 1,
                _ => {}
            }
        }
        pos = i + 1;
    };
    let mut pos = start;
    loop {
        let i = memfind(&body[pos..], &delim)? + pos;
        // A delimiter line is `--boundary`, then `--` or optional white space and the end of
        // the line (RFC 2046 §5.1.1); a longer word that merely starts like it is content.
        let mut j = i + delim.len();
        let is_close = body.get(j..j + 2) == Some(b"--");
        while matches!(body.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        let at_eol = matches!(body.get(j), None | Some(b'\r' | b'\n'));
        if i > 0 && body[i - 1] == b'\n' && (is_close || at_eol) {
            let end = if i >= 2 && body[i - 2] == b'\r' {
                i - 2
            } else {
                i - 1
            };
            if end >= start {
                return Some(&body[start..end]);
            }
            // An empty first part: `--b\r\n--b`.
            return Some(&body[start..start]);
        }
        pos = i + 1;
    }
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Bare LF → CRLF (RFC 5751 §3.1.1 canonical form for hashing); bytes unchanged otherwise.
pub fn canonical_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_part_is_exact() {
        let body = b"--B\r\nContent-Type: text/plain\r\n\r\nhello\r\n--B\r\nsig\r\n--B--\r\n";
        assert_eq!(
            first_part(body, b"B").unwrap(),
            b"Content-Type: text/plain\r\n\r\nhello"
        );
        let lf = b"preamble\n--B \nA\n\n--B-not\nx\n--B\nsig\n--B--\n";
        assert_eq!(first_part(lf, b"B").unwrap(), b"A\n\n--B-not\nx");
        assert!(first_part(b"--B\r\nno end", b"B").is_none());
    }

    #[test]
    fn canonical() {
        assert_eq!(canonical_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc");
    }

    #[test]
    fn qp() {
        assert_eq!(quoted_printable(b"a=3Db=\r\nc=ZZ"), b"a=bc=ZZ");
    }

    #[test]
    fn sections() {
        let msg = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=\"X\"\r\n\r\n--X\r\n\
Content-Type: text/plain\r\n\r\nhi\r\n--X\r\nContent-Type: message/rfc822\r\n\r\n\
From: c@d\r\nContent-Type: application/pkcs7-mime; smime-type=signed-data\r\n\
Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHAqCAMIACAQE=\r\n--X--\r\n";
        let found = find(msg);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].part, "2.TEXT");
        assert_eq!(found[0].kind, Kind::Pkcs7Mime);
    }

    /// Issue 11, finding 1: 40,000 nested message/rfc822 levels are not parsed (mail-parser
    /// would overflow the stack); one unreadable entry says why.
    #[test]
    fn over_deep_message_is_one_error() {
        let mut m = b"Subject: deep\r\n".to_vec();
        for _ in 0..40_000 {
            m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        let found = find(&m);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].part, "TEXT");
        let err = found[0].cms.as_ref().unwrap_err();
        assert!(err.starts_with("MIME nesting is too deep"), "{err}");
    }
}
