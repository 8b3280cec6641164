//! [`Store`]'s public API: each method calls the backend's method of the same name
//! (docs/cluster.md, "Design"). Every method exists on both backends; the few that are sled's by
//! nature (`backup`) answer on PostgreSQL with an error that says what to use instead.

use std::path::Path;

use tokio::sync::broadcast;

use super::alias::{Alias, Resolution, Rules};
use super::backup::BackupSummary;
use super::greylist::{Policy, Verdict};
use super::message::Blob;
use super::multiappend::NewMessage;
use super::quota::Quota;
use super::*;

/// `tanba backup` on PostgreSQL: the database's own tools do it (docs/cluster.md, "Backup and
/// restore on PostgreSQL").
const PG_BACKUP: &str = "on store.backend = \"postgres\" back up the database with \
     PostgreSQL's tools: pg_dump (a logical copy), or pg_basebackup with WAL archiving for \
     point-in-time recovery (docs/cluster.md, \"Backup and restore on PostgreSQL\")";

impl Store {
    /// Opens (or creates) the embedded store in `dir`. Fails with a clear message when another
    /// process (a running `tanba serve`) holds it, or when its format is newer than this binary
    /// knows.
    pub fn open(dir: &Path) -> Result<Store> {
        Ok(Store {
            b: Inner::Sled(Sled::open(dir)?),
        })
    }

    /// Opens the embedded store in `dir` only if one is there: admin commands (SPEC §9) never
    /// create a store. `NotFound` when `dir` holds no store.
    pub fn open_existing(dir: &Path) -> Result<Store> {
        Ok(Store {
            b: Inner::Sled(Sled::open_existing(dir)?),
        })
    }

    /// `tanba store check`'s open (no sweep of orphan files: they are reported).
    pub fn open_for_check(dir: &Path) -> Result<Store> {
        Ok(Store {
            b: Inner::Sled(Sled::open_for_check(dir)?),
        })
    }

    /// Readies the store for `tanba serve`, which holds `data_dir`'s instance lock: on
    /// PostgreSQL the schema must be readable, the node listens for other nodes' changes, and
    /// the outbound messages an earlier process of this node was delivering when it died
    /// (kill -9, power loss) are released at once rather than when their leases expire
    /// (docs/cluster.md, "Outbound queue: leases").
    pub fn start_serving(&self, data_dir: &Path) -> Result<()> {
        match &self.b {
            Inner::Sled(_) => Ok(()),
            Inner::Postgres(p) => {
                p.schema_version()?;
                // Listening before the store is handed out: a server that is up hears every
                // change (IDLE, NOTIFY on another node).
                p.listen()?;
                let n = p.start_node(data_dir)?;
                if n > 0 {
                    tracing::info!(
                        "took back {n} outbound messages this node was delivering when it stopped"
                    );
                }
                Ok(())
            }
        }
    }

    /// The embedded backend, for the store's own unit tests.
    #[cfg(test)]
    pub(crate) fn sled(&self) -> &Sled {
        match &self.b {
            Inner::Sled(s) => s,
            Inner::Postgres(_) => panic!("not the embedded store"),
        }
    }

    /// Message records decoded so far (embedded backend; tests count a sync's cost with it).
    #[cfg(test)]
    pub fn record_reads(&self) -> u64 {
        self.sled().record_reads()
    }

    /// Starts a group commit covering everything written before this call, without waiting
    /// for it (see the embedded backend's `commit_soon`). On PostgreSQL every write is
    /// committed when its method returns: nothing to do.
    pub async fn commit_soon(&self) {
        if let Inner::Sled(s) = &self.b {
            s.commit_soon().await
        }
    }

