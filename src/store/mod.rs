//! The mailbox store: accounts, mailboxes, messages and the outbound queue, in one sled database
//! (the embedded backend, [`Sled`]) or in PostgreSQL (`pg/`, docs/cluster.md).
//!
//! This is the only module that names `sled` or SQL. Everything else sees [`Store`] (whose
//! methods, in `dispatch.rs`, call the configured backend) and plain records. What follows is
//! the embedded backend; the PostgreSQL schema is in `pg/schema.rs`.
//!
//! # Key layout (all integers big-endian so that sled's byte order is numeric order)
//!
//! | tree            | key                                   | value                                  |
//! |-----------------|---------------------------------------|----------------------------------------|
//! | `accounts`      | email (lower-case UTF-8)              | [`Account`] (record, see [`enc`])      |
//! | `mailbox_names` | account_id u64 ‖ mailbox name (UTF-8) | mailbox_id u64                         |
//! | `mailboxes`     | mailbox_id u64                        | [`MailboxMeta`] (record)               |
//! | `messages`      | mailbox_id u64 ‖ uid u32              | [`MessageMeta`] (record)               |
//! | `blobs`         | blob_id u64                           | exact message bytes (≤ 64 KiB)         |
//! | `blob_files`    | blob_id u64                           | length u64 of a body kept as a file    |
//! | `blob_refs`     | blob_id u64                           | reference count u32                    |
//! | `blob_cache`    | blob_id u64                           | derived data (IMAP's parsed structure) |
//! | `queue`         | queue_id u64                          | [`QueueRecord`] (record)               |
//! | `queue_due`     | next_attempt u64 ‖ queue_id u64       | empty (due-time index of `queue`)      |
//! | `aliases`       | `user@domain` or `@domain` (lower-case) | [`alias::Alias`] (record)            |
//! | `subscriptions` | account_id u64 ‖ mailbox name (UTF-8) | empty (IMAP subscriptions, format ≥ 2) |
//! | `changes`       | mailbox_id u64 ‖ modseq u64 ‖ uid u32 | empty (modseq index, `modseq.rs`, ≥ 3) |
//! | `vanished`      | mailbox_id u64 ‖ modseq u64 ‖ uid u32 | empty (expunge log, `modseq.rs`, ≥ 3)  |
//! | `quota`         | account_id u64                        | [`quota::Quota`] (record): limit, usage |
//! | `greylist`      | triplet records, expiry index, count  | see `greylist.rs` (RFC 6647)           |
//! | `meta`          | `format_version`, `id_base`, `quota_counted` | u32 / u64 (`format.rs`) / marker |
//!
//! # Invariants
//! - A UID is never reused within a mailbox's UIDVALIDITY: `uidnext` only grows, in the same
//!   transaction that inserts the message.
//! - `MailboxMeta::{messages, unseen}` equal what a scan of `messages` would count; every update that
//!   changes one changes the other in the same transaction.
//! - A blob lives exactly as long as some message or queue record references it (`blob_refs`).
//!   Its bytes are in `blobs` or, when larger than 64 KiB, in a file named by `blob_files`
//!   (`files.rs`: written and fsynced before its transaction, unlinked only after the removal
//!   is durable, orphans swept at open).
//! - Nothing is acknowledged to a client before [`Store::durable`] has returned: writes go to sled in
//!   a transaction, then wait for a flush that started after the write (group commit). The one
//!   write that is not an acknowledged command, IMAP's implicit `\Seen`, uses
//!   [`Store::commit_soon`]: it rides the next flush, which every later `durable` or
//!   [`Store::settled`] waits for (sled's log is ordered). docs/imap.md, "Durability per
//!   command", is the promise per IMAP command.
//! - `quota` usage equals the sum of the sizes (and the number) of the account's messages; every
//!   change of an account's messages changes it in the same transaction (`quota.rs`).
//! - `queue_due` has exactly one key per `queue` record, `(next_attempt, id)`, written in the same
//!   transaction as the record.
//! - Ids (accounts, mailboxes, blobs, queue entries) come from sled's `generate_id` (plus the
//!   `id_base` a restore sets, `format.rs`): unique forever, never reused after a crash.
//! - Every message record has one `changes` key at its modseq, written in the same transaction;
//!   every expunge writes its UID to `vanished` in the same transaction (`modseq.rs`).
//! - Every write transaction holds [`Sled::write_gate`] (shared); `backup.rs` and `check.rs` take
//!   it exclusively for a consistent point in time across trees. Never take it twice on one thread.

