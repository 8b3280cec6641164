//! Message bodies as files beside the sled database.
//!
//! Why: sled 0.34 keeps the values it has read or written in memory far beyond its
//! `cache_capacity` (it weighs a large value by its on-disk pointer, and even 30 KB values
//! were never evicted): a server that stored 1.6 GB of 5 MB messages held 1.4 GB of RSS, and
//! reading 24,000 messages of 30 KB grew it to 1.1 GB (docs/benchmarks.md, "Memory"). Bodies
//! therefore live in `<store>/messages/<xx>/<blob id hex>`, read on demand (the kernel's page
//! cache does the caching), while sled keeps only metadata and `blob_files: id → length`.
//! Bodies of at most [`INLINE_MAX`] bytes (0: only empty ones) and bodies stored by earlier
//! versions stay in the `blobs` tree; reads look there first.
//!
//! Invariants:
//! - A file is complete and fsynced (data, then its directory entry) *before* the transaction
//!   that references it starts, so a durable `blob_files` entry always has its file. These
//!   fsyncs run in the sessions' blocking threads, concurrently, so the filesystem journals
//!   them together; the metadata still goes through the one group-committed sled flush.
//! - A file is unlinked only after the transaction that dropped its last reference is durable:
//!   removals queue here and the group-commit flusher unlinks them after the next flush.
//! - A file without a `blob_files` entry is an orphan (a crash between writing the file and
//!   committing its transaction, or before a deferred unlink): [`Files::sweep`] removes those
//!   when the store opens, before anything else runs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use super::{Result, StoreError};

/// Bodies larger than this go to files: all of them (see the module docs for why).
pub(crate) const INLINE_MAX: usize = 0;

/// Whether a body of `len` bytes is kept as a file (else inline in the `blobs` tree).
pub(crate) fn is_file(len: usize) -> bool {
    len > INLINE_MAX
}

pub(crate) struct Files {
    dir: PathBuf,
    /// Ids whose last reference is gone; unlinked after the next durable flush.
    doomed: Mutex<Vec<u64>>,
    /// While above 0 (a backup or check reads files of its snapshot), removals wait.
    pub(super) hold: std::sync::atomic::AtomicUsize,
    /// Bytes of the files here: summed by [`Files::sweep`] at open, then kept up to date by
    /// every write and removal below (the store's size in the metrics, without a scan).
    bytes: AtomicU64,
}

fn io_err(what: &str, p: &Path, e: std::io::Error) -> StoreError {
    StoreError::from_io(format!("{what} {}", p.display()), e)
}

/// Makes a directory entry durable (Linux: fsync on the directory).
fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing", dir, e))
}

