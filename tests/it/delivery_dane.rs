//! DANE on the way out (RFC 7672) over loopback. Each test signs a zone `test.` with
//! `ldns-keygen` + `ldns-signzone` (ldnsutils) and serves it with NSD on a loopback port: `b.test`
//! (MX `mx.b.test`, its A record and `_25._tcp.mx.b.test` TLSA) inside the signed zone, and
//! `c.test` delegated without DS to an unsigned zone. The sender validates with the zone's key
//! as its trust anchor (`delivery.dnssec_trust_anchor`); the receiver (aiosmtpd) offers STARTTLS
//! with a self-signed certificate that no CA the sender trusts has issued.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::delivery::{
    give_up_and_get_dsn, message, queue_text, received, receiver, submit, wait_queue_empty, Py,
};
use crate::support::pki::self_signed_p256;
use crate::support::*;

/// The signed zone, NSD serving it and the receiver's certificate.
struct Zone {
    dir: tempfile::TempDir,
    nsd: Child,
    port: u16,
}

impl Drop for Zone {
    fn drop(&mut self) {
        let _ = self.nsd.kill();
        let _ = self.nsd.wait();
    }
}

fn run(dir: &Path, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{cmd}: {e} (install ldnsutils and nsd: scripts/test.sh does it)")
        });
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A self-signed certificate for `name` (P-256) in `dir`: (cert, key, SHA-256 of its SPKI in
/// hex, the TLSA 3 1 1 data).
fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf, String) {
    self_signed_p256(
        dir,
        name,
        &format!("/CN={name}"),
        2,
        &[&format!("subjectAltName=DNS:{name}")],
    );
    let pem = std::fs::read(dir.join(format!("{name}.pem"))).unwrap();
    let cert = openssl::x509::X509::from_pem(&pem).unwrap();
    let spki = cert.public_key().unwrap().public_key_to_der().unwrap();
    let hash: String = openssl::sha::sha256(&spki)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
        hash,
    )
}

