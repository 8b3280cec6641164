//! Issue 16's IMAP extensions over TLS against the real binary: QUOTA (with SMTP's 452/552),
//! COMPRESS=DEFLATE (zlib on the client side), BINARY, MULTIAPPEND, MOVE into the selected
//! mailbox.

use crate::imap::{text, Imap};
use crate::smtp::{server_with_users, Client as Smtp};
use crate::support::*;

/// A message of exactly `size` bytes (at least 20).
fn message(size: usize, fill: u8) -> Vec<u8> {
    let mut m = b"Subject: q\r\n\r\n".to_vec();
    m.resize(size - 2, fill);
    m.extend_from_slice(b"\r\n");
    m
}

fn texts(u: &[Vec<u8>]) -> Vec<String> {
    u.iter().map(|r| text(r)).collect()
}

fn quota_cli(srv: &TestServer, args: &[&str]) -> String {
    let mut a = vec!["user", "quota"];
    a.extend_from_slice(args);
    let out = srv.tanba(&a, None);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn quota_is_enforced_over_imap_and_smtp_and_usage_stays_exact() {
    let mut srv = server_with_users(&[]);
    let alice = "alice@example.test";
    // No limit: no quota root.
    let mut c = Imap::login(&srv, alice, "secret-alice");
    let caps = texts(&c.ok("CAPABILITY")).join(" ");
    assert!(
        caps.contains(" QUOTA ") && caps.contains("QUOTA=RES-STORAGE"),
        "{caps}"
    );
    assert_eq!(texts(&c.ok("GETQUOTAROOT INBOX")), ["* QUOTAROOT INBOX"]);

    let shown = quota_cli(&srv, &[alice, "4K"]);
    assert!(
        shown.contains("quota 4 KiB") && shown.contains("used 0 KiB"),
        "{shown}"
    );
    assert_eq!(
        texts(&c.ok("GETQUOTAROOT INBOX")),
        ["* QUOTAROOT INBOX \"\"", "* QUOTA \"\" (STORAGE 0 4)"]
    );
    // 3000 bytes fit; 2000 more do not (3000 + 2000 > 4096).
    let t = c.append("INBOX", "()", &message(3000, b'a'));
    assert!(t.contains("OK"), "{t}");
    let t = c.append("INBOX", "()", &message(2000, b'b'));
    assert!(t.contains("NO [OVERQUOTA]"), "{t}");
    assert_eq!(
        texts(&c.ok("GETQUOTA \"\"")),
        ["* QUOTA \"\" (STORAGE 3 4)"]
    );
    let (_, t) = c.cmd("SETQUOTA \"\" (STORAGE 100000)");
    assert!(t.contains(" NO "), "{t}");

    // SMTP: not full yet, so RCPT is taken; the message would exceed: 552 5.2.2 at the end.
    let mut m = Smtp::connect(srv.mx);
    m.ok("EHLO sender.example", "250");
    let r = m.send_mail("s@example.kz", &[alice], &message(2000, b'c'));
    assert_eq!(
        (r.code, r.text().starts_with("5.2.2")),
        (552, true),
        "{}",
        r.line()
    );
    // Bob, without a limit, still gets mail in the same session.
    m.send_mail_ok("s@example.kz", &["bob@example.test"], &message(2000, b'c'));
    // Exactly full (3000 + 1096 = 4096 bytes): RCPT now answers 452 4.2.2.
    let t = c.append("INBOX", "()", &message(1096, b'd'));
    assert!(t.contains("OK"), "{t}");
    m.ok("MAIL FROM:<s@example.kz>", "250");
    let r = m.cmd(&format!("RCPT TO:<{alice}>"));
    assert_eq!(
        (r.code, r.text().starts_with("4.2.2")),
        (452, true),
        "{}",
        r.line()
    );
    m.ok("RSET", "250");

    // Expunge the 3000-byte message: 1096 bytes are left, 2 KiB rounded up.
    c.ok("SELECT INBOX");
    // COPY adds usage too; MOVE does not (RFC 9208 §4.3 asks OVERQUOTA for both when they add).
    let (_, t) = c.cmd("UID COPY 2 Archive");
    assert!(t.contains("NO [OVERQUOTA]"), "{t}");
    c.ok("UID MOVE 2 Archive");
    c.ok("SELECT Archive");
    c.ok("UID MOVE 1 INBOX");
    c.ok("SELECT INBOX");
    c.ok("UID STORE 1 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(
        texts(&c.ok("GETQUOTA \"\"")),
        ["* QUOTA \"\" (STORAGE 2 4)"]
    );
    let shown = quota_cli(&srv, &[alice]);
    assert!(shown.contains("(1096 bytes) in 1 messages"), "{shown}");

    // Across a restart (kill -9 after the acknowledged changes).
    drop(c);
    srv.restart();
    let mut c = Imap::login(&srv, alice, "secret-alice");
    assert_eq!(
        texts(&c.ok("GETQUOTA \"\"")),
        ["* QUOTA \"\" (STORAGE 2 4)"]
    );
    let check = srv.tanba(&["store", "check"], None);
    assert!(check.status.success(), "{check:?}");
    // `none` lifts the limit: no quota root again, and the 2000 bytes fit.
    quota_cli(&srv, &[alice, "none"]);
    assert_eq!(texts(&c.ok("GETQUOTAROOT INBOX")), ["* QUOTAROOT INBOX"]);
    let t = c.append("INBOX", "()", &message(2000, b'b'));
    assert!(t.contains("OK"), "{t}");
    let shown = quota_cli(&srv, &[alice]);
    assert!(shown.contains("(3096 bytes) in 2 messages"), "{shown}");
}

#[test]
fn move_into_the_selected_mailbox_gives_a_new_uid() {
    let srv = server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    for fill in [b'a', b'b'] {
        let t = c.append("INBOX", "(\\Seen)", &message(100, fill));
        assert!(t.contains("OK"), "{t}");
    }
    let sel = texts(&c.ok("SELECT INBOX")).join("\n");
    let uv: String = sel
        .split("UIDVALIDITY ")
        .nth(1)
        .and_then(|s| s.split(']').next())
        .unwrap()
        .to_string();
    let u = texts(&c.ok("UID MOVE 1 INBOX"));
    // RFC 6851 §3.3/§4.3: COPYUID first, then EXPUNGE of the old and EXISTS of the new.
    assert_eq!(
        u[..3],
        [
            format!("* OK [COPYUID {uv} 1 3] Moved UIDs"),
            "* 1 EXPUNGE".to_string(),
            "* 2 EXISTS".to_string(),
        ]
    );
    let f = texts(&c.ok("FETCH 1:* (UID FLAGS BODY.PEEK[TEXT])"));
    assert_eq!(f.len(), 2, "{f:?}");
    assert!(f[0].starts_with("* 1 FETCH (UID 2 FLAGS (\\Seen"), "{f:?}");
    assert!(f[1].starts_with("* 2 FETCH (UID 3 FLAGS (\\Seen"), "{f:?}");
    assert!(f[1].contains("aaaa"), "{f:?}");
    let check = srv.tanba(&["store", "check"], None);
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn multiappend_stores_all_messages_with_appenduid() {
    let srv = server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let caps = texts(&c.ok("CAPABILITY")).join(" ");
    assert!(caps.contains("MULTIAPPEND"), "{caps}");
    let (m1, m2, m3) = (message(100, b'a'), message(200, b'b'), message(300, b'c'));
    let mut cmd = format!("m1 APPEND Archive (\\Seen) {{{}+}}\r\n", m1.len()).into_bytes();
    cmd.extend_from_slice(&m1);
    cmd.extend_from_slice(
        format!(
            " (\\Flagged) \"01-Feb-2020 10:00:00 +0000\" {{{}+}}\r\n",
            m2.len()
        )
        .as_bytes(),
    );
    cmd.extend_from_slice(&m2);
    cmd.extend_from_slice(format!(" {{{}+}}\r\n", m3.len()).as_bytes());
    cmd.extend_from_slice(&m3);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    let (_, t) = c.until_tagged("m1");
    let status = texts(&c.ok("STATUS Archive (UIDVALIDITY MESSAGES)")).join("");
    let uv = status
        .split("UIDVALIDITY ")
        .nth(1)
        .unwrap()
        .split([' ', ')'])
        .next()
        .unwrap()
        .to_string();
    assert_eq!(t, format!("m1 OK [APPENDUID {uv} 1:3] APPEND completed"));
    assert!(status.contains("MESSAGES 3"), "{status}");
    c.ok("EXAMINE Archive");
    let f = texts(&c.ok("FETCH 1:3 (FLAGS INTERNALDATE RFC822.SIZE)"));
    assert!(
        f[0].contains("FLAGS (\\Seen") && f[0].contains("RFC822.SIZE 100"),
        "{f:?}"
    );
    assert!(
        f[1].contains("\\Flagged") && f[1].contains("01-Feb-2020 10:00:00 +0000"),
        "{f:?}"
    );
    assert!(
        f[2].contains("FLAGS (\\Recent)") && f[2].contains("RFC822.SIZE 300"),
        "{f:?}"
    );
}

#[test]
fn multiappend_with_a_literal_too_big_stores_none() {
    let srv = server_with_users(&[("imap", "max_literal_size = 1000")]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let m1 = message(500, b'a');
    c.send(format!("m2 APPEND INBOX {{{}}}\r\n", m1.len()).as_bytes());
    assert!(text(&c.response()).starts_with('+'));
    c.send(&m1);
    // The second literal is announced over imap.max_literal_size: refused instead of `+`.
    c.send(b" {2000}\r\n");
    let r = text(&c.response());
    assert!(r.starts_with("m2 NO [TOOBIG]"), "{r}");
    let s = texts(&c.ok("STATUS INBOX (MESSAGES)")).join("");
    assert!(s.contains("MESSAGES 0"), "{s}");
    // The session goes on, and a MULTIAPPEND within the limits works.
    let m2 = message(600, b'b');
    let mut cmd = format!("m3 APPEND INBOX {{{}+}}\r\n", m1.len()).into_bytes();
    cmd.extend_from_slice(&m1);
    cmd.extend_from_slice(format!(" {{{}+}}\r\n", m2.len()).as_bytes());
    cmd.extend_from_slice(&m2);
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    let (_, t) = c.until_tagged("m3");
    assert!(t.starts_with("m3 OK [APPENDUID "), "{t}");
    let s = texts(&c.ok("STATUS INBOX (MESSAGES)")).join("");
    assert!(s.contains("MESSAGES 2"), "{s}");
}

#[test]
fn binary_fetch_decodes_base64_and_quoted_printable_parts() {
    let srv = server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let caps = texts(&c.ok("CAPABILITY")).join(" ");
    assert!(caps.contains(" BINARY"), "{caps}");
    let payload = b"hello\0world \xff\xfe binary";
    let b64 = crate::smtp::b64(payload);
    let msg = format!(
        "Subject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
         caf=C3=A9 =\r\nsoft\r\n\
         --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {b64}\r\n\
         --b\r\nContent-Type: application/x-thing\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\n\
         begin 644 x\r\n\
         --b--\r\n"
    );
    // APPEND with a literal8 (RFC 3516 §4.4).
    let tag = c.tag();
    c.send(format!("{tag} APPEND INBOX ~{{{}}}\r\n", msg.len()).as_bytes());
    assert!(text(&c.response()).starts_with('+'));
    c.send(msg.as_bytes());
    c.send(b"\r\n");
    let (_, t) = c.until_tagged(&tag);
    assert!(t.contains("OK"), "{t}");
    c.ok("SELECT INBOX");
    // The base64 part decoded: a literal8, since it holds a NUL.
    let u = c.ok("FETCH 1 (BINARY.PEEK[2] BINARY.SIZE[2])");
    let mut want = format!("* 1 FETCH (BINARY[2] ~{{{}}}\r\n", payload.len()).into_bytes();
    want.extend_from_slice(payload);
    want.extend_from_slice(format!(" BINARY.SIZE[2] {})\r\n", payload.len()).as_bytes());
    assert_eq!(u, [want], "{:?}", texts(&u));
    // Quoted-printable undone; a partial answers with its origin.
    let u = texts(&c.ok("FETCH 1 (BINARY.PEEK[1] BINARY.PEEK[2]<6.5>)"));
    assert_eq!(
        u,
        ["* 1 FETCH (BINARY[1] {10}\r\ncafé soft BINARY[2]<6> {5}\r\nworld)"]
    );
    // PEEK left \Seen alone; BINARY without PEEK sets it.
    let f = texts(&c.ok("FETCH 1 (FLAGS)"));
    assert!(!f[0].contains("\\Seen"), "{f:?}");
    c.ok("FETCH 1 (BINARY[2])");
    let f = texts(&c.ok("FETCH 1 (FLAGS)"));
    assert!(f[0].contains("\\Seen"), "{f:?}");
    // An encoding we do not know: NO [UNKNOWN-CTE].
    let (_, t) = c.cmd("FETCH 1 (BINARY.PEEK[3])");
    assert!(t.contains("NO [UNKNOWN-CTE]"), "{t}");
}

/// A raw IMAPS client in Python that turns on COMPRESS=DEFLATE with zlib on its side (raw
/// deflate, `wbits=-15`), runs a command and a FETCH through it, then sends a deflate bomb: a
/// 256 MiB line of `a` (about 250 KiB compressed) and a NOOP. Prints what it saw.
const PY_COMPRESS: &str = r#"
import socket, ssl, sys, zlib
port, cafile, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port)))
buf = b''
def line_plain():
    global buf
    while b'\r\n' not in buf:
        d = s.recv(65536)
        if not d: raise SystemExit('FAILED: closed')
        buf += d
    l, buf = buf.split(b'\r\n', 1)
    return l
