//! `tanba verify` on the real NCA RK test samples (tests/data/nca): RSA and GOST signers, every
//! JSON field as the certificates say, verified at a fixed `--at` inside their validity against
//! the NCA test roots given with `--trust` (a temp dir: they are never trusted by default).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use super::filter::verify_json_trust;
use super::filter_pki::{b64, pki, top_headers, with_attachments};
use super::support::pki::{cms_sign, openssl};
use super::support::BIN;

fn nca(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/nca")
        .join(rel)
}

/// A temp trust dir with the NCA RK test roots and intermediates (RSA and both GOST chains).
fn nca_trust() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(nca("ca")).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    dir
}

fn verify_nca(file: &Path, at: &str, extra: &[&str]) -> (i32, Value) {
    let trust = nca_trust();
    let mut args = vec!["--at", at];
    args.extend_from_slice(extra);
    verify_json_trust(file, trust.path(), &args)
}

const RSA_SERIAL: &str = "4279390a141f5353a62947b61ed65e81741467d1";
const GOST_SERIAL: &str = "0ff06211dc82beb00253ffa000f1de84abef454f";
/// Inside the RSA signer's validity (2021-01-18 … 2022-01-18).
const AT_RSA: &str = "2021-06-01T00:00:00Z";
/// Inside the GOST signer's validity (2022-07-28 … 2023-07-28).
const AT_GOST: &str = "2022-09-28T00:00:00Z";

/// Asserts that `s` is exactly the report of a passing individual's SIGN certificate (no
/// email, BIN or organization, no timestamp) with the certificate fields `cert` and the given
/// signing time.
fn assert_individual_signer(s: &Value, cert: Value, signing_time: &str) {
    let mut expected = json!({
        "result": "pass", "reason": null, "email": null,
        "bin": null, "organization": null,
        "roles": ["individual"], "key_usage": "sign",
        "signing_time": signing_time, "tsp_time": null
    });
    for (k, v) in cert.as_object().unwrap() {
        expected[k] = v.clone();
    }
    assert_eq!(s, &expected, "{s:#}");
}

fn assert_rsa_signer(s: &Value, signing_time: &str) {
    let cert = json!({
        "common_name": "ТЕСТОВ ТЕСТ", "surname": "ТЕСТОВ", "given_name": "ТЕСТОВИЧ",
        "full_name": "ТЕСТОВ ТЕСТ ТЕСТОВИЧ", "iin": "123456789011",
        "algorithm": "rsa-sha256", "cert_serial": RSA_SERIAL, "issuer": "CN=ҰКО 3.0 (RSA TEST),C=KZ",
        "not_before": "2021-01-18T13:09:14Z", "not_after": "2022-01-18T13:09:14Z"
    });
    assert_individual_signer(s, cert, signing_time);
}

fn assert_gost_signer(s: &Value, signing_time: &str) {
    let cert = json!({
        "common_name": "ТЕСТТОВ ТЕСТТ", "surname": "ТЕСТТОВ", "given_name": "ТЕСТТОВИЧ",
        "full_name": "ТЕСТТОВ ТЕСТТ ТЕСТТОВИЧ", "iin": "123456789012",
        "algorithm": "gost34310-2015-512", "cert_serial": GOST_SERIAL,
        "issuer": "C=KZ,CN=ҰЛТТЫҚ КУӘЛАНДЫРУШЫ ОРТАЛЫҚ (GOST) TEST 2022",
        "not_before": "2022-07-28T12:34:48Z", "not_after": "2023-07-28T12:34:48Z"
    });
    assert_individual_signer(s, cert, signing_time);
}

#[test]
fn nca_rsa_one_signer_samples() {
    for (file, signed_at) in [
        ("ncanode_attached_1signer_rsa.p7s", "2022-09-28T14:40:30Z"),
        (
            "ncanode_attached_1signer_rsa_lolkek.p7s",
            "2022-10-01T18:52:19Z",
        ),
    ] {
        let (code, v) = verify_nca(&nca(&format!("cms/{file}")), AT_RSA, &[]);
        assert_eq!(code, 0, "{file}: {v:#}");
        assert_eq!(v["verdict"], "pass");
        let sig = &v["signatures"][0];
        assert_eq!(sig["part"], Value::Null);
        assert_eq!(sig["kind"], "cms");
        assert_eq!(sig["file"], file);
        assert_eq!(sig["covers"], Value::Null);
        assert_eq!(sig["signers"].as_array().unwrap().len(), 1);
        assert_rsa_signer(&sig["signers"][0], signed_at);
    }
    // After the certificate expired (at the signingTime the signer claims): expired.
    let (code, v) = verify_nca(
        &nca("cms/ncanode_attached_1signer_rsa.p7s"),
        "2022-09-28T14:40:30Z",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(v["signatures"][0]["signers"][0]["reason"], "expired");
    // Without the NCA roots: untrusted.
    let empty = tempfile::tempdir().unwrap();
    let (code, v) = verify_json_trust(
        &nca("cms/ncanode_attached_1signer_rsa.p7s"),
        empty.path(),
        &["--at", AT_RSA],
    );
    assert_eq!(code, 1);
    assert_eq!(v["signatures"][0]["signers"][0]["reason"], "untrusted");
}

/// The signer of the first signature whose certificate has serial number `serial`.
fn signer_with_serial<'a>(v: &'a Value, serial: &str) -> &'a Value {
    v["signatures"][0]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["cert_serial"] == serial)
        .unwrap()
}

