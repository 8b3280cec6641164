//! Messages on PostgreSQL: the same behaviour as `store/message.rs`, `modseq.rs`,
//! `multiappend.rs` and `quota.rs` on sled (docs/cluster.md, "UID and MODSEQ allocation",
//! "Quotas").
//!
//! Every call is one transaction. Lock order, everywhere: the mailbox row(s) `FOR UPDATE` by
//! ascending id, then the quota row(s) by ascending account id, then blob rows by ascending id.
//! The mailbox row lock serialises every writer of that mailbox's messages, so UIDs and MODSEQs
//! are allocated in memory from the locked row (then written back in the same transaction): a
//! rollback gives them back before anyone saw them, and commit order is UID order. Each
//! transaction that changes a mailbox's messages or flags calls [`notify::changed`] before
//! COMMIT. Many rows are written with one statement (`unnest` of arrays); a message's flags
//! travel as a JSON array in text (no 2-D arrays needed).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use deadpool_postgres::GenericClient;

use super::super::mailbox::MailboxMeta;
use super::super::message::{normalize_flags, Blob};
use super::super::modseq::{VANISHED_KEEP, VANISHED_TRIM};
use super::super::multiappend::NewMessage;
use super::super::quota::Quota;
use super::super::{Appended, Changes, FlagOp, MessageMeta, QueueRecord, Result, StoreError};
use super::mailbox::meta_of;
use super::{blob, notify, queue, Pg};

const COLUMNS: &str = "uid, blob_id, size, internal_date, flags, modseq";

fn message_of(r: &tokio_postgres::Row) -> MessageMeta {
    MessageMeta {
        uid: r.get::<_, i64>("uid") as u32,
        blob_id: r.get::<_, i64>("blob_id") as u64,
        size: r.get::<_, i64>("size") as u64,
        internal_date: r.get("internal_date"),
        flags: r.get("flags"),
        modseq: r.get::<_, i64>("modseq") as u64,
    }
}

fn seen(flags: &[String]) -> bool {
    flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen"))
}

/// A flag list as the JSON text the statements below turn back into `text[]`.
fn flags_json(flags: &[String]) -> String {
    serde_json::to_string(flags).unwrap_or_else(|_| "[]".into())
}

fn i64s(uids: &[u32]) -> Vec<i64> {
    uids.iter().map(|&u| i64::from(u)).collect()
}

/// A modseq from a client, as a bigint (modseqs never reach 2^63).
fn modseq_arg(m: u64) -> i64 {
    m.min(i64::MAX as u64) as i64
}

/// Locks the rows of `ids` (ascending id) and returns the mailboxes found.
async fn lock_mailboxes(tx: &impl GenericClient, ids: &[u64]) -> Result<HashMap<u64, MailboxMeta>> {
    let mut ids: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    ids.sort_unstable();
    ids.dedup();
    let st = tx
        .prepare_cached("SELECT * FROM mailboxes WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .await?;
    let rows = tx.query(&st, &[&ids]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let m = meta_of(r);
            (m.id, m)
        })
        .collect())
}

/// Locks one mailbox row; `NotFound("mailbox")` as on sled when it is gone.
async fn lock_mailbox(tx: &impl GenericClient, id: u64) -> Result<MailboxMeta> {
    lock_mailboxes(tx, &[id])
        .await?
        .remove(&id)
        .ok_or_else(|| StoreError::NotFound("mailbox".into()))
}

/// Allocates the next UID and MODSEQ of the locked mailbox `mb` for a new message and counts
/// it (sled's `insert_message`, without the writes).
fn alloc(
    mb: &mut MailboxMeta,
    blob_id: u64,
    size: u64,
    internal_date: i64,
    flags: &[String],
) -> Result<MessageMeta> {
    let uid = mb.uidnext;
    mb.uidnext = uid
        .checked_add(1)
        .ok_or_else(|| StoreError::Invalid("mailbox UID space exhausted".into()))?;
    mb.highest_modseq += 1;
    mb.messages += 1;
    if !seen(flags) {
        mb.unseen += 1;
    }
    Ok(MessageMeta {
        uid,
        blob_id,
        size,
        internal_date,
        flags: flags.to_vec(),
        modseq: mb.highest_modseq,
    })
}

