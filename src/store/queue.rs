//! The outbound queue: one record per accepted message that has remote recipients, with the
//! state of each recipient. The message bytes live in `blobs` (one reference held by the record),
//! written in the same transaction as any local copies (see [`Store::deliver`]).

use serde::{Deserialize, Serialize};

use super::{dec, enc, now_unix, u64_key, Result, Store, StoreError};

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RcptState {
    /// Not delivered yet; will be tried at `next_attempt`.
    Pending,
    /// Accepted by the remote server.
    Delivered,
    /// Refused permanently or expired; a bounce covers it.
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RcptStatus {
    pub addr: String,
    pub state: RcptState,
    pub attempts: u32,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueRecord {
    pub id: u64,
    /// Envelope sender; empty for the null sender (bounces), which never gets a bounce.
    pub sender: String,
    pub recipients: Vec<RcptStatus>,
    /// Set by [`Store::deliver`].
    pub blob_id: u64,
    pub size: u64,
    /// Unix seconds.
    pub created: i64,
    pub next_attempt: i64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

impl Store {
    /// A new queue record for `recipients`, due now. Store it with [`Store::deliver`].
    pub fn new_queue_record(&self, sender: &str, recipients: &[String]) -> Result<QueueRecord> {
        let now = now_unix();
        Ok(QueueRecord {
            id: self.next_id()?,
            sender: sender.to_string(),
            recipients: recipients
                .iter()
                .map(|a| RcptStatus {
                    addr: a.clone(),
                    state: RcptState::Pending,
                    attempts: 0,
                    last_error: None,
                })
                .collect(),
            blob_id: 0,
            size: 0,
            created: now,
            next_attempt: now,
            attempts: 0,
            last_error: None,
        })
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

    /// Replaces a record (after an attempt). Fails if it was removed meanwhile.
    pub fn queue_update(&self, rec: &QueueRecord) -> Result<()> {
        let key = u64_key(rec.id);
        let new = enc(rec);
        self.t.queue.transaction(|q| {
            if q.get(key)?.is_none() {
                return Err(StoreError::NotFound(format!("queue entry {}", rec.id)).into());
            }
            q.insert(&key, new.clone())?;
            Ok(())
        })?;
        Ok(())
    }

    /// Removes a record and releases its message bytes.
    pub fn queue_remove(&self, id: u64) -> Result<QueueRecord> {
        let Some(v) = self.t.queue.remove(u64_key(id))? else {
            return Err(StoreError::NotFound(format!("queue entry {id}")));
        };
        let rec: QueueRecord = dec(&v)?;
        self.release_blob(rec.blob_id)?;
        Ok(rec)
    }
}