impl Zone {
    /// Signs `test.` with the TLSA data `tlsa` (hex, `3 1 1`) for `mx.b.test` and starts NSD.
    /// `tamper` (from, to): after signing, the one occurrence of `from` in the signed zone
    /// becomes `to` (the record's signature no longer matches: a bogus answer).
    fn start(tlsa: &str, tamper: Option<(&str, &str)>) -> Zone {
        let dir = tempfile::tempdir().unwrap();
        let d = &dir.path().to_path_buf();
        let key = run(d, "ldns-keygen", &["-a", "ECDSAP256SHA256", "-k", "test."]);
        let key = key.trim().to_string();
        std::fs::write(
            d.join("test.zone"),
            format!(
                "$ORIGIN test.\n$TTL 60\n\
                 @ IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
                 @ IN NS ns.test.\n\
                 ns IN A 127.0.0.1\n\
                 b IN MX 10 mx.b.test.\n\
                 mx.b IN A 127.0.0.1\n\
                 _25._tcp.mx.b IN TLSA 3 1 1 {tlsa}\n\
                 c IN NS ns.test.\n"
            ),
        )
        .unwrap();
        // c.test: delegated without DS (provably unsigned), with a TLSA record that matches
        // nothing: it must be ignored.
        std::fs::write(
            d.join("c.test.zone"),
            format!(
                "$ORIGIN c.test.\n$TTL 60\n\
                 @ IN SOA ns.test. admin.test. 1 3600 600 86400 60\n\
                 @ IN NS ns.test.\n\
                 @ IN MX 10 mx.c.test.\n\
                 mx IN A 127.0.0.1\n\
                 _25._tcp.mx IN TLSA 3 1 1 {}\n",
                "00".repeat(32)
            ),
        )
        .unwrap();
        run(d, "ldns-signzone", &["test.zone", &key]);
        if let Some((from, to)) = tamper {
            let signed = std::fs::read_to_string(d.join("test.zone.signed")).unwrap();
            let n = signed.matches(from).count();
            assert_eq!(n, 1, "{from:?} in {signed}");
            let signed = signed.replace(from, to);
            std::fs::write(d.join("test.zone.signed"), signed).unwrap();
        }
        std::fs::copy(d.join(format!("{key}.key")), d.join("anchor.key")).unwrap();

        // Started means NSD said so in its log, not that something answers on the port (a
        // parallel test's listener that took it would answer too).
        let (nsd, port) = on_a_free_port("nsd", |port| {
            let p = d.display();
            std::fs::write(
                d.join("nsd.conf"),
                format!(
                    "server:\n  ip-address: 127.0.0.1@{port}\n  username: \"\"\n  chroot: \"\"\n\
                     \x20 zonesdir: \"{p}\"\n  database: \"\"\n  pidfile: \"{p}/nsd.pid\"\n\
                     \x20 xfrdfile: \"{p}/xfrd.state\"\n  zonelistfile: \"{p}/zone.list\"\n\
                     \x20 logfile: \"{p}/nsd.log\"\n  server-count: 1\n\
                     remote-control:\n  control-enable: no\n\
                     zone:\n  name: \"test.\"\n  zonefile: \"test.zone.signed\"\n\
                     zone:\n  name: \"c.test.\"\n  zonefile: \"c.test.zone\"\n"
                ),
            )
            .unwrap();
            let log = d.join("nsd.log");
            let _ = std::fs::remove_file(&log);
            let mut nsd = Command::new("nsd")
                .current_dir(d)
                .args(["-d", "-c", "nsd.conf"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nsd (install nsd: scripts/test.sh does it)");
            let start = Instant::now();
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let exited = nsd.try_wait().unwrap().is_some();
                if text.contains("nsd started") && !exited {
                    return Start::Started((nsd, port));
                }
                if exited && text.contains("can't bind") {
                    return Start::PortTaken(text);
                }
                if exited {
                    return Start::Failed(text);
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "nsd did not start: {text}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Zone { dir, nsd, port }
    }

    fn anchor(&self) -> PathBuf {
        self.dir.path().join("anchor.key")
    }
}

/// A receiver on `port` with a self-signed certificate for `mx.b.test`; returns it and the
/// TLSA `3 1 1` data for that certificate.
fn self_signed_receiver(port: u16) -> (Py, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, hash) = self_signed(dir.path(), "mx.b.test");
    let r = receiver(port, serde_json::json!({"cert": cert, "key": key}));
    (r, hash, dir)
}

/// Instance A (alice@example.test) resolving through NSD, validating with the zone's key.
fn sender(zone: &Zone, mx_port: u16) -> TestServer {
    let lines = [
        format!("resolver = \"127.0.0.1:{}\"", zone.port),
        format!("remote_port = {mx_port}"),
        format!("dnssec_trust_anchor = \"{}\"", zone.anchor().display()),
        "retry = [\"1s\"]".to_string(),
    ];
    let extra: Vec<(&str, &str)> = lines.iter().map(|l| ("delivery", l.as_str())).collect();
    let a = TestServer::start_with(&extra);
    a.add_user("alice@example.test", "secret-alice");
    a
}

fn rpt(a: &TestServer) -> String {
    std::fs::read_to_string(a.data_dir().join("tls-rpt.json")).unwrap_or_default()
}

/// A DANE-EE `3 1 1` record matching the receiver's self-signed certificate: delivered over
/// TLS, counted as a DANE (`tlsa`) success for TLS-RPT.
#[test]
fn dane_ee_record_matching_a_self_signed_certificate_delivers() {
    let port = free_port();
    let (r, hash, _certs) = self_signed_receiver(port);
    let zone = Zone::start(&hash, None);
    let a = sender(&zone, port);
    submit(&a, &["bob@b.test"], &message("Under DANE", "dane-1"));
    let got = wait_for("the message at the receiver", &a, || {
        received(&r).into_iter().next()
    });
    wait_queue_empty(&a);
    assert_eq!(got.0["tls"], true, "{:?}", got.0);
    assert!(String::from_utf8_lossy(&got.1).contains("Subject: Under DANE"));
    let t = wait_for("the TLS-RPT counts", &a, || {
        let t = rpt(&a);
        t.contains("\"success\": 1").then_some(t)
    });
    assert!(
        t.contains("\"b.test\"") && t.contains("\"tlsa\"") && t.contains("\"mx.b.test\""),
        "{t}"
    );
    assert!(a.log().contains("DANE active"), "{}", a.log());
}

/// A TLSA record that does not match the certificate: nothing is sent (not even in clear
/// text), the message waits with a reason naming DANE, the failure is counted as
/// `tlsa-invalid`; when the delivery time runs out the sender's DSN names DANE.
#[test]
fn tlsa_record_not_matching_defers_then_bounces_naming_dane() {
    let port = free_port();
    let (r, _hash, _certs) = self_signed_receiver(port);
    let zone = Zone::start(&"5a".repeat(32), None);
    let mut a = sender(&zone, port);
    submit(&a, &["bob@b.test"], &message("Wrong key", "dane-2"));
    let text = wait_for("a DANE deferral in queue list", &a, || {
        let t = queue_text(&a);
        t.contains("DANE").then_some(t)
    });
    assert!(
        text.contains(
            "DANE for b.test: mx.b.test[127.0.0.1]: certificate matches no TLSA record of _25._tcp.mx.b.test"
        ),
        "{text}"
    );
    let t = wait_for("the TLS-RPT counts", &a, || {
        let t = rpt(&a);
        t.contains("tlsa-invalid").then_some(t)
    });
    assert!(t.contains("\"success\": 0"), "{t}");
    assert!(received(&r).is_empty(), "nothing may reach the receiver");

    let d = give_up_and_get_dsn(&mut a);
    assert!(d.contains("Final-Recipient: rfc822; bob@b.test"), "{d}");
    assert!(
        d.contains("Diagnostic-Code: X-Tanba; DANE for b.test: mx.b.test[127.0.0.1]: certificate matches no TLSA record"),
        "{d}"
    );
    assert!(received(&r).is_empty());
}

/// A TLSA answer whose signature does not verify (the record was changed after signing) is
/// bogus: the host is not used and the message waits (RFC 7672 §2.2).
#[test]
fn bogus_tlsa_answer_defers() {
    let port = free_port();
    let (r, hash, _certs) = self_signed_receiver(port);
    let zone = Zone::start(&hash, Some((&hash, &"ab".repeat(32))));
    let a = sender(&zone, port);
    submit(&a, &["bob@b.test"], &message("Bogus", "dane-3"));
    let text = wait_for("a DANE deferral in queue list", &a, || {
        let t = queue_text(&a);
        t.contains("DANE").then_some(t)
    });
    assert!(
        text.contains(
            "mx.b.test[127.0.0.1]: DANE: the TLSA records of _25._tcp.mx.b.test fail DNSSEC validation"
        ),
        "{text}"
    );
    let t = wait_for("the TLS-RPT counts", &a, || {
        let t = rpt(&a);
        t.contains("dnssec-invalid").then_some(t)
    });
    assert!(t.contains("\"tlsa\""), "{t}");
    assert!(received(&r).is_empty(), "nothing may reach the receiver");
}

/// An MX answer whose signature does not verify is bogus: nothing is delivered to the domain,
/// the message waits with a reason naming DANE (RFC 7672 §2.2.1).
#[test]
fn bogus_mx_answer_defers_the_domain() {
    let port = free_port();
    let (r, hash, _certs) = self_signed_receiver(port);
    let zone = Zone::start(&hash, Some(("MX\t10 mx.b.test.", "MX\t20 mx.b.test.")));
    let a = sender(&zone, port);
    submit(&a, &["bob@b.test"], &message("Bogus MX", "dane-5"));
    let text = wait_for("a DANE deferral in queue list", &a, || {
        let t = queue_text(&a);
        t.contains("DANE").then_some(t)
    });
    assert!(
        text.contains("DANE: the MX records of b.test fail DNSSEC validation"),
        "{text}"
    );
    assert!(received(&r).is_empty(), "nothing may reach the receiver");
}

/// A provably unsigned zone (delegated without DS): its TLSA record, which matches nothing, is
/// ignored and the message goes out as before (opportunistic STARTTLS), although DANE is active.
#[test]
fn unsigned_zone_delivers_as_before() {
    let port = free_port();
    let (r, hash, _certs) = self_signed_receiver(port);
    let zone = Zone::start(&hash, None);
    let a = sender(&zone, port);
    submit(&a, &["carl@c.test"], &message("Unsigned", "dane-4"));
    let got = wait_for("the message at the receiver", &a, || {
        received(&r).into_iter().next()
    });
    wait_queue_empty(&a);
    assert_eq!(got.0["tls"], true, "{:?}", got.0);
    let log = a.log();
    assert!(log.contains("DANE active"), "{log}");
    assert!(!log.contains("DANE for c.test"), "{log}");
    assert!(!rpt(&a).contains("c.test"), "{}", rpt(&a));
}
