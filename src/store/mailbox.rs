//! Mailboxes: names, UIDVALIDITY/UIDNEXT, SPECIAL-USE (RFC 6154), counters; subscriptions.
//!
//! Names use "/" as the hierarchy delimiter. "INBOX" is case-insensitive (RFC 3501 §5.1) and always
//! stored as "INBOX".
//!
//! # Subscriptions
//! A per-account set of names in the `subscriptions` tree (key `account_id ‖ name`, empty value),
//! independent of which mailboxes exist (RFC 3501 §6.3.6, §6.3.9; RFC 9051 §6.3.7):
//! - SUBSCRIBE of a name with no mailbox is allowed (as Dovecot does); the name must be a valid
//!   mailbox name, and an account keeps at most [`MAX_SUBSCRIPTIONS`].
//! - CREATE does not subscribe; a new account's default mailboxes are subscribed.
//! - DELETE keeps the subscription: "The server MUST NOT unilaterally remove an existing mailbox
//!   name from the subscription list even if a mailbox by that name no longer exists" (RFC 3501
//!   §6.3.6), and Dovecot's imaptest expects the deleted name back with `\NonExistent
//!   \Subscribed` from `LIST (SUBSCRIBED)` (its `listext` script).
//! - RENAME moves the subscriptions of the name and of every name under it to the new names
//!   (Cyrus does; Thunderbird unsubscribes and subscribes by itself, which stays harmless):
//!   the client asked for the rename, so nothing is removed unilaterally. RENAME of INBOX moves
//!   messages, not the mailbox, and leaves subscriptions alone.
//! - Deleting the account removes its subscriptions.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::{dec, enc, read_u64, u64_key, Result, Sled, StoreError};

/// RFC 6154 special-use attribute of a mailbox.
pub type SpecialUse = Option<String>;

/// The mailboxes every new account gets.
pub const DEFAULT_MAILBOXES: &[(&str, Option<&str>)] = &[
    ("INBOX", None),
    ("Drafts", Some("\\Drafts")),
    ("Sent", Some("\\Sent")),
    ("Trash", Some("\\Trash")),
    ("Junk", Some("\\Junk")),
    ("Archive", Some("\\Archive")),
];

pub const DELIMITER: char = '/';

/// Most subscribed names per account (SUBSCRIBE of names without a mailbox makes the set
/// independent of the mailboxes, so it needs a bound of its own).
pub const MAX_SUBSCRIPTIONS: usize = 10_000;

/// The value of a `subscriptions` entry.
pub(crate) const EMPTY: &[u8] = &[];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MailboxMeta {
    pub id: u64,
    pub account_id: u64,
    pub name: String,
    pub uidvalidity: u32,
    /// The UID the next message will get. Only grows.
    pub uidnext: u32,
    pub special_use: Option<String>,
    /// Sled format 1 kept the subscription here. Read by the migration to format 2 and by a
    /// restore of a format-1 backup (both move it into the `subscriptions` tree); always written
    /// as `false` since (it keeps its place: records are positional, `format.rs`).
    #[serde(default, rename = "subscribed")]
    pub(crate) legacy_subscribed: bool,
    /// Number of messages.
    pub messages: u32,
    /// Number of messages without \Seen.
    pub unseen: u32,
    /// Bumped by every change to the mailbox's messages (new, flags, expunge).
    pub highest_modseq: u64,
    /// UIDs up to this one have already been reported \Recent to some session (RFC 3501 §2.3.2:
    /// a message is recent in only one session).
    pub recent_mark: u32,
}

/// What LIST/STATUS need to know, computed from the metas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxInfo {
    pub meta: MailboxMeta,
    pub has_children: bool,
}

impl MailboxMeta {
    pub(crate) fn new(id: u64, account_id: u64, name: &str, special: Option<&str>) -> Self {
        MailboxMeta {
            id,
            account_id,
            name: name.to_string(),
            // Ids are never reused, so neither is a UIDVALIDITY derived from one (RFC 3501 §2.3.1.1).
            uidvalidity: (id as u32).max(1),
            uidnext: 1,
            special_use: special.map(String::from),
            legacy_subscribed: false,
            messages: 0,
            unseen: 0,
            highest_modseq: 1,
            recent_mark: 0,
        }
    }
}

