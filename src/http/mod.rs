//! The web endpoint (SPEC §11, docs/web.md): HTTP/1.1 on `http.listen` (plain), `http.listen_tls`
//! (TLS with the mail certificate) and `http.metrics` (its own router), served by axum on hyper 1
//! over the same tokio + rustls stack as the mail listeners.
//!
//! Each concern is a file `src/http/<name>.rs` with `pub fn routes() -> Router<Web>`, merged in
//! [`router`] (or [`metrics_router`]) by one `.merge(<name>::routes())` line. Handlers reach the
//! current [`App`] snapshot through [`Web::app`] (a reload or a certificate swap applies to the
//! next request) and the connection through the [`Peer`] request extension (also
//! `axum::extract::ConnectInfo<SocketAddr>`).
//!
//! Bounds, as on the mail listeners (SPEC §8): a connection first gets a
//! [`limits::Ticket`] (class `Unauthenticated`: HTTP connections count
//! with IMAP and submission connections not yet logged in, per client address) and a permit of
//! the HTTP pool (`http.max_connections`); banned addresses are refused. A request head is at most
//! [`MAX_HEAD_BYTES`] and [`MAX_HEADERS`] lines (431 beyond), a body at most [`MAX_BODY_BYTES`]
//! (413), the head must arrive within [`HEAD_TIMEOUT`] and the whole request be answered within
//! [`REQUEST_TIMEOUT`] (408), a TLS handshake takes at most [`HANDSHAKE_TIMEOUT`], and a
//! connection lives at most [`CONNECTION_LIFETIME`] (then it is closed after its current
//! request). On shutdown every connection finishes its current request and closes
//! ([`DRAIN_TIMEOUT`] at most).

pub mod account;
pub mod acme;
pub mod apple;
pub mod autoconfig;
pub mod autodiscover;
pub mod clients;
pub mod health;
pub mod metrics;
pub mod mta_sts;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::config::Config;
use crate::limits::{self, Class};
use crate::server::{App, Live};
use crate::shutdown::{Coordinator, Shutdown};

/// Largest request head (request line and headers); hyper answers 431 beyond it.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most header lines in one request (431 beyond).
pub const MAX_HEADERS: usize = 64;
/// Largest request body any route reads (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Time for a request head to arrive once it has started (slowloris).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to read a request's body and answer it (408 beyond).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for the TLS handshake on `http.listen_tls`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A keep-alive connection is closed after its current request once this old.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// After shutdown began or the lifetime ended: time to finish the current request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every handler gets as state: the running server.
#[derive(Clone)]
pub struct Web {
    live: Arc<Live>,
    /// What `serve` bound, by key (`imap.listen_tls`, ...): the ports documents advertise.
    bound: Arc<BTreeMap<String, Vec<SocketAddr>>>,
}

impl Web {
    pub fn new(live: Arc<Live>) -> Web {
        Web {
            live,
            bound: Arc::default(),
        }
    }

    /// With the addresses `serve` bound (the `listeners.json` map: key → list of addresses).
    pub fn with_bound(mut self, report: &serde_json::Map<String, serde_json::Value>) -> Web {
        let map = report
            .iter()
            .map(|(k, v)| {
                let addrs = v
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|s| s.as_str()?.parse().ok())
                            .collect::<Vec<SocketAddr>>()
                    })
                    .unwrap_or_default();
                (k.clone(), addrs)
            })
            .collect();
        self.bound = Arc::new(map);
        self
    }

    /// The port of the first address bound for a listener key (`imap.listen_tls`, `smtp.submission`,
    /// `http.listen_tls`, ...); None when that listener is off.
    pub fn port(&self, key: &str) -> Option<u16> {
        self.bound.get(key)?.first().map(|a| a.port())
    }

    /// The current snapshot (config, store, TLS acceptor, ...); read it once per request.
    pub fn app(&self) -> Arc<App> {
        self.live.app()
    }

    /// The holder of the current snapshot (for code that must see later reloads).
    pub fn live(&self) -> &Arc<Live> {
        &self.live
    }
}

/// Request extension: who is asking, and over which listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// True on `http.listen_tls` (the request came over TLS).
    pub tls: bool,
    pub listener: Listener,
}

/// The three kinds of HTTP listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `http.listen`: plain HTTP.
    Plain,
    /// `http.listen_tls`: HTTPS.
    Tls,
    /// `http.metrics`: plain HTTP, [`metrics_router`].
    Metrics,
}

impl Listener {
    pub fn key(self) -> &'static str {
        match self {
            Listener::Plain => "http.listen",
            Listener::Tls => "http.listen_tls",
            Listener::Metrics => "http.metrics",
        }
    }

    fn addrs(self, c: &Config) -> &[SocketAddr] {
        match self {
            Listener::Plain => &c.http.listen,
            Listener::Tls => &c.http.listen_tls,
            Listener::Metrics => &c.http.metrics,
        }
    }

    pub const ALL: [Listener; 3] = [Listener::Plain, Listener::Tls, Listener::Metrics];
}

/// The routes of `http.listen` and `http.listen_tls`.
/// Text for HTML or XML character data and attribute values: `&`, `<`, `>`, `"` and `'` as
/// entities (XML 1.0 §2.4; `&#39;` rather than `&apos;`, which HTML 4 lacks). Control
/// characters never reach here (the callers refuse them or never take client text).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn router(web: Web) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(acme::routes())
        .merge(autoconfig::routes())
        .merge(autodiscover::routes())
        .merge(apple::routes())
        .merge(mta_sts::routes())
        .merge(account::routes())
        .merge(clients::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(web)
}

