//! Outbound delivery over loopback: a real DNS server (Python dnslib, UDP) serving MX/A/TXT
//! records, a second Tanba instance or a Python aiosmtpd receiver as the remote side, the real
//! `tanba serve` as sender. Needs the Python modules `dnslib`, `aiosmtpd` and `dkim`
//! (Debian packages python3-dnslib, python3-aiosmtpd, python3-dkim, which `scripts/test.sh`
//! installs).
//!
//! Instance A is the base test config (`mail.example.test`, domain `example.test`); instance B
//! serves `b.test` as `mx.b.test`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use crate::smtp::Client;
use crate::support::dns::Dns;
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Helpers: Python side processes, polling.

/// A Python helper process; killed on drop (and exits by itself when its stdin closes).
pub(crate) struct Py {
    child: Child,
    dir: Option<tempfile::TempDir>,
}

impl Py {
    /// Runs `script` with `args`; the script prints its port on the first line.
    fn start(script: &str, args: &[&str], dir: Option<tempfile::TempDir>) -> Py {
        let (child, _port) = spawn_python_server(script, args);
        Py { child, dir }
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dns(zone: &str) -> Dns {
    Dns::start(zone, &[])
}

/// An aiosmtpd receiver on a given port. Each message is saved as `N.eml` plus `N.json`
/// (envelope, TLS, authenticated user). Recipients starting with `reject` get a 550.
/// Options (JSON): `cert`/`key` for STARTTLS, `user`/`password` to require AUTH (over TLS).
const PY_RECEIVER: &str = r#"
import sys, os, ssl, json, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
port, outdir, opts = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('reject'):
            return '550 5.1.1 <%s>: Recipient address rejected: no such user' % address
        envelope.rcpt_tos.append(address)
        return '250 2.1.5 OK'
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(outdir) if f.endswith('.eml')])
        login = None
        if getattr(session, 'auth_data', None) is not None and isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode()
        meta = {'from': envelope.mail_from, 'to': envelope.rcpt_tos, 'tls': session.ssl is not None,
                'auth': login, 'mail_options': envelope.mail_options}
        with open(os.path.join(outdir, '%d.json' % n), 'w') as f:
            json.dump(meta, f)
        tmp = os.path.join(outdir, '%d.tmp' % n)
        with open(tmp, 'wb') as f:
            f.write(envelope.original_content)
        os.rename(tmp, os.path.join(outdir, '%d.eml' % n))
        return '250 2.0.0 OK: saved'
def authenticator(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == opts['user']
          and auth_data.password.decode() == opts['password'])
    return AuthResult(success=ok, auth_data=auth_data)
kw = {}
if opts.get('cert'):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(opts['cert'], opts['key'])
    kw['tls_context'] = ctx
if opts.get('user'):
    kw['authenticator'] = authenticator
    kw['auth_require_tls'] = True
c = Controller(Handler(), hostname='127.0.0.1', port=port, enable_SMTPUTF8=True, **kw)
c.start()
print(port, flush=True)
sys.stdin.read()
c.stop()
"#;

pub(crate) fn receiver(port: u16, opts: serde_json::Value) -> Py {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap().to_string();
    Py::start(
        PY_RECEIVER,
        &[&port.to_string(), &out, &opts.to_string()],
        Some(dir),
    )
}

/// Messages an aiosmtpd receiver saved: (metadata, bytes).
pub(crate) fn received(r: &Py) -> Vec<(serde_json::Value, Vec<u8>)> {
    let dir = r.dir.as_ref().unwrap().path();
    let mut out = Vec::new();
    for n in 0.. {
        let eml = dir.join(format!("{n}.eml"));
        let Ok(bytes) = std::fs::read(&eml) else {
            break;
        };
        let meta = std::fs::read(dir.join(format!("{n}.json"))).unwrap();
        out.push((serde_json::from_slice(&meta).unwrap(), bytes));
    }
    out
}

