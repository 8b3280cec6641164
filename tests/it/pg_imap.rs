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
    let toml = crate::support::pg::server_toml(dir.path(), &pg.url(db), extra);
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

fn msg(i: u32) -> Vec<u8> {
    format!("From: a@b.test\r\nSubject: m{i}\r\nMessage-ID: <m{i}@b.test>\r\n\r\nbody {i}\r\n")
        .into_bytes()
}

/// A message of exactly `size` bytes.
fn sized(size: usize, fill: u8) -> Vec<u8> {
    let mut m = b"Subject: q\r\n\r\n".to_vec();
    m.resize(size - 2, fill);
    m.extend_from_slice(b"\r\n");
    m
}

/// The number after `key` in the first response that has it (`HIGHESTMODSEQ 7`, `MODSEQ (7)`).
fn number_after(rs: &[Resp], key: &str) -> Option<u64> {
    rs.iter().find_map(|r| {
        let t = text(r);
        let at = t.find(key)? + key.len();
        let digits: String = t[at..]
            .trim_start_matches([' ', '('])
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

/// COPY shares the body (one `blobs` row, refcount 2, identical bytes in both mailboxes); MOVE
/// keeps the count; EXPUNGE of both copies removes the body and its chunks.
#[test]
fn pg_copy_and_move_share_the_body_and_expunge_releases_it() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "cpy", &[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    // Over one chunk (256 KiB): the body spans two `blob_chunks` rows.
    let body = sized(300_000, b'z');
    assert!(c.append("INBOX", "(\\Flagged)", &body).contains("OK"));
    c.ok("SELECT INBOX");
    let u = c.ok("UID COPY 1 Archive");
    assert!(joined(&u).is_empty(), "{}", joined(&u));
    assert_eq!(
        pg.query("cpy", "SELECT count(*) || ':' || max(refcount) FROM blobs"),
        "1:2"
    );
    assert_eq!(pg.query("cpy", "SELECT count(*) FROM blob_chunks"), "2");
    assert_eq!(pg.query("cpy", "SELECT count(*) FROM messages"), "2");
    c.ok("SELECT Archive");
    assert_eq!(body_of(&c.ok("UID FETCH 1 BODY.PEEK[]")), body);
    // MOVE Archive -> Trash: still one body, two references, the flag travels.
    c.ok("UID MOVE 1 Trash");
    assert_eq!(
        pg.query(
            "cpy",
            "SELECT string_agg(b.name || ':' || m.uid || ':' || array_to_string(m.flags, ','), \
             ' ' ORDER BY b.name) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
        ),
        "INBOX:1:\\Flagged Trash:1:\\Flagged"
    );
    assert_eq!(pg.query("cpy", "SELECT max(refcount) FROM blobs"), "2");
    c.ok("SELECT Trash");
    assert_eq!(body_of(&c.ok("UID FETCH 1 BODY.PEEK[]")), body);
    c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(pg.query("cpy", "SELECT max(refcount) FROM blobs"), "1");
    c.ok("SELECT INBOX");
    c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(
        pg.query(
            "cpy",
            "SELECT (SELECT count(*) FROM blobs) + (SELECT count(*) FROM blob_chunks) \
             + (SELECT count(*) FROM messages)"
        ),
        "0"
    );
    // Usage went back to nothing.
    assert_eq!(
        pg.query("cpy", "SELECT coalesce(sum(used_bytes), 0) FROM quota"),
        "0"
    );
}

/// After EXPUNGE the UIDs are never given again: the next APPEND gets UIDNEXT, also after a
/// restart; a mailbox deleted with messages takes its body rows along; RENAME INBOX moves the
/// messages.
#[test]
fn pg_expunged_uids_are_never_reused() {
    let pg = Postgres::start();
    let mut srv = pg_server(&pg, "uid", &[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    for i in 1..=3 {
        assert!(c.append("INBOX", "()", &msg(i)).contains("OK"));
    }
    c.ok("SELECT INBOX");
    c.ok("UID STORE 2:3 +FLAGS.SILENT (\\Deleted)");
    let u = c.ok("EXPUNGE");
    assert_eq!(texts(&u), ["* 3 EXPUNGE", "* 2 EXPUNGE"]);
    let t = c.append("INBOX", "()", &msg(4));
    assert!(t.contains(" 4]"), "{t}");
    drop(c);
    srv.restart();
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let st = joined(&c.ok("STATUS INBOX (MESSAGES UIDNEXT)"));
    assert!(
        st.contains("MESSAGES 2") && st.contains("UIDNEXT 5"),
        "{st}"
    );
    c.ok("SELECT INBOX");
    c.ok("UID STORE 4 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    let t = c.append("INBOX", "()", &msg(5));
    assert!(t.contains(" 5]"), "{t}");
    assert_eq!(
        pg.query(
            "uid",
            "SELECT string_agg(uid::text, ',' ORDER BY uid) FROM messages"
        ),
        "1,5"
    );
    // DELETE of a mailbox with messages: rows and bodies go, usage follows.
    c.ok("CREATE Old");
    assert!(c.append("Old", "()", &sized(5000, b'o')).contains("OK"));
    c.ok("SELECT INBOX");
    c.ok("UID COPY 1 Old");
    c.ok("DELETE Old");
    assert_eq!(
        pg.query(
            "uid",
            "SELECT (SELECT count(*) FROM messages) || ':' || (SELECT count(*) FROM blobs) \
             || ':' || (SELECT max(refcount) FROM blobs)"
        ),
        "2:2:1"
    );
    let sum = pg.query("uid", "SELECT sum(size) FROM messages");
    assert_eq!(pg.query("uid", "SELECT used_bytes::text FROM quota"), sum);
    // RENAME INBOX moves its messages into the new mailbox (new UIDs there); INBOX stays,
    // empty, and keeps its UIDNEXT.
    c.ok("RENAME INBOX Before");
    let st = joined(&c.ok("STATUS INBOX (MESSAGES UIDNEXT)"));
    assert!(
        st.contains("MESSAGES 0") && st.contains("UIDNEXT 6"),
        "{st}"
    );
    let st = joined(&c.ok("STATUS Before (MESSAGES UIDNEXT)"));
    assert!(
        st.contains("MESSAGES 2") && st.contains("UIDNEXT 3"),
        "{st}"
    );
    assert_eq!(pg.query("uid", "SELECT max(refcount) FROM blobs"), "1");
}

/// CONDSTORE and QRESYNC on PostgreSQL: STORE UNCHANGEDSINCE refuses a message changed since,
/// FETCH CHANGEDSINCE returns only what changed, SELECT QRESYNC reports VANISHED (EARLIER).
#[test]
fn pg_condstore_and_qresync() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "cond", &[]);
    let mut a = Imap::login(&srv, "alice@example.test", "secret-alice");
    for i in 1..=6 {
        assert!(a.append("INBOX", "()", &msg(i)).contains("OK"));
    }
    let u = a.ok("SELECT INBOX (CONDSTORE)");
    let validity = number_after(&u, "[UIDVALIDITY").unwrap();
    let m = number_after(&u, "[HIGHESTMODSEQ").unwrap();
    assert_eq!(
        pg.query(
            "cond",
            "SELECT m.highest_modseq FROM mailboxes m JOIN accounts a ON a.id = m.account_id \
             WHERE m.name = 'INBOX' AND a.email = 'alice@example.test'"
        ),
        m.to_string()
    );
    a.ok("UID STORE 3 +FLAGS.SILENT (\\Answered)");
    // UNCHANGEDSINCE m: 3 changed since, refused; 1 and 2 get \Seen.
    let (u, tagged) = a.cmd(&format!(
        "UID STORE 1:3 (UNCHANGEDSINCE {m}) +FLAGS (\\Seen)"
    ));
    assert!(
        tagged.contains("OK [MODIFIED 3]"),
        "{tagged}\n{}",
        joined(&u)
    );
    assert_eq!(
        pg.query(
            "cond",
            "SELECT string_agg(uid || '=' || array_to_string(flags, ','), ' ' ORDER BY uid) \
             FROM messages WHERE uid <= 3"
        ),
        "1=\\Seen 2=\\Seen 3=\\Answered"
    );
    // FETCH CHANGEDSINCE m: exactly 1, 2 and 3, with their MODSEQ.
    let u = a.ok(&format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m})"));
    let uids: Vec<String> = texts(&u)
        .into_iter()
        .filter(|t| t.contains(" FETCH "))
        .collect();
    assert_eq!(uids.len(), 3, "{}", joined(&u));
    assert!(uids.iter().all(|t| t.contains("MODSEQ (")), "{uids:?}");
    assert!(!joined(&u).contains("UID 4"), "{}", joined(&u));
    // Expunge 2 and 4, flag 5; a new session resyncs from m.
    a.ok("UID STORE 2,4 +FLAGS.SILENT (\\Deleted)");
    a.ok("EXPUNGE");
    a.ok("UID STORE 5 +FLAGS.SILENT (\\Flagged)");
    assert_eq!(
        pg.query(
            "cond",
            "SELECT string_agg(uid::text, ',' ORDER BY uid) FROM vanished"
        ),
        "2,4"
    );
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("ENABLE QRESYNC");
    let u = c.ok(&format!("SELECT INBOX (QRESYNC ({validity} {m} 1:6))"));
    assert!(
        u.iter().any(|r| text(r) == "* VANISHED (EARLIER) 2,4"),
        "{}",
        joined(&u)
    );
    let changed: Vec<String> = texts(&u)
        .into_iter()
        .filter(|t| t.contains(" FETCH "))
        .collect();
    assert_eq!(changed.len(), 3, "{}", joined(&u));
    assert!(
        changed
            .iter()
            .any(|t| t.contains("UID 5") && t.contains("\\Flagged")),
        "{changed:?}"
    );
    let u = c.ok(&format!(
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m} VANISHED)"
    ));
    assert_eq!(text(&u[0]), "* VANISHED (EARLIER) 2,4", "{}", joined(&u));
}

/// Quota on PostgreSQL is refused exactly as on sled (tests/it/imap_ext.rs): APPEND and COPY
/// over the limit get `NO [OVERQUOTA]`, MOVE does not add usage, and the `quota` row stays the
/// exact sum of the messages' sizes.
#[test]
fn pg_quota_is_enforced_like_on_sled() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "quota", &[]);
    let alice = "alice@example.test";
    let out = srv.tanba(&["user", "quota", alice, "4K"], None);
    assert!(out.status.success(), "{out:?}");
    let mut c = Imap::login(&srv, alice, "secret-alice");
    assert!(c.append("INBOX", "()", &sized(3000, b'a')).contains("OK"));
    let t = c.append("INBOX", "()", &sized(2000, b'b'));
    assert!(t.contains("NO [OVERQUOTA]"), "{t}");
    assert_eq!(
        texts(&c.ok("GETQUOTA \"\"")),
        ["* QUOTA \"\" (STORAGE 3 4)"]
    );
    // MULTIAPPEND: all or nothing.
    let tag = c.tag();
    c.send(format!("{tag} APPEND INBOX {{500}}\r\n").as_bytes());
    assert!(c.response().starts_with(b"+"));
    c.send(&sized(500, b'm'));
    c.send(b" {1000}\r\n");
    assert!(c.response().starts_with(b"+"));
    c.send(&sized(1000, b'n'));
    c.send(b"\r\n");
    let (_, t) = c.until_tagged(&tag);
    assert!(t.contains("NO [OVERQUOTA]"), "{t}");
    assert_eq!(pg.query("quota", "SELECT count(*) FROM messages"), "1");
    assert!(c.append("INBOX", "()", &sized(1096, b'd')).contains("OK"));
    c.ok("SELECT INBOX");
    let (_, t) = c.cmd("UID COPY 2 Archive");
    assert!(t.contains("NO [OVERQUOTA]"), "{t}");
    c.ok("UID MOVE 2 Archive");
    assert_eq!(
        pg.query(
            "quota",
            "SELECT used_bytes || ':' || used_messages || ':' || \
             (SELECT sum(size) FROM messages) FROM quota"
        ),
        "4096:2:4096"
    );
    c.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(
        texts(&c.ok("GETQUOTA \"\"")),
        ["* QUOTA \"\" (STORAGE 2 4)"]
    );
    assert_eq!(
        pg.query(
            "quota",
            "SELECT used_bytes || ':' || used_messages FROM quota"
        ),
        "1096:1"
    );
}

