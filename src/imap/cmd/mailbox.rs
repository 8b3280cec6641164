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

/// Most patterns one LIST takes (RFC 5258 allows a list of them; clients send one or two).
const MAX_PATTERNS: usize = 64;

/// One item of a LIST pattern (RFC 3501 §6.3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    /// `*`: anything, delimiters included.
    Star,
    /// `%`: anything but the hierarchy delimiter.
    Percent,
    Char(char),
}

/// A LIST pattern, compiled once per command. Runs of wildcards are collapsed (`**`, `%*` and
/// `*%` match what `*` does, `%%` what `%` does), so a pattern no longer than twice its
/// literal characters plus one remains: the attacker's 200,000 `*` become one.
struct Pattern {
    items: Vec<Item>,
    /// Number of literal characters: a name shorter than that cannot match.
    literals: usize,
}

impl Pattern {
    fn new(p: &str) -> Pattern {
        let mut items: Vec<Item> = Vec::new();
        let mut literals = 0;
        for c in p.chars() {
            let it = match c {
                '*' => Item::Star,
                '%' => Item::Percent,
                c => {
                    literals += 1;
                    Item::Char(c)
                }
            };
            match (items.last_mut(), it) {
                (Some(last @ (Item::Star | Item::Percent)), Item::Star) => *last = Item::Star,
                (Some(Item::Star | Item::Percent), Item::Percent) => {}
                _ => items.push(it),
            }
        }
        Pattern { items, literals }
    }

    /// Whether the pattern matches `name`. A forward simulation of the pattern over the set of
    /// name positions reachable so far, kept as a bitset: O(len(pattern) × len(name) / 64)
    /// word operations, no backtracking, whatever the wildcards.
    fn matches(&self, name: &[char]) -> bool {
        let n = name.len();
        if self.literals > n {
            return false;
        }
        let words = n / 64 + 1; // positions 0..=n
                                // Positions from which `%` may advance: every character but the delimiter.
        let mut movable = vec![0u64; words];
        // The positions of each character of the name, sorted by character.
        let mut masks: Vec<(char, Vec<u64>)> = Vec::new();
        for (j, &c) in name.iter().enumerate() {
            if c != DELIMITER {
                movable[j / 64] |= 1 << (j % 64);
            }
            let k = match masks.binary_search_by_key(&c, |m| m.0) {
                Ok(k) => k,
                Err(k) => {
                    masks.insert(k, (c, vec![0u64; words]));
                    k
                }
            };
            masks[k].1[j / 64] |= 1 << (j % 64);
        }
        let mut set = vec![0u64; words];
        set[0] = 1;
        for it in &self.items {
            match *it {
                Item::Char(c) => {
                    let Ok(k) = masks.binary_search_by_key(&c, |m| m.0) else {
                        return false;
                    };
                    // Positions j with name[j] == c advance to j + 1.
                    let mask = &masks[k].1;
                    let mut carry = 0u64;
                    for w in 0..words {
                        let x = set[w] & mask[w];
                        set[w] = (x << 1) | carry;
                        carry = x >> 63;
                    }
                }
                Item::Star => {
                    // Every position from the first reachable one on.
                    let Some(w0) = set.iter().position(|&w| w != 0) else {
                        return false;
                    };
                    let low = set[w0] & set[w0].wrapping_neg();
                    set[w0] = !(low - 1);
                    for w in set.iter_mut().skip(w0 + 1) {
                        *w = !0;
                    }
                    let last = n % 64;
                    set[words - 1] &= if last == 63 {
                        !0
                    } else {
                        (1u64 << (last + 1)) - 1
                    };
                }
                Item::Percent => {
                    // Each reachable position extends through the run of movable positions that
                    // starts at it: adding the reachable bits to the movable mask carries through
                    // exactly those runs (bit-parallel flood fill), word by word.
                    let mut carry = 0u64;
                    for w in 0..words {
                        let s = set[w] | carry;
                        let a = movable[w];
                        let (sum, over) = a.overflowing_add(s & a);
                        set[w] = s | (sum ^ a);
                        carry = over as u64;
                    }
                }
            }
            if set.iter().all(|&w| w == 0) {
                return false;
            }
        }
        set[n / 64] & (1 << (n % 64)) != 0
    }
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
    if args.patterns.len() > MAX_PATTERNS {
        return Ok(Reply::bad(format!(
            "Too many patterns (at most {MAX_PATTERNS})"
        )));
    }
    let mut patterns: Vec<Pattern> = Vec::new();
    for p in &args.patterns {
        let Some(p) = utf7::decode(p) else {
            return Ok(Reply::no("Pattern is not valid modified UTF-7"));
        };
        patterns.push(Pattern::new(&normalize_pattern(&format!("{reference}{p}"))));
    }
    // Matching is bounded (see `Pattern::matches`) but proportional to patterns × mailboxes:
    // it runs off the async workers, with the store read.
    let store = s.app.store.clone();
    let account = s.account_id();
    let (lsub, subscribed, special) = (args.lsub, args.select_subscribed, args.select_special_use);
    let infos: Vec<MailboxInfo> = tokio::task::spawn_blocking(move || {
        let infos = store.mailbox_infos(account)?;
        Ok::<_, crate::store::StoreError>(
            infos
                .into_iter()
                .filter(|info| {
                    let m = &info.meta;
                    if (lsub || subscribed) && !m.subscribed {
                        return false;
                    }
                    if special && m.special_use.is_none() {
                        return false;
                    }
                    let chars: Vec<char> = m.name.chars().collect();
                    patterns.iter().any(|p| p.matches(&chars))
                })
                .collect(),
        )
    })
    .await??;
    for info in infos {
        let m = &info.meta;
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
            // RFC 7162 §3.1.2.3 (and a CONDSTORE-enabling command, §3.1).
            StatusDataItemName::HighestModSeq => {
                s.enable_condstore();
                StatusDataItem::HighestModSeq(meta.highest_modseq)
            }
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
        Pattern::new(p).matches(&n.chars().collect::<Vec<_>>())
    }

