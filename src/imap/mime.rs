//! The MIME structure of a stored message as IMAP needs it: every entity's header and body byte
//! ranges, the header fields BODYSTRUCTURE reports, body line counts, and the ENVELOPE of the
//! message and of every attached message/rfc822 (RFC 3501 §6.4.5, §7.4.2; RFC 2045/2046).
//!
//! A message is parsed once, on the first FETCH that needs its structure, and the result is cached
//! in the store (`blob_cache`) in the compact binary form of [`Cached::encode`] together with the
//! top-level header bytes. ENVELOPE, BODYSTRUCTURE and HEADER.FIELDS are then served from the
//! cache without reading or parsing the message again.
//!
//! Values are kept as raw bytes, exactly as in the message (unfolded): IMAP clients decode RFC 2047
//! and RFC 2231 themselves, and Dovecot and Cyrus send the raw values too.
//!
//! Bounded: at most [`MAX_DEPTH`] nested levels and [`MAX_PARTS`] entities per message; deeper or
//! further structure is reported as text/plain (as Dovecot does), never an error. This parser is
//! our own and does not use mail-parser: its recursion stops at [`MAX_DEPTH`] (the depth
//! [`crate::mime_guard`] allows), so a message the guard refuses (issue 11, finding 1) is still
//! served, with its structure cut at that depth; the cache decoder stops at the same depth.
//! Work: every level scans its own body once, so at most `MAX_DEPTH` passes over the message.

use super::envelope::{self, Envelope};

pub const MAX_DEPTH: usize = crate::mime_guard::MAX_DEPTH;
pub const MAX_PARTS: usize = 2000;

/// Version byte of the cache format; bump it when [`Cached`] changes (old entries are re-parsed).
/// 2: ENVELOPE no longer takes a comment inside `<...>` as the display name (issue 16).
const CACHE_VERSION: u8 = 2;

pub type Params = Vec<(Vec<u8>, Vec<u8>)>;

/// One MIME entity. Offsets are absolute positions in the message bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Part {
    /// Start of the entity's header.
    pub start: usize,
    /// Start of the body (just after the blank line that ends the header).
    pub body: usize,
    /// End of the body.
    pub end: usize,
    pub ctype: Vec<u8>,
    pub subtype: Vec<u8>,
    pub params: Params,
    pub id: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    pub encoding: Option<Vec<u8>>,
    pub md5: Option<Vec<u8>>,
    pub disposition: Option<(Vec<u8>, Params)>,
    pub language: Option<Vec<Vec<u8>>>,
    pub location: Option<Vec<u8>>,
    /// Number of lines of the body (LF count).
    pub lines: u32,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Kind {
    #[default]
    Leaf,
    Multipart(Vec<Part>),
    /// message/rfc822: the encapsulated message's envelope and root entity.
    Message(Box<Envelope>, Box<Part>),
}

impl Part {
    pub fn is_multipart(&self) -> bool {
        matches!(self.kind, Kind::Multipart(_))
    }
    pub fn is_text(&self) -> bool {
        self.ctype.eq_ignore_ascii_case(b"text")
    }
    pub fn header_range(&self) -> std::ops::Range<usize> {
        self.start..self.body
    }
    pub fn body_range(&self) -> std::ops::Range<usize> {
        self.body..self.end
    }
    pub fn param(&self, name: &str) -> Option<&[u8]> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }
}

/// What the cache holds for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// The top-level header, blank line included (`BODY[HEADER]`, `HEADER.FIELDS`).
    pub header: Vec<u8>,
    pub envelope: Envelope,
    pub root: Part,
}

/// Parses a whole message.
pub fn parse(msg: &[u8]) -> Cached {
    let mut budget = MAX_PARTS;
    let root = parse_entity(msg, 0, msg.len(), 0, false, &mut budget);
    let header = msg[root.header_range()].to_vec();
    let envelope = envelope::from_header(&header);
    Cached {
        header,
        envelope,
        root,
    }
}

