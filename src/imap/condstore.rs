//! CONDSTORE and QRESYNC (RFC 7162): the session's enabled state and the parts of SELECT,
//! FETCH, STORE and SEARCH they add. Mod-sequences come from the store (`store/modseq.rs`):
//! every message has one, every change raises the mailbox's HIGHESTMODSEQ, expunged UIDs are
//! logged with the modseq of their expunge (the last [`crate::store::VANISHED_KEEP`] per
//! mailbox at least).

use std::num::NonZeroU32;

use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::response;
use super::selected::Selected;
use super::session::Session;
use crate::store::{Result, Store};

impl Session {
    /// A CONDSTORE-enabling command ran (RFC 7162 §3.1: ENABLE CONDSTORE, SELECT/EXAMINE
    /// (CONDSTORE), STATUS (HIGHESTMODSEQ), FETCH/SEARCH MODSEQ, FETCH CHANGEDSINCE, STORE
    /// UNCHANGEDSINCE): from now on unsolicited FETCHes carry MODSEQ. The first one while a
    /// mailbox is selected also announces its `* OK [HIGHESTMODSEQ n]` (RFC 7162 §3.1: the
    /// client may not have seen it in the SELECT; imaptest's `esearch-condstore` checks it).
    pub fn enable_condstore(&mut self) {
        let first = !self.condstore;
        self.condstore = true;
        if let Some(sel) = self.selected.as_mut() {
            if first && !sel.condstore {
                let ok = sel.highest_modseq_ok();
                self.conn.write(&ok);
            }
            sel.condstore = true;
        }
    }

    /// ENABLE QRESYNC (RFC 7162 §3.2.3): implies CONDSTORE; expunges become VANISHED.
    pub fn enable_qresync(&mut self) {
        self.enable_condstore();
        self.qresync = true;
        if let Some(sel) = self.selected.as_mut() {
            sel.qresync = true;
        }
    }
}

/// Whether a SEARCH criterion uses MODSEQ (RFC 7162 §3.1.5: the answer then ends with the
/// highest modseq of the matches, and CONDSTORE is enabled).
pub fn search_uses_modseq(k: &SearchKey<'_>) -> bool {
    match k {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(v) => v.as_ref().iter().any(search_uses_modseq),
        SearchKey::Or(a, b) => search_uses_modseq(a) || search_uses_modseq(b),
        SearchKey::Not(a) => search_uses_modseq(a),
        _ => false,
    }
}

