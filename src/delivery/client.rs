//! The outbound SMTP client (RFC 5321): greeting, EHLO, STARTTLS (RFC 3207), AUTH (RFC 4954, for
//! the relay only), then transactions with per-recipient results, PIPELINING (RFC 2920), SIZE
//! (RFC 1870), 8BITMIME (RFC 6152) and SMTPUTF8 (RFC 6531).
//!
//! The session is generic over its byte stream ([`Io`]) so that unit tests drive it with an
//! in-memory peer; TLS wraps the same stream. Reply lines are bounded ([`MAX_LINE`],
//! [`MAX_LINES`]); a malformed reply is a connection error, never a panic.
//!
//! TLS policy: towards MX hosts TLS is opportunistic (RFC 7435) and the certificate is not checked
//! (as Postfix's `may`/`encrypt` levels): it protects against passive listeners, unless the
//! recipient domain has an MTA-STS policy ([`Check`]): then the certificate must verify for the
//! MX name right after the handshake; or when the MX host has usable TLSA records (DANE,
//! [`super::dane`]): then STARTTLS is required and the certificate must match one of them,
//! checked at the same point. Towards the relay, when credentials are sent, the
//! certificate must chain to a trusted root ([`Trust`]: the system's, `SSL_CERT_FILE`/
//! `SSL_CERT_DIR` honoured, plus `delivery.tls_ca_file`) and name the relay host.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::mx::Target;
pub use super::verify::Failure;
use super::verify::Trust;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; be lenient).
pub const MAX_LINE: usize = 4096;
/// Most lines in one (multi-line) reply.
pub const MAX_LINES: usize = 128;
/// Longest reply text kept (and shown in `queue list` and bounces).
pub const MAX_TEXT: usize = 1000;
/// Recipients per transaction (RFC 5321 §4.5.3.1.8: servers must accept at least 100).
pub const MAX_RCPTS: usize = 100;

// RFC 5321 §4.5.3.2 timeouts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const GREETING_TIMEOUT: Duration = Duration::from_secs(300);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const DATA_INIT_TIMEOUT: Duration = Duration::from_secs(120);
const DATA_BLOCK_TIMEOUT: Duration = Duration::from_secs(180);
const DATA_FINAL_TIMEOUT: Duration = Duration::from_secs(600);
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream the client can speak over (TCP, TLS over TCP, an in-memory pipe in tests).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One server reply: its code and the text of each line (without the code and separator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// `550 5.1.1 <bob@example.com>: no such user`, lines joined by spaces, at most
    /// [`MAX_TEXT`] characters (it is stored with the queue record and quoted in bounces).
    pub fn text(&self) -> String {
        let mut s = self.code.to_string();
        for l in &self.lines {
            let l = l.trim();
            if !l.is_empty() {
                s.push(' ');
                s.push_str(l);
            }
        }
        if s.chars().count() > MAX_TEXT {
            s = s.chars().take(MAX_TEXT).collect();
            s.push_str("...");
        }
        s
    }

    /// The enhanced status code (RFC 3463) of the first line when it has one that agrees with
    /// the reply's class, else `X.0.0`.
    pub fn status(&self) -> String {
        let class = self.code / 100;
        if let Some(first) = self.lines.first() {
            let word = first.split_whitespace().next().unwrap_or("");
            let parts: Vec<&str> = word.split('.').collect();
            if parts.len() == 3
                && parts[0] == class.to_string()
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            {
                return word.to_string();
            }
        }
        format!("{}.0.0", class.clamp(2, 5))
    }
}

/// Extensions the server announced in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caps {
    pub esmtp: bool,
    pub pipelining: bool,
    /// SIZE limit; `Some(0)` means announced without a limit.
    pub size: Option<u64>,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub starttls: bool,
    pub auth_plain: bool,
    pub auth_login: bool,
}