/// Writes back the counters of a locked mailbox row.
async fn save_mailbox(tx: &impl GenericClient, mb: &MailboxMeta) -> Result<()> {
    let st = tx
        .prepare_cached(
            "UPDATE mailboxes SET uidnext = $2, highest_modseq = $3, messages = $4, unseen = $5 \
             WHERE id = $1",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &(mb.id as i64),
            &i64::from(mb.uidnext),
            &(mb.highest_modseq as i64),
            &i64::from(mb.messages),
            &i64::from(mb.unseen),
        ],
    )
    .await?;
    Ok(())
}

/// Inserts new message rows of one mailbox, in one statement.
pub(super) async fn insert_rows(
    tx: &impl GenericClient,
    mailbox_id: u64,
    rows: &[MessageMeta],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let uids: Vec<i64> = rows.iter().map(|m| i64::from(m.uid)).collect();
    let blobs: Vec<i64> = rows.iter().map(|m| m.blob_id as i64).collect();
    let sizes: Vec<i64> = rows.iter().map(|m| m.size as i64).collect();
    let dates: Vec<i64> = rows.iter().map(|m| m.internal_date).collect();
    let flags: Vec<String> = rows.iter().map(|m| flags_json(&m.flags)).collect();
    let modseqs: Vec<i64> = rows.iter().map(|m| m.modseq as i64).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO messages (mailbox_id, uid, blob_id, size, internal_date, flags, modseq) \
             SELECT $1, x.uid, x.blob, x.size, x.date, \
                    ARRAY(SELECT jsonb_array_elements_text(x.f::jsonb)), x.modseq \
             FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], \
                         $7::bigint[]) AS x(uid, blob, size, date, f, modseq)",
        )
        .await?;
    tx.execute(
        &st,
        &[
            &(mailbox_id as i64),
            &uids,
            &blobs,
            &sizes,
            &dates,
            &flags,
            &modseqs,
        ],
    )
    .await?;
    Ok(())
}

/// Writes new rows of a locked mailbox, its counters and the change notification: three
/// statements pipelined (sent together, answered in order).
async fn write_mailbox(
    tx: &impl GenericClient,
    mb: &MailboxMeta,
    rows: &[MessageMeta],
) -> Result<()> {
    tokio::try_join!(
        insert_rows(tx, mb.id, rows),
        save_mailbox(tx, mb),
        notify::changed(tx, mb.account_id, mb.id)
    )?;
    Ok(())
}

/// Changes an account's usage by `bytes` and `messages` (negative: removal) on its locked quota
/// row; with `enforce`, an increase above the limit fails with [`StoreError::OverQuota`] (the
/// caller's transaction then rolls back), worded as on sled (`quota::charge`). A removal never
/// creates a row.
async fn charge(
    tx: &impl GenericClient,
    account_id: u64,
    bytes: i64,
    messages: i64,
    enforce: bool,
) -> Result<()> {
    if bytes == 0 && messages == 0 {
        return Ok(());
    }
    if bytes <= 0 && messages <= 0 {
        let st = tx
            .prepare_cached(
                "UPDATE quota SET used_bytes = greatest(0, used_bytes + $2), \
                 used_messages = greatest(0, used_messages + $3) WHERE account_id = $1",
            )
            .await?;
        tx.execute(&st, &[&(account_id as i64), &bytes, &messages])
            .await?;
        return Ok(());
    }
    let st = tx
        .prepare_cached(
            "INSERT INTO quota (account_id, used_bytes, used_messages) VALUES ($1, $2, $3) \
             ON CONFLICT (account_id) DO UPDATE SET \
               used_bytes = greatest(0, quota.used_bytes + excluded.used_bytes), \
               used_messages = greatest(0, quota.used_messages + excluded.used_messages) \
             RETURNING limit_kib, used_bytes - $2, used_messages - $3",
        )
        .await?;
    let row = tx
        .query_one(&st, &[&(account_id as i64), &bytes, &messages])
        .await?;
    let before = Quota {
        limit_kib: row.get::<_, Option<i64>>(0).map(|l| l.max(0) as u64),
        bytes: row.get::<_, i64>(1).max(0) as u64,
        messages: row.get::<_, i64>(2).max(0) as u64,
    };
    if enforce && bytes > 0 && before.would_exceed(bytes as u64) {
        return Err(StoreError::OverQuota(format!(
            "quota exceeded: {} KiB used of {} KiB",
            before.used_kib(),
            before.limit_kib.unwrap_or(0)
        )));
    }
    Ok(())
}

