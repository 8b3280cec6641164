//! Connection limits per client address and per pool, refusals on implicit-TLS ports, the
//! submission login timeout, and `tanba user del` / `user passwd` ending live sessions (issue 11,
//! findings 4 and 10; SPEC §8). Clients on 127.0.0.2, 127.0.0.3, ... emulate different machines.

use std::io::Read;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::imap::{text, Imap};
use crate::smtp::{b64, server_with_users, Client};
use crate::support::tls::{tcp_from, tls_config, Stream};
use crate::support::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// SMTP from `from`, nothing read yet.
fn smtp_raw(addr: std::net::SocketAddr, from: IpAddr) -> Client {
    Client::from_stream(Stream::connect_from(addr, from))
}

/// SMTP from `from`, greeted.
fn smtp(addr: std::net::SocketAddr, from: IpAddr) -> Client {
    let mut c = smtp_raw(addr, from);
    assert_eq!(c.reply().line(), "220 mail.example.test ESMTP Tanba");
    c
}

/// Submission over implicit TLS (465) from `from`, greeted.
fn smtps(srv: &TestServer, from: IpAddr) -> Client {
    let mut s = Stream::connect_from(srv.submissions, from);
    s.start_tls(&srv.cert_pem());
    let mut c = Client::from_stream(s);
    assert_eq!(c.reply().line(), "220 mail.example.test ESMTP Tanba");
    c
}

/// IMAP on the plaintext port from `from`: the first response (greeting or refusal).
fn imap_raw(addr: std::net::SocketAddr, from: IpAddr) -> (Imap, String) {
    let mut c = Imap::from_stream(Stream::connect_from(addr, from));
    let first = text(&c.response());
    (c, first)
}

fn imap(addr: std::net::SocketAddr, from: IpAddr) -> Imap {
    let (c, g) = imap_raw(addr, from);
    assert!(g.starts_with("* OK"), "{g}");
    c
}

/// IMAP over implicit TLS (993) from `from`, greeted.
fn imaps(srv: &TestServer, from: IpAddr) -> Imap {
    let mut s = Stream::connect_from(srv.imaps, from);
    s.start_tls(&srv.cert_pem());
    let mut c = Imap::from_stream(s);
    let g = text(&c.response());
    assert!(g.starts_with("* OK"), "{g}");
    c
}

fn imaps_login(srv: &TestServer, from: IpAddr, user: &str, password: &str) -> Imap {
    let mut c = imaps(srv, from);
    c.ok(&format!("LOGIN {user} {password}"));
    c
}

/// Retries `f` (a new connection each time) until it is accepted: a slot is given back when the
/// server notices a client left, which takes a moment.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn finding4_one_address_cannot_take_every_mx_slot() {
    let srv = server_with_users(&[("limits", "mx_per_ip = 3")]);
    let a = ip("127.0.0.2");
    let mut held: Vec<Client> = (0..3).map(|_| smtp(srv.mx, a)).collect();
    let mut extra = smtp_raw(srv.mx, a);
    assert_eq!(
        extra.reply().line(),
        "421 4.7.0 Too many connections from your address, try again later"
    );
    assert!(extra.closed());
    // Another address still gets in and can deliver.
    let mut other = smtp(srv.mx, ip("127.0.0.3"));
    other.ok("EHLO other.example", "250");
    other.send_mail_ok(
        "someone@sender.example",
        &["alice@example.test"],
        b"Subject: from another address\r\n\r\nhi\r\n",
    );
    // The count comes back when a session ends.
    held.pop().unwrap().ok("QUIT", "221");
    eventually("a slot for 127.0.0.2 after QUIT", || {
        smtp_raw(srv.mx, a).reply().code == 220
    });
}

