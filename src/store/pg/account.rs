//! Accounts on PostgreSQL: the same behaviour as `store/account.rs` on sled.

use super::super::account::{normalize_email, Account};
use super::super::mailbox::{MailboxMeta, DEFAULT_MAILBOXES};
use super::super::quota::Quota;
use super::super::{now_unix, Result, StoreError};
use super::{is_unique_violation, Pg};

fn quota_of(r: &tokio_postgres::Row) -> Quota {
    Quota {
        limit_kib: r.get::<_, Option<i64>>(0).map(|l| l as u64),
        bytes: r.get::<_, i64>(1) as u64,
        messages: r.get::<_, i64>(2) as u64,
    }
}

/// Whether `s` can name a row: PostgreSQL's text never holds NUL (it refuses such a parameter
/// with an error), so a name or address with one (e.g. SMTP AUTH LOGIN's base64 user name) is
/// simply not found, as on sled, instead of a store error.
pub(super) fn storable(s: &str) -> bool {
    !s.contains('\0')
}

fn account_of(r: &tokio_postgres::Row) -> Account {
    Account {
        id: r.get::<_, i64>("id") as u64,
        email: r.get("email"),
        password_hash: r.get("password_hash"),
        created: r.get("created"),
        aliases: r.get("aliases"),
    }
}

