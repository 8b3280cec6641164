//! Mod-sequence bookkeeping for CONDSTORE/QRESYNC (RFC 7162) and for IMAP sessions that bring
//! their view up to date by reading only what changed.
//!
//! Two trees, both written in the same transaction as the message records they describe:
//!
//! | tree       | key                                     | value                              |
//! |------------|-----------------------------------------|------------------------------------|
//! | `changes`  | mailbox_id u64 ‖ modseq u64 ‖ uid u32   | empty: the message's current modseq |
//! | `vanished` | mailbox_id u64 ‖ modseq u64 ‖ uid u32   | empty: expunged at that modseq      |
//! | `vanished` | mailbox_id u64 ‖ 0u64 ‖ 0u32            | floor u64 ‖ count u32               |
//!
//! Invariants: every message record has exactly one `changes` key, at its `modseq`; a UID in
//! `vanished` has no message record. Modseqs of messages and expunges are ≥ 2 (a new mailbox
//! starts at 1), so the key with modseq 0 cannot collide with an entry.
//!
//! The expunge log is bounded: at most [`VANISHED_KEEP`] UIDs per mailbox once it grows past
//! [`VANISHED_TRIM`]; the oldest are dropped and `floor` becomes the highest modseq dropped.
//! Nothing is known about expunges at or below `floor` (nor, after a migration or a restore,
//! about expunges before it): [`Changes::complete`] is false for a `since` below it, and callers
//! fall back to what RFC 7162 §3.2.5.2 allows (report every UID the client may know that no
//! longer exists).

use std::sync::atomic::Ordering;

use sled::transaction::TransactionalTree;

use super::message::{MessageMeta, TxResult};
use super::{dec, read_u64, u64_key, Result, Sled, StoreError};

/// UIDs of expunged messages kept per mailbox after a trim.
pub const VANISHED_KEEP: u32 = 10_000;
/// The log is trimmed back to [`VANISHED_KEEP`] when it holds more than this.
pub const VANISHED_TRIM: u32 = VANISHED_KEEP + VANISHED_KEEP / 4;

pub(crate) fn key3(mailbox_id: u64, modseq: u64, uid: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&mailbox_id.to_be_bytes());
    k[8..16].copy_from_slice(&modseq.to_be_bytes());
    k[16..].copy_from_slice(&uid.to_be_bytes());
    k
}

fn split3(k: &[u8]) -> Result<(u64, u32)> {
    if k.len() != 20 {
        return Err(StoreError::Db("corrupt modseq index key".into()));
    }
    let modseq = read_u64(&k[8..16])?;
    let uid = u32::from_be_bytes(k[16..20].try_into().unwrap_or([0; 4]));
    Ok((modseq, uid))
}

/// `(floor, count)` of a mailbox's expunge log.
fn decode_log_meta(v: Option<&[u8]>) -> (u64, u32) {
    match v {
        Some(v) if v.len() == 12 => (
            u64::from_be_bytes(v[..8].try_into().unwrap_or([0; 8])),
            u32::from_be_bytes(v[8..].try_into().unwrap_or([0; 4])),
        ),
        _ => (0, 0),
    }
}

fn encode_log_meta(floor: u64, count: u32) -> [u8; 12] {
    let mut v = [0u8; 12];
    v[..8].copy_from_slice(&floor.to_be_bytes());
    v[8..].copy_from_slice(&count.to_be_bytes());
    v
}

/// Inside a transaction: a message got `modseq` (`old`: the one it had, `None` for a new one).
pub(super) fn index_set(
    changes: &TransactionalTree,
    mailbox_id: u64,
    uid: u32,
    old: Option<u64>,
    modseq: u64,
) -> TxResult<()> {
    if let Some(old) = old {
        changes.remove(&key3(mailbox_id, old, uid))?;
    }
    changes.insert(&key3(mailbox_id, modseq, uid), &[])?;
    Ok(())
}

