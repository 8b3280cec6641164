//! One SMTP session: the state (greeting done, EHLO name, TLS, authenticated account, the mail
//! transaction), the state gate ([`Session::allowed`], the one place that decides which command is
//! allowed when), and the read → parse → execute loop over any byte stream.
//!
//! The session is generic over the stream (`AsyncRead + AsyncWrite`), so it runs the same over a
//! TCP socket, a TLS stream and an in-memory duplex in unit tests. It knows nothing of TLS itself:
//! on STARTTLS it hands the stream back ([`Outcome::StartTls`]) and the driver in `mod.rs` does the
//! handshake and runs the session again.
//!
//! Replies are collected in an output buffer and written when the session is about to wait for
//! input (RFC 2920: a pipelined group is answered as a whole), or when the buffer grows large.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::codec::{Input, Line};
use super::command::{self, Command, MailFrom, ParseError, RcptTo};
use super::reply::{self, Reply};
use super::{auth, data, Port};
use crate::inbound::{self, Resolution};
use crate::limits::Ticket;
use crate::server::App;
use crate::shutdown::Shutdown;
use crate::store::account::Account;

/// After this many failed commands (5xx) a session is closed with 421.
pub const MAX_ERRORS: u32 = 20;

/// Replies waiting beyond this size are written even though more input is buffered.
const OUT_HIGH_WATER: usize = 16 * 1024;

/// What the session knows of the client's EHLO/HELO.
struct Helo {
    name: String,
    /// EHLO (true) or HELO (false).
    extended: bool,
}

/// The mail transaction between MAIL and the end of DATA/BDAT (RFC 5321 §3.3).
pub(super) struct Transaction {
    pub from: String,
    pub rcpts: Vec<String>,
    pub smtputf8: bool,
    /// The message so far once BDAT has started (RFC 3030); DATA is then no longer allowed.
    pub bdat: Option<super::data::Chunked>,
    /// The longest greylisting delay of a recipient that passed for the first time.
    pub greylisted: Option<u64>,
}

/// What the loop does after a command.
pub(super) enum Flow {
    Continue,
    Close,
    StartTls,
}

/// How [`Session::run`] ended.
pub enum Outcome<S> {
    Closed,
    /// The client asked for STARTTLS and got `220`: here is the stream for the handshake. Every
    /// byte the client sent after the STARTTLS line has been discarded (RFC 3207 §4.2).
    StartTls(S),
}

/// Why the session stopped waiting for input.
pub(super) enum End {
    Eof,
    Io(io::Error),
    Idle,
    SessionTimeout,
    Shutdown,
    /// Submission: not authenticated within `limits.login_timeout`.
    LoginTimeout,
    /// The logged-in account was deleted or its password changed (`tanba user del/passwd`).
    Revoked,
}

/// The stream with its input and output buffers.
pub(super) struct Conn<S> {
    stream: S,
    pub input: Input,
    out: Vec<u8>,
    /// Bound on one write (a client that reads nothing must not hold the session forever).
    write_timeout: Duration,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S, write_timeout: Duration) -> Self {
        Conn {
            stream,
            input: Input::new(),
            out: Vec::with_capacity(1024),
            write_timeout,
        }
    }

    fn push(&mut self, r: &Reply) {
        r.write_to(&mut self.out);
    }

    pub(super) async fn flush(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        match tokio::time::timeout(self.write_timeout, write).await {
            Ok(Ok(())) => {
                self.out.clear();
                Ok(())
            }
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Idle),
        }
    }

    /// Writes pending replies, then waits for more input until `until`; with `stop`, shutdown
    /// interrupts the wait; `revoked` always does.
    async fn fill(
        &mut self,
        until: Instant,
        stop: Option<&mut Shutdown>,
        revoked: impl Future<Output = ()>,
    ) -> Result<(), End> {
        self.flush().await?;
        let read = tokio::time::timeout_at(until, self.stream.read_buf(self.input.read_target()));
        let stopping = async {
            match stop {
                Some(sd) => sd.stopping().await,
                None => std::future::pending().await,
            }
        };
        let r = tokio::select! {
            r = read => r,
            _ = stopping => return Err(End::Shutdown),
            _ = revoked => return Err(End::Revoked),
        };
        match r {
            Ok(Ok(0)) => Err(End::Eof),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(End::Io(e)),
            Err(_) => Err(End::Idle),
        }
    }
}

