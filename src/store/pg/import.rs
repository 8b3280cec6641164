//! Bulk inserts for `tanba store migrate` (`store/migrate.rs`): rows copied as they are, ids,
//! UIDs and MODSEQs kept, one transaction per [`Batch`] (bounded by the caller), and the read
//! back that verifies the copy ([`Pg::import_tally`]).

use deadpool_postgres::GenericClient;

use super::super::migrate::{feed_message, Digest, MailboxTally, Tally};
use super::super::quota::Quota;
use super::super::{dec, enc, MessageMeta, QueueRecord, Result, StoreError};
use super::{blob, queue, Pg};

/// One greylist entry as the `greylist` table keeps it.
#[derive(Debug, Clone)]
pub(crate) struct GreyRow {
    pub triplet: Vec<u8>,
    pub first_seen: u64,
    pub passed: bool,
    pub expires: u64,
}

/// Rows to insert in one transaction, in this order (bodies before the rows naming them).
#[derive(Default)]
pub(crate) struct Batch {
    /// `(blob_id, refcount, bytes)`.
    pub blobs: Vec<(u64, i32, super::super::message::Blob)>,
    /// `(mailbox_id, message)`.
    pub messages: Vec<(u64, MessageMeta)>,
    /// `(mailbox_id, modseq, uid)` of the QRESYNC expunge log.
    pub vanished: Vec<(u64, u64, u32)>,
    pub queue: Vec<QueueRecord>,
    /// `(address, record)`: the alias record as the embedded store encodes it.
    pub aliases: Vec<(String, Vec<u8>)>,
    pub greylist: Vec<GreyRow>,
    /// `(account_id, limit and usage)`.
    pub quotas: Vec<(u64, Quota)>,
    /// Body bytes held so far (the caller flushes past a bound).
    pub bytes: usize,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.blobs.len()
            + self.messages.len()
            + self.vanished.len()
            + self.queue.len()
            + self.aliases.len()
            + self.greylist.len()
            + self.quotas.len()
    }
}

fn i64_of(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::Db(format!("{what} {v} does not fit the database")))
}

