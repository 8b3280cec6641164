//! `tanba serve`: binds every listener, runs the accept loops, the admin socket and the delivery
//! workers, and drains gracefully on SIGTERM/SIGINT.
//!
//! Each accepted connection first gets a [`limits::Ticket`] (its place in the per-address counts
//! of SPEC §8), then a permit from its pool's semaphore: MX (`smtp.max_connections`), submission
//! (`smtp.max_submission_connections`, 587 and 465 together) and IMAP (`imap.max_connections`)
//! are separate pools, so MX traffic never locks out users. Both move into the session's task
//! and return when it ends, however it ends. A connection over a limit is refused and closed: a
//! client retrying later is better served than one hanging in a backlog. On plaintext ports the
//! refusal is one line (`421 4.7.0` for SMTP, `* BYE` for IMAP); on implicit-TLS ports (465, 993)
//! never plaintext bytes: the TLS handshake is completed (within [`REFUSAL_TLS_TIMEOUT`]) and the
//! refusal sent inside TLS, while at most [`REFUSAL_HANDSHAKES`] such refusals are in flight;
//! beyond that the connection is simply closed.
//!
//! # Reload (SIGHUP)
//! [`App`] is an immutable snapshot; [`Live`] holds the current one. SIGHUP re-reads the config
//! file and builds a new snapshot (TLS certificate and key, trust anchors and CRLs, DKIM keys,
//! the live keys of the config) next to the running one; only when every part loads is it
//! swapped in ([`reload`]). Each connection takes the snapshot current when it is accepted and
//! keeps it to its end, so new connections see the new certificate and limits while open
//! sessions are untouched. What cannot change live (listeners, `data_dir`, pool sizes, the
//! relay; [`RESTART_KEYS`]) keeps its running value and is logged as needing a restart. The
//! store, the connection tracker and the queue wake-up are shared by every snapshot.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::delivery::dkim;
use crate::filter::Filter;
use crate::limits::{self, Class, ConnTracker};
use crate::shutdown::{Coordinator, Shutdown};
use crate::store::Store;
use crate::{admin, delivery, imap, smtp};

/// How long a refused client on an implicit-TLS port gets to finish the handshake.
pub const REFUSAL_TLS_TIMEOUT: Duration = Duration::from_secs(5);
/// Refusals inside TLS in flight at once, over all ports; more are closed without a word.
pub const REFUSAL_HANDSHAKES: usize = 32;

/// Everything a session or worker needs, shared behind an `Arc` for the life of `serve`.
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    /// Built once at start-up: trust anchors are loaded here, not per message.
    pub filter: Arc<Filter>,
    /// Fetches and caches CRLs and OCSP answers for the filter (`signatures.revocation`); None
    /// when revocation checking is off.
    pub revocation: Option<Arc<crate::revocation::Checker>>,
    /// One acceptor for every listener, presenting whatever [`App::certs`] holds.
    pub tls: TlsAcceptor,
    /// The certificate every TLS listener presents; shared by every snapshot, replaced by a
    /// reload or a renewed ACME certificate (new handshakes see it, no restart).
    pub certs: Arc<crate::tls::Certs>,
    /// The ACME renewal task's HTTP-01 tokens and wake-up (src/acme).
    pub acme: Arc<crate::acme::State>,
    /// Wakes the delivery workers when something new is queued (or `queue retry` asks).
    pub queue_wakeup: Arc<tokio::sync::Notify>,
    /// Connections per client address and logged-in sessions per account (SPEC §8); ends an
    /// account's sessions for `tanba user del` / `user passwd`.
    pub conns: Arc<ConnTracker>,
    /// DKIM signing keys (`[dkim]`) for the delivery workers.
    pub dkim: Arc<dkim::Signers>,
    /// Password checks (bounded hashing pool, credential cache), failed-login delays and bans.
    pub auth: Arc<crate::auth::Authenticator>,
}

