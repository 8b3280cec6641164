//! Process-wide caches of the signature filter (issue 18): each certificate's signature is
//! verified once, and each public key is parsed once.
//!
//! **Verified certificate signatures.** The same few intermediates issue every NCA RK
//! certificate and the same people sign mail again and again, so the certificate signatures of
//! a path repeat from message to message. [`cert_signed_with`] remembers that one certificate's
//! signature verified with one issuer key, under the SHA-256 digest of
//! `len(cert) ‖ cert DER ‖ issuer SubjectPublicKeyInfo DER`:
//!
//! * the key covers **every byte of the certificate** (TBS, algorithm and signature value) and
//!   **every byte of the issuer's key**, so an entry can only ever answer for exactly the bytes
//!   that were verified: a certificate with the same serial number and issuer name but one
//!   other byte (a tampered one, or an impostor's) has another digest and is verified afresh;
//!   so does the same certificate under another candidate issuer's key;
//! * what an entry states is a mathematical fact about those bytes ("this signature verifies
//!   under this key"), true forever and independent of configuration. Nothing about trust is
//!   cached: whether a certificate is an anchor is decided per message by comparing its bytes
//!   with the current trust store, so a SIGHUP reload that removes an anchor takes effect for
//!   the next message although the cache outlives the old trust store;
//! * only successes are stored. A failure (bad signature, unsupported algorithm, malformed key)
//!   is never cached, so nothing transient can stick, and a bad certificate costs its
//!   verification every time, as before;
//! * validity periods, CA constraints, key usage and revocation are not signature checks: they
//!   are still evaluated for every message at its own validation time ([`super::chain`]).
//!
//! **Parsed public keys.** OpenSSL 3 decodes a SubjectPublicKeyInfo through its provider decoder
//! framework, which costs more than an RSA-2048 verification itself. [`public_key`] keeps the
//! parsed `PKey` under the SHA-256 digest of the SPKI DER, so a signer's or an issuer's key is
//! parsed once ("cached with the certificate": the SPKI is the part of the certificate a key
//! comes from, and an issuer key serves every certificate it signed).
//!
//! **Parsed certificates.** The certificates a CMS carries (the signer's, often its
//! intermediates) repeat from message to message like the signatures on them. [`parsed_cert`]
//! keeps each parsed [`Cert`] keyed by **its whole DER** (the cache compares the bytes on a hit,
//! so an entry answers only for exactly the bytes it was parsed from; a certificate with one
//! byte changed is parsed afresh). Parsing is a pure function of those bytes, and nothing
//! about the certificate's use (trust, validity at the message's time, revocation, key usage)
//! is decided there, so a kept parse cannot change a verdict. Only certificates that parse are
//! kept.
//!
//! All three caches are bounded in entries and bytes (`quick_cache`, a CLOCK-Pro style eviction: a
//! flood of one-off certificates cannot push out the intermediates every message uses) and
//! shared by all sessions, the CLI and every reload. Counters of hits and misses are kept for
//! the log ([`stats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use openssl::pkey::{PKey, Public};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::algo::AlgError;
use super::cert::{Cert, CertError};

/// Most verified certificate signatures remembered. An entry is a 32-byte digest in a hash-table
/// slot (about 100 bytes with the eviction metadata), so this also bounds the bytes: ≈ 1.6 MB.
pub const MAX_VERIFIED: usize = 16_384;
/// Most parsed public keys kept.
pub const MAX_KEYS: usize = 4_096;
/// Memory all kept public keys may take, counted as 3 × the SPKI DER + 512 bytes each (an
/// OpenSSL RSA key holds its modulus, exponent and Montgomery context).
pub const MAX_KEY_BYTES: u64 = 16 << 20;
/// Keys larger than this (an RSA-16384 SPKI is about 2 KB) are parsed each time, not kept.
const MAX_CACHED_SPKI: usize = 4096;
/// Most parsed certificates kept.
pub const MAX_CERTS: usize = 4_096;
/// Memory all kept certificates may take, counted as 4 × the DER + 1 KiB each (the parse
/// holds the DER, the TBS, the names twice, the key and the extensions).
pub const MAX_CERT_BYTES: u64 = 32 << 20;
/// Certificates larger than this are parsed each time, not kept.
const MAX_CACHED_CERT: usize = 16 << 10;

type Digest = [u8; 32];

/// Weight of a key entry: its estimated bytes, but never less than the share that keeps the
/// entry count within [`MAX_KEYS`].
#[derive(Clone)]
struct KeyWeight;

