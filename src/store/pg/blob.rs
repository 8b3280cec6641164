#![allow(dead_code)] // used by messages and the queue, which come next (docs/cluster.md)
//! Message bodies on PostgreSQL (docs/cluster.md, "Bodies"): one `blobs` row per body (size,
//! reference count) and its bytes in `blob_chunks` of [`CHUNK`] bytes, so no value nears
//! PostgreSQL's 1 GiB bytea limit. Every function runs inside the caller's transaction; the
//! body store stays this one seam, so an S3-compatible store can replace the chunks later.

use deadpool_postgres::GenericClient;
use futures_util::TryStreamExt;

use super::super::message::Blob;
use super::super::{Result, StoreError};

/// Bytes per `blob_chunks` row.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The most a body read reserves ahead from the recorded size (above the default
/// `smtp.max_message_size`).
const RESERVE_AT_MOST: usize = 64 << 20;

/// Chunks per statement when a body is written: the driver keeps its buffers as large as the
/// largest statement a connection sent, for as long as the pooled connection lives, so no
/// statement carries more than about 1 MiB of body (docs/benchmarks.md, "Memory of one large
/// body").
const CHUNKS_PER_STATEMENT: usize = 4;

/// Stores `raw` as blob `id` with `refs` references: the `blobs` row and the first chunks in
/// one statement (one round trip for a body up to 1 MiB), then the rest 1 MiB per statement.
pub(crate) async fn put(tx: &impl GenericClient, id: u64, raw: &[u8], refs: i32) -> Result<()> {
    let chunks: Vec<&[u8]> = raw.chunks(CHUNK).collect();
    let mut batches = chunks.chunks(CHUNKS_PER_STATEMENT);
    let first = batches.next().unwrap_or_default();
    let st = tx
        .prepare_cached(
            "WITH b AS (INSERT INTO blobs (id, size, refcount) VALUES ($1, $2, $3)) \
             INSERT INTO blob_chunks (blob_id, n, data) \
             SELECT $1, (x.n - 1)::integer, x.d FROM unnest($4::bytea[]) WITH ORDINALITY AS x(d, n)",
        )
        .await?;
    tx.execute(&st, &[&(id as i64), &(raw.len() as i64), &refs, &first])
        .await?;
    let mut n = first.len() as i64;
    for batch in batches {
        let st = tx
            .prepare_cached(
                "INSERT INTO blob_chunks (blob_id, n, data) \
                 SELECT $1, ($2::bigint + x.n - 1)::integer, x.d \
                 FROM unnest($3::bytea[]) WITH ORDINALITY AS x(d, n)",
            )
            .await?;
        tx.execute(&st, &[&(id as i64), &n, &batch]).await?;
        n += batch.len() as i64;
    }
    Ok(())
}

/// Adds `n` references to blob `id` (COPY).
pub(crate) async fn add_refs(tx: &impl GenericClient, id: u64, n: i32) -> Result<()> {
    tx.execute(
        &tx.prepare_cached("UPDATE blobs SET refcount = refcount + $2 WHERE id = $1")
            .await?,
        &[&(id as i64), &n],
    )
    .await?;
    Ok(())
}

/// Drops one reference to blob `id`; the body (chunks, cached derived data) goes with the last.
pub(crate) async fn release(tx: &impl GenericClient, id: u64) -> Result<()> {
    let left = tx
        .query_opt(
            &tx.prepare_cached(
                "UPDATE blobs SET refcount = refcount - 1 WHERE id = $1 RETURNING refcount",
            )
            .await?,
            &[&(id as i64)],
        )
        .await?;
    if left.is_some_and(|r| r.get::<_, i32>(0) <= 0) {
        tx.execute(
            &tx.prepare_cached("DELETE FROM blobs WHERE id = $1").await?,
            &[&(id as i64)],
        )
        .await?;
    }
    Ok(())
}

