//! Backups, restore and rebuild: the store can always be brought back (docs/operations.md,
//! "Backup and restore" and "When the store does not open").
//!
//! # A consistent point in time
//! sled has no snapshot across trees, so [`Sled::backup`] pauses writers: every write
//! transaction holds [`Sled::write_gate`] shared, the backup takes it exclusively while it reads
//! the metadata (no body bytes except the rare inline ones), then lets writers go on. Body files
//! are immutable once written; the ones the snapshot names are linked (or copied) afterwards,
//! while a hold keeps the group-commit flusher from unlinking any of them (`Files::hold`).
//!
//! # Format (portable, not sled's files)
//! ```text
//! DIR/tanba-backup.json   manifest, written last (a directory without it is not a backup)
//! DIR/metadata.jsonl      one JSON record per line: account, mailbox, body, message, queue, raw
//! DIR/bodies/xx/<id hex>  the exact bytes of each body (hard link to the store's file if the
//!                         file system allows, else a copy)
//! ```
//! Records carry ids, UIDs, UIDVALIDITY, UIDNEXT, modseqs, flags, INTERNALDATEs and password
//! hashes as the store has them. Derived data is not saved: the name index, reference counts and
//! the queue's due index are rebuilt by [`restore`], mailbox counters recomputed, the IMAP
//! structure cache dropped. Trees this version has no record type for (added by a later
//! feature) travel as `raw` key/value pairs (base64), so a backup never silently leaves one out;
//! `aliases` and `subscriptions` (key `account_id ‖ name`, ids kept) travel that way too.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{RwLockReadGuard, RwLockWriteGuard};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::files::is_file;
use super::{
    dec, enc, format, key2, mailbox, now_unix, read_u64, u64_key, Account, MailboxMeta,
    MessageMeta, QueueRecord, Result, Sled, StoreError,
};

pub const MANIFEST: &str = "tanba-backup.json";
const METADATA: &str = "metadata.jsonl";
const BODIES: &str = "bodies";
const FORMAT_NAME: &str = "tanba-backup";
/// The backup format this binary writes and reads.
pub const BACKUP_VERSION: u32 = 1;
/// Longest record line a restore accepts (a queue record with many recipients stays far below).
const MAX_LINE: u64 = 64 << 20;

/// Trees with a record type of their own (or derived and rebuilt by restore).
const KNOWN_TREES: &[&str] = &[
    "accounts",
    "mailbox_names",
    "mailboxes",
    "messages",
    "blobs",
    "blob_files",
    "blob_refs",
    "blob_cache",
    "queue",
    "queue_due",
    "changes",
    "vanished",
    format::META_TREE,
    "__sled__default",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    /// Unix seconds at the snapshot.
    pub created: i64,
    pub tanba: String,
    pub store_format: u32,
    /// Every id in the backup is below this.
    pub next_id: u64,
    pub accounts: u64,
    pub mailboxes: u64,
    pub messages: u64,
    pub bodies: u64,
    pub queue: u64,
    pub raw: u64,
    /// Size of `metadata.jsonl` (a truncated copy is refused).
    pub metadata_bytes: u64,
    /// What the store itself lacked when the backup was taken (e.g. a missing body file).
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
enum Record {
    Account(Account),
    Mailbox(MailboxMeta),
    Body {
        id: u64,
        len: u64,
    },
    Message {
        mailbox_id: u64,
        #[serde(flatten)]
        meta: MessageMeta,
    },
    Queue(QueueRecord),
    Raw {
        tree: String,
        key: String,
        value: String,
    },
}

/// What a backup wrote.
#[derive(Debug)]
pub struct BackupSummary {
    pub manifest: Manifest,
    pub linked: u64,
    pub copied: u64,
}

/// Keeps the group-commit flusher from unlinking body files while it lives.
pub(crate) struct UnlinkHold<'a>(&'a Sled);

impl Drop for UnlinkHold<'_> {
    fn drop(&mut self) {
        self.0.files.hold.fetch_sub(1, Ordering::SeqCst);
    }
}

fn io(what: &str, p: &Path, e: std::io::Error) -> StoreError {
    StoreError::Db(format!("{what} {}: {e}", p.display()))
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("syncing", dir, e))
}

