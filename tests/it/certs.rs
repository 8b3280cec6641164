//! `tanba certs fetch-nca` and `tanba certs list` (issue 7), against a local HTTP server laid
//! out as a mirror (`--base-url`) and serving the NCA RK *test* files under the production
//! names. No outside network.

use crate::revocation::{nca, Cli, HttpServer};

/// Puts `src` at `www/<rel>`.
fn put(www: &std::path::Path, rel: &str, src: &std::path::Path) {
    let dst = www.join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(src, dst).unwrap();
}

#[test]
fn fetch_nca_installs_ca_certificates_and_crls_and_refuses_the_rest() {
    let base = tempfile::tempdir().unwrap();
    let www = base.path().join("www");
    put(
        &www,
        "cert/root_gost_2022.cer",
        &nca("ca/root_test_gost_2022.cer"),
    );
    put(
        &www,
        "cert/nca_gost_2022.cer",
        &nca("ca/nca_gost2022_test.cer"),
    );
    put(&www, "cert/root_rsa_2020.cer", &nca("ca/root_rsa_test.pem"));
    put(&www, "cert/nca_rsa_2022.cer", &nca("ca/nca_rsa_test.pem"));
    // An end-entity certificate where an intermediate should be: refused.
    put(
        &www,
        "cert/nca_gost.crt",
        &nca("certs/ncanode_individual_sign_rsa_2022.cer"),
    );
    // The GOST-2015 intermediate's CRL (GOST-signed): kept. A CRL with a broken signature:
    // refused.
    put(
        &www,
        "crl/nca_gost_2022.crl",
        &nca("crl/ncanode_nca_gost2022_test.crl"),
    );
    let mut broken = std::fs::read(nca("crl/ncanode_nca_rsa_test.crl")).unwrap();
    let n = broken.len();
    broken[n - 3] ^= 0x10;
    std::fs::write(www.join("crl/nca_rsa_2022.crl"), &broken).unwrap();
    let server = HttpServer::start(&www);

    let trust = base.path().join("trust");
    let crl_dir = base.path().join("crl");
    std::fs::create_dir_all(&crl_dir).unwrap();
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::write(trust.join("README.md"), "Put the NCA RK roots here.\n").unwrap();
    let cli = Cli::new(&trust, &format!("crl_dir = \"{}\"", crl_dir.display()));
    let url = server.url("");
    let (code, out, err) = cli.tanba(&["certs", "fetch-nca", "--base-url", &url]);
    assert_eq!(code, 1, "{out}\n{err}");

    // The four CA certificates, with subject, validity and fingerprint.
    for name in [
        "root_gost_2022.cer",
        "nca_gost_2022.cer",
        "root_rsa_2020.cer",
        "nca_rsa_2022.cer",
    ] {
        assert!(trust.join(name).is_file(), "{name}\n{out}");
        assert!(
            out.contains(&format!("installed: {}", trust.join(name).display())),
            "{out}"
        );
    }
    assert!(
        out.contains("Subject:     C=KZ,CN=НЕГІЗГІ КУӘЛАНДЫРУШЫ ОРТАЛЫҚ (GOST) TEST 2022"),
        "{out}"
    );
    assert!(
        out.contains("Valid:       2022-07-07T09:05:52Z to 2032-07-07T09:05:52Z"),
        "{out}"
    );
    // SHA-256 of root_test_gost_2022.cer (MANIFEST: b995e79e7c07429f...).
    assert!(
        out.contains("SHA-256:     B9:95:E7:9E:7C:07:42:9F"),
        "{out}"
    );
    // The leaf is refused and not installed.
    assert!(
        out.contains("refused: nca_gost.crt: not a CA certificate"),
        "{out}"
    );
    assert!(!trust.join("nca_gost.crt").exists());
    // Files the mirror does not have are reported, not fatal.
    assert!(out.contains("not available: root_gost.crt"), "{out}");
    // CRLs: the good one kept, the broken one refused.
    assert!(crl_dir.join("nca_gost_2022.crl").is_file(), "{out}");
    assert!(!crl_dir.join("nca_rsa_2022.crl").exists(), "{out}");
    assert!(out.contains("refused: nca_rsa_2022.crl"), "{out}");
    assert!(server
        .requests()
        .iter()
        .any(|r| r == "GET /cert/root_rsa_2020.cer"));

    // What is trusted now.
    let (code, out, err) = cli.tanba(&["certs", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("4 certificates: 2 root, 2 intermediate, 0 other"),
        "{out}"
    );
    assert!(out.contains("Issuer:      (self-signed)"), "{out}");
    assert!(out.contains("Type:        intermediate CA"), "{out}");
    assert!(out.contains("Key:         gost34310-2015-512"), "{out}");
    assert!(out.contains("Signature:   verified"), "{out}");
    // The README in the trust dir is neither a certificate nor an error.
    assert!(!err.contains("README"), "{err}");

    // A mirror with nothing wrong: exit 0, files unchanged.
    std::fs::remove_file(www.join("cert/nca_gost.crt")).unwrap();
    std::fs::remove_file(www.join("crl/nca_rsa_2022.crl")).unwrap();
    let (code, out, err) = cli.tanba(&["certs", "fetch-nca", "--base-url", &url]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("unchanged: "), "{out}");

    // The installed roots are usable: an NCA RSA sample verifies with this trust_dir.
    let (code, v) = cli.verify_json(
        &nca("cms/ncanode_attached_1signer_rsa.p7s"),
        &["--at", "2021-06-01T00:00:00Z"],
    );
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn certs_list_skips_files_that_are_not_certificates() {
    let base = tempfile::tempdir().unwrap();
    let trust = base.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(nca("ca/root_rsa_test.pem"), trust.join("root.pem")).unwrap();
    std::fs::write(trust.join("notes.pem"), "not a certificate").unwrap();
    std::fs::write(trust.join("README.md"), "readme").unwrap();
    let cli = Cli::new(&trust, "");
    let (code, out, err) = cli.tanba(&["certs", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("1 certificates: 1 root, 0 intermediate, 0 other"),
        "{out}"
    );
    assert!(err.contains("notes.pem: not a certificate"), "{err}");
    // An empty trust dir says so.
    let empty = base.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let cli = Cli::new(&empty, "");
    let (code, out, _) = cli.tanba(&["certs", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("(none: no signature can pass"), "{out}");
}

/// A stray file in `trust_dir` (not a certificate) is skipped with a warning naming it by
/// `serve` and `verify` alike, as by `certs list`: the server still starts and the real
/// anchors still work.
#[test]
fn serve_and_verify_skip_files_that_are_not_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let trust = dir.path().join("trust");
    std::fs::create_dir_all(&trust).unwrap();
    std::fs::copy(nca("ca/root_rsa_test.pem"), trust.join("root.pem")).unwrap();
    std::fs::copy(nca("ca/nca_rsa_test.pem"), trust.join("nca.pem")).unwrap();
    std::fs::write(trust.join("notes.pem"), "not a certificate").unwrap();
    std::fs::write(trust.join("big.cer"), vec![0u8; 2 << 20]).unwrap();

    let cli = Cli::new(&trust, "");
    let sample = nca("cms/ncanode_attached_1signer_rsa.p7s");
    let (code, out, err) = cli.tanba(&[
        "verify",
        sample.to_str().unwrap(),
        "--at",
        "2021-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("notes.pem: not a certificate"), "{err}");
    assert!(err.contains("big.cer: larger than 1 MiB"), "{err}");

    let toml = crate::support::base_toml(dir.path());
    let srv = crate::support::TestServer::start_toml(dir, &toml);
    let log = srv.log();
    assert!(log.contains("notes.pem: not a certificate"), "{log}");
    assert!(log.contains(": 2 trusted certificates"), "{log}");
}