/// (result, reason) by certificate serial.
fn by_serial(v: &Value) -> Vec<(String, String, Option<String>)> {
    let mut out: Vec<_> = v["signatures"][0]["signers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["cert_serial"].as_str().unwrap().to_string(),
                s["result"].as_str().unwrap().to_string(),
                s["reason"].as_str().map(str::to_string),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn nca_two_signers_rsa_and_gost_attached() {
    let file = nca("cms/ncanode_attached_2signers_rsa+gost2015.p7s");
    // While the GOST certificate is valid, the RSA one (2021) has expired, and the other way
    // round: no instant makes both pass. GOST verification is ours (filter/gost.rs).
    let (code, v) = verify_nca(&file, AT_GOST, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        by_serial(&v),
        vec![
            (GOST_SERIAL.into(), "pass".into(), None),
            (RSA_SERIAL.into(), "fail".into(), Some("expired".into())),
        ]
    );
    let gost = signer_with_serial(&v, GOST_SERIAL);
    assert_gost_signer(gost, "2022-09-27T21:17:59Z");

    let (code, v) = verify_nca(&file, AT_RSA, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        by_serial(&v),
        vec![
            (
                GOST_SERIAL.into(),
                "fail".into(),
                Some("not-yet-valid".into())
            ),
            (RSA_SERIAL.into(), "pass".into(), None),
        ]
    );
    let rsa = signer_with_serial(&v, RSA_SERIAL);
    assert_rsa_signer(rsa, "2022-09-27T21:17:59Z");
}

#[test]
fn nca_two_signers_detached_with_content() {
    let file = nca("cms/ncanode_detached_2signers_rsa+gost2015__data_test123.p7s");
    let work = tempfile::tempdir().unwrap();
    let content = work.path().join("data.txt");
    std::fs::write(&content, "test123").unwrap();
    let c = content.to_str().unwrap();
    let (code, v) = verify_nca(&file, AT_GOST, &["--content", c]);
    assert_eq!(code, 1);
    assert_eq!(v["signatures"][0]["covers"], "data.txt");
    assert_eq!(
        by_serial(&v),
        vec![
            (GOST_SERIAL.into(), "pass".into(), None),
            (RSA_SERIAL.into(), "fail".into(), Some("expired".into())),
        ]
    );
    // Other content: both digests mismatch.
    std::fs::write(&content, "test124").unwrap();
    let (_, v) = verify_nca(&file, AT_GOST, &["--content", c]);
    assert_eq!(
        by_serial(&v),
        vec![
            (
                GOST_SERIAL.into(),
                "fail".into(),
                Some("digest-mismatch".into())
            ),
            (
                RSA_SERIAL.into(),
                "fail".into(),
                Some("digest-mismatch".into())
            ),
        ]
    );
    // No content at all: a usage error (exit 2), see operator.rs.
}

#[test]
fn nca_samples_inside_mail() {
    // NCALayer-style: the document and its detached CMS as attachments, the CMS as base64 text.
    let der = std::fs::read(nca(
        "cms/ncanode_detached_2signers_rsa+gost2015__data_test123.p7s",
    ))
    .unwrap();
    let text = b64(&der);
    let m = with_attachments(
        "Подписанный документ",
        &[
            ("document.txt", "text/plain", b"test123"),
            (
                "document.txt.cms",
                "application/octet-stream",
                text.as_bytes(),
            ),
        ],
    );
    let p = pki().write("nca.eml", &m);
    let (code, v) = verify_nca(&p, AT_GOST, &[]);
    assert_eq!(code, 1, "{v:#}");
    let sig = &v["signatures"][0];
    assert_eq!(sig["part"], "3");
    assert_eq!(sig["kind"], "attachment");
    assert_eq!(sig["file"], "document.txt.cms");
    assert_eq!(sig["covers"], "document.txt");
    assert_eq!(
        by_serial(&v),
        vec![
            (GOST_SERIAL.into(), "pass".into(), None),
            (RSA_SERIAL.into(), "fail".into(), Some("expired".into())),
        ]
    );
    // The attached RSA sample as pkcs7-mime: passes at AT_RSA.
    let der = std::fs::read(nca("cms/ncanode_attached_1signer_rsa.p7s")).unwrap();
    let mut m = top_headers("opaque").into_bytes();
    m.extend_from_slice(
        format!(
            "Content-Type: application/pkcs7-mime; smime-type=signed-data; name=\"smime.p7m\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}",
            b64(&der)
        )
        .as_bytes(),
    );
    let p = pki().write("nca2.eml", &m);
    let (code, v) = verify_nca(&p, AT_RSA, &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["signatures"][0]["part"], "TEXT");
    assert_rsa_signer(&v["signatures"][0]["signers"][0], "2022-09-28T14:40:30Z");
}

/// Extracts key and certificate from an NCA test PKCS#12 (legacy PBE) into `dir`.
fn p12_to_pem(p12: &str, password: &str, dir: &Path) -> PathBuf {
    let p12 = nca(&format!("p12/{p12}"));
    openssl(
        dir,
        &[
            "pkcs12",
            "-legacy",
            "-nodes",
            "-clcerts",
            "-passin",
            &format!("pass:{password}"),
            "-in",
            p12.to_str().unwrap(),
            "-out",
            "keycert.pem",
        ],
    );
    dir.join("keycert.pem")
}

#[test]
fn nca_auth_key_is_reported_and_fails_key_usage() {
    let work = tempfile::tempdir().unwrap();
    let keycert = p12_to_pem(
        "ncanode_individual_auth_rsa_revoked_2022_Qwerty12.p12",
        "Qwerty12",
        work.path(),
    );
    let sign = |p12pem: &Path, name: &str| -> PathBuf {
        let content = std::fs::read(nca("MANIFEST.md")).unwrap();
        let signer = p12pem.to_str().unwrap();
        let der = cms_sign(work.path(), &content, &["-nodetach", "-signer", signer]);
        let out = work.path().join(name);
        std::fs::write(&out, der).unwrap();
        out
    };
    let cms = sign(&keycert, "auth.p7s");
    let (code, v) = verify_nca(&cms, "2022-06-01T00:00:00Z", &[]);
    assert_eq!(code, 1);
    let s = &v["signatures"][0]["signers"][0];
    assert_eq!(s["result"], "fail");
    assert_eq!(s["reason"], "key-usage");
    assert_eq!(s["key_usage"], "auth");
    assert_eq!(s["iin"], "123456789011");

    // The SIGN key of the same person, same chain: passes.
    let keycert = p12_to_pem(
        "ncanode_individual_sign_rsa_revoked_2022_Qwerty12.p12",
        "Qwerty12",
        work.path(),
    );
    let cms = sign(&keycert, "sign.p7s");
    let (code, v) = verify_nca(&cms, "2022-06-01T00:00:00Z", &[]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["signatures"][0]["signers"][0]["key_usage"], "sign");
}

#[test]
fn nca_test_roots_are_not_trusted_by_default() {
    // Built-in defaults (certs/trust, shipped empty): the NCA samples are untrusted.
    let out = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["verify", "--json", "--at", AT_RSA])
        .arg(nca("cms/ncanode_attached_1signer_rsa.p7s"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["signatures"][0]["signers"][0]["reason"], "untrusted");
}

#[test]
fn nca_gost2004_cms_the_tsa_token() {
    // The NCA test TSA's RFC 3161 token is itself a CMS SignedData signed with GOST 34.310-2004
    // (chain: ҰКО 3.0 (GOST TEST) → НЕГІЗГІ КО TEST (GOST)).
    let (code, v) = verify_nca(
        &nca("tsp/ncanode_tsp_token.bin"),
        "2022-09-18T13:20:14Z",
        &[],
    );
    assert_eq!(code, 0, "{v:#}");
    let s = &v["signatures"][0]["signers"][0];
    assert_eq!(s["algorithm"], "gost34310-2004");
    assert_eq!(s["issuer"], "CN=ҰКО 3.0 (GOST TEST),C=KZ");
    assert_eq!(s["cert_serial"], "622ddd64fc75397c61d228530beefe9e1cf87094");
    assert_eq!(s["organization"], "АО \"ТЕСТ\"");
    assert_eq!(s["bin"], "123456789021");
}
