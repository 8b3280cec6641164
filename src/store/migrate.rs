//! `tanba store migrate [--from sled] --to URL` (docs/cluster.md, "Migrating from sled"): copies
//! the whole embedded store into an empty PostgreSQL database, ids, UIDs and MODSEQs kept, then
//! reads both back and compares them.
//!
//! Streaming: the embedded store is read in key order and written in [`Batch`]es of at most
//! [`BATCH_ROWS`] rows or [`BATCH_BYTES`] of bodies, one transaction each; the verification
//! reads one body at a time on each side. What stays in memory is the list of accounts and one
//! small record per mailbox ([`MailboxTally`]).

use std::collections::BTreeMap;

use super::pg::import::{Batch, GreyRow};
use super::pg::Pg;
use super::quota::Quota;
use super::*;

/// Body bytes per transaction, at most (one larger body goes alone).
const BATCH_BYTES: usize = 8 << 20;
/// Rows per transaction, at most.
const BATCH_ROWS: usize = 1000;

/// What `tanba store migrate` copied: counts read back from the database, and what differs
/// between the two stores (empty when the copy is verified).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateSummary {
    pub accounts: u64,
    pub mailboxes: u64,
    pub subscriptions: u64,
    pub messages: u64,
    pub bodies: u64,
    pub vanished: u64,
    pub queued: u64,
    pub aliases: u64,
    pub greylist: u64,
    pub schema_version: i32,
    pub mismatches: Vec<String>,
}

/// SHA-256 over length-prefixed fields (so that no two sequences of fields feed the same bytes).
pub(crate) struct Digest(ring::digest::Context);

impl Digest {
    pub fn new() -> Digest {
        Digest(ring::digest::Context::new(&ring::digest::SHA256))
    }

