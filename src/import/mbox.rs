//! Reading an mbox file one message at a time, in bounded memory.
//!
//! - A message starts at a `From ` line at the start of the file or after a blank line whose
//!   end carries an asctime date (`From sender Thu Nov 27 14:32:18 2026`); that date becomes
//!   INTERNALDATE. The blank line before a `From ` line (and at the end of the file) is the
//!   separator, not message content.
//! - mboxrd unquoting: one `>` is removed from every `>…>From ` line. For mboxo files this
//!   turns `>From ` back into `From `, the usual reading. mboxcl/mboxcl2: a `Content-Length:`
//!   header is honoured in that no `From ` line inside that many body bytes starts a message.
//! - Line ends become CRLF (RFC 5322); a message's last line gets one too.
//! - `Status:` (`R` \Seen), `X-Status:` (`A` \Answered, `F` \Flagged, `T` \Draft, `D` \Deleted)
//!   and `X-Keywords:` headers give flags, as Dovecot and mutt write them; the headers stay in
//!   the message.
//! - A message over the size limit is skipped (its lines are read and dropped), with a warning
//!   naming the file and the line of its `From `.

use std::io::{BufRead, ErrorKind};

use super::{Event, Item};

pub struct Mbox<R> {
    r: R,
    file: String,
    mailbox: String,
    max_size: u64,
    line_no: u64,
    /// The `From ` line that opens the next message, with its line number.
    next_from: Option<(Vec<u8>, u64)>,
    started: bool,
    done: bool,
}

/// One line: its bytes without the line end (at most `cap`), and whether it was longer.
struct Line {
    bytes: Vec<u8>,
    /// Bytes it took in the file, line end included.
    raw_len: u64,
    truncated: bool,
}

impl<R: BufRead> Mbox<R> {
    pub fn new(r: R, file: &str, mailbox: &str, max_size: u64) -> Self {
        Mbox {
            r,
            file: file.to_string(),
            mailbox: mailbox.to_string(),
            max_size,
            line_no: 0,
            next_from: None,
            started: false,
            done: false,
        }
    }

    /// Reads one line, keeping at most `cap` bytes of it; None at EOF.
    fn line(&mut self, cap: usize) -> std::io::Result<Option<Line>> {
        let mut out = Line {
            bytes: Vec::new(),
            raw_len: 0,
            truncated: false,
        };
        loop {
            let buf = match self.r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if out.raw_len == 0 {
                    return Ok(None);
                }
                break;
            }
            let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], Some(i + 1)),
                None => (buf, None),
            };
            let room = cap.saturating_sub(out.bytes.len());
            if chunk.len() > room {
                out.truncated = true;
            }
            out.bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = end.unwrap_or(buf.len());
            out.raw_len += used as u64;
            self.r.consume(used);
            if end.is_some() {
                break;
            }
        }
        self.line_no += 1;
        if out.bytes.ends_with(b"\r") && !out.truncated {
            out.bytes.pop();
        }
        Ok(Some(out))
    }

    fn skipped(&self, at: u64, reason: String) -> Event {
        Event::Skipped {
            origin: format!("{}:{at}", self.file),
            reason,
        }
    }

    /// Reads the next message (or a skipped one); None at the end.
    fn read_next(&mut self) -> std::io::Result<Option<Event>> {
        let cap = (self.max_size as usize).saturating_add(2);
        if !self.started {
            self.started = true;
            // The first non-blank line must be a `From ` line.
            loop {
                let Some(l) = self.line(cap)? else {
                    return Ok(None);
                };
                if l.bytes.is_empty() {
                    continue;
                }
                if !l.bytes.starts_with(b"From ") {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "not an mbox file (line {} is no `From ` line)",
                            self.line_no
                        ),
                    ));
                }
                self.next_from = Some((l.bytes, self.line_no));
                break;
            }
        }
        let Some((from, from_line)) = self.next_from.take() else {
            return Ok(None);
        };
        let date = from_line_date(&from);
        let mut data: Vec<u8> = Vec::new();
        let mut oversize = false;
        let mut pending_blank = false;
        let mut in_header = true;
        let mut header = HeaderFlags::default();
        let mut content_length: Option<u64> = None;
        let mut body_bytes: u64 = 0;
        let mut last_header: Option<Vec<u8>> = None;
        while let Some(l) = self.line(cap)? {
            let is_blank = l.bytes.is_empty() && !l.truncated;
            // A separator: `From ` after a blank line, with a date, and not inside the body
            // bytes a Content-Length header announced.
            if pending_blank
                && l.bytes.starts_with(b"From ")
                && content_length.is_none_or(|n| body_bytes >= n)
                && from_line_date(&l.bytes).is_some()
            {
                self.next_from = Some((l.bytes, self.line_no));
                break;
            }
            if !in_header {
                body_bytes += l.raw_len;
            }
            if pending_blank {
                push_line(&mut data, b"", &mut oversize, self.max_size);
                pending_blank = false;
            }
            if in_header {
                if is_blank {
                    in_header = false;
                    if let Some(h) = last_header.take() {
                        header.take(&h, &mut content_length);
                    }
                } else if l.bytes.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                    if let Some(h) = last_header.as_mut() {
                        if h.len() < 4096 {
                            h.extend_from_slice(&l.bytes);
                        }
                    }
                } else {
                    if let Some(h) = last_header.take() {
                        header.take(&h, &mut content_length);
                    }
                    last_header = Some(l.bytes[..l.bytes.len().min(4096)].to_vec());
                }
            }
            if is_blank {
                pending_blank = true;
                continue;
            }
            if l.truncated {
                oversize = true;
            }
            push_line(&mut data, unquote(&l.bytes), &mut oversize, self.max_size);
        }
        if in_header {
            if let Some(h) = last_header.take() {
                header.take(&h, &mut content_length);
            }
        }
        // (A blank line still pending here is the separator before EOF: dropped.)
        if oversize {
            return Ok(Some(self.skipped(
                from_line,
                format!("over imap.max_literal_size ({})", self.max_size),
            )));
        }
        if data.is_empty() {
            return Ok(Some(self.skipped(from_line, "empty message".into())));
        }
        let internal_date = date.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        Ok(Some(Event::Message(Item {
            mailbox: self.mailbox.clone(),
            flags: header.flags,
            internal_date,
            data,
            origin: format!("{}:{from_line}", self.file),
        })))
    }
}

