//! `tanba store check`: does the store keep the invariants of `mod.rs`?
//!
//! Reads every tree under a pause of writers (a consistent point in time, as a backup does),
//! then checks body files while the group-commit flusher holds back unlinks. Reports, never
//! repairs. Checked:
//! - accounts: the record decodes, its key is its (lower-case) address, ids are unique, its
//!   INBOX exists;
//! - mailboxes: name index ↔ records (both ways, same account and name), the account exists,
//!   `messages`/`unseen` equal a count of the messages, `uidnext` is above every UID,
//!   `highest_modseq` is at least every message's modseq;
//! - messages: the key matches the record, the mailbox exists, the body exists (inline or as a
//!   file of the recorded length) and `size` equals its length; the modseq index (`changes`)
//!   has the message at its modseq and no other key;
//! - blobs: `blob_refs` equals the number of messages and queue records naming the blob, no
//!   body without references, no body both inline and as a file;
//! - files: every `blob_files` entry has its file with the recorded length; with
//!   `orphan_files`, every file has an entry (only when the server is stopped: a delivery in
//!   progress writes its file before its record);
//! - subscriptions: each names an existing account and a UTF-8 name;
//! - quota: each record's account exists and its usage equals a count of the account's
//!   messages (sizes and number);
//! - queue: records decode with their key as id, their body exists, and `queue_due` has exactly
//!   one key `(next_attempt, id)` per record.

use std::collections::{HashMap, HashSet};

use super::{
    dec, format, mailbox, read_u64, Account, MailboxMeta, MessageMeta, QueueRecord, Result, Sled,
};

/// At most this many problems are listed (the rest are counted).
const MAX_LISTED: usize = 1000;

#[derive(Default)]
struct Problems {
    list: Vec<String>,
    more: usize,
}

impl Problems {
    fn push(&mut self, p: String) {
        if self.list.len() < MAX_LISTED {
            self.list.push(p);
        } else {
            self.more += 1;
        }
    }
}

#[derive(Default)]
struct Count {
    messages: u32,
    unseen: u32,
    max_uid: u32,
    max_modseq: u64,
}

fn u32_of(b: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(b).ok().map(u32::from_be_bytes)
}