impl Files {
    pub(crate) fn open(store_dir: &Path) -> Result<Files> {
        let dir = store_dir.join("messages");
        // All 256 fan-out directories exist (and are durable) before any body is written, so
        // writing a body never has to look for or create its directory.
        let mut created = false;
        for i in 0..=0xffu64 {
            let sub = dir.join(format!("{i:02x}"));
            if !sub.is_dir() {
                crate::perms::create_dir_all(&sub).map_err(|e| io_err("creating", &sub, e))?;
                created = true;
            }
        }
        if created {
            sync_dir(&dir)?;
            sync_dir(store_dir)?;
        }
        Ok(Files {
            dir,
            doomed: Mutex::new(Vec::new()),
            hold: std::sync::atomic::AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes of the message files (see the field).
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }

    /// Removes a file, taking its size off [`Files::bytes`].
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        std::fs::remove_file(path)?;
        let _ = self
            .bytes
            .fetch_update(Relaxed, Relaxed, |b| Some(b.saturating_sub(len)));
        Ok(())
    }

    pub(super) fn path(&self, id: u64) -> PathBuf {
        self.dir
            .join(format!("{:02x}", id & 0xff))
            .join(format!("{id:016x}"))
    }

    /// Writes the bodies that are kept as files ([`is_file`]), each durable (data, then its
    /// directory entry), before the transaction that references them. On an error, the ones
    /// already written are removed again.
    /// Refuses with [`StoreError::Full`] when the bodies would leave less than
    /// [`RESERVE`](super::sync::RESERVE) free (sync.rs: sled must never run out of space).
    pub(crate) fn write_all(&self, bodies: &[(u64, &[u8])]) -> Result<()> {
        let need: u64 = bodies
            .iter()
            .filter(|(_, b)| is_file(b.len()))
            .map(|(_, b)| b.len() as u64)
            .sum();
        if !bodies.is_empty() {
            super::sync::check_space(&self.dir, need)?;
        }
        for (i, (id, bytes)) in bodies.iter().enumerate() {
            if !is_file(bytes.len()) {
                continue;
            }
            if let Err(e) = self.write(*id, bytes) {
                self.remove_unreferenced(&bodies[..i]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The outcome of the transaction that references `bodies` (written by
    /// [`Files::write_all`]): its value if it committed, else its error, with the files removed.
    pub(crate) fn settle<T, E>(
        &self,
        outcome: std::result::Result<T, E>,
        bodies: &[(u64, &[u8])],
    ) -> Result<T>
    where
        StoreError: From<E>,
    {
        outcome.map_err(|e| {
            self.remove_unreferenced(bodies);
            e.into()
        })
    }

    /// Removes the files [`Files::write_all`] wrote for a transaction that did not commit.
    pub(crate) fn remove_unreferenced(&self, bodies: &[(u64, &[u8])]) {
        for (id, bytes) in bodies {
            if is_file(bytes.len()) {
                let _ = self.remove(&self.path(*id));
            }
        }
    }

    /// Writes one new body file and makes it durable (data, then its directory entry).
    fn write(&self, id: u64, bytes: &[u8]) -> Result<()> {
        let path = self.path(id);
        let parent = path.parent().unwrap_or(&self.dir);
        // Mode 0600: mail is for the server's user only (crate::perms).
        let mut f = crate::perms::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_err("creating", &path, e))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_data())
            .map_err(|e| io_err("writing", &path, e))?;
        self.bytes.fetch_add(bytes.len() as u64, Relaxed);
        sync_dir(parent)
    }

    /// Reads a body of the recorded length.
    pub(crate) fn read(&self, id: u64, len: u64) -> Result<Vec<u8>> {
        let path = self.path(id);
        let data = std::fs::read(&path).map_err(|e| io_err("reading", &path, e))?;
        if data.len() as u64 != len {
            return Err(StoreError::Db(format!(
                "{}: {} bytes, the store recorded {len}",
                path.display(),
                data.len()
            )));
        }
        Ok(data)
    }

    /// Queues files whose last reference a committed transaction removed.
    pub(crate) fn doom(&self, ids: impl IntoIterator<Item = u64>) {
        let mut d = self.doomed.lock().unwrap_or_else(|e| e.into_inner());
        d.extend(ids);
    }

    /// Takes the queued removals; call *before* starting a flush, unlink after it succeeded.
    pub(crate) fn take_doomed(&self) -> Vec<u64> {
        if self.hold.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            // A backup still reads the files of its snapshot: unlink after it (next flush).
            return Vec::new();
        }
        std::mem::take(&mut *self.doomed.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn unlink(&self, ids: &[u64]) {
        for &id in ids {
            if let Err(e) = self.remove(&self.path(id)) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!("removing message file {}: {e}", self.path(id).display());
                }
            }
        }
    }

    /// Removes files that no `blob_files` entry names (see the module docs). Returns how many.
    pub(crate) fn sweep(&self, referenced: impl Fn(u64) -> Result<bool>) -> Result<usize> {
        let mut removed = 0;
        let rd = std::fs::read_dir(&self.dir).map_err(|e| io_err("reading", &self.dir, e))?;
        for sub in rd.flatten() {
            let Ok(files) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let Some(id) = name.to_str().and_then(|n| u64::from_str_radix(n, 16).ok()) else {
                    continue;
                };
                if !referenced(id)? {
                    std::fs::remove_file(f.path()).map_err(|e| io_err("removing", &f.path(), e))?;
                    removed += 1;
                } else {
                    let len = f.metadata().map_or(0, |m| m.len());
                    self.bytes.fetch_add(len, Relaxed);
                }
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sled;
    use super::INLINE_MAX;

    fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for sub in std::fs::read_dir(dir.join("messages")).unwrap().flatten() {
            for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
                out.push(f.path());
            }
        }
        out
    }

    fn big(n: usize) -> Vec<u8> {
        let mut v = b"Subject: big\r\n\r\n".to_vec();
        v.extend((0..n).map(|i| b'a' + (i % 26) as u8));
        v
    }

    #[test]
    fn large_bodies_live_in_files_shared_by_copies_and_removed_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        let acct = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(acct.id, "INBOX").unwrap().unwrap();
        let trash = s.mailbox(acct.id, "Trash").unwrap().unwrap();
        let small = b"Subject: small\r\n\r\nhi\r\n".to_vec();
        let large = big(INLINE_MAX + 1);
        let a = s.append(inbox.id, &small, &[], 0).unwrap();
        let b = s.append(inbox.id, &large, &[], 0).unwrap();
        // Both are files (INLINE_MAX is 0) and read back byte for byte.
        assert_eq!(files_in(dir.path()).len(), 2);
        let meta = |uid| s.message(inbox.id, uid).unwrap().unwrap();
        assert_eq!(&*s.blob(meta(a.uid).blob_id).unwrap().unwrap(), &small[..]);
        assert_eq!(&*s.blob(meta(b.uid).blob_id).unwrap().unwrap(), &large[..]);
        // A copy shares the file; expunging the original keeps it, the other one goes.
        s.copy_messages(inbox.id, &[b.uid], trash.id).unwrap();
        s.expunge(inbox.id, &[a.uid, b.uid]).unwrap();
        assert_eq!(files_in(dir.path()).len(), 2);
        s.flush_sync().unwrap();
        assert_eq!(files_in(dir.path()).len(), 1);
        let copy = s.messages(trash.id).unwrap()[0].clone();
        assert_eq!(&*s.blob(copy.blob_id).unwrap().unwrap(), &large[..]);
        // The last reference goes: the file stays until the removal is durable, then goes.
        s.expunge(trash.id, &[copy.uid]).unwrap();
        assert_eq!(files_in(dir.path()).len(), 1);
        s.flush_sync().unwrap();
        assert!(files_in(dir.path()).is_empty());
        assert!(s.blob(copy.blob_id).unwrap().is_none());
    }

    #[test]
    fn queued_large_bodies_are_files_released_with_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        let rec = s
            .new_queue_record("a@x.test", &["b@y.test".to_string()])
            .unwrap();
        let body = big(INLINE_MAX + 10);
        s.deliver(&[], b"unused", 0, Some((&rec, &body))).unwrap();
        let rec = s.queue_get(rec.id).unwrap().unwrap();
        assert_eq!(&*s.blob(rec.blob_id).unwrap().unwrap(), &body[..]);
        assert_eq!(files_in(dir.path()).len(), 1);
        s.queue_remove(rec.id).unwrap();
        s.flush_sync().unwrap();
        assert!(files_in(dir.path()).is_empty());
    }

    #[test]
    fn file_bytes_and_queue_summary_follow_writes_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        assert_eq!(s.files.bytes(), 0);
        assert_eq!(s.queue_summary().unwrap(), (0, None));
        let acct = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(acct.id, "INBOX").unwrap().unwrap();
        let a = s.append(inbox.id, &big(1000), &[], 0).unwrap();
        let first = s
            .new_queue_record("a@x.test", &["b@y.test".to_string()])
            .unwrap();
        s.deliver(&[], b"unused", 0, Some((&first, &big(300))))
            .unwrap();
        let mut second = s
            .new_queue_record("a@x.test", &["c@y.test".to_string()])
            .unwrap();
        second.created += 100;
        s.deliver(&[], b"unused", 0, Some((&second, &big(50))))
            .unwrap();
        let sizes = (big(1000).len() + big(300).len() + big(50).len()) as u64;
        assert_eq!(s.files.bytes(), sizes);
        assert_eq!(
            s.queue_summary().unwrap(),
            (2, Some(first.created)),
            "the oldest is the first queued"
        );
        assert!(s.size_bytes().unwrap() > sizes);
        // Removed files leave the total once their removal is durable (then they are unlinked).
        s.expunge(inbox.id, &[a.uid]).unwrap();
        s.queue_remove(first.id).unwrap();
        s.flush_sync().unwrap();
        assert_eq!(s.files.bytes(), big(50).len() as u64);
        assert_eq!(s.queue_summary().unwrap(), (1, Some(second.created)));
        drop(s);
        // At open, the total is what the files on disk hold.
        let s = Sled::open(dir.path()).unwrap();
        assert_eq!(s.files.bytes(), big(50).len() as u64);
    }