    /// The plain dynamic programme over (pattern, name) positions, as an oracle.
    fn dp(pattern: &[char], name: &[char]) -> bool {
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

    #[test]
    fn bitset_matching_agrees_with_the_plain_dynamic_programme() {
        // A small deterministic generator: patterns and names over a tiny alphabet, lengths
        // around the 64-bit word boundaries.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = |k: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % k
        };
        let alpha = ['a', 'b', '/', 'я'];
        for _ in 0..20_000 {
            let nl = [0, 1, 5, 63, 64, 65, 127, 130][rnd(8) as usize];
            let name: Vec<char> = (0..nl).map(|_| alpha[rnd(4) as usize]).collect();
            let pl = rnd(12) as usize;
            let pat: Vec<char> = (0..pl)
                .map(|_| match rnd(6) {
                    0 => '*',
                    1 => '%',
                    k => alpha[(k - 2) as usize],
                })
                .collect();
            let p: String = pat.iter().collect();
            assert_eq!(
                Pattern::new(&p).matches(&name),
                dp(&pat, &name),
                "{p:?} vs {:?}",
                name.iter().collect::<String>()
            );
        }
    }

    #[test]
    fn pathological_patterns_collapse() {
        let p = Pattern::new(&"*%".repeat(100_000));
        assert_eq!(p.items, vec![Item::Star]);
        let p = Pattern::new(&"%".repeat(1000));
        assert_eq!(p.items, vec![Item::Percent]);
        let name: Vec<char> = "a".repeat(500).chars().collect();
        assert!(Pattern::new(&"a*".repeat(250)).matches(&name));
        assert!(!Pattern::new(&"a*".repeat(501)).matches(&name));
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
