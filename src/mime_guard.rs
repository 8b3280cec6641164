//! A bounded pre-scan of a message's MIME structure, run before any recursive parser sees the
//! bytes (issue 11, finding 1).
//!
//! mail-parser (0.11) parses without recursion, but it builds one nested `Message` value per
//! `message/rfc822` (or `message/global`) level, and turning that tree into owned values and
//! dropping it recurses once per level: a body of `Content-Type: message/rfc822` repeated 40,000
//! times overflows a 2 MiB thread stack and aborts the process (`catch_unwind` cannot stop a stack
//! overflow). Measured with mail-parser 0.11.9 (parse then drop, one nesting chain): a debug build
//! survives about 7,600 levels on a 2 MiB stack (tokio workers and blocking threads) and 30,000 on
//! the 8 MiB main thread; a release build about 32,000 and 130,000. A transfer-encoded
//! (base64 / quoted-printable) `message/rfc822` is decoded and parsed again, up to three times
//! nested, and that inner parse nests just as deep. [`MAX_DEPTH`] (32) keeps a margin of more than
//! 200 over the worst of these.
//!
//! [`scan`] follows mail-parser's own parse loop (`MessageParser::parse_`) step for step, using
//! the same public primitives (`MessageStream::parse_headers`, boundary seeking, the transfer
//! decoders), so it sees exactly the entities mail-parser would build — it cannot count fewer
//! levels than mail-parser creates, whatever the quirks of its header or boundary syntax (a
//! boundary is found anywhere in a line; a header name may contain spaces). It builds no tree: it
//! keeps one small frame per open entity, gives up as soon as a limit is passed, and only recurses
//! into a transfer-encoded `message/*` body, at most three levels, as mail-parser does.
//!
//! Bounded:
//! - depth: multipart and message entities nested inside each other ([`Limits::depth`]);
//! - parts: every entity, containers included ([`Limits::parts`]);
//! - work: bytes examined. mail-parser searches for a multipart's boundary from the part on; a
//!   boundary that never appears costs a scan to the end of the message, once per such header,
//!   which is quadratic. The scan counts what those searches examine and stops at
//!   [`Limits::work_factor`] × the message size (plus 1 MiB), so a message that would make
//!   mail-parser loop for minutes is refused before mail-parser runs.
//!
//! Memory: one `Vec` of parsed header fields for the current part, one frame (a boundary) per
//! open entity (at most `depth + 1`), and, for a transfer-encoded nested message, its decoded
//! bytes (at most three at a time, each smaller than the message).

use std::fmt;

use mail_parser::parsers::MessageStream;
use mail_parser::{GetHeader, HeaderName, HeaderValue, MessageParser};

/// Deepest nesting of multipart and message entities accepted.
pub const MAX_DEPTH: usize = 32;
/// Most MIME entities (containers included) accepted in one message.
pub const MAX_PARTS: usize = 10_000;
/// Bytes the scan may examine, as a multiple of the message size (plus 1 MiB).
pub const WORK_FACTOR: usize = 16;
/// How many times mail-parser decodes a transfer-encoded `message/*` and parses it again
/// (`MAX_NESTED_ENCODED` in mail-parser 0.11).
const MAX_NESTED_ENCODED: usize = 3;

/// The limits [`scan`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub depth: usize,
    pub parts: usize,
    pub work_factor: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: MAX_DEPTH,
            parts: MAX_PARTS,
            work_factor: WORK_FACTOR,
        }
    }
}

/// What a message within limits looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shape {
    /// Deepest nesting of multipart and message entities (a single-part message: 0; a
    /// multipart/mixed with leaves: 1; a message/rfc822 attached to it: 2).
    pub depth: usize,
    /// Every entity mail-parser builds, containers and nested messages' parts included.
    pub parts: usize,
}