    /// Subscribes to mailbox changes (new messages, flag changes, expunges).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        match &self.b {
            Inner::Sled(s) => s.subscribe(),
            Inner::Postgres(p) => p.subscribe(),
        }
    }

    /// Opens the store of the configured backend: the embedded one in `dir` (created when
    /// missing), or the PostgreSQL database, whose schema is created or migrated here.
    pub fn open_backend(backend: &Backend, dir: &Path) -> Result<Store> {
        match backend {
            Backend::Embedded => Self::open(dir),
            Backend::Postgres { url, pool, ca_file } => Ok(Store {
                b: Inner::Postgres(pg::Pg::connect_with(url, *pool, ca_file.as_deref())?),
            }),
        }
    }

    /// The account that receives mail for `addr` (its primary address or an alias).
    pub fn account_for_address(&self, addr: &str) -> Result<Option<Account>> {
        match &self.b {
            Inner::Sled(s) => s.account_for_address(addr),
            Inner::Postgres(p) => p.account_for_address(addr),
        }
    }

    pub fn account(&self, email: &str) -> Result<Option<Account>> {
        match &self.b {
            Inner::Sled(s) => s.account(email),
            Inner::Postgres(p) => p.account(email),
        }
    }

    pub fn accounts(&self) -> Result<Vec<Account>> {
        match &self.b {
            Inner::Sled(s) => s.accounts(),
            Inner::Postgres(p) => p.accounts(),
        }
    }

    /// Adds `name` to the account's subscriptions (SUBSCRIBE). The name need not exist.
    pub fn add_subscription(&self, account_id: u64, name: &str) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.add_subscription(account_id, name),
            Inner::Postgres(p) => p.add_subscription(account_id, name),
        }
    }

    pub fn alias(&self, address: &str) -> Result<Option<Alias>> {
        match &self.b {
            Inner::Sled(s) => s.alias(address),
            Inner::Postgres(p) => p.alias(address),
        }
    }

    pub fn aliases(&self) -> Result<Vec<Alias>> {
        match &self.b {
            Inner::Sled(s) => s.aliases(),
            Inner::Postgres(p) => p.aliases(),
        }
    }

    /// Stores every message of `msgs` in `mailbox_id`, in order, or none of them. Each counts
    /// against the account's quota (`quota.rs`).
    pub fn append_many(&self, mailbox_id: u64, msgs: &[NewMessage]) -> Result<Vec<Appended>> {
        match &self.b {
            Inner::Sled(s) => s.append_many(mailbox_id, msgs),
            Inner::Postgres(p) => p.append_many(mailbox_id, msgs),
        }
    }

    /// APPEND: stores `raw` as a new message in a mailbox.
    pub fn append(
        &self,
        mailbox_id: u64,
        raw: &[u8],
        flags: &[String],
        internal_date: i64,
    ) -> Result<Appended> {
        match &self.b {
            Inner::Sled(s) => s.append(mailbox_id, raw, flags, internal_date),
            Inner::Postgres(p) => p.append(mailbox_id, raw, flags, internal_date),
        }
    }

    /// Writes a backup of the whole store into `dir` (new or empty). Safe while the server runs.
    pub fn backup(&self, dir: &Path) -> Result<BackupSummary> {
        match &self.b {
            Inner::Sled(s) => s.backup(dir),
            Inner::Postgres(_) => Err(StoreError::Invalid(PG_BACKUP.into())),
        }
    }

    /// Derived data cached for a blob (e.g. IMAP's parsed MIME structure). Not durable on purpose:
    /// it can always be recomputed from the blob.
    pub fn blob_cache(&self, blob_id: u64) -> Result<Option<Vec<u8>>> {
        match &self.b {
            Inner::Sled(s) => s.blob_cache(blob_id),
            Inner::Postgres(p) => p.blob_cache(blob_id),
        }
    }

    /// The exact stored bytes of a message.
    pub fn blob(&self, blob_id: u64) -> Result<Option<Blob>> {
        match &self.b {
            Inner::Sled(s) => s.blob(blob_id),
            Inner::Postgres(p) => p.blob(blob_id),
        }
    }

    /// Messages changed and UIDs expunged after `since`. Reads one message record per changed
    /// message and nothing else of the mailbox.
    pub fn changes_since(&self, mailbox_id: u64, since: u64) -> Result<Changes> {
        match &self.b {
            Inner::Sled(s) => s.changes_since(mailbox_id, since),
            Inner::Postgres(p) => p.changes_since(mailbox_id, since),
        }
    }

    /// Checks the store; returns the problems found (empty: consistent).
    pub fn check(&self, orphan_files: bool) -> Result<Vec<String>> {
        match &self.b {
            Inner::Sled(s) => s.check(orphan_files),
            Inner::Postgres(p) => p.check(),
        }
    }

    /// Claims \Recent up to `upto` for one session (RFC 3501 §2.3.2: a message is recent in only
    /// one session): raises the mailbox's recent mark to `upto` and returns the previous mark.
    /// Messages with `old < uid <= upto` are recent for the caller and for nobody else. Unlike
    /// [`Sled::claim_recent`], messages that arrive after the caller read the mailbox stay
    /// unclaimed for whoever sees them first.
    pub fn claim_recent_upto(&self, mailbox_id: u64, upto: u32) -> Result<u32> {
        match &self.b {
            Inner::Sled(s) => s.claim_recent_upto(mailbox_id, upto),
            Inner::Postgres(p) => p.claim_recent_upto(mailbox_id, upto),
        }
    }

    /// COPY: the copies share the blob. Returns (source uid, new uid) pairs and the destination's
    /// UIDVALIDITY.
    pub fn copy_messages(
        &self,
        src: u64,
        uids: &[u32],
        dst: u64,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        match &self.b {
            Inner::Sled(s) => s.copy_messages(src, uids, dst),
            Inner::Postgres(p) => p.copy_or_move(src, uids, dst, false),
        }
    }

    /// Creates an account with its default mailboxes (INBOX, Drafts, Sent, Trash, Junk, Archive),
    /// subscribed, all in one transaction.
    pub fn create_account(&self, email: &str, password_hash: &str) -> Result<Account> {
        match &self.b {
            Inner::Sled(s) => s.create_account(email, password_hash),
            Inner::Postgres(p) => p.create_account(email, password_hash),
        }
    }

    /// Creates a mailbox (and, like RFC 3501 §6.3.3 allows, any missing parents).
    pub fn create_mailbox(
        &self,
        account_id: u64,
        name: &str,
        special_use: Option<&str>,
    ) -> Result<MailboxMeta> {
        match &self.b {
            Inner::Sled(s) => s.create_mailbox(account_id, name, special_use),
            Inner::Postgres(p) => p.create_mailbox(account_id, name, special_use),
        }
    }

    /// Removes an account and all of its mail.
    ///
    /// Live sessions of the account may still be running (the server ends them right after,
    /// SPEC §8), so the order matters: first the account record and its INBOX name, in one
    /// transaction; from then on nobody can log in or receive mail, and no mailbox can be
    /// created or renamed for it (`mailbox::account_alive`). Then each mailbox's name and record
    /// (after which nothing can be added to it), then its messages. A crash midway leaves only
    /// unreachable records.
    pub fn delete_account(&self, email: &str) -> Result<Account> {
        match &self.b {
            Inner::Sled(s) => s.delete_account(email),
            Inner::Postgres(p) => p.delete_account(email),
        }
    }

    pub fn delete_alias(&self, address: &str) -> Result<Alias> {
        match &self.b {
            Inner::Sled(s) => s.delete_alias(address),
            Inner::Postgres(p) => p.delete_alias(address),
        }
    }

    /// Deletes a mailbox and its messages. INBOX cannot be deleted; a mailbox with children keeps
    /// existing children (RFC 3501 §6.3.4 lets us refuse; we refuse like Dovecot does).
    pub fn delete_mailbox(&self, account_id: u64, name: &str) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.delete_mailbox(account_id, name),
            Inner::Postgres(p) => p.delete_mailbox(account_id, name),
        }
    }

    /// Stores one message in several mailboxes (one blob, shared) and optionally queues another
    /// rendering of it (`queued`: the record and its bytes) for remote recipients — all in one
    /// transaction, so a crash keeps all or nothing.
    pub fn deliver(
        &self,
        targets: &[(u64, Vec<String>)],
        raw: &[u8],
        internal_date: i64,
        queued: Option<(&QueueRecord, &[u8])>,
    ) -> Result<Vec<Appended>> {
        match &self.b {
            Inner::Sled(s) => s.deliver(targets, raw, internal_date, queued),
            Inner::Postgres(p) => p.deliver(targets, raw, internal_date, queued),
        }
    }

    /// Waits until everything written before this call is on disk. Concurrent callers share one
    /// sled flush and one `fdatasync` (sync.rs): a caller waits for the first flush that
    /// *started* after it called (group commit).
    pub async fn durable(&self) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.durable().await,
            Inner::Postgres(_) => Ok(()),
        }
    }

    /// EXPUNGE / UID EXPUNGE: removes the given UIDs (callers choose which, e.g. those flagged
    /// \Deleted). Returns the UIDs actually removed, ascending.
    pub fn expunge(&self, mailbox_id: u64, uids: &[u32]) -> Result<Vec<u32>> {
        match &self.b {
            Inner::Sled(s) => s.expunge(mailbox_id, uids),
            Inner::Postgres(p) => p.expunge(mailbox_id, uids),
        }
    }

    /// Flushes synchronously (CLI commands that open the store directly, shutdown).
    pub fn flush_sync(&self) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.flush_sync(),
            Inner::Postgres(_) => Ok(()),
        }
    }

    /// Checks the triplet (`network`, `from`, `rcpt`) at `now` (Unix seconds) and records what
    /// follows: a new pending entry, a first pass, or a renewed pass.
    pub fn greylist_check(
        &self,
        network: &str,
        from: &str,
        rcpt: &str,
        now: u64,
        p: &Policy,
    ) -> Result<Verdict> {
        match &self.b {
            Inner::Sled(s) => s.greylist_check(network, from, rcpt, now, p),
            Inner::Postgres(pg) => pg.greylist_check(network, from, rcpt, now, p),
        }
    }

    pub fn mailbox_by_id(&self, id: u64) -> Result<Option<MailboxMeta>> {
        match &self.b {
            Inner::Sled(s) => s.mailbox_by_id(id),
            Inner::Postgres(p) => p.mailbox_by_id(id),
        }
    }

    /// Mailboxes with their \HasChildren state (for LIST), sorted by name.
    pub fn mailbox_infos(&self, account_id: u64) -> Result<Vec<MailboxInfo>> {
        match &self.b {
            Inner::Sled(s) => s.mailbox_infos(account_id),
            Inner::Postgres(p) => p.mailbox_infos(account_id),
        }
    }

    /// The total size of a mailbox's messages in octets (STATUS SIZE, RFC 8438): a scan of its
    /// message records.
    pub fn mailbox_size(&self, mailbox_id: u64) -> Result<u64> {
        match &self.b {
            Inner::Sled(s) => s.mailbox_size(mailbox_id),
            Inner::Postgres(p) => p.mailbox_size(mailbox_id),
        }
    }

    pub fn mailbox(&self, account_id: u64, name: &str) -> Result<Option<MailboxMeta>> {
        match &self.b {
            Inner::Sled(s) => s.mailbox(account_id, name),
            Inner::Postgres(p) => p.mailbox(account_id, name),
        }
    }

    /// All mailboxes of an account, sorted by name.
    pub fn mailboxes(&self, account_id: u64) -> Result<Vec<MailboxMeta>> {
        match &self.b {
            Inner::Sled(s) => s.mailboxes(account_id),
            Inner::Postgres(p) => p.mailboxes(account_id),
        }
    }

    pub fn message(&self, mailbox_id: u64, uid: u32) -> Result<Option<MessageMeta>> {
        match &self.b {
            Inner::Sled(s) => s.message(mailbox_id, uid),
            Inner::Postgres(p) => p.message(mailbox_id, uid),
        }
    }

    /// Messages with `from <= uid <= to`, in UID order, without scanning the rest.
    pub fn messages_in(&self, mailbox_id: u64, from: u32, to: u32) -> Result<Vec<MessageMeta>> {
        match &self.b {
            Inner::Sled(s) => s.messages_in(mailbox_id, from, to),
            Inner::Postgres(p) => p.messages_in(mailbox_id, from, to),
        }
    }

    /// All messages of a mailbox in UID order.
    pub fn messages(&self, mailbox_id: u64) -> Result<Vec<MessageMeta>> {
        match &self.b {
            Inner::Sled(s) => s.messages(mailbox_id),
            Inner::Postgres(p) => p.messages(mailbox_id),
        }
    }

    /// MOVE (RFC 6851): copy and expunge in one transaction.
    pub fn move_messages(
        &self,
        src: u64,
        uids: &[u32],
        dst: u64,
    ) -> Result<(u32, Vec<(u32, u32)>)> {
        match &self.b {
            Inner::Sled(s) => s.move_messages(src, uids, dst),
            Inner::Postgres(p) => p.copy_or_move(src, uids, dst, true),
        }
    }

    /// A new queue record for `recipients`, due now. Sled it with [`Sled::deliver`].
    pub fn new_queue_record(&self, sender: &str, recipients: &[String]) -> Result<QueueRecord> {
        match &self.b {
            Inner::Sled(s) => s.new_queue_record(sender, recipients),
            Inner::Postgres(p) => p.new_queue_record(sender, recipients),
        }
    }

    /// Stores (replaces) an alias as given; `alias add` validates it first (admin.rs).
    pub fn put_alias(&self, alias: &Alias) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.put_alias(alias),
            Inner::Postgres(p) => p.put_alias(alias),
        }
    }

    pub fn put_blob_cache(&self, blob_id: u64, data: &[u8]) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.put_blob_cache(blob_id, data),
            Inner::Postgres(p) => p.put_blob_cache(blob_id, data),
        }
    }

    /// Conditional write at the end of a delivery round: if the record still equals `expected`,
    /// replace it with `new` (or remove it and release its bytes when `new` is `None`) and store
    /// `bounce`, all in one transaction. Returns false (and changes nothing) when the record was
    /// changed or removed meanwhile: the caller re-reads and decides again.
    pub fn queue_commit(
        &self,
        expected: &QueueRecord,
        new: Option<&QueueRecord>,
        bounce: Option<&Bounce>,
    ) -> Result<bool> {
        match &self.b {
            Inner::Sled(s) => s.queue_commit(expected, new, bounce),
            Inner::Postgres(p) => p.queue_commit(expected, new, bounce),
        }
    }

    /// `(next_attempt, id)` of queued records in due order, starting with the earliest. The
    /// iterator is lazy: callers stop as soon as they reach a time in the future.
    pub fn queue_due(&self) -> Box<dyn Iterator<Item = Result<(i64, u64)>> + '_> {
        match &self.b {
            Inner::Sled(s) => Box::new(s.queue_due()),
            Inner::Postgres(p) => p.queue_due(),
        }
    }

    pub fn queue_get(&self, id: u64) -> Result<Option<QueueRecord>> {
        match &self.b {
            Inner::Sled(s) => s.queue_get(id),
            Inner::Postgres(p) => p.queue_get(id),
        }
    }

    /// Every queued message, oldest first.
    pub fn queue_list(&self) -> Result<Vec<QueueRecord>> {
        match &self.b {
            Inner::Sled(s) => s.queue_list(),
            Inner::Postgres(p) => p.queue_list(),
        }
    }

    /// Atomically applies `f` to the current record. Returns the new record, or `None` when there
    /// is no such record. `f` may run more than once (transaction retry), so it must only depend
    /// on its argument.
    pub fn queue_modify(
        &self,
        id: u64,
        f: impl Fn(&mut QueueRecord),
    ) -> Result<Option<QueueRecord>> {
        match &self.b {
            Inner::Sled(s) => s.queue_modify(id, f),
            Inner::Postgres(p) => p.queue_modify(id, f),
        }
    }

    /// Makes `queue_due` match `queue` exactly (start-up check; cheap when it already does).
    /// Returns how many index keys were added or removed.
    pub fn queue_reindex(&self) -> Result<usize> {
        match &self.b {
            Inner::Sled(s) => s.queue_reindex(),
            // The queue's due order is an index of the `queue` table: nothing to repair.
            Inner::Postgres(_) => Ok(0),
        }
    }

    /// How many messages are queued, and when the oldest was queued (Unix seconds), for the
    /// metrics. O(queue): counts the keys of `queue_due` (one per record, empty values); the
    /// oldest is the lowest id, since ids only grow (one ordered lookup).
    pub fn queue_summary(&self) -> Result<(u64, Option<i64>)> {
        match &self.b {
            Inner::Sled(s) => s.queue_summary(),
            Inner::Postgres(p) => p.queue_summary(),
        }
    }

    /// An account's limit and usage (zero usage, no limit when it has no record yet).
    pub fn quota(&self, account_id: u64) -> Result<Quota> {
        match &self.b {
            Inner::Sled(s) => s.quota(account_id),
            Inner::Postgres(p) => p.quota(account_id),
        }
    }

    /// Removes `name` from the account's subscriptions (UNSUBSCRIBE); not subscribed is fine.
    pub fn remove_subscription(&self, account_id: u64, name: &str) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.remove_subscription(account_id, name),
            Inner::Postgres(p) => p.remove_subscription(account_id, name),
        }
    }

    /// Renames a mailbox and its children. Renaming INBOX moves its messages to a new mailbox and
    /// leaves INBOX empty (RFC 3501 §6.3.5).
    pub fn rename_mailbox(&self, account_id: u64, from: &str, to: &str) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.rename_mailbox(account_id, from, to),
            Inner::Postgres(p) => p.rename_mailbox(account_id, from, to),
        }
    }

    /// Resolves a recipient address (see the module docs). `overlay` is consulted before the
    /// stored table (to check an entry before it is written).
    pub fn resolve(
        &self,
        addr: &str,
        rules: Rules<'_>,
        overlay: Option<&Alias>,
    ) -> Result<Resolution> {
        match &self.b {
            Inner::Sled(s) => s.resolve(addr, rules, overlay),
            Inner::Postgres(p) => p.resolve(addr, rules, overlay),
        }
    }

    pub fn set_password(&self, email: &str, password_hash: &str) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.set_password(email, password_hash),
            Inner::Postgres(p) => p.set_password(email, password_hash),
        }
    }

    /// `tanba user quota`: sets (or with `None` removes) an account's STORAGE limit in KiB.
    /// Mail already stored stays; only what would go above the limit is refused.
    pub fn set_quota_limit(&self, email: &str, limit_kib: Option<u64>) -> Result<Quota> {
        match &self.b {
            Inner::Sled(s) => s.set_quota_limit(email, limit_kib),
            Inner::Postgres(p) => p.set_quota_limit(email, limit_kib),
        }
    }

    /// Waits until every group commit requested so far ([`Store::durable`] or
    /// [`Store::commit_soon`], by any caller) has finished; returns at once when none is
    /// pending. IMAP's CHECK and LOGOUT use it as a barrier.
    pub async fn settled(&self) -> Result<()> {
        match &self.b {
            Inner::Sled(s) => s.settled().await,
            Inner::Postgres(_) => Ok(()),
        }
    }

    /// Bytes the store takes on disk: sled's files (its log and large values, measured now)
    /// and the message files (a running total, `files.rs`). For the metrics.
    pub fn size_bytes(&self) -> Result<u64> {
        match &self.b {
            Inner::Sled(s) => s.size_bytes(),
            Inner::Postgres(p) => p.size_bytes(),
        }
    }

    /// STORE with UNCHANGEDSINCE (RFC 7162 §3.1.3): a message whose modseq is above
    /// `unchanged_since` is left alone and its UID returned second. Checked and written in one
    /// transaction, so no change can slip in between.
    pub fn store_flags_if(
        &self,
        mailbox_id: u64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<(Vec<MessageMeta>, Vec<u32>)> {
        match &self.b {
            Inner::Sled(s) => s.store_flags_if(mailbox_id, uids, op, flags, unchanged_since),
            Inner::Postgres(p) => p.store_flags_if(mailbox_id, uids, op, flags, unchanged_since),
        }
    }

    /// STORE: changes flags of the given UIDs (missing UIDs are skipped). Returns the new metas of
    /// the messages whose flags actually changed.
    pub fn store_flags(
        &self,
        mailbox_id: u64,
        uids: &[u32],
        op: FlagOp,
        flags: &[String],
    ) -> Result<Vec<MessageMeta>> {
        match &self.b {
            Inner::Sled(s) => s.store_flags(mailbox_id, uids, op, flags),
            Inner::Postgres(p) => Ok(p.store_flags_if(mailbox_id, uids, op, flags, None)?.0),
        }
    }

    /// The account's subscribed names, sorted (module docs, "Subscriptions").
    pub fn subscriptions(&self, account_id: u64) -> Result<Vec<String>> {
        match &self.b {
            Inner::Sled(s) => s.subscriptions(account_id),
            Inner::Postgres(p) => p.subscriptions(account_id),
        }
    }

    /// UIDs expunged at a modseq above `since`, ascending; false when the log does not reach
    /// back that far (see the module comment).
    pub fn vanished_since(&self, mailbox_id: u64, since: u64) -> Result<(Vec<u32>, bool)> {
        match &self.b {
            Inner::Sled(s) => s.vanished_since(mailbox_id, since),
            Inner::Postgres(p) => p.vanished_since(mailbox_id, since),
        }
    }
}
