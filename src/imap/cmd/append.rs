//! APPEND (RFC 3501 §6.3.11) with APPENDUID (RFC 4315), literal8 (`~{n}`, RFC 3516 §4.4) and
//! MULTIAPPEND (RFC 3502). The literals have already been received by the framer within
//! `imap.max_literal_size` each and all together (`conn.rs`).
//!
//! imap-codec parses one message per APPEND. A MULTIAPPEND is split here along the literals
//! the framer delimited: the first message is the prefix of the command that imap-codec
//! decodes as an APPEND; every further message is one line ` [flags] [date] {n}` and its
//! literal, whose flags and date imap-codec decodes as `x APPEND <mailbox> [flags] [date] {0}`.

use std::num::NonZeroU32;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::response::{Code, CodeOther};
use imap_codec::imap_types::IntoStatic;
use imap_codec::CommandCodec;

use super::store::flag_names;
use super::{mailbox_bytes, mailbox_name};
use crate::imap::conn;
use crate::imap::response::{CmdResult, Reply};
use crate::imap::session::Session;
use crate::store::multiappend::NewMessage;

/// Most messages in one MULTIAPPEND (they are stored in one transaction).
pub const MAX_MESSAGES: usize = 1000;

/// One message of an APPEND: flags, date, bytes.
pub struct Message {
    pub flags: Vec<Flag<'static>>,
    pub date: Option<DateTime>,
    pub data: Vec<u8>,
}

/// A MULTIAPPEND command (two messages or more).
pub struct MultiAppend {
    pub tag: Tag<'static>,
    pub mailbox: Mailbox<'static>,
    pub messages: Vec<Message>,
}

fn literal_data(message: LiteralOrLiteral8<'_>) -> Vec<u8> {
    match message {
        LiteralOrLiteral8::Literal(l) => l.into_inner().into_owned(),
        LiteralOrLiteral8::Literal8(l) => l.data.into_owned(),
    }
}

/// Splits a framed command into its lines, each with the literal it announces:
/// `(start, end of the line, end of its literal)`. `None` when it is not what the framer makes.
fn segments(bytes: &[u8]) -> Option<Vec<(usize, usize, Option<usize>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let nl = pos + memchr::memchr(b'\n', &bytes[pos..])? + 1;
        match conn::literal_announcement(&bytes[pos..nl]) {
            Some((n, _)) => {
                let end = nl.checked_add(usize::try_from(n).ok()?)?;
                if end > bytes.len() {
                    return None;
                }
                out.push((pos, nl, Some(end)));
                pos = end;
            }
            None => {
                out.push((pos, nl, None));
                pos = nl;
            }
        }
        if out.len() > MAX_MESSAGES + 3 {
            return None;
        }
    }
    Some(out)
}

/// Parses a MULTIAPPEND (RFC 3502 `append = "APPEND" SP mailbox 1*append-message`) that
/// imap-codec, which knows one message only, refused. `None`: not one.
pub fn parse_multi(bytes: &[u8]) -> Option<MultiAppend> {
    let segs = segments(bytes)?;
    // The command ends with CRLF right after the last literal.
    let &(last_start, last_end, last_lit) = segs.last()?;
    if last_lit.is_some() || &bytes[last_start..last_end] != b"\r\n" {
        return None;
    }
    let literals = segs.len() - 1;
    // The first message is the first or (after a mailbox literal) the second literal.
    for first in 1..=literals.min(2) {
        let end = segs[first - 1].2?;
        let mut cand = bytes[..end].to_vec();
        cand.extend_from_slice(b"\r\n");
        let Ok((b"", cmd)) = CommandCodec::default().decode(&cand) else {
            continue;
        };
        let CommandBody::Append {
            mailbox,
            flags,
            date,
            message,
        } = cmd.body
        else {
            return None;
        };
        let tag = cmd.tag.into_static();
        let mailbox = mailbox.into_static();
        let mut messages = vec![Message {
            flags: flags.into_iter().map(IntoStatic::into_static).collect(),
            date,
            data: literal_data(message),
        }];
        drop(cand);
        let raw_mailbox = mailbox_bytes(&mailbox);
        for &(start, nl, lit_end) in &segs[first..literals] {
            let lit_end = lit_end?;
            let line = &bytes[start..nl];
            // ` [flags] [date] {n}` or `~{n}`: decode what precedes the literal.
            let brace = memchr::memrchr(b'{', line)?;
            let prefix = line[..brace].strip_suffix(b"~").unwrap_or(&line[..brace]);
            let mut c = format!("x APPEND {{{}}}\r\n", raw_mailbox.len()).into_bytes();
            c.extend_from_slice(&raw_mailbox);
            c.extend_from_slice(prefix);
            c.extend_from_slice(b"{0}\r\n\r\n");
            let Ok((b"", cmd)) = CommandCodec::default().decode(&c) else {
                return None;
            };
            let CommandBody::Append { flags, date, .. } = cmd.body else {
                return None;
            };
            messages.push(Message {
                flags: flags.into_iter().map(IntoStatic::into_static).collect(),
                date,
                data: bytes[nl..lit_end].to_vec(),
            });
        }
        if messages.len() < 2 || messages.len() > MAX_MESSAGES {
            return None;
        }
        return Some(MultiAppend {
            tag,
            mailbox,
            messages,
        });
    }
    None
}

