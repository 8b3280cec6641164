//! `tanba store migrate --from sled --to URL` of a populated store (issue 17; docs/cluster.md,
//! "Migrating from sled"): a sled server filled over SMTP and IMAP, stopped, migrated into a
//! throw-away PostgreSQL (`support::pg`), then served from PostgreSQL: IMAP shows the same
//! UIDVALIDITY, UIDNEXT, flags and bytes, and the queue the same message.

use crate::imap::{text, Imap};
use crate::smtp::Client;
use crate::support::pg::Postgres;
use crate::support::tls::Stream;
use crate::support::*;

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Bob Sender <bob@remote.example>\r\nTo: someone@example.test\r\n\
Subject: {subject}\r\nDate: Mon, 20 Nov 2023 10:15:00 +0600\r\n\
Message-ID: <{subject}@remote.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Delivers over the MX port and waits for `250`.
fn deliver(srv: &TestServer, to: &str, msg: &[u8]) {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.send_mail_ok("sender@remote.example", &[to], msg);
    c.ok("QUIT", "221");
}

/// A `[UIDVALIDITY n]`-style code's value in SELECT's responses.
fn code(resps: &[Vec<u8>], name: &str) -> String {
    let all: String = resps.iter().map(|r| text(r)).collect();
    let at = all
        .find(&format!("[{name} "))
        .unwrap_or_else(|| panic!("no {name} in {all}"));
    let rest = &all[at + name.len() + 2..];
    rest[..rest.find(']').unwrap()].to_string()
}

/// What a client sees of each mailbox: (name, UIDVALIDITY, UIDNEXT, the raw bytes of
/// `UID FETCH 1:* (FLAGS BODY.PEEK[])`).
fn snapshot(srv: &TestServer, user: &str, password: &str, boxes: &[&str]) -> Vec<[String; 4]> {
    let mut c = Imap::login(srv, user, password);
    let mut out = Vec::new();
    for b in boxes {
        let sel = c.ok(&format!("SELECT {b}"));
        let fetched: Vec<u8> = c.ok("UID FETCH 1:* (FLAGS BODY.PEEK[])").concat();
        out.push([
            b.to_string(),
            code(&sel, "UIDVALIDITY"),
            code(&sel, "UIDNEXT"),
            String::from_utf8_lossy(&fetched).into_owned(),
        ]);
    }
    c.ok("LOGOUT");
    out
}

const USERS: [(&str, &str, &[&str]); 3] = [
    ("alice@example.test", "secret-alice", &["INBOX", "Projects"]),
    ("bob@example.test", "secret-bob-1", &["INBOX"]),
    ("carol@example.test", "secret-carol", &["INBOX"]),
];

fn snapshots(srv: &TestServer) -> Vec<Vec<[String; 4]>> {
    USERS
        .iter()
        .map(|(u, p, boxes)| snapshot(srv, u, p, boxes))
        .collect()
}