pub mod account;
pub mod alias;
pub mod backup;
pub mod check;
mod dispatch;
mod files;
pub mod format;
pub mod greylist;
mod imap_ext;
mod mailbox;
mod message;
mod migrate;
mod modseq;
pub mod multiappend;
mod pg;
mod queue;
pub mod quota;
mod sync;

pub use account::Account;
pub use greylist::{Policy as GreylistPolicy, Verdict as GreylistVerdict};
pub use mailbox::{MailboxInfo, MailboxMeta, SpecialUse, DEFAULT_MAILBOXES, MAX_SUBSCRIPTIONS};
pub use message::{Appended, FlagOp, MessageMeta};
pub use migrate::MigrateSummary;
pub use modseq::{Changes, VANISHED_KEEP};
pub use queue::{Bounce, QueueRecord, RcptState, RcptStatus};
pub use sync::{failed, failure, RESERVE};

use std::path::Path;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::{broadcast, watch, Mutex};

/// Errors of the store. `NotFound`/`Exists`/`Invalid` are the caller's mistake and are shown to
/// users; `Full` (the disk is full: refused before sled could be hurt, or ENOSPC) and
/// `Unavailable` (another I/O error) are temporary; `Db` is corruption or a bug.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("store: not enough disk space: {0}")]
    Full(String),
    #[error("store: {0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("store: {0}")]
    Db(String),
    /// The account's storage limit (`tanba user quota`) does not leave room (RFC 9208).
    #[error("{0}")]
    OverQuota(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// An I/O error: `Full` for ENOSPC/EDQUOT, else `Unavailable`.
    pub(crate) fn from_io(what: String, e: std::io::Error) -> StoreError {
        match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => StoreError::Full(format!("{what}: {e}")),
            _ => StoreError::Unavailable(format!("{what}: {e}")),
        }
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        match e {
            // sled keeps a failed log write as its state for good (sync.rs): report it so that
            // `serve` exits for a restart.
            sled::Error::Io(io) => {
                sync::fail(&io.to_string());
                StoreError::from_io("database".into(), io)
            }
            e => StoreError::Db(e.to_string()),
        }
    }
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> Self {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => e.into(),
        }
    }
}

impl From<StoreError> for ConflictableTransactionError<StoreError> {
    fn from(e: StoreError) -> Self {
        ConflictableTransactionError::Abort(e)
    }
}

/// Which backend holds the store (`[store]`, SPEC §13; docs/cluster.md).
#[derive(Clone, PartialEq, Eq)]
pub enum Backend {
    /// The embedded database in `data_dir/store` (the default).
    Embedded,
    /// A PostgreSQL database (docs/cluster.md):
    /// `store.url`, `store.pool` connections, `store.ca_file` for TLS (None: system roots).
    Postgres {
        url: String,
        pool: usize,
        ca_file: Option<std::path::PathBuf>,
    },
}

impl std::fmt::Debug for Backend {
    // The URL may hold a password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Embedded => f.write_str("Embedded"),
            Backend::Postgres { .. } => f.write_str("Postgres { url: <hidden> }"),
        }
    }
}

/// Checks the shape of `store.url` (a PostgreSQL URL) without connecting; the message never
/// repeats the URL.
pub fn check_postgres_url(url: &str) -> std::result::Result<(), String> {
    pg::check_url(url)
}

