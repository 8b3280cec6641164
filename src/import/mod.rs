//! Migration in (`tanba import maildir|mbox`, issue 12 item 4): reads another server's mail one
//! message at a time ([`maildir`], [`mbox`]) and stores it with its flags and INTERNALDATE
//! ([`Importer`]).
//!
//! The source is always read by the CLI process, as the user who runs it. With a server
//! running, the messages are streamed over the admin socket (`admin::Request::Import`, then
//! frames: one JSON [`Frame`] line and exactly `size` bytes each, until EOF), so the server
//! never opens the operator's files. Every message passes the limits of IMAP APPEND on the
//! receiving side (non-empty, at most `imap.max_literal_size`, valid flags and mailbox names),
//! whoever sends it. See docs/operations.md, "Moving from another server".

pub mod maildir;
pub mod mbox;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError};

/// One message read from the source.
#[derive(Debug)]
pub struct Item {
    /// Target mailbox, UTF-8, `/` as the hierarchy delimiter.
    pub mailbox: String,
    pub flags: Vec<String>,
    /// INTERNALDATE, Unix seconds.
    pub internal_date: i64,
    /// The message bytes.
    pub data: Vec<u8>,
    /// Where it came from (file name, `FILE:line`), for warnings.
    pub origin: String,
}

/// What a source yields: a message, or a warning about one it skipped.
#[derive(Debug)]
pub enum Event {
    Message(Item),
    Skipped { origin: String, reason: String },
}

/// The header line of one message on the admin socket; `size` raw bytes follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Frame {
    pub mailbox: String,
    pub flags: Vec<String>,
    pub internal_date: i64,
    pub size: u64,
    pub origin: String,
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Imported,
    /// Already in the mailbox before this import started (same INTERNALDATE and the same bytes
    /// or the same Message-ID).
    Duplicate,
    /// Refused by the limits (the reason names what).
    Rejected(String),
}

/// Counts for the final report.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Stats {
    pub imported: u64,
    pub duplicates: u64,
    pub skipped: u64,
    pub mailboxes_created: u64,
    /// Warning lines (capped at [`MAX_WARNINGS`]).
    pub warnings: Vec<String>,
}

/// Warning lines kept for the report; the count of skipped messages is always exact.
pub const MAX_WARNINGS: usize = 1000;
/// Flags per message accepted (more are dropped with a warning).
const MAX_FLAGS: usize = 64;
/// Longest keyword accepted.
const MAX_KEYWORD: usize = 250;

impl Stats {
    pub fn warn(&mut self, line: String) {
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(line);
        } else if self.warnings.len() == MAX_WARNINGS {
            self.warnings.push("(further warnings left out)".into());
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "imported {} messages ({} already there, {} skipped; {} mailboxes created)",
            self.imported, self.duplicates, self.skipped, self.mailboxes_created
        )
    }
}

/// Runs the signature filter on an imported message (`--stamp`): the stamped bytes and the
/// keywords to add.
pub type Stamper = Arc<dyn Fn(&[u8]) -> (Vec<u8>, Vec<String>) + Send + Sync>;

/// A stamper over a filter and an optional revocation checker, as on delivery.
pub fn stamper(
    filter: Arc<crate::filter::Filter>,
    revocation: Option<Arc<crate::revocation::Checker>>,
) -> Stamper {
    Arc::new(move |raw: &[u8]| {
        let now = SystemTime::now();
        let p = match &revocation {
            Some(r) => r.process(&filter, raw, now),
            None => filter.process(raw, now),
        };
        (p.message, p.keywords)
    })
}

/// A target mailbox as the importer knows it: its id and what was in it before the import
/// started: blob ids by INTERNALDATE, and for each date looked at, the SHA-256 digests and
/// Message-IDs of those messages (each blob is read at most once per import, however many
/// messages share a date).
struct Target {
    id: u64,
    before: HashMap<i64, Vec<u64>>,
    seen: HashMap<i64, Seen>,
}

#[derive(Default)]
struct Seen {
    digests: HashSet<[u8; 32]>,
    ids: HashSet<String>,
}

/// Stores imported messages into one account. Owns a store handle, so that it can move into a
/// blocking task and back.
pub struct Importer {
    store: Store,
    account_id: u64,
    max_size: u64,
    stamp: Option<Stamper>,
    dedup: bool,
    targets: HashMap<String, Option<Target>>,
    pub stats: Stats,
}

impl Importer {
    /// `dedup`: skip messages already present (see [`Outcome::Duplicate`]).
    pub fn new(
        store: Store,
        email: &str,
        max_size: u64,
        stamp: Option<Stamper>,
        dedup: bool,
    ) -> Result<Importer> {
        let Some(a) = store.account(email)? else {
            bail!("no account {email}: create it first with tanba user add")
        };
        Ok(Importer {
            store,
            account_id: a.id,
            max_size,
            stamp,
            dedup,
            targets: HashMap::new(),
            stats: Stats::default(),
        })
    }

