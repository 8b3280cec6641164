//! IMAP: a Thunderbird-like session (Python imaplib, STARTTLS), IDLE seeing SMTP delivery,
//! updates between sessions, BODYSTRUCTURE and sections, byte-identical BODY[], SEARCH, mailbox
//! management, authentication, durability — over real sockets and real TLS against a real
//! `tanba serve`. [`Imap`] is a raw client for byte-level checks.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::smtp::Client as Smtp;
use crate::support::tls::Stream;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// A raw IMAP client (blocking std sockets; rustls for TLS).

/// One server response: a line, with any literals inline (`{n}\r\n` + data), CRLF-terminated.
pub type Resp = Vec<u8>;

pub fn text(r: &[u8]) -> String {
    String::from_utf8_lossy(r).trim_end().to_string()
}

pub struct Imap {
    stream: Stream,
    buf: Vec<u8>,
    next_tag: u32,
    /// The greeting line.
    pub greeting: String,
}

impl Imap {
    fn raw(addr: SocketAddr) -> Imap {
        Self::from_stream(Stream::connect(addr))
    }

    /// A client on an already connected stream (nothing read yet).
    pub fn from_stream(stream: Stream) -> Imap {
        Imap {
            stream,
            buf: Vec::new(),
            next_tag: 1,
            greeting: String::new(),
        }
    }

    /// Plain connection to the STARTTLS port; reads the greeting.
    pub fn plain(addr: SocketAddr) -> Imap {
        let mut c = Self::raw(addr);
        c.greeting = text(&c.response());
        assert!(c.greeting.starts_with("* OK"), "{}", c.greeting);
        c
    }

    /// Implicit TLS (the `listen_tls` port); reads the greeting.
    pub fn tls(addr: SocketAddr, cert: &Path) -> Imap {
        let mut c = Self::raw(addr);
        c.stream.start_tls(cert);
        c.greeting = text(&c.response());
        assert!(c.greeting.starts_with("* OK"), "{}", c.greeting);
        c
    }

    /// Implicit TLS and LOGIN.
    pub fn login(srv: &TestServer, user: &str, password: &str) -> Imap {
        let mut c = Self::tls(srv.imaps, &srv.cert_pem());
        c.ok(&format!("LOGIN {user} {password}"));
        c
    }

