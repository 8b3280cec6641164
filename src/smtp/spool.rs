//! The message being received, in memory while small and in a spool file once it grows: no
//! number of sessions can make the server hold `sessions × smtp.max_message_size` of RAM.
//!
//! Up to [`MEMORY_LIMIT`] bytes a message stays in memory (the fast path: no file for ordinary
//! mail). Beyond it, the bytes go to a file in `<data_dir>/spool/` (directory 0700, file 0600
//! whatever the umask), written off the async workers in chunks of [`WRITE_CHUNK`], so a session
//! holds at most about `MEMORY_LIMIT` of message bytes however large the message is. The file is
//! unlinked when the [`Body`] is dropped — the transaction ended, however it ended (accepted,
//! refused, RSET, connection lost, shutdown) — and whatever a crash left behind is removed at
//! start-up ([`prepare`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Message bytes a session keeps in memory before it spools to a file.
pub const MEMORY_LIMIT: usize = 1 << 20;

/// Once spooling, bytes are written to the file in pieces of this size.
pub const WRITE_CHUNK: usize = 256 << 10;

/// The spool directory under `data_dir`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("spool")
}

/// Start-up: creates `<data_dir>/spool` (0700) and removes every file in it (messages whose
/// session a crash ended). Returns how many were removed.
pub fn prepare(data_dir: &Path) -> io::Result<usize> {
    let d = dir(data_dir);
    create_dir(&d)?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    let mut n = 0;
    for e in std::fs::read_dir(&d)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::remove_file(e.path())?;
            n += 1;
        }
    }
    Ok(n)
}

fn create_dir(d: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(d)
}

/// A spool file, unlinked on drop.
#[derive(Debug)]
struct SpoolFile {
    file: File,
    path: PathBuf,
}

impl SpoolFile {
    fn create(dir: &Path) -> io::Result<SpoolFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "{}-{}.msg",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create_dir(dir)?;
                open()?
            }
            r => r?,
        };
        Ok(SpoolFile { file, path })
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[derive(Debug)]
enum State {
    Keeping,
    /// More than the limit: counted, not kept.
    Overflowed,
    /// Refused for its content: counted, not kept.
    Discarded,
    /// The spool file could not be written.
    Failed(io::Error),
}

/// A message being received. The decoder appends to [`Body::buf`]; [`Body::settle`] then counts
/// the new bytes, enforces the size limit and spools when the buffer has grown.
#[derive(Debug)]
pub struct Body {
    limit: u64,
    dir: PathBuf,
    buf: Vec<u8>,
    file: Option<SpoolFile>,
    /// Bytes in the file.
    in_file: u64,
    /// Bytes counted but not kept (after an overflow or a refusal).
    dropped: u64,
    state: State,
}

impl Body {
    /// An empty message of at most `limit` bytes, spooling to `dir` once it passes
    /// [`MEMORY_LIMIT`].
    pub fn new(limit: u64, dir: PathBuf) -> Body {
        Body {
            limit,
            dir,
            buf: Vec::new(),
            file: None,
            in_file: 0,
            dropped: 0,
            state: State::Keeping,
        }
    }

    /// Where the decoder appends the next bytes; call [`Body::settle`] after appending.
    pub fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Counts what was appended since the last call: past the limit the message stops being
    /// kept (the spool file goes at once); past [`MEMORY_LIMIT`] in memory it is written to the
    /// spool file (off the async workers).
    pub async fn settle(&mut self) {
        if !matches!(self.state, State::Keeping) {
            self.dropped += self.buf.len() as u64;
            self.buf.clear();
            return;
        }
        if self.in_file + self.buf.len() as u64 > self.limit {
            self.stop_keeping(State::Overflowed);
            return;
        }
        let threshold = if self.file.is_some() {
            WRITE_CHUNK
        } else {
            MEMORY_LIMIT
        };
        if self.buf.len() >= threshold {
            self.spill().await;
        }
    }

    /// Stops keeping the message (refused for its content); it is still counted.
    pub fn discard(&mut self) {
        if matches!(self.state, State::Keeping) {
            self.stop_keeping(State::Discarded);
        }
    }

    fn stop_keeping(&mut self, state: State) {
        self.dropped += self.in_file + self.buf.len() as u64;
        self.in_file = 0;
        self.buf = Vec::new();
        self.file = None;
        self.state = state;
    }

    async fn spill(&mut self) {
        let first = self.file.is_none();
        let buf = std::mem::take(&mut self.buf);
        let file = self.file.take();
        let dir = self.dir.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut f = match file {
                Some(f) => f,
                None => SpoolFile::create(&dir)?,
            };
            f.file.write_all(&buf)?;
            Ok::<_, io::Error>((f, buf))
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        match written {
            Ok((f, mut buf)) => {
                self.in_file += buf.len() as u64;
                self.file = Some(f);
                if first {
                    // Give back the in-memory part's memory; from now on pieces are small.
                    buf = Vec::with_capacity(WRITE_CHUNK * 2);
                } else {
                    buf.clear();
                }
                self.buf = buf;
            }
            Err(e) => self.stop_keeping(State::Failed(e)),
        }
    }

