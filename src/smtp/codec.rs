//! Framing, without I/O: the input buffer with its command-line splitter, the DATA decoder
//! (dot-unstuffing, end-of-data detection, line ends) and the line-end rules for BDAT.
//!
//! "Need more bytes" is a normal answer here (`None` / `done == false`); the session reads more and
//! asks again. Nothing here grows without bound: a command line longer than the limit is skipped up
//! to its end and reported once; message text goes to the caller's buffer as it is decoded (the
//! size limit and spooling are `spool::Body`'s).

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

/// What the line-end rules found in a message (RFC 5321 §2.3.8: CR and LF only ever occur
/// together, as CRLF). A bare LF is taken as a line end and written as CRLF (Postfix's
/// `smtpd_forbid_bare_newline = normalize`); a bare CR, or a "." line whose line ends are not both
/// CRLF, makes the message refused: such a message could end earlier at a next hop that accepts
/// other end-of-data sequences (SMTP smuggling), and a bare CR could hide a header.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineEndFaults {
    /// A CR not followed by LF.
    pub bare_cr: bool,
    /// A line holding only "." with a bare LF before or after it (LF "." LF, CRLF "." LF,
    /// LF "." CRLF): what other servers might take for the end of the data.
    pub bad_dot_line: bool,
    /// How many bare LFs were turned into CRLF.
    pub bare_lf: u64,
}

impl LineEndFaults {
    /// Whether the message must be refused.
    pub fn refused(&self) -> bool {
        self.bare_cr || self.bad_dot_line
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// At the start of a line (after a line end, or right after the DATA command). `lf`: the
    /// line end before was a bare LF.
    LineStart { lf: bool },
    /// Inside a line.
    Mid,
    /// Just after a CR inside a line (not written yet).
    Cr,
    /// A "." at the start of a line (not kept: either stuffing or the end marker).
    Dot { lf: bool },
    /// "." then CR at the start of a line (neither kept yet).
    DotCr { lf: bool },
}

/// Decodes the DATA text (RFC 5321 §4.5.2): removes the leading "." of a line that starts with
/// one, and stops at CRLF "." CRLF. Only that exact sequence ends the data: LF "." LF, CR "." CR
/// and the mixed forms are content (SMTP smuggling), and mark the message refused (see
/// [`LineEndFaults`]). The CRLF before the final "." belongs to the message. Every line end in the
/// output is CRLF (a bare LF becomes CRLF). Lines of any length are accepted; the total size is
/// bounded by the caller (`spool::Body`).
#[derive(Debug)]
pub struct DotDecoder {
    state: DataState,
    pub faults: LineEndFaults,
}

impl Default for DotDecoder {
    fn default() -> Self {
        DotDecoder::new()
    }
}

impl DotDecoder {
    pub fn new() -> DotDecoder {
        DotDecoder {
            state: DataState::LineStart { lf: false },
            faults: LineEndFaults::default(),
        }
    }

    /// Feeds bytes, appending the decoded text to `out` (at most twice `data.len()` bytes);
    /// returns how many were consumed and whether the end of data was reached (the bytes after
    /// the end marker are not consumed: they are the next commands).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while let Some(&b) = data.get(i) {
            match self.state {
                DataState::LineStart { lf } => {
                    if b == b'.' {
                        self.state = DataState::Dot { lf };
                        i += 1;
                    } else {
                        self.state = DataState::Mid;
                    }
                }
                DataState::Mid => {
                    let rest = data.get(i..).unwrap_or_default();
                    match memchr::memchr2(b'\r', b'\n', rest) {
                        None => {
                            out.extend_from_slice(rest);
                            i = data.len();
                        }
                        Some(off) => {
                            out.extend_from_slice(rest.get(..off).unwrap_or_default());
                            i += off + 1;
                            if rest.get(off) == Some(&b'\r') {
                                self.state = DataState::Cr;
                            } else {
                                out.extend_from_slice(b"\r\n");
                                self.faults.bare_lf += 1;
                                self.state = DataState::LineStart { lf: true };
                            }
                        }
                    }
                }
                DataState::Cr => {
                    if b == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                        self.state = DataState::LineStart { lf: false };
                    } else {
                        self.faults.bare_cr = true;
                        out.push(b'\r');
                        self.state = DataState::Mid;
                    }
                }
                DataState::Dot { lf } => match b {
                    b'\r' => {
                        self.state = DataState::DotCr { lf };
                        i += 1;
                    }
                    b'\n' => {
                        // "." LF: an end marker for a server that takes bare LF as a line end.
                        self.faults.bad_dot_line = true;
                        self.faults.bare_lf += 1;
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                        self.state = DataState::LineStart { lf: true };
                    }
                    // A stuffed line: the first "." goes, the rest of the line stays.
                    _ => self.state = DataState::Mid,
                },
                DataState::DotCr { lf } => {
                    if b == b'\n' {
                        if !lf {
                            return (i + 1, true);
                        }
                        // LF "." CRLF: not the end here, but it would be elsewhere.
                        self.faults.bad_dot_line = true;
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                        self.state = DataState::LineStart { lf: false };
                    } else {
                        // "." CR then something else: a bare CR.
                        self.faults.bare_cr = true;
                        out.push(b'\r');
                        self.state = DataState::Mid;
                    }
                }
            }
        }
        (i, false)
    }
}