/// Charges several accounts, by ascending account id (the lock order).
async fn charge_all(
    tx: &impl GenericClient,
    usage: &BTreeMap<u64, (i64, i64)>,
    enforce: bool,
) -> Result<()> {
    for (&account, &(bytes, n)) in usage {
        charge(tx, account, bytes, n, enforce).await?;
    }
    Ok(())
}

/// Records expunged UIDs of a mailbox at `modseq` pairs in the QRESYNC log (`vanished`) and
/// keeps the log within [`VANISHED_TRIM`] (`modseq.rs`): the oldest entries go, the mailbox's
/// `vanished_floor` becomes the highest modseq dropped.
async fn log_vanished(tx: &impl GenericClient, mailbox_id: u64, gone: &[(u32, u64)]) -> Result<()> {
    if gone.is_empty() {
        return Ok(());
    }
    let uids: Vec<i64> = gone.iter().map(|&(u, _)| i64::from(u)).collect();
    let modseqs: Vec<i64> = gone.iter().map(|&(_, m)| m as i64).collect();
    let st = tx
        .prepare_cached(
            "INSERT INTO vanished (mailbox_id, modseq, uid) \
             SELECT $1, x.modseq, x.uid FROM unnest($2::bigint[], $3::bigint[]) AS x(uid, modseq) \
             ON CONFLICT DO NOTHING",
        )
        .await?;
    tx.execute(&st, &[&(mailbox_id as i64), &uids, &modseqs])
        .await?;
    let st = tx
        .prepare_cached(
            "UPDATE mailboxes SET vanished_count = vanished_count + $2 WHERE id = $1 \
             RETURNING vanished_count",
        )
        .await?;
    let count: i64 = tx
        .query_one(&st, &[&(mailbox_id as i64), &(gone.len() as i64)])
        .await?
        .get(0);
    if count <= i64::from(VANISHED_TRIM) {
        return Ok(());
    }
    let st = tx
        .prepare_cached(
            "WITH d AS (DELETE FROM vanished WHERE (mailbox_id, modseq, uid) IN \
               (SELECT mailbox_id, modseq, uid FROM vanished WHERE mailbox_id = $1 \
                ORDER BY modseq, uid LIMIT $2) RETURNING modseq) \
             UPDATE mailboxes SET vanished_count = vanished_count - (SELECT count(*) FROM d), \
               vanished_floor = greatest(vanished_floor, coalesce((SELECT max(modseq) FROM d), 0)) \
             WHERE id = $1",
        )
        .await?;
    tx.execute(
        &st,
        &[&(mailbox_id as i64), &(count - i64::from(VANISHED_KEEP))],
    )
    .await?;
    Ok(())
}

/// The per-blob reference counts of a list of blob ids (one per message).
fn ref_counts(blobs: impl IntoIterator<Item = u64>) -> Vec<(u64, i32)> {
    let mut m: BTreeMap<u64, i32> = BTreeMap::new();
    for b in blobs {
        *m.entry(b).or_default() += 1;
    }
    m.into_iter().collect()
}

/// Removes every message of the mailboxes `ids` (rows already locked by the caller) inside its
/// transaction, releasing their bodies and their accounts' usage, and drops their QRESYNC
/// logs. All in SQL: nothing proportional to the mailboxes' size comes to this process.
pub(super) async fn purge_mailboxes(tx: &impl GenericClient, ids: &[i64]) -> Result<()> {
    // Usage (quota rows by ascending account id), then bodies.
    tx.execute(
        "UPDATE quota q SET used_bytes = greatest(0, q.used_bytes - s.b), \
           used_messages = greatest(0, q.used_messages - s.n) \
         FROM (SELECT mb.account_id, sum(m.size)::bigint AS b, count(*) AS n \
               FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id \
               WHERE m.mailbox_id = ANY($1) GROUP BY mb.account_id) s \
         WHERE q.account_id = s.account_id",
        &[&ids],
    )
    .await?;
    tx.execute(
        "WITH c AS (SELECT blob_id, count(*)::int AS n FROM messages WHERE mailbox_id = ANY($1) \
                    GROUP BY blob_id), \
              l AS (SELECT id FROM blobs WHERE id IN (SELECT blob_id FROM c) ORDER BY id \
                    FOR UPDATE) \
         UPDATE blobs b SET refcount = b.refcount - c.n FROM c \
         WHERE b.id = c.blob_id AND b.id IN (SELECT id FROM l)",
        &[&ids],
    )
    .await?;
    tx.execute(
        "WITH d AS (DELETE FROM messages WHERE mailbox_id = ANY($1) RETURNING blob_id) \
         DELETE FROM blobs WHERE id IN (SELECT blob_id FROM d) AND refcount <= 0",
        &[&ids],
    )
    .await?;
    tx.execute(
        &tx.prepare_cached("DELETE FROM vanished WHERE mailbox_id = ANY($1)")
            .await?,
        &[&ids],
    )
    .await?;
    Ok(())
}

