//! The store on PostgreSQL (issue 17, docs/cluster.md), against a real throw-away PostgreSQL
//! (`support::pg`): the `[store]` keys, the schema and its version, accounts through `tanba user`,
//! `tanba store migrate --to URL`, and `tanba serve` on PostgreSQL.

use std::path::{Path, PathBuf};

use crate::support::pg::Postgres;
use crate::support::*;

/// A config of the embedded default plus `store` lines (empty: none), in `dir`.
fn write_config(dir: &Path, store: &str) -> PathBuf {
    let p = dir.join("tanba.toml");
    let mut toml = base_toml(dir);
    if !store.is_empty() {
        toml.push_str(&format!("\n[store]\n{store}\n"));
    }
    std::fs::write(&p, toml).unwrap();
    p
}

fn pg_config(dir: &Path, pg: &Postgres, db: &str) -> PathBuf {
    write_config(
        dir,
        &format!("backend = \"postgres\"\nurl = \"{}\"", pg.url(db)),
    )
}

fn user_add(config: &Path, email: &str, password: &str) -> std::process::Output {
    tanba_with_config(
        config,
        &["user", "add", email, "--password-stdin"],
        Some(&format!("{password}\n")),
    )
}

fn config_error(store: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), store);
    let out = tanba_with_config(&p, &["config", "check"], None);
    assert_eq!(out.status.code(), Some(2), "config check should exit 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each wrong `[store]` value is refused with the key (and its line); a URL is never repeated,
/// since it may hold a password.
#[test]
fn pg_store_keys_are_checked() {
    let e = config_error("backend = \"mysql\"");
    assert!(e.contains("store.backend (line"), "{e}");
    assert!(e.contains("\"sled\" or \"postgres\""), "{e}");
    let e = config_error("backend = \"postgres\"");
    assert!(e.contains("store.url: required"), "{e}");
    let e = config_error("backend = \"postgres\"\nurl = \"mysql://u:hunter2secret@db/x\"");
    assert!(e.contains("store.url (line"), "{e}");
    assert!(!e.contains("hunter2secret"), "{e}");
    let e = config_error("url = \"postgres://tanba@127.0.0.1/x\"");
    assert!(e.contains("store.url (line"), "{e}");
    assert!(e.contains("only used with store.backend"), "{e}");
    // Both accepted spellings of a good config.
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        "backend = \"postgres\"\nurl = \"postgresql://tanba@127.0.0.1:5/x\"",
    );
    stdout_ok(&tanba_with_config(&p, &["config", "check"], None));
    let p = write_config(dir.path(), "backend = \"sled\"");
    stdout_ok(&tanba_with_config(&p, &["config", "check"], None));
}

