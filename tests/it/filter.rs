//! The signature filter on messages built from the test PKI ([`super::filter_pki`]): every MIME
//! shape of SPEC §5, each failure reason, stamping (`tanba stamp`) and the real server path.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::filter_pki::{
    b64, contract_pdf, contract_with_signature, message_with_signature, multipart_signed_body,
    multipart_signed_ct, pki, signed_contract, signed_message, top_headers, with_attachments,
    SIGNED_PART,
};
use super::support::mail::{decode_2047, header, header_fields};
use super::support::{base_toml, run, TestServer, BIN};

/// `tanba verify --json --trust <pki trust> FILE [args]` → (exit code, JSON).
pub fn verify_json(file: &Path, args: &[&str]) -> (i32, Value) {
    verify_json_trust(file, &pki().trust, args)
}

pub fn verify_json_trust(file: &Path, trust: &Path, args: &[&str]) -> (i32, Value) {
    let mut cmd = Command::new(BIN);
    cmd.arg("verify")
        .arg("--json")
        .arg("--trust")
        .arg(trust)
        .args(args)
        .arg(file);
    let out = run(cmd, None);
    let code = out.status.code().expect("exit code");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON ({e}); exit {code}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, v)
}

/// Verifies message bytes; returns (exit, JSON).
fn verify_msg(msg: &[u8]) -> (i32, Value) {
    let p = pki().write("msg.eml", msg);
    verify_json(&p, &[])
}