#[test]
fn finding4_a_full_mx_pool_does_not_lock_out_submission_or_imap() {
    let srv = server_with_users(&[("smtp", "max_connections = 3")]);
    let mx: Vec<Client> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|a| smtp(srv.mx, ip(a)))
        .collect();
    let mut refused = smtp_raw(srv.mx, ip("127.0.0.5"));
    assert_eq!(
        refused.reply().line(),
        "421 4.7.0 Too many connections, try again later"
    );
    assert!(refused.closed());
    // Submission on both ports and IMAP are separate pools.
    let from = ip("127.0.0.5");
    let mut sub = smtp(srv.submission, from);
    sub.ok("EHLO client.example", "250");
    sub.starttls(&srv.cert_pem());
    sub.login("alice@example.test", "secret-alice");
    let mut subs = smtps(&srv, from);
    subs.login("alice@example.test", "secret-alice");
    subs.send_mail_ok(
        "alice@example.test",
        &["bob@example.test"],
        b"Subject: while MX is full\r\n\r\nhi\r\n",
    );
    let mut i = imaps_login(&srv, from, "bob@example.test", "secret-bob-1");
    i.ok("SELECT INBOX");
    drop(mx);
}

#[test]
fn finding4_unauthenticated_connections_per_address_imap_and_submission_together() {
    let srv = server_with_users(&[("limits", "unauthenticated_per_ip = 3")]);
    let a = ip("127.0.0.2");
    let mut idle = vec![imap(srv.imap, a), imap(srv.imap, a)];
    let _sub = smtp(srv.submission, a);
    // The fourth connection not logged in from 127.0.0.2 is refused, whatever its protocol.
    let (mut c, first) = imap_raw(srv.imap, a);
    assert_eq!(
        first,
        "* BYE Too many connections from your address, try again later"
    );
    assert!(c.closed());
    let mut s = smtp_raw(srv.submission, a);
    assert_eq!(
        s.reply().line(),
        "421 4.7.0 Too many connections from your address, try again later"
    );
    // MX is not counted here.
    let _mx = smtp(srv.mx, a);
    // Another address logs in meanwhile.
    let mut other = imaps_login(&srv, ip("127.0.0.3"), "alice@example.test", "secret-alice");
    other.ok("SELECT INBOX");
    // A connection that ends gives its place back.
    idle.remove(0).ok("LOGOUT");
    eventually("a slot for 127.0.0.2 after one connection left", || {
        let (_c, g) = imap_raw(srv.imap, a);
        g.starts_with("* OK")
    });
}

#[test]
fn finding4_login_moves_a_connection_out_of_the_unauthenticated_count() {
    let srv = server_with_users(&[("limits", "unauthenticated_per_ip = 2")]);
    let a = ip("127.0.0.2");
    let mut one = imaps(&srv, a);
    let _two = imaps(&srv, a);
    let (_c, first) = imap_raw(srv.imap, a);
    assert!(first.starts_with("* BYE"), "{first}");
    // After LOGIN the connection counts as alice's session, no longer as unauthenticated.
    one.ok("LOGIN alice@example.test secret-alice");
    let _three = imap(srv.imap, a);
}

/// The first bytes the server sends on an implicit-TLS port after our ClientHello: they must
/// be a TLS record (or nothing), never plaintext. Returns what arrived inside TLS, if anything.
fn refused_over_tls(srv: &TestServer, addr: std::net::SocketAddr, from: IpAddr) -> String {
    let mut tcp = tcp_from(addr, from);
    let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
    let mut conn = rustls::ClientConnection::new(tls_config(&srv.cert_pem()), name).unwrap();
    while conn.wants_write() {
        conn.write_tls(&mut tcp).unwrap();
    }
    let mut first = vec![0u8; 4096];
    let n = match tcp.read(&mut first) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
        Err(e) => panic!("reading the first bytes: {e}"),
    };
    first.truncate(n);
    assert!(
        !first.starts_with(b"* BYE") && !first.starts_with(b"421"),
        "plaintext refusal on an implicit-TLS port: {:?}",
        String::from_utf8_lossy(&first)
    );
    if n == 0 {
        return String::new();
    }
    // 0x16: a TLS handshake record (RFC 8446 §5.1 ContentType handshake).
    assert_eq!(first[0], 0x16, "not a TLS record: {first:?}");
    conn.read_tls(&mut first.as_slice()).unwrap();
    conn.process_new_packets().unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn finding4_refusals_on_implicit_tls_ports_are_never_plaintext() {
    let srv = server_with_users(&[
        ("limits", "unauthenticated_per_ip = 1"),
        ("imap", "max_connections = 2"),
    ]);
    let a = ip("127.0.0.2");
    let _held = imap(srv.imap, a);
    // Per address, on 993 and 465: the refusal comes inside TLS.
    let got = refused_over_tls(&srv, srv.imaps, a);
    assert_eq!(
        got,
        "* BYE Too many connections from your address, try again later\r\n"
    );
    let got = refused_over_tls(&srv, srv.submissions, a);
    assert_eq!(
        got,
        "421 4.7.0 Too many connections from your address, try again later\r\n"
    );
    // A full pool on 993: the same, inside TLS.
    let _b = imap(srv.imap, ip("127.0.0.3"));
    let got = refused_over_tls(&srv, srv.imaps, ip("127.0.0.4"));
    assert_eq!(got, "* BYE Too many connections, try again later\r\n");
    // The plaintext port still answers in plaintext.
    let (_c, first) = imap_raw(srv.imap, ip("127.0.0.4"));
    assert_eq!(first, "* BYE Too many connections, try again later");
}

