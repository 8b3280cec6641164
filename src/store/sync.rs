//! What makes a flush durable, free space, and what happens when the disk fails under sled.
//!
//! # fdatasync after every sled flush
//! sled 0.34's `Db::flush` writes its log with `pwrite` and, on Linux, `sync_file_range`
//! (`pagecache/iobuf.rs`), never `fsync`/`fdatasync`: `sync_file_range` starts and waits for the
//! write-out of the page range but neither flushes the drive's write cache nor writes the inode
//! (the size of a log file that grew). So after each sled flush [`Durability::sync`] runs:
//! - `fdatasync` of the `db` file — sled's whole log (its "segments" are 512 KiB regions of this
//!   one file, reused in place after cleaning; growth changes its size, which `fdatasync` writes
//!   because the size is needed to read the data back) — through a descriptor opened once at
//!   start-up (an fsync acts on the inode, whichever descriptor names it);
//! - values too large for a segment (over about 128 KiB: a leaf node of large values) go to
//!   files `blobs/<lsn>` that sled writes without any sync and never changes afterwards: each one
//!   not seen before is `fdatasync`ed, then the `blobs` directory (its new entries).
//!
//! `conf` (written once when the store is created), the `db` file's and `blobs`' directory
//! entries are synced once at open. sled's snapshots (`snap.<lsn>`) are written, fsynced and
//! renamed by sled itself; losing the newest one only makes recovery replay more log.
//!
//! # Free space
//! sled cannot recover from a failed log write (see below), so the store refuses writes that add
//! message bodies while less than [`RESERVE`] bytes would remain free ([`StoreError::Full`]):
//! SMTP answers `452 4.3.1`, APPEND `NO [OVERQUOTA]`, and once space returns writes succeed
//! again without any restart. Flag changes, expunges and the like still work in the reserve.
//!
//! # An I/O error under sled is fatal for the process
//! Once sled's log write fails (ENOSPC despite the reserve, EIO, a read-only remount), sled keeps
//! the error forever: every later write fails although the disk may be fine again. Its memory
//! then also holds transactions that returned Ok but never reached the log; reopening sled in
//! the same process would silently drop them while some caller may still be about to wait for
//! them in [`Sled::durable`](super::Sled::durable) and acknowledge them. So the store reports
//! the failure ([`failed`]); `serve` then logs it and exits non-zero, and systemd's
//! `Restart=on-failure` starts a fresh process, which recovers from what is on disk. Nothing
//! acknowledged is lost: an acknowledgement needs a successful sled flush *and* fdatasync.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::{Result, StoreError};

/// Bytes that must stay free on the store's file system after a new message body is written:
/// room for sled to start new log segments (512 KiB each), write a snapshot, and for the flag
/// changes and expunges that free space again.
pub const RESERVE: u64 = 8 << 20;

/// The descriptors kept for syncing what sled wrote.
pub(crate) struct Durability {
    dir: PathBuf,
    log: File,
    log_id: (u64, u64),
    blobs: PathBuf,
    /// Names in `blobs/` already synced (sled never rewrites one).
    synced_blobs: Mutex<HashSet<OsString>>,
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> StoreError {
    StoreError::from_io(format!("{what} {}", p.display()), e)
}

fn sync_path(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_err("syncing", p, e))
}

impl Durability {
    /// Opens `db` once and makes what sled created at open durable (files and entries).
    pub(crate) fn open(dir: &Path) -> Result<Durability> {
        let db = dir.join("db");
        let log = File::open(&db).map_err(|e| io_err("opening", &db, e))?;
        let meta = log.metadata().map_err(|e| io_err("reading", &db, e))?;
        log.sync_all().map_err(|e| io_err("syncing", &db, e))?;
        let conf = dir.join("conf");
        if conf.exists() {
            sync_path(&conf)?;
        }
        let blobs = dir.join("blobs");
        let d = Durability {
            dir: dir.to_path_buf(),
            log,
            log_id: (meta.dev(), meta.ino()),
            blobs,
            synced_blobs: Mutex::new(HashSet::new()),
        };
        // Blobs left by earlier runs: sync them once too (cheap; usually none).
        d.sync_blobs()?;
        sync_path(&d.blobs)?;
        sync_path(dir)?;
        Ok(d)
    }