/// Finds the end of the header that starts at `start`: returns (body start). The blank line
/// belongs to the header. Without a blank line the whole entity is header.
fn header_end(msg: &[u8], start: usize, end: usize) -> usize {
    let mut pos = start;
    while pos < end {
        let line_end = match memchr::memchr(b'\n', &msg[pos..end]) {
            Some(i) => pos + i + 1,
            None => return end,
        };
        let line = &msg[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return line_end;
        }
        pos = line_end;
    }
    end
}

/// Iterates over the fields of a header block: (name, raw value with folding, whole field).
pub fn fields(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        if pos >= header.len() {
            return None;
        }
        let start = pos;
        // The field runs to the first line ending not followed by WSP.
        let mut end = start;
        loop {
            match memchr::memchr(b'\n', &header[end..]) {
                Some(i) => {
                    end += i + 1;
                    match header.get(end) {
                        Some(b' ') | Some(b'\t') => continue,
                        _ => break,
                    }
                }
                None => {
                    end = header.len();
                    break;
                }
            }
        }
        pos = end;
        let field = &header[start..end];
        if field == b"\r\n" || field == b"\n" {
            return None;
        }
        let Some(colon) = memchr::memchr(b':', field) else {
            continue;
        };
        let name = trim(&field[..colon]);
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            continue;
        }
        return Some((name, &field[colon + 1..], field));
    })
}

/// The unfolded, trimmed value of the first field called `name`.
pub fn header_value(header: &[u8], name: &str) -> Option<Vec<u8>> {
    fields(header)
        .find(|(n, _, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v, _)| unfold(v))
}

/// Removes line breaks of folded lines and surrounding whitespace.
pub fn unfold(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for &b in v {
        if b != b'\r' && b != b'\n' {
            out.push(b);
        }
    }
    trim(&out).to_vec()
}

pub fn trim(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(s);
    &v[s..e.max(s)]
}

fn parse_entity(
    msg: &[u8],
    start: usize,
    end: usize,
    depth: usize,
    digest_child: bool,
    budget: &mut usize,
) -> Part {
    *budget = budget.saturating_sub(1);
    let body = header_end(msg, start, end);
    let header = &msg[start..body];
    let mut p = Part {
        start,
        body,
        end,
        ..Part::default()
    };
    let mut ctype_seen = false;
    for (name, value, _) in fields(header) {
        let lname = name.to_ascii_lowercase();
        if !lname.starts_with(b"content-") {
            continue;
        }
        let v = unfold(value);
        match &lname[8..] {
            b"type" if !ctype_seen => {
                ctype_seen = true;
                if let Some((t, s, params)) = parse_content_type(&v) {
                    p.ctype = t;
                    p.subtype = s;
                    p.params = params;
                }
            }
            b"id" if p.id.is_none() => p.id = Some(v),
            b"description" if p.description.is_none() => p.description = Some(v),
            b"transfer-encoding" if p.encoding.is_none() => p.encoding = Some(v),
            b"md5" if p.md5.is_none() => p.md5 = Some(v),
            b"disposition" if p.disposition.is_none() => {
                let (value, params) = parse_value_params(&v);
                if !value.is_empty() {
                    p.disposition = Some((value, params));
                }
            }
            b"language" if p.language.is_none() => {
                let langs: Vec<Vec<u8>> = strip_comments(&v)
                    .split(|&b| b == b',')
                    .map(|l| trim(l).to_vec())
                    .filter(|l| !l.is_empty())
                    .collect();
                if !langs.is_empty() {
                    p.language = Some(langs);
                }
            }
            b"location" if p.location.is_none() => p.location = Some(v),
            _ => {}
        }
    }
    if p.ctype.is_empty() {
        if digest_child {
            p.ctype = b"message".to_vec();
            p.subtype = b"rfc822".to_vec();
        } else {
            p.ctype = b"text".to_vec();
            p.subtype = b"plain".to_vec();
            p.params = vec![(b"charset".to_vec(), b"us-ascii".to_vec())];
        }
    }
    p.lines = memchr::memchr_iter(b'\n', &msg[body..end]).count() as u32;

    let too_deep = depth >= MAX_DEPTH || *budget == 0;
    if p.ctype.eq_ignore_ascii_case(b"multipart") {
        let boundary = p.param("boundary").map(|b| b.to_vec());
        match boundary {
            Some(b) if !b.is_empty() && !too_deep => {
                let digest = p.subtype.eq_ignore_ascii_case(b"digest");
                let mut children = Vec::new();
                for (s, e) in split_multipart(msg, body, end, &b) {
                    if *budget == 0 {
                        break;
                    }
                    children.push(parse_entity(msg, s, e, depth + 1, digest, budget));
                }
                if children.is_empty() {
                    // imap-types (and clients) need at least one body: an empty text part, as
                    // Dovecot reports it.
                    children.push(Part {
                        start: end,
                        body: end,
                        end,
                        ctype: b"text".to_vec(),
                        subtype: b"plain".to_vec(),
                        params: vec![(b"charset".to_vec(), b"us-ascii".to_vec())],
                        ..Part::default()
                    });
                }
                p.kind = Kind::Multipart(children);
            }
            _ => {
                p.ctype = b"text".to_vec();
                p.subtype = b"plain".to_vec();
                p.params = vec![(b"charset".to_vec(), b"us-ascii".to_vec())];
            }
        }
    } else if p.ctype.eq_ignore_ascii_case(b"message") && p.subtype.eq_ignore_ascii_case(b"rfc822")
    {
        if too_deep {
            p.ctype = b"text".to_vec();
            p.subtype = b"plain".to_vec();
        } else {
            let inner = parse_entity(msg, body, end, depth + 1, false, budget);
            let env = envelope::from_header(&msg[inner.header_range()]);
            p.kind = Kind::Message(Box::new(env), Box::new(inner));
        }
    }
    p
}