/// (result, reason) of every signer, in order.
fn results(v: &Value) -> Vec<(String, Option<String>)> {
    v["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["signers"].as_array().unwrap().iter())
        .map(|s| {
            (
                s["result"].as_str().unwrap().to_string(),
                s["reason"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn signer(v: &Value, sig: usize, n: usize) -> &Value {
    &v["signatures"][sig]["signers"][n]
}

/// Verifies message bytes, asserting exit 0 and one passing signer ([`pass1`]); returns the
/// report.
fn verify_pass1(msg: &[u8]) -> Value {
    let (code, v) = verify_msg(msg);
    assert_eq!(code, 0, "{v:#}");
    pass1(&v);
    v
}

fn pass1(v: &Value) {
    assert_eq!(v["verdict"], "pass", "{v:#}");
    assert_eq!(results(v), vec![("pass".to_string(), None)], "{v:#}");
}

/// Exactly one signer, failed for `reason`.
fn fail1(v: &Value, reason: &str) {
    assert_eq!(
        results(v),
        vec![("fail".to_string(), Some(reason.to_string()))],
        "{v:#}"
    );
}

#[test]
fn multipart_signed_individual_every_field() {
    let msg = signed_message("individual", "Договор");
    let v = verify_pass1(&msg);
    let sig = &v["signatures"][0];
    assert_eq!(sig["part"], "TEXT");
    assert_eq!(sig["kind"], "multipart/signed");
    assert_eq!(sig["file"], Value::Null);
    assert_eq!(sig["covers"], Value::Null);
    let s = signer(&v, 0, 0);
    assert_eq!(s["result"], "pass");
    assert_eq!(s["reason"], Value::Null);
    assert_eq!(s["common_name"], "ТЕСТОВ ТЕСТ");
    assert_eq!(s["surname"], "ТЕСТОВ");
    assert_eq!(s["given_name"], "ТЕСТОВИЧ");
    assert_eq!(s["full_name"], "ТЕСТОВ ТЕСТ ТЕСТОВИЧ");
    assert_eq!(s["email"], "test@example.kz");
    assert_eq!(s["iin"], "123456789011");
    assert_eq!(s["bin"], Value::Null);
    assert_eq!(s["organization"], Value::Null);
    assert_eq!(s["roles"], serde_json::json!(["individual"]));
    assert_eq!(s["key_usage"], "sign");
    assert_eq!(s["algorithm"], "rsa-sha256");
    assert_eq!(s["cert_serial"], "41e45cc8a04c705963e5cd6769848a934d8eaef5");
    assert_eq!(s["issuer"], "CN=ТЕСТ ҰКО (RSA),C=KZ");
    for k in ["not_before", "not_after", "signing_time"] {
        let t = s[k].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'),
            "{k}: {t}"
        );
    }
    assert_eq!(s["tsp_time"], Value::Null);
    // Exactly the SPEC §6 fields.
    let mut keys: Vec<&String> = s.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys.len(), 19);
    let mut top: Vec<&String> = v.as_object().unwrap().keys().collect();
    top.sort();
    assert_eq!(top, ["signatures", "verdict"]);
}

#[test]
fn legal_entity_with_bmp_strings_and_subject_email() {
    let msg = signed_message("legal", "Contract");
    let (code, v) = verify_msg(&msg);
    assert_eq!(code, 0, "{v:#}");
    let s = signer(&v, 0, 0);
    assert_eq!(s["common_name"], "ДИРЕКТОРОВ ДИРЕКТОР");
    assert_eq!(s["full_name"], "ДИРЕКТОРОВ ДИРЕКТОР ДИРЕКТОРОВИЧ");
    assert_eq!(s["organization"], "АО \"ТЕСТ\"");
    assert_eq!(s["bin"], "123456789021");
    assert_eq!(s["iin"], "880101300123");
    assert_eq!(s["email"], "ceo@test.kz");
    assert_eq!(s["roles"], serde_json::json!(["legal-entity", "ceo"]));
    // The BMPString encoding is really there.
    let der = std::process::Command::new("openssl")
        .args(["x509", "-outform", "DER", "-in"])
        .arg(pki().cert("legal"))
        .output()
        .unwrap()
        .stdout;
    assert!(
        der.windows(2).any(|w| w == [0x1E, 0x26]),
        "no BMPString in the legal cert"
    );
}

#[test]
fn nested_legacy_and_forwarded_multipart_signed() {
    let pki = pki();
    let sig = pki.sign(&["individual"], SIGNED_PART, &[]);
    // Legacy x-pkcs7-signature, as the first part of a multipart/mixed.
    let mut m = top_headers("nested").into_bytes();
    m.extend_from_slice(b"Content-Type: multipart/mixed; boundary=\"OUT\"\r\n\r\n--OUT\r\n");
    m.extend_from_slice(multipart_signed_ct(true).as_bytes());
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(&multipart_signed_body(SIGNED_PART, &sig, true));
    m.extend_from_slice(
        b"\r\n--OUT\r\nContent-Type: text/plain\r\n\r\nunsigned footer\r\n--OUT--\r\n",
    );
    let v = verify_pass1(&m);
    assert_eq!(v["signatures"][0]["part"], "1");
    assert_eq!(v["signatures"][0]["kind"], "multipart/signed");

    // Forwarded: the signed message is the body of a message/rfc822 in part 2.
    let inner = signed_message("individual", "original");
    let mut f = top_headers("Fwd: original").into_bytes();
    f.extend_from_slice(
        b"Content-Type: multipart/mixed; boundary=\"FWD\"\r\n\r\n--FWD\r\nContent-Type: text/plain\r\n\r\n\
See below.\r\n--FWD\r\nContent-Type: message/rfc822\r\n\r\n",
    );
    f.extend_from_slice(&inner);
    f.extend_from_slice(b"\r\n--FWD--\r\n");
    let v = verify_pass1(&f);
    assert_eq!(v["signatures"][0]["part"], "2.TEXT");
}

#[test]
fn pkcs7_mime_signed_data_der_and_ber() {
    let pki = pki();
    let inner = b"Content-Type: text/plain; charset=utf-8\r\n\r\nOpaque signed text\r\n";
    for (ctype, opts) in [
        (
            "application/pkcs7-mime; smime-type=signed-data",
            &["-nodetach"][..],
        ),
        ("application/x-pkcs7-mime", &["-nodetach", "-stream"][..]),
    ] {
        let cms = pki.sign(&["individual"], inner, opts);
        if opts.contains(&"-stream") {
            assert_eq!(cms[1], 0x80, "expected BER indefinite length");
        }
        let mut m = top_headers("opaque").into_bytes();
        m.extend_from_slice(
            format!(
                "Content-Type: {ctype}; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\
Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n{}",
                b64(&cms)
            )
            .as_bytes(),
        );
        let (code, v) = verify_msg(&m);
        assert_eq!(code, 0, "{ctype}: {v:#}");
        pass1(&v);
        assert_eq!(v["signatures"][0]["part"], "TEXT");
        assert_eq!(v["signatures"][0]["kind"], "pkcs7-mime");
    }
}

#[test]
fn detached_attachment_matched_by_name_and_tampered() {
    let pki = pki();
    let pdf = contract_pdf();
    let sig = pki.sign(&["legal"], &pdf, &[]);
    let m = contract_with_signature("contract", &sig);
    let v = verify_pass1(&m);
    let s = &v["signatures"][0];
    assert_eq!(s["part"], "3");
    assert_eq!(s["kind"], "attachment");
    assert_eq!(s["file"], "contract.pdf.p7s");
    assert_eq!(s["covers"], "contract.pdf");

    let mut bad = pdf.clone();
    bad[30] ^= 1;
    let m = with_attachments(
        "contract",
        &[
            ("contract.pdf", "application/pdf", &bad),
            ("contract.pdf.p7s", "application/octet-stream", &sig),
        ],
    );
    let (code, v) = verify_msg(&m);
    assert_eq!(code, 1);
    assert_eq!(v["verdict"], "fail");
    fail1(&v, "digest-mismatch");
    // A failed signer still shows what its certificate says (the headers will not).
    assert_eq!(signer(&v, 0, 0)["bin"], "123456789021");
}

#[test]
fn embedded_ber_attachment_and_pem_and_base64_text_signatures() {
    let pki = pki();
    let pdf = contract_pdf();
    // Embedded content, BER with indefinite lengths (streaming signer), by name.
    let ber = pki.sign(&["individual"], &pdf, &["-nodetach", "-stream"]);
    assert_eq!(ber[1], 0x80);
    let m = with_attachments(
        "ber",
        &[("contract.pdf.cms", "application/octet-stream", &ber)],
    );
    let v = verify_pass1(&m);
    assert_eq!(v["signatures"][0]["part"], "2");
    assert_eq!(v["signatures"][0]["covers"], Value::Null);

    // PEM, detached, names that do not match: the only other attachment is the content.
    let der = pki.sign(&["individual"], &pdf, &[]);
    let pem = format!(
        "-----BEGIN PKCS7-----\r\n{}-----END PKCS7-----\r\n",
        b64(&der)
    );
    let m = with_attachments(
        "pem",
        &[
            ("dogovor.pdf", "application/pdf", &pdf),
            ("podpis.p7s", "application/pkcs7-signature", pem.as_bytes()),
        ],
    );
    let v = verify_pass1(&m);
    assert_eq!(v["signatures"][0]["covers"], "dogovor.pdf");
    assert_eq!(v["signatures"][0]["file"], "podpis.p7s");

    // Base64 text (as NCALayer hands it out) in a base64 part with a neutral name: found by
    // content.
    let text = b64(&ber);
    let m = with_attachments(
        "b64",
        &[("signature.txt", "application/octet-stream", text.as_bytes())],
    );
    let v = verify_pass1(&m);
    assert_eq!(v["signatures"][0]["file"], "signature.txt");
}

#[test]
fn bare_lf_message_is_canonicalised_for_hashing() {
    let pki = pki();
    let sig = pki.sign(&["individual"], SIGNED_PART, &[]);
    let m = message_with_signature("lf", &sig);
    let lf: Vec<u8> = String::from_utf8(m)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    verify_pass1(&lf);
}

#[test]
fn tampered_body_fails_digest() {
    let msg = signed_message("individual", "tampered");
    let s = String::from_utf8(msg)
        .unwrap()
        .replacen("Regards", "Regardz", 1);
    let (code, v) = verify_msg(s.as_bytes());
    assert_eq!(code, 1);
    fail1(&v, "digest-mismatch");
}

#[test]
fn two_signers_in_one_cms() {
    let pki = pki();
    let sig = pki.sign(&["individual", "ecdsa"], SIGNED_PART, &[]);
    let m = message_with_signature("two", &sig);
    let (code, v) = verify_msg(&m);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(results(&v).len(), 2);
    // SignerInfos are reported in the order of the CMS (OpenSSL puts the last one first).
    let mut algs: Vec<&str> = (0..2)
        .map(|i| signer(&v, 0, i)["algorithm"].as_str().unwrap())
        .collect();
    algs.sort();
    assert_eq!(algs, ["ecdsa-sha256", "rsa-sha256"]);

    // One good, one expired: the message fails, each signer says why.
    let sig = pki.sign(&["individual", "expired"], SIGNED_PART, &[]);
    let m = message_with_signature("two", &sig);
    let (code, v) = verify_msg(&m);
    assert_eq!(code, 1);
    assert_eq!(v["verdict"], "fail");
    let mut r = results(&v);
    r.sort();
    assert_eq!(
        r,
        vec![
            ("fail".to_string(), Some("expired".to_string())),
            ("pass".to_string(), None),
        ]
    );
}

/// A multipart/signed message over SIGNED_PART with a CMS made with `opts`.
fn signed_with(signer: &str, opts: &[&str]) -> Vec<u8> {
    let sig = pki().sign(&[signer], SIGNED_PART, opts);
    message_with_signature("t", &sig)
}

#[test]
fn failure_reasons() {
    let cases: &[(&str, &[&str], &str, &str)] = &[
        ("individual", &["-nocerts"], "fail", "no-certificate"),
        ("expired", &[], "fail", "expired"),
        ("alien", &[], "fail", "untrusted"),
        ("impostor", &[], "fail", "untrusted"),
        ("auth", &[], "fail", "key-usage"),
        ("dsa", &[], "permerror", "unsupported-algorithm"),
    ];
    for (who, opts, result, reason) in cases {
        let (code, v) = verify_msg(&signed_with(who, opts));
        assert_eq!(code, 1, "{who}: {v:#}");
        assert_eq!(v["verdict"], *result, "{who}");
        assert_eq!(
            results(&v),
            vec![(result.to_string(), Some(reason.to_string()))],
            "{who}: {v:#}"
        );
    }
    let (_, v) = verify_msg(&signed_with("auth", &[]));
    assert_eq!(signer(&v, 0, 0)["key_usage"], "auth");
    // The impostor's certificate verifies its own signature and claims the real serial and
    // names, which is exactly why it must not pass.
    let (_, v) = verify_msg(&signed_with("impostor", &[]));
    assert_eq!(
        signer(&v, 0, 0)["cert_serial"],
        "41e45cc8a04c705963e5cd6769848a934d8eaef5"
    );
    // Not yet valid: verify as of a time before the certificates.
    let p = pki().write("early.eml", &signed_with("individual", &[]));
    let (code, v) = verify_json(&p, &["--at", "2001-01-01T00:00:00Z"]);
    assert_eq!(code, 1);
    fail1(&v, "not-yet-valid");
}

#[test]
fn algorithms_and_identifiers() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("ecdsa384", &["-md", "sha384"], "ecdsa-sha384"),
        (
            "individual",
            &["-keyopt", "rsa_padding_mode:pss"],
            "rsa-pss-sha256",
        ),
        ("individual", &["-keyid", "-md", "sha512"], "rsa-sha512"),
    ];
    for (who, opts, alg) in cases {
        let (code, v) = verify_msg(&signed_with(who, opts));
        assert_eq!(code, 0, "{who} {opts:?}: {v:#}");
        assert_eq!(signer(&v, 0, 0)["algorithm"], *alg);
    }
}

#[test]
fn intermediates_from_the_cms_or_the_trust_dir() {
    let pki = pki();
    let with_inter = pki.write("a.eml", &signed_with("individual", &[]));
    let without = pki.write("b.eml", &signed_with("individual", &["-no-inter"]));
    // Trust: root only; the CMS carries the intermediate.
    let (code, v) = verify_json_trust(&with_inter, &pki.trust_root_only, &[]);
    assert_eq!(code, 0, "{v:#}");
    let (code, v) = verify_json_trust(&without, &pki.trust_root_only, &[]);
    assert_eq!(code, 1);
    fail1(&v, "untrusted");
    // Trust: root + intermediate; the CMS has the signer's certificate only.
    let (code, v) = verify_json(&without, &[]);
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn broken_cms_is_permerror_and_bounded() {
    let pki = pki();
    let good = pki.sign(&["individual"], &contract_pdf(), &[]);
    let truncated = &good[..good.len() / 2];
    let mut deep = Vec::new();
    for _ in 0..5000 {
        deep.extend_from_slice(&[0x30, 0x80]);
    }
    for _ in 0..5000 {
        deep.extend_from_slice(&[0, 0]);
    }
    // A ContentInfo claiming a 2 GiB length.
    let mut huge = vec![0x30, 0x84, 0x80, 0x00, 0x00, 0x00];
    huge.extend_from_slice(&[
        0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
    ]);
    huge.extend_from_slice(&[0xA0, 0x84, 0x7F, 0xFF, 0xFF, 0xF0, 0x30, 0x80]);
    huge.extend_from_slice(&[0u8; 64]);
    for (name, cms) in [
        ("truncated", truncated.to_vec()),
        ("deep", deep),
        ("huge", huge),
    ] {
        let m = contract_with_signature(name, &cms);
        let p = pki.write("broken.eml", &m);
        // Under a 1 GiB address-space limit: a 2 GiB allocation would abort the process.
        let out = Command::new("sh")
            .arg("-c")
            .arg("ulimit -v 1048576; exec \"$0\" verify --json --trust \"$1\" \"$2\"")
            .arg(BIN)
            .arg(&pki.trust)
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verdict"], "permerror", "{name}: {v:#}");
        assert_eq!(
            results(&v),
            vec![("permerror".to_string(), Some("malformed".to_string()))],
            "{name}"
        );
    }
}

#[test]
fn cli_exit_codes_and_human_report() {
    let pki = pki();
    let plain = pki.write(
        "plain.eml",
        b"From: a@b\r\nSubject: hi\r\n\r\nno signature\r\n",
    );
    let (code, v) = verify_json(&plain, &[]);
    assert_eq!(code, 3);
    assert_eq!(v["verdict"], "none");
    assert_eq!(v["signatures"], serde_json::json!([]));

    let signed = pki.write("two.eml", &{
        let sig = pki.sign(&["individual", "expired"], SIGNED_PART, &[]);
        message_with_signature("two", &sig)
    });
    let out = Command::new(BIN)
        .args(["verify", "--trust"])
        .arg(&pki.trust)
        .arg(&signed)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Verdict: FAIL (1 of 2 signers valid)", "{text}");
    let mut blocks: Vec<&str> = text.split("\n\n").skip(1).collect();
    assert_eq!(blocks.len(), 2, "{text}");
    assert!(blocks[0].starts_with("Signer 1: "), "{text}");
    assert!(blocks[1].starts_with("Signer 2: "), "{text}");
    blocks.sort_by_key(|b| !b.contains(": PASS\n"));
    assert!(
        blocks[0].contains(": PASS\n  Found in:     multipart/signed, part TEXT\n"),
        "{text}"
    );
    assert!(
        blocks[0].contains("\n  Name:         ТЕСТОВ ТЕСТ ТЕСТОВИЧ\n"),
        "{text}"
    );
    assert!(blocks[1].contains(": FAIL (expired)\n"), "{text}");
    assert!(blocks[1].contains("expired 2021-01-01T00:00:00Z"), "{text}");
    assert!(
        blocks[1].contains("(as the certificate claims; not verified)"),
        "{text}"
    );

    // Usage and I/O errors: 2.
    for args in [
        vec!["verify".to_string(), "/nonexistent/x.eml".to_string()],
        vec![
            "verify".into(),
            "--at".into(),
            "yesterday".into(),
            plain.display().to_string(),
        ],
        vec![
            "verify".into(),
            "--content".into(),
            plain.display().to_string(),
            plain.display().to_string(),
        ],
        vec![
            "verify".into(),
            "--trust".into(),
            "/nonexistent".into(),
            plain.display().to_string(),
        ],
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Stamping.

fn stamp_cli(config: Option<&Path>, msg: &[u8]) -> Vec<u8> {
    let p = pki().write("in.eml", msg);
    let mut cmd = Command::new(BIN);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.arg("stamp").arg("--trust").arg(&pki().trust).arg(&p);
    let out = run(cmd, None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Checks that `stamped` = our header lines + `original`, and that openssl still verifies it.
fn assert_stamp_keeps_signature(stamped: &[u8], original: &[u8]) {
    assert!(stamped.ends_with(original), "the original bytes changed");
    let prefix = String::from_utf8(stamped[..stamped.len() - original.len()].to_vec()).unwrap();
    assert!(prefix.is_ascii());
    for line in prefix.trim_end().split("\r\n") {
        assert!(
            line.starts_with(' ')
                || line.starts_with("Authentication-Results: ")
                || line.starts_with("X-EDS-"),
            "unexpected stamp line {line:?}"
        );
        assert!(line.len() <= 78, "line too long: {line:?}");
    }
    pki().assert_openssl_verifies(stamped, "the stamped message");
}

#[test]
fn stamp_headers_on_a_valid_message() {
    let msg = signed_message("legal", "Договор поставки");
    let stamped = stamp_cli(None, &msg);
    assert_stamp_keeps_signature(&stamped, &msg);
    let f = header_fields(&stamped);
    assert_eq!(f[0].0, "Authentication-Results");
    let ar = f[0].1.replace("\r\n", "");
    assert!(
        ar.starts_with("localhost; smime=pass body.smime-part=TEXT body.smime-identifier=ceo@test.kz body.smime-serial=0a11ce body.smime-issuer=\"CN="),
        "{ar}"
    );
    assert!(ar.contains("\\\\D0\\\\A2"), "issuer escaped to ASCII: {ar}");
    assert_eq!(header(&f, "X-EDS-Status"), Some("pass; signers=1; valid=1"));
    let summary = decode_2047(header(&f, "X-EDS-Summary").unwrap());
    assert!(
        summary.starts_with(
            "✔ Valid EDS: ДИРЕКТОРОВ ДИРЕКТОР ДИРЕКТОРОВИЧ, IIN 880101300123, АО \"ТЕСТ\" (BIN 123456789021), "
        ),
        "{summary}"
    );
    assert!(summary.ends_with(" UTC"), "{summary}");
    assert_eq!(header(&f, "X-EDS-Signer-1-Result"), Some("pass"));
    assert_eq!(header(&f, "X-EDS-Signer-1-Part"), Some("TEXT"));
    assert_eq!(
        decode_2047(header(&f, "X-EDS-Signer-1-Name").unwrap()),
        "ДИРЕКТОРОВ ДИРЕКТОР ДИРЕКТОРОВИЧ"
    );
    assert_eq!(header(&f, "X-EDS-Signer-1-Email"), Some("ceo@test.kz"));
    assert_eq!(header(&f, "X-EDS-Signer-1-IIN"), Some("880101300123"));
    assert_eq!(
        decode_2047(header(&f, "X-EDS-Signer-1-Organization").unwrap()),
        "АО \"ТЕСТ\""
    );
    assert_eq!(header(&f, "X-EDS-Signer-1-BIN"), Some("123456789021"));
    assert!(header(&f, "X-EDS-Signer-1-Signing-Time")
        .unwrap()
        .ends_with("Z; source=claimed"));
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Roles"),
        Some("legal-entity, ceo")
    );
    assert_eq!(
        decode_2047(header(&f, "X-EDS-Signer-1-Certificate").unwrap()),
        "serial=0a11ce; issuer=\"CN=ТЕСТ ҰКО (RSA),C=KZ\"; algorithm=rsa-sha256"
    );
}

#[test]
fn stamp_identity_only_on_pass_and_attachment_part() {
    let m = signed_contract("expired", "expired");
    let stamped = stamp_cli(None, &m);
    assert!(stamped.ends_with(&m));
    let f = header_fields(&stamped);
    assert_eq!(header(&f, "X-EDS-Status"), Some("fail; signers=1; valid=0"));
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Result"),
        Some("fail; reason=expired")
    );
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Part"),
        Some("3; file=\"contract.pdf.p7s\"")
    );
    for absent in [
        "Name",
        "IIN",
        "Email",
        "Organization",
        "BIN",
        "Roles",
        "Certificate",
    ] {
        assert!(
            header(&f, &format!("X-EDS-Signer-1-{absent}")).is_none(),
            "{absent} stamped for a failed signer"
        );
    }
    let ar = f[0].1.replace("\r\n", "");
    assert!(
        ar.contains("smime=fail reason=\"expired\" body.smime-part=3 body.smime-serial=0e0e"),
        "{ar}"
    );
    assert_eq!(
        decode_2047(header(&f, "X-EDS-Summary").unwrap()),
        "✘ Invalid EDS: certificate expired"
    );
}

#[test]
fn forged_stamp_headers_are_removed() {
    let forged = "X-EDS-Status: pass; signers=1; valid=1\r\nX-EDS-Signer-1-Name: Forger Forgerov\r\n\
Authentication-Results: localhost; smime=pass\r\nAuthentication-Results: other.example; dkim=pass\r\n\
x-eds-summary: =?UTF-8?B?0J/QvtC00LTQtdC70LrQsA==?=\r\n";
    // Unsigned mail.
    let unsigned = format!(
        "{forged}From: a@b.kz\r\nSubject: hi\r\n\r\nX-EDS-Status: pass (body, untouched)\r\n"
    );
    let stamped = stamp_cli(None, unsigned.as_bytes());
    let text = String::from_utf8(stamped).unwrap();
    assert!(
        text.starts_with(
            "Authentication-Results: localhost; smime=none\r\nX-EDS-Status: none; signers=0; valid=0\r\nX-EDS-Summary: No EDS\r\n\
Authentication-Results: other.example; dkim=pass\r\nFrom: a@b.kz\r\n"
        ),
        "{text}"
    );
    assert!(!text.contains("Forger"));
    assert!(text.ends_with("\r\n\r\nX-EDS-Status: pass (body, untouched)\r\n"));

    // Signed mail: the forgery goes, our real stamp stays, the signature still verifies.
    let signed = signed_message("individual", "forged");
    let mut m = forged.as_bytes().to_vec();
    m.extend_from_slice(&signed);
    let stamped = stamp_cli(None, &m);
    assert_stamp_keeps_signature(
        &stamped[..],
        &[
            b"Authentication-Results: other.example; dkim=pass\r\n".as_slice(),
            &signed,
        ]
        .concat(),
    );
    let text = String::from_utf8_lossy(&stamped);
    assert!(!text.contains("Forger"));
    assert_eq!(text.matches("X-EDS-Status:").count(), 1);
    let f = header_fields(&stamped);
    assert_eq!(
        decode_2047(header(&f, "X-EDS-Signer-1-Name").unwrap()),
        "ТЕСТОВ ТЕСТ ТЕСТОВИЧ"
    );
}

#[test]
fn stamp_language_subject_tag_and_keywords_from_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tanba.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mx.example.kz\"\n\n[signatures]\ntrust_dir = \"{}\"\n\
language = \"ru\"\nsubject_tag = true\nkeywords = false\n",
            pki().trust.display()
        ),
    )
    .unwrap();
    let msg = signed_message("individual", "Договор");
    let p = pki().write("ru.eml", &msg);
    // `tanba --config CFG stamp FILE` (the config is rewritten below).
    let stamp = || {
        Command::new(BIN)
            .arg("--config")
            .arg(&cfg)
            .arg("stamp")
            .arg(&p)
            .output()
            .unwrap()
    };
    let out = stamp();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "verdict: pass");
    let f = header_fields(&out.stdout);
    assert!(f[0].1.starts_with("mx.example.kz; smime=pass"));
    let summary = decode_2047(header(&f, "X-EDS-Summary").unwrap());
    assert!(
        summary.starts_with("✔ ЭЦП действительна: ТЕСТОВ ТЕСТ ТЕСТОВИЧ, ИИН 123456789011, "),
        "{summary}"
    );
    assert_eq!(header(&f, "Subject"), Some("[EDS valid] Договор"));
    // Only the Subject line changed below the stamp.
    let body_at = |m: &[u8]| m.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert_eq!(&out.stdout[body_at(&out.stdout)..], &msg[body_at(&msg)..]);

    // An unsigned message whose sender typed a tag: no tag comes out.
    let forged = pki().write(
        "typed-tag.eml",
        b"From: a@example.kz\r\nSubject: [EDS valid] Invoice, please pay today\r\n\r\nPay.\r\n",
    );
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .arg("stamp")
        .arg(&forged)
        .output()
        .unwrap();
    assert!(out.status.success());
    let f = header_fields(&out.stdout);
    assert_eq!(header(&f, "Subject"), Some("Invoice, please pay today"));

    // kk, and the keywords line without a config override.
    std::fs::write(
        &cfg,
        format!(
            "[signatures]\ntrust_dir = \"{}\"\nlanguage = \"kk\"\n",
            pki().trust.display()
        ),
    )
    .unwrap();
    let out = stamp();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "verdict: pass (keywords $EDSValid)"
    );
    let f = header_fields(&out.stdout);
    let summary = decode_2047(header(&f, "X-EDS-Summary").unwrap());
    assert!(
        summary.starts_with("✔ ЭЦҚ жарамды: ТЕСТОВ ТЕСТ ТЕСТОВИЧ, ЖСН 123456789011, "),
        "{summary}"
    );
}