/// The current [`App`] snapshot, replaced whole by [`reload`]. A `std` `RwLock<Arc<_>>`: it is
/// read once per connection (and per delivery step), never held across an await, and written
/// once per SIGHUP, so a lock-free cell (arc-swap) would buy nothing worth a dependency.
pub struct Live {
    current: std::sync::RwLock<Arc<App>>,
}

impl Live {
    pub fn new(app: Arc<App>) -> Arc<Live> {
        Arc::new(Live {
            current: std::sync::RwLock::new(app),
        })
    }

    /// The snapshot to use from now on (a connection keeps it to its end).
    pub fn app(&self) -> Arc<App> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, app: Arc<App>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = app;
    }
}

/// Keys that a reload does not change: their running value stays, with a warning.
pub const RESTART_KEYS: &[&str] = &[
    "server.data_dir",
    "smtp.mx",
    "smtp.submission",
    "smtp.submissions",
    "imap.listen",
    "imap.listen_tls",
    "http.listen",
    "http.listen_tls",
    "http.metrics",
    "http.max_connections",
    "smtp.max_connections",
    "smtp.max_submission_connections",
    "imap.max_connections",
    "delivery.relay",
    "delivery.relay_user",
    "delivery.relay_password",
    "delivery.resolver",
    "delivery.remote_port",
    "delivery.concurrency",
    "delivery.tls_ca_file",
    "delivery.mta_sts",
    "delivery.mta_sts_port",
    "limits.auth_failures",
    "limits.ban_time",
];

/// Puts the running values of [`RESTART_KEYS`] into `new`; returns the keys that differed.
fn keep_restart_keys(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($key:literal, $($f:ident).+) => {
            if new.$($f).+ != old.$($f).+ {
                changed.push($key);
                new.$($f).+ = old.$($f).+.clone();
            }
        };
    }
    keep!("server.data_dir", data_dir);
    keep!("smtp.mx", smtp.mx);
    keep!("smtp.submission", smtp.submission);
    keep!("smtp.submissions", smtp.submissions);
    keep!("imap.listen", imap.listen);
    keep!("imap.listen_tls", imap.listen_tls);
    keep!("http.listen", http.listen);
    keep!("http.listen_tls", http.listen_tls);
    keep!("http.metrics", http.metrics);
    keep!("http.max_connections", http.max_connections);
    keep!("smtp.max_connections", smtp.max_connections);
    keep!(
        "smtp.max_submission_connections",
        smtp.max_submission_connections
    );
    keep!("imap.max_connections", imap.max_connections);
    keep!("delivery.relay", delivery.relay);
    keep!("delivery.relay_user", delivery.relay_user);
    keep!("delivery.relay_password", delivery.relay_password);
    keep!("delivery.resolver", delivery.resolver);
    keep!("delivery.remote_port", delivery.remote_port);
    keep!("delivery.concurrency", delivery.concurrency);
    keep!("delivery.tls_ca_file", delivery.tls_ca_file);
    keep!("delivery.mta_sts", delivery.mta_sts);
    keep!("delivery.mta_sts_port", delivery.mta_sts_port);
    keep!("limits.auth_failures", limits.auth_failures);
    keep!("limits.ban_time", limits.ban_time);
    debug_assert!(changed.iter().all(|k| RESTART_KEYS.contains(k)));
    changed
}

