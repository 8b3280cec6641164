//! Messages: exact bytes in `blobs` (shared by reference count between copies and recipients),
//! per-mailbox metadata keyed by UID in `messages`.
//!
//! Every mutation is one sled transaction over all the trees it touches; callers make it durable
//! with [`Sled::durable`] before they acknowledge it.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::files::is_file;
use super::modseq::{index_set, log_expunged};
use super::queue::QueueRecord;
use super::{dec, enc, key2, mailbox::MailboxMeta, read_u64, u64_key, Result, Sled, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageMeta {
    pub uid: u32,
    pub blob_id: u64,
    /// Size of the stored bytes (RFC822.SIZE).
    pub size: u64,
    /// INTERNALDATE, Unix seconds.
    pub internal_date: i64,
    /// System flags in canonical case (`\Seen`, ...) and keywords; never `\Recent`.
    pub flags: Vec<String>,
    pub modseq: u64,
}

impl MessageMeta {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }
    fn seen(&self) -> bool {
        self.has_flag("\\Seen")
    }

    /// STORE on this message (RFC 3501 §6.4.6): applies `op` with `flags` (normalized) and keeps
    /// `unseen`, its mailbox's count, right. False when the flags did not change: nothing to
    /// write and no new MODSEQ (RFC 7162 §3.2).
    pub(crate) fn apply_store(&mut self, op: FlagOp, flags: &[String], unseen: &mut u32) -> bool {
        let before = self.flags.clone();
        let was_seen = self.seen();
        match op {
            FlagOp::Replace => self.flags = flags.to_vec(),
            FlagOp::Add => {
                for f in flags {
                    if !self.has_flag(f) {
                        self.flags.push(f.clone());
                    }
                }
            }
            FlagOp::Remove => self
                .flags
                .retain(|x| !flags.iter().any(|f| f.eq_ignore_ascii_case(x))),
        }
        if self.flags == before {
            return false;
        }
        match (was_seen, self.seen()) {
            (false, true) => *unseen = unseen.saturating_sub(1),
            (true, false) => *unseen += 1,
            _ => {}
        }
        true
    }
}

/// Result of storing one message in one mailbox (APPENDUID/COPYUID material).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub mailbox_id: u64,
    pub uidvalidity: u32,
    pub uid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

/// The exact bytes of a message: borrowed from sled's cache without copying when small,
/// read from its file when large (`files.rs`).
#[derive(Clone)]
pub struct Blob(BlobBytes);

#[derive(Clone)]
enum BlobBytes {
    Inline(sled::IVec),
    File(Arc<Vec<u8>>),
}

impl Blob {
    /// A body read whole into memory (the PostgreSQL backend's chunks, joined).
    pub(crate) fn from_vec(v: Vec<u8>) -> Blob {
        Blob(BlobBytes::File(Arc::new(v)))
    }
}

impl Deref for Blob {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            BlobBytes::Inline(v) => v,
            BlobBytes::File(v) => v,
        }
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Stores a body inside a transaction: inline in `blobs`, or as the length in `blob_files`
/// when [`Files::write_all`](super::files::Files::write_all) put it in a file.
pub(super) fn put_body(
    blobs: &TransactionalTree,
    blob_files: &TransactionalTree,
    blob_id: u64,
    raw: &[u8],
) -> TxResult<()> {
    if is_file(raw.len()) {
        blob_files.insert(&u64_key(blob_id), &(raw.len() as u64).to_be_bytes())?;
    } else {
        blobs.insert(&u64_key(blob_id), raw)?;
    }
    Ok(())
}

/// Drops a body inside a transaction; returns true when it was a file (to unlink once the
/// removal is durable, [`Files::doom`](super::files::Files::doom)).
pub(super) fn drop_body(
    blobs: &TransactionalTree,
    blob_files: &TransactionalTree,
    blob_id: u64,
) -> TxResult<bool> {
    blobs.remove(&u64_key(blob_id))?;
    Ok(blob_files.remove(&u64_key(blob_id))?.is_some())
}