impl Caps {
    fn from_ehlo(reply: &Reply) -> Caps {
        let mut c = Caps {
            esmtp: true,
            ..Caps::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(kw) = words.next() else { continue };
            match kw.to_ascii_uppercase().as_str() {
                "PIPELINING" => c.pipelining = true,
                "SIZE" => c.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => c.eightbitmime = true,
                "SMTPUTF8" => c.smtputf8 = true,
                "STARTTLS" => c.starttls = true,
                "AUTH" => {
                    for m in words {
                        match m.to_ascii_uppercase().as_str() {
                            "PLAIN" => c.auth_plain = true,
                            "LOGIN" => c.auth_login = true,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// Why a session could not be set up (or broke).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Connection trouble: refused, timeout, reset, malformed reply. Try another host.
    Io(String),
    /// The TLS handshake after STARTTLS failed; the connection is gone. Without `require_tls` the
    /// host may be tried again without STARTTLS.
    Tls(String),
    /// The server refused at greeting, EHLO, STARTTLS or AUTH.
    Refused { stage: &'static str, reply: Reply },
    /// Our own policy stops here (TLS required but not offered; no credentials without TLS).
    Policy(String),
    /// A recipient domain's policy (MTA-STS `enforce`) is not met: no STARTTLS, or a
    /// certificate that does not verify for the host. Try another host.
    Unverified(Failure),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            Error::Refused { stage, reply } => write!(f, "{} (in reply to {stage})", reply.text()),
            Error::Policy(e) => write!(f, "{e}"),
            Error::Unverified(e) => write!(f, "{}", e.text),
        }
    }
}

fn io_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Io(format!("{what}: {e}"))
}

/// `reply` when it has the `code` that `stage` expects, else the server's refusal.
fn expect(reply: Reply, code: u16, stage: &'static str) -> Result<Reply, Error> {
    if reply.code == code {
        Ok(reply)
    } else {
        Err(Error::Refused { stage, reply })
    }
}

/// What became of one recipient in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// The remote reply (`550 5.1.1 ...`) or our own explanation.
    pub text: String,
    /// RFC 3463 status, e.g. `5.1.1`.
    pub status: String,
    /// The command the reply answered (`RCPT TO`, `end of data`), for DSNs and logs.
    pub stage: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Delivered,
    Temporary,
    Permanent,
}

impl Outcome {
    pub fn from_reply(stage: &'static str, reply: &Reply) -> Outcome {
        let kind = match reply.code {
            200..=299 => OutcomeKind::Delivered,
            500..=599 => OutcomeKind::Permanent,
            _ => OutcomeKind::Temporary,
        };
        let status = match (kind, reply.status()) {
            (OutcomeKind::Temporary, s) if !s.starts_with('4') => "4.0.0".to_string(),
            (_, s) => s,
        };
        Outcome {
            kind,
            text: reply.text(),
            status,
            stage,
        }
    }

    pub fn temporary(text: impl Into<String>, status: &str) -> Outcome {
        Outcome {
            kind: OutcomeKind::Temporary,
            text: text.into(),
            status: status.into(),
            stage: "connection",
        }
    }

    pub fn permanent(text: impl Into<String>, status: &str) -> Outcome {
        Outcome {
            kind: OutcomeKind::Permanent,
            text: text.into(),
            status: status.into(),
            stage: "local policy",
        }
    }
}

/// One message for one transaction.
pub struct Message<'a> {
    /// Envelope sender; empty for the null sender.
    pub from: &'a str,
    pub rcpts: &'a [String],
    /// The message with CRLF line ends, not dot-stuffed.
    pub data: &'a [u8],
    /// Some byte ≥ 0x80 anywhere (BODY=8BITMIME when offered).
    pub eight_bit: bool,
    /// A non-ASCII envelope address: SMTPUTF8 is required.
    pub utf8_envelope: bool,
    /// Non-ASCII header bytes (RFC 6532): SMTPUTF8 is asked for when offered.
    pub utf8_headers: bool,
}

/// How to set up a session.
pub struct Params<'a> {
    /// Our name in EHLO/HELO.
    pub helo: &'a str,
    /// For STARTTLS (or implicit TLS). None: never TLS.
    pub tls: Option<&'a TlsConnector>,
    pub require_tls: bool,
    /// AUTH credentials (relay only); sent only over TLS.
    pub auth: Option<(&'a str, &'a str)>,
    /// A recipient domain's policy to check the server against (MTA-STS).
    pub check: Option<Check<'a>>,
}

/// What a policy (MTA-STS, RFC 8461 §4.2) asks of a session: STARTTLS, and a certificate that
/// verifies for the host name. The certificate is checked right after the handshake, before
/// anything else is sent (the handshake proved that the server holds its key).
#[derive(Clone, Copy)]
pub struct Check<'a> {
    pub trust: &'a Trust,
    /// `enforce`: a failure ends the session ([`Error::Unverified`]). Otherwise (`testing`) the
    /// result is only noted in [`Session::verified`].
    pub enforce: bool,
    /// Names the policy in messages, e.g. `MTA-STS policy of example.com (enforce)`.
    pub why: &'a str,
    /// DANE (RFC 7672): the certificate is checked against these TLSA records instead of
    /// [`Check::trust`].
    pub dane: Option<&'a [super::dane::Tlsa]>,
}

pub struct Session {
    io: Option<Box<dyn Io>>,
    rbuf: Vec<u8>,
    pub caps: Caps,
    pub tls: bool,
    /// `host[ip]`, for errors and DSNs.
    pub remote: String,
    /// False once the connection is unusable.
    pub alive: bool,
    /// With [`Params::check`]: whether the session met the policy (in `testing` mode a
    /// failure is noted here and the session goes on).
    pub verified: Option<Result<(), Failure>>,
}

/// The DATA text of a message (RFC 5321 §4.5.2), produced a chunk at a time. Every bare CR
/// and bare LF is written as CRLF before dot-stuffing (RFC 5321 §2.3.8), so that no next hop
/// can find an end of data we did not mean (SMTP smuggling: a server that ends DATA at
/// CR "." CR), whatever the queued bytes hold (inbound SMTP refuses bare CR, but older queues or
/// other paths may have them). The text always ends with CRLF "." CRLF.
#[derive(Debug, Default)]
pub(crate) struct DataWriter {
    pos: usize,
    mid_line: bool,
    done: bool,
}

