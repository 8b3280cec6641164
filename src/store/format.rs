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
//! Adding a field with `#[serde(default)]` *at the end* of a record type needs no new version
//! (records are positional MessagePack since format 3: a field inserted in the middle, removed or
//! reordered does, with a migration; `tests::record_layout_is_pinned` fails until then).
//!
//! # Versions
//! - 1: the first format.
//! - 2: IMAP subscriptions move out of the mailbox records (`MailboxMeta::subscribed`, only for
//!   existing mailboxes) into a `subscriptions` tree of names of their own (`mailbox.rs`,
//!   "Subscriptions"). Step 1 → 2 copies every `subscribed: true` into the tree and clears the
//!   flag (the field keeps its place in the record: positional encoding, below).
//! - 3: records (`accounts`, `mailboxes`, `messages`, `queue`, `aliases`) move from JSON to
//!   MessagePack, structs as arrays ([`super::enc`]); step 2 → 3 rewrites them.
//! - 4: adds the `changes` (modseq index) and `vanished` (expunge log) trees of `modseq.rs`.
//!   Step 3 → 4 builds `changes` from the message records and starts every expunge log empty
//!   (clients that resynchronize from before the migration get what RFC 7162 §3.2.5.2 allows:
//!   every UID they may know that no longer exists).
//!
//! `id_base` (u64, big-endian): added to sled's `generate_id` by [`super::Sled::next_id`]. A
//! restore sets it above every id in the backup, because a fresh sled database counts from 0.

use std::path::Path;

use super::{dec, mailbox, MailboxMeta, Result, StoreError};

/// The format this binary writes and understands (the steps: "Versions" above).
pub const CURRENT: u32 = 4;

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
        records_2_to_3(db)?;
        meta.insert(VERSION_KEY, &3u32.to_be_bytes())?;
        db.flush()?;
    }
    if from < 4 {
        super::modseq::rebuild_index(db)?;
        meta.insert(VERSION_KEY, &4u32.to_be_bytes())?;
        db.flush()?;
        tracing::info!("store migrated to format 4 (modseq index for CONDSTORE/QRESYNC)");
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
            // Cleared in the record, so that a later backup does not carry it as a format-1
            // subscription (`backup.rs`).
            let cleared = MailboxMeta {
                legacy_subscribed: false,
                ..m
            };
            mailboxes.insert(super::u64_key(cleared.id), super::enc(&cleared))?;
        }
    }
    Ok(())
}

/// Format 2 → 3: rewrites every JSON record as MessagePack, tree by tree, in batches. Each value
/// is decoded as its own record type (so that structs become arrays in field order) and written
/// back under the same key. Records already converted (a crash interrupted an earlier run) are
/// left alone: `dec` reads both, and a JSON record always starts with `{`. The caller writes the
/// new version after this returns and flushes.
fn records_2_to_3(db: &sled::Db) -> Result<()> {
    use super::{Account, MailboxMeta, MessageMeta, QueueRecord};
    let mut total = 0usize;
    total += rewrite::<Account>(db, "accounts")?;
    total += rewrite::<MailboxMeta>(db, "mailboxes")?;
    total += rewrite::<MessageMeta>(db, "messages")?;
    total += rewrite::<QueueRecord>(db, "queue")?;
    total += rewrite::<super::alias::Alias>(db, "aliases")?;
    db.flush()?;
    tracing::info!("store format 2 → 3: {total} records rewritten from JSON to MessagePack");
    Ok(())
}

