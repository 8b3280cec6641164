//! STARTTLS (RFC 3501 §6.2.1), LOGIN (§6.2.3) and AUTHENTICATE PLAIN (§6.2.2, RFC 4616) with
//! SASL-IR (RFC 4959). The gate has already refused LOGIN/AUTHENTICATE without TLS.
//!
//! Passwords are checked by `crate::auth::Authenticator` (bounded argon2 pool, credential cache,
//! failed-login delays and bans, shared with SMTP).

use base64::Engine;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Code;

use crate::auth::{Outcome, Proto};
use crate::imap::conn::MAX_LINE;
use crate::imap::response::{self, CmdError, CmdResult, Reply};
use crate::imap::session::{Session, State};

pub async fn starttls(s: &mut Session, tag: &Tag<'static>) -> CmdResult {
    let ok = Reply::ok("Begin TLS negotiation now");
    s.conn.write(&response::tagged(Some(tag), &ok));
    let acceptor = s.app.tls.clone();
    // Any plaintext the client pipelined after STARTTLS is dropped inside start_tls.
    s.conn.start_tls(&acceptor).await?;
    Ok(Reply { sent: true, ..ok })
}

pub async fn login(s: &mut Session, user: &[u8], password: &[u8]) -> CmdResult {
    let (Ok(u), Ok(p)) = (std::str::from_utf8(user), std::str::from_utf8(password)) else {
        return Ok(reject(s, user).await);
    };
    check(s, u, p).await
}

pub async fn authenticate(
    s: &mut Session,
    mechanism: &AuthMechanism<'_>,
    initial: Option<Vec<u8>>,
) -> CmdResult {
    if !matches!(mechanism, AuthMechanism::Plain) {
        return Ok(Reply::no("Unsupported authentication mechanism, use PLAIN").other("CANNOT"));
    }
    let data = match initial {
        Some(d) => d,
        None => {
            // RFC 3501 §7.5: an empty continuation, then one line of base64 (or "*" to cancel).
            s.conn.write(b"+ \r\n");
            s.conn.flush().await?;
            let line = match s.conn.read_line(MAX_LINE).await? {
                None => return Err(CmdError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                Some(Err(_)) => return Ok(Reply::bad("Authentication line too long")),
                Some(Ok(l)) => l,
            };
            let line = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if line == b"*" {
                return Ok(Reply::bad("Authentication cancelled"));
            }
            match base64::engine::general_purpose::STANDARD.decode(line) {
                Ok(d) => d,
                Err(_) => return Ok(Reply::bad("Invalid base64 in authentication data")),
            }
        }
    };
    // authzid NUL authcid NUL passwd
    let mut parts = data.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Reply::bad("Malformed PLAIN credentials"));
    };
    let (Ok(authz), Ok(authc), Ok(pass)) = (
        std::str::from_utf8(authz),
        std::str::from_utf8(authc),
        std::str::from_utf8(pass),
    ) else {
        return Ok(reject(s, authc).await);
    };
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return Ok(Reply::no("Acting as another user is not allowed").other("AUTHORIZATIONFAILED"));
    }
    check(s, authc, pass).await
}

fn failed() -> Reply {
    Reply::no("Authentication failed").other("AUTHENTICATIONFAILED")
}

/// The client's address is banned for failed logins (SPEC §8): `* BYE`, then the session closes
/// (RFC 3501 §7.1.5: BYE when the server is about to close the connection).
fn banned(s: &mut Session) -> Reply {
    s.conn
        .write(&response::bye("Too many failed logins from your address"));
    s.state = State::Logout;
    Reply::no("Too many failed logins from your address").other("UNAVAILABLE")
}

/// Credentials that are not UTF-8: counted and delayed like a wrong password.
async fn reject(s: &mut Session, user: &[u8]) -> Reply {
    let app = s.app.clone();
    let user = String::from_utf8_lossy(user);
    match app.auth.reject(s.peer.ip(), Proto::Imap, &user).await {
        Outcome::Banned => banned(s),
        _ => failed(),
    }
}

async fn check(s: &mut Session, user: &str, password: &str) -> CmdResult {
    let app = s.app.clone();
    match app
        .auth
        .login(s.peer.ip(), Proto::Imap, user, password)
        .await
    {
        Ok(Outcome::Ok(a)) => {
            s.track_login(&a)?;
            s.account = Some(a);
            s.state = State::Authenticated;
            Ok(Reply::ok("Logged in").code(Code::Capability(response::capabilities(s.tls()))))
        }
        Ok(Outcome::Failed) => Ok(failed()),
        Ok(Outcome::Banned) => Ok(banned(s)),
        Err(e) => {
            tracing::error!(peer = %s.peer, "imap: authentication: {e:#}");
            Ok(Reply::no("Temporary authentication failure").other("UNAVAILABLE"))
        }
    }
}
