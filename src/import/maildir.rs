//! Reading a Maildir++ tree as Dovecot and Courier write it, one message at a time.
//!
//! - INBOX is `PATH/cur` + `PATH/new`; other folders are `PATH/.Name` and `PATH/.Parent.Child`
//!   (`.` separates levels), names in modified UTF-7 (RFC 3501 §5.1.3) as Dovecot stores them
//!   by default. `tmp/` holds unfinished deliveries and is not read.
//! - Flags come from the `:2,` info suffix of the file name (maildir spec, "info semantics"):
//!   `S` \Seen, `R` \Answered, `F` \Flagged, `T` \Deleted, `D` \Draft; the letters `a`–`z` are
//!   keywords, numbered by the folder's `dovecot-keywords` file (lines `N keyword`, N = 0 for
//!   `a`). Files in `new/` can carry flags too (Dovecot renames them in place).
//! - Line ends: Dovecot stores LF and serves CRLF over IMAP; bare LFs become CRLF, so that the
//!   bytes a client fetches are the ones Dovecot served. Nothing else changes.
//! - INTERNALDATE is the file's mtime (Dovecot keeps the received date there); the `,S=`/`,W=`
//!   size fields of the name are ignored: the size is the file's.
//! - Messages are taken in `dovecot-uidlist` order when the folder has one (so UIDs keep their
//!   order), else by file name (which starts with the delivery time).

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::{Event, Item};

/// Largest `dovecot-keywords` / `dovecot-uidlist` read; a bigger one is ignored with a warning.
const MAX_KEYWORDS_FILE: u64 = 64 * 1024;
const MAX_UIDLIST_FILE: u64 = 64 * 1024 * 1024;

struct Folder {
    /// Target mailbox name (UTF-8, `/` between levels).
    name: String,
    dir: PathBuf,
}

/// The messages of a Maildir++ tree, lazily: file names are listed per folder, bytes are read
/// one message at a time.
pub struct Maildir {
    folders: std::vec::IntoIter<Folder>,
    /// The current folder's files in import order, its keywords.
    files: std::vec::IntoIter<PathBuf>,
    mailbox: String,
    keywords: HashMap<u8, String>,
    max_size: u64,
    /// Warnings found while listing (bad folder names, …), handed out first.
    pending: Vec<Event>,
}

impl Maildir {
    pub fn open(root: &Path, max_size: u64) -> Result<Maildir> {
        let meta = fs::metadata(root).with_context(|| format!("{}", root.display()))?;
        if !meta.is_dir() {
            bail!("{} is not a directory", root.display());
        }
        if !root.join("cur").is_dir() && !root.join("new").is_dir() {
            bail!(
                "{} is not a maildir (no cur/ or new/ in it)",
                root.display()
            );
        }
        let mut pending = Vec::new();
        let mut folders = vec![Folder {
            name: "INBOX".into(),
            dir: root.to_path_buf(),
        }];
        let mut subs: Vec<(String, PathBuf)> = Vec::new();
        for e in fs::read_dir(root).with_context(|| format!("listing {}", root.display()))? {
            let e = e?;
            let file_name = e.file_name();
            let Some(raw) = file_name.to_str() else {
                pending.push(skip(&e.path(), "folder name is not UTF-8"));
                continue;
            };
            let Some(encoded) = raw.strip_prefix('.') else {
                continue;
            };
            if encoded.is_empty() || encoded == "." || !e.file_type()?.is_dir() {
                continue;
            }
            let dir = e.path();
            if !dir.join("cur").is_dir() && !dir.join("new").is_dir() {
                continue;
            }
            match folder_name(encoded) {
                Some(n) => subs.push((n, dir)),
                None => pending.push(skip(&dir, "folder name is not valid modified UTF-7")),
            }
        }
        subs.sort();
        folders.extend(subs.into_iter().map(|(name, dir)| Folder { name, dir }));
        pending.reverse();
        Ok(Maildir {
            folders: folders.into_iter(),
            files: Vec::new().into_iter(),
            mailbox: String::new(),
            keywords: HashMap::new(),
            max_size,
            pending,
        })
    }

    /// Lists the next folder's files; false when there is none.
    fn next_folder(&mut self) -> Result<bool> {
        let Some(f) = self.folders.next() else {
            return Ok(false);
        };
        self.mailbox = f.name;
        self.keywords = match read_small(&f.dir.join("dovecot-keywords"), MAX_KEYWORDS_FILE) {
            Ok(Some(text)) => parse_keywords(&text),
            Ok(None) => HashMap::new(),
            Err(e) => {
                self.pending
                    .push(skip(&f.dir.join("dovecot-keywords"), &format!("{e:#}")));
                HashMap::new()
            }
        };
        let order = match read_small(&f.dir.join("dovecot-uidlist"), MAX_UIDLIST_FILE) {
            Ok(Some(text)) => parse_uidlist(&text),
            _ => HashMap::new(),
        };
        let mut files: Vec<(u64, String, PathBuf)> = Vec::new();
        for sub in ["cur", "new"] {
            let d = f.dir.join(sub);
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd {
                let e = e.with_context(|| format!("listing {}", d.display()))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let base = name.split(':').next().unwrap_or(&name).to_string();
                let uid = order.get(&base).copied().unwrap_or(u64::MAX);
                files.push((uid, name, e.path()));
            }
        }
        files.sort();
        self.files = files
            .into_iter()
            .map(|(_, _, p)| p)
            .collect::<Vec<_>>()
            .into_iter();
        Ok(true)
    }