impl DataWriter {
    /// Appends about `max` more bytes of the text to `out`; returns false once the end marker
    /// has been appended.
    pub(crate) fn next_chunk(&mut self, data: &[u8], max: usize, out: &mut Vec<u8>) -> bool {
        if self.done {
            return false;
        }
        let goal = out.len() + max;
        while out.len() < goal {
            let rest = data.get(self.pos..).unwrap_or_default();
            if rest.is_empty() {
                if self.mid_line {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b".\r\n");
                self.done = true;
                return false;
            }
            if !self.mid_line && rest.first() == Some(&b'.') {
                out.push(b'.');
            }
            let room = goal - out.len();
            match memchr::memchr2(b'\r', b'\n', rest) {
                Some(i) if i <= room => {
                    out.extend_from_slice(&rest[..i]);
                    out.extend_from_slice(b"\r\n");
                    let crlf = rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n');
                    self.pos += i + if crlf { 2 } else { 1 };
                    self.mid_line = false;
                }
                _ => {
                    // A long line: write part of it; the rest follows in the next chunk.
                    let n = room.max(1).min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    self.pos += n;
                    self.mid_line = true;
                }
            }
        }
        true
    }

    /// The size of the text without dot-stuffing and end marker: the message with CRLF line
    /// ends, ending in one (for `SIZE=`).
    pub(crate) fn crlf_len(data: &[u8]) -> usize {
        let mut n = data.len();
        for i in memchr::memchr2_iter(b'\r', b'\n', data) {
            let crlf = data[i] == b'\r' && data.get(i + 1) == Some(&b'\n');
            let lf_of_crlf = data[i] == b'\n' && i > 0 && data[i - 1] == b'\r';
            if !crlf && !lf_of_crlf {
                n += 1;
            }
        }
        if !matches!(data.last(), None | Some(b'\r' | b'\n')) {
            n += 2;
        }
        n
    }
}

/// Connects to `target` and sets up a session (implicit TLS first when asked).
pub async fn connect(
    target: &Target,
    p: &Params<'_>,
    implicit_tls: bool,
) -> Result<Session, Error> {
    let tcp = match timeout(CONNECT_TIMEOUT, TcpStream::connect(target.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(io_err(&format!("connect to {}", target.display()), e)),
        Err(_) => {
            return Err(Error::Io(format!(
                "connect to {}: timed out",
                target.display()
            )))
        }
    };
    let _ = tcp.set_nodelay(true);
    let sni = server_name(&target.host);
    let io: Box<dyn Io> = if implicit_tls {
        let Some(tls) = p.tls else {
            return Err(Error::Policy("implicit TLS without a TLS setup".into()));
        };
        let s = timeout(COMMAND_TIMEOUT, tls.connect(sni.clone(), tcp))
            .await
            .map_err(|_| Error::Tls("timed out".into()))?
            .map_err(|e| Error::Tls(e.to_string()))?;
        Box::new(s)
    } else {
        Box::new(tcp)
    };
    Session::start(io, target.display(), sni, implicit_tls, p).await
}

fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid".to_string()).expect("valid"))
}

impl Session {
    /// Greeting, EHLO, STARTTLS and AUTH as the params ask.
    pub async fn start(
        io: Box<dyn Io>,
        remote: String,
        sni: ServerName<'static>,
        tls_already: bool,
        p: &Params<'_>,
    ) -> Result<Session, Error> {
        let mut s = Session {
            io: Some(io),
            rbuf: Vec::new(),
            caps: Caps::default(),
            tls: tls_already,
            remote,
            alive: true,
            verified: None,
        };
        expect(s.read_reply(GREETING_TIMEOUT).await?, 220, "greeting")?;
        s.hello(p.helo).await?;
        if !s.tls {
            // RFC 8461 §4.2 / §5: a policy asks for STARTTLS; `enforce` fails without it.
            let no_starttls = |s: &mut Session, what: String| -> Result<(), Error> {
                let Some(c) = &p.check else { return Ok(()) };
                let f = Failure {
                    result_type: "starttls-not-supported",
                    text: format!("{}: {}: {what}", c.why, s.remote),
                };
                if c.enforce {
                    s.alive = false;
                    return Err(Error::Unverified(f));
                }
                s.verified = Some(Err(f));
                Ok(())
            };
            match p.tls {
                Some(tls) if s.caps.starttls => {
                    let r = s.command("STARTTLS", COMMAND_TIMEOUT).await?;
                    if r.code == 220 {
                        s.starttls(tls, sni, p.check.as_ref()).await?;
                        s.hello(p.helo).await?;
                    } else {
                        no_starttls(&mut s, format!("STARTTLS refused: {}", r.text()))?;
                        if p.require_tls || p.auth.is_some() {
                            return Err(Error::Refused {
                                stage: "STARTTLS",
                                reply: r,
                            });
                        }
                    }
                }
                _ if p.check.is_some() => {
                    no_starttls(&mut s, "STARTTLS is not offered".into())?;
                    if p.require_tls {
                        return Err(Error::Policy(format!(
                            "{} does not offer STARTTLS and delivery.require_tls is set",
                            s.remote
                        )));
                    }
                }
                _ if p.require_tls => {
                    return Err(Error::Policy(format!(
                        "{} does not offer STARTTLS and delivery.require_tls is set",
                        s.remote
                    )))
                }
                _ => {}
            }
        }
        if let Some((user, pass)) = p.auth {
            if !s.tls {
                return Err(Error::Policy(format!(
                    "{} offers no TLS: refusing to send the relay password in clear text",
                    s.remote
                )));
            }
            s.auth(user, pass).await?;
        }
        Ok(s)
    }

