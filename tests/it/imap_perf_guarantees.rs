//! Issue 16: what the IMAP paths promise after the speed work (docs/imap.md, "Durability per
//! command"). STORE and EXPUNGE stay durable at their OK (it is cheap: figures in
//! docs/benchmarks.md); the implicit `\Seen` of FETCH is not waited for but rides the next group
//! commit, which CHECK and LOGOUT wait for. Each test kills the server with SIGKILL right after
//! the acknowledgement and reads the store back after a restart.

use crate::imap::{text, Imap};
use crate::support::TestServer;

const USER: &str = "alice@example.test";
const PASSWORD: &str = "secret-alice-pw";
const SESSIONS: usize = 4;
const PER_SESSION: usize = 5;

fn server_with_messages(n: usize) -> TestServer {
    let srv = TestServer::start();
    srv.add_user(USER, PASSWORD);
    let mut c = Imap::login(&srv, USER, PASSWORD);
    for i in 0..n {
        let t = c.append(
            "INBOX",
            "()",
            format!("Subject: m{i}\r\n\r\nbody {i}\r\n").as_bytes(),
        );
        assert!(t.contains("OK"), "{t}");
    }
    c.ok("LOGOUT");
    srv
}

/// `UID FETCH 1:* (FLAGS)` after a restart: (uid, flags line) per message.
fn flags_after_restart(srv: &mut TestServer) -> Vec<(u32, String)> {
    srv.restart();
    let mut c = Imap::login(srv, USER, PASSWORD);
    c.ok("SELECT INBOX");
    let out = c
        .ok("UID FETCH 1:* (FLAGS)")
        .iter()
        .map(|r| text(r))
        .map(|l| {
            let uid = l
                .split("UID ")
                .nth(1)
                .and_then(|s| s.split([' ', ')']).next())
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no UID in {l}"));
            (uid, l)
        })
        .collect();
    c.ok("LOGOUT");
    out
}

#[test]
fn flag_changes_and_expunges_are_on_disk_at_their_ok() {
    // Concurrent sessions, no barrier: the last OK is followed by kill -9 at once.
    let mut srv = server_with_messages(SESSIONS * PER_SESSION);
    let workers: Vec<_> = (0..SESSIONS)
        .map(|w| {
            let mut c = Imap::login(&srv, USER, PASSWORD);
            std::thread::spawn(move || {
                c.ok("SELECT INBOX");
                for i in 0..PER_SESSION {
                    let uid = 1 + w * PER_SESSION + i;
                    c.ok(&format!(
                        "UID STORE {uid} +FLAGS.SILENT (\\Flagged $w{w}i{i})"
                    ));
                }
                // The first message of each session goes.
                let first = 1 + w * PER_SESSION;
                c.ok(&format!("UID STORE {first} +FLAGS.SILENT (\\Deleted)"));
                c.ok(&format!("UID EXPUNGE {first}"));
                c
            })
        })
        .collect();
    let _open: Vec<Imap> = workers.into_iter().map(|w| w.join().unwrap()).collect();
    srv.kill9();
    let got = flags_after_restart(&mut srv);
    assert_eq!(got.len(), SESSIONS * (PER_SESSION - 1), "{got:?}");
    for (uid, line) in got {
        let (w, i) = (
            (uid as usize - 1) / PER_SESSION,
            (uid as usize - 1) % PER_SESSION,
        );
        assert_ne!(i, 0, "UID {uid} was expunged: {line}");
        assert!(
            line.contains("\\Flagged") && line.contains(&format!("$w{w}i{i}")),
            "UID {uid} lost its flags: {line}"
        );
    }
}

#[test]
fn the_implicit_seen_of_fetch_is_on_disk_before_check_and_logout() {
    let mut srv = server_with_messages(3);
    let mut a = Imap::login(&srv, USER, PASSWORD);
    a.ok("SELECT INBOX");
    // BODY[] sets \Seen (RFC 3501 §6.4.5) without waiting for a flush; CHECK does wait.
    a.ok("UID FETCH 1 BODY[]");
    a.ok("CHECK");
    let mut b = Imap::login(&srv, USER, PASSWORD);
    b.ok("SELECT INBOX");
    b.ok("UID FETCH 2 BODY[]");
    b.ok("LOGOUT");
    srv.kill9();
    drop(a);
    let got = flags_after_restart(&mut srv);
    let seen: Vec<u32> = got
        .iter()
        .filter(|(_, l)| l.contains("\\Seen"))
        .map(|(u, _)| *u)
        .collect();
    assert_eq!(seen, vec![1, 2], "{got:?}");
}

#[test]
fn simultaneous_logins_with_the_same_password_pay_one_hash() {
    // A client opening several connections at once (Thunderbird opens up to 5) before any login
    // is cached: one argon2 verification, the others wait for it and answer from the cache.
    const CLIENTS: usize = 8;
    let srv = TestServer::start();
    srv.add_user(USER, PASSWORD);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut c = Imap::tls(srv.imaps, &srv.cert_pem());
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                c.ok(&format!("LOGIN {USER} {PASSWORD}"));
                c.ok("LOGOUT");
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let log = srv.log();
    let misses = log
        .matches("proto=imap user=\"alice@example.test\" cached=false")
        .count();
    let hits = log
        .matches("proto=imap user=\"alice@example.test\" cached=true")
        .count();
    assert_eq!((misses, hits), (1, CLIENTS - 1), "{log}");
}
