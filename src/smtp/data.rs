//! The message itself: DATA (RFC 5321 §4.1.1.4, dot-stuffed text) and BDAT (RFC 3030, counted
//! chunks), the size limit, and the hand-over to [`crate::inbound::accept`]. `250` is sent only
//! after `accept` returned, which is after the group-committed flush: `250` means "on disk".
//!
//! A message over `smtp.max_message_size` is still read to its end (DATA) or its chunk's end
//! (BDAT) without being kept, then refused with 552; the session goes on.

use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{Body, DotDecoder};
use super::reply;
use super::session::{Conn, Flow, Session};
use crate::inbound::{self, Envelope};

/// DATA: `354`, then the text up to CRLF "." CRLF.
pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
) -> Flow {
    s.send(io, reply::START_DATA);
    let mut dec = DotDecoder::new(s.max_size());
    loop {
        let (n, done) = dec.feed(io.input.pending());
        io.input.consume(n);
        if done {
            break;
        }
        if let Err(e) = s.fill(io, false).await {
            // The client went away (or stalled) mid-message: nothing is stored.
            s.tx = None;
            return s.end(io, e);
        }
    }
    finish(s, io, dec.body).await
}

/// BDAT: one chunk of exactly `size` bytes; the last one ends the message.
pub(super) async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    size: u64,
    last: bool,
) -> Flow {
    let limit = s.max_size();
    let mut body =
        s.tx.as_mut()
            .and_then(|t| t.bdat.take())
            .unwrap_or_else(|| Body::new(limit));
    if let Err(e) = s.read_exact(io, size, |b| body.push(b)).await {
        s.tx = None;
        return s.end(io, e);
    }
    if last {
        return finish(s, io, body).await;
    }
    let overflowed = body.overflowed();
    if let Some(t) = s.tx.as_mut() {
        // Keep even an overflowed body: the following chunks of this message get 552 as well,
        // until BDAT LAST or RSET ends the transaction.
        t.bdat = Some(body);
    }
    if overflowed {
        s.send(io, reply::TOO_BIG);
    } else {
        s.send(io, reply::chunk_ok(size));
    }
    Flow::Continue
}

/// The end of a message: refuse it if too big, otherwise hand it to `inbound` and answer with
/// its id once it is durable. The transaction ends either way.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    body: Body,
) -> Flow {
    let Some(tx) = s.tx.take() else {
        s.send(io, reply::NEED_MAIL);
        return Flow::Continue;
    };
    if body.overflowed() {
        tracing::info!(
            peer = %s.peer,
            size = body.total(),
            "refused a message over smtp.max_message_size"
        );
        s.send(io, reply::TOO_BIG);
        return Flow::Continue;
    }
    let env = Envelope {
        mail_from: tx.from,
        rcpts: tx.rcpts,
        helo: s.helo_name(),
        peer: s.peer,
        auth_user: s.auth.as_ref().map(|a| a.email.clone()),
        tls: s.tls,
        protocol: s.protocol(),
    };
    match inbound::accept(&s.app, &env, body.into_bytes()).await {
        Ok(id) => s.send(io, reply::queued(&id)),
        Err(e) => {
            tracing::error!(peer = %s.peer, "could not accept a message: {e:#}");
            s.send(io, reply::LOCAL_ERROR);
        }
    }
    Flow::Continue
}