/// Normalises a mailbox name: "inbox" in any case becomes "INBOX", also as a hierarchy prefix.
pub fn normalize_name(name: &str) -> String {
    let name = name.trim_end_matches(DELIMITER);
    if name.eq_ignore_ascii_case("INBOX") {
        return "INBOX".into();
    }
    // `get`: byte 6 may fall inside a character (found by the imap_command fuzz target).
    if let (Some(head), Some(rest)) = (name.get(..6), name.get(6..)) {
        if !rest.is_empty() && head.eq_ignore_ascii_case("INBOX/") {
            return format!("INBOX/{rest}");
        }
    }
    name.to_string()
}

pub(crate) fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 512
        || name.starts_with(DELIMITER)
        || name.contains("//")
        || name.chars().any(|c| c.is_control())
        || name.split(DELIMITER).any(|p| p == "." || p == "..")
    {
        return Err(StoreError::Invalid(format!(
            "invalid mailbox name {name:?}"
        )));
    }
    Ok(())
}

pub(crate) fn name_key(account_id: u64, name: &str) -> Vec<u8> {
    let mut k = u64_key(account_id).to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// Inside a transaction that creates or renames mailboxes: fails unless the account still
/// exists, which is exactly as long as its INBOX name does (`create_account` writes both,
/// INBOX can be neither deleted nor renamed away, `delete_account` removes both first, in one
/// transaction). A session of a deleted account can therefore create nothing (SPEC §8).
fn account_alive(
    names: &sled::transaction::TransactionalTree,
    account_id: u64,
) -> super::message::TxResult<()> {
    if names.get(name_key(account_id, "INBOX"))?.is_none() {
        return Err(StoreError::NotFound("account".into()).into());
    }
    Ok(())
}

/// Mailboxes (sorted by name) with their \HasChildren state, for LIST (both backends).
pub(crate) fn infos_of(all: Vec<MailboxMeta>) -> Vec<MailboxInfo> {
    let names: std::collections::BTreeSet<&str> = all.iter().map(|m| m.name.as_str()).collect();
    all.iter()
        .map(|m| {
            let prefix = format!("{}{}", m.name, DELIMITER);
            // The first name at or after "name/" is a child if any is.
            let has_children = names
                .range(prefix.as_str()..)
                .next()
                .is_some_and(|n| n.starts_with(&prefix));
            MailboxInfo {
                meta: m.clone(),
                has_children,
            }
        })
        .collect()
}

impl Sled {
    /// All mailboxes of an account, sorted by name.
    pub fn mailboxes(&self, account_id: u64) -> Result<Vec<MailboxMeta>> {
        let mut out = Vec::new();
        for kv in self.t.mailbox_names.scan_prefix(u64_key(account_id)) {
            let (_, id) = kv?;
            if let Some(m) = self.mailbox_by_id(read_u64(&id)?)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Mailboxes with their \HasChildren state (for LIST), sorted by name.
    pub fn mailbox_infos(&self, account_id: u64) -> Result<Vec<MailboxInfo>> {
        Ok(infos_of(self.mailboxes(account_id)?))
    }

    pub fn mailbox(&self, account_id: u64, name: &str) -> Result<Option<MailboxMeta>> {
        let name = normalize_name(name);
        match self.t.mailbox_names.get(name_key(account_id, &name))? {
            Some(id) => self.mailbox_by_id(read_u64(&id)?),
            None => Ok(None),
        }
    }

    pub fn mailbox_by_id(&self, id: u64) -> Result<Option<MailboxMeta>> {
        match self.t.mailboxes.get(u64_key(id))? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    /// Creates a mailbox (and, like RFC 3501 §6.3.3 allows, any missing parents).
    pub fn create_mailbox(
        &self,
        account_id: u64,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxMeta> {
        let name = normalize_name(name);
        validate_name(&name)?;
        if self.mailbox(account_id, &name)?.is_some() {
            return Err(StoreError::Exists(format!("mailbox {name}")));
        }
        // Parents first.
        let parts: Vec<&str> = name.split(DELIMITER).collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if self.mailbox(account_id, &parent)?.is_none() {
                self.create_one(account_id, &parent, None)?;
            }
        }
        self.create_one(account_id, &name, special_use)
    }

    fn create_one(
        &self,
        account_id: u64,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxMeta> {
        let meta = MailboxMeta::new(self.next_id()?, account_id, name, special_use);
        let t = &self.t;
        let w = self.write_gate();
        (&t.mailbox_names, &t.mailboxes).transaction(|(names, mbs)| {
            account_alive(names, account_id)?;
            let k = name_key(account_id, name);
            if names.get(&k)?.is_some() {
                return Err(StoreError::Exists(format!("mailbox {name}")).into());
            }
            names.insert(k, &u64_key(meta.id))?;
            mbs.insert(&u64_key(meta.id), enc(&meta))?;
            Ok(())
        })?;
        drop(w);
        Ok(meta)
    }

    /// Deletes a mailbox and its messages. INBOX cannot be deleted; a mailbox with children keeps
    /// existing children (RFC 3501 §6.3.4 lets us refuse; we refuse like Dovecot does).
    pub fn delete_mailbox(&self, account_id: u64, name: &str) -> Result<()> {
        let name = normalize_name(name);
        if name == "INBOX" {
            return Err(StoreError::Invalid("INBOX cannot be deleted".into()));
        }
        let Some(meta) = self.mailbox(account_id, &name)? else {
            return Err(StoreError::NotFound(format!("mailbox {name}")));
        };
        let prefix = format!("{name}/");
        if self
            .mailboxes(account_id)?
            .iter()
            .any(|m| m.name.starts_with(&prefix))
        {
            return Err(StoreError::Invalid(format!(
                "mailbox {name} has children; delete them first"
            )));
        }
        self.drop_mailbox(account_id, &meta)?;
        self.notify(account_id, meta.id);
        Ok(())
    }

    /// Removes a mailbox: its name and record first, in one transaction (from then on nothing
    /// can be added to it: a new message needs the record), then its messages.
    pub(crate) fn drop_mailbox(&self, account_id: u64, meta: &MailboxMeta) -> Result<()> {
        let t = &self.t;
        let w = self.write_gate();
        (&t.mailbox_names, &t.mailboxes).transaction(|(names, mbs)| {
            names.remove(name_key(account_id, &meta.name))?;
            mbs.remove(&u64_key(meta.id))?;
            Ok(())
        })?;
        drop(w);
        self.purge_mailbox(account_id, meta.id)
    }

    /// Renames a mailbox and its children. Renaming INBOX moves its messages to a new mailbox and
    /// leaves INBOX empty (RFC 3501 §6.3.5).
    pub fn rename_mailbox(&self, account_id: u64, from: &str, to: &str) -> Result<()> {
        let from = normalize_name(from);
        let to = normalize_name(to);
        validate_name(&to)?;
        let Some(src) = self.mailbox(account_id, &from)? else {
            return Err(StoreError::NotFound(format!("mailbox {from}")));
        };
        if self.mailbox(account_id, &to)?.is_some() {
            return Err(StoreError::Exists(format!("mailbox {to}")));
        }
        if to.starts_with(&format!("{from}/")) {
            return Err(StoreError::Invalid(
                "cannot move a mailbox into itself".into(),
            ));
        }
        if from == "INBOX" {
            let dst = self.create_mailbox(account_id, &to, None)?;
            let uids: Vec<u32> = self.messages(src.id)?.iter().map(|m| m.uid).collect();
            self.move_messages(src.id, &uids, dst.id)?;
            return Ok(());
        }
        let prefix = format!("{from}/");
        let affected: Vec<MailboxMeta> = self
            .mailboxes(account_id)?
            .into_iter()
            .filter(|m| m.name == from || m.name.starts_with(&prefix))
            .collect();
        // Missing parents of the new name.
        let parts: Vec<&str> = to.split(DELIMITER).collect();
        for i in 1..parts.len() {
            let parent = parts[..i].join("/");
            if self.mailbox(account_id, &parent)?.is_none() {
                self.create_one(account_id, &parent, None)?;
            }
        }
        // Subscriptions of the name and of every name under it move along (module docs).
        let moved_subs: Vec<String> = self
            .subscriptions(account_id)?
            .into_iter()
            .filter(|n| *n == from || n.starts_with(&prefix))
            .collect();
        let t = &self.t;
        let w = self.write_gate();
        (&t.mailbox_names, &t.mailboxes, &t.subscriptions).transaction(|(names, mbs, subs)| {
            account_alive(names, account_id)?;
            for n in &moved_subs {
                subs.remove(name_key(account_id, n))?;
            }
            for n in &moved_subs {
                let new_name = format!("{to}{}", &n[from.len()..]);
                subs.insert(name_key(account_id, &new_name), EMPTY)?;
            }
            for m in &affected {
                let new_name = format!("{to}{}", &m.name[from.len()..]);
                if names.get(name_key(account_id, &new_name))?.is_some() {
                    return Err(StoreError::Exists(format!("mailbox {new_name}")).into());
                }
                names.remove(name_key(account_id, &m.name))?;
                names.insert(name_key(account_id, &new_name), &u64_key(m.id))?;
                let mut nm = m.clone();
                nm.name = new_name;
                mbs.insert(&u64_key(m.id), enc(&nm))?;
            }
            Ok(())
        })?;
        drop(w);
        Ok(())
    }

    /// The account's subscribed names, sorted (module docs, "Subscriptions").
    pub fn subscriptions(&self, account_id: u64) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for k in self.t.subscriptions.scan_prefix(u64_key(account_id)).keys() {
            let k = k?;
            match std::str::from_utf8(&k[8..]) {
                Ok(n) => out.push(n.to_string()),
                Err(_) => return Err(StoreError::Db("corrupt subscription name".into())),
            }
        }
        Ok(out)
    }

    /// Adds `name` to the account's subscriptions (SUBSCRIBE). The name need not exist.
    pub fn add_subscription(&self, account_id: u64, name: &str) -> Result<()> {
        let name = normalize_name(name);
        validate_name(&name)?;
        let key = name_key(account_id, &name);
        let _one_at_a_time = self.subscribing.lock().unwrap_or_else(|e| e.into_inner());
        if self.t.subscriptions.contains_key(&key)? {
            return Ok(());
        }
        if self
            .t
            .subscriptions
            .scan_prefix(u64_key(account_id))
            .count()
            >= MAX_SUBSCRIPTIONS
        {
            return Err(StoreError::Invalid(format!(
                "Too many subscriptions (at most {MAX_SUBSCRIPTIONS})"
            )));
        }
        let t = &self.t;
        let w = self.write_gate();
        (&t.mailbox_names, &t.subscriptions).transaction(|(names, subs)| {
            account_alive(names, account_id)?;
            subs.insert(key.as_slice(), EMPTY)?;
            Ok(())
        })?;
        drop(w);
        Ok(())
    }

    /// Removes `name` from the account's subscriptions (UNSUBSCRIBE); not subscribed is fine.
    pub fn remove_subscription(&self, account_id: u64, name: &str) -> Result<()> {
        let name = normalize_name(name);
        let w = self.write_gate();
        self.t.subscriptions.remove(name_key(account_id, &name))?;
        drop(w);
        Ok(())
    }

    /// Removes every subscription of an account (account deletion).
    pub(crate) fn drop_subscriptions(&self, account_id: u64) -> Result<()> {
        let w = self.write_gate();
        for k in self.t.subscriptions.scan_prefix(u64_key(account_id)).keys() {
            self.t.subscriptions.remove(k?)?;
        }
        drop(w);
        Ok(())
    }

    /// The total size of a mailbox's messages in octets (STATUS SIZE, RFC 8438): a scan of its
    /// message records.
    pub fn mailbox_size(&self, mailbox_id: u64) -> Result<u64> {
        Ok(self.messages(mailbox_id)?.iter().map(|m| m.size).sum())
    }

    #[allow(dead_code)] // no caller today; kept for the PostgreSQL parity list (docs/cluster.md)
    /// Claims \Recent for a session that selects the mailbox: returns the previous mark; messages
    /// with a UID above it are recent for the caller and for nobody else.
    pub fn claim_recent(&self, mailbox_id: u64) -> Result<u32> {
        let old = std::cell::Cell::new(0);
        self.update_mailbox(mailbox_id, |m| {
            old.set(m.recent_mark);
            m.recent_mark = m.uidnext.saturating_sub(1);
            Ok(())
        })?;
        Ok(old.get())
    }

    #[allow(dead_code)] // only claim_recent (above) uses it
    fn update_mailbox(
        &self,
        id: u64,
        f: impl Fn(&mut MailboxMeta) -> Result<()>,
    ) -> Result<MailboxMeta> {
        let w = self.write_gate();
        let out = self.t.mailboxes.transaction(|mbs| {
            let Some(v) = mbs.get(u64_key(id))? else {
                return Err(StoreError::NotFound("mailbox".into()).into());
            };
            let mut m: MailboxMeta = dec(&v)?;
            f(&mut m)?;
            mbs.insert(&u64_key(id), enc(&m))?;
            Ok(m)
        })?;
        drop(w);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_case_insensitive() {
        assert_eq!(normalize_name("inbox"), "INBOX");
        assert_eq!(normalize_name("Inbox/Sub"), "INBOX/Sub");
        assert_eq!(normalize_name("Inboxes"), "Inboxes");
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("a/b").is_ok());
        assert!(validate_name("/a").is_err());
        assert!(validate_name("a//b").is_err());
        assert!(validate_name("a/../b").is_err());
        assert!(validate_name("").is_err());
    }
}
