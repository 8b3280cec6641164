//! GOST verification speed: `cargo bench --bench gost` (release). Prints ms per verification
//! for both variants, using the NCA RK test chains (intermediate CA certificate signed by its root).

use std::time::Instant;

use tanba::filter::gost::{verify, verify_digest, PublicKey};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nca/ca/");

/// Minimal DER reading: (tag, whole TLV, contents, rest).
fn tlv(buf: &[u8]) -> (u8, &[u8], &[u8], &[u8]) {
    let tag = buf[0];
    let (len, hdr) = if buf[1] < 0x80 {
        (buf[1] as usize, 2)
    } else {
        let n = (buf[1] & 0x7f) as usize;
        let len = buf[2..2 + n]
            .iter()
            .fold(0usize, |a, b| (a << 8) | *b as usize);
        (len, 2 + n)
    };
    (
        tag,
        &buf[..hdr + len],
        &buf[hdr..hdr + len],
        &buf[hdr + len..],
    )
}

fn pem_or_der(path: &str) -> Vec<u8> {
    let raw = std::fs::read(path).expect("test certificate");
    if !raw.starts_with(b"-----BEGIN") {
        return raw;
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let text = String::from_utf8(raw).expect("PEM text");
    let mut out = Vec::new();
    let (mut acc, mut nbits) = (0u32, 0);
    for c in text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.bytes())
    {
        let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
            continue; // '=' padding, whitespace
        };
        acc = (acc << 6) | v as u32;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            out.push((acc >> nbits) as u8);
        }
    }
    out
}

/// (SPKI DER, tbsCertificate DER, signature value) of a certificate.
fn parts(der: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (_, _, cert, _) = tlv(der);
    let (_, tbs, tbs_content, rest) = tlv(cert);
    let (_, _, _, rest) = tlv(rest); // signatureAlgorithm
    let (_, _, sig, _) = tlv(rest);
    // tbsCertificate: [0] version, serial, signature, issuer, validity, subject, spki, ...
    let mut fields = tbs_content;
    let mut spki = Vec::new();
    for i in 0..7 {
        let (_, raw, _, rest) = tlv(fields);
        if i == 6 {
            spki = raw.to_vec();
        }
        fields = rest;
    }
    (spki, tbs.to_vec(), sig[1..].to_vec())
}

fn bench(label: &str, subject: &str, issuer: &str, iterations: u32) {
    let (_, tbs, sig) = parts(&pem_or_der(&format!("{DATA}{subject}")));
    let (spki, _, _) = parts(&pem_or_der(&format!("{DATA}{issuer}")));
    let key = PublicKey::from_spki_der(&spki).expect("issuer key");
    let digest = key.variant().digest(&tbs);

    // First call builds the fixed-base table for the curve.
    let start = Instant::now();
    verify_digest(&key, &digest, &sig).expect("signature verifies");
    let first = start.elapsed();

    let start = Instant::now();
    for _ in 0..iterations {
        verify_digest(&key, &digest, &sig).expect("signature verifies");
    }
    let per_verify = start.elapsed().as_secs_f64() * 1000.0 / f64::from(iterations);

    let start = Instant::now();
    for _ in 0..iterations {
        verify(&key, &tbs, &sig).expect("signature verifies");
    }
    let per_full = start.elapsed().as_secs_f64() * 1000.0 / f64::from(iterations);

    let start = Instant::now();
    for _ in 0..iterations {
        PublicKey::from_spki_der(&spki).expect("key");
    }
    let per_parse = start.elapsed().as_secs_f64() * 1000.0 / f64::from(iterations);

    println!(
        "{label:<20} {name:<20} verify_digest {per_verify:.3} ms/verify | verify (hash {len} B + verify) {per_full:.3} ms | key parse {per_parse:.3} ms | first call (builds G table) {first:.1} ms",
        name = key.variant().name(),
        len = tbs.len(),
        first = first.as_secs_f64() * 1000.0,
    );
}

fn main() {
    let iterations = std::env::var("GOST_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    println!("GOST signature verification, {iterations} iterations each");
    bench(
        "2004 (CryptoPro-A)",
        "nca_gost_test.pem",
        "root_gost_test.pem",
        iterations,
    );
    bench(
        "2015-512 (tc26 A)",
        "nca_gost2022_test.cer",
        "root_test_gost_2022.cer",
        iterations,
    );
}