/// Inside a transaction: messages were expunged at `modseq` (`gone`: uid and the modseq each
/// had). Call once per mailbox and transaction.
pub(super) fn log_expunged(
    changes: &TransactionalTree,
    vanished: &TransactionalTree,
    mailbox_id: u64,
    gone: &[(u32, u64)],
    modseq: u64,
) -> TxResult<()> {
    if gone.is_empty() {
        return Ok(());
    }
    for &(uid, old) in gone {
        changes.remove(&key3(mailbox_id, old, uid))?;
        vanished.insert(&key3(mailbox_id, modseq, uid), &[])?;
    }
    let mk = key3(mailbox_id, 0, 0);
    let (floor, count) = decode_log_meta(vanished.get(mk)?.as_deref());
    let count = count.saturating_add(gone.len() as u32);
    vanished.insert(&mk, &encode_log_meta(floor, count))?;
    Ok(())
}

/// What changed in a mailbox after a modseq.
#[derive(Debug, Default)]
pub struct Changes {
    /// Messages whose modseq is above `since` (new ones and changed ones), in modseq order.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged at a modseq above `since`, ascending.
    pub vanished: Vec<u32>,
    /// False when the expunge log no longer reaches back to `since`: `vanished` then lacks
    /// older expunges.
    pub complete: bool,
}

impl Sled {
    /// Messages changed and UIDs expunged after `since`. Reads one message record per changed
    /// message and nothing else of the mailbox.
    pub fn changes_since(&self, mailbox_id: u64, since: u64) -> Result<Changes> {
        let mut out = Changes::default();
        for uid in self.changed_uids_since(mailbox_id, since)? {
            // Gone since the index was read: it shows up in `vanished` below or at the next look.
            if let Some(m) = self.message(mailbox_id, uid)? {
                out.changed.push(m);
            }
        }
        let (vanished, complete) = self.vanished_since(mailbox_id, since)?;
        out.vanished = vanished;
        out.complete = complete;
        Ok(out)
    }

    /// UIDs of the messages whose modseq is above `since`, in modseq order (no record reads).
    pub fn changed_uids_since(&self, mailbox_id: u64, since: u64) -> Result<Vec<u32>> {
        let from = key3(mailbox_id, since.saturating_add(1), 0);
        let to = key3(mailbox_id, u64::MAX, u32::MAX);
        self.t
            .changes
            .range(from..=to)
            .keys()
            .map(|k| Ok(split3(&k?)?.1))
            .collect()
    }

    /// UIDs expunged at a modseq above `since`, ascending; false when the log does not reach
    /// back that far (see the module comment).
    pub fn vanished_since(&self, mailbox_id: u64, since: u64) -> Result<(Vec<u32>, bool)> {
        let (floor, _) = decode_log_meta(self.t.vanished.get(key3(mailbox_id, 0, 0))?.as_deref());
        let from = key3(mailbox_id, since.saturating_add(1).max(1), 0);
        let to = key3(mailbox_id, u64::MAX, u32::MAX);
        let mut uids: Vec<u32> = self
            .t
            .vanished
            .range(from..=to)
            .keys()
            .map(|k| Ok(split3(&k?)?.1))
            .collect::<Result<_>>()?;
        uids.sort_unstable();
        uids.dedup();
        Ok((uids, since >= floor))
    }

    /// Message records decoded so far by this store handle's process (tests count the cost of
    /// a session's sync with it).
    #[cfg(test)]
    pub fn record_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    pub(super) fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// Keeps the expunge log of a mailbox within [`VANISHED_TRIM`] (call after an expunge).
    pub(super) fn trim_vanished(&self, mailbox_id: u64) -> Result<()> {
        let mk = key3(mailbox_id, 0, 0);
        let (_, count) = decode_log_meta(self.t.vanished.get(mk)?.as_deref());
        if count <= VANISHED_TRIM {
            return Ok(());
        }
        let drop_n = (count - VANISHED_KEEP) as usize;
        let from = key3(mailbox_id, 1, 0);
        let to = key3(mailbox_id, u64::MAX, u32::MAX);
        let doomed: Vec<sled::IVec> = self
            .t
            .vanished
            .range(from..=to)
            .keys()
            .take(drop_n)
            .collect::<std::result::Result<_, _>>()?;
        let w = self.write_gate();
        self.t.vanished.transaction(|v| {
            let (mut floor, mut count) = decode_log_meta(v.get(mk)?.as_deref());
            for k in &doomed {
                if v.remove(k)?.is_some() {
                    count = count.saturating_sub(1);
                    floor = floor.max(split3(k)?.0);
                }
            }
            v.insert(&mk, &encode_log_meta(floor, count))?;
            Ok(())
        })?;
        drop(w);
        Ok(())
    }