impl Pg {
    /// Creates an account with its default mailboxes, subscribed, in one transaction.
    pub(crate) fn create_account(&self, email: &str, password_hash: &str) -> Result<Account> {
        let email = normalize_email(email)?;
        let hash = password_hash.to_string();
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let id = Pg::next_id(&tx).await?;
            let account = Account {
                id,
                email: email.clone(),
                password_hash: hash,
                created: now_unix(),
                aliases: Vec::new(),
            };
            let mut boxes = Vec::new();
            for (name, special) in DEFAULT_MAILBOXES {
                boxes.push(MailboxMeta::new(
                    Pg::next_id(&tx).await?,
                    id,
                    name,
                    *special,
                ));
            }
            insert_account(&tx, &account).await.map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists(format!("account {email}"))
                } else {
                    e.into()
                }
            })?;
            for m in &boxes {
                super::mailbox::insert_mailbox(&tx, m).await?;
                tx.execute(
                    &tx.prepare_cached(
                        "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2)",
                    )
                    .await?,
                    &[&(id as i64), &m.name],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(account)
        })
    }

    pub(crate) fn account(&self, email: &str) -> Result<Option<Account>> {
        let email = email.trim().to_ascii_lowercase();
        if !storable(&email) {
            return Ok(None);
        }
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached("SELECT * FROM accounts WHERE email = $1")
                        .await?,
                    &[&email],
                )
                .await?;
            Ok(row.as_ref().map(account_of))
        })
    }

    /// The account that receives mail for `addr` (its primary address or an alias).
    pub(crate) fn account_for_address(&self, addr: &str) -> Result<Option<Account>> {
        let addr = addr.trim().to_ascii_lowercase();
        if !storable(&addr) {
            return Ok(None);
        }
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    "SELECT * FROM accounts WHERE email = $1 OR $1 = ANY(aliases) \
                     ORDER BY email = $1 DESC, email COLLATE \"C\" LIMIT 1",
                    &[&addr],
                )
                .await?;
            Ok(row.as_ref().map(account_of))
        })
    }

    /// An account's storage limit and usage (`quota.rs`); no row: no limit, nothing used.
    pub(crate) fn quota(&self, account_id: u64) -> Result<Quota> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let row = c
                .query_opt(
                    &c.prepare_cached("SELECT limit_kib, used_bytes, used_messages FROM quota WHERE account_id = $1").await?,
                    &[&(account_id as i64)],
                )
                .await?;
            Ok(row.map(|r| quota_of(&r)).unwrap_or_default())
        })
    }

    /// `tanba user quota`: sets (or with `None` removes) an account's STORAGE limit in KiB.
    pub(crate) fn set_quota_limit(&self, email: &str, limit_kib: Option<u64>) -> Result<Quota> {
        let email = email.trim().to_ascii_lowercase();
        if !storable(&email) {
            return Err(StoreError::NotFound(format!("account {email}")));
        }
        let limit = limit_kib.map(|l| l.min(i64::MAX as u64) as i64);
        self.run(|pg| async move {
            let c = pg.conn().await?;
            // One statement: the row is written only while the account exists.
            let row = c
                .query_opt(
                    "INSERT INTO quota (account_id, limit_kib) \
                     SELECT id, $2 FROM accounts WHERE email = $1 \
                     ON CONFLICT (account_id) DO UPDATE SET limit_kib = excluded.limit_kib \
                     RETURNING limit_kib, used_bytes, used_messages",
                    &[&email, &limit],
                )
                .await?;
            row.map(|r| quota_of(&r))
                .ok_or_else(|| StoreError::NotFound(format!("account {email}")))
        })
    }

    /// All accounts, by email (sled's key order).
    pub(crate) fn accounts(&self) -> Result<Vec<Account>> {
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let rows = c
                .query(
                    &c.prepare_cached("SELECT * FROM accounts ORDER BY email COLLATE \"C\"")
                        .await?,
                    &[],
                )
                .await?;
            Ok(rows.iter().map(account_of).collect())
        })
    }

    pub(crate) fn set_password(&self, email: &str, password_hash: &str) -> Result<()> {
        let email = email.trim().to_ascii_lowercase();
        if !storable(&email) {
            return Err(StoreError::NotFound(format!("account {email}")));
        }
        let hash = password_hash.to_string();
        self.run(|pg| async move {
            let c = pg.conn().await?;
            let n = c
                .execute(
                    &c.prepare_cached("UPDATE accounts SET password_hash = $2 WHERE email = $1")
                        .await?,
                    &[&email, &hash],
                )
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("account {email}")));
            }
            Ok(())
        })
    }

    /// Removes an account and everything it owns, in one transaction: its mailbox rows locked
    /// by ascending id and its row `FOR UPDATE` (no mailbox can be created for it any more),
    /// their messages' bodies released and QRESYNC logs dropped (`message.rs`), then the rest
    /// by ON DELETE CASCADE.
    pub(crate) fn delete_account(&self, email: &str) -> Result<Account> {
        let email = email.trim().to_ascii_lowercase();
        if !storable(&email) {
            return Err(StoreError::NotFound(format!("account {email}")));
        }
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            let Some(row) = tx
                .query_opt(
                    &tx.prepare_cached("SELECT id FROM accounts WHERE email = $1")
                        .await?,
                    &[&email],
                )
                .await?
            else {
                return Err(StoreError::NotFound(format!("account {email}")));
            };
            let id: i64 = row.get(0);
            // Mailbox rows first (the lock order of every message write), then the account row
            // (no mailbox can be created for it from then on), then the mailboxes again: one
            // created meanwhile is locked too.
            let lock_boxes =
                "SELECT id FROM mailboxes WHERE account_id = $1 ORDER BY id FOR UPDATE";
            tx.query(lock_boxes, &[&id]).await?;
            if tx
                .query_opt(
                    &tx.prepare_cached("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
                        .await?,
                    &[&id],
                )
                .await?
                .is_none()
            {
                return Err(StoreError::NotFound(format!("account {email}")));
            }
            let boxes: Vec<i64> = tx
                .query(lock_boxes, &[&id])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            super::message::purge_mailboxes(&tx, &boxes).await?;
            for b in &boxes {
                super::notify::changed(&tx, id as u64, *b as u64).await?;
            }
            let row = tx
                .query_one(
                    &tx.prepare_cached("DELETE FROM accounts WHERE id = $1 RETURNING *")
                        .await?,
                    &[&id],
                )
                .await?;
            tx.commit().await?;
            Ok(account_of(&row))
        })
    }

    /// Copies an account with its mailboxes and subscriptions, ids kept (`tanba store migrate`),
    /// in one transaction; the `ids` sequence is moved past every id copied.
    pub(crate) fn import_account(
        &self,
        account: &Account,
        boxes: &[MailboxMeta],
        subscriptions: &[String],
    ) -> Result<()> {
        let (account, boxes, subs) = (account.clone(), boxes.to_vec(), subscriptions.to_vec());
        self.run(|pg| async move {
            let mut c = pg.conn().await?;
            let tx = c.transaction().await?;
            insert_account(&tx, &account).await.map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::Exists(format!("account {} in the database", account.email))
                } else {
                    e.into()
                }
            })?;
            let mut top = account.id;
            for m in &boxes {
                super::mailbox::insert_mailbox(&tx, m).await?;
                top = top.max(m.id);
            }
            for s in &subs {
                tx.execute(
                    &tx.prepare_cached(
                        "INSERT INTO subscriptions (account_id, name) VALUES ($1, $2)",
                    )
                    .await?,
                    &[&(account.id as i64), s],
                )
                .await?;
            }
            tx.execute(
                &tx.prepare_cached(
                    "SELECT setval('ids', greatest($1, (SELECT last_value FROM ids)))",
                )
                .await?,
                &[&(top as i64)],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }
}

async fn insert_account(
    tx: &impl deadpool_postgres::GenericClient,
    a: &Account,
) -> std::result::Result<u64, tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO accounts (id, email, password_hash, created, aliases) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &(a.id as i64),
            &a.email,
            &a.password_hash,
            &a.created,
            &a.aliases,
        ],
    )
    .await
}