/// Canonical spelling of system flags; keywords are kept as given. `\Recent` is dropped (it is
/// session state, never stored).
pub fn normalize_flags(flags: &[String]) -> Vec<String> {
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    let mut out: Vec<String> = Vec::new();
    for f in flags {
        let f = match SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(f)) {
            Some(s) => s.to_string(),
            None if f.eq_ignore_ascii_case("\\Recent") => continue,
            None => f.clone(),
        };
        if !out.iter().any(|o| o.eq_ignore_ascii_case(&f)) {
            out.push(f);
        }
    }
    out
}

pub(super) type TxResult<T> = std::result::Result<T, ConflictableTransactionError<StoreError>>;

fn get_mailbox(mbs: &TransactionalTree, id: u64) -> TxResult<MailboxMeta> {
    match mbs.get(u64_key(id))? {
        Some(v) => Ok(dec(&v)?),
        None => Err(StoreError::NotFound("mailbox".into()).into()),
    }
}

pub(super) fn add_ref(refs: &TransactionalTree, blob_id: u64, by: i64) -> TxResult<u32> {
    let cur = match refs.get(u64_key(blob_id))? {
        Some(v) => u32::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 4])),
        None => 0,
    };
    let new = (cur as i64 + by).max(0) as u32;
    if new == 0 {
        refs.remove(&u64_key(blob_id))?;
    } else {
        refs.insert(&u64_key(blob_id), &new.to_be_bytes())?;
    }
    Ok(new)
}

/// What removing messages inside a transaction freed.
#[derive(Default)]
struct Gone {
    uids: Vec<u32>,
    /// The removed messages' (uid, modseq), for the expunge log.
    modseqs: Vec<(u32, u64)>,
    /// Blobs whose last reference went.
    blobs: Vec<u64>,
    /// Those of them kept as files (to unlink once durable).
    files: Vec<u64>,
}

/// Removes one message inside a transaction and drops its blob reference (the body too, at
/// zero). The mailbox's counters are the caller's business.
fn remove_message(
    msgs: &TransactionalTree,
    refs: &TransactionalTree,
    blobs: &TransactionalTree,
    files: &TransactionalTree,
    mailbox_id: u64,
    uid: u32,
    gone: &mut Gone,
) -> TxResult<Option<MessageMeta>> {
    let Some(v) = msgs.remove(&key2(mailbox_id, uid))? else {
        return Ok(None);
    };
    let m: MessageMeta = dec(&v)?;
    if add_ref(refs, m.blob_id, -1)? == 0 {
        if drop_body(blobs, files, m.blob_id)? {
            gone.files.push(m.blob_id);
        }
        gone.blobs.push(m.blob_id);
    }
    gone.uids.push(uid);
    gone.modseqs.push((uid, m.modseq));
    Ok(Some(m))
}

/// Inserts one message into a mailbox inside a transaction: allocates the UID, bumps counters
/// and the account's usage (`quota.rs`; with `enforce`, refused above the limit).
#[allow(clippy::too_many_arguments)]
pub(super) fn insert_message(
    mbs: &TransactionalTree,
    msgs: &TransactionalTree,
    changes: &TransactionalTree,
    qt: &TransactionalTree,
    enforce: bool,
    mailbox_id: u64,
    blob_id: u64,
    size: u64,
    internal_date: i64,
    flags: &[String],
) -> TxResult<Appended> {
    let mut mb = get_mailbox(mbs, mailbox_id)?;
    super::quota::charge(qt, mb.account_id, size as i64, 1, enforce)?;
    let uid = mb.uidnext;
    mb.uidnext = uid
        .checked_add(1)
        .ok_or_else(|| StoreError::Invalid("mailbox UID space exhausted".into()))?;
    mb.highest_modseq += 1;
    let meta = MessageMeta {
        uid,
        blob_id,
        size,
        internal_date,
        flags: flags.to_vec(),
        modseq: mb.highest_modseq,
    };
    mb.messages += 1;
    if !meta.seen() {
        mb.unseen += 1;
    }
    msgs.insert(&key2(mailbox_id, uid), enc(&meta))?;
    index_set(changes, mailbox_id, uid, None, meta.modseq)?;
    mbs.insert(&u64_key(mailbox_id), enc(&mb))?;
    Ok(Appended {
        mailbox_id,
        uidvalidity: mb.uidvalidity,
        uid,
    })
}