    /// After a sled flush: `fdatasync` of the log and of new blob files (see the module docs).
    /// Also notices a store whose `db` file was removed or replaced under the running server:
    /// writes to an unlinked file would succeed and vanish.
    pub(crate) fn sync(&self) -> Result<()> {
        let db = self.dir.join("db");
        match std::fs::metadata(&db) {
            Ok(m) if (m.dev(), m.ino()) == self.log_id => {}
            Ok(_) => {
                return Err(StoreError::Unavailable(format!(
                    "{} was replaced under the running server",
                    db.display()
                )))
            }
            Err(e) => return Err(io_err("checking", &db, e)),
        }
        self.log
            .sync_data()
            .map_err(|e| io_err("syncing", &db, e))?;
        self.sync_blobs()
    }

    fn sync_blobs(&self) -> Result<()> {
        let rd = std::fs::read_dir(&self.blobs).map_err(|e| io_err("reading", &self.blobs, e))?;
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = HashSet::new();
        let mut new = false;
        for entry in rd {
            let entry = entry.map_err(|e| io_err("reading", &self.blobs, e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                let p = entry.path();
                match File::open(&p) {
                    Ok(f) => f.sync_data().map_err(|e| io_err("syncing", &p, e))?,
                    // sled removed it meanwhile (garbage collection).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("opening", &p, e)),
                }
                new = true;
            }
            present.insert(name);
        }
        *synced = present;
        drop(synced);
        if new {
            sync_path(&self.blobs)?;
        }
        Ok(())
    }
}

/// Free bytes for the server's user on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Refuses with [`StoreError::Full`] when writing `need` bytes into `dir` would leave less than
/// [`RESERVE`] free.
pub(crate) fn check_space(dir: &Path, need: u64) -> Result<()> {
    let free = free_bytes(dir).map_err(|e| io_err("checking free space of", dir, e))?;
    if free < need.saturating_add(RESERVE) {
        return Err(StoreError::Full(format!(
            "{} has {} KiB free; a write of {} KiB must leave {} MiB",
            dir.display(),
            free / 1024,
            need.div_ceil(1024),
            RESERVE >> 20
        )));
    }
    Ok(())
}

static FAILED: OnceLock<String> = OnceLock::new();
static FAILED_NOTIFY: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Records that sled (or a sync of its files) failed with an I/O error: the process must be
/// restarted (module docs). The first reason is kept.
pub(crate) fn fail(why: &str) {
    if FAILED.set(why.to_string()).is_ok() {
        tracing::error!(
            "store: I/O error under the database: {why}; refusing writes until a restart"
        );
        FAILED_NOTIFY.notify_waiters();
        FAILED_NOTIFY.notify_one();
    }
}

/// Whether the store has failed (see [`fail`]).
pub fn failure() -> Option<&'static str> {
    FAILED.get().map(|s| s.as_str())
}

/// Resolves once the store has failed, with the reason.
pub async fn failed() -> &'static str {
    loop {
        let n = FAILED_NOTIFY.notified();
        if let Some(why) = failure() {
            return why;
        }
        n.await;
    }
}

/// Removes `snap.*.generating` files (incomplete sled snapshots, see `Sled::open`) from the
/// store directory. Returns how many.
pub(crate) fn remove_partial_snapshots(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let rd = std::fs::read_dir(dir).map_err(|e| io_err("reading", dir, e))?;
    for entry in rd.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let p = entry.path();
            std::fs::remove_file(&p).map_err(|e| io_err("removing", &p, e))?;
            tracing::warn!(
                "removed the incomplete sled snapshot {} (a full disk or a crash while it was \
                 written); recovering from the previous snapshot and the log",
                p.display()
            );
            removed += 1;
        }
    }
    if removed > 0 {
        sync_path(dir)?;
    }
    Ok(removed)
}