/// kill -9 right after `APPEND ... OK`: after a restart the message is there, byte for byte;
/// deleting the account then removes its bodies.
#[test]
fn pg_append_survives_kill_9() {
    let pg = Postgres::start();
    let mut srv = pg_server(&pg, "kill", &[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let body = msg(42);
    let t = c.append("INBOX", "(\\Seen)", &body);
    assert!(t.contains("OK"), "{t}");
    srv.kill9();
    drop(c);
    srv.restart();
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("SELECT INBOX");
    let u = c.ok("UID FETCH 1 (FLAGS BODY.PEEK[])");
    assert_eq!(body_of(&u), body);
    assert!(joined(&u).contains("\\Seen"), "{}", joined(&u));
    // `tanba user del` releases the account's bodies (a copy, an expunge log) with it.
    c.ok("UID COPY 1 Archive");
    assert!(c.append("INBOX", "()", &msg(43)).contains("OK"));
    c.ok("UID STORE 2 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    drop(c);
    let out = srv.tanba(&["user", "del", "alice@example.test"], None);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        pg.query(
            "kill",
            "SELECT (SELECT count(*) FROM blobs) || ':' || (SELECT count(*) FROM blob_chunks) \
             || ':' || (SELECT count(*) FROM messages) || ':' || (SELECT count(*) FROM vanished)"
        ),
        "0:0:0:0"
    );
}

/// kill -9 right after SMTP's `250`: after a restart the message is in the INBOX.
#[test]
fn pg_smtp_250_survives_kill_9() {
    let pg = Postgres::start();
    let mut srv = pg_server(&pg, "kill250", &[]);
    let body = msg(250);
    deliver(&srv, &["bob@example.test"], &body);
    srv.kill9();
    srv.restart();
    let mut c = Imap::login(&srv, "bob@example.test", "secret-bob-1");
    c.ok("SELECT INBOX");
    let got = body_of(&c.ok("UID FETCH 1 BODY.PEEK[]"));
    assert!(got.ends_with(&body), "{}", String::from_utf8_lossy(&got));
}

/// SMTP over quota on PostgreSQL answers as on sled (tests/it/imap_ext.rs): `552 5.2.2` at the
/// end of DATA for a message that does not fit, while another recipient still gets mail;
/// `452 4.2.2` at RCPT once the account is exactly full.
#[test]
fn pg_smtp_over_quota_like_on_sled() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "smtpq", &[]);
    let alice = "alice@example.test";
    let out = srv.tanba(&["user", "quota", alice, "4K"], None);
    assert!(out.status.success(), "{out:?}");
    let mut m = Smtp::connect(srv.mx);
    m.ok("EHLO sender.example", "250");
    m.send_mail_ok("s@example.kz", &[alice], &sized(3000, b'a'));
    let r = m.send_mail("s@example.kz", &[alice], &sized(2000, b'c'));
    assert_eq!(
        (r.code, r.text().starts_with("5.2.2")),
        (552, true),
        "{}",
        r.line()
    );
    m.send_mail_ok("s@example.kz", &["bob@example.test"], &sized(2000, b'c'));
    let used: u64 = pg
        .query(
            "smtpq",
            "SELECT used_bytes FROM quota q JOIN accounts a ON a.id = q.account_id \
                WHERE a.email = 'alice@example.test'",
        )
        .parse()
        .unwrap();
    // Fill up to exactly 4096 bytes by APPEND; RCPT then answers 452 4.2.2.
    let mut c = Imap::login(&srv, alice, "secret-alice");
    let t = c.append("INBOX", "()", &sized(4096 - used as usize, b'd'));
    assert!(t.contains("OK"), "{t}");
    m.ok("MAIL FROM:<s@example.kz>", "250");
    let r = m.cmd(&format!("RCPT TO:<{alice}>"));
    assert_eq!(
        (r.code, r.text().starts_with("4.2.2")),
        (452, true),
        "{}",
        r.line()
    );
}

