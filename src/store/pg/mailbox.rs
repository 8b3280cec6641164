//! Mailboxes on PostgreSQL: the same behaviour as `store/mailbox.rs` on sled.

use super::super::mailbox::{normalize_name, MailboxMeta};
use super::super::{MessageMeta, Result, StoreError};
use super::Pg;

fn meta_of(r: &tokio_postgres::Row) -> MailboxMeta {
    let mut m = MailboxMeta::new(
        r.get::<_, i64>("id") as u64,
        r.get::<_, i64>("account_id") as u64,
        r.get::<_, &str>("name"),
        r.get::<_, Option<&str>>("special_use"),
    );
    m.uidvalidity = r.get::<_, i64>("uidvalidity") as u32;
    m.uidnext = r.get::<_, i64>("uidnext") as u32;
    m.messages = r.get::<_, i64>("messages") as u32;
    m.unseen = r.get::<_, i64>("unseen") as u32;
    m.highest_modseq = r.get::<_, i64>("highest_modseq") as u64;
    m.recent_mark = r.get::<_, i64>("recent_mark") as u32;
    m
}

pub(super) async fn insert_mailbox(
    tx: &impl deadpool_postgres::GenericClient,
    m: &MailboxMeta,
) -> Result<()> {
    tx.execute(
        "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext, special_use, \
         messages, unseen, highest_modseq, recent_mark) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        &[
            &(m.id as i64),
            &(m.account_id as i64),
            &m.name,
            &i64::from(m.uidvalidity),
            &i64::from(m.uidnext),
            &m.special_use,
            &i64::from(m.messages),
            &i64::from(m.unseen),
            &(m.highest_modseq as i64),
            &i64::from(m.recent_mark),
        ],
    )
    .await?;
    Ok(())
}

impl Pg {
    /// All mailboxes of an account, sorted by name (bytewise, as sled's keys).
    pub(crate) fn mailboxes(&self, account_id: u64) -> Result<Vec<MailboxMeta>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    "SELECT * FROM mailboxes WHERE account_id = $1 ORDER BY name COLLATE \"C\"",
                    &[&(account_id as i64)],
                )
                .await?;
            Ok(rows.iter().map(meta_of).collect())
        })
    }

    pub(crate) fn mailbox(&self, account_id: u64, name: &str) -> Result<Option<MailboxMeta>> {
        let name = normalize_name(name);
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    "SELECT * FROM mailboxes WHERE account_id = $1 AND name = $2",
                    &[&(account_id as i64), &name],
                )
                .await?;
            Ok(row.as_ref().map(meta_of))
        })
    }

    /// A mailbox's messages. Messages are not on PostgreSQL yet: an empty mailbox answers, any
    /// other refuses (docs/cluster.md).
    pub(crate) fn messages(&self, mailbox_id: u64) -> Result<Vec<MessageMeta>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_one(
                    "SELECT count(*) FROM messages WHERE mailbox_id = $1",
                    &[&(mailbox_id as i64)],
                )
                .await?;
            if row.get::<_, i64>(0) > 0 {
                return Err(StoreError::Invalid(
                    "messages are not yet on PostgreSQL (docs/cluster.md)".into(),
                ));
            }
            Ok(Vec::new())
        })
    }

    /// An account's subscribed names, sorted.
    pub(crate) fn subscriptions(&self, account_id: u64) -> Result<Vec<String>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    "SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name COLLATE \"C\"",
                    &[&(account_id as i64)],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}
