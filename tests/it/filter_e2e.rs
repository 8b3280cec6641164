//! End to end: signed mail sent over SMTP (MX and submission) and fetched over IMAP (Python's
//! imaplib, implicit TLS) carries the stamp headers and the `$EDSValid` / `$EDSInvalid`
//! keywords; the stored body below the stamp is byte-identical to what was sent, and OpenSSL
//! still verifies the fetched message.

use base64::Engine;

use super::filter::server_trusting_pki;
use super::filter_pki::{pki, signed_contract, signed_message, with_attachments};
use super::smtp::mx_to_alice;
use super::support::mail::{decode_2047, header, header_fields};
use super::support::python;

const PY_FETCH: &str = r#"
import base64, imaplib, re, ssl, sys
port, cafile, user, password, mailbox = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
m = imaplib.IMAP4_SSL('127.0.0.1', port, ssl_context=ctx)
m.login(user, password)
typ, _ = m.select(mailbox, readonly=True)
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

/// (flags, message bytes) of every message in `user`'s `mailbox`, over IMAP.
pub fn fetch_mailbox(
    srv: &super::support::TestServer,
    user: &str,
    password: &str,
    mailbox: &str,
) -> Vec<(Vec<String>, Vec<u8>)> {
    let out = python(
        PY_FETCH,
        &[
            &srv.imaps.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
            user,
            password,
            mailbox,
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

/// (flags, message bytes) of every message in `user`'s INBOX, over IMAP.
fn fetch_all(
    srv: &super::support::TestServer,
    user: &str,
    password: &str,
) -> Vec<(Vec<String>, Vec<u8>)> {
    fetch_mailbox(srv, user, password, "INBOX")
}

#[test]
fn signed_mail_over_smtp_then_imap_has_stamp_and_keywords() {
    let srv = server_trusting_pki("");
    let valid = signed_message("legal", "Договор поставки");
    let expired = signed_contract("expired", "expired");
    let plain = b"From: a@b.kz\r\nTo: alice@example.test\r\nSubject: plain\r\n\r\nno signature\r\n"
        .to_vec();
    for m in [&valid, &expired, &plain] {
        mx_to_alice(&srv, m);
    }
    // And one from a local user over submission (implicit TLS, AUTH): filtered the same way.
    let own = signed_message("individual", "to myself");
    let mut c = super::smtp::Client::connect_tls(srv.submissions, &srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    let r = c.send_mail("alice@example.test", &["alice@example.test"], &own);
    assert_eq!(r.code, 250, "{}", r.line());
    c.ok("QUIT", "221");

    let got = fetch_all(&srv, "alice@example.test", "secret-alice");
    assert_eq!(got.len(), 4);
    assert!(got[3].0.iter().any(|f| f == "$EDSValid"), "{:?}", got[3].0);
    assert!(got[3].1.ends_with(&own));

    // 1: valid → $EDSValid, identity stamped, body byte-identical, OpenSSL still verifies.
    let (flags, msg) = &got[0];
    assert!(flags.iter().any(|f| f == "$EDSValid"), "{flags:?}");
    assert!(!flags.iter().any(|f| f == "$EDSInvalid"), "{flags:?}");
    let f = header_fields(msg);
    assert!(header(&f, "Authentication-Results")
        .unwrap()
        .starts_with("mail.example.test; smime=pass body.smime-part=TEXT"));
    assert_eq!(header(&f, "X-EDS-Status"), Some("pass; signers=1; valid=1"));
    assert!(decode_2047(header(&f, "X-EDS-Summary").unwrap()).starts_with(
        "✔ Valid EDS: ДИРЕКТОРОВ ДИРЕКТОР ДИРЕКТОРОВИЧ, IIN 880101300123, АО \"ТЕСТ\" (BIN 123456789021), "
    ));
    assert_eq!(header(&f, "X-EDS-Signer-1-BIN"), Some("123456789021"));
    assert!(
        msg.ends_with(&valid),
        "stored body differs from what was sent"
    );
    pki().assert_openssl_verifies(msg, "the fetched message");

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

/// libfaketime's preload library, from Debian's `faketime` package (installed by `.ci/run`).
fn libfaketime() -> std::path::PathBuf {
    for dir in std::fs::read_dir("/usr/lib").unwrap().flatten() {
        let p = dir.path().join("faketime/libfaketime.so.1");
        if p.exists() {
            return p;
        }
    }
    panic!("libfaketime not found: install Debian's `faketime` package (see .ci/run)");
}

/// The real NCA RK test samples are signed by certificates that have since expired, and the
/// server validates at arrival time (SPEC §4). To see a GOST signer pass end to end, the real
/// binary runs with its wall clock set to 2022-09-28 by libfaketime (LD_PRELOAD; the monotonic
/// clock is left alone): no test-only code path in the server. The test roots are trusted only
/// in this test's trust dir.
#[test]
fn gost_signed_cms_attachment_over_smtp_then_imap() {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    let nca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/nca");
    for f in std::fs::read_dir(nca.join("ca")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), trust.join(f.file_name())).unwrap();
    }
    let toml = super::support::base_toml(dir.path());
    let lib = libfaketime();
    let srv = super::support::TestServer::start_toml_env(
        dir,
        &toml,
        &[
            ("LD_PRELOAD", lib.to_str().unwrap()),
            ("FAKETIME", "@2022-09-28 12:00:00"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
            ("TZ", "UTC"),
        ],
    );
    srv.add_user("alice@example.test", "secret-alice");

    let attached =
        std::fs::read(nca.join("cms/ncanode_attached_2signers_rsa+gost2015.p7s")).unwrap();
    let detached =
        std::fs::read(nca.join("cms/ncanode_detached_2signers_rsa+gost2015__data_test123.p7s"))
            .unwrap();
    let m1 = with_attachments(
        "attached",
        &[("contract.txt.cms", "application/octet-stream", &attached)],
    );
    let m2 = with_attachments(
        "detached",
        &[
            ("test123.txt", "text/plain", b"test123"),
            ("test123.txt.p7s", "application/pkcs7-signature", &detached),
        ],
    );
    // The detached signature over altered content: the GOST signer must fail.
    let m3 = with_attachments(
        "tampered",
        &[
            ("test123.txt", "text/plain", b"test124"),
            ("test123.txt.p7s", "application/pkcs7-signature", &detached),
        ],
    );
    for m in [&m1, &m2, &m3] {
        mx_to_alice(&srv, m);
    }

    let got = fetch_all(&srv, "alice@example.test", "secret-alice");
    assert_eq!(got.len(), 3);
    let expect = [
        ("contract.txt.cms", &m1, "2022-09-27T21:17:59Z"),
        ("test123.txt.p7s", &m2, "2022-09-27T21:29:41Z"),
    ];
    for (i, (name, sent, signed)) in expect.into_iter().enumerate() {
        let (flags, msg) = &got[i];
        let f = header_fields(msg);
        // Signer 1 (GOST 34.310-2015, 512-bit) passes with its identity stamped.
        assert_eq!(header(&f, "X-EDS-Signer-1-Result"), Some("pass"), "{f:?}");
        assert_eq!(header(&f, "X-EDS-Signer-1-IIN"), Some("123456789012"));
        assert_eq!(
            decode_2047(header(&f, "X-EDS-Signer-1-Name").unwrap()),
            "ТЕСТТОВ ТЕСТТ ТЕСТТОВИЧ"
        );
        assert_eq!(
            header(&f, "X-EDS-Signer-1-Signing-Time").unwrap(),
            format!("{signed}; source=claimed")
        );
        let cert = decode_2047(header(&f, "X-EDS-Signer-1-Certificate").unwrap());
        assert!(
            cert.starts_with("serial=0ff06211dc82beb00253ffa000f1de84abef454f; ")
                && cert.contains("issuer=\"C=KZ,CN=ҰЛТТЫҚ КУӘЛАНДЫРУШЫ ОРТАЛЫҚ (GOST) TEST 2022\"")
                && cert.ends_with("; algorithm=gost34310-2015-512"),
            "{cert}"
        );
        assert!(header(&f, "X-EDS-Signer-1-Part")
            .unwrap()
            .ends_with(&format!("file=\"{name}\"")));
        // Signer 2 (RSA) was signed after its certificate expired (2022-01-18): it fails, so
        // the message as a whole does too, and no identity is shown for it.
        assert_eq!(
            header(&f, "X-EDS-Signer-2-Result"),
            Some("fail; reason=expired")
        );
        assert!(header(&f, "X-EDS-Signer-2-IIN").is_none());
        assert_eq!(header(&f, "X-EDS-Status"), Some("fail; signers=2; valid=1"));
        assert!(flags.iter().any(|f| f == "$EDSInvalid"), "{flags:?}");
        let ar = header(&f, "Authentication-Results").unwrap();
        assert!(ar.starts_with("mail.example.test; smime=pass "), "{ar}");
        assert!(
            msg.ends_with(sent),
            "stored body differs from what was sent"
        );
    }

    // Tampered content: the GOST signer fails on the message digest, no identity stamped.
    let f = header_fields(&got[2].1);
    assert!(
        header(&f, "X-EDS-Signer-1-Result")
            .unwrap()
            .starts_with("fail; reason="),
        "{f:?}"
    );
    assert!(header(&f, "X-EDS-Signer-1-IIN").is_none());
    assert_eq!(header(&f, "X-EDS-Status"), Some("fail; signers=2; valid=0"));
}
