//! STARTTLS (RFC 3501 §6.2.1), LOGIN (§6.2.3) and AUTHENTICATE PLAIN (§6.2.2, RFC 4616) with
//! SASL-IR (RFC 4959). The gate has already refused LOGIN/AUTHENTICATE without TLS.

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use imap_codec::imap_types::auth::AuthMechanism;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Code;

use crate::imap::conn::MAX_LINE;
use crate::imap::response::{self, CmdError, CmdResult, Reply};
use crate::imap::session::{Session, State};
use crate::store::account;

/// Delay after a failed login: slows password guessing without hurting real users.
const FAILURE_DELAY: Duration = Duration::from_millis(500);

pub async fn starttls(s: &mut Session, tag: &Tag<'static>) -> CmdResult {
    let ok = Reply::ok("Begin TLS negotiation now");
    s.conn.write(&response::tagged(Some(tag), &ok));
    let acceptor = s.app.tls.clone();
    // Any plaintext the client pipelined after STARTTLS is dropped inside start_tls.
    s.conn.start_tls(&acceptor).await?;
    Ok(Reply { sent: true, ..ok })
}

pub async fn login(s: &mut Session, user: &[u8], password: &[u8]) -> CmdResult {
    let (Ok(user), Ok(password)) = (std::str::from_utf8(user), std::str::from_utf8(password))
    else {
        return Ok(failed().await);
    };
    check(s, user, password).await
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
        return Ok(failed().await);
    };
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return Ok(Reply::no("Acting as another user is not allowed").other("AUTHORIZATIONFAILED"));
    }
    check(s, authc, pass).await
}

async fn failed() -> Reply {
    tokio::time::sleep(FAILURE_DELAY).await;
    Reply::no("Authentication failed").other("AUTHENTICATIONFAILED")
}

/// A hash to verify against when the user does not exist, so that both cases take as long.
fn dummy_hash() -> &'static str {
    static H: OnceLock<String> = OnceLock::new();
    H.get_or_init(|| account::hash_password("tanba-dummy").unwrap_or_default())
}

async fn check(s: &mut Session, user: &str, password: &str) -> CmdResult {
    let found = s.app.store.account(user)?;
    let hash = match &found {
        Some(a) => a.password_hash.clone(),
        None => dummy_hash().to_string(),
    };
    let pw = password.to_string();
    let ok = tokio::task::spawn_blocking(move || account::verify_password(&hash, &pw)).await?;
    match found {
        Some(a) if ok => {
            s.track_login(&a)?;
            tracing::info!(peer = %s.peer, user = %a.email, "imap: login");
            s.account = Some(a);
            s.state = State::Authenticated;
            Ok(Reply::ok("Logged in").code(Code::Capability(response::capabilities(s.tls()))))
        }
        _ => {
            tracing::info!(peer = %s.peer, user = %user, "imap: authentication failed");
            Ok(failed().await)
        }
    }
}
