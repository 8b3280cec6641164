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
//! `id_base` (u64, big-endian): added to sled's `generate_id` by [`super::Store::next_id`]. A
//! restore sets it above every id in the backup, because a fresh sled database counts from 0.

use std::path::Path;

use super::{Result, StoreError};

/// The format this binary writes and understands.
///
/// - 1: the first format.
/// - 2: adds the `changes` (modseq index) and `vanished` (expunge log) trees of `modseq.rs`;
///   the migration builds `changes` from the message records and starts every expunge log
///   empty (clients that resynchronize from before the migration get what RFC 7162 §3.2.5.2
///   allows: every UID they may know that no longer exists).
pub const CURRENT: u32 = 2;

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

/// Runs the steps from format `from` to [`CURRENT`]; each is idempotent and writes its new
/// version in the same flush as its last change.
fn migrate(db: &sled::Db, meta: &sled::Tree, from: u32) -> Result<()> {
    let mut v = from;
    while v < CURRENT {
        // One arm per step.
        if v == 1 {
            tracing::info!("migrating the store from format 1 to 2 (modseq index)");
            super::modseq::rebuild_index(db)?;
        }
        v += 1;
        meta.insert(VERSION_KEY, &v.to_be_bytes())?;
        db.flush()?;
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
    fn a_store_without_the_key_is_version_1_and_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.create_account("a@x.test", "h").unwrap();
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

    #[test]
    fn format_1_gets_its_modseq_index_built() {
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
            // What a format-1 store looks like: no index trees.
            s.db.drop_tree("changes").unwrap();
            s.db.drop_tree("vanished").unwrap();
            s.db.open_tree(META_TREE)
                .unwrap()
                .insert(VERSION_KEY, &1u32.to_be_bytes())
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
