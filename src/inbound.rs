//! What happens to a message once SMTP has received it: the `Received:` header, the signature
//! filter for local recipients, the store for local mailboxes and the queue for remote ones — one
//! store transaction, then one group-committed flush. Only after [`accept`] returns may the SMTP
//! session say `250`.
//!
//! This module knows nothing of SMTP syntax; the SMTP session hands it an [`Envelope`].
//!
//! Processing holds a message whole in memory, two or three times over (with the `Received:`
//! header, stamped, the queue copy). So that the number of sessions finishing a message at once
//! does not decide the server's memory, processing runs under a global byte budget
//! ([`reserve`]): the sum of the sizes of the messages in processing stays within
//! [`PROCESSING_BUDGET`] (or `smtp.max_message_size`, when larger, so that one message of the
//! largest size always fits). Sessions beyond it wait for their turn with the message in their
//! spool file.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::SystemTime;

use anyhow::{Context, Result};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::server::App;

/// The envelope of one accepted message, as the SMTP session established it.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>`.
    pub mail_from: String,
    /// Forward paths, in RCPT order, already checked (local ones exist; remote ones allowed).
    pub rcpts: Vec<String>,
    /// EHLO/HELO argument.
    pub helo: String,
    pub peer: SocketAddr,
    /// The authenticated account (submission), if any.
    pub auth_user: Option<String>,
    pub tls: bool,
    /// `ESMTP`, `ESMTPS`, `ESMTPA`, `ESMTPSA` (RFC 3848), for the Received header.
    pub protocol: &'static str,
}

pub use crate::store::alias::{Dest, Resolution};

/// The resolution rules of this configuration (`server.domains`, `server.postmaster`).
fn rules(app: &App, own_only: bool) -> crate::store::alias::Rules<'_> {
    crate::store::alias::Rules {
        domains: &app.config.domains,
        postmaster: app.config.postmaster.as_deref(),
        own_only,
    }
}

/// Looks up a recipient: the accounts and remote addresses it stands for (aliases, domain
/// aliases, sub-addresses, catch-alls, `postmaster@`/`abuse@`; `store/alias.rs`). An address of
/// another domain resolves to itself as a remote destination: whether that is allowed (relaying)
/// is the SMTP session's decision, made on the address the client gave, never on what an
/// operator's alias expands to.
pub fn route(app: &App, rcpt: &str) -> Result<Resolution> {
    Ok(app.store.resolve(rcpt, rules(app, false), None)?)
}

/// Whether `account` may use `addr` as its sender: its own addresses ([`Account::owns`]),
/// its sub-addresses (`alice+tag@`), and aliases (exact or domain aliases) that deliver to it,
/// also when they deliver to others too. Not a catch-all, not the `postmaster@` default: those
/// would let one user send as every address of a domain.
///
/// [`Account::owns`]: crate::store::Account::owns
pub fn may_send_as(app: &App, account: &crate::store::Account, addr: &str) -> Result<bool> {
    if account.owns(addr) {
        return Ok(true);
    }
    let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !app.config.is_local_domain(domain) {
        return Ok(false);
    }
    Ok(match app.store.resolve(addr, rules(app, true), None)? {
        Resolution::Found(d) => d
            .iter()
            .any(|d| matches!(d, Dest::Account(a) if a.id == account.id)),
        _ => false,
    })
}

/// Bytes of messages in processing at once (at least `smtp.max_message_size`).
pub const PROCESSING_BUDGET: u64 = 64 << 20;

/// The budget is counted in units of this many bytes (a semaphore's permits).
const UNIT: u64 = 1024;

