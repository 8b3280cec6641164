//! SORT (RFC 5256 §3) and SORT=DISPLAY (RFC 5957): the messages a search found, ordered by
//! sort keys computed from the store metadata (ARRIVAL, SIZE) and the cached header (the rest).
//! Strings compare with the i;ascii-casemap collation (a–z folded to A–Z, then octets); a
//! missing field sorts as the empty string; equal keys fall back to sequence order. Runs on the
//! blocking pool, like SEARCH.

use std::cmp::Ordering;

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};

use super::envelope::Addr;
use super::fetch::structure;
use super::mime::{self, Cached};
use super::search::{decode_words, Msg};
use crate::store::Store;

/// The keys of one message, those the criteria ask for.
#[derive(Debug, Default, Clone)]
struct Values {
    arrival: i64,
    sent: i64,
    size: u64,
    subject: Vec<u8>,
    from: Vec<u8>,
    to: Vec<u8>,
    cc: Vec<u8>,
    display_from: Vec<u8>,
    display_to: Vec<u8>,
}

/// i;ascii-casemap (RFC 4790 §9.2): ASCII letters upper-cased, everything else as it is.
pub fn casemap(s: &[u8]) -> Vec<u8> {
    s.to_ascii_uppercase()
}

/// The sent date of a message (RFC 5256 §2.2): its Date header in UTC seconds, or the
/// INTERNALDATE when there is none or it cannot be parsed.
pub fn sent_date(c: Option<&Cached>, internal: i64) -> i64 {
    c.and_then(|c| mime::header_value(&c.header, "Date"))
        .and_then(|v| mail_parser::DateTime::parse_rfc822(&String::from_utf8_lossy(&v)))
        .filter(|d| d.is_valid())
        .map(|d| d.to_timestamp())
        .unwrap_or(internal)
}

/// The base subject of a Subject header value (RFC 5256 §2.1), and whether extracting it
/// removed a reply or forward marker (`Re:`, `Fwd:`, `(fwd)`, `[fwd: ...]`; THREAD needs that).
pub fn base_subject(raw: &[u8]) -> (Vec<u8>, bool) {
    // (1) Encoded words to UTF-8; tabs and line breaks to spaces; runs of spaces to one.
    let decoded = decode_words(&mime::unfold(raw));
    let mut s: Vec<u8> = Vec::with_capacity(decoded.len());
    for &b in decoded.as_bytes() {
        let b = if matches!(b, b'\t' | b'\r' | b'\n') {
            b' '
        } else {
            b
        };
        if !(b == b' ' && s.last() == Some(&b' ')) {
            s.push(b);
        }
    }
    let mut refwd = false;
    let mut start = 0usize;
    let mut end = s.len();
    loop {
        // (2) subj-trailer: "(fwd)" / WSP, repeatedly, from the end.
        loop {
            if end > start && s[end - 1] == b' ' {
                end -= 1;
            } else if end >= start + 5 && s[end - 5..end].eq_ignore_ascii_case(b"(fwd)") {
                end -= 5;
                refwd = true;
            } else {
                break;
            }
        }
        // (3)-(5): subj-leader, then a subj-blob if something is left after it, until neither.
        loop {
            let t = &s[start..end];
            if t.first() == Some(&b' ') {
                start += 1;
            } else if let Some(n) = leader(t) {
                start += n;
                refwd = true;
            } else if let Some(n) = blob(t, 0) {
                if t[n..].iter().any(|&b| b != b' ') {
                    start += n;
                } else {
                    break;
                }
            } else {
                break;
            }
        }
        // (6) subj-fwd: "[fwd:" subject "]" — strip and start again from (2).
        let t = &s[start..end];
        if t.len() >= 6 && t[..5].eq_ignore_ascii_case(b"[fwd:") && t.ends_with(b"]") {
            start += 5;
            end -= 1;
            refwd = true;
            continue;
        }
        break;
    }
    (s[start..end].to_vec(), refwd)
}

/// `subj-blob = "[" *BLOBCHAR "]" *WSP` at `i`: its length.
fn blob(s: &[u8], i: usize) -> Option<usize> {
    if s.get(i) != Some(&b'[') {
        return None;
    }
    let mut j = i + 1;
    while j < s.len() && s[j] != b']' && s[j] != b'[' {
        j += 1;
    }
    if s.get(j) != Some(&b']') {
        return None;
    }
    j += 1;
    while s.get(j) == Some(&b' ') {
        j += 1;
    }
    Some(j - i)
}

