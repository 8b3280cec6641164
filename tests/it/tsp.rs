//! Trusted signing time (issue 7): RFC 3161 timestamp tokens in the signer's unsigned
//! attributes set the validation time.
//!
//! The real NCA RK test token (GOST 34.310-2004 TSA) verifies against the NCA test roots; a
//! test TSA made with `openssl ts` stamps signatures of the [`TestPki`]: a certificate that has
//! expired by the verification time passes as of the timestamp (`source=tsp`), and a token over
//! another signature value is reported and ignored.

use serde_json::Value;
use tanba::filter::asn1;

use crate::filter_pki::{message_with_signature, SIGNED_PART};
use crate::revocation::{nca, rfc3339, shared_pki, write_temp, Cli, TestPki};
use crate::support::mail::{header, header_fields};
use crate::support::pki::openssl;

pub const OID_TIMESTAMP_TOKEN: &str = "1.2.840.113549.1.9.16.2.14";

/// Rebuilds a DER ContentInfo after `f` changed the children of its SignedData.
fn edit_signed_data(cms: &[u8], f: impl FnOnce(&mut Vec<Vec<u8>>)) -> Vec<u8> {
    let ci = asn1::parse_one(cms).expect("DER ContentInfo");
    let kids = ci.children().unwrap();
    let sd = asn1::parse_one(kids[1].value).unwrap();
    let mut sd_kids: Vec<Vec<u8>> = sd
        .children()
        .unwrap()
        .iter()
        .map(|t| t.raw.to_vec())
        .collect();
    f(&mut sd_kids);
    let wrapped = asn1::encode(0xA0, &asn1::encode(0x30, &sd_kids.concat()));
    asn1::encode(0x30, &[kids[0].raw.to_vec(), wrapped].concat())
}

/// Adds a RevocationInfoChoice to the SignedData's `crls` field (RFC 5940).
pub fn add_revocation_info(cms: &[u8], choice: &[u8]) -> Vec<u8> {
    edit_signed_data(cms, |kids| {
        match kids.iter().position(|k| k.first() == Some(&0xA1)) {
            Some(i) => {
                let mut v = asn1::parse_one(&kids[i]).unwrap().value.to_vec();
                v.extend_from_slice(choice);
                kids[i] = asn1::encode(0xA1, &v);
            }
            None => {
                let last = kids.len() - 1;
                kids.insert(last, asn1::encode(0xA1, choice));
            }
        }
    })
}

/// Adds an unsigned attribute (`oid`, one value) to the first SignerInfo. Unsigned attributes
/// are outside what the signer signed, so the signature stays valid.
pub fn add_unsigned_attr(cms: &[u8], oid: &str, value: &[u8]) -> Vec<u8> {
    edit_signed_data(cms, |kids| {
        let last = kids.len() - 1;
        let set = asn1::parse_one(&kids[last]).unwrap();
        let mut infos: Vec<Vec<u8>> = set
            .children()
            .unwrap()
            .iter()
            .map(|t| t.raw.to_vec())
            .collect();
        let si = asn1::parse_one(&infos[0]).unwrap();
        let mut fields: Vec<Vec<u8>> = si
            .children()
            .unwrap()
            .iter()
            .map(|t| t.raw.to_vec())
            .collect();
        let mut attr = asn1::oid_der(oid).unwrap();
        attr.extend(asn1::encode(0x31, value));
        let attr = asn1::encode(0x30, &attr);
        match fields.last() {
            Some(f) if f.first() == Some(&0xA1) => {
                let mut v = asn1::parse_one(f).unwrap().value.to_vec();
                v.extend_from_slice(&attr);
                let n = fields.len() - 1;
                fields[n] = asn1::encode(0xA1, &v);
            }
            _ => fields.push(asn1::encode(0xA1, &attr)),
        }
        infos[0] = asn1::encode(0x30, &fields.concat());
        kids[last] = asn1::encode(0x31, &infos.concat());
    })
}

