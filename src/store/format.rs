//! The store's format version, kept in the `meta` tree and checked at every open.
//!
//! `format_version` (u32, big-endian) names the key layout and record shapes of `mod.rs`. It is
//! written when a store is created; a store without it was made by a version before this key
//! existed and is version 1 (the layout is the same), so it gets the key written.
//!
//! A store whose version is *newer* than [`CURRENT`] is refused: an older binary must not write
//! records it does not understand. A store whose version is *older* is migrated here, at open,
//! before anything else reads it.
//!
//! # Future migrations
//! A change to the key layout or to a record that old code cannot read bumps [`CURRENT`] and adds
//! one step to [`check_and_migrate`]: `N → N+1`, written so that running it twice is harmless
//! (a crash in the middle re-runs it at the next open), and the new version is written in the
//! same flush as the step's last change. Before a migration runs, the operator should have a
//! `tanba backup` (docs/operations.md): backups are logical (JSON lines), and `tanba restore`
//! of an older backup format goes through the same record types, so restoring is the way back.
//! Adding an optional field with `#[serde(default)]` needs no new version.
//!
//! # Versions
//! - 1: the first format.
//! - 2: IMAP subscriptions move out of the mailbox records (`MailboxMeta::subscribed`, only for
//!   existing mailboxes) into a `subscriptions` tree of names of their own (`mailbox.rs`,
//!   "Subscriptions"). Step 1 → 2 copies every `subscribed: true` into the tree; the stale field
//!   is ignored from then on and dropped when the record is next written.
//! - 3: adds the `changes` (modseq index) and `vanished` (expunge log) trees of `modseq.rs`.
//!   Step 2 → 3 builds `changes` from the message records and starts every expunge log empty
//!   (clients that resynchronize from before the migration get what RFC 7162 §3.2.5.2 allows:
//!   every UID they may know that no longer exists).
//!
//! `id_base` (u64, big-endian): added to sled's `generate_id` by [`super::Store::next_id`]. A
//! restore sets it above every id in the backup, because a fresh sled database counts from 0.

use std::path::Path;

use super::{dec, mailbox, MailboxMeta, Result, StoreError};

/// The format this binary writes and understands.
pub const CURRENT: u32 = 3;

pub(crate) const SUBSCRIPTIONS_TREE: &str = "subscriptions";

pub(crate) const META_TREE: &str = "meta";
const VERSION_KEY: &[u8] = b"format_version";
const ID_BASE_KEY: &[u8] = b"id_base";

/// Checks (and writes, for a new or pre-version store) the format version; returns `id_base`.
pub(crate) fn check_and_migrate(db: &sled::Db, dir: &Path) -> Result<u64> {
    let meta = db.open_tree(META_TREE)?;
    match meta.get(VERSION_KEY)? {
        Some(v) => {
            let v = <[u8; 4]>::try_from(v.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Db("corrupt format_version in the store".into()))?;
            if v > CURRENT {
                return Err(StoreError::Db(format!(
                    "store format {v} in {} is newer than this tanba understands (format \
                     {CURRENT}); upgrade tanba",
                    dir.display()
                )));
            }
            migrate(db, &meta, v)?;
        }
        None => {
            // A new store, or one made before this key existed (it has records then). No key,
            // no records, but message files: sled has lost its database (a damaged `db` file
            // opens as an empty one) and the sweep at open would delete every body. Refuse.
            let empty = db.open_tree("accounts")?.is_empty() && db.open_tree("queue")?.is_empty();
            if empty && has_body_files(dir) {
                return Err(StoreError::Db(format!(
                    "the store in {} has message files but no records: its database is lost or \
                     damaged. Nothing was changed; bring it back with `tanba store rebuild \
                     --from-backup DIR` (docs/operations.md, \"When the store does not open\")",
                    dir.display()
                )));
            }
            if empty {
                meta.insert(VERSION_KEY, &CURRENT.to_be_bytes())?;
                db.flush()?;
            } else {
                // Made before the key existed: format 1.
                migrate(db, &meta, 1)?;
            }
        }
    }
    Ok(match meta.get(ID_BASE_KEY)? {
        Some(v) => <[u8; 8]>::try_from(v.as_ref())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::Db("corrupt id_base in the store".into()))?,
        None => 0,
    })
}

