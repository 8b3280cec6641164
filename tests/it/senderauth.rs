//! Sender authentication on the MX (SPEC §10, issue 13): SPF, DKIM, DMARC, ARC and the
//! Sender-Match headers, with a real DNS server on loopback (Python dnslib) serving the records,
//! messages signed and ARC-sealed by an independent implementation (dkimpy), the client's source
//! address chosen among 127.0.0.x, and the results read back over IMAP (mailbox and flags).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;

use base64::Engine;

use super::filter::server_trusting_pki_with;
use super::filter_e2e::fetch_mailbox;
use super::filter_pki::signed_message;
use super::smtp::{Client, Reply};
use super::support::dns::Dns;
use super::support::mail::{decode_2047, header, header_fields};
use super::support::tls::Stream;
use super::support::{run, TestServer, AUTH_OFF};

/// dkimpy: `dkim KEY DOMAIN SELECTOR FILE` prints the message with a DKIM-Signature prepended;
/// `arc KEY DOMAIN SELECTOR FILE` adds a relay's Authentication-Results and ARC-seals (i=1).
const PY_SIGN: &str = r#"
import sys, dkim
mode, key, domain, sel, path = sys.argv[1:6]
msg = open(path, 'rb').read()
priv = open(key, 'rb').read()
if mode == 'dkim':
    sig = dkim.sign(msg, sel.encode(), domain.encode(), priv,
                    include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
    sys.stdout.buffer.write(sig + msg)
else:
    msg = (b'Authentication-Results: relay.test; dkim=pass header.d=' + domain.encode()
           + b'; spf=pass smtp.mailfrom=' + domain.encode() + b'\r\n' + msg)
    hs = dkim.arc_sign(msg, sel.encode(), domain.encode(), priv, b'relay.test',
                       include_headers=[b'from', b'to', b'subject', b'date'])
    sys.stdout.buffer.write(b''.join(hs) + msg)
"#;

fn dns(records: &[(&str, &str, &str)]) -> Dns {
    Dns::records(records)
}

/// An RSA-1024 DKIM key (PKCS#1 PEM, which dkimpy reads) and its `p=` value.
fn dkim_key(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{name}.pem"));
    let mut c = Command::new("openssl");
    c.args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("1024");
    assert!(run(c, None).status.success());
    let mut c = Command::new("openssl");
    c.args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&key);
    let out = run(c, None);
    assert!(out.status.success());
    let p = base64::engine::general_purpose::STANDARD.encode(&out.stdout);
    (key, format!("v=DKIM1; k=rsa; p={p}"))
}