/// Re-reads the config file the server started with and, when it and everything it names
/// (certificate and key, trust_dir, CRLs, DKIM keys) load, makes it current. On error nothing
/// changes. Returns the keys that changed but need a restart. Blocking (file I/O).
pub fn reload(live: &Live) -> Result<Vec<&'static str>> {
    let old = live.app();
    let mut config = Config::load(old.config.path.as_deref())?;
    let restart = keep_restart_keys(&old.config, &mut config);
    let filter = Filter::new(&config).context("signatures")?;
    let revocation = crate::revocation::Checker::from_config(&config, &[])
        .context("signatures")?
        .map(Arc::new);
    let dkim = dkim::Signers::load_strict(&config)?;
    {
        // Read and installed while the ACME task cannot write a new pair (two files), so that
        // neither half a pair nor an older certificate wins.
        let _files = old.acme.files();
        let identity = crate::tls::identity(&config).context("tls")?;
        // The same resolver and acceptor: every listener presents the reloaded certificate.
        old.certs.set(identity);
    }
    old.conns.set_limits(&config.limits);
    live.set(Arc::new(App {
        store: old.store.clone(),
        filter: Arc::new(filter),
        revocation,
        tls: old.tls.clone(),
        certs: old.certs.clone(),
        acme: old.acme.clone(),
        queue_wakeup: old.queue_wakeup.clone(),
        conns: old.conns.clone(),
        // Bans and failure counts survive a reload (limits.auth_failures and ban_time with them).
        auth: old.auth.clone(),
        dkim: Arc::new(dkim),
        config: Arc::new(config),
    }));
    // `[acme]` may have changed: the renewal task checks now.
    old.acme.wake();
    Ok(restart)
}

/// `postmaster@` must be deliverable (RFC 5321 §4.5.1): say so at start when it is not yet
/// (it is then answered `451` until an account exists or `server.postmaster` resolves).
fn warn_postmaster(app: &App) {
    let Some(domain) = app.config.domains.first() else {
        return;
    };
    match crate::inbound::route(app, &format!("postmaster@{domain}")) {
        Ok(crate::inbound::Resolution::Found(_)) => {}
        Ok(_) => tracing::warn!(
            "postmaster@{domain} has nowhere to go yet: create an account, or set \
             server.postmaster or `tanba alias add postmaster@{domain} ADDRESS`"
        ),
        Err(e) => tracing::warn!("checking postmaster@{domain}: {e}"),
    }
}

/// SIGHUP: reload off the async workers, and log what happened.
async fn on_hangup(live: &Arc<Live>) {
    tracing::info!("SIGHUP: reloading the configuration");
    let l = live.clone();
    match tokio::task::spawn_blocking(move || reload(&l)).await {
        Ok(Ok(restart)) => {
            for key in &restart {
                tracing::warn!("reload: {key} changed; it takes effect only after a restart");
            }
            let app = live.app();
            warn_postmaster(&app);
            tracing::info!(
                config = %app
                    .config
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "built-in defaults".into()),
                "reloaded: TLS certificate, trust anchors, CRLs, DKIM keys and live settings; \
                 new connections use them"
            );
        }
        Ok(Err(e)) => {
            tracing::error!("reload refused, still serving the previous configuration: {e:#}")
        }
        Err(e) => tracing::error!("reload crashed, still serving the previous configuration: {e}"),
    }
}

/// Which protocol and port a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Smtp(smtp::Port),
    Imap { implicit_tls: bool },
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Smtp(smtp::Port::Mx) => "smtp.mx",
            Kind::Smtp(smtp::Port::Submission) => "smtp.submission",
            Kind::Smtp(smtp::Port::Submissions) => "smtp.submissions",
            Kind::Imap {
                implicit_tls: false,
            } => "imap.listen",
            Kind::Imap { implicit_tls: true } => "imap.listen_tls",
        }
    }

    fn implicit_tls(self) -> bool {
        matches!(
            self,
            Kind::Smtp(smtp::Port::Submissions) | Kind::Imap { implicit_tls: true }
        )
    }

    /// What its connections count as in the metrics.
    fn metric(self) -> crate::metrics::Protocol {
        match self {
            Kind::Smtp(smtp::Port::Mx) => crate::metrics::Protocol::Smtp,
            Kind::Smtp(_) => crate::metrics::Protocol::Submission,
            Kind::Imap { .. } => crate::metrics::Protocol::Imap,
        }
    }

    /// MX sessions never log in; everything else starts unauthenticated.
    fn class(self) -> Class {
        match self {
            Kind::Smtp(smtp::Port::Mx) => Class::Mx,
            _ => Class::Unauthenticated,
        }
    }
}

