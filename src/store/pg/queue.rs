//! The outbound queue on PostgreSQL (docs/cluster.md, "Outbound queue: leases").
#![allow(dead_code)] // the rest of the queue comes next (docs/cluster.md)

use deadpool_postgres::GenericClient;

use super::super::queue::QueueRecord;
use super::super::{enc, Result};

/// Inserts a new queue row (its body, `rec.blob_id`, stored by the caller in the same
/// transaction), unclaimed.
pub(crate) async fn insert(tx: &impl GenericClient, rec: &QueueRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO queue (id, next_attempt, record, blob_id) VALUES ($1, $2, $3, $4)",
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
