//! Issue 11, finding 1: hostile MIME structure. A body of `Content-Type: message/rfc822` repeated
//! 40,000 times used to abort the whole process (stack overflow inside mail-parser), over SMTP, on
//! every SEARCH after an APPEND (again after each restart), and in `tanba verify` / `stamp`.
//! Now such a message is stored stamped `permerror` with the reason, IMAP serves it, and the CLI
//! reports it; deep multipart nesting and huge part counts get the same treatment.

use std::process::Command;

use super::imap::{text, Imap};
use super::smtp::{server_with_users, Client};
use super::support::mail::{header, header_fields};
use super::support::{run, TestServer, BIN};

/// Finding 1: a message/rfc822 chain 40,000 levels deep (1.3 MB).
fn rfc822_chain() -> Vec<u8> {
    let mut m =
        b"From: attacker@example.kz\r\nTo: alice@example.test\r\nSubject: deep\r\n".to_vec();
    for _ in 0..40_000 {
        m.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
    }
    m.extend_from_slice(b"Subject: bottom\r\n\r\nhaystack needle\r\n");
    m
}

/// Multipart containers nested 5,000 deep.
fn multipart_chain() -> Vec<u8> {
    let mut m =
        b"From: attacker@example.kz\r\nTo: alice@example.test\r\nSubject: deep mp\r\n".to_vec();
    for i in 0..5_000 {
        m.extend_from_slice(
            format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n").as_bytes(),
        );
    }
    m.extend_from_slice(b"Content-Type: text/plain\r\n\r\nhaystack needle\r\n");
    m
}

/// One multipart with 100,000 parts.
fn many_parts() -> Vec<u8> {
    let mut m = b"From: attacker@example.kz\r\nTo: alice@example.test\r\nSubject: wide\r\n\
Content-Type: multipart/mixed; boundary=x\r\n\r\n"
        .to_vec();
    for _ in 0..100_000 {
        m.extend_from_slice(b"--x\r\n\r\na\r\n");
    }
    m.extend_from_slice(b"--x\r\n\r\nhaystack needle\r\n--x--\r\n");
    m
}

/// Sends `msg` to alice over MX and asserts the 250.
fn deliver(srv: &TestServer, msg: &[u8]) {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let r = c.send_mail("attacker@example.kz", &["alice@example.test"], msg);
    assert_eq!(r.code, 250, "{}\n{}", r.line(), srv.log());
    c.ok("QUIT", "221");
}

/// The server still answers a new client on SMTP and IMAP.
fn still_alive(srv: &TestServer) {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO other.example", "250");
    c.ok("QUIT", "221");
    let mut i = Imap::login(srv, "alice@example.test", "secret-alice");
    i.ok("NOOP");
    i.ok("LOGOUT");
}

/// The header fields of message `uid` in alice's INBOX, over IMAP.
fn stored_header(srv: &TestServer, uid: u32) -> Vec<(String, String)> {
    let mut i = Imap::login(srv, "alice@example.test", "secret-alice");
    i.ok("SELECT INBOX");
    let u = i.ok(&format!("UID FETCH {uid} BODY.PEEK[HEADER]"));
    let r = u
        .iter()
        .find(|r| r.starts_with(b"* ") && r.windows(5).any(|w| w == b"FETCH"))
        .expect("FETCH response");
    header_fields(&super::imap::literal_of(r))
}

/// What IMAP does with a hostile message in INBOX at `uid`: SEARCH TEXT/BODY finish with a tagged
/// OK and find the word in its raw body; BODYSTRUCTURE is served (cut at the nesting limit).
fn imap_serves(srv: &TestServer, uid: u32) {
    let mut i = Imap::login(srv, "alice@example.test", "secret-alice");
    i.ok("SELECT INBOX");
    // (key, whether the message must match: None for "either")
    for (key, want) in [
        ("TEXT x", None),
        ("BODY x", None),
        ("TEXT needle", Some(true)),
        ("BODY needle", Some(true)),
        ("BODY zqjv", Some(false)),
    ] {
        let (u, t) = i.cmd(&format!("UID SEARCH {key}"));
        assert!(t.contains(" OK "), "SEARCH {key}: {t}\n{}", srv.log());
        let hits = u
            .iter()
            .map(|r| text(r))
            .find(|l| l.starts_with("* SEARCH"))
            .unwrap_or_default();
        let found = hits
            .split_whitespace()
            .skip(2)
            .any(|n| n == uid.to_string());
        if let Some(want) = want {
            assert_eq!(found, want, "SEARCH {key}: {hits}");
        }
    }
    let (u, t) = i.cmd(&format!("UID FETCH {uid} BODYSTRUCTURE"));
    assert!(t.contains(" OK "), "FETCH BODYSTRUCTURE: {t}");
    assert!(
        u.iter().any(|r| text(r).contains("BODYSTRUCTURE (")),
        "{:?}",
        u.iter().map(|r| text(r)).collect::<Vec<_>>()
    );
    i.ok("LOGOUT");
}