    async fn hello(&mut self, helo: &str) -> Result<(), Error> {
        let r = self
            .command(&format!("EHLO {helo}"), COMMAND_TIMEOUT)
            .await?;
        if r.code == 250 {
            self.caps = Caps::from_ehlo(&r);
            return Ok(());
        }
        // RFC 5321 §3.2: a server that does not know EHLO gets HELO (and no extensions).
        let r = self
            .command(&format!("HELO {helo}"), COMMAND_TIMEOUT)
            .await?;
        expect(r, 250, "HELO")?;
        self.caps = Caps::default();
        Ok(())
    }

    async fn starttls(
        &mut self,
        tls: &TlsConnector,
        sni: ServerName<'static>,
        check: Option<&Check<'_>>,
    ) -> Result<(), Error> {
        // RFC 3207 §4.2: nothing read before the handshake may be used after it.
        if !self.rbuf.is_empty() {
            self.alive = false;
            return Err(Error::Io(format!(
                "{}: data after the STARTTLS reply (possible injection)",
                self.remote
            )));
        }
        let io = self
            .io
            .take()
            .ok_or_else(|| Error::Io("connection closed".into()))?;
        let r = match timeout(COMMAND_TIMEOUT, tls.connect(sni.clone(), io)).await {
            Ok(r) => r.map_err(|e| Error::Tls(format!("{}: {e}", self.remote))),
            Err(_) => Err(Error::Tls(format!("{}: timed out", self.remote))),
        };
        let s = self.unusable_on_err(r)?;
        if let Some(c) = check {
            let chain = s.get_ref().1.peer_certificates().unwrap_or_default();
            let result = match c.dane {
                Some(tlsa) => super::dane::verify(chain, tlsa, &sni),
                None => c.trust.check(chain, &sni),
            };
            let result = result.map_err(|f| Failure {
                result_type: f.result_type,
                text: format!("{}: {}: {}", c.why, self.remote, f.text),
            });
            match result {
                Err(f) if c.enforce => {
                    // Nothing more is said on this connection.
                    self.alive = false;
                    return Err(Error::Unverified(f));
                }
                r => self.verified = Some(r),
            }
        }
        self.io = Some(Box::new(s));
        self.tls = true;
        Ok(())
    }

    async fn auth(&mut self, user: &str, pass: &str) -> Result<(), Error> {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let r = if self.caps.auth_plain {
            // RFC 4616: authzid (empty) NUL authcid NUL passwd, as an initial response.
            let ir = b64(format!("\0{user}\0{pass}").as_bytes());
            let r = self
                .command(&format!("AUTH PLAIN {ir}"), COMMAND_TIMEOUT)
                .await?;
            if r.code == 334 {
                self.command(&ir, COMMAND_TIMEOUT).await?
            } else {
                r
            }
        } else if self.caps.auth_login {
            let mut r = self.command("AUTH LOGIN", COMMAND_TIMEOUT).await?;
            if r.code == 334 {
                r = self.command(&b64(user.as_bytes()), COMMAND_TIMEOUT).await?;
            }
            if r.code == 334 {
                r = self.command(&b64(pass.as_bytes()), COMMAND_TIMEOUT).await?;
            }
            r
        } else {
            return Err(Error::Policy(format!(
                "{} offers neither AUTH PLAIN nor AUTH LOGIN",
                self.remote
            )));
        };
        expect(r, 235, "AUTH")?;
        Ok(())
    }

    /// Runs one transaction. Returns one outcome per recipient, in order. Recipients whose fate
    /// is unknown when the connection breaks get a temporary outcome and `alive` turns false.
    pub async fn send(&mut self, m: &Message<'_>) -> Vec<Outcome> {
        let n = m.rcpts.len();
        let mut out: Vec<Option<Outcome>> = vec![None; n];

        // Checks that need no round trip.
        let all = |o: Outcome| vec![o; n];
        if !valid_path(m.from) {
            return all(Outcome::permanent(
                format!("invalid sender address <{}>", m.from),
                "5.1.7",
            ));
        }
        if let Some(max) = self.caps.size.filter(|&s| s > 0) {
            if m.data.len() as u64 > max {
                return all(Outcome::permanent(
                    format!(
                        "message of {} bytes exceeds the size limit of {} ({max} bytes)",
                        m.data.len(),
                        self.remote
                    ),
                    "5.3.4",
                ));
            }
        }
        if m.utf8_envelope && !self.caps.smtputf8 {
            return all(Outcome::permanent(
                format!(
                    "{} does not support SMTPUTF8, which the addresses require",
                    self.remote
                ),
                "5.6.7",
            ));
        }
        let mut send_idx = Vec::new();
        for (i, r) in m.rcpts.iter().enumerate() {
            if valid_path(r) && !r.is_empty() {
                send_idx.push(i);
            } else {
                out[i] = Some(Outcome::permanent(
                    format!("invalid recipient address <{r}>"),
                    "5.1.3",
                ));
            }
        }
        if !send_idx.is_empty() {
            if let Err(e) = self.transaction(m, &send_idx, &mut out).await {
                self.alive = false;
                let text = format!("{}: {e}", self.remote);
                for o in out.iter_mut().filter(|o| o.is_none()) {
                    *o = Some(Outcome::temporary(text.clone(), "4.4.2"));
                }
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| Outcome::temporary("no reply", "4.4.2")))
            .collect()
    }

