//! `tanba store check` on PostgreSQL: the invariants `store/check.rs` checks on sled, as SQL.
//!
//! What the schema's keys and foreign keys already guarantee (a message's mailbox and blob
//! exist, a mailbox's account exists, one name per account, chunks belong to a blob) is not
//! checked again. All queries run in one `REPEATABLE READ READ ONLY` transaction: one
//! consistent snapshot, taken while the server runs, that blocks no writer. Each query lists at
//! most [`MAX_LISTED`] rows (bounded memory); reports, never repairs. Checked:
//! - the schema version is the one this binary writes;
//! - accounts: each has an INBOX;
//! - mailboxes: `messages`/`unseen` equal a count of their messages (`unseen`: without
//!   `\Seen`, any case), `uidnext` is above every UID and `uidnext`/UIDs fit in 32 bits,
//!   `highest_modseq` is at least every message's modseq;
//! - messages: `size` equals its blob's size;
//! - blobs: `refcount` equals the messages plus queue rows naming it, no blob without
//!   references, its chunks are numbered 0..n without a gap and their lengths add up to `size`;
//! - quota: `used_bytes`/`used_messages` (0 without a row) equal the sums over the account's
//!   messages;
//! - queue: each row names a body.

use super::super::Result;
use super::{schema, Pg};

/// At most this many problems are listed per check (the rest are counted).
const MAX_LISTED: i64 = 1000;

