//! The PostgreSQL backend's node plumbing (docs/cluster.md): the LISTEN connection that feeds
//! IMAP IDLE (and comes back after it is cut), TLS to the database (`sslmode`, `store.ca_file`,
//! checked in `pg_stat_ssl`; client certificates, `sslcert`/`sslkey`), and the `store.pool` /
//! `store.ca_file` keys.

use std::path::Path;

use crate::imap::{text, Imap};
use crate::support::pg::{Options, Postgres};
use crate::support::pki::{openssl, self_signed_p256, sign_with_ca};
use crate::support::*;

fn store_toml(dir: &Path, store: &str) -> String {
    format!("{}\n[store]\n{store}\n", base_toml(dir))
}

fn start(url: &str, extra: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let toml = store_toml(
        dir.path(),
        &format!("backend = \"postgres\"\nurl = \"{url}\"\n{extra}"),
    );
    TestServer::start_toml(dir, &toml)
}

/// The (pid) of tanba's LISTEN connection to `db`, if there is one.
fn listener(pg: &Postgres, db: &str) -> Option<String> {
    let pids = pg.query(
        "postgres",
        &format!(
            "SELECT string_agg(pid::text, ',') FROM pg_stat_activity \
             WHERE datname = '{db}' AND query LIKE 'LISTEN%'"
        ),
    );
    (!pids.is_empty()).then_some(pids)
}

/// How often the log shows a read of mailbox `id`'s row (what an IMAP session's re-read of its
/// selected mailbox starts with).
fn rereads(pg: &Postgres) -> usize {
    pg.log()
        .lines()
        .filter(|l| l.contains("SELECT * FROM mailboxes WHERE id = $1"))
        .count()
}

/// `tanba serve` on PostgreSQL LISTENs on one connection of its own before it is up; a session
/// in IDLE re-reads its mailbox when a notification names it (garbage and other mailboxes are
/// ignored, and the server lives on); when the LISTEN connection is killed, the node connects
/// again, LISTENs again and makes every session re-read (the resync). No connection is sent a
/// `SET synchronous_commit` (it comes in the startup packet).
#[test]
fn pg_node_listens_and_relistens_after_losing_the_connection() {
    let pg = Postgres::start_with(Options {
        settings: vec!["log_statement=all".into()],
        ..Options::default()
    });
    pg.create_db("ln");
    let srv = start(&pg.url("ln"), "");
    // Listening before the server was up; its own connection, named for the operator.
    let first = listener(&pg, "ln").expect("a LISTEN connection");
    assert!(!first.contains(','), "one LISTEN connection: {first}");
    assert_eq!(
        pg.query(
            "ln",
            &format!("SELECT application_name FROM pg_stat_activity WHERE pid = {first}")
        ),
        "tanba-listen"
    );
    srv.add_user("lee@example.test", "lee-password-1");
    let (acct, inbox) = {
        let r = pg.query(
            "ln",
            "SELECT account_id || ' ' || id FROM mailboxes WHERE name = 'INBOX'",
        );
        let (a, m) = r.split_once(' ').unwrap();
        (a.to_string(), m.to_string())
    };
    let mut c = Imap::login(&srv, "lee@example.test", "lee-password-1");
    c.set_timeout(std::time::Duration::from_secs(60));
    c.ok("EXAMINE INBOX");
    c.send(b"i1 IDLE\r\n");
    assert!(c.response().starts_with(b"+ "), "IDLE continuation");
    let before = rereads(&pg);

    // Not tanba's payloads, another mailbox, then INBOX: only the last one is for this session.
    for payload in [
        "garbage".to_string(),
        "1:2:3".into(),
        format!("{acct}:"),
        "9".repeat(7000),
        format!("{acct}:{}", u64::MAX),
        format!("{acct}:{inbox}"),
    ] {
        pg.query(
            "ln",
            &format!("SELECT pg_notify('tanba_change', '{payload}')"),
        );
    }
    wait_for("the IDLE session re-reading INBOX", &srv, || {
        (rereads(&pg) > before).then_some(())
    });

    // Cut the LISTEN connection: the node comes back with a new one and sessions re-read.
    let before = rereads(&pg);
    pg.query("ln", &format!("SELECT pg_terminate_backend({first})"));
    let second = wait_for("a new LISTEN connection", &srv, || {
        listener(&pg, "ln").filter(|p| *p != first)
    });
    assert!(!second.contains(','), "one LISTEN connection: {second}");
    wait_for("the resync re-read after LISTEN came back", &srv, || {
        (rereads(&pg) > before).then_some(())
    });
    // And it forwards again.
    let before = rereads(&pg);
    pg.query(
        "ln",
        &format!("SELECT pg_notify('tanba_change', '{acct}:{inbox}')"),
    );
    wait_for(
        "a re-read after a notification on the new connection",
        &srv,
        || (rereads(&pg) > before).then_some(()),
    );
    c.send(b"DONE\r\n");
    assert_eq!(text(&c.response()), "i1 OK IDLE terminated");
    c.ok("NOOP");
    // synchronous_commit comes with each connection's startup, not a SET per query.
    let log = pg.log();
    assert!(log.contains("SELECT * FROM mailboxes WHERE id = $1"));
    assert!(!log.contains("SET synchronous_commit"), "a SET per call");
}

