//! SMTP: submission (STARTTLS + AUTH, implicit TLS), MX, the commands and their replies, over
//! real sockets against a real `tanba serve`. Python's smtplib is the client where a stock client
//! fits; [`Client`] speaks raw SMTP (and TLS via rustls) where the test needs control over bytes.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;

use crate::support::tls::Stream;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// A raw SMTP client (blocking std sockets; rustls for TLS).

/// One SMTP reply: the code and the text of each line (without code and separator).
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of the last line (`2.0.0 Ok` for `250 2.0.0 Ok`).
    pub fn text(&self) -> &str {
        self.lines.last().map(|s| s.as_str()).unwrap_or("")
    }
    /// `"250 2.0.0 Ok"`: code and last line.
    pub fn line(&self) -> String {
        format!("{} {}", self.code, self.text())
    }
}

pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
}

impl Client {
    /// Connects without reading anything.
    pub fn connect_raw(addr: SocketAddr) -> Client {
        Client {
            stream: Stream::connect(addr),
            buf: Vec::new(),
        }
    }

    /// A client on an already connected stream (nothing read yet).
    pub fn from_stream(stream: Stream) -> Client {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects and checks the greeting.
    pub fn connect(addr: SocketAddr) -> Client {
        let mut c = Self::connect_raw(addr);
        let g = c.reply();
        assert_eq!(g.line(), "220 mail.example.test ESMTP Tanba");
        c
    }

    /// Connects with implicit TLS (the submissions port) and checks the greeting.
    pub fn connect_tls(addr: SocketAddr, cert: &Path) -> Client {
        let mut c = Self::connect_raw(addr);
        c.stream.start_tls(cert);
        let g = c.reply();
        assert_eq!(g.line(), "220 mail.example.test ESMTP Tanba");
        c
    }

    /// Turns the plain connection into TLS (after the server's 220 to STARTTLS). Anything the
    /// server sent in plaintext and we have not read yet is kept in `buf` and is an error.
    pub fn upgrade(&mut self, cert: &Path) {
        assert!(
            self.buf.is_empty(),
            "plaintext bytes after the STARTTLS reply: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        self.stream.start_tls(cert);
    }

    pub fn starttls(&mut self, cert: &Path) {
        let r = self.cmd("STARTTLS");
        assert_eq!(r.line(), "220 2.0.0 Ready to start TLS");
        self.upgrade(cert);
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    fn read_more(&mut self) -> usize {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                n
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
            Err(e) => panic!(
                "read from server: {e} (so far: {:?})",
                String::from_utf8_lossy(&self.buf)
            ),
        }
    }

    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let s = String::from_utf8_lossy(&line);
                return Some(s.trim_end_matches(['\r', '\n']).to_string());
            }
            if self.read_more() == 0 {
                return None;
            }
        }
    }

    /// Reads one complete (possibly multi-line) reply.
    pub fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let l = self
                .line()
                .unwrap_or_else(|| panic!("connection closed; reply so far: {lines:?}"));
            assert!(l.len() >= 3, "short reply line {l:?}");
            let code: u16 = l[..3].parse().unwrap_or_else(|_| panic!("bad reply {l:?}"));
            let more = l.as_bytes().get(3) == Some(&b'-');
            lines.push(l.get(4..).unwrap_or("").to_string());
            if !more {
                return Reply { code, lines };
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends a command and asserts the reply starts with `expected` (e.g. `"250 2.1.5"`).
    pub fn ok(&mut self, line: &str, expected: &str) -> Reply {
        let r = self.cmd(line);
        assert!(
            r.line().starts_with(expected),
            "{line:?}: expected {expected:?}, got {:?}",
            r.line()
        );
        r
    }

    /// True when the server has closed the connection (after any unread replies).
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && self.read_more() == 0
    }

    /// EHLO then AUTH PLAIN (the connection must already be TLS).
    pub fn login(&mut self, user: &str, password: &str) {
        self.ok("EHLO client.example", "250");
        let b64 = b64(format!("\0{user}\0{password}").as_bytes());
        self.ok(&format!("AUTH PLAIN {b64}"), "235 2.7.0");
    }

    /// MAIL, RCPTs, DATA with `body` (dot-stuffed here), returns the final reply.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &[u8]) -> Reply {
        self.ok(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
        for t in to {
            self.ok(&format!("RCPT TO:<{t}>"), "250 2.1.5");
        }
        self.ok("DATA", "354");
        self.send(&dot_stuff(body));
        self.send(b".\r\n");
        self.reply()
    }

    /// [`Client::send_mail`], and the message must be accepted (`250`).
    #[track_caller]
    pub fn send_mail_ok(&mut self, from: &str, to: &[&str], body: &[u8]) {
        let r = self.send_mail(from, to, body);
        assert_eq!(r.code, 250, "{}", r.line());
    }
}