// ---------------------------------------------------------------------------------------------
// The real server: SMTP in, stored stamped.

/// A server whose trust_dir holds the test PKI's root and intermediate.
pub fn server_trusting_pki(extra_signatures: &str) -> TestServer {
    server_trusting_pki_with(|toml| toml.replace("#SIGNATURES", extra_signatures))
}

/// A server trusting the test PKI, its config the base one changed by `edit`, with
/// alice@example.test.
pub fn server_trusting_pki_with(edit: impl FnOnce(String) -> String) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    for f in std::fs::read_dir(&pki().trust).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), trust.join(f.file_name())).unwrap();
    }
    let toml = edit(base_toml(dir.path()));
    let srv = TestServer::start_toml(dir, &toml);
    srv.add_user("alice@example.test", "secret-alice");
    srv
}

#[test]
fn smtp_delivery_is_stamped_and_body_kept() {
    let srv = server_trusting_pki("");
    let signed = signed_message("individual", "Договор");
    let bad = signed_contract("alien", "alien");
    let plain = b"From: a@b.kz\r\nTo: alice@example.test\r\nSubject: plain\r\nX-EDS-Status: pass\r\n\r\nhello\r\n".to_vec();
    for m in [&signed, &bad, &plain] {
        super::smtp::mx_to_alice(&srv, m);
    }
    let stored = super::smtp::stored(&srv, "alice@example.test");
    assert_eq!(stored.len(), 3);
    let expect = [
        ("pass; signers=1; valid=1", &signed),
        ("fail; signers=1; valid=0", &bad),
        ("none; signers=0; valid=0", &plain),
    ];
    for (m, (status, original)) in stored.iter().zip(expect) {
        let f = header_fields(m);
        assert_eq!(f[0].0, "Authentication-Results");
        assert!(
            f[0].1.starts_with("mail.example.test; smime="),
            "{}",
            f[0].1
        );
        assert_eq!(header(&f, "X-EDS-Status"), Some(status));
        if original != &plain {
            super::smtp::assert_stored_as(m, original, "Received: from sender.example");
        }
    }
    // The signed one still verifies with openssl after storage.
    let signed_stored = &stored[0];
    let received_at = signed_stored
        .windows(10)
        .position(|w| w == b"Received: ")
        .unwrap();
    let mut without_received = signed_stored[..received_at].to_vec();
    without_received.extend_from_slice(&signed_stored[signed_stored.len() - signed.len()..]);
    assert_stamp_keeps_signature(&without_received, &signed);
    let f = header_fields(&stored[1]);
    assert_eq!(
        header(&f, "X-EDS-Signer-1-Result"),
        Some("fail; reason=untrusted")
    );
    // The forged X-EDS-Status of the plain message is gone.
    let text = String::from_utf8_lossy(&stored[2]);
    assert_eq!(text.matches("X-EDS-Status").count(), 1, "{text}");
}
