//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, on the submission ports and
//! only under TLS (the state gate in `session.rs` enforces both before we get here).
//!
//! Passwords are checked with argon2 on the blocking pool. An unknown user costs the same hash
//! as a known one, so response times do not tell which accounts exist. Neither passwords nor the
//! SASL lines that carry them are ever logged.

use std::sync::OnceLock;

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::Line;
use super::command::Mechanism;
use super::reply::{self, Reply};
use super::session::{Conn, End, Flow, Session};
use crate::server::App;
use crate::store::account::{hash_password, verify_password, Account};

/// The result of one SASL exchange step.
enum Step {
    Value(Vec<u8>),
    Refuse(Reply),
}

pub(super) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    mechanism: Mechanism,
    initial: Option<String>,
) -> Flow {
    let creds = match mechanism {
        Mechanism::Other => Ok(Err(reply::AUTH_MECHANISM)),
        Mechanism::Plain => plain(s, io, initial).await,
        Mechanism::Login => login(s, io, initial).await,
    };
    let (user, password) = match creds {
        Err(end) => return s.end(io, end),
        Ok(Err(r)) => {
            s.send(io, r);
            return Flow::Continue;
        }
        Ok(Ok(c)) => c,
    };
    let r = match verify(&s.app, &user, password).await {
        Ok(Some(account)) => {
            tracing::info!(peer = %s.peer, user = %account.email, "authenticated");
            s.logged_in(&account);
            s.auth = Some(account);
            reply::AUTH_OK
        }
        Ok(None) => {
            tracing::warn!(peer = %s.peer, user = ?printable(&user), "authentication failed");
            reply::AUTH_FAILED
        }
        Err(e) => {
            tracing::error!(peer = %s.peer, "authentication: {e:#}");
            reply::AUTH_TEMPORARY
        }
    };
    s.send(io, r);
    Flow::Continue
}

type Credentials = Result<Result<(String, String), Reply>, End>;

/// PLAIN: `[authzid] NUL authcid NUL passwd` in one response (RFC 4616 §2).
async fn plain<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    initial: Option<String>,
) -> Credentials {
    let msg = match initial {
        Some(i) => decode(i.as_bytes()),
        None => challenge(s, io, "").await?,
    };
    let msg = match msg {
        Step::Value(v) => v,
        Step::Refuse(r) => return Ok(Err(r)),
    };
    let mut parts = msg.split(|&b| b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Err(reply::AUTH_FAILED));
    };
    let (Ok(authz), Ok(authc), Ok(pass)) = (
        std::str::from_utf8(authz),
        std::str::from_utf8(authc),
        std::str::from_utf8(pass),
    ) else {
        return Ok(Err(reply::AUTH_FAILED));
    };
    // We do not let one user act for another: an authorization identity, if given, must be the
    // authenticating user itself.
    if !authz.is_empty() && !authz.eq_ignore_ascii_case(authc) {
        return Ok(Err(reply::AUTH_FAILED));
    }
    Ok(Ok((authc.to_string(), pass.to_string())))
}

/// LOGIN: the user name, then the password, each in answer to a challenge (or the user name as
/// initial response).
async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    initial: Option<String>,
) -> Credentials {
    let user = match initial {
        Some(i) => decode(i.as_bytes()),
        // "Username:" and "Password:", base64.
        None => challenge(s, io, "VXNlcm5hbWU6").await?,
    };
    let user = match user {
        Step::Value(v) => v,
        Step::Refuse(r) => return Ok(Err(r)),
    };
    let pass = match challenge(s, io, "UGFzc3dvcmQ6").await? {
        Step::Value(v) => v,
        Step::Refuse(r) => return Ok(Err(r)),
    };
    match (String::from_utf8(user), String::from_utf8(pass)) {
        (Ok(u), Ok(p)) => Ok(Ok((u, p))),
        _ => Ok(Err(reply::AUTH_FAILED)),
    }
}

/// Sends `334 <text>` and reads the client's base64 answer.
async fn challenge<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    text: &'static str,
) -> Result<Step, End> {
    s.send(io, reply::auth_challenge(text));
    let line = match s.read_line(io, false).await? {
        Line::TooLong => return Ok(Step::Refuse(reply::LINE_TOO_LONG)),
        Line::Line(l) => l,
    };
    let line = line.strip_suffix(b"\n").unwrap_or(&line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line == b"*" {
        return Ok(Step::Refuse(reply::AUTH_CANCELLED));
    }
    Ok(decode(line))
}

fn decode(b64: &[u8]) -> Step {
    match base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) {
        Ok(v) => Step::Value(v),
        Err(_) => Step::Refuse(reply::AUTH_BAD_BASE64),
    }
}

/// The account for `user` if `password` is right. Runs argon2 off the async threads.
async fn verify(app: &App, user: &str, password: String) -> anyhow::Result<Option<Account>> {
    let account = if user.is_empty() || user.len() > 320 {
        None
    } else {
        app.store.account(user)?
    };
    let hash = account.as_ref().map(|a| a.password_hash.clone());
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(h) => verify_password(&h, &password),
        None => {
            // Same work for an unknown user as for a known one.
            let _ = verify_password(dummy_hash(), &password);
            false
        }
    })
    .await?;
    Ok(account.filter(|_| ok))
}

fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password("tanba: no such user").unwrap_or_default())
}

/// A user name as typed by the client, safe to log.
fn printable(user: &str) -> String {
    user.chars().filter(|c| !c.is_control()).take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_answers() {
        assert!(matches!(decode(b"AGJvYgBzZWNyZXQ="), Step::Value(v) if v == b"\0bob\0secret"));
        assert!(matches!(decode(b""), Step::Value(v) if v.is_empty()));
        assert!(matches!(decode(b"%%%"), Step::Refuse(r) if r.code == 501));
    }

    #[test]
    fn dummy_hash_never_matches() {
        assert!(!verify_password(dummy_hash(), "tanba: no such user!"));
        assert!(!verify_password(dummy_hash(), ""));
    }
}
