//! IMAP4rev1 server sessions (RFC 3501) with LITERAL+, SASL-IR, IDLE, UIDPLUS, MOVE,
//! SPECIAL-USE, NAMESPACE, ID, ENABLE, UNSELECT and CHILDREN, over the shared store.
//!
//! Code map:
//! - [`conn`]: the byte stream (TLS included), read/write buffers, command framing with the
//!   command budget and the literal gate (SPEC §8), the login deadline. The only part that does
//!   I/O.
//! - [`session`]: states, the one state gate `is_allowed`, the read → decode (imap-codec) →
//!   gate → dispatch → untagged sync → tagged reply loop.
//! - [`cmd`]: one file per command group; handlers return the tagged [`response::Reply`].
//! - [`selected`]: the selected mailbox's view (sequence numbers, \Recent) and its sync with the
//!   store for EXISTS/EXPUNGE/FETCH updates.
//! - [`mime`], [`envelope`]: message structure parsed once and cached; [`fetch`] and [`search`]
//!   render and evaluate against it.
//! - [`response`]: every response encoded with imap-codec.
//!
//! Invariants: a tagged OK for APPEND, STORE, EXPUNGE, COPY and MOVE is sent only after
//! `Store::durable` returned. Protocol errors end a session only through the limits of
//! docs/security.md (oversize input before login, too many errors, the login timeout); otherwise
//! only I/O errors, LOGOUT, autologout (`imap.idle_timeout`) and shutdown do. This module never
//! imports `smtp`.

pub mod cmd;
pub mod conn;
pub mod envelope;
pub mod fetch;
pub mod list_ext;
pub mod mime;
pub mod response;
pub mod search;
pub mod selected;
pub mod session;
pub mod utf7;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::server::App;
use crate::shutdown::Shutdown;

/// Runs one IMAP session to completion. `implicit_tls`: the `listen_tls` port.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    implicit_tls: bool,
    shutdown: Shutdown,
) {
    let mut conn = conn::Conn::new(stream, app.config.imap.idle_timeout);
    // SPEC §8: log in within `limits.login_timeout` of connecting (TLS handshake included), or
    // the connection is closed with BYE. The session lifts the deadline at login.
    let login_timeout = app.config.limits.login_timeout;
    conn.deadline = Some(Instant::now() + login_timeout);
    if implicit_tls {
        // A client that never finishes the handshake must not hold a connection slot forever.
        let tls = app.tls.clone();
        let limit = login_timeout.min(Duration::from_secs(60));
        match tokio::time::timeout(limit, conn.start_tls(&tls)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%peer, "imap: TLS handshake failed: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "imap: TLS handshake timed out");
                return;
            }
        }
    }
    tracing::debug!(%peer, implicit_tls, "imap: session start");
    let mut session = session::Session::new(app, conn, peer, shutdown);
    if let Err(e) = session.run().await {
        tracing::debug!(%peer, "imap: session ended: {e}");
    }
}
