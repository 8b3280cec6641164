//! The schema and its migrations (docs/cluster.md, "Schema"). Each entry of [`MIGRATIONS`] runs
//! once, in its own transaction with its `schema_version` row, under an advisory lock so that
//! nodes starting together migrate once. Append only: never edit a released entry.

use tokio_postgres::Client;

use super::super::{Result, StoreError};

/// Key of the advisory lock held while migrating ("tanba" in ASCII).
const MIGRATION_LOCK: i64 = 0x74_61_6e_62_61;

/// `MIGRATIONS[i]` brings the schema to version `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: accounts, mailboxes, subscriptions, bodies, messages, quota, aliases, queue, greylist.
    r#"
CREATE SEQUENCE ids START 1;
CREATE TABLE accounts (
    id bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    password_hash text NOT NULL,
    created bigint NOT NULL,
    aliases text[] NOT NULL DEFAULT '{}'
);
CREATE INDEX accounts_aliases ON accounts USING gin (aliases);
CREATE TABLE mailboxes (
    id bigint PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name text NOT NULL,
    uidvalidity bigint NOT NULL,
    uidnext bigint NOT NULL,
    special_use text,
    messages bigint NOT NULL DEFAULT 0,
    unseen bigint NOT NULL DEFAULT 0,
    highest_modseq bigint NOT NULL DEFAULT 1,
    recent_mark bigint NOT NULL DEFAULT 0,
    vanished_floor bigint NOT NULL DEFAULT 0,
    vanished_count bigint NOT NULL DEFAULT 0,
    UNIQUE (account_id, name)
);
CREATE TABLE subscriptions (
    account_id bigint NOT NULL REFERENCES accounts ON DELETE CASCADE,
    name text NOT NULL,
    PRIMARY KEY (account_id, name)
);
CREATE TABLE blobs (id bigint PRIMARY KEY, size bigint NOT NULL, refcount integer NOT NULL);
CREATE TABLE blob_chunks (
    blob_id bigint NOT NULL REFERENCES blobs ON DELETE CASCADE,
    n integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (blob_id, n)
);
CREATE TABLE blob_cache (blob_id bigint PRIMARY KEY REFERENCES blobs ON DELETE CASCADE, data bytea NOT NULL);
CREATE TABLE messages (
    mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
    uid bigint NOT NULL,
    blob_id bigint NOT NULL REFERENCES blobs,
    size bigint NOT NULL,
    internal_date bigint NOT NULL,
    flags text[] NOT NULL DEFAULT '{}',
    modseq bigint NOT NULL,
    meta bytea,
    PRIMARY KEY (mailbox_id, uid)
);
CREATE INDEX messages_modseq ON messages (mailbox_id, modseq);
CREATE TABLE vanished (
    mailbox_id bigint NOT NULL,
    modseq bigint NOT NULL,
    uid bigint NOT NULL,
    PRIMARY KEY (mailbox_id, modseq, uid)
);
CREATE TABLE quota (
    account_id bigint PRIMARY KEY REFERENCES accounts ON DELETE CASCADE,
    limit_kib bigint,
    used_bytes bigint NOT NULL DEFAULT 0,
    used_messages bigint NOT NULL DEFAULT 0
);
CREATE TABLE aliases (address text PRIMARY KEY, record bytea NOT NULL);
CREATE TABLE queue (
    id bigint PRIMARY KEY,
    next_attempt bigint NOT NULL,
    record bytea NOT NULL,
    blob_id bigint REFERENCES blobs,
    lease_owner text,
    lease_until bigint
);
CREATE INDEX queue_due ON queue (next_attempt, id);
CREATE INDEX queue_lease ON queue (lease_owner);
CREATE TABLE greylist (
    triplet bytea PRIMARY KEY,
    first_seen bigint NOT NULL,
    passed boolean NOT NULL,
    expires bigint NOT NULL
);
CREATE INDEX greylist_expires ON greylist (expires);
CREATE INDEX greylist_evict ON greylist (passed, expires);
"#,
    // 2: the foreign keys naming a body, indexed: removing a body (its last reference gone)
    // checks them, which without an index scanned every message and queue row per body.
    r#"
CREATE INDEX messages_blob ON messages (blob_id);
CREATE INDEX queue_blob ON queue (blob_id);
"#,
];

/// The newest schema version this binary knows.
pub(crate) const VERSION: i32 = MIGRATIONS.len() as i32;

/// The recorded version (0: no schema yet).
pub(crate) async fn current(c: &Client) -> Result<i32> {
    let row = c
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?;
    Ok(row.get(0))
}

/// Creates the schema or brings it to [`VERSION`]; refuses a newer one.
pub(crate) async fn migrate(c: &mut deadpool_postgres::ClientWrapper) -> Result<()> {
    // The version table itself. Two first starts at once may both try to create it: the
    // loser gets duplicate_table (42P07) or a unique violation on the catalog; it exists then.
    let exists: bool = c
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        if let Err(e) = c
            .batch_execute(
                "CREATE TABLE schema_version (version integer PRIMARY KEY, applied bigint NOT NULL)",
            )
            .await
        {
            let raced = super::is_unique_violation(&e)
                || e.code() == Some(&tokio_postgres::error::SqlState::DUPLICATE_TABLE);
            if !raced {
                return Err(e.into());
            }
        }
    }
    loop {
        let tx = c.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let have: i32 = tx
            .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
            .await?
            .get(0);
        if have > VERSION {
            return Err(StoreError::Db(format!(
                "the database's schema is version {have}, newer than this tanba knows ({VERSION}): \
                 upgrade tanba"
            )));
        }
        if have == VERSION {
            tx.commit().await?;
            return Ok(());
        }
        tx.batch_execute(MIGRATIONS[have as usize]).await?;
        tx.execute(
            "INSERT INTO schema_version (version, applied) VALUES ($1, $2)",
            &[&(have + 1), &super::super::now_unix()],
        )
        .await?;
        tx.commit().await?;
        tracing::info!("database schema migrated to version {}", have + 1);
    }
}