    #[test]
    fn orphan_files_are_swept_at_open_and_referenced_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Sled::open(dir.path()).unwrap();
            let acct = s.create_account("a@x.test", "h").unwrap();
            let inbox = s.mailbox(acct.id, "INBOX").unwrap().unwrap();
            s.append(inbox.id, &big(INLINE_MAX * 3), &[], 0).unwrap();
            // What a crash between writing a file and committing its transaction leaves.
            s.files.write_all(&[(999_999, b"half a message")]).unwrap();
            s.flush_sync().unwrap();
            assert_eq!(files_in(dir.path()).len(), 2);
        }
        let s = Sled::open(dir.path()).unwrap();
        assert_eq!(files_in(dir.path()).len(), 1);
        let acct = s.account("a@x.test").unwrap().unwrap();
        let inbox = s.mailbox(acct.id, "INBOX").unwrap().unwrap();
        let m = s.messages(inbox.id).unwrap()[0].clone();
        assert_eq!(
            s.blob(m.blob_id).unwrap().unwrap().len(),
            big(INLINE_MAX * 3).len()
        );
    }

    #[test]
    fn a_truncated_file_is_an_error_not_a_short_message() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        let acct = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(acct.id, "INBOX").unwrap().unwrap();
        let a = s.append(inbox.id, &big(INLINE_MAX * 2), &[], 0).unwrap();
        let f = &files_in(dir.path())[0];
        std::fs::write(f, b"short").unwrap();
        let blob_id = s.message(inbox.id, a.uid).unwrap().unwrap().blob_id;
        assert!(s.blob(blob_id).is_err());
    }
}