    pub fn set_timeout(&self, d: Duration) {
        if let Some(t) = self.stream.tcp() {
            t.set_read_timeout(Some(d)).unwrap();
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
        self.stream.flush().expect("flush");
    }

    fn fill(&mut self) -> std::io::Result<usize> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            match self.fill() {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
                Err(e) => panic!(
                    "read from server: {e} (buffered: {:?})",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Reads one response (following literals), `None` at EOF.
    pub fn try_response(&mut self) -> Option<Resp> {
        let mut out = Vec::new();
        loop {
            let line = self.line()?;
            out.extend_from_slice(&line);
            let Some(n) = literal_len(&line) else {
                return Some(out);
            };
            while self.buf.len() < n {
                if self.fill().ok()? == 0 {
                    return None;
                }
            }
            out.extend(self.buf.drain(..n));
        }
    }

    pub fn response(&mut self) -> Resp {
        self.try_response().expect("connection closed")
    }

    /// True when the server closed the connection (after anything still unread).
    pub fn closed(&mut self) -> bool {
        loop {
            match self.try_response() {
                None => return true,
                Some(_) => continue,
            }
        }
    }

    pub fn tag(&mut self) -> String {
        let t = format!("t{}", self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Sends `tag command` and reads until the tagged reply: (untagged responses, tagged line).
    pub fn cmd(&mut self, command: &str) -> (Vec<Resp>, String) {
        let tag = self.tag();
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until_tagged(&tag)
    }

    pub fn until_tagged(&mut self, tag: &str) -> (Vec<Resp>, String) {
        let mut untagged = Vec::new();
        loop {
            let r = self.response();
            if r.starts_with(format!("{tag} ").as_bytes()) {
                return (untagged, text(&r));
            }
            untagged.push(r);
        }
    }

    /// Like [`Imap::cmd`], asserting a tagged OK; returns the untagged responses.
    pub fn ok(&mut self, command: &str) -> Vec<Resp> {
        let (u, t) = self.cmd(command);
        assert!(
            t.split(' ').nth(1) == Some("OK"),
            "{command:?} failed: {t}\nuntagged: {:?}",
            u.iter().map(|r| text(r)).collect::<Vec<_>>()
        );
        u
    }

    /// APPEND with a synchronizing literal; returns the tagged line.
    pub fn append(&mut self, mailbox: &str, flags: &str, msg: &[u8]) -> String {
        let tag = self.tag();
        self.send(format!("{tag} APPEND {mailbox} {flags} {{{}}}\r\n", msg.len()).as_bytes());
        let r = self.response();
        assert!(
            r.starts_with(b"+"),
            "expected continuation, got {}",
            text(&r)
        );
        self.send(msg);
        self.send(b"\r\n");
        let (_, t) = self.until_tagged(&tag);
        t
    }
}

fn literal_len(line: &[u8]) -> Option<usize> {
    let l = line.strip_suffix(b"\r\n")?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&l[open + 1..]).ok()?.parse().ok()
}

/// The data of the first literal in a response.
pub fn literal_of(r: &[u8]) -> Vec<u8> {
    let open = r.iter().position(|&b| b == b'{').expect("no literal");
    let close = open + r[open..].iter().position(|&b| b == b'}').unwrap();
    let n: usize = std::str::from_utf8(&r[open + 1..close])
        .unwrap()
        .parse()
        .unwrap();
    r[close + 3..close + 3 + n].to_vec()
}

fn any_contains(rs: &[Resp], needle: &str) -> bool {
    rs.iter().any(|r| text(r).contains(needle))
}

fn dump(rs: &[Resp]) -> String {
    rs.iter().map(|r| text(r)).collect::<Vec<_>>().join("\n")
}

/// A server with alice@ and bob@example.test (passwords secret-alice, secret-bob-1).
fn server(extra: &[(&str, &str)]) -> TestServer {
    crate::smtp::server_with_users(extra)
}

/// Delivers `body` to `to` over SMTP (the MX port) and waits for `250`.
fn deliver(srv: &TestServer, to: &str, body: &[u8]) {
    let mut c = Smtp::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let r = c.send_mail("sender@remote.example", &[to], body);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
}

fn simple_message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Bob Sender <bob@remote.example>\r\nTo: Alice <alice@example.test>\r\n\
Subject: {subject}\r\nDate: Mon, 20 Nov 2023 10:15:00 +0600\r\n\
Message-ID: <{subject}@remote.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// Thunderbird-like session with Python's imaplib.

const PY_THUNDERBIRD: &str = r#"
import imaplib, ssl, sys, re
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
def check(cond, what):
    if not cond:
        raise SystemExit('FAILED: ' + what)

m = imaplib.IMAP4('127.0.0.1', port)
caps = m.capabilities
check('STARTTLS' in caps and 'LOGINDISABLED' in caps, 'plaintext capabilities %r' % (caps,))
check('AUTH=PLAIN' not in caps, 'AUTH=PLAIN before TLS')
typ, _ = m.capability()
m.starttls(ssl_context=ctx)
caps = m.capabilities
for c in ['IMAP4REV1', 'AUTH=PLAIN', 'LITERAL+', 'SASL-IR', 'IDLE', 'UIDPLUS', 'MOVE', 'SPECIAL-USE',
          'NAMESPACE', 'ID', 'ENABLE', 'UNSELECT', 'CHILDREN']:
    check(c in caps, 'capability %s missing after TLS: %r' % (c, caps))
check('STARTTLS' not in caps and 'LOGINDISABLED' not in caps, 'TLS capabilities %r' % (caps,))
typ, _ = m.login('alice@example.test', 'secret-alice')
check(typ == 'OK', 'login')

typ, boxes = m.list('""', '"*"')
boxes = [b.decode() for b in boxes]
def attrs(name):
    for b in boxes:
        if b.endswith('"/" ' + name) or b.endswith('"/" "%s"' % name):
            return b
    return ''
check('\\Sent' in attrs('Sent'), 'Sent not \\Sent: %r' % boxes)
check('\\Trash' in attrs('Trash'), 'Trash: %r' % boxes)
check('\\Drafts' in attrs('Drafts') and '\\Junk' in attrs('Junk') and '\\Archive' in attrs('Archive'), repr(boxes))
check('\\HasNoChildren' in attrs('INBOX'), repr(boxes))

typ, data = m.select('INBOX')
check(typ == 'OK' and data == [b'2'], 'select %r' % (data,))
check(m.untagged_responses.get('UIDVALIDITY'), 'UIDVALIDITY')
check(m.untagged_responses.get('UIDNEXT') == [b'3'], 'UIDNEXT %r' % m.untagged_responses.get('UIDNEXT'))
check(m.untagged_responses.get('RECENT') == [b'2'], 'RECENT')
check(m.untagged_responses.get('UNSEEN') == [b'1'], 'UNSEEN %r' % m.untagged_responses.get('UNSEEN'))
flags = m.untagged_responses.get('FLAGS')[0].decode()
check('$EDSValid' in flags, 'keywords in FLAGS: ' + flags)
perm = [r.decode() for r in m.untagged_responses.get('OK', []) if b'PERMANENTFLAGS' in r]
check(perm and '\\*' in perm[0] and '$EDSInvalid' in perm[0], 'PERMANENTFLAGS %r' % perm)

typ, data = m.uid('FETCH', '1:*', '(UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID Priority X-Priority References Newsgroups In-Reply-To Content-Type Reply-To)])')
check(typ == 'OK', 'uid fetch headers')
heads = [d for d in data if isinstance(d, tuple)]
check(len(heads) == 2, 'two messages: %r' % data)
first = heads[0][1]
check(b'Subject: first\r\n' in first and first.endswith(b'\r\n\r\n') and b'Received' not in first, repr(first))
check(re.search(rb'RFC822\.SIZE \d+', heads[0][0]) is not None, repr(heads[0][0]))
sizes = [int(re.search(rb'RFC822\.SIZE (\d+)', h[0]).group(1)) for h in heads]

typ, data = m.uid('FETCH', '2', 'BODY.PEEK[]')
body = data[0][1]
check(len(body) == sizes[1] and body.endswith(b'second body\r\n'), 'BODY[] %r' % body[-40:])
typ, data = m.uid('FETCH', '2', '(FLAGS)')
check(b'\\Seen' not in data[0], 'PEEK must not set \\Seen: %r' % data)

typ, data = m.uid('STORE', '1', '+FLAGS', '(\\Seen)')
check(typ == 'OK' and b'\\Seen' in data[0], 'store %r' % data)

sent = b'From: alice@example.test\r\nTo: bob@remote.example\r\nSubject: reply\r\n\r\nthanks\r\n'
typ, data = m.append('Sent', '(\\Seen)', None, sent)
check(typ == 'OK' and b'APPENDUID' in data[0], 'append %r' % data)

typ, data = m.uid('MOVE', '1', 'Trash')
check(typ == 'OK', 'move %r' % (data,))
copyuid = [r for r in m.untagged_responses.get('OK', []) if b'COPYUID' in r]
check(copyuid, 'COPYUID in untagged OK: %r' % m.untagged_responses)
check(m.untagged_responses.pop('EXPUNGE', None) == [b'1'], 'EXPUNGE after MOVE')

typ, data = m.uid('STORE', '2', '+FLAGS', '(\\Deleted)')
typ, data = m.expunge()
check(typ == 'OK' and data == [b'1'], 'expunge %r' % data)
typ, data = m.select('Trash')
check(data == [b'1'], 'Trash has the moved message: %r' % data)
typ, data = m.select('Sent', readonly=True)
check(data == [b'1'], 'Sent has the appended message: %r' % data)
typ, data = m.fetch('1', 'BODY.PEEK[]')
check(data[0][1] == sent, 'appended bytes %r' % data)
typ, _ = m.logout()
check(typ == 'BYE', 'logout')
print('ok')
"#;

#[test]
fn thunderbird_like_session_with_imaplib() {
    let srv = server(&[]);
    deliver(
        &srv,
        "alice@example.test",
        &simple_message("first", "first body"),
    );
    deliver(
        &srv,
        "alice@example.test",
        &simple_message("second", "second body"),
    );
    let out = python(
        PY_THUNDERBIRD,
        &[
            &srv.imap.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
        ],
    );
    assert_eq!(out.trim(), "ok");
}

// ---------------------------------------------------------------------------------------------
// Updates: IDLE and other sessions.

#[test]
fn idle_sees_a_message_delivered_over_smtp() {
    let srv = server(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("SELECT INBOX");
    let tag = c.tag();
    c.send(format!("{tag} IDLE\r\n").as_bytes());
    assert!(c.response().starts_with(b"+ "), "IDLE continuation");
    deliver(&srv, "alice@example.test", &simple_message("live", "hello"));
    // No command from us: the server must push EXISTS while we idle.
    c.set_timeout(Duration::from_secs(10));
    let mut seen = Vec::new();
    loop {
        let r = c.response();
        seen.push(text(&r));
        if text(&r) == "* 1 EXISTS" {
            break;
        }
        assert!(seen.len() < 10, "no EXISTS while idling: {seen:?}");
    }
    c.send(b"DONE\r\n");
    let (u, t) = c.until_tagged(&tag);
    assert!(t.starts_with(&format!("{tag} OK")), "{t}");
    assert!(u.is_empty() || any_contains(&u, "RECENT"), "{}", dump(&u));
    let u = c.ok("UID FETCH 1 (FLAGS ENVELOPE)");
    assert!(any_contains(&u, "\"live\""), "{}", dump(&u));
}

#[test]
fn a_second_session_sees_flag_changes_expunges_and_new_mail() {
    let srv = server(&[]);
    for i in 1..=3 {
        deliver(
            &srv,
            "alice@example.test",
            &simple_message(&format!("m{i}"), "x"),
        );
    }
    let mut a = Imap::login(&srv, "alice@example.test", "secret-alice");
    let mut b = Imap::login(&srv, "alice@example.test", "secret-alice");
    a.ok("SELECT INBOX");
    let u = b.ok("SELECT INBOX");
    // \Recent belongs to the first session only (RFC 3501 §2.3.2).
    assert!(any_contains(&u, "* 0 RECENT"), "{}", dump(&u));

    a.ok("STORE 2 +FLAGS.SILENT (\\Flagged $Important)");
    let u = b.ok("NOOP");
    assert!(
        any_contains(&u, "* 2 FETCH (UID 2 FLAGS (\\Flagged $Important))"),
        "{}",
        dump(&u)
    );
    // The new keyword is announced.
    assert!(any_contains(&u, "* FLAGS ("), "{}", dump(&u));
    assert!(any_contains(&u, "$Important"), "{}", dump(&u));

    a.ok("STORE 1 +FLAGS (\\Deleted)");
    a.ok("EXPUNGE");
    // A FETCH by sequence number must not see EXPUNGE (RFC 3501 §7.4.1)...
    let u = b.ok("FETCH 3 (UID)");
    assert!(!any_contains(&u, "EXPUNGE"), "{}", dump(&u));
    assert!(any_contains(&u, "* 3 FETCH (UID 3)"), "{}", dump(&u));
    // ...NOOP reports it, and the numbers shift.
    let u = b.ok("NOOP");
    assert!(any_contains(&u, "* 1 EXPUNGE"), "{}", dump(&u));
    let u = b.ok("FETCH 1:* (UID)");
    assert_eq!(
        u.iter().map(|r| text(r)).collect::<Vec<_>>(),
        vec!["* 1 FETCH (UID 2)", "* 2 FETCH (UID 3)"]
    );

    deliver(&srv, "alice@example.test", &simple_message("m4", "x"));
    let u = b.ok("NOOP");
    assert!(any_contains(&u, "* 3 EXISTS"), "{}", dump(&u));
    assert!(any_contains(&u, "* 1 RECENT"), "{}", dump(&u));
    // The other session hears about it too, but the new message is not recent there (its
    // own recent messages stay recent for it).
    let u = a.ok("NOOP");
    assert!(any_contains(&u, "* 3 EXISTS"), "{}", dump(&u));
    assert!(any_contains(&u, "* 2 RECENT"), "{}", dump(&u));
    let u = a.ok("SEARCH RECENT");
    assert_eq!(text(&u[0]), "* SEARCH 1 2");
}

// ---------------------------------------------------------------------------------------------
// Structure and sections.

const SIGNED_MSG: &str = "From: =?UTF-8?B?0KLQtdGB0YLQvtCy?= <signer@example.kz>\r\n\
To: alice@example.test\r\n\
Subject: Contract\r\n\
Date: Wed, 22 Nov 2023 10:15:00 +0600\r\n\
Message-ID: <contract-1@example.kz>\r\n\
MIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\r\n\
\tboundary=\"sig\"\r\n\
\r\n\
This is a signed message.\r\n\
--sig\r\n\
Content-Type: multipart/mixed; boundary=\"mix\"\r\n\
\r\n\
--mix\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: 8bit\r\n\
\r\n\
Договор во вложении.\r\n\
--mix\r\n\
Content-Type: application/pdf; name=\"contract.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"contract.pdf\"\r\n\
\r\n\
JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4K\r\n\
--mix--\r\n\
\r\n\
--sig\r\n\
Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\
\r\n\
MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==\r\n\
--sig--\r\n";

#[test]
fn bodystructure_of_a_signed_message_with_an_attachment_and_its_sections() {
    let srv = server(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let t = c.append("INBOX", "()", SIGNED_MSG.as_bytes());
    assert!(t.contains("OK [APPENDUID "), "{t}");
    c.ok("SELECT INBOX");

    let u = c.ok("FETCH 1 (BODYSTRUCTURE)");
    let pdf_body = "JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSPj4K";
    let text_body = "Договор во вложении.";
    let p7s_body = "MIAGCSqGSIb3DQEHAqCAMIACAQExDzANBglghkgBZQMEAgEFADCABgkqhkiG9w0BBwEAAA==";
    let expected = format!(
        "* 1 FETCH (BODYSTRUCTURE (((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"8BIT\" {} 0 NIL NIL NIL NIL)\
(\"APPLICATION\" \"PDF\" (\"NAME\" \"contract.pdf\") NIL NIL \"BASE64\" {} NIL (\"ATTACHMENT\" (\"FILENAME\" \"contract.pdf\")) NIL NIL) \
\"MIXED\" (\"BOUNDARY\" \"mix\") NIL NIL NIL)\
(\"APPLICATION\" \"PKCS7-SIGNATURE\" (\"NAME\" \"smime.p7s\") NIL NIL \"BASE64\" {} NIL (\"ATTACHMENT\" (\"FILENAME\" \"smime.p7s\")) NIL NIL) \
\"SIGNED\" (\"PROTOCOL\" \"application/pkcs7-signature\" \"MICALG\" \"sha-256\" \"BOUNDARY\" \"sig\") NIL NIL NIL))",
        text_body.len(),
        pdf_body.len(),
        p7s_body.len()
    );
    assert_eq!(u.len(), 1, "{}", dump(&u));
    assert_eq!(text(&u[0]), expected);

    // BODY (no extension data) has the same shape without the extension fields.
    let u = c.ok("FETCH 1 (BODY)");
    assert!(
        text(&u[0]).contains("\"SIGNED\") BODY") || text(&u[0]).ends_with("\"SIGNED\"))"),
        "{}",
        dump(&u)
    );

    let u = c.ok("FETCH 1 (BODY.PEEK[2.MIME] BODY.PEEK[1]<0.10> BODY.PEEK[1.2] BODY.PEEK[1.1])");
    let r = &u[0];
    let s = text(r);
    assert!(s.contains("BODY[2.MIME] {"), "{s}");
    let mime = "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\
Content-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n";
    assert!(
        s.contains(&format!("BODY[2.MIME] {{{}}}\r\n{mime}", mime.len())),
        "{s}"
    );
    assert!(s.contains("BODY[1]<0> {10}\r\n--mix\r\nCon"), "{s}");
    assert!(
        s.contains(&format!("BODY[1.2] {{{}}}\r\n{pdf_body} ", pdf_body.len())),
        "{s}"
    );
    let text_bytes = text_body.as_bytes();
    let needle = format!("BODY[1.1] {{{}}}\r\n", text_bytes.len());
    let at = r
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
        .expect("BODY[1.1]");
    assert_eq!(
        &r[at + needle.len()..at + needle.len() + text_bytes.len()],
        text_bytes
    );

    // HEADER.FIELDS.NOT, TEXT, a part beyond the end, partial beyond the end.
    let u = c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS.NOT (Content-Type From Date To Message-ID MIME-Version)] BODY.PEEK[9] BODY.PEEK[TEXT]<5000.10>)");
    let s = text(&u[0]);
    assert!(s.contains("{21}\r\nSubject: Contract\r\n\r\n"), "{s}");
    assert!(s.contains("BODY[9] NIL"), "{s}");
    assert!(s.contains("BODY[TEXT]<5000> {0}\r\n"), "{s}");

    // ENVELOPE keeps the RFC 2047 word for the client to decode.
    let u = c.ok("FETCH 1 (ENVELOPE)");
    assert_eq!(
        text(&u[0]),
        "* 1 FETCH (ENVELOPE (\"Wed, 22 Nov 2023 10:15:00 +0600\" \"Contract\" \
((\"=?UTF-8?B?0KLQtdGB0YLQvtCy?=\" NIL \"signer\" \"example.kz\")) \
((\"=?UTF-8?B?0KLQtdGB0YLQvtCy?=\" NIL \"signer\" \"example.kz\")) \
((\"=?UTF-8?B?0KLQtdGB0YLQvtCy?=\" NIL \"signer\" \"example.kz\")) \
((NIL NIL \"alice\" \"example.test\")) NIL NIL NIL \"<contract-1@example.kz>\"))"
    );

    // BODY[1] without PEEK sets \Seen and says so.
    let u = c.ok("FETCH 1 (BODY[1.1])");
    assert!(any_contains(&u, "FLAGS (\\Seen"), "{}", dump(&u));
}

#[test]
fn smtp_mail_is_fetched_byte_identical_and_stamped_keywords_show() {
    let srv = server(&[]);
    // Delivered over SMTP through the signature filter: the signature is garbage, so the
    // verdict is not `pass` and the filter sets $EDSInvalid (SPEC §5).
    deliver(&srv, "alice@example.test", SIGNED_MSG.as_bytes());
    deliver(&srv, "alice@example.test", &simple_message("plain", "x"));
    let stored = crate::smtp::stored(&srv, "alice@example.test");
    assert_eq!(stored.len(), 2);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let u = c.ok("SELECT INBOX");
    assert!(any_contains(&u, "$EDSInvalid"), "{}", dump(&u));
    for (i, want) in stored.iter().enumerate() {
        let u = c.ok(&format!("UID FETCH {} (RFC822.SIZE BODY.PEEK[])", i + 1));
        let got = literal_of(&u[0]);
        assert_eq!(
            got,
            *want,
            "message {} differs from the stored bytes",
            i + 1
        );
        assert!(text(&u[0]).contains(&format!("RFC822.SIZE {}", want.len())));
    }
    let u = c.ok("UID FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (X-EDS-Status)])");
    assert!(any_contains(&u, "$EDSInvalid"), "{}", dump(&u));
    assert!(any_contains(&u, "X-EDS-Status: "), "{}", dump(&u));
    // RFC822.HEADER and RFC822.TEXT are the two halves; RFC822.TEXT sets \Seen.
    let u = c.ok("UID FETCH 2 (RFC822.HEADER RFC822.TEXT)");
    assert!(any_contains(&u, "FLAGS (\\Seen"), "{}", dump(&u));
    let r = &u[0];
    let header = literal_of(r);
    let rest = &r[r.windows(12).position(|w| w == b"RFC822.TEXT ").unwrap()..];
    let body = literal_of(rest);
    assert_eq!([header, body].concat(), stored[1]);
    let u = c.ok("UID FETCH 1 (RFC822)");
    assert_eq!(literal_of(&u[0]), stored[0]);
    assert!(
        any_contains(&u, "FLAGS ($EDSInvalid \\Seen"),
        "{}",
        dump(&u)
    );
}

// ---------------------------------------------------------------------------------------------
// SEARCH.

#[test]
fn search_keys() {
    let srv = server(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let m1 = "From: =?UTF-8?B?0JDQudCz0q/Qu9GM?= <aigul@example.kz>\r\nTo: alice@example.test\r\n\
Cc: boss@example.kz\r\nSubject: =?UTF-8?B?0J/RgNC40LLQtdGC?= world\r\nDate: Tue, 01 Aug 2023 09:00:00 +0600\r\n\
X-Ticket: 4711\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n\
0J7Rh9C10L3RjCDQstCw0LbQvdGL0Lkg0LTQvtC60YPQvNC10L3Rgg==\r\n";
    let m2 = "From: bob@remote.example\r\nTo: alice@example.test\r\nSubject: lunch\r\n\
Date: Fri, 10 Nov 2023 12:00:00 +0000\r\n\r\nPizza at noon? Big body to make this message larger than the first one ...........\r\n";
    assert!(c
        .append("INBOX", "(\\Flagged)", m1.as_bytes())
        .contains("OK"));
    assert!(c
        .append("INBOX", "(\\Seen $Work)", m2.as_bytes())
        .contains("OK"));
    c.ok("SELECT INBOX");
    let search = |c: &mut Imap, q: &str| -> String {
        let u = c.ok(q);
        let line = u
            .iter()
            .map(|r| text(r))
            .find(|l| l.starts_with("* SEARCH"))
            .unwrap_or_default();
        line.trim_start_matches("* SEARCH").trim().to_string()
    };
    assert_eq!(search(&mut c, "SEARCH ALL"), "1 2");
    assert_eq!(search(&mut c, "SEARCH FLAGGED"), "1");
    assert_eq!(search(&mut c, "SEARCH UNSEEN"), "1");
    assert_eq!(search(&mut c, "SEARCH KEYWORD $Work"), "2");
    assert_eq!(search(&mut c, "SEARCH UNKEYWORD $Work"), "1");
    assert_eq!(search(&mut c, "SEARCH FROM aigul"), "1");
    assert_eq!(search(&mut c, "SEARCH CC boss"), "1");
    assert_eq!(search(&mut c, "SEARCH TO alice NOT FROM bob"), "1");
    assert_eq!(search(&mut c, "SEARCH OR FROM bob FLAGGED"), "1 2");
    assert_eq!(search(&mut c, "SEARCH HEADER X-Ticket 4711"), "1");
    assert_eq!(search(&mut c, "SEARCH SUBJECT lunch"), "2");
    assert_eq!(search(&mut c, "SEARCH BODY pizza"), "2");
    assert_eq!(search(&mut c, "SEARCH TEXT lunch"), "2");
    assert_eq!(search(&mut c, "SEARCH SENTBEFORE 1-Sep-2023"), "1");
    assert_eq!(search(&mut c, "SEARCH SENTSINCE 1-Nov-2023"), "2");
    assert_eq!(search(&mut c, "SEARCH SENTON 10-Nov-2023"), "2");
    assert_eq!(search(&mut c, "SEARCH SINCE 1-Jan-2000"), "1 2");
    assert_eq!(search(&mut c, "SEARCH BEFORE 1-Jan-2000"), "");
    let (small, large) = (m1.len().min(m2.len()), m1.len().max(m2.len()));
    let bigger = if m1.len() > m2.len() { "1" } else { "2" };
    let smaller = if m1.len() > m2.len() { "2" } else { "1" };
    assert_eq!(search(&mut c, &format!("SEARCH LARGER {small}")), bigger);
    assert_eq!(search(&mut c, &format!("SEARCH SMALLER {large}")), smaller);
    assert_eq!(search(&mut c, "SEARCH RECENT"), "1 2");
    assert_eq!(search(&mut c, "SEARCH NEW"), "1");
    assert_eq!(search(&mut c, "SEARCH OLD"), "");
    assert_eq!(search(&mut c, "SEARCH 2:*"), "2");
    assert_eq!(search(&mut c, "UID SEARCH UID 2"), "2");
    assert_eq!(search(&mut c, "UID SEARCH 1"), "1");
    // Non-ASCII in UTF-8, with a synchronizing literal: decoded headers and base64 bodies.
    for (key, word, want) in [
        ("SUBJECT", "привет", "1"),
        ("FROM", "Айгүль", "1"),
        ("BODY", "ВАЖНЫЙ", "1"),
    ] {
        let tag = c.tag();
        c.send(format!("{tag} SEARCH CHARSET UTF-8 {key} {{{}}}\r\n", word.len()).as_bytes());
        assert!(c.response().starts_with(b"+"));
        c.send(word.as_bytes());
        c.send(b"\r\n");
        let (u, t) = c.until_tagged(&tag);
        assert!(t.contains("OK"), "{t}");
        assert_eq!(text(&u[0]), format!("* SEARCH {want}"), "{key} {word}");
    }
    let (_, t) = c.cmd("SEARCH CHARSET KOI8-R ALL");
    assert!(t.contains("NO [BADCHARSET"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// Mailboxes.

#[test]
fn mailbox_management_and_status() {
    let srv = server(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("CREATE Projects/2024");
    c.ok("CREATE &BBIERQQ+BDQETwRJBDgENQ-");
    let u = c.ok("LIST \"\" *");
    assert!(
        any_contains(&u, "(\\HasChildren) \"/\" Projects"),
        "{}",
        dump(&u)
    );
    assert!(
        any_contains(&u, "(\\HasNoChildren) \"/\" Projects/2024"),
        "{}",
        dump(&u)
    );
    assert!(
        any_contains(&u, "\"/\" &BBIERQQ+BDQETwRJBDgENQ-"),
        "{}",
        dump(&u)
    );
    let u = c.ok("LIST \"\" %");
    assert!(!any_contains(&u, "Projects/2024"), "{}", dump(&u));
    let u = c.ok("LIST \"\" \"*\" RETURN (SPECIAL-USE)");
    assert!(any_contains(&u, "\\Sent) \"/\" Sent"), "{}", dump(&u));
    let u = c.ok("LIST (SPECIAL-USE) \"\" \"*\"");
    assert_eq!(u.len(), 5, "{}", dump(&u));
    let u = c.ok("LIST \"\" \"\"");
    assert_eq!(text(&u[0]), "* LIST (\\Noselect) \"/\" \"\"");
    let (_, t) = c.cmd("CREATE INBOX");
    assert!(t.contains("NO"), "{t}");
    let (_, t) = c.cmd("CREATE Projects");
    assert!(t.contains("NO [ALREADYEXISTS]"), "{t}");
    let (_, t) = c.cmd("DELETE Projects");
    assert!(t.contains("NO"), "{t}");
    c.ok("RENAME Projects Work");
    let u = c.ok("LIST \"\" Work*");
    assert_eq!(u.len(), 2, "{}", dump(&u));
    c.ok("DELETE Work/2024");
    c.ok("UNSUBSCRIBE Work");
    let u = c.ok("LSUB \"\" *");
    assert!(!any_contains(&u, "Work"), "{}", dump(&u));
    c.ok("SUBSCRIBE Work");
    let u = c.ok("LSUB \"\" W*");
    assert_eq!(text(&u[0]), "* LSUB () \"/\" Work");

    // STATUS, and RENAME INBOX (RFC 3501 §6.3.5: messages move, INBOX stays, empty).
    assert!(c
        .append("INBOX", "()", &simple_message("a", "x"))
        .contains("OK"));
    assert!(c
        .append("INBOX", "(\\Seen)", &simple_message("b", "x"))
        .contains("OK"));
    let u = c.ok("STATUS INBOX (MESSAGES RECENT UIDNEXT UNSEEN)");
    assert_eq!(
        text(&u[0]),
        "* STATUS INBOX (MESSAGES 2 RECENT 2 UIDNEXT 3 UNSEEN 1)"
    );
    c.ok("RENAME INBOX Old");
    let u = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(text(&u[0]), "* STATUS INBOX (MESSAGES 0)");
    let u = c.ok("STATUS Old (MESSAGES UNSEEN)");
    assert_eq!(text(&u[0]), "* STATUS Old (MESSAGES 2 UNSEEN 1)");
    let (_, t) = c.cmd("STATUS Nope (MESSAGES)");
    assert!(t.contains("NO [NONEXISTENT]"), "{t}");

    // EXAMINE is read-only: no \Seen from FETCH, STORE refused.
    let u = c.ok("EXAMINE Old");
    assert!(any_contains(&u, "PERMANENTFLAGS ()"), "{}", dump(&u));
    c.ok("FETCH 1 (BODY[TEXT])");
    let u = c.ok("FETCH 1 (FLAGS)");
    assert!(!any_contains(&u, "\\Seen"), "{}", dump(&u));
    let (_, t) = c.cmd("STORE 1 +FLAGS (\\Seen)");
    assert!(t.contains("NO"), "{t}");
    // CLOSE expunges silently; UNSELECT does not.
    c.ok("SELECT Old");
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    let u = c.ok("UNSELECT");
    assert!(u.is_empty(), "{}", dump(&u));
    c.ok("SELECT Old");
    let u = c.ok("CLOSE");
    assert!(!any_contains(&u, "EXPUNGE"), "{}", dump(&u));
    let u = c.ok("STATUS Old (MESSAGES)");
    assert_eq!(text(&u[0]), "* STATUS Old (MESSAGES 1)");

    // COPY keeps the source, UID EXPUNGE removes only what it names.
    c.ok("SELECT Old");
    let u = c.ok("UID COPY 2 Trash");
    assert!(u.is_empty());
    let (_, t) = c.cmd("UID COPY 2 Nowhere");
    assert!(t.contains("NO [TRYCREATE]"), "{t}");
    let (_, t) = c.cmd("UID COPY 2 Trash");
    assert!(t.contains("OK [COPYUID "), "{t}");
    c.ok("SELECT Trash");
    c.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)");
    let u = c.ok("UID EXPUNGE 2");
    assert_eq!(dump(&u), "* 2 EXPUNGE");
    let u = c.ok("NAMESPACE");
    assert_eq!(text(&u[0]), "* NAMESPACE ((\"\" \"/\")) NIL NIL");
    let u = c.ok("ID (\"name\" \"test\")");
    assert!(
        text(&u[0]).starts_with("* ID (\"name\" \"Tanba\""),
        "{}",
        dump(&u)
    );
}

// ---------------------------------------------------------------------------------------------
// Authentication.

#[test]
fn login_only_over_tls_and_authenticate_plain() {
    let srv = server(&[]);
    let cert = srv.cert_pem();
    let mut c = Imap::plain(srv.imap);
    assert!(c.greeting.contains("STARTTLS") && c.greeting.contains("LOGINDISABLED"));
    let (_, t) = c.cmd("LOGIN alice@example.test secret-alice");
    assert!(t.contains("NO [PRIVACYREQUIRED]"), "{t}");
    // A literal for a LOGIN that is not allowed gets no "+" (RFC 3501 §7.5).
    c.send(b"x1 LOGIN {18}\r\n");
    let r = text(&c.response());
    assert!(r.starts_with("x1 NO [PRIVACYREQUIRED]"), "{r}");
    let (_, t) = c.cmd("AUTHENTICATE PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQtYWxpY2U=");
    assert!(t.contains("NO"), "{t}");
    // STARTTLS: plaintext the client pipelines after it is dropped, never executed.
    c.send(b"s1 STARTTLS\r\ns2 LOGIN alice@example.test secret-alice\r\n");
    let r = text(&c.response());
    assert!(r.starts_with("s1 OK"), "{r}");
    c.buf.clear();
    c.stream.start_tls(&cert);
    let u = c.ok("CAPABILITY");
    assert!(any_contains(&u, "AUTH=PLAIN"), "{}", dump(&u));
    assert!(!any_contains(&u, "STARTTLS"), "{}", dump(&u));
    let (_, t) = c.cmd("SELECT INBOX");
    assert!(
        t.contains("BAD"),
        "the pipelined LOGIN must not have run: {t}"
    );
    let (_, t) = c.cmd("STARTTLS");
    assert!(t.contains("BAD"), "{t}");
    let (_, t) = c.cmd("LOGIN alice@example.test wrong");
    assert!(t.contains("NO [AUTHENTICATIONFAILED]"), "{t}");
    // AUTHENTICATE PLAIN without an initial response: "+ " then the credentials.
    let tag = c.tag();
    c.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes());
    assert_eq!(text(&c.response()), "+");
    c.send(b"AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQtYWxpY2U=\r\n");
    let (_, t) = c.until_tagged(&tag);
    assert!(t.starts_with(&format!("{tag} OK [CAPABILITY")), "{t}");
    let (_, t) = c.cmd("LOGIN alice@example.test secret-alice");
    assert!(t.contains("BAD"), "{t}");

    // SASL-IR on the implicit-TLS port; a cancelled exchange.
    let mut d = Imap::tls(srv.imaps, &cert);
    assert!(d.greeting.contains("AUTH=PLAIN") && !d.greeting.contains("LOGINDISABLED"));
    let tag = d.tag();
    d.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes());
    d.response();
    d.send(b"*\r\n");
    let (_, t) = d.until_tagged(&tag);
    assert!(t.contains("BAD"), "{t}");
    d.ok("AUTHENTICATE PLAIN AGJvYkBleGFtcGxlLnRlc3QAc2VjcmV0LWJvYi0x");
    let u = d.ok("LOGOUT");
    assert!(any_contains(&u, "* BYE"), "{}", dump(&u));
    assert!(d.closed());
}

// ---------------------------------------------------------------------------------------------
// Bad input.

#[test]
fn bad_input_gets_bad_and_the_session_goes_on() {
    let srv = server(&[("imap", "max_literal_size = 1000")]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    for (cmd, want) in [
        ("FROBNICATE", "BAD"),
        ("SELECT", "BAD"),
        ("FETCH 1 (FLAGS)", "BAD"),
        ("FETCH x (FLAGS)", "BAD"),
        ("SEARCH (", "BAD"),
        ("LIST (BOGUS) \"\" *", "BAD"),
        ("ENABLE", "BAD"),
        ("APPEND Nowhere {1+}\r\nx", "NO [TRYCREATE]"),
        ("STORE 1 +FLAGS (\\Bogus)", "BAD"),
    ] {
        let (_, t) = c.cmd(cmd);
        assert!(t.contains(want), "{cmd:?} -> {t}");
        c.ok("NOOP");
    }
    // No tag at all.
    c.send(b"\r\n");
    assert!(text(&c.response()).starts_with("* BAD"));
    c.send(b"* NOOP\r\n");
    assert!(text(&c.response()).starts_with("* BAD"));
    c.send(&[0xff, 0xfe, b' ', 0x00, b'\r', b'\n']);
    assert!(text(&c.response()).contains("BAD"));
    c.ok("NOOP");

    // A synchronizing literal over the limit: NO without "+", and the client just goes on.
    c.send(b"a1 APPEND INBOX {1001}\r\n");
    let r = text(&c.response());
    assert_eq!(
        r,
        "a1 NO [TOOBIG] Literal too large (the limit is 1000 bytes)"
    );
    c.ok("NOOP");
    // A non-synchronizing one: BAD at once, its bytes and the rest of the command are skipped.
    let mut big = b"a2 APPEND INBOX {1500+}\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'A', 1500));
    big.extend_from_slice(b" more {3+}\r\nabc\r\na3 NOOP\r\n");
    c.send(&big);
    assert_eq!(
        text(&c.response()),
        "a2 BAD [TOOBIG] Literal too large (the limit is 1000 bytes)"
    );
    assert_eq!(text(&c.response()), "a3 OK NOOP completed");
    // Within the limit: LITERAL+ works.
    let msg = simple_message("lp", "x");
    let mut cmd = format!("a4 APPEND INBOX {{{}+}}\r\n", msg.len()).into_bytes();
    cmd.extend_from_slice(&msg);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    assert!(text(&c.response()).starts_with("a4 OK [APPENDUID"));

    // An over-long line.
    let mut long = b"a5 SEARCH ".to_vec();
    long.extend(std::iter::repeat_n(b'1', 70_000));
    long.extend_from_slice(b"\r\n");
    c.send(&long);
    assert!(text(&c.response()).starts_with("a5 BAD Line too long"));
    c.ok("NOOP");
    // An empty APPEND, a literal in the middle of garbage.
    let (_, t) = c.cmd("APPEND INBOX {0+}\r\n");
    assert!(t.contains("NO"), "{t}");
    let (_, t) = c.cmd("NOOP {3+}\r\nabc");
    assert!(t.contains("BAD"), "{t}");
    c.ok("SELECT INBOX");
    let u = c.ok("FETCH 1 (FLAGS)");
    assert_eq!(u.len(), 1);
}

#[test]
fn autologout_after_the_idle_timeout() {
    let srv = server(&[("imap", "idle_timeout = \"1s\"")]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let start = Instant::now();
    let r = text(&c.response());
    assert_eq!(r, "* BYE Autologout; idle for too long");
    assert!(c.closed());
    assert!(start.elapsed() < Duration::from_secs(15));
    // Also while idling.
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("SELECT INBOX");
    c.send(b"i1 IDLE\r\n");
    assert!(c.response().starts_with(b"+"));
    assert_eq!(text(&c.response()), "* BYE Autologout; idle for too long");
}

#[test]
fn connection_limit_and_shutdown_during_idle() {
    let mut srv = server(&[("imap", "max_connections = 2")]);
    let mut a = Imap::login(&srv, "alice@example.test", "secret-alice");
    let _b = Imap::tls(srv.imaps, &srv.cert_pem());
    let mut third = Imap::raw(srv.imap);
    assert_eq!(
        text(&third.response()),
        "* BYE Too many connections, try again later"
    );
    a.ok("SELECT INBOX");
    a.send(b"i1 IDLE\r\n");
    assert!(a.response().starts_with(b"+"));
    drop(_b);
    assert_eq!(srv.stop(), Some(0));
    assert!(text(&a.response()).starts_with("* BYE Server shutting down"));
}

// ---------------------------------------------------------------------------------------------
// Durability.

#[test]
fn acknowledged_append_store_and_expunge_survive_kill_9() {
    let mut srv = server(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    for i in 0..3 {
        assert!(c
            .append("INBOX", "()", &simple_message(&format!("d{i}"), "x"))
            .contains("OK"));
    }
    c.ok("SELECT INBOX");
    c.ok("STORE 2 +FLAGS (\\Flagged)");
    c.ok("STORE 1 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
    c.ok("UID MOVE 3 Archive");
    srv.kill9();
    srv.restart();
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("SELECT INBOX");
    let u = c.ok("UID FETCH 1:* (FLAGS)");
    assert_eq!(dump(&u), "* 1 FETCH (UID 2 FLAGS (\\Flagged))");
    let u = c.ok("STATUS Archive (MESSAGES UIDNEXT)");
    assert_eq!(text(&u[0]), "* STATUS Archive (MESSAGES 1 UIDNEXT 2)");
    // UIDs are never reused, even after a crash.
    let t = c.append("INBOX", "()", &simple_message("after", "x"));
    assert!(t.contains(" 4] APPEND completed"), "{t}");
}

/// Random commands assembled from IMAP words: every one gets a tagged answer and the session
/// never drops (a panic in a handler would close the connection).
#[test]
fn random_commands_never_break_the_session() {
    let srv = server(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    assert!(c
        .append("INBOX", "(\\Seen)", SIGNED_MSG.as_bytes())
        .contains("OK"));
    let words = [
        "FETCH",
        "UID",
        "STORE",
        "SEARCH",
        "COPY",
        "MOVE",
        "SELECT",
        "EXAMINE",
        "LIST",
        "LSUB",
        "STATUS",
        "EXPUNGE",
        "CLOSE",
        "UNSELECT",
        "CREATE",
        "RENAME",
        "DELETE",
        "NOOP",
        "CHECK",
        "1",
        "2",
        "*",
        "1:*",
        "0",
        "4294967295",
        "3:2",
        "INBOX",
        "Trash",
        "\"\"",
        "\"*\"",
        "%",
        "(",
        ")",
        "BODY[]",
        "BODY.PEEK[1.2.MIME]",
        "BODY[HEADER.FIELDS (From)]",
        "BODY[2.1]<0.5>",
        "BODY[TEXT]<4294967295.4294967295>",
        "BODYSTRUCTURE",
        "ENVELOPE",
        "FLAGS",
        "+FLAGS",
        "-FLAGS.SILENT",
        "(\\Seen)",
        "(\\Deleted $X)",
        "ALL",
        "NOT",
        "OR",
        "FROM",
        "x",
        "HEADER",
        "SINCE",
        "1-Jan-2020",
        "CHARSET",
        "UTF-8",
        "RETURN",
        "(SPECIAL-USE)",
        "RFC822",
        "UID",
        "\\Recent",
        "[",
        "]",
        "<",
        ">",
        "~",
        "\"a\\\"b\"",
        "BODY[1.2.3.4.5.6.7.8.9.10.11.12]",
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed as usize
    };
    c.ok("SELECT INBOX");
    for i in 0..400 {
        // A command name (the first 19 words), then random arguments.
        let n = next() % 7;
        let mut cmd: Vec<&str> = vec![words[next() % 19]];
        cmd.extend((0..n).map(|_| words[next() % words.len()]));
        let cmd = cmd.join(" ");
        let (_, t) = c.cmd(&cmd);
        let kind = t.split(' ').nth(1).unwrap_or("");
        assert!(["OK", "NO", "BAD"].contains(&kind), "#{i} {cmd:?} -> {t}");
        // A good command now and then: 20 BAD answers in a row end the session
        // (docs/security.md, tests/it/imap_limits.rs).
        if i % 10 == 0 {
            c.ok("NOOP");
        }
    }
    let (_, t) = c.cmd("SELECT INBOX");
    assert!(t.contains("OK"), "{t}");
    c.ok("FETCH 1:* (FLAGS)");
}
