//! Mailbox commands: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE (RFC 3501 §6.3.3-6.3.7),
//! LIST and LSUB with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes, STATUS.
//!
//! LIST reports the special-use attribute in every LIST reply, not only with RETURN
//! (SPECIAL-USE), as Dovecot does: clients that never ask (Outlook) still find Sent and Trash.

use imap_codec::imap_types::core::{Atom, QuotedChar};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};

use super::mailbox_name;
use crate::imap::list_ext::ListArgs;
use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::session::Session;
use crate::imap::utf7;
use crate::store::MailboxInfo;

const DELIMITER: char = '/';

pub fn list_mailbox_bytes(m: &ListMailbox<'_>) -> Vec<u8> {
    match m {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    }
}

pub async fn create(s: &mut Session, m: &Mailbox<'_>) -> CmdResult {
    let name = mailbox_name(m)?;
    let name = name.trim_end_matches(DELIMITER);
    if name.eq_ignore_ascii_case("INBOX") {
        return Ok(Reply::no("INBOX already exists").other("ALREADYEXISTS"));
    }
    s.app.store.create_mailbox(s.account_id(), name, None)?;
    super::durable(s).await?;
    Ok(Reply::ok("CREATE completed"))
}

pub async fn delete(s: &mut Session, m: &Mailbox<'_>) -> CmdResult {
    let name = mailbox_name(m)?;
    if s.selected.as_ref().is_some_and(|sel| sel.name == name) {
        return Ok(
            Reply::no("Cannot delete the selected mailbox; select another one first")
                .other("INUSE"),
        );
    }
    let store = s.app.store.clone();
    let account = s.account_id();
    tokio::task::spawn_blocking(move || store.delete_mailbox(account, &name)).await??;
    super::durable(s).await?;
    Ok(Reply::ok("DELETE completed"))
}

pub async fn rename(s: &mut Session, from: &Mailbox<'_>, to: &Mailbox<'_>) -> CmdResult {
    let from = mailbox_name(from)?;
    let to = mailbox_name(to)?;
    let to = to.trim_end_matches(DELIMITER).to_string();
    if to.eq_ignore_ascii_case("INBOX") {
        return Ok(Reply::no("INBOX already exists").other("ALREADYEXISTS"));
    }
    let store = s.app.store.clone();
    let account = s.account_id();
    let (f, t) = (from.clone(), to.clone());
    tokio::task::spawn_blocking(move || store.rename_mailbox(account, &f, &t)).await??;
    if let Some(sel) = s.selected.as_mut() {
        if sel.name == from {
            sel.name = to;
        }
    }
    super::durable(s).await?;
    Ok(Reply::ok("RENAME completed"))
}

pub async fn subscribe(s: &mut Session, m: &Mailbox<'_>, on: bool) -> CmdResult {
    let name = mailbox_name(m)?;
    s.app.store.set_subscribed(s.account_id(), &name, on)?;
    super::durable(s).await?;
    Ok(Reply::ok(if on {
        "SUBSCRIBE completed"
    } else {
        "UNSUBSCRIBE completed"
    }))
}

/// Matches a LIST pattern (`*` anything, `%` anything but the delimiter) against a name.
fn glob(pattern: &[char], name: &[char]) -> bool {
    // dp[j]: pattern[i..] matches name[j..], computed from the last pattern char backwards.
    let n = name.len();
    let mut next = vec![false; n + 1];
    next[n] = true;
    for &c in pattern.iter().rev() {
        let mut cur = vec![false; n + 1];
        for j in (0..=n).rev() {
            cur[j] = match c {
                '*' => next[j] || (j < n && cur[j + 1]),
                '%' => next[j] || (j < n && name[j] != DELIMITER && cur[j + 1]),
                _ => j < n && name[j] == c && next[j + 1],
            };
        }
        next = cur;
    }
    next[0]
}

/// "inbox" in any case at the start of a pattern means INBOX (RFC 3501 §5.1).
fn normalize_pattern(p: &str) -> String {
    if p.len() >= 5 && p.is_char_boundary(5) && p[..5].eq_ignore_ascii_case("INBOX") {
        let rest = &p[5..];
        if rest.is_empty() || rest.starts_with(DELIMITER) {
            return format!("INBOX{rest}");
        }
    }
    p.to_string()
}

fn atom(s: &str) -> Option<FlagNameAttribute<'static>> {
    Atom::try_from(s.to_string())
        .ok()
        .map(FlagNameAttribute::from)
}

