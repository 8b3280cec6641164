//! Two nodes on one PostgreSQL database (issue 17, docs/cluster.md): two `tanba serve` processes
//! with their own data dirs and ports and the same `[store]`, on the test process's shared
//! cluster (`support::pg::shared`), whatever `TANBA_TEST_BACKEND` says. Mail delivered on one
//! node is seen by IDLE on the other; bytes appended on one are fetched identical on the other;
//! concurrent APPENDs through both get distinct UIDs that every client sees in ascending order;
//! a node killed (-9) under SMTP load loses no acknowledged message while the other serves on.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::imap::{literal_of, text, Imap};
use crate::support::*;

const ALICE: &str = "alice@example.test";
const PASS: &str = "secret-alice-pg";

/// Two nodes on one fresh database; both killed, then the database dropped, on drop.
struct Cluster {
    a: TestServer,
    b: TestServer,
    db: String,
}

fn node(url: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let toml = format!(
        "{}\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n",
        base_toml(dir.path())
    );
    TestServer::start_toml(dir, &toml)
}

impl Cluster {
    /// Node A starts first (it creates the schema), alice is added through A, then B starts.
    fn start() -> Cluster {
        let (db, url) = pg::fresh_db();
        let a = node(&url);
        a.add_user(ALICE, PASS);
        let b = node(&url);
        Cluster { a, b, db }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.a.kill9();
        self.b.kill9();
        pg::drop_db(&self.db);
    }
}

fn message(id: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@remote.example>\r\nTo: Alice <alice@example.test>\r\nSubject: {id}\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{id}@remote.example>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// One message over SMTP (MX) to alice, without panicking: `Ok(true)` for a `250`, `Ok(false)`
/// for another reply, `Err` when the connection failed (a killed node).
fn try_deliver(addr: SocketAddr, msg: &[u8]) -> std::io::Result<bool> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    let mut reply = || -> std::io::Result<String> {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(line);
            }
        }
    };
    reply()?;
    for cmd in [
        "EHLO load.example",
        "MAIL FROM:<load@remote.example>",
        &format!("RCPT TO:<{ALICE}>"),
        "DATA",
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes())?;
        let l = reply()?;
        if !(l.starts_with('2') || l.starts_with('3')) {
            return Ok(false);
        }
    }
    w.write_all(&crate::smtp::dot_stuff(msg))?;
    w.write_all(b".\r\n")?;
    let l = reply()?;
    let _ = w.write_all(b"QUIT\r\n");
    Ok(l.starts_with("250 "))
}

/// `(uid, BODY[])` of every message in the selected mailbox.
fn bodies(c: &mut Imap) -> BTreeMap<u32, Vec<u8>> {
    c.ok("UID FETCH 1:* (UID BODY.PEEK[])")
        .iter()
        .filter(|r| r.starts_with(b"* ") && text(r).contains(" FETCH ("))
        .map(|r| (uid_of(r), literal_of(r)))
        .collect()
}