/// Why a message is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Depth(usize),
    Parts(usize),
    Work,
    /// mail-parser's own code panicked on it (debug builds only).
    Unparseable,
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Depth(n) => write!(
                f,
                "MIME nesting is too deep (more than {n} nested multipart or message/rfc822 \
                 levels); the message was not parsed"
            ),
            Exceeded::Parts(n) => write!(
                f,
                "the message has too many MIME parts (more than {n}); the message was not parsed"
            ),
            Exceeded::Unparseable => {
                f.write_str("the MIME structure of the message could not be parsed")
            }
            Exceeded::Work => f.write_str(
                "the MIME structure of the message is too complex to parse (boundaries that never \
                 appear); the message was not parsed",
            ),
        }
    }
}

impl std::error::Error for Exceeded {}

/// [`scan_with`] with the default [`Limits`].
pub fn scan(raw: &[u8]) -> Result<Shape, Exceeded> {
    scan_with(raw, &Limits::default())
}

/// Measures the MIME structure of `raw` as mail-parser (0.11) would build it. `Ok` means
/// mail-parser may parse `raw` (and the tree may be walked and dropped) safely.
///
/// Never panics: mail-parser's primitives have unchecked arithmetic that panics in builds with
/// overflow checks (debug builds; e.g. its quoted-printable decoder on a boundary right after
/// `=`), and such a message is refused as [`Exceeded::Unparseable`] — mail-parser itself would
/// panic on it in the same place.
pub fn scan_with(raw: &[u8], limits: &Limits) -> Result<Shape, Exceeded> {
    std::panic::catch_unwind(|| scan_unguarded(raw, limits)).unwrap_or(Err(Exceeded::Unparseable))
}

fn scan_unguarded(raw: &[u8], limits: &Limits) -> Result<Shape, Exceeded> {
    let mut s = Scanner {
        limits: *limits,
        shape: Shape::default(),
        work: 0,
        budget: raw
            .len()
            .saturating_mul(limits.work_factor)
            .saturating_add(1 << 20),
        conf: MessageParser::new(),
    };
    s.message(raw, 0, MAX_NESTED_ENCODED)?;
    Ok(s.shape)
}

/// The kind of an entity, as far as structure goes (mail-parser's `MimeType`, reduced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A message: the root, or a nested message/rfc822 / message/global.
    Message,
    /// multipart/digest: children without Content-Type are messages (RFC 2046 §5.1.5).
    Digest,
    /// Any other multipart.
    Multipart,
    /// A leaf that is a message (parsed again after transfer decoding).
    LeafMessage,
    /// Any other leaf.
    Leaf,
}

/// One open entity: mail-parser's `MessageParserState`, reduced to what decides structure.
struct Frame {
    kind: Kind,
    boundary: Option<Vec<u8>>,
}

struct Scanner {
    limits: Limits,
    shape: Shape,
    work: usize,
    budget: usize,
    conf: MessageParser,
}

impl Scanner {
    fn charge(&mut self, bytes: usize) -> Result<(), Exceeded> {
        self.work = self.work.saturating_add(bytes);
        if self.work > self.budget {
            return Err(Exceeded::Work);
        }
        Ok(())
    }

    fn reach(&mut self, depth: usize) -> Result<(), Exceeded> {
        if depth > self.limits.depth {
            return Err(Exceeded::Depth(self.limits.depth));
        }
        self.shape.depth = self.shape.depth.max(depth);
        Ok(())
    }