/// `now + d`, saturating (a timeout of "100y" in the config must not overflow `Instant`).
fn after(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

pub struct Session {
    pub(super) app: Arc<App>,
    pub(super) port: Port,
    pub(super) peer: SocketAddr,
    shutdown: Shutdown,
    /// The connection's place in the per-address counts; moves to the account's on AUTH, and
    /// ends the session when the account is deleted or its password changed (SPEC §8).
    ticket: Ticket,
    /// The session ends at the first command boundary (or wait) after this instant.
    deadline: Instant,
    /// Submission ports before AUTH: the session ends (421 4.4.2) at this instant.
    login_deadline: Option<Instant>,
    pub(super) tls: bool,
    helo: Option<Helo>,
    pub(super) auth: Option<Account>,
    pub(super) tx: Option<Transaction>,
    errors: u32,
    /// `[auth] dnsbl`: None until looked up (at the first RCPT), then the listing zone, if any.
    dnsbl: Option<Option<String>>,
}

impl Session {
    pub fn new(
        app: Arc<App>,
        port: Port,
        peer: SocketAddr,
        shutdown: Shutdown,
        ticket: Ticket,
    ) -> Session {
        let deadline = after(app.config.smtp.session_timeout);
        let login_deadline =
            (port != Port::Mx).then(|| after(app.config.limits.login_timeout).min(deadline));
        Session {
            app,
            port,
            peer,
            shutdown,
            ticket,
            deadline,
            login_deadline,
            tls: false,
            helo: None,
            auth: None,
            tx: None,
            errors: 0,
            dnsbl: None,
        }
    }

    /// The session after a TLS handshake: implicit TLS, or STARTTLS, after which the client
    /// starts over with EHLO and nothing learnt before counts (RFC 3207 §4.2).
    pub fn tls_established(&mut self) {
        self.tls = true;
        self.helo = None;
        self.tx = None;
        self.auth = None;
    }

    pub(super) fn max_size(&self) -> u64 {
        self.app.config.smtp.max_message_size
    }

    /// A successful AUTH as `account`: the login timeout no longer applies, and the session now
    /// counts as the account's (and ends with it, [`End::Revoked`]).
    pub(super) fn logged_in(&mut self, account: &Account) {
        // No per-address session limit for SMTP (SPEC §8 limits IMAP's): this cannot fail.
        let _ = self.ticket.login(account.id, false);
        self.login_deadline = None;
        // `user del/passwd` may have changed the account while its password was being checked,
        // before this session was registered to hear of it: then it ends at once.
        if !crate::limits::still_current(&self.app.store, account) {
            self.ticket.revoke();
        }
    }

    /// RFC 3848 `with` protocol name for the Received header.
    pub(super) fn protocol(&self) -> &'static str {
        let extended = self.helo.as_ref().is_some_and(|h| h.extended);
        match (extended, self.tls, self.auth.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        }
    }

    pub(super) fn helo_name(&self) -> String {
        self.helo
            .as_ref()
            .map(|h| h.name.clone())
            .unwrap_or_default()
    }

    /// Queues a reply; failures count towards [`MAX_ERRORS`].
    pub(super) fn send<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Conn<S>, r: Reply) {
        if r.is_error() && r.code != 552 {
            self.errors += 1;
        }
        io.push(&r);
    }

    /// Runs the session on `stream` until it ends or asks for STARTTLS.
    pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: S,
        greet: bool,
    ) -> Outcome<S> {
        let mut io = Conn::new(stream, self.app.config.smtp.idle_timeout);
        if greet {
            let g = reply::greeting(&self.app.config.hostname);
            self.send(&mut io, g);
        }
        loop {
            match self.step(&mut io).await {
                Flow::Continue => {
                    if io.out.len() > OUT_HIGH_WATER && io.flush().await.is_err() {
                        return Outcome::Closed;
                    }
                }
                Flow::Close => {
                    let _ = io.flush().await;
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), io.stream.shutdown()).await;
                    return Outcome::Closed;
                }
                Flow::StartTls => {
                    if io.flush().await.is_err() {
                        return Outcome::Closed;
                    }
                    return Outcome::StartTls(io.stream);
                }
            }
        }
    }

    /// One command: wait for it, parse it, execute it.
    async fn step<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Conn<S>) -> Flow {
        // Command boundary: shutdown and the session limit take effect here, never mid-command.
        if self.shutdown.is_stopping() {
            return self.end(io, End::Shutdown);
        }
        if Instant::now() >= self.deadline {
            return self.end(io, End::SessionTimeout);
        }
        if self.ticket.is_revoked() {
            return self.end(io, End::Revoked);
        }
        if self.login_deadline.is_some_and(|d| Instant::now() >= d) {
            return self.end(io, End::LoginTimeout);
        }
        let line = match self.read_line(io, true).await {
            Ok(l) => l,
            Err(e) => return self.end(io, e),
        };
        let flow = match line {
            Line::TooLong => {
                self.send(io, reply::LINE_TOO_LONG);
                Flow::Continue
            }
            Line::Line(bytes) => match command::parse(&bytes) {
                Ok(cmd) => {
                    tracing::trace!(peer = %self.peer, "{}", command::verb(&cmd));
                    self.execute(io, cmd).await
                }
                Err(ParseError(r)) => {
                    self.send(io, r);
                    Flow::Continue
                }
            },
        };
        if matches!(flow, Flow::Continue) && self.errors >= MAX_ERRORS {
            tracing::info!(peer = %self.peer, "too many errors; closing");
            io.push(&reply::TOO_MANY_ERRORS);
            return Flow::Close;
        }
        flow
    }

    /// Ends the session for `why`, telling the client when it is still there.
    pub(super) fn end<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        why: End,
    ) -> Flow {
        match why {
            End::Eof => tracing::debug!(peer = %self.peer, "client closed the connection"),
            End::Io(e) => tracing::debug!(peer = %self.peer, "connection error: {e}"),
            End::Idle => {
                tracing::debug!(peer = %self.peer, "idle timeout");
                io.push(&reply::IDLE_TIMEOUT);
            }
            End::SessionTimeout => {
                tracing::debug!(peer = %self.peer, "session time limit reached");
                io.push(&reply::SESSION_TIMEOUT);
            }
            End::Shutdown => io.push(&reply::SHUTTING_DOWN),
            End::LoginTimeout => {
                tracing::info!(peer = %self.peer, "not authenticated within limits.login_timeout");
                io.push(&reply::LOGIN_TIMEOUT);
            }
            End::Revoked => {
                let user = self.auth.as_ref().map(|a| a.email.as_str()).unwrap_or("");
                tracing::info!(
                    peer = %self.peer,
                    user,
                    "ending the session: the account was changed or deleted"
                );
                // Whatever was under way is dropped: nothing more is sent for this account.
                self.tx = None;
                io.push(&reply::ACCOUNT_CHANGED);
            }
        }
        Flow::Close
    }

    /// Waits for more input. `boundary`: between commands, where shutdown may interrupt.
    pub(super) async fn fill<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        boundary: bool,
    ) -> Result<(), End> {
        let idle = after(self.app.config.smtp.idle_timeout);
        let mut until = idle.min(self.deadline);
        if let Some(d) = self.login_deadline {
            until = until.min(d);
        }
        let stop = if boundary {
            Some(&mut self.shutdown)
        } else {
            None
        };
        match io.fill(until, stop, self.ticket.revoked()).await {
            Err(End::Idle) if Instant::now() >= self.deadline => Err(End::SessionTimeout),
            Err(End::Idle) if self.login_deadline.is_some_and(|d| Instant::now() >= d) => {
                Err(End::LoginTimeout)
            }
            r => r,
        }
    }

    /// The next command line (or SASL response line).
    pub(super) async fn read_line<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        boundary: bool,
    ) -> Result<Line, End> {
        loop {
            if let Some(line) = io.input.next_line() {
                return Ok(line);
            }
            self.fill(io, boundary).await?;
        }
    }

    /// Reads exactly `n` bytes (a BDAT chunk) and hands them to `sink` piece by piece.
    pub(super) async fn read_exact<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        mut n: u64,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<(), End> {
        while n > 0 {
            if io.input.is_empty() {
                self.fill(io, false).await?;
            }
            let pending = io.input.pending();
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(pending.len());
            sink(pending.get(..take).unwrap_or_default());
            io.input.consume(take);
            n -= take as u64;
        }
        Ok(())
    }

    /// The state gate: whether `cmd` may run now, or the reply that refuses it.
    fn allowed(&self, cmd: &Command) -> Result<(), Reply> {
        match cmd {
            Command::StartTls if self.tls => Err(reply::TLS_ACTIVE),
            Command::Auth { .. } => {
                if self.port == Port::Mx {
                    Err(reply::AUTH_NOT_HERE)
                } else if !self.tls {
                    Err(reply::AUTH_NEEDS_TLS)
                } else if !self.helo.as_ref().is_some_and(|h| h.extended) {
                    Err(reply::NEED_EHLO_FOR_AUTH)
                } else if self.auth.is_some() {
                    Err(reply::AUTH_AGAIN)
                } else if self.tx.is_some() {
                    Err(reply::NOT_IN_TRANSACTION)
                } else {
                    Ok(())
                }
            }
            Command::Mail(_) => {
                if self.helo.is_none() {
                    Err(reply::NEED_EHLO)
                } else if self.port != Port::Mx && self.auth.is_none() {
                    Err(reply::AUTH_REQUIRED)
                } else if self.tx.is_some() {
                    Err(reply::NESTED_MAIL)
                } else {
                    Ok(())
                }
            }
            Command::Rcpt(_) => match &self.tx {
                None => Err(reply::NEED_MAIL),
                Some(t) if t.bdat.is_some() => Err(reply::AFTER_BDAT),
                Some(_) => Ok(()),
            },
            Command::Data => match &self.tx {
                None => Err(reply::NEED_MAIL),
                Some(t) if t.bdat.is_some() => Err(reply::AFTER_BDAT),
                Some(t) if t.rcpts.is_empty() => Err(reply::NEED_RCPT),
                Some(_) => Ok(()),
            },
            Command::Bdat { .. } => match &self.tx {
                None => Err(reply::NEED_MAIL),
                Some(t) if t.rcpts.is_empty() => Err(reply::NEED_RCPT),
                Some(_) => Ok(()),
            },
            _ => Ok(()),
        }
    }

    async fn execute<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        cmd: Command,
    ) -> Flow {
        if let Err(r) = self.allowed(&cmd) {
            if let Command::Bdat { size, .. } = cmd {
                // The chunk follows the command whatever we answer: read it past, or its bytes
                // would be taken for commands (RFC 3030 §2).
                if let Err(e) = self.read_exact(io, size, |_| {}).await {
                    return self.end(io, e);
                }
            }
            self.send(io, r);
            return Flow::Continue;
        }
        match cmd {
            Command::Ehlo(name) => self.ehlo(io, name, true),
            Command::Helo(name) => self.ehlo(io, name, false),
            Command::StartTls => {
                self.send(io, reply::TLS_READY);
                let dropped = io.input.discard_all();
                if dropped > 0 {
                    tracing::info!(
                        peer = %self.peer,
                        "discarded {dropped} bytes pipelined after STARTTLS"
                    );
                }
                Flow::StartTls
            }
            Command::Auth { mechanism, initial } => {
                auth::authenticate(self, io, mechanism, initial).await
            }
            Command::Mail(m) => self.mail(io, m),
            Command::Rcpt(r) => self.rcpt(io, r).await,
            Command::Data => data::data(self, io).await,
            Command::Bdat { size, last } => data::bdat(self, io, size, last).await,
            Command::Rset => {
                self.tx = None;
                self.send(io, reply::OK);
                Flow::Continue
            }
            Command::Noop => {
                self.send(io, reply::OK);
                Flow::Continue
            }
            Command::Quit => {
                self.send(io, reply::BYE);
                Flow::Close
            }
            Command::Vrfy => {
                self.send(io, reply::VRFY);
                Flow::Continue
            }
            Command::Help => {
                self.send(io, reply::HELP);
                Flow::Continue
            }
            Command::NotImplemented(_) => {
                self.send(io, reply::NOT_IMPLEMENTED);
                Flow::Continue
            }
        }
    }

    /// EHLO/HELO (RFC 5321 §4.1.1.1): (re)starts the session state; EHLO lists the extensions.
    fn ehlo<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        name: String,
        extended: bool,
    ) -> Flow {
        self.tx = None;
        self.helo = Some(Helo { name, extended });
        let host = &self.app.config.hostname;
        if !extended {
            self.send(io, reply::helo(host));
            return Flow::Continue;
        }
        let mut lines = vec![
            host.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.max_size()),
            "8BITMIME".to_string(),
            "SMTPUTF8".to_string(),
            "CHUNKING".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
        ];
        if !self.tls {
            lines.push("STARTTLS".to_string());
        }
        // RFC 4954 §4 and SPEC §4: AUTH only on the submission ports, only under TLS.
        if self.port != Port::Mx && self.tls && self.auth.is_none() {
            lines.push("AUTH PLAIN LOGIN".to_string());
        }
        lines.push("HELP".to_string());
        reply::write_multiline(&mut io.out, 250, &lines);
        Flow::Continue
    }

    /// MAIL FROM (RFC 5321 §4.1.1.2) with SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531).
    fn mail<S: AsyncRead + AsyncWrite + Unpin>(&mut self, io: &mut Conn<S>, m: MailFrom) -> Flow {
        let r = if m.size.is_some_and(|s| s > self.max_size()) {
            reply::SIZE_EXCEEDED
        } else if !m.smtputf8 && !m.address.is_ascii() {
            reply::NON_ASCII_ADDRESS
        } else if let Some(r) = self.mx_rate_refusal() {
            r
        } else if let Some(acc) = self
            .auth
            .as_ref()
            .filter(|a| !inbound::may_send_as(&self.app, a, &m.address).unwrap_or(false))
        {
            tracing::info!(
                peer = %self.peer,
                user = %acc.email,
                "refused sender {:?}: not the user's address",
                m.address
            );
            reply::not_owner(&m.address, &acc.email)
        } else {
            self.tx = Some(Transaction {
                from: m.address,
                rcpts: Vec::new(),
                smtputf8: m.smtputf8,
                bdat: None,
                greylisted: None,
            });
            reply::SENDER_OK
        };
        self.send(io, r);
        Flow::Continue
    }

    /// `limits.mx_messages_per_ip`: an MX client's MAIL beyond its rate gets `451 4.7.0` (RFC 5321
    /// §4.2.5: a transient failure; the sender retries later). Submission is never limited here.
    fn mx_rate_refusal(&self) -> Option<Reply> {
        let ip = self.peer.ip();
        let limits = &self.app.config.limits;
        if self.port != Port::Mx || limits.mx_rate_exempt.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        match self.app.conns.mx_message(ip) {
            Ok(()) => None,
            Err(crate::limits::RateRefused::OverLimit { first }) => {
                if first {
                    tracing::info!(
                        client_ip = %self.ticket.client(),
                        limit = self.app.config.limits.mx_messages_per_ip,
                        window = ?self.app.config.limits.mx_messages_window,
                        "MX message rate exceeded (limits.mx_messages_per_ip): MAIL deferred with 451"
                    );
                }
                Some(reply::MX_RATE)
            }
            Err(crate::limits::RateRefused::Full) => {
                tracing::warn!(
                    client_ip = %self.ticket.client(),
                    "MX message rate table full: MAIL from a new address deferred with 451"
                );
                Some(reply::MX_RATE_FULL)
            }
        }
    }

    /// RCPT TO (RFC 5321 §4.1.1.3): MX takes local accounts only; submission also remote ones.
    async fn rcpt<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut Conn<S>,
        r: RcptTo,
    ) -> Flow {
        // `[auth] dnsbl` (RFC 5782): an MX client listed by a zone is refused at each RCPT,
        // the zone named; looked up once per session.
        if self.port == Port::Mx && !self.app.config.auth.dnsbl.is_empty() {
            if self.dnsbl.is_none() {
                let checker = crate::senderauth::Checker::get(&self.app.config);
                let listed = checker
                    .dnsbl_listed(self.peer.ip(), &self.app.config.auth.dnsbl)
                    .await;
                if let Some(zone) = &listed {
                    tracing::info!(client_ip = %self.peer.ip(), zone = %zone, "refused: client listed by DNSBL");
                }
                self.dnsbl = Some(listed);
            }
            if let Some(Some(zone)) = &self.dnsbl {
                let r = reply::dnsbl_listed(self.peer.ip(), zone);
                self.send(io, r);
                return Flow::Continue;
            }
        }
        let reply = self.rcpt_reply(r);
        self.send(io, reply);
        Flow::Continue
    }

    fn rcpt_reply(&mut self, r: RcptTo) -> Reply {
        let max = self.app.config.smtp.max_recipients;
        let first_domain = self.app.config.domains.first().cloned();
        let Some(tx) = self.tx.as_mut() else {
            return reply::NEED_MAIL;
        };
        if !tx.smtputf8 && !r.address.is_ascii() {
            return reply::NON_ASCII_ADDRESS;
        }
        // RFC 5321 §4.5.1: `Postmaster` without a domain, in any case, must be accepted; it is
        // the postmaster of our first domain.
        let addr = if r.address.eq_ignore_ascii_case("postmaster") {
            match first_domain {
                Some(d) => format!("postmaster@{d}"),
                None => return reply::user_unknown(&r.address),
            }
        } else {
            r.address
        };
        if tx.rcpts.iter().any(|a| a.eq_ignore_ascii_case(&addr)) {
            return reply::RCPT_OK;
        }
        if tx.rcpts.len() >= max {
            return reply::TOO_MANY_RCPTS;
        }
        // Relaying is decided on the address the client gave: an operator's alias that expands
        // to a remote address is not a relay (only local addresses reach the alias table).
        let domain = addr.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if self.port == Port::Mx && !self.app.config.is_local_domain(domain) {
            tracing::info!(peer = %self.peer, "relaying denied for {addr:?}");
            return reply::RELAY_DENIED;
        }
        match inbound::route(&self.app, &addr) {
            Err(e) => {
                tracing::error!(peer = %self.peer, "looking up recipient: {e:#}");
                reply::LOCAL_ERROR
            }
            Ok(Resolution::Unknown) => reply::user_unknown(&addr),
            Ok(Resolution::Loop(path)) => {
                tracing::error!(peer = %self.peer, "alias loop: {path}");
                reply::alias_loop(&addr)
            }
            Ok(Resolution::NoPostmaster) => {
                tracing::warn!(
                    peer = %self.peer,
                    "mail for {addr:?} deferred: no account for postmaster@/abuse@ (create one, \
                     or set server.postmaster or an alias)"
                );
                reply::NO_POSTMASTER
            }
            Ok(Resolution::Found(dests)) => {
                // Quota: an account already at its limit takes nothing more now (452 4.2.2);
                // whether a message fits is decided at the end of DATA (552 5.2.2).
                let full = dests.iter().any(|d| match d {
                    inbound::Dest::Account(a) => self.app.store.quota(a.id).is_ok_and(|q| q.full()),
                    _ => false,
                });
                if full {
                    tracing::info!(peer = %self.peer, "recipient {addr:?}: mailbox full");
                    return reply::mailbox_full(&addr);
                }
                // `auth.greylisting` (RFC 6647): only for a recipient of ours, so that unknown
                // ones still get their 550 and leave no record. Submission never gets here
                // authenticated: the MX port has no AUTH.
                if self.port == Port::Mx && self.app.config.greylist.enabled {
                    use crate::senderauth::greylist::{check, Decision};
                    let g = &self.app.config.greylist;
                    match check(g, &self.app.store, self.peer.ip(), &tx.from, &addr) {
                        Decision::Defer(secs) => return reply::greylisted(secs),
                        Decision::Accept { delayed } => {
                            tx.greylisted = tx.greylisted.max(delayed);
                        }
                    }
                }
                tx.rcpts.push(addr);
                reply::RCPT_OK
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Sessions over an in-memory duplex stream, with a real store in a temp dir.

    use super::*;
    use crate::config::Config;
    use crate::shutdown::Coordinator;
    use crate::store::account::hash_password;
    use tokio::io::duplex;

    fn app() -> (tempfile::TempDir, Arc<App>) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::create_dir_all(dir.path().join("trust")).unwrap();
        let toml = format!(
            "[server]\nhostname = \"mx.test\"\ndomains = [\"example.test\"]\ndata_dir = \"{d}/data\"\n\
             [smtp]\nmax_message_size = 100\n[signatures]\ntrust_dir = \"{d}/trust\"\n\
             [auth]\nspf = false\ndkim = false\ndmarc = false\narc = false\n"
        );
        // Sender checks off: no DNS from unit tests (tests/it/senderauth.rs covers them).
        let app = crate::server::build_app(Config::from_toml(&toml, None).unwrap()).unwrap();
        app.store
            .create_account("alice@example.test", &hash_password("pw").unwrap())
            .unwrap();
        (dir, app)
    }

    /// Runs a session on `input` (then EOF) and returns everything the server wrote.
    async fn transcript(app: Arc<App>, port: Port, input: &[u8]) -> String {
        let (mut client, server) = duplex(1 << 16);
        let coord = Coordinator::new();
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut s = Session::new(app, port, peer, coord.handle(), Ticket::detached(peer.ip()));
        let task = tokio::spawn(async move {
            s.run(server, true).await;
        });
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        task.await.unwrap();
        String::from_utf8(out).unwrap()
    }

    fn without_ids(s: &str) -> String {
        s.lines()
            .map(|l| match l.split_once(" queued as ") {
                Some((head, _)) => format!("{head} queued as ID"),
                None => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn mx_pipelined_transcript() {
        let (_dir, app) = app();
        let out = transcript(
            app.clone(),
            Port::Mx,
            b"EHLO c.example\r\nMAIL FROM:<s@remote.example> SIZE=50\r\nRCPT TO:<alice@example.test>\r\n\
RCPT TO:<bob@example.test>\r\nRCPT TO:<x@remote.example>\r\nDATA\r\nSubject: t\r\n\r\n..hi\r\n.\r\n\
MAIL FROM:<s@remote.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n0123456789012345678901234567890123456789\r\n\
0123456789012345678901234567890123456789\r\n0123456789012345678901234567890123456789\r\n.\r\nAUTH PLAIN\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(
            without_ids(&out),
            "220 mx.test ESMTP Tanba\n\
250-mx.test\n250-PIPELINING\n250-SIZE 100\n250-8BITMIME\n250-SMTPUTF8\n250-CHUNKING\n\
250-ENHANCEDSTATUSCODES\n250-STARTTLS\n250 HELP\n\
250 2.1.0 Ok\n250 2.1.5 Ok\n550 5.1.1 <bob@example.test>: user unknown\n554 5.7.1 Relaying denied\n\
354 End data with <CR><LF>.<CR><LF>\n250 2.0.0 Ok: queued as ID\n\
250 2.1.0 Ok\n250 2.1.5 Ok\n354 End data with <CR><LF>.<CR><LF>\n552 5.3.4 Message too big\n\
502 5.5.1 AUTH not available on this port\n221 2.0.0 Bye"
        );
        let inbox = app.store.mailbox(
            app.store.account("alice@example.test").unwrap().unwrap().id,
            "INBOX",
        );
        let msgs = app.store.messages(inbox.unwrap().unwrap().id).unwrap();
        assert_eq!(msgs.len(), 1);
        let blob = app.store.blob(msgs[0].blob_id).unwrap().unwrap();
        let blob: &[u8] = blob.as_ref();
        // The signature filter's stamp comes first, then our Received header.
        assert!(blob.starts_with(b"Authentication-Results: mx.test; smime=none\r\n"));
        let received = b"\r\nReceived: from c.example ([192.0.2.1])\r\n";
        assert!(blob.windows(received.len()).any(|w| w == received));
        assert!(blob.ends_with(b"\r\nSubject: t\r\n\r\n.hi\r\n"));
    }

    #[tokio::test]
    async fn submission_without_tls_offers_no_auth() {
        let (_dir, app) = app();
        let out = transcript(
            app,
            Port::Submission,
            b"EHLO c\r\nAUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABwdw==\r\nMAIL FROM:<alice@example.test>\r\n",
        )
        .await;
        assert!(!out.contains("AUTH PLAIN"), "{out}");
        assert!(out.ends_with(
            "250 HELP\r\n530 5.7.0 Must issue a STARTTLS command first\r\n530 5.7.0 Authentication required\r\n"
        ), "{out}");
    }

    #[tokio::test]
    async fn shutdown_interrupts_an_idle_session_only() {
        let (_dir, app) = app();
        let (mut client, server) = duplex(1 << 16);
        let coord = Coordinator::new();
        let peer: SocketAddr = "192.0.2.1:4000".parse().unwrap();
        let mut s = Session::new(
            app,
            Port::Mx,
            peer,
            coord.handle(),
            Ticket::detached(peer.ip()),
        );
        let task = tokio::spawn(async move {
            s.run(server, true).await;
        });
        client.write_all(b"NOOP\r\n").await.unwrap();
        let mut buf = vec![0u8; 256];
        let mut got = Vec::new();
        while !got.ends_with(b"250 2.0.0 Ok\r\n") {
            let n = client.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        coord.begin();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"421 4.3.2 Server shutting down\r\n");
        task.await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), coord.wait_idle())
            .await
            .unwrap();
    }
}
