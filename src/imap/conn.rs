//! The connection: the byte stream (plain TCP, or TLS after STARTTLS / on the implicit-TLS port),
//! a read buffer, a write buffer, and command framing (lines and literals, RFC 3501 §4.3, RFC 7888).
//!
//! Framing is ours rather than imap-codec's because the decisions that depend on the session —
//! whether to send `+` for a synchronizing literal, how large a literal may be — have to be taken
//! *before* the literal's bytes arrive. Once a whole command (all its lines and literals) is
//! buffered, the session hands the bytes to `imap_codec::CommandCodec`.
//!
//! Limits (SPEC §8): a line is at most [`MAX_LINE`] bytes; one command, all its lines and
//! literals together, at most the session's command budget (`limits.max_command_size`, or
//! `limits.max_unauthenticated_command` before login); APPEND's message literals may be up to
//! `imap.max_literal_size` each, and those of a MULTIAPPEND (RFC 3502) up to the command budget
//! plus `imap.max_literal_size` all together (what does not fit into the budget counts against
//! the literal limit): the session holds the whole command in memory, so a MULTIAPPEND costs no
//! more than the largest single APPEND. Every literal announcement, synchronizing or not, first goes
//! through the session's [`LiteralGate`] (the state gate: is this command allowed here at all?)
//! and then through the budget, *before* a `+` is sent or a byte of the literal is kept.
//! Oversize input is never buffered: it becomes a [`Frame::Refused`] that says what of the
//! command is still on its way ([`Rest`]); the session answers and either skips that
//! ([`Conn::skip_rest`]) or, before login, closes the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use imap_codec::imap_types::response::{Code, CodeOther};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// COMPRESS=DEFLATE (RFC 4978): raw deflate (RFC 1951) both ways once the session turned it
/// on. Input is inflated at most [`INFLATE_CHUNK`] bytes at a time, only when the framer needs
/// more, so decompressed bytes meet exactly the limits plain ones do (line length, command
/// budget, literal gate) and a deflate bomb (about 1000:1) never sits in memory: it costs the
/// CPU of discarding what it expands to, as the same bytes sent uncompressed would. Output is
/// compressed with a sync flush at every [`Conn::flush`], so each response reaches the client
/// whole.
struct Deflate {
    inflate: flate2::Decompress,
    deflate: flate2::Compress,
    /// Compressed input not yet inflated, from `pos`.
    pending: Vec<u8>,
    pos: usize,
    /// Where inflated bytes land before they join the read buffer.
    out: Box<[u8]>,
    /// Compressed output being written.
    zbuf: Vec<u8>,
}

/// Most bytes inflated per read of the framer.
const INFLATE_CHUNK: usize = 16 * 1024;

impl Deflate {
    fn new(already_read: &[u8]) -> Deflate {
        Deflate {
            // `false`: raw deflate, no zlib header (RFC 4978 §3).
            inflate: flate2::Decompress::new(false),
            deflate: flate2::Compress::new(flate2::Compression::fast(), false),
            pending: already_read.to_vec(),
            pos: 0,
            out: vec![0u8; INFLATE_CHUNK].into_boxed_slice(),
            zbuf: Vec::new(),
        }
    }

    /// Inflates pending input into `rbuf`, at most [`INFLATE_CHUNK`] bytes. `Ok(0)`: more
    /// compressed input is needed.
    fn inflate_into(&mut self, rbuf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            if self.pos >= self.pending.len() {
                self.pending.clear();
                self.pos = 0;
                return Ok(0);
            }
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            self.inflate
                .decompress(
                    &self.pending[self.pos..],
                    &mut self.out,
                    flate2::FlushDecompress::None,
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let used = (self.inflate.total_in() - in0) as usize;
            let made = (self.inflate.total_out() - out0) as usize;
            self.pos += used;
            if made > 0 {
                rbuf.extend_from_slice(&self.out[..made]);
                return Ok(made);
            }
            if used == 0 {
                // A partial block: keep what is left and read more.
                self.pending.drain(..self.pos);
                self.pos = 0;
                return Ok(0);
            }
        }
    }