impl<R: BufRead> Iterator for Mbox<R> {
    type Item = anyhow::Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.read_next() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(
                    anyhow::Error::new(e).context(format!("reading {}", self.file))
                ))
            }
        }
    }
}

/// Appends a line and CRLF, or marks the message oversize (and stops keeping its bytes).
fn push_line(data: &mut Vec<u8>, line: &[u8], oversize: &mut bool, max: u64) {
    if *oversize {
        return;
    }
    if (data.len() + line.len() + 2) as u64 > max {
        *oversize = true;
        *data = Vec::new();
        return;
    }
    data.extend_from_slice(line);
    data.extend_from_slice(b"\r\n");
}

/// mboxrd: `>From ` → `From `, `>>From ` → `>From `, …
fn unquote(line: &[u8]) -> &[u8] {
    let n = line.iter().take_while(|&&b| b == b'>').count();
    if n > 0 && line[n..].starts_with(b"From ") {
        &line[1..]
    } else {
        line
    }
}

#[derive(Default)]
struct HeaderFlags {
    flags: Vec<String>,
}

impl HeaderFlags {
    /// One unfolded header line of the message's top-level header.
    fn take(&mut self, h: &[u8], content_length: &mut Option<u64>) {
        let Some(colon) = h.iter().position(|&b| b == b':') else {
            return;
        };
        let name = String::from_utf8_lossy(&h[..colon])
            .trim()
            .to_ascii_lowercase();
        let value = String::from_utf8_lossy(&h[colon + 1..]).trim().to_string();
        match name.as_str() {
            "status" if value.contains('R') => self.add("\\Seen"),
            "x-status" => {
                for (c, f) in [
                    ('A', "\\Answered"),
                    ('F', "\\Flagged"),
                    ('T', "\\Draft"),
                    ('D', "\\Deleted"),
                ] {
                    if value.contains(c) {
                        self.add(f);
                    }
                }
            }
            "x-keywords" => {
                for k in value.split([' ', ',', '\t']) {
                    if super::is_keyword(k) && self.flags.len() < 32 {
                        self.add(k);
                    }
                }
            }
            "content-length" => *content_length = value.parse().ok(),
            _ => {}
        }
    }

