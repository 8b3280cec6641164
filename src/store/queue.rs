//! The outbound queue: one record per accepted message that has remote recipients, with the
//! state of each recipient. The message bytes live in `blobs` (one reference held by the record),
//! written in the same transaction as any local copies (see [`Sled::deliver`]).
//!
//! `queue_due` indexes the records by `(next_attempt, id)` so that the delivery worker finds what
//! is due without reading the whole queue. Every function here that writes a record writes its
//! index key in the same transaction.
//!
//! Concurrency: the delivery worker and the admin commands (`queue retry`/`drop`) may touch the same
//! record at once. Changes are therefore read-modify-write inside one sled transaction
//! ([`Sled::queue_modify`]), or conditional on the record being unchanged since it was read
//! ([`Sled::queue_commit`]), never a blind overwrite of a stale copy.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::message::{add_ref, drop_body, insert_message, normalize_flags, put_body};
use super::{dec, enc, now_unix, read_u64, u64_key, Result, Sled, StoreError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Not delivered yet; will be tried at `next_attempt`.
    Pending,
    /// Accepted by the remote server.
    Delivered,
    /// Refused permanently or expired; a bounce covers it (see `bounced`).
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RcptStatus {
    pub addr: String,
    pub state: RcptState,
    pub attempts: u32,
    /// The last remote reply or local error for this recipient.
    pub last_error: Option<String>,
    /// Enhanced status code (RFC 3463) of the last outcome, e.g. `5.1.1`; used by the DSN.
    #[serde(default)]
    pub status: Option<String>,
    /// The remote host that gave the last reply, e.g. `mx.example.com[192.0.2.1]`.
    #[serde(default)]
    pub remote_mta: Option<String>,
    /// For `Failed` recipients: a DSN has been sent (or is not due: null sender).
    #[serde(default)]
    pub bounced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueRecord {
    pub id: u64,
    /// Envelope sender; empty for the null sender (bounces), which never gets a bounce.
    pub sender: String,
    pub recipients: Vec<RcptStatus>,
    /// Set by [`Sled::deliver`].
    pub blob_id: u64,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
    pub next_attempt: i64,
    /// Delivery rounds made so far (one round tries every pending recipient once).
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl QueueRecord {
    /// A new record `id` for `recipients`, all pending, due now (either backend).
    pub(crate) fn due_now(id: u64, sender: &str, recipients: &[String]) -> QueueRecord {
        let now = now_unix();
        QueueRecord {
            id,
            sender: sender.to_string(),
            recipients: recipients
                .iter()
                .map(|a| RcptStatus {
                    addr: a.clone(),
                    state: RcptState::Pending,
                    attempts: 0,
                    last_error: None,
                    status: None,
                    remote_mta: None,
                    bounced: false,
                })
                .collect(),
            blob_id: 0,
            size: 0,
            created: now,
            next_attempt: now,
            attempts: 0,
            last_error: None,
        }
    }

    pub fn pending(&self) -> impl Iterator<Item = &RcptStatus> {
        self.recipients
            .iter()
            .filter(|r| r.state == RcptState::Pending)
    }
}

/// A bounce (DSN) stored in the same transaction as the queue change that causes it, so that a
/// crash neither loses it nor sends it twice.
pub enum Bounce {
    /// Into a local mailbox (the sender's INBOX), already through the inbound filter.
    Local {
        mailbox_id: u64,
        raw: Vec<u8>,
        keywords: Vec<String>,
        internal_date: i64,
    },
    /// Queued for a remote sender; `record` comes from [`Sled::new_queue_record`] with the null
    /// sender.
    Queue { record: QueueRecord, raw: Vec<u8> },
}

/// Key of the due-time index: big-endian so that sled orders it by time, then id.
pub(super) fn due_key(next_attempt: i64, id: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&(next_attempt.max(0) as u64).to_be_bytes());
    k[8..].copy_from_slice(&id.to_be_bytes());
    k
}

fn split_due_key(k: &[u8]) -> Result<(i64, u64)> {
    if k.len() != 16 {
        return Err(StoreError::Db("corrupt queue index key".into()));
    }
    let t = read_u64(&k[..8])?;
    let id = read_u64(&k[8..])?;
    Ok((t.min(i64::MAX as u64) as i64, id))
}

impl Sled {
    /// A new queue record for `recipients`, due now. Sled it with [`Sled::deliver`].
    pub fn new_queue_record(&self, sender: &str, recipients: &[String]) -> Result<QueueRecord> {
        Ok(QueueRecord::due_now(self.next_id()?, sender, recipients))
    }

    /// How many messages are queued, and when the oldest was queued (Unix seconds), for the
    /// metrics. O(queue): counts the keys of `queue_due` (one per record, empty values); the
    /// oldest is the lowest id, since ids only grow (one ordered lookup).
    pub fn queue_summary(&self) -> Result<(u64, Option<i64>)> {
        let mut n = 0;
        for k in self.t.queue_due.iter().keys() {
            k?;
            n += 1;
        }
        let oldest = match self.t.queue.first()? {
            Some((_, v)) => Some(dec::<QueueRecord>(&v)?.created),
            None => None,
        };
        Ok((n, oldest))
    }

    /// Every queued message, oldest first.
    pub fn queue_list(&self) -> Result<Vec<QueueRecord>> {
        self.t.queue.iter().values().map(|v| dec(&v?)).collect()
    }

    pub fn queue_get(&self, id: u64) -> Result<Option<QueueRecord>> {
        match self.t.queue.get(u64_key(id))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// `(next_attempt, id)` of queued records in due order, starting with the earliest. The
    /// iterator is lazy: callers stop as soon as they reach a time in the future.
    pub fn queue_due(&self) -> impl Iterator<Item = Result<(i64, u64)>> + '_ {
        self.t.queue_due.iter().keys().map(|k| split_due_key(&k?))
    }

    /// Makes `queue_due` match `queue` exactly (start-up check; cheap when it already does).
    /// Returns how many index keys were added or removed.
    pub fn queue_reindex(&self) -> Result<usize> {
        let _w = self.write_gate();
        let mut fixed = 0;
        for k in self.t.queue_due.iter().keys() {
            let k = k?;
            let (t, id) = split_due_key(&k)?;
            let ok = matches!(self.queue_get(id)?, Some(r) if r.next_attempt.max(0) == t);
            if !ok {
                self.t.queue_due.remove(k)?;
                fixed += 1;
            }
        }
        for rec in self.queue_list()? {
            let k = due_key(rec.next_attempt, rec.id);
            if !self.t.queue_due.contains_key(k)? {
                self.t.queue_due.insert(k, &[])?;
                fixed += 1;
            }
        }
        Ok(fixed)
    }

    #[allow(dead_code)] // no caller today; kept for the PostgreSQL parity list (docs/cluster.md)
    /// Replaces a record (after an attempt). Fails if it was removed meanwhile.
    pub fn queue_update(&self, rec: &QueueRecord) -> Result<()> {
        self.queue_modify(rec.id, |r| *r = rec.clone())?
            .map(|_| ())
            .ok_or_else(|| StoreError::NotFound(format!("queue entry {}", rec.id)))
    }

    /// Atomically applies `f` to the current record. Returns the new record, or `None` when there
    /// is no such record. `f` may run more than once (transaction retry), so it must only depend
    /// on its argument.
    pub fn queue_modify(
        &self,
        id: u64,
        f: impl Fn(&mut QueueRecord),
    ) -> Result<Option<QueueRecord>> {
        let key = u64_key(id);
        let t = &self.t;
        let w = self.write_gate();
        let out = (&t.queue, &t.queue_due).transaction(|(q, due)| {
            let Some(v) = q.get(key)? else {
                return Ok(None);
            };
            let old: QueueRecord = dec(&v)?;
            let mut new = old.clone();
            f(&mut new);
            new.id = old.id;
            new.blob_id = old.blob_id;
            due.remove(&due_key(old.next_attempt, id))?;
            due.insert(&due_key(new.next_attempt, id), &[])?;
            q.insert(&key, enc(&new))?;
            Ok(Some(new))
        })?;
        drop(w);
        Ok(out)
    }

    /// Conditional write at the end of a delivery round: if the record still equals `expected`,
    /// replace it with `new` (or remove it and release its bytes when `new` is `None`) and store
    /// `bounce`, all in one transaction. Returns false (and changes nothing) when the record was
    /// changed or removed meanwhile: the caller re-reads and decides again.
    pub fn queue_commit(
        &self,
        expected: &QueueRecord,
        new: Option<&QueueRecord>,
        bounce: Option<&Bounce>,
    ) -> Result<bool> {
        let id = expected.id;
        let key = u64_key(id);
        let expected_bytes = enc(expected);
        // Ids for the bounce's blob (and queue record) are taken outside the transaction, as
        // `deliver` does: a retried transaction must not consume new ones.
        let bounce_blob = match bounce {
            Some(_) => self.next_id()?,
            None => 0,
        };
        let bounce_rec = match bounce {
            Some(Bounce::Queue { record, raw }) => {
                let mut r = record.clone();
                r.blob_id = bounce_blob;
                r.size = raw.len() as u64;
                Some(r)
            }
            _ => None,
        };
        let local_flags = match bounce {
            Some(Bounce::Local { keywords, .. }) => normalize_flags(keywords),
            _ => Vec::new(),
        };
        // A bounce body file first, durably, before the transaction (files.rs).
        let bodies: Vec<(u64, &[u8])> = match bounce {
            Some(Bounce::Local { raw, .. }) | Some(Bounce::Queue { raw, .. }) => {
                vec![(bounce_blob, raw.as_slice())]
            }
            None => Vec::new(),
        };
        self.files.write_all(&bodies)?;
        let t = &self.t;
        let trees = (
            &t.queue,
            &t.queue_due,
            &t.blobs,
            &t.blob_files,
            &t.blob_refs,
            &t.mailboxes,
            &t.messages,
            &t.changes,
            &t.quota,
        );
        let w = self.write_gate();
        let done = trees.transaction(|(q, due, blobs, files, refs, mbs, msgs, changes, qt)| {
            match q.get(key)? {
                Some(v) if v.as_ref() == expected_bytes.as_slice() => {}
                _ => return Ok(None),
            }
            let mut dead_file = None;
            due.remove(&due_key(expected.next_attempt, id))?;
            match new {
                Some(n) => {
                    q.insert(&key, enc(n))?;
                    due.insert(&due_key(n.next_attempt, id), &[])?;
                }
                None => {
                    q.remove(&key)?;
                    if add_ref(refs, expected.blob_id, -1)? == 0
                        && drop_body(blobs, files, expected.blob_id)?
                    {
                        dead_file = Some(expected.blob_id);
                    }
                }
            }
            let mut appended = None;
            match bounce {
                None => {}
                Some(Bounce::Local {
                    mailbox_id,
                    raw,
                    internal_date,
                    ..
                }) => {
                    put_body(blobs, files, bounce_blob, raw)?;
                    add_ref(refs, bounce_blob, 1)?;
                    // A bounce is never refused for the sender's quota: it would stop the queue.
                    insert_message(
                        mbs,
                        msgs,
                        changes,
                        qt,
                        false,
                        *mailbox_id,
                        bounce_blob,
                        raw.len() as u64,
                        *internal_date,
                        &local_flags,
                    )?;
                    appended = Some(*mailbox_id);
                }
                Some(Bounce::Queue { raw, .. }) => {
                    if let Some(r) = &bounce_rec {
                        put_body(blobs, files, bounce_blob, raw)?;
                        add_ref(refs, bounce_blob, 1)?;
                        q.insert(&u64_key(r.id), enc(r))?;
                        due.insert(&due_key(r.next_attempt, r.id), &[])?;
                    }
                }
            }
            Ok(Some((appended, dead_file)))
        });
        drop(w);
        let done = self.files.settle(done, &bodies)?;
        match done {
            None => {
                self.files.remove_unreferenced(&bodies);
                Ok(false)
            }
            Some((appended, dead_file)) => {
                self.files.doom(dead_file);
                if let Some(mailbox_id) = appended {
                    if let Some(m) = self.mailbox_by_id(mailbox_id)? {
                        self.notify(m.account_id, mailbox_id);
                    }
                }
                Ok(true)
            }
        }
    }

    #[allow(dead_code)] // no caller today; kept for the PostgreSQL parity list (docs/cluster.md)
    /// Removes a record and releases its message bytes.
    pub fn queue_remove(&self, id: u64) -> Result<QueueRecord> {
        let Some(rec) = self.queue_get(id)? else {
            return Err(StoreError::NotFound(format!("queue entry {id}")));
        };
        if !self.queue_commit(&rec, None, None)? {
            return Err(StoreError::Invalid(format!(
                "queue entry {id} changed while being removed; try again"
            )));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::super::temp_sled as store;
    use super::*;

    fn queue(s: &Sled, rcpts: &[&str]) -> QueueRecord {
        let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
        let rec = s.new_queue_record("a@x.test", &rcpts).unwrap();
        s.deliver(&[], b"Subject: t\r\n\r\nhi\r\n", 0, Some((&rec, b"raw")))
            .unwrap();
        s.queue_get(rec.id).unwrap().unwrap()
    }

    #[test]
    fn due_index_follows_records() {
        let (_d, s) = store();
        let a = queue(&s, &["b@y.test"]);
        let b = queue(&s, &["c@y.test"]);
        s.queue_modify(a.id, |r| r.next_attempt = a.next_attempt + 100)
            .unwrap();
        let due: Vec<(i64, u64)> = s.queue_due().map(|r| r.unwrap()).collect();
        assert_eq!(
            due,
            vec![(b.next_attempt, b.id), (a.next_attempt + 100, a.id)]
        );
        assert_eq!(s.queue_reindex().unwrap(), 0);
        s.queue_remove(b.id).unwrap();
        let due: Vec<u64> = s.queue_due().map(|r| r.unwrap().1).collect();
        assert_eq!(due, vec![a.id]);
        assert!(s.blob(b.blob_id).unwrap().is_none());
        // A stray index key is repaired.
        s.t.queue_due.insert(due_key(5, 999), &[]).unwrap();
        assert_eq!(s.queue_reindex().unwrap(), 1);
    }

    #[test]
    fn commit_is_conditional_and_stores_the_bounce() {
        let (_d, s) = store();
        let a = queue(&s, &["b@y.test"]);
        let stale = a.clone();
        s.queue_modify(a.id, |r| r.attempts = 7).unwrap();
        assert!(!s.queue_commit(&stale, None, None).unwrap());
        let cur = s.queue_get(a.id).unwrap().unwrap();
        let bounce_rec = s.new_queue_record("", &["a@x.test".to_string()]).unwrap();
        let bounce = Bounce::Queue {
            record: bounce_rec.clone(),
            raw: b"Subject: bounce\r\n\r\n".to_vec(),
        };
        assert!(s.queue_commit(&cur, None, Some(&bounce)).unwrap());
        assert!(s.queue_get(a.id).unwrap().is_none());
        let b = s.queue_get(bounce_rec.id).unwrap().unwrap();
        assert_eq!(b.sender, "");
        assert_eq!(
            &*s.blob(b.blob_id).unwrap().unwrap(),
            b"Subject: bounce\r\n\r\n"
        );
        let due: Vec<u64> = s.queue_due().map(|r| r.unwrap().1).collect();
        assert_eq!(due, vec![bounce_rec.id]);
    }
}
