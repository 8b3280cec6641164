//! Review of the PostgreSQL backend against sled's behaviour (the reference): each test shows
//! one difference that a client or an operator could see, through the real binary.

use crate::imap::Imap;
use crate::support::pg::Postgres;
use crate::support::*;

/// A server on PostgreSQL database `db` with alice@example.test (secret-alice).
fn pg_server(pg: &Postgres, db: &str) -> TestServer {
    pg.create_db(db);
    let dir = tempfile::tempdir().unwrap();
    let toml = crate::support::pg::server_toml(dir.path(), &pg.url(db), &[]);
    let srv = TestServer::start_toml(dir, &toml);
    srv.add_user("alice@example.test", "secret-alice");
    srv
}

/// RENAME answers as on sled: a missing source is `[NONEXISTENT]` and a taken target is
/// `[ALREADYEXISTS]` even when the target lies under the source's name (sled checks those
/// before refusing to move a mailbox into itself); nothing changes.
#[test]
fn pg_rename_reports_a_missing_source_or_taken_target_first() {
    let pg = Postgres::start();
    let srv = pg_server(&pg, "ren");
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let (_, t) = c.cmd("RENAME nosuch nosuch/child");
    assert!(t.contains("NO [NONEXISTENT]"), "{t}");
    c.ok("CREATE a/b");
    let (_, t) = c.cmd("RENAME a a/b");
    assert!(t.contains("NO [ALREADYEXISTS]"), "{t}");
    let (_, t) = c.cmd("RENAME a a/c");
    assert!(t.contains("NO [CANNOT]"), "{t}");
    let names = pg.query(
        "ren",
        "SELECT string_agg(name, ',' ORDER BY name) FROM mailboxes WHERE name LIKE 'a%' \
         OR name LIKE 'nosuch%'",
    );
    assert_eq!(names, "a,a/b");
}

/// A psql session on `db` that ran `BEGIN` and `sql` (taking a row lock) and holds it until
/// [`release`]; returns once the session is idle in its transaction.
fn hold_lock(
    pg: &Postgres,
    db: &str,
    srv: &TestServer,
    sql: &str,
) -> (std::process::Child, std::process::ChildStdin) {
    use std::io::Write;
    let mut hold = pg.session(db);
    let mut stdin = hold.stdin.take().unwrap();
    stdin
        .write_all(format!("BEGIN;\n{sql};\n").as_bytes())
        .unwrap();
    stdin.flush().unwrap();
    wait_for("the psql session to hold its lock", srv, || {
        let q = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND state = 'idle in transaction'"
        );
        (pg.query(db, &q) == "1").then_some(())
    });
    (hold, stdin)
}

/// Ends a [`hold_lock`] session (ROLLBACK) and waits for it.
fn release((mut hold, mut stdin): (std::process::Child, std::process::ChildStdin)) {
    use std::io::Write;
    stdin.write_all(b"ROLLBACK;\n").unwrap();
    drop(stdin);
    hold.wait().unwrap();
}

/// Backends of database `db` waiting for a lock.
fn lock_waiters(pg: &Postgres, db: &str) -> usize {
    pg.query(
        db,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
             AND wait_event_type = 'Lock'"
        ),
    )
    .parse()
    .unwrap()
}

/// RENAME and `user del` of the same account at once do not deadlock: RENAME locks its
/// mailbox rows before the account row, the order `user del` (and every message write) uses.
/// A psql session holding the account row makes the interleaving certain: `user del` holds the
/// mailboxes and waits for the account; RENAME starts then. Formerly RENAME took the account
/// row first (shared) and then waited for its mailbox: a lock cycle, which PostgreSQL broke by
/// failing one of them (`NO [UNAVAILABLE]`). Now RENAME waits, and then finds the mailbox gone.
#[test]
fn pg_rename_and_user_del_at_once_do_not_deadlock() {
    let pg = Postgres::start();
    let db = "rendel";
    let srv = pg_server(&pg, db);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("CREATE Work");
    let held = hold_lock(
        &pg,
        db,
        &srv,
        "SELECT 1 FROM accounts WHERE email = 'alice@example.test' FOR SHARE",
    );
    std::thread::scope(|s| {
        let del = s.spawn(|| srv.tanba(&["user", "del", "alice@example.test"], None));
        wait_for("user del to wait for the account row", &srv, || {
            (lock_waiters(&pg, db) == 1).then_some(())
        });
        c.send(b"r1 RENAME Work Play\r\n");
        wait_for("RENAME to wait too", &srv, || {
            (lock_waiters(&pg, db) == 2).then_some(())
        });
        release(held);
        let out = del.join().unwrap();
        assert!(out.status.success(), "{out:?}");
        let (_, t) = c.until_tagged("r1");
        assert!(t.starts_with("r1 NO [NONEXISTENT]"), "{t}");
    });
    assert_eq!(pg.query(db, "SELECT count(*) FROM mailboxes"), "0");
    assert_eq!(pg.query(db, "SELECT count(*) FROM accounts"), "0");
}