/// The first SignerInfo's signature value.
pub fn signature_value(cms: &[u8]) -> Vec<u8> {
    let sd = tanba::filter::cms::parse(cms).unwrap();
    sd.signers[0].as_ref().unwrap().signature.clone()
}

const TS_CONFIG: &str = r#"
[ tsa ]
default_tsa = tsa1
[ tsa1 ]
serial = ./tsaserial
crypto_device = builtin
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_alg = sha256
"#;

/// A timestamp token from the test TSA (`openssl ts -reply`) over `data`.
fn timestamp(pki: &TestPki, data: &[u8]) -> Vec<u8> {
    let work = pki.scratch();
    std::fs::write(work.join("data.bin"), data).unwrap();
    std::fs::write(work.join("ts.cnf"), TS_CONFIG).unwrap();
    std::fs::write(work.join("tsaserial"), "01\n").unwrap();
    openssl(
        &work,
        &[
            "ts", "-query", "-data", "data.bin", "-sha256", "-cert", "-out", "q.tsq",
        ],
    );
    let tsa = pki.cert("tsa").display().to_string();
    let key = pki.dir.join("tsa.key").display().to_string();
    let inter = pki.cert("inter").display().to_string();
    openssl(
        &work,
        &[
            "ts",
            "-reply",
            "-config",
            "ts.cnf",
            "-queryfile",
            "q.tsq",
            "-signer",
            &tsa,
            "-inkey",
            &key,
            "-chain",
            &inter,
            "-token_out",
            "-out",
            "token.der",
        ],
    );
    std::fs::read(work.join("token.der")).unwrap()
}

fn first_signer(v: &Value) -> &Value {
    &v["signatures"][0]["signers"][0]
}