/// Whether `store.url` has the server's certificate checked (sslmode verify-ca/verify-full),
/// the modes `store.ca_file` is for.
pub fn postgres_url_verifies(url: &str) -> bool {
    pg::url_verifies(url)
}

pub use pg::{DEFAULT_POOL, MAX_POOL};

/// A change that IMAP sessions (IDLE, NOOP) may want to hear about. Receivers compare the mailbox
/// id with the one they have selected and re-read the store; a lagged receiver simply re-reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub account_id: u64,
    pub mailbox_id: u64,
}

impl Change {
    /// "Changes may have been missed" (the PostgreSQL backend after its LISTEN connection came
    /// back, docs/cluster.md): every receiver re-reads its mailbox, as a lagged one does.
    /// Mailbox ids start at 1, so no real change looks like this.
    pub fn resync() -> Change {
        Change {
            account_id: 0,
            mailbox_id: 0,
        }
    }

    pub fn is_resync(&self) -> bool {
        self.mailbox_id == 0
    }
}

/// The store handle the rest of the program uses. Clone freely: all clones share one database.
/// Each public method dispatches to the backend (`dispatch.rs`; docs/cluster.md, "Design").
#[derive(Clone)]
pub struct Store {
    b: Inner,
}

#[derive(Clone)]
enum Inner {
    Sled(Sled),
    Postgres(pg::Pg),
}

/// The embedded backend. Clone freely: all clones share one database and one flusher.
#[derive(Clone)]
pub(crate) struct Sled {
    db: sled::Db,
    t: Arc<Trees>,
    files: Arc<files::Files>,
    sync: Arc<sync::Durability>,
    commit: Arc<GroupCommit>,
    changes: broadcast::Sender<Change>,
    /// Shared by write transactions, exclusive for backups and checks (`backup.rs`).
    gate: Arc<std::sync::RwLock<()>>,
    /// Added to sled's ids: set by a restore so that no id of the backup is handed out again.
    id_base: u64,
    /// Message records decoded (`modseq.rs`, `Sled::record_reads` in tests).
    reads: Arc<std::sync::atomic::AtomicU64>,
    /// Held from a SUBSCRIBE's count to its insert, so that two at once cannot both pass the
    /// limit check (`mailbox.rs`, [`MAX_SUBSCRIPTIONS`]).
    subscribing: Arc<std::sync::Mutex<()>>,
}

pub(crate) struct Trees {
    pub accounts: sled::Tree,
    pub mailbox_names: sled::Tree,
    pub mailboxes: sled::Tree,
    pub messages: sled::Tree,
    pub blobs: sled::Tree,
    pub blob_files: sled::Tree,
    pub blob_refs: sled::Tree,
    pub blob_cache: sled::Tree,
    pub queue: sled::Tree,
    pub queue_due: sled::Tree,
    pub aliases: sled::Tree,
    pub subscriptions: sled::Tree,
    pub changes: sled::Tree,
    pub vanished: sled::Tree,
    pub quota: sled::Tree,
}

impl Sled {
    /// Opens (or creates) the store in `dir`. Fails with a clear message when another process
    /// (a running `tanba serve`) holds it, or when its format is newer than this binary knows.
    pub fn open(dir: &Path) -> Result<Sled> {
        Self::open_with(dir, true)
    }