/// A share of the processing budget, held while a message is being processed.
pub struct Reservation(#[allow(dead_code)] SemaphorePermit<'static>);

/// Waits until a message of `size` bytes fits into the processing budget (one process-wide
/// budget: there is one server per process).
pub async fn reserve(app: &App, size: u64) -> Reservation {
    static BUDGET: OnceLock<(Semaphore, u32)> = OnceLock::new();
    let (sem, total) = BUDGET.get_or_init(|| {
        let bytes = PROCESSING_BUDGET.max(app.config.smtp.max_message_size);
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        (Semaphore::new(units as usize), units)
    });
    let need = u32::try_from(size.div_ceil(UNIT).max(1))
        .unwrap_or(u32::MAX)
        .min(*total);
    // The semaphore is never closed.
    let permit = sem
        .acquire_many(need)
        .await
        .expect("budget semaphore closed");
    Reservation(permit)
}

/// The MX refused a message by policy (DMARC `p=reject`, RFC 7489 §6.6.2): the SMTP session
/// answers `550 5.7.1 <text>` for the whole message.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Sender checks (SPEC §10): on the MX, SPF/DKIM/DMARC/ARC off the async workers; for
/// submission, `auth=pass smtp.auth=<user>`. Returns the message bytes back.
async fn sender_checks(
    app: &App,
    env: &Envelope,
    data: Vec<u8>,
) -> Result<(crate::senderauth::Outcome, Vec<u8>)> {
    use crate::senderauth::{Action, Checker, Input, Outcome};
    if let Some(user) = &env.auth_user {
        let domain = env
            .mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase());
        let outcome = Outcome {
            context: crate::filter::stamp::SenderContext {
                methods: vec![format!(
                    "auth=pass smtp.auth={}",
                    crate::senderauth::ar_addr(user)
                )],
                domain,
            },
            action: Action::Deliver,
        };
        return Ok((outcome, data));
    }
    let a = &app.config.auth;
    if !(a.spf || a.dkim || a.dmarc || a.arc) {
        let outcome = Outcome {
            context: Default::default(),
            action: Action::Deliver,
        };
        return Ok((outcome, data));
    }
    let checker = Checker::get(&app.config);
    let rt = tokio::runtime::Handle::current();
    let (ip, helo, from) = (env.peer.ip(), env.helo.clone(), env.mail_from.clone());
    let (config, hostname) = (app.config.auth.clone(), app.config.hostname.clone());
    tokio::task::spawn_blocking(move || {
        let input = Input {
            ip,
            helo: &helo,
            mail_from: &from,
            config: &config,
            hostname: &hostname,
        };
        let outcome = checker.check_blocking(&rt, &input, &data);
        (outcome, data)
    })
    .await
    .context("sender checks crashed")
}