    async fn transaction(
        &mut self,
        m: &Message<'_>,
        idx: &[usize],
        out: &mut [Option<Outcome>],
    ) -> Result<(), Error> {
        let mut params = String::new();
        if self.caps.size.is_some() {
            params.push_str(&format!(" SIZE={}", DataWriter::crlf_len(m.data)));
        }
        if m.eight_bit && self.caps.eightbitmime {
            params.push_str(" BODY=8BITMIME");
        }
        if (m.utf8_envelope || m.utf8_headers) && self.caps.smtputf8 {
            params.push_str(" SMTPUTF8");
        }
        let mail = format!("MAIL FROM:<{}>{params}\r\n", m.from);
        let rcpt_lines: Vec<String> = idx
            .iter()
            .map(|&i| format!("RCPT TO:<{}>\r\n", m.rcpts[i]))
            .collect();

        let mail_reply;
        let mut rcpt_replies = Vec::with_capacity(idx.len());
        let data_reply;
        if self.caps.pipelining {
            // RFC 2920 §3.1: MAIL, every RCPT and DATA in one group; DATA is last.
            let mut batch = mail.clone();
            for l in &rcpt_lines {
                batch.push_str(l);
            }
            batch.push_str("DATA\r\n");
            self.write(batch.as_bytes(), COMMAND_TIMEOUT).await?;
            mail_reply = self.read_reply(COMMAND_TIMEOUT).await?;
            for _ in idx {
                rcpt_replies.push(self.read_reply(COMMAND_TIMEOUT).await?);
            }
            data_reply = Some(self.read_reply(DATA_INIT_TIMEOUT).await?);
        } else {
            self.write(mail.as_bytes(), COMMAND_TIMEOUT).await?;
            mail_reply = self.read_reply(COMMAND_TIMEOUT).await?;
            if mail_reply.positive() {
                for l in &rcpt_lines {
                    self.write(l.as_bytes(), COMMAND_TIMEOUT).await?;
                    rcpt_replies.push(self.read_reply(COMMAND_TIMEOUT).await?);
                }
            }
            data_reply = if rcpt_replies.iter().any(Reply::positive) {
                self.write(b"DATA\r\n", COMMAND_TIMEOUT).await?;
                Some(self.read_reply(DATA_INIT_TIMEOUT).await?)
            } else {
                None
            };
        }

        let data_open = data_reply.as_ref().is_some_and(|r| r.code == 354);
        if !mail_reply.positive() {
            let o = Outcome::from_reply("MAIL FROM", &mail_reply);
            for &i in idx {
                out[i] = Some(o.clone());
            }
        } else {
            for (k, &i) in idx.iter().enumerate() {
                if let Some(r) = rcpt_replies.get(k) {
                    if !r.positive() {
                        out[i] = Some(Outcome::from_reply("RCPT TO", r));
                    }
                }
            }
        }
        let accepted: Vec<usize> = idx.iter().copied().filter(|&i| out[i].is_none()).collect();
        if accepted.is_empty() || !data_open {
            if data_open {
                // RFC 2920 §3.1: DATA was accepted although no recipient was: send an empty
                // message body's end and ignore the reply.
                self.write(b".\r\n", DATA_BLOCK_TIMEOUT).await?;
                let _ = self.read_reply(DATA_FINAL_TIMEOUT).await?;
            }
            if let Some(r) = &data_reply {
                if !accepted.is_empty() {
                    let o = Outcome::from_reply("DATA", r);
                    for &i in &accepted {
                        out[i] = Some(o.clone());
                    }
                }
            }
            self.rset().await?;
            return Ok(());
        }

        self.write_data(m.data).await?;
        let fin = self.read_reply(DATA_FINAL_TIMEOUT).await?;
        let o = Outcome::from_reply("end of DATA", &fin);
        for &i in &accepted {
            out[i] = Some(o.clone());
        }
        if !fin.positive() {
            self.rset().await?;
        }
        Ok(())
    }

    async fn rset(&mut self) -> Result<(), Error> {
        let r = self.command("RSET", COMMAND_TIMEOUT).await?;
        if r.code != 250 {
            self.alive = false;
        }
        Ok(())
    }

    /// Sends the message dot-stuffed (RFC 5321 §4.5.2) and the terminating `.`, every line end
    /// as CRLF (see [`DataWriter`]).
    async fn write_data(&mut self, data: &[u8]) -> Result<(), Error> {
        const CHUNK: usize = 64 * 1024;
        let mut w = DataWriter::default();
        let mut buf = Vec::with_capacity(CHUNK + 1024);
        while w.next_chunk(data, CHUNK, &mut buf) {
            self.write(&buf, DATA_BLOCK_TIMEOUT).await?;
            buf.clear();
        }
        self.write(&buf, DATA_BLOCK_TIMEOUT).await
    }

