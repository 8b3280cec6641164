//! What happens to a message once SMTP has received it: the `Received:` header, the signature
//! filter for local recipients, the store for local mailboxes and the queue for remote ones — one
//! store transaction, then one group-committed flush. Only after [`accept`] returns may the SMTP
//! session say `250`.
//!
//! This module knows nothing of SMTP syntax; the SMTP session hands it an [`Envelope`].

use std::net::SocketAddr;
use std::time::SystemTime;

use anyhow::{Context, Result};

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

/// Where a recipient's copy goes.
pub enum Route {
    /// An account's INBOX.
    Local { account_id: u64, inbox_id: u64 },
    /// Another server (queue).
    Remote,
}

/// Looks up a recipient: a local account's INBOX, `Remote`, or `None` for an address in a local
/// domain that has no account.
pub fn route(app: &App, rcpt: &str) -> Result<Option<Route>> {
    let domain = rcpt.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !app.config.is_local_domain(domain) {
        return Ok(Some(Route::Remote));
    }
    let Some(account) = app.store.account_for_address(rcpt)? else {
        return Ok(None);
    };
    let inbox = app
        .store
        .mailbox(account.id, "INBOX")?
        .with_context(|| format!("account {} has no INBOX", account.email))?;
    Ok(Some(Route::Local {
        account_id: account.id,
        inbox_id: inbox.id,
    }))
}

/// Stores and/or queues a received message durably. Returns an id for the `250` reply.
pub async fn accept(app: &App, env: &Envelope, data: Vec<u8>) -> Result<String> {
    let now = SystemTime::now();
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for rcpt in &env.rcpts {
        match route(app, rcpt)? {
            Some(Route::Local { inbox_id, .. }) => {
                if !local.contains(&inbox_id) {
                    local.push(inbox_id);
                }
            }
            Some(Route::Remote) => remote.push(rcpt.clone()),
            // Deleted between RCPT and DATA: refuse the whole message temporarily (the caller
            // answers 451) rather than acknowledge a copy we cannot keep; the sender retries and
            // then gets 550 for that recipient at RCPT time.
            None => anyhow::bail!("recipient {rcpt} no longer exists"),
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
        let (p, input) = tokio::task::spawn_blocking(move || {
            let p = match &revocation {
                Some(r) => r.process(&filter, &input, now),
                None => filter.process(&input, now),
            };
            (p, input)
        })
        .await
        .context("signature filter crashed")?;
        with_received = input;
        tracing::info!(id = %id, verdict = %p.verdict, "signature filter");
        (p.message, p.keywords)
    };

    let queue = if remote.is_empty() {
        None
    } else {
        Some(app.store.new_queue_record(&env.mail_from, &remote)?)
    };
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
    app.store.durable().await?;
    if queue.is_some() {
        app.queue_wakeup.notify_one();
    }
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