    /// Compresses `data` with a sync flush into `zbuf`.
    fn deflate(&mut self, data: &[u8]) -> io::Result<()> {
        self.zbuf.clear();
        let mut input = data;
        loop {
            self.zbuf.reserve(input.len() / 2 + 1024);
            let in0 = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut self.zbuf, flate2::FlushCompress::Sync)
                .map_err(io::Error::other)?;
            input = &input[(self.deflate.total_in() - in0) as usize..];
            // Done once all input is taken and the flush did not fill the buffer.
            if input.is_empty() && self.zbuf.len() < self.zbuf.capacity() {
                return Ok(());
            }
        }
    }
}

/// Longest line we accept (Dovecot's default `imap_max_line_length` is 64 KiB as well).
pub const MAX_LINE: usize = 64 * 1024;
/// Write buffer size at which we flush without waiting for the end of the response.
const FLUSH_AT: usize = 128 * 1024;

/// The transport: plaintext until STARTTLS, or TLS from the start.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while a STARTTLS handshake is in progress (or after it failed).
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// What the framer asks the session at a command's first literal, with the command so far (its
/// first line first): `Err(refusal)` refuses the command (the refusal is sent instead of `+`);
/// `Ok(cap)` lets it carry literals, and `cap` > 0 says it is APPEND, whose message literal may
/// be that large (outside the command budget).
pub type LiteralGate<'a> = &'a (dyn Fn(&[u8]) -> Result<u64, Box<Refusal>> + Send + Sync);

/// The least budget a command may have, from its first bytes (`tag NAME ...`): lets a command
/// whose own RFC bounds it (ID before login, RFC 2971 §3.3) exceed a smaller general budget.
pub type BudgetFloor<'a> = &'a (dyn Fn(&[u8]) -> u64 + Send + Sync);

/// What of a refused command the client is still sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// Nothing: the refusal came instead of `+` (the client waits and sends no literal), or
    /// the command was complete.
    Nothing,
    /// The rest of an over-long line, and whatever it announces.
    Line,
    /// A non-synchronizing literal of this many bytes, then the rest of its command.
    Literal(u64),
}

/// Why a command was not received in full, with the tag when we could read one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub tag: Option<String>,
    /// `true`: tagged BAD, `false`: tagged NO.
    pub bad: bool,
    pub code: Option<Code<'static>>,
    pub text: String,
    /// What the client still sends of this command ([`Conn::skip_rest`] throws it away).
    pub rest: Rest,
}

/// One unit of client input.
#[derive(Debug)]
pub enum Frame {
    /// A whole command: every line (CRLF-terminated) and literal, ready for the codec.
    Command(Vec<u8>),
    /// A command we did not take in (too long, literal too big, not allowed here); its bytes are
    /// gone and the session answers with the refusal.
    Refused(Refusal),
}

/// Outcome of looking for one line in the buffer.
enum Line {
    /// Length of the line including its LF.
    Complete(usize),
    /// No LF yet and the line is still within the limit.
    Partial,
    /// No LF within the limit.
    TooLong,
}

pub struct Conn {
    stream: Stream,
    rbuf: Vec<u8>,
    /// Start of unread data in `rbuf`.
    rpos: usize,
    wbuf: Vec<u8>,
    /// Where reads land before they are appended to `rbuf`.
    scratch: Box<[u8]>,
    /// How long we wait for the client to send something before we give up (autologout).
    pub idle_timeout: Duration,
    /// Before login: when the login time (`limits.login_timeout`) is up. Every read and write
    /// waits at most until then and fails with [`LoginTimedOut`].
    pub deadline: Option<Instant>,
    /// COMPRESS=DEFLATE, once on.
    deflate: Option<Box<Deflate>>,
}

/// The client did not log in within `limits.login_timeout`.
#[derive(Debug)]
pub struct LoginTimedOut;