fn body_path(root: &Path, id: u64) -> PathBuf {
    root.join(BODIES)
        .join(format!("{:02x}", id & 0xff))
        .join(format!("{id:016x}"))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The record of a tree entry kept as its bytes (unknown trees, entries that do not decode).
fn raw(tree: &str, k: &[u8], v: &[u8]) -> Record {
    Record::Raw {
        tree: tree.into(),
        key: b64(k),
        value: b64(v),
    }
}

/// Writes every entry of `tree` (named `name`) with `line`: decoded as `T` and wrapped by `wrap`,
/// or, where it does not decode, as raw bytes. Returns how many decoded.
fn typed_records<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    name: &str,
    wrap: fn(T) -> Record,
    line: &mut impl FnMut(&Record) -> Result<()>,
) -> Result<u64> {
    let mut decoded = 0;
    for kv in tree.iter() {
        let (k, v) = kv?;
        let r = match dec::<T>(&v) {
            Ok(x) => {
                decoded += 1;
                wrap(x)
            }
            Err(_) => raw(name, &k, &v),
        };
        line(&r)?;
    }
    Ok(decoded)
}

fn unb64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| StoreError::Invalid(format!("bad base64 in backup: {e}")))
}

impl Sled {
    /// Taken (shared) by every write transaction; see the module docs.
    pub(crate) fn write_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Pauses every writer until the guard drops (a consistent point in time across trees).
    pub(crate) fn pause_writers(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hold_unlinks(&self) -> UnlinkHold<'_> {
        self.files.hold.fetch_add(1, Ordering::SeqCst);
        UnlinkHold(self)
    }

