//! Signature filter speed: `cargo bench --bench filter` (release). Prints ms per message for the
//! whole `Filter::process` (find, verify, stamp) on unsigned mail (what most deliveries are) and
//! on the real NCA RK test samples (RSA, and RSA + GOST-2015-512), trusting the NCA test roots.

use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use tanba::config::Config;
use tanba::filter::{Filter, TrustStore};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nca/");

fn b64(data: &[u8]) -> String {
    let s = base64::engine::general_purpose::STANDARD.encode(data);
    s.as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", std::str::from_utf8(c).unwrap()))
        .collect()
}

fn unsigned(attachment: usize) -> Vec<u8> {
    let mut m =
        b"From: a@example.kz\r\nTo: b@example.test\r\nSubject: report\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
            .to_vec();
    m.extend_from_slice(&b"Some plain text of a business letter.\r\n".repeat(20));
    if attachment > 0 {
        let pdf: Vec<u8> = (0..attachment).map(|i| (i * 7 % 251) as u8).collect();
        m.extend_from_slice(
            format!(
                "--B\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}",
                b64(&pdf)
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(b"--B--\r\n");
    m
}

fn with_cms(cms_file: &str, document: Option<&[u8]>) -> Vec<u8> {
    let cms = std::fs::read(format!("{DATA}cms/{cms_file}")).unwrap();
    let mut m = b"From: a@example.kz\r\nTo: b@example.test\r\nSubject: signed\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nSigned.\r\n"
        .to_vec();
    if let Some(doc) = document {
        m.extend_from_slice(
            format!(
                "--B\r\nContent-Type: text/plain; name=\"doc.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                b64(doc)
            )
            .as_bytes(),
        );
    }
    m.extend_from_slice(
        format!(
            "--B\r\nContent-Type: application/pkcs7-signature; name=\"doc.txt.p7s\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}--B--\r\n",
            b64(&cms)
        )
        .as_bytes(),
    );
    m
}

fn time(filter: &Filter, name: &str, msg: &[u8], at: SystemTime, expect: &str) {
    let p = filter.process(msg, at);
    assert_eq!(p.verdict, expect, "{name}");
    let n = if msg.len() > 1 << 20 { 20 } else { 200 };
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(filter.process(std::hint::black_box(msg), at));
    }
    let per = start.elapsed() / n;
    println!(
        "{name:<48} {:>9} bytes  {:>8.3} ms/message",
        msg.len(),
        per.as_secs_f64() * 1000.0
    );
}

fn main() {
    let config = Config::from_toml("[server]\nhostname = \"mx.bench\"\n", None).unwrap();
    let trust = TrustStore::load_dir(std::path::Path::new(&format!("{DATA}ca"))).unwrap();
    let filter = Filter::with_trust_store(&config, trust);
    let rsa_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_622_505_600); // 2021-06-01
    let gost_time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_664_323_200); // 2022-09-28
    time(&filter, "unsigned, 1 KB", &unsigned(0), rsa_time, "none");
    time(
        &filter,
        "unsigned, 5 MB PDF attachment",
        &unsigned(5 << 20),
        rsa_time,
        "none",
    );
    time(
        &filter,
        "NCA RSA, attached CMS (1 signer)",
        &with_cms("ncanode_attached_1signer_rsa.p7s", None),
        rsa_time,
        "pass",
    );
    time(
        &filter,
        "NCA RSA + GOST-2015-512, detached (2 signers)",
        &with_cms(
            "ncanode_detached_2signers_rsa+gost2015__data_test123.p7s",
            Some(b"test123"),
        ),
        gost_time,
        "fail", // the RSA certificate has expired by then
    );
}