impl std::fmt::Display for LoginTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("login timeout")
    }
}
impl std::error::Error for LoginTimedOut {}

/// Whether `e` is the login timeout (rather than autologout or a broken connection).
pub fn is_login_timeout(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<LoginTimedOut>())
}

/// The client did not send anything for `idle_timeout`.
#[derive(Debug)]
pub struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("idle timeout")
    }
}
impl std::error::Error for TimedOut {}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, TimedOut)
}

impl Conn {
    pub fn new(stream: TcpStream, idle_timeout: Duration) -> Conn {
        Conn {
            stream: Stream::Plain(stream),
            rbuf: Vec::with_capacity(8192),
            rpos: 0,
            wbuf: Vec::with_capacity(16 * 1024),
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
            idle_timeout,
            deadline: None,
            deflate: None,
        }
    }

    /// Whether COMPRESS=DEFLATE is on.
    pub fn is_compressed(&self) -> bool {
        self.deflate.is_some()
    }

    /// Turns COMPRESS=DEFLATE on (RFC 4978), after the tagged OK went out uncompressed (the
    /// caller flushed it). Whatever the client already sent beyond the COMPRESS command is
    /// compressed data.
    pub fn start_deflate(&mut self) {
        let rest = self.rbuf.get(self.rpos..).unwrap_or_default();
        self.deflate = Some(Box::new(Deflate::new(rest)));
        self.rbuf.clear();
        self.rpos = 0;
    }