    /// Writes a backup of the whole store into `dir` (new or empty). Safe while the server runs.
    pub fn backup(&self, dir: &Path) -> Result<BackupSummary> {
        if let Ok(mut rd) = std::fs::read_dir(dir) {
            if rd.next().is_some() {
                return Err(StoreError::Invalid(format!(
                    "{} is not empty: a backup goes into a new or empty directory",
                    dir.display()
                )));
            }
        }
        crate::perms::create_dir_all(&dir.join(BODIES)).map_err(|e| io("creating", dir, e))?;
        let meta_path = dir.join(METADATA);
        let meta_file = crate::perms::options()
            .write(true)
            .create_new(true)
            .open(&meta_path)
            .map_err(|e| io("creating", &meta_path, e))?;
        let mut out = BufWriter::new(meta_file);
        let mut m = Manifest {
            format: FORMAT_NAME.into(),
            version: BACKUP_VERSION,
            created: now_unix(),
            tanba: env!("CARGO_PKG_VERSION").into(),
            store_format: format::CURRENT,
            next_id: 0,
            accounts: 0,
            mailboxes: 0,
            messages: 0,
            bodies: 0,
            queue: 0,
            raw: 0,
            metadata_bytes: 0,
            problems: Vec::new(),
        };
        let line = |out: &mut BufWriter<std::fs::File>, r: &Record| -> Result<()> {
            let mut v = serde_json::to_vec(r).map_err(|e| StoreError::Db(e.to_string()))?;
            v.push(b'\n');
            out.write_all(&v).map_err(|e| io("writing", &meta_path, e))
        };
        let hold = self.hold_unlinks();
        let mut files: Vec<(u64, u64)> = Vec::new();
        {
            let _paused = self.pause_writers();
            m.next_id = self.next_id()?;
            let t = &self.t;
            let mut line = |r: &Record| line(&mut out, r);
            // A record that does not decode still goes into the backup, as raw bytes.
            m.accounts += typed_records(&t.accounts, "accounts", Record::Account, &mut line)?;
            m.mailboxes += typed_records(&t.mailboxes, "mailboxes", Record::Mailbox, &mut line)?;
            for kv in t.blobs.iter() {
                let (k, v) = kv?;
                let id = read_u64(&k)?;
                // Inline bodies (empty ones, older versions) are written now: they have no file.
                let p = body_path(dir, id);
                crate::perms::create_dir_all(p.parent().unwrap_or(dir))
                    .map_err(|e| io("creating", &p, e))?;
                write_synced(&p, &v)?;
                line(&Record::Body {
                    id,
                    len: v.len() as u64,
                })?;
                m.bodies += 1;
            }
            for kv in t.blob_files.iter() {
                let (k, v) = kv?;
                let (id, len) = (read_u64(&k)?, read_u64(&v)?);
                files.push((id, len));
                line(&Record::Body { id, len })?;
                m.bodies += 1;
            }
            for kv in t.messages.iter() {
                let (k, v) = kv?;
                let r = match (k.get(..8).map(read_u64), dec::<MessageMeta>(&v)) {
                    (Some(Ok(mailbox_id)), Ok(meta)) => Record::Message { mailbox_id, meta },
                    _ => raw("messages", &k, &v),
                };
                m.messages += matches!(r, Record::Message { .. }) as u64;
                line(&r)?;
            }
            m.queue += typed_records(&t.queue, "queue", Record::Queue, &mut line)?;
            for name in self.db.tree_names() {
                let name = String::from_utf8_lossy(&name).into_owned();
                if KNOWN_TREES.contains(&name.as_str()) {
                    continue;
                }
                for kv in self.db.open_tree(&name)?.iter() {
                    let (k, v) = kv?;
                    line(&raw(&name, &k, &v))?;
                    m.raw += 1;
                }
            }
        }
        // Writers run again; the hold keeps every file of the snapshot in place.
        let (mut linked, mut copied) = (0, 0);
        for (id, len) in files {
            let src = self.files.path(id);
            let dst = body_path(dir, id);
            let parent = dst.parent().unwrap_or(dir);
            crate::perms::create_dir_all(parent).map_err(|e| io("creating", parent, e))?;
            match std::fs::metadata(&src) {
                Ok(md) if md.len() == len => {}
                Ok(md) => {
                    m.problems.push(format!(
                        "body {id:016x}: the file has {} bytes, the store recorded {len}",
                        md.len()
                    ));
                }
                Err(e) => {
                    m.problems.push(format!("body {id:016x}: {e}"));
                    continue;
                }
            }
            if std::fs::hard_link(&src, &dst).is_ok() {
                linked += 1;
            } else {
                let data = std::fs::read(&src).map_err(|e| io("reading", &src, e))?;
                write_synced(&dst, &data)?;
                copied += 1;
            }
        }
        drop(hold);
        let f = out
            .into_inner()
            .map_err(|e| io("writing", &meta_path, e.into_error()))?;
        f.sync_all().map_err(|e| io("syncing", &meta_path, e))?;
        m.metadata_bytes = f
            .metadata()
            .map_err(|e| io("reading", &meta_path, e))?
            .len();
        let bodies = dir.join(BODIES);
        for sub in std::fs::read_dir(&bodies)
            .map_err(|e| io("reading", &bodies, e))?
            .flatten()
        {
            sync_dir(&sub.path())?;
        }
        sync_dir(&bodies)?;
        // The manifest last, atomically: a directory without it is an unfinished backup.
        let tmp = dir.join(format!("{MANIFEST}.tmp"));
        let json = serde_json::to_vec_pretty(&m).map_err(|e| StoreError::Db(e.to_string()))?;
        write_synced(&tmp, &json)?;
        std::fs::rename(&tmp, dir.join(MANIFEST)).map_err(|e| io("renaming", &tmp, e))?;
        sync_dir(dir)?;
        Ok(BackupSummary {
            manifest: m,
            linked,
            copied,
        })
    }
}