/// The ranges of a sequence set, sorted, merged and disjoint, `*` standing for `max`.
pub(crate) fn ranges(set: &SequenceSet, max: u32) -> Vec<(u32, u32)> {
    let val = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => max,
    };
    let mut r: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(x) => (val(x), val(x)),
            Sequence::Range(a, b) => (val(a).min(val(b)), val(a).max(val(b))),
        })
        .collect();
    r.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(r.len());
    for (a, b) in r {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Whether `n` is in merged `ranges` (binary search: a client's set may hold thousands).
pub(crate) fn in_ranges(ranges: &[(u32, u32)], n: u32) -> bool {
    let i = ranges.partition_point(|&(_, b)| b < n);
    ranges.get(i).is_some_and(|&(a, _)| a <= n)
}

pub fn in_set(set: &SequenceSet, n: u32, max: u32) -> bool {
    in_ranges(&ranges(set, max), n)
}

/// `* VANISHED (EARLIER) uids` (RFC 7162 §3.2.10) for the UIDs of `known` (all UIDs below
/// UIDNEXT when `None`) expunged after `since`. When the store's expunge log no longer
/// reaches back to `since`, every UID of that range that is not in the mailbox is reported
/// instead (§3.2.5.2 allows reporting UIDs the client never saw or already knows are gone).
pub fn vanished_earlier(
    store: &Store,
    sel: &Selected,
    since: u64,
    known: Option<&SequenceSet>,
    uidnext: u32,
) -> Result<Vec<u8>> {
    let max = uidnext.saturating_sub(1);
    let (logged, complete) = store.vanished_since(sel.id, since)?;
    let uids: Vec<(u32, u32)> = if complete {
        let known = known.map(|k| ranges(k, max));
        logged
            .into_iter()
            .filter(|&u| known.as_ref().is_none_or(|k| in_ranges(k, u)))
            .map(|u| (u, u))
            .collect()
    } else {
        // The gaps between the UIDs present, inside each requested range up to `max`.
        let want: Vec<(u32, u32)> = match known {
            Some(k) => ranges(k, max),
            None => vec![(1, max)],
        };
        let present: Vec<u32> = sel.msgs.iter().map(|m| m.uid).collect();
        let mut gaps: Vec<(u32, u32)> = Vec::new();
        let mut next = 1u32;
        for (a, b) in want {
            let (a, b) = (a.max(next), b.min(max));
            if a > b {
                continue;
            }
            let mut cur = a;
            let start = present.partition_point(|&u| u < a);
            for &u in &present[start..] {
                if u > b {
                    break;
                }
                if u > cur {
                    gaps.push((cur, u - 1));
                }
                cur = u.saturating_add(1);
            }
            if cur <= b {
                gaps.push((cur, b));
            }
            next = b.saturating_add(1);
        }
        gaps
    };
    Ok(vanished_response(&uids))
}

/// `* VANISHED (EARLIER) ...` for ascending, disjoint UID ranges (nothing when empty).
fn vanished_response(ranges: &[(u32, u32)]) -> Vec<u8> {
    let seqs: Vec<Sequence> = ranges
        .iter()
        .filter_map(|&(a, b)| {
            let a = SeqOrUid::Value(NonZeroU32::new(a)?);
            let b = SeqOrUid::Value(NonZeroU32::new(b)?);
            Some(if a == b {
                Sequence::Single(a)
            } else {
                Sequence::Range(a, b)
            })
        })
        .collect();
    match imap_codec::imap_types::core::Vec1::try_from(seqs) {
        Ok(v) => response::data(Data::Vanished {
            earlier: true,
            known_uids: SequenceSet(v),
        }),
        Err(_) => Vec::new(),
    }
}

/// SELECT/EXAMINE (QRESYNC (uidvalidity modseq [known-uids [seq-match-data]])) (RFC 7162
/// §3.2.5): when the UIDVALIDITY matches, what changed since `modseq`: VANISHED (EARLIER), then
/// a FETCH (UID FLAGS MODSEQ) of every message changed since. The seq-match-data is not needed:
/// the expunge log answers exactly or, past its end, §3.2.5.2's superset is sent.
pub fn qresync_select(
    store: &Store,
    sel: &Selected,
    uidvalidity: u32,
    modseq: u64,
    known: Option<&SequenceSet>,
    uidnext: u32,
) -> Result<Vec<u8>> {
    if uidvalidity != sel.uidvalidity {
        return Ok(Vec::new());
    }
    let mut out = vanished_earlier(store, sel, modseq, known, uidnext)?;
    for (i, m) in sel.msgs.iter().enumerate() {
        if m.modseq > modseq {
            out.extend(sel.flags_response(i as u32 + 1, true));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets() {
        let set = SequenceSet::try_from("2:4,9:*").unwrap();
        assert!(in_set(&set, 3, 10) && in_set(&set, 10, 10) && !in_set(&set, 5, 10));
        let set = SequenceSet::try_from("7,1:3,2:4,9").unwrap();
        assert_eq!(ranges(&set, 9), vec![(1, 4), (7, 7), (9, 9)]);
        assert!(!in_set(&set, 8, 9) && in_set(&set, 4, 9) && !in_set(&set, 10, 9));
        assert_eq!(
            vanished_response(&[(1, 1), (3, 5)]),
            b"* VANISHED (EARLIER) 1,3:5\r\n".to_vec()
        );
    }
}