/// `subj-leader = (*subj-blob subj-refwd)` at the start (the WSP alternative is handled by the
/// caller): its length.
/// `subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"`.
fn leader(s: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(n) = blob(s, i) {
        i += n;
    }
    let rest = &s[i..];
    if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case(b"re") {
        i += 2;
    } else if rest.len() >= 2 && rest[..2].eq_ignore_ascii_case(b"fw") {
        i += 2;
        if s.get(i).is_some_and(|b| b.eq_ignore_ascii_case(&b'd')) {
            i += 1;
        }
    } else {
        return None;
    }
    while s.get(i) == Some(&b' ') {
        i += 1;
    }
    if let Some(n) = blob(s, i) {
        i += n;
    }
    (s.get(i) == Some(&b':')).then_some(i + 1)
}

/// RFC 5256: the addr-mailbox of the first address as ENVELOPE lists it — for a group, its
/// start `(NIL NIL "name" NIL)`, so the group name (as Dovecot sorts; imaptest
/// `sort-addresses`).
fn mailbox(list: &[Addr]) -> Vec<u8> {
    list.first()
        .and_then(|a| a.mailbox.as_deref())
        .map(casemap)
        .unwrap_or_default()
}

/// RFC 5957 §2: the display name of the first address (RFC 2047 decoded), or its
/// `mailbox@host` when it has none; a group by its name (imaptest `sort-display-to`).
fn display(list: &[Addr]) -> Vec<u8> {
    let Some(a) = list.first() else {
        return Vec::new();
    };
    if a.host.is_none() {
        return a.mailbox.as_deref().map(casemap).unwrap_or_default();
    }
    if let Some(name) = a.name.as_deref() {
        let name = decode_words(name);
        let name = name.trim();
        if !name.is_empty() {
            return casemap(name.as_bytes());
        }
    }
    let mut spec = a.mailbox.clone().unwrap_or_default();
    spec.push(b'@');
    spec.extend_from_slice(a.host.as_deref().unwrap_or_default());
    casemap(&spec)
}

fn values(store: &Store, msg: &Msg, criteria: &[SortCriterion]) -> Values {
    let m = &msg.meta;
    let mut v = Values {
        arrival: m.internal_date,
        sent: m.internal_date,
        size: m.size,
        ..Values::default()
    };
    let header = criteria
        .iter()
        .any(|c| !matches!(c.key, SortKey::Arrival | SortKey::Size));
    if !header {
        return v;
    }
    let cached = structure(store, m.blob_id, None);
    let Some(c) = cached.as_ref() else {
        return v;
    };
    let e = &c.envelope;
    for crit in criteria {
        match crit.key {
            SortKey::Arrival | SortKey::Size => {}
            SortKey::Date => v.sent = sent_date(Some(c), m.internal_date),
            SortKey::Subject => {
                let raw = mime::header_value(&c.header, "Subject").unwrap_or_default();
                v.subject = casemap(&base_subject(&raw).0);
            }
            SortKey::From => v.from = mailbox(&e.from),
            SortKey::To => v.to = mailbox(&e.to),
            SortKey::Cc => v.cc = mailbox(&e.cc),
            SortKey::DisplayFrom => v.display_from = display(&e.from),
            SortKey::DisplayTo => v.display_to = display(&e.to),
        }
    }
    v
}

fn compare(key: &SortKey, a: &Values, b: &Values) -> Ordering {
    match key {
        SortKey::Arrival => a.arrival.cmp(&b.arrival),
        SortKey::Date => a.sent.cmp(&b.sent),
        SortKey::Size => a.size.cmp(&b.size),
        SortKey::Subject => a.subject.cmp(&b.subject),
        SortKey::From => a.from.cmp(&b.from),
        SortKey::To => a.to.cmp(&b.to),
        SortKey::Cc => a.cc.cmp(&b.cc),
        SortKey::DisplayFrom => a.display_from.cmp(&b.display_from),
        SortKey::DisplayTo => a.display_to.cmp(&b.display_to),
    }
}