    /// Stores one message, or says why not. Errors are store failures (the import stops).
    pub fn add(&mut self, item: Item) -> Result<Outcome> {
        let out = self.add_inner(item.mailbox, item.flags, item.internal_date, item.data)?;
        match &out {
            Outcome::Imported => self.stats.imported += 1,
            Outcome::Duplicate => self.stats.duplicates += 1,
            Outcome::Rejected(why) => {
                self.stats.skipped += 1;
                let line = format!(
                    "skipped {}: {why}",
                    crate::logging::escape(&item.origin, 512)
                );
                self.stats.warn(line);
            }
        }
        Ok(out)
    }

    fn add_inner(
        &mut self,
        mailbox: String,
        flags: Vec<String>,
        internal_date: i64,
        data: Vec<u8>,
    ) -> Result<Outcome> {
        // The limits of APPEND (imap/cmd/append.rs and the framer's literal budget).
        if data.is_empty() {
            return Ok(Outcome::Rejected("empty message".into()));
        }
        if data.len() as u64 > self.max_size {
            return Ok(Outcome::Rejected(format!(
                "{} bytes, over imap.max_literal_size ({})",
                data.len(),
                self.max_size
            )));
        }
        let mut flags = match check_flags(&flags) {
            Ok(f) => f,
            Err(e) => return Ok(Outcome::Rejected(e)),
        };
        let Some(target) = self.target(&mailbox)? else {
            return Ok(Outcome::Rejected(format!(
                "mailbox name {:?} not accepted",
                crate::logging::escape(&mailbox, 200)
            )));
        };
        let target_id = target.id;
        if self.dedup && self.is_duplicate(&mailbox, internal_date, &data)? {
            return Ok(Outcome::Duplicate);
        }
        let data = match &self.stamp {
            Some(s) => {
                let (stamped, keywords) = s(&data);
                for k in keywords {
                    if !flags.iter().any(|f| f.eq_ignore_ascii_case(&k)) {
                        flags.push(k);
                    }
                }
                stamped
            }
            None => data,
        };
        match self.store.append(target_id, &data, &flags, internal_date) {
            Ok(_) => Ok(Outcome::Imported),
            Err(StoreError::NotFound(what)) => bail!("{what} vanished during the import"),
            Err(e) => Err(e.into()),
        }
    }

    /// The mailbox by name, created when missing; None when the name is not acceptable.
    fn target(&mut self, name: &str) -> Result<Option<&Target>> {
        let name = norm_name(name);
        if !self.targets.contains_key(&name) {
            let t = self.open_target(&name)?;
            self.targets.insert(name.clone(), t);
        }
        Ok(self.targets[&name].as_ref())
    }

