//! Messages on PostgreSQL (issue 17, docs/cluster.md): a real `tanba serve` with `[store]
//! backend = "postgres"` on a throw-away PostgreSQL (`support::pg`), driven over SMTP and IMAP,
//! with the rows checked in the database.

use crate::imap::{literal_of, text, Imap, Resp};
use crate::smtp::Client as Smtp;
use crate::support::pg::Postgres;
use crate::support::*;

/// A server on PostgreSQL database `db` with alice@ (secret-alice) and bob@example.test
/// (secret-bob-1), and `extra` lines as [`TestServer::start_with`] takes them.
fn pg_server(pg: &Postgres, db: &str, extra: &[(&str, &str)]) -> TestServer {
    pg.create_db(db);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let mut toml = base_toml(dir.path());
    for (section, line) in extra {
        let marker = format!("#{}", section.to_uppercase());
        toml = toml.replace(&marker, &format!("{line}\n{marker}"));
    }
    toml.push_str(&format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        pg.url(db)
    ));
    let srv = TestServer::start_toml(dir, &toml);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob-1");
    srv
}

fn texts(u: &[Resp]) -> Vec<String> {
    u.iter().map(|r| text(r)).collect()
}

fn joined(u: &[Resp]) -> String {
    texts(u).join("\n")
}

/// Delivers `body` to `to` over SMTP (the MX port) and waits for `250`.
fn deliver(srv: &TestServer, to: &[&str], body: &[u8]) {
    let mut c = Smtp::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let r = c.send_mail("sender@remote.example", to, body);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
}

/// The literal of the first FETCH response of `u` carrying `BODY[]`.
fn body_of(u: &[Resp]) -> Vec<u8> {
    let r = u
        .iter()
        .find(|r| text(r).contains("BODY[]"))
        .unwrap_or_else(|| panic!("no BODY[] in {}", joined(u)));
    literal_of(r)
}

/// SMTP delivery to two local users stores one body (one `blobs` row, refcount 2) and one
/// `messages` row per recipient; IMAP FETCH BODY[] gives back the exact bytes.
#[test]
fn pg_smtp_delivery_then_imap_fetch_is_byte_identical() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "dlv", &[]);
    let mut body =
        b"From: s@remote.example\r\nTo: alice@example.test\r\nSubject: pg\r\n\r\n".to_vec();
    for i in 0..2000 {
        body.extend_from_slice(format!("line {i} \u{e9} \t trailing \r\n").as_bytes());
    }
    deliver(&srv, &["alice@example.test", "bob@example.test"], &body);
    assert_eq!(pg.query("dlv", "SELECT count(*) FROM messages"), "2");
    assert_eq!(
        pg.query("dlv", "SELECT count(*) || ':' || min(refcount) FROM blobs"),
        "1:2"
    );
    for (user, pass) in [
        ("alice@example.test", "secret-alice"),
        ("bob@example.test", "secret-bob-1"),
    ] {
        let mut c = Imap::login(&srv, user, pass);
        let sel = joined(&c.ok("SELECT INBOX"));
        assert!(sel.contains("* 1 EXISTS"), "{sel}");
        assert!(sel.contains("[UIDNEXT 2]"), "{sel}");
        let u = c.ok("UID FETCH 1 (BODY.PEEK[] RFC822.SIZE)");
        let got = body_of(&u);
        // The stored message is what was sent, after the Received/Authentication-Results
        // lines the server prepends.
        assert!(got.ends_with(&body), "stored body differs");
        assert!(
            joined(&u).contains(&format!("RFC822.SIZE {}", got.len())),
            "{}",
            joined(&u)
        );
    }
    assert_eq!(
        pg.query(
            "dlv",
            "SELECT string_agg(m.name || ':' || m.messages || ':' || m.unseen || ':' || m.uidnext, \
             ' ') FROM mailboxes m WHERE m.name = 'INBOX'"
        ),
        "INBOX:1:1:2 INBOX:1:1:2"
    );
}

/// APPEND then FETCH of the bytes, flags and keywords; STORE +FLAGS/-FLAGS/FLAGS changes the
/// row (and the unseen counter); APPENDUID names the row's UID.
#[test]
fn pg_append_fetch_store_flags_and_keywords() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "app", &[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let msg = b"Subject: one\r\n\r\nfirst body\r\n";
    let t = c.append("INBOX", "(\\Seen $Work)", msg);
    assert!(t.contains("OK [APPENDUID"), "{t}");
    let t = c.append("INBOX", "()", b"Subject: two\r\n\r\nsecond\r\n");
    assert!(t.contains("OK [APPENDUID") && t.contains(" 2]"), "{t}");
    c.ok("SELECT INBOX");
    let u = c.ok("UID FETCH 1 (FLAGS BODY.PEEK[])");
    assert_eq!(body_of(&u), msg);
    let all = joined(&u);
    assert!(all.contains("\\Seen") && all.contains("$Work"), "{all}");
    assert_eq!(
        pg.query(
            "app",
            "SELECT string_agg(uid || '=' || array_to_string(flags, ','), ' ' ORDER BY uid) \
             FROM messages"
        ),
        "1=\\Seen,$Work 2="
    );
    assert_eq!(
        pg.query(
            "app",
            "SELECT unseen FROM mailboxes WHERE name = 'INBOX' AND messages = 2"
        ),
        "1"
    );
    c.ok("UID STORE 2 +FLAGS (\\Seen \\Flagged $Later)");
    c.ok("UID STORE 1 -FLAGS ($Work \\Seen)");
    let u = c.ok("UID FETCH 1:2 (FLAGS)");
    let all = joined(&u);
    // \Recent is session state, never stored.
    assert!(all.contains("UID 1 FLAGS (\\Recent)"), "{all}");
    assert!(all.contains("\\Flagged") && all.contains("$Later"), "{all}");
    assert_eq!(
        pg.query(
            "app",
            "SELECT string_agg(uid || '=' || array_to_string(flags, ','), ' ' ORDER BY uid) \
             FROM messages"
        ),
        "1= 2=\\Seen,\\Flagged,$Later"
    );
    assert_eq!(
        pg.query(
            "app",
            "SELECT unseen FROM mailboxes WHERE name = 'INBOX' AND messages = 2"
        ),
        "1"
    );
    c.ok("UID STORE 2 FLAGS (\\Answered)");
    let all = joined(&c.ok("UID FETCH 2 (FLAGS)"));
    assert!(all.contains("FLAGS (\\Answered \\Recent)"), "{all}");
    // A second session sees the same.
    let mut d = Imap::login(&srv, "alice@example.test", "secret-alice");
    let st = joined(&d.ok("STATUS INBOX (MESSAGES UNSEEN UIDNEXT SIZE)"));
    assert!(st.contains("MESSAGES 2") && st.contains("UNSEEN 2"), "{st}");
    assert!(st.contains("UIDNEXT 3"), "{st}");
}
