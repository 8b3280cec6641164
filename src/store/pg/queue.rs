//! The outbound queue on PostgreSQL (docs/cluster.md, "Outbound queue: leases"): the same records
//! as on sled (MessagePack in `queue.record`), plus a lease so that each message is delivered by
//! one node at a time.
//!
//! Lease rules:
//! - [`Pg::queue_due`] claims the due rows that are unleased, leased by this node, or whose lease
//!   has expired (`FOR UPDATE SKIP LOCKED`, so nodes claiming at once take different rows): it
//!   sets `lease_owner` = this node ([`node_id`]) and `lease_until` = the database's clock +
//!   [`lease_secs`], and commits before yielding them. Rows it claimed but the caller did not
//!   take (the iterator dropped early) go back, unless this node held them already.
//! - A background task renews every lease this node holds each half lease; a node that dies
//!   stops renewing, and its rows are free once `lease_until` has passed.
//! - [`Pg::queue_modify`] and [`Pg::queue_commit`] refuse a row whose live lease belongs to
//!   another node; `queue_modify` by the holder renews the lease, `queue_commit` clears it (the
//!   round is over; the next one may run on any node).
//! - Lease times use the database's clock (one clock for all nodes); `next_attempt` is the
//!   nodes' clocks, as on sled.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::OnceLock;

use deadpool_postgres::GenericClient;

use super::super::queue::{Bounce, QueueRecord};
use super::super::{dec, enc, now_unix, Result, StoreError};
use super::Pg;

/// Rows claimed per round trip by [`Pg::queue_due`].
const CLAIM_BATCH: i64 = 100;
/// The default lease length, seconds.
const LEASE_SECS: i64 = 600;
/// Environment variable overriding [`LEASE_SECS`] (hidden; tests use a short lease).
pub(crate) const LEASE_ENV: &str = "TANBA_QUEUE_LEASE_SECS";

/// The database's clock, Unix seconds.
const DB_NOW: &str = "extract(epoch from clock_timestamp())::bigint";

/// The node this process serves as (set by [`Pg::start_node`]): the random name kept in the
/// served `data_dir` (`node-id`), or "-" for processes that serve nothing (the CLI).
static NODE: OnceLock<String> = OnceLock::new();

/// This process's lease owner: `<node>@<hostname>/<pid>/<start time>`. The start time and pid
/// keep a restarted node from mistaking its predecessor's leases for its own; the node part
/// lets it release them at start ([`Pg::start_node`]) instead of waiting for them to expire.
pub(crate) fn node_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        let node = NODE.get().map(String::as_str).unwrap_or("-");
        format!("{node}@{host}/{}/{started}", std::process::id())
    })
}

/// The node name kept in `data_dir/node-id` (created, mode 0600, on first use): 32 random hex
/// digits, so that two machines with the same hostname and paths are still two nodes.
fn node_name(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("node-id");
    let io = |e: std::io::Error| StoreError::from_io(path.display().to_string(), e);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let s = s.trim();
            if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(s.to_string());
            }
            return Err(StoreError::Invalid(format!(
                "{} is not a node name (32 hex digits); remove it to make a new one",
                path.display()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut raw = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut raw);
    let name: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    crate::perms::write_atomic(&path, format!("{name}\n").as_bytes()).map_err(io)?;
    Ok(name)
}

impl Pg {
    /// Called by `tanba serve` while it holds `data_dir`'s instance lock, before any delivery:
    /// takes the node name kept in `data_dir` and releases the leases an earlier process of
    /// this node left (killed mid-delivery). That process is gone (the lock says so), so its
    /// messages go out again now rather than when the lease expires. Returns how many.
    pub(crate) fn start_node(&self, data_dir: &Path) -> Result<u64> {
        let name = node_name(data_dir)?;
        if NODE.get_or_init(|| name.clone()) != &name {
            return Err(StoreError::Invalid(
                "the node name was already taken".into(),
            ));
        }
        let me = node_id();
        if !me.starts_with(&format!("{name}@")) {
            return Err(StoreError::Invalid(
                "a queue lease was taken before the node name was known".into(),
            ));
        }
        let prefix = format!("{name}@");
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let n = c
                .execute(
                    "UPDATE queue SET lease_owner = NULL, lease_until = NULL \
                     WHERE starts_with(lease_owner, $1) AND lease_owner <> $2",
                    &[&prefix, &me],
                )
                .await?;
            Ok(n)
        })
    }
}