pub fn b64(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Dot-stuffs a CRLF message for DATA (RFC 5321 §4.5.2); the result ends with CRLF.
pub fn dot_stuff(msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    let mut at_start = true;
    for &b in msg {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Delivers `msg` over MX from sender@example.kz to alice@example.test; asserts the 250.
pub fn mx_to_alice(srv: &TestServer, msg: &[u8]) {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let r = c.send_mail("sender@example.kz", &["alice@example.test"], msg);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
}

/// The messages of `email`'s mailboxes, via `tanba export`.
pub fn stored(srv: &TestServer, email: &str) -> Vec<Vec<u8>> {
    mbox_messages(&srv.export(email))
}

/// Asserts that `stored` is `original` with trace/stamp headers prepended, the last of which is
/// our `Received:` header starting with `received_start`.
pub fn assert_stored_as(stored: &[u8], original: &[u8], received_start: &str) {
    assert!(
        stored.ends_with(original),
        "stored message does not end with the original bytes:\n{}",
        String::from_utf8_lossy(stored)
    );
    let prefix = String::from_utf8_lossy(&stored[..stored.len() - original.len()]).into_owned();
    let at = prefix
        .rfind("Received: ")
        .unwrap_or_else(|| panic!("no Received header in {prefix:?}"));
    let received = &prefix[at..];
    assert!(
        received.starts_with(received_start),
        "Received header {received:?} should start with {received_start:?}"
    );
    // The Received header is the last one before the original: only its folded lines follow.
    for (i, line) in received.trim_end_matches("\r\n").split("\r\n").enumerate() {
        assert!(
            i == 0 || line.starts_with('\t'),
            "unexpected line {line:?} after Received"
        );
    }
}

/// A server with alice@ and bob@example.test.
pub fn server_with_users(extra: &[(&str, &str)]) -> TestServer {
    let srv = TestServer::start_with(extra);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob-1");
    srv
}

// ---------------------------------------------------------------------------------------------
// Python smtplib scripts.

const PY_SUBMISSION_PLAIN: &str = r#"
import smtplib, ssl, sys
port, cafile, msgfile = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
s = smtplib.SMTP('127.0.0.1', port, local_hostname='client.example')
s.ehlo()
assert not s.has_extn('auth'), 'AUTH offered before TLS: %r' % s.esmtp_features
s.starttls(context=ctx)
s.ehlo()
assert s.has_extn('auth'), s.esmtp_features
assert s.esmtp_features['auth'].split() == ['PLAIN', 'LOGIN'], s.esmtp_features
assert not s.has_extn('starttls')
s.user, s.password = 'alice@example.test', 'secret-alice'
code, resp = s.auth('PLAIN', s.auth_plain)
assert code == 235, (code, resp)
code, resp = s.mail('alice@example.test', ['BODY=8BITMIME', 'SMTPUTF8'])
assert code == 250, (code, resp)
code, resp = s.rcpt('bob@example.test')
assert code == 250, (code, resp)
code, resp = s.data(open(msgfile, 'rb').read())
assert code == 250, (code, resp)
print(resp.decode())
s.quit()
"#;

/// A message with a leading-dot line, 8-bit UTF-8 text and a line over 1000 octets.
fn sample_message() -> Vec<u8> {
    let mut m = b"From: Alice <alice@example.test>\r\n\
To: Bob <bob@example.test>\r\n\
Subject: =?UTF-8?B?0KLQtdGB0YI=?=\r\n\
Message-ID: <sample-1@example.test>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, \xd2\x9b\xd0\xb0\xd0\xb7\xd0\xb0\xd2\x9b\xd1\x88\xd0\xb0 \xd2\x9b\xd2\xb1\xd0\xb6\xd0\xb0\xd1\x82!\r\n\
.a line that starts with a dot\r\n\
..and one with two\r\n"
        .to_vec();
    m.extend(std::iter::repeat_n(b'x', 1500));
    m.extend_from_slice(b"\r\nlast line\r\n");
    m
}

#[test]
fn submission_starttls_auth_plain_stores_message_byte_exact() {
    let srv = server_with_users(&[]);
    let msg = sample_message();
    let file = srv.dir.path().join("msg.eml");
    std::fs::write(&file, &msg).unwrap();
    let out = python(
        PY_SUBMISSION_PLAIN,
        &[
            &srv.submission.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    assert!(out.starts_with("2.0.0 Ok: queued as "), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_string();

    let inbox = stored(&srv, "bob@example.test");
    assert_eq!(inbox.len(), 1);
    assert_stored_as(
        &inbox[0],
        &msg,
        &format!(
            "Received: from client.example ([127.0.0.1])\r\n\tby mail.example.test (Tanba) with ESMTPSA id {id}\r\n\tfor <bob@example.test>;"
        ),
    );
    // Nothing went to the sender or the queue.
    assert!(stored(&srv, "alice@example.test").is_empty());
    let q = srv.tanba(&["queue", "list"], None);
    assert!(String::from_utf8_lossy(&q.stdout).trim().is_empty());
}

const PY_SUBMISSIONS_LOGIN: &str = r#"
import smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
s = smtplib.SMTP_SSL('127.0.0.1', port, local_hostname='client.example', context=ctx)
s.ehlo()
assert s.esmtp_features['auth'].split() == ['PLAIN', 'LOGIN'], s.esmtp_features
assert not s.has_extn('starttls')
# AUTH LOGIN without an initial response: 334 Username, 334 Password.
s.user, s.password = 'alice@example.test', 'secret-alice'
code, resp = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
assert code == 235, (code, resp)
msg = b'From: alice@example.test\r\nTo: bob@example.test\r\nSubject: over 465\r\n\r\nHello Bob.\r\n'
refused = s.sendmail('alice@example.test', ['bob@example.test', 'alice@example.test'], msg)
assert refused == {}, refused
s.quit()
# And with the user name as initial response (smtplib's default for LOGIN).
s = smtplib.SMTP_SSL('127.0.0.1', port, local_hostname='client.example', context=ctx)
s.ehlo()
s.user, s.password = 'bob@example.test', 'secret-bob-1'
code, resp = s.auth('LOGIN', s.auth_login)
assert code == 235, (code, resp)
s.quit()
print('ok')
"#;

#[test]
fn submissions_implicit_tls_auth_login() {
    let srv = server_with_users(&[]);
    python(
        PY_SUBMISSIONS_LOGIN,
        &[
            &srv.submissions.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
        ],
    );
    let msg = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: over 465\r\n\r\nHello Bob.\r\n";
    for user in ["bob@example.test", "alice@example.test"] {
        let inbox = stored(&srv, user);
        assert_eq!(inbox.len(), 1, "{user}");
        // Two recipients: no "for <...>" clause.
        assert_stored_as(
            &inbox[0],
            msg,
            "Received: from client.example ([127.0.0.1])\r\n\tby mail.example.test (Tanba) with ESMTPSA id ",
        );
    }
}

#[test]
fn submissions_port_needs_auth_and_offers_no_starttls() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect_tls(srv.submissions, &srv.cert_pem());
    let ehlo = c.ok("EHLO client.example", "250");
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    c.ok("STARTTLS", "503 5.5.1 TLS already active");
    c.ok(
        "MAIL FROM:<alice@example.test>",
        "530 5.7.0 Authentication required",
    );
    c.login("alice@example.test", "secret-alice");
    let ehlo = c.ok("EHLO client.example", "250");
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    let r = c.send_mail(
        "alice@example.test",
        &["alice@example.test"],
        b"Subject: self\r\n\r\nnote\r\n",
    );
    assert!(r.line().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    c.ok("QUIT", "221");
    assert_eq!(stored(&srv, "alice@example.test").len(), 1);
}

const PY_AUTH_REFUSALS: &str = r#"
import smtplib, ssl, sys, base64
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
plain = lambda u, p: base64.b64encode(('\0%s\0%s' % (u, p)).encode()).decode()
s = smtplib.SMTP('127.0.0.1', port, local_hostname='client.example')
s.ehlo()
assert not s.has_extn('auth')
print(*s.docmd('AUTH', 'PLAIN ' + plain('alice@example.test', 'secret-alice')))
print(*s.docmd('MAIL', 'FROM:<alice@example.test>'))
s.starttls(context=ctx)
s.ehlo()
print(*s.docmd('MAIL', 'FROM:<alice@example.test>'))
print(*s.docmd('AUTH', 'PLAIN ' + plain('alice@example.test', 'wrong')))
print(*s.docmd('AUTH', 'PLAIN ' + plain('nobody@example.test', 'secret-alice')))
print(*s.docmd('AUTH', 'PLAIN ' + plain('bob@example.test', 'secret-alice')))
print(*s.docmd('AUTH', 'CRAM-MD5'))
print(*s.docmd('AUTH', 'PLAIN !!!'))
print(*s.docmd('AUTH', 'LOGIN'))
print(*s.docmd('*'))
try:
    s.login('alice@example.test', 'wrong')
    print('login succeeded?!')
except smtplib.SMTPAuthenticationError as e:
    print(e.smtp_code, e.smtp_error.decode())
s.user, s.password = 'alice@example.test', 'secret-alice'
print(*s.auth('PLAIN', s.auth_plain))
print(*s.docmd('AUTH', 'PLAIN ' + plain('alice@example.test', 'secret-alice')))
print(*s.mail('bob@example.test'))
print(*s.mail('<>'))
print(*s.mail('ALICE@Example.Test'))
s.quit()
"#;

#[test]
fn auth_refused_before_starttls_wrong_password_and_foreign_sender() {
    let srv = server_with_users(&[]);
    let out = python(
        PY_AUTH_REFUSALS,
        &[
            &srv.submission.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    let expected = [
        "530 b'5.7.0 Must issue a STARTTLS command first'",
        "530 b'5.7.0 Authentication required'",
        "530 b'5.7.0 Authentication required'",
        "535 b'5.7.8 Authentication credentials invalid'",
        "535 b'5.7.8 Authentication credentials invalid'",
        "535 b'5.7.8 Authentication credentials invalid'",
        "504 b'5.5.4 Unrecognized authentication type'",
        "501 b'5.5.2 Cannot decode response'",
        "334 b'VXNlcm5hbWU6'",
        "501 b'5.0.0 Authentication cancelled'",
        "535 5.7.8 Authentication credentials invalid",
        "235 b'2.7.0 Authentication successful'",
        "503 b'5.5.1 Already authenticated'",
        "553 b'5.7.1 <bob@example.test>: Sender address not owned by user alice@example.test'",
        "553 b'5.7.1 <>: Sender address not owned by user alice@example.test'",
        "250 b'2.1.0 Ok'",
    ];
    assert_eq!(lines, expected, "{out}");
    // Passwords never reach the log.
    let log = srv.log();
    assert!(
        !log.contains("secret-alice") && !log.contains("wrong"),
        "{log}"
    );
}

const PY_MX: &str = r#"
import smtplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
s = smtplib.SMTP('127.0.0.1', port, local_hostname='sender.example.org')
s.ehlo()
assert not s.has_extn('auth'), s.esmtp_features
for ext in ['pipelining', 'size', '8bitmime', 'smtputf8', 'chunking', 'enhancedstatuscodes', 'starttls']:
    assert s.has_extn(ext), (ext, s.esmtp_features)
assert s.esmtp_features['size'] == '52428800', s.esmtp_features
print(*s.mail('someone@sender.example.org'))
print(*s.rcpt('alice@example.test'))
print(*s.rcpt('ALICE@EXAMPLE.TEST'))
print(*s.rcpt('nobody@example.test'))
print(*s.rcpt('victim@elsewhere.example'))
print(*s.rcpt('Postmaster'))
code, resp = s.data(b'From: someone@sender.example.org\r\nSubject: hi\r\n\r\nHello Alice.\r\n')
print(code, resp.decode().split(' queued as ')[0])
# The null sender (bounces) is fine on MX.
print(*s.mail('<>'))
print(*s.rcpt('alice@example.test'))
print(s.data(b'Subject: bounce\r\n\r\nUndeliverable.\r\n')[0])
# AUTH is not offered on MX, not even under TLS.
print(*s.docmd('AUTH', 'PLAIN AGEAYg=='))
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
s.starttls(context=ctx)
s.ehlo()
assert not s.has_extn('auth'), s.esmtp_features
print(*s.docmd('AUTH', 'PLAIN AGEAYg=='))
print(*s.mail('someone@sender.example.org'))
print(*s.rcpt('alice@example.test'))
print(s.data(b'Subject: over tls\r\n\r\nsecret\r\n')[0])
s.quit()
"#;

#[test]
fn mx_delivers_locally_without_auth_and_refuses_relay_and_unknown_users() {
    let srv = server_with_users(&[]);
    srv.add_user("postmaster@example.test", "postmaster-pw");
    let out = python(
        PY_MX,
        &[&srv.mx.port().to_string(), srv.cert_pem().to_str().unwrap()],
    );
    let lines: Vec<&str> = out.lines().collect();
    let expected = [
        "250 b'2.1.0 Ok'",
        "250 b'2.1.5 Ok'",
        "250 b'2.1.5 Ok'",
        "550 b'5.1.1 <nobody@example.test>: user unknown'",
        "554 b'5.7.1 Relaying denied'",
        "250 b'2.1.5 Ok'",
        "250 2.0.0 Ok:",
        "250 b'2.1.0 Ok'",
        "250 b'2.1.5 Ok'",
        "250",
        "502 b'5.5.1 AUTH not available on this port'",
        "502 b'5.5.1 AUTH not available on this port'",
        "250 b'2.1.0 Ok'",
        "250 b'2.1.5 Ok'",
        "250",
    ];
    assert_eq!(lines, expected, "{out}");

    let inbox = stored(&srv, "alice@example.test");
    assert_eq!(inbox.len(), 3);
    assert_stored_as(
        &inbox[0],
        b"From: someone@sender.example.org\r\nSubject: hi\r\n\r\nHello Alice.\r\n",
        "Received: from sender.example.org ([127.0.0.1])\r\n\tby mail.example.test (Tanba) with ESMTP id ",
    );
    assert_stored_as(
        &inbox[2],
        b"Subject: over tls\r\n\r\nsecret\r\n",
        "Received: from sender.example.org ([127.0.0.1])\r\n\tby mail.example.test (Tanba) with ESMTPS id ",
    );
    // <Postmaster> went to postmaster@ the first local domain.
    assert_eq!(stored(&srv, "postmaster@example.test").len(), 1);
    // Nothing was queued for the relay attempt.
    let q = srv.tanba(&["queue", "list"], None);
    assert!(String::from_utf8_lossy(&q.stdout).trim().is_empty());
}

#[test]
fn submission_accepts_remote_recipients_into_the_queue() {
    // A resolver that never answers keeps the entry queued (deferred) while we look at it.
    let srv = server_with_users(&[("delivery", "resolver = \"127.0.0.1:9\"")]);
    let mut c = Client::connect(srv.submission);
    c.ok("EHLO client.example", "250");
    c.starttls(&srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    let r = c.send_mail(
        "alice@example.test",
        &["carol@remote.example", "bob@example.test"],
        b"Subject: to the world\r\n\r\nhi\r\n",
    );
    assert!(r.line().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
    c.ok("QUIT", "221 2.0.0");

    let out = srv.tanba(&["queue", "list"], None);
    assert!(out.status.success());
    let list = String::from_utf8_lossy(&out.stdout);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        list.contains("<alice@example.test>") && list.contains("carol@remote.example"),
        "{list}"
    );
    assert!(!list.contains("bob@example.test"), "{list}");
    // The local copy went straight to Bob.
    assert_eq!(stored(&srv, "bob@example.test").len(), 1);
}

#[test]
fn starttls_discards_commands_pipelined_before_the_handshake() {
    // CVE-2011-0411: a man in the middle appends a plaintext command to STARTTLS; it must not be
    // executed inside the TLS session.
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    c.send(b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\nRSET\r\n");
    let r = c.reply();
    assert_eq!(r.line(), "220 2.0.0 Ready to start TLS");
    c.upgrade(&srv.cert_pem());
    // The first reply under TLS is the one to our EHLO, not to the injected MAIL or RSET.
    let r = c.cmd("EHLO client.example");
    assert_eq!(r.code, 250);
    assert_eq!(r.lines[0], "mail.example.test", "{r:?}");
    assert!(!r.lines.iter().any(|l| l == "STARTTLS"), "{r:?}");
    c.ok("MAIL FROM:<someone@sender.example>", "250 2.1.0");
    c.ok("STARTTLS", "503 5.5.1");
    c.ok("NOOP", "250 2.0.0");
}

#[test]
fn pipelined_session_in_one_write_gets_every_reply_in_order() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    let script = b"EHLO client.example\r\n\
MAIL FROM:<a@sender.example>\r\n\
RCPT TO:<alice@example.test>\r\n\
RCPT TO:<nobody@example.test>\r\n\
RCPT TO:<bob@example.test>\r\n\
DATA\r\n\
Subject: one\r\n\
\r\n\
first\r\n\
.\r\n\
NOOP\r\n\
MAIL FROM:<>\r\n\
RCPT TO:<alice@example.test>\r\n\
BDAT 22 LAST\r\n\
Subject: two\r\n\r\nbody\r\n\
VRFY alice\r\n\
HELP\r\n\
RSET\r\n\
QUIT\r\n";
    c.send(script);
    let mut codes = Vec::new();
    loop {
        let r = c.reply();
        codes.push(r.line());
        if r.code == 221 {
            break;
        }
    }
    let expected = [
        "250 HELP",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "550 5.1.1 <nobody@example.test>: user unknown",
        "250 2.1.5 Ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as",
        "250 2.0.0 Ok",
        "250 2.1.0 Ok",
        "250 2.1.5 Ok",
        "250 2.0.0 Ok: queued as",
        "252 2.5.0",
        "214 2.0.0",
        "250 2.0.0 Ok",
        "221 2.0.0 Bye",
    ];
    assert_eq!(codes.len(), expected.len(), "{codes:#?}");
    for (got, want) in codes.iter().zip(expected) {
        assert!(
            got.starts_with(want),
            "got {got:?}, want {want:?}\n{codes:#?}"
        );
    }
    assert!(c.closed());
    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 2);
    assert!(alice[0].ends_with(b"Subject: one\r\n\r\nfirst\r\n"));
    assert!(alice[1].ends_with(b"Subject: two\r\n\r\nbody\r\n"));
    assert_eq!(stored(&srv, "bob@example.test").len(), 1);
}

#[test]
fn bdat_in_several_chunks_and_bdat_last_alone() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    // Chunks are counted bytes: "\r\n.\r\n" and a leading dot are content, not syntax.
    let parts: [&[u8]; 3] = [
        b"Subject: chunks\r\n\r\n",
        b".starts with a dot\r\n.\r\nnot the end\r\n",
        b"\xc3\xa9t\xc3\xa9\r\n",
    ];
    c.ok("MAIL FROM:<a@sender.example> BODY=8BITMIME", "250 2.1.0");
    c.ok("RCPT TO:<alice@example.test>", "250 2.1.5");
    for p in &parts[..2] {
        c.send(format!("BDAT {}\r\n", p.len()).as_bytes());
        c.send(p);
        let r = c.reply();
        assert_eq!(r.line(), format!("250 2.0.0 {} octets received", p.len()));
    }
    // DATA and RCPT are not allowed once BDAT has started.
    c.ok("DATA", "503 5.5.1");
    c.ok("RCPT TO:<bob@example.test>", "503 5.5.1");
    c.send(format!("BDAT {} LAST\r\n", parts[2].len()).as_bytes());
    c.send(parts[2]);
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));

    // Second message: two chunks (the second looks like a command) pipelined in one write with
    // an empty BDAT LAST.
    c.ok("MAIL FROM:<a@sender.example>", "250 2.1.0");
    c.ok("RCPT TO:<alice@example.test>", "250 2.1.5");
    c.send(b"BDAT 12\r\nSubject: x\r\nBDAT 8\r\n\r\nQUIT\r\nBDAT 0 LAST\r\n");
    assert_eq!(c.reply().line(), "250 2.0.0 12 octets received");
    assert_eq!(c.reply().line(), "250 2.0.0 8 octets received");
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));

    // BDAT without a transaction: refused, but its chunk is read past, not executed.
    c.send(b"BDAT 6\r\nNOOP\r\nRSET\r\n");
    assert_eq!(c.reply().line(), "503 5.5.1 Need MAIL command");
    assert_eq!(c.reply().line(), "250 2.0.0 Ok");
    c.ok("QUIT", "221");

    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 2);
    assert!(alice[0].ends_with(&parts.concat()));
    assert!(alice[1].ends_with(b"Subject: x\r\n\r\nQUIT\r\n"));
}

#[test]
fn eight_bit_body_is_stored_byte_exact() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    // Every byte value except CR and LF in the body, UTF-8 headers, a 3000-octet line.
    let mut msg = b"Subject: \xd2\x9a\xd0\xb0\xd0\xb7\xd0\xb0\xd2\x9b\xd1\x81\xd1\x82\xd0\xb0\xd0\xbd\r\n\r\n".to_vec();
    let all: Vec<u8> = (0u8..=255).filter(|b| *b != b'\r' && *b != b'\n').collect();
    msg.extend_from_slice(&all);
    msg.extend_from_slice(b"\r\n");
    msg.extend(std::iter::repeat_n(0xE2u8, 3000));
    msg.extend_from_slice(b"\r\nend\r\n");
    c.ok("MAIL FROM:<a@sender.example> BODY=8BITMIME SMTPUTF8", "250");
    c.ok("RCPT TO:<alice@example.test>", "250");
    c.ok("DATA", "354");
    c.send(&msg);
    c.send(b".\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));
    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 1);
    assert_stored_as(
        &alice[0],
        &msg,
        "Received: from client.example ([127.0.0.1])",
    );
}

#[test]
fn dot_stuffed_lines_are_unstuffed() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    c.ok("MAIL FROM:<a@sender.example>", "250");
    c.ok("RCPT TO:<alice@example.test>", "250");
    c.ok("DATA", "354");
    c.send(b"Subject: dots\r\n\r\n..\r\n...two\r\n..x\r\n.\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0"));
    let alice = stored(&srv, "alice@example.test");
    assert!(
        alice[0].ends_with(b"Subject: dots\r\n\r\n.\r\n..two\r\n.x\r\n"),
        "{}",
        String::from_utf8_lossy(&alice[0])
    );
}

