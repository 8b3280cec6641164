//! Mailbox commands: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE (RFC 3501 §6.3.3-6.3.7),
//! LIST and LSUB with CHILDREN (RFC 3348) and SPECIAL-USE (RFC 6154) attributes, LIST-EXTENDED
//! (RFC 5258), LIST-STATUS (RFC 5819), STATUS with SIZE (RFC 8438).
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
use crate::store::{MailboxInfo, MailboxMeta, Store, StoreError};

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

/// SUBSCRIBE / UNSUBSCRIBE: the account's set of names, whether or not a mailbox has the name
/// (store/mailbox.rs, "Subscriptions"). UNSUBSCRIBE of a name not subscribed is OK.
pub async fn subscribe(s: &mut Session, m: &Mailbox<'_>, on: bool) -> CmdResult {
    let name = mailbox_name(m)?;
    let store = s.app.store.clone();
    let account = s.account_id();
    tokio::task::spawn_blocking(move || {
        if on {
            store.add_subscription(account, &name)
        } else {
            store.remove_subscription(account, &name)
        }
    })
    .await??;
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

/// One name a LIST or LSUB answers with.
struct Listed {
    name: String,
    /// The mailbox, when one has the name.
    info: Option<MailboxInfo>,
    subscribed: bool,
    /// Some descendant meets the selection criteria without matching a pattern (RFC 5258 §3.5,
    /// RECURSIVEMATCH): the CHILDINFO extended data item.
    childinfo: bool,
}

/// Which names LIST/LSUB return (RFC 3501 §6.3.8-9, RFC 5258 §3). A name is returned when it
/// matches a pattern and either meets the selection criteria — exists (plain LIST), is subscribed
/// (SUBSCRIBED, LSUB), exists with a special use (SPECIAL-USE) — or, with RECURSIVEMATCH (LSUB
/// implies it), has a descendant that meets them and matches no pattern ("has at least one
/// descendant mailbox name that does not match the LIST pattern and does match the selection
/// criteria", RFC 5258 §3.5). That gives LSUB's rule of RFC 3501 §6.3.9: with only `a/b/c`
/// subscribed, `LSUB "" a/%` returns `a/b` (`\Noselect`), `LSUB "" a/*` returns `a/b/c` alone.
///
/// Work: (mailboxes + subscriptions) × patterns matches, plus, with RECURSIVEMATCH, one match per
/// distinct ancestor of a name that meets the criteria; it runs on the blocking pool.
fn select_names(
    infos: Vec<MailboxInfo>,
    subs: Vec<String>,
    patterns: &[Pattern],
    args: &ListArgs,
) -> Vec<Listed> {
    use std::collections::{BTreeMap, HashSet};
    let existing: BTreeMap<String, MailboxInfo> = infos
        .into_iter()
        .map(|i| (i.meta.name.clone(), i))
        .collect();
    let subs: std::collections::BTreeSet<String> = subs.into_iter().collect();
    let by_subscription = args.lsub || args.select_subscribed;
    let recursive = args.lsub || args.select_recursive;
    let meets = |name: &str| {
        let info = existing.get(name);
        (if by_subscription {
            subs.contains(name)
        } else {
            info.is_some()
        }) && (!args.select_special_use || info.is_some_and(|i| i.meta.special_use.is_some()))
    };
    let matches = |name: &str| {
        let chars: Vec<char> = name.chars().collect();
        patterns.iter().any(|p| p.matches(&chars))
    };
    let base: Vec<&str> = if by_subscription {
        subs.iter().map(String::as_str).collect()
    } else {
        existing.keys().map(String::as_str).collect()
    };
    // name → childinfo
    let mut out: BTreeMap<String, bool> = BTreeMap::new();
    let mut seen_ancestors: HashSet<&str> = HashSet::new();
    for n in base {
        if !meets(n) {
            continue;
        }
        if matches(n) {
            out.entry(n.to_string()).or_insert(false);
        } else if recursive {
            // Ancestors from the nearest up; one already seen had all of its own walked.
            let mut end = n.len();
            while let Some(i) = n[..end].rfind(DELIMITER) {
                let a = &n[..i];
                if !seen_ancestors.insert(a) {
                    break;
                }
                if matches(a) {
                    out.insert(a.to_string(), true);
                }
                end = i;
            }
        }
    }
    out.into_iter()
        .map(|(name, childinfo)| Listed {
            info: existing.get(&name).cloned(),
            subscribed: subs.contains(&name),
            name,
            childinfo,
        })
        .collect()
}

pub async fn list(s: &mut Session, args: ListArgs) -> CmdResult {
    let done = if args.lsub {
        "LSUB completed"
    } else {
        "LIST completed"
    };
    // A reference or pattern that is not valid modified UTF-7 names no mailbox: an empty
    // answer, as Dovecot gives (`LIST "" a&b`).
    let Some(reference) = utf7::decode(&args.reference) else {
        return Ok(Reply::ok(done));
    };
    let delimiter = QuotedChar::try_from(DELIMITER).ok();
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
        // An invalid pattern matches nothing; the others still count.
        if let Some(p) = utf7::decode(p) {
            patterns.push(Pattern::new(&normalize_pattern(&format!("{reference}{p}"))));
        }
    }
    if patterns.is_empty() {
        return Ok(Reply::ok(done));
    }
    // Matching is bounded (see `Pattern::matches`, `select_names`) but proportional to patterns
    // × names: it runs off the async workers, with the store reads (and LIST-STATUS's).
    let store = s.app.store.clone();
    let account = s.account_id();
    let selected = selected_recent(s);
    let args2 = args.clone();
    let listed: Vec<(Listed, Option<Vec<StatusDataItem>>)> =
        tokio::task::spawn_blocking(move || {
            let infos = store.mailbox_infos(account)?;
            let subs = store.subscriptions(account)?;
            let listed = select_names(infos, subs, &patterns, &args2);
            let mut out = Vec::with_capacity(listed.len());
            for l in listed {
                let status = match (&args2.return_status, &l.info) {
                    (Some(items), Some(info)) => {
                        Some(status_data(&store, &info.meta, items, selected)?)
                    }
                    _ => None,
                };
                out.push((l, status));
            }
            Ok::<_, crate::store::StoreError>(out)
        })
        .await??;
    for (l, status) in listed {
        let mut items = Vec::new();
        if args.lsub {
            // Listed only for a subscribed descendant (RFC 3501 §6.3.9).
            if !l.subscribed {
                items.push(FlagNameAttribute::Noselect);
            }
        } else {
            match &l.info {
                Some(info) => items.extend(atom(if info.has_children {
                    "HasChildren"
                } else {
                    "HasNoChildren"
                })),
                // RFC 5258 §3.4: implies \Noselect, which is therefore not sent (as Dovecot).
                None => items.extend(atom("NonExistent")),
            }
            if (args.select_subscribed || args.return_subscribed) && l.subscribed {
                items.extend(atom("Subscribed"));
            }
            if let Some(su) = l.info.as_ref().and_then(|i| i.meta.special_use.as_ref()) {
                items.extend(atom(su.trim_start_matches('\\')));
            }
        }
        let Ok(mailbox) = Mailbox::try_from(utf7::encode(&l.name)) else {
            continue;
        };
        let d = if args.lsub {
            Data::Lsub {
                items,
                delimiter,
                mailbox: mailbox.clone(),
            }
        } else {
            Data::List {
                items,
                delimiter,
                mailbox: mailbox.clone(),
            }
        };
        if l.childinfo && !args.lsub {
            let mut tags = Vec::new();
            if args.select_subscribed {
                tags.push("SUBSCRIBED");
            }
            if args.select_special_use {
                tags.push("SPECIAL-USE");
            }
            s.conn.write(&response::list_with_childinfo(d, &tags));
        } else {
            s.conn.write(&response::data(d));
        }
        // RFC 5819 §2: the STATUS follows the mailbox's LIST response.
        if let Some(items) = status {
            s.conn.write(&response::data(Data::Status {
                mailbox,
                items: items.into(),
            }));
        }
    }
    Ok(Reply::ok(done))
}