/// The lease length in seconds: [`LEASE_ENV`] when set to a positive integer, else 10 min.
pub(crate) fn lease_secs() -> i64 {
    static SECS: OnceLock<i64> = OnceLock::new();
    *SECS.get_or_init(|| {
        std::env::var(LEASE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<i64>().ok())
            .filter(|v| *v > 0 && *v <= 86_400)
            .unwrap_or(LEASE_SECS)
    })
}

/// Inserts a new queue row (its body, `rec.blob_id`, stored by the caller in the same
/// transaction), unclaimed.
pub(crate) async fn insert(tx: &impl GenericClient, rec: &QueueRecord) -> Result<()> {
    tx.execute(
        &tx.prepare_cached(
            "INSERT INTO queue (id, next_attempt, record, blob_id) VALUES ($1, $2, $3, $4)",
        )
        .await?,
        &[
            &(rec.id as i64),
            &rec.next_attempt,
            &enc(rec),
            &(rec.blob_id as i64),
        ],
    )
    .await?;
    Ok(())
}

/// The error for a row another node is delivering.
fn leased_elsewhere(id: u64, owner: &str) -> StoreError {
    StoreError::Invalid(format!(
        "queue entry {id} is being delivered by another node ({owner}); try again later"
    ))
}

/// Whether a row's lease (owner, until) keeps this node away at database time `now`.
fn held_elsewhere(owner: &Option<String>, until: Option<i64>, now: i64) -> Option<&str> {
    match owner {
        Some(o) if o != node_id() && until.unwrap_or(0) >= now => Some(o),
        _ => None,
    }
}

/// Stores a bounce inside the queue change's transaction.
async fn store_bounce(tx: &impl GenericClient, bounce: &Bounce) -> Result<()> {
    let blob_id = Pg::next_id(tx).await?;
    match bounce {
        Bounce::Queue { record, raw } => {
            let mut r = record.clone();
            r.blob_id = blob_id;
            r.size = raw.len() as u64;
            super::blob::put(tx, blob_id, raw, 1).await?;
            insert(tx, &r).await?;
            Ok(())
        }
        Bounce::Local {
            mailbox_id,
            raw,
            keywords,
            internal_date,
        } => {
            super::blob::put(tx, blob_id, raw, 1).await?;
            // A bounce is never refused for the sender's quota (`enforce` false): it would stop
            // the queue. The mailbox's change is announced inside (`pg_notify`).
            super::message::insert_message(
                tx,
                *mailbox_id,
                blob_id,
                raw.len() as u64,
                *internal_date,
                keywords,
                false,
            )
            .await?;
            Ok(())
        }
    }
}

impl Pg {
    /// A new queue record for `recipients`, due now; its id from the `ids` sequence.
    pub(crate) fn new_queue_record(
        &self,
        sender: &str,
        recipients: &[String],
    ) -> Result<QueueRecord> {
        let id = self.run(|pg| async move {
            let c = pg.conn().await?;
            Pg::next_id(&c).await
        })?;
        Ok(QueueRecord::due_now(id, sender, recipients))
    }