pub(crate) fn queue_json(srv: &TestServer) -> Vec<serde_json::Value> {
    let out = srv.tanba(&["queue", "list", "--json"], None);
    assert!(
        out.status.success(),
        "queue list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub(crate) fn queue_text(srv: &TestServer) -> String {
    let out = srv.tanba(&["queue", "list"], None);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Lets the delivery time of the queued message run out (`give_up_after = "1s"`, restart) and
/// returns the DSN the sender, alice, then finds in her mailbox.
pub(crate) fn give_up_and_get_dsn(a: &mut TestServer) -> String {
    let cfg = std::fs::read_to_string(&a.config_path)
        .unwrap()
        .replace("[delivery]\n", "[delivery]\ngive_up_after = \"1s\"\n");
    std::fs::write(&a.config_path, cfg).unwrap();
    a.restart();
    let dsn = wait_for("the DSN", a, || {
        exported(a, "alice@example.test").into_iter().next()
    });
    wait_queue_empty(a);
    String::from_utf8_lossy(&dsn).into_owned()
}

pub(crate) fn wait_queue_empty(srv: &TestServer) {
    wait_for("an empty queue", srv, || {
        queue_json(srv).is_empty().then_some(())
    });
}

/// Submits through A's submission port (STARTTLS + AUTH PLAIN) as alice@example.test.
pub(crate) fn submit(srv: &TestServer, to: &[&str], msg: &str) {
    let user = "alice@example.test";
    let mut c = Client::connect(srv.submission);
    c.ok("EHLO client.example", "250");
    c.starttls(&srv.cert_pem());
    c.login(user, "secret-alice");
    let r = c.send_mail(user, to, msg.as_bytes());
    assert_eq!(r.code, 250, "{r:?}");
    c.cmd("QUIT");
}

pub(crate) fn message(subject: &str, id: &str) -> String {
    format!(
        "From: Alice <alice@example.test>\r\nTo: someone\r\nSubject: {subject}\r\n\
         Message-ID: <{id}@example.test>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         Hello from A.\r\n.a line starting with a dot\r\n"
    )
}

/// Instance B: domain `b.test`, host `mx.b.test`, with `bob@b.test`.
fn instance_b(extra_smtp: &str) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let toml = base_toml(dir.path())
        .replace(
            "hostname = \"mail.example.test\"",
            "hostname = \"mx.b.test\"",
        )
        .replace("domains = [\"example.test\"]", "domains = [\"b.test\"]")
        .replace("#SMTP", extra_smtp);
    let b = TestServer::start_toml(dir, &toml);
    b.add_user("bob@b.test", "secret-bob");
    b
}

/// Instance A with alice@ and carol@example.test, resolving through `dns` and delivering to
/// `port` on loopback, plus the `more` [delivery] lines and the `top` text.
pub(crate) fn instance_a(dns: &Dns, port: u16, more: &[&str], top: &str) -> TestServer {
    let mut delivery = vec![
        format!("resolver = \"127.0.0.1:{}\"", dns.port),
        format!("remote_port = {port}"),
    ];
    delivery.extend(more.iter().map(|l| l.to_string()));
    let mut extra: Vec<(&str, &str)> = delivery.iter().map(|l| ("delivery", l.as_str())).collect();
    if !top.is_empty() {
        extra.push(("top", top));
    }
    let a = TestServer::start_with(&extra);
    a.add_user("alice@example.test", "secret-alice");
    a.add_user("carol@example.test", "secret-carol");
    a
}

pub(crate) fn mx_zone() -> String {
    "b.test. 60 IN MX 10 mx.b.test.\n\
     mx.b.test. 60 IN A 127.0.0.1\n\
     nullmx.test. 60 IN MX 0 .\n"
        .to_string()
}

pub(crate) fn exported(srv: &TestServer, email: &str) -> Vec<Vec<u8>> {
    mbox_messages(&srv.export(email))
}

// ---------------------------------------------------------------------------------------------
// Tests.

/// A user of A writes to a user of B and to a local colleague: the local copy is stored at once,
/// the remote one goes A → DNS (MX) → B over STARTTLS, DKIM-signed with the key from
/// `tanba dkim generate`, and dkimpy verifies the signature against the DNS record.
#[test]
fn mail_reaches_another_server_by_mx_with_a_valid_dkim_signature() {
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("example.test.key");
    let mut cmd = Command::new(BIN);
    cmd.args([
        "dkim",
        "generate",
        "example.test",
        "--selector",
        "s1",
        "--out",
    ])
    .arg(&key);
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let txt_line = text
        .lines()
        .find(|l| l.starts_with("s1._domainkey.example.test. "))
        .unwrap_or_else(|| panic!("no TXT record in:\n{text}"));
    assert!(
        text.contains("[dkim.\"example.test\"]\nselector = \"s1\"\n"),
        "{text}"
    );
    assert!(
        text.contains("v=spf1") && text.contains("_dmarc.example.test"),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let dns = dns(&format!("{}{txt_line}\n", mx_zone()));
    let b = instance_b("");
    let a = instance_a(
        &dns,
        b.mx.port(),
        &[],
        &format!(
            "[dkim.\"example.test\"]\nselector = \"s1\"\nkey = \"{}\"",
            key.display()
        ),
    );

    let msg = message("Contract for B", "mx-dkim");
    submit(&a, &["bob@b.test", "carol@example.test"], &msg);
    // The local recipient's copy was stored in the same transaction as the queue record.
    let carol = exported(&a, "carol@example.test");
    assert_eq!(carol.len(), 1);
    assert!(carol[0].ends_with(msg.as_bytes()));

    let at_b = wait_for("the message at B", &a, || {
        exported(&b, "bob@b.test").into_iter().next()
    });
    wait_queue_empty(&a);
    let s = String::from_utf8_lossy(&at_b).into_owned();
    // B's trace header: from A's hostname, over TLS (STARTTLS was used).
    assert!(s.contains("Received: from mail.example.test"), "{s}");
    assert!(s.contains("with ESMTPS"), "{s}");
    assert!(s.contains("DKIM-Signature: v=1; a=rsa-sha256;"), "{s}");
    assert!(s.contains("d=example.test") && s.contains("s=s1"), "{s}");
    // Dot-stuffing was undone by B: the body is intact.
    assert!(s.contains("\r\n.a line starting with a dot\r\n"), "{s}");

    // A real verifier, with the key fetched from our DNS server.
    let f = keydir.path().join("at_b.eml");
    std::fs::write(&f, &at_b).unwrap();
    let verdict = python(
        PY_DKIM_VERIFY,
        &[&dns.port.to_string(), f.to_str().unwrap()],
    );
    assert_eq!(verdict.trim(), "dkim=pass");
    // And a tampered copy fails (the check is real).
    let tampered = s.replace("Hello from A.", "Hello from M.");
    std::fs::write(&f, tampered).unwrap();
    let mut cmd = Command::new("python3");
    cmd.arg("-c")
        .arg(PY_DKIM_VERIFY)
        .arg(dns.port.to_string())
        .arg(&f);
    assert!(!run(cmd, None).status.success());
}

const PY_DKIM_VERIFY: &str = r#"
import sys, dkim, dns.message, dns.query
port, path = int(sys.argv[1]), sys.argv[2]
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    r = dns.query.udp(dns.message.make_query(name, 'TXT'), '127.0.0.1', port=port, timeout=timeout)
    for rrset in r.answer:
        for rd in rrset:
            return b''.join(rd.strings)
    return None
ok = dkim.verify(open(path, 'rb').read(), dnsfunc=dnsfunc)
print('dkim=pass' if ok else 'dkim=fail')
sys.exit(0 if ok else 1)
"#;

/// B refuses one recipient with 550 and a domain has a null MX: alice gets one DSN in her INBOX
/// naming both recipients, B's reply and the statuses; the accepted recipient gets the mail.
/// A queued bounce that itself fails is dropped without a bounce.
#[test]
fn refused_recipients_bounce_to_the_senders_inbox() {
    let dns = dns(&mx_zone());
    let b = instance_b("");
    let mut a = instance_a(&dns, b.mx.port(), &[], "");
    let msg = message("Partly deliverable", "dsn");
    submit(&a, &["bob@b.test", "nobody@b.test", "x@nullmx.test"], &msg);
    let dsn = wait_for("a DSN in alice's INBOX", &a, || {
        exported(&a, "alice@example.test").into_iter().next()
    });
    wait_queue_empty(&a);
    assert_eq!(exported(&b, "bob@b.test").len(), 1);
    let d = String::from_utf8_lossy(&dsn).into_owned();
    assert!(
        d.contains("Subject: Undelivered Mail Returned to Sender"),
        "{d}"
    );
    assert!(d.contains("multipart/report"), "{d}");
    assert!(
        d.contains("report-type=\"delivery-status\"") || d.contains("report-type=delivery-status"),
        "{d}"
    );
    assert!(d.contains("Final-Recipient: rfc822; nobody@b.test"), "{d}");
    assert!(
        d.contains("Diagnostic-Code: smtp; 550 5.1.1 <nobody@b.test>: user unknown"),
        "{d}"
    );
    assert!(d.contains("Remote-MTA: dns; mx.b.test"), "{d}");
    assert!(d.contains("Final-Recipient: rfc822; x@nullmx.test"), "{d}");
    assert!(d.contains("Status: 5.1.10"), "{d}");
    assert!(!d.contains("Final-Recipient: rfc822; bob@b.test"), "{d}");
    // The original header is quoted; the DSN went through the inbound filter like all local mail.
    assert!(d.contains("Subject: Partly deliverable"), "{d}");
    assert!(d.contains("Auto-Submitted: auto-replied"), "{d}");
    // Exactly one DSN.
    assert_eq!(exported(&a, "alice@example.test").len(), 1);

    // No bounce for a bounce: a null-sender message to a refused address just goes away.
    assert_eq!(a.stop(), Some(0));
    {
        let store = a.open_store();
        let rec = store
            .new_queue_record("", &["nobody@b.test".to_string()])
            .unwrap();
        let raw = b"From: MAILER-DAEMON@mail.example.test\r\nSubject: a bounce\r\n\r\nx\r\n";
        store.deliver(&[], raw, 0, Some((&rec, raw))).unwrap();
        // A message relayed for a remote sender (bob@b.test): its bounce is queued with the null
        // sender and delivered to B by MX.
        let rec = store
            .new_queue_record("bob@b.test", &["nobody@b.test".to_string()])
            .unwrap();
        let raw = b"From: bob@b.test\r\nSubject: relayed for bob\r\n\r\nx\r\n";
        store.deliver(&[], raw, 0, Some((&rec, raw))).unwrap();
        store.flush_sync().unwrap();
    }
    a.restart();
    let bob_dsn = wait_for("the DSN for bob at B", &a, || {
        exported(&b, "bob@b.test")
            .into_iter()
            .find(|m| String::from_utf8_lossy(m).contains("Undelivered Mail"))
    });
    wait_queue_empty(&a);
    let d = String::from_utf8_lossy(&bob_dsn);
    assert!(d.contains("Subject: relayed for bob"), "{d}");
    assert!(d.contains("Final-Recipient: rfc822; nobody@b.test"), "{d}");
    // B saw the null reverse path (its Received header names the envelope it got over MX).
    assert!(d.contains("Received: from mail.example.test"), "{d}");
    assert!(a.log().contains("no bounce for a bounce"), "{}", a.log());
    assert_eq!(exported(&a, "alice@example.test").len(), 1);
    assert_eq!(exported(&b, "bob@b.test").len(), 2);
}

/// Receiver down: the message stays queued and `tanba queue list` shows why; receiver back: the
/// next retry (1 s) delivers it, once. Also `queue retry` and `queue drop` (with its bounce).
#[test]
fn receiver_down_then_back_is_retried_and_queue_commands_work() {
    let closed = closed_port();
    let dns = dns(&mx_zone());
    let a = instance_a(&dns, closed.port, &["retry = [\"1s\"]"], "");
    submit(&a, &["rcpt@b.test"], &message("Retry me: Сәлем", "retry"));
    let text = wait_for("a refused connection in queue list", &a, || {
        let t = queue_text(&a);
        (t.contains("Connection refused") && !t.contains("attempts=0")).then_some(t)
    });
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.contains("\t<alice@example.test>\trcpt@b.test\tattempts="),
        "{text}"
    );
    assert!(text.contains("connect to mx.b.test[127.0.0.1]"), "{text}");
    let q = queue_json(&a);
    assert_eq!(q.len(), 1);
    assert!(q[0]["attempts"].as_u64().unwrap() >= 1, "{q:?}");
    let id = q[0]["id"].as_u64().unwrap();

    // A second message, dropped by the postmaster: alice gets a bounce saying so.
    submit(&a, &["other@b.test"], &message("Drop me", "drop"));
    let drop_id = wait_for("the second entry", &a, || {
        queue_json(&a)
            .iter()
            .find(|r| r["recipients"][0]["addr"] == "other@b.test")
            .map(|r| r["id"].as_u64().unwrap())
    });
    let out = a.tanba(&["queue", "drop", &drop_id.to_string()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("a bounce goes to <alice@example.test>"));
    let bounce = wait_for("the drop bounce", &a, || {
        exported(&a, "alice@example.test").into_iter().next()
    });
    let bs = String::from_utf8_lossy(&bounce);
    assert!(bs.contains("Final-Recipient: rfc822; other@b.test"), "{bs}");
    assert!(bs.contains("dropped by the postmaster"), "{bs}");
    let out = a.tanba(&["queue", "drop", "999999"], None);
    assert_eq!(out.status.code(), Some(2));

    // Receiver back; `queue retry` asks for the attempt now.
    let r = receiver(closed.release(), serde_json::json!({}));
    let out = a.tanba(&["queue", "retry", &id.to_string()], None);
    assert!(out.status.success());
    let got = wait_for("the message at the receiver", &a, || {
        let m = received(&r);
        (!m.is_empty()).then_some(m)
    });
    wait_queue_empty(&a);
    let got_all = received(&r);
    assert_eq!(got_all.len(), 1, "delivered exactly once");
    assert_eq!(got[0].0["from"], "alice@example.test");
    assert_eq!(got[0].0["to"], serde_json::json!(["rcpt@b.test"]));
    assert!(String::from_utf8_lossy(&got[0].1).contains("Subject: Retry me: Сәлем"));
    // 8-bit content and a raw UTF-8 header: BODY=8BITMIME and SMTPUTF8, both offered by aiosmtpd.
    let opts = got[0].0["mail_options"].to_string();
    assert!(
        opts.contains("BODY=8BITMIME") && opts.contains("SMTPUTF8"),
        "{opts}"
    );
    assert_eq!(queue_text(&a), "");
}

/// Messages queued while the receiver is down survive a kill -9 and a graceful restart; when the
/// receiver comes up each arrives exactly once.
#[test]
fn restart_and_kill9_lose_nothing_and_send_nothing_twice() {
    const N: usize = 6;
    let closed = closed_port();
    let dns = dns(&mx_zone());
    let mut a = instance_a(&dns, closed.port, &["retry = [\"1s\"]"], "");
    for i in 0..N {
        let to: &[&str] = if i % 2 == 0 {
            &["r1@b.test"]
        } else {
            &["r1@b.test", "r2@b.test"]
        };
        submit(
            &a,
            to,
            &message(&format!("Persistent {i}"), &format!("persist-{i}")),
        );
    }
    wait_for("every message attempted", &a, || {
        let q = queue_json(&a);
        (q.len() == N && q.iter().all(|r| r["attempts"].as_u64() >= Some(1))).then_some(())
    });
    a.kill9();
    a.restart();
    assert_eq!(queue_json(&a).len(), N);
    assert_eq!(a.stop(), Some(0));
    a.restart();
    assert_eq!(queue_json(&a).len(), N);

    let r = receiver(closed.release(), serde_json::json!({}));
    wait_for("all messages at the receiver", &a, || {
        (received(&r).len() >= N).then_some(())
    });
    wait_queue_empty(&a);
    let got = received(&r);
    let mut ids: Vec<String> = got
        .iter()
        .map(|(_, m)| {
            let s = String::from_utf8_lossy(m);
            let at = s.find("Message-ID: <").unwrap();
            s[at..].lines().next().unwrap().to_string()
        })
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(got.len(), N, "one transaction per message");
    assert_eq!(ids.len(), N, "no message twice");
    // Both recipients of a two-recipient message went in one transaction.
    assert!(got
        .iter()
        .any(|(meta, _)| meta["to"] == serde_json::json!(["r1@b.test", "r2@b.test"])));
}

/// `delivery.relay` with credentials: STARTTLS with a certificate the relay proves (trusted via
/// SSL_CERT_FILE), then AUTH PLAIN; the smarthost gets the mail for a domain nobody resolved.
#[test]
fn smarthost_with_auth_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = relay_cert(dir.path());
    let port = free_port();
    let r = receiver(
        port,
        serde_json::json!({"cert": cert, "key": key, "user": "relay-user", "password": "relay-pw"}),
    );

    let adir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(adir.path().join("trust")).unwrap();
    let toml = base_toml(adir.path()).replace(
        "#DELIVERY",
        &format!(
            "relay = \"localhost:{port}\"\nrelay_user = \"relay-user\"\nrelay_password = \"relay-pw\"\nretry = [\"1s\"]\n"
        ),
    );
    let a = TestServer::start_toml_env(adir, &toml, &[("SSL_CERT_FILE", cert.to_str().unwrap())]);
    a.add_user("alice@example.test", "secret-alice");
    submit(
        &a,
        &["friend@far-away.test"],
        &message("Via the smarthost", "relay"),
    );
    let got = wait_for("the message at the smarthost", &a, || {
        received(&r).into_iter().next()
    });
    wait_queue_empty(&a);
    assert_eq!(got.0["tls"], true, "{:?}", got.0);
    assert_eq!(got.0["auth"], "relay-user", "{:?}", got.0);
    assert_eq!(got.0["to"], serde_json::json!(["friend@far-away.test"]));
    assert!(String::from_utf8_lossy(&got.1).contains("Subject: Via the smarthost"));
}

/// A self-signed end-entity certificate for `localhost` (the relay's name in the config), via
/// openssl; the server trusts it through SSL_CERT_FILE.
fn relay_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let cert = dir.join("relay.pem");
    let key = dir.join("relay.key");
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
    ])
    .args(["-subj", "/CN=localhost"])
    .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    .args(["-addext", "basicConstraints=critical,CA:FALSE"])
    .args(["-addext", "extendedKeyUsage=serverAuth"])
    .arg("-keyout")
    .arg(&key)
    .arg("-out")
    .arg(&cert);
    let out = run(cmd, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A message that cannot be delivered before `give_up_after` comes back to the sender with
/// status 4.4.7 and the last error.
#[test]
fn expired_message_bounces_with_the_last_error() {
    let closed = closed_port();
    let dns = dns(&mx_zone());
    let a = instance_a(
        &dns,
        closed.port,
        &["retry = [\"1s\"]", "give_up_after = \"2s\""],
        "",
    );
    submit(&a, &["late@b.test"], &message("Too late", "expire"));
    let dsn = wait_for("the expiry DSN", &a, || {
        exported(&a, "alice@example.test").into_iter().next()
    });
    wait_queue_empty(&a);
    let d = String::from_utf8_lossy(&dsn);
    assert!(d.contains("Final-Recipient: rfc822; late@b.test"), "{d}");
    assert!(d.contains("Action: failed\r\nStatus: 4.4.7"), "{d}");
    assert!(
        d.contains("delivery time expired; last error: connect to mx.b.test"),
        "{d}"
    );
}