    /// Ends the session politely; errors do not matter any more.
    pub async fn quit(mut self) {
        if self.alive {
            let _ = timeout(QUIT_TIMEOUT, async {
                if self.write(b"QUIT\r\n", QUIT_TIMEOUT).await.is_ok() {
                    let _ = self.read_reply(QUIT_TIMEOUT).await;
                }
            })
            .await;
        }
        if let Some(mut io) = self.io.take() {
            let _ = timeout(QUIT_TIMEOUT, io.shutdown()).await;
        }
    }

    async fn command(&mut self, line: &str, t: Duration) -> Result<Reply, Error> {
        let mut b = Vec::with_capacity(line.len() + 2);
        b.extend_from_slice(line.as_bytes());
        b.extend_from_slice(b"\r\n");
        self.write(&b, t).await?;
        self.read_reply(t).await
    }

    async fn write(&mut self, bytes: &[u8], t: Duration) -> Result<(), Error> {
        let remote = self.remote.clone();
        let io = self
            .io
            .as_mut()
            .ok_or_else(|| Error::Io("connection closed".into()))?;
        let r = timeout(t, async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await;
        let r = match r {
            Ok(r) => r.map_err(|e| io_err(&format!("writing to {remote}"), e)),
            Err(_) => Err(Error::Io(format!("writing to {remote}: timed out"))),
        };
        self.unusable_on_err(r)
    }

    /// Reads one complete reply (all lines of a multi-line reply).
    async fn read_reply(&mut self, t: Duration) -> Result<Reply, Error> {
        let r = match timeout(t, self.read_reply_inner()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Io(format!(
                "{}: no reply within {} s",
                self.remote,
                t.as_secs()
            ))),
        };
        self.unusable_on_err(r)
    }

    /// Passes `r` on; after an error (broken connection, timeout, failed handshake) the session
    /// is unusable.
    fn unusable_on_err<T>(&mut self, r: Result<T, Error>) -> Result<T, Error> {
        if r.is_err() {
            self.alive = false;
        }
        r
    }

    async fn read_reply_inner(&mut self) -> Result<Reply, Error> {
        let mut code = None;
        let mut lines = Vec::new();
        loop {
            let line = self.read_line().await?;
            let (c, last, text) = parse_reply_line(&line).ok_or_else(|| {
                Error::Io(format!(
                    "{}: malformed reply {:?}",
                    self.remote,
                    lossy(&line)
                ))
            })?;
            if *code.get_or_insert(c) != c {
                return Err(Error::Io(format!(
                    "{}: inconsistent codes in a multi-line reply",
                    self.remote
                )));
            }
            lines.push(text);
            if last {
                return Ok(Reply { code: c, lines });
            }
            if lines.len() >= MAX_LINES {
                return Err(Error::Io(format!(
                    "{}: reply has too many lines",
                    self.remote
                )));
            }
        }
    }

    /// One line without its CRLF (a bare LF is accepted too).
    async fn read_line(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.rbuf) {
                let mut line: Vec<u8> = self.rbuf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.rbuf.len() > MAX_LINE {
                return Err(Error::Io(format!("{}: reply line too long", self.remote)));
            }
            let io = self
                .io
                .as_mut()
                .ok_or_else(|| Error::Io("connection closed".into()))?;
            let mut chunk = [0u8; 4096];
            let n = io
                .read(&mut chunk)
                .await
                .map_err(|e| io_err(&format!("reading from {}", self.remote), e))?;
            if n == 0 {
                return Err(Error::Io(format!(
                    "{}: connection closed by the server",
                    self.remote
                )));
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `250-text` → (250, false, "text"); `250 text` and `250` → last line.
fn parse_reply_line(line: &[u8]) -> Option<(u16, bool, String)> {
    if line.len() > MAX_LINE || line.len() < 3 {
        return None;
    }
    let digits = &line[..3];
    if !digits.iter().all(u8::is_ascii_digit) || !(b'2'..=b'5').contains(&digits[0]) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
    match line.get(3) {
        None => Some((code, true, String::new())),
        Some(b' ') => Some((code, true, lossy(&line[4..]))),
        Some(b'-') => Some((code, false, lossy(&line[4..]))),
        _ => None,
    }
}

/// Printable text from a remote reply (control characters replaced).
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// An address we are willing to put between `<>`: no controls, spaces or angle brackets. The
/// records come from our own SMTP server, but a command must never be injectable.
fn valid_path(addr: &str) -> bool {
    addr.len() <= 512
        && !addr
            .chars()
            .any(|c| c.is_control() || c == '<' || c == '>' || c == ' ')
}

// ---- TLS setups ----

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Opportunistic TLS: encrypts, checks the handshake signatures, accepts any certificate.
pub fn opportunistic_connector() -> anyhow::Result<TlsConnector> {
    let p = provider();
    let config = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(crate::tls::AnyCertificate(p)))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn data_text(data: &[u8], max: usize) -> Vec<u8> {
        let mut w = DataWriter::default();
        let mut out = Vec::new();
        let mut chunk = Vec::new();
        while w.next_chunk(data, max, &mut chunk) {
            assert!(chunk.len() <= max + 3, "{} > {max}", chunk.len());
            out.append(&mut chunk);
        }
        out.append(&mut chunk);
        out
    }

    /// Finding 8, defence in depth: whatever the queued bytes hold, no bare CR or bare LF goes
    /// out, and a "." at the start of a line is stuffed also after a bare CR or LF.
    #[test]
    fn data_text_has_only_crlf_and_is_dot_stuffed() {
        let cases: [(&[u8], &[u8]); 6] = [
            (b"a\r\n.b\r\n", b"a\r\n..b\r\n.\r\n"),
            (
                b"x\r.\r\nMAIL FROM:<e@v>\r\n",
                b"x\r\n..\r\nMAIL FROM:<e@v>\r\n.\r\n",
            ),
            (b"x\n.\nRSET\n", b"x\r\n..\r\nRSET\r\n.\r\n"),
            (b"x\r\r\n.", b"x\r\n\r\n..\r\n.\r\n"),
            (b"", b".\r\n"),
            (b".", b"..\r\n.\r\n"),
        ];
        for (data, want) in cases {
            for max in [1, 2, 3, 7, 64 * 1024] {
                assert_eq!(
                    String::from_utf8_lossy(&data_text(data, max)),
                    String::from_utf8_lossy(want),
                    "{data:?} max {max}"
                );
            }
            let body_len = want.len()
                - 3
                - want.windows(3).filter(|w| w == b"\n..").count()
                - usize::from(want.starts_with(b".."));
            assert_eq!(DataWriter::crlf_len(data), body_len, "{data:?}");
        }
        // A long line is cut into chunks and put together again.
        let long = vec![b'x'; 200_000];
        let mut want = long.clone();
        want.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(data_text(&long, 64 * 1024), want);
    }

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_reply_line(b"250-PIPELINING"),
            Some((250, false, "PIPELINING".into()))
        );
        assert_eq!(parse_reply_line(b"250"), Some((250, true, String::new())));
        assert_eq!(parse_reply_line(b"25"), None);
        assert_eq!(parse_reply_line(b"250x"), None);
        assert_eq!(parse_reply_line(b"999 no"), None);
        let r = Reply {
            code: 550,
            lines: vec!["5.1.1 <b@x>: no such user".into()],
        };
        assert_eq!(r.status(), "5.1.1");
        assert_eq!(r.text(), "550 5.1.1 <b@x>: no such user");
        let r = Reply {
            code: 451,
            lines: vec!["try later".into()],
        };
        assert_eq!(r.status(), "4.0.0");
        // A status that contradicts the code is ignored.
        let r = Reply {
            code: 450,
            lines: vec!["5.1.1 odd".into()],
        };
        assert_eq!(r.status(), "4.0.0");
    }