fn write_synced(p: &Path, data: &[u8]) -> Result<()> {
    let mut f = crate::perms::options()
        .write(true)
        .create_new(true)
        .open(p)
        .map_err(|e| io("creating", p, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io("writing", p, e))
}

/// Whether `dir` holds a store (sled writes `db` when it creates one).
pub fn store_exists(dir: &Path) -> bool {
    dir.join("db").is_file()
}

/// Whether a process has the store in `dir` open: sled holds an exclusive `flock` on its `db`
/// file for as long as a process has the database open.
pub fn store_in_use(dir: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = std::fs::File::open(dir.join("db")) else {
        return false;
    };
    // Released when `f` is closed, right below.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

/// Reads and checks a backup's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join(MANIFEST);
    let data = std::fs::read(&p).map_err(|e| {
        StoreError::Invalid(format!(
            "{} is not a complete tanba backup ({}: {e})",
            dir.display(),
            MANIFEST
        ))
    })?;
    let m: Manifest = serde_json::from_slice(&data)
        .map_err(|e| StoreError::Invalid(format!("{}: {e}", p.display())))?;
    if m.format != FORMAT_NAME {
        return Err(StoreError::Invalid(format!(
            "{} is not a tanba backup",
            p.display()
        )));
    }
    if m.version > BACKUP_VERSION || m.store_format > format::CURRENT {
        return Err(StoreError::Invalid(format!(
            "the backup in {} was written by a newer tanba ({}, backup format {}, store format \
             {}); upgrade tanba",
            dir.display(),
            m.tanba,
            m.version,
            m.store_format
        )));
    }
    let meta = dir.join(METADATA);
    let len = std::fs::metadata(&meta)
        .map_err(|e| io("reading", &meta, e))?
        .len();
    if len != m.metadata_bytes {
        return Err(StoreError::Invalid(format!(
            "{} has {len} bytes, the manifest says {}: the backup is damaged",
            meta.display(),
            m.metadata_bytes
        )));
    }
    Ok(m)
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Give every mailbox a new UIDVALIDITY, so that clients that saw UIDs handed out after the
    /// backup resynchronise instead of trusting their cache.
    pub new_uidvalidity: bool,
}

#[derive(Debug, Default)]
pub struct RestoreSummary {
    pub accounts: u64,
    pub mailboxes: u64,
    pub messages: u64,
    pub bodies: u64,
    pub queue: u64,
    pub raw: u64,
    /// Records that could not be restored, and why.
    pub problems: Vec<String>,
    /// Ids of the bodies restored (rebuild skips those files).
    pub body_ids: HashSet<u64>,
}

#[derive(Default)]
struct Tally {
    messages: u32,
    unseen: u32,
    max_uid: u32,
    max_modseq: u64,
}

/// Restores the backup in `backup` into a new store at `store_dir` (which must not hold one).
pub fn restore(store_dir: &Path, backup: &Path, opts: RestoreOptions) -> Result<RestoreSummary> {
    let manifest = read_manifest(backup)?;
    if store_exists(store_dir) {
        return Err(StoreError::Exists(format!(
            "a store in {}",
            store_dir.display()
        )));
    }
    let store = Sled::open(store_dir)?;
    let mut sum = RestoreSummary::default();
    let t = &store.t;
    let mut max_id = manifest.next_id;
    let mut boxes: HashMap<u64, (MailboxMeta, Tally)> = HashMap::new();
    let mut bodies: HashMap<u64, u64> = HashMap::new();
    let mut refs: HashMap<u64, u32> = HashMap::new();
    let mut accounts: HashSet<u64> = HashSet::new();
    let fresh_uidvalidity = now_unix().clamp(1, u32::MAX as i64) as u32;
    let meta_path = backup.join(METADATA);
    let f = std::fs::File::open(&meta_path).map_err(|e| io("opening", &meta_path, e))?;
    let mut r = std::io::BufReader::new(f);
    let mut buf = Vec::new();
    for n in 1.. {
        buf.clear();
        (&mut r)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .map_err(|e| io("reading", &meta_path, e))?;
        if buf.is_empty() {
            break;
        }
        if buf.last() != Some(&b'\n') {
            return Err(StoreError::Invalid(format!(
                "{} line {n}: truncated or longer than {MAX_LINE} bytes",
                meta_path.display()
            )));
        }
        let rec: Record = match serde_json::from_slice(&buf) {
            Ok(r) => r,
            Err(e) => {
                sum.problems.push(format!("line {n}: {e}"));
                continue;
            }
        };
        match rec {
            Record::Account(a) => {
                max_id = max_id.max(a.id + 1);
                accounts.insert(a.id);
                t.accounts.insert(a.email.as_bytes(), enc(&a))?;
                sum.accounts += 1;
            }
            Record::Mailbox(mut m) => {
                max_id = max_id.max(m.id + 1);
                if opts.new_uidvalidity {
                    m.uidvalidity = fresh_uidvalidity.max(m.uidvalidity.saturating_add(1));
                }
                t.mailbox_names
                    .insert(mailbox::name_key(m.account_id, &m.name), &u64_key(m.id))?;
                // A backup of store format 1 carries subscriptions as a flag of the mailbox
                // (format.rs, version 2); newer ones carry the `subscriptions` tree (raw).
                if m.legacy_subscribed {
                    t.subscriptions
                        .insert(mailbox::name_key(m.account_id, &m.name), mailbox::EMPTY)?;
                    m.legacy_subscribed = false;
                }
                boxes.insert(m.id, (m, Tally::default()));
                sum.mailboxes += 1;
            }
            Record::Body { id, len } => {
                max_id = max_id.max(id + 1);
                let p = body_path(backup, id);
                let data = match std::fs::read(&p) {
                    Ok(d) if d.len() as u64 == len => d,
                    Ok(d) => {
                        sum.problems.push(format!(
                            "body {id:016x}: {} bytes in the backup, {len} recorded",
                            d.len()
                        ));
                        continue;
                    }
                    Err(e) => {
                        sum.problems.push(format!("body {id:016x}: {e}"));
                        continue;
                    }
                };
                if is_file(data.len()) {
                    store.files.write_all(&[(id, &data)])?;
                    t.blob_files.insert(u64_key(id), &len.to_be_bytes())?;
                } else {
                    t.blobs.insert(u64_key(id), data)?;
                }
                bodies.insert(id, len);
                sum.body_ids.insert(id);
                sum.bodies += 1;
            }
            Record::Message { mailbox_id, meta } => {
                let Some((_, tally)) = boxes.get_mut(&mailbox_id) else {
                    sum.problems.push(format!(
                        "message uid {} of mailbox {mailbox_id}: no such mailbox",
                        meta.uid
                    ));
                    continue;
                };
                if !bodies.contains_key(&meta.blob_id) {
                    sum.problems.push(format!(
                        "message uid {} of mailbox {mailbox_id}: body {:016x} missing",
                        meta.uid, meta.blob_id
                    ));
                    continue;
                }
                tally.messages += 1;
                if !meta.has_flag("\\Seen") {
                    tally.unseen += 1;
                }
                tally.max_uid = tally.max_uid.max(meta.uid);
                tally.max_modseq = tally.max_modseq.max(meta.modseq);
                *refs.entry(meta.blob_id).or_default() += 1;
                t.messages.insert(key2(mailbox_id, meta.uid), enc(&meta))?;
                sum.messages += 1;
            }
            Record::Queue(q) => {
                max_id = max_id.max(q.id + 1);
                if !bodies.contains_key(&q.blob_id) {
                    sum.problems.push(format!(
                        "queue entry {}: body {:016x} missing",
                        q.id, q.blob_id
                    ));
                    continue;
                }
                *refs.entry(q.blob_id).or_default() += 1;
                t.queue.insert(u64_key(q.id), enc(&q))?;
                t.queue_due
                    .insert(super::queue::due_key(q.next_attempt, q.id), &[])?;
                sum.queue += 1;
            }
            Record::Raw { tree, key, value } => {
                if KNOWN_TREES.contains(&tree.as_str()) {
                    sum.problems.push(format!(
                        "line {n}: an undecodable record of {tree} (kept in the backup, not \
                         restored)"
                    ));
                    continue;
                }
                store
                    .db
                    .open_tree(&tree)?
                    .insert(unb64(&key)?, unb64(&value)?)?;
                sum.raw += 1;
            }
        }
    }
    // Derived data: counters, UIDNEXT above every UID, reference counts.
    for (id, (mut m, tally)) in boxes {
        if !accounts.contains(&m.account_id) {
            sum.problems.push(format!(
                "mailbox {} ({id}): its account {} is not in the backup",
                m.name, m.account_id
            ));
        }
        m.messages = tally.messages;
        m.unseen = tally.unseen;
        m.uidnext = m.uidnext.max(tally.max_uid.saturating_add(1));
        m.highest_modseq = m.highest_modseq.max(tally.max_modseq);
        t.mailboxes.insert(u64_key(id), enc(&m))?;
    }
    for (&id, _) in bodies.iter() {
        match refs.get(&id) {
            Some(&n) => {
                t.blob_refs.insert(u64_key(id), &n.to_be_bytes())?;
            }
            None => {
                // Nothing references it: not kept (the store's invariant).
                t.blobs.remove(u64_key(id))?;
                if t.blob_files.remove(u64_key(id))?.is_some() {
                    let _ = std::fs::remove_file(store.files.path(id));
                }
                sum.body_ids.remove(&id);
            }
        }
    }
    for a in accounts.iter() {
        if !t
            .mailbox_names
            .contains_key(mailbox::name_key(*a, "INBOX"))?
        {
            sum.problems
                .push(format!("account {a} has no INBOX in the backup"));
        }
    }
    // The modseq index is derived; the expunge log is not in backups (it starts empty).
    super::modseq::rebuild_index(&store.db)?;
    format::set_id_base(&store.db, max_id)?;
    // Limits came back as raw `quota` records; usage is counted from what was restored.
    store.recount_quotas()?;
    store.flush_sync()?;
    Ok(sum)
}

/// What a rebuild did.
#[derive(Debug, Default)]
pub struct RebuildSummary {
    pub restored: Option<RestoreSummary>,
    /// Where the old store was moved.
    pub kept: Option<PathBuf>,
    /// Messages found as body files, put into their owner's INBOX.
    pub recovered: u64,
    /// Body files whose owner could not be found, written to the `unowned` directory.
    pub unowned: u64,
    pub problems: Vec<String>,
}

/// Builds a new store at `store_dir` from what survives: the backup (if any) and the body files
/// of the old store, which is moved aside (`<store_dir>.broken-<time>`), never deleted. Body files
/// not in the backup go to the INBOX of the account named by this server's own `Received: …
/// for <address>` at the top of the message, else into `unowned_dir` as `.eml` files.
pub fn rebuild(
    store_dir: &Path,
    backup: Option<&Path>,
    unowned_dir: &Path,
) -> Result<RebuildSummary> {
    if let Some(b) = backup {
        read_manifest(b)?;
    }
    let mut sum = RebuildSummary::default();
    if store_dir.exists() {
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let name = store_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "store".into());
        let aside = store_dir.with_file_name(format!("{name}.broken-{stamp}"));
        std::fs::rename(store_dir, &aside).map_err(|e| io("renaming", store_dir, e))?;
        sum.kept = Some(aside);
    }
    // Built beside, renamed into place when complete.
    let tmp = PathBuf::from(format!(
        "{}.rebuilding-{}",
        store_dir.display(),
        std::process::id()
    ));
    match build(&tmp, backup, unowned_dir, &mut sum) {
        Ok(()) => {
            std::fs::rename(&tmp, store_dir).map_err(|e| io("renaming", &tmp, e))?;
            Ok(sum)
        }
        Err(e) => Err(StoreError::Db(format!(
            "{e} (the old store is kept in {}; the unfinished new one is {})",
            sum.kept
                .as_ref()
                .map(|k| k.display().to_string())
                .unwrap_or_else(|| "(none)".into()),
            tmp.display()
        ))),
    }
}