/// Brings a store of format `from` to [`CURRENT`], one step at a time; each step may run again
/// after a crash, and the version is written in the flush that ends it.
fn migrate(db: &sled::Db, meta: &sled::Tree, from: u32) -> Result<()> {
    if from == 0 {
        // No such format.
        return Err(StoreError::Db(
            "corrupt format_version 0 in the store".into(),
        ));
    }
    if from < 2 {
        subscriptions_1_to_2(db)?;
        meta.insert(VERSION_KEY, &2u32.to_be_bytes())?;
        db.flush()?;
        tracing::info!("store migrated to format 2 (IMAP subscriptions of their own)");
    }
    if from < 3 {
        super::modseq::rebuild_index(db)?;
        meta.insert(VERSION_KEY, &3u32.to_be_bytes())?;
        db.flush()?;
        tracing::info!("store migrated to format 3 (modseq index for CONDSTORE/QRESYNC)");
    }
    Ok(())
}

/// 1 → 2: every mailbox record with `subscribed: true` gives its name to `subscriptions`.
/// Records that do not decode are left for `tanba store check` to report.
fn subscriptions_1_to_2(db: &sled::Db) -> Result<()> {
    let mailboxes = db.open_tree("mailboxes")?;
    let subs = db.open_tree(SUBSCRIPTIONS_TREE)?;
    for v in mailboxes.iter().values() {
        let Ok(m) = dec::<MailboxMeta>(&v?) else {
            continue;
        };
        if m.legacy_subscribed {
            subs.insert(mailbox::name_key(m.account_id, &m.name), mailbox::EMPTY)?;
        }
    }
    Ok(())
}

/// Whether `<store>/messages/` holds any body file.
fn has_body_files(dir: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir(dir.join("messages")) else {
        return false;
    };
    rd.flatten().any(|sub| {
        std::fs::read_dir(sub.path())
            .map(|mut f| f.next().is_some())
            .unwrap_or(false)
    })
}

/// The format version recorded in an open store.
pub(crate) fn version(db: &sled::Db) -> Result<Option<u32>> {
    let meta = db.open_tree(META_TREE)?;
    Ok(meta
        .get(VERSION_KEY)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes))
}

