//! The selected mailbox as this session sees it: the message list that defines sequence numbers,
//! the flags the client has been told, \Recent, and the work of bringing that view up to date
//! with the store (other sessions, SMTP delivery) through untagged EXISTS/RECENT/EXPUNGE/FETCH.
//!
//! RFC 3501 §7.4.1: EXPUNGE must not be sent while answering FETCH, STORE or SEARCH (sequence
//! numbers would shift under the client), so a sync may be told to hold expunges back; the
//! vanished messages then stay in the view ("ghosts") until a command that may report them.

use std::collections::{BTreeSet, HashSet};
use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::{Code, Data, StatusKind};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::response;
use crate::store::{MessageMeta, Result, Store};

pub struct Selected {
    pub id: u64,
    pub account_id: u64,
    /// UTF-8 name (for logs and for STATUS on the selected mailbox).
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    /// The messages in sequence order (= UID order). Index + 1 is the sequence number.
    pub msgs: Vec<MessageMeta>,
    /// UIDs that are \Recent in this session.
    pub recent: HashSet<u32>,
    /// UIDs gone from the store but not yet reported with EXPUNGE.
    pub ghosts: BTreeSet<u32>,
    /// The mailbox's `highest_modseq` when we last looked.
    pub modseq: u64,
    /// Keywords announced in the last FLAGS response.
    pub keywords: Vec<String>,
    /// CONDSTORE is enabled in the session (RFC 7162 §3.1): unsolicited FETCHes carry MODSEQ.
    pub condstore: bool,
    /// QRESYNC is enabled (RFC 7162 §3.2.10): expunges are reported with VANISHED.
    pub qresync: bool,
}

/// Keywords every mailbox announces: the signature filter sets them on delivery (SPEC §5).
pub const STANDARD_KEYWORDS: &[&str] = &["$EDSValid", "$EDSInvalid"];

impl Selected {
    /// Loads the view for SELECT/EXAMINE. A read-write selection claims \Recent.
    pub fn open(
        store: &Store,
        account_id: u64,
        id: u64,
        name: String,
        read_only: bool,
    ) -> Result<Selected> {
        let mb = store
            .mailbox_by_id(id)?
            .ok_or_else(|| crate::store::StoreError::NotFound("mailbox".into()))?;
        let msgs = store.messages(id)?;
        let max_uid = msgs.last().map(|m| m.uid).unwrap_or(0);
        let mark = if read_only {
            mb.recent_mark
        } else {
            store.claim_recent_upto(id, max_uid)?
        };
        let recent = msgs
            .iter()
            .filter(|m| m.uid > mark)
            .map(|m| m.uid)
            .collect();
        let mut s = Selected {
            id,
            account_id,
            name,
            read_only,
            uidvalidity: mb.uidvalidity,
            msgs,
            recent,
            ghosts: BTreeSet::new(),
            modseq: mb.highest_modseq,
            keywords: Vec::new(),
            condstore: false,
            qresync: false,
        };
        s.keywords = s.collect_keywords();
        Ok(s)
    }

    pub fn exists(&self) -> u32 {
        self.msgs.len() as u32
    }

    pub fn max_uid(&self) -> u32 {
        self.msgs.last().map(|m| m.uid).unwrap_or(0)
    }