/// A sled store with three users, a folder, flags and keywords, a body shared by a COPY and one
/// shared by an alias delivery, a large body (a file on sled), an EXPUNGE of the highest UID (so
/// UIDNEXT > max UID), an alias, a pending greylist entry and a message queued for an unreachable
/// relay is migrated: the summary counts it all and says verified (exit 0); the database keeps
/// shared bodies shared, the large one in two chunks, and the id sequence past every copied id.
/// Served from PostgreSQL, IMAP shows the same UIDVALIDITY/UIDNEXT and byte-identical
/// `UID FETCH 1:* (FLAGS BODY[])`, a new APPEND takes the old UIDNEXT, `tanba queue list` shows
/// the queued message. A second migrate into the same database and `--from` anything but
/// `sled` are refused (exit 2).
#[test]
fn pg_migrate_a_populated_sled_store_then_serve_it() {
    // Its source must be sled and it brings its own PostgreSQL: the sled pass covers it.
    if sled_only() {
        return;
    }
    let pg = Postgres::start();
    pg.create_db("mig");
    // Nothing listens on the relay's port: the outbound message stays queued.
    let closed = closed_port();
    let relay = format!("relay = \"127.0.0.1:{}\"", closed.port);
    // Greylisting on for every client but 127.0.0.1 (which delivers the mail below).
    let grey = "greylisting = true\ngreylist_allow = [\"127.0.0.1\"]\ngreylist_expire = \"1h\"";
    let mut srv = TestServer::start_with(&[
        ("delivery", &relay),
        ("delivery", "retry = [\"1h\"]"),
        ("top", grey),
    ]);
    for (u, p, _) in USERS {
        srv.add_user(u, p);
    }
    stdout_ok(&srv.tanba(
        &[
            "alias",
            "add",
            "team@example.test",
            "alice@example.test",
            "bob@example.test",
        ],
        None,
    ));
    deliver(&srv, "alice@example.test", &message("first", "one"));
    deliver(&srv, "team@example.test", &message("team", "for both"));
    deliver(&srv, "alice@example.test", &message("second", "two"));
    deliver(&srv, "bob@example.test", &message("bobs", "bob only"));
    // Large: a body file on sled (> 64 KiB), two chunks on PostgreSQL (> 256 KiB).
    let big: String = (0..5000)
        .map(|i| format!("line {i:05} of a long message, padded to sixty-four octets.....\r\n"))
        .collect();
    deliver(&srv, "carol@example.test", &message("carols", &big));

    // Another machine's first attempt: deferred, a pending greylist entry.
    let mut m = Client::from_stream(Stream::connect_from(srv.mx, "127.0.0.9".parse().unwrap()));
    m.reply();
    m.ok("EHLO other.example", "250");
    m.ok("MAIL FROM:<someone@other.example>", "250");
    let r = m.cmd("RCPT TO:<carol@example.test>").line();
    assert!(r.starts_with("451"), "{r}");

    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("CREATE Projects");
    let t = c.append(
        "Projects",
        "(\\Flagged $Label1)",
        &message("appended", "kept"),
    );
    assert!(t.contains("OK"), "{t}");
    c.ok("SELECT INBOX");
    c.ok("UID STORE 1 +FLAGS (\\Seen $Important)");
    c.ok("UID COPY 1 Projects");
    c.ok("UID STORE 3 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
    c.ok("LOGOUT");

    let mut s = Client::connect_tls(srv.submissions, &srv.cert_pem());
    s.login("alice@example.test", "secret-alice");
    s.send_mail_ok(
        "alice@example.test",
        &["friend@elsewhere.test"],
        &message("outbound", "to a host that does not answer"),
    );
    s.ok("QUIT", "221");
    wait_for("the outbound message deferred", &srv, || {
        let q = crate::delivery::queue_json(&srv);
        (q.len() == 1 && q[0]["attempts"].as_u64() >= Some(1)).then_some(())
    });

    // The first look claims \Recent (RFC 3501 §2.3.2); the second is what any later session
    // sees, and what the migrated store must show.
    snapshots(&srv);
    let before = snapshots(&srv);
    assert_eq!(
        before[0][0][2], "4",
        "alice's INBOX UIDNEXT: {:?}",
        before[0]
    );
    srv.stop();
    let sled_cfg = srv.config_path.clone();

    // --from names the source: only the configured embedded store.
    let out = tanba_with_config(
        &sled_cfg,
        &[
            "store",
            "migrate",
            "--from",
            "/var/lib/other",
            "--to",
            &pg.url("mig"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only `sled` can be migrated"));

    let out = stdout_ok(&tanba_with_config(
        &sled_cfg,
        &["store", "migrate", "--from", "sled", "--to", &pg.url("mig")],
        None,
    ));
    assert!(
        out.contains(
            "copied 3 accounts, 19 mailboxes, 18 subscriptions, 7 messages (6 bodies), 1 \
             expunged UIDs, 1 queued, 1 aliases, 1 greylist entries into PostgreSQL"
        ),
        "{out}"
    );
    assert!(
        out.contains("verified: counts, mailboxes and a SHA-256"),
        "{out}"
    );
    // The COPY and the alias delivery each share one body; ids continue after the copied ones.
    assert_eq!(
        pg.query("mig", "SELECT count(*) FROM blobs WHERE refcount = 2"),
        "2"
    );
    assert_eq!(pg.query("mig", "SELECT max(n) FROM blob_chunks"), "1");
    assert_eq!(
        pg.query(
            "mig",
            "SELECT last_value >= (SELECT max(id) FROM blobs) AND \
             last_value >= (SELECT max(id) FROM queue) FROM ids"
        ),
        "t"
    );
    assert_eq!(
        pg.query(
            "mig",
            "SELECT string_agg(array_to_string(flags, ','), ' ' ORDER BY m.uid) FROM messages m \
             JOIN mailboxes b ON b.id = m.mailbox_id WHERE b.name = 'Projects'"
        ),
        "\\Flagged,$Label1 \\Seen,$Important"
    );
    assert_eq!(
        pg.query(
            "mig",
            "SELECT count(*) FROM greylist WHERE NOT passed AND expires > first_seen"
        ),
        "1"
    );
    let again = tanba_with_config(
        &sled_cfg,
        &["store", "migrate", "--to", &pg.url("mig")],
        None,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds accounts"));

    // The same data directory (TLS key, trust dir) served from the database.
    let mut toml = std::fs::read_to_string(&sled_cfg).unwrap();
    toml.push_str(&format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        pg.url("mig")
    ));
    std::fs::write(&sled_cfg, toml).unwrap();
    srv.restart();
    let after = snapshots(&srv);
    assert_eq!(after, before);
    let queued = stdout_ok(&srv.tanba(&["queue", "list"], None));
    assert!(queued.contains("friend@elsewhere.test"), "{queued}");
    // UIDs are not reused: the next message takes the migrated UIDNEXT.
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let t = c.append("INBOX", "()", &message("after", "on PostgreSQL"));
    assert!(
        t.contains(&format!("[APPENDUID {} 4]", before[0][0][1])),
        "{t}"
    );
}
