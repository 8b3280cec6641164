//! Quota (RFC 9208): a storage limit per account and its exact usage.
//!
//! Tree `quota`: account_id u64 → [`Quota`] (JSON): the limit the operator set with `tanba user
//! quota` (KiB, RFC 9208's unit for STORAGE; none: unlimited) and the usage, the sum of the sizes
//! of the account's messages (each copy counted, as IMAP clients see them) and their number.
//!
//! Usage is kept in the same transaction as every change of the account's messages (deliver,
//! APPEND, COPY/MOVE, EXPUNGE, DELETE of a mailbox or the account, bounces) through [`charge`],
//! so it is exact at every commit. A store written before this tree existed (no
//! `quota_counted` key in `meta`) is counted once at open ([`Sled::recount_quotas`]); a
//! restore counts again. `tanba store check` compares it with a count.
//!
//! Enforcement: [`charge`] with `enforce` refuses an increase that would take the usage above
//! the limit with [`StoreError::OverQuota`]; the whole transaction (all recipients, all messages
//! of a MULTIAPPEND) is then aborted.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sled::transaction::TransactionalTree;
use sled::Transactional;

use super::message::TxResult;
use super::{dec, enc, read_u64, u64_key, Result, Sled, StoreError};

/// Key in the `meta` tree: present once usage has been counted for this store.
const COUNTED_KEY: &[u8] = b"quota_counted";

/// One account's limit and usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Quota {
    /// STORAGE limit in KiB (1024 octets); `None`: unlimited.
    #[serde(default)]
    pub limit_kib: Option<u64>,
    /// Sum of the sizes of the account's messages, in bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Number of the account's messages.
    #[serde(default)]
    pub messages: u64,
}

impl Quota {
    /// Usage in KiB, rounded up (RFC 9208 §5.1: units of 1024 octets).
    pub fn used_kib(&self) -> u64 {
        self.bytes.div_ceil(1024)
    }

    /// Whether the account is at or above its limit (nothing more fits).
    pub fn full(&self) -> bool {
        self.limit_kib
            .is_some_and(|l| self.bytes >= l.saturating_mul(1024))
    }

    /// Whether `more` bytes would take the usage above the limit.
    pub fn would_exceed(&self, more: u64) -> bool {
        self.limit_kib
            .is_some_and(|l| self.bytes.saturating_add(more) > l.saturating_mul(1024))
    }
}

/// A quota size as an operator writes it (`tanba user quota`, `limits.default_quota`): `none`
/// (unlimited), bytes, or a number with a unit K, M, G or T (powers of 1024; `KB`, `KiB`, ...
/// also accepted). Returns KiB, rounded up (RFC 9208's unit).
pub fn parse_limit(s: &str) -> std::result::Result<Option<u64>, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let bad = || format!("quota {s:?}: use a size like 500M, 2G or 1048576 (bytes), or none");
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim().to_ascii_uppercase();
    let mult: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let bytes = n
        .checked_mul(mult)
        .ok_or_else(|| format!("quota {s:?} is too large"))?;
    Ok(Some(bytes.div_ceil(1024)))
}

/// Changes an account's usage inside a transaction by `bytes` and `messages` (negative:
/// removal). With `enforce`, an increase that would take the usage above the limit aborts the
/// transaction with [`StoreError::OverQuota`]. A removal never creates a record (an account
/// being deleted gets none back).
pub(super) fn charge(
    qt: &TransactionalTree,
    account_id: u64,
    bytes: i64,
    messages: i64,
    enforce: bool,
) -> TxResult<()> {
    if bytes == 0 && messages == 0 {
        return Ok(());
    }
    let key = u64_key(account_id);
    let mut q: Quota = match qt.get(key)? {
        Some(v) => dec(&v)?,
        None if bytes <= 0 && messages <= 0 => return Ok(()),
        None => Quota::default(),
    };
    if enforce && bytes > 0 && q.would_exceed(bytes as u64) {
        return Err(StoreError::OverQuota(format!(
            "quota exceeded: {} KiB used of {} KiB",
            q.used_kib(),
            q.limit_kib.unwrap_or(0)
        ))
        .into());
    }
    q.bytes = q.bytes.saturating_add_signed(bytes);
    q.messages = q.messages.saturating_add_signed(messages);
    qt.insert(&key, enc(&q))?;
    Ok(())
}

impl Sled {
    /// An account's limit and usage (zero usage, no limit when it has no record yet).
    pub fn quota(&self, account_id: u64) -> Result<Quota> {
        Ok(match self.t.quota.get(u64_key(account_id))? {
            Some(v) => dec(&v)?,
            None => Quota::default(),
        })
    }

    /// `tanba user quota`: sets (or with `None` removes) an account's STORAGE limit in KiB.
    /// Mail already stored stays; only what would go above the limit is refused.
    pub fn set_quota_limit(&self, email: &str, limit_kib: Option<u64>) -> Result<Quota> {
        let Some(account) = self.account(email)? else {
            return Err(StoreError::NotFound(format!(
                "account {}",
                email.trim().to_ascii_lowercase()
            )));
        };
        let key = account.email.clone();
        let t = &self.t;
        let w = self.write_gate();
        let q = (&t.accounts, &t.quota).transaction(|(acc, qt)| {
            // Same transaction as the account's existence: never a record for a deleted one.
            if acc.get(key.as_bytes())?.is_none() {
                return Err(StoreError::NotFound(format!("account {key}")).into());
            }
            let k = u64_key(account.id);
            let mut q: Quota = match qt.get(k)? {
                Some(v) => dec(&v)?,
                None => Quota::default(),
            };
            q.limit_kib = limit_kib;
            qt.insert(&k, enc(&q))?;
            Ok(q)
        })?;
        drop(w);
        Ok(q)
    }