#[test]
fn protocol_errors_get_replies_and_the_session_goes_on() {
    let srv = server_with_users(&[("smtp", "max_recipients = 2")]);
    let mut c = Client::connect(srv.mx);
    // Each command and the start of the reply it gets, in order, on one connection.
    let exchange = [
        (
            "MAIL FROM:<a@sender.example>",
            "503 5.5.1 Send HELO/EHLO first",
        ),
        ("FROBNICATE now", "500 5.5.2"),
        ("EHLO client.example", "250"),
        ("DATA", "503 5.5.1 Need MAIL command"),
        (
            "RCPT TO:<alice@example.test>",
            "503 5.5.1 Need MAIL command",
        ),
        ("MAIL FROM:a@sender.example", "501 5.5.4"),
        ("MAIL FROM:<a@sender.example> RET=HDRS", "555 5.5.4"),
        ("MAIL FROM:<a@sender.example>", "250 2.1.0"),
        (
            "MAIL FROM:<a@sender.example>",
            "503 5.5.1 Nested MAIL command",
        ),
        ("DATA", "503 5.5.1 Need RCPT command"),
        ("RCPT TO:<alice@example.test>", "250 2.1.5"),
        ("RCPT TO:<bob@example.test>", "250 2.1.5"),
        (
            "RCPT TO:<postmaster@example.test>",
            "452 4.5.3 Too many recipients",
        ),
        ("RCPT TO:<>", "501 5.1.3"),
        ("RCPT TO:<t\u{e9}st@example.test>", "553 5.6.7"),
        ("EXPN staff", "502 5.5.1"),
        ("VRFY alice", "252 2.5.0"),
        ("HELO again.example", "250 mail.example.test"),
        ("DATA", "503 5.5.1 Need MAIL command"),
        ("NOOP", "250 2.0.0 Ok"),
        ("QUIT", "221 2.0.0 Bye"),
    ];
    for (command, reply) in exchange {
        c.ok(command, reply);
    }
    assert!(c.closed());
}
