//! Revocation data at NCA RK's scale: `cargo bench --bench revocation` (release).
//!
//! NCA RK's production `nca_gost_2022.crl` is about 20 MB with over 400,000 entries. This builds
//! a CRL of that size (RSA-signed, so that the signature check is measured too), then prints the
//! time to parse and index it, to check its signature once, to look a serial up, and to decide a
//! certificate's status with it (the signature check remembered), plus the real NCA RK OCSP
//! responses' parse and verification (RSA and GOST).

use std::time::Instant;

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder};
use tanba::filter::asn1;
use tanba::filter::cert::{certs_from_pem_or_der, Cert};
use tanba::filter::crl::Crl;
use tanba::filter::ocsp;
use tanba::filter::revocation::decide;

const ENTRIES: usize = 420_000;
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nca/");

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    asn1::encode(0x30, &parts.concat())
}

fn serial(i: usize) -> Vec<u8> {
    // 20-byte serials like NCA RK's, positive.
    let mut s = vec![0x3Au8; 20];
    s[12..20].copy_from_slice(&(i as u64 * 2654435761).to_be_bytes());
    s
}

fn main() {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "BENCH CA").unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let ca = Cert::from_der(&b.build().to_der().unwrap()).unwrap();

    let alg = seq(&[
        asn1::oid_der("1.2.840.113549.1.1.11").unwrap(),
        vec![0x05, 0x00],
    ]);
    let reason = seq(&[
        asn1::oid_der("2.5.29.21").unwrap(),
        asn1::encode(0x04, &[0x0A, 0x01, 0x01]),
    ]);
    let mut entries = Vec::with_capacity(ENTRIES * 60);
    for i in 0..ENTRIES {
        entries.extend(seq(&[
            asn1::encode(0x02, &serial(i)),
            asn1::encode(0x17, b"220101000000Z"),
            seq(std::slice::from_ref(&reason)),
        ]));
    }
    let tbs = seq(&[
        asn1::encode(0x02, &[1]),
        alg.clone(),
        ca.subject.clone(),
        asn1::encode(0x17, b"260101000000Z"),
        asn1::encode(0x17, b"491231000000Z"),
        asn1::encode(0x30, &entries),
    ]);
    let mut signer = Signer::new(MessageDigest::sha256(), &key).unwrap();
    signer.update(&tbs).unwrap();
    let mut bits = vec![0u8];
    bits.extend(signer.sign_to_vec().unwrap());
    let der = seq(&[tbs, alg, asn1::encode(0x03, &bits)]);
    println!(
        "synthetic CRL: {} entries, {:.1} MB",
        ENTRIES,
        der.len() as f64 / 1e6
    );

    let t = Instant::now();
    let crl = Crl::from_der(&der).unwrap();
    println!("parse + index:          {:8.1} ms", ms(t));
    let t = Instant::now();
    crl.verify_signature(&ca).unwrap();
    println!("signature (first time): {:8.1} ms", ms(t));
    let t = Instant::now();
    crl.verify_signature(&ca).unwrap();
    println!("signature (remembered): {:8.4} ms", ms(t));

    let n = 100_000;
    let t = Instant::now();
    let mut hits = 0;
    for i in 0..n {
        if crl.lookup(&serial(i * 7 % ENTRIES)).is_some() {
            hits += 1;
        }
    }
    assert_eq!(hits, n);
    println!(
        "lookup (listed):        {:8.2} µs",
        ms(t) * 1000.0 / n as f64
    );
    let t = Instant::now();
    for i in 0..n {
        assert!(crl.lookup(&serial(ENTRIES + i)).is_none());
    }
    println!(
        "lookup (not listed):    {:8.2} µs",
        ms(t) * 1000.0 / n as f64
    );

    // decide() for a certificate of that CA (not listed), as the filter asks per signer.
    let mut leaf = ca.clone();
    leaf.serial = serial(ENTRIES + 1);
    leaf.issuer = ca.subject.clone();
    let t = Instant::now();
    for _ in 0..1000 {
        decide(&leaf, &ca, 1_800_000_000, &[&crl], &[]);
    }
    println!("decide with the CRL:    {:8.2} µs", ms(t));

    for (file, issuer) in [
        (
            "ocsp/ncanode_ocsp_response_individual_sign_2004.bin",
            "ca/nca_rsa_test.pem",
        ),
        (
            "ocsp/ncanode_ocsp_response_ceo_sign_2004_revoked.bin",
            "ca/nca_gost_test.pem",
        ),
        (
            "ocsp/ncanode_ocsp_response_ceo_2015_revoked.bin",
            "ca/nca_gost2022_test.cer",
        ),
    ] {
        let data = std::fs::read(format!("{DATA}{file}")).unwrap();
        let issuer = certs_from_pem_or_der(&std::fs::read(format!("{DATA}{issuer}")).unwrap())
            .unwrap()
            .remove(0);
        let n = 50;
        let t = Instant::now();
        for _ in 0..n {
            let r = ocsp::parse_response(&data).unwrap();
            r.verify(&issuer).unwrap();
        }
        println!(
            "OCSP parse + verify:    {:8.2} ms  {file}",
            ms(t) / n as f64
        );
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}
