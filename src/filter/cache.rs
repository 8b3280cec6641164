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
//! Both caches are bounded in entries and bytes (`quick_cache`, a CLOCK-Pro style eviction: a
//! flood of one-off certificates cannot push out the intermediates every message uses) and
//! shared by all sessions, the CLI and every reload. Counters of hits and misses are kept for
//! the log ([`stats`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use openssl::pkey::{PKey, Public};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use super::algo::AlgError;
use super::cert::Cert;

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

struct Caches {
    verified: Cache<Digest, ()>,
    keys: Cache<Digest, (PKey<Public>, u32), KeyWeight>,
    verified_hits: AtomicU64,
    verified_misses: AtomicU64,
    key_hits: AtomicU64,
    key_misses: AtomicU64,
}

static CACHES: LazyLock<Caches> = LazyLock::new(|| Caches {
    verified: Cache::new(MAX_VERIFIED),
    keys: Cache::with_weighter(MAX_KEYS, MAX_KEY_BYTES, KeyWeight),
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

/// Counters since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Certificate signatures answered from the cache / verified.
    pub verified_hits: u64,
    pub verified_misses: u64,
    /// Public keys taken from the cache / parsed.
    pub key_hits: u64,
    pub key_misses: u64,
    /// Entries held now.
    pub verified_entries: usize,
    pub key_entries: usize,
}

/// The cache counters (for the log).
pub fn stats() -> Stats {
    let c = &*CACHES;
    Stats {
        verified_hits: c.verified_hits.load(Ordering::Relaxed),
        verified_misses: c.verified_misses.load(Ordering::Relaxed),
        key_hits: c.key_hits.load(Ordering::Relaxed),
        key_misses: c.key_misses.load(Ordering::Relaxed),
        verified_entries: c.verified.len(),
        key_entries: c.keys.len(),
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

    #[test]
    fn a_tampered_certificate_is_not_served_from_the_cache() {
        let (child, issuer) = &pairs()[0];
        assert_eq!(cert_signed_with(child, &issuer.spki), Ok(()));
        // Same serial and issuer name, one byte of the subject changed: another digest, checked
        // afresh, and the signature no longer verifies.
        let mut raw = child.raw.clone();
        let at = raw
            .windows(child.subject.len())
            .position(|w| w == child.subject.as_slice())
            .unwrap()
            + child.subject.len()
            - 1;
        raw[at] ^= 0x01;
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
        // The process-wide caches have the documented bounds.
        assert!(CACHES.verified.capacity() <= MAX_VERIFIED as u64);
        assert_eq!(CACHES.keys.capacity(), MAX_KEY_BYTES);
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