impl Sled {
    /// All messages of a mailbox in UID order.
    pub fn messages(&self, mailbox_id: u64) -> Result<Vec<MessageMeta>> {
        self.t
            .messages
            .scan_prefix(u64_key(mailbox_id))
            .values()
            .map(|v| {
                self.count_read();
                dec(&v?)
            })
            .collect()
    }

    /// Messages with `from <= uid <= to`, in UID order, without scanning the rest.
    pub fn messages_in(&self, mailbox_id: u64, from: u32, to: u32) -> Result<Vec<MessageMeta>> {
        if from > to {
            return Ok(Vec::new());
        }
        self.t
            .messages
            .range(key2(mailbox_id, from)..=key2(mailbox_id, to))
            .values()
            .map(|v| {
                self.count_read();
                dec(&v?)
            })
            .collect()
    }

    pub fn message(&self, mailbox_id: u64, uid: u32) -> Result<Option<MessageMeta>> {
        match self.t.messages.get(key2(mailbox_id, uid))? {
            Some(v) => {
                self.count_read();
                Ok(Some(dec(&v)?))
            }
            None => Ok(None),
        }
    }

    /// The exact stored bytes of a message.
    pub fn blob(&self, blob_id: u64) -> Result<Option<Blob>> {
        if let Some(v) = self.t.blobs.get(u64_key(blob_id))? {
            return Ok(Some(Blob(BlobBytes::Inline(v))));
        }
        match self.t.blob_files.get(u64_key(blob_id))? {
            Some(len) => {
                let len = read_u64(&len)?;
                let data = self.files.read(blob_id, len)?;
                Ok(Some(Blob(BlobBytes::File(Arc::new(data)))))
            }
            None => Ok(None),
        }
    }

    /// Derived data cached for a blob (e.g. IMAP's parsed MIME structure). Not durable on purpose:
    /// it can always be recomputed from the blob.
    pub fn blob_cache(&self, blob_id: u64) -> Result<Option<Vec<u8>>> {
        Ok(self.t.blob_cache.get(u64_key(blob_id))?.map(|v| v.to_vec()))
    }

    pub fn put_blob_cache(&self, blob_id: u64, data: &[u8]) -> Result<()> {
        self.t.blob_cache.insert(u64_key(blob_id), data)?;
        Ok(())
    }

    /// APPEND: stores `raw` as a new message in a mailbox.
    pub fn append(
        &self,
        mailbox_id: u64,
        raw: &[u8],
        flags: &[String],
        internal_date: i64,
    ) -> Result<Appended> {
        let out = self.deliver(&[(mailbox_id, flags.to_vec())], raw, internal_date, None)?;
        Ok(out[0])
    }

    /// [`Sled::append`] without the quota check (`store rebuild` recovering messages).
    pub(crate) fn append_over_quota(
        &self,
        mailbox_id: u64,
        raw: &[u8],
        internal_date: i64,
    ) -> Result<Appended> {
        let targets = [(mailbox_id, Vec::new())];
        let out = self.deliver_checked(&targets, raw, internal_date, None, false)?;
        Ok(out[0])
    }

    /// Stores one message in several mailboxes (one blob, shared) and optionally queues another
    /// rendering of it (`queued`: the record and its bytes) for remote recipients — all in one
    /// transaction, so a crash keeps all or nothing.
    pub fn deliver(
        &self,
        targets: &[(u64, Vec<String>)],
        raw: &[u8],
        internal_date: i64,
        queued: Option<(&QueueRecord, &[u8])>,
    ) -> Result<Vec<Appended>> {
        self.deliver_checked(targets, raw, internal_date, queued, true)
    }