    fn open_target(&mut self, name: &str) -> Result<Option<Target>> {
        let meta = match self.store.mailbox(self.account_id, name)? {
            Some(m) => m,
            None => match self.store.create_mailbox(self.account_id, name, None) {
                Ok(m) => {
                    self.stats.mailboxes_created += 1;
                    // Subscribed, so that clients showing only subscribed folders (Thunderbird's
                    // default) show what was imported (docs/imap.md, "Subscriptions"). Past the
                    // subscription limit it stays unsubscribed.
                    match self.store.add_subscription(self.account_id, name) {
                        Ok(()) | Err(StoreError::Invalid(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    m
                }
                Err(StoreError::Invalid(_)) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        let mut before: HashMap<i64, Vec<u64>> = HashMap::new();
        if self.dedup {
            for m in self.store.messages(meta.id)? {
                before.entry(m.internal_date).or_default().push(m.blob_id);
            }
        }
        Ok(Some(Target {
            id: meta.id,
            before,
            seen: HashMap::new(),
        }))
    }

    /// Whether the mailbox held this message before the import started: same INTERNALDATE and
    /// the same bytes, or the same Message-ID (stamped copies differ in bytes, not in that).
    fn is_duplicate(&mut self, mailbox: &str, date: i64, data: &[u8]) -> Result<bool> {
        let name = norm_name(mailbox);
        let Some(Some(t)) = self.targets.get_mut(&name) else {
            return Ok(false);
        };
        let Some(blobs) = t.before.get(&date) else {
            return Ok(false);
        };
        let seen = match t.seen.entry(date) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut seen = Seen::default();
                for &blob_id in blobs {
                    if let Some(blob) = self.store.blob(blob_id)? {
                        seen.digests.insert(openssl::sha::sha256(&blob));
                        if let Some(id) = message_id(&blob) {
                            seen.ids.insert(id);
                        }
                    }
                }
                e.insert(seen)
            }
        };
        Ok(seen.digests.contains(&openssl::sha::sha256(data))
            || message_id(data).is_some_and(|id| seen.ids.contains(&id)))
    }

    /// Makes everything stored so far durable (direct mode; the server uses its group commit).
    pub fn flush(&self) -> Result<()> {
        self.store.flush_sync()?;
        Ok(())
    }
}

/// The key of a mailbox name in the importer's map: the store's own normalisation of INBOX.
fn norm_name(name: &str) -> String {
    let name = name.trim_end_matches('/');
    let inbox = |n: usize| {
        name.get(..n)
            .is_some_and(|p| p[..5].eq_ignore_ascii_case("INBOX"))
    };
    if name.len() == 5 && inbox(5) || name.get(5..6) == Some("/") && inbox(5) {
        format!("INBOX{}", &name[5..])
    } else {
        name.to_string()
    }
}

/// The Message-ID of a message (header section only), if it has one.
fn message_id(raw: &[u8]) -> Option<String> {
    let msg = mail_parser::MessageParser::new().parse_headers(raw)?;
    msg.message_id()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string())
}

/// System flags in canonical case and keywords that are IMAP atoms; anything else refuses the
/// message (a source that sends it is not a maildir or mbox reader of ours).
fn check_flags(flags: &[String]) -> std::result::Result<Vec<String>, String> {
    if flags.len() > MAX_FLAGS {
        return Err(format!("more than {MAX_FLAGS} flags"));
    }
    const SYSTEM: [&str; 5] = ["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft"];
    let mut out = Vec::with_capacity(flags.len());
    for f in flags {
        if let Some(s) = SYSTEM.iter().find(|s| s.eq_ignore_ascii_case(f)) {
            out.push(s.to_string());
        } else if is_keyword(f) {
            out.push(f.clone());
        } else {
            return Err(format!(
                "flag {:?} is not an IMAP keyword",
                crate::logging::escape(f, 100)
            ));
        }
    }
    Ok(out)
}

/// RFC 3501 §9 `flag-keyword = atom`: ATOM-CHARs, not starting with `\`.
pub fn is_keyword(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_KEYWORD
        && k.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

// ---- the admin socket side (server running) ----

/// Longest frame header line the server reads.
const MAX_FRAME_LINE: u64 = 64 * 1024;
/// The server makes its work durable at least this often (messages).
const DURABLE_EVERY: u64 = 500;

/// Serves `Request::Import` on an admin connection: reads frames until EOF, stores each message
/// (in a blocking task), and answers one JSON line with the counts and warnings.
pub async fn serve_stream<R, W>(
    mut r: R,
    mut w: W,
    app: Arc<crate::server::App>,
    email: &str,
    stamp: bool,
    dedup: bool,
) -> Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let result: Result<Stats> = async {
        let stamper = stamp.then(|| stamper(app.filter.clone(), app.revocation.clone()));
        let store = app.store.clone();
        let max = app.config.imap.max_literal_size;
        let email = email.to_string();
        let mut imp =
            tokio::task::spawn_blocking(move || Importer::new(store, &email, max, stamper, dedup))
                .await??;
        let mut n = 0u64;
        loop {
            let mut line = Vec::new();
            (&mut r)
                .take(MAX_FRAME_LINE)
                .read_until(b'\n', &mut line)
                .await?;
            if line.is_empty() {
                break;
            }
            if !line.ends_with(b"\n") {
                bail!("import frame header too long or cut short");
            }
            let f: Frame = serde_json::from_slice(&line).map_err(|e| anyhow!("bad frame: {e}"))?;
            if f.size > max {
                // The client skips these itself; a client that sends one is not ours.
                bail!("frame of {} bytes over imap.max_literal_size", f.size);
            }
            let mut data = vec![0u8; f.size as usize];
            r.read_exact(&mut data).await?;
            let item = Item {
                mailbox: f.mailbox,
                flags: f.flags,
                internal_date: f.internal_date,
                data,
                origin: f.origin,
            };
            let (back, res) = tokio::task::spawn_blocking(move || {
                let res = imp.add(item);
                (imp, res)
            })
            .await?;
            imp = back;
            res?;
            n += 1;
            if n.is_multiple_of(DURABLE_EVERY) {
                app.store.durable().await?;
            }
        }
        app.store.durable().await?;
        Ok(imp.stats)
    }
    .await;
    let resp = match result {
        Ok(stats) => {
            tracing::info!(
                imported = stats.imported,
                duplicates = stats.duplicates,
                skipped = stats.skipped,
                "admin: import"
            );
            crate::admin::Response {
                ok: true,
                text: stats.summary(),
                data: serde_json::to_value(&stats)?,
            }
        }
        Err(e) => {
            // Whatever was stored before the error is durable too (the answer says how far
            // it got only by its absence: re-running skips what is there).
            let _ = app.store.durable().await;
            crate::admin::Response {
                ok: false,
                text: format!("{e:#}"),
                data: serde_json::Value::Null,
            }
        }
    };
    let mut head = serde_json::to_vec(&resp)?;
    head.push(b'\n');
    w.write_all(&head).await?;
    w.shutdown().await?;
    Ok(())
}