impl Pg {
    /// Whether the database already holds Tanba data (accounts, bodies, queue or aliases).
    pub(crate) fn holds_data(&self) -> Result<bool> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM accounts) OR EXISTS (SELECT 1 FROM blobs) \
                     OR EXISTS (SELECT 1 FROM queue) OR EXISTS (SELECT 1 FROM aliases)",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    /// Inserts `b` in one transaction.
    pub(crate) fn import_batch(&self, b: Batch) -> Result<()> {
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            for (id, refs, body) in &b.blobs {
                blob::put(&tx, *id, body, *refs).await?;
            }
            // Rows come grouped by mailbox (key order): one multi-row insert per mailbox run,
            // the same statement deliveries use (`message.rs`).
            for run in b.messages.chunk_by(|x, y| x.0 == y.0) {
                let rows: Vec<MessageMeta> = run.iter().map(|(_, m)| m.clone()).collect();
                super::message::insert_rows(&tx, run[0].0, &rows).await?;
            }
            if !b.vanished.is_empty() {
                let mut boxes = Vec::with_capacity(b.vanished.len());
                let mut modseqs = Vec::with_capacity(b.vanished.len());
                let mut uids = Vec::with_capacity(b.vanished.len());
                for (m, s, u) in &b.vanished {
                    boxes.push(i64_of(*m, "mailbox id")?);
                    modseqs.push(i64_of(*s, "modseq")?);
                    uids.push(i64::from(*u));
                }
                tx.execute(
                    "INSERT INTO vanished (mailbox_id, modseq, uid) \
                     SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])",
                    &[&boxes, &modseqs, &uids],
                )
                .await?;
            }
            for rec in &b.queue {
                queue::insert(&tx, rec).await?;
            }
            for (address, record) in &b.aliases {
                tx.execute(
                    "INSERT INTO aliases (address, record) VALUES ($1, $2)",
                    &[address, record],
                )
                .await?;
            }
            for g in &b.greylist {
                tx.execute(
                    "INSERT INTO greylist (triplet, first_seen, passed, expires) \
                     VALUES ($1, $2, $3, $4)",
                    &[
                        &g.triplet,
                        &i64_of(g.first_seen, "time")?,
                        &g.passed,
                        &i64_of(g.expires, "time")?,
                    ],
                )
                .await?;
            }
            for (account_id, q) in &b.quotas {
                let limit = q.limit_kib.map(|l| i64_of(l, "quota")).transpose()?;
                tx.execute(
                    "INSERT INTO quota (account_id, limit_kib, used_bytes, used_messages) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account_id) DO UPDATE SET \
                     limit_kib = $2, used_bytes = $3, used_messages = $4",
                    &[
                        &i64_of(*account_id, "account id")?,
                        &limit,
                        &i64_of(q.bytes, "quota usage")?,
                        &i64_of(q.messages, "quota usage")?,
                    ],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Moves the `ids` sequence past `top` (the highest id copied), never back.
    pub(crate) fn import_ids_past(&self, top: u64) -> Result<()> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            c.execute(
                "SELECT setval('ids', greatest($1, (SELECT last_value FROM ids)))",
                &[&i64_of(top.max(1), "id")?],
            )
            .await?;
            Ok(())
        })
    }

    /// Sets each mailbox's QRESYNC log bookkeeping after the copy: `floors` holds the embedded
    /// store's floor per mailbox (absent: 0, the log is complete), the count is what was copied.
    pub(crate) fn import_vanished_meta(&self, floors: Vec<(u64, u64)>) -> Result<()> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let ids: Vec<i64> = floors.iter().map(|f| f.0 as i64).collect();
            let floors: Vec<i64> = floors.iter().map(|f| f.1 as i64).collect();
            c.execute(
                "UPDATE mailboxes m SET \
                 vanished_floor = coalesce((SELECT f.floor FROM unnest($1::bigint[], \
                   $2::bigint[]) AS f(id, floor) WHERE f.id = m.id), 0), \
                 vanished_count = (SELECT count(*) FROM vanished v WHERE v.mailbox_id = m.id)",
                &[&ids, &floors],
            )
            .await?;
            Ok(())
        })
    }

    /// Reads the whole database back into a [`Tally`] (counts, digests), one body at a time.
    pub(crate) fn import_tally(&self) -> Result<Tally> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            tally(&c).await
        })
    }
}