/// A body whose recorded size is corrupt (here 2^62 bytes) is a read error, as a body file of
/// the wrong length is on sled, not a server brought down by allocating the recorded size
/// (formerly the process died). Other messages and later commands work.
#[test]
fn pg_a_corrupt_body_size_fails_the_fetch_not_the_server() {
    let pg = Postgres::start();
    let db = "bsize";
    let srv = pg_server(&pg, db);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.append("INBOX", "()", b"Subject: one\r\n\r\nfirst\r\n");
    c.append("INBOX", "()", b"Subject: two\r\n\r\nsecond\r\n");
    pg.query(
        db,
        "UPDATE blobs SET size = 4611686018427387904 WHERE id = \
         (SELECT blob_id FROM messages WHERE uid = 1)",
    );
    c.ok("SELECT INBOX");
    // As for an unreadable body on sled: no data for that message (the FETCH itself ends
    // normally, `imap/fetch.rs`), and the connection stays.
    let (u, t) = c.cmd("UID FETCH 1 BODY.PEEK[]");
    let got: Vec<String> = u.iter().map(|r| crate::imap::text(r)).collect();
    assert!(t.contains(" OK ") || t.contains(" NO "), "{t}");
    assert!(!got.join("\n").contains("first"), "{got:?}");
    let u = c.ok("UID FETCH 2 BODY.PEEK[]");
    let all: Vec<String> = u.iter().map(|r| crate::imap::text(r)).collect();
    assert!(all.join("\n").contains("second"), "{all:?}");
    c.ok("NOOP");
}

/// A user name with a NUL byte (possible in SMTP AUTH LOGIN, whose user name is base64 of any
/// bytes) is a wrong login, `535`, as on sled: PostgreSQL refuses NUL in text, and the lookup
/// used to fail with a store error (`454`, and no failed login counted).
#[test]
fn pg_a_user_name_with_nul_is_a_wrong_login() {
    use crate::smtp::{b64, Client};
    let pg = Postgres::start();
    let srv = pg_server(&pg, "nul");
    let mut s = Client::connect_tls(srv.submissions, &srv.cert_pem());
    s.ok("EHLO client.example", "250");
    let user = b64(b"alice\0@example.test");
    s.ok(&format!("AUTH LOGIN {user}"), "334");
    s.ok(&b64(b"secret-alice"), "535");
    // The real account still logs in on the same connection.
    s.ok(
        &format!("AUTH PLAIN {}", b64(b"\0alice@example.test\0secret-alice")),
        "235",
    );
}

/// MOVE and EXPUNGE of copies of the same two bodies at once do not deadlock. A MOVE's new
/// rows take a key-share lock on their blobs (the foreign key) in the source's UID order, here
/// the reverse of the blob ids; EXPUNGE locks the same blobs by ascending id. MOVE now locks its
/// blobs by ascending id first (the documented order). A psql session holding a key-share lock
/// on the second blob makes the interleaving certain: EXPUNGE holds the first and waits for the
/// second; MOVE starts then. Formerly MOVE held the second and waited for the first: a lock
/// cycle, which PostgreSQL broke by failing one of them (`NO [UNAVAILABLE]`).
#[test]
fn pg_move_and_expunge_of_shared_bodies_at_once_do_not_deadlock() {
    let pg = Postgres::start();
    let db = "mvexp";
    let srv = pg_server(&pg, db);
    let mut a = Imap::login(&srv, "alice@example.test", "secret-alice");
    a.append("INBOX", "()", b"Subject: one\r\n\r\none\r\n");
    a.append("INBOX", "()", b"Subject: two\r\n\r\ntwo\r\n");
    a.ok("SELECT INBOX");
    // Archive's UID 1 is INBOX's UID 2: UID order and blob order are reversed there.
    a.ok("UID COPY 2 Archive");
    a.ok("UID COPY 1 Archive");
    a.ok("UID STORE 1:2 +FLAGS.SILENT (\\Deleted)");
    let mut b = Imap::login(&srv, "alice@example.test", "secret-alice");
    b.ok("SELECT Archive");
    let second = pg.query(db, "SELECT max(id) FROM blobs");
    let held = hold_lock(
        &pg,
        db,
        &srv,
        &format!("SELECT 1 FROM blobs WHERE id = {second} FOR KEY SHARE"),
    );
    a.send(b"e1 UID EXPUNGE 1:2\r\n");
    wait_for("EXPUNGE to wait for the second blob", &srv, || {
        (lock_waiters(&pg, db) == 1).then_some(())
    });
    b.send(b"m1 UID MOVE 1:2 Trash\r\n");
    wait_for("MOVE to wait too", &srv, || {
        (lock_waiters(&pg, db) == 2).then_some(())
    });
    release(held);
    let (_, t) = a.until_tagged("e1");
    assert!(t.starts_with("e1 OK"), "{t}");
    let (_, t) = b.until_tagged("m1");
    assert!(t.starts_with("m1 OK"), "{t}");
    // Two bodies left, each once, both in Trash.
    assert_eq!(
        pg.query(
            db,
            "SELECT string_agg(b.name || ':' || m.uid, ' ' ORDER BY m.uid) \
             FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id"
        ),
        "Trash:1 Trash:2"
    );
    assert_eq!(
        pg.query(db, "SELECT string_agg(refcount::text, ',') FROM blobs"),
        "1,1"
    );
}