    #[test]
    fn ehlo_capabilities() {
        let r = Reply {
            code: 250,
            lines: vec![
                "mx.example".into(),
                "PIPELINING".into(),
                "SIZE 1000".into(),
                "8BITMIME".into(),
                "auth login Plain".into(),
                "STARTTLS".into(),
            ],
        };
        let c = Caps::from_ehlo(&r);
        assert!(c.pipelining && c.eightbitmime && c.starttls && c.auth_plain && c.auth_login);
        assert_eq!(c.size, Some(1000));
        assert!(!c.smtputf8);
    }

    /// A scripted server: for each line received it sends the next canned reply; the lines it
    /// received are returned when the client hangs up.
    async fn scripted(
        server: tokio::io::DuplexStream,
        greeting: &'static str,
        replies: Vec<(&'static str, &'static str)>,
    ) -> Vec<String> {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        w.write_all(greeting.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        let mut in_data = false;
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return seen;
            }
            if in_data {
                seen.push(line.clone());
                if line == ".\r\n" {
                    in_data = false;
                    w.write_all(b"250 2.0.0 queued\r\n").await.unwrap();
                }
                continue;
            }
            seen.push(line.clone());
            let cmd = line.trim_end().to_ascii_uppercase();
            if cmd == "QUIT" {
                w.write_all(b"221 bye\r\n").await.unwrap();
                return seen;
            }
            let reply = replies
                .iter()
                .find(|(p, _)| cmd.starts_with(p))
                .map(|(_, r)| *r)
                .unwrap_or("250 OK\r\n");
            if cmd == "DATA" && reply.starts_with("354") {
                in_data = true;
            }
            w.write_all(reply.as_bytes()).await.unwrap();
        }
    }

    fn params() -> Params<'static> {
        Params {
            helo: "a.test",
            tls: None,
            require_tls: false,
            auth: None,
            check: None,
        }
    }

    /// A session over the in-memory `client` end, without implicit TLS.
    async fn start(
        client: tokio::io::DuplexStream,
        remote: &str,
        host: &str,
        p: &Params<'_>,
    ) -> Result<Session, Error> {
        Session::start(Box::new(client), remote.into(), server_name(host), false, p).await
    }

    /// A 7-bit, ASCII-only message.
    fn message<'a>(from: &'a str, rcpts: &'a [String], data: &'a [u8]) -> Message<'a> {
        Message {
            from,
            rcpts,
            data,
            eight_bit: false,
            utf8_envelope: false,
            utf8_headers: false,
        }
    }

    #[tokio::test]
    async fn pipelined_transaction_with_per_recipient_results() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(scripted(
            server,
            "220 mx.b.test ESMTP\r\n",
            vec![
                (
                    "EHLO",
                    "250-mx.b.test\r\n250-PIPELINING\r\n250-SIZE 100000\r\n250 8BITMIME\r\n",
                ),
                ("RCPT TO:<BAD@", "550 5.1.1 <bad@b.test>: no such user\r\n"),
                ("RCPT TO:<LATER@", "452 4.2.2 mailbox full\r\n"),
                ("DATA", "354 go ahead\r\n"),
            ],
        ));
        let mut s = start(client, "mx.b.test[127.0.0.1]", "mx.b.test", &params())
            .await
            .unwrap();
        assert!(s.caps.pipelining);
        let rcpts = vec![
            "ok@b.test".to_string(),
            "bad@b.test".to_string(),
            "later@b.test".to_string(),
        ];
        let data = "Subject: hi\r\n\r\n.leading dot\r\nü\r\n".as_bytes();
        let out = s
            .send(&Message {
                eight_bit: true,
                ..message("a@a.test", &rcpts, data)
            })
            .await;
        assert_eq!(out[0].kind, OutcomeKind::Delivered);
        assert_eq!(out[1].kind, OutcomeKind::Permanent);
        assert_eq!(out[1].status, "5.1.1");
        assert_eq!(out[1].stage, "RCPT TO");
        assert!(out[1].text.contains("no such user"));
        assert_eq!(out[2].kind, OutcomeKind::Temporary);
        assert_eq!(out[2].status, "4.2.2");
        s.quit().await;
        let seen = srv.await.unwrap();
        assert_eq!(
            seen[1],
            format!("MAIL FROM:<a@a.test> SIZE={} BODY=8BITMIME\r\n", data.len())
        );
        assert_eq!(seen[5], "DATA\r\n");
        // Dot-stuffed body, then the terminator.
        assert!(seen.contains(&"..leading dot\r\n".to_string()), "{seen:?}");
        assert_eq!(seen[seen.len() - 2], ".\r\n");
    }

    #[tokio::test]
    async fn lockstep_without_pipelining_and_size_refusal() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(scripted(
            server,
            "220 old.b.test\r\n",
            vec![
                ("EHLO", "250-old.b.test\r\n250 SIZE 10\r\n"),
                ("RCPT", "550 no\r\n"),
            ],
        ));
        let mut s = start(client, "old", "old.b.test", &params()).await.unwrap();
        let rcpts = vec!["x@b.test".to_string()];
        let big = message("", &rcpts, b"Subject: too big for ten bytes\r\n\r\n");
        let out = s.send(&big).await;
        assert_eq!(out[0].status, "5.3.4");
        let small = Message {
            data: b"a\r\n",
            ..big
        };
        let out = s.send(&small).await;
        assert_eq!(out[0].kind, OutcomeKind::Permanent);
        assert_eq!(out[0].status, "5.0.0");
        assert!(s.alive);
        s.quit().await;
        let seen = srv.await.unwrap();
        // No DATA after every recipient was refused; RSET instead.
        assert_eq!(
            seen,
            vec![
                "EHLO a.test\r\n",
                "MAIL FROM:<> SIZE=3\r\n",
                "RCPT TO:<x@b.test>\r\n",
                "RSET\r\n",
                "QUIT\r\n"
            ]
        );
    }

    #[tokio::test]
    async fn require_tls_without_starttls_is_refused_and_broken_replies_are_errors() {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(scripted(server, "220 x\r\n", vec![]));
        let tls = opportunistic_connector().unwrap();
        let p = Params {
            tls: Some(&tls),
            require_tls: true,
            ..params()
        };
        let e = start(client, "x", "x", &p).await.err().unwrap();
        assert!(matches!(e, Error::Policy(_)), "{e:?}");

        let (client, mut server) = tokio::io::duplex(1 << 16);
        server.write_all(b"220-a\r\n221 b\r\n").await.unwrap();
        let e = start(client, "x", "x", &params()).await.err().unwrap();
        assert!(matches!(e, Error::Io(_)), "{e:?}");
    }

    #[tokio::test]
    async fn credentials_are_never_sent_without_tls() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let srv = tokio::spawn(scripted(
            server,
            "220 relay\r\n",
            vec![("EHLO", "250-relay\r\n250 AUTH PLAIN LOGIN\r\n")],
        ));
        let tls = opportunistic_connector().unwrap();
        let p = Params {
            tls: Some(&tls),
            auth: Some(("user", "secret-password")),
            ..params()
        };
        let e = start(client, "relay", "relay", &p).await.err().unwrap();
        assert!(
            format!("{e}").contains("refusing to send the relay password"),
            "{e}"
        );
        let seen = srv.await.unwrap();
        assert!(!seen.iter().any(|l| l.starts_with("AUTH")), "{seen:?}");
    }

    #[tokio::test]
    async fn connection_lost_mid_transaction_is_temporary() {
        let (client, server) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut r = BufReader::new(r);
            w.write_all(b"220 x\r\n").await.unwrap();
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            w.write_all(b"250 x\r\n").await.unwrap();
            l.clear();
            r.read_line(&mut l).await.unwrap();
            // MAIL FROM: hang up.
        });
        let mut s = start(client, "x", "x", &params()).await.unwrap();
        let rcpts = vec!["y@b.test".to_string()];
        let out = s.send(&message("a@a.test", &rcpts, b"x\r\n")).await;
        assert_eq!(out[0].kind, OutcomeKind::Temporary);
        assert!(!s.alive);
    }
}
