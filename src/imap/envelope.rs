//! ENVELOPE (RFC 3501 §7.4.2) from a raw header: the fields unfolded but not decoded (clients
//! decode RFC 2047 themselves), and RFC 5322 address lists split into (name, adl, mailbox, host),
//! with groups as start/end markers.

use super::mime::{fields, split_comments, trim, unfold};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Addr {
    pub name: Option<Vec<u8>>,
    pub adl: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub host: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    pub date: Option<Vec<u8>>,
    pub subject: Option<Vec<u8>>,
    pub from: Vec<Addr>,
    pub sender: Vec<Addr>,
    pub reply_to: Vec<Addr>,
    pub to: Vec<Addr>,
    pub cc: Vec<Addr>,
    pub bcc: Vec<Addr>,
    pub in_reply_to: Option<Vec<u8>>,
    pub message_id: Option<Vec<u8>>,
}

/// Builds the envelope of a message from its header block.
pub fn from_header(header: &[u8]) -> Envelope {
    let mut e = Envelope::default();
    let mut seen = [false; 10];
    for (name, value, _) in fields(header) {
        let idx = match name.to_ascii_lowercase().as_slice() {
            b"date" => 0,
            b"subject" => 1,
            b"from" => 2,
            b"sender" => 3,
            b"reply-to" => 4,
            b"to" => 5,
            b"cc" => 6,
            b"bcc" => 7,
            b"in-reply-to" => 8,
            b"message-id" => 9,
            _ => continue,
        };
        if seen[idx] {
            continue;
        }
        seen[idx] = true;
        let v = unfold(value);
        match idx {
            0 => e.date = Some(v),
            1 => e.subject = Some(v),
            2 => e.from = parse_addresses(&v),
            3 => e.sender = parse_addresses(&v),
            4 => e.reply_to = parse_addresses(&v),
            5 => e.to = parse_addresses(&v),
            6 => e.cc = parse_addresses(&v),
            7 => e.bcc = parse_addresses(&v),
            8 => e.in_reply_to = Some(v),
            _ => e.message_id = Some(v),
        }
    }
    // RFC 3501: a missing (or empty) Sender or Reply-To defaults to From.
    if e.sender.is_empty() {
        e.sender = e.from.clone();
    }
    if e.reply_to.is_empty() {
        e.reply_to = e.from.clone();
    }
    e
}

/// One piece of an address list at the top level.
enum Item {
    Mailbox(Vec<u8>),
    GroupStart(Vec<u8>),
    GroupEnd,
}

/// Splits an address list at top-level `,`, `:` (group start) and `;` (group end); quoted
/// strings, comments and angle brackets are kept intact.
fn split_items(v: &[u8]) -> Vec<Item> {
    let mut items = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    let mut esc = false;
    let mut comment = 0usize;
    let mut angle = false;
    let mut in_group = false;
    for &b in v {
        if esc {
            esc = false;
            cur.push(b);
            continue;
        }
        match b {
            b'\\' if quoted || comment > 0 => {
                esc = true;
                cur.push(b);
            }
            b'"' if comment == 0 => {
                quoted = !quoted;
                cur.push(b);
            }
            _ if quoted => cur.push(b),
            b'(' => {
                comment += 1;
                cur.push(b);
            }
            b')' if comment > 0 => {
                comment -= 1;
                cur.push(b);
            }
            _ if comment > 0 => cur.push(b),
            b'<' => {
                angle = true;
                cur.push(b);
            }
            b'>' => {
                angle = false;
                cur.push(b);
            }
            _ if angle => cur.push(b),
            b',' => items.push(Item::Mailbox(std::mem::take(&mut cur))),
            b':' if !in_group => {
                in_group = true;
                items.push(Item::GroupStart(std::mem::take(&mut cur)));
            }
            b';' if in_group => {
                in_group = false;
                items.push(Item::Mailbox(std::mem::take(&mut cur)));
                items.push(Item::GroupEnd);
            }
            _ => cur.push(b),
        }
    }
    items.push(Item::Mailbox(cur));
    if in_group {
        items.push(Item::GroupEnd);
    }
    items
}

/// Parses an address list; unparseable pieces are skipped, never an error.
pub fn parse_addresses(v: &[u8]) -> Vec<Addr> {
    let mut out = Vec::new();
    for item in split_items(v) {
        match item {
            Item::Mailbox(text) => {
                if let Some(a) = parse_mailbox(&text) {
                    out.push(a);
                }
            }
            Item::GroupStart(name) => out.push(Addr {
                mailbox: Some(phrase(&name).unwrap_or_default()),
                ..Addr::default()
            }),
            Item::GroupEnd => out.push(Addr::default()),
        }
    }
    out
}

