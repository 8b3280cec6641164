//! Framing, without I/O: the input buffer with its command-line splitter, the DATA decoder
//! (dot-unstuffing, end-of-data detection) and a size-bounded message buffer.
//!
//! "Need more bytes" is a normal answer here (`None` / `done == false`); the session reads more and
//! asks again. Nothing here grows without bound: a command line longer than the limit is skipped up
//! to its end and reported once, and a message larger than the limit stops being kept but is still
//! read to its end.

use memchr::memchr;

/// Longest command line we accept, CRLF included (RFC 5321 §4.5.3.1.4 asks for at least 512;
/// extensions make lines longer).
pub const MAX_LINE: usize = 4096;

/// How much we ask the socket for at a time.
const READ_CHUNK: usize = 64 * 1024;

/// One command line, or the news that a line was too long (and has been skipped).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// The whole line, including its line end.
    Line(Vec<u8>),
    TooLong,
}

/// Bytes read from the client and not yet consumed.
#[derive(Debug, Default)]
pub struct Input {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes; always `<= buf.len()`.
    pos: usize,
    /// Inside an over-long line: drop bytes up to the next LF.
    skipping: bool,
}

impl Input {
    pub fn new() -> Input {
        Input::default()
    }

    /// The unconsumed bytes.
    pub fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    /// Marks `n` bytes (at most all pending ones) as consumed.
    pub fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Drops every pending byte (STARTTLS: RFC 3207 §4.2, the CVE-2011-0411 class of bugs).
    /// Returns how many were dropped.
    pub fn discard_all(&mut self) -> usize {
        let n = self.pending().len();
        self.buf.clear();
        self.pos = 0;
        self.skipping = false;
        n
    }

    /// Makes room for the next read and returns the buffer to read into (appending).
    pub fn read_target(&mut self) -> &mut Vec<u8> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// The next complete command line, if one is buffered. A line longer than [`MAX_LINE`] is
    /// consumed up to its LF (across reads) and reported once as [`Line::TooLong`].
    pub fn next_line(&mut self) -> Option<Line> {
        let pending = self.pending();
        match memchr(b'\n', pending) {
            Some(i) => {
                let len = i + 1;
                let line = if self.skipping || len > MAX_LINE {
                    Line::TooLong
                } else {
                    Line::Line(pending.get(..len).unwrap_or_default().to_vec())
                };
                self.skipping = false;
                self.consume(len);
                Some(line)
            }
            None => {
                let n = pending.len();
                if self.skipping || n >= MAX_LINE {
                    self.skipping = true;
                    self.consume(n);
                }
                None
            }
        }
    }
}

/// A message buffer that keeps at most `limit` bytes. Past the limit it drops what it holds and
/// only counts, so that the session can read a too-big message to its end and answer 552.
#[derive(Debug)]
pub struct Body {
    data: Vec<u8>,
    limit: u64,
    total: u64,
}

impl Body {
    pub fn new(limit: u64) -> Body {
        Body {
            data: Vec::new(),
            limit,
            total: 0,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        if self.total > self.limit {
            if !self.data.is_empty() || self.data.capacity() > 0 {
                self.data = Vec::new();
            }
            return;
        }
        // Grow by hand so that the capacity never exceeds the limit (a plain `extend` may double).
        let need = self.data.len() + bytes.len();
        if need > self.data.capacity() {
            let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
            let want = need.max(self.data.capacity().saturating_mul(2).min(limit));
            self.data.reserve_exact(want - self.data.len());
        }
        self.data.extend_from_slice(bytes);
    }

    /// Whether more than `limit` bytes have been pushed.
    pub fn overflowed(&self) -> bool {
        self.total > self.limit
    }

    /// Bytes pushed so far, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept bytes (empty after an overflow).
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line (after CRLF, or right after the DATA command).
    LineStart,
    /// Inside a line.
    Mid,
    /// Just after a CR inside a line (the CR has been kept).
    Cr,
    /// A "." at the start of a line (not kept: either stuffing or the end marker).
    Dot,
    /// "." then CR at the start of a line (neither kept yet).
    DotCr,
}

/// Decodes the DATA text (RFC 5321 §4.5.2): removes the leading "." of a line that starts with
/// one, and stops at CRLF "." CRLF. Only that exact sequence ends the data: a bare LF "." LF or
/// CR "." CR is content (SMTP smuggling). The CRLF before the final "." belongs to the message.
/// Lines of any length are accepted; only the total size is bounded (by the [`Body`]).
#[derive(Debug)]
pub struct DotDecoder {
    state: DataState,
    pub body: Body,
}

impl DotDecoder {
    pub fn new(limit: u64) -> DotDecoder {
        DotDecoder {
            state: DataState::LineStart,
            body: Body::new(limit),
        }
    }