    /// Removes an account's record (the last step of deleting the account).
    pub(super) fn drop_quota(&self, account_id: u64) -> Result<()> {
        let _w = self.write_gate();
        self.t.quota.remove(u64_key(account_id))?;
        Ok(())
    }

    /// Usage as a count of the messages would give it, per account (limits not included).
    pub(super) fn count_usage(&self) -> Result<HashMap<u64, (u64, u64)>> {
        let mut owner: HashMap<u64, u64> = HashMap::new();
        for v in self.t.mailboxes.iter().values() {
            let m: super::MailboxMeta = dec(&v?)?;
            owner.insert(m.id, m.account_id);
        }
        let mut usage: HashMap<u64, (u64, u64)> = HashMap::new();
        for kv in self.t.messages.iter() {
            let (k, v) = kv?;
            let Some(mailbox_id) = k.get(..8).map(read_u64).transpose()? else {
                continue;
            };
            let Some(&account_id) = owner.get(&mailbox_id) else {
                continue;
            };
            let m: super::MessageMeta = dec(&v)?;
            let u = usage.entry(account_id).or_default();
            u.0 += m.size;
            u.1 += 1;
        }
        Ok(usage)
    }

    /// Counts every account's usage from its messages and writes it (limits kept), with writers
    /// paused. Returns the number of accounts counted.
    pub(crate) fn recount_quotas(&self) -> Result<usize> {
        let _paused = self.pause_writers();
        let usage = self.count_usage()?;
        let mut n = 0;
        for v in self.t.accounts.iter().values() {
            let a: super::Account = dec(&v?)?;
            let k = u64_key(a.id);
            let mut q: Quota = match self.t.quota.get(k)? {
                Some(v) => dec(&v)?,
                None => Quota::default(),
            };
            let (bytes, messages) = usage.get(&a.id).copied().unwrap_or_default();
            q.bytes = bytes;
            q.messages = messages;
            self.t.quota.insert(k, enc(&q))?;
            n += 1;
        }
        self.db
            .open_tree(super::format::META_TREE)?
            .insert(COUNTED_KEY, &[1u8])?;
        Ok(n)
    }

    /// At open: counts usage once for a store that predates the `quota` tree.
    pub(super) fn count_quotas_once(&self) -> Result<()> {
        let meta = self.db.open_tree(super::format::META_TREE)?;
        if meta.contains_key(COUNTED_KEY)? {
            return Ok(());
        }
        let n = self.recount_quotas()?;
        if n > 0 {
            tracing::info!("counted the storage usage of {n} accounts (quota)");
        }
        self.flush_sync()
    }
}

#[cfg(test)]
mod tests {
    use crate::store::temp_sled;

    #[test]
    fn usage_follows_append_copy_move_expunge_and_delete() {
        let (_d, s) = temp_sled();
        let a = s.create_account("q@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        let other = s.create_mailbox(a.id, "Other", None).unwrap();
        let m1 = s.append(inbox.id, &[b'a'; 1000], &[], 0).unwrap();
        s.append(inbox.id, &[b'b'; 3000], &[], 0).unwrap();
        assert_eq!(
            (
                s.quota(a.id).unwrap().bytes,
                s.quota(a.id).unwrap().messages
            ),
            (4000, 2)
        );
        s.copy_messages(inbox.id, &[m1.uid], other.id).unwrap();
        assert_eq!(s.quota(a.id).unwrap().bytes, 5000);
        s.move_messages(inbox.id, &[m1.uid], other.id).unwrap();
        assert_eq!(s.quota(a.id).unwrap().bytes, 5000);
        s.expunge(inbox.id, &[2]).unwrap();
        assert_eq!(s.quota(a.id).unwrap().bytes, 2000);
        // A limit: 2000 bytes used of 3 KiB; 1100 bytes more do not fit, 1072 just do.
        s.set_quota_limit("q@x.test", Some(3)).unwrap();
        let err = s.append(inbox.id, &[b'c'; 1100], &[], 0).unwrap_err();
        assert!(
            matches!(err, crate::store::StoreError::OverQuota(_)),
            "{err}"
        );
        s.append(inbox.id, &[b'c'; 1072], &[], 0).unwrap();
        assert!(s.quota(a.id).unwrap().full());
        assert_eq!(s.recount_quotas().unwrap(), 1);
        assert_eq!(s.quota(a.id).unwrap().bytes, 3072);
        s.delete_mailbox(a.id, "Other").unwrap();
        assert_eq!(s.quota(a.id).unwrap().bytes, 1072);
        assert!(s.check(false).unwrap().is_empty());
        s.delete_account("q@x.test").unwrap();
        assert_eq!(s.t.quota.len(), 0);
    }
}