/// The test PKI's leaves expire a day from now; ten days from now only a timestamp can make
/// their signatures pass.
#[test]
fn timestamp_sets_the_validation_time() {
    let pki = shared_pki();
    let cli = Cli::new(&pki.trust, "");
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now();
    let later = rfc3339(now + chrono::Duration::days(10));

    let sig = pki.sign("good", SIGNED_PART, &[]);
    let token = timestamp(pki, &signature_value(&sig));
    let stamped = add_unsigned_attr(&sig, OID_TIMESTAMP_TOKEN, &token);
    let msg = write_temp(
        dir.path(),
        "stamped.eml",
        &message_with_signature("timestamped", &stamped),
    );

    // Ten days on, the certificate has expired, but not at the timestamp.
    let (code, v) = cli.verify_json(&msg, &["--at", &later]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["verdict"], "pass");
    let s = first_signer(&v);
    let tsp = s["tsp_time"].as_str().expect("tsp_time");
    let gen = chrono::DateTime::parse_from_rfc3339(tsp).unwrap();
    assert!((gen.timestamp() - now.timestamp()).abs() < 600, "{tsp}");
    assert!(s["signing_time"].is_string());
    // The stamp shows the trusted time.
    let (code, out, err) = cli.tanba(&["stamp", msg.to_str().unwrap(), "--at", &later]);
    assert_eq!(code, 0, "{err}");
    let f = header_fields(out.as_bytes());
    assert_eq!(header(&f, "X-EDS-Signer-1-Result"), Some("pass"));
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Signing-Time"),
        Some(format!("{tsp}; source=tsp").as_str())
    );

    // The same signature without the token: expired.
    let bare = write_temp(
        dir.path(),
        "bare.eml",
        &message_with_signature("bare", &sig),
    );
    let (code, v) = cli.verify_json(&bare, &["--at", &later]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(first_signer(&v)["reason"], "expired");
    assert_eq!(first_signer(&v)["tsp_time"], Value::Null);

    // A token over another signature value: reported, ignored for time, so expired.
    let other = timestamp(pki, b"some other signature value");
    let wrong = add_unsigned_attr(&sig, OID_TIMESTAMP_TOKEN, &other);
    let wrong_msg = write_temp(
        dir.path(),
        "wrong.eml",
        &message_with_signature("wrong token", &wrong),
    );
    let (code, v) = cli.verify_json(&wrong_msg, &["--at", &later]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(first_signer(&v)["reason"], "expired");
    assert_eq!(first_signer(&v)["tsp_time"], Value::Null);
    let (_, out, _) = cli.tanba(&["verify", wrong_msg.to_str().unwrap(), "--at", &later]);
    assert!(out.contains("timestamp ignored"), "{out}");
    assert!(out.contains("messageImprint"), "{out}");
    // Now (both valid), the wrong token is only a note and the signature passes at arrival.
    let (code, v) = cli.verify_json(&wrong_msg, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(first_signer(&v)["tsp_time"], Value::Null);
}

/// The TSA must chain to `trust_dir`: a token from a TSA of a PKI nobody trusts is reported and
/// ignored.
#[test]
fn timestamp_from_an_untrusted_tsa_is_ignored() {
    let pki = shared_pki();
    let alien = TestPki::new();
    let cli = Cli::new(&pki.trust, "");
    let dir = tempfile::tempdir().unwrap();
    let later = rfc3339(chrono::Utc::now() + chrono::Duration::days(10));
    let sig = pki.sign("good", SIGNED_PART, &[]);
    let token = timestamp(&alien, &signature_value(&sig));
    let stamped = add_unsigned_attr(&sig, OID_TIMESTAMP_TOKEN, &token);
    let msg = write_temp(
        dir.path(),
        "alien.eml",
        &message_with_signature("alien tsa", &stamped),
    );
    let (code, out, _) = cli.tanba(&["verify", msg.to_str().unwrap(), "--at", &later]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL (expired)"), "{out}");
    assert!(out.contains("untrusted TSA"), "{out}");
}

/// The real NCA RK test token (TSA "СЕРВИС МЕТКИ ВРЕМЕНИ", GOST 34.310-2004) parses and
/// verifies against the NCA test roots, as of its genTime.
#[test]
fn real_nca_gost_token_verifies() {
    use tanba::filter::chain::{NoRevocation, TrustStore};
    let trust = TrustStore::load_dir(&nca("ca")).unwrap();
    let data = std::fs::read(nca("tsp/ncanode_tsp_token.bin")).unwrap();
    let token = tanba::filter::tsp::parse_token(&data).unwrap();
    let v = token.verify(&trust, &NoRevocation).unwrap();
    assert_eq!(
        tanba::filter::report::rfc3339(v.gen_time),
        "2022-09-18T13:20:14Z"
    );
    assert_eq!(
        v.tsa.subject_attr("2.5.4.3").as_deref(),
        Some("СЕРВИС МЕТКИ ВРЕМЕНИ")
    );
    assert_eq!(
        tanba::filter::algo::spki_algorithm(&v.tsa.spki)
            .unwrap()
            .oid,
        "1.2.398.3.10.1.1.1.1"
    );
    // Not trusted without the NCA test roots.
    let empty = TrustStore::default();
    assert!(token.verify(&empty, &NoRevocation).is_err());
    // The response file carries the same token.
    let resp = std::fs::read(nca("tsp/ncanode_tsp_response.bin")).unwrap();
    let t2 = tanba::filter::tsp::parse_response(&resp).unwrap();
    assert_eq!(t2.info, token.info);
}

/// DER of a SEQUENCE of the given elements.
fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    asn1::encode(0x30, &parts.concat())
}

fn oid(dotted: &str) -> Vec<u8> {
    asn1::oid_der(dotted).unwrap()
}

fn alg(dotted: &str) -> Vec<u8> {
    seq(&[oid(dotted), vec![0x05, 0x00]])
}

/// DER INTEGER of a magnitude.
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let mut v = magnitude.to_vec();
    if v.first().is_none_or(|b| b & 0x80 != 0) {
        v.insert(0, 0);
    }
    asn1::encode(0x02, &v)
}

/// A timestamp token from the test TSA with a chosen genTime, over SHA-256 of `data`, built
/// by hand (`openssl ts` always stamps the current time). RFC 3161 §2.4.2, RFC 5652 §5.
pub fn token_at(pki: &TestPki, data: &[u8], gen_time: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;
    const SHA256: &str = "2.16.840.1.101.3.4.2.1";
    const TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
    let pem = std::fs::read(pki.cert("tsa")).unwrap();
    let cert = tanba::filter::cert::certs_from_pem_or_der(&pem)
        .unwrap()
        .remove(0);
    let key = PKey::private_key_from_pem(&std::fs::read(pki.dir.join("tsa.key")).unwrap()).unwrap();

    let tst = seq(&[
        integer(&[1]),
        oid("1.2.3.4.1"),
        seq(&[alg(SHA256), asn1::encode(0x04, &openssl::sha::sha256(data))]),
        integer(&[0x0B, 0xAD, 0xC0, 0xDE]),
        asn1::encode(
            0x18,
            gen_time.format("%Y%m%d%H%M%SZ").to_string().as_bytes(),
        ),
    ]);
    let attr = |o: &str, v: Vec<u8>| seq(&[oid(o), asn1::encode(0x31, &v)]);
    let mut attrs = [
        attr("1.2.840.113549.1.9.3", oid(TST_INFO)),
        attr(
            "1.2.840.113549.1.9.4",
            asn1::encode(0x04, &openssl::sha::sha256(&tst)),
        ),
    ];
    attrs.sort(); // DER SET OF: sorted encodings
    let signed = asn1::encode(0x31, &attrs.concat());
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(&signed).unwrap();
    let signature = signer.sign_to_vec().unwrap();
    let mut implicit = signed.clone();
    implicit[0] = 0xA0;
    let signer_info = seq(&[
        integer(&[1]),
        seq(&[cert.issuer.clone(), integer(&cert.serial)]),
        alg(SHA256),
        implicit,
        alg("1.2.840.113549.1.1.1"),
        asn1::encode(0x04, &signature),
    ]);
    let signed_data = seq(&[
        integer(&[3]),
        asn1::encode(0x31, &alg(SHA256)),
        seq(&[oid(TST_INFO), asn1::encode(0xA0, &asn1::encode(0x04, &tst))]),
        asn1::encode(0xA0, &cert.raw),
        asn1::encode(0x31, &signer_info),
    ]);
    seq(&[
        oid("1.2.840.113549.1.7.2"),
        asn1::encode(0xA0, &signed_data),
    ])
}

/// `expired`'s signature (its certificate valid from ten to five days ago) and the same with a
/// timestamp token made at `at`.
pub fn expired_signature_stamped(
    pki: &TestPki,
    at: chrono::DateTime<chrono::Utc>,
) -> (Vec<u8>, Vec<u8>) {
    let sig = pki.sign("expired", SIGNED_PART, &[]);
    let token = token_at(pki, &signature_value(&sig), at);
    let stamped = add_unsigned_attr(&sig, OID_TIMESTAMP_TOKEN, &token);
    (sig, stamped)
}

/// End to end through SMTP: a certificate that expired five days ago, with a signature
/// timestamped a week ago (inside its validity), is stored `pass` with `source=tsp`; the same
/// signature without the timestamp is `fail; reason=expired`.
#[test]
fn expired_certificate_with_an_older_timestamp_passes_over_smtp() {
    let pki = shared_pki();
    let srv = pki.start_server("");

    let week_ago = chrono::Utc::now() - chrono::Duration::days(7);
    let (sig, stamped) = expired_signature_stamped(pki, week_ago);
    let with_tsp = message_with_signature("timestamped a week ago", &stamped);
    let without = message_with_signature("no timestamp", &sig);
    for m in [&with_tsp, &without] {
        crate::smtp::mx_to_alice(&srv, m);
    }
    let stored = crate::smtp::stored(&srv, "alice@example.test");
    assert_eq!(stored.len(), 2);
    let f = header_fields(&stored[0]);
    assert_eq!(header(&f, "X-EDS-Signer-1-Result"), Some("pass"), "{f:?}");
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Signing-Time"),
        Some(format!("{}; source=tsp", rfc3339(week_ago)).as_str())
    );
    let f = header_fields(&stored[1]);
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Result"),
        Some("fail; reason=expired")
    );
}