impl Sled {
    /// Checks the store; returns the problems found (empty: consistent).
    pub fn check(&self, orphan_files: bool) -> Result<Vec<String>> {
        let mut p = Problems::default();
        let _hold = self.hold_unlinks();
        let mut files: Vec<(u64, u64)> = Vec::new();
        let file_ids: HashSet<u64>;
        {
            let _paused = self.pause_writers();
            let t = &self.t;
            match format::version(&self.db)? {
                Some(v) if v == format::CURRENT => {}
                v => p.push(format!(
                    "format_version is {v:?}, expected {}",
                    format::CURRENT
                )),
            }
            // Accounts.
            let mut accounts: HashMap<u64, String> = HashMap::new();
            for kv in t.accounts.iter() {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                match dec::<Account>(&v) {
                    Err(e) => p.push(format!("account {key:?}: {e}")),
                    Ok(a) => {
                        if a.email != key || key != key.to_ascii_lowercase() {
                            p.push(format!("account {key:?}: the record says {:?}", a.email));
                        }
                        if let Some(other) = accounts.insert(a.id, key.clone()) {
                            p.push(format!("accounts {other} and {key} share id {}", a.id));
                        }
                    }
                }
            }
            // Mailboxes and their name index.
            let mut boxes: HashMap<u64, MailboxMeta> = HashMap::new();
            for kv in t.mailboxes.iter() {
                let (k, v) = kv?;
                let id = read_u64(&k).unwrap_or(0);
                match dec::<MailboxMeta>(&v) {
                    Err(e) => p.push(format!("mailbox {id}: {e}")),
                    Ok(m) => {
                        if m.id != id {
                            p.push(format!("mailbox {id}: the record says id {}", m.id));
                        }
                        if !accounts.contains_key(&m.account_id) {
                            p.push(format!(
                                "mailbox {} ({id}): account {} does not exist",
                                m.name, m.account_id
                            ));
                        }
                        boxes.insert(id, m);
                    }
                }
            }
            let mut named: HashSet<u64> = HashSet::new();
            for kv in t.mailbox_names.iter() {
                let (k, v) = kv?;
                let (Some(acct), Ok(id)) = (k.get(..8).map(read_u64), read_u64(&v)) else {
                    p.push("mailbox_names: a corrupt entry".into());
                    continue;
                };
                let acct = acct.unwrap_or(0);
                let name = String::from_utf8_lossy(&k[8..]).into_owned();
                named.insert(id);
                match boxes.get(&id) {
                    None => p.push(format!(
                        "mailbox name {name:?} of account {acct} points to mailbox {id}, which \
                         does not exist"
                    )),
                    Some(m) if m.account_id != acct || m.name != name => p.push(format!(
                        "mailbox name {name:?} of account {acct} points to mailbox {id}, which is \
                         {:?} of account {}",
                        m.name, m.account_id
                    )),
                    Some(_) => {}
                }
            }
            for (id, m) in &boxes {
                if !named.contains(id) {
                    p.push(format!("mailbox {} ({id}) has no name entry", m.name));
                }
            }
            for (id, email) in &accounts {
                if !t
                    .mailbox_names
                    .contains_key(mailbox::name_key(*id, "INBOX"))?
                {
                    p.push(format!("account {email} has no INBOX"));
                }
            }
            // Subscriptions: names of existing accounts (a mailbox need not exist).
            for k in t.subscriptions.iter().keys() {
                let k = k?;
                let acct = k.get(..8).and_then(|a| read_u64(a).ok());
                match (acct, k.get(8..).map(std::str::from_utf8)) {
                    (Some(a), Some(Ok(_))) if accounts.contains_key(&a) => {}
                    (Some(a), Some(Ok(name))) => {
                        p.push(format!("subscription {name:?}: account {a} does not exist"))
                    }
                    _ => p.push("subscriptions: a corrupt entry".into()),
                }
            }
            // Quota usage (quota.rs): equal to a count of the account's messages.
            let usage = self.count_usage()?;
            for kv in t.quota.iter() {
                let (k, v) = kv?;
                let id = read_u64(&k).unwrap_or(0);
                let Some(email) = accounts.get(&id) else {
                    p.push(format!("quota record {id}: no such account"));
                    continue;
                };
                match dec::<super::quota::Quota>(&v) {
                    Err(e) => p.push(format!("quota of {email}: {e}")),
                    Ok(q) => {
                        let (bytes, messages) = usage.get(&id).copied().unwrap_or_default();
                        if (q.bytes, q.messages) != (bytes, messages) {
                            p.push(format!(
                                "quota of {email}: usage recorded {} bytes in {} messages, \
                                 counted {bytes} bytes in {messages}",
                                q.bytes, q.messages
                            ));
                        }
                    }
                }
            }
            for (id, email) in &accounts {
                if usage.contains_key(id) && !t.quota.contains_key(super::u64_key(*id))? {
                    p.push(format!(
                        "account {email} has messages but no quota usage record"
                    ));
                }
            }
            // Bodies.
            let mut inline: HashMap<u64, u64> = HashMap::new();
            for kv in t.blobs.iter() {
                let (k, v) = kv?;
                inline.insert(read_u64(&k).unwrap_or(0), v.len() as u64);
            }
            let mut lens: HashMap<u64, u64> = inline.clone();
            for kv in t.blob_files.iter() {
                let (k, v) = kv?;
                let id = read_u64(&k).unwrap_or(0);
                let Ok(len) = read_u64(&v) else {
                    p.push(format!("body {id:016x}: corrupt length"));
                    continue;
                };
                if inline.contains_key(&id) {
                    p.push(format!("body {id:016x} is both inline and a file"));
                }
                files.push((id, len));
                lens.insert(id, len);
            }
            file_ids = files.iter().map(|f| f.0).collect();
            // Messages.
            let mut uses: HashMap<u64, u32> = HashMap::new();
            let mut counts: HashMap<u64, Count> = HashMap::new();
            let mut indexed = 0usize;
            for kv in t.messages.iter() {
                let (k, v) = kv?;
                let (Some(Ok(mb)), Some(uid)) =
                    (k.get(..8).map(read_u64), k.get(8..).and_then(u32_of))
                else {
                    p.push("messages: a corrupt key".into());
                    continue;
                };
                let m = match dec::<MessageMeta>(&v) {
                    Ok(m) => m,
                    Err(e) => {
                        p.push(format!("message {uid} of mailbox {mb}: {e}"));
                        continue;
                    }
                };
                if m.uid != uid {
                    p.push(format!(
                        "message {uid} of mailbox {mb}: the record says UID {}",
                        m.uid
                    ));
                }
                if !boxes.contains_key(&mb) {
                    p.push(format!(
                        "message {uid} of mailbox {mb}: the mailbox does not exist"
                    ));
                }
                match lens.get(&m.blob_id) {
                    None => p.push(format!(
                        "message {uid} of mailbox {mb}: body {:016x} does not exist",
                        m.blob_id
                    )),
                    Some(&len) if len != m.size => p.push(format!(
                        "message {uid} of mailbox {mb}: size {} but its body has {len} bytes",
                        m.size
                    )),
                    Some(_) => {}
                }
                if !t
                    .changes
                    .contains_key(super::modseq::key3(mb, m.modseq, uid))?
                {
                    p.push(format!(
                        "message {uid} of mailbox {mb}: not in the modseq index at its modseq {}",
                        m.modseq
                    ));
                }
                indexed += 1;
                *uses.entry(m.blob_id).or_default() += 1;
                let c = counts.entry(mb).or_default();
                c.messages += 1;
                if !m.has_flag("\\Seen") {
                    c.unseen += 1;
                }
                c.max_uid = c.max_uid.max(uid);
                c.max_modseq = c.max_modseq.max(m.modseq);
            }
            let in_index = t.changes.len();
            if in_index != indexed {
                p.push(format!(
                    "the modseq index has {in_index} keys for {indexed} messages"
                ));
            }
            for (id, m) in &boxes {
                let c = counts.remove(id).unwrap_or_default();
                let name = &m.name;
                if m.messages != c.messages {
                    p.push(format!(
                        "mailbox {name} ({id}): messages is {}, it holds {}",
                        m.messages, c.messages
                    ));
                }
                if m.unseen != c.unseen {
                    p.push(format!(
                        "mailbox {name} ({id}): unseen is {}, it holds {} without \\Seen",
                        m.unseen, c.unseen
                    ));
                }
                if c.messages > 0 && m.uidnext <= c.max_uid {
                    p.push(format!(
                        "mailbox {name} ({id}): uidnext {} is not above UID {}",
                        m.uidnext, c.max_uid
                    ));
                }
                if m.highest_modseq < c.max_modseq {
                    p.push(format!(
                        "mailbox {name} ({id}): highest_modseq {} is below a message's {}",
                        m.highest_modseq, c.max_modseq
                    ));
                }
            }
            // Queue and its due index.
            let mut due: HashSet<(u64, u64)> = HashSet::new();
            for kv in t.queue_due.iter() {
                let (k, _) = kv?;
                match (k.get(..8).map(read_u64), k.get(8..).map(read_u64), k.len()) {
                    (Some(Ok(at)), Some(Ok(id)), 16) => {
                        due.insert((at, id));
                    }
                    _ => p.push("queue_due: a corrupt key".into()),
                }
            }
            for kv in t.queue.iter() {
                let (k, v) = kv?;
                let id = read_u64(&k).unwrap_or(0);
                let q = match dec::<QueueRecord>(&v) {
                    Ok(q) => q,
                    Err(e) => {
                        p.push(format!("queue entry {id}: {e}"));
                        continue;
                    }
                };
                if q.id != id {
                    p.push(format!("queue entry {id}: the record says id {}", q.id));
                }
                if !lens.contains_key(&q.blob_id) {
                    p.push(format!(
                        "queue entry {id}: body {:016x} does not exist",
                        q.blob_id
                    ));
                }
                *uses.entry(q.blob_id).or_default() += 1;
                if !due.remove(&(q.next_attempt.max(0) as u64, id)) {
                    p.push(format!(
                        "queue entry {id}: no queue_due key for its next attempt"
                    ));
                }
            }
            for (at, id) in due {
                p.push(format!(
                    "queue_due key ({at}, {id}) has no queue entry with that next attempt"
                ));
            }
            // Reference counts.
            let mut counted: HashSet<u64> = HashSet::new();
            for kv in t.blob_refs.iter() {
                let (k, v) = kv?;
                let id = read_u64(&k).unwrap_or(0);
                counted.insert(id);
                let n = u32_of(&v).unwrap_or(u32::MAX);
                let used = uses.get(&id).copied().unwrap_or(0);
                if n != used {
                    p.push(format!(
                        "body {id:016x}: reference count {n}, referenced {used} times"
                    ));
                }
            }
            for (id, used) in &uses {
                if !counted.contains(id) {
                    p.push(format!(
                        "body {id:016x}: no reference count, referenced {used} times"
                    ));
                }
            }
            for id in lens.keys() {
                if !uses.contains_key(id) {
                    p.push(format!("body {id:016x}: nothing references it"));
                }
            }
        }
        // Files, with writers running again (the hold keeps the snapshot's files in place).
        for (id, len) in files {
            let path = self.files.path(id);
            match std::fs::metadata(&path) {
                Ok(m) if m.len() == len => {}
                Ok(m) => p.push(format!(
                    "body file {}: {} bytes, the store recorded {len}",
                    path.display(),
                    m.len()
                )),
                Err(e) => p.push(format!("body file {}: {e}", path.display())),
            }
        }
        if orphan_files {
            let dir = self.files.path(0);
            let root = dir.parent().and_then(|d| d.parent());
            if let Some(Ok(rd)) = root.map(std::fs::read_dir) {
                for sub in rd.flatten() {
                    let Ok(entries) = std::fs::read_dir(sub.path()) else {
                        continue;
                    };
                    for f in entries.flatten() {
                        let id = f
                            .file_name()
                            .to_str()
                            .and_then(|n| u64::from_str_radix(n, 16).ok());
                        if !id.is_some_and(|id| file_ids.contains(&id)) {
                            p.push(format!(
                                "body file {} has no record (the next start removes it)",
                                f.path().display()
                            ));
                        }
                    }
                }
            }
        }
        let mut list = p.list;
        if p.more > 0 {
            list.push(format!("… and {} more problems", p.more));
        }
        Ok(list)
    }