/// `hits` (seq, uid) of `msgs` (the view, `msgs[seq - 1]`) in the order `criteria` give.
/// REVERSE reverses its own key only (RFC 5256 §3); ties go by sequence number.
pub fn sort(
    store: &Store,
    msgs: &[Msg],
    hits: &[(u32, u32)],
    criteria: &[SortCriterion],
) -> Vec<(u32, u32)> {
    let mut rows: Vec<((u32, u32), Values)> = hits
        .iter()
        .filter_map(|&h| {
            let msg = msgs.get((h.0 as usize).checked_sub(1)?)?;
            Some((h, values(store, msg, criteria)))
        })
        .collect();
    rows.sort_by(|(ha, a), (hb, b)| {
        for c in criteria {
            let o = compare(&c.key, a, b);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        ha.0.cmp(&hb.0)
    });
    rows.into_iter().map(|(h, _)| h).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> (String, bool) {
        let (b, r) = base_subject(s.as_bytes());
        (String::from_utf8(b).unwrap(), r)
    }

    /// RFC 5256 §2.1, step by step; the cases of imaptest's `sort-subject` among them.
    #[test]
    fn base_subjects() {
        assert_eq!(base("a"), ("a".into(), false));
        assert_eq!(base("Re: hello"), ("hello".into(), true));
        assert_eq!(base("RE:  Re: re :hello"), ("hello".into(), true));
        assert_eq!(base("Fwd: FW: fw[x]: hello"), ("hello".into(), true));
        assert_eq!(
            base("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)"),
            ("b".into(), true)
        );
        assert_eq!(base("b (a)"), ("b (a)".into(), false));
        assert_eq!(base("Re: [FWD: c]"), ("c".into(), true));
        assert_eq!(base("[fwd: Re: [list] x (fwd)]"), ("x".into(), true));
        // A blob stays when nothing would be left without it.
        assert_eq!(base("[xyz]"), ("[xyz]".into(), false));
        assert_eq!(base("[list] topic"), ("topic".into(), false));
        assert_eq!(base("[list]  [tag] topic"), ("topic".into(), false));
        assert_eq!(base(""), ("".into(), false));
        assert_eq!(base("   "), ("".into(), false));
        assert_eq!(base("Re:"), ("".into(), true));
        // Folding, tabs and multiple spaces collapse; encoded words are decoded first.
        assert_eq!(base("Re:\r\n\ta   b\t c"), ("a b c".into(), true));
        assert_eq!(
            base("=?UTF-8?B?UmU6INCf0YDQuNCy0LXRgg==?="),
            ("Привет".into(), true)
        );
        // Not a leader: "Read:", "Fwx:", "Re" without a colon.
        assert_eq!(base("Read: me"), ("Read: me".into(), false));
        assert_eq!(base("Re hello"), ("Re hello".into(), false));
        assert_eq!(base("Fwx: y"), ("Fwx: y".into(), false));
    }

    #[test]
    fn address_keys_of_groups_and_names() {
        use super::super::envelope::parse_addresses;
        let keys = |v: &str| {
            let l = parse_addresses(v.as_bytes());
            (
                String::from_utf8(mailbox(&l)).unwrap(),
                String::from_utf8(display(&l)).unwrap(),
            )
        };
        assert_eq!(
            keys("user2: blah@domain1.org;"),
            ("USER2".into(), "USER2".into())
        );
        assert_eq!(keys("empty:;"), ("EMPTY".into(), "EMPTY".into()));
        assert_eq!(
            keys("=?iso-8859-1?q?foo_aar?= <e@f.g>"),
            ("E".into(), "FOO AAR".into())
        );
        assert_eq!(
            keys("user2@domain2.org (foo bar)"),
            ("USER2".into(), "FOO BAR".into())
        );
        assert_eq!(keys("b@c.d"), ("B".into(), "B@C.D".into()));
        assert_eq!(keys(""), ("".into(), "".into()));
    }

    #[test]
    fn casemap_orders_underscore_after_letters() {
        // i;ascii-casemap folds to upper case: `_` (0x5F) sorts after `Z` and `[` (0x5B).
        let mut v = [
            casemap(b"_"),
            casemap(b"c"),
            casemap(b"[xyz]"),
            casemap(b"a"),
        ];
        v.sort();
        assert_eq!(
            v,
            [
                b"A".to_vec(),
                b"C".to_vec(),
                b"[XYZ]".to_vec(),
                b"_".to_vec()
            ]
        );
    }
}