/// A display name: quotes removed (and their escapes), whitespace collapsed. `None` if empty.
fn phrase(v: &[u8]) -> Option<Vec<u8>> {
    let (v, _) = split_comments(v, Some(b' '));
    let mut out = Vec::with_capacity(v.len());
    let mut quoted = false;
    let mut esc = false;
    let mut space = false;
    for &b in trim(&v) {
        if esc {
            out.push(b);
            esc = false;
            continue;
        }
        match b {
            b'\\' if quoted => esc = true,
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => space = true,
            _ => {
                if space && !out.is_empty() {
                    out.push(b' ');
                }
                space = false;
                out.push(b);
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// `addr-spec` → (mailbox, host). Missing parts are named as Dovecot names them, because a NIL
/// host would mean "group syntax" to the client.
fn addr_spec(v: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let v: Vec<u8> = v
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    match memchr::memrchr(b'@', &v) {
        Some(at) => {
            let local = &v[..at];
            let host = &v[at + 1..];
            (
                if local.is_empty() {
                    b"MISSING_MAILBOX".to_vec()
                } else {
                    local.to_vec()
                },
                if host.is_empty() {
                    b"MISSING_DOMAIN".to_vec()
                } else {
                    host.to_vec()
                },
            )
        }
        None => (v, b"MISSING_DOMAIN".to_vec()),
    }
}

fn parse_mailbox(text: &[u8]) -> Option<Addr> {
    if trim(text).is_empty() {
        return None;
    }
    let (clean, comment) = split_comments(text, Some(b' '));
    // name-addr: [phrase] "<" [route ":"] addr-spec ">"
    let lt = {
        let mut quoted = false;
        let mut esc = false;
        let mut at = None;
        for (i, &b) in clean.iter().enumerate() {
            if esc {
                esc = false;
                continue;
            }
            match b {
                b'\\' if quoted => esc = true,
                b'"' => quoted = !quoted,
                b'<' if !quoted => {
                    at = Some(i);
                    break;
                }
                _ => {}
            }
        }
        at
    };
    if let Some(lt) = lt {
        let rest = &clean[lt + 1..];
        let gt = memchr::memchr(b'>', rest).unwrap_or(rest.len());
        let mut inner = trim(&rest[..gt]);
        let mut adl = None;
        if inner.first() == Some(&b'@') {
            if let Some(colon) = memchr::memchr(b':', inner) {
                adl = Some(trim(&inner[..colon]).to_vec());
                inner = &inner[colon + 1..];
            }
        }
        // Comments are no display name in the angle form: `<user (comment)@ (comment) host>`
        // has none (Dovecot's ENVELOPE gives NIL; imaptest `search-addresses`). Only a bare
        // addr-spec takes its comment as the name (`user@host (Real Name)`), below.
        let name = phrase(&clean[..lt]);
        if trim(inner).is_empty() {
            // `<>` (the null path) or a lone name: nothing to address.
            return name.map(|n| Addr {
                name: Some(n),
                adl: None,
                mailbox: Some(b"MISSING_MAILBOX".to_vec()),
                host: Some(b"MISSING_DOMAIN".to_vec()),
            });
        }
        let (mailbox, host) = addr_spec(inner);
        return Some(Addr {
            name,
            adl,
            mailbox: Some(mailbox),
            host: Some(host),
        });
    }
    let spec = trim(&clean);
    if spec.is_empty() {
        return None;
    }
    let (mailbox, host) = addr_spec(spec);
    Some(Addr {
        name: comment.filter(|c| !trim(c).is_empty()),
        adl: None,
        mailbox: Some(mailbox),
        host: Some(host),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: Option<&str>, mailbox: &str, host: Option<&str>) -> Addr {
        Addr {
            name: name.map(|s| s.as_bytes().to_vec()),
            adl: None,
            mailbox: Some(mailbox.as_bytes().to_vec()),
            host: host.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            parse_addresses(b"\"Doe, John\" <john@example.kz>, jane@example.kz (Jane)"),
            vec![
                a(Some("Doe, John"), "john", Some("example.kz")),
                a(Some("Jane"), "jane", Some("example.kz"))
            ]
        );
        assert_eq!(
            parse_addresses(b"=?UTF-8?B?0KLQtdGB0YI=?= <t@x.kz>"),
            vec![a(Some("=?UTF-8?B?0KLQtdGB0YI=?="), "t", Some("x.kz"))]
        );
        let g = parse_addresses(b"Team: a@x.kz, B <b@x.kz>;, c@y.kz");
        assert_eq!(g.len(), 5);
        assert_eq!(g[0].mailbox.as_deref(), Some(&b"Team"[..]));
        assert_eq!(g[0].host, None);
        assert_eq!(g[3], Addr::default());
        assert_eq!(g[4], a(None, "c", Some("y.kz")));
        assert_eq!(
            parse_addresses(b"undisclosed-recipients:;"),
            vec![
                Addr {
                    mailbox: Some(b"undisclosed-recipients".to_vec()),
                    ..Addr::default()
                },
                Addr::default()
            ]
        );
        assert_eq!(
            parse_addresses(b"<@route.kz:u@h.kz>")[0].adl.as_deref(),
            Some(&b"@route.kz"[..])
        );
        assert!(parse_addresses(b"").is_empty());
        assert!(parse_addresses(b" , ,").is_empty());
        assert_eq!(
            parse_addresses(b"nodomain"),
            vec![a(None, "nodomain", Some("MISSING_DOMAIN"))]
        );
    }

    #[test]
    fn comments_are_no_name_in_the_angle_form() {
        assert_eq!(
            parse_addresses(b"<user-from (comment)@ (comment) domain.org>"),
            vec![a(None, "user-from", Some("domain.org"))]
        );
        assert_eq!(
            parse_addresses(b"user-from@domain.org (RealFrom)"),
            vec![a(Some("RealFrom"), "user-from", Some("domain.org"))]
        );
        assert_eq!(
            parse_addresses(b"Real (c) <u@d.org>"),
            vec![a(Some("Real"), "u", Some("d.org"))]
        );
    }

    #[test]
    fn envelope_defaults() {
        let e = from_header(
            b"Date: Mon, 1 Jan 2024 10:00:00 +0600\r\nSubject: hi\r\n there\r\nFrom: A <a@x.kz>\r\nTo: b@x.kz\r\nMessage-ID: <1@x>\r\n\r\n",
        );
        assert_eq!(e.subject.as_deref(), Some(&b"hi there"[..]));
        assert_eq!(e.sender, e.from);
        assert_eq!(e.reply_to, e.from);
        assert_eq!(e.message_id.as_deref(), Some(&b"<1@x>"[..]));
        assert!(e.cc.is_empty());
    }
}