/// Whether STATUS (and LIST-STATUS) answers the item.
fn status_supported(it: &StatusDataItemName) -> bool {
    matches!(
        it,
        StatusDataItemName::Messages
            | StatusDataItemName::Recent
            | StatusDataItemName::UidNext
            | StatusDataItemName::UidValidity
            | StatusDataItemName::Unseen
            | StatusDataItemName::Size
            | StatusDataItemName::HighestModSeq
    )
}

/// The session's selected mailbox and the number of messages recent in it, for `status_data`.
fn selected_recent(s: &Session) -> Option<(u64, u32)> {
    s.selected
        .as_ref()
        .map(|sel| (sel.id, sel.recent.len() as u32))
}

/// The STATUS items of a mailbox; blocking: RECENT and SIZE read its message records.
/// `selected`: the session's selected mailbox and the number of messages recent in it.
fn status_data(
    store: &Store,
    meta: &MailboxMeta,
    items: &[StatusDataItemName],
    selected: Option<(u64, u32)>,
) -> Result<Vec<StatusDataItem>, StoreError> {
    let mut out = Vec::new();
    for it in items {
        out.push(match it {
            StatusDataItemName::Messages => StatusDataItem::Messages(meta.messages),
            // The selected mailbox's \Recent is what this session knows; elsewhere, what nobody
            // has claimed yet.
            StatusDataItemName::Recent => StatusDataItem::Recent(match selected {
                Some((id, n)) if id == meta.id => n,
                _ => store
                    .messages_in(meta.id, meta.recent_mark.saturating_add(1), u32::MAX)?
                    .len() as u32,
            }),
            StatusDataItemName::UidNext => match std::num::NonZeroU32::new(meta.uidnext) {
                Some(n) => StatusDataItem::UidNext(n),
                None => continue,
            },
            StatusDataItemName::UidValidity => match std::num::NonZeroU32::new(meta.uidvalidity) {
                Some(n) => StatusDataItem::UidValidity(n),
                None => continue,
            },
            StatusDataItemName::Unseen => StatusDataItem::Unseen(meta.unseen),
            // RFC 8438: the total of the messages' RFC822.SIZE.
            StatusDataItemName::Size => StatusDataItem::Size(store.mailbox_size(meta.id)?),
            // RFC 7162 §3.1.2.3.
            StatusDataItemName::HighestModSeq => StatusDataItem::HighestModSeq(meta.highest_modseq),
            _ => continue,
        });
    }
    Ok(out)
}

pub async fn status(s: &mut Session, m: &Mailbox<'_>, items: &[StatusDataItemName]) -> CmdResult {
    let name = mailbox_name(m)?;
    if !items.iter().all(status_supported) {
        return Ok(Reply::bad("Unsupported STATUS item"));
    }
    // RFC 7162 §3.1: STATUS (HIGHESTMODSEQ) is a CONDSTORE-enabling command.
    if items.contains(&StatusDataItemName::HighestModSeq) {
        s.enable_condstore();
    }
    let store = s.app.store.clone();
    let account = s.account_id();
    let selected = selected_recent(s);
    let items = items.to_vec();
    let r = tokio::task::spawn_blocking(move || {
        let Some(meta) = store.mailbox(account, &name)? else {
            return Ok(None);
        };
        let data = status_data(&store, &meta, &items, selected)?;
        Ok::<_, StoreError>(Some((meta, data)))
    })
    .await??;
    let Some((meta, out)) = r else {
        return Ok(Reply::no("No such mailbox").other("NONEXISTENT"));
    };
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