#[test]
fn finding4_sessions_per_account_and_address() {
    let srv = server_with_users(&[("limits", "sessions_per_user_ip = 2")]);
    let a = ip("127.0.0.2");
    let mut first = imaps_login(&srv, a, "alice@example.test", "secret-alice");
    let _second = imaps_login(&srv, a, "alice@example.test", "secret-alice");
    // The third LOGIN of alice from 127.0.0.2: NO [LIMIT] (RFC 5530), the session stays usable.
    let mut third = imaps(&srv, a);
    let (_, t) = third.cmd("LOGIN alice@example.test secret-alice");
    assert!(t.contains(" NO [LIMIT]"), "{t}");
    third.ok("CAPABILITY");
    // Another account from the same address, and alice from another address, are fine.
    third.ok("LOGIN bob@example.test secret-bob-1");
    let _other = imaps_login(&srv, ip("127.0.0.3"), "alice@example.test", "secret-alice");
    // Once one of alice's sessions ends, she may log in again from 127.0.0.2.
    first.ok("LOGOUT");
    drop(first);
    eventually("alice logs in again after a LOGOUT", || {
        let mut c = imaps(&srv, a);
        let (_, t) = c.cmd("LOGIN alice@example.test secret-alice");
        t.contains(" OK")
    });
}

#[test]
fn finding4_submission_login_timeout() {
    let srv = server_with_users(&[("limits", "login_timeout = \"2s\"")]);
    let a = ip("127.0.0.2");
    // 587 after EHLO, and 465 before anything.
    let mut plain = smtp(srv.submission, a);
    plain.ok("EHLO client.example", "250");
    let mut tls = smtps(&srv, a);
    // Logged in in time: not affected.
    let mut user = smtps(&srv, a);
    user.login("alice@example.test", "secret-alice");
    for c in [&mut plain, &mut tls] {
        assert_eq!(
            c.reply().line(),
            "421 4.4.2 Login timeout, closing connection"
        );
        assert!(c.closed());
    }
    user.ok("NOOP", "250");
    // MX has no login: not affected either.
    let mut mx = smtp(srv.mx, a);
    std::thread::sleep(Duration::from_millis(2500));
    mx.ok("EHLO mx.example", "250");
    user.ok("NOOP", "250");
}

