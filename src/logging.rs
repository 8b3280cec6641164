//! The log: tracing events on stderr, one line per event, with nothing a client sent able to
//! start a line of its own or drive the terminal (issue 11, finding 6).
//!
//! Client strings reach many log lines (user names, envelope addresses, HELO names, error texts
//! that quote input). Rather than trust every call site, the writer escapes every event as a
//! whole before it reaches stderr: each byte below 0x20 except the event's final newline, DEL
//! (0x7f) and the C1 controls (U+0080–U+009F, which some terminals read as escape sequences)
//! become `\n`, `\r`, `\t`, `\xNN` or `\u{NN}`. So a user name `x\r\n2026-… WARN … client_ip=…`
//! stays inside its own line, which is what fail2ban and journald read. An event's own
//! multi-line text (an error's cause chain printed with `{:?}`) is kept on its one line with
//! `\n` in place of its line breaks; log error chains with `{:#}` (one line, causes joined by
//! `: `) to read them best.
//!
//! tracing-subscriber's fmt layer formats an event into one buffer and hands it to a fresh
//! writer from [`MakeWriter`] with one `write_all` (0.3.23: `fmt_layer.rs`, `on_event`). The
//! writer here still collects everything it is given and escapes and writes it when it is
//! dropped, so a `write_all` split into several `write` calls cannot cut an event apart.
//!
//! Colours (ANSI SGR sequences written by the formatter itself) only when stderr is a terminal
//! and `NO_COLOR` (<https://no-color.org>) is unset or empty: never under journald, in a pipe or
//! in a file. When colours are on, the writer lets ESC through (the formatter's colours need it)
//! and relies on tracing-subscriber, which escapes ESC, BEL, BS, FF, DEL and C1 inside field
//! values and messages since 0.3.20; every other control byte is escaped here either way.

use std::ffi::OsStr;
use std::io::{self, IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Sets up the global subscriber: level from `TANBA_LOG` (default `info`), escaped lines on
/// stderr, colours only on a terminal without `NO_COLOR`.
pub fn init() {
    let colours = colours_wanted(
        io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TANBA_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(colours)
        .with_writer(EscapingStderr { keep_esc: colours })
        .init();
}

/// Colours only for a person at a terminal who did not ask for none.
pub fn colours_wanted(stderr_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Makes one [`EventWriter`] per event, writing to stderr.
#[derive(Debug, Clone, Copy)]
pub struct EscapingStderr {
    /// Let ESC through (colours on; see the module docs).
    keep_esc: bool,
}

impl<'a> MakeWriter<'a> for EscapingStderr {
    type Writer = EventWriter;

    fn make_writer(&'a self) -> EventWriter {
        EventWriter {
            buf: Vec::new(),
            keep_esc: self.keep_esc,
        }
    }
}

/// Collects one event; escapes and writes it to stderr, in one locked write, when dropped.
pub struct EventWriter {
    buf: Vec<u8>,
    keep_esc: bool,
}

impl Write for EventWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = escape_event(&self.buf, self.keep_esc);
        // Nowhere to report a failure to write the log.
        let _ = io::stderr().lock().write_all(&line);
    }
}

/// One event as one line: every control character escaped except a final `\n` (added when
/// missing), and ESC too unless `keep_esc`.
pub fn escape_event(event: &[u8], keep_esc: bool) -> Vec<u8> {
    let body = event.strip_suffix(b"\n").unwrap_or(event);
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x1b if keep_esc => out.push(b),
            0..=0x1f | 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            // U+0080..U+009F in UTF-8: C2 80..C2 9F.
            0xc2 if matches!(body.get(i + 1), Some(0x80..=0x9f)) => {
                out.extend_from_slice(format!("\\u{{{:x}}}", body[i + 1]).as_bytes());
                i += 1;
            }
            _ => out.push(b),
        }
        i += 1;
    }
    out.push(b'\n');
    out
}

/// A client string for a log message: control characters escaped like [`escape_event`] does
/// (`\n`, `\xNN`, …) and at most `max` characters, then `…`. For call sites that build a text
/// of their own (error replies, reports) rather than a log field; log fields are escaped by the
/// writer anyway.
pub fn escape(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max) + 8);
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if (0x80..=0x9f).contains(&(c as u32)) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_one_line_and_controls_are_escaped() {
        let ev = "2026 INFO imap: authentication failed user=x\r\n2026 WARN fake client_ip=10.0.0.1 \x1b[31m\x07\x7f\u{9b}é\t|\n";
        let out = String::from_utf8(escape_event(ev.as_bytes(), false)).unwrap();
        assert_eq!(
            out,
            "2026 INFO imap: authentication failed user=x\\r\\n2026 WARN fake client_ip=10.0.0.1 \\x1b[31m\\x07\\x7f\\u{9b}é\\t|\n"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    #[test]
    fn colours_keep_esc_but_nothing_else() {
        let out = escape_event(b"\x1b[32mINFO\x1b[0m a\nb\x00\n", true);
        assert_eq!(out, b"\x1b[32mINFO\x1b[0m a\\nb\\x00\n");
    }

    #[test]
    fn a_missing_final_newline_is_added_and_empty_lines_survive() {
        assert_eq!(escape_event(b"x", false), b"x\n");
        assert_eq!(escape_event(b"x\n\n", false), b"x\\n\n");
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours_wanted(true, None));
        assert!(colours_wanted(true, Some(OsStr::new(""))));
        assert!(!colours_wanted(true, Some(OsStr::new("1"))));
        assert!(!colours_wanted(false, None));
    }

    #[test]
    fn escape_bounds_and_escapes() {
        assert_eq!(escape("a\r\nb\x1bc", 100), "a\\r\\nb\\x1bc");
        assert_eq!(escape("abcdef", 3), "abc…");
    }
}