impl Weighter<Digest, (PKey<Public>, u32)> for KeyWeight {
    fn weight(&self, _: &Digest, v: &(PKey<Public>, u32)) -> u64 {
        (u64::from(v.1) * 3 + 512).max(MAX_KEY_BYTES / MAX_KEYS as u64)
    }
}

/// Weight of a certificate entry: its estimated bytes, but never less than the share that keeps
/// the entry count within [`MAX_CERTS`].
#[derive(Clone)]
struct CertWeight;

impl Weighter<Vec<u8>, Arc<Cert>> for CertWeight {
    fn weight(&self, der: &Vec<u8>, _: &Arc<Cert>) -> u64 {
        (der.len() as u64 * 4 + 1024).max(MAX_CERT_BYTES / MAX_CERTS as u64)
    }
}

struct Caches {
    verified: Cache<Digest, ()>,
    keys: Cache<Digest, (PKey<Public>, u32), KeyWeight>,
    certs: Cache<Vec<u8>, Arc<Cert>, CertWeight>,
    cert_hits: AtomicU64,
    cert_misses: AtomicU64,
    verified_hits: AtomicU64,
    verified_misses: AtomicU64,
    key_hits: AtomicU64,
    key_misses: AtomicU64,
}

static CACHES: LazyLock<Caches> = LazyLock::new(|| Caches {
    verified: Cache::new(MAX_VERIFIED),
    keys: Cache::with_weighter(MAX_KEYS, MAX_KEY_BYTES, KeyWeight),
    certs: Cache::with_weighter(MAX_CERTS, MAX_CERT_BYTES, CertWeight),
    cert_hits: AtomicU64::new(0),
    cert_misses: AtomicU64::new(0),
    verified_hits: AtomicU64::new(0),
    verified_misses: AtomicU64::new(0),
    key_hits: AtomicU64::new(0),
    key_misses: AtomicU64::new(0),
});

/// The cache key of "`cert_der`'s signature verifies under `issuer_spki`". The certificate's
/// length comes first, so that no split of the concatenation can be read as another pair (a
/// DER certificate is self-delimiting anyway; this does not rely on it).
fn verified_key(cert_der: &[u8], issuer_spki: &[u8]) -> Digest {
    let mut h = openssl::sha::Sha256::new();
    h.update(&(cert_der.len() as u64).to_be_bytes());
    h.update(cert_der);
    h.update(issuer_spki);
    h.finish()
}

/// Checks the signature on `cert` with the key `issuer_spki` (DER SubjectPublicKeyInfo), like
/// [`Cert::signed_with`], answering from the cache when exactly these certificate bytes were
/// verified under exactly this key before. Only a success is remembered.
pub fn cert_signed_with(cert: &Cert, issuer_spki: &[u8]) -> Result<(), AlgError> {
    let c = &*CACHES;
    let key = verified_key(&cert.raw, issuer_spki);
    if c.verified.get(&key).is_some() {
        c.verified_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    c.verified_misses.fetch_add(1, Ordering::Relaxed);
    cert.verify_signature_with(issuer_spki)?;
    c.verified.insert(key, ());
    Ok(())
}

/// The OpenSSL public key of a DER SubjectPublicKeyInfo, parsed once and then shared. A key that
/// does not parse is an error every time (never cached).
pub fn public_key(spki_der: &[u8]) -> Result<PKey<Public>, AlgError> {
    let parse = || {
        PKey::public_key_from_der(spki_der)
            .map_err(|e| AlgError::Malformed(format!("public key: {e}")))
    };
    if spki_der.len() > MAX_CACHED_SPKI {
        return parse();
    }
    let c = &*CACHES;
    let key = openssl::sha::sha256(spki_der);
    if let Some((k, _)) = c.keys.get(&key) {
        c.key_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(k);
    }
    c.key_misses.fetch_add(1, Ordering::Relaxed);
    let k = parse()?;
    c.keys.insert(key, (k.clone(), spki_der.len() as u32));
    Ok(k)
}

/// The parsed form of the DER certificate `der` ([`Cert::from_der`]), shared: parsed once, then
/// answered from the cache for exactly these bytes. A certificate that does not parse is an
/// error every time (never cached).
pub fn parsed_cert(der: &[u8]) -> Result<Arc<Cert>, CertError> {
    if der.len() > MAX_CACHED_CERT {
        return Cert::from_der(der).map(Arc::new);
    }
    let c = &*CACHES;
    // The key is the DER itself: a hit is an equal byte string, not only an equal hash.
    if let Some(cert) = c.certs.get(der) {
        c.cert_hits.fetch_add(1, Ordering::Relaxed);
        return Ok(cert);
    }
    c.cert_misses.fetch_add(1, Ordering::Relaxed);
    let cert = Arc::new(Cert::from_der(der)?);
    c.certs.insert(der.to_vec(), cert.clone());
    Ok(cert)
}

/// Counters since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Certificate signatures answered from the cache / verified.
    pub verified_hits: u64,
    pub verified_misses: u64,
    /// Public keys taken from the cache / parsed.
    pub key_hits: u64,
    pub key_misses: u64,
    /// Certificates taken from the cache / parsed.
    pub cert_hits: u64,
    pub cert_misses: u64,
    /// Entries held now.
    pub verified_entries: usize,
    pub key_entries: usize,
    pub cert_entries: usize,
}

