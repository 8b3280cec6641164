//! Mailboxes on PostgreSQL: the same behaviour as `store/mailbox.rs` on sled.

use super::super::mailbox::{
    infos_of, normalize_name, validate_name, MailboxInfo, MailboxMeta, DELIMITER, MAX_SUBSCRIPTIONS,
};
use super::super::{Result, StoreError};
use super::Pg;

pub(super) fn meta_of(r: &tokio_postgres::Row) -> MailboxMeta {
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
) -> std::result::Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext, special_use, \
         messages, unseen, highest_modseq, recent_mark, vanished_floor) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
                 CASE WHEN $9::bigint > 1 THEN $9::bigint ELSE 0 END)",
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
    pub(crate) fn mailbox_by_id(&self, id: u64) -> Result<Option<MailboxMeta>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached("SELECT * FROM mailboxes WHERE id = $1")
                        .await?,
                    &[&(id as i64)],
                )
                .await?;
            Ok(row.as_ref().map(meta_of))
        })
    }

    /// Mailboxes with their \HasChildren state (for LIST), sorted by name.
    pub(crate) fn mailbox_infos(&self, account_id: u64) -> Result<Vec<MailboxInfo>> {
        Ok(infos_of(self.mailboxes(account_id)?))
    }

    /// Creates a mailbox and any missing parents (RFC 3501 §6.3.3), in one transaction that
    /// holds the account row (`FOR SHARE`): a deleted account gets nothing (sled's
    /// `account_alive`).
    pub(crate) fn create_mailbox(
        &self,
        account_id: u64,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxMeta> {
        let name = normalize_name(name);
        validate_name(&name)?;
        let special = special_use.map(String::from);
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            account_alive(&tx, account_id).await?;
            let exists = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2",
                    )
                    .await?,
                    &[&(account_id as i64), &name],
                )
                .await?;
            if exists.is_some() {
                return Err(StoreError::Exists(format!("mailbox {name}")));
            }
            let parts: Vec<&str> = name.split(DELIMITER).collect();
            for i in 1..parts.len() {
                let parent = parts[..i].join("/");
                create_if_missing(&tx, account_id, &parent).await?;
            }
            let meta = MailboxMeta::new(
                Pg::next_id(&tx).await?,
                account_id,
                &name,
                special.as_deref(),
            );
            insert_mailbox(&tx, &meta).await.map_err(|e| {
                if super::is_unique_violation(&e) {
                    StoreError::Exists(format!("mailbox {name}"))
                } else {
                    e.into()
                }
            })?;
            tx.commit().await?;
            Ok(meta)
        })
    }

    /// Deletes a mailbox and its messages (bodies released, usage lowered), in one
    /// transaction holding its row. INBOX cannot be deleted;
    /// a mailbox with children is refused; subscriptions stay (RFC 3501 §6.3.6; `mailbox.rs`).
    pub(crate) fn delete_mailbox(&self, account_id: u64, name: &str) -> Result<()> {
        let name = normalize_name(name);
        if name == "INBOX" {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let row = tx
                .query_opt(
                    "SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2 \
                     FOR UPDATE",
                    &[&(account_id as i64), &name],
                )
                .await?;
            let Some(row) = row else {
                return Err(StoreError::NotFound(format!("mailbox {name}")));
            };
            let prefix = format!("{name}/");
            let children = tx
                .query_opt(
                    "SELECT 1 FROM mailboxes WHERE account_id = $1 \
                     AND left(name, char_length($2)) = $2 LIMIT 1",
                    &[&(account_id as i64), &prefix],
                )
                .await?;
            if children.is_some() {
                return Err(StoreError::Invalid(format!(
                    "mailbox {name} has children; delete them first"
                )));
            }
            let id = row.get::<_, i64>(0);
            // Bodies released, usage lowered, QRESYNC log dropped (`message.rs`).
            super::message::purge_mailboxes(&tx, &[id]).await?;
            super::notify::changed(&tx, account_id, id as u64).await?;
            tx.execute(
                &tx.prepare_cached("DELETE FROM mailboxes WHERE id = $1")
                    .await?,
                &[&id],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Renames a mailbox and its children, with their subscriptions, in one transaction.
    /// Renaming INBOX moves its messages to a new mailbox (RFC 3501 §6.3.5), as on sled: the
    /// mailbox in one transaction, then the messages in one MOVE.
    pub(crate) fn rename_mailbox(&self, account_id: u64, from: &str, to: &str) -> Result<()> {
        let from = normalize_name(from);
        let to = normalize_name(to);
        validate_name(&to)?;
        // Renaming INBOX: the new mailbox is made below; its messages then move (`moved`).
        let moved = self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let acc = account_id as i64;
            // The rows renamed (the mailbox and those under it), by ascending id, before the
            // account row: the lock order of `delete_account` and of every message write.
            let locked = tx
                .query(
                    "SELECT messages, id, name FROM mailboxes WHERE account_id = $1 \
                     AND (name = $2 OR left(name, char_length($3)) = $3) ORDER BY id FOR UPDATE",
                    &[&acc, &from, &format!("{from}/")],
                )
                .await?;
            let Some(src) = locked.iter().find(|r| r.get::<_, &str>(2) == from) else {
                return Err(StoreError::NotFound(format!("mailbox {from}")));
            };
            account_alive(&tx, account_id).await?;
            let taken = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT 1 FROM mailboxes WHERE account_id = $1 AND name = $2",
                    )
                    .await?,
                    &[&acc, &to],
                )
                .await?;
            if taken.is_some() {
                return Err(StoreError::Exists(format!("mailbox {to}")));
            }
            // After the two checks above, as on sled (the client sees which comes first).
            if to.starts_with(&format!("{from}/")) {
                return Err(StoreError::Invalid(
                    "cannot move a mailbox into itself".into(),
                ));
            }
            let parts: Vec<&str> = to.split(DELIMITER).collect();
            for i in 1..parts.len() {
                create_if_missing(&tx, account_id, &parts[..i].join("/")).await?;
            }
            if from == "INBOX" {
                create_if_missing(&tx, account_id, &to).await?;
                let dst: i64 = tx
                    .query_one(
                        &tx.prepare_cached(
                            "SELECT id FROM mailboxes WHERE account_id = $1 AND name = $2",
                        )
                        .await?,
                        &[&acc, &to],
                    )
                    .await?
                    .get(0);
                tx.commit().await?;
                let src_id: i64 = src.get(1);
                return Ok((src.get::<_, i64>(0) > 0).then_some((src_id as u64, dst as u64)));
            }
            let prefix = format!("{from}/");
            // Subscriptions of the name and of every name under it move along (`mailbox.rs`);
            // a subscription already held under a new name stays one.
            let subs: Vec<String> = tx
                .query(
                    "DELETE FROM subscriptions WHERE account_id = $1 \
                     AND (name = $2 OR left(name, char_length($3)) = $3) RETURNING name",
                    &[&acc, &from, &prefix],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            for n in &subs {
                let new_name = format!("{to}{}", &n[from.len()..]);
                tx.execute(
                    "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    &[&acc, &new_name],
                )
                .await?;
            }
            // New names all start with `to`, which neither exists nor lies under `from`: no
            // two renamed rows collide; a collision with another mailbox is Exists.
            tx.execute(
                "UPDATE mailboxes SET name = $4 || substr(name, char_length($2) + 1) \
                 WHERE account_id = $1 AND (name = $2 OR left(name, char_length($3)) = $3)",
                &[&acc, &from, &prefix, &to],
            )
            .await
            .map_err(|e| {
                if super::is_unique_violation(&e) {
                    StoreError::Exists(format!("mailbox {to}"))
                } else {
                    e.into()
                }
            })?;
            tx.commit().await?;
            Ok(None)
        })?;
        // As on sled: INBOX's messages move to the new mailbox (RFC 3501 §6.3.5), one MOVE.
        if let Some((src, dst)) = moved {
            let uids: Vec<u32> = self.messages(src)?.iter().map(|m| m.uid).collect();
            self.copy_or_move(src, &uids, dst, true)?;
        }
        Ok(())
    }

    /// Adds `name` to the account's subscriptions (SUBSCRIBE); the name need not exist; at
    /// most [`MAX_SUBSCRIPTIONS`].
    pub(crate) fn add_subscription(&self, account_id: u64, name: &str) -> Result<()> {
        let name = normalize_name(name);
        validate_name(&name)?;
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            // The account row, exclusively: two SUBSCRIBEs at once (on any nodes) take turns
            // from the count to the insert, so neither can pass the limit on the other's count.
            lock_account(
                &tx,
                account_id,
                "SELECT 1 FROM accounts WHERE id = $1 FOR NO KEY UPDATE",
            )
            .await?;
            let acc = account_id as i64;
            let have = tx
                .query_opt(
                    &tx.prepare_cached(
                        "SELECT 1 FROM subscriptions WHERE account_id = $1 AND name = $2",
                    )
                    .await?,
                    &[&acc, &name],
                )
                .await?;
            if have.is_some() {
                return Ok(());
            }
            let n: i64 = tx
                .query_one(
                    &tx.prepare_cached("SELECT count(*) FROM subscriptions WHERE account_id = $1")
                        .await?,
                    &[&acc],
                )
                .await?
                .get(0);
            if n as usize >= MAX_SUBSCRIPTIONS {
                return Err(StoreError::Invalid(format!(
                    "Too many subscriptions (at most {MAX_SUBSCRIPTIONS})"
                )));
            }
            tx.execute(
                "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&acc, &name],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Removes `name` from the account's subscriptions (UNSUBSCRIBE); not subscribed is fine.
    pub(crate) fn remove_subscription(&self, account_id: u64, name: &str) -> Result<()> {
        let name = normalize_name(name);
        self.run(|pg| async move {
            let c = pg.conn().await?;
            c.execute(
                &c.prepare_cached("DELETE FROM subscriptions WHERE account_id = $1 AND name = $2")
                    .await?,
                &[&(account_id as i64), &name],
            )
            .await?;
            Ok(())
        })
    }

    /// All mailboxes of an account, sorted by name (bytewise, as sled's keys).
    pub(crate) fn mailboxes(&self, account_id: u64) -> Result<Vec<MailboxMeta>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    &c.prepare_cached(
                        "SELECT * FROM mailboxes WHERE account_id = $1 ORDER BY name COLLATE \"C\"",
                    )
                    .await?,
                    &[&(account_id as i64)],
                )
                .await?;
            Ok(rows.iter().map(meta_of).collect())
        })
    }

    pub(crate) fn mailbox(&self, account_id: u64, name: &str) -> Result<Option<MailboxMeta>> {
        let name = normalize_name(name);
        if !super::account::storable(&name) {
            return Ok(None);
        }
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached(
                        "SELECT * FROM mailboxes WHERE account_id = $1 AND name = $2",
                    )
                    .await?,
                    &[&(account_id as i64), &name],
                )
                .await?;
            Ok(row.as_ref().map(meta_of))
        })
    }

    /// An account's subscribed names, sorted.
    pub(crate) fn subscriptions(&self, account_id: u64) -> Result<Vec<String>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    &c.prepare_cached("SELECT name FROM subscriptions WHERE account_id = $1 ORDER BY name COLLATE \"C\"").await?,
                    &[&(account_id as i64)],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}