    fn num(&mut self, v: u64) {
        self.0.update(&v.to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.num(b.len() as u64);
        self.0.update(b);
    }

    fn body(&mut self, body: Option<&[u8]>) {
        match body {
            Some(b) => self.bytes(b),
            None => self.num(u64::MAX),
        }
    }

    pub fn account(
        &mut self,
        id: u64,
        email: &str,
        password_hash: &str,
        created: i64,
        aliases: &[String],
        q: &Quota,
    ) {
        self.num(id);
        self.bytes(email.as_bytes());
        self.bytes(password_hash.as_bytes());
        self.num(created as u64);
        self.num(aliases.len() as u64);
        for a in aliases {
            self.bytes(a.as_bytes());
        }
        self.num(q.limit_kib.map_or(u64::MAX, |l| l));
        self.num(q.bytes);
        self.num(q.messages);
    }

    pub fn queued(&mut self, rec: &QueueRecord, next_attempt: i64, body: Option<&[u8]>) {
        self.bytes(&enc(rec));
        self.num(next_attempt as u64);
        self.body(body);
    }

    pub fn alias(&mut self, address: &str, record: &[u8]) {
        self.bytes(address.as_bytes());
        self.bytes(record);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

/// One message into its mailbox's digest: UID, flags (keywords included), INTERNALDATE,
/// MODSEQ, size and the exact body.
pub(crate) fn feed_message(d: &mut Digest, m: &MessageMeta, body: Option<&[u8]>) {
    d.num(u64::from(m.uid));
    d.num(m.flags.len() as u64);
    for f in &m.flags {
        d.bytes(f.as_bytes());
    }
    d.num(m.internal_date as u64);
    d.num(m.modseq);
    d.num(m.size);
    d.body(body);
}

/// One mailbox as both sides describe it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MailboxTally {
    pub account_id: u64,
    pub name: String,
    pub uidvalidity: u64,
    pub uidnext: u64,
    pub highest_modseq: u64,
    pub messages: u64,
    pub unseen: u64,
    pub recent_mark: u64,
    /// Expunges at or below this MODSEQ are not in the QRESYNC log (`modseq.rs`).
    pub vanished_floor: u64,
    /// Message rows found.
    pub stored: u64,
    /// [`feed_message`] over its messages in UID order.
    pub digest: [u8; 32],
}

/// A whole store, summed up for the comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Rows per kind ("accounts", "messages", "bodies", …).
    pub counts: BTreeMap<&'static str, u64>,
    /// Bodies whose reference count is not the number of rows naming them (database side).
    pub refcounts_off: u64,
    /// Accounts (ids, addresses, password hashes, aliases, quota limit and usage) by id.
    pub accounts: [u8; 32],
    pub mailboxes: BTreeMap<u64, MailboxTally>,
    /// Queue records, due times and bodies by id.
    pub queue: [u8; 32],
    /// Alias records by address.
    pub aliases: [u8; 32],
}

/// What differs between the embedded store (`want`) and the database (`got`), one line each.
pub(crate) fn compare(want: &Tally, got: &Tally) -> Vec<String> {
    let mut out = Vec::new();
    let kinds: std::collections::BTreeSet<&str> = want
        .counts
        .keys()
        .chain(got.counts.keys())
        .copied()
        .collect();
    for k in kinds {
        let (w, g) = (
            want.counts.get(k).copied().unwrap_or(0),
            got.counts.get(k).copied().unwrap_or(0),
        );
        if w != g {
            out.push(format!("{k}: {w} in the store, {g} in the database"));
        }
    }
    if got.refcounts_off > 0 {
        out.push(format!(
            "{} bodies in the database have a reference count other than the number of \
             messages and queue entries naming them (run `tanba store check` on the store)",
            got.refcounts_off
        ));
    }
    if want.accounts != got.accounts {
        out.push("accounts differ (addresses, password hashes, aliases or quotas)".into());
    }
    for (id, w) in &want.mailboxes {
        let name = crate::logging::escape(&w.name, 200);
        let Some(g) = got.mailboxes.get(id) else {
            out.push(format!(
                "mailbox {id} ({name}) is missing from the database"
            ));
            continue;
        };
        let fields = [
            ("account", w.account_id, g.account_id),
            ("UIDVALIDITY", w.uidvalidity, g.uidvalidity),
            ("UIDNEXT", w.uidnext, g.uidnext),
            ("HIGHESTMODSEQ", w.highest_modseq, g.highest_modseq),
            ("message count", w.messages, g.messages),
            ("unseen count", w.unseen, g.unseen),
            ("recent mark", w.recent_mark, g.recent_mark),
            ("expunge log floor", w.vanished_floor, g.vanished_floor),
            ("messages", w.stored, g.stored),
        ];
        for (what, a, b) in fields {
            if a != b {
                out.push(format!(
                    "mailbox {id} ({name}): {what} {a} in the store, {b} in the database"
                ));
            }
        }
        if w.name != g.name {
            out.push(format!(
                "mailbox {id} ({name}): another name in the database"
            ));
        }
        if w.digest != g.digest {
            out.push(format!(
                "mailbox {id} ({name}): messages differ (UIDs, flags, dates, MODSEQs or bodies)"
            ));
        }
    }
    for id in got.mailboxes.keys() {
        if !want.mailboxes.contains_key(id) {
            out.push(format!("mailbox {id} is in the database only"));
        }
    }
    if want.queue != got.queue {
        out.push("queued messages differ (records, due times or bodies)".into());
    }
    if want.aliases != got.aliases {
        out.push("aliases differ".into());
    }
    out
}

/// The `greylist` tree (`greylist.rs`), if the store has one: entries under `e` ‖ hash.
fn greylist_tree(s: &Sled) -> Result<Option<sled::Tree>> {
    let name: &[u8] = b"greylist";
    if !s.db.tree_names().iter().any(|n| n.as_ref() == name) {
        return Ok(None);
    }
    Ok(Some(s.db.open_tree(name)?))
}

/// A greylist entry: `greylist::Entry` is (first_seen, last_pass, expires, passes), a
/// MessagePack array like every record (`enc`).
fn grey_row(k: &[u8], v: &[u8]) -> Result<GreyRow> {
    let (first_seen, last_pass, expires, _passes): (u64, u64, u64, u64) = dec(v)?;
    Ok(GreyRow {
        triplet: k[1..].to_vec(),
        first_seen,
        passed: last_pass != 0,
        expires,
    })
}

/// A mailbox's expunge log floor: `floor u64 ‖ count u32` under `mailbox ‖ 0 ‖ 0`
/// (`modseq.rs`), 0 without that record.
fn vanished_floor(s: &Sled, mailbox_id: u64) -> Result<u64> {
    Ok(match s.t.vanished.get(modseq::key3(mailbox_id, 0, 0))? {
        Some(v) if v.len() == 12 => read_u64(&v[..8])?,
        _ => 0,
    })
}

fn refcount(v: &[u8]) -> Result<u32> {
    <[u8; 4]>::try_from(v)
        .map(u32::from_be_bytes)
        .map_err(|_| StoreError::Db("corrupt body reference count".into()))
}

fn missing_body(id: u64) -> StoreError {
    StoreError::Db(format!(
        "body {id} is named but missing from the store (run `tanba store check`)"
    ))
}

/// The embedded store summed up like [`Pg::import_tally`] sums up the database.
fn sled_tally(s: &Sled) -> Result<Tally> {
    let mut t = Tally::default();
    let mut accounts = s.accounts()?;
    accounts.sort_by_key(|a| a.id);
    let (mut boxes, mut subs, mut msgs) = (0u64, 0u64, 0u64);
    let mut d = Digest::new();
    for a in &accounts {
        let q = s.quota(a.id)?;
        d.account(a.id, &a.email, &a.password_hash, a.created, &a.aliases, &q);
        subs += s.subscriptions(a.id)?.len() as u64;
        for m in s.mailboxes(a.id)? {
            boxes += 1;
            let mut mt = MailboxTally {
                account_id: m.account_id,
                name: m.name.clone(),
                uidvalidity: u64::from(m.uidvalidity),
                uidnext: u64::from(m.uidnext),
                highest_modseq: m.highest_modseq,
                messages: u64::from(m.messages),
                unseen: u64::from(m.unseen),
                recent_mark: u64::from(m.recent_mark),
                vanished_floor: vanished_floor(s, m.id)?,
                ..Default::default()
            };
            let mut md = Digest::new();
            for kv in s.t.messages.scan_prefix(u64_key(m.id)) {
                let meta: MessageMeta = dec(&kv?.1)?;
                let body = s.blob(meta.blob_id)?;
                feed_message(&mut md, &meta, body.as_deref());
                mt.stored += 1;
            }
            msgs += mt.stored;
            mt.digest = md.finish();
            t.mailboxes.insert(m.id, mt);
        }
    }
    t.accounts = d.finish();
    let (mut bodies, mut refs) = (0u64, 0u64);
    for kv in s.t.blob_refs.iter() {
        bodies += 1;
        refs += u64::from(refcount(&kv?.1)?);
    }
    let mut vanished = 0u64;
    for k in s.t.vanished.iter().keys() {
        if k?.get(8..16) != Some(&[0u8; 8][..]) {
            vanished += 1;
        }
    }
    let (mut queued, mut d) = (0u64, Digest::new());
    for kv in s.t.queue.iter() {
        let rec: QueueRecord = dec(&kv?.1)?;
        let body = s.blob(rec.blob_id)?;
        d.queued(&rec, rec.next_attempt, body.as_deref());
        queued += 1;
    }
    t.queue = d.finish();
    let (mut aliases, mut d) = (0u64, Digest::new());
    for kv in s.t.aliases.iter() {
        let (k, v) = kv?;
        let rec: alias::Alias = dec(&v)?;
        d.alias(&String::from_utf8_lossy(&k), &enc(&rec));
        aliases += 1;
    }
    t.aliases = d.finish();
    let mut grey = 0u64;
    if let Some(g) = greylist_tree(s)? {
        grey = g.scan_prefix(b"e").count() as u64;
    }
    for (k, v) in [
        ("accounts", accounts.len() as u64),
        ("mailboxes", boxes),
        ("subscriptions", subs),
        ("messages", msgs),
        ("bodies", bodies),
        ("body references", refs),
        ("vanished UIDs", vanished),
        ("queued", queued),
        ("aliases", aliases),
        ("greylist entries", grey),
    ] {
        t.counts.insert(k, v);
    }
    Ok(t)
}

/// Collects rows and writes them in bounded transactions.
struct Writer<'a> {
    pg: &'a Pg,
    batch: Batch,
}