    /// [`Sled::deliver`]; `enforce`: refuse what would go above a recipient's quota.
    fn deliver_checked(
        &self,
        targets: &[(u64, Vec<String>)],
        raw: &[u8],
        internal_date: i64,
        queued: Option<(&QueueRecord, &[u8])>,
        enforce: bool,
    ) -> Result<Vec<Appended>> {
        let blob_id = self.next_id()?;
        let size = raw.len() as u64;
        let targets: Vec<(u64, Vec<String>)> = targets
            .iter()
            .map(|(m, f)| (*m, normalize_flags(f)))
            .collect();
        let queued = match queued {
            Some((q, bytes)) => {
                let mut q = q.clone();
                q.blob_id = self.next_id()?;
                q.size = bytes.len() as u64;
                Some((q, bytes))
            }
            None => None,
        };
        // Body files first, durably, so a committed reference always has its file.
        let mut bodies: Vec<(u64, &[u8])> = Vec::new();
        if !targets.is_empty() {
            bodies.push((blob_id, raw));
        }
        if let Some((q, bytes)) = &queued {
            bodies.push((q.blob_id, bytes));
        }
        self.files.write_all(&bodies)?;
        let t = &self.t;
        let trees = (
            &t.mailboxes,
            &t.messages,
            &t.blobs,
            &t.blob_files,
            &t.blob_refs,
            &t.queue,
            &t.queue_due,
            &t.changes,
            &t.quota,
        );
        let w = self.write_gate();
        let out = trees.transaction(|(mbs, msgs, blobs, files, refs, qt, due, changes, quota)| {
            let mut out = Vec::with_capacity(targets.len());
            if !targets.is_empty() {
                put_body(blobs, files, blob_id, raw)?;
                add_ref(refs, blob_id, targets.len() as i64)?;
                for (mailbox_id, flags) in &targets {
                    out.push(insert_message(
                        mbs,
                        msgs,
                        changes,
                        quota,
                        enforce,
                        *mailbox_id,
                        blob_id,
                        size,
                        internal_date,
                        flags,
                    )?);
                }
            }
            if let Some((q, bytes)) = &queued {
                put_body(blobs, files, q.blob_id, bytes)?;
                add_ref(refs, q.blob_id, 1)?;
                qt.insert(&u64_key(q.id), enc(q))?;
                due.insert(&super::queue::due_key(q.next_attempt, q.id), &[])?;
            }
            Ok(out)
        });
        drop(w);
        let out = self.files.settle(out, &bodies)?;
        for a in &out {
            if let Some(m) = self.mailbox_by_id(a.mailbox_id)? {
                self.notify(m.account_id, a.mailbox_id);
            }
        }
        Ok(out)
    }