async fn count(c: &impl GenericClient, sql: &str) -> Result<u64> {
    let row = c.query_one(sql, &[]).await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Messages read per query while digesting a mailbox.
const PAGE: i64 = 500;

async fn tally(c: &impl GenericClient) -> Result<Tally> {
    let mut t = Tally::default();
    for (name, sql) in [
        ("accounts", "SELECT count(*) FROM accounts"),
        ("mailboxes", "SELECT count(*) FROM mailboxes"),
        ("subscriptions", "SELECT count(*) FROM subscriptions"),
        ("messages", "SELECT count(*) FROM messages"),
        ("bodies", "SELECT count(*) FROM blobs"),
        (
            "body references",
            "SELECT coalesce(sum(refcount), 0)::bigint FROM blobs",
        ),
        ("vanished UIDs", "SELECT count(*) FROM vanished"),
        ("queued", "SELECT count(*) FROM queue"),
        ("aliases", "SELECT count(*) FROM aliases"),
        ("greylist entries", "SELECT count(*) FROM greylist"),
    ] {
        t.counts.insert(name, count(c, sql).await?);
    }
    // A body's reference count is the number of rows that name it.
    t.refcounts_off = count(
        c,
        "SELECT count(*) FROM blobs b WHERE b.refcount <> \
         (SELECT count(*) FROM messages m WHERE m.blob_id = b.id) + \
         (SELECT count(*) FROM queue q WHERE q.blob_id = b.id)",
    )
    .await?;

    let mut d = Digest::new();
    for r in c
        .query(
            "SELECT a.id, a.email, a.password_hash, a.created, a.aliases, q.limit_kib, \
             coalesce(q.used_bytes, 0), coalesce(q.used_messages, 0) \
             FROM accounts a LEFT JOIN quota q ON q.account_id = a.id ORDER BY a.id",
            &[],
        )
        .await?
    {
        let quota = Quota {
            limit_kib: r.get::<_, Option<i64>>(5).map(|v| v as u64),
            bytes: r.get::<_, i64>(6) as u64,
            messages: r.get::<_, i64>(7) as u64,
        };
        d.account(
            r.get::<_, i64>(0) as u64,
            r.get(1),
            r.get(2),
            r.get(3),
            &r.get::<_, Vec<String>>(4),
            &quota,
        );
    }
    t.accounts = d.finish();

    let boxes = c
        .query(
            "SELECT id, account_id, name, uidvalidity, uidnext, highest_modseq, messages, \
             unseen, recent_mark, vanished_floor FROM mailboxes ORDER BY id",
            &[],
        )
        .await?;
    for r in &boxes {
        let id = r.get::<_, i64>(0);
        let mut mt = MailboxTally {
            account_id: r.get::<_, i64>(1) as u64,
            name: r.get::<_, String>(2),
            uidvalidity: r.get::<_, i64>(3) as u64,
            uidnext: r.get::<_, i64>(4) as u64,
            highest_modseq: r.get::<_, i64>(5) as u64,
            messages: r.get::<_, i64>(6) as u64,
            unseen: r.get::<_, i64>(7) as u64,
            recent_mark: r.get::<_, i64>(8) as u64,
            vanished_floor: r.get::<_, i64>(9) as u64,
            ..Default::default()
        };
        let mut d = Digest::new();
        let mut after = -1i64;
        loop {
            let page = c
                .query(
                    "SELECT uid, blob_id, size, internal_date, flags, modseq FROM messages \
                     WHERE mailbox_id = $1 AND uid > $2 ORDER BY uid LIMIT $3",
                    &[&id, &after, &PAGE],
                )
                .await?;
            for m in &page {
                let meta = MessageMeta {
                    uid: m.get::<_, i64>(0) as u32,
                    blob_id: m.get::<_, i64>(1) as u64,
                    size: m.get::<_, i64>(2) as u64,
                    internal_date: m.get(3),
                    flags: m.get(4),
                    modseq: m.get::<_, i64>(5) as u64,
                };
                after = i64::from(meta.uid);
                let body = blob::read(c, meta.blob_id).await?;
                feed_message(&mut d, &meta, body.as_deref());
                mt.stored += 1;
            }
            if (page.len() as i64) < PAGE {
                break;
            }
        }
        mt.digest = d.finish();
        t.mailboxes.insert(id as u64, mt);
    }

    // The queue and aliases, in key order (`COLLATE "C"`: byte order, as the embedded store).
    let mut d = Digest::new();
    let mut after = -1i64;
    loop {
        let page = c
            .query(
                "SELECT id, record, next_attempt FROM queue WHERE id > $1 ORDER BY id LIMIT $2",
                &[&after, &PAGE],
            )
            .await?;
        for r in &page {
            after = r.get(0);
            let rec: QueueRecord = dec(r.get::<_, &[u8]>(1))?;
            let body = blob::read(c, rec.blob_id).await?;
            d.queued(&rec, r.get(2), body.as_deref());
        }
        if (page.len() as i64) < PAGE {
            break;
        }
    }
    t.queue = d.finish();
    let mut d = Digest::new();
    for r in c
        .query(
            "SELECT address, record FROM aliases ORDER BY address COLLATE \"C\"",
            &[],
        )
        .await?
    {
        let rec: super::super::alias::Alias = dec(r.get::<_, &[u8]>(1))?;
        d.alias(r.get(0), &enc(&rec));
    }
    t.aliases = d.finish();
    Ok(t)
}