/// A body over 1 MiB is written in several statements (`pg/blob.rs`: the first with the
/// `blobs` row, then 1 MiB each) and read back as the rows arrive: a 2.5 MiB body of numbered
/// lines is ten chunks numbered 0–9 holding every byte once, and FETCH gives the exact bytes.
#[test]
fn pg_a_body_over_one_mib_is_written_in_pieces_and_read_back_exactly() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "big", &[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let mut body = b"Subject: big\r\n\r\n".to_vec();
    let mut i = 0u64;
    while body.len() < 2_500_000 {
        body.extend_from_slice(format!("line {i:08} of the big body\r\n").as_bytes());
        i += 1;
    }
    let t = c.append("INBOX", "()", &body);
    assert!(t.contains("OK"), "{t}");
    assert_eq!(
        pg.query(
            "big",
            "SELECT string_agg(n::text, ',' ORDER BY n) || ':' || sum(length(data)) \
             FROM blob_chunks"
        ),
        format!("0,1,2,3,4,5,6,7,8,9:{}", body.len())
    );
    c.ok("SELECT INBOX");
    assert_eq!(body_of(&c.ok("UID FETCH 1 BODY.PEEK[]")), body);
    let out = srv.tanba(&["store", "check"], None);
    assert!(out.status.success(), "{out:?}");
}