/// Splits a multipart body into its parts' (start, end) ranges, per RFC 2046 §5.1.1: a
/// delimiter is `--boundary` at the start of a line, optionally followed by `--` (the close
/// delimiter) and transport padding; the line break before it belongs to the delimiter.
fn split_multipart(msg: &[u8], body: usize, end: usize, boundary: &[u8]) -> Vec<(usize, usize)> {
    let mut delim = Vec::with_capacity(boundary.len() + 2);
    delim.extend_from_slice(b"--");
    delim.extend_from_slice(boundary);
    let hay = &msg[body..end];
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    for rel in memchr::memmem::find_iter(hay, &delim) {
        let at = body + rel;
        if at != body && msg[at - 1] != b'\n' {
            continue;
        }
        let after = at + delim.len();
        let line_end = match memchr::memchr(b'\n', &msg[after..end]) {
            Some(i) => after + i + 1,
            None => end,
        };
        let rest = &msg[after..line_end];
        let close = rest.starts_with(b"--");
        let padding = if close { &rest[2..] } else { rest };
        if !padding.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        // The CRLF (or LF) before the delimiter is part of it.
        let part_end = if at >= body + 2 && &msg[at - 2..at] == b"\r\n" {
            at - 2
        } else if at > body {
            at - 1
        } else {
            at
        };
        if let Some(s) = current.take() {
            out.push((s, part_end.max(s)));
        }
        if close {
            return out;
        }
        current = Some(line_end);
    }
    if let Some(s) = current {
        out.push((s, end));
    }
    out
}