    pub(crate) fn queue_get(&self, id: u64) -> Result<Option<QueueRecord>> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached("SELECT record FROM queue WHERE id = $1")
                        .await?,
                    &[&(id as i64)],
                )
                .await?;
            row.map(|r| dec(r.get::<_, &[u8]>(0))).transpose()
        })
    }

    /// Every queued message, oldest first.
    pub(crate) fn queue_list(&self) -> Result<Vec<QueueRecord>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    &c.prepare_cached("SELECT record FROM queue ORDER BY id")
                        .await?,
                    &[],
                )
                .await?;
            rows.iter().map(|r| dec(r.get::<_, &[u8]>(0))).collect()
        })
    }

    /// How many messages are queued, and when the oldest was queued (Unix seconds).
    pub(crate) fn queue_summary(&self) -> Result<(u64, Option<i64>)> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let n: i64 = c
                .query_one(&c.prepare_cached("SELECT count(*) FROM queue").await?, &[])
                .await?
                .get(0);
            let oldest = c
                .query_opt(
                    &c.prepare_cached("SELECT record FROM queue ORDER BY id LIMIT 1")
                        .await?,
                    &[],
                )
                .await?;
            let oldest = match oldest {
                Some(r) => Some(dec::<QueueRecord>(r.get::<_, &[u8]>(0))?.created),
                None => None,
            };
            Ok((n as u64, oldest))
        })
    }

    /// `(next_attempt, id)` of the due records this node now holds a lease on (claimed as the
    /// iterator advances, [`CLAIM_BATCH`] at a time), then one `(t, 0)` with `t` in the future:
    /// when the next record may be claimable here (not due yet, or leased by another node until
    /// then). See the module docs for the lease rules.
    pub(crate) fn queue_due(&self) -> Box<dyn Iterator<Item = Result<(i64, u64)>> + '_> {
        self.start_renewal();
        Box::new(Claims {
            pg: self.clone(),
            now: now_unix(),
            batch: VecDeque::new(),
            after: (i64::MIN, 0),
            more: true,
            ended: false,
        })
    }

    /// Starts (once per process) the task that renews this node's leases every half lease.
    fn start_renewal(&self) {
        static STARTED: OnceLock<()> = OnceLock::new();
        let mut first = false;
        STARTED.get_or_init(|| first = true);
        if !first {
            return;
        }
        // The task holds the pool only, not the runtime it runs on.
        let pool = self.pool.clone();
        let every = std::time::Duration::from_millis((lease_secs() as u64 * 1000 / 2).max(500));
        self.rt.get().spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let res = async {
                    let c = pool.get().await?;
                    c.execute(
                        &format!(
                            "UPDATE queue SET lease_until = {DB_NOW} + $2 WHERE lease_owner = $1"
                        ),
                        &[&node_id(), &lease_secs()],
                    )
                    .await
                    .map_err(StoreError::from)
                }
                .await;
                if let Err(e) = res {
                    tracing::warn!("renewing the queue leases failed: {e}");
                }
            }
        });
    }

    /// Atomically applies `f` to the current record (a conditional write, retried when the row
    /// changed meanwhile: `f` may run more than once). `None`: no such record. Refused while
    /// another node holds the row's lease; renews the lease when this node holds it.
    pub(crate) fn queue_modify(
        &self,
        id: u64,
        f: impl Fn(&mut QueueRecord),
    ) -> Result<Option<QueueRecord>> {
        for _ in 0..20 {
            let row = self.run(move |pg| async move {
                let c = pg.conn().await?;
                let row = c
                    .query_opt(
                        &format!(
                            "SELECT record, lease_owner, lease_until, {DB_NOW} FROM queue \
                             WHERE id = $1"
                        ),
                        &[&(id as i64)],
                    )
                    .await?;
                Ok(row.map(|r| {
                    (
                        r.get::<_, Vec<u8>>(0),
                        r.get::<_, Option<String>>(1),
                        r.get::<_, Option<i64>>(2),
                        r.get::<_, i64>(3),
                    )
                }))
            })?;
            let Some((old_bytes, owner, until, now)) = row else {
                return Ok(None);
            };
            if let Some(o) = held_elsewhere(&owner, until, now) {
                return Err(leased_elsewhere(id, o));
            }
            let old: QueueRecord = dec(&old_bytes)?;
            let mut new = old.clone();
            f(&mut new);
            new.id = old.id;
            new.blob_id = old.blob_id;
            let (next, bytes) = (new.next_attempt, enc(&new));
            let done = self.run(move |pg| async move {
                let c = pg.conn().await?;
                let n = c
                    .execute(
                        &format!(
                            "UPDATE queue SET record = $2, next_attempt = $3, \
                             lease_until = CASE WHEN lease_owner = $4 THEN {DB_NOW} + $5 \
                                           ELSE lease_until END \
                             WHERE id = $1 AND record = $6 \
                               AND (lease_owner IS NULL OR lease_owner = $4 \
                                    OR lease_until < {DB_NOW})"
                        ),
                        &[
                            &(id as i64),
                            &bytes,
                            &next,
                            &node_id(),
                            &lease_secs(),
                            &old_bytes,
                        ],
                    )
                    .await?;
                Ok(n == 1)
            })?;
            if done {
                return Ok(Some(new));
            }
        }
        Err(StoreError::Unavailable(format!(
            "queue entry {id} kept changing; try again"
        )))
    }

    /// Conditional write at the end of a delivery round (`store/queue.rs`): if the record still
    /// equals `expected`, replace it with `new` (lease cleared) or remove it and release its
    /// body, and store `bounce`, in one transaction. `false`: changed or removed meanwhile.
    /// Refused while another node holds the row's lease.
    pub(crate) fn queue_commit(
        &self,
        expected: &QueueRecord,
        new: Option<&QueueRecord>,
        bounce: Option<&Bounce>,
    ) -> Result<bool> {
        let id = expected.id;
        let blob_id = expected.blob_id;
        let expected = enc(expected);
        let new = new.map(|n| (n.next_attempt, enc(n)));
        let bounce = bounce.map(|b| match b {
            Bounce::Local {
                mailbox_id,
                raw,
                keywords,
                internal_date,
            } => Bounce::Local {
                mailbox_id: *mailbox_id,
                raw: raw.clone(),
                keywords: keywords.clone(),
                internal_date: *internal_date,
            },
            Bounce::Queue { record, raw } => Bounce::Queue {
                record: record.clone(),
                raw: raw.clone(),
            },
        });
        self.run(move |pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT record, lease_owner, lease_until, {DB_NOW} FROM queue \
                         WHERE id = $1 FOR UPDATE"
                    ),
                    &[&(id as i64)],
                )
                .await?;
            let Some(row) = row else {
                return Ok(false);
            };
            if row.get::<_, &[u8]>(0) != expected.as_slice() {
                return Ok(false);
            }
            let owner: Option<String> = row.get(1);
            if let Some(o) = held_elsewhere(&owner, row.get(2), row.get(3)) {
                return Err(leased_elsewhere(id, o));
            }
            match &new {
                Some((next, bytes)) => {
                    tx.execute(
                        "UPDATE queue SET record = $2, next_attempt = $3, lease_owner = NULL, \
                         lease_until = NULL WHERE id = $1",
                        &[&(id as i64), bytes, next],
                    )
                    .await?;
                }
                None => {
                    tx.execute(
                        &tx.prepare_cached("DELETE FROM queue WHERE id = $1").await?,
                        &[&(id as i64)],
                    )
                    .await?;
                    super::blob::release(&tx, blob_id).await?;
                }
            }
            if let Some(b) = &bounce {
                store_bounce(&tx, b).await?;
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Claims the next batch of due rows after `after` for this node. Returns them in due
    /// order, each with whether this node held it already.
    fn claim(&self, now: i64, after: (i64, u64)) -> Result<Vec<(i64, u64, bool)>> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    &format!(
                        "WITH c AS (SELECT id, coalesce(lease_owner = $1, false) AS mine \
                           FROM queue \
                           WHERE next_attempt <= $2 \
                             AND (lease_owner IS NULL OR lease_owner = $1 \
                                  OR lease_until < {DB_NOW}) \
                             AND (next_attempt, id) > ($3, $4) \
                           ORDER BY next_attempt, id LIMIT $5 FOR UPDATE SKIP LOCKED) \
                         UPDATE queue q SET lease_owner = $1, lease_until = {DB_NOW} + $6 \
                         FROM c WHERE q.id = c.id RETURNING q.next_attempt, q.id, c.mine"
                    ),
                    &[
                        &node_id(),
                        &now,
                        &after.0,
                        &(after.1 as i64),
                        &CLAIM_BATCH,
                        &lease_secs(),
                    ],
                )
                .await?;
            let mut out: Vec<(i64, u64, bool)> = rows
                .iter()
                .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1) as u64, r.get(2)))
                .collect();
            out.sort_unstable();
            Ok(out)
        })
    }

    /// When a row not claimed now may next be claimable by this node (node clock), if any.
    fn next_claimable(&self, now: i64) -> Result<Option<i64>> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_one(
                    &format!(
                        "WITH t AS (SELECT {DB_NOW} AS db) \
                         SELECT min(CASE WHEN lease_owner IS NOT NULL AND lease_owner <> $1 \
                                          AND lease_until >= t.db \
                                     THEN greatest(next_attempt, $2 + lease_until - t.db + 1) \
                                     ELSE next_attempt END) \
                         FROM queue, t \
                         WHERE next_attempt > $2 OR (lease_owner IS NOT NULL \
                               AND lease_owner <> $1 AND lease_until >= t.db)"
                    ),
                    &[&node_id(), &now],
                )
                .await?;
            Ok(row.get::<_, Option<i64>>(0))
        })
    }

    /// Gives back rows claimed by [`Pg::queue_due`] that the caller did not take.
    fn release_claims(&self, ids: Vec<i64>) -> Result<()> {
        self.run(move |pg| async move {
            let c = pg.conn().await?;
            c.execute(
                "UPDATE queue SET lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY($1) AND lease_owner = $2",
                &[&ids, &node_id()],
            )
            .await?;
            Ok(())
        })
    }
}

