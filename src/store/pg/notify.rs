//! Mailbox changes across nodes (docs/cluster.md, "Changes across nodes: LISTEN/NOTIFY").
#![allow(dead_code)] // the listener comes next (docs/cluster.md)

use deadpool_postgres::GenericClient;

use super::super::Result;

/// The channel every node LISTENs on.
pub(crate) const CHANNEL: &str = "tanba_change";

/// Announces a change of `mailbox_id` (of `account_id`) to every node, including this one:
/// called inside the changing transaction, so it is delivered only if, and after, it commits.
/// Payload: `<account_id>:<mailbox_id>` in decimal.
pub(crate) async fn changed(
    tx: &impl GenericClient,
    account_id: u64,
    mailbox_id: u64,
) -> Result<()> {
    tx.execute(
        "SELECT pg_notify($1, $2)",
        &[&CHANNEL, &format!("{account_id}:{mailbox_id}")],
    )
    .await?;
    Ok(())
}
