//! IDLE (RFC 2177): after `+ idling`, every change the store announces for the selected mailbox
//! (SMTP delivery, other sessions' APPEND, STORE, EXPUNGE, MOVE) is reported at once, until the
//! client sends DONE. Autologout and shutdown end it with BYE.

use imap_codec::imap_types::response::{CommandContinuationRequest, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::imap::conn::MAX_LINE;
use crate::imap::response::{self, CmdError, CmdResult, Reply};
use crate::imap::session::{Session, State};
use crate::store::Change;

enum Event {
    Line(std::io::Result<Option<Result<Vec<u8>, Vec<u8>>>>),
    Change(Result<Change, RecvError>),
    Stop,
    /// `tanba user del` / `user passwd` ended the account's sessions (SPEC §8).
    Revoked,
}

pub async fn idle(s: &mut Session) -> CmdResult {
    // Subscribe before the first sync so that nothing falls between the two.
    let mut rx = s.app.store.subscribe();
    if let Ok(c) = CommandContinuationRequest::basic(None, "idling") {
        s.conn
            .write(&response::encode(&Response::CommandContinuationRequest(c)));
    }
    s.sync(true).await;
    s.conn.flush().await?;
    let mailbox = s.selected.as_ref().map(|m| m.id);
    let mut sd = s.shutdown.clone();
    let mut changes_open = true;
    loop {
        let ev = tokio::select! {
            l = s.conn.read_line(MAX_LINE) => Event::Line(l),
            c = rx.recv(), if changes_open => Event::Change(c),
            _ = sd.stopping() => Event::Stop,
            _ = s.ticket.revoked() => Event::Revoked,
        };
        match ev {
            Event::Line(l) => {
                return match l? {
                    None => Err(CmdError::Io(std::io::ErrorKind::UnexpectedEof.into())),
                    Some(Ok(line)) if line.trim_ascii().eq_ignore_ascii_case(b"DONE") => {
                        Ok(Reply::ok("IDLE terminated"))
                    }
                    Some(_) => Ok(Reply::bad("Expected DONE to end IDLE")),
                };
            }
            Event::Change(Ok(c)) if Some(c.mailbox_id) == mailbox || c.is_resync() => {
                s.sync(true).await;
                s.conn.flush().await?;
            }
            Event::Change(Ok(_)) => {}
            Event::Change(Err(RecvError::Lagged(_))) => {
                s.sync(true).await;
                s.conn.flush().await?;
            }
            Event::Change(Err(RecvError::Closed)) => changes_open = false,
            Event::Revoked => {
                s.end_revoked().await?;
                return Ok(Reply {
                    sent: true,
                    ..Reply::ok("")
                });
            }
            Event::Stop => {
                s.conn
                    .write(&response::bye("Server shutting down, try again later"));
                s.state = State::Logout;
                return Ok(Reply {
                    sent: true,
                    ..Reply::ok("")
                });
            }
        }
    }
}