    /// Sequence number (1-based) of a UID in the view.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.msgs
            .binary_search_by_key(&uid, |m| m.uid)
            .ok()
            .map(|i| i as u32 + 1)
    }

    pub fn is_recent(&self, uid: u32) -> bool {
        self.recent.contains(&uid)
    }

    /// Keywords used in the mailbox plus the standard ones, in a stable order.
    fn collect_keywords(&self) -> Vec<String> {
        let mut out: Vec<String> = STANDARD_KEYWORDS.iter().map(|s| s.to_string()).collect();
        let mut extra: BTreeSet<&str> = BTreeSet::new();
        for m in &self.msgs {
            for f in &m.flags {
                if !f.starts_with('\\') && !out.iter().any(|o| o.eq_ignore_ascii_case(f)) {
                    extra.insert(f.as_str());
                }
            }
        }
        out.extend(extra.into_iter().map(String::from));
        out
    }

    /// Indices into `msgs` of the messages a sequence set names, ascending and unique.
    /// Numbers beyond the mailbox are ignored; `*` is the last message (RFC 3501 §9 seq-number).
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        let n = self.msgs.len();
        if n == 0 {
            return Vec::new();
        }
        let last = if uid { self.max_uid() } else { n as u32 };
        let val = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => last,
        };
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for seq in set.0.as_ref() {
            let (a, b) = match seq {
                Sequence::Single(s) => (val(s), val(s)),
                Sequence::Range(x, y) => {
                    let (x, y) = (val(x), val(y));
                    (x.min(y), x.max(y))
                }
            };
            let (lo, hi) = if uid {
                let lo = self.msgs.partition_point(|m| m.uid < a);
                let hi = self.msgs.partition_point(|m| m.uid <= b);
                (lo, hi)
            } else {
                let lo = (a as usize).saturating_sub(1).min(n);
                let hi = (b as usize).min(n);
                (lo, hi)
            };
            if lo < hi {
                ranges.push((lo, hi));
            }
        }
        ranges.sort_unstable();
        let mut out = Vec::new();
        let mut next = 0usize;
        for (lo, hi) in ranges {
            for i in lo.max(next)..hi {
                out.push(i);
            }
            next = next.max(hi);
        }
        out
    }

    /// Brings the view up to date and returns the untagged responses that say what changed.
    ///
    /// Reads only what changed since the view's modseq (the store's modseq index): one record
    /// per changed or new message, plus the expunge log. Order of the responses: a grown FLAGS
    /// list first (RFC 3501 §7.2.6: a keyword is announced before any FETCH shows it), then
    /// EXPUNGE/VANISHED, FETCH, EXISTS/RECENT.
    pub fn sync(&mut self, store: &Store, allow_expunge: bool) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let Some(mb) = store.mailbox_by_id(self.id)? else {
            // Deleted under us: nothing sensible to report; commands on it now fail.
            return Ok(out);
        };
        let mut changed: Vec<u32> = Vec::new();
        let mut new: Vec<MessageMeta> = Vec::new();
        if mb.highest_modseq != self.modseq {
            // `mb` was read before the index: everything up to its modseq is committed and
            // visible; newer entries may be half-seen and are left for the next sync.
            let top = mb.highest_modseq;
            let c = store.changes_since(self.id, self.modseq)?;
            if c.complete {
                let max = self.max_uid();
                for m in c.changed.into_iter().filter(|m| m.modseq <= top) {
                    if m.uid > max {
                        new.push(m);
                    } else if let Ok(i) = self.msgs.binary_search_by_key(&m.uid, |x| x.uid) {
                        if self.msgs[i].flags != m.flags || self.msgs[i].modseq != m.modseq {
                            changed.push(m.uid);
                        }
                        self.msgs[i] = m;
                    }
                }
                for uid in c.vanished {
                    if self.seq_of(uid).is_some() {
                        self.ghosts.insert(uid);
                    }
                }
                new.sort_unstable_by_key(|m| m.uid);
                new.dedup_by_key(|m| m.uid);
            } else {
                // The expunge log no longer reaches back to our modseq: compare with all.
                self.full_compare(store.messages(self.id)?, &mut changed, &mut new);
            }
            self.modseq = top;
        }
        let grown = self.grow_keywords(new.iter().map(|m| &m.flags));
        let grown = self.grow_keywords(
            changed
                .iter()
                .filter_map(|u| self.seq_of(*u))
                .map(|q| self.msgs[q as usize - 1].flags.clone())
                .collect::<Vec<_>>()
                .iter(),
        ) || grown;
        if grown {
            out.extend(self.flags_announcement());
        }
        let mut expunged = false;
        if allow_expunge && !self.ghosts.is_empty() {
            out.extend(self.expunge_uids(&self.ghosts.iter().copied().collect::<Vec<_>>()));
            self.ghosts.clear();
            expunged = true;
        }
        for uid in changed {
            if self.ghosts.contains(&uid) {
                continue;
            }
            if let Some(seq) = self.seq_of(uid) {
                out.extend(self.flags_response(seq, true));
            }
        }
        if !new.is_empty() {
            let upto = new.last().map(|m| m.uid).unwrap_or(0);
            let mark = if self.read_only {
                mb.recent_mark
            } else {
                store.claim_recent_upto(self.id, upto)?
            };
            for m in &new {
                if m.uid > mark {
                    self.recent.insert(m.uid);
                }
            }
            self.msgs.extend(new);
            out.extend(response::data(Data::Exists(self.exists())));
            let recent = self
                .recent
                .iter()
                .filter(|u| !self.ghosts.contains(u))
                .count();
            out.extend(response::data(Data::Recent(recent as u32)));
        }
        // RFC 7162 §3.2.10 / §5: expunges move HIGHESTMODSEQ without a FETCH that would tell
        // the client; say it once everything up to it has been reported.
        if expunged && self.condstore && self.ghosts.is_empty() {
            out.extend(self.highest_modseq_ok());
        }
        Ok(out)
    }

    /// `* OK [HIGHESTMODSEQ n]` for the view's modseq.
    pub fn highest_modseq_ok(&self) -> Vec<u8> {
        match NonZeroU64::new(self.modseq) {
            Some(m) => response::untagged(StatusKind::Ok, Some(Code::HighestModSeq(m)), "Highest"),
            None => Vec::new(),
        }
    }

    /// The old way of syncing, for a view older than the expunge log: compare with every
    /// message of the mailbox.
    fn full_compare(
        &mut self,
        current: Vec<MessageMeta>,
        changed: &mut Vec<u32>,
        new: &mut Vec<MessageMeta>,
    ) {
        let mut j = 0;
        for m in self.msgs.iter_mut() {
            while j < current.len() && current[j].uid < m.uid {
                j += 1;
            }
            match current.get(j) {
                Some(c) if c.uid == m.uid => {
                    if c.flags != m.flags || c.modseq != m.modseq {
                        changed.push(m.uid);
                    }
                    *m = c.clone();
                }
                _ => {
                    self.ghosts.insert(m.uid);
                }
            }
        }
        let max = self.max_uid();
        new.extend(current.into_iter().filter(|c| c.uid > max));
    }

    /// Adds keywords of `flags` the client has not been told about; true when the list grew
    /// (keywords that fell out of use stay announced; that is harmless and saves clients churn).
    pub fn grow_keywords<'a>(&mut self, flags: impl Iterator<Item = &'a Vec<String>>) -> bool {
        let mut grown = false;
        for fl in flags {
            for f in fl {
                if !f.starts_with('\\')
                    && response::flag(f).is_some()
                    && !self.keywords.iter().any(|o| o.eq_ignore_ascii_case(f))
                {
                    self.keywords.push(f.clone());
                    grown = true;
                }
            }
        }
        grown
    }

    /// After a write of this session that the view already reflects and that raised the
    /// mailbox's modseq by `bumps`: if nobody else wrote in between (every write raises it by at
    /// least one), the view is current and the next sync need not re-read the mailbox.
    /// Returns whether the view is current.
    pub fn absorb_own(&mut self, store: &Store, bumps: u64) -> bool {
        if let Ok(Some(mb)) = store.mailbox_by_id(self.id) {
            if mb.highest_modseq == self.modseq + bumps {
                self.modseq = mb.highest_modseq;
                return true;
            }
        }
        false
    }

    /// Removes the given UIDs from the view and returns their EXPUNGE responses, highest
    /// sequence number first so that every number is valid when the client reads it.
    /// With QRESYNC enabled, one `* VANISHED uid-set` instead (RFC 7162 §3.2.10).
    pub fn expunge_uids(&mut self, uids: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        let gone: HashSet<u32> = uids.iter().copied().collect();
        if self.qresync {
            let mut present: Vec<u32> = self
                .msgs
                .iter()
                .map(|m| m.uid)
                .filter(|u| gone.contains(u))
                .collect();
            present.sort_unstable();
            if let Some(set) = response::sequence_set(&present) {
                out.extend(response::data(Data::Vanished {
                    earlier: false,
                    known_uids: set,
                }));
            }
        } else {
            for i in (0..self.msgs.len()).rev() {
                if gone.contains(&self.msgs[i].uid) {
                    if let Ok(d) = Data::expunge(i as u32 + 1) {
                        out.extend(response::data(d));
                    }
                }
            }
        }
        self.msgs.retain(|m| !gone.contains(&m.uid));
        for u in uids {
            self.recent.remove(u);
            self.ghosts.remove(u);
        }
        out
    }

    /// `* seq FETCH (UID n FLAGS (...))` for the message at `seq`.
    pub fn flags_response(&self, seq: u32, with_uid: bool) -> Vec<u8> {
        self.fetch_response(seq, with_uid, true, self.condstore)
    }

    /// `* seq FETCH ([UID n] MODSEQ (m))`: a STORE .SILENT's new modseq (RFC 7162 §3.1.3).
    pub fn modseq_response(&self, seq: u32, with_uid: bool) -> Vec<u8> {
        self.fetch_response(seq, with_uid, false, true)
    }

    /// `* seq FETCH ([UID n] [FLAGS (...)] [MODSEQ (m)])` for the message at `seq`.
    fn fetch_response(&self, seq: u32, with_uid: bool, flags: bool, modseq: bool) -> Vec<u8> {
        let Some(m) = (seq as usize).checked_sub(1).and_then(|i| self.msgs.get(i)) else {
            return Vec::new();
        };
        let mut items = Vec::new();
        if with_uid {
            if let Some(u) = NonZeroU32::new(m.uid) {
                items.push(MessageDataItem::Uid(u));
            }
        }
        if flags {
            items.push(MessageDataItem::Flags(response::flag_fetch(
                &m.flags,
                self.is_recent(m.uid),
            )));
        }
        if modseq {
            if let Some(ms) = NonZeroU64::new(m.modseq) {
                items.push(MessageDataItem::ModSeq(ms));
            }
        }
        match (NonZeroU32::new(seq), Vec1::try_from(items)) {
            (Some(seq), Ok(items)) => response::data(Data::Fetch { seq, items }),
            _ => Vec::new(),
        }
    }

    /// `* FLAGS (...)` and `* OK [PERMANENTFLAGS (...)]`.
    pub fn flags_announcement(&self) -> Vec<u8> {
        let mut out = response::data(Data::Flags(response::flag_list(&self.keywords)));
        let perm = if self.read_only {
            Vec::new()
        } else {
            response::permanent_flags(&self.keywords)
        };
        out.extend(response::untagged(
            StatusKind::Ok,
            Some(Code::PermanentFlags(perm)),
            if self.read_only {
                "No permanent flags permitted"
            } else {
                "Flags permitted"
            },
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{temp_store, FlagOp};

    /// One STORE seen by ten sessions on 300 messages costs about one record read per
    /// session, not a reload of the mailbox (3,000 reads).
    #[test]
    fn a_sync_reads_only_what_changed() {
        let (_d, s) = temp_store();
        let a = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        for i in 0..300 {
            s.append(inbox.id, format!("Subject: {i}\r\n\r\n").as_bytes(), &[], 0)
                .unwrap();
        }
        let mut views: Vec<Selected> = (0..10)
            .map(|_| Selected::open(&s, a.id, inbox.id, "INBOX".into(), false).unwrap())
            .collect();
        s.store_flags(inbox.id, &[150], FlagOp::Add, &["$new".into()])
            .unwrap();
        let before = s.record_reads();
        for v in views.iter_mut() {
            let out = String::from_utf8(v.sync(&s, true).unwrap()).unwrap();
            let flags = out.find("* FLAGS (").expect(&out);
            let fetch = out.find("* 150 FETCH (UID 150 FLAGS ($new").expect(&out);
            assert!(flags < fetch, "{out}");
        }
        let reads = s.record_reads() - before;
        assert_eq!(reads, 10, "record reads for 10 syncs");
        // An expunge and an append: still only what changed.
        s.expunge(inbox.id, &[1]).unwrap();
        s.append(inbox.id, b"Subject: new\r\n\r\n", &[], 0).unwrap();
        let before = s.record_reads();
        for v in views.iter_mut() {
            let out = String::from_utf8(v.sync(&s, true).unwrap()).unwrap();
            assert!(
                out.contains("* 1 EXPUNGE") && out.contains("* 300 EXISTS"),
                "{out}"
            );
        }
        assert_eq!(s.record_reads() - before, 10);
    }
}