def check(cond, what):
    if not cond: raise SystemExit('FAILED: ' + what)
def hwm():
    for l in open('/proc/%s/status' % pid):
        if l.startswith('VmHWM:'): return int(l.split()[1])
line_plain()
s.sendall(b'a LOGIN alice@example.test secret-alice\r\n')
while not line_plain().startswith(b'a OK'): pass
s.sendall(b'b COMPRESS DEFLATE\r\n')
l = line_plain()
check(l.startswith(b'b OK'), 'COMPRESS answered %r' % l)
check(buf == b'', 'uncompressed bytes after the OK')
comp = zlib.compressobj(6, zlib.DEFLATED, -15)
dec = zlib.decompressobj(-15)
def send(data):
    s.sendall(comp.compress(data) + comp.flush(zlib.Z_SYNC_FLUSH))
def until(tag):
    global buf
    out = []
    while True:
        while b'\r\n' not in buf:
            d = s.recv(65536)
            if not d: raise SystemExit('FAILED: closed while waiting for %r' % tag)
            buf += dec.decompress(d)
        l, buf = buf.split(b'\r\n', 1)
        out.append(l)
        if l.startswith(tag + b' '): return out
send(b'c SELECT INBOX\r\n')
r = until(b'c')
check(r[-1].startswith(b'c OK'), 'SELECT %r' % r)
check(any(x == b'* 1 EXISTS' for x in r), 'EXISTS in %r' % r)
send(b'd FETCH 1 (BODY.PEEK[TEXT])\r\n')
r = until(b'd')
check(r[-1].startswith(b'd OK'), 'FETCH %r' % r)
check(b'compressed body' in buf or any(b'compressed body' in x for x in r), 'FETCH data %r' % r)
# A second COMPRESS is refused.
send(b'e COMPRESS DEFLATE\r\n')
r = until(b'e')
check(r[-1].startswith(b'e NO [COMPRESSIONACTIVE]'), 'second COMPRESS %r' % r)
# The bomb: 256 MiB of one line, sent compressed in 1 MiB pieces.
before = hwm()
chunk = comp.compress(b'f NOOP ' + b'a' * (1 << 20))
s.sendall(chunk)
piece = b'a' * (1 << 20)
sent = len(chunk)
for i in range(255):
    c = comp.compress(piece)
    sent += len(c)
    s.sendall(c)
