//! Robustness of the whole pipeline: a valid signed message and its CMS, mangled thousands of
//! ways (bytes flipped, ranges cut, duplicated or truncated), must never make the filter panic,
//! and the stamp must always keep the message below it.
//!
//! Certificates and signatures are made here with the `openssl` crate so the test needs no
//! files.

use std::time::SystemTime;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::cms::{CMSOptions, CmsContentInfo};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use super::cert::Cert;
use super::*;

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn cert(cn: &str, key: &PKey<Private>, issuer: Option<(&X509, &PKey<Private>)>, ca: bool) -> X509 {
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COUNTRYNAME, "KZ").unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    let serial = Asn1Integer::from_bn(&BigNum::from_u32(cn.len() as u32 + 7).unwrap()).unwrap();
    b.set_serial_number(&serial).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map(|(c, _)| c.subject_name()).unwrap_or(&name))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().key_cert_sign().build().unwrap())
            .unwrap();
    } else {
        b.append_extension(KeyUsage::new().non_repudiation().build().unwrap())
            .unwrap();
    }
    let signer = issuer.map(|(_, k)| k).unwrap_or(key);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

struct Fixture {
    filter: Filter,
    message: Vec<u8>,
    cms: Vec<u8>,
}

fn fixture() -> Fixture {
    let ca_key = key();
    let ca = cert("Test CA", &ca_key, None, true);
    let leaf_key = key();
    let leaf = cert("ТЕСТОВ ТЕСТ", &leaf_key, Some((&ca, &ca_key)), false);
    let content = b"Content-Type: text/plain\r\n\r\nsigned text\r\n";
    let mut chain = Stack::new().unwrap();
    chain.push(ca.clone()).unwrap();
    let cms = CmsContentInfo::sign(
        Some(&leaf),
        Some(&leaf_key),
        Some(&chain),
        Some(content),
        CMSOptions::BINARY | CMSOptions::DETACHED,
    )
    .unwrap()
    .to_der()
    .unwrap();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(&cms);
    let mut message = b"X-EDS-Status: pass\r\nFrom: a@b.kz\r\nSubject: t\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"B\"\r\n\r\n--B\r\n"
        .to_vec();
    message.extend_from_slice(content);
    message.extend_from_slice(
        b"\r\n--B\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\n\
Content-Transfer-Encoding: base64\r\n\r\n",
    );
    for line in b64.as_bytes().chunks(76) {
        message.extend_from_slice(line);
        message.extend_from_slice(b"\r\n");
    }
    message.extend_from_slice(b"--B--\r\n");
    let config =
        crate::config::Config::from_toml("[server]\nhostname = \"mx.test\"\n", None).unwrap();
    let trust = TrustStore::from_certs(vec![Cert::from_der(&ca.to_der().unwrap()).unwrap()]);
    Fixture {
        filter: Filter::with_trust_store(&config, trust),
        message,
        cms,
    }
}

/// xorshift64*: deterministic, good enough to pick positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(6) {
            0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len);
                v[i] = [0x00, 0x80, 0xFF, 0x30, 0x84, b'\n', b'-'][rng.below(7)];
            }
            2 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                v.drain(a..b);
            }
            3 => {
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(v.len());
                v.splice(at..at, chunk);
            }
            4 => v.truncate(rng.below(len)),
            _ => {
                let i = rng.below(len);
                v.insert(i, rng.next() as u8);
            }
        }
        if v.is_empty() {
            v.push(0x30);
        }
    }
    v
}

#[test]
fn the_fixture_passes() {
    let f = fixture();
    let r = f.filter.verify_message(&f.message, SystemTime::now());
    assert_eq!(r.verdict, Verdict::Pass, "{}", r.human());
    let p = f.filter.process(&f.message, SystemTime::now());
    assert_eq!(p.verdict, "pass");
    assert_eq!(p.keywords, ["$EDSValid"]);
    // The forged X-EDS-Status went, the rest is the original.
    assert!(p
        .message
        .ends_with(&f.message[b"X-EDS-Status: pass\r\n".len()..]));
}

#[test]
fn mangled_messages_and_cms_never_panic() {
    let f = fixture();
    let now = SystemTime::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut verdicts = std::collections::BTreeMap::new();
    for _ in 0..2000 {
        let m = mutate(&mut rng, &f.message);
        let r = f.filter.verify_message(&m, now);
        *verdicts.entry(r.verdict.as_str()).or_insert(0) += 1;
        let stamped = f.filter.stamp(&m, &r);
        assert!(!stamped.is_empty());
        let c = mutate(&mut rng, &f.cms);
        let r = f
            .filter
            .verify_cms(&c, Some("x.p7s"), Some(("x", b"data")), now);
        assert_eq!(r.signatures.len(), 1);
    }
    // The mutations reach every stage: some still pass, most fail in various ways.
    assert!(verdicts.len() >= 3, "{verdicts:?}");
}