/// Rewrites the JSON values of one tree as [`super::enc`] of `T`; returns how many.
fn rewrite<T: serde::Serialize + serde::de::DeserializeOwned>(
    db: &sled::Db,
    tree: &str,
) -> Result<usize> {
    const BATCH: usize = 1000;
    let t = db.open_tree(tree)?;
    let mut batch = sled::Batch::default();
    let (mut n, mut pending) = (0usize, 0usize);
    for kv in t.iter() {
        let (k, v) = kv?;
        if v.first() != Some(&b'{') {
            continue;
        }
        let rec: T =
            super::dec_json(&v).map_err(|e| StoreError::Db(format!("migrating {tree}: {e}")))?;
        batch.insert(k, super::enc(&rec));
        n += 1;
        pending += 1;
        if pending == BATCH {
            t.apply_batch(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if pending > 0 {
        t.apply_batch(batch)?;
    }
    Ok(n)
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
    use crate::store::Sled;

    #[test]
    fn a_new_store_gets_the_current_version_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Sled::open(dir.path()).unwrap();
            assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
            // What a store written by a future tanba looks like.
            s.db.open_tree(META_TREE)
                .unwrap()
                .insert(VERSION_KEY, &(CURRENT + 1).to_be_bytes())
                .unwrap();
            s.db.flush().unwrap();
        }
        let err = Sled::open(dir.path()).err().unwrap().to_string();
        assert!(
            err.contains(&format!("store format {}", CURRENT + 1)) && err.contains("upgrade tanba"),
            "{err}"
        );
    }

    #[test]
    fn a_store_whose_records_are_gone_but_bodies_remain_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Sled::open(dir.path()).unwrap();
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
        let err = Sled::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("has message files but no records"), "{err}");
        // The body is still there for `tanba store rebuild`.
        let n: usize = std::fs::read_dir(dir.path().join("messages"))
            .unwrap()
            .flatten()
            .map(|d| std::fs::read_dir(d.path()).unwrap().count())
            .sum();
        assert_eq!(n, 1);
    }

    /// Every record of a tree, as raw values.
    fn raw_values(s: &Sled, tree: &str) -> Vec<Vec<u8>> {
        s.db.open_tree(tree)
            .unwrap()
            .iter()
            .values()
            .map(|v| v.unwrap().to_vec())
            .collect()
    }

    /// Rewrites every record of the five record trees as format 1 wrote it (JSON) and sets the
    /// version to 1 (or removes it): a store as the previous tanba left it.
    fn back_to_format_1(s: &Sled, keep_key: bool) {
        use crate::store::{alias::Alias, Account, MailboxMeta, MessageMeta, QueueRecord};
        fn json<T: serde::Serialize + serde::de::DeserializeOwned>(s: &Sled, tree: &str) {
            let t = s.db.open_tree(tree).unwrap();
            for kv in t.iter() {
                let (k, v) = kv.unwrap();
                let rec: T = crate::store::dec(&v).unwrap();
                t.insert(k, serde_json::to_vec(&rec).unwrap()).unwrap();
            }
        }
        json::<Account>(s, "accounts");
        json::<MailboxMeta>(s, "mailboxes");
        json::<MessageMeta>(s, "messages");
        json::<QueueRecord>(s, "queue");
        json::<Alias>(s, "aliases");
        mark_format_1(s, keep_key);
    }

    #[test]
    fn a_format_1_store_is_migrated_on_open_and_reads_the_same() {
        use crate::store::alias::Alias;
        for keep_key in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (accounts, messages, queue, aliases) = {
                let s = Sled::open(dir.path()).unwrap();
                let a = s.create_account("a@x.test", "$argon2id$h").unwrap();
                let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
                for i in 0..5 {
                    let flags = vec!["\\Seen".to_string(), format!("$k{i}")];
                    s.append(
                        inbox.id,
                        format!("Subject: {i}\r\n\r\n{i}\r\n").as_bytes(),
                        &flags,
                        1_700_000_000 + i,
                    )
                    .unwrap();
                }
                let q = s
                    .new_queue_record("a@x.test", &["r@remote.test".to_string()])
                    .unwrap();
                s.deliver(
                    &[],
                    b"Subject: out\r\n\r\nx\r\n",
                    0,
                    Some((&q, b"Subject: out\r\n\r\nx\r\n")),
                )
                .unwrap();
                s.put_alias(&Alias {
                    address: "sales@x.test".into(),
                    targets: vec!["a@x.test".into()],
                })
                .unwrap();
                back_to_format_1(&s, keep_key);
                assert!(raw_values(&s, "messages").iter().all(|v| v[0] == b'{'));
                (
                    s.accounts().unwrap(),
                    s.messages(inbox.id).unwrap(),
                    s.queue_list().unwrap(),
                    s.aliases().unwrap(),
                )
            };
            assert_eq!(messages.len(), 5);
            assert_eq!(queue.len(), 1);
            let s = Sled::open(dir.path()).unwrap();
            assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
            for tree in ["accounts", "mailboxes", "messages", "queue", "aliases"] {
                let vals = raw_values(&s, tree);
                assert!(!vals.is_empty(), "{tree}");
                assert!(vals.iter().all(|v| v[0] != b'{'), "{tree} still JSON");
            }
            assert_eq!(s.accounts().unwrap(), accounts);
            let inbox = s.mailbox(accounts[0].id, "INBOX").unwrap().unwrap();
            assert_eq!(s.messages(inbox.id).unwrap(), messages);
            assert_eq!(s.queue_list().unwrap(), queue);
            assert_eq!(s.aliases().unwrap(), aliases);
            assert_eq!(inbox.messages, 5);
            // `tanba store check` finds nothing wrong.
            assert_eq!(s.check(false).unwrap(), Vec::<String>::new());
        }
    }

    #[test]
    fn record_layout_is_pinned() {
        // Records are positional (structs as MessagePack arrays): a field may only be *added at
        // the end* of a record type, with `#[serde(default)]`. Inserting, removing or reordering
        // one changes these bytes and needs a new format version with a migration (module docs,
        // docs/ARCHITECTURE.md "Record encoding").
        use crate::store::MessageMeta;
        let m = MessageMeta {
            uid: 7,
            blob_id: 300,
            size: 1234,
            internal_date: 1_700_000_000,
            flags: vec!["\\Seen".into(), "$x".into()],
            modseq: 9,
        };
        let b = crate::store::enc(&m);
        assert_eq!(
            b,
            [
                &[0x96, 0x07, 0xcd, 0x01, 0x2c, 0xcd, 0x04, 0xd2, 0xce, 0x65, 0x53, 0xf1, 0x00][..],
                &[0x92, 0xa5, b'\\', b'S', b'e', b'e', b'n', 0xa2, b'$', b'x', 0x09][..],
            ]
            .concat(),
            "MessageMeta's layout changed: {b:02x?}"
        );
        assert_eq!(crate::store::dec::<MessageMeta>(&b).unwrap(), m);
        // A record written before a trailing `#[serde(default)]` field existed reads with the
        // default: an Account of four fields (id, email, password_hash, created).
        let old = rmp_serde::to_vec(&(5u64, "a@x.test", "$h", 1i64)).unwrap();
        let a: crate::store::Account = crate::store::dec(&old).unwrap();
        assert_eq!((a.id, a.aliases.len()), (5, 0));
    }

    #[test]
    fn a_store_without_the_key_is_version_1() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Sled::open(dir.path()).unwrap();
            s.db.open_tree(META_TREE)
                .unwrap()
                .remove(VERSION_KEY)
                .unwrap();
            s.db.flush().unwrap();
            assert_eq!(version(&s.db).unwrap(), None);
        }
        // Read as format 1 and migrated.
        let s = Sled::open(dir.path()).unwrap();
        assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
    }

    /// Writes a mailbox record as format 1 did: with its `subscribed` flag.
    fn write_v1_mailbox(s: &Sled, m: &MailboxMeta, subscribed: bool) {
        let mut v = serde_json::to_value(m).unwrap();
        v["subscribed"] = serde_json::Value::Bool(subscribed);
        s.t.mailboxes
            .insert(m.id.to_be_bytes(), serde_json::to_vec(&v).unwrap())
            .unwrap();
    }

    /// Marks a store as format 1: the version key says 1, or (`keep_key` false) is missing, as
    /// in stores from before it existed.
    fn mark_format_1(s: &Sled, keep_key: bool) {
        let meta = s.db.open_tree(META_TREE).unwrap();
        if keep_key {
            meta.insert(VERSION_KEY, &1u32.to_be_bytes()).unwrap();
        } else {
            meta.remove(VERSION_KEY).unwrap();
        }
        s.db.flush().unwrap();
    }

    /// What format 1 looked like: subscriptions as a flag of existing mailboxes, no tree.
    fn make_v1(s: &Sled, subscribed: &[(u64, &str)], keep_key: bool) {
        for kv in s.t.mailboxes.iter() {
            let (_, v) = kv.unwrap();
            let m: MailboxMeta = dec(&v).unwrap();
            let on = subscribed.contains(&(m.account_id, m.name.as_str()));
            write_v1_mailbox(s, &m, on);
        }
        s.t.subscriptions.clear().unwrap();
        mark_format_1(s, keep_key);
    }

    #[test]
    fn format_1_subscription_flags_become_the_subscription_set() {
        for keep_key in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (a, b) = {
                let s = Sled::open(dir.path()).unwrap();
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
            let s = Sled::open(dir.path()).unwrap();
            assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
            assert_eq!(s.subscriptions(a).unwrap(), vec!["INBOX", "Work/2026"]);
            assert_eq!(s.subscriptions(b).unwrap(), vec!["Sent"]);
            // The stale flag no longer counts: unsubscribing sticks across a reopen.
            s.remove_subscription(a, "INBOX").unwrap();
            s.flush_sync().unwrap();
            drop(s);
            let s = Sled::open(dir.path()).unwrap();
            assert_eq!(s.subscriptions(a).unwrap(), vec!["Work/2026"]);
        }
    }

    #[test]
    fn format_2_gets_its_modseq_index_built() {
        let dir = tempfile::tempdir().unwrap();
        let (mb, m0) = {
            let s = Sled::open(dir.path()).unwrap();
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
        let s = Sled::open(dir.path()).unwrap();
        assert_eq!(version(&s.db).unwrap(), Some(CURRENT));
        let c = s.changes_since(mb, m0).unwrap();
        assert_eq!(
            c.changed.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert!(!c.complete, "expunges before the migration are unknown");
    }
}
