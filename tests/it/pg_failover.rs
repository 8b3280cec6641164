//! Operations on PostgreSQL (docs/cluster.md): failover from a primary to its streaming replica
//! under a running `tanba serve`, `tanba store check` on the database, its size in the metrics,
//! and `tanba backup`/`restore` pointing to PostgreSQL's own tools.

use std::path::Path;

use crate::imap::{Imap, Resp};
use crate::smtp::{Client as Smtp, Reply};
use crate::support::pg::Postgres;
use crate::support::*;

fn pg_toml(dir: &Path, url: &str) -> String {
    std::fs::create_dir_all(dir.join("trust")).unwrap();
    let mut toml = base_toml(dir);
    toml.push_str(&format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n"
    ));
    toml
}

/// A primary with a synchronous streaming replica, database `db`, a server whose `store.url`
/// lists both, and pat@ logged in over IMAP.
fn primary_replica_server(db: &str) -> (Postgres, Postgres, TestServer, Imap) {
    let primary = Postgres::start();
    primary.create_db(db);
    let replica = primary.replica();
    primary.require_sync_standby();
    let dir = tempfile::tempdir().unwrap();
    let toml = pg_toml(dir.path(), &primary.failover_url(&replica, db));
    let srv = TestServer::start_toml(dir, &toml);
    srv.add_user("pat@example.test", "pat-password-1");
    let c = Imap::login(&srv, "pat@example.test", "pat-password-1");
    (primary, replica, srv, c)
}