    /// Feeds bytes; returns how many were consumed and whether the end of data was reached (the
    /// bytes after the end marker are not consumed: they are the next commands).
    pub fn feed(&mut self, data: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            match self.state {
                DataState::LineStart => {
                    if b == b'.' {
                        self.state = DataState::Dot;
                        i += 1;
                    } else {
                        self.state = DataState::Mid;
                    }
                }
                DataState::Mid => {
                    let rest = data.get(i..).unwrap_or_default();
                    match memchr(b'\r', rest) {
                        None => {
                            self.body.push(rest);
                            i = data.len();
                        }
                        Some(off) => {
                            self.body.push(rest.get(..=off).unwrap_or_default());
                            i += off + 1;
                            self.state = DataState::Cr;
                        }
                    }
                }
                DataState::Cr => {
                    if b == b'\n' {
                        self.body.push(b"\n");
                        i += 1;
                        self.state = DataState::LineStart;
                    } else {
                        self.state = DataState::Mid;
                    }
                }
                DataState::Dot => {
                    if b == b'\r' {
                        self.state = DataState::DotCr;
                        i += 1;
                    } else {
                        // A stuffed line: the first "." goes, the rest of the line stays.
                        self.state = DataState::Mid;
                    }
                }
                DataState::DotCr => {
                    if b == b'\n' {
                        return (i + 1, true);
                    }
                    // "." CR then something else: the dot was stuffing, the CR is content.
                    self.body.push(b"\r");
                    self.state = DataState::Cr;
                }
            }
        }
        (i, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &mut Input) -> Vec<Line> {
        std::iter::from_fn(|| input.next_line()).collect()
    }

    fn push(input: &mut Input, bytes: &[u8]) {
        input.read_target().extend_from_slice(bytes);
    }

    #[test]
    fn splits_lines_across_reads() {
        let mut i = Input::new();
        push(&mut i, b"EHLO a\r\nNO");
        assert_eq!(lines(&mut i), vec![Line::Line(b"EHLO a\r\n".to_vec())]);
        assert_eq!(i.pending(), b"NO");
        push(&mut i, b"OP\r\nQUIT\n");
        assert_eq!(
            lines(&mut i),
            vec![
                Line::Line(b"NOOP\r\n".to_vec()),
                Line::Line(b"QUIT\n".to_vec())
            ]
        );
        assert!(i.is_empty());
    }

    #[test]
    fn long_line_is_skipped_once_then_input_continues() {
        let mut i = Input::new();
        let long = vec![b'x'; MAX_LINE * 3];
        for chunk in long.chunks(1000) {
            push(&mut i, chunk);
            assert_eq!(lines(&mut i), vec![]);
            // Never holds more than one line's worth while skipping.
            assert!(i.pending().len() < MAX_LINE + 1000);
        }
        push(&mut i, b"yy\r\nNOOP\r\n");
        assert_eq!(
            lines(&mut i),
            vec![Line::TooLong, Line::Line(b"NOOP\r\n".to_vec())]
        );
        // A long line that arrives whole.
        let mut whole = vec![b'a'; MAX_LINE];
        whole.extend_from_slice(b"\r\nRSET\r\n");
        push(&mut i, &whole);
        assert_eq!(
            lines(&mut i),
            vec![Line::TooLong, Line::Line(b"RSET\r\n".to_vec())]
        );
        // Exactly at the limit is fine.
        let mut ok = vec![b'a'; MAX_LINE - 2];
        ok.extend_from_slice(b"\r\n");
        push(&mut i, &ok);
        assert_eq!(lines(&mut i), vec![Line::Line(ok)]);
    }