/// `tanba user` on backend = "postgres": the schema is created with its version recorded, the
/// account and its default mailboxes and subscriptions are rows, and passwd/quota/del change
/// exactly those rows.
#[test]
fn pg_user_commands_write_the_database() {
    let pg = Postgres::start();
    pg.create_db("users");
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg_config(dir.path(), &pg, "users");

    let out = stdout_ok(&user_add(&cfg, "Alice@Example.test", "secret-alice"));
    assert!(out.contains("created alice@example.test"), "{out}");
    assert_eq!(
        pg.query("users", "SELECT max(version) FROM schema_version"),
        "2"
    );
    assert_eq!(
        pg.query(
            "users",
            "SELECT email || ' ' || left(password_hash, 10) FROM accounts"
        ),
        "alice@example.test $argon2id$"
    );
    assert_eq!(
        pg.query(
            "users",
            "SELECT string_agg(name || ':' || coalesce(special_use, '-') || ':' || uidnext, ' ' \
             ORDER BY name) FROM mailboxes"
        ),
        "Archive:\\Archive:1 Drafts:\\Drafts:1 INBOX:-:1 Junk:\\Junk:1 Sent:\\Sent:1 Trash:\\Trash:1"
    );
    assert_eq!(pg.query("users", "SELECT count(*) FROM subscriptions"), "6");
    // UIDVALIDITY as on sled: derived from the mailbox id, never reused.
    assert_eq!(
        pg.query(
            "users",
            "SELECT count(*) FROM mailboxes WHERE uidvalidity <> id"
        ),
        "0"
    );

    let list = stdout_ok(&tanba_with_config(&cfg, &["user", "list"], None));
    assert_eq!(list.trim(), "alice@example.test\t0 messages\t0 bytes");

    let dup = user_add(&cfg, "alice@example.test", "secret-alice");
    assert_eq!(dup.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let before = pg.query("users", "SELECT password_hash FROM accounts");
    stdout_ok(&tanba_with_config(
        &cfg,
        &["user", "passwd", "alice@example.test", "--password-stdin"],
        Some("another-secret\n"),
    ));
    let after = pg.query("users", "SELECT password_hash FROM accounts");
    assert!(after.starts_with("$argon2id$") && after != before);

    let q = stdout_ok(&tanba_with_config(
        &cfg,
        &["user", "quota", "alice@example.test", "2M"],
        None,
    ));
    assert!(q.contains("quota 2048 KiB"), "{q}");
    assert_eq!(pg.query("users", "SELECT limit_kib FROM quota"), "2048");

    // Aliases are on PostgreSQL (tests/it/pg_queue.rs has the rest).
    let out = stdout_ok(&tanba_with_config(&cfg, &["alias", "list"], None));
    assert_eq!(out.trim(), "no aliases");

    stdout_ok(&tanba_with_config(
        &cfg,
        &["user", "del", "alice@example.test"],
        None,
    ));
    assert_eq!(
        pg.query(
            "users",
            "SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM mailboxes) \
             + (SELECT count(*) FROM subscriptions) + (SELECT count(*) FROM quota)"
        ),
        "0"
    );
}

fn lines(untagged: Vec<Vec<u8>>) -> String {
    let l: Vec<String> = untagged.iter().map(|r| crate::imap::text(r)).collect();
    l.join("\n")
}

/// `tanba serve` runs on PostgreSQL: it creates the schema, and an account made with `tanba
/// user add` logs in over IMAP and manages mailboxes (CREATE, RENAME, DELETE, LIST, LSUB) whose
/// rows are in the database.
#[test]
fn pg_serve_runs_imap_mailboxes() {
    let pg = Postgres::start();
    pg.create_db("srv");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let mut toml = base_toml(dir.path());
    toml.push_str(&format!(
        "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\n",
        pg.url("srv")
    ));
    let srv = TestServer::start_toml(dir, &toml);
    assert_eq!(
        pg.query("srv", "SELECT max(version) FROM schema_version"),
        "2"
    );
    srv.add_user("pat@example.test", "pat-password-1");
    let mut c = crate::imap::Imap::login(&srv, "pat@example.test", "pat-password-1");
    c.ok("CREATE Projects/2026");
    c.ok("RENAME Projects Work");
    let list = lines(c.ok("LIST \"\" \"*\""));
    assert!(list.contains("\"/\" Work/2026"), "{list}");
    assert!(!list.contains("Projects"), "{list}");
    c.ok("DELETE Work/2026");
    let list = lines(c.ok("LIST \"\" \"Work*\""));
    assert!(!list.contains("\"/\" Work/2026"), "{list}");
    assert_eq!(
        pg.query(
            "srv",
            "SELECT string_agg(name, ',' ORDER BY name) FROM mailboxes WHERE name LIKE 'Work%'"
        ),
        "Work"
    );
}

/// `tanba store migrate --to URL` copies accounts (password hashes, ids), mailboxes
/// (UIDVALIDITY, UIDNEXT) and subscriptions and quota limits, verified; the copy then serves
/// `tanba user` on PostgreSQL, and new ids come after the copied ones. A second migrate into
/// the same database is refused before anything is written; a store with a message is copied.
#[test]
fn pg_store_migrate_copies_accounts_and_mailboxes() {
    let pg = Postgres::start();
    pg.create_db("mig");
    pg.create_db("mig2");
    // An embedded store made by a server (admin commands never create one), then stopped.
    let mut srv = TestServer::start_with(&[SLED_STORE]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob12");
    stdout_ok(&srv.tanba(&["user", "quota", "bob@example.test", "1M"], None));
    srv.stop();
    let sled_cfg = srv.config_path.clone();
    let dir = &srv.dir;

    let out = stdout_ok(&tanba_with_config(
        &sled_cfg,
        &["store", "migrate", "--to", &pg.url("mig")],
        None,
    ));
    assert!(
        out.contains("copied 2 accounts, 12 mailboxes, 12 subscriptions"),
        "{out}"
    );
    assert_eq!(
        pg.query("mig", "SELECT max(version) FROM schema_version"),
        "2"
    );
    assert_eq!(
        pg.query(
            "mig",
            "SELECT string_agg(email, ' ' ORDER BY email) FROM accounts"
        ),
        "alice@example.test bob@example.test"
    );
    assert_eq!(
        pg.query(
            "mig",
            "SELECT count(*) FROM mailboxes WHERE uidvalidity <> id OR uidnext <> 1"
        ),
        "0"
    );
    assert_eq!(
        pg.query(
            "mig",
            "SELECT a.email || ' ' || q.limit_kib FROM quota q JOIN accounts a ON a.id = q.account_id"
        ),
        "bob@example.test 1024"
    );

    // The copy serves the same accounts on PostgreSQL; a new account's ids come after the
    // copied ones (the id sequence was moved past them).
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_cfg = pg_config(pg_dir.path(), &pg, "mig");
    let list = stdout_ok(&tanba_with_config(&pg_cfg, &["user", "list"], None));
    assert_eq!(
        list.trim(),
        "alice@example.test\t0 messages\t0 bytes\nbob@example.test\t0 messages\t0 bytes"
    );
    stdout_ok(&user_add(&pg_cfg, "carol@example.test", "secret-carol"));
    assert_eq!(
        pg.query(
            "mig",
            "SELECT (SELECT min(m.id) FROM mailboxes m JOIN accounts a ON a.id = m.account_id \
             WHERE a.email = 'carol@example.test') > (SELECT max(id) FROM mailboxes m \
             WHERE m.account_id IN (SELECT id FROM accounts WHERE email <> 'carol@example.test'))"
        ),
        "t"
    );

    // Into a database that already holds accounts: refused.
    let again = tanba_with_config(
        &sled_cfg,
        &["store", "migrate", "--to", &pg.url("mig")],
        None,
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds accounts"));

    // A store with a message is copied too (tests/it/pg_migrate.rs covers the whole store).
    let mbox = dir.path().join("one.mbox");
    std::fs::write(
        &mbox,
        "From a@example.test Thu Jan  1 00:00:00 2026\nSubject: hi\n\nbody\n",
    )
    .unwrap();
    stdout_ok(&tanba_with_config(
        &sled_cfg,
        &[
            "import",
            "mbox",
            mbox.to_str().unwrap(),
            "--user",
            "alice@example.test",
        ],
        None,
    ));
    let out = stdout_ok(&tanba_with_config(
        &sled_cfg,
        &["store", "migrate", "--to", &pg.url("mig2")],
        None,
    ));
    assert!(out.contains(", 1 messages (1 bodies)"), "{out}");
    assert_eq!(pg.query("mig2", "SELECT count(*) FROM messages"), "1");
}

/// Mailbox creation on PostgreSQL, through the one command that reaches it before `serve` can
/// start: `tanba import mbox --mailbox A/B` creates the mailbox with its missing parent and
/// subscribes it, and stores the message there (a `messages` row).
#[test]
fn pg_import_creates_the_mailbox_and_its_parent() {
    let pg = Postgres::start();
    pg.create_db("imp");
    let dir = tempfile::tempdir().unwrap();
    let cfg = pg_config(dir.path(), &pg, "imp");
    stdout_ok(&user_add(&cfg, "alice@example.test", "secret-alice"));
    let mbox = dir.path().join("one.mbox");
    std::fs::write(
        &mbox,
        "From a@example.test Thu Jan  1 00:00:00 2026\nSubject: hi\n\nbody\n",
    )
    .unwrap();
    let out = tanba_with_config(
        &cfg,
        &[
            "import",
            "mbox",
            mbox.to_str().unwrap(),
            "--user",
            "alice@example.test",
            "--mailbox",
            "Projects/2026",
        ],
        None,
    );
    stdout_ok(&out);
    assert_eq!(
        pg.query(
            "imp",
            "SELECT count(*) FROM messages m JOIN mailboxes b ON b.id = m.mailbox_id \
             WHERE b.name = 'Projects/2026'"
        ),
        "1"
    );
    assert_eq!(
        pg.query(
            "imp",
            "SELECT string_agg(name || ':' || (uidvalidity = id) || ':' || uidnext, ' ' \
             ORDER BY name) FROM mailboxes WHERE name LIKE 'Projects%'"
        ),
        "Projects:true:1 Projects/2026:true:2"
    );
    assert_eq!(
        pg.query(
            "imp",
            "SELECT string_agg(name, ' ' ORDER BY name) FROM subscriptions \
             WHERE name LIKE 'Projects%'"
        ),
        "Projects/2026"
    );
}