/// The connection pools (SPEC §8): MX, submission (both ports), IMAP (both ports).
struct Pools {
    mx: Arc<Semaphore>,
    submission: Arc<Semaphore>,
    imap: Arc<Semaphore>,
    /// Refusals inside TLS in flight (see the module docs).
    refusals: Arc<Semaphore>,
}

impl Pools {
    fn of(&self, kind: Kind) -> &Arc<Semaphore> {
        match kind {
            Kind::Smtp(smtp::Port::Mx) => &self.mx,
            Kind::Smtp(_) => &self.submission,
            Kind::Imap { .. } => &self.imap,
        }
    }
}

/// Builds the shared state: opens the store, loads the trust anchors and the TLS identity.
pub fn build_app(config: Config) -> Result<Arc<App>> {
    crate::perms::create_dir_all(&config.data_dir)
        .with_context(|| format!("server.data_dir: creating {}", config.data_dir.display()))?;
    crate::perms::check_at_start(&config);
    let store = Store::open_backend(&config.store, &config.data_dir.join("store"))?;
    // The schema must be readable (PostgreSQL: created or migrated by the open above), and a
    // killed predecessor's outbound claims are released.
    store.start_serving(&config.data_dir)?;
    let filter = Filter::new(&config).context("signatures")?;
    let trust_dir = &config.signatures.trust_dir;
    tracing::info!(
        "signatures.trust_dir {} holds {} trusted certificates",
        trust_dir.display(),
        filter.trust().len()
    );
    let test_certs = crate::preflight::nca_test_certs(filter.trust());
    if !test_certs.is_empty() {
        tracing::warn!(
            "{}",
            crate::preflight::nca_test_warning(trust_dir, &test_certs)
        );
    }
    let revocation = crate::revocation::Checker::from_config(&config, &[])
        .context("signatures")?
        .map(Arc::new);
    let certs = crate::tls::Certs::new(crate::tls::identity(&config).context("tls")?);
    let tls = crate::tls::server_acceptor(certs.clone()).context("tls")?;
    let auth = crate::auth::Authenticator::new(store.clone(), &config.limits)?;
    Ok(Arc::new(App {
        store,
        filter: Arc::new(filter),
        revocation,
        tls,
        certs,
        acme: crate::acme::State::new(),
        queue_wakeup: Arc::new(tokio::sync::Notify::new()),
        conns: ConnTracker::new(&config.limits),
        dkim: Arc::new(dkim::Signers::load(&config)),
        config: Arc::new(config),
        auth: Arc::new(auth),
    }))
}