/// Stores one message in `mailbox_id` inside the caller's transaction, its body already put
/// as blob `blob_id` (its reference counted by the caller): locks the mailbox row, allocates
/// the UID and MODSEQ, charges the account (with `enforce`, refused over quota), writes the row
/// and the counters and announces the change. For other modules' transactions (a local bounce
/// stored with the queue change that causes it: `pg/queue.rs`). Returns the account's id and
/// the new message's UID material.
#[allow(dead_code)] // the queue's local bounce calls it (branch pgqueue)
pub(crate) async fn insert_message(
    tx: &impl GenericClient,
    mailbox_id: u64,
    blob_id: u64,
    size: u64,
    internal_date: i64,
    flags: &[String],
    enforce: bool,
) -> Result<(u64, Appended)> {
    let mut mb = lock_mailbox(tx, mailbox_id).await?;
    let m = alloc(
        &mut mb,
        blob_id,
        size,
        internal_date,
        &normalize_flags(flags),
    )?;
    charge(tx, mb.account_id, size as i64, 1, enforce).await?;
    insert_rows(tx, mailbox_id, std::slice::from_ref(&m)).await?;
    save_mailbox(tx, &mb).await?;
    notify::changed(tx, mb.account_id, mailbox_id).await?;
    Ok((
        mb.account_id,
        Appended {
            mailbox_id,
            uidvalidity: mb.uidvalidity,
            uid: m.uid,
        },
    ))
}

