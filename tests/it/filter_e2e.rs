//! End to end: signed mail sent over SMTP (MX and submission) and fetched over IMAP (Python's
//! imaplib, implicit TLS) carries the stamp headers and the `$EDSValid` / `$EDSInvalid`
//! keywords; the stored body below the stamp is byte-identical to what was sent, and OpenSSL
//! still verifies the fetched message.

use std::process::Command;

use base64::Engine;

use super::filter::{decode_2047, header_fields, server_trusting_pki};
use super::filter_pki::{contract_pdf, pki, signed_message, with_attachments};
use super::support::python;

const PY_FETCH: &str = r#"
import base64, imaplib, re, ssl, sys
port, cafile, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
m = imaplib.IMAP4_SSL('127.0.0.1', port, ssl_context=ctx)
m.login(user, password)
typ, _ = m.select('INBOX', readonly=True)
assert typ == 'OK'
typ, data = m.uid('FETCH', '1:*', '(FLAGS BODY.PEEK[])')
assert typ == 'OK', data
for item in data:
    if isinstance(item, tuple):
        meta, body = item
        flags = re.search(rb'FLAGS \(([^)]*)\)', meta).group(1).decode()
        print(flags + '|' + base64.b64encode(body).decode())
m.logout()
"#;

/// (flags, message bytes) of every message in `user`'s INBOX, over IMAP.
fn fetch_all(
    srv: &super::support::TestServer,
    user: &str,
    password: &str,
) -> Vec<(Vec<String>, Vec<u8>)> {
    let out = python(
        PY_FETCH,
        &[
            &srv.imaps.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
            user,
            password,
        ],
    );
    out.lines()
        .map(|l| {
            let (flags, b64) = l.split_once('|').unwrap();
            (
                flags.split_whitespace().map(str::to_string).collect(),
                base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .unwrap(),
            )
        })
        .collect()
}

fn send(srv: &super::support::TestServer, msg: &[u8]) {
    let mut c = super::smtp::Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    let r = c.send_mail("sender@example.kz", &["alice@example.test"], msg);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");
}

#[test]
fn signed_mail_over_smtp_then_imap_has_stamp_and_keywords() {
    let srv = server_trusting_pki("");
    let valid = signed_message("legal", "Договор поставки");
    let pdf = contract_pdf();
    let expired = {
        let sig = pki().sign(&["expired"], &pdf, &[]);
        with_attachments(
            "expired",
            &[
                ("contract.pdf", "application/pdf", &pdf),
                ("contract.pdf.p7s", "application/pkcs7-signature", &sig),
            ],
        )
    };
    let plain = b"From: a@b.kz\r\nTo: alice@example.test\r\nSubject: plain\r\n\r\nno signature\r\n"
        .to_vec();
    for m in [&valid, &expired, &plain] {
        send(&srv, m);
    }
    // And one from a local user over submission (implicit TLS, AUTH): filtered the same way.
    let own = signed_message("individual", "to myself");
    let mut c = super::smtp::Client::connect_tls(srv.submissions, &srv.cert_pem());
    c.login("alice@example.test", "secret-a");
    let r = c.send_mail("alice@example.test", &["alice@example.test"], &own);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");

    let got = fetch_all(&srv, "alice@example.test", "secret-a");
    assert_eq!(got.len(), 4);
    assert!(got[3].0.iter().any(|f| f == "$EDSValid"), "{:?}", got[3].0);
    assert!(got[3].1.ends_with(&own));

    // 1: valid → $EDSValid, identity stamped, body byte-identical, OpenSSL still verifies.
    let (flags, msg) = &got[0];
    assert!(flags.iter().any(|f| f == "$EDSValid"), "{flags:?}");
    assert!(!flags.iter().any(|f| f == "$EDSInvalid"), "{flags:?}");
    let f = header_fields(msg);
    let get = |n: &str| {
        f.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    assert!(get("Authentication-Results")
        .unwrap()
        .starts_with("mail.example.test; smime=pass body.smime-part=TEXT"));
    assert_eq!(
        get("X-EDS-Status").as_deref(),
        Some("pass; signers=1; valid=1")
    );
    assert!(decode_2047(&get("X-EDS-Summary").unwrap()).starts_with(
        "✔ Valid EDS: ДИРЕКТОРОВ ДИРЕКТОР ДИРЕКТОРОВИЧ, IIN 880101300123, АО \"ТЕСТ\" (BIN 123456789021), "
    ));
    assert_eq!(get("X-EDS-Signer-1-BIN").as_deref(), Some("123456789021"));
    assert!(
        msg.ends_with(&valid),
        "stored body differs from what was sent"
    );
    let path = pki().write("fetched.eml", msg);
    let ca = pki().write("ca.pem", &{
        let mut v = std::fs::read(pki().cert("root")).unwrap();
        v.extend(std::fs::read(pki().cert("inter")).unwrap());
        v
    });
    let out = Command::new("openssl")
        .args(["cms", "-verify", "-purpose", "any", "-CAfile"])
        .arg(&ca)
        .arg("-in")
        .arg(&path)
        .args(["-out", "/dev/null"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl cms -verify on the fetched message: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 2: expired → $EDSInvalid, no identity.
    let (flags, msg) = &got[1];
    assert!(flags.iter().any(|f| f == "$EDSInvalid"), "{flags:?}");
    let f = header_fields(msg);
    assert!(f
        .iter()
        .any(|(k, v)| k == "X-EDS-Status" && v == "fail; signers=1; valid=0"));
    assert!(!f.iter().any(|(k, _)| k == "X-EDS-Signer-1-Name"));
    assert!(msg.ends_with(&expired));

    // 3: unsigned → no keyword.
    let (flags, msg) = &got[2];
    assert!(!flags.iter().any(|f| f.starts_with("$EDS")), "{flags:?}");
    assert!(msg.ends_with(&plain));
}