/// `type/subtype; params`. `None` when there is no valid `type/subtype`.
fn parse_content_type(v: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Params)> {
    let (value, params) = parse_value_params(v);
    let slash = memchr::memchr(b'/', &value)?;
    let t = trim(&value[..slash]);
    let s = trim(&value[slash + 1..]);
    let token = |x: &[u8]| !x.is_empty() && x.iter().all(|&b| is_token_char(b));
    if !token(t) || !token(s) {
        return None;
    }
    Some((t.to_vec(), s.to_vec(), params))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// Removes RFC 5322 comments `( ... )` outside quoted strings.
fn strip_comments(v: &[u8]) -> Vec<u8> {
    split_comments(v, None).0
}

/// Removes RFC 5322 comments `( ... )` (nested ones too) outside quoted strings. Returns the text
/// without them, with `sep` in place of each top-level comment when given, and the content of
/// the first complete comment (its quoted-pairs resolved).
pub fn split_comments(v: &[u8], sep: Option<u8>) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut out = Vec::with_capacity(v.len());
    let mut first: Option<Vec<u8>> = None;
    let mut cur = Vec::new();
    let mut depth = 0usize;
    let mut quoted = false;
    let mut esc = false;
    for &b in v {
        if esc {
            esc = false;
            if depth > 0 {
                cur.push(b);
            } else {
                out.push(b);
            }
            continue;
        }
        match b {
            b'\\' if quoted => {
                esc = true;
                out.push(b);
            }
            b'\\' if depth > 0 => esc = true,
            b'"' if depth == 0 => {
                quoted = !quoted;
                out.push(b);
            }
            b'(' if !quoted => {
                if depth > 0 {
                    cur.push(b);
                }
                depth += 1;
            }
            b')' if !quoted && depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    if first.is_none() {
                        first = Some(std::mem::take(&mut cur));
                    }
                    cur.clear();
                    out.extend(sep);
                } else {
                    cur.push(b);
                }
            }
            _ if depth > 0 => cur.push(b),
            _ => out.push(b),
        }
    }
    (out, first)
}

/// `value *(; name=value)`: the leading value and the parameters (names as given, values
/// unquoted). Malformed parameters are skipped.
fn parse_value_params(v: &[u8]) -> (Vec<u8>, Params) {
    let v = strip_comments(v);
    // Split at ';' outside quoted strings.
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut esc = false;
    for &b in &v {
        if esc {
            esc = false;
            cur.push(b);
            continue;
        }
        match b {
            b'\\' if quoted => {
                esc = true;
                cur.push(b);
            }
            b'"' => {
                quoted = !quoted;
                cur.push(b);
            }
            b';' if !quoted => pieces.push(std::mem::take(&mut cur)),
            _ => cur.push(b),
        }
    }
    pieces.push(cur);
    let mut it = pieces.into_iter();
    let value = it.next().map(|x| trim(&x).to_vec()).unwrap_or_default();
    let mut params = Vec::new();
    for piece in it {
        let Some(eq) = memchr::memchr(b'=', &piece) else {
            continue;
        };
        let name = trim(&piece[..eq]);
        let raw = trim(&piece[eq + 1..]);
        if name.is_empty() || !name.iter().all(|&b| is_token_char(b)) {
            continue;
        }
        let val = if raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"' {
            let mut out = Vec::with_capacity(raw.len());
            let mut esc = false;
            for &b in &raw[1..raw.len() - 1] {
                if esc || b != b'\\' {
                    out.push(b);
                    esc = false;
                } else {
                    esc = true;
                }
            }
            out
        } else {
            raw.to_vec()
        };
        params.push((name.to_vec(), val));
    }
    (value, params)
}

/// The entity a section part path (`1.2.3`) names, per RFC 3501 §6.4.5: numbers index the
/// parts of a multipart; in a message/rfc822 part they continue inside the encapsulated message;
/// part 1 of a non-multipart entity is the entity itself.
pub fn resolve<'p>(root: &'p Part, path: &[u32]) -> Option<&'p Part> {
    let mut cur = root;
    for (i, &n) in path.iter().enumerate() {
        if i > 0 {
            if let Kind::Message(_, inner) = &cur.kind {
                cur = inner;
            }
        }
        cur = match &cur.kind {
            Kind::Multipart(children) => children.get((n as usize).checked_sub(1)?)?,
            _ if n == 1 => cur,
            _ => return None,
        };
    }
    Some(cur)
}

// ---- the cache format: a version byte, then length-prefixed fields (little endian) ----

struct W(Vec<u8>);