    /// How long the next read or write may wait, and the error when that time is up.
    fn wait_limit(&self) -> (Duration, fn() -> io::Error) {
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left < self.idle_timeout {
                return (left, || {
                    io::Error::new(io::ErrorKind::TimedOut, LoginTimedOut)
                });
            }
        }
        (self.idle_timeout, timed_out)
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.stream, Stream::Tls(_))
    }

    /// Turns the connection into TLS. Anything the client sent in plaintext after the STARTTLS
    /// command is discarded first (RFC 3501 §6.2.1 and the STARTTLS command-injection attacks of
    /// CVE-2011-0411 fame: such bytes must never be read as if they came over TLS).
    pub async fn start_tls(&mut self, acceptor: &TlsAcceptor) -> io::Result<()> {
        self.flush().await?;
        self.rbuf.clear();
        self.rpos = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            return Err(io::Error::other("TLS already active"));
        };
        let (limit, expired) = self.wait_limit();
        let tls = tokio::time::timeout(limit.min(Duration::from_secs(60)), acceptor.accept(tcp))
            .await
            .map_err(|_| expired())??;
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    /// Whether client bytes are waiting in the buffer.
    pub fn has_buffered(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// Reads more bytes into the buffer; `Ok(0)` at EOF. Fails with `TimedOut` after
    /// `idle_timeout` of silence.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.rpos > 0 && self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 64 * 1024 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        // Read into scratch space and append only when the read completed: dropping this
        // future (IDLE and shutdown race it) must not leave garbage in `rbuf`.
        loop {
            if let Some(z) = self.deflate.as_mut() {
                let n = z.inflate_into(&mut self.rbuf)?;
                if n > 0 {
                    return Ok(n);
                }
            }
            let (limit, expired) = self.wait_limit();
            let r = tokio::time::timeout(limit, self.stream.read(&mut self.scratch[..])).await;
            let n = match r {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(expired()),
            };
            match self.deflate.as_mut() {
                None => {
                    self.rbuf.extend_from_slice(&self.scratch[..n]);
                    return Ok(n);
                }
                Some(_) if n == 0 => return Ok(0),
                Some(z) => z.pending.extend_from_slice(&self.scratch[..n]),
            }
        }
    }

    /// Waits until at least one byte is buffered. `Ok(false)` at EOF.
    pub async fn wait_input(&mut self) -> io::Result<bool> {
        if self.has_buffered() {
            return Ok(true);
        }
        Ok(self.fill().await? > 0)
    }

    fn find_line(&self, max: usize) -> Line {
        let avail = &self.rbuf[self.rpos..];
        let window = &avail[..avail.len().min(max)];
        match memchr::memchr(b'\n', window) {
            Some(i) => Line::Complete(i + 1),
            None if avail.len() >= max => Line::TooLong,
            None => Line::Partial,
        }
    }

    /// Reads one line (with its line ending normalised to CRLF). `Ok(None)` at EOF; an
    /// over-long line is consumed up to its LF and reported as `Err(tail)` with its last bytes.
    pub async fn read_line(&mut self, max: usize) -> io::Result<Option<Result<Vec<u8>, Vec<u8>>>> {
        loop {
            match self.find_line(max) {
                Line::Complete(n) => {
                    let mut line = self.rbuf[self.rpos..self.rpos + n].to_vec();
                    self.rpos += n;
                    if !line.ends_with(b"\r\n") {
                        // A bare LF (telnet, scripts): accept it as the end of line.
                        line.pop();
                        line.extend_from_slice(b"\r\n");
                    }
                    return Ok(Some(Ok(line)));
                }
                Line::TooLong => return self.discard_line().await.map(|t| t.map(Err)),
                Line::Partial => {
                    if self.fill().await? == 0 {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Consumes input up to and including the next LF without keeping it; returns the last
    /// bytes of the discarded line (enough to see a literal announcement at its end).
    async fn discard_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let avail = &self.rbuf[self.rpos..];
            let (take, done) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            tail.extend_from_slice(&avail[..take]);
            if tail.len() > 64 {
                tail.drain(..tail.len() - 64);
            }
            self.rpos += take;
            if done {
                return Ok(Some(tail));
            }
            if self.fill().await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads exactly `n` bytes into `out`. `Ok(false)` at EOF.
    async fn read_exact_into(&mut self, mut n: usize, out: &mut Vec<u8>) -> io::Result<bool> {
        // Grow with what actually arrives: an announcement alone must not allocate the maximum.
        out.reserve(n.min(1 << 20));
        while n > 0 {
            if !self.has_buffered() && self.fill().await? == 0 {
                return Ok(false);
            }
            let avail = &self.rbuf[self.rpos..];
            let take = avail.len().min(n);
            out.extend_from_slice(&avail[..take]);
            self.rpos += take;
            n -= take;
        }
        Ok(true)
    }

    /// Consumes `n` bytes without keeping them. `Ok(false)` at EOF.
    async fn discard(&mut self, mut n: u64) -> io::Result<bool> {
        while n > 0 {
            if !self.has_buffered() && self.fill().await? == 0 {
                return Ok(false);
            }
            let avail = (self.rbuf.len() - self.rpos) as u64;
            let take = avail.min(n);
            self.rpos += take as usize;
            n -= take;
        }
        Ok(true)
    }

    /// Reads one command with all its literals. `Ok(None)` at EOF.
    ///
    /// `max_command` is the budget of the whole command, lines and literals, except APPEND's
    /// message literal (see [`LiteralGate`]). At the first literal announcement, synchronizing
    /// `{n}` or not `{n+}` (LITERAL+, RFC 7888), the gate decides whether this command may
    /// carry literals in this state; then the literal must fit the budget. Only then is `+`
    /// sent (RFC 3501 §7.5) or the literal read. A refused synchronizing literal is answered
    /// instead of `+`, so the client never sends it; a refused non-synchronizing one is still
    /// on its way: the refusal says so ([`Rest::Literal`]), the session answers tagged BAD
    /// `[TOOBIG]` and then reads and throws it away, or closes the connection (RFC 7888 §4
    /// allows either).
    pub async fn read_command(
        &mut self,
        mut max_command: u64,
        gate: LiteralGate<'_>,
        floor: BudgetFloor<'_>,
    ) -> io::Result<Option<Frame>> {
        let mut msg: Vec<u8> = Vec::new();
        // Bytes of this command counted against `max_command` (all but APPEND's message).
        let mut counted = 0u64;
        // `Some(cap)` once the gate has agreed to literals; cap > 0: APPEND's message limit.
        let mut message_cap: Option<u64> = None;
        // APPEND: bytes of message literals counted against `cap` instead of the budget.
        let mut message_bytes = 0u64;
        'command: loop {
            let left = max_command.saturating_sub(counted);
            let max = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .clamp(2, MAX_LINE);
            let n = loop {
                match self.find_line(max) {
                    Line::Complete(n) => break n,
                    Line::TooLong => {
                        let head = if msg.is_empty() {
                            &self.rbuf[self.rpos..]
                        } else {
                            &msg[..]
                        };
                        let least = floor(head);
                        if least > max_command {
                            max_command = least;
                            continue 'command;
                        }
                        let tag = if msg.is_empty() {
                            tag_of(&self.rbuf[self.rpos..])
                        } else {
                            tag_of(&msg)
                        };
                        let text = if max < MAX_LINE {
                            format!(
                                "Command too long (the limit is {max_command} bytes, \
                                 literals included)"
                            )
                        } else {
                            format!("Line too long (more than {MAX_LINE} bytes)")
                        };
                        return Ok(Some(Frame::Refused(Refusal {
                            tag,
                            bad: true,
                            code: None,
                            text,
                            rest: Rest::Line,
                        })));
                    }
                    Line::Partial => {
                        if self.fill().await? == 0 {
                            return Ok(None);
                        }
                    }
                }
            };
            let mut line = self.rbuf[self.rpos..self.rpos + n].to_vec();
            self.rpos += n;
            if !line.ends_with(b"\r\n") {
                // A bare LF (telnet, scripts): accept it as the end of line.
                line.pop();
                line.extend_from_slice(b"\r\n");
            }
            counted += n as u64;
            msg.extend_from_slice(&line);
            let Some((size, nonsync)) = literal_announcement(&line) else {
                return Ok(Some(Frame::Command(msg)));
            };
            let refuse = |r: Refusal| -> io::Result<Option<Frame>> {
                Ok(Some(Frame::Refused(Refusal {
                    rest: if nonsync {
                        Rest::Literal(size)
                    } else {
                        Rest::Nothing
                    },
                    ..r
                })))
            };
            let cap = match message_cap {
                Some(c) => c,
                None => match gate(&msg) {
                    Ok(c) => *message_cap.insert(c),
                    Err(r) => return refuse(*r),
                },
            };
            let toobig = |text: String| Refusal {
                tag: tag_of(&msg),
                // RFC 7888 §4: BAD for a non-synchronizing literal; NO instead of `+`.
                bad: nonsync,
                code: Some(Code::Other(CodeOther::unvalidated(&b"TOOBIG"[..]))),
                text,
                rest: Rest::Nothing,
            };
            if cap > 0 && size > cap {
                return refuse(toobig(format!(
                    "Literal too large (the limit is {cap} bytes)"
                )));
            }
            max_command = max_command.max(floor(&msg));
            if counted.saturating_add(size) <= max_command {
                counted += size;
            } else if cap > 0 && message_bytes.saturating_add(size) <= cap {
                // APPEND's messages (all of a MULTIAPPEND together) within `cap`.
                message_bytes += size;
            } else if cap > 0 {
                return refuse(toobig(format!(
                    "Literal too large (the limit is {cap} bytes for the messages of one \
                     APPEND together)"
                )));
            } else {
                return refuse(toobig(format!(
                    "Literal too large (the limit is {max_command} bytes for the whole \
                     command, literals included)"
                )));
            }
            if !nonsync {
                self.write(b"+ Ready for literal data\r\n");
                self.flush().await?;
            }
            // size <= max(max_command, cap): within what the configuration lets us hold.
            if !self.read_exact_into(size as usize, &mut msg).await? {
                return Ok(None);
            }
        }
    }

    /// Throws away what the client still sends of a refused command. `Ok(false)` at EOF.
    pub async fn skip_rest(&mut self, rest: Rest) -> io::Result<bool> {
        match rest {
            Rest::Nothing => Ok(true),
            Rest::Literal(n) => self.skip_command(n).await,
            Rest::Line => {
                let Some(tail) = self.discard_line().await? else {
                    return Ok(false);
                };
                match literal_announcement(&tail) {
                    Some((n, true)) => self.skip_command(n).await,
                    _ => Ok(true),
                }
            }
        }
    }

    /// Throws away a non-synchronizing literal of `n` bytes and the rest of its command
    /// (further lines and literals). `Ok(false)` at EOF.
    pub async fn skip_command(&mut self, mut n: u64) -> io::Result<bool> {
        loop {
            if !self.discard(n).await? {
                return Ok(false);
            }
            let Some(tail) = self.discard_line().await? else {
                return Ok(false);
            };
            match literal_announcement(&tail) {
                // Another non-synchronizing literal follows: skip it too. (After a synchronizing
                // one the client waits for `+`, which never comes: the refusal ends the command
                // for both sides.)
                Some((m, true)) => n = m,
                _ => return Ok(true),
            }
        }
    }

    /// Queues bytes for the client.
    pub fn write(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Queues bytes and flushes when the buffer is large (streaming long responses).
    pub async fn write_stream(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.wbuf.extend_from_slice(bytes);
        if self.wbuf.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        let (limit, expired) = self.wait_limit();
        if !self.wbuf.is_empty() {
            let out: &[u8] = match self.deflate.as_mut() {
                Some(z) => {
                    z.deflate(&self.wbuf)?;
                    &z.zbuf
                }
                None => &self.wbuf,
            };
            let r = tokio::time::timeout(limit, self.stream.write_all(out))
                .await
                .map_err(|_| expired());
            self.wbuf.clear();
            r??;
        }
        tokio::time::timeout(limit, self.stream.flush())
            .await
            .map_err(|_| expired())?
    }

    /// Flushes and closes the stream (TLS close_notify included). The last words (a `BYE`)
    /// get a few seconds whatever the deadline: a client that does not read them is not
    /// waited for longer.
    pub async fn close(&mut self) {
        self.deadline = Some(Instant::now() + Duration::from_secs(5));
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.stream.shutdown()).await;
    }
}

/// `{123}` or `{123+}` followed by CRLF at the end of a line: (length, non-synchronizing).
pub fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = line.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', inner)?;
    let mut digits = &inner[open + 1..];
    let nonsync = digits.ends_with(b"+");
    if nonsync {
        digits = &digits[..digits.len() - 1];
    }
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse::<u64>().ok()?;
    Some((n, nonsync))
}

/// The tag of a command (its first word), if it is a valid tag (RFC 3501 `tag`).
pub fn tag_of(msg: &[u8]) -> Option<String> {
    let end = msg
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(msg.len());
    let tag = &msg[..end];
    let ok = !tag.is_empty()
        && tag.len() <= 256
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    ok.then(|| String::from_utf8_lossy(tag).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(
            literal_announcement(b"a APPEND x {12}\r\n"),
            Some((12, false))
        );
        assert_eq!(
            literal_announcement(b"a APPEND x {12+}\r\n"),
            Some((12, true))
        );
        assert_eq!(literal_announcement(b"a APPEND x {}\r\n"), None);
        assert_eq!(literal_announcement(b"a APPEND x {1a}\r\n"), None);
        assert_eq!(literal_announcement(b"a NOOP\r\n"), None);
        assert_eq!(
            literal_announcement(b"a X {99999999999999999999}\r\n"),
            None
        );
    }

    #[test]
    fn tags() {
        assert_eq!(tag_of(b"a1 NOOP\r\n").as_deref(), Some("a1"));
        assert_eq!(tag_of(b"* NOOP\r\n"), None);
        assert_eq!(tag_of(b"\r\n"), None);
        assert_eq!(tag_of(b"a+b NOOP\r\n"), None);
    }
}