fn joined(u: &[Resp]) -> String {
    u.iter()
        .map(|r| crate::imap::text(r))
        .collect::<Vec<_>>()
        .join("\n")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends `command` until it answers OK, the session surviving a failover of the database: every
/// refusal meanwhile must be the temporary `NO [UNAVAILABLE]`, never a BAD, another NO or a
/// closed connection. Returns how many refusals there were.
fn ok_after_failover(c: &mut Imap, command: &str) -> usize {
    for refused in 0..600 {
        let (_, t) = c.cmd(command);
        if t.split(' ').nth(1) == Some("OK") {
            return refused;
        }
        assert!(
            t.contains("NO [UNAVAILABLE]"),
            "{command:?} during the failover: {t}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{command:?} still refused 60 s after the failover");
}

/// One MX transaction to pat@example.test; the first reply that is not a step forward (or the
/// final one).
/// Sends new mail until the MX takes it (250): every refusal meanwhile must be temporary (4xx,
/// never 5xx); panics after 60 s. `after`: the event, for the message.
fn smtp_accepted_again(srv: &TestServer, after: &str) {
    for _ in 0..600 {
        let r = mx_try(srv, &mail("after"));
        if r.code == 250 {
            return;
        }
        assert!((400..500).contains(&r.code), "{}", r.line());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("SMTP still refused 60 s after the {after}");
}

fn mx_try(srv: &TestServer, body: &[u8]) -> Reply {
    let mut c = Smtp::connect(srv.mx);
    for (line, want) in [
        ("EHLO sender.example", 250),
        ("MAIL FROM:<sender@remote.example>", 250),
        ("RCPT TO:<pat@example.test>", 250),
        ("DATA", 354),
    ] {
        let r = c.cmd(line);
        if r.code != want {
            return r;
        }
    }
    c.send(body);
    c.send(b".\r\n");
    c.reply()
}

fn mail(n: &str) -> Vec<u8> {
    format!(
        "From: sender@remote.example\r\nTo: pat@example.test\r\nSubject: failover {n}\r\n\r\n\
         body of message {n}\r\n"
    )
    .into_bytes()
}

/// A primary and a streaming replica (`pg_basebackup -R`, replication slot) with
/// `synchronous_standby_names` on the primary, and one `tanba serve` whose `store.url` names both
/// (`target_session_attrs=read-write`). Every message and mailbox acknowledged (`250`, tagged
/// OK) before the primary crashes (`pg_ctl stop -m immediate`) is on the replica once promoted;
/// the same IMAP session and new ones FETCH them, and SMTP takes new mail, on the new primary
/// without restarting tanba. The refusals meanwhile (fencing the old primary, the switch) are
/// temporary: `NO [UNAVAILABLE]`, SMTP 4xx.
#[test]
fn pg_failover_to_the_streaming_replica_loses_nothing_acknowledged() {
    let (primary, replica, srv, mut c) = primary_replica_server("fo");
    const N: usize = 10;
    for i in 0..N {
        let r = mx_try(&srv, &mail(&format!("A{i:02}")));
        assert_eq!(r.code, 250, "{}", r.line());
        c.ok(&format!("CREATE Acked{i:02}"));
    }
    // Synchronous replication: each 250 and tagged OK came after the replica flushed the
    // COMMIT.
    assert_eq!(
        replica.query(
            "fo",
            "SELECT (SELECT count(*) FROM messages) || ' ' || \
             (SELECT count(*) FROM mailboxes WHERE name LIKE 'Acked%')"
        ),
        format!("{N} {N}")
    );
    let sel = joined(&c.ok("SELECT INBOX"));
    assert!(sel.contains(&format!("* {N} EXISTS")), "{sel}");

    // Fencing the primary before a switchover (`default_transaction_read_only`, as failover
    // tools do): no host takes writes now (the pool drops its connections to the fenced one,
    // the replica is read-only), a temporary refusal, not an internal error. A CREATE or two
    // may still pass before the server has applied the reload.
    primary.query(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    primary.query("postgres", "SELECT pg_reload_conf()");
    let mut fenced_ok = 0;
    loop {
        let (_, t) = c.cmd(&format!("CREATE Fenced{fenced_ok}"));
        if t.split(' ').nth(1) == Some("OK") && fenced_ok < 50 {
            fenced_ok += 1;
            continue;
        }
        assert!(t.contains("NO [UNAVAILABLE]"), "{t}");
        break;
    }

    primary.crash();
    // Between the crash and the promotion: the replica is read-only and the primary gone, so
    // a write is refused, temporarily.
    let (_, t) = c.cmd("CREATE DuringSwitch");
    assert!(t.contains("NO [UNAVAILABLE]"), "{t}");
    let r = mx_try(&srv, &mail("refused"));
    assert!((400..500).contains(&r.code), "{}", r.line());
    replica.promote();

    // The session that saw the failover writes and reads on the new primary.
    ok_after_failover(&mut c, "CREATE AfterFailover");
    let list: Vec<String> = c
        .ok("LIST \"\" \"*\"")
        .iter()
        .map(|r| crate::imap::text(r))
        .collect();
    for i in 0..N {
        let name = format!("\"/\" Acked{i:02}");
        assert!(list.iter().any(|l| l.ends_with(&name)), "{name}: {list:?}");
    }
    assert!(
        list.iter().any(|l| l.ends_with("\"/\" AfterFailover")),
        "{list:?}"
    );
    assert!(!list.iter().any(|l| l.contains("DuringSwitch")), "{list:?}");
    assert_eq!(
        replica.query(
            "fo",
            "SELECT count(*) FROM mailboxes WHERE name LIKE 'Fenced%'"
        ),
        fenced_ok.to_string()
    );
    let fetched = joined(&c.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"));
    for i in 0..N {
        assert!(
            fetched.contains(&format!("Subject: failover A{i:02}")),
            "{fetched}"
        );
    }
    assert!(!fetched.contains("refused"), "{fetched}");

    // SMTP takes new mail on the new primary (4xx until it does, never 5xx).
    smtp_accepted_again(&srv, "failover");
    // A new login, and an account made through the running server, on the new primary.
    srv.add_user("sam@example.test", "sam-password-1");
    let mut d = Imap::login(&srv, "pat@example.test", "pat-password-1");
    let sel = joined(&d.ok("SELECT INBOX"));
    assert!(sel.contains(&format!("* {} EXISTS", N + 1)), "{sel}");
    let f = joined(&d.ok(&format!("FETCH {} BODY.PEEK[TEXT]", N + 1)));
    assert!(f.contains("body of message after"), "{f}");
    // Flags, a copy (a shared body), an expunge: `tanba store check` finds the new primary's
    // rows consistent.
    d.ok("STORE 1 +FLAGS (\\Seen)");
    d.ok("COPY 1:2 Acked00");
    d.ok("STORE 2 +FLAGS (\\Deleted)");
    d.ok("EXPUNGE");
    let out = srv.tanba(&["store", "check"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        replica.query("fo", "SELECT count(*) FROM blobs WHERE refcount = 2"),
        "1"
    );
    let mut e = Imap::login(&srv, "sam@example.test", "sam-password-1");
    e.ok("CREATE Fresh");
    assert_eq!(
        replica.query(
            "fo",
            "SELECT string_agg(a.email || ':' || m.name, ' ' ORDER BY a.email) FROM mailboxes m \
             JOIN accounts a ON a.id = m.account_id WHERE m.name IN ('AfterFailover', 'Fresh')"
        ),
        "pat@example.test:AfterFailover sam@example.test:Fresh"
    );
    assert_eq!(
        replica.query("fo", "SELECT pg_is_in_recovery()"),
        "f",
        "the replica is the primary now"
    );
}

/// A switchover where the old primary stays up, fenced read-only
/// (`default_transaction_read_only`, not restarted): the pool drops its connections to it (after
/// the first refused write, idle ones are dropped) and follows `store.url` to the promoted standby, so writes succeed
/// again without restarting tanba; what was acknowledged before is there.
#[test]
fn pg_switchover_away_from_a_fenced_primary_that_stays_up() {
    let (primary, replica, srv, mut c) = primary_replica_server("sw");
    for i in 0..3 {
        let r = mx_try(&srv, &mail(&format!("B{i}")));
        assert_eq!(r.code, 250, "{}", r.line());
    }
    c.ok("CREATE Before");

    primary.query(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    primary.query("postgres", "SELECT pg_reload_conf()");
    replica.promote();
    ok_after_failover(&mut c, "CREATE AfterSwitchover");
    smtp_accepted_again(&srv, "switchover");
    let sel = joined(&c.ok("SELECT INBOX"));
    assert!(sel.contains("* 4 EXISTS"), "{sel}");
    let fetched = joined(&c.ok("UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"));
    for n in ["B0", "B1", "B2", "after"] {
        assert!(
            fetched.contains(&format!("Subject: failover {n}")),
            "{fetched}"
        );
    }
    assert_eq!(
        replica.query(
            "sw",
            "SELECT (SELECT count(*) FROM messages) || ' ' || (SELECT string_agg(name, ',' \
             ORDER BY name) FROM mailboxes WHERE name IN ('Before', 'AfterSwitchover'))"
        ),
        "4 AfterSwitchover,Before"
    );
    // Nothing was written to the fenced old primary after the fence.
    assert_eq!(
        primary.query(
            "sw",
            "SELECT count(*) FROM mailboxes WHERE name = 'AfterSwitchover'"
        ),
        "0"
    );
}

/// A query the database ends while it runs (`pg_terminate_backend`, as a shutdown or a failover
/// manager does: SQLSTATE 57P01) is a temporary refusal, `NO [UNAVAILABLE]`, not an internal
/// error; the next command runs on a new connection. The APPEND is held on the mailbox row's
/// lock (taken by a psql session) until it is terminated.
#[test]
fn pg_a_terminated_query_is_a_temporary_error() {
    use std::io::Write;
    let pg = Postgres::start();
    pg.create_db("term");
    let dir = tempfile::tempdir().unwrap();
    let toml = pg_toml(dir.path(), &pg.url("term"));
    let srv = TestServer::start_toml(dir, &toml);
    srv.add_user("pat@example.test", "pat-password-1");
    let mut c = Imap::login(&srv, "pat@example.test", "pat-password-1");
    let mut holder = pg.session("term");
    let mut stdin = holder.stdin.take().unwrap();
    stdin
        .write_all(b"BEGIN;\nSELECT id FROM mailboxes WHERE name = 'INBOX' FOR UPDATE;\n")
        .unwrap();
    stdin.flush().unwrap();
    let wait_for = |sql: &str| -> String {
        for _ in 0..600 {
            let got = pg.query("term", sql);
            if !got.is_empty() {
                return got;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("nothing for {sql} after 60 s");
    };
    wait_for(
        "SELECT pid FROM pg_stat_activity WHERE datname = 'term' \
         AND state = 'idle in transaction'",
    );
    let append = std::thread::spawn(move || {
        let t = c.append("INBOX", "()", b"Subject: held\r\n\r\nheld\r\n");
        (c, t)
    });
    let pid = wait_for(
        "SELECT pid FROM pg_stat_activity WHERE datname = 'term' AND wait_event_type = 'Lock'",
    );
    assert_eq!(
        pg.query("term", &format!("SELECT pg_terminate_backend({pid})")),
        "t"
    );
    let (mut c, t) = append.join().unwrap();
    assert!(t.contains("NO [UNAVAILABLE]"), "{t}");
    drop(stdin);
    holder.wait().unwrap();
    let t = c.append("INBOX", "()", b"Subject: next\r\n\r\nnext\r\n");
    assert!(t.contains(" OK "), "{t}");
    assert_eq!(
        pg.query("term", "SELECT count(*) FROM messages"),
        "1",
        "the terminated APPEND stored nothing"
    );
}

/// A body of `size` bytes as blob `id`, in chunks of 256 KiB (pg/blob.rs), with `refs`
/// references.
fn blob_sql(id: u64, size: usize, refs: i32) -> String {
    let mut sql = format!("INSERT INTO blobs (id, size, refcount) VALUES ({id}, {size}, {refs});");
    let chunk = 256 * 1024;
    for (n, start) in (0..size).step_by(chunk).enumerate() {
        let len = chunk.min(size - start);
        sql.push_str(&format!(
            "INSERT INTO blob_chunks (blob_id, n, data) VALUES ({id}, {n}, \
             convert_to(repeat('x', {len}), 'UTF8'));"
        ));
    }
    sql
}

/// `tanba store check` on PostgreSQL: a database whose rows keep the invariants (two messages
/// in INBOX, one `\Seen`, one body shared with a queue entry, counters and quota usage to
/// match) is consistent, with or without a running server; then each broken invariant is
/// reported (counters, UIDNEXT, HIGHESTMODSEQ, a size, a reference count, a chunk gap, quota
/// usage) with exit 1. `tanba backup` and `tanba restore` refuse, pointing to pg_dump.
#[test]
fn pg_store_check_reports_each_broken_invariant() {
    let pg = Postgres::start();
    pg.create_db("chk");
    let dir = tempfile::tempdir().unwrap();
    let toml = pg_toml(dir.path(), &pg.url("chk"));
    let mut srv = TestServer::start_toml(dir, &toml);
    srv.add_user("alice@example.test", "secret-alice");
    // Through the running server (the admin socket).
    let out = srv.tanba(&["store", "check"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "store is consistent");

    // Rows as the store writes them: a 300 KiB body (two chunks) in INBOX as UID 1 and in
    // the queue, a small \Seen one as UID 2; counters, modseqs and quota to match.
    let big = 300 * 1024;
    let mut sql = blob_sql(9001, big, 2);
    sql.push_str(&blob_sql(9002, 10, 1));
    sql.push_str(&format!(
        "INSERT INTO messages (mailbox_id, uid, blob_id, size, internal_date, flags, modseq) \
         SELECT id, 1, 9001, {big}, 0, '{{}}', 2 FROM mailboxes WHERE name = 'INBOX';\
         INSERT INTO messages (mailbox_id, uid, blob_id, size, internal_date, flags, modseq) \
         SELECT id, 2, 9002, 10, 0, '{{\\\\seen}}', 3 FROM mailboxes WHERE name = 'INBOX';\
         UPDATE mailboxes SET uidnext = 3, messages = 2, unseen = 1, highest_modseq = 3 \
         WHERE name = 'INBOX';\
         INSERT INTO quota (account_id, used_bytes, used_messages) \
         SELECT id, {}, 2 FROM accounts;\
         INSERT INTO queue (id, next_attempt, record, blob_id) VALUES (9003, 0, '\\x00', 9001);",
        big + 10
    ));
    pg.query("chk", &sql);
    let out = srv.tanba(&["store", "check"], None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The database's size in the metrics.
    let r = crate::http::get(srv.metrics.expect("http.metrics"), "localhost", "/metrics");
    let bytes: u64 = r
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("tanba_store_bytes "))
        .unwrap_or_else(|| panic!("no tanba_store_bytes in {}", r.text()))
        .parse()
        .unwrap();
    let size: u64 = pg
        .query("chk", "SELECT pg_database_size('chk')")
        .parse()
        .unwrap();
    // The same order of magnitude (the database may grow a little between the two reads).
    assert!(
        bytes > 1_000_000 && bytes / 2 < size && size / 2 < bytes,
        "{bytes} vs {size}"
    );
    // A backup through the running server: refused, pointing to PostgreSQL's tools.
    let b = srv.dir.path().join("b");
    let out = srv.tanba(&["backup", b.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("pg_dump"), "{}", stderr(&out));

    // Without a server from here on.
    srv.stop();
    let cfg = srv.config_path.clone();
    let check = || tanba_with_config(&cfg, &["store", "check"], None);
    let out = check();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    pg.query(
        "chk",
        "UPDATE mailboxes SET messages = 5, unseen = 2, uidnext = 2, highest_modseq = 1 \
         WHERE name = 'INBOX';\
         UPDATE messages SET size = 11 WHERE uid = 2;\
         UPDATE blobs SET refcount = 1 WHERE id = 9001;\
         DELETE FROM blob_chunks WHERE blob_id = 9001 AND n = 0;\
         UPDATE quota SET used_messages = 7;",
    );
    let out = check();
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    for want in [
        "store has 8 problems:",
        ": messages is 5, it holds 2",
        ": unseen is 2, it holds 1 without \\Seen",
        ": uidnext 2 is not above UID 2",
        ": highest_modseq 1 is below a message's 3",
        "message 2 of mailbox ",
        ": size 11 but its body has 10 bytes",
        "body 0000000000002329: reference count 1, referenced 2 times",
        "body 0000000000002329: 45056 bytes in 1 chunks numbered 1..1, the blob records 307200 bytes",
        "quota of alice@example.test: usage recorded 307210 bytes in 7 messages, counted 307211 bytes in 2",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }

    // Backups are PostgreSQL's own tools' job.
    let out = tanba_with_config(&cfg, &["backup", b.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("pg_dump"), "{}", stderr(&out));
    assert!(!b.exists() || std::fs::read_dir(&b).unwrap().next().is_none());
    let out = tanba_with_config(&cfg, &["restore", srv.dir.path().to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("pg_restore"), "{}", stderr(&out));
    let out = tanba_with_config(&cfg, &["store", "rebuild"], None);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stderr(&out).contains("pg_restore"), "{}", stderr(&out));
}