/// Each check: a query whose rows are problems, one `text` column each. `$1` is the limit.
const CHECKS: &[&str] = &[
    // Accounts without an INBOX.
    "SELECT format('account %s has no INBOX', a.email) FROM accounts a \
     WHERE NOT EXISTS (SELECT 1 FROM mailboxes m WHERE m.account_id = a.id AND m.name = 'INBOX') \
     ORDER BY a.id LIMIT $1",
    // Mailbox counters against their messages.
    "WITH c AS (SELECT mailbox_id, count(*) AS n, \
                count(*) FILTER (WHERE NOT EXISTS \
                    (SELECT 1 FROM unnest(flags) f WHERE lower(f) = '\\seen')) AS unseen, \
                max(uid) AS max_uid, max(modseq) AS max_modseq \
         FROM messages GROUP BY mailbox_id) \
     SELECT p FROM (SELECT m.id, unnest(ARRAY[ \
         CASE WHEN m.messages <> coalesce(c.n, 0) THEN \
             format('mailbox %s (%s): messages is %s, it holds %s', m.name, m.id, m.messages, \
                    coalesce(c.n, 0)) END, \
         CASE WHEN m.unseen <> coalesce(c.unseen, 0) THEN \
             format('mailbox %s (%s): unseen is %s, it holds %s without \\Seen', m.name, m.id, \
                    m.unseen, coalesce(c.unseen, 0)) END, \
         CASE WHEN m.uidnext <= coalesce(c.max_uid, 0) THEN \
             format('mailbox %s (%s): uidnext %s is not above UID %s', m.name, m.id, m.uidnext, \
                    c.max_uid) END, \
         CASE WHEN m.uidnext < 1 OR m.uidnext > 4294967296 OR coalesce(c.max_uid, 1) > 4294967295 \
              THEN format('mailbox %s (%s): uidnext %s or a UID is outside 1..2^32', m.name, \
                          m.id, m.uidnext) END, \
         CASE WHEN m.highest_modseq < coalesce(c.max_modseq, 0) THEN \
             format('mailbox %s (%s): highest_modseq %s is below a message''s %s', m.name, m.id, \
                    m.highest_modseq, c.max_modseq) END]) AS p \
         FROM mailboxes m LEFT JOIN c ON c.mailbox_id = m.id) x \
     WHERE p IS NOT NULL ORDER BY id LIMIT $1",
    // A message's size against its body's.
    "SELECT format('message %s of mailbox %s: size %s but its body has %s bytes', \
                   m.uid, m.mailbox_id, m.size, b.size) \
     FROM messages m JOIN blobs b ON b.id = m.blob_id WHERE m.size <> b.size \
     ORDER BY m.mailbox_id, m.uid LIMIT $1",
    // Reference counts against the messages and queue rows naming each blob.
    "WITH u AS (SELECT blob_id, count(*) AS n FROM \
                (SELECT blob_id FROM messages UNION ALL \
                 SELECT blob_id FROM queue WHERE blob_id IS NOT NULL) r GROUP BY blob_id) \
     SELECT CASE WHEN coalesce(u.n, 0) = 0 \
                 THEN format('body %s: nothing references it (reference count %s)', \
                             lpad(to_hex(b.id), 16, '0'), b.refcount) \
                 ELSE format('body %s: reference count %s, referenced %s times', \
                             lpad(to_hex(b.id), 16, '0'), b.refcount, u.n) END \
     FROM blobs b LEFT JOIN u ON u.blob_id = b.id WHERE b.refcount <> coalesce(u.n, 0) \
        OR coalesce(u.n, 0) = 0 \
     ORDER BY b.id LIMIT $1",
    // Chunks: numbered 0..n-1 without a gap, lengths adding up to the blob's size.
    "WITH c AS (SELECT blob_id, count(*) AS n, min(n) AS lo, max(n) AS hi, \
                       sum(length(data)) AS bytes FROM blob_chunks GROUP BY blob_id) \
     SELECT format('body %s: %s bytes in %s chunks numbered %s..%s, the blob records %s bytes', \
                   lpad(to_hex(b.id), 16, '0'), coalesce(c.bytes, 0), coalesce(c.n, 0), \
                   coalesce(c.lo, 0), coalesce(c.hi, -1), b.size) \
     FROM blobs b LEFT JOIN c ON c.blob_id = b.id \
     WHERE coalesce(c.bytes, 0) <> b.size \
        OR (c.n IS NOT NULL AND (c.lo <> 0 OR c.hi <> c.n - 1)) \
     ORDER BY b.id LIMIT $1",
    // Quota usage against the account's messages.
    "WITH s AS (SELECT mb.account_id, sum(m.size) AS bytes, count(*) AS n \
                FROM messages m JOIN mailboxes mb ON mb.id = m.mailbox_id \
                GROUP BY mb.account_id) \
     SELECT format('quota of %s: usage recorded %s bytes in %s messages, counted %s bytes in %s', \
                   a.email, coalesce(q.used_bytes, 0), coalesce(q.used_messages, 0), \
                   coalesce(s.bytes, 0), coalesce(s.n, 0)) \
     FROM accounts a LEFT JOIN quota q ON q.account_id = a.id LEFT JOIN s ON s.account_id = a.id \
     WHERE coalesce(q.used_bytes, 0) <> coalesce(s.bytes, 0) \
        OR coalesce(q.used_messages, 0) <> coalesce(s.n, 0) \
     ORDER BY a.id LIMIT $1",
    // Queue rows without a body.
    "SELECT format('queue entry %s: no body', id) FROM queue WHERE blob_id IS NULL \
     ORDER BY id LIMIT $1",
];

impl Pg {
    /// Checks the database; returns the problems found (empty: consistent).
    pub(crate) fn check(&self) -> Result<Vec<String>> {
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut list = Vec::new();
            let version: i32 = tx
                .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
                .await?
                .get(0);
            if version != schema::VERSION {
                list.push(format!(
                    "schema version is {version}, expected {}",
                    schema::VERSION
                ));
            }
            let mut more = 0usize;
            for sql in CHECKS {
                let rows = tx.query(*sql, &[&(MAX_LISTED + 1)]).await?;
                for (i, r) in rows.iter().enumerate() {
                    if (i as i64) < MAX_LISTED {
                        list.push(r.get::<_, String>(0));
                    } else {
                        more += 1;
                    }
                }
            }
            tx.commit().await?;
            if more > 0 {
                list.push(format!(
                    "… and more problems (each check lists at most {MAX_LISTED})"
                ));
            }
            Ok(list)
        })
    }

    /// The database's size on disk (`pg_database_size`), for the metrics.
    pub(crate) fn size_bytes(&self) -> Result<u64> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_one("SELECT pg_database_size(current_database())", &[])
                .await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }
}