impl Pg {
    /// All messages of a mailbox in UID order.
    pub(crate) fn messages(&self, mailbox_id: u64) -> Result<Vec<MessageMeta>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE mailbox_id = $1 ORDER BY uid"
                ))
                .await?;
            let rows = c.query(&st, &[&(mailbox_id as i64)]).await?;
            Ok(rows.iter().map(message_of).collect())
        })
    }

    /// Messages with `from <= uid <= to`, in UID order (the primary key's range).
    pub(crate) fn messages_in(
        &self,
        mailbox_id: u64,
        from: u32,
        to: u32,
    ) -> Result<Vec<MessageMeta>> {
        if from > to {
            return Ok(Vec::new());
        }
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let st = c
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE mailbox_id = $1 AND uid BETWEEN $2 AND $3 \
                     ORDER BY uid"
                ))
                .await?;
            let rows = c
                .query(
                    &st,
                    &[&(mailbox_id as i64), &i64::from(from), &i64::from(to)],
                )
                .await?;
            Ok(rows.iter().map(message_of).collect())
        })
    }

    pub(crate) fn message(&self, mailbox_id: u64, uid: u32) -> Result<Option<MessageMeta>> {
        Ok(self.messages_in(mailbox_id, uid, uid)?.pop())
    }

    /// The exact stored bytes of a message.
    pub(crate) fn blob(&self, blob_id: u64) -> Result<Option<Blob>> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            blob::read(&c, blob_id).await
        })
    }

    /// Derived data cached for a blob (not durable on purpose on sled; here it is simply a row).
    pub(crate) fn blob_cache(&self, blob_id: u64) -> Result<Option<Vec<u8>>> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let st = c
                .prepare_cached("SELECT data FROM blob_cache WHERE blob_id = $1")
                .await?;
            let row = c.query_opt(&st, &[&(blob_id as i64)]).await?;
            Ok(row.map(|r| r.get::<_, Vec<u8>>(0)))
        })
    }

    /// Caches derived data for a blob; nothing when the blob is gone meanwhile.
    pub(crate) fn put_blob_cache(&self, blob_id: u64, data: &[u8]) -> Result<()> {
        let data = data.to_vec();
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let st = c
                .prepare_cached(
                    "INSERT INTO blob_cache (blob_id, data) \
                     SELECT id, $2 FROM blobs WHERE id = $1 \
                     ON CONFLICT (blob_id) DO UPDATE SET data = excluded.data",
                )
                .await?;
            match c.execute(&st, &[&(blob_id as i64), &data]).await {
                Ok(_) => Ok(()),
                // The blob went between the check and the insert: nothing to cache.
                Err(e)
                    if e.code()
                        == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) =>
                {
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// APPEND: stores `raw` as a new message in a mailbox.
    pub(crate) fn append(
        &self,
        mailbox_id: u64,
        raw: &[u8],
        flags: &[String],
        internal_date: i64,
    ) -> Result<Appended> {
        let out = self.deliver(&[(mailbox_id, flags.to_vec())], raw, internal_date, None)?;
        out.into_iter()
            .next()
            .ok_or_else(|| StoreError::Db("append stored nothing".into()))
    }

    /// Stores one message in several mailboxes (one blob, shared) and optionally queues another
    /// rendering of it (`queued`: the record and its bytes; a second blob and the queue row),
    /// all in one transaction.
    pub(crate) fn deliver(
        &self,
        targets: &[(u64, Vec<String>)],
        raw: &[u8],
        internal_date: i64,
        queued: Option<(&QueueRecord, &[u8])>,
    ) -> Result<Vec<Appended>> {
        let targets: Vec<(u64, Vec<String>)> = targets
            .iter()
            .map(|(m, f)| (*m, normalize_flags(f)))
            .collect();
        let raw = raw.to_vec();
        let queued = queued.map(|(q, b)| (q.clone(), b.to_vec()));
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let ids: Vec<u64> = targets.iter().map(|t| t.0).collect();
            // Pipelined: both requests go out before either answer is awaited.
            let (mut mbs, blob_id) = tokio::try_join!(lock_mailboxes(&tx, &ids), Pg::next_id(&tx))?;
            let mut out = Vec::with_capacity(targets.len());
            let mut out_blob = None;
            if !targets.is_empty() {
                let size = raw.len() as u64;
                let mut rows: BTreeMap<u64, Vec<MessageMeta>> = BTreeMap::new();
                let mut usage: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
                for (mailbox_id, flags) in &targets {
                    let mb = mbs
                        .get_mut(mailbox_id)
                        .ok_or_else(|| StoreError::NotFound("mailbox".into()))?;
                    let m = alloc(mb, blob_id, size, internal_date, flags)?;
                    out.push(Appended {
                        mailbox_id: *mailbox_id,
                        uidvalidity: mb.uidvalidity,
                        uid: m.uid,
                    });
                    let u = usage.entry(mb.account_id).or_default();
                    u.0 += size as i64;
                    u.1 += 1;
                    rows.entry(*mailbox_id).or_default().push(m);
                }
                // Refused over quota before any byte of the body is written.
                charge_all(&tx, &usage, true).await?;
                blob::put(&tx, blob_id, &raw, targets.len() as i32).await?;
                out_blob = Some(rows);
            }
            if let Some(rows) = out_blob {
                for (mailbox_id, rows) in rows {
                    let mb = &mbs[&mailbox_id];
                    write_mailbox(&tx, mb, &rows).await?;
                }
            }
            if let Some((mut q, bytes)) = queued {
                q.blob_id = Pg::next_id(&tx).await?;
                q.size = bytes.len() as u64;
                blob::put(&tx, q.blob_id, &bytes, 1).await?;
                queue::insert(&tx, &q).await?;
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    /// MULTIAPPEND: every message of `msgs` in `mailbox_id`, in order, or none of them.
    pub(crate) fn append_many(
        &self,
        mailbox_id: u64,
        msgs: &[NewMessage],
    ) -> Result<Vec<Appended>> {
        let msgs: Vec<NewMessage> = msgs
            .iter()
            .map(|m| NewMessage {
                raw: m.raw.clone(),
                flags: normalize_flags(&m.flags),
                internal_date: m.internal_date,
            })
            .collect();
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let mut mb = lock_mailbox(&tx, mailbox_id).await?;
            let mut rows = Vec::with_capacity(msgs.len());
            let mut out = Vec::with_capacity(msgs.len());
            let mut bytes = 0i64;
            for m in &msgs {
                let blob_id = Pg::next_id(&tx).await?;
                let meta = alloc(
                    &mut mb,
                    blob_id,
                    m.raw.len() as u64,
                    m.internal_date,
                    &m.flags,
                )?;
                out.push(Appended {
                    mailbox_id,
                    uidvalidity: mb.uidvalidity,
                    uid: meta.uid,
                });
                bytes += m.raw.len() as i64;
                rows.push(meta);
            }
            if msgs.is_empty() {
                return Ok(out);
            }
            charge(&tx, mb.account_id, bytes, msgs.len() as i64, true).await?;
            for (m, meta) in msgs.iter().zip(&rows) {
                blob::put(&tx, meta.blob_id, &m.raw, 1).await?;
            }
            write_mailbox(&tx, &mb, &rows).await?;
            tx.commit().await?;
            Ok(out)
        })
    }

    /// STORE with optional UNCHANGEDSINCE (RFC 7162 §3.1.3), checked and written in one
    /// transaction under the mailbox row lock. Returns the changed messages and the UIDs
    /// refused (modseq above `unchanged_since`).
    pub(crate) fn store_flags_if(
        &self,
        mailbox_id: u64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>)> {
        let flags = normalize_flags(flags);
        let uids = uids.to_vec();
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let mut mb = lock_mailbox(&tx, mailbox_id).await?;
            let st = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)"
                ))
                .await?;
            let found = tx.query(&st, &[&(mailbox_id as i64), &i64s(&uids)]).await?;
            let mut msgs: HashMap<u32, MessageMeta> = found
                .iter()
                .map(|r| {
                    let m = message_of(r);
                    (m.uid, m)
                })
                .collect();
            let mut changed = Vec::new();
            let mut failed = Vec::new();
            // In the caller's order, as on sled (a UID given twice changes nothing the second
            // time).
            for uid in &uids {
                let Some(m) = msgs.get_mut(uid) else {
                    continue;
                };
                if unchanged_since.is_some_and(|u| m.modseq > u) {
                    failed.push(*uid);
                    continue;
                }
                if !m.apply_store(op, &flags, &mut mb.unseen) {
                    continue;
                }
                mb.highest_modseq += 1;
                m.modseq = mb.highest_modseq;
                changed.push(m.clone());
            }
            if !changed.is_empty() {
                let uids: Vec<i64> = changed.iter().map(|m| i64::from(m.uid)).collect();
                let fl: Vec<String> = changed.iter().map(|m| flags_json(&m.flags)).collect();
                let ms: Vec<i64> = changed.iter().map(|m| m.modseq as i64).collect();
                let st = tx
                    .prepare_cached(
                        "UPDATE messages m SET \
                           flags = ARRAY(SELECT jsonb_array_elements_text(x.f::jsonb)), \
                           modseq = x.modseq \
                         FROM unnest($2::bigint[], $3::text[], $4::bigint[]) AS x(uid, f, modseq) \
                         WHERE m.mailbox_id = $1 AND m.uid = x.uid",
                    )
                    .await?;
                tx.execute(&st, &[&(mailbox_id as i64), &uids, &fl, &ms])
                    .await?;
                save_mailbox(&tx, &mb).await?;
                notify::changed(&tx, mb.account_id, mailbox_id).await?;
                tx.commit().await?;
            }
            Ok((changed, failed))
        })
    }

    /// COPY (`remove` false) or MOVE (RFC 6851; `remove` true) in one transaction: both
    /// mailbox rows locked by ascending id; a copy adds a reference to the shared blob, a move
    /// keeps the count (one reference added, one released) and logs the source's expunges.
    pub(crate) fn copy_or_move(
        &self,
        src: u64,
        uids: &[u32],
        dst: u64,
        remove: bool,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        let uids: Vec<u32> = uids
            .iter()
            .copied()
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let mut mbs = lock_mailboxes(&tx, &[src, dst]).await?;
            let Some(d) = mbs.get(&dst) else {
                return Err(StoreError::NotFound("mailbox".into()));
            };
            let mut uidvalidity = d.uidvalidity;
            let st = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) \
                     ORDER BY uid"
                ))
                .await?;
            let found: Vec<MessageMeta> = tx
                .query(&st, &[&(src as i64), &i64s(&uids)])
                .await?
                .iter()
                .map(message_of)
                .collect();
            if found.is_empty() {
                return Ok((uidvalidity, Vec::new()));
            }
            let mut pairs = Vec::with_capacity(found.len());
            let mut new_rows = Vec::with_capacity(found.len());
            let mut gone: Vec<(u32, u64)> = Vec::new();
            let mut usage: BTreeMap<u64, (i64, i64)> = BTreeMap::new();
            for m in &found {
                let mut flags = m.flags.clone();
                if remove {
                    // \Deleted does not travel with a moved message (as in Dovecot).
                    flags.retain(|f| f != "\\Deleted");
                }
                let d = mbs
                    .get_mut(&dst)
                    .ok_or_else(|| StoreError::NotFound("mailbox".into()))?;
                let n = alloc(d, m.blob_id, m.size, m.internal_date, &flags)?;
                uidvalidity = d.uidvalidity;
                let u = usage.entry(d.account_id).or_default();
                u.0 += m.size as i64;
                u.1 += 1;
                pairs.push((m.uid, n.uid));
                new_rows.push(n);
                if remove {
                    // After the insert: with src == dst this is the same row, as on sled.
                    let s = mbs
                        .get_mut(&src)
                        .ok_or_else(|| StoreError::NotFound("mailbox".into()))?;
                    s.messages = s.messages.saturating_sub(1);
                    if !seen(&m.flags) {
                        s.unseen = s.unseen.saturating_sub(1);
                    }
                    s.highest_modseq += 1;
                    gone.push((m.uid, s.highest_modseq));
                    let u = usage.entry(s.account_id).or_default();
                    u.0 -= m.size as i64;
                    u.1 -= 1;
                }
            }
            // A move never changes the usage of its account (RFC 9208: no OVERQUOTA for it).
            charge_all(&tx, &usage, !remove).await?;
            if remove {
                tx.execute(
                    &tx.prepare_cached(
                        "DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2)",
                    )
                    .await?,
                    &[
                        &(src as i64),
                        &found.iter().map(|m| i64::from(m.uid)).collect::<Vec<_>>(),
                    ],
                )
                .await?;
                // The new rows' foreign keys lock their blobs in UID order: take those locks
                // by ascending id first (a COPY's `add_refs_many` does, FOR UPDATE).
                let ids: Vec<i64> = ref_counts(found.iter().map(|m| m.blob_id))
                    .iter()
                    .map(|r| r.0 as i64)
                    .collect();
                blob::lock_shared(&tx, &ids).await?;
            } else {
                blob::add_refs_many(&tx, &ref_counts(found.iter().map(|m| m.blob_id))).await?;
            }
            insert_rows(&tx, dst, &new_rows).await?;
            let d = &mbs[&dst];
            save_mailbox(&tx, d).await?;
            notify::changed(&tx, d.account_id, dst).await?;
            if remove && src != dst {
                let s = &mbs[&src];
                save_mailbox(&tx, s).await?;
                notify::changed(&tx, s.account_id, src).await?;
            }
            if remove {
                log_vanished(&tx, src, &gone).await?;
            }
            tx.commit().await?;
            Ok((uidvalidity, pairs))
        })
    }

    /// EXPUNGE: removes the given UIDs; returns those removed, ascending. One modseq for the
    /// whole expunge (as on sled), logged for QRESYNC; bodies released, usage lowered.
    pub(crate) fn expunge(&self, mailbox_id: u64, uids: &[u32]) -> Result<Vec<u32>> {
        let uids = i64s(uids);
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let mut mb = lock_mailbox(&tx, mailbox_id).await?;
            let st = tx
                .prepare_cached(&format!(
                    "DELETE FROM messages WHERE mailbox_id = $1 AND uid = ANY($2) \
                     RETURNING {COLUMNS}"
                ))
                .await?;
            let mut gone: Vec<MessageMeta> = tx
                .query(&st, &[&(mailbox_id as i64), &uids])
                .await?
                .iter()
                .map(message_of)
                .collect();
            if gone.is_empty() {
                return Ok(Vec::new());
            }
            gone.sort_unstable_by_key(|m| m.uid);
            let mut bytes = 0i64;
            for m in &gone {
                mb.messages = mb.messages.saturating_sub(1);
                if !seen(&m.flags) {
                    mb.unseen = mb.unseen.saturating_sub(1);
                }
                bytes += m.size as i64;
            }
            mb.highest_modseq += 1;
            save_mailbox(&tx, &mb).await?;
            charge(&tx, mb.account_id, -bytes, -(gone.len() as i64), false).await?;
            blob::release_many(&tx, &ref_counts(gone.iter().map(|m| m.blob_id))).await?;
            let log: Vec<(u32, u64)> = gone.iter().map(|m| (m.uid, mb.highest_modseq)).collect();
            log_vanished(&tx, mailbox_id, &log).await?;
            notify::changed(&tx, mb.account_id, mailbox_id).await?;
            tx.commit().await?;
            Ok(gone.iter().map(|m| m.uid).collect())
        })
    }

    /// Messages changed (modseq above `since`, in modseq order) and UIDs expunged after
    /// `since`, read in one transaction (a consistent snapshot).
    pub(crate) fn changes_since(&self, mailbox_id: u64, since: u64) -> Result<Changes> {
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let st = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM messages WHERE mailbox_id = $1 AND modseq > $2 \
                     ORDER BY modseq, uid"
                ))
                .await?;
            let changed = tx
                .query(&st, &[&(mailbox_id as i64), &modseq_arg(since)])
                .await?
                .iter()
                .map(message_of)
                .collect();
            let (vanished, complete) = vanished_since(&tx, mailbox_id, since).await?;
            tx.commit().await?;
            Ok(Changes {
                changed,
                vanished,
                complete,
            })
        })
    }

    /// UIDs expunged at a modseq above `since`, ascending; false when the log does not reach
    /// back that far (`modseq.rs`).
    pub(crate) fn vanished_since(&self, mailbox_id: u64, since: u64) -> Result<(Vec<u32>, bool)> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            vanished_since(&c, mailbox_id, since).await
        })
    }

    /// Claims \Recent up to `upto` (raises the mailbox's recent mark), returns the old mark.
    pub(crate) fn claim_recent_upto(&self, mailbox_id: u64, upto: u32) -> Result<u32> {
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT recent_mark FROM mailboxes WHERE id = $1 FOR UPDATE",
                    )
                    .await?,
                    &[&(mailbox_id as i64)],
                )
                .await?
                .ok_or_else(|| StoreError::NotFound("mailbox".into()))?;
            let old = row.get::<_, i64>(0) as u32;
            if upto > old {
                tx.execute(
                    &tx.prepare_cached("UPDATE mailboxes SET recent_mark = $2 WHERE id = $1")
                        .await?,
                    &[&(mailbox_id as i64), &i64::from(upto)],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(old)
        })
    }

    /// The total size of a mailbox's messages in octets (STATUS SIZE, RFC 8438).
    pub(crate) fn mailbox_size(&self, mailbox_id: u64) -> Result<u64> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_one(
                    &c.prepare_cached(
                        "SELECT coalesce(sum(size), 0)::bigint FROM messages WHERE mailbox_id = $1",
                    )
                    .await?,
                    &[&(mailbox_id as i64)],
                )
                .await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }
}

async fn vanished_since(
    c: &impl GenericClient,
    mailbox_id: u64,
    since: u64,
) -> Result<(Vec<u32>, bool)> {
    let floor = c
        .query_opt(
            &c.prepare_cached("SELECT vanished_floor FROM mailboxes WHERE id = $1")
                .await?,
            &[&(mailbox_id as i64)],
        )
        .await?
        .map(|r| r.get::<_, i64>(0).max(0) as u64)
        .unwrap_or(0);
    let st = c
        .prepare_cached(
            "SELECT DISTINCT uid FROM vanished WHERE mailbox_id = $1 AND modseq > $2 ORDER BY uid",
        )
        .await?;
    let uids = c
        .query(&st, &[&(mailbox_id as i64), &modseq_arg(since)])
        .await?
        .iter()
        .map(|r| r.get::<_, i64>(0) as u32)
        .collect();
    Ok((uids, since >= floor))
}