fn build(
    store_dir: &Path,
    backup: Option<&Path>,
    unowned_dir: &Path,
    sum: &mut RebuildSummary,
) -> Result<()> {
    let skip = match backup {
        Some(b) => {
            let r = restore(
                store_dir,
                b,
                RestoreOptions {
                    new_uidvalidity: true,
                },
            )?;
            let ids = r.body_ids.clone();
            sum.restored = Some(r);
            ids
        }
        None => HashSet::new(),
    };
    let store = Sled::open(store_dir)?;
    let Some(old) = sum.kept.clone() else {
        return Ok(());
    };
    let old_bodies = old.join("messages");
    let Ok(rd) = std::fs::read_dir(&old_bodies) else {
        return Ok(());
    };
    let mut found: Vec<(u64, PathBuf)> = Vec::new();
    for sub in rd.flatten() {
        let Ok(files) = std::fs::read_dir(sub.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            if let Some(id) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) {
                if !skip.contains(&id) {
                    found.push((id, f.path()));
                }
            }
        }
    }
    // Oldest first (ids grow), so that UIDs follow arrival order.
    found.sort();
    for (id, path) in found {
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) => {
                sum.problems.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let date = std::fs::metadata(&path)
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs() as i64)
            .unwrap_or_else(now_unix);
        let inbox = match owner(&data) {
            Some(addr) => match store.account_for_address(&addr)? {
                Some(a) => store.mailbox(a.id, "INBOX")?,
                None => None,
            },
            None => None,
        };
        match inbox {
            Some(inbox) => {
                // Recovered mail is the user's own: never refused for the quota.
                store.append_over_quota(inbox.id, &data, date)?;
                sum.recovered += 1;
            }
            None => {
                crate::perms::create_dir_all(unowned_dir)
                    .map_err(|e| io("creating", unowned_dir, e))?;
                let dst = unowned_dir.join(format!("{id:016x}.eml"));
                if !dst.exists() {
                    write_synced(&dst, &data)?;
                }
                sum.unowned += 1;
            }
        }
    }
    store.flush_sync()?;
    Ok(())
}

