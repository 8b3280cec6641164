//! Issue 18: the process-wide cache of verified certificate signatures (and parsed keys) cannot
//! change a verdict. Everything goes through one real `tanba serve` per test, so that the second
//! message meets what the first one left in the cache:
//!
//! * the corpus of every failure reason the suite has fixtures for, sent twice, gives the same
//!   stamps both times (and the server's log shows that the second round was served from the
//!   cache);
//! * a certificate revoked between two messages is `revoked` on the second;
//! * a certificate expired at the validation time fails although its signature was cached as
//!   good (the first message validated it inside its validity through a timestamp);
//! * a tampered certificate with the serial number and issuer of a cached one is not served from
//!   the cache;
//! * a SIGHUP reload that removes the trust anchors makes cached chains untrusted.

use std::process::Command;
use std::time::{Duration, Instant};

use tanba::filter::cert::certs_from_pem_or_der;

use crate::filter::server_trusting_pki;
use crate::filter_pki::{message_with_signature, pki, SIGNED_PART};
use crate::revocation::{inter_ca, shared_pki, TestPki};
use crate::smtp::{mx_to_alice, stored};
use crate::support::mail::{header, header_fields};
use crate::support::pki::openssl;
use crate::support::TestServer;
use crate::tsp::{add_revocation_info, expired_signature_stamped, signature_value};

/// (`X-EDS-Status`, `X-EDS-Signer-1-Result`) of a stored message.
fn stamp_of(m: &[u8]) -> (String, String) {
    let f = header_fields(m);
    (
        header(&f, "X-EDS-Status").unwrap_or_default().to_string(),
        header(&f, "X-EDS-Signer-1-Result")
            .unwrap_or_default()
            .to_string(),
    )
}

/// The server's count of certificate signatures answered from the cache (its debug log line
/// "signature cache (since start)", written after each signed message), 0 before any.
fn cache_hits(srv: &TestServer) -> u64 {
    cache_counter(srv, "cert_signatures_cached")
}