/// `tanba verify` and `tanba stamp` on `msg`: verify exits 1 (permerror, the reason printed),
/// stamp exits 0 and prints the message stamped permerror; neither is killed by a signal.
fn cli_reports_permerror(srv: &TestServer, msg: &[u8], reason: &str) {
    let file = srv.dir.path().join("hostile.eml");
    std::fs::write(&file, msg).unwrap();
    let trust = srv.dir.path().join("trust");
    let mut cmd = Command::new(BIN);
    cmd.arg("verify").arg("--trust").arg(&trust).arg(&file);
    let out = run(cmd, None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("PERMERROR"), "{stdout}");
    assert!(stdout.contains(reason), "{stdout}");
    let mut cmd = Command::new(BIN);
    cmd.arg("stamp").arg("--trust").arg(&trust).arg(&file);
    let out = run(cmd, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stamp: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.ends_with(msg), "stamp changed the message body");
    let f = header_fields(&out.stdout);
    assert_eq!(
        header(&f, "X-EDS-Status"),
        Some("permerror; signers=0; valid=0")
    );
    let ar = unfolded(&f, "Authentication-Results");
    assert!(
        ar.contains("smime=permerror") && ar.contains(reason),
        "{ar}"
    );
}

/// Over MX: 250, the server keeps answering, the stored copy says permerror and why.
fn mx_then_imap(srv: &TestServer, msg: &[u8], uid: u32, reason: &str) {
    deliver(srv, msg);
    still_alive(srv);
    let f = stored_header(srv, uid);
    assert_eq!(
        header(&f, "X-EDS-Status"),
        Some("permerror; signers=0; valid=0"),
        "{f:?}"
    );
    let ar = unfolded(&f, "Authentication-Results");
    assert!(
        ar.contains("smime=permerror") && ar.contains(reason),
        "{ar}"
    );
    imap_serves(srv, uid);
}

/// A header field's value with its folding removed.
/// `msg` over MX (UID 1), appended over IMAP (UID 2) and given to `tanba verify`/`stamp`:
/// each path takes it and reports `reason`.
fn every_path_reports(msg: &[u8], reason: &str) {
    let srv = server_with_users(&[]);
    mx_then_imap(&srv, msg, 1, reason);
    let mut i = Imap::login(&srv, "alice@example.test", "secret-alice");
    assert!(i.append("INBOX", "()", msg).contains(" OK "));
    i.ok("LOGOUT");
    imap_serves(&srv, 2);
    cli_reports_permerror(&srv, msg, reason);
}

fn unfolded(f: &[(String, String)], name: &str) -> String {
    header(f, name).unwrap_or_default().replace("\r\n", "")
}

const TOO_DEEP: &str = "MIME nesting is too deep";
const TOO_MANY: &str = "too many MIME parts";

#[test]
fn finding_1_rfc822_chain_over_mx_is_stored_permerror() {
    let srv = server_with_users(&[]);
    mx_then_imap(&srv, &rfc822_chain(), 1, TOO_DEEP);
}

#[test]
fn finding_1_rfc822_chain_appended_then_searched_survives_restart() {
    let mut srv = server_with_users(&[]);
    let msg = rfc822_chain();
    let mut i = Imap::login(&srv, "alice@example.test", "secret-alice");
    let t = i.append("INBOX", "()", &msg);
    assert!(t.contains(" OK "), "{t}");
    i.ok("LOGOUT");
    imap_serves(&srv, 1);
    still_alive(&srv);
    // The poison pill used to crash the server again on the first SEARCH after each restart.
    srv.restart();
    imap_serves(&srv, 1);
    still_alive(&srv);
}

#[test]
fn finding_1_rfc822_chain_verify_and_stamp_report_permerror() {
    let srv = TestServer::start();
    cli_reports_permerror(&srv, &rfc822_chain(), TOO_DEEP);
}

#[test]
fn finding_1_deep_multipart_nesting() {
    every_path_reports(&multipart_chain(), TOO_DEEP);
}

#[test]
fn finding_1_many_parts() {
    every_path_reports(&many_parts(), TOO_MANY);
}