/// The exact bytes of blob `id`, `None` when there is no such blob.
pub(crate) async fn read(c: &impl GenericClient, id: u64) -> Result<Option<Blob>> {
    // One statement (one round trip, one snapshot): the blob's row joined with its chunks in
    // order; no row at all when there is no such blob, one row with no data for an empty body.
    // The rows are taken as they arrive (the driver reads the socket only as fast as they are
    // taken), so reading a body holds about its size once, not its rows and their joined copy.
    let st = c
        .prepare_cached(
            "SELECT b.size, c.data FROM blobs b LEFT JOIN blob_chunks c ON c.blob_id = b.id \
             WHERE b.id = $1 ORDER BY c.n",
        )
        .await?;
    let rows = c.query_raw(&st, [id as i64]).await?;
    let mut rows = std::pin::pin!(rows);
    let mut out: Option<(i64, Vec<u8>)> = None;
    while let Some(row) = rows.try_next().await? {
        let (_, buf) = out.get_or_insert_with(|| {
            let size = row.get::<_, i64>(0);
            // The recorded size comes from the database: reserved only up to a bound, and
            // without aborting when that fails, so a corrupt size cannot make this process
            // allocate it. A larger body grows the buffer as its chunks arrive.
            let mut buf = Vec::new();
            let _ = buf.try_reserve_exact(usize::try_from(size).unwrap_or(0).min(RESERVE_AT_MOST));
            (size, buf)
        });
        if let Some(d) = row.get::<_, Option<&[u8]>>(1) {
            buf.extend_from_slice(d);
        }
    }
    let Some((size, out)) = out else {
        return Ok(None);
    };
    // A mismatch is an error, as a body file of the wrong length is on sled (`files.rs`).
    if u64::try_from(size).ok() != Some(out.len() as u64) {
        return Err(StoreError::Db(format!(
            "body {id:016x}: {} bytes in its chunks, the database records {size}",
            out.len()
        )));
    }
    Ok(Some(Blob::from_vec(out)))
}

/// Locks the rows of blobs `ids` against removal (`FOR KEY SHARE`, what a new message row's
/// foreign key takes), by ascending id: the lock order, so that writing rows that name them
/// (in any order) takes no blob lock out of order.
pub(crate) async fn lock_shared(tx: &impl GenericClient, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let st = tx
        .prepare_cached("SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR KEY SHARE")
        .await?;
    tx.query(&st, &[&ids]).await?;
    Ok(())
}

/// Adds references to several blobs (`(id, n)`, ascending id: the lock order), one statement.
pub(crate) async fn add_refs_many(tx: &impl GenericClient, refs: &[(u64, i32)]) -> Result<()> {
    if refs.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = refs.iter().map(|r| r.0 as i64).collect();
    let ns: Vec<i32> = refs.iter().map(|r| r.1).collect();
    let st = tx
        .prepare_cached(
            "WITH l AS (SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
             UPDATE blobs b SET refcount = b.refcount + x.n \
             FROM unnest($1::bigint[], $2::int[]) AS x(id, n) \
             WHERE b.id = x.id AND b.id IN (SELECT id FROM l)",
        )
        .await?;
    tx.execute(&st, &[&ids, &ns]).await?;
    Ok(())
}

/// Drops references to several blobs (`(id, n)`); the bodies whose last reference went are
/// deleted (chunks and cached data with them), in the caller's transaction. Two statements.
pub(crate) async fn release_many(tx: &impl GenericClient, refs: &[(u64, i32)]) -> Result<()> {
    if refs.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = refs.iter().map(|r| r.0 as i64).collect();
    let ns: Vec<i32> = refs.iter().map(|r| r.1).collect();
    let st = tx
        .prepare_cached(
            "WITH l AS (SELECT id FROM blobs WHERE id = ANY($1) ORDER BY id FOR UPDATE) \
             UPDATE blobs b SET refcount = b.refcount - x.n \
             FROM unnest($1::bigint[], $2::int[]) AS x(id, n) \
             WHERE b.id = x.id AND b.id IN (SELECT id FROM l) RETURNING b.id, b.refcount",
        )
        .await?;
    let dead: Vec<i64> = tx
        .query(&st, &[&ids, &ns])
        .await?
        .iter()
        .filter(|r| r.get::<_, i32>(1) <= 0)
        .map(|r| r.get(0))
        .collect();
    if !dead.is_empty() {
        tx.execute(
            &tx.prepare_cached("DELETE FROM blobs WHERE id = ANY($1)")
                .await?,
            &[&dead],
        )
        .await?;
    }
    Ok(())
}