    /// `sweep`: remove body files no record names (see `files.rs`); `tanba store check` opens
    /// without, so that it reports them instead.
    pub(crate) fn open_with(dir: &Path, sweep: bool) -> Result<Sled> {
        // Mode 0700 for what is created here; sled's own files get 0600 from the umask that
        // commands writing into data_dir set (crate::perms).
        crate::perms::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("creating {}: {e}", dir.display())))?;
        let open = || {
            sled::Config::new()
                .path(dir)
                .cache_capacity(32 * 1024 * 1024)
                .mode(sled::Mode::HighThroughput)
                // Durability comes from our own group-committed flushes, not a timer.
                .flush_every_ms(None)
                .open()
        };
        // sled's lock is released when the last of its threads lets go of the file, which can
        // be a moment after a `Store` in this process was dropped (a reopen in tests): a lock
        // that stays taken for a second is another process's.
        let locked = |r: &sled::Result<sled::Db>| matches!(r, Err(e) if lock_taken(e));
        let open = || {
            let mut r = open();
            for _ in 0..20 {
                if !locked(&r) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
                r = open();
            }
            r
        };
        let db = match open() {
            // sled reads the newest `snap.*` file, even a `snap.<lsn>.generating` that a full
            // disk or a crash left incomplete, and then refuses to open at all. Such a file
            // is by sled's design not yet valid (it renames it once complete and synced), so
            // without it sled recovers from the previous snapshot and the log. A corruption
            // error means this process held sled's lock: no other process is writing one.
            Err(sled::Error::Corruption { .. }) if sync::remove_partial_snapshots(dir)? > 0 => {
                open()
            }
            r => r,
        }
        .map_err(|e| match e {
            e if lock_taken(&e) => StoreError::Db(format!(
                "the store in {} is in use by another process (is `tanba serve` running?)",
                dir.display()
            )),
            e => StoreError::Db(format!("opening {}: {e}", dir.display())),
        })?;
        let tree = |name: &str| db.open_tree(name);
        let t = Trees {
            accounts: tree("accounts")?,
            mailbox_names: tree("mailbox_names")?,
            mailboxes: tree("mailboxes")?,
            messages: tree("messages")?,
            blobs: tree("blobs")?,
            blob_files: tree("blob_files")?,
            blob_refs: tree("blob_refs")?,
            blob_cache: tree("blob_cache")?,
            queue: tree("queue")?,
            queue_due: tree("queue_due")?,
            aliases: tree("aliases")?,
            subscriptions: tree(format::SUBSCRIPTIONS_TREE)?,
            changes: tree("changes")?,
            vanished: tree("vanished")?,
            quota: tree("quota")?,
        };
        let id_base = format::check_and_migrate(&db, dir)?;
        let files = Arc::new(files::Files::open(dir)?);
        if sweep {
            let orphans = files.sweep(|id| Ok(t.blob_files.contains_key(u64_key(id))?))?;
            if orphans > 0 {
                tracing::info!("removed {orphans} message files no transaction committed");
            }
        }
        let sync = Arc::new(sync::Durability::open(dir)?);
        let (changes, _) = broadcast::channel(4096);
        let store = Sled {
            db: db.clone(),
            t: Arc::new(t),
            files: files.clone(),
            sync: sync.clone(),
            commit: Arc::new(GroupCommit::new(db, files, sync)),
            changes,
            gate: Arc::new(std::sync::RwLock::new(())),
            id_base,
            reads: Arc::default(),
            subscribing: Arc::default(),
        };
        store.count_quotas_once()?;
        Ok(store)
    }

    /// Opens the store in `dir` only if one is there: admin commands (SPEC §9) never create a
    /// store, so a wrong `--config` cannot leave an empty one behind. `NotFound` when `dir` holds
    /// no store.
    pub fn open_existing(dir: &Path) -> Result<Sled> {
        // sled 0.34 writes `conf` and `db` when it creates a database.
        if !dir.join("db").is_file() {
            return Err(StoreError::NotFound(format!(
                "a store in {}",
                dir.display()
            )));
        }
        Self::open(dir)
    }

    /// Waits until everything written before this call is on disk. Concurrent callers share one
    /// sled flush and one `fdatasync` (sync.rs): a caller waits for the first flush that
    /// *started* after it called (group commit).
    pub async fn durable(&self) -> Result<()> {
        self.commit.wait().await
    }

    /// Starts a group commit covering everything written before this call, without waiting for
    /// it: the flusher runs back to back, so the writes are on disk one or two flushes later
    /// (milliseconds). For writes no acknowledgement promises (IMAP's implicit `\Seen`,
    /// docs/imap.md "Durability per command"); [`Store::settled`] and every later
    /// [`Store::durable`] wait for it.
    pub async fn commit_soon(&self) {
        self.commit.request().await;
    }

    /// Waits until every group commit requested so far ([`Store::durable`] or
    /// [`Store::commit_soon`], by any caller) has finished; returns at once when none is
    /// pending. IMAP's CHECK and LOGOUT use it as a barrier.
    pub async fn settled(&self) -> Result<()> {
        self.commit.settled().await
    }

    /// Flushes synchronously (CLI commands that open the store directly, shutdown).
    pub fn flush_sync(&self) -> Result<()> {
        let doomed = self.files.take_doomed();
        match flush_and_sync(&self.db, &self.sync) {
            Ok(()) => {
                self.files.unlink(&doomed);
                Ok(())
            }
            Err(e) => {
                self.files.doom(doomed);
                Err(e)
            }
        }
    }

    /// Bytes the store takes on disk: sled's files (its log and large values, measured now)
    /// and the message files (a running total, `files.rs`). For the metrics.
    pub fn size_bytes(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()? + self.files.bytes())
    }

    /// Refuses with [`StoreError::Full`] unless `need` more bytes leave [`RESERVE`] free.
    pub(crate) fn check_space(&self, need: u64) -> Result<()> {
        sync::check_space(self.files.dir(), need)
    }

    /// Subscribes to mailbox changes (new messages, flag changes, expunges).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub(crate) fn notify(&self, account_id: u64, mailbox_id: u64) {
        let _ = self.changes.send(Change {
            account_id,
            mailbox_id,
        });
    }

    pub(crate) fn next_id(&self) -> Result<u64> {
        // generate_id starts at 0; keep 0 free as "none".
        Ok(self.db.generate_id()? + 1 + self.id_base)
    }
}