    fn decode(parts: &[&[u8]], limit: u64) -> (Vec<u8>, Vec<u8>, bool) {
        let mut d = DotDecoder::new(limit);
        let mut rest = Vec::new();
        let mut done = false;
        for p in parts {
            if done {
                rest.extend_from_slice(p);
                continue;
            }
            let (n, fin) = d.feed(p);
            if fin {
                done = true;
                rest.extend_from_slice(&p[n..]);
            } else {
                assert_eq!(n, p.len());
            }
        }
        let over = d.body.overflowed();
        (d.body.into_bytes(), rest, done && !over)
    }

    #[test]
    fn unstuffs_and_ends() {
        let (body, rest, ok) = decode(&[b"Subject: x\r\n\r\n..dot\r\n.\r\n", b"QUIT\r\n"], 1000);
        assert!(ok);
        assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn end_marker_split_everywhere() {
        let msg = b"a\r\n..b\r\n.c\r\n.\r\nNOOP\r\n";
        for cut in 0..msg.len() {
            let (body, rest, ok) = decode(&[&msg[..cut], &msg[cut..]], 1000);
            assert!(ok, "cut {cut}");
            assert_eq!(body, b"a\r\n.b\r\nc\r\n", "cut {cut}");
            assert_eq!(rest, b"NOOP\r\n", "cut {cut}");
        }
        // Byte at a time.
        let parts: Vec<&[u8]> = msg.chunks(1).collect();
        let (body, rest, _) = decode(&parts, 1000);
        assert_eq!(body, b"a\r\n.b\r\nc\r\n");
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn empty_message_and_first_line_stuffed() {
        let (body, _, ok) = decode(&[b".\r\n"], 10);
        assert!(ok);
        assert!(body.is_empty());
        let (body, _, _) = decode(&[b"..x\r\n.\r\n"], 10);
        assert_eq!(body, b".x\r\n");
    }

    #[test]
    fn bare_lf_and_cr_do_not_end_data() {
        // Smuggling attempts: none of these end the message.
        let (body, rest, ok) = decode(
            &[b"a\n.\nMAIL FROM:<x@y>\r\nb\r.\rc\r\n.\r", b"\r\n.\r\n"],
            1000,
        );
        assert!(ok);
        assert_eq!(body, b"a\n.\nMAIL FROM:<x@y>\r\nb\r.\rc\r\n\r\r\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn long_lines_and_8bit_are_content() {
        let mut msg = vec![0xD0u8; 5000];
        msg.extend_from_slice(b"\xff\x00\r\n");
        let mut input = msg.clone();
        input.extend_from_slice(b".\r\n");
        let (body, _, ok) = decode(&[&input], 100_000);
        assert!(ok);
        assert_eq!(body, msg);
    }

    #[test]
    fn oversize_is_read_to_the_end_and_not_kept() {
        let mut d = DotDecoder::new(10);
        let (n, done) = d.feed(b"0123456789abcdef\r\nmore\r\n");
        assert_eq!((n, done), (24, false));
        assert!(d.body.overflowed());
        let (n, done) = d.feed(b".\r\nNOOP\r\n");
        assert_eq!((n, done), (3, true));
        assert!(d.body.into_bytes().is_empty());
    }

    #[test]
    fn body_capacity_stays_within_limit() {
        let mut b = Body::new(1000);
        for _ in 0..10 {
            b.push(&[1u8; 99]);
        }
        assert!(b.data.capacity() <= 1000);
        b.push(&[1u8; 10]);
        assert_eq!(b.data.len(), 1000);
        assert!(!b.overflowed());
        b.push(&[1]);
        assert!(b.overflowed());
        assert_eq!(b.total(), 1001);
    }
}
