//! Issue 12, item 3: the store can always be brought back. `tanba store check` on a clean and a
//! damaged store, `tanba backup` while a client delivers and `tanba restore` into a new
//! data_dir (compared over IMAP), the format version refused when newer, and `tanba store
//! rebuild` from a backup plus the body files after sled's `db` file is destroyed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::imap::{literal_of, text, Imap};
use crate::smtp::Client;
use crate::support::{base_toml, tanba_with_config, TestServer, BIN};

const RELAY_DOWN: &str = "relay = \"127.0.0.1:1\"\nretry = [\"1h\"]";

fn out_text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mx(srv: &TestServer, to: &[&str], subject: &str) {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let msg = format!(
        "From: sender@example.kz\r\nTo: {}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n",
        to.join(", ")
    );
    let r = c.send_mail("sender@example.kz", to, msg.as_bytes());
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
}

/// Submission by alice to a remote address; the relay is down, so it stays queued.
fn submit_remote(srv: &TestServer, to: &str) {
    let mut c = Client::connect_tls(srv.submissions, &srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    let msg = format!("From: alice@example.test\r\nTo: {to}\r\nSubject: out\r\n\r\nout\r\n");
    let r = c.send_mail("alice@example.test", &[to], msg.as_bytes());
    assert_eq!(r.code, 250, "{}", r.line());
}

fn server() -> TestServer {
    let srv = TestServer::start_with(&[("delivery", RELAY_DOWN)]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob-1");
    srv
}

fn body_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(store.join("messages")).unwrap().flatten() {
        for f in std::fs::read_dir(sub.path()).unwrap().flatten() {
            out.push(f.path());
        }
    }
    out.sort();
    out
}

/// What a client sees of one mailbox: UIDVALIDITY, UIDNEXT and per UID (flags, INTERNALDATE,
/// bytes).
#[derive(Debug, PartialEq)]
struct View {
    uidvalidity: String,
    uidnext: String,
    messages: BTreeMap<u32, (Vec<String>, String, Vec<u8>)>,
}

fn status_item(untagged: &[Vec<u8>], key: &str) -> String {
    for r in untagged {
        let t = text(r);
        if let Some(i) = t.find(&format!("[{key} ")) {
            let rest = &t[i + key.len() + 2..];
            return rest[..rest.find(']').unwrap()].to_string();
        }
    }
    panic!("no {key} in {untagged:?}")
}

fn view(c: &mut Imap, mailbox: &str) -> View {
    let u = c.ok(&format!("EXAMINE \"{mailbox}\""));
    let uidvalidity = status_item(&u, "UIDVALIDITY");
    let uidnext = status_item(&u, "UIDNEXT");
    let mut messages = BTreeMap::new();
    let (u, t) = c.cmd("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])");
    assert!(t.contains(" OK"), "{t}");
    for r in u {
        let s = String::from_utf8_lossy(&r).into_owned();
        if !s.contains(" FETCH (") {
            continue;
        }
        let uid: u32 = s[s.find("UID ").unwrap() + 4..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let fl = &s[s.find("FLAGS (").unwrap() + 7..];
        let mut flags: Vec<String> = fl[..fl.find(')').unwrap()]
            .split_whitespace()
            .filter(|f| *f != "\\Recent")
            .map(String::from)
            .collect();
        flags.sort();
        let d = &s[s.find("INTERNALDATE \"").unwrap() + 14..];
        let date = d[..d.find('"').unwrap()].to_string();
        messages.insert(uid, (flags, date, literal_of(&r)));
    }
    View {
        uidvalidity,
        uidnext,
        messages,
    }
}

fn mailboxes(c: &mut Imap) -> Vec<String> {
    let mut names: Vec<String> = c
        .ok("LIST \"\" \"*\"")
        .iter()
        .map(|r| {
            let t = text(r);
            t.rsplit(' ').next().unwrap().trim_matches('"').to_string()
        })
        .collect();
    names.sort();
    names
}

fn account_views(srv: &TestServer, user: &str, password: &str) -> BTreeMap<String, View> {
    let mut c = Imap::login(srv, user, password);
    let mut out = BTreeMap::new();
    for m in mailboxes(&mut c) {
        let v = view(&mut c, &m);
        out.insert(m, v);
    }
    c.ok("LOGOUT");
    out
}

fn queue_json(srv: &TestServer) -> Vec<serde_json::Value> {
    let o = srv.tanba(&["queue", "list", "--json"], None);
    assert!(o.status.success(), "{}", out_text(&o));
    serde_json::from_slice::<Vec<serde_json::Value>>(&o.stdout).unwrap()
}

/// A fresh directory with the base config whose data_dir does not exist yet.
fn fresh_config() -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let toml = base_toml(dir.path()).replace("#DELIVERY", RELAY_DOWN);
    let cfg = dir.path().join("tanba.toml");
    std::fs::write(&cfg, &toml).unwrap();
    (dir, cfg, toml)
}

#[test]
fn store_check_is_clean_on_a_clean_store_and_lists_damaged_files_and_records() {
    if crate::support::sled_only() {
        return;
    }
    let mut srv = server();
    for i in 0..3 {
        mx(&srv, &["alice@example.test"], &format!("m{i}"));
    }
    submit_remote(&srv, "far@remote.test");
    // While serving: through the admin socket.
    let o = srv.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(stdout(&o), "store is consistent\n");
    assert_eq!(srv.stop(), Some(0));
    // Stopped: directly on the store.
    let o = srv.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert_eq!(stdout(&o), "store is consistent\n");

    // Damage: one body file gone, one truncated, one file no record names.
    let store = srv.data_dir().join("store");
    let files = body_files(&store);
    assert_eq!(files.len(), 4, "{files:?}");
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::write(&files[1], b"short").unwrap();
    let orphan = store.join("messages/ab/00000000deadbeab");
    std::fs::write(&orphan, b"Subject: stray\r\n\r\n").unwrap();
    let o = srv.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    let s = stdout(&o);
    assert!(s.starts_with("store has 3 problems:\n"), "{s}");
    let name = |p: &Path| p.display().to_string();
    assert!(
        s.contains(&format!("body file {}: No such file", name(&files[0]))),
        "{s}"
    );
    assert!(
        s.contains(&format!(
            "body file {}: 5 bytes, the store recorded",
            name(&files[1])
        )),
        "{s}"
    );
    assert!(
        s.contains(&format!("body file {} has no record", name(&orphan))),
        "{s}"
    );
    // The check reports; it does not repair (the orphan is still there for a rebuild).
    assert!(orphan.exists());

    // Metadata damage, written with sled itself while the server is stopped: a mailbox
    // counter that no longer matches its messages.
    {
        let db = sled::open(&store).unwrap();
        let boxes = db.open_tree("mailboxes").unwrap();
        let (k, v) = boxes
            .iter()
            .map(|kv| kv.unwrap())
            .find(|(_, v)| {
                let m: tanba::store::MailboxMeta = rmp_serde::from_slice(v).unwrap();
                m.name == "INBOX" && m.messages == 3
            })
            .unwrap();
        // Records are MessagePack, structs as arrays (store format 3, src/store/mod.rs).
        let mut m: tanba::store::MailboxMeta = rmp_serde::from_slice(&v).unwrap();
        m.messages = 10;
        boxes.insert(k, rmp_serde::to_vec(&m).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let o = srv.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(1), "{}", out_text(&o));
    let s = stdout(&o);
    assert!(s.starts_with("store has 4 problems:\n"), "{s}");
    assert!(s.contains("): messages is 10, it holds 3"), "{s}");
}

/// `tanba backup` while a client delivers; restore into a new data_dir; compare over IMAP.
#[test]
fn backup_while_serving_then_restore_round_trips_accounts_flags_uids_and_queue() {
    if crate::support::sled_only() {
        return;
    }
    let srv = server();
    for i in 0..3 {
        mx(&srv, &["alice@example.test"], &format!("a{i}"));
    }
    {
        let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
        c.ok("SELECT INBOX");
        c.ok("UID STORE 1 +FLAGS (\\Seen $Important)");
        c.ok("UID STORE 2 +FLAGS (\\Flagged)");
        c.ok("UID STORE 3 +FLAGS (\\Deleted)");
        c.ok("EXPUNGE");
        c.ok("CREATE Projects/2026");
        let t = c.append(
            "Projects/2026",
            "(\\Draft $Work)",
            b"Subject: plan\r\n\r\nplan\r\n",
        );
        assert!(t.contains(" OK"), "{t}");
        c.ok("LOGOUT");
    }
    submit_remote(&srv, "far@remote.test");
    let queued = queue_json(&srv);
    assert_eq!(queued.len(), 1);

    // A client delivers to bob while the backup runs: the backup starts after its fifth 250.
    let mx_addr = srv.mx;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = done.clone();
    let deliverer = std::thread::spawn(move || {
        for i in 0..30 {
            let mut c = Client::connect(mx_addr);
            c.ok("EHLO sender.example", "250");
            let msg = format!("Subject: b{i}\r\n\r\nbody {i}\r\n");
            let r = c.send_mail("sender@example.kz", &["bob@example.test"], msg.as_bytes());
            assert_eq!(r.code, 250, "{}", r.line());
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    while done.load(std::sync::atomic::Ordering::SeqCst) < 5 {
        std::thread::sleep(Duration::from_millis(5));
    }
    let backup = srv.dir.path().join("backups/one");
    let o = srv.tanba(&["backup", backup.to_str().unwrap()], None);
    deliverer.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert!(
        stdout(&o).contains("by the running server"),
        "{}",
        out_text(&o)
    );
    assert!(backup.join("tanba-backup.json").is_file());
    // One point in time across trees: bob's INBOX record counts exactly the message records
    // the backup holds for it, although deliveries went on while it was taken.
    let meta = std::fs::read_to_string(backup.join("metadata.jsonl")).unwrap();
    let recs: Vec<serde_json::Value> = meta
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let bob = recs
        .iter()
        .find(|r| r["t"] == "account" && r["email"] == "bob@example.test")
        .unwrap()["id"]
        .clone();
    let inbox = recs
        .iter()
        .find(|r| r["t"] == "mailbox" && r["account_id"] == bob && r["name"] == "INBOX")
        .unwrap();
    let held = recs
        .iter()
        .filter(|r| r["t"] == "message" && r["mailbox_id"] == inbox["id"])
        .count() as u64;
    assert_eq!(inbox["messages"].as_u64(), Some(held), "{inbox}");
    assert_eq!(inbox["uidnext"].as_u64(), Some(held + 1), "{inbox}");
    assert!(held >= 5, "{held}");
    eprintln!("bob's INBOX held {held} of 30 messages at the backup");
    // A second backup into the same directory is refused.
    let o = srv.tanba(&["backup", backup.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert!(stdout(&o).is_empty() && out_text(&o).contains("is not empty"));

    let alice_before = account_views(&srv, "alice@example.test", "secret-alice");
    let bob_before = account_views(&srv, "bob@example.test", "secret-bob-1");
    assert_eq!(bob_before["INBOX"].messages.len(), 30);

    // Restore into a new data_dir, then serve it.
    let (dir2, cfg2, toml2) = fresh_config();
    let o = tanba_with_config(&cfg2, &["restore", backup.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert!(
        stdout(&o).starts_with("restored 2 accounts, 14 mailboxes, "),
        "{}",
        out_text(&o)
    );
    let mut srv2 = TestServer::start_toml(dir2, &toml2);

    // Alice did nothing during the backup: everything is equal (passwords too: login works).
    let alice_after = account_views(&srv2, "alice@example.test", "secret-alice");
    assert_eq!(alice_after, alice_before);
    let inbox = &alice_after["INBOX"].messages;
    assert_eq!(inbox.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(inbox[&1].0, vec!["$Important", "\\Seen"]);
    assert_eq!(inbox[&2].0, vec!["\\Flagged"]);
    assert_eq!(
        alice_after["Projects/2026"].messages[&1].0,
        vec!["$Work", "\\Draft"]
    );
    // Bob's INBOX is a consistent point in time: a prefix of what arrived, same UIDs and
    // bytes, UIDNEXT right after the last one, same UIDVALIDITY.
    let bob_after = account_views(&srv2, "bob@example.test", "secret-bob-1");
    let (b0, b1) = (&bob_before["INBOX"], &bob_after["INBOX"]);
    assert_eq!(b1.uidvalidity, b0.uidvalidity);
    let n = b1.messages.len() as u32;
    assert_eq!(b1.uidnext, (n + 1).to_string());
    for (uid, m) in &b1.messages {
        assert_eq!(Some(m), b0.messages.get(uid), "bob's uid {uid}");
    }
    assert_eq!(
        b1.messages.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>()
    );
    // The queue entry, with its body.
    let q2 = queue_json(&srv2);
    assert_eq!(q2.len(), 1, "{q2:?}");
    for k in ["id", "sender", "size", "created"] {
        assert_eq!(q2[0][k], queued[0][k], "{k}");
    }
    assert_eq!(q2[0]["recipients"][0]["addr"], "far@remote.test");
    let o = srv2.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));

    // Restore refuses while the server runs, and over an existing store without --force.
    let o = srv2.tanba(&["restore", backup.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert!(out_text(&o).contains("stop it first"), "{}", out_text(&o));
    assert_eq!(srv2.stop(), Some(0));
    let o = srv2.tanba(&["restore", backup.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert!(out_text(&o).contains("without --force"), "{}", out_text(&o));
    let o = srv2.tanba(&["restore", "--force", backup.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    assert!(
        stdout(&o).contains("the previous store is kept in"),
        "{}",
        out_text(&o)
    );
    drop(srv);
}

/// Runs `tanba serve` expecting it to exit by itself (killed after 30 s otherwise).
fn serve_expecting_exit(cfg: &Path) -> Output {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(cfg)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_store_with_a_newer_format_version_is_refused_with_a_clear_message() {
    if crate::support::sled_only() {
        return;
    }
    let mut srv = server();
    assert_eq!(srv.stop(), Some(0));
    {
        // What a future tanba would leave: format_version 5 in the `meta` tree.
        let db = sled::open(srv.data_dir().join("store")).unwrap();
        let meta = db.open_tree("meta").unwrap();
        assert_eq!(
            meta.get("format_version").unwrap().unwrap().as_ref(),
            &4u32.to_be_bytes()
        );
        meta.insert("format_version", &5u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    let o = serve_expecting_exit(&srv.config_path);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    let want = "store format 5 in ";
    assert!(out_text(&o).contains(want), "{}", out_text(&o));
    assert!(
        out_text(&o).contains("is newer than this tanba understands (format 4); upgrade tanba"),
        "{}",
        out_text(&o)
    );
    for args in [&["user", "list"][..], &["store", "check"]] {
        let o = srv.tanba(args, None);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", out_text(&o));
        assert!(out_text(&o).contains("upgrade tanba"), "{}", out_text(&o));
    }
}

#[test]
fn rebuild_from_a_backup_and_the_body_files_after_the_db_file_is_destroyed() {
    if crate::support::sled_only() {
        return;
    }
    let mut srv = server();
    mx(&srv, &["alice@example.test"], "before-1");
    mx(&srv, &["alice@example.test"], "before-2");
    {
        let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
        c.ok("SELECT INBOX");
        c.ok("UID STORE 1 +FLAGS (\\Seen)");
        c.ok("LOGOUT");
    }
    let uidvalidity_before = account_views(&srv, "alice@example.test", "secret-alice")["INBOX"]
        .uidvalidity
        .clone();
    let backup = srv.dir.path().join("backup");
    let o = srv.tanba(&["backup", backup.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    // After the backup: two more for alice alone (our Received names her), one for alice and
    // bob (no single recipient named), one APPENDed by bob (no Received at all).
    mx(&srv, &["alice@example.test"], "after-1");
    mx(&srv, &["alice@example.test"], "after-2");
    mx(
        &srv,
        &["alice@example.test", "bob@example.test"],
        "after-both",
    );
    {
        let mut c = Imap::login(&srv, "bob@example.test", "secret-bob-1");
        let t = c.append("Drafts", "(\\Draft)", b"Subject: draft\r\n\r\ndraft\r\n");
        assert!(t.contains(" OK"), "{t}");
        c.ok("LOGOUT");
    }
    assert_eq!(srv.stop(), Some(0));
    // sled's database file is destroyed; the body files survive.
    let store = srv.data_dir().join("store");
    let db = store.join("db");
    let len = std::fs::metadata(&db).unwrap().len() as usize;
    std::fs::write(&db, vec![0xA5u8; len.max(4096)]).unwrap();
    let files_before = body_files(&store);
    // sled opens such a file as an empty database; tanba sees body files without records and
    // refuses, instead of sweeping the bodies away as orphans.
    let o = serve_expecting_exit(&srv.config_path);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert!(
        out_text(&o).contains("has message files but no records"),
        "{}",
        out_text(&o)
    );
    let o = srv.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(2), "{}", out_text(&o));
    assert!(
        out_text(&o).contains("tanba store rebuild"),
        "{}",
        out_text(&o)
    );
    assert_eq!(body_files(&store), files_before);

    let o = srv.tanba(
        &[
            "store",
            "rebuild",
            "--from-backup",
            backup.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    let s = stdout(&o);
    assert!(
        s.contains("restored 2 accounts, 12 mailboxes, 2 messages"),
        "{s}"
    );
    assert!(
        s.contains("2 messages found as body files went to their owner's INBOX"),
        "{s}"
    );
    assert!(
        s.contains("2 messages without a known owner were written to "),
        "{s}"
    );
    // The broken store is kept aside, untouched.
    let kept: Vec<PathBuf> = std::fs::read_dir(srv.data_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("store.broken-"))
        .collect();
    assert_eq!(kept.len(), 1, "{s}");
    let names = |v: Vec<PathBuf>| -> Vec<String> {
        v.iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(names(body_files(&kept[0])), names(files_before));
    // The unowned messages as .eml files: the one for both, and bob's draft.
    let rec_dir: PathBuf = std::fs::read_dir(srv.data_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("recovered-"))
        .unwrap();
    let mut eml: Vec<String> = std::fs::read_dir(&rec_dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    eml.sort();
    assert_eq!(eml.len(), 2);
    assert!(eml.iter().any(|m| m.contains("Subject: after-both")));
    assert!(eml.iter().any(|m| m.contains("Subject: draft")));

    srv.restart();
    let o = srv.tanba(&["store", "check"], None);
    assert_eq!(o.status.code(), Some(0), "{}", out_text(&o));
    // Alice: the backup's two (with \Seen) and her two later ones, under a new UIDVALIDITY.
    let v = &account_views(&srv, "alice@example.test", "secret-alice")["INBOX"];
    assert_ne!(v.uidvalidity, uidvalidity_before);
    let subjects: Vec<(u32, Vec<String>, bool)> = v
        .messages
        .iter()
        .map(|(uid, (flags, _, bytes))| {
            let b = String::from_utf8_lossy(bytes);
            let subj = ["before-1", "before-2", "after-1", "after-2"]
                .iter()
                .position(|s| b.contains(&format!("Subject: {s}\r\n")))
                .unwrap();
            (*uid, flags.clone(), subj == 0 || subj == 1)
        })
        .collect();
    assert_eq!(
        subjects,
        vec![
            (1, vec!["\\Seen".to_string()], true),
            (2, vec![], true),
            (3, vec![], false),
            (4, vec![], false),
        ]
    );
    // Bob logs in with his password from the backup; his INBOX is empty (the shared message
    // had no single owner).
    let b = account_views(&srv, "bob@example.test", "secret-bob-1");
    assert!(b["INBOX"].messages.is_empty());
}