/// Group commit: one flush at a time; each flush covers every write registered before it began.
struct GroupCommit {
    db: sled::Db,
    sync: Arc<sync::Durability>,
    /// Message files to unlink once the removal of their last reference is durable.
    files: Arc<files::Files>,
    /// Serial of the newest registered write (guarded so that registering and starting a flush
    /// are ordered).
    state: Mutex<CommitState>,
    /// Serial up to which writes are known durable; the error when the last flush failed.
    done: watch::Sender<(u64, Option<StoreError>)>,
}

struct CommitState {
    requested: u64,
    flushing: bool,
}

impl GroupCommit {
    fn new(db: sled::Db, files: Arc<files::Files>, sync: Arc<sync::Durability>) -> Self {
        let (done, _) = watch::channel((0, None));
        GroupCommit {
            db,
            sync,
            files,
            state: Mutex::new(CommitState {
                requested: 0,
                flushing: false,
            }),
            done,
        }
    }

    /// Registers a write and makes sure a flusher runs; returns the write's serial.
    async fn request(self: &Arc<Self>) -> u64 {
        let mut s = self.state.lock().await;
        s.requested += 1;
        if !s.flushing {
            s.flushing = true;
            let this = self.clone();
            tokio::spawn(async move { this.flusher().await });
        }
        s.requested
    }

    async fn wait(self: &Arc<Self>) -> Result<()> {
        let rx = self.done.subscribe();
        let my = self.request().await;
        self.wait_for(rx, my).await
    }

    async fn settled(&self) -> Result<()> {
        let rx = self.done.subscribe();
        let my = self.state.lock().await.requested;
        self.wait_for(rx, my).await
    }