    /// Drops a removed mailbox's index and log (its records are gone: nothing writes them).
    pub(super) fn purge_modseq_index(&self, mailbox_id: u64) -> Result<()> {
        for tree in [&self.t.changes, &self.t.vanished] {
            for k in tree.scan_prefix(u64_key(mailbox_id)).keys() {
                tree.remove(k?)?;
            }
        }
        Ok(())
    }
}

/// Builds `changes` from the message records and starts every mailbox's expunge log empty, with
/// its floor at the mailbox's current `highest_modseq` (earlier expunges are unknown). Used by
/// the format 1 → 2 migration and by restore; running it twice is harmless.
pub(crate) fn rebuild_index(db: &sled::Db) -> Result<()> {
    let messages = db.open_tree("messages")?;
    let mailboxes = db.open_tree("mailboxes")?;
    let changes = db.open_tree("changes")?;
    let vanished = db.open_tree("vanished")?;
    changes.clear()?;
    vanished.clear()?;
    for kv in messages.iter() {
        let (k, v) = kv?;
        let mailbox_id = k
            .get(..8)
            .map(read_u64)
            .transpose()?
            .ok_or_else(|| StoreError::Db("corrupt message key".into()))?;
        let m: MessageMeta = dec(&v)?;
        changes.insert(key3(mailbox_id, m.modseq, m.uid), &[])?;
    }
    for kv in mailboxes.iter() {
        let (_, v) = kv?;
        let mb: super::MailboxMeta = dec(&v)?;
        vanished.insert(key3(mb.id, 0, 0), &encode_log_meta(mb.highest_modseq, 0))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{temp_sled, FlagOp};

    #[test]
    fn changes_and_expunges_are_indexed_by_modseq() {
        let (_d, s) = temp_sled();
        let a = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        for i in 0..5 {
            s.append(inbox.id, format!("Subject: {i}\r\n\r\n").as_bytes(), &[], 0)
                .unwrap();
        }
        let m0 = s.mailbox_by_id(inbox.id).unwrap().unwrap().highest_modseq;
        s.store_flags(inbox.id, &[2], FlagOp::Add, &["\\Deleted".into()])
            .unwrap();
        s.store_flags(inbox.id, &[4], FlagOp::Add, &["$x".into()])
            .unwrap();
        s.expunge(inbox.id, &[2]).unwrap();
        let c = s.changes_since(inbox.id, m0).unwrap();
        assert_eq!(c.changed.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![4]);
        assert_eq!(c.vanished, vec![2]);
        assert!(c.complete);
        // Nothing after the newest modseq.
        let top = s.mailbox_by_id(inbox.id).unwrap().unwrap().highest_modseq;
        let c = s.changes_since(inbox.id, top).unwrap();
        assert!(c.changed.is_empty() && c.vanished.is_empty());
        // A rebuild keeps the changes and forgets the expunges (the floor moves up).
        rebuild_index(&s.db).unwrap();
        let c = s.changes_since(inbox.id, m0).unwrap();
        assert_eq!(c.changed.len(), 1);
        assert!(c.vanished.is_empty() && !c.complete);
    }

    #[test]
    fn the_expunge_log_is_bounded() {
        let (_d, s) = temp_sled();
        let a = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        let mb = inbox.id;
        // Fake a long log cheaply: entries straight into the tree, as expunges write them.
        let n = VANISHED_TRIM + 1;
        for uid in 1..=n {
            s.t.vanished
                .insert(key3(mb, 10 + uid as u64, uid), &[])
                .unwrap();
        }
        s.t.vanished
            .insert(key3(mb, 0, 0), &encode_log_meta(0, n))
            .unwrap();
        s.trim_vanished(mb).unwrap();
        let (uids, complete) = s.vanished_since(mb, 0).unwrap();
        assert_eq!(uids.len() as u32, VANISHED_KEEP);
        assert!(!complete);
        let first_kept = n - VANISHED_KEEP + 1;
        assert_eq!(uids[0], first_kept);
        // A client in sync at the floor still gets an exact answer.
        let floor = 10 + (first_kept - 1) as u64;
        assert!(s.vanished_since(mb, floor).unwrap().1);
    }
}