    /// STORE: changes flags of the given UIDs (missing UIDs are skipped). Returns the new metas of
    /// the messages whose flags actually changed.
    pub fn store_flags(
        &self,
        mailbox_id: u64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> Result<Vec<MessageMeta>> {
        Ok(self.store_flags_if(mailbox_id, uids, op, flags, None)?.0)
    }

    /// STORE with UNCHANGEDSINCE (RFC 7162 §3.1.3): a message whose modseq is above
    /// `unchanged_since` is left alone and its UID returned second. Checked and written in one
    /// transaction, so no change can slip in between.
    pub fn store_flags_if(
        &self,
        mailbox_id: u64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>)> {
        let flags = normalize_flags(flags);
        let t = &self.t;
        let w = self.write_gate();
        let (changed, failed) =
            (&t.mailboxes, &t.messages, &t.changes).transaction(|(mbs, msgs, changes)| {
                let mut mb = get_mailbox(mbs, mailbox_id)?;
                let mut changed = Vec::new();
                let mut failed = Vec::new();
                for &uid in uids {
                    let Some(v) = msgs.get(key2(mailbox_id, uid))? else {
                        continue;
                    };
                    let mut m: MessageMeta = dec(&v)?;
                    if unchanged_since.is_some_and(|u| m.modseq > u) {
                        failed.push(uid);
                        continue;
                    }
                    if !m.apply_store(op, &flags, &mut mb.unseen) {
                        continue;
                    }
                    mb.highest_modseq += 1;
                    index_set(changes, mailbox_id, uid, Some(m.modseq), mb.highest_modseq)?;
                    m.modseq = mb.highest_modseq;
                    msgs.insert(&key2(mailbox_id, uid), enc(&m))?;
                    changed.push(m);
                }
                if !changed.is_empty() {
                    mbs.insert(&u64_key(mailbox_id), enc(&mb))?;
                }
                Ok((changed, failed))
            })?;
        drop(w);
        if !changed.is_empty() {
            self.notify_mailbox(mailbox_id)?;
        }
        Ok((changed, failed))
    }

    /// COPY: the copies share the blob. Returns (source uid, new uid) pairs and the destination's
    /// UIDVALIDITY.
    pub fn copy_messages(
        &self,
        src: u64,
        uids: &[u32],
        dst: u64,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        self.copy_or_move(src, uids, dst, false)
    }

    /// MOVE (RFC 6851): copy and expunge in one transaction.
    pub fn move_messages(
        &self,
        src: u64,
        uids: &[u32],
        dst: u64,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        self.copy_or_move(src, uids, dst, true)
    }

    fn copy_or_move(
        &self,
        src: u64,
        uids: &[u32],
        dst: u64,
        remove: bool,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        let uids: BTreeSet<u32> = uids.iter().copied().collect();
        let t = &self.t;
        let w = self.write_gate();
        let trees = (
            &t.mailboxes,
            &t.messages,
            &t.blob_refs,
            &t.changes,
            &t.vanished,
            &t.quota,
        );
        let out = trees.transaction(|(mbs, msgs, refs, changes, vanished, qt)| {
            let mut pairs = Vec::new();
            let mut uidvalidity = get_mailbox(mbs, dst)?.uidvalidity;
            for &uid in &uids {
                let Some(v) = msgs.get(key2(src, uid))? else {
                    continue;
                };
                let m: MessageMeta = dec(&v)?;
                let mut flags = m.flags.clone();
                if remove {
                    // \Deleted does not travel with a moved message (as in Dovecot).
                    flags.retain(|f| f != "\\Deleted");
                }
                // A move never changes the account's usage (RFC 9208: no OVERQUOTA for it); a
                // move into the same mailbox gives the message a new UID (RFC 6851 §3.3).
                let a = insert_message(
                    mbs,
                    msgs,
                    changes,
                    qt,
                    !remove,
                    dst,
                    m.blob_id,
                    m.size,
                    m.internal_date,
                    &flags,
                )?;
                uidvalidity = a.uidvalidity;
                add_ref(refs, m.blob_id, 1)?;
                if remove {
                    // insert_message rewrote dst, which may be src.
                    let mut src_mb = get_mailbox(mbs, src)?;
                    super::quota::charge(qt, src_mb.account_id, -(m.size as i64), -1, false)?;
                    msgs.remove(&key2(src, uid))?;
                    add_ref(refs, m.blob_id, -1)?;
                    src_mb.messages = src_mb.messages.saturating_sub(1);
                    if !m.seen() {
                        src_mb.unseen = src_mb.unseen.saturating_sub(1);
                    }
                    src_mb.highest_modseq += 1;
                    log_expunged(
                        changes,
                        vanished,
                        src,
                        &[(uid, m.modseq)],
                        src_mb.highest_modseq,
                    )?;
                    mbs.insert(&u64_key(src), enc(&src_mb))?;
                }
                pairs.push((uid, a.uid));
            }
            Ok((uidvalidity, pairs))
        })?;
        drop(w);
        self.notify_mailbox(dst)?;
        if remove {
            self.trim_vanished(src)?;
            self.notify_mailbox(src)?;
        }
        Ok(out)
    }

    /// EXPUNGE / UID EXPUNGE: removes the given UIDs (callers choose which, e.g. those flagged
    /// \Deleted). Returns the UIDs actually removed, ascending.
    pub fn expunge(&self, mailbox_id: u64, uids: &[u32]) -> Result<Vec<u32>> {
        let uids: BTreeSet<u32> = uids.iter().copied().collect();
        let t = &self.t;
        let w = self.write_gate();
        let (removed, dead_blobs, dead_files) = (
            &t.mailboxes,
            &t.messages,
            &t.blob_refs,
            &t.blobs,
            &t.blob_files,
            &t.changes,
            &t.vanished,
            &t.quota,
        )
            .transaction(|(mbs, msgs, refs, blobs, files, changes, vanished, qt)| {
                let mut mb = get_mailbox(mbs, mailbox_id)?;
                let mut gone = Gone::default();
                let mut bytes = 0u64;
                for &uid in &uids {
                    let Some(m) =
                        remove_message(msgs, refs, blobs, files, mailbox_id, uid, &mut gone)?
                    else {
                        continue;
                    };
                    mb.messages = mb.messages.saturating_sub(1);
                    if !m.seen() {
                        mb.unseen = mb.unseen.saturating_sub(1);
                    }
                    bytes += m.size;
                }
                let n = gone.uids.len() as i64;
                super::quota::charge(qt, mb.account_id, -(bytes as i64), -n, false)?;
                if !gone.uids.is_empty() {
                    mb.highest_modseq += 1;
                    log_expunged(
                        changes,
                        vanished,
                        mailbox_id,
                        &gone.modseqs,
                        mb.highest_modseq,
                    )?;
                    mbs.insert(&u64_key(mailbox_id), enc(&mb))?;
                }
                Ok((gone.uids, gone.blobs, gone.files))
            })?;
        drop(w);
        self.files.doom(dead_files);
        for b in dead_blobs {
            self.t.blob_cache.remove(u64_key(b))?;
        }
        if !removed.is_empty() {
            self.trim_vanished(mailbox_id)?;
            self.notify_mailbox(mailbox_id)?;
        }
        Ok(removed)
    }

    /// Removes every message of a mailbox whose record is already gone (deleted mailbox or
    /// account): nothing can be added to it any more (`insert_message` needs the record), so one
    /// pass over what is left removes everything, in transactions of at most 1000 messages.
    pub(crate) fn purge_mailbox(&self, account_id: u64, mailbox_id: u64) -> Result<()> {
        let t = &self.t;
        loop {
            let uids: Vec<u32> = t
                .messages
                .scan_prefix(u64_key(mailbox_id))
                .keys()
                .take(1000)
                .map(|k| {
                    let k = k?;
                    let tail: [u8; 4] = k
                        .get(8..12)
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| StoreError::Db("corrupt message key".into()))?;
                    Ok(u32::from_be_bytes(tail))
                })
                .collect::<Result<_>>()?;
            if uids.is_empty() {
                return self.purge_modseq_index(mailbox_id);
            }
            let w = self.write_gate();
            let trees = (&t.messages, &t.blob_refs, &t.blobs, &t.blob_files, &t.quota);
            let gone = trees.transaction(|(msgs, refs, blobs, files, qt)| {
                let mut gone = Gone::default();
                let mut bytes = 0u64;
                for &uid in &uids {
                    if let Some(m) =
                        remove_message(msgs, refs, blobs, files, mailbox_id, uid, &mut gone)?
                    {
                        bytes += m.size;
                    }
                }
                let n = gone.uids.len() as i64;
                super::quota::charge(qt, account_id, -(bytes as i64), -n, false)?;
                Ok(gone)
            })?;
            drop(w);
            self.files.doom(gone.files);
            for b in gone.blobs {
                self.t.blob_cache.remove(u64_key(b))?;
            }
        }
    }

    fn notify_mailbox(&self, mailbox_id: u64) -> Result<()> {
        if let Some(m) = self.mailbox_by_id(mailbox_id)? {
            self.notify(m.account_id, mailbox_id);
        }
        Ok(())
    }
}
