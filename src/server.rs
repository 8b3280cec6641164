//! `tanba serve`: binds every listener, runs the accept loops, the admin socket and the delivery
//! workers, and drains gracefully on SIGTERM/SIGINT.
//!
//! Each accepted connection takes a permit from its protocol's semaphore and moves it into its task,
//! so the permit returns when the task ends, however it ends. Beyond the limit a connection gets a
//! one-line refusal (`421` for SMTP, `* BYE` for IMAP) and is closed: a client retrying later is
//! better served than one hanging in a backlog.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::filter::Filter;
use crate::shutdown::{Coordinator, Shutdown};
use crate::store::Store;
use crate::{admin, delivery, imap, smtp};

/// Everything a session or worker needs, shared behind an `Arc` for the life of `serve`.
pub struct App {
    pub config: Arc<Config>,
    pub store: Store,
    /// Built once at start-up: trust anchors are loaded here, not per message.
    pub filter: Arc<Filter>,
    /// Fetches and caches CRLs and OCSP answers for the filter (`signatures.revocation`); None
    /// when revocation checking is off.
    pub revocation: Option<Arc<crate::revocation::Checker>>,
    pub tls: TlsAcceptor,
    /// Wakes the delivery workers when something new is queued (or `queue retry` asks).
    pub queue_wakeup: Arc<tokio::sync::Notify>,
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
}

/// Builds the shared state: opens the store, loads the trust anchors and the TLS identity.
pub fn build_app(config: Config) -> Result<Arc<App>> {
    crate::perms::create_dir_all(&config.data_dir)
        .with_context(|| format!("server.data_dir: creating {}", config.data_dir.display()))?;
    crate::perms::check_at_start(&config);
    let store = Store::open(&config.data_dir.join("store"))?;
    let filter = Filter::new(&config).context("signatures")?;
    let revocation = crate::revocation::Checker::from_config(&config, &[])
        .context("signatures")?
        .map(Arc::new);
    let tls = crate::tls::acceptor(&config).context("tls")?;
    Ok(Arc::new(App {
        config: Arc::new(config),
        store,
        filter: Arc::new(filter),
        revocation,
        tls,
        queue_wakeup: Arc::new(tokio::sync::Notify::new()),
    }))
}

/// Runs the server until SIGTERM/SIGINT, then drains and returns.
pub async fn serve(config: Config) -> Result<()> {
    let app = build_app(config)?;
    let cfg = app.config.clone();
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
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("{}: cannot listen on {addr}", kind.key()))?;
            let local = l.local_addr()?;
            tracing::info!("{} listening on {local}", kind.key());
            list.push(serde_json::Value::String(local.to_string()));
            bound.push((kind, l));
        }
        report.insert(kind.key().to_string(), serde_json::Value::Array(list));
    }

    let coordinator = Coordinator::new();
    let admin_listener = admin::bind(&cfg)?;
    tokio::spawn(admin::serve(
        admin_listener,
        app.clone(),
        coordinator.handle(),
    ));
    tokio::spawn(delivery::run(app.clone(), coordinator.handle()));

    let smtp_slots = Arc::new(Semaphore::new(cfg.smtp.max_connections));
    let imap_slots = Arc::new(Semaphore::new(cfg.imap.max_connections));
    for (kind, listener) in bound {
        let slots = match kind {
            Kind::Smtp(_) => smtp_slots.clone(),
            Kind::Imap { .. } => imap_slots.clone(),
        };
        tokio::spawn(accept_loop(
            listener,
            kind,
            app.clone(),
            slots,
            coordinator.handle(),
        ));
    }

    // Tell scripts (and tests using port 0) where we listen, only once everything is up.
    let file = cfg.listeners_file();
    let tmp = file.with_extension("json.tmp");
    crate::perms::write(&tmp, &serde_json::to_vec_pretty(&report)?)?;
    std::fs::rename(&tmp, &file)?;
    tracing::info!(
        "tanba {} ready (data in {})",
        env!("CARGO_PKG_VERSION"),
        cfg.data_dir.display()
    );

    tokio::select! {
        _ = wait_for_signal() => {}
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

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn accept_loop(
    listener: TcpListener,
    kind: Kind,
    app: Arc<App>,
    slots: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.stopping() => return,
        };
        let (mut stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("{}: accept failed: {e}", kind.key());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!("{}: connection limit reached, refusing {peer}", kind.key());
            tokio::spawn(async move {
                let msg: &[u8] = match kind {
                    Kind::Smtp(_) => b"421 4.7.0 Too many connections, try again later\r\n",
                    Kind::Imap { .. } => b"* BYE Too many connections, try again later\r\n",
                };
                let _ = stream.write_all(msg).await;
                let _ = stream.shutdown().await;
            });
            continue;
        };
        let app = app.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match kind {
                Kind::Smtp(port) => smtp::handle(stream, peer, app, port, sd).await,
                Kind::Imap { implicit_tls } => {
                    imap::handle(stream, peer, app, implicit_tls, sd).await
                }
            }
        });
    }
}