/// The next response that is not `* n RECENT`.
fn next_but_recent(c: &mut Imap) -> String {
    loop {
        let r = text(&c.response());
        if !(r.starts_with("* ") && r.ends_with(" RECENT")) {
            return r;
        }
    }
}

/// Two `tanba serve` on one database: a session in IDLE on node B hears, through LISTEN/NOTIFY,
/// an SMTP delivery and an IMAP APPEND made on node A (`* n EXISTS`), and FETCHes the bytes
/// node A stored.
#[test]
fn pg_two_nodes_idle_on_b_sees_delivery_on_a() {
    let pg = Postgres::start();
    pg.create_db("two");
    let a = start(&pg.url("two"), "");
    let b = start(&pg.url("two"), "");
    a.add_user("nia@example.test", "nia-password-1");
    let mut c = Imap::login(&b, "nia@example.test", "nia-password-1");
    // Generous: the assertion is on what arrives, not when.
    c.set_timeout(std::time::Duration::from_secs(60));
    c.ok("SELECT INBOX");
    c.send(b"i1 IDLE\r\n");
    assert!(c.response().starts_with(b"+ "), "IDLE continuation");

    let mut s = crate::smtp::Client::connect(a.mx);
    s.ok("EHLO sender.example", "250");
    let body = b"From: sender@remote.example\r\nTo: nia@example.test\r\nSubject: across nodes\r\n\r\nhello from node A\r\n";
    let r = s.send_mail("sender@remote.example", &["nia@example.test"], body);
    assert_eq!(r.code, 250, "{}", r.line());
    s.ok("QUIT", "221");
    assert_eq!(next_but_recent(&mut c), "* 1 EXISTS");

    let mut other = Imap::login(&a, "nia@example.test", "nia-password-1");
    let t = other.append(
        "INBOX",
        "(\\Seen)",
        b"Subject: appended on A\r\n\r\nsecond\r\n",
    );
    assert!(t.contains("OK"), "{t}");
    assert_eq!(next_but_recent(&mut c), "* 2 EXISTS");
    c.send(b"DONE\r\n");
    let (_, done) = c.until_tagged("i1");
    assert!(done.starts_with("i1 OK"), "{done}");
    let fetched = c.ok("FETCH 1 BODY.PEEK[TEXT]");
    let all: Vec<String> = fetched.iter().map(|r| text(r)).collect();
    assert!(all.join("\n").contains("hello from node A"), "{all:?}");
}