fn internal_date(date: Option<&DateTime>) -> i64 {
    match date {
        Some(d) => d.as_ref().timestamp(),
        None => crate::store::now_unix(),
    }
}

pub async fn append(
    s: &mut Session,
    m: &Mailbox<'_>,
    flags: &[Flag<'_>],
    date: Option<&DateTime>,
    message: LiteralOrLiteral8<'_>,
) -> CmdResult {
    let one = Message {
        flags: flags.iter().cloned().map(IntoStatic::into_static).collect(),
        date: date.cloned(),
        data: literal_data(message),
    };
    append_messages(s, m, vec![one]).await
}

/// APPEND of one message or several (MULTIAPPEND): all stored in one transaction or none.
pub async fn append_messages(s: &mut Session, m: &Mailbox<'_>, msgs: Vec<Message>) -> CmdResult {
    let name = mailbox_name(m)?;
    let Some(meta) = s.app.store.mailbox(s.account_id(), &name)? else {
        // RFC 3501 §6.3.11: TRYCREATE tells the client that CREATE would help.
        return Ok(Reply::no("No such mailbox").code(Code::TryCreate));
    };
    let mut new = Vec::with_capacity(msgs.len());
    for msg in msgs {
        let flags = match flag_names(&msg.flags) {
            Ok(f) => f,
            Err(r) => return Ok(r),
        };
        if msg.data.is_empty() {
            return Ok(Reply::no("Empty messages cannot be stored").other("CANNOT"));
        }
        new.push(NewMessage {
            internal_date: internal_date(msg.date.as_ref()),
            raw: msg.data,
            flags,
        });
    }
    let store = s.app.store.clone();
    let id = meta.id;
    let appended = tokio::task::spawn_blocking(move || {
        if new.len() == 1 {
            let m = &new[0];
            store
                .append(id, &m.raw, &m.flags, m.internal_date)
                .map(|a| vec![a])
        } else {
            store.append_many(id, &new)
        }
    })
    .await??;
    super::durable(s).await?;
    let reply = Reply::ok("APPEND completed");
    let Some(uid_validity) = appended
        .first()
        .and_then(|a| NonZeroU32::new(a.uidvalidity))
    else {
        return Ok(reply);
    };
    if let [one] = appended.as_slice() {
        return Ok(match NonZeroU32::new(one.uid) {
            Some(uid) => reply.code(Code::AppendUid { uid_validity, uid }),
            None => reply,
        });
    }
    // RFC 3502 §6.3.11 / RFC 4315 §3: APPENDUID with a set of UIDs, in the order of the messages.
    let uids: Vec<u32> = appended.iter().map(|a| a.uid).collect();
    let code = format!(
        "APPENDUID {uid_validity} {}",
        crate::imap::response::set_text(&uids)
    );
    Ok(reply.code(Code::Other(CodeOther::unvalidated(code.into_bytes()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiappend_is_split_along_its_literals() {
        let cmd = b"a1 APPEND INBOX (\\Seen) {3}\r\none (\\Flagged) \"01-Jan-2020 00:00:00 +0000\" {3+}\r\ntwo ~{5}\r\nth\0ee\r\n";
        let m = parse_multi(cmd).unwrap();
        assert_eq!(m.tag.as_ref(), "a1");
        assert_eq!(m.messages.len(), 3);
        assert_eq!(m.messages[0].data, b"one");
        assert_eq!(m.messages[1].data, b"two");
        assert_eq!(m.messages[1].flags.len(), 1);
        assert!(m.messages[1].date.is_some());
        assert_eq!(m.messages[2].data, b"th\0ee");
        // The mailbox as a literal.
        let cmd = b"a2 APPEND {5}\r\nINBOX {1}\r\nx {1}\r\ny\r\n";
        let m = parse_multi(cmd).unwrap();
        assert_eq!(m.messages.len(), 2);
        assert_eq!(mailbox_bytes(&m.mailbox), b"INBOX");
        // Not MULTIAPPENDs.
        assert!(parse_multi(b"a3 APPEND INBOX {1}\r\nx\r\n").is_none());
        assert!(parse_multi(b"a3 APPEND INBOX {1}\r\nx {1}\r\ny junk\r\n").is_none());
        assert!(parse_multi(b"a3 APPEND INBOX {1}\r\nx {5}\r\ny\r\n").is_none());
        assert!(parse_multi(b"a3 NOOP {1}\r\nx {1}\r\ny\r\n").is_none());
        assert_eq!(
            crate::imap::response::set_text(&[1, 2, 3, 7, 9, 10]),
            "1:3,7,9:10"
        );
    }
}
