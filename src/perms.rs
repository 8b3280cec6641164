//! File modes: what Tanba keeps in `data_dir` (mail, password hashes, keys) is for the server's
//! own user only, whatever umask it was started with (issue 11, finding 9).
//!
//! Three layers:
//! - Commands that may write into `data_dir` (all but `config` and `certs`) set the process
//!   umask to `077` before anything else ([`restrict_umask`]). This covers files that libraries
//!   create (sled's `db`, `conf`, `blobs/`, `snap.*`) and anything added later.
//! - Code that creates a directory or a file in `data_dir` asks for `0700` / `0600` itself
//!   ([`create_dir_all`], [`write()`], [`options`]), so it is right without the umask too.
//! - `serve` checks what it finds at start ([`check_at_start`]): `data_dir`, the store, the TLS
//!   key and the DKIM keys. Anything inside `data_dir` (not a symlink) that group or others may
//!   use is tightened (`chmod go-rwx`) with one warning line naming the path and both modes. A
//!   key outside `data_dir` belongs to the operator's setup, where a group that may read it is
//!   usual (`privkey.pem` readable by the `tanba` group, docs/operations.md): it gets a warning
//!   suggesting `chmod o-rwx` only when others may use it, and is left as it is. Once
//!   `data_dir` itself is `0700`, files below it that an earlier version left `0644` are out of
//!   other users' reach, so start-up does not walk the store.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::config::Config;

/// Mode of every directory Tanba creates in `data_dir`.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Tanba creates in `data_dir`.
pub const FILE_MODE: u32 = 0o600;

/// Sets the process umask to `077`: nothing created afterwards is open to group or others. Call
/// at the start of a command, before any thread is started (the umask is per process).
pub fn restrict_umask() {
    // SAFETY: umask only sets the process's file mode creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
}

/// `create_dir_all` with mode `0700` for every directory it creates (existing ones are left as
/// they are; [`check_at_start`] looks at those).
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Open options whose files, when created, have mode `0600`.
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Writes a whole file with mode `0600` (a file that existed with another mode gets `0600`).
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    f.write_all(data)
}

/// Writes `path` whole or not at all, mode `0600`: a temporary file beside it is written,
/// fsynced and renamed over `path`, then the directory is fsynced. A crash leaves the old file
/// or the new one, never half of one; the temporary file is removed on failure.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let r = (|| {
        let mut f = options()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        // A temporary file left by a crash keeps its old mode otherwise.
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Checks, at `serve`'s start, the modes of `data_dir`, the store, the TLS key and the DKIM
/// keys; tightens what lies inside `data_dir`, warns about the rest (see the module docs).
/// One warning line per path; missing paths are left to the code that uses them.
pub fn check_at_start(config: &Config) {
    let data = &config.data_dir;
    check(data, "server.data_dir", data);
    check(&data.join("store"), "the store", data);
    match &config.tls_key {
        Some(k) => check(k, "tls.key", data),
        None => check(&data.join("tls/key.pem"), "the TLS key", data),
    }
    for (domain, k) in &config.dkim {
        check(&k.key, &format!("the DKIM key of {domain}"), data);
    }
}

/// What [`check`] did about a path open to other users.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// Nothing to say: missing, or closed to group and others.
    Fine,
    /// Tightened from the first mode to the second.
    Tightened(u32, u32),
    /// Left as it was (outside `data_dir` or a symlink, and open to others; or inside and the
    /// `chmod` failed), with the `chmod` argument to suggest.
    Loose(u32, &'static str),
}

fn check(path: &Path, what: &str, data_dir: &Path) {
    let finding = inspect(path, data_dir);
    let p = path.display();
    match finding {
        Finding::Fine => {}
        Finding::Tightened(old, new) => tracing::warn!(
            "{what} {p} had mode {old:04o}, open to other users; changed to {new:04o}"
        ),
        Finding::Loose(mode, fix) => tracing::warn!(
            "{what} {p} has mode {mode:04o}, open to other users; run: chmod {fix} {p}"
        ),
    }
}

/// Looks at `path`: inside `data_dir` (or `data_dir` itself, followed when it is a symlink) and
/// not a symlink, any group or other bit is removed; elsewhere only other bits are reported.
pub fn inspect(path: &Path, data_dir: &Path) -> Finding {
    let Ok(meta) = fs::metadata(path) else {
        return Finding::Fine;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let ours = path == data_dir
        || (path.starts_with(data_dir)
            && fs::symlink_metadata(path).is_ok_and(|m| !m.file_type().is_symlink()));
    if !ours {
        return match mode & 0o007 {
            0 => Finding::Fine,
            _ => Finding::Loose(mode, "o-rwx"),
        };
    }
    if mode & 0o077 == 0 {
        return Finding::Fine;
    }
    let new = mode & !0o077;
    match fs::set_permissions(path, Permissions::from_mode(new)) {
        Ok(()) => Finding::Tightened(mode, new),
        Err(_) => Finding::Loose(mode, "go-rwx"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn created_with_private_modes_whatever_the_umask() {
        // The modes are asked for explicitly: any umask that leaves the owner's bits (the test
        // runner's, usually 022) gives exactly these.
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        create_dir_all(&sub).unwrap();
        write(&sub.join("f"), b"x").unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("f")), 0o600);
        fs::set_permissions(sub.join("f"), Permissions::from_mode(0o644)).unwrap();
        write(&sub.join("f"), b"y").unwrap();
        assert_eq!(mode(&sub.join("f")), 0o600);
    }

    #[test]
    fn write_atomic_replaces_the_whole_file_with_mode_0600_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("node-id");
        fs::write(&f, b"old").unwrap();
        fs::set_permissions(&f, Permissions::from_mode(0o644)).unwrap();
        write_atomic(&f, b"new contents").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new contents");
        assert_eq!(mode(&f), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("node-id")]);
        // A directory that does not exist: an error, and the old file untouched.
        let missing = dir.path().join("no/such/dir/f");
        assert!(write_atomic(&missing, b"x").is_err());
        assert_eq!(fs::read(&f).unwrap(), b"new contents");
    }

    #[test]
    fn inside_data_dir_is_tightened_outside_only_reported() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::set_permissions(&data, Permissions::from_mode(0o755)).unwrap();
        assert_eq!(inspect(&data, &data), Finding::Tightened(0o755, 0o700));
        assert_eq!(mode(&data), 0o700);
        assert_eq!(inspect(&data, &data), Finding::Fine);

        let key = dir.path().join("key.pem");
        fs::write(&key, b"k").unwrap();
        // Outside data_dir a group may read a key; others may not.
        fs::set_permissions(&key, Permissions::from_mode(0o640)).unwrap();
        assert_eq!(inspect(&key, &data), Finding::Fine);
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        assert_eq!(inspect(&key, &data), Finding::Loose(0o644, "o-rwx"));
        assert_eq!(mode(&key), 0o644);

        // A symlink inside data_dir to a file elsewhere: the target is not ours to change.
        let link = data.join("link.pem");
        std::os::unix::fs::symlink(&key, &link).unwrap();
        assert_eq!(inspect(&link, &data), Finding::Loose(0o644, "o-rwx"));
        assert_eq!(inspect(&dir.path().join("missing"), &data), Finding::Fine);
    }
}