fn uid_of(r: &[u8]) -> u32 {
    let t = String::from_utf8_lossy(r);
    let rest = t.split("UID ").nth(1).expect("UID in FETCH");
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The UIDs of `UID SEARCH ALL` in a fresh EXAMINE of INBOX, in the order the server lists them.
fn listed_uids(c: &mut Imap) -> Vec<u32> {
    c.ok("EXAMINE INBOX");
    c.ok("UID SEARCH ALL")
        .iter()
        .map(|r| text(r))
        .filter_map(|t| t.strip_prefix("* SEARCH").map(str::to_string))
        .flat_map(|t| {
            t.split_whitespace()
                .map(|u| u.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn delivery_on_a_is_seen_by_idle_on_b_and_fetched_identical_on_both() {
    let c = Cluster::start();
    let mut b = Imap::login(&c.b, ALICE, PASS);
    b.ok("SELECT INBOX");
    let tag = b.tag();
    b.send(format!("{tag} IDLE\r\n").as_bytes());
    assert!(b.response().starts_with(b"+ "), "IDLE continuation");
    let msg = message("across", "delivered on A, announced on B");
    assert!(try_deliver(c.a.mx, &msg).unwrap(), "250 from A");
    // Nothing sent by B's client: B must push EXISTS for a delivery made by A.
    b.set_timeout(Duration::from_secs(30));
    let mut seen = Vec::new();
    loop {
        let r = b.response();
        seen.push(text(&r));
        if text(&r) == "* 1 EXISTS" {
            break;
        }
        assert!(seen.len() < 10, "no EXISTS on B: {seen:?}");
    }
    b.send(b"DONE\r\n");
    let (_, t) = b.until_tagged(&tag);
    assert!(t.starts_with(&format!("{tag} OK")), "{t}");
    let on_b = bodies(&mut b);
    let mut a = Imap::login(&c.a, ALICE, PASS);
    a.ok("SELECT INBOX");
    let on_a = bodies(&mut a);
    assert_eq!(on_a.len(), 1, "{on_a:?}");
    assert_eq!(on_a, on_b);
    assert!(
        on_a[&1].ends_with(&msg),
        "stored as received plus trace headers"
    );
}

#[test]
fn append_on_b_is_fetched_byte_identical_on_a() {
    let c = Cluster::start();
    // 8-bit text, a long line, a NUL-free binary-ish run, a lone dot line.
    let mut msg = message("appended", "caf\u{e9} \u{444}\u{44b}\u{432}\r\n.\r\n");
    msg.extend_from_slice(&[b'x'; 1500]);
    msg.extend_from_slice(b"\r\n");
    msg.extend((1u8..=255).filter(|b| *b != b'\r' && *b != b'\n'));
    msg.extend_from_slice(b"\r\n");
    let mut b = Imap::login(&c.b, ALICE, PASS);
    let t = b.append("INBOX", "(\\Seen)", &msg);
    assert!(t.contains("OK [APPENDUID "), "{t}");
    let uid: u32 = t
        .split("APPENDUID ")
        .nth(1)
        .and_then(|s| s.split(' ').nth(1))
        .map(|s| s.trim_end_matches(']').parse().unwrap())
        .unwrap();
    let mut a = Imap::login(&c.a, ALICE, PASS);
    a.ok("SELECT INBOX");
    let on_a = bodies(&mut a);
    assert_eq!(on_a.keys().copied().collect::<Vec<_>>(), [uid]);
    assert_eq!(on_a[&uid], msg, "BODY[] on A is what B appended");
    let f = a.ok(&format!("UID FETCH {uid} (FLAGS RFC822.SIZE)"));
    let f = text(&f[0]);
    assert!(f.contains("\\Seen"), "{f}");
    assert!(f.contains(&format!("RFC822.SIZE {}", msg.len())), "{f}");
}

const PER_NODE: usize = 50;

#[test]
fn concurrent_appends_through_both_nodes_get_distinct_uids_seen_in_ascending_order() {
    let c = Cluster::start();
    let done = Arc::new(AtomicBool::new(false));
    // Observers, one per node: each listing must extend the previous one only with UIDs above
    // every UID listed before (a UID never appears after a higher one was seen: commit order =
    // UID order as a client can see it), and be listed ascending.
    let observers: Vec<_> = [&c.a, &c.b]
        .into_iter()
        .map(|srv| {
            let (addr, cert) = (srv.imaps, srv.cert_pem());
            let done = done.clone();
            std::thread::spawn(move || {
                let mut o = Imap::tls(addr, &cert);
                o.ok(&format!("LOGIN {ALICE} {PASS}"));
                let mut before: BTreeSet<u32> = BTreeSet::new();
                let mut rounds = 0;
                loop {
                    let last = done.load(Ordering::SeqCst);
                    let now = listed_uids(&mut o);
                    assert!(
                        now.windows(2).all(|w| w[0] < w[1]),
                        "not ascending: {now:?}"
                    );
                    let now: BTreeSet<u32> = now.into_iter().collect();
                    assert!(
                        before.is_subset(&now),
                        "a UID vanished: {before:?} → {now:?}"
                    );
                    let max_before = before.last().copied().unwrap_or(0);
                    let late: Vec<u32> = now
                        .difference(&before)
                        .copied()
                        .filter(|u| *u < max_before)
                        .collect();
                    assert!(
                        late.is_empty(),
                        "UIDs {late:?} appeared after UID {max_before} was seen"
                    );
                    before = now;
                    rounds += 1;
                    if last {
                        return (before, rounds);
                    }
                }
            })
        })
        .collect();
    let appenders: Vec<_> = [("a", &c.a), ("b", &c.b)]
        .into_iter()
        .map(|(name, srv)| {
            let (addr, cert) = (srv.imaps, srv.cert_pem());
            std::thread::spawn(move || {
                let mut s = Imap::tls(addr, &cert);
                s.ok(&format!("LOGIN {ALICE} {PASS}"));
                let mut uids = Vec::new();
                for i in 0..PER_NODE {
                    let t = s.append("INBOX", "()", &message(&format!("{name}-{i}"), "x"));
                    assert!(t.contains("OK [APPENDUID "), "{t}");
                    let uid: u32 = t
                        .split("APPENDUID ")
                        .nth(1)
                        .and_then(|s| s.split(' ').nth(1))
                        .map(|s| s.trim_end_matches(']').parse().unwrap())
                        .unwrap();
                    uids.push(uid);
                }
                uids
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in appenders {
        let uids = h.join().expect("appender");
        // One session's appends commit one after another: its UIDs ascend.
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
        all.extend(uids);
    }
    done.store(true, Ordering::SeqCst);
    let appended: BTreeSet<u32> = all.iter().copied().collect();
    assert_eq!(
        appended.len(),
        2 * PER_NODE,
        "duplicate APPENDUIDs: {all:?}"
    );
    for h in observers {
        let (seen, rounds) = h.join().expect("observer");
        assert_eq!(seen, appended, "after {rounds} listings");
    }
    // Every client's final view on both nodes: 100 messages, UIDs ascending with the sequence
    // numbers, each subject once.
    for srv in [&c.a, &c.b] {
        let mut s = Imap::login(srv, ALICE, PASS);
        let u = s.ok("SELECT INBOX");
        assert!(
            u.iter()
                .any(|r| text(r) == format!("* {} EXISTS", 2 * PER_NODE)),
            "{:?}",
            u.iter().map(|r| text(r)).collect::<Vec<_>>()
        );
        let f = s.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
        let uids: Vec<u32> = f.iter().map(|r| uid_of(r)).collect();
        assert_eq!(uids, appended.iter().copied().collect::<Vec<_>>());
        let subjects: BTreeSet<String> = f
            .iter()
            .map(|r| text(&literal_of(r)).trim().to_string())
            .collect();
        assert_eq!(subjects.len(), 2 * PER_NODE);
    }
}

const WORKERS: usize = 4;
const PER_WORKER: usize = 40;

#[test]
fn kill_9_of_a_node_under_smtp_load_loses_no_acknowledged_message_and_the_other_serves_on() {
    let mut c = Cluster::start();
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let mx = c.a.mx;
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (acked, count, finished) = (acked.clone(), count.clone(), finished.clone());
            std::thread::spawn(move || {
                for i in 0..PER_WORKER {
                    let id = format!("kill-{w}-{i}");
                    match try_deliver(mx, &message(&id, "under load")) {
                        Ok(true) => {
                            acked.lock().unwrap().push(id);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {}
                        Err(_) => break, // A is gone.
                    }
                }
                finished.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    // B serves IMAP all along: a session polling STATUS from before the kill to after it.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (addr, cert, stop) = (c.b.imaps, c.b.cert_pem(), stop.clone());
        std::thread::spawn(move || {
            let mut s = Imap::tls(addr, &cert);
            s.ok(&format!("LOGIN {ALICE} {PASS}"));
            let mut polls = 0;
            while !stop.load(Ordering::SeqCst) {
                s.ok("STATUS INBOX (MESSAGES UIDNEXT)");
                polls += 1;
            }
            s.ok("LOGOUT");
            polls
        })
    };
    // Kill A once part of the load was acknowledged (or, on a fast machine, when it is all done).
    while count.load(Ordering::SeqCst) < WORKERS * PER_WORKER / 4
        && finished.load(Ordering::SeqCst) < WORKERS
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    c.a.kill9();
    for w in workers {
        w.join().expect("SMTP worker");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    eprintln!(
        "{} of {} messages acknowledged by A before its kill",
        acked.len(),
        WORKERS * PER_WORKER
    );
    // B after the kill: a new login, and every acknowledged message there exactly once.
    let mut s = Imap::login(&c.b, ALICE, PASS);
    s.ok("SELECT INBOX");
    let f = s.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let mut ids: BTreeMap<String, usize> = BTreeMap::new();
    for r in &f {
        let h = text(&literal_of(r));
        let id = h
            .split('<')
            .nth(1)
            .and_then(|s| s.split('@').next())
            .unwrap_or_else(|| panic!("no Message-ID in {h:?}"))
            .to_string();
        *ids.entry(id).or_default() += 1;
    }
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = acked.iter().filter(|id| !ids.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged with 250 by A, missing on B: {missing:?}"
    );
    stop.store(true, Ordering::SeqCst);
    let polls = poller.join().expect("B's IMAP session across A's kill");
    assert!(polls > 0);
}