/// Removing a body (EXPUNGE of its last copy, the end of a queue entry) makes PostgreSQL check
/// the foreign keys naming it: `messages.blob_id` and `queue.blob_id`. Those lookups use an
/// index (schema version 2), not a scan of every message of every account per removed body.
#[test]
fn pg_the_body_foreign_keys_are_indexed() {
    let pg = Postgres::start();
    let db = "fkidx";
    let srv = pg_server(&pg, db);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.append("INBOX", "()", b"Subject: one\r\n\r\none\r\n");
    assert_eq!(pg.query(db, "SELECT max(version) FROM schema_version"), "2");
    for table in ["messages", "queue"] {
        // The statement PostgreSQL runs for the check, planned as it would be on a big table.
        let plan = pg.query(
            db,
            &format!(
                "SET enable_seqscan = off; \
                 EXPLAIN SELECT 1 FROM ONLY {table} x WHERE blob_id = 1 FOR KEY SHARE OF x"
            ),
        );
        assert!(plan.contains("Index"), "{table}: {plan}");
    }
}

/// Two SUBSCRIBEs at once, from two sessions, to an account one short of
/// [`tanba::store::MAX_SUBSCRIPTIONS`]: one is subscribed, the other gets `NO`, and the account
/// keeps exactly the limit. A psql session holding the subscriptions table (SHARE mode: reads
/// go on, inserts wait) makes the interleaving certain. Formerly both counted one short, both
/// waited only at their inserts, and the account ended one over the limit.
#[test]
fn pg_two_subscribes_at_once_never_pass_the_limit() {
    let max = tanba::store::MAX_SUBSCRIPTIONS;
    let pg = Postgres::start();
    let db = "subs";
    let srv = pg_server(&pg, db);
    // The default mailboxes are subscribed already.
    let have: usize = pg
        .query(db, "SELECT count(*) FROM subscriptions")
        .parse()
        .unwrap();
    pg.query(
        db,
        &format!(
            "INSERT INTO subscriptions (account_id, name) SELECT a.id, 'pre' || g \
             FROM accounts a, generate_series(1, {}) g WHERE a.email = 'alice@example.test'",
            max - 1 - have
        ),
    );
    let mut one = Imap::login(&srv, "alice@example.test", "secret-alice");
    let mut two = Imap::login(&srv, "alice@example.test", "secret-alice");
    let held = hold_lock(&pg, db, &srv, "LOCK TABLE subscriptions IN SHARE MODE");
    one.send(b"s1 SUBSCRIBE first\r\n");
    two.send(b"s2 SUBSCRIBE second\r\n");
    wait_for("both SUBSCRIBEs to wait for a lock", &srv, || {
        (lock_waiters(&pg, db) == 2).then_some(())
    });
    release(held);
    let (_, t1) = one.until_tagged("s1");
    let (_, t2) = two.until_tagged("s2");
    let oks = [&t1, &t2].iter().filter(|t| t.contains(" OK ")).count();
    assert_eq!(oks, 1, "{t1} / {t2}");
    assert!(
        [&t1, &t2]
            .iter()
            .any(|t| t.contains(" NO ") && t.contains("Too many subscriptions")),
        "{t1} / {t2}"
    );
    assert_eq!(
        pg.query(db, "SELECT count(*) FROM subscriptions"),
        max.to_string()
    );
    // Both sessions go on.
    one.ok("NOOP");
    two.ok("NOOP");
}