    fn read_message(&self, path: &Path) -> Event {
        let origin = path.display().to_string();
        // Not followed: a maildir holds plain files; a link could point anywhere.
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return skip(path, &e.to_string()),
        };
        if !meta.file_type().is_file() {
            return skip(path, "not a regular file");
        }
        if meta.len() > self.max_size {
            return skip(
                path,
                &format!(
                    "{} bytes, over imap.max_literal_size ({})",
                    meta.len(),
                    self.max_size
                ),
            );
        }
        if meta.len() == 0 {
            return skip(path, "empty file");
        }
        let mut data = Vec::with_capacity(meta.len() as usize);
        let read =
            fs::File::open(path).and_then(|f| f.take(self.max_size + 1).read_to_end(&mut data));
        if let Err(e) = read {
            return skip(path, &e.to_string());
        }
        if data.len() as u64 > self.max_size {
            return skip(path, "grew over imap.max_literal_size while read");
        }
        // Dovecot stores LF line ends and serves CRLF (its `W=` size); so do we, by storing
        // what it serves. Lines that already end in CRLF stay as they are.
        let data = crlf(data);
        if data.len() as u64 > self.max_size {
            return skip(
                path,
                &format!(
                    "{} bytes with CRLF line ends, over imap.max_literal_size ({})",
                    data.len(),
                    self.max_size
                ),
            );
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Flags also in new/: Dovecot renames a flagged message there in place.
        let flags = flags_of(&name, &self.keywords);
        Event::Message(Item {
            mailbox: self.mailbox.clone(),
            flags,
            internal_date: meta.mtime(),
            data,
            origin,
        })
    }
}

impl Iterator for Maildir {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Result<Event>> {
        loop {
            if let Some(w) = self.pending.pop() {
                return Some(Ok(w));
            }
            if let Some(p) = self.files.next() {
                return Some(Ok(self.read_message(&p)));
            }
            match self.next_folder() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Bare LF → CRLF.
pub fn crlf(data: Vec<u8>) -> Vec<u8> {
    let bare = data
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
        .count();
    if bare == 0 {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + bare);
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' && (i == 0 || data[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

fn skip(path: &Path, reason: &str) -> Event {
    Event::Skipped {
        origin: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// `Parent.Child` in modified UTF-7 → `Parent/Child` in UTF-8; None when not valid.
pub fn folder_name(encoded: &str) -> Option<String> {
    let mut parts = Vec::new();
    for p in encoded.split('.') {
        let p = crate::imap::utf7::decode(p.as_bytes())?;
        if p.is_empty() || p.contains('/') {
            return None;
        }
        parts.push(p);
    }
    Some(parts.join("/"))
}

/// Flags from a maildir file name: the letters after `:2,`.
pub fn flags_of(name: &str, keywords: &HashMap<u8, String>) -> Vec<String> {
    let Some((_, info)) = name.rsplit_once(":2,") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for c in info.bytes() {
        let f = match c {
            b'S' => "\\Seen",
            b'R' => "\\Answered",
            b'F' => "\\Flagged",
            b'T' => "\\Deleted",
            b'D' => "\\Draft",
            b'a'..=b'z' => match keywords.get(&(c - b'a')) {
                Some(k) => k.as_str(),
                None => continue,
            },
            _ => continue,
        };
        if !out.iter().any(|o: &String| o == f) {
            out.push(f.to_string());
        }
    }
    out
}

/// `dovecot-keywords`: lines `N keyword`, N from 0 (`a`) to 25 (`z`). Keywords that are not
/// IMAP atoms are left out.
pub fn parse_keywords(text: &str) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some((n, k)) = line.split_once(' ') else {
            continue;
        };
        let (Ok(n), k) = (n.parse::<u8>(), k.trim()) else {
            continue;
        };
        if n < 26 && super::is_keyword(k) {
            out.insert(n, k.to_string());
        }
    }
    out
}

/// `dovecot-uidlist` (version 3): a header line, then `UID [fields] :basename` per message.
/// Returns basename → UID.
fn parse_uidlist(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let Some((head, base)) = line.split_once(':') else {
            continue;
        };
        let Some(Ok(uid)) = head.split_whitespace().next().map(str::parse::<u64>) else {
            continue;
        };
        out.insert(base.to_string(), uid);
    }
    out
}

/// A small text file, or None when it does not exist; an error when it is too big.
fn read_small(path: &Path, max: u64) -> Result<Option<String>> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        bail!("larger than {max} bytes, ignored");
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flags_keywords() {
        assert_eq!(folder_name("&BCEEPwQwBDw-").as_deref(), Some("Спам"));
        assert_eq!(
            folder_name("Work.Projects").as_deref(),
            Some("Work/Projects")
        );
        assert_eq!(folder_name("a..b"), None);
        let kw = parse_keywords("0 $Label1\n1 Important\n2 bad(kw\n30 far\n");
        assert_eq!(kw.len(), 2);
        assert_eq!(
            flags_of("1700000000.M1P2.host,S=10,W=12:2,FSab", &kw),
            vec!["\\Flagged", "\\Seen", "$Label1", "Important"]
        );
        assert!(flags_of("1700000000.M1P2.host", &kw).is_empty());
        assert_eq!(crlf(b"a\nb\r\nc\n".to_vec()), b"a\r\nb\r\nc\r\n".to_vec());
        let order = parse_uidlist("3 V1 N3 G\n1 :a.host\n2 W10 :b.host\n");
        assert_eq!(order["b.host"], 2);
    }
}