/// [`Pg::queue_due`]'s iterator.
struct Claims {
    pg: Pg,
    /// The node's clock when the pass started.
    now: i64,
    /// Claimed, not yet yielded: (next_attempt, id, held before this pass).
    batch: VecDeque<(i64, u64, bool)>,
    /// The last claimed (next_attempt, id): the next batch starts after it.
    after: (i64, u64),
    /// Whether another batch may be claimable.
    more: bool,
    /// The final `(t, 0)` was yielded (or there is none).
    ended: bool,
}

impl Iterator for Claims {
    type Item = Result<(i64, u64)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.batch.is_empty() && self.more {
            match self.pg.claim(self.now, self.after) {
                Ok(rows) => {
                    self.more = rows.len() as i64 == CLAIM_BATCH;
                    if let Some(&(t, id, _)) = rows.last() {
                        self.after = (t, id);
                    }
                    self.batch.extend(rows);
                }
                Err(e) => {
                    self.more = false;
                    self.ended = true;
                    return Some(Err(e));
                }
            }
        }
        if let Some((t, id, _)) = self.batch.pop_front() {
            return Some(Ok((t, id)));
        }
        if self.ended {
            return None;
        }
        self.ended = true;
        match self.pg.next_claimable(self.now) {
            Ok(Some(t)) => Some(Ok((t.max(self.now + 1), 0))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        let ids: Vec<i64> = self
            .batch
            .iter()
            .filter(|(_, _, mine)| !mine)
            .map(|(_, id, _)| *id as i64)
            .collect();
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.pg.release_claims(ids) {
            tracing::warn!("releasing unused queue claims failed: {e}");
        }
    }
}