/// Sets `id_base` (restore only, before the store is used).
pub(crate) fn set_id_base(db: &sled::Db, base: u64) -> Result<()> {
    db.open_tree(META_TREE)?
        .insert(ID_BASE_KEY, &base.to_be_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn a_new_store_gets_the_current_version_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
            // What a store written by a future tanba looks like.
            s.db.open_tree(META_TREE)
                .unwrap()
                .insert(VERSION_KEY, &(CURRENT + 1).to_be_bytes())
                .unwrap();
            s.db.flush().unwrap();
        }
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&format!("store format {}", CURRENT + 1)) && err.contains("upgrade tanba"),
            "{err}"
        );
    }

    #[test]
    fn a_store_whose_records_are_gone_but_bodies_remain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            let a = s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
            s.append(inbox.id, b"Subject: 1\r\n\r\n1\r\n", &[], 0)
                .unwrap();
            s.flush_sync().unwrap();
        }
        // What sled makes of a destroyed `db` file: an empty database.
        std::fs::remove_file(dir.path().join("db")).unwrap();
        std::fs::remove_file(dir.path().join("conf")).unwrap();
        std::fs::remove_dir_all(dir.path().join("blobs")).ok();
        let err = Store::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("has message files but no records"), "{err}");
        // The body is still there for `tanba store rebuild`.
        let n: usize = std::fs::read_dir(dir.path().join("messages"))
            .unwrap()
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).unwrap().count())
            .sum();
        assert_eq!(n, 1);
    }

    #[test]
    fn a_store_without_the_key_is_version_1() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.db.open_tree(META_TREE)
                .unwrap()
                .remove(VERSION_KEY)
                .unwrap();
            s.db.flush().unwrap();
            assert_eq!(version(&s.db).unwrap(), None);
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
    }

    /// Writes a mailbox record as format 1 did: with its `subscribed` flag.
    fn write_v1_mailbox(s: &Store, m: &MailboxMeta, subscribed: bool) {
        let mut v = serde_json::to_value(m).unwrap();
        v["subscribed"] = serde_json::Value::Bool(subscribed);
        s.t.mailboxes
            .insert(m.id.to_be_bytes(), serde_json::to_vec(&v).unwrap())
            .unwrap();
    }

    /// What format 1 looked like: subscriptions as a flag of existing mailboxes, no tree.
    fn make_v1(s: &Store, subscribed: &[(u64, &str)], keep_key: bool) {
        for kv in s.t.mailboxes.iter() {
            let (_, v) = kv.unwrap();
            let m: MailboxMeta = dec(&v).unwrap();
            let on = subscribed.contains(&(m.account_id, m.name.as_str()));
            write_v1_mailbox(s, &m, on);
        }
        s.t.subscriptions.clear().unwrap();
        let meta = s.db.open_tree(META_TREE).unwrap();
        if keep_key {
            meta.insert(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
        } else {
            meta.remove(VERSION_KEY).unwrap();
        }
        s.db.flush().unwrap();
    }

    #[test]
    fn format_1_subscription_flags_become_the_subscription_set() {
        for keep_key in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = {
                let s = Store::open(dir.path()).unwrap();
                let a = s.create_account("a@x.test", "h").unwrap();
                let b = s.create_account("b@x.test", "h").unwrap();
                s.create_mailbox(a.id, "Work/2026", None).unwrap();
                make_v1(
                    &s,
                    &[(a.id, "INBOX"), (a.id, "Work/2026"), (b.id, "Sent")],
                    keep_key,
                );
                assert!(s.subscriptions(a.id).unwrap().is_empty());
                (a.id, b.id)
            };
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
            assert_eq!(s.subscriptions(a).unwrap(), vec!["INBOX", "Work/2026"]);
            assert_eq!(s.subscriptions(b).unwrap(), vec!["Sent"]);
            // The stale flag no longer counts: unsubscribing sticks across a reopen.
            s.remove_subscription(a, "INBOX").unwrap();
            s.flush_sync().unwrap();
            drop(s);
            let s = Store::open(dir.path()).unwrap();
            assert_eq!(s.subscriptions(a).unwrap(), vec!["Work/2026"]);
        }
    }

    #[test]
    fn format_2_gets_its_modseq_index_built() {
        let dir = tempfile::tempdir().unwrap();
        let (mb, m0) = {
            let s = Store::open(dir.path()).unwrap();
            let a = s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
            let m0 = s.mailbox_by_id(inbox.id).unwrap().unwrap().highest_modseq;
            for i in 0..3 {
                s.append(inbox.id, format!("Subject: {i}\r\n\r\n").as_bytes(), &[], 0)
                    .unwrap();
            }
            // What a format-2 store looks like: no index trees.
            s.db.drop_tree("changes").unwrap();
            s.db.drop_tree("vanished").unwrap();
            s.db.open_tree(META_TREE)
                .unwrap()
                .insert(VERSION_KEY, &2u32.to_be_bytes())
                .unwrap();
            s.flush_sync().unwrap();
            (inbox.id, m0)
        };
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
        let c = s.changes_since(mb, m0).unwrap();
        assert_eq!(
            c.changed.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(!c.complete, "expunges before the migration are unknown");
    }
}