/// The cache counters (for the log).
pub fn stats() -> Stats {
    let c = &*CACHES;
    Stats {
        verified_hits: c.verified_hits.load(Ordering::Relaxed),
        verified_misses: c.verified_misses.load(Ordering::Relaxed),
        key_hits: c.key_hits.load(Ordering::Relaxed),
        key_misses: c.key_misses.load(Ordering::Relaxed),
        cert_hits: c.cert_hits.load(Ordering::Relaxed),
        cert_misses: c.cert_misses.load(Ordering::Relaxed),
        verified_entries: c.verified.len(),
        key_entries: c.keys.len(),
        cert_entries: c.certs.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cert::fixtures::cert;
    use super::*;

    /// (child, issuer) pairs of the NCA RK test PKI: an RSA and a GOST-2015 one.
    fn pairs() -> Vec<(Cert, Cert)> {
        vec![
            (cert("ca/nca_rsa_test.pem"), cert("ca/root_rsa_test.pem")),
            (
                cert("ca/nca_gost2022_test.cer"),
                cert("ca/root_test_gost_2022.cer"),
            ),
        ]
    }

    #[test]
    fn a_verified_signature_is_answered_from_the_cache() {
        for (child, issuer) in pairs() {
            let key = verified_key(&child.raw, &issuer.spki);
            assert_eq!(cert_signed_with(&child, &issuer.spki), Ok(()));
            assert!(CACHES.verified.get(&key).is_some(), "{child:?} not cached");
            let before = stats().verified_hits;
            assert_eq!(cert_signed_with(&child, &issuer.spki), Ok(()));
            assert!(stats().verified_hits > before);
        }
    }

    #[test]
    fn failures_are_not_cached() {
        let (child, issuer) = &pairs()[0];
        // The child under its own key: not its issuer, so the signature does not verify.
        assert_eq!(
            cert_signed_with(child, &child.spki),
            Err(AlgError::BadSignature)
        );
        assert!(CACHES
            .verified
            .get(&verified_key(&child.raw, &child.spki))
            .is_none());
        // A key that does not parse: malformed each time, not kept.
        let junk = b"\x30\x03\x02\x01\x01".to_vec();
        for _ in 0..2 {
            assert!(matches!(public_key(&junk), Err(AlgError::Malformed(_))));
        }
        assert!(CACHES.keys.get(&openssl::sha::sha256(&junk)).is_none());
        // The real pair still verifies.
        assert_eq!(cert_signed_with(child, &issuer.spki), Ok(()));
    }

    /// `child`'s DER with the last byte of its subject flipped: same serial and issuer name,
    /// other bytes.
    fn tamper_subject(child: &Cert) -> Vec<u8> {
        let mut raw = child.raw.clone();
        let at = raw
            .windows(child.subject.len())
            .position(|w| w == child.subject.as_slice())
            .unwrap()
            + child.subject.len()
            - 1;
        raw[at] ^= 0x01;
        raw
    }

    #[test]
    fn a_tampered_certificate_is_not_served_from_the_cache() {
        let (child, issuer) = &pairs()[0];
        assert_eq!(cert_signed_with(child, &issuer.spki), Ok(()));
        // Same serial and issuer name, one byte of the subject changed: another digest, checked
        // afresh, and the signature no longer verifies.
        let raw = tamper_subject(child);
        let tampered = Cert::from_der(&raw).unwrap();
        assert_eq!(tampered.serial, child.serial);
        assert_eq!(tampered.issuer, child.issuer);
        assert_eq!(
            cert_signed_with(&tampered, &issuer.spki),
            Err(AlgError::BadSignature)
        );
        // The same certificate under another key (the other pair's issuer) is not vouched for
        // by the entry of the real issuer either.
        let (_, other_issuer) = &pairs()[1];
        assert!(cert_signed_with(child, &other_issuer.spki).is_err());
    }

    #[test]
    fn keys_distinguish_certificate_and_issuer_bytes() {
        let a = verified_key(b"ab", b"c");
        assert_ne!(a, verified_key(b"a", b"bc"));
        assert_ne!(a, verified_key(b"ab", b"d"));
        assert_ne!(a, verified_key(b"ac", b"c"));
        assert_eq!(a, verified_key(b"ab", b"c"));
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        // A cache of the same kinds, smaller, filled far beyond its bounds.
        let small: Cache<Digest, ()> = Cache::new(64);
        for i in 0u32..10_000 {
            small.insert(openssl::sha::sha256(&i.to_be_bytes()), ());
        }
        assert!(small.len() <= 64, "{}", small.len());
        let (_, issuer) = &pairs()[0];
        let k = PKey::public_key_from_der(&issuer.spki).unwrap();
        let keys: Cache<Digest, (PKey<Public>, u32), KeyWeight> =
            Cache::with_weighter(16, 16 * (MAX_KEY_BYTES / MAX_KEYS as u64), KeyWeight);
        for i in 0u32..1_000 {
            keys.insert(
                openssl::sha::sha256(&i.to_be_bytes()),
                (k.clone(), issuer.spki.len() as u32),
            );
        }
        assert!(keys.len() <= 16, "{}", keys.len());
        assert!(keys.weight() <= 16 * (MAX_KEY_BYTES / MAX_KEYS as u64));
        let (child, _) = &pairs()[0];
        let shared = Arc::new(child.clone());
        let certs: Cache<Vec<u8>, Arc<Cert>, CertWeight> =
            Cache::with_weighter(16, 16 * (MAX_CERT_BYTES / MAX_CERTS as u64), CertWeight);
        for i in 0u32..1_000 {
            let mut der = child.raw.clone();
            der.extend_from_slice(&i.to_be_bytes());
            certs.insert(der, shared.clone());
        }
        assert!(certs.len() <= 16, "{}", certs.len());
        assert!(certs.weight() <= 16 * (MAX_CERT_BYTES / MAX_CERTS as u64));
        // The process-wide caches have the documented bounds.
        assert!(CACHES.verified.capacity() <= MAX_VERIFIED as u64);
        assert_eq!(CACHES.keys.capacity(), MAX_KEY_BYTES);
        assert_eq!(CACHES.certs.capacity(), MAX_CERT_BYTES);
    }

    #[test]
    fn parsed_certificates_are_shared_and_exact() {
        let (child, _) = &pairs()[0];
        let a = parsed_cert(&child.raw).unwrap();
        let hits = stats().cert_hits;
        let b = parsed_cert(&child.raw).unwrap();
        assert!(stats().cert_hits > hits);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.raw, child.raw);
        assert_eq!(a.tbs, child.tbs);
        // One byte of the subject changed (same serial, same issuer): parsed afresh from its
        // own bytes, not served the cached parse.
        let raw = tamper_subject(child);
        let tampered = parsed_cert(&raw).unwrap();
        assert!(!Arc::ptr_eq(&a, &tampered));
        assert_eq!(tampered.raw, raw);
        assert_eq!(tampered.serial, child.serial);
        assert_ne!(tampered.subject, child.subject);
        // Garbage: an error each time, nothing kept.
        let junk = b"\x30\x03\x02\x01\x01".to_vec();
        for _ in 0..2 {
            assert!(parsed_cert(&junk).is_err());
        }
        assert!(CACHES.certs.get(junk.as_slice()).is_none());
    }

    #[test]
    fn parsed_keys_are_shared() {
        let (_, issuer) = &pairs()[1];
        let rsa_issuer = &pairs()[0].1;
        let a = public_key(&rsa_issuer.spki).unwrap();
        let hits = stats().key_hits;
        let b = public_key(&rsa_issuer.spki).unwrap();
        assert!(stats().key_hits > hits);
        assert!(a.public_eq(&b));
        // A GOST key is unknown to OpenSSL: an error, never cached.
        assert!(public_key(&issuer.spki).is_err());
    }
}