/// Inside a transaction that creates or renames mailboxes: fails unless the
/// account exists, and holds its row (`FOR SHARE`) so that a concurrent `delete_account` waits
/// for the commit (and then removes what was made, ON DELETE CASCADE).
async fn account_alive(tx: &impl deadpool_postgres::GenericClient, account_id: u64) -> Result<()> {
    lock_account(
        tx,
        account_id,
        "SELECT 1 FROM accounts WHERE id = $1 FOR SHARE",
    )
    .await
}

/// Locks account `account_id`'s row with `select` (a constant `SELECT … FOR <strength>` of it);
/// a missing account is [`StoreError::NotFound`].
async fn lock_account(
    tx: &impl deadpool_postgres::GenericClient,
    account_id: u64,
    select: &'static str,
) -> Result<()> {
    let row = tx
        .query_opt(&tx.prepare_cached(select).await?, &[&(account_id as i64)])
        .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound("account".into())),
    }
}

/// Creates mailbox `name` (no special use) unless it exists.
async fn create_if_missing(
    tx: &impl deadpool_postgres::GenericClient,
    account_id: u64,
    name: &str,
) -> Result<()> {
    let id = Pg::next_id(tx).await?;
    let m = MailboxMeta::new(id, account_id, name, None);
    tx.execute(
        "INSERT INTO mailboxes (id, account_id, name, uidvalidity, uidnext) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, name) DO NOTHING",
        &[
            &(m.id as i64),
            &(m.account_id as i64),
            &m.name,
            &i64::from(m.uidvalidity),
            &i64::from(m.uidnext),
        ],
    )
    .await?;
    Ok(())
}