/// Stores and/or queues a received message durably. Returns an id for the `250` reply.
/// `budget` (from [`reserve`] for `data`'s size) is given back once the message's bytes are
/// stored.
pub async fn accept(
    app: &App,
    env: &Envelope,
    data: Vec<u8>,
    budget: Reservation,
) -> Result<String> {
    let now = SystemTime::now();
    let (sender, data) = sender_checks(app, env, data).await?;
    if env.auth_user.is_none() {
        let clauses = sender.context.methods.iter().map(String::as_str);
        crate::metrics::REGISTRY.sender_auth_clauses(clauses);
    }
    let junk = match &sender.action {
        crate::senderauth::Action::Reject(why) => return Err(Refused(why.clone()).into()),
        crate::senderauth::Action::Junk(_) => true,
        crate::senderauth::Action::Deliver => false,
    };
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for rcpt in &env.rcpts {
        let dests = match route(app, rcpt)? {
            Resolution::Found(d) => d,
            // Deleted between RCPT and DATA: refuse the whole message temporarily (the caller
            // answers 451) rather than acknowledge a copy we cannot keep; the sender retries and
            // then gets 550 for that recipient at RCPT time.
            _ => anyhow::bail!("recipient {rcpt} no longer resolves"),
        };
        for d in dests {
            match d {
                Dest::Account(a) => {
                    // Quarantined mail goes to the account's Junk (its INBOX if it has none).
                    let junk_box = if junk {
                        app.store.mailbox(a.id, "Junk")?
                    } else {
                        None
                    };
                    let inbox = match junk_box {
                        Some(j) => j,
                        None => app
                            .store
                            .mailbox(a.id, "INBOX")?
                            .with_context(|| format!("account {} has no INBOX", a.email))?,
                    };
                    if !local.contains(&inbox.id) {
                        local.push(inbox.id);
                    }
                }
                // An alias's remote target: queued like a submitted message's (the operator's
                // choice; the client named a local address).
                Dest::Remote(addr) => {
                    if !remote.contains(&addr) {
                        remote.push(addr);
                    }
                }
            }
        }
    }

    let id = format!("{:016X}", app.store_id_hint());
    let single = (env.rcpts.len() == 1).then(|| env.rcpts[0].as_str());
    let received = received_header(app, env, &id, single, now);
    let mut with_received = Vec::with_capacity(received.len() + data.len());
    with_received.extend_from_slice(received.as_bytes());
    with_received.extend_from_slice(&data);
    drop(data);

    let (stamped, keywords) = if local.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let filter = app.filter.clone();
        let revocation = app.revocation.clone();
        // Move the bytes into the blocking task and back, instead of copying them. With
        // revocation checking on, CRL/OCSP fetches (bounded by timeouts) happen in this task too.
        let input = std::mem::take(&mut with_received);
        let context = sender.context.clone();
        let (p, input) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let run = || match &revocation {
                Some(r) => r.process(&filter, &input, now),
                None => filter.process(&input, now),
            };
            // No sender results (all `[auth]` checks off): the stamp of SPEC §5 alone.
            let p = if context.methods.is_empty() {
                run()
            } else {
                crate::filter::stamp::with_sender(context, run)
            };
            crate::metrics::REGISTRY
                .filter_duration
                .observe(started.elapsed());
            (p, input)
        })
        .await
        .context("signature filter crashed")?;
        with_received = input;
        crate::metrics::REGISTRY.verdicts.inc(&p.verdict);
        p.reasons
            .iter()
            .for_each(|r| crate::metrics::REGISTRY.reasons.inc(r));
        tracing::info!(id = %id, verdict = %p.verdict, "signature filter");
        (p.message, p.keywords)
    };

    let queue = if remote.is_empty() {
        None
    } else {
        Some(app.store.new_queue_record(&env.mail_from, &remote)?)
    };
    let mut keywords = keywords;
    if junk {
        keywords.push("$Junk".to_string());
    }
    let targets: Vec<(u64, Vec<String>)> = local.iter().map(|m| (*m, keywords.clone())).collect();
    let internal_date = unix(now);
    let store = app.store.clone();
    let q = queue.clone();
    tokio::task::spawn_blocking(move || {
        store.deliver(
            &targets,
            &stamped,
            internal_date,
            q.as_ref().map(|q| (q, with_received.as_slice())),
        )
    })
    .await
    .context("store task crashed")??;
    // The message's bytes are gone from memory: the next message may go ahead.
    drop(budget);
    app.store.durable().await?;
    if queue.is_some() {
        app.queue_wakeup.notify_one();
    }
    // Submission sessions always authenticate before MAIL; MX sessions never do.
    let listener = if env.auth_user.is_some() {
        "submission"
    } else {
        "mx"
    };
    crate::metrics::REGISTRY.received.inc(listener);
    crate::metrics::REGISTRY
        .delivered
        .add("local", local.len() as u64);
    tracing::info!(
        id = %id,
        // The client's string: escaped and bounded here too, not only by the log writer.
        from = %crate::logging::escape(&env.mail_from, 256),
        local = local.len(),
        remote = remote.len(),
        "accepted"
    );
    Ok(id)
}

impl App {
    /// A short unique-enough id for logs and the Received header.
    fn store_id_hint(&self) -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        (unix(SystemTime::now()) as u64) << 20 | (n & 0xFFFFF)
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 5321 §4.4 trace header, folded to stay under 78 columns per line.
fn received_header(
    app: &App,
    env: &Envelope,
    id: &str,
    single_rcpt: Option<&str>,
    now: SystemTime,
) -> String {
    let date = chrono::DateTime::<chrono::Utc>::from(now).format("%a, %d %b %Y %H:%M:%S +0000");
    let helo: String = env
        .helo
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect();
    let ip = match env.peer {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("IPv6:{}", a.ip()),
    };
    let mut h = format!(
        "Received: from {} ([{ip}])\r\n\tby {} (Tanba) with {} id {id}",
        if helo.is_empty() { "unknown" } else { &helo },
        app.config.hostname,
        env.protocol
    );
    if let Some(r) = single_rcpt {
        if r.is_ascii() && !r.contains(['\r', '\n', '>']) {
            h.push_str(&format!("\r\n\tfor <{r}>"));
        }
    }
    h.push_str(&format!(";\r\n\t{date}\r\n"));
    h
}