/// The last value of `counter` in the server's "signature cache (since start)" log lines.
fn cache_counter(srv: &TestServer, counter: &str) -> u64 {
    srv.log()
        .lines()
        .filter(|l| l.contains("signature cache"))
        .filter_map(|l| {
            let v = l.split(&format!(" {counter}=")).nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .next_back()
        .unwrap_or(0)
}

/// The DER of the PEM certificate file `path`.
fn cert_der(path: &std::path::Path) -> Vec<u8> {
    certs_from_pem_or_der(&std::fs::read(path).unwrap())
        .unwrap()
        .remove(0)
        .raw
}

/// `cms` with the certificate `cert` (DER, carried in it) replaced by `replacement` (same length).
fn replace_cert(cms: &[u8], cert: &[u8], replacement: &[u8]) -> Vec<u8> {
    assert_eq!(cert.len(), replacement.len());
    let at = cms
        .windows(cert.len())
        .position(|w| w == cert)
        .expect("the certificate is in the CMS");
    let mut out = cms.to_vec();
    out[at..at + cert.len()].copy_from_slice(replacement);
    out
}

/// The test PKI's `individual` certificate with one digit of the IIN in its subject changed:
/// same serial number, same issuer, same key, so the signer's signature still verifies with it,
/// but the intermediate's signature over it does not.
fn tampered_individual() -> (Vec<u8>, Vec<u8>) {
    let real = cert_der(&pki().cert("individual"));
    let at = real
        .windows(15)
        .position(|w| w == b"IIN123456789011")
        .unwrap();
    let mut fake = real.clone();
    fake[at + 14] = b'9';
    (real, fake)
}

/// A multipart/signed message over SIGNED_PART with a CMS by `who` made with `opts`.
fn signed_with(who: &str, opts: &[&str]) -> Vec<u8> {
    message_with_signature(who, &pki().sign(&[who], SIGNED_PART, opts))
}

/// Every failure reason the suite has fixtures for (and passes of each algorithm), as messages
/// with the stamp each must get. The genuine `individual` comes before the impostor and the
/// tampered certificate that carry its names and serial number.
fn corpus() -> Vec<(String, Vec<u8>, &'static str)> {
    let pki = pki();
    let good = pki.sign(&["individual"], SIGNED_PART, &[]);
    let mut bad_sig = good.clone();
    let sig = signature_value(&good);
    let at = bad_sig
        .windows(sig.len())
        .position(|w| w == sig.as_slice())
        .unwrap();
    bad_sig[at + sig.len() / 2] ^= 0x01;
    let tampered_body = String::from_utf8(message_with_signature("digest", &good))
        .unwrap()
        .replacen("Regards", "Regardz", 1)
        .into_bytes();
    let (real, fake) = tampered_individual();
    vec![
        ("individual".into(), signed_with("individual", &[]), "pass"),
        (
            "impostor".into(),
            signed_with("impostor", &[]),
            "fail; reason=untrusted",
        ),
        (
            "tampered certificate".into(),
            message_with_signature("tampered", &replace_cert(&good, &real, &fake)),
            "fail; reason=untrusted",
        ),
        ("legal".into(), signed_with("legal", &[]), "pass"),
        (
            "ecdsa384".into(),
            signed_with("ecdsa384", &["-md", "sha384"]),
            "pass",
        ),
        (
            "rsa-pss".into(),
            signed_with("individual", &["-keyopt", "rsa_padding_mode:pss"]),
            "pass",
        ),
        (
            "no certificate".into(),
            signed_with("individual", &["-nocerts"]),
            "fail; reason=no-certificate",
        ),
        (
            "expired".into(),
            signed_with("expired", &[]),
            "fail; reason=expired",
        ),
        (
            "alien".into(),
            signed_with("alien", &[]),
            "fail; reason=untrusted",
        ),
        (
            "auth key".into(),
            signed_with("auth", &[]),
            "fail; reason=key-usage",
        ),
        (
            "dsa".into(),
            signed_with("dsa", &[]),
            "permerror; reason=unsupported-algorithm",
        ),
        (
            "digest mismatch".into(),
            tampered_body,
            "fail; reason=digest-mismatch",
        ),
        (
            "bad signature".into(),
            message_with_signature("bad signature", &bad_sig),
            "fail; reason=bad-signature",
        ),
        (
            "truncated CMS".into(),
            message_with_signature("truncated", &good[..good.len() / 2]),
            "permerror; reason=malformed",
        ),
        (
            "individual again".into(),
            signed_with("individual", &[]),
            "pass",
        ),
    ]
}

#[test]
fn corpus_twice_in_one_server_gives_the_same_verdicts() {
    let srv = server_trusting_pki("");
    let corpus = corpus();
    for round in 0..2 {
        for (_, m, _) in &corpus {
            mx_to_alice(&srv, m);
        }
        if round == 0 {
            assert!(srv.log().contains("signature cache"), "{}", srv.log());
        }
    }
    let hits_after = cache_hits(&srv);
    let stored = stored(&srv, "alice@example.test");
    assert_eq!(stored.len(), 2 * corpus.len());
    let (first, second) = stored.split_at(corpus.len());
    for (i, (name, _, expect)) in corpus.iter().enumerate() {
        let (a, b) = (stamp_of(&first[i]), stamp_of(&second[i]));
        assert_eq!(a.1, *expect, "{name}, first round");
        assert_eq!(a, b, "{name}: the second round differs from the first");
    }
    // The second round's chains came from the cache: every passing message of round 2 checked
    // at least one certificate signature (its own under the intermediate), all of them seen in
    // round 1.
    let passes = corpus.iter().filter(|(_, _, e)| *e == "pass").count() as u64;
    assert!(
        hits_after >= passes,
        "only {hits_after} cached certificate signatures used:\n{}",
        srv.log()
    );
    // No identity of a certificate that did not verify is stamped.
    for m in stored.iter() {
        let f = header_fields(m);
        if header(&f, "X-EDS-Signer-1-Result") != Some("pass") {
            assert_eq!(header(&f, "X-EDS-Signer-1-IIN"), None);
        }
    }
}

#[test]
fn tampered_certificate_with_the_same_serial_and_issuer_is_not_served_from_the_cache() {
    let srv = server_trusting_pki("");
    let pki = pki();
    let good = pki.sign(&["individual"], SIGNED_PART, &[]);
    let (real, fake) = tampered_individual();
    let tampered = replace_cert(&good, &real, &fake);
    let fake_cert = tanba::filter::cert::Cert::from_der(&fake).unwrap();
    let real_cert = tanba::filter::cert::Cert::from_der(&real).unwrap();
    assert_eq!(
        (fake_cert.serial.clone(), fake_cert.issuer.clone()),
        (real_cert.serial.clone(), real_cert.issuer.clone())
    );
    // The genuine one first (its signature goes into the cache), then the tampered one, then the
    // genuine one again.
    for m in [
        message_with_signature("genuine", &good),
        message_with_signature("tampered", &tampered),
        message_with_signature("genuine again", &good),
    ] {
        mx_to_alice(&srv, &m);
    }
    let stored = stored(&srv, "alice@example.test");
    let stamps: Vec<(String, String)> = stored.iter().map(|m| stamp_of(m)).collect();
    assert_eq!(
        stamps,
        [
            ("pass; signers=1; valid=1".into(), "pass".into()),
            (
                "fail; signers=1; valid=0".into(),
                "fail; reason=untrusted".into()
            ),
            ("pass; signers=1; valid=1".into(), "pass".into()),
        ]
    );
    let f = header_fields(&stored[1]);
    assert_eq!(header(&f, "X-EDS-Signer-1-IIN"), None);
    // The third message's chain was answered from the cache.
    assert!(cache_hits(&srv) >= 1, "{}", srv.log());
}

/// The parsed-certificate cache (a CMS's certificates are parsed once, then shared) answers only
/// for the exact bytes it parsed: the genuine certificate and a tampered one with its serial
/// number and issuer, each sent twice and interleaved, keep their own verdicts, and the second
/// of each came from the cache.
#[test]
fn parsed_certificates_are_shared_only_for_the_same_bytes() {
    let srv = server_trusting_pki("");
    let pki = pki();
    let good = pki.sign(&["individual"], SIGNED_PART, &[]);
    let (real, fake) = tampered_individual();
    let tampered = replace_cert(&good, &real, &fake);
    let pass = ("pass; signers=1; valid=1".to_string(), "pass".to_string());
    let untrusted = (
        "fail; signers=1; valid=0".to_string(),
        "fail; reason=untrusted".to_string(),
    );
    let mut expect = Vec::new();
    let mut hits = Vec::new();
    for _ in 0..2 {
        for (m, stamp) in [(&good, &pass), (&tampered, &untrusted)] {
            mx_to_alice(&srv, &message_with_signature("contract", m));
            expect.push(stamp.clone());
        }
        hits.push(cache_counter(&srv, "certs_cached"));
    }
    let stored = stored(&srv, "alice@example.test");
    let stamps: Vec<(String, String)> = stored.iter().map(|m| stamp_of(m)).collect();
    assert_eq!(stamps, expect);
    // Round 2 repeated round 1's bytes: at least the genuine and the tampered certificate (each
    // carried by its CMS) came from the cache.
    assert!(
        hits[1] >= hits[0] + 2,
        "the certificates were not shared ({hits:?}):\n{}",
        srv.log()
    );
    for m in [&stored[1], &stored[3]] {
        assert_eq!(header(&header_fields(m), "X-EDS-Signer-1-IIN"), None);
    }
}

#[test]
fn a_certificate_revoked_between_two_messages_is_revoked_on_the_second() {
    // A PKI of its own: its CA revokes `good` during the test.
    let pki = TestPki::new();
    let srv = pki.start_server("revocation = \"crl\"");

    // The intermediate's CRL before: `good` is not on it. The CMS carries the CRL (RFC 5940),
    // the way signers attach revocation data; nothing is fetched when it answers.
    let crl = |pem: &str| {
        let der = format!("{pem}.der");
        openssl(
            &pki.dir,
            &["crl", "-in", pem, "-outform", "DER", "-out", &der],
        );
        std::fs::read(pki.dir.join(der)).unwrap()
    };
    let before = crl("inter.crl.pem");
    let sig = pki.sign("good", SIGNED_PART, &[]);
    mx_to_alice(
        &srv,
        &message_with_signature("before", &add_revocation_info(&sig, &before)),
    );
    // Now the CA revokes `good` and issues a new CRL.
    let ca = |args: &[&str]| inter_ca(&pki.dir, args);
    ca(&["-revoke", "good.pem", "-crl_reason", "keyCompromise"]);
    ca(&["-gencrl", "-out", "inter.crl2.pem"]);
    let after = crl("inter.crl2.pem");
    // Revocation dates have one-second resolution: arrive after it.
    std::thread::sleep(Duration::from_millis(1100));
    let hits = cache_hits(&srv);
    mx_to_alice(
        &srv,
        &message_with_signature("after", &add_revocation_info(&sig, &after)),
    );
    let stored = stored(&srv, "alice@example.test");
    assert_eq!(stamp_of(&stored[0]).1, "pass");
    assert_eq!(stamp_of(&stored[1]).1, "fail; reason=revoked");
    // The second message's certificate signature was the cached one.
    assert!(cache_hits(&srv) > hits, "{}", srv.log());
}

#[test]
fn expired_at_the_validation_time_fails_although_its_signature_was_cached() {
    let pki = shared_pki();
    let srv = pki.start_server("");

    // `expired` was valid from ten to five days ago. Timestamped a week ago it passes (and its
    // signature under the intermediate is cached as good); without the timestamp it is
    // validated at arrival, after its notAfter.
    let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
    let (sig, stamped) = expired_signature_stamped(pki, week_ago);
    mx_to_alice(&srv, &message_with_signature("timestamped", &stamped));
    let hits = cache_hits(&srv);
    for subject in ["no timestamp", "no timestamp, again"] {
        mx_to_alice(&srv, &message_with_signature(subject, &sig));
    }
    let stored = stored(&srv, "alice@example.test");
    assert_eq!(stamp_of(&stored[0]).1, "pass");
    for m in &stored[1..] {
        assert_eq!(
            stamp_of(m),
            (
                "fail; signers=1; valid=0".to_string(),
                "fail; reason=expired".to_string()
            )
        );
    }
    assert!(cache_hits(&srv) > hits, "{}", srv.log());
}

/// Sends SIGHUP and waits until the log reports the `n`th reload.
fn reload(srv: &TestServer, n: usize) {
    let pid = srv.pid().unwrap().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    while srv.log().matches("reloaded:").count() < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no reload:\n{}",
            srv.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reload_without_the_anchors_makes_cached_chains_untrusted() {
    let srv = server_trusting_pki("");
    let trust = srv.data_dir().parent().unwrap().join("trust");
    let saved = tempfile::tempdir().unwrap();
    let msg = signed_with("individual", &[]);
    mx_to_alice(&srv, &msg);
    // The operator removes the anchors and reloads: the cached signatures of that chain must
    // not make it trusted.
    for f in std::fs::read_dir(&trust).unwrap() {
        let f = f.unwrap();
        std::fs::rename(f.path(), saved.path().join(f.file_name())).unwrap();
    }
    reload(&srv, 1);
    mx_to_alice(&srv, &msg);
    // And puts them back.
    for f in std::fs::read_dir(saved.path()).unwrap() {
        let f = f.unwrap();
        std::fs::rename(f.path(), trust.join(f.file_name())).unwrap();
    }
    reload(&srv, 2);
    mx_to_alice(&srv, &msg);
    let stamps: Vec<String> = stored(&srv, "alice@example.test")
        .iter()
        .map(|m| stamp_of(m).1)
        .collect();
    assert_eq!(stamps, ["pass", "fail; reason=untrusted", "pass"]);
}