/// `* OK [UIDVALIDITY n]` of a SELECT, or `UIDVALIDITY n` of a STATUS: the mailbox's store id
/// (store/mailbox.rs derives UIDVALIDITY from it).
fn uidvalidity(resps: &[Vec<u8>]) -> u64 {
    for r in resps {
        let t = text(r);
        if let Some(i) = t.find("UIDVALIDITY ") {
            let digits: String = t[i + 12..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            return digits.parse().unwrap();
        }
    }
    panic!(
        "no UIDVALIDITY in {:?}",
        resps.iter().map(|r| text(r)).collect::<Vec<_>>()
    );
}

/// bob over IMAP (one session selected, one idling) and over submission (authenticated, in a
/// transaction). Returns them and the store ids of his INBOX and of a mailbox he created.
fn bobs_sessions(srv: &TestServer) -> (Imap, Imap, Client, Vec<u64>) {
    let a = ip("127.0.0.2");
    let mut plain = imaps_login(srv, a, "bob@example.test", "secret-bob-1");
    plain.ok("CREATE Projects");
    let t = plain.append("Projects", "()", b"Subject: kept\r\n\r\nhello\r\n");
    assert!(t.contains(" OK"), "{t}");
    let projects = uidvalidity(&plain.ok("STATUS Projects (UIDVALIDITY)"));
    let inbox = uidvalidity(&plain.ok("SELECT INBOX"));
    let mut idle = imaps_login(srv, ip("127.0.0.3"), "bob@example.test", "secret-bob-1");
    idle.ok("SELECT INBOX");
    idle.send(b"i1 IDLE\r\n");
    assert!(idle.response().starts_with(b"+"));
    let mut smtp = smtps(srv, a);
    smtp.login("bob@example.test", "secret-bob-1");
    smtp.ok("MAIL FROM:<bob@example.test>", "250");
    (plain, idle, smtp, vec![inbox, projects])
}

fn assert_ended(plain: &mut Imap, idle: &mut Imap, smtp: &mut Client) {
    let bye = "* BYE Account changed by the administrator";
    assert_eq!(text(&idle.response()), bye);
    assert!(idle.closed());
    assert_eq!(text(&plain.response()), bye);
    assert!(plain.closed());
    assert_eq!(
        smtp.reply().line(),
        "421 4.7.0 Account changed by the administrator, closing connection"
    );
    assert!(smtp.closed());
}

#[test]
fn finding10_user_del_ends_the_accounts_sessions_and_leaves_nothing() {
    let mut srv = server_with_users(&[]);
    let (mut plain, mut idle, mut smtp, boxes) = bobs_sessions(&srv);
    let mut alice = imaps_login(&srv, ip("127.0.0.2"), "alice@example.test", "secret-alice");
    let out = srv.tanba(&["user", "del", "bob@example.test"], None);
    assert!(out.status.success(), "{out:?}");
    assert_ended(&mut plain, &mut idle, &mut smtp);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ended 3 live sessions"),
        "{out:?}"
    );
    // Other accounts are not touched; bob cannot log in any more.
    alice.ok("SELECT INBOX");
    let mut c = imaps(&srv, ip("127.0.0.2"));
    let (_, t) = c.cmd("LOGIN bob@example.test secret-bob-1");
    assert!(t.contains(" NO "), "{t}");
    drop((alice, c));
    // Nothing of bob's is left in the store.
    assert_eq!(srv.stop(), Some(0));
    let store = srv.open_store();
    for id in boxes {
        assert!(store.mailbox_by_id(id).unwrap().is_none(), "mailbox {id}");
        assert!(store.messages(id).unwrap().is_empty(), "messages of {id}");
    }
    assert!(store.account("bob@example.test").unwrap().is_none());
}

#[test]
fn finding10_user_passwd_ends_the_accounts_sessions_and_the_new_password_works() {
    let srv = server_with_users(&[]);
    let (mut plain, mut idle, mut smtp, _) = bobs_sessions(&srv);
    let out = srv.tanba(
        &["user", "passwd", "bob@example.test", "--password-stdin"],
        Some("a-new-long-password\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert_ended(&mut plain, &mut idle, &mut smtp);
    // The old password no longer works, the new one does, over IMAP and SMTP.
    let mut c = imaps(&srv, ip("127.0.0.2"));
    let (_, t) = c.cmd("LOGIN bob@example.test secret-bob-1");
    assert!(t.contains(" NO "), "{t}");
    c.ok("LOGIN bob@example.test a-new-long-password");
    c.ok("SELECT Projects");
    let mut s = smtps(&srv, ip("127.0.0.2"));
    s.ok("EHLO client.example", "250");
    let creds = b64(b"\0bob@example.test\0a-new-long-password");
    s.ok(&format!("AUTH PLAIN {creds}"), "235");
    s.send_mail_ok(
        "bob@example.test",
        &["alice@example.test"],
        b"Subject: after passwd\r\n\r\nhi\r\n",
    );
    s.ok("QUIT", "221");
}
