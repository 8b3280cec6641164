//! Issue 12, items 7 and 8: the addresses an operator must have (postmaster@, abuse@), aliases,
//! domain aliases, catch-alls and sub-addresses, `tanba alias` with and without a running
//! server; SIGHUP reloading the TLS certificate, the limits, and refusing a broken config.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::imap::Imap;
use crate::smtp::{stored, Client};
use crate::support::tls::Stream;
use crate::support::{base_toml, TestServer};

const MSG: &[u8] = b"From: s@remote.example\r\nSubject: hello\r\n\r\nbody\r\n";

/// A server on the base config with `[server]` lines added and more local domains.
fn server(server_lines: &str, domains: &[&str], extra: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let mut toml = base_toml(dir.path());
    let list: Vec<String> = std::iter::once("example.test")
        .chain(domains.iter().copied())
        .map(|d| format!("{d:?}"))
        .collect();
    toml = toml.replace(
        "domains = [\"example.test\"]\n",
        &format!("domains = [{}]\n{server_lines}\n", list.join(", ")),
    );
    for (section, line) in extra {
        let marker = format!("#{}", section.to_uppercase());
        toml = toml.replace(&marker, &format!("{line}\n{marker}"));
    }
    TestServer::start_toml(dir, &toml)
}

fn tanba_ok(srv: &TestServer, args: &[&str]) -> String {
    let out = srv.tanba(args, None);
    assert!(
        out.status.success(),
        "tanba {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `tanba ARGS` must fail (exit 2); returns its stderr.
fn tanba_fails(srv: &TestServer, args: &[&str]) -> String {
    let out = srv.tanba(args, None);
    assert_eq!(out.status.code(), Some(2), "tanba {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// MX delivery of [`MSG`] to `rcpts` (each must get 250 at RCPT).
fn mx_send(srv: &TestServer, rcpts: &[&str]) {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let r = c.send_mail("s@remote.example", rcpts, MSG);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
}

fn count(srv: &TestServer, email: &str) -> usize {
    stored(srv, email).len()
}

// ---- item 7: postmaster, abuse, aliases ----

/// RFC 5321 §4.5.1 / RFC 2142: postmaster@ and abuse@ (any case, and the bare `Postmaster`) are
/// accepted with no account of that name, and reach `server.postmaster`.
#[test]
fn postmaster_and_abuse_reach_the_configured_account() {
    let srv = server("postmaster = \"boss@example.test\"", &["second.test"], &[]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("boss@example.test", "secret-boss");
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("MAIL FROM:<s@remote.example>", "250");
    c.ok("RCPT TO:<postmaster@example.test>", "250 2.1.5");
    c.ok("RCPT TO:<PostMaster@second.test>", "250 2.1.5");
    c.ok("RCPT TO:<Postmaster>", "250 2.1.5");
    c.ok("RCPT TO:<abuse@example.test>", "250 2.1.5");
    c.ok("RCPT TO:<nobody@example.test>", "550 5.1.1");
    c.ok("DATA", "354");
    c.send(&crate::smtp::dot_stuff(MSG));
    c.send(b".\r\n");
    assert_eq!(c.reply().code, 250);
    // One copy for the one mailbox all four stand for.
    assert_eq!(count(&srv, "boss@example.test"), 1);
    assert_eq!(count(&srv, "alice@example.test"), 0);
}

/// Without `server.postmaster` and without an alias, postmaster@ goes to the first account.
#[test]
fn postmaster_defaults_to_the_first_account() {
    let srv = server("", &[], &[]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("MAIL FROM:<s@remote.example>", "250");
    // No account at all: accepted later, not refused for good.
    c.ok("RCPT TO:<postmaster@example.test>", "451 4.3.0");
    srv.add_user("first@example.test", "secret-first");
    srv.add_user("second@example.test", "secret-second");
    mx_send(&srv, &["postmaster@example.test", "ABUSE@example.test"]);
    assert_eq!(count(&srv, "first@example.test"), 1);
    assert_eq!(count(&srv, "second@example.test"), 0);
    // An alias for postmaster wins over the default.
    tanba_ok(
        &srv,
        &[
            "alias",
            "add",
            "postmaster@example.test",
            "second@example.test",
        ],
    );
    mx_send(&srv, &["postmaster@example.test"]);
    assert_eq!(count(&srv, "second@example.test"), 1);
}

#[test]
fn alias_to_one_and_to_two_accounts() {
    let srv = server("", &[], &[]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob");
    tanba_ok(
        &srv,
        &["alias", "add", "info@example.test", "alice@example.test"],
    );
    tanba_ok(
        &srv,
        &[
            "alias",
            "add",
            "Team@Example.test",
            "alice@example.test",
            "bob@example.test",
        ],
    );
    let list = tanba_ok(&srv, &["alias", "list"]);
    assert!(
        list.contains("team@example.test\talice@example.test bob@example.test"),
        "{list}"
    );
    mx_send(&srv, &["info@example.test"]);
    assert_eq!(count(&srv, "alice@example.test"), 1);
    assert_eq!(count(&srv, "bob@example.test"), 0);
    // team@ and alice@ in one message: alice gets one copy.
    mx_send(&srv, &["team@example.test", "alice@example.test"]);
    assert_eq!(count(&srv, "alice@example.test"), 2);
    assert_eq!(count(&srv, "bob@example.test"), 1);
    // After `alias del` the address is unknown again.
    tanba_ok(&srv, &["alias", "del", "info@example.test"]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("MAIL FROM:<s@remote.example>", "250");
    c.ok("RCPT TO:<info@example.test>", "550 5.1.1");
}

/// An alias to a remote address queues the message; the remote address itself stays refused
/// on MX (no relay).
#[test]
fn alias_to_a_remote_address_goes_to_the_queue() {
    // Deliveries go to a closed loopback port: the record stays queued.
    let srv = server("", &[], &[("delivery", "relay = \"127.0.0.1:9\"")]);
    srv.add_user("alice@example.test", "secret-alice");
    tanba_ok(
        &srv,
        &[
            "alias",
            "add",
            "fwd@example.test",
            "alice@example.test",
            "carol@remote.example",
        ],
    );
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("MAIL FROM:<s@remote.example>", "250");
    c.ok("RCPT TO:<carol@remote.example>", "554 5.7.1");
    c.ok("RSET", "250");
    let r = c.send_mail("s@remote.example", &["fwd@example.test"], MSG);
    assert_eq!(r.code, 250, "{}", r.line());
    assert_eq!(count(&srv, "alice@example.test"), 1);
    let q: serde_json::Value =
        serde_json::from_str(&tanba_ok(&srv, &["queue", "list", "--json"])).unwrap();
    let text = q.to_string();
    assert!(text.contains("carol@remote.example"), "{text}");
    assert!(!text.contains("alice@example.test"), "{text}");
}

#[test]
fn domain_alias_and_catch_all() {
    let srv = server("", &["old.test", "other.test"], &[]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob");
    tanba_ok(&srv, &["alias", "add", "@old.test", "@example.test"]);
    tanba_ok(&srv, &["alias", "add", "@other.test", "bob@example.test"]);
    mx_send(&srv, &["alice@old.test"]);
    assert_eq!(count(&srv, "alice@example.test"), 1);
    mx_send(&srv, &["anything@other.test"]);
    assert_eq!(count(&srv, "bob@example.test"), 1);
    // No catch-all for example.test, and a domain alias does not invent accounts.
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("MAIL FROM:<s@remote.example>", "250");
    c.ok("RCPT TO:<anything@example.test>", "550 5.1.1");
    c.ok("RCPT TO:<nobody@old.test>", "550 5.1.1");
    // A domain alias has one @domain target; a catch-all none.
    let e = tanba_fails(&srv, &["alias", "add", "@other.test", "@example.test"]);
    assert!(e.contains("exactly one"), "{e}");
}

/// `alice+tag@` is alice's (INBOX), also as a submission sender; an alias delivering to alice
/// may be her sender too, a catch-all may not.
#[test]
fn subaddress_delivery_and_send_as() {
    let srv = server("", &["other.test"], &[]);
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob");
    mx_send(&srv, &["alice+newsletters@example.test"]);
    assert_eq!(count(&srv, "alice@example.test"), 1);
    tanba_ok(
        &srv,
        &[
            "alias",
            "add",
            "sales@example.test",
            "alice@example.test",
            "bob@example.test",
        ],
    );
    tanba_ok(&srv, &["alias", "add", "@other.test", "alice@example.test"]);
    let mut c = Client::connect_tls(srv.submissions, &srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    c.ok("MAIL FROM:<sales@example.test>", "250 2.1.0");
    c.ok("RSET", "250");
    c.ok("MAIL FROM:<alice+x@example.test>", "250 2.1.0");
    c.ok("RSET", "250");
    c.ok("MAIL FROM:<someone@other.test>", "553 5.7.1");
    c.ok("MAIL FROM:<bob@example.test>", "553 5.7.1");
}

#[test]
fn alias_add_refuses_a_cycle() {
    let srv = server("", &["old.test", "new.test"], &[]);
    srv.add_user("alice@example.test", "secret-alice");
    tanba_ok(
        &srv,
        &["alias", "add", "x@example.test", "alice@example.test"],
    );
    tanba_ok(&srv, &["alias", "add", "y@example.test", "x@example.test"]);
    let e = tanba_fails(&srv, &["alias", "add", "x@example.test", "y@example.test"]);
    assert!(e.contains("loop"), "{e}");
    assert!(
        e.contains("x@example.test → y@example.test → x@example.test"),
        "{e}"
    );
    // Nothing was written: x still goes to alice only.
    let list = tanba_ok(&srv, &["alias", "list"]);
    assert!(
        list.contains("x@example.test\talice@example.test\n"),
        "{list}"
    );
    // Domain aliases both ways.
    tanba_ok(&srv, &["alias", "add", "@old.test", "@new.test"]);
    let e = tanba_fails(&srv, &["alias", "add", "@new.test", "@old.test"]);
    assert!(e.contains("loop"), "{e}");
    // Typos and foreign domains are refused too.
    let e = tanba_fails(
        &srv,
        &["alias", "add", "z@example.test", "alcie@example.test"],
    );
    assert!(e.contains("neither an account nor an alias"), "{e}");
    let e = tanba_fails(
        &srv,
        &["alias", "add", "z@remote.example", "alice@example.test"],
    );
    assert!(e.contains("not a local domain"), "{e}");
}

/// `tanba alias` on the store directly (server stopped), then the server delivers by it.
#[test]
fn alias_commands_with_and_without_serve() {
    let mut srv = server("", &[], &[]);
    srv.add_user("alice@example.test", "secret-alice");
    tanba_ok(
        &srv,
        &["alias", "add", "one@example.test", "alice@example.test"],
    );
    assert_eq!(srv.stop(), Some(0));
    // Stopped: the same commands open the store themselves.
    tanba_ok(
        &srv,
        &["alias", "add", "two@example.test", "alice@example.test"],
    );
    tanba_ok(&srv, &["alias", "del", "one@example.test"]);
    let list = tanba_ok(&srv, &["alias", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(
        v,
        serde_json::json!([{"address": "two@example.test", "targets": ["alice@example.test"]}])
    );
    srv.restart();
    mx_send(&srv, &["two@example.test"]);
    assert_eq!(count(&srv, "alice@example.test"), 1);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("MAIL FROM:<s@remote.example>", "250");
    c.ok("RCPT TO:<one@example.test>", "550 5.1.1");
}

// ---- item 8: SIGHUP ----

/// A certificate for mail.example.test (EC P-256): `dir/NAME.crt`, `dir/NAME.key`.
fn make_cert(dir: &Path, name: &str) {
    std::fs::write(
        dir.join("srv.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n[srv]\nbasicConstraints = critical,CA:FALSE\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:mail.example.test\n",
    )
    .unwrap();
    let (crt, key) = (format!("{name}.crt"), format!("{name}.key"));
    crate::support::pki::openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-config",
            "srv.cnf",
            "-extensions",
            "srv",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "30",
            "-subj",
            "/CN=mail.example.test",
        ],
    );
}

fn sighup(srv: &TestServer) {
    let pid = srv.pid().unwrap().to_string();
    let st = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(st.success());
}

/// Waits until `needle` occurs `n` times in the log (the server acts on signals asynchronously).
fn wait_log(srv: &TestServer, needle: &str, n: usize) -> String {
    let start = Instant::now();
    loop {
        let log = srv.log();
        if log.matches(needle).count() >= n {
            return log;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {needle:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGHUP, waits for the `n`th "reload refused" in the log and returns that line.
fn sighup_refused(srv: &TestServer, n: usize) -> String {
    sighup(srv);
    let log = wait_log(srv, "reload refused", n);
    log.lines()
        .filter(|l| l.contains("reload refused"))
        .nth(n - 1)
        .unwrap()
        .to_string()
}

/// SHA-256 of the certificate a fresh TLS client gets on `addr` (trusting `bundle`).
fn served_cert(addr: std::net::SocketAddr, bundle: &Path) -> Vec<u8> {
    let mut s = Stream::connect(addr);
    s.start_tls(bundle);
    let Stream::Tls(t) = &s else { unreachable!() };
    let cert = t.conn.peer_certificates().unwrap()[0].as_ref().to_vec();
    openssl::sha::sha256(&cert).to_vec()
}

fn fingerprint(pem: &Path) -> Vec<u8> {
    let c = openssl::x509::X509::from_pem(&std::fs::read(pem).unwrap()).unwrap();
    openssl::sha::sha256(&c.to_der().unwrap()).to_vec()
}

/// A server on its own certificate `tls/a`, with `tls/b` ready and a bundle trusting both.
fn tls_server(extra: &[(&str, &str)]) -> (TestServer, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    make_cert(&tls, "a");
    make_cert(&tls, "b");
    let bundle = tls.join("bundle.pem");
    let mut both = std::fs::read(tls.join("a.crt")).unwrap();
    both.extend(std::fs::read(tls.join("b.crt")).unwrap());
    std::fs::write(&bundle, both).unwrap();
    std::fs::copy(tls.join("a.crt"), tls.join("cert.pem")).unwrap();
    std::fs::copy(tls.join("a.key"), tls.join("key.pem")).unwrap();
    let mut toml = base_toml(dir.path()).replace(
        "[smtp]\n",
        &format!(
            "[tls]\ncert = \"{t}/cert.pem\"\nkey = \"{t}/key.pem\"\n\n[smtp]\n",
            t = tls.display()
        ),
    );
    for (section, line) in extra {
        let marker = format!("#{}", section.to_uppercase());
        toml = toml.replace(&marker, &format!("{line}\n{marker}"));
    }
    (TestServer::start_toml(dir, &toml), tls)
}

/// A renewed certificate (files replaced, SIGHUP) is what new TLS clients get on 993 and 465;
/// an IMAP session opened before goes on undisturbed.
#[test]
fn sighup_reloads_the_certificate_old_sessions_unaffected() {
    let (srv, tls) = tls_server(&[]);
    srv.add_user("alice@example.test", "secret-alice");
    let bundle = tls.join("bundle.pem");
    let (a, b) = (
        fingerprint(&tls.join("a.crt")),
        fingerprint(&tls.join("b.crt")),
    );
    assert_eq!(served_cert(srv.imaps, &bundle), a);
    let mut old = Imap::tls(srv.imaps, &bundle);
    old.ok("LOGIN alice@example.test secret-alice");
    old.ok("SELECT INBOX");

    std::fs::copy(tls.join("b.crt"), tls.join("cert.pem")).unwrap();
    std::fs::copy(tls.join("b.key"), tls.join("key.pem")).unwrap();
    sighup(&srv);
    wait_log(&srv, "reloaded: TLS certificate", 1);

    assert_eq!(served_cert(srv.imaps, &bundle), b);
    assert_eq!(served_cert(srv.submissions, &bundle), b);
    // The session from before the reload still works, on its old TLS connection.
    old.ok("NOOP");
    mx_send(&srv, &["alice@example.test"]);
    let r = old.ok("NOOP");
    assert!(
        r.iter().any(|l| crate::imap::text(l).contains("1 EXISTS")),
        "{:?}",
        r.iter().map(|l| crate::imap::text(l)).collect::<Vec<_>>()
    );
    old.ok("LOGOUT");
}

/// A broken config on SIGHUP is refused with the key named; the old certificate is still served
/// and the server still answers.
#[test]
fn sighup_with_a_broken_config_keeps_serving() {
    let (srv, tls) = tls_server(&[]);
    let bundle = tls.join("bundle.pem");
    let a = fingerprint(&tls.join("a.crt"));
    let good = std::fs::read_to_string(&srv.config_path).unwrap();
    // A certificate path that does not exist.
    std::fs::write(
        &srv.config_path,
        good.replace("/cert.pem\"", "/missing.pem\""),
    )
    .unwrap();
    std::fs::copy(tls.join("b.crt"), tls.join("cert.pem")).unwrap();
    std::fs::copy(tls.join("b.key"), tls.join("key.pem")).unwrap();
    let line = sighup_refused(&srv, 1);
    assert!(line.contains("tls.cert"), "{line}");
    assert!(
        line.contains("still serving the previous configuration"),
        "{line}"
    );
    assert_eq!(served_cert(srv.imaps, &bundle), a);
    // A key that does not match: refused too (the TLS part names it).
    std::fs::write(&srv.config_path, &good).unwrap();
    std::fs::copy(tls.join("a.key"), tls.join("key.pem")).unwrap();
    let line = sighup_refused(&srv, 2);
    assert!(line.contains("tls"), "{line}");
    assert_eq!(served_cert(srv.imaps, &bundle), a);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.ok("QUIT", "221");
    // DKIM keys are loaded on reload too: an unreadable one refuses it, naming the key.
    std::fs::copy(tls.join("b.key"), tls.join("key.pem")).unwrap();
    let dkim = tls.join("dkim.key");
    let good_key = tls.join("dkim-good.key");
    let g = srv.tanba(
        &[
            "dkim",
            "generate",
            "example.test",
            "--selector",
            "s1",
            "--out",
            good_key.to_str().unwrap(),
        ],
        None,
    );
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    std::fs::write(&dkim, "not a key\n").unwrap();
    let with_dkim = format!(
        "{good}\n[dkim.\"example.test\"]\nselector = \"s1\"\nkey = \"{}\"\n",
        dkim.display()
    );
    std::fs::write(&srv.config_path, &with_dkim).unwrap();
    let line = sighup_refused(&srv, 3);
    assert!(line.contains("dkim.\"example.test\".key"), "{line}");
    assert_eq!(served_cert(srv.imaps, &bundle), a);
    // With a good key, the same file reloads: the new certificate is served.
    std::fs::copy(&good_key, &dkim).unwrap();
    sighup(&srv);
    wait_log(&srv, "reloaded: TLS certificate", 1);
    assert_eq!(
        served_cert(srv.imaps, &bundle),
        fingerprint(&tls.join("b.crt"))
    );
}

/// A changed `limits.*` value applies to new connections after SIGHUP; a listener-pool key
/// is reported as needing a restart.
#[test]
fn sighup_applies_changed_limits() {
    let (srv, _tls) = tls_server(&[("limits", "mx_per_ip = 1")]);
    let first = Client::connect(srv.mx);
    let mut second = Client::connect_raw(srv.mx);
    assert_eq!(second.reply().code, 421);
    let cfg = std::fs::read_to_string(&srv.config_path).unwrap();
    let cfg = cfg
        .replace("mx_per_ip = 1", "mx_per_ip = 2")
        .replace("#SMTP", "max_connections = 7\n#SMTP");
    std::fs::write(&srv.config_path, cfg).unwrap();
    sighup(&srv);
    let log = wait_log(&srv, "reloaded: TLS certificate", 1);
    assert!(
        log.contains("reload: smtp.max_connections changed; it takes effect only after a restart"),
        "{log}"
    );
    let mut third = Client::connect_raw(srv.mx);
    assert_eq!(third.reply().code, 220);
    let mut fourth = Client::connect_raw(srv.mx);
    assert_eq!(fourth.reply().code, 421);
    drop(first);
}