/// `mode` (`dkim` or `arc`) applied to `msg` by dkimpy.
fn sign(mode: &str, key: &Path, domain: &str, msg: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("m.eml");
    std::fs::write(&f, msg).unwrap();
    let mut c = Command::new("python3");
    c.arg("-c")
        .arg(PY_SIGN)
        .arg(mode)
        .arg(key)
        .arg(domain)
        .arg("s1")
        .arg(&f);
    let out = run(c, None);
    assert!(
        out.status.success(),
        "dkimpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A server with the sender checks on (built-in `[auth]` defaults), resolving through `dns`,
/// trusting the test PKI, with alice@example.test.
fn server(dns: &Dns) -> TestServer {
    server_with(dns, "")
}

/// [`server`] with extra `[auth]` lines.
fn server_with(dns: &Dns, auth: &str) -> TestServer {
    server_trusting_pki_with(|toml| {
        toml.replace(AUTH_OFF, &format!("[auth]\n{auth}\n"))
            .replace(
                "#DELIVERY",
                &format!("resolver = \"127.0.0.1:{}\"", dns.port),
            )
    })
}

/// Sends `msg` to alice over the MX from the client address 127.0.0.`last`, HELO `helo`.
fn send_from(srv: &TestServer, last: u8, helo: &str, from: &str, msg: &[u8]) -> Reply {
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
    let mut c = Client::from_stream(Stream::connect_from(srv.mx, ip));
    assert_eq!(c.reply().code, 220);
    c.ok(&format!("EHLO {helo}"), "250");
    let r = c.send_mail(from, &["alice@example.test"], msg);
    c.ok("QUIT", "221");
    r
}

/// (flags, message) of every message in alice's `mailbox`.
fn fetch(srv: &TestServer, mailbox: &str) -> Vec<(Vec<String>, Vec<u8>)> {
    fetch_mailbox(srv, "alice@example.test", "secret-alice", mailbox)
}

/// The one Authentication-Results of ours (exactly one must be there).
fn ar(msg: &[u8]) -> String {
    let f = header_fields(msg);
    let ours: Vec<&String> = f
        .iter()
        .filter(|(k, v)| {
            k.eq_ignore_ascii_case("Authentication-Results") && v.starts_with("mail.example.test;")
        })
        .map(|(_, v)| v)
        .collect();
    assert_eq!(ours.len(), 1, "{f:?}");
    ours[0].split_whitespace().collect::<Vec<_>>().join(" ")
}

fn plain(from: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
Date: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@x>\r\n\r\nHello, {subject}.\r\n"
    )
    .into_bytes()
}

/// SPF for MAIL FROM and HELO from TXT records, the client 127.0.0.2 matching or 127.0.0.3 not:
/// pass, fail (-all, no DMARC: Junk with $Junk), softfail, none, temperror (SERVFAIL), and the
/// HELO identity checked on its own. A forged A-R with our authserv-id is removed.
#[test]
fn spf_results_from_served_records_and_client_address() {
    let dns = dns(&[
        ("pass.test", "TXT", "v=spf1 ip4:127.0.0.2 -all"),
        ("soft.test", "TXT", "v=spf1 ip4:127.0.0.9 ~all"),
        ("none.test", "A", "127.0.0.9"),
        ("broken.test", "SERVFAIL", ""),
        ("helo.test", "TXT", "v=spf1 ip4:127.0.0.2 -all"),
    ]);
    let srv = server(&dns);
    let cases: [(u8, &str, &str); 5] = [
        (2, "a@pass.test", "spf=pass smtp.mailfrom=a@pass.test"),
        (3, "b@pass.test", "spf=fail smtp.mailfrom=b@pass.test"),
        (3, "c@soft.test", "spf=softfail smtp.mailfrom=c@soft.test"),
        (3, "d@none.test", "spf=none smtp.mailfrom=d@none.test"),
        (
            2,
            "e@broken.test",
            "spf=temperror smtp.mailfrom=e@broken.test",
        ),
    ];
    for (i, (last, from, _)) in cases.iter().enumerate() {
        let mut m = plain(from, &format!("spf{i}"));
        if i == 0 {
            let mut forged =
                b"Authentication-Results: mail.example.test; spf=pass smtp.mailfrom=x@y\r\n"
                    .to_vec();
            forged.extend_from_slice(&m);
            m = forged;
        }
        let r = send_from(&srv, *last, "helo.test", from, &m);
        assert_eq!(r.code, 250, "{}", r.line());
    }
    let inbox = fetch(&srv, "INBOX");
    let junk = fetch(&srv, "Junk");
    // The SPF fail (no DMARC record for pass.test) went to Junk, flagged $Junk; the rest: INBOX.
    assert_eq!(
        inbox.len(),
        4,
        "{:?}",
        inbox.iter().map(|m| ar(&m.1)).collect::<Vec<_>>()
    );
    assert_eq!(junk.len(), 1);
    assert!(junk[0].0.iter().any(|f| f == "$Junk"), "{:?}", junk[0].0);
    let a = ar(&junk[0].1);
    assert!(a.contains(cases[1].2), "{a}");
    assert!(a.contains("spf=fail smtp.helo=helo.test"), "{a}");
    let want = [cases[0].2, cases[2].2, cases[3].2, cases[4].2];
    for ((flags, msg), w) in inbox.iter().zip(want) {
        let a = ar(msg);
        assert!(a.contains(w), "want {w} in {a}");
        assert!(a.contains("dkim=none"), "{a}");
        assert!(a.contains("smime=none"), "{a}");
        assert!(!flags.iter().any(|f| f == "$Junk"), "{flags:?}");
    }
    // The forged header is gone (ar() asserted exactly one of ours) and its claim is not ours.
    assert!(!ar(&inbox[0].1).contains("x@y"));
    assert!(ar(&inbox[0].1).contains("spf=pass smtp.helo=helo.test"));
    // One log line per decision.
    let log = srv.log();
    assert!(log.contains("sender checks"), "{log}");
    assert!(log.contains("junk (SPF fail for pass.test)"), "{log}");
}

/// DKIM by dkimpy for a domain whose key the test DNS serves: pass with header.d/header.s and
/// DMARC pass (INBOX); the same message altered after signing: dkim=fail, and with the domain's
/// p=reject and SPF failing too, 550 5.7.1 at the end of DATA (nothing stored). DMARC
/// quarantine → Junk with $Junk; p=none → INBOX.
#[test]
fn dkim_pass_fail_and_dmarc_reject_quarantine_none() {
    let keys = tempfile::tempdir().unwrap();
    let (key, txt) = dkim_key(keys.path(), "signed");
    let dns = dns(&[
        ("s1._domainkey.signed.test", "TXT", &txt),
        ("signed.test", "TXT", "v=spf1 ip4:127.0.0.2 -all"),
        ("_dmarc.signed.test", "TXT", "v=DMARC1; p=reject"),
        ("q.test", "TXT", "v=spf1 ip4:127.0.0.2 -all"),
        ("_dmarc.q.test", "TXT", "v=DMARC1; p=quarantine"),
        ("n.test", "TXT", "v=spf1 ip4:127.0.0.2 -all"),
        ("_dmarc.n.test", "TXT", "v=DMARC1; p=none"),
    ]);
    let srv = server(&dns);

    let signed = sign(
        "dkim",
        &key,
        "signed.test",
        &plain("boss@signed.test", "signed"),
    );
    // From 127.0.0.3: SPF fails, so DMARC rests on DKIM alone.
    let r = send_from(&srv, 3, "client.test", "boss@signed.test", &signed);
    assert_eq!(r.code, 250, "{}", r.line());

    let s = String::from_utf8(signed.clone()).unwrap();
    let altered = s.replace("Hello, signed.", "Hello, altered.");
    assert_ne!(s, altered);
    let r = send_from(
        &srv,
        3,
        "client.test",
        "boss@signed.test",
        altered.as_bytes(),
    );
    assert_eq!(r.code, 550, "{}", r.line());
    assert!(r.line().starts_with("550 5.7.1 "), "{}", r.line());
    assert!(r.line().contains("signed.test"), "{}", r.line());

    let r = send_from(
        &srv,
        3,
        "client.test",
        "x@q.test",
        &plain("x@q.test", "quarantined"),
    );
    assert_eq!(r.code, 250, "{}", r.line());
    let r = send_from(
        &srv,
        3,
        "client.test",
        "y@n.test",
        &plain("y@n.test", "monitored"),
    );
    assert_eq!(r.code, 250, "{}", r.line());

    let inbox = fetch(&srv, "INBOX");
    let junk = fetch(&srv, "Junk");
    assert_eq!(inbox.len(), 2);
    assert_eq!(junk.len(), 1);

    let a = ar(&inbox[0].1);
    assert!(
        a.contains("dkim=pass header.d=signed.test header.s=s1"),
        "{a}"
    );
    assert!(
        a.contains("dmarc=pass policy.dmarc=reject header.from=signed.test"),
        "{a}"
    );
    assert!(a.contains("spf=fail smtp.mailfrom=boss@signed.test"), "{a}");
    assert!(inbox[0].1.ends_with(&signed));

    let a = ar(&inbox[1].1);
    assert!(
        a.contains("dmarc=fail policy.dmarc=none header.from=n.test"),
        "{a}"
    );
    assert!(!inbox[1].0.iter().any(|f| f == "$Junk"));

    let a = ar(&junk[0].1);
    assert!(
        a.contains("dmarc=fail policy.dmarc=quarantine header.from=q.test"),
        "{a}"
    );
    assert!(junk[0].0.iter().any(|f| f == "$Junk"), "{:?}", junk[0].0);

    let log = srv.log();
    assert!(log.contains("reject (DMARC policy of signed.test"), "{log}");
    assert!(log.contains("junk (DMARC quarantine (q.test))"), "{log}");
}

/// The altered message alone: dkim=fail reaches the header when the policy lets it through.
#[test]
fn altered_after_signing_is_dkim_fail() {
    let keys = tempfile::tempdir().unwrap();
    let (key, txt) = dkim_key(keys.path(), "k");
    let dns = dns(&[
        ("s1._domainkey.signed.test", "TXT", &txt),
        ("_dmarc.signed.test", "TXT", "v=DMARC1; p=none"),
    ]);
    let srv = server(&dns);
    let signed = sign(
        "dkim",
        &key,
        "signed.test",
        &plain("boss@signed.test", "orig"),
    );
    let altered = String::from_utf8(signed)
        .unwrap()
        .replace("Hello, orig.", "Hello, changed.");
    let r = send_from(
        &srv,
        2,
        "client.test",
        "boss@signed.test",
        altered.as_bytes(),
    );
    assert_eq!(r.code, 250, "{}", r.line());
    let inbox = fetch(&srv, "INBOX");
    let a = ar(&inbox[0].1);
    assert!(
        a.contains("dkim=fail header.d=signed.test header.s=s1"),
        "{a}"
    );
    assert!(a.contains("dmarc=fail"), "{a}");
}

/// An ARC set made by dkimpy's `arc_sign` (i=1, cv=none) validates: arc=pass; the same message
/// with a sealed header changed afterwards: arc=fail.
#[test]
fn arc_chain_by_dkimpy_validates() {
    let keys = tempfile::tempdir().unwrap();
    let (key, txt) = dkim_key(keys.path(), "relay");
    let dns = dns(&[("s1._domainkey.relay.test", "TXT", &txt)]);
    let srv = server(&dns);
    let sealed = sign("arc", &key, "relay.test", &plain("list@origin.test", "arc"));
    assert!(String::from_utf8_lossy(&sealed).contains("ARC-Seal: i=1;"));
    let r = send_from(&srv, 2, "relay.test", "list@origin.test", &sealed);
    assert_eq!(r.code, 250, "{}", r.line());
    let broken = String::from_utf8(sealed)
        .unwrap()
        .replace("Subject: arc", "Subject: arc, changed");
    let r = send_from(&srv, 2, "relay.test", "list@origin.test", broken.as_bytes());
    assert_eq!(r.code, 250, "{}", r.line());
    let inbox = fetch(&srv, "INBOX");
    assert_eq!(inbox.len(), 2);
    let a = ar(&inbox[0].1);
    assert!(a.contains("arc=pass"), "{a}");
    let a = ar(&inbox[1].1);
    assert!(a.contains("arc=fail"), "{a}");
}

/// An S/MIME-signed message (test PKI, certificate email ceo@test.kz), DKIM-signed by dkimpy for
/// test.kz: Sender-Match yes; for the look-alike tesst.kz: no, and the summary says so.
#[test]
fn sender_match_yes_and_no_with_a_signed_document() {
    let keys = tempfile::tempdir().unwrap();
    let (k1, t1) = dkim_key(keys.path(), "good");
    let (k2, t2) = dkim_key(keys.path(), "lookalike");
    let dns = dns(&[
        ("s1._domainkey.test.kz", "TXT", &t1),
        ("s1._domainkey.tesst.kz", "TXT", &t2),
    ]);
    let srv = server(&dns);
    let doc = signed_message("legal", "Contract");
    let good = sign("dkim", &k1, "test.kz", &doc);
    let bad = sign("dkim", &k2, "tesst.kz", &doc);
    for (from, m) in [("ceo@test.kz", &good), ("ceo@tesst.kz", &bad)] {
        let r = send_from(&srv, 2, "client.test", from, m);
        assert_eq!(r.code, 250, "{}", r.line());
    }
    let inbox = fetch(&srv, "INBOX");
    assert_eq!(inbox.len(), 2);

    let f = header_fields(&inbox[0].1);
    assert_eq!(header(&f, "X-EDS-Signer-1-Email"), Some("ceo@test.kz"));
    assert_eq!(header(&f, "X-EDS-Signer-1-Sender-Match"), Some("yes"));
    let a = ar(&inbox[0].1);
    assert!(a.contains("dkim=pass header.d=test.kz"), "{a}");
    assert!(a.contains("smime=pass"), "{a}");
    let summary = decode_2047(header(&f, "X-EDS-Summary").unwrap());
    assert!(!summary.contains("⚠"), "{summary}");

    let f = header_fields(&inbox[1].1);
    assert_eq!(header(&f, "X-EDS-Signer-1-Sender-Match"), Some("no"));
    let summary = decode_2047(header(&f, "X-EDS-Summary").unwrap());
    assert!(
        summary.contains("signer 1's e-mail domain test.kz is not the sender's domain tesst.kz"),
        "{summary}"
    );
    // The S/MIME signature still verifies: DKIM signing added a header only.
    assert!(inbox[1].1.ends_with(&bad));
}

/// Submission mail carries `auth=pass smtp.auth=<user>` in the one header.
#[test]
fn submission_gets_auth_pass() {
    let dns = dns(&[]);
    let srv = server(&dns);
    let mut c = Client::connect_tls(srv.submissions, &srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    let r = c.send_mail(
        "alice@example.test",
        &["alice@example.test"],
        &plain("alice@example.test", "own"),
    );
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
    let inbox = fetch(&srv, "INBOX");
    let a = ar(&inbox[0].1);
    assert!(
        a.starts_with("mail.example.test; auth=pass smtp.auth=alice@example.test; smime=none"),
        "{a}"
    );
}

/// `[auth] dnsbl`: the client 127.0.0.2, listed by bl.test (2.0.0.127.bl.test A 127.0.0.2,
/// RFC 5782), is refused at RCPT with the zone named; 127.0.0.3, not listed, is accepted.
#[test]
fn dnsbl_listed_client_is_refused_at_rcpt_naming_the_zone() {
    let dns = dns(&[("2.0.0.127.bl.test", "A", "127.0.0.2")]);
    let srv = server_with(&dns, "dnsbl = [\"bl.test\"]");
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut c = Client::from_stream(Stream::connect_from(srv.mx, ip));
    assert_eq!(c.reply().code, 220);
    c.ok("EHLO listed.test", "250");
    c.ok("MAIL FROM:<a@listed.test>", "250");
    c.ok(
        "RCPT TO:<alice@example.test>",
        "550 5.7.1 Client address [127.0.0.2] is listed by bl.test",
    );
    c.ok("QUIT", "221");
    let r = send_from(
        &srv,
        3,
        "clean.test",
        "b@clean.test",
        &plain("b@clean.test", "clean"),
    );
    assert_eq!(r.code, 250, "{}", r.line());
    assert_eq!(fetch(&srv, "INBOX").len(), 1);
    assert!(srv.log().contains("refused: client listed by DNSBL"));
}

/// Hostile DKIM input: 200 signatures (malformed, and well-formed with bad hashes) are bounded:
/// the message is delivered, at most 10 `dkim=` results are named, none of them `pass`.
#[test]
fn many_and_malformed_dkim_signatures_are_bounded() {
    let dns = dns(&[]);
    let srv = server(&dns);
    let mut m = Vec::new();
    for i in 0..100 {
        m.extend_from_slice(
            format!(
                "DKIM-Signature: v=1; a=rsa-sha256; d=x{i}.test; s=s; h=from; bh=AAAA; b=AAAA\r\n"
            )
            .as_bytes(),
        );
        m.extend_from_slice(b"DKIM-Signature: v=9; ===;;; \xff\r\n");
    }
    m.extend_from_slice(&plain("a@x.test", "hostile"));
    let r = send_from(&srv, 2, "client.test", "a@x.test", &m);
    assert_eq!(r.code, 250, "{}", r.line());
    let inbox = fetch(&srv, "INBOX");
    let a = ar(&inbox[0].1);
    let n = a.matches("dkim=").count();
    assert!((1..=10).contains(&n), "{n}: {a}");
    assert!(!a.contains("dkim=pass"), "{a}");
}