    /// Whether more than the limit has arrived.
    pub fn overflowed(&self) -> bool {
        matches!(self.state, State::Overflowed)
    }

    /// Why the spool file could not be written, if it could not.
    pub fn failed(&self) -> Option<&io::Error> {
        match &self.state {
            State::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// Bytes received so far, kept or not.
    pub fn total(&self) -> u64 {
        self.in_file + self.buf.len() as u64 + self.dropped
    }

    /// Whether part of the message is in a spool file.
    pub fn spooled(&self) -> bool {
        self.file.is_some()
    }

    /// The whole message in memory (read back from the spool file off the async workers, which
    /// is then removed). Empty when it was not kept.
    pub async fn into_bytes(mut self) -> io::Result<Vec<u8>> {
        if let Some(e) = self.failed() {
            return Err(io::Error::new(e.kind(), e.to_string()));
        }
        let Some(file) = self.file.take() else {
            return Ok(std::mem::take(&mut self.buf));
        };
        let tail = std::mem::take(&mut self.buf);
        let in_file = self.in_file;
        tokio::task::spawn_blocking(move || {
            let mut f = file;
            let len = usize::try_from(in_file).map_err(io::Error::other)?;
            let mut out = Vec::with_capacity(len + tail.len());
            f.file.rewind()?;
            (&mut f.file).take(in_file).read_to_end(&mut out)?;
            if out.len() != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "spool file shorter than written",
                ));
            }
            out.extend_from_slice(&tail);
            drop(f);
            Ok(out)
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|r| r.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default()
    }

    async fn push(b: &mut Body, bytes: &[u8]) {
        b.buf().extend_from_slice(bytes);
        b.settle().await;
    }

    #[tokio::test]
    async fn small_messages_stay_in_memory() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path().join("spool");
        let mut b = Body::new(10 << 20, spool.clone());
        for _ in 0..100 {
            push(&mut b, &[7u8; 1000]).await;
        }
        assert!(!b.spooled());
        assert!(files(&spool).is_empty());
        assert_eq!(b.into_bytes().await.unwrap(), vec![7u8; 100_000]);
    }

    #[tokio::test]
    async fn large_messages_spool_and_come_back_whole() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path().join("spool");
        let mut b = Body::new(10 << 20, spool.clone());
        let mut want = Vec::new();
        for i in 0..(3 * MEMORY_LIMIT / 65536) {
            let chunk = vec![i as u8; 65536];
            want.extend_from_slice(&chunk);
            push(&mut b, &chunk).await;
            assert!(b.buf.len() < MEMORY_LIMIT);
        }
        push(&mut b, b"tail").await;
        want.extend_from_slice(b"tail");
        assert!(b.spooled());
        let f = files(&spool);
        assert_eq!(f.len(), 1);
        let meta = std::fs::metadata(&f[0]).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dmode = std::fs::metadata(&spool).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        assert_eq!(b.total(), want.len() as u64);
        assert_eq!(b.into_bytes().await.unwrap(), want);
        assert!(files(&spool).is_empty());
    }

    #[tokio::test]
    async fn overflow_and_discard_drop_the_file() {
        let d = tempfile::tempdir().unwrap();
        let spool = d.path().join("spool");
        let mut b = Body::new(3 << 20, spool.clone());
        push(&mut b, &vec![1u8; 2 << 20]).await;
        assert_eq!(files(&spool).len(), 1);
        push(&mut b, &vec![1u8; 2 << 20]).await;
        assert!(b.overflowed());
        assert!(files(&spool).is_empty());
        push(&mut b, b"more").await;
        assert_eq!(b.total(), (4 << 20) + 4);

        let mut b = Body::new(10 << 20, spool.clone());
        push(&mut b, &vec![1u8; 2 << 20]).await;
        assert_eq!(files(&spool).len(), 1);
        b.discard();
        assert!(files(&spool).is_empty());
        drop(b);

        let mut b = Body::new(10 << 20, spool.clone());
        push(&mut b, &vec![1u8; 2 << 20]).await;
        assert_eq!(files(&spool).len(), 1);
        drop(b);
        assert!(files(&spool).is_empty());
    }

    #[test]
    fn prepare_sweeps_and_tightens() {
        let d = tempfile::tempdir().unwrap();
        let spool = dir(d.path());
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(spool.join("1-1.msg"), b"left over").unwrap();
        assert_eq!(prepare(d.path()).unwrap(), 1);
        assert!(files(&spool).is_empty());
        let mode = std::fs::metadata(&spool).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