tail = comp.compress(b'\r\ng NOOP\r\n') + comp.flush(zlib.Z_SYNC_FLUSH)
sent += len(tail)
s.sendall(tail)
r = until(b'g')
check(any(x.startswith(b'f BAD') and b'Line too long' in x for x in r), 'bomb answered %r' % r)
check(r[-1].startswith(b'g OK'), 'after the bomb %r' % r)
grew = hwm() - before
check(sent < 2 << 20, 'the bomb was %d bytes compressed' % sent)
check(grew < 64 * 1024, 'server peak memory grew by %d KiB' % grew)
print('ok', sent, grew)
"#;

#[test]
fn compress_deflate_with_zlib_and_a_bomb_refused() {
    let srv = server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let caps = texts(&c.ok("CAPABILITY")).join(" ");
    assert!(caps.contains("COMPRESS=DEFLATE"), "{caps}");
    let t = c.append("INBOX", "()", b"Subject: z\r\n\r\ncompressed body\r\n");
    assert!(t.contains("OK"), "{t}");
    let pid = srv.pid().expect("server pid").to_string();
    let out = python(
        PY_COMPRESS,
        &[
            &srv.imaps.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
            &pid,
        ],
    );
    assert!(out.starts_with("ok "), "{out}");
    eprintln!("compressed bomb bytes, server peak growth in KiB: {out}");
}

#[test]
fn default_quota_applies_to_new_accounts() {
    let srv = TestServer::start_with(&[("limits", "default_quota = \"1M\"")]);
    srv.add_user("carol@example.test", "secret-carol");
    let shown = quota_cli(&srv, &["carol@example.test"]);
    assert!(shown.contains("quota 1024 KiB"), "{shown}");
    let mut c = Imap::login(&srv, "carol@example.test", "secret-carol");
    assert_eq!(
        texts(&c.ok("GETQUOTAROOT INBOX")),
        ["* QUOTAROOT INBOX \"\"", "* QUOTA \"\" (STORAGE 0 1024)"]
    );
}