/// Runs the server until SIGTERM/SIGINT, then drains and returns.
pub async fn serve(config: Config) -> Result<()> {
    crate::metrics::REGISTRY.started();
    let app = build_app(config)?;
    let live = Live::new(app.clone());
    // Before anything is up: SIGHUP's default action would end the process.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let cfg = app.config.clone();
    warn_postmaster(&app);
    let swept = smtp::spool::prepare(&cfg.data_dir).context("server.data_dir: spool")?;
    if swept > 0 {
        tracing::info!("removed {swept} unfinished messages from the spool");
    }

    let mut bound: Vec<(Kind, TcpListener)> = Vec::new();
    let plan: Vec<(Kind, &Vec<SocketAddr>)> = vec![
        (Kind::Smtp(smtp::Port::Mx), &cfg.smtp.mx),
        (Kind::Smtp(smtp::Port::Submission), &cfg.smtp.submission),
        (Kind::Smtp(smtp::Port::Submissions), &cfg.smtp.submissions),
        (
            Kind::Imap {
                implicit_tls: false,
            },
            &cfg.imap.listen,
        ),
        (Kind::Imap { implicit_tls: true }, &cfg.imap.listen_tls),
    ];
    let mut report = serde_json::Map::new();
    for (kind, addrs) in plan {
        let mut list = Vec::new();
        for addr in addrs {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!(crate::preflight::bind_error(kind.key(), *addr, &e))
            })?;
            let local = l.local_addr()?;
            tracing::info!("{} listening on {local}", kind.key());
            list.push(serde_json::Value::String(local.to_string()));
            bound.push((kind, l));
        }
        report.insert(kind.key().to_string(), serde_json::Value::Array(list));
    }
    let http_bound = crate::http::bind(&cfg, &mut report).await?;

    let coordinator = Coordinator::new();
    let admin_listener = admin::bind(&cfg)?;
    tokio::spawn(admin::serve(
        admin_listener,
        live.clone(),
        coordinator.handle(),
    ));
    tokio::spawn(delivery::run(live.clone(), coordinator.handle()));
    tokio::spawn(crate::acme::run(live.clone(), coordinator.handle()));

    let pools = Arc::new(Pools {
        mx: Arc::new(Semaphore::new(cfg.smtp.max_connections)),
        submission: Arc::new(Semaphore::new(cfg.smtp.max_submission_connections)),
        imap: Arc::new(Semaphore::new(cfg.imap.max_connections)),
        refusals: Arc::new(Semaphore::new(REFUSAL_HANDSHAKES)),
    });
    crate::http::spawn(http_bound, live.clone(), &coordinator, &report);
    for (kind, listener) in bound {
        tokio::spawn(accept_loop(
            listener,
            kind,
            live.clone(),
            pools.clone(),
            coordinator.handle(),
        ));
    }

    // Tell scripts (and tests using port 0) where we listen, only once everything is up.
    let file = cfg.listeners_file();
    crate::perms::write_atomic(&file, &serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", file.display()))?;
    tracing::info!(
        "tanba {} ready (data in {})",
        env!("CARGO_PKG_VERSION"),
        cfg.data_dir.display()
    );

    tokio::select! {
        _ = wait_for_signal(&live, &mut hangup) => {}
        // sled cannot recover from an I/O error in-process (store/sync.rs): exit non-zero so
        // that systemd (Restart=on-failure) starts a fresh process from what is on disk.
        why = crate::store::failed() => {
            anyhow::bail!("the store failed ({why}); exiting so that a restart recovers it");
        }
    }
    tracing::info!("shutting down: no new connections; finishing current commands");
    coordinator.begin();
    if tokio::time::timeout(Duration::from_secs(30), coordinator.wait_idle())
        .await
        .is_err()
    {
        tracing::warn!("some sessions did not finish within 30 s; closing them");
    }
    app.store.durable().await?;
    app.store.flush_sync()?;
    let _ = std::fs::remove_file(cfg.admin_socket());
    let _ = std::fs::remove_file(&file);
    tracing::info!("stopped");
    Ok(())
}

/// Waits for SIGTERM/SIGINT, reloading on each SIGHUP meanwhile.
async fn wait_for_signal(live: &Arc<Live>, hangup: &mut tokio::signal::unix::Signal) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hangup.recv() => on_hangup(live).await,
        }
    }
}