pub async fn list(s: &mut Session, args: ListArgs) -> CmdResult {
    let Some(reference) = utf7::decode(&args.reference) else {
        return Ok(Reply::no("Reference is not valid modified UTF-7"));
    };
    let delimiter = QuotedChar::try_from(DELIMITER).ok();
    let done = if args.lsub {
        "LSUB completed"
    } else {
        "LIST completed"
    };
    // RFC 3501 §6.3.8: an empty pattern asks for the delimiter and the root.
    if args.patterns.len() == 1 && args.patterns[0].is_empty() && !args.lsub {
        if let Ok(mailbox) = Mailbox::try_from("") {
            s.conn.write(&response::data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter,
                mailbox,
            }));
        }
        return Ok(Reply::ok(done));
    }
    let mut patterns: Vec<Vec<char>> = Vec::new();
    for p in &args.patterns {
        let Some(p) = utf7::decode(p) else {
            return Ok(Reply::no("Pattern is not valid modified UTF-7"));
        };
        let full = normalize_pattern(&format!("{reference}{p}"));
        patterns.push(full.chars().collect());
    }
    let infos: Vec<MailboxInfo> = s.app.store.mailbox_infos(s.account_id())?;
    for info in infos {
        let m = &info.meta;
        let chars: Vec<char> = m.name.chars().collect();
        if !patterns.iter().any(|p| glob(p, &chars)) {
            continue;
        }
        if (args.lsub || args.select_subscribed) && !m.subscribed {
            continue;
        }
        if args.select_special_use && m.special_use.is_none() {
            continue;
        }
        let mut items = Vec::new();
        if !args.lsub {
            items.extend(atom(if info.has_children {
                "HasChildren"
            } else {
                "HasNoChildren"
            }));
            if (args.select_subscribed || args.return_subscribed) && m.subscribed {
                items.extend(atom("Subscribed"));
            }
            if let Some(su) = &m.special_use {
                items.extend(atom(su.trim_start_matches('\\')));
            }
        }
        let Ok(mailbox) = Mailbox::try_from(utf7::encode(&m.name)) else {
            continue;
        };
        let d = if args.lsub {
            Data::Lsub {
                items,
                delimiter,
                mailbox,
            }
        } else {
            Data::List {
                items,
                delimiter,
                mailbox,
            }
        };
        s.conn.write(&response::data(d));
    }
    Ok(Reply::ok(done))
}

pub async fn status(s: &mut Session, m: &Mailbox<'_>, items: &[StatusDataItemName]) -> CmdResult {
    let name = mailbox_name(m)?;
    let Some(meta) = s.app.store.mailbox(s.account_id(), &name)? else {
        return Ok(Reply::no("No such mailbox").other("NONEXISTENT"));
    };
    // The selected mailbox's \Recent is what this session knows; elsewhere, what nobody has
    // claimed yet.
    let recent = match s.selected.as_ref() {
        Some(sel) if sel.id == meta.id => sel.recent.len() as u32,
        _ => s
            .app
            .store
            .messages_in(meta.id, meta.recent_mark.saturating_add(1), u32::MAX)?
            .len() as u32,
    };
    let mut out = Vec::new();
    for it in items {
        out.push(match it {
            StatusDataItemName::Messages => StatusDataItem::Messages(meta.messages),
            StatusDataItemName::Recent => StatusDataItem::Recent(recent),
            StatusDataItemName::UidNext => match std::num::NonZeroU32::new(meta.uidnext) {
                Some(n) => StatusDataItem::UidNext(n),
                None => continue,
            },
            StatusDataItemName::UidValidity => match std::num::NonZeroU32::new(meta.uidvalidity) {
                Some(n) => StatusDataItem::UidValidity(n),
                None => continue,
            },
            StatusDataItemName::Unseen => StatusDataItem::Unseen(meta.unseen),
            _ => return Ok(Reply::bad("Unsupported STATUS item")),
        });
    }
    let Ok(mailbox) = Mailbox::try_from(utf7::encode(&meta.name)) else {
        return Ok(Reply::no("Mailbox name cannot be sent"));
    };
    s.conn.write(&response::data(Data::Status {
        mailbox,
        items: out.into(),
    }));
    Ok(Reply::ok("STATUS completed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        glob(
            &p.chars().collect::<Vec<_>>(),
            &n.chars().collect::<Vec<_>>(),
        )
    }

    #[test]
    fn list_patterns() {
        assert!(m("*", "INBOX"));
        assert!(m("*", "a/b/c"));
        assert!(m("%", "Sent"));
        assert!(!m("%", "a/b"));
        assert!(m("a/%", "a/b"));
        assert!(!m("a/%", "a/b/c"));
        assert!(m("a/*", "a/b/c"));
        assert!(m("INBOX", "INBOX"));
        assert!(!m("INBOX", "INBOXES"));
        assert!(m("%/%", "a/b"));
        assert!(m("S*t", "Sent"));
        assert!(m("*/%", "a/b/c"));
        assert!(!m("%/%", "a/b/c"));
        assert!(m("Вход*", "Входящие"));
        assert_eq!(normalize_pattern("inbox/x"), "INBOX/x");
        assert_eq!(normalize_pattern("inboxes"), "inboxes");
    }
}
