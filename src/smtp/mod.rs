//! SMTP server sessions (RFC 5321 with PIPELINING, SIZE, 8BITMIME, SMTPUTF8, CHUNKING,
//! ENHANCEDSTATUSCODES, STARTTLS and, on the submission ports, AUTH PLAIN/LOGIN).
//!
//! Code map:
//! - `codec.rs`: framing without I/O: command lines (bounded), the DATA decoder, line-end rules.
//! - `command.rs`: one line → one [`command::Command`], parsed with smtp-proto.
//! - `reply.rs`: every reply we send, in one list.
//! - `spool.rs`: the message being received, in memory up to 1 MiB, then in a spool file.
//! - `session.rs`: session state, the state gate, the read → parse → execute loop; generic over
//!   the stream. `auth.rs` (AUTH) and `data.rs` (DATA/BDAT → `inbound::accept`) are its verbs with
//!   their own I/O.
//! - this file: the driver: implicit TLS (submissions) or the STARTTLS handshake between two runs
//!   of the same [`session::Session`]. It is the only part that knows TLS.
//!
//! The message path continues in [`crate::inbound`]; this module never touches the store except to
//! look up recipients and accounts. See docs/smtp.md for the operator's view.

mod auth;
pub mod codec;
pub mod command;
mod data;
pub mod reply;
pub mod session;
pub mod spool;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::limits::Ticket;
use crate::server::App;
use crate::shutdown::Shutdown;
use session::{Outcome, Session};

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Inbound from the internet: no AUTH, local recipients only.
    Mx,
    /// STARTTLS, then AUTH, then sending.
    Submission,
    /// Implicit TLS, then AUTH, then sending.
    Submissions,
}

/// Runs one SMTP session to completion. `ticket`: the connection's place in the per-address
/// counts (SPEC §8); the session moves it to the account's on AUTH and ends when it is revoked.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    port: Port,
    shutdown: Shutdown,
    ticket: Ticket,
) {
    tracing::debug!(%peer, ?port, "SMTP connection");
    let mut session = Session::new(app.clone(), port, peer, shutdown, ticket);
    // On the submission ports the handshake comes before login: bounded by the login timeout too.
    let limit = match port {
        Port::Mx => app.config.smtp.idle_timeout,
        Port::Submission | Port::Submissions => app
            .config
            .smtp
            .idle_timeout
            .min(app.config.limits.login_timeout),
    };
    match port {
        Port::Submissions => {
            if let Some(tls) = handshake(&app, stream, peer, limit).await {
                session.tls_established();
                session.run(tls, true).await;
            }
        }
        Port::Mx | Port::Submission => {
            if let Outcome::StartTls(stream) = session.run(stream, true).await {
                if let Some(tls) = handshake(&app, stream, peer, limit).await {
                    session.tls_established();
                    // No new greeting after STARTTLS; the client sends EHLO (RFC 3207 §4.2).
                    session.run(tls, false).await;
                }
            }
        }
    }
    tracing::debug!(%peer, "SMTP connection closed");
}

async fn handshake(
    app: &App,
    stream: TcpStream,
    peer: SocketAddr,
    limit: std::time::Duration,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(limit, app.tls.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::info!(%peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            None
        }
    }
}