impl Writer<'_> {
    fn maybe_flush(&mut self) -> Result<()> {
        if self.batch.rows() >= BATCH_ROWS || self.batch.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.batch.rows() > 0 {
            self.pg.import_batch(std::mem::take(&mut self.batch))?;
        }
        Ok(())
    }
}

/// Copies `s` into `pg` (empty): accounts with mailboxes and subscriptions, quotas, bodies,
/// messages, the expunge log, the queue, aliases, greylist entries. Returns the highest id.
fn copy(s: &Sled, pg: &Pg) -> Result<u64> {
    let mut top = 0u64;
    let mut w = Writer {
        pg,
        batch: Batch::default(),
    };
    let accounts = s.accounts()?;
    for a in &accounts {
        let boxes = s.mailboxes(a.id)?;
        let subs = s.subscriptions(a.id)?;
        pg.import_account(a, &boxes, &subs)?;
        top = top.max(a.id);
        top = boxes.iter().map(|m| m.id).fold(top, u64::max);
        w.batch.quotas.push((a.id, s.quota(a.id)?));
        w.maybe_flush()?;
    }
    w.flush()?;
    // Bodies before the rows naming them, each with its reference count.
    for kv in s.t.blob_refs.iter() {
        let (k, v) = kv?;
        let id = read_u64(&k)?;
        let body = s.blob(id)?.ok_or_else(|| missing_body(id))?;
        top = top.max(id);
        w.batch.bytes += body.len();
        w.batch.blobs.push((id, refcount(&v)? as i32, body));
        w.maybe_flush()?;
    }
    w.flush()?;
    for a in &accounts {
        for m in s.mailboxes(a.id)? {
            for kv in s.t.messages.scan_prefix(u64_key(m.id)) {
                let meta: MessageMeta = dec(&kv?.1)?;
                w.batch.messages.push((m.id, meta));
                w.maybe_flush()?;
            }
        }
    }
    let mut floors = Vec::new();
    for k in s.t.vanished.iter().keys() {
        let k = k?;
        if k.len() != 20 {
            return Err(StoreError::Db("corrupt expunge log key".into()));
        }
        let (mailbox, modseq) = (read_u64(&k[..8])?, read_u64(&k[8..16])?);
        if modseq == 0 {
            // The log's (floor, count) record, not an expunge.
            let floor = vanished_floor(s, mailbox)?;
            if floor > 0 {
                floors.push((mailbox, floor));
            }
            continue;
        }
        let uid = u32::from_be_bytes([k[16], k[17], k[18], k[19]]);
        w.batch.vanished.push((mailbox, modseq, uid));
        w.maybe_flush()?;
    }
    w.flush()?;
    pg.import_vanished_meta(floors)?;
    for kv in s.t.queue.iter() {
        let rec: QueueRecord = dec(&kv?.1)?;
        top = top.max(rec.id);
        w.batch.queue.push(rec);
        w.maybe_flush()?;
    }
    for kv in s.t.aliases.iter() {
        let (k, v) = kv?;
        let rec: alias::Alias = dec(&v)?;
        let address = String::from_utf8(k.to_vec())
            .map_err(|_| StoreError::Db("corrupt alias address".into()))?;
        w.batch.aliases.push((address, enc(&rec)));
        w.maybe_flush()?;
    }
    if let Some(g) = greylist_tree(s)? {
        for kv in g.scan_prefix(b"e") {
            let (k, v) = kv?;
            w.batch.greylist.push(grey_row(&k, &v)?);
            w.maybe_flush()?;
        }
    }
    w.flush()?;
    Ok(top)
}

