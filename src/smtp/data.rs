//! The message itself: DATA (RFC 5321 §4.1.1.4, dot-stuffed text) and BDAT (RFC 3030, counted
//! chunks), the size limit, the line-end rules, and the hand-over to [`crate::inbound::accept`].
//! `250` is sent only after `accept` returned, which is after the group-committed flush: `250`
//! means "on disk".
//!
//! The text goes into a [`Body`], which spools to `<data_dir>/spool/` beyond 1 MiB (see
//! `spool.rs`), so an unfinished message costs a session little memory however large it is.
//! The finished message is read back into memory only under the processing budget of
//! [`inbound::reserve`].
//!
//! A message over `smtp.max_message_size` is still read to its end (DATA) or its chunk's end
//! (BDAT) without being kept, then refused with 552; the session goes on. Line ends (RFC 5321
//! §2.3.8): a bare LF is taken as a line end and stored as CRLF; a bare CR, or a "." line with
//! a bare LF around it, refuses the message with `550 5.6.0` after it has been read to its real
//! end (CRLF "." CRLF, or BDAT LAST), and the session goes on. So no bare CR or bare LF reaches
//! the store or the next hop.

use tokio::io::{AsyncRead, AsyncWrite};

use super::codec::{DotDecoder, LineEndFaults, LineEnds};
use super::reply;
use super::session::{Conn, Flow, Session};
use super::spool::{self, Body};
use crate::inbound::{self, Envelope};

/// A message arriving in BDAT chunks, between the chunks.
#[derive(Debug)]
pub(super) struct Chunked {
    body: Body,
    ends: LineEnds,
}

fn new_body(s: &Session) -> Body {
    Body::new(s.max_size(), spool::dir(&s.app.config.data_dir))
}

/// DATA: `354`, then the text up to CRLF "." CRLF.
pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
) -> Flow {
    s.send(io, reply::START_DATA);
    let mut dec = DotDecoder::new();
    let mut body = new_body(s);
    loop {
        let (n, done) = dec.feed(io.input.pending(), body.buf());
        io.input.consume(n);
        if dec.faults.refused() {
            body.discard();
        }
        body.settle().await;
        if done {
            break;
        }
        if let Err(e) = s.fill(io, false).await {
            // The client went away (or stalled) mid-message: nothing is stored, and dropping
            // `body` removes its spool file.
            s.tx = None;
            return s.end(io, e);
        }
    }
    finish(s, io, body, dec.faults).await
}

/// BDAT: one chunk of exactly `size` bytes; the last one ends the message.
pub(super) async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    size: u64,
    last: bool,
) -> Flow {
    let mut msg = match s.tx.as_mut().and_then(|t| t.bdat.take()) {
        Some(m) => m,
        None => Chunked {
            body: new_body(s),
            ends: LineEnds::new(),
        },
    };
    let mut left = size;
    while left > 0 {
        if io.input.is_empty() {
            if let Err(e) = s.fill(io, false).await {
                s.tx = None;
                return s.end(io, e);
            }
        }
        let pending = io.input.pending();
        let take = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(pending.len());
        msg.ends
            .feed(pending.get(..take).unwrap_or_default(), msg.body.buf());
        io.input.consume(take);
        left -= take as u64;
        if msg.ends.faults.refused() {
            msg.body.discard();
        }
        msg.body.settle().await;
    }
    if last {
        msg.ends.finish(msg.body.buf());
        msg.body.settle().await;
        return finish(s, io, msg.body, msg.ends.faults).await;
    }
    let overflowed = msg.body.overflowed();
    if let Some(t) = s.tx.as_mut() {
        // Keep even an overflowed body: the following chunks of this message get 552 as well,
        // until BDAT LAST or RSET ends the transaction.
        t.bdat = Some(msg);
    }
    if overflowed {
        s.send(io, reply::TOO_BIG);
    } else {
        s.send(io, reply::chunk_ok(size));
    }
    Flow::Continue
}

/// The end of a message: refuse it if too big or malformed, otherwise hand it to `inbound` and
/// answer with its id once it is durable. The transaction ends either way.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut Session,
    io: &mut Conn<S>,
    body: Body,
    faults: LineEndFaults,
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
    if faults.refused() {
        tracing::info!(
            peer = %s.peer,
            size = body.total(),
            bare_cr = faults.bare_cr,
            bad_dot_line = faults.bad_dot_line,
            "refused a message with a bare CR or a malformed end-of-data line"
        );
        s.send(io, reply::BARE_LINE_END);
        return Flow::Continue;
    }
    if let Some(e) = body.failed() {
        tracing::error!(peer = %s.peer, "could not write the spool file: {e}");
        s.send(io, reply::NO_SPOOL_SPACE);
        return Flow::Continue;
    }
    if faults.bare_lf > 0 {
        tracing::debug!(peer = %s.peer, bare_lf = faults.bare_lf, "bare LF line ends stored as CRLF");
    }
    let env = Envelope {
        mail_from: tx.from,
        rcpts: tx.rcpts,
        helo: s.helo_name(),
        peer: s.peer,
        auth_user: s.auth.as_ref().map(|a| a.email.clone()),
        tls: s.tls,
        protocol: s.protocol(),
        greylisted: tx.greylisted,
    };
    // Memory for the whole message only within the global processing budget.
    let budget = inbound::reserve(&s.app, body.total()).await;
    let bytes = match body.into_bytes().await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(peer = %s.peer, "could not read the spool file: {e}");
            s.send(io, reply::LOCAL_ERROR);
            return Flow::Continue;
        }
    };
    match inbound::accept(&s.app, &env, bytes, budget).await {
        Ok(id) => s.send(io, reply::queued(&id)),
        Err(e) if e.downcast_ref::<inbound::Refused>().is_some() => {
            let why = e.downcast_ref::<inbound::Refused>().map(|r| r.0.as_str());
            s.send(io, reply::policy_refused(why.unwrap_or("")));
        }
        Err(e) => {
            tracing::error!(peer = %s.peer, "could not accept a message: {e:#}");
            // A full disk is RFC 3463's 4.3.1 (the sender retries later); a recipient over its
            // quota 5.2.2 (the store refused the whole transaction); anything else 4.3.0.
            let store_error = |want: fn(&crate::store::StoreError) -> bool| {
                e.chain().any(|c| {
                    c.downcast_ref::<crate::store::StoreError>()
                        .is_some_and(want)
                })
            };
            s.send(
                io,
                if store_error(|e| matches!(e, crate::store::StoreError::Full(_))) {
                    reply::NO_SPOOL_SPACE
                } else if store_error(|e| matches!(e, crate::store::StoreError::OverQuota(_))) {
                    reply::OVER_QUOTA
                } else {
                    reply::LOCAL_ERROR
                },
            );
        }
    }
    Flow::Continue
}
