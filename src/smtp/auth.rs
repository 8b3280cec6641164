//! AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, on the submission ports and
//! only under TLS (the state gate in `session.rs` enforces both before we get here).
//!
//! Passwords are checked by `crate::auth::Authenticator` (bounded argon2 pool, credential cache,
//! failed-login delays and bans, shared with IMAP). Neither passwords nor the SASL lines that
//! carry them are ever logged.

use base64::Engine;
use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::Line;
use super::command::Mechanism;
use super::reply::{self, Reply};
use super::session::{Conn, End, Flow, Session};
use crate::auth::{Outcome, Proto};

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
    if s.app.auth.is_banned(s.peer.ip()) {
        // Banned for failed logins while this session was open: refuse before any exchange.
        s.send(io, reply::AUTH_BANNED);
        return Flow::Close;
    }
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
    let app = s.app.clone();
    let r = match app
        .auth
        .login(s.peer.ip(), Proto::Smtp, &user, &password)
        .await
    {
        Ok(Outcome::Ok(account)) => {
            s.logged_in(&account);
            s.auth = Some(account);
            reply::AUTH_OK
        }
        Ok(Outcome::Failed) => reply::AUTH_FAILED,
        Ok(Outcome::Banned) => {
            s.send(io, reply::AUTH_BANNED);
            return Flow::Close;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64_answers() {
        assert!(matches!(decode(b"AGJvYgBzZWNyZXQ="), Step::Value(v) if v == b"\0bob\0secret"));
        assert!(matches!(decode(b""), Step::Value(v) if v.is_empty()));
        assert!(matches!(decode(b"%%%"), Step::Refuse(r) if r.code == 501));
    }
}