    /// Opens a store for `tanba store check`: like [`Sled::open`], but body files without a
    /// record are left in place so that the check can report them.
    pub fn open_for_check(dir: &std::path::Path) -> Result<Sled> {
        Self::open_with(dir, false)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{enc, key2, temp_sled as store, u64_key};
    use super::*;

    fn has(problems: &[String], what: &str) -> bool {
        problems.iter().any(|p| p.contains(what))
    }

    #[test]
    fn a_clean_store_is_consistent() {
        let (_d, s) = store();
        let a = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        let trash = s.mailbox(a.id, "Trash").unwrap().unwrap();
        s.append(inbox.id, b"Subject: 1\r\n\r\n1\r\n", &[], 0)
            .unwrap();
        s.append(inbox.id, b"", &["\\Seen".into()], 0).unwrap();
        s.copy_messages(inbox.id, &[1], trash.id).unwrap();
        s.expunge(inbox.id, &[2]).unwrap();
        let rec = s
            .new_queue_record("a@x.test", &["b@y.test".into()])
            .unwrap();
        s.deliver(&[(inbox.id, vec![])], b"both", 0, Some((&rec, b"q")))
            .unwrap();
        s.flush_sync().unwrap();
        assert_eq!(s.check(true).unwrap(), Vec::<String>::new());
    }

    /// Metadata damage the integration tests cannot make from outside: each kind is named.
    #[test]
    fn inconsistent_records_are_each_reported() {
        let (_d, s) = store();
        let a = s.create_account("a@x.test", "h").unwrap();
        let inbox = s.mailbox(a.id, "INBOX").unwrap().unwrap();
        let one = s
            .append(inbox.id, b"Subject: 1\r\n\r\n1\r\n", &[], 0)
            .unwrap();
        let rec = s
            .new_queue_record("a@x.test", &["b@y.test".into()])
            .unwrap();
        s.deliver(&[], b"", 0, Some((&rec, b"queued"))).unwrap();
        let t = &s.t;
        // Counters off, uidnext below a UID.
        let mut m = s.mailbox_by_id(inbox.id).unwrap().unwrap();
        m.messages = 5;
        m.unseen = 0;
        m.uidnext = 1;
        t.mailboxes.insert(u64_key(inbox.id), enc(&m)).unwrap();
        // A reference count that does not match, a name without a mailbox, a stray due key.
        let meta = s.message(inbox.id, one.uid).unwrap().unwrap();
        t.blob_refs
            .insert(u64_key(meta.blob_id), &7u32.to_be_bytes())
            .unwrap();
        t.mailbox_names
            .insert(mailbox::name_key(a.id, "Ghost"), &u64_key(424242))
            .unwrap();
        t.queue_due
            .insert(super::super::queue::due_key(5, rec.id), &[])
            .unwrap();
        // A subscription of an account that does not exist (one without a mailbox is fine).
        t.subscriptions
            .insert(mailbox::name_key(31337, "Orphan"), mailbox::EMPTY)
            .unwrap();
        s.add_subscription(a.id, "No/Such/Mailbox").unwrap();
        // A message whose body is gone.
        let mut lost = meta.clone();
        lost.uid = 9;
        lost.blob_id = 777;
        t.messages.insert(key2(inbox.id, 9), enc(&lost)).unwrap();
        let p = s.check(true).unwrap();
        for what in [
            "messages is 5, it holds 2",
            "unseen is 0, it holds 2",
            "uidnext 1 is not above UID 9",
            "reference count 7, referenced 1 times",
            "\"Ghost\" of account",
            &format!("queue_due key (5, {})", rec.id),
            "body 0000000000000309 does not exist",
            "subscription \"Orphan\": account 31337 does not exist",
        ] {
            assert!(has(&p, what), "{what} not in {p:#?}");
        }
        assert!(!has(&p, "No/Such/Mailbox"), "{p:#?}");
    }
}
