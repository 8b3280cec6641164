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
pub mod condstore;
pub mod conn;
pub mod envelope;
pub mod fetch;
pub mod list_ext;
pub mod mime;
pub mod response;
pub mod search;
pub mod search_ext;
pub mod selected;
pub mod session;
pub mod sort;
pub mod thread;
pub mod utf7;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::limits::{Refused, Ticket};
use crate::server::App;
use crate::shutdown::Shutdown;

/// Runs one IMAP session to completion. `implicit_tls`: the `listen_tls` port. `ticket`: the
/// connection's place in the per-address counts (SPEC §8), moved to the account's at login.
pub async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    app: Arc<App>,
    implicit_tls: bool,
    shutdown: Shutdown,
    ticket: Ticket,
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
    session.ticket = ticket;
    if let Err(e) = session.run().await {
        tracing::debug!(%peer, "imap: session ended: {e}");
    }
}

/// Connection limits and the end of sessions (SPEC §8), kept here so that the session loop
/// needs one call each.
impl session::Session {
    /// Counts a successful login as `account_id`'s, or refuses it with `NO [LIMIT]` (RFC 5530
    /// §3: "the number of concurrent sessions") when the account has `limits.sessions_per_user_ip`
    /// sessions from this address already. Call before the state changes. A login that raced
    /// `tanba user del/passwd` is refused and the session ends.
    pub fn track_login(&mut self, account: &crate::store::Account) -> Result<(), response::Reply> {
        match self.ticket.login(account.id, true) {
            // `user del/passwd` may have changed the account while its password was being
            // checked, before this session was registered to hear of it.
            Ok(()) if !crate::limits::still_current(&self.app.store, account) => {
                self.ticket.revoke();
                Err(response::Reply::no("Authentication failed").other("AUTHENTICATIONFAILED"))
            }
            Ok(()) => Ok(()),
            Err(why @ Refused::UserSessions) => {
                tracing::info!(
                    peer = %self.peer,
                    client_ip = %self.ticket.client(),
                    "imap: login refused: {why}"
                );
                Err(
                    response::Reply::no("Too many sessions from your address for this account")
                        .other("LIMIT"),
                )
            }
            Err(why) => Err(response::Reply::no(why.to_string())),
        }
    }

    /// Ends the session because `tanba user del` / `user passwd` changed the account: `* BYE`,
    /// then close (RFC 3501 §7.1.5: BYE when the server is closing the connection).
    pub async fn end_revoked(&mut self) -> std::io::Result<()> {
        tracing::info!(
            peer = %self.peer,
            user = %self.account.as_ref().map(|a| a.email.as_str()).unwrap_or(""),
            "imap: ending the session: the account was changed or deleted"
        );
        self.conn
            .write(&response::bye("Account changed by the administrator"));
        self.state = session::State::Logout;
        self.conn.close().await;
        Ok(())
    }
}