/// The recipient named by this server's own trace header: the first `Received:` field, when it
/// is Tanba's (`by HOST (Tanba)`) and names one recipient (`for <address>`, written only for a
/// single recipient). Reads at most the first 64 KiB of the header section.
fn owner(raw: &[u8]) -> Option<String> {
    let head = &raw[..raw.len().min(64 * 1024)];
    let end = memchr::memmem::find(head, b"\r\n\r\n")
        .or_else(|| memchr::memmem::find(head, b"\n\n"))
        .unwrap_or(head.len());
    let text = String::from_utf8_lossy(&head[..end]);
    // Unfold: the field continues on lines that start with white space.
    let mut field: Option<String> = None;
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        match &mut field {
            Some(f) if line.starts_with([' ', '\t']) => {
                f.push(' ');
                f.push_str(line.trim());
            }
            Some(_) => break,
            None => {
                if line
                    .get(..9)
                    .is_some_and(|p| p.eq_ignore_ascii_case("received:"))
                {
                    field = Some(line.to_string());
                }
            }
        }
    }
    let f = field?;
    if !f.contains(" (Tanba) ") {
        return None;
    }
    let start = f.find(" for <")? + 6;
    let len = f[start..].find('>')?;
    let addr = &f[start..start + len];
    (!addr.is_empty()).then(|| addr.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_read_from_our_own_received_header_only() {
        let ours = b"X-EDS-Verdict: none\r\nReceived: from a ([127.0.0.1])\r\n\tby mail.x (Tanba) \
with ESMTP id 1\r\n\tfor <Alice@X.test>;\r\n\tThu, 1 Jan 2026 00:00:00 +0000\r\nSubject: s\r\n\r\nb";
        assert_eq!(owner(ours).as_deref(), Some("alice@x.test"));
        let many = b"Received: from a ([127.0.0.1])\r\n\tby mail.x (Tanba) with ESMTP id 1;\r\n\
\tThu, 1 Jan 2026\r\n\r\nb";
        assert_eq!(owner(many), None);
        let foreign = b"Received: from a by mx.other.example for <alice@x.test>;\r\n\r\nb";
        assert_eq!(owner(foreign), None);
        assert_eq!(owner(b"Subject: appended\r\n\r\nbody"), None);
    }

    #[test]
    fn backup_and_restore_round_trip_keeps_ids_uids_flags_and_the_queue() {
        let src = tempfile::tempdir().unwrap();
        let s = Sled::open(&src.path().join("store")).unwrap();
        let a = s.create_account("a@x.test", "$argon2id$hash").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        s.append(inbox.id, b"Subject: 1\r\n\r\none\r\n", &[], 7)
            .unwrap();
        let two = s
            .append(
                inbox.id,
                b"Subject: 2\r\n\r\ntwo\r\n",
                &["\\Seen".into(), "$Label1".into()],
                8,
            )
            .unwrap();
        s.append(inbox.id, b"", &[], 9).unwrap();
        s.expunge(inbox.id, &[1]).unwrap();
        let rec = s
            .new_queue_record("a@x.test", &["b@y.test".to_string()])
            .unwrap();
        s.deliver(&[], b"unused", 0, Some((&rec, b"queued bytes")))
            .unwrap();
        s.flush_sync().unwrap();
        let bdir = src.path().join("backup");
        let b = s.backup(&bdir).unwrap();
        assert!(b.manifest.problems.is_empty(), "{:?}", b.manifest.problems);
        assert_eq!((b.manifest.accounts, b.manifest.messages), (1, 2));

        let dst = tempfile::tempdir().unwrap();
        let r = restore(&dst.path().join("store"), &bdir, RestoreOptions::default()).unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let d = Sled::open(&dst.path().join("store")).unwrap();
        assert_eq!(d.account("a@x.test").unwrap().unwrap(), a);
        let before = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        assert_eq!(d.mailbox(a.id, "INBOX").unwrap().unwrap(), before);
        assert_eq!(d.messages(inbox.id).unwrap(), s.messages(inbox.id).unwrap());
        let m2 = d.message(inbox.id, two.uid).unwrap().unwrap();
        assert_eq!(
            &*d.blob(m2.blob_id).unwrap().unwrap(),
            b"Subject: 2\r\n\r\ntwo\r\n"
        );
        let q = d.queue_get(rec.id).unwrap().unwrap();
        assert_eq!(&*d.blob(q.blob_id).unwrap().unwrap(), b"queued bytes");
        assert_eq!(d.queue_due().count(), 1);
        // New ids never collide with restored ones.
        assert!(d.next_id().unwrap() >= b.manifest.next_id);
        assert!(d.check(true).unwrap().is_empty());
    }
}