/// A test CA, a server certificate from it for 127.0.0.1, and another CA, in `dir`.
fn pki(dir: &Path) {
    self_signed_p256(dir, "ca", "/CN=Tanba test database CA", 30, &[]);
    self_signed_p256(dir, "other", "/CN=Another CA", 30, &[]);
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    sign_with_ca(
        dir,
        "server",
        30,
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
}

/// A config in `dir` for `url` and `ca_file` (empty: none).
fn tls_config(dir: &Path, url: &str, ca_file: &str) -> std::path::PathBuf {
    let p = dir.join("tanba.toml");
    let mut store = format!("backend = \"postgres\"\nurl = \"{url}\"");
    if !ca_file.is_empty() {
        store.push_str(&format!("\nca_file = \"{ca_file}\""));
    }
    std::fs::write(&p, store_toml(dir, &store)).unwrap();
    p
}

/// sslmode=verify-full with store.ca_file: every connection of tanba's (pool and LISTEN) is
/// TLS in `pg_stat_ssl` and IMAP works over it; a CA that did not sign the server's
/// certificate, and verify-full to a name the certificate lacks, are refused with an error
/// naming store.url and store.ca_file; verify-ca takes that name; sslmode=require to a server
/// without TLS is refused.
#[test]
fn pg_tls_verify_full_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path());
    let pg = Postgres::start_with(Options {
        ssl: Some((
            certs.path().join("server.pem"),
            certs.path().join("server.key"),
        )),
        ..Options::default()
    });
    pg.create_db("tls");
    let ca = certs.path().join("ca.pem");
    let ca = ca.to_str().unwrap();
    let url = format!("{}?sslmode=verify-full", pg.url("tls"));
    let srv = start(&url, &format!("ca_file = \"{ca}\""));
    srv.add_user("tess@example.test", "tess-password-1");
    let mut c = Imap::login(&srv, "tess@example.test", "tess-password-1");
    c.ok("CREATE Reports");
    let tanba = |sql: &str| tanba_connections(&pg, "tls", "tls", sql);
    assert_eq!(tanba("count(*) FILTER (WHERE NOT s.ssl)"), "0");
    assert_eq!(
        tanba("string_agg(DISTINCT a.application_name, ',')"),
        "tanba,tanba-listen"
    );
    assert_eq!(
        tanba("count(*) FILTER (WHERE s.ssl AND a.application_name = 'tanba-listen')"),
        "1"
    );
    drop(c);
    drop(srv);

    // The wrong CA, then a name the certificate does not hold.
    let dir = tempfile::tempdir().unwrap();
    let other = certs.path().join("other.pem");
    for (url, ca_file) in [
        (url.clone(), other.to_str().unwrap()),
        (
            format!(
                "postgres://tanba@localhost:{}/tls?sslmode=verify-full",
                pg.port
            ),
            ca,
        ),
    ] {
        let cfg = tls_config(dir.path(), &url, ca_file);
        let out = tanba_with_config(&cfg, &["user", "list"], None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {err}");
        assert!(
            err.contains("cannot connect to the database (store.url)"),
            "{err}"
        );
        assert!(err.contains("store.ca_file"), "{err}");
        assert!(err.contains("invalid peer certificate"), "{err}");
    }
    // verify-ca checks the chain only.
    let cfg = tls_config(
        dir.path(),
        &format!(
            "postgres://tanba@localhost:{}/tls?sslmode=verify-ca",
            pg.port
        ),
        ca,
    );
    let out = tanba_with_config(&cfg, &["user", "list"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tess@example.test"));

    // require: TLS or nothing.
    let plain = Postgres::start();
    plain.create_db("p");
    let cfg = tls_config(
        dir.path(),
        &format!("{}?sslmode=require", plain.url("p")),
        "",
    );
    let out = tanba_with_config(&cfg, &["user", "list"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot connect to the database (store.url)"),
        "{err}"
    );
}

/// A client certificate `dir/STEM.pem` for user `cn`, signed by `dir/ca.pem`, and its key
/// `dir/STEM.key` (`-newkey`: e.g. `ec` with P-256, PKCS#8), mode 0600.
fn client_cert(dir: &Path, stem: &str, cn: &str, newkey: &[&str]) {
    let (key, csr, subj) = (
        format!("{stem}.key"),
        format!("{stem}.csr"),
        format!("/CN={cn}"),
    );
    let mut req = vec!["req", "-new", "-newkey"];
    req.extend(newkey);
    req.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
    openssl(dir, &req);
    sign_with_ca(
        dir,
        stem,
        30,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    );
    chmod(&dir.join(&key), 0o600);
}

/// `SELECT sql` (asked on database `via`) over Tanba's connections to database `db`, with
/// their TLS state: `a` is `pg_stat_activity`, `s` is `pg_stat_ssl`.
fn tanba_connections(pg: &Postgres, via: &str, db: &str, sql: &str) -> String {
    pg.query(
        via,
        &format!(
            "SELECT {sql} FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.datname = '{db}' AND a.application_name LIKE 'tanba%'"
        ),
    )
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A TLS PostgreSQL that wants a client certificate signed by `certs/ca.pem` on every TCP
/// connection (`hostssl all all 127.0.0.1/32 cert`), but for database `postgres` (trust: the
/// test's own psql). Its CA file and pg_hba.conf live in `conf`, readable by the server (as
/// root it runs as nobody).
fn cert_postgres(certs: &Path, conf: &Path) -> Postgres {
    chmod(conf, 0o755);
    let (ca, hba) = (conf.join("ca.pem"), conf.join("pg_hba.conf"));
    std::fs::copy(certs.join("ca.pem"), &ca).unwrap();
    std::fs::write(
        &hba,
        "local all all trust\n\
         host postgres all 127.0.0.1/32 trust\n\
         hostssl all all 127.0.0.1/32 cert\n",
    )
    .unwrap();
    chmod(&ca, 0o644);
    chmod(&hba, 0o644);
    Postgres::start_with(Options {
        ssl: Some((certs.join("server.pem"), certs.join("server.key"))),
        settings: vec![
            format!("ssl_ca_file={}", ca.display()),
            format!("hba_file={}", hba.display()),
        ],
    })
}

/// Mutual TLS (docs/cluster.md, "TLS to the database"): with `sslcert`/`sslkey` in store.url a
/// node serves IMAP (login, APPEND, FETCH) on a database that requires a client certificate,
/// and its pool and LISTEN connections both show that certificate in `pg_stat_ssl`; SEC1 and
/// PKCS#1 (RSA) keys work as well as PKCS#8; without the parameters `tanba serve` does not
/// start and says the database wants a client certificate.
#[test]
fn pg_client_certificate_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    pki(certs.path());
    client_cert(
        certs.path(),
        "client",
        "tanba",
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let pg = cert_postgres(certs.path(), conf.path());
    pg.create_db("mtls");
    let (ca, cert, key) = (
        certs.path().join("ca.pem"),
        certs.path().join("client.pem"),
        certs.path().join("client.key"),
    );
    let base = format!("{}?sslmode=verify-full", pg.url("mtls"));
    let url = |cert: &Path, key: &Path| {
        format!("{base}&sslcert={}&sslkey={}", cert.display(), key.display())
    };
    let ca_line = format!("ca_file = \"{}\"", ca.display());
    let srv = start(&url(&cert, &key), &ca_line);
    srv.add_user("mia@example.test", "mia-password-1");
    let mut c = Imap::login(&srv, "mia@example.test", "mia-password-1");
    let msg = b"Subject: over mutual TLS\r\n\r\nhello\r\n";
    let t = c.append("INBOX", "(\\Seen)", msg);
    assert!(t.contains("OK"), "{t}");
    c.ok("SELECT INBOX");
    let r = c.ok("FETCH 1 (BODY.PEEK[])");
    let all: Vec<u8> = r.concat();
    assert!(
        all.windows(msg.len()).any(|w| w == msg),
        "{}",
        String::from_utf8_lossy(&all)
    );
    let tanba = |sql: &str| tanba_connections(&pg, "postgres", "mtls", sql);
    assert_eq!(
        tanba("string_agg(DISTINCT a.application_name || ' ' || s.client_dn, ',')"),
        "tanba /CN=tanba,tanba-listen /CN=tanba"
    );
    assert_eq!(
        tanba("count(*) FILTER (WHERE s.client_dn IS DISTINCT FROM '/CN=tanba')"),
        "0"
    );
    drop(c);
    drop(srv);

    // The same certificate with its key as SEC1 ("EC PRIVATE KEY"), then an RSA one (PKCS#1).
    let dir = tempfile::tempdir().unwrap();
    let sec1 = certs.path().join("client-sec1.key");
    openssl(
        certs.path(),
        &["ec", "-in", "client.key", "-out", "client-sec1.key"],
    );
    chmod(&sec1, 0o600);
    client_cert(certs.path(), "rsa", "tanba", &["rsa:2048"]);
    // `req -newkey` wrote PKCS#8: the same key as PKCS#1 ("RSA PRIVATE KEY").
    openssl(
        certs.path(),
        &[
            "rsa",
            "-in",
            "rsa.key",
            "-traditional",
            "-out",
            "rsa-pkcs1.key",
        ],
    );
    let pkcs1 = certs.path().join("rsa-pkcs1.key");
    chmod(&pkcs1, 0o600);
    assert!(std::fs::read_to_string(&pkcs1)
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    for (cert, key) in [(&cert, &sec1), (&certs.path().join("rsa.pem"), &pkcs1)] {
        let cfg = tls_config(dir.path(), &url(cert, key), ca.to_str().unwrap());
        let out = tanba_with_config(&cfg, &["user", "list"], None);
        assert!(
            out.status.success(),
            "{}: {}",
            key.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("mia@example.test"));
    }

    // No client certificate: the node does not start, and says why.
    let cfg = tls_config(dir.path(), &base, ca.to_str().unwrap());
    let out = tanba_with_config(&cfg, &["serve"], None);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot connect to the database (store.url)"),
        "{err}"
    );
    assert!(
        err.contains("connection requires a valid client certificate"),
        "{err}"
    );
    assert!(err.contains("sslcert and sslkey"), "{err}");
}

/// `sslcert`/`sslkey` are checked by `tanba config check` (exit 2, the parameter and the path
/// named, never the URL): one without the other, with sslmode=disable, a relative path, a key
/// open to group or others (0644; as libpq), a missing file, a key not the certificate's.
#[test]
fn pg_client_certificate_parameters_are_checked() {
    let certs = tempfile::tempdir().unwrap();
    pki(certs.path());
    client_cert(
        certs.path(),
        "client",
        "tanba",
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let (cert, key) = (
        certs.path().join("client.pem"),
        certs.path().join("client.key"),
    );
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let check = |query: &str| {
        let e = config_error(&format!(
            "backend = \"postgres\"\nurl = \"postgres://tanba:secret-pw-1@127.0.0.1:5/x?{query}\""
        ));
        assert!(e.contains("store.url (line"), "{e}");
        assert!(!e.contains("secret-pw-1"), "{e}");
        e
    };
    let e = check(&format!("sslmode=require&sslcert={cert}"));
    assert!(e.contains("sslcert needs sslkey"), "{e}");
    let e = check(&format!("sslkey={key}"));
    assert!(e.contains("sslkey needs sslcert"), "{e}");
    let e = check(&format!("sslmode=disable&sslcert={cert}&sslkey={key}"));
    assert!(e.contains("sslmode=disable"), "{e}");
    let e = check(&format!("sslcert=client.pem&sslkey={key}"));
    assert!(e.contains("sslcert must be an absolute path"), "{e}");
    let e = check(&format!("sslcert={cert}&sslkey=/nonexistent/client.key"));
    assert!(
        e.contains("sslkey /nonexistent/client.key: no such file"),
        "{e}"
    );
    let other = certs.path().join("server.key");
    chmod(&other, 0o600);
    let e = check(&format!("sslcert={cert}&sslkey={}", other.display()));
    assert!(e.contains("is not the private key of sslcert"), "{e}");
    chmod(Path::new(key), 0o644);
    let e = check(&format!("sslcert={cert}&sslkey={key}"));
    assert!(
        e.contains(&format!("sslkey {key}: has permissions 0644")),
        "{e}"
    );
    assert!(e.contains("0600"), "{e}");
    // As libpq: 0640 only when owned by root.
    chmod(Path::new(key), 0o640);
    let dir = tempfile::tempdir().unwrap();
    let cfg = tls_config(
        dir.path(),
        &format!("postgres://tanba@127.0.0.1:5/x?sslmode=require&sslcert={cert}&sslkey={key}"),
        "",
    );
    let out = tanba_with_config(&cfg, &["config", "check"], None);
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(
        out.status.success(),
        root,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config_error(store: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tanba.toml");
    std::fs::write(&p, store_toml(dir.path(), store)).unwrap();
    let out = tanba_with_config(&p, &["config", "check"], None);
    assert_eq!(out.status.code(), Some(2), "config check should exit 2");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `store.pool` is 1..=1024; `store.ca_file` only with a checking sslmode, and readable; every
/// sslmode of libpq but allow is accepted (require no longer refused).
#[test]
fn pg_pool_and_tls_keys_are_checked() {
    let url = "url = \"postgres://tanba@127.0.0.1:5/x";
    let pg = |rest: &str| format!("backend = \"postgres\"\n{url}{rest}");
    for pool in ["0", "1025"] {
        let e = config_error(&pg(&format!("\"\npool = {pool}")));
        assert!(e.contains("store.pool (line"), "{e}");
        assert!(e.contains("from 1 to 1024"), "{e}");
    }
    let e = config_error(&pg("?sslmode=require\"\nca_file = \"/etc/hostname\""));
    assert!(e.contains("store.ca_file (line"), "{e}");
    assert!(e.contains("verify-full"), "{e}");
    let e = config_error(&pg(
        "?sslmode=verify-full\"\nca_file = \"/nonexistent/ca.pem\"",
    ));
    assert!(e.contains("store.ca_file (line"), "{e}");
    let e = config_error(&pg("?sslmode=allow\""));
    assert!(e.contains("store.url (line"), "{e}");
    let e = config_error("backend = \"sled\"\nca_file = \"/etc/hostname\"");
    assert!(e.contains("store.ca_file (line"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tanba.toml");
    for ok in [
        pg("?sslmode=require\"\npool = 1"),
        pg("?sslmode=disable\"\npool = 1024"),
        pg("?sslmode=verify-ca&connect_timeout=5\""),
        pg("?sslmode=verify-full\"\nca_file = \"/etc/hostname\""),
    ] {
        std::fs::write(&p, store_toml(dir.path(), &ok)).unwrap();
        let out = tanba_with_config(&p, &["config", "check"], None);
        assert!(
            out.status.success(),
            "{ok}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