impl Store {
    /// Copies this (embedded) store into the PostgreSQL database at `url` (`tanba store migrate
    /// --to URL`): creates or migrates its schema, refuses a database that already holds
    /// accounts or mail, copies everything (module docs), then compares both sides
    /// ([`compare`]). Mismatches are returned in the summary, not as an error.
    pub fn migrate_to_postgres(&self, url: &str) -> Result<MigrateSummary> {
        let Inner::Sled(s) = &self.b else {
            return Err(StoreError::Invalid(
                "store migrate copies the embedded store into PostgreSQL".into(),
            ));
        };
        // Read the whole source once before writing: a record that does not decode stops
        // the migration with nothing written.
        let want = sled_tally(s)?;
        let pg = Pg::connect(url)?;
        if pg.holds_data()? {
            return Err(StoreError::Invalid(
                "the database already holds accounts or mail: migrate into an empty database"
                    .into(),
            ));
        }
        let top = copy(s, &pg)?;
        pg.import_ids_past(top)?;
        let got = pg.import_tally()?;
        let n = |k: &str| got.counts.get(k).copied().unwrap_or(0);
        Ok(MigrateSummary {
            accounts: n("accounts"),
            mailboxes: n("mailboxes"),
            subscriptions: n("subscriptions"),
            messages: n("messages"),
            bodies: n("bodies"),
            vanished: n("vanished UIDs"),
            queued: n("queued"),
            aliases: n("aliases"),
            greylist: n("greylist entries"),
            schema_version: pg.schema_version()?,
            mismatches: compare(&want, &got),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally() -> Tally {
        let mut t = Tally::default();
        t.counts.insert("accounts", 2);
        t.counts.insert("messages", 3);
        let mut d = Digest::new();
        let m = MessageMeta {
            uid: 4,
            blob_id: 9,
            size: 5,
            internal_date: 1_700_000_000,
            flags: vec!["\\Seen".into(), "$Label1".into()],
            modseq: 7,
        };
        feed_message(&mut d, &m, Some(b"hello"));
        t.mailboxes.insert(
            12,
            MailboxTally {
                account_id: 1,
                name: "INBOX".into(),
                uidvalidity: 12,
                uidnext: 6,
                stored: 1,
                digest: d.finish(),
                ..Default::default()
            },
        );
        t
    }

    /// Identical sides: nothing to report.
    #[test]
    fn equal_tallies_have_no_mismatch() {
        assert!(compare(&tally(), &tally()).is_empty());
    }

    /// Every kind of difference is named: a count, a mailbox field, a message (a flag or a body
    /// byte), a missing and an extra mailbox, the queue, the reference counts.
    #[test]
    fn each_difference_is_named() {
        let want = tally();
        let mut got = tally();
        got.counts.insert("messages", 2);
        assert_eq!(
            compare(&want, &got),
            ["messages: 3 in the store, 2 in the database"]
        );

        let mut got = tally();
        got.mailboxes.get_mut(&12).unwrap().uidnext = 5;
        assert_eq!(
            compare(&want, &got),
            ["mailbox 12 (INBOX): UIDNEXT 6 in the store, 5 in the database"]
        );

        // One flag less, then one body byte changed: the digest differs.
        for (flags, body) in [
            (vec!["\\Seen".to_string()], &b"hello"[..]),
            (
                vec!["\\Seen".to_string(), "$Label1".to_string()],
                &b"hellO"[..],
            ),
        ] {
            let mut d = Digest::new();
            let m = MessageMeta {
                uid: 4,
                blob_id: 9,
                size: 5,
                internal_date: 1_700_000_000,
                flags,
                modseq: 7,
            };
            feed_message(&mut d, &m, Some(body));
            let mut got = tally();
            got.mailboxes.get_mut(&12).unwrap().digest = d.finish();
            let out = compare(&want, &got);
            assert_eq!(out.len(), 1, "{out:?}");
            assert!(
                out[0].contains("mailbox 12 (INBOX): messages differ"),
                "{out:?}"
            );
        }

        let mut got = tally();
        let mb = got.mailboxes.remove(&12).unwrap();
        got.mailboxes.insert(13, mb);
        got.queue = [1; 32];
        got.refcounts_off = 2;
        let out = compare(&want, &got);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0].starts_with("2 bodies in the database have a reference count"));
        assert_eq!(out[1], "mailbox 12 (INBOX) is missing from the database");
        assert_eq!(out[2], "mailbox 13 is in the database only");
        assert!(out[3].starts_with("queued messages differ"));
    }
}