impl W {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.0.extend_from_slice(b);
    }
    fn opt(&mut self, b: &Option<Vec<u8>>) {
        match b {
            None => self.0.push(0),
            Some(b) => {
                self.0.push(1);
                self.bytes(b);
            }
        }
    }
    fn params(&mut self, p: &Params) {
        self.u32(p.len() as u32);
        for (k, v) in p {
            self.bytes(k);
            self.bytes(v);
        }
    }
    fn addrs(&mut self, list: &[envelope::Addr]) {
        self.u32(list.len() as u32);
        for a in list {
            self.opt(&a.name);
            self.opt(&a.adl);
            self.opt(&a.mailbox);
            self.opt(&a.host);
        }
    }
    fn envelope(&mut self, e: &Envelope) {
        self.opt(&e.date);
        self.opt(&e.subject);
        for l in [&e.from, &e.sender, &e.reply_to, &e.to, &e.cc, &e.bcc] {
            self.addrs(l);
        }
        self.opt(&e.in_reply_to);
        self.opt(&e.message_id);
    }
    fn part(&mut self, p: &Part) {
        self.u64(p.start as u64);
        self.u64(p.body as u64);
        self.u64(p.end as u64);
        self.bytes(&p.ctype);
        self.bytes(&p.subtype);
        self.params(&p.params);
        self.opt(&p.id);
        self.opt(&p.description);
        self.opt(&p.encoding);
        self.opt(&p.md5);
        match &p.disposition {
            None => self.0.push(0),
            Some((d, params)) => {
                self.0.push(1);
                self.bytes(d);
                self.params(params);
            }
        }
        match &p.language {
            None => self.0.push(0),
            Some(l) => {
                self.0.push(1);
                self.u32(l.len() as u32);
                for x in l {
                    self.bytes(x);
                }
            }
        }
        self.opt(&p.location);
        self.u32(p.lines);
        match &p.kind {
            Kind::Leaf => self.0.push(0),
            Kind::Multipart(children) => {
                self.0.push(1);
                self.u32(children.len() as u32);
                for c in children {
                    self.part(c);
                }
            }
            Kind::Message(env, inner) => {
                self.0.push(2);
                self.envelope(env);
                self.part(inner);
            }
        }
    }
}

struct R<'a> {
    b: &'a [u8],
    depth: usize,
}

impl R<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.b.len() < n {
            return None;
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Some(h)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        self.take(n).map(|b| b.to_vec())
    }
    fn opt(&mut self) -> Option<Option<Vec<u8>>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(self.bytes()?)),
            _ => None,
        }
    }
    fn count(&mut self) -> Option<usize> {
        let n = self.u32()? as usize;
        // Every element takes at least one byte: a corrupt count cannot make us allocate much.
        (n <= self.b.len()).then_some(n)
    }
    fn params(&mut self) -> Option<Params> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push((self.bytes()?, self.bytes()?));
        }
        Some(out)
    }
    fn addrs(&mut self) -> Option<Vec<envelope::Addr>> {
        let n = self.count()?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(envelope::Addr {
                name: self.opt()?,
                adl: self.opt()?,
                mailbox: self.opt()?,
                host: self.opt()?,
            });
        }
        Some(out)
    }
    fn envelope(&mut self) -> Option<Envelope> {
        Some(Envelope {
            date: self.opt()?,
            subject: self.opt()?,
            from: self.addrs()?,
            sender: self.addrs()?,
            reply_to: self.addrs()?,
            to: self.addrs()?,
            cc: self.addrs()?,
            bcc: self.addrs()?,
            in_reply_to: self.opt()?,
            message_id: self.opt()?,
        })
    }
    fn part(&mut self) -> Option<Part> {
        self.depth += 1;
        if self.depth > 2 * MAX_DEPTH + 2 {
            return None;
        }
        let mut p = Part {
            start: self.u64()? as usize,
            body: self.u64()? as usize,
            end: self.u64()? as usize,
            ctype: self.bytes()?,
            subtype: self.bytes()?,
            params: self.params()?,
            id: self.opt()?,
            description: self.opt()?,
            encoding: self.opt()?,
            md5: self.opt()?,
            ..Part::default()
        };
        p.disposition = match self.u8()? {
            0 => None,
            1 => Some((self.bytes()?, self.params()?)),
            _ => return None,
        };
        p.language = match self.u8()? {
            0 => None,
            1 => {
                let n = self.count()?;
                let mut l = Vec::with_capacity(n);
                for _ in 0..n {
                    l.push(self.bytes()?);
                }
                Some(l)
            }
            _ => return None,
        };
        p.location = self.opt()?;
        p.lines = self.u32()?;
        p.kind = match self.u8()? {
            0 => Kind::Leaf,
            1 => {
                let n = self.count()?;
                let mut c = Vec::with_capacity(n);
                for _ in 0..n {
                    c.push(self.part()?);
                }
                Kind::Multipart(c)
            }
            2 => {
                let env = self.envelope()?;
                Kind::Message(Box::new(env), Box::new(self.part()?))
            }
            _ => return None,
        };
        self.depth -= 1;
        if p.start > p.body || p.body > p.end {
            return None;
        }
        Some(p)
    }
}