/// The next connection of `listener` (TCP_NODELAY set), or None once shutdown starts. A failed
/// accept (EMFILE and friends) is logged under `key` and backed off instead of spinning.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    key: &str,
    shutdown: &mut Shutdown,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.stopping() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!("{key}: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Closes a banned client's connection: a `421` / `* BYE` line on plaintext ports, nothing on
/// implicit-TLS ones.
async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    live: Arc<Live>,
    pools: Arc<Pools>,
    mut shutdown: Shutdown,
) {
    while let Some((stream, peer)) = accept_next(&listener, kind.key(), &mut shutdown).await {
        // The connection keeps this snapshot to its end (a reload affects new connections).
        let app = live.app();
        if app.auth.is_banned(peer.ip()) {
            // Banned for failed logins (SPEC §8): implicit TLS ports just close (plaintext would
            // be garbage to a TLS client); plaintext ports get one line.
            tracing::debug!(
                client_ip = %limits::Client::of(peer.ip()),
                "{}: refusing a banned address",
                kind.key()
            );
            refuse(stream, kind, &app, &pools, Refusal::Banned);
            continue;
        }
        let ticket = match app.conns.open(peer.ip(), kind.class()) {
            Ok(t) => t,
            Err(why) => {
                tracing::info!(
                    client_ip = %limits::Client::of(peer.ip()),
                    "{}: refusing a connection: {why}",
                    kind.key()
                );
                refuse(stream, kind, &app, &pools, Refusal::PerAddress);
                continue;
            }
        };
        let Ok(permit) = pools.of(kind).clone().try_acquire_owned() else {
            tracing::warn!(
                client_ip = %ticket.client(),
                "{}: connection limit reached, refusing a connection",
                kind.key()
            );
            refuse(stream, kind, &app, &pools, Refusal::Pool);
            continue;
        };
        let app = app.clone();
        let sd = shutdown.clone();
        let counted = crate::metrics::REGISTRY.connection(kind.metric());
        tokio::spawn(async move {
            let _permit = permit;
            let _counted = counted;
            match kind {
                Kind::Smtp(port) => smtp::handle(stream, peer, app, port, sd, ticket).await,
                Kind::Imap { implicit_tls } => {
                    imap::handle(stream, peer, app, implicit_tls, sd, ticket).await
                }
            }
        });
    }
}

/// Why a connection is refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The pool of its port is full.
    Pool,
    /// Its address has too many connections (SPEC §8 per-IP limits).
    PerAddress,
    /// Its address is banned for failed logins (SPEC §8); on implicit-TLS ports the connection
    /// is just closed.
    Banned,
}

/// Refuses a fresh connection and closes it. Plaintext ports get one line, written without
/// waiting (it fits in an empty socket buffer); implicit-TLS ports get the same line inside
/// TLS, or nothing (see the module docs). RFC 5321 §3.1 allows `421` as the greeting; RFC 3501
/// §7.1.5 `* BYE` as the greeting of a server that will not serve the client.
fn refuse(stream: TcpStream, kind: Kind, app: &Arc<App>, pools: &Pools, why: Refusal) {
    let reason = match why {
        Refusal::Pool => "pool",
        Refusal::PerAddress => "per_address",
        Refusal::Banned => "banned",
    };
    crate::metrics::REGISTRY
        .refused
        .inc(kind.metric().as_str(), reason);
    let msg: &'static [u8] = match (kind, why) {
        (Kind::Smtp(_), Refusal::Pool) => b"421 4.7.0 Too many connections, try again later\r\n",
        (Kind::Smtp(_), Refusal::PerAddress) => {
            b"421 4.7.0 Too many connections from your address, try again later\r\n"
        }
        (Kind::Imap { .. }, Refusal::Pool) => b"* BYE Too many connections, try again later\r\n",
        (Kind::Imap { .. }, Refusal::PerAddress) => {
            b"* BYE Too many connections from your address, try again later\r\n"
        }
        (Kind::Smtp(_), Refusal::Banned) => {
            b"421 4.7.0 Too many failed logins from your address, try later\r\n"
        }
        (Kind::Imap { .. }, Refusal::Banned) => {
            b"* BYE Too many failed logins from your address, try later\r\n"
        }
    };
    if !kind.implicit_tls() {
        let _ = stream.try_write(msg);
        return;
    }
    if why == Refusal::Banned {
        return;
    }
    let Ok(permit) = pools.refusals.clone().try_acquire_owned() else {
        return;
    };
    let acceptor = app.tls.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let refuse = async {
            let mut tls = acceptor.accept(stream).await?;
            tls.write_all(msg).await?;
            tls.shutdown().await
        };
        let _ = tokio::time::timeout(REFUSAL_TLS_TIMEOUT, refuse).await;
    });
}