    /// One message as `MessageParser::parse_` walks it. `base` is the nesting depth of the
    /// message itself (0 at the top, deeper for a transfer-encoded nested message); `encoded`
    /// how many more times an encoded nested message is parsed again.
    fn message(&mut self, raw: &[u8], base: usize, encoded: usize) -> Result<(), Exceeded> {
        let len = raw.len();
        let mut stream = MessageStream::new(raw);
        let mut state = Frame {
            kind: Kind::Message,
            boundary: None,
        };
        // The frames of the enclosing entities; `true` where a nested message starts.
        let mut stack: Vec<(Frame, bool)> = Vec::new();
        let mut headers = Vec::new();
        loop {
            headers.clear();
            let at = stream.offset();
            let more = stream.parse_headers(&self.conf, &mut headers);
            self.charge(stream.offset() - at)?;
            if !more {
                break;
            }
            self.shape.parts += 1;
            if self.shape.parts > self.limits.parts {
                return Err(Exceeded::Parts(self.limits.parts));
            }
            let ctype = headers
                .header_value(&HeaderName::ContentType)
                .and_then(|c| c.as_content_type());
            let mut kind = match ctype {
                Some(ct) => match ct.ctype() {
                    "multipart" if ct.subtype() == Some("digest") => Kind::Digest,
                    "multipart" => Kind::Multipart,
                    "message" if matches!(ct.subtype(), Some("rfc822") | Some("global")) => {
                        Kind::LeafMessage
                    }
                    _ => Kind::Leaf,
                },
                None if state.kind == Kind::Digest => Kind::LeafMessage,
                None => Kind::Leaf,
            };
            if matches!(kind, Kind::Multipart | Kind::Digest) {
                let boundary = ctype.and_then(|c| c.attribute("boundary"));
                if let Some(b) = boundary {
                    let at = stream.offset();
                    if stream.seek_next_part(b.as_bytes()) {
                        self.charge(stream.offset() - at)?;
                        let inner = Frame {
                            kind,
                            boundary: Some(b.as_bytes().to_vec()),
                        };
                        stack.push((std::mem::replace(&mut state, inner), false));
                        self.reach(base + stack.len())?;
                        stream.skip_crlf();
                        continue;
                    }
                    // Not found: searched to the end (the quadratic case).
                    self.charge(len - at)?;
                }
                kind = Kind::Leaf;
            }
            let encoding = match headers.header_value(&HeaderName::ContentTransferEncoding) {
                Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("base64") => Some(true),
                Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("quoted-printable") => {
                    Some(false)
                }
                _ => None,
            };
            if kind == Kind::LeafMessage && encoding.is_none() {
                // A nested message: its headers come next; it ends where its parent's part does.
                let inner = Frame {
                    kind: Kind::Message,
                    boundary: state.boundary.take(),
                };
                stack.push((std::mem::replace(&mut state, inner), true));
                self.reach(base + stack.len())?;
                continue;
            }
            let boundary: &[u8] = state.boundary.as_deref().unwrap_or(b"");
            let at = stream.offset();
            // Only a nested message's bytes matter. For any other part the plain search ends
            // where mail-parser's decoders end: they too stop at the first `--boundary` (or fail
            // before it and fall back to the same search), so nothing else is decoded.
            let reparse = kind == Kind::LeafMessage && encoded > 0;
            let (end, bytes) = match encoding {
                Some(true) if reparse => stream.decode_base64_mime(boundary),
                Some(false) if reparse => stream.decode_quoted_printable_mime(boundary),
                _ => stream.mime_part(boundary),
            };
            if end == usize::MAX {
                // mail-parser keeps such a part as text, up to the next boundary. The failed
                // decoder stopped at that boundary at the latest: charge both scans.
                let (_, found) = stream.seek_part_end(state.boundary.as_deref());
                self.charge(2 * (stream.offset() - at))?;
                if !found {
                    state.boundary = None;
                }
            } else {
                self.charge(stream.offset() - at)?;
                if reparse {
                    // Decoded and parsed again (`parse_(bytes, depth - 1)`); its tree hangs
                    // below this part.
                    let depth = base + stack.len() + 1;
                    self.reach(depth)?;
                    self.message(&bytes, depth, encoded - 1)?;
                }
            }
            if state.boundary.is_some() {
                loop {
                    if state.kind == Kind::Message {
                        // The nested message ends with its part: back to its parent.
                        match stack.pop() {
                            Some((mut parent, true)) => {
                                parent.boundary = state.boundary.take();
                                state = parent;
                            }
                            _ => return Ok(()),
                        }
                    }
                    let at = stream.offset();
                    let end = stream.is_multipart_end();
                    self.charge(stream.offset().saturating_sub(at))?;
                    if !end {
                        break;
                    }
                    // The close delimiter of the current multipart: back to its parent, then
                    // on to the parent's next boundary.
                    let Some((parent, _)) = stack.pop() else {
                        return Ok(());
                    };
                    state = parent;
                    let Some(b) = state.boundary.as_deref() else {
                        return Ok(());
                    };
                    let at = stream.offset();
                    let found = stream.seek_next_part_offset(b).is_some();
                    self.charge(if found {
                        stream.offset() - at
                    } else {
                        len - at
                    })?;
                    if !found {
                        return Ok(());
                    }
                }
            } else if stream.offset() >= len {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_parser::{Message, PartType};

    /// The depth of a parsed tree, counted the way [`scan`] counts: +1 per multipart container
    /// and per nested message. Iterative, so it can measure deep trees.
    fn parsed_depth(m: &Message<'_>) -> (usize, usize) {
        let mut max = 0;
        let mut parts = 0;
        // (message, part id, depth of that part)
        let mut todo: Vec<(&Message<'_>, usize, usize)> = vec![(m, 0, 0)];
        while let Some((msg, id, d)) = todo.pop() {
            let Some(p) = msg.parts.get(id) else { continue };
            parts += 1;
            max = max.max(d);
            match &p.body {
                PartType::Multipart(children) => {
                    for &c in children {
                        todo.push((msg, c as usize, d + 1));
                    }
                }
                PartType::Message(inner) => todo.push((inner, 0, d + 1)),
                _ => {}
            }
        }
        (max, parts)
    }

    fn rfc822_chain(n: usize) -> Vec<u8> {
        let mut m = b"Subject: top\r\n".to_vec();
        for _ in 0..n {
            m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        m.extend_from_slice(b"Subject: inner\r\n\r\nbody\r\n");
        m
    }

    fn multipart_chain(n: usize) -> Vec<u8> {
        let mut m = Vec::new();
        for i in 0..n {
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nleaf\r\n");
        for i in (0..n).rev() {
            m.extend_from_slice(format!("--b{i}--\r\n").as_bytes());
        }
        m
    }

    /// Checks that scan never counts less than mail-parser builds (on inputs small enough for
    /// mail-parser to parse safely).
    fn agrees(m: &[u8]) {
        let unlimited = Limits {
            depth: usize::MAX,
            parts: usize::MAX,
            work_factor: usize::MAX,
        };
        let shape = match scan_with(m, &unlimited) {
            Ok(shape) => shape,
            // Refused: mail-parser never sees it.
            Err(Exceeded::Unparseable) => return,
            Err(e) => panic!("{e}"),
        };
        // mail-parser's debug assertions fire on some malformed inputs (debug builds only):
        // nothing to compare with then.
        let parsed = std::panic::catch_unwind(|| {
            MessageParser::default()
                .parse(m)
                .map(|p| parsed_depth(&p).0)
        });
        if let Ok(Some(depth)) = parsed {
            assert!(
                shape.depth >= depth,
                "scan depth {} < parsed {} for {:?}",
                shape.depth,
                depth,
                String::from_utf8_lossy(m)
            );
        }
    }

    #[test]
    fn plain_and_simple_multipart() {
        let s = scan(b"Subject: x\r\n\r\nhello\r\n").unwrap();
        assert_eq!(s, Shape { depth: 0, parts: 1 });
        let m = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\n\
Content-Type: text/plain\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--\r\nepilogue\r\n";
        assert_eq!(scan(m).unwrap(), Shape { depth: 1, parts: 3 });
        agrees(m);
    }

    #[test]
    fn rfc822_chain_depth_is_counted_per_level() {
        for n in [1, 2, 5, 31, 32] {
            let m = rfc822_chain(n);
            let s = scan(&m).unwrap();
            assert_eq!(s.depth, n, "chain of {n}");
            agrees(&m);
        }
        assert_eq!(scan(&rfc822_chain(33)), Err(Exceeded::Depth(MAX_DEPTH)));
        // Finding 1: 40,000 levels are refused without parsing (and quickly: the scan stops at
        // level 33).
        let mut m = Vec::new();
        for _ in 0..40_000 {
            m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        }
        assert_eq!(scan(&m), Err(Exceeded::Depth(MAX_DEPTH)));
        // message/global counts as well, header names in any case.
        let mut m = Vec::new();
        for _ in 0..40 {
            m.extend_from_slice(b"CONTENT-TYPE: Message/Global\r\n\r\n");
        }
        assert_eq!(scan(&m), Err(Exceeded::Depth(MAX_DEPTH)));
    }

    #[test]
    fn multipart_chain_depth() {
        for n in [1, 3, 32] {
            let m = multipart_chain(n);
            assert_eq!(scan(&m).unwrap().depth, n);
            agrees(&m);
        }
        assert_eq!(
            scan(&multipart_chain(5000)),
            Err(Exceeded::Depth(MAX_DEPTH))
        );
    }

    /// `n` levels of a multipart/mixed whose part is a message/rfc822, without the innermost
    /// message (each level adds two to the depth).
    fn mixed_chain_of(n: usize) -> Vec<u8> {
        let mut m = Vec::new();
        for i in 0..n {
            m.extend_from_slice(
                format!(
                    "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n\
Content-Type: message/rfc822\r\n\r\n"
                )
                .as_bytes(),
            );
        }
        m
    }

    #[test]
    fn mixed_chain() {
        let mut m = mixed_chain_of(10);
        m.extend_from_slice(b"Subject: leaf\r\n\r\nleaf\r\n");
        let s = scan(&m).unwrap();
        assert_eq!(s.depth, 20);
        agrees(&m);
        let m2 = mixed_chain_of(17);
        assert_eq!(scan(&m2), Err(Exceeded::Depth(MAX_DEPTH)));
    }

    #[test]
    fn siblings_do_not_add_depth() {
        // A digest of 100 messages, each with a forwarded message inside: depth 3, not 100.
        let mut m = b"Content-Type: multipart/digest; boundary=d\r\n\r\n".to_vec();
        for i in 0..100 {
            m.extend_from_slice(
                format!(
                    "--d\r\n\r\nSubject: {i}\r\nContent-Type: multipart/mixed; boundary=i{i}\r\n\r\n\
--i{i}\r\n\r\ntext\r\n--i{i}\r\nContent-Type: message/rfc822\r\n\r\nSubject: fwd\r\n\r\nx\r\n--i{i}--\r\n"
                )
                .as_bytes(),
            );
        }
        m.extend_from_slice(b"--d--\r\n");
        let s = scan(&m).unwrap();
        assert_eq!(s.depth, 4);
        agrees(&m);
    }

    #[test]
    fn boundaries_inside_bodies_and_folded_headers() {
        // A boundary-like line of another boundary inside a leaf body does not end anything;
        // a folded Content-Type is read whole.
        let m = b"Content-Type: multipart/mixed;\r\n\tboundary=\"outer\"\r\n\r\n--outer\r\n\
Content-Type: text/plain\r\n\r\n--not-the-boundary\r\nContent-Type: message/rfc822\r\n\r\n\
--outer\r\nContent-Type:\r\n message/rfc822\r\n\r\nSubject: in\r\n\r\nbody\r\n--outer--\r\n";
        let s = scan(m).unwrap();
        assert_eq!(s.depth, 2);
        agrees(m);
        // mail-parser finds a boundary anywhere in a line, not only at its start: so does the
        // scan (it uses the same search), and the nested message after it is counted.
        let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\nx--b\r\n\
Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: y\r\n\r\nz\r\n";
        agrees(m);
        assert!(scan(m).unwrap().depth >= 3);
    }

    #[test]
    fn encoded_nested_message_is_decoded_and_counted() {
        use base64::Engine;
        let inner = rfc822_chain(40);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&inner);
        let mut m = b"Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\
Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            .to_vec();
        for line in b64.as_bytes().chunks(76) {
            m.extend_from_slice(line);
            m.extend_from_slice(b"\r\n");
        }
        m.extend_from_slice(b"--z--\r\n");
        assert_eq!(scan(&m), Err(Exceeded::Depth(MAX_DEPTH)));
        let small = rfc822_chain(3);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&small);
        let m = format!(
            "Content-Type: multipart/mixed; boundary=z\r\n\r\n--z\r\n\
Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--z--\r\n"
        );
        let s = scan(m.as_bytes()).unwrap();
        assert!(s.depth >= 5, "{s:?}");
        agrees(m.as_bytes());
    }

    #[test]
    fn many_parts_are_refused() {
        let mut m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
        for _ in 0..MAX_PARTS + 10 {
            m.extend_from_slice(b"--x\r\n\r\na\r\n");
        }
        assert_eq!(scan(&m), Err(Exceeded::Parts(MAX_PARTS)));
        let mut m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
        for _ in 0..500 {
            m.extend_from_slice(b"--x\r\n\r\na\r\n");
        }
        assert_eq!(scan(&m).unwrap().parts, 501);
    }

    #[test]
    fn missing_boundaries_are_bounded_work() {
        // Each header names a boundary that never appears: mail-parser would search to the end
        // for every one of them.
        let mut m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
        for _ in 0..5_000 {
            m.extend_from_slice(b"--x\r\nContent-Type: multipart/mixed; boundary=nowhere\r\n\r\n");
        }
        m.extend_from_slice(&vec![b'a'; 2 << 20]);
        assert_eq!(scan(&m), Err(Exceeded::Work));
    }

    /// Mutations of nested structures: the scan never panics and never counts less than
    /// mail-parser builds.
    #[test]
    fn mutations_never_undercount() {
        let seeds: Vec<Vec<u8>> = vec![
            b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\
Content-Transfer-Encoding: base64\r\n\r\nQUJD\r\n--q\r\nContent-Type: message/rfc822\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\r\nContent-Type: message/rfc822=0D=0A=0D=0A\
Subject: x\r\n\r\ny=\r\n--q\r\nContent-Type: message/rfc822\r\n\
Content-Transfer-Encoding: base64\r\n\r\nQ29udGVudC1UeXBlOiBtZXNzYWdlL3JmYzgyMg0KDQpTdWJqZWN0OiB5DQoNCnoNCg==\r\n\
--q--\r\n"
                .to_vec(),
            rfc822_chain(6),
            multipart_chain(6),
            b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: a\r\n\r\nx\r\n\
--d\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: multipart/mixed; boundary=e\r\n\r\n\
--e\r\nContent-Type: message/global\r\n\r\ny\r\n--e--\r\n--d--\r\n"
                .to_vec(),
        ];
        let alphabet: &[u8] = b"-\r\n:;=\" \tbdeContent-Type: message/rfc822multipart/digest";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..3000 {
            let mut m = seeds[round % seeds.len()].clone();
            for _ in 0..(1 + next() % 6) {
                let at = (next() as usize) % m.len();
                match next() % 4 {
                    0 => m[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        m.remove(at);
                    }
                    2 => m.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => {
                        let from = (next() as usize) % m.len();
                        let n = (next() as usize % 40).min(m.len() - from);
                        let chunk = m[from..from + n].to_vec();
                        m.splice(at..at, chunk);
                    }
                }
                if m.is_empty() {
                    m.push(b'\n');
                }
            }
            agrees(&m);
        }
    }
}