/// The line-end rules of [`DotDecoder`] for BDAT chunks (RFC 3030: no dot-stuffing; we offer
/// no BINARYMIME, so the text has CRLF line ends like DATA): a bare LF becomes CRLF, a bare CR
/// marks the message refused. Keeps a CR that ends one chunk until the next one shows whether an
/// LF follows.
#[derive(Debug, Default)]
pub struct LineEnds {
    cr: bool,
    pub faults: LineEndFaults,
}

impl LineEnds {
    pub fn new() -> LineEnds {
        LineEnds::default()
    }

    /// Appends `data` to `out` with the line ends fixed (at most twice `data.len()` bytes).
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let mut i = 0;
        if self.cr && !data.is_empty() {
            self.cr = false;
            out.push(b'\r');
            if data.first() == Some(&b'\n') {
                out.push(b'\n');
                i = 1;
            } else {
                self.faults.bare_cr = true;
            }
        }
        while i < data.len() {
            let rest = data.get(i..).unwrap_or_default();
            let Some(off) = memchr::memchr2(b'\r', b'\n', rest) else {
                out.extend_from_slice(rest);
                return;
            };
            out.extend_from_slice(rest.get(..off).unwrap_or_default());
            i += off + 1;
            if rest.get(off) == Some(&b'\n') {
                self.faults.bare_lf += 1;
                out.extend_from_slice(b"\r\n");
            } else {
                match data.get(i) {
                    None => self.cr = true,
                    Some(b'\n') => {
                        out.extend_from_slice(b"\r\n");
                        i += 1;
                    }
                    Some(_) => {
                        self.faults.bare_cr = true;
                        out.push(b'\r');
                    }
                }
            }
        }
    }

    /// The end of the message: a CR still held is a bare CR.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.cr) {
            self.faults.bare_cr = true;
            out.push(b'\r');
        }
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

    /// Feeds `parts` in turn; returns (text, bytes after the end, end reached, faults).
    fn decode(parts: &[&[u8]]) -> (Vec<u8>, Vec<u8>, bool, LineEndFaults) {
        let mut d = DotDecoder::new();
        let mut out = Vec::new();
        let mut rest = Vec::new();
        let mut done = false;
        for p in parts {
            if done {
                rest.extend_from_slice(p);
                continue;
            }
            let (n, fin) = d.feed(p, &mut out);
            if fin {
                done = true;
                rest.extend_from_slice(&p[n..]);
            } else {
                assert_eq!(n, p.len());
            }
        }
        (out, rest, done, d.faults)
    }

    #[test]
    fn unstuffs_and_ends() {
        let (body, rest, ok, faults) = decode(&[b"Subject: x\r\n\r\n..dot\r\n.\r\n", b"QUIT\r\n"]);
        assert!(ok);
        assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        assert_eq!(faults, LineEndFaults::default());
    }

    #[test]
    fn end_marker_split_everywhere() {
        let msg = b"a\r\n..b\r\n.c\r\n.\r\nNOOP\r\n";
        for cut in 0..msg.len() {
            let (body, rest, ok, faults) = decode(&[&msg[..cut], &msg[cut..]]);
            assert!(ok, "cut {cut}");
            assert_eq!(body, b"a\r\n.b\r\nc\r\n", "cut {cut}");
            assert_eq!(rest, b"NOOP\r\n", "cut {cut}");
            assert!(!faults.refused());
        }
        // Byte at a time.
        let parts: Vec<&[u8]> = msg.chunks(1).collect();
        let (body, rest, _, _) = decode(&parts);
        assert_eq!(body, b"a\r\n.b\r\nc\r\n");
        assert_eq!(rest, b"NOOP\r\n");
    }

    #[test]
    fn empty_message_and_first_line_stuffed() {
        let (body, _, ok, _) = decode(&[b".\r\n"]);
        assert!(ok);
        assert!(body.is_empty());
        let (body, _, _, _) = decode(&[b"..x\r\n.\r\n"]);
        assert_eq!(body, b".x\r\n");
    }

    /// Finding 8 (SMTP smuggling): no other sequence ends the data, and each one marks the
    /// message refused; the text written out never holds a bare LF.
    #[test]
    fn smuggling_sequences_do_not_end_data_and_are_refused() {
        for (name, smuggled) in [
            ("CR . CR", &b"x\r.\rMAIL FROM:<e@v>\r\n"[..]),
            ("CR . CRLF", b"x\r.\r\nMAIL FROM:<e@v>\r\n"),
            ("LF . LF", b"x\n.\nMAIL FROM:<e@v>\r\n"),
            ("LF . CRLF", b"x\n.\r\nMAIL FROM:<e@v>\r\n"),
            ("CRLF . LF", b"x\r\n.\nMAIL FROM:<e@v>\r\n"),
            ("CRLF . CR", b"x\r\n.\rMAIL FROM:<e@v>\r\n"),
        ] {
            let mut input = smuggled.to_vec();
            input.extend_from_slice(b".\r\nNOOP\r\n");
            for cut in 0..input.len() {
                let (body, rest, ok, faults) = decode(&[&input[..cut], &input[cut..]]);
                assert!(ok, "{name} cut {cut}");
                assert_eq!(rest, b"NOOP\r\n", "{name} cut {cut}");
                assert!(faults.refused(), "{name} cut {cut}: {faults:?}");
                assert!(body.ends_with(b"MAIL FROM:<e@v>\r\n"), "{name}");
                for (i, &b) in body.iter().enumerate() {
                    if b == b'\n' {
                        assert_eq!(body[i - 1], b'\r', "{name}: bare LF written");
                    }
                }
            }
        }
    }

    /// A bare LF is a line end written as CRLF (dot-unstuffing applies after it); the message
    /// is not refused for it.
    #[test]
    fn bare_lf_becomes_crlf() {
        let (body, rest, ok, faults) = decode(&[b"Subject: a\n\nl1\n..l2\nl3\r\n", b".\r\n"]);
        assert!(ok);
        assert!(rest.is_empty());
        assert_eq!(body, b"Subject: a\r\n\r\nl1\r\n.l2\r\nl3\r\n");
        assert!(!faults.refused());
        assert_eq!(faults.bare_lf, 4);
    }

    #[test]
    fn bare_cr_in_a_header_is_refused() {
        let (body, _, ok, faults) = decode(&[b"Subject: x\rX-EDS-Status: pass\r\n\r\nb\r\n.\r\n"]);
        assert!(ok);
        assert!(faults.bare_cr);
        assert!(body.starts_with(b"Subject: x\rX-EDS"));
    }

    /// `input` through [`LineEnds`] in two chunks cut at `cut`; the state and the output.
    fn line_ends_in_two(input: &[u8], cut: usize) -> (LineEnds, Vec<u8>) {
        let mut le = LineEnds::new();
        let mut out = Vec::new();
        le.feed(&input[..cut], &mut out);
        le.feed(&input[cut..], &mut out);
        le.finish(&mut out);
        (le, out)
    }

    #[test]
    fn bdat_line_ends_across_chunks() {
        let input = b"a\r\nb\nc\r\n";
        for cut in 0..=input.len() {
            let (le, out) = line_ends_in_two(input, cut);
            assert_eq!(out, b"a\r\nb\r\nc\r\n", "cut {cut}");
            assert_eq!(le.faults.bare_lf, 1);
            assert!(!le.faults.refused());
        }
        for bad in [&b"a\rb\r\n"[..], b"a\r", b"a\r\r\n"] {
            for cut in 0..=bad.len() {
                let (le, _) = line_ends_in_two(bad, cut);
                assert!(le.faults.bare_cr, "{bad:?} cut {cut}");
            }
        }
    }

    #[test]
    fn long_lines_and_8bit_are_content() {
        let mut msg = vec![0xD0u8; 5000];
        msg.extend_from_slice(b"\xff\x00\r\n");
        let mut input = msg.clone();
        input.extend_from_slice(b".\r\n");
        let (body, _, ok, faults) = decode(&[&input]);
        assert!(ok);
        assert_eq!(body, msg);
        assert_eq!(faults, LineEndFaults::default());
    }
}