/// The routes of `http.metrics` (the metrics module adds `/metrics`).
pub fn metrics_router(web: Web) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(web)
}

/// Listeners bound by [`bind`], started by [`spawn`].
pub struct Bound(Vec<(Listener, TcpListener)>);

/// Binds every `[http]` address, naming the key on failure, and records them for
/// `listeners.json` (`http.listen`, `http.listen_tls`, `http.metrics`).
pub async fn bind(
    cfg: &Config,
    report: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Bound> {
    let mut bound = Vec::new();
    for which in Listener::ALL {
        let mut list = Vec::new();
        for addr in which.addrs(cfg) {
            let l = TcpListener::bind(addr).await.map_err(|e| {
                anyhow::anyhow!(crate::preflight::bind_error(which.key(), *addr, &e))
            })?;
            let local = l.local_addr()?;
            tracing::info!("{} listening on {local}", which.key());
            list.push(serde_json::Value::String(local.to_string()));
            bound.push((which, l));
        }
        report.insert(which.key().to_string(), serde_json::Value::Array(list));
    }
    Ok(Bound(bound))
}

/// Starts the accept loops of [`bind`]'s listeners; `report` is what every listener of `serve`
/// bound (the `listeners.json` map).
pub fn spawn(
    bound: Bound,
    live: Arc<Live>,
    coordinator: &Coordinator,
    report: &serde_json::Map<String, serde_json::Value>,
) {
    let web = Web::new(live).with_bound(report);
    let pool = Arc::new(Semaphore::new(web.app().config.http.max_connections));
    let main = router(web.clone());
    let metrics = metrics_router(web.clone());
    for (which, listener) in bound.0 {
        let routes = match which {
            Listener::Metrics => metrics.clone(),
            _ => main.clone(),
        };
        tokio::spawn(accept_loop(
            listener,
            which,
            web.clone(),
            routes,
            pool.clone(),
            coordinator.handle(),
        ));
    }
}

/// One line for a refused client on a plaintext listener; TLS clients are just closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n\
Retry-After: 60\r\nContent-Length: 0\r\n\r\n";

fn refuse(stream: TcpStream, which: Listener) {
    if which != Listener::Tls {
        let _ = stream.try_write(REFUSAL);
    }
}

async fn accept_loop(
    listener: TcpListener,
    which: Listener,
    web: Web,
    routes: Router,
    pool: Arc<Semaphore>,
    mut shutdown: Shutdown,
) {
    while let Some((stream, peer)) =
        crate::server::accept_next(&listener, which.key(), &mut shutdown).await
    {
        let app = web.app();
        if app.auth.is_banned(peer.ip()) {
            tracing::debug!(
                client_ip = %limits::Client::of(peer.ip()),
                "{}: refusing a banned address",
                which.key()
            );
            refuse(stream, which);
            continue;
        }
        let ticket = match app.conns.open(peer.ip(), Class::Unauthenticated) {
            Ok(t) => t,
            Err(why) => {
                tracing::info!(
                    client_ip = %limits::Client::of(peer.ip()),
                    "{}: refusing a connection: {why}",
                    which.key()
                );
                refuse(stream, which);
                continue;
            }
        };
        let Ok(permit) = pool.clone().try_acquire_owned() else {
            tracing::warn!(
                client_ip = %ticket.client(),
                "{}: connection limit reached (http.max_connections), refusing a connection",
                which.key()
            );
            refuse(stream, which);
            continue;
        };
        let routes = routes.clone();
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ticket = ticket;
            let p = Peer {
                addr: peer,
                tls: which == Listener::Tls,
                listener: which,
            };
            if which == Listener::Tls {
                // The acceptor of the snapshot current at accept: a reload or a certificate
                // swap applies to new connections.
                let acceptor = app.tls.clone();
                drop(app);
                let mut sd2 = sd.clone();
                let tls = tokio::select! {
                    r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                    _ = sd2.stopping() => return,
                };
                match tls {
                    Ok(Ok(tls)) => drive(tls, p, routes, sd).await,
                    Ok(Err(e)) => tracing::debug!("{}: TLS handshake failed: {e}", which.key()),
                    Err(_) => tracing::debug!("{}: TLS handshake timed out", which.key()),
                }
            } else {
                drop(app);
                drive(stream, p, routes, sd).await;
            }
        });
    }
}

/// Serves HTTP/1.1 requests on one connection until the client closes it, its lifetime ends or
/// the server shuts down.
async fn drive<I>(io: I, peer: Peer, routes: Router, mut shutdown: Shutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let routes = routes.clone();
        async move {
            let mut req = req.map(|b| Body::new(http_body_util::Limited::new(b, MAX_BODY_BYTES)));
            req.extensions_mut().insert(ConnectInfo(peer.addr));
            req.extensions_mut().insert(peer);
            let resp = match tokio::time::timeout(REQUEST_TIMEOUT, routes.oneshot(req)).await {
                Ok(r) => r.unwrap_or_else(|never: Infallible| match never {}),
                Err(_) => timeout_response(),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
    tokio::pin!(lifetime);
    let drain = tokio::time::sleep(Duration::MAX / 4);
    tokio::pin!(drain);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("{}: connection ended: {e}", peer.listener.key());
                }
                return;
            }
            _ = shutdown.stopping(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut lifetime, if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
                drain.as_mut().reset(tokio::time::Instant::now() + DRAIN_TIMEOUT);
            }
            _ = &mut drain, if draining => return,
        }
    }
}

fn timeout_response() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::REQUEST_TIMEOUT,
        [(axum::http::header::CONNECTION, "close")],
        "request timeout\n",
    )
        .into_response()
}