    fn add(&mut self, f: &str) {
        if !self.flags.iter().any(|o| o.eq_ignore_ascii_case(f)) {
            self.flags.push(f.to_string());
        }
    }
}

/// The date at the end of a `From ` line, Unix seconds (UTC: the mbox convention has no zone;
/// a numeric zone after the year is applied when present).
pub fn from_line_date(line: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(line).ok()?;
    let rest = s.strip_prefix("From ")?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    // … Www Mmm dd hh:mm:ss yyyy [+zzzz]; the weekday must be one but is not checked.
    let try_at = |end: usize| -> Option<i64> {
        if end < 5 || end > words.len() {
            return None;
        }
        let wd = words[end - 5];
        if wd.len() != 3 || !wd.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        let text = words[end - 4..end].join(" ");
        let t = chrono::NaiveDateTime::parse_from_str(&text, "%b %d %H:%M:%S %Y").ok()?;
        Some(t.and_utc().timestamp())
    };
    if let Some(t) = try_at(words.len()) {
        return Some(t);
    }
    // With a zone after the year: `… 2026 +0500`.
    let zone = words.last()?;
    let t = try_at(words.len() - 1)?;
    let z = chrono::FixedOffset::east_opt(parse_zone(zone)?)?;
    Some(t - z.local_minus_utc() as i64)
}

fn parse_zone(z: &str) -> Option<i32> {
    let (sign, digits) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    Some(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(mbox: &[u8], max: u64) -> Vec<Event> {
        Mbox::new(mbox, "f", "INBOX", max)
            .collect::<anyhow::Result<Vec<_>>>()
            .unwrap()
    }

    fn msg(e: &Event) -> &Item {
        match e {
            Event::Message(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mboxrd_separators_quoting_flags() {
        let mbox = b"From a@b Thu Nov 27 14:32:18 2026\nSubject: one\nStatus: RO\nX-Status: AF\nX-Keywords: $Label1 Work\n\nbody\n>From here\n>>From there\nFrom not a separator\n\nFrom x@y Fri Nov 28 01:02:03 2026\nSubject: two\n\nlast\n\n";
        let ev = read(mbox, 1000);
        assert_eq!(ev.len(), 2);
        let one = msg(&ev[0]);
        assert_eq!(
            one.data,
            b"Subject: one\r\nStatus: RO\r\nX-Status: AF\r\nX-Keywords: $Label1 Work\r\n\r\nbody\r\nFrom here\r\n>From there\r\nFrom not a separator\r\n".to_vec()
        );
        assert_eq!(
            one.flags,
            vec!["\\Seen", "\\Answered", "\\Flagged", "$Label1", "Work"]
        );
        assert_eq!(one.internal_date, 1795789938);
        let two = msg(&ev[1]);
        assert_eq!(two.data, b"Subject: two\r\n\r\nlast\r\n".to_vec());
        assert_eq!(two.origin, "f:12");
    }

    #[test]
    fn oversize_skipped_and_the_next_read() {
        let big = "x".repeat(300);
        let mbox = format!(
            "From a Thu Nov 27 14:32:18 2026\nS: 1\n\n{big}\n\nFrom b Thu Nov 27 14:32:18 2026\nS: 2\n\nok\n"
        );
        let ev = read(mbox.as_bytes(), 100);
        assert!(matches!(&ev[0], Event::Skipped { origin, .. } if origin == "f:1"));
        assert_eq!(msg(&ev[1]).data, b"S: 2\r\n\r\nok\r\n".to_vec());
    }

    #[test]
    fn content_length_and_zone() {
        let mbox = b"From a Thu Nov 27 14:32:18 2026 +0100\nContent-Length: 40\n\nline\n\nFrom b Thu Nov 27 14:32:18 2026\nxx\n\nFrom c Thu Nov 27 14:32:18 2026\n\nz\n";
        let ev = read(mbox, 1000);
        assert_eq!(ev.len(), 2);
        assert_eq!(msg(&ev[0]).internal_date, 1795789938 - 3600);
        assert!(msg(&ev[0])
            .data
            .ends_with(b"From b Thu Nov 27 14:32:18 2026\r\nxx\r\n"));
    }
}