impl Cached {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W(Vec::with_capacity(self.header.len() + 512));
        w.0.push(CACHE_VERSION);
        w.bytes(&self.header);
        w.envelope(&self.envelope);
        w.part(&self.root);
        w.0
    }

    /// `None` for anything that is not a complete entry of the current version (it is then
    /// re-parsed from the message).
    pub fn decode(b: &[u8]) -> Option<Cached> {
        let mut r = R { b, depth: 0 };
        if r.u8()? != CACHE_VERSION {
            return None;
        }
        let header = r.bytes()?;
        let envelope = r.envelope()?;
        let root = r.part()?;
        if !r.b.is_empty() || header.len() != root.body - root.start {
            return None;
        }
        Some(Cached {
            header,
            envelope,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIGNED: &[u8] = b"From: A <a@example.kz>\r\n\
To: b@example.kz\r\n\
Subject: signed\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"outer\"\r\n\
\r\n\
preamble\r\n\
--outer\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\";\r\n\
\x20micalg=sha-256; boundary=inner\r\n\
\r\n\
--inner\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
hello\r\n\
world\r\n\
--inner\r\n\
Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
\r\n\
AAAA\r\n\
--inner--\r\n\
--outer\r\n\
Content-Type: application/pdf; name=\"c.pdf\"\r\n\
Content-Disposition: attachment; filename=\"c.pdf\"\r\n\
\r\n\
PDF\r\n\
--outer--\r\n\
epilogue\r\n";

    #[test]
    fn nested_multipart_structure() {
        let c = parse(SIGNED);
        let Kind::Multipart(outer) = &c.root.kind else {
            panic!("not multipart")
        };
        assert_eq!(outer.len(), 2);
        let Kind::Multipart(inner) = &outer[0].kind else {
            panic!("inner not multipart")
        };
        assert_eq!(inner.len(), 2);
        assert_eq!(&SIGNED[inner[0].body_range()], b"hello\r\nworld");
        assert_eq!(inner[0].lines, 1);
        assert_eq!(&SIGNED[inner[1].body_range()], b"AAAA");
        assert_eq!(inner[1].encoding.as_deref(), Some(&b"base64"[..]));
        assert_eq!(
            inner[1].disposition,
            Some((
                b"attachment".to_vec(),
                vec![(b"filename".to_vec(), b"smime.p7s".to_vec())]
            ))
        );
        assert_eq!(&SIGNED[outer[1].body_range()], b"PDF");
        assert_eq!(outer[0].param("micalg"), Some(&b"sha-256"[..]));
        assert_eq!(
            outer[0].param("protocol"),
            Some(&b"application/pkcs7-signature"[..])
        );
        let p = resolve(&c.root, &[1, 2]).unwrap();
        assert_eq!(p.subtype, b"pkcs7-signature");
        assert!(resolve(&c.root, &[3]).is_none());
        assert!(resolve(&c.root, &[0]).is_none());
        assert_eq!(Cached::decode(&c.encode()), Some(c.clone()));
    }

    #[test]
    fn plain_message_and_part_one() {
        let m = b"Subject: x\r\n\r\nbody\r\n";
        let c = parse(m);
        assert_eq!(c.header, b"Subject: x\r\n\r\n");
        assert_eq!(c.root.ctype, b"text");
        let p = resolve(&c.root, &[1]).unwrap();
        assert_eq!(&m[p.body_range()], b"body\r\n");
        assert!(resolve(&c.root, &[2]).is_none());
    }

    #[test]
    fn message_rfc822_nesting() {
        let m = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\
Content-Type: text/plain\r\n\r\nfirst\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n\
Subject: inner\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n--c\r\n\r\nplain\r\n--c\r\n\
Content-Type: text/html\r\n\r\n<p>\r\n--c--\r\n--b--\r\n";
        let c = parse(m);
        let p2 = resolve(&c.root, &[2]).unwrap();
        let Kind::Message(env, inner) = &p2.kind else {
            panic!("not message")
        };
        assert_eq!(env.subject.as_deref(), Some(&b"inner"[..]));
        assert!(inner.is_multipart());
        let p21 = resolve(&c.root, &[2, 1]).unwrap();
        assert_eq!(&m[p21.body_range()], b"plain");
        let p22 = resolve(&c.root, &[2, 2]).unwrap();
        assert_eq!(p22.subtype, b"html");
        assert_eq!(Cached::decode(&c.encode()), Some(c.clone()));
    }

    #[test]
    fn hostile_structures_are_bounded() {
        // Deep nesting.
        let mut m = Vec::new();
        for i in 0..200 {
            m.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        m.extend_from_slice(b"\r\nleaf\r\n");
        let c = parse(&m);
        assert_eq!(Cached::decode(&c.encode()), Some(c.clone()));
        // Many parts.
        let mut m = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
        for _ in 0..10_000 {
            m.extend_from_slice(b"--x\r\n\r\na\r\n");
        }
        let c = parse(&m);
        let Kind::Multipart(parts) = &c.root.kind else {
            panic!()
        };
        assert!(parts.len() < MAX_PARTS);
        // Garbage never panics.
        for junk in [
            &b""[..],
            b"\r\n",
            b":",
            b"Content-Type: multipart/x; boundary=\"\"\r\n\r\n--",
        ] {
            let c = parse(junk);
            assert_eq!(Cached::decode(&c.encode()), Some(c.clone()));
        }
        assert!(Cached::decode(b"\x01\xff\xff\xff\xff").is_none());
    }

    /// Mutations of a real structure: parsing, resolving sections and decoding truncated or
    /// corrupted cache entries never panic.
    #[test]
    fn mutated_input_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet: &[u8] =
            b"-\r\n:;=\"()<>@,Content-Type: multipart/mixed; boundary=xmessage/rfc822 ";
        for _ in 0..3000 {
            let mut m = SIGNED.to_vec();
            for _ in 0..(next() % 8) {
                let at = (next() as usize) % m.len();
                match next() % 3 {
                    0 => m[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => {
                        m.remove(at);
                    }
                    _ => m.truncate(at),
                }
                if m.is_empty() {
                    break;
                }
            }
            let c = parse(&m);
            for path in [&[1u32][..], &[1, 1], &[1, 2], &[2], &[2, 1, 1], &[3]] {
                if let Some(p) = resolve(&c.root, path) {
                    let _ = m.get(p.header_range());
                    let _ = m.get(p.body_range());
                }
            }
            let enc = c.encode();
            assert_eq!(Cached::decode(&enc).as_ref(), Some(&c));
            let cut = (next() as usize) % enc.len();
            let _ = Cached::decode(&enc[..cut]);
            let mut bad = enc.clone();
            let at = (next() as usize) % bad.len();
            bad[at] ^= 0xff;
            let _ = Cached::decode(&bad);
        }
    }
}