    async fn wait_for(
        &self,
        mut rx: watch::Receiver<(u64, Option<StoreError>)>,
        my: u64,
    ) -> Result<()> {
        loop {
            {
                let v = rx.borrow_and_update();
                if v.0 >= my {
                    return match &v.1 {
                        None => Ok(()),
                        Some(e) => Err(e.clone()),
                    };
                }
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Db("flusher stopped".into()));
            }
        }
    }

    async fn flusher(self: Arc<Self>) {
        loop {
            let target = {
                let mut s = self.state.lock().await;
                if self.done.borrow().0 >= s.requested {
                    s.flushing = false;
                    return;
                }
                s.requested
            };
            let db = self.db.clone();
            let sync = self.sync.clone();
            // Removals committed before this point are covered by the flush below.
            let doomed = self.files.take_doomed();
            let files = self.files.clone();
            let res = tokio::task::spawn_blocking(move || {
                let r = flush_and_sync(&db, &sync);
                if r.is_ok() {
                    files.unlink(&doomed);
                } else {
                    files.doom(doomed);
                }
                r
            })
            .await;
            let err = match res {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(StoreError::Db(format!("flush task: {e}"))),
            };
            self.done.send_replace((target, err));
        }
    }
}

/// One group commit: sled's flush (pwrite + sync_file_range), then `fdatasync` of what it
/// wrote (sync.rs). A failure of either is an I/O error under sled: the process must restart.
fn flush_and_sync(db: &sled::Db, sync: &sync::Durability) -> Result<()> {
    let start = std::time::Instant::now();
    db.flush()?;
    sync.sync().inspect_err(|e| sync::fail(&e.to_string()))?;
    crate::metrics::REGISTRY.store_sync.observe(start.elapsed());
    Ok(())
}

// ---- small encoding helpers shared by the submodules ----

/// Records are MessagePack with structs as arrays (rmp-serde's `to_vec`): no field names, and
/// each struct carries its own length, so a field *appended* to a record type with
/// `#[serde(default)]` reads as its default from records written before it (docs/ARCHITECTURE.md,
/// "Record encoding"; `format.rs` migrated the JSON of format 1).
pub(crate) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("store records always serialize")
}

/// Reads a record: MessagePack, or the JSON of format 1 (a JSON record starts with `{`, which a
/// MessagePack struct, an array, never does), so a store whose migration a crash interrupted
/// still reads.
pub(crate) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    if b.first() == Some(&b'{') {
        return dec_json(b);
    }
    rmp_serde::from_slice(b).map_err(|e| StoreError::Db(format!("corrupt record: {e}")))
}

/// A record in format 1's JSON.
pub(crate) fn dec_json<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| StoreError::Db(format!("corrupt record: {e}")))
}

/// A store in a fresh temporary directory, for unit tests (kept while the `TempDir` lives).
#[cfg(test)]
pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

/// The embedded backend in a fresh temporary directory, for the store's own unit tests.
#[cfg(test)]
pub(crate) fn temp_sled() -> (tempfile::TempDir, Sled) {
    let dir = tempfile::tempdir().unwrap();
    let s = Sled::open(dir.path()).unwrap();
    (dir, s)
}

pub(crate) fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn key2(a: u64, b: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub(crate) fn read_u64(b: &[u8]) -> Result<u64> {
    b.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| StoreError::Db("corrupt id".into()))
}

pub(crate) fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// sled's "the lock on `db` is taken" (another process, or a moment after a `Store` of this
/// process was dropped): an `Other` I/O error wrapping the `flock` error (sled 0.34
/// `Config::try_lock`), so it is told by its text, with the plain `EWOULDBLOCK` kinds too.
fn lock_taken(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.raw_os_error() == Some(libc::EWOULDBLOCK)
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    /// A store held open elsewhere is refused with words an operator understands, after the
    /// short wait for a lock that is about to be let go; once the holder is gone it opens.
    #[test]
    fn a_store_in_use_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let held = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("second open refused");
        assert!(
            err.to_string().contains("is in use by another process"),
            "{err}"
        );
        drop(held);
        Store::open(dir.path()).expect("opens once the first is dropped");
    }
}
