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
