//! GOST signature verification for NCA RK (Kazakhstan) keys and signatures.
//!
//! Two algorithms, named by Kazakh OIDs that no library knows:
//!
//! | variant | key OID | signature OID | digest OID | curve | digest |
//! | --- | --- | --- | --- | --- | --- |
//! | GOST 34.310-2004 | 1.2.398.3.10.1.1.1.1 | 1.2.398.3.10.1.1.1.2 | 1.2.398.3.10.1.3.1 | CryptoPro-A (256-bit) | GOST 34.311-95 = GOST R 34.11-94, *Test* S-box |
//! | GOST 34.310-2015 (512) | 1.2.398.3.10.1.1.2.2 | 1.2.398.3.10.1.1.2.3.2 | 1.2.398.3.10.1.3.3 | tc26 512 paramSetA | Streebog-512 |
//!
//! Encodings (all little-endian, as in the CryptoPro tradition):
//! * public key: the SubjectPublicKeyInfo BIT STRING holds an OCTET STRING with `X ‖ Y`, each
//!   coordinate little-endian, 32 (2004) or 64 (2015-512) bytes;
//! * the SPKI algorithm parameters are `SEQUENCE { curveOid, digestParamOid }` in the NCA
//!   certificates (a bare curve OID, NULL or no parameters are accepted too; the latter two mean
//!   the variant's only curve);
//! * digest: the hash output bytes, read as a little-endian integer;
//! * signature: `r ‖ s`, each little-endian (the byte-reverse of RFC 4491's big-endian `s ‖ r`).
//!
//! Verification is plain GOST R 34.10: `e = h mod q` (0 → 1), `v = e⁻¹`, `z1 = s·v`,
//! `z2 = −r·v`, `R = z1·G + z2·Q`, accept iff `R.x mod q = r`.
//!
//! Implementation:
//! * **field**: both field primes are of the special form `2^(64N) − c` with a small `c`
//!   (CryptoPro-A: `2^256 − 617`, tc26-512-A: `2^512 − 569`), so elements are plain residues
//!   and a product's high half folds back in times `c` (HAC 14.47) instead of a Montgomery
//!   reduction. That arithmetic is the `special` module's limb plumbing: schoolbook products
//!   and squares into one flat buffer, the fold, and addition/subtraction as plain carry chains
//!   (variable time). crypto-bigint's own forms (`widening_mul`/`widening_square`, Karatsuba,
//!   and the constant-time `add_mod_special`/`sub_mod`) gave 0.39 ms per 512-bit verification
//!   of a new key against 0.25 ms with it (`cargo bench --bench gost`); they stay the tests'
//!   reference. Any other modulus (the group orders,
//!   the test-only CryptoPro-B curve) uses crypto-bigint's `FixedMontyForm`, as do the
//!   inversions and the hex parsing;
//! * **curve**: Jacobian coordinates with the `a = −3` formulas, `R.x mod q = r` checked as
//!   `X = x·Z²` (no field inversion); one variable-time inversion per verification, `e⁻¹ mod q`;
//! * **`z1·G`**: a fixed-base table (signed 7-bit windows, affine, built once per curve): one
//!   mixed addition per digit, no doublings;
//! * **`z2·Q`**, key seen for the first time: width-5 wNAF with affine odd multiples (one
//!   inversion for the 8 of them); the ~`64N` doublings dominate;
//! * **`z2·Q`**, repeat signer: a per-key fixed-base table (signed 4-bit windows, 129 KiB for a
//!   512-bit key), built at the key's second verification once a signature by it has verified,
//!   kept in a per-curve LRU of 64 keys (`KeyCache`); then the whole verification is ~195
//!   (512-bit) or ~100 (256-bit) mixed additions into one accumulator. The NCA intermediate's key signs every certificate,
//!   one person's key every message of theirs.
//!
//! Shamir's trick (one doubling chain for both scalars) would not help: with the fixed-base table
//! `z1·G` needs no doublings at all, and a joint chain would still take `64N` doublings for
//! `z2·Q`.
//!
//! **Constant time is not needed here, by design.** Verification handles only public data: the
//! public key (from a certificate), the signature and the digest of received mail or a
//! certificate. No secret enters this module, so timing can reveal nothing; the branches on
//! scalar digits, the early exits of point addition, the variable-time inversions and the cache
//! hits are all fine. This module must never be used to *sign*. The per-key cache holds only
//! public keys and their multiples, and an entry can only speed up a verification, never change
//! its verdict (the tests check verdicts with and without tables).

use std::sync::OnceLock;

use crypto_bigint::modular::{FixedMontyForm, FixedMontyParams};
use crypto_bigint::{Limb, Odd, Uint};
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, OctetStringRef};
use der::{Decode, Sequence, Tag, Tagged};
use gost94::Digest;

// ---------------------------------------------------------------------------------------------
// OIDs
// ---------------------------------------------------------------------------------------------

const OID_KEY_2004: &str = "1.2.398.3.10.1.1.1.1";
const OID_SIG_2004: &str = "1.2.398.3.10.1.1.1.2";
const OID_DIGEST_2004: &str = "1.2.398.3.10.1.3.1";
const OID_KEY_2015_512: &str = "1.2.398.3.10.1.1.2.2";
const OID_SIG_2015_512: &str = "1.2.398.3.10.1.1.2.3.2";
const OID_DIGEST_2015_512: &str = "1.2.398.3.10.1.3.3";

/// Kazakh name of the CryptoPro-A curve.
const OID_CURVE_2004_KZ: &str = "1.2.398.3.10.1.1.1.1.1";
/// id-GostR3410-2001-CryptoPro-A-ParamSet.
const OID_CURVE_CRYPTOPRO_A: &str = "1.2.643.2.2.35.1";
/// Kazakh name of the tc26 512-bit paramSetA curve.
const OID_CURVE_2015_512_KZ: &str = "1.2.398.3.10.1.1.2.2.1";
/// id-tc26-gost-3410-12-512-paramSetA.
const OID_CURVE_TC26_512_A: &str = "1.2.643.7.1.2.1.2.1";

// ---------------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------------

/// The two NCA RK GOST signature algorithms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// GOST 34.310-2004 on CryptoPro-A with GOST 34.311-95 (Test S-box), 256-bit.
    Gost2004,
    /// GOST 34.310-2015 on tc26 512 paramSetA with Streebog-512.
    Gost2015_512,
}

impl Variant {
    /// The variant of a public key algorithm OID (dotted form).
    pub fn from_key_oid(oid: &str) -> Option<Variant> {
        match oid {
            OID_KEY_2004 => Some(Variant::Gost2004),
            OID_KEY_2015_512 => Some(Variant::Gost2015_512),
            _ => None,
        }
    }

    /// The variant of a signature algorithm OID (dotted form).
    pub fn from_sig_oid(oid: &str) -> Option<Variant> {
        match oid {
            OID_SIG_2004 => Some(Variant::Gost2004),
            OID_SIG_2015_512 => Some(Variant::Gost2015_512),
            _ => None,
        }
    }

    /// The variant of a digest algorithm OID (dotted form).
    pub fn from_digest_oid(oid: &str) -> Option<Variant> {
        match oid {
            OID_DIGEST_2004 => Some(Variant::Gost2004),
            OID_DIGEST_2015_512 => Some(Variant::Gost2015_512),
            _ => None,
        }
    }

    /// A short stable name: `gost34310-2004` / `gost34310-2015-512`.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Gost2004 => "gost34310-2004",
            Variant::Gost2015_512 => "gost34310-2015-512",
        }
    }

    /// The variant's digest of `data`, bytes as the hash function outputs them:
    /// GOST 34.311-95 (GOST R 34.11-94, Test S-box; 32 bytes) or Streebog-512 (64 bytes).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Variant::Gost2004 => gost94::Gost94Test::digest(data).to_vec(),
            Variant::Gost2015_512 => streebog::Streebog512::digest(data).to_vec(),
        }
    }

    /// Length in bytes of a digest (and of one coordinate, and of `r` or `s`): 32 or 64.
    pub fn digest_len(self) -> usize {
        match self {
            Variant::Gost2004 => 32,
            Variant::Gost2015_512 => 64,
        }
    }

    /// Length in bytes of a signature value `r ‖ s`: 64 or 128.
    pub fn signature_len(self) -> usize {
        2 * self.digest_len()
    }
}

/// Whether `oid` (dotted form) is one of the NCA RK GOST key, signature or digest OIDs.
pub fn is_gost_oid(oid: &str) -> bool {
    Variant::from_key_oid(oid).is_some()
        || Variant::from_sig_oid(oid).is_some()
        || Variant::from_digest_oid(oid).is_some()
}

/// Why a key could not be used or a signature did not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GostError {
    #[error("malformed GOST key or signature: {0}")]
    Malformed(String),
    #[error("unknown GOST parameter set {0}")]
    UnknownParams(String),
    #[error("GOST signature does not verify")]
    BadSignature,
}

/// A validated GOST public key (a point on the variant's curve, not the point at infinity).
#[derive(Clone, Debug)]
pub struct PublicKey {
    variant: Variant,
    point: KeyPoint,
}

#[derive(Clone, Debug)]
enum KeyPoint {
    P256(Affine<4>),
    P512(Affine<8>),
}

/// `SubjectPublicKeyInfo` with borrowed parts.
#[derive(Sequence)]
struct SpkiRef<'a> {
    algorithm: AlgorithmIdentifierRef<'a>,
    subject_public_key: BitStringRef<'a>,
}

/// `AlgorithmIdentifier` with borrowed, optional parameters.
#[derive(Sequence)]
struct AlgorithmIdentifierRef<'a> {
    algorithm: ObjectIdentifier,
    parameters: Option<AnyRef<'a>>,
}

impl PublicKey {
    /// Parses a public key from the full DER `SubjectPublicKeyInfo` of a certificate.
    ///
    /// The algorithm must be one of the two NCA RK GOST key OIDs; the curve parameter OID (first
    /// OID of the parameters SEQUENCE, or a bare OID) must name that variant's curve, by its
    /// Kazakh or its Russian OID, else [`GostError::UnknownParams`]. Absent or NULL parameters
    /// mean the variant's only curve. The point must be on the curve.
    pub fn from_spki_der(spki_der: &[u8]) -> Result<PublicKey, GostError> {
        let spki = SpkiRef::from_der(spki_der)
            .map_err(|e| GostError::Malformed(format!("SubjectPublicKeyInfo: {e}")))?;
        let key_oid = spki.algorithm.algorithm.to_string();
        let variant = Variant::from_key_oid(&key_oid)
            .ok_or_else(|| GostError::UnknownParams(format!("key algorithm {key_oid}")))?;
        if let Some(curve_oid) = curve_oid(spki.algorithm.parameters)? {
            let known = match variant {
                Variant::Gost2004 => [OID_CURVE_2004_KZ, OID_CURVE_CRYPTOPRO_A],
                Variant::Gost2015_512 => [OID_CURVE_2015_512_KZ, OID_CURVE_TC26_512_A],
            };
            if !known.contains(&curve_oid.as_str()) {
                return Err(GostError::UnknownParams(format!(
                    "curve {curve_oid} for {}",
                    variant.name()
                )));
            }
        }
        let bits = spki
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| GostError::Malformed("public key BIT STRING has unused bits".into()))?;
        let octets = OctetStringRef::from_der(bits)
            .map_err(|e| GostError::Malformed(format!("public key OCTET STRING: {e}")))?;
        PublicKey::from_xy_le(variant, octets.as_bytes())
    }

    /// A public key from its raw point encoding `X ‖ Y` (each coordinate little-endian, 32 or 64
    /// bytes), i.e. the contents of the OCTET STRING inside the SPKI BIT STRING.
    pub fn from_xy_le(variant: Variant, xy: &[u8]) -> Result<PublicKey, GostError> {
        let point = match variant {
            Variant::Gost2004 => KeyPoint::P256(cryptopro_a().point_from_le(xy)?),
            Variant::Gost2015_512 => KeyPoint::P512(tc26_512_a().point_from_le(xy)?),
        };
        Ok(PublicKey { variant, point })
    }

    /// The key's algorithm.
    pub fn variant(&self) -> Variant {
        self.variant
    }
}

/// The curve OID named by the SPKI algorithm parameters, `None` when absent or NULL.
fn curve_oid(params: Option<AnyRef<'_>>) -> Result<Option<String>, GostError> {
    let Some(params) = params else {
        return Ok(None);
    };
    match params.tag() {
        Tag::Null => Ok(None),
        Tag::ObjectIdentifier => {
            let oid: ObjectIdentifier = params
                .decode_as()
                .map_err(|e| GostError::Malformed(format!("curve parameter OID: {e}")))?;
            Ok(Some(oid.to_string()))
        }
        Tag::Sequence => {
            let oids: Vec<ObjectIdentifier> = params
                .decode_as()
                .map_err(|e| GostError::Malformed(format!("key parameters: {e}")))?;
            match oids.first() {
                Some(oid) => Ok(Some(oid.to_string())),
                None => Err(GostError::Malformed("empty key parameters".into())),
            }
        }
        tag => Err(GostError::Malformed(format!(
            "key parameters of type {tag}"
        ))),
    }
}

/// Verifies `signature` (`r ‖ s`, each little-endian) over an already computed `digest` (bytes as
/// the hash function outputs them; 32 or 64 bytes, matching the key's variant).
pub fn verify_digest(key: &PublicKey, digest: &[u8], signature: &[u8]) -> Result<(), GostError> {
    match &key.point {
        KeyPoint::P256(q) => cryptopro_a().verify(q, digest, signature),
        KeyPoint::P512(q) => tc26_512_a().verify(q, digest, signature),
    }
}

/// [`verify_digest`] without the per-key cache: neither uses a table built for `key` nor
/// records `key`. The cost of a first-seen key; for measurements and one-off keys.
pub fn verify_digest_uncached(
    key: &PublicKey,
    digest: &[u8],
    signature: &[u8],
) -> Result<(), GostError> {
    match &key.point {
        KeyPoint::P256(q) => {
            let c = cryptopro_a();
            c.verify_with(&c.keys, KeyTables::Bypass, q, digest, signature)
        }
        KeyPoint::P512(q) => {
            let c = tc26_512_a();
            c.verify_with(&c.keys, KeyTables::Bypass, q, digest, signature)
        }
    }
}

/// Hashes `message` with the key variant's digest, then [`verify_digest`].
pub fn verify(key: &PublicKey, message: &[u8], signature: &[u8]) -> Result<(), GostError> {
    verify_digest(key, &key.variant.digest(message), signature)
}

// ---------------------------------------------------------------------------------------------
// Curve parameters
// ---------------------------------------------------------------------------------------------

/// Short Weierstrass curve `y² = x³ + a·x + b` over GF(p) with a prime-order group of order `q`
/// generated by `(x, y)`; hex, big-endian.
struct CurveDef {
    p: &'static str,
    a: &'static str,
    b: &'static str,
    q: &'static str,
    x: &'static str,
    y: &'static str,
}

/// id-GostR3410-2001-CryptoPro-A-ParamSet (1.2.643.2.2.35.1), RFC 4357 §11.4; the curve of
/// GOST 34.310-2004 keys (Kazakh OID 1.2.398.3.10.1.1.1.1.1). Cofactor 1.
const CRYPTOPRO_A: CurveDef = CurveDef {
    p: "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFD97",
    a: "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFD94",
    b: "A6",
    q: "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF6C611070995AD10045841B09B761B893",
    x: "1",
    y: "8D91E471E0989CDA27DF505A453F2B7635294F2DDF23E3B122ACC99C9E9F1E14",
};

/// id-tc26-gost-3410-12-512-paramSetA (1.2.643.7.1.2.1.2.1), the TC 26 parameter set for
/// GOST R 34.10-2012 512-bit keys (referenced by RFC 7836 / RFC 9215; same values as the OpenSSL
/// gost-engine parameter table); the curve of GOST 34.310-2015 512-bit keys (Kazakh OID
/// 1.2.398.3.10.1.1.2.2.1). Cofactor 1.
const TC26_512_A: CurveDef = CurveDef {
    p: "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\
        FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFDC7",
    a: "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\
        FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFDC4",
    b: "E8C2505DEDFC86DDC1BD0B2B6667F1DA34B82574761CB0E879BD081CFD0B6265\
        EE3CB090F30D27614CB4574010DA90DD862EF9D4EBEE4761503190785A71C760",
    q: "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF\
        27E69532F48D89116FF22B8D4E0560609B4B38ABFAD2B85DCACDB1411F10B275",
    x: "3",
    y: "7503CFE87A836AE3A61B8816E25450E6CE5E1C93ACF1ABC1778064FDCBEFA921\
        DF1626BE4FD036E93D75E6A50E3A41E98028FE5FC235F5B889A589CB5215F2A4",
};

fn cryptopro_a() -> &'static Curve<4> {
    static CURVE: OnceLock<Curve<4>> = OnceLock::new();
    CURVE.get_or_init(|| Curve::new(&CRYPTOPRO_A))
}

fn tc26_512_a() -> &'static Curve<8> {
    static CURVE: OnceLock<Curve<8>> = OnceLock::new();
    CURVE.get_or_init(|| Curve::new(&TC26_512_A))
}

// ---------------------------------------------------------------------------------------------
// Multi-precision helpers on little-endian 64-bit limbs
// ---------------------------------------------------------------------------------------------

fn limbs_from_le<const N: usize>(bytes: &[u8]) -> [u64; N] {
    let mut out = [0u64; N];
    for (i, b) in bytes.iter().take(8 * N).enumerate() {
        out[i / 8] |= u64::from(*b) << (8 * (i % 8));
    }
    out
}

/// A big-endian hex constant (whitespace ignored, at most `16·N` digits) as limbs, through
/// crypto-bigint's parser.
fn limbs_from_hex<const N: usize>(hex: &str) -> [u64; N] {
    let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(digits.len() <= 16 * N, "curve constant too long");
    let padded = format!("{digits:0>width$}", width = 16 * N);
    Uint::<N>::from_be_hex(&padded).to_words()
}

fn is_zero<const N: usize>(a: &[u64; N]) -> bool {
    a.iter().all(|&l| l == 0)
}

/// `a < b`.
fn lt<const N: usize>(a: &[u64; N], b: &[u64; N]) -> bool {
    Uint::from_words(*a).cmp_vartime(&Uint::from_words(*b)) == std::cmp::Ordering::Less
}

/// `a + b` and the carry out.
fn add_carry<const N: usize>(a: &[u64; N], b: &[u64; N]) -> ([u64; N], bool) {
    let (sum, carry) = Uint::from_words(*a).carrying_add(&Uint::from_words(*b), Limb::ZERO);
    (sum.to_words(), carry != Limb::ZERO)
}

/// `a − b` and the borrow out.
fn sub_borrow<const N: usize>(a: &[u64; N], b: &[u64; N]) -> ([u64; N], bool) {
    let (diff, borrow) = Uint::from_words(*a).borrowing_sub(&Uint::from_words(*b), Limb::ZERO);
    (diff.to_words(), borrow != Limb::ZERO)
}

/// `count` (1..=16) bits of `k` from bit `pos` on; bits past the end read as 0.
#[inline]
fn bits<const N: usize>(k: &[u64; N], pos: usize, count: usize) -> u32 {
    debug_assert!((1..=16).contains(&count));
    let limb = pos / 64;
    if limb >= N {
        return 0;
    }
    let off = pos % 64;
    let mut v = k[limb] >> off;
    if off + count > 64 && limb + 1 < N {
        v |= k[limb + 1] << (64 - off);
    }
    (v & ((1u64 << count) - 1)) as u32
}

// ---------------------------------------------------------------------------------------------
// Arithmetic modulo an odd N-limb modulus (crypto-bigint)
// ---------------------------------------------------------------------------------------------

/// How a [`Field`] computes.
#[derive(Debug)]
enum FieldKind<const N: usize> {
    /// `m = 2^(64·N) − c` with a one-limb `c`: crypto-bigint's `*_mod_special` operations
    /// (HAC algorithm 14.47: the high half of a product folds back in times `c`); elements are
    /// plain residues. Both GOST field primes have this form: CryptoPro-A's `p = 2^256 − 617`,
    /// tc26-512-A's `p = 2^512 − 569`.
    Special(Limb),
    /// Any other odd modulus (the group orders, the test-only CryptoPro-B curve): Montgomery
    /// form (`FixedMontyForm`), elements are `a·R mod m` with `R = 2^(64·N)`.
    Monty(FixedMontyParams<N>),
}

/// Arithmetic modulo an odd `m < 2^(64·N)`, delegated to crypto-bigint. Elements are
/// `[u64; N]`, fully reduced (`< m`), in the field's representation ([`FieldKind`]): plain for
/// the special primes, Montgomery form otherwise; [`Field::to_field`] and [`Field::to_plain`]
/// convert. Fully reduced elements have one encoding each, so the curve code compares them
/// directly.
#[derive(Debug)]
struct Field<const N: usize> {
    m: [u64; N],
    modulus: Odd<Uint<N>>,
    kind: FieldKind<N>,
    /// 1 in the field's representation.
    one: [u64; N],
}

impl<const N: usize> Field<N> {
    fn new(m: &[u64; N]) -> Field<N> {
        Self::with_special(m, true)
    }

    /// A field that computes in Montgomery form even for a special modulus: the reference the
    /// tests check the special arithmetic against.
    #[cfg(test)]
    fn new_monty(m: &[u64; N]) -> Field<N> {
        Self::with_special(m, false)
    }

    fn with_special(m: &[u64; N], allow_special: bool) -> Field<N> {
        let odd = Option::from(Odd::new(Uint::from_words(*m))).expect("modulus must be odd");
        // c = 2^(64N) − m, special if it fits in 32 bits (so that the reduction's last fold,
        // (carry + hi·c / 2^(64N))·c, fits in a word).
        let c = Uint::<N>::ZERO
            .wrapping_sub(&Uint::from_words(*m))
            .to_words();
        let special =
            allow_special && c[1..].iter().all(|&l| l == 0) && c[0] != 0 && c[0] < 1 << 32;
        let (kind, one) = if special {
            let mut one = [0u64; N];
            one[0] = 1;
            (FieldKind::Special(Limb(c[0])), one)
        } else {
            let params = FixedMontyParams::new_vartime(odd);
            let one = FixedMontyForm::one(&params).as_montgomery().to_words();
            (FieldKind::Monty(params), one)
        };
        Field {
            m: *m,
            modulus: odd,
            kind,
            one,
        }
    }

    #[inline]
    fn monty(a: &[u64; N], params: &FixedMontyParams<N>) -> FixedMontyForm<N> {
        FixedMontyForm::from_montgomery(Uint::from_words(*a), params)
    }

    #[inline]
    fn words(x: &FixedMontyForm<N>) -> [u64; N] {
        x.as_montgomery().to_words()
    }

    // The special arms are a few carry chains: inlined into the point formulas. The Montgomery
    // arms (group orders, test curves) stay out of line.

    #[inline(always)]
    fn add(&self, a: &[u64; N], b: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(c) => special::add(a, b, c.0),
            FieldKind::Monty(p) => Self::add_monty(a, b, p),
        }
    }

    #[inline(never)]
    fn add_monty(a: &[u64; N], b: &[u64; N], p: &FixedMontyParams<N>) -> [u64; N] {
        Self::words(&Self::monty(a, p).add(&Self::monty(b, p)))
    }

    #[inline(always)]
    fn sub(&self, a: &[u64; N], b: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(c) => special::sub(a, b, c.0),
            FieldKind::Monty(p) => Self::sub_monty(a, b, p),
        }
    }

    #[inline(never)]
    fn sub_monty(a: &[u64; N], b: &[u64; N], p: &FixedMontyParams<N>) -> [u64; N] {
        Self::words(&Self::monty(a, p).sub(&Self::monty(b, p)))
    }

    #[inline(always)]
    fn neg(&self, a: &[u64; N]) -> [u64; N] {
        self.sub(&[0; N], a)
    }

    #[inline(always)]
    fn dbl(&self, a: &[u64; N]) -> [u64; N] {
        self.add(a, a)
    }

    /// `k·a` for a small constant `k ≥ 1` (3, 4, 8 in the point formulas): one pass and one fold
    /// instead of two or three additions.
    #[inline(always)]
    fn mul_small(&self, a: &[u64; N], k: u32) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(c) => special::mul_small(a, k, c.0),
            FieldKind::Monty(_) => {
                let mut acc = *a;
                for _ in 1..k {
                    acc = self.add(&acc, a);
                }
                acc
            }
        }
    }

    #[inline]
    fn mul(&self, a: &[u64; N], b: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(c) => special::reduce_wide(&special::mul_wide(a, b), c.0),
            FieldKind::Monty(p) => Self::words(&Self::monty(a, p).mul(&Self::monty(b, p))),
        }
    }

    #[inline]
    fn sqr(&self, a: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(c) => special::reduce_wide(&special::sqr_wide(a), c.0),
            FieldKind::Monty(p) => Self::words(&Self::monty(a, p).square()),
        }
    }

    /// Plain (`< m`) → the field's representation.
    fn to_field(&self, a: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(_) => *a,
            FieldKind::Monty(p) => Self::words(&FixedMontyForm::new(&Uint::from_words(*a), p)),
        }
    }

    /// The field's representation → plain.
    fn to_plain(&self, a: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(_) => *a,
            FieldKind::Monty(p) => Self::monty(a, p).retrieve().to_words(),
        }
    }

    /// `a⁻¹` for `a ≠ 0` (m prime); 0 for 0. Variable time: only public data comes here.
    fn inv(&self, a: &[u64; N]) -> [u64; N] {
        match &self.kind {
            FieldKind::Special(_) => {
                Option::from(Uint::from_words(*a).invert_odd_mod_vartime(&self.modulus))
                    .map(|x: Uint<N>| x.to_words())
                    .unwrap_or([0; N])
            }
            FieldKind::Monty(p) => Option::from(Self::monty(a, p).invert_vartime())
                .map(|x: FixedMontyForm<N>| Self::words(&x))
                .unwrap_or([0; N]),
        }
    }
}

/// Limb plumbing for the special primes `m = 2^(64N) − c`, `0 < c < 2^32`, on fully reduced
/// residues (`< m`): addition, subtraction and the folding of a double-width product
/// (HAC 14.47). crypto-bigint's `add_mod_special` / `sub_mod` are constant time and were 29 % of
/// a 512-bit verification; these are carry chains over `u128`, with branches only where a
/// value's range makes them almost never taken (variable time: public data only, see the module
/// docs). Checked against Montgomery form and OpenSSL's BN in the tests.
mod special {
    /// `a + b` with the carry out (0 or 1).
    #[inline(always)]
    fn add_limbs<const N: usize>(a: &[u64; N], b: &[u64; N]) -> ([u64; N], u64) {
        let mut out = [0u64; N];
        let mut carry = 0u64;
        for i in 0..N {
            let t = u128::from(a[i]) + u128::from(b[i]) + u128::from(carry);
            out[i] = t as u64;
            carry = (t >> 64) as u64;
        }
        (out, carry)
    }

    /// `a + small` with the carry out.
    #[inline(always)]
    fn add_small<const N: usize>(a: &[u64; N], small: u64) -> ([u64; N], u64) {
        let mut out = *a;
        let mut carry = small;
        for limb in out.iter_mut() {
            let t = u128::from(*limb) + u128::from(carry);
            *limb = t as u64;
            carry = (t >> 64) as u64;
        }
        (out, carry)
    }

    /// `a − b` with the borrow out (0 or 1).
    #[inline(always)]
    fn sub_limbs<const N: usize>(a: &[u64; N], b: &[u64; N]) -> ([u64; N], u64) {
        let mut out = [0u64; N];
        let mut borrow = 0u64;
        for i in 0..N {
            let t = u128::from(a[i])
                .wrapping_sub(u128::from(b[i]))
                .wrapping_sub(u128::from(borrow));
            out[i] = t as u64;
            borrow = ((t >> 64) as u64) & 1;
        }
        (out, borrow)
    }

    /// `a − small`, for `a ≥ small`.
    #[inline(always)]
    fn sub_small<const N: usize>(a: &[u64; N], small: u64) -> [u64; N] {
        let mut out = *a;
        let mut borrow = small;
        for limb in out.iter_mut() {
            let t = u128::from(*limb).wrapping_sub(u128::from(borrow));
            *limb = t as u64;
            borrow = ((t >> 64) as u64) & 1;
        }
        out
    }

    /// `a + b mod m` for `a, b < m`.
    #[inline]
    pub(super) fn add<const N: usize>(a: &[u64; N], b: &[u64; N], c: u64) -> [u64; N] {
        // s = a + b − carry·2^(64N). The sum is ≥ m iff it carried or s + c carries; then the
        // result is s + c (mod 2^(64N)): a + b − m = s + c − (1 − carry)·2^(64N).
        let (s, carry) = add_limbs(a, b);
        let (t, carry2) = add_small(&s, c);
        let mask = 0u64.wrapping_sub(carry | carry2);
        let mut out = [0u64; N];
        for i in 0..N {
            out[i] = (t[i] & mask) | (s[i] & !mask);
        }
        out
    }

    /// `k·a mod m` for `a < m`, `k < 2^32`.
    #[inline]
    pub(super) fn mul_small<const N: usize>(a: &[u64; N], k: u32, c: u64) -> [u64; N] {
        let mut r = [0u64; N];
        let mut top = 0u64;
        for i in 0..N {
            let t = u128::from(a[i]) * u128::from(k) + u128::from(top);
            r[i] = t as u64;
            top = (t >> 64) as u64;
        }
        fold(r, top, c)
    }

    /// `r + top·2^(64N) mod m` for `top ≤ 2^32`, fully reduced.
    #[inline(always)]
    fn fold<const N: usize>(r: [u64; N], top: u64, c: u64) -> [u64; N] {
        // top·2^(64N) ≡ top·c < 2^64 (c < 2^32).
        let (mut r, carry) = add_small(&r, top * c);
        if carry != 0 {
            // r < top·c is small now: + c cannot carry again.
            r = add_small(&r, c).0;
        }
        // r ≥ m ⇔ every limb above the lowest is all ones and the lowest is ≥ m's (almost
        // never: then r − m = r + c mod 2^(64N)).
        if r[1..].iter().all(|&l| l == u64::MAX) && r[0] >= 0u64.wrapping_sub(c) {
            r = add_small(&r, c).0;
        }
        r
    }

    /// `a − b mod m` for `a, b < m`.
    #[inline]
    pub(super) fn sub<const N: usize>(a: &[u64; N], b: &[u64; N], c: u64) -> [u64; N] {
        // On borrow d = a − b + 2^(64N) and the result is a − b + m = d − c; d > c then.
        let (d, borrow) = sub_limbs(a, b);
        sub_small(&d, c & 0u64.wrapping_sub(borrow))
    }

    /// `a·b`, double width (words `0..2N` of the buffer; `N ≤ 8` here): schoolbook, one row of multiply-accumulates per limb of `a`.
    /// crypto-bigint's `widening_mul` (Karatsuba down to 4 limbs) measured 36 ns against 30 ns
    /// for this at 8 limbs.
    #[inline]
    pub(super) fn mul_wide<const N: usize>(a: &[u64; N], b: &[u64; N]) -> [u64; 16] {
        const { assert!(N <= 8) };
        let mut w = [0u64; 16];
        for i in 0..N {
            let mut carry = 0u64;
            for j in 0..N {
                let t =
                    u128::from(a[i]) * u128::from(b[j]) + u128::from(w[i + j]) + u128::from(carry);
                w[i + j] = t as u64;
                carry = (t >> 64) as u64;
            }
            // Word i + N: no earlier row reached it.
            w[i + N] = carry;
        }
        w
    }

    /// `a²`, double width as [`mul_wide`]'s: the cross products once, doubled, plus the squares of the limbs
    /// (about half the word products of [`mul_wide`]; crypto-bigint's `widening_square`
    /// measured 34 ns against 20 ns for this at 8 limbs).
    #[inline]
    pub(super) fn sqr_wide<const N: usize>(a: &[u64; N]) -> [u64; 16] {
        const { assert!(N <= 8) };
        let mut w = [0u64; 16];
        // Σ_{i<j} a_i·a_j·2^(64(i+j)).
        for i in 0..N {
            let mut carry = 0u64;
            for j in i + 1..N {
                let t =
                    u128::from(a[i]) * u128::from(a[j]) + u128::from(w[i + j]) + u128::from(carry);
                w[i + j] = t as u64;
                carry = (t >> 64) as u64;
            }
            w[i + N] = carry;
        }
        // Doubled: the cross sum is below 2^(128N − 1), so no bit leaves the top.
        let mut shifted_in = 0u64;
        for limb in w[..2 * N].iter_mut() {
            let v = *limb;
            *limb = (v << 1) | shifted_in;
            shifted_in = v >> 63;
        }
        // + Σ a_i²·2^(128i).
        let mut carry = 0u64;
        for i in 0..N {
            let sq = u128::from(a[i]) * u128::from(a[i]);
            let t0 = u128::from(w[2 * i]) + u128::from(sq as u64) + u128::from(carry);
            let t1 = u128::from(w[2 * i + 1]) + (sq >> 64) + (t0 >> 64);
            w[2 * i] = t0 as u64;
            w[2 * i + 1] = t1 as u64;
            carry = (t1 >> 64) as u64;
        }
        w
    }

    /// `lo + hi·2^(64N) mod m`, fully reduced, for any `lo, hi < 2^(64N)`.
    #[cfg(test)]
    pub(super) fn reduce<const N: usize>(lo: &[u64; N], hi: &[u64; N], c: u64) -> [u64; N] {
        let mut w = [0u64; 16];
        w[..N].copy_from_slice(lo);
        w[N..2 * N].copy_from_slice(hi);
        reduce_wide(&w, c)
    }

    /// `w mod m` for a double-width `w` (words `0..2N`), fully reduced.
    #[inline]
    pub(super) fn reduce_wide<const N: usize>(w: &[u64; 16], c: u64) -> [u64; N] {
        // hi·2^(64N) ≡ hi·c: s = lo + hi·c = r + top·2^(64N) with top ≤ c.
        let mut r = [0u64; N];
        let mut top = 0u64;
        for i in 0..N {
            let t = u128::from(w[i]) + u128::from(w[N + i]) * u128::from(c) + u128::from(top);
            r[i] = t as u64;
            top = (t >> 64) as u64;
        }
        fold(r, top, c)
    }
}

// ---------------------------------------------------------------------------------------------
// Curve arithmetic
// ---------------------------------------------------------------------------------------------

/// Affine point, coordinates in the field's representation. Never the point at infinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Affine<const N: usize> {
    x: [u64; N],
    y: [u64; N],
}

/// Jacobian point `(X/Z², Y/Z³)`; `Z = 0` is the point at infinity.
#[derive(Clone, Copy, Debug)]
struct Jacobian<const N: usize> {
    x: [u64; N],
    y: [u64; N],
    z: [u64; N],
}

impl<const N: usize> Jacobian<N> {
    fn infinity() -> Jacobian<N> {
        Jacobian {
            x: [0; N],
            y: [0; N],
            z: [0; N],
        }
    }

    fn is_infinity(&self) -> bool {
        is_zero(&self.z)
    }
}

/// Window of the fixed-base table for `G` (built once per curve, a few ms): signed 7-bit digits,
/// rows of 64 affine points; 74 rows (512-bit curve, 592 KiB) or 37 (256-bit, 148 KiB). Measured:
/// 6 bits costs ~4 % more per verification, 8 bits gains nothing over 7.
const G_WINDOW: usize = 7;
/// Window of the per-key tables of repeat signers: signed 4-bit digits, rows of 8 points; 129
/// rows (512-bit, 129 KiB a key) or 65 (256-bit, 33 KiB).
const KEY_WINDOW: usize = 4;
/// Keys with a table (or waiting for their second use) per curve, least recently used out.
const KEY_CACHE_CAPACITY: usize = 64;
/// wNAF width for the public-key multiple of a key without a table: odd digits ±1..±15, a
/// table of 8 points.
const WNAF_WIDTH: usize = 5;
const WNAF_TABLE: usize = 1 << (WNAF_WIDTH - 2);

/// Fixed-window table of a point `P` for `k·P` without doublings: with `h = 2^(w−1)`, row `i`
/// holds `j·2^(w·i)·P` for `j = 1..=h`, affine, and `k` is read in signed base-`2^w` digits
/// in `−h+1..=h`, one mixed addition per nonzero digit.
#[derive(Debug)]
struct FixedTable<const N: usize> {
    w: usize,
    points: Vec<Affine<N>>,
}

impl<const N: usize> FixedTable<N> {
    /// Rows for scalars below `2^(64N)`: the digits, plus the last carry.
    fn rows(w: usize) -> usize {
        (64 * N + w) / w
    }

    fn row_len(&self) -> usize {
        1 << (self.w - 1)
    }
}

/// Per-key tables of one curve, for keys that verified a signature before: the same NCA
/// intermediate key signs every certificate and one person's key every message of theirs.
/// A key gets an entry at its first good signature and a table (about four verifications of
/// work) at its next verification; at most `capacity` entries, least recently used out.
struct KeyCache<const N: usize> {
    capacity: usize,
    inner: std::sync::Mutex<KeyCacheInner<N>>,
}

struct KeyCacheInner<const N: usize> {
    tick: u64,
    /// Key point (plain `x ‖ y` limbs; canonical, as coordinates are `< p`) → entry.
    entries: std::collections::HashMap<Vec<u64>, KeyEntry<N>>,
}

struct KeyEntry<const N: usize> {
    last_used: u64,
    table: Option<std::sync::Arc<FixedTable<N>>>,
}

impl<const N: usize> KeyCache<N> {
    fn new(capacity: usize) -> KeyCache<N> {
        KeyCache {
            capacity,
            inner: std::sync::Mutex::new(KeyCacheInner {
                tick: 0,
                entries: std::collections::HashMap::new(),
            }),
        }
    }

    fn id(key: &Affine<N>) -> Vec<u64> {
        key.x.iter().chain(key.y.iter()).copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCacheInner<N>> {
        // A panic while holding the lock leaves a consistent map (every update is a single
        // insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key's table if it has one; `(None, true)` when the key was seen verifying before and
    /// its table should be built now.
    fn lookup(&self, key: &Affine<N>) -> (Option<std::sync::Arc<FixedTable<N>>>, bool) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        match inner.entries.get_mut(&Self::id(key)) {
            Some(entry) => {
                entry.last_used = tick;
                (entry.table.clone(), entry.table.is_none())
            }
            None => (None, false),
        }
    }

    /// Records a good signature by `key`, with its table when one was built.
    fn note(&self, key: &Affine<N>, table: Option<std::sync::Arc<FixedTable<N>>>) {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let id = Self::id(key);
        if let Some(entry) = inner.entries.get_mut(&id) {
            entry.last_used = tick;
            if table.is_some() {
                entry.table = table;
            }
            return;
        }
        if inner.entries.len() >= self.capacity {
            let oldest = inner
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.entries.remove(&oldest);
            }
        }
        if self.capacity > 0 {
            inner.entries.insert(
                id,
                KeyEntry {
                    last_used: tick,
                    table,
                },
            );
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }

    #[cfg(test)]
    fn has_table(&self, key: &Affine<N>) -> Option<bool> {
        self.lock()
            .entries
            .get(&Self::id(key))
            .map(|e| e.table.is_some())
    }
}

struct Curve<const N: usize> {
    fp: Field<N>,
    fq: Field<N>,
    /// `b` in the field's representation (`a = −3` for both curves, built into the formulas).
    b: [u64; N],
    /// Group order, plain.
    q: [u64; N],
    g: Affine<N>,
    table: OnceLock<FixedTable<N>>,
    keys: KeyCache<N>,
}

/// Whether a verification may use and fill the per-key cache.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyTables {
    Use,
    Bypass,
}

impl<const N: usize> Curve<N> {
    fn new(def: &CurveDef) -> Curve<N> {
        let p: [u64; N] = limbs_from_hex(def.p);
        let a: [u64; N] = limbs_from_hex(def.a);
        let q: [u64; N] = limbs_from_hex(def.q);
        assert!(
            add_carry(&a, &limbs_from_le(&[3])) == (p, false),
            "the formulas need a = −3"
        );
        // e = h mod q then takes at most one subtraction, and R.x mod q has at most two
        // candidates below p (p < 2q by Hasse).
        assert!(q[N - 1] >> 63 == 1, "q must fill the limbs");
        let fp = Field::new(&p);
        let fq = Field::new(&q);
        let b = fp.to_field(&limbs_from_hex(def.b));
        let g = Affine {
            x: fp.to_field(&limbs_from_hex(def.x)),
            y: fp.to_field(&limbs_from_hex(def.y)),
        };
        Curve {
            fp,
            fq,
            b,
            q,
            g,
            table: OnceLock::new(),
            keys: KeyCache::new(KEY_CACHE_CAPACITY),
        }
    }

    /// Bytes of one coordinate.
    const fn size() -> usize {
        8 * N
    }

    fn is_on_curve(&self, pt: &Affine<N>) -> bool {
        let f = &self.fp;
        let y2 = f.sqr(&pt.y);
        let x2 = f.sqr(&pt.x);
        // x³ − 3x + b
        let x3 = f.mul(&x2, &pt.x);
        let three_x = f.add(&f.dbl(&pt.x), &pt.x);
        let rhs = f.add(&f.sub(&x3, &three_x), &self.b);
        y2 == rhs
    }

    /// A point from `X ‖ Y`, each little-endian; must be on the curve.
    fn point_from_le(&self, xy: &[u8]) -> Result<Affine<N>, GostError> {
        let n = Self::size();
        if xy.len() != 2 * n {
            return Err(GostError::Malformed(format!(
                "public key is {} bytes, expected {}",
                xy.len(),
                2 * n
            )));
        }
        let x: [u64; N] = limbs_from_le(&xy[..n]);
        let y: [u64; N] = limbs_from_le(&xy[n..]);
        if !lt(&x, &self.fp.m) || !lt(&y, &self.fp.m) {
            return Err(GostError::Malformed(
                "public key coordinate not below p".into(),
            ));
        }
        let pt = Affine {
            x: self.fp.to_field(&x),
            y: self.fp.to_field(&y),
        };
        // An affine encoding cannot be the point at infinity; (0, 0) and the like fail here.
        // Both curves have cofactor 1, so every point on the curve is in the q-order group.
        if !self.is_on_curve(&pt) {
            return Err(GostError::Malformed(
                "public key point not on the curve".into(),
            ));
        }
        Ok(pt)
    }

    fn to_jacobian(&self, pt: &Affine<N>) -> Jacobian<N> {
        Jacobian {
            x: pt.x,
            y: pt.y,
            z: self.fp.one,
        }
    }

    fn neg_affine(&self, pt: &Affine<N>) -> Affine<N> {
        Affine {
            x: pt.x,
            y: self.fp.neg(&pt.y),
        }
    }

    /// `2·P` for `a = −3` (dbl-2001-b). Infinity and points with `Y = 0` give `Z = 0`.
    fn double(&self, pt: &Jacobian<N>) -> Jacobian<N> {
        let f = &self.fp;
        let delta = f.sqr(&pt.z);
        let gamma = f.sqr(&pt.y);
        let beta = f.mul(&pt.x, &gamma);
        let t = f.mul(&f.sub(&pt.x, &delta), &f.add(&pt.x, &delta));
        let alpha = f.mul_small(&t, 3);
        let beta4 = f.mul_small(&beta, 4);
        let x3 = f.sub(&f.sqr(&alpha), &f.dbl(&beta4));
        let yz = f.add(&pt.y, &pt.z);
        let z3 = f.sub(&f.sub(&f.sqr(&yz), &gamma), &delta);
        let gamma2 = f.sqr(&gamma);
        let gamma2_8 = f.mul_small(&gamma2, 8);
        let y3 = f.sub(&f.mul(&alpha, &f.sub(&beta4, &x3)), &gamma2_8);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// `P1 + P2` (add-2007-bl), handling infinity, `P1 = P2` and `P1 = −P2`.
    fn add(&self, p1: &Jacobian<N>, p2: &Jacobian<N>) -> Jacobian<N> {
        if p1.is_infinity() {
            return *p2;
        }
        if p2.is_infinity() {
            return *p1;
        }
        let f = &self.fp;
        let z1z1 = f.sqr(&p1.z);
        let z2z2 = f.sqr(&p2.z);
        let u1 = f.mul(&p1.x, &z2z2);
        let u2 = f.mul(&p2.x, &z1z1);
        let s1 = f.mul(&f.mul(&p1.y, &p2.z), &z2z2);
        let s2 = f.mul(&f.mul(&p2.y, &p1.z), &z1z1);
        let h = f.sub(&u2, &u1);
        let r = f.dbl(&f.sub(&s2, &s1));
        if is_zero(&h) {
            return if is_zero(&r) {
                self.double(p1)
            } else {
                Jacobian::infinity()
            };
        }
        let i = f.sqr(&f.dbl(&h));
        let j = f.mul(&h, &i);
        let v = f.mul(&u1, &i);
        let x3 = f.sub(&f.sub(&f.sqr(&r), &j), &f.dbl(&v));
        let y3 = f.sub(&f.mul(&r, &f.sub(&v, &x3)), &f.dbl(&f.mul(&s1, &j)));
        let zz = f.add(&p1.z, &p2.z);
        let z3 = f.mul(&f.sub(&f.sub(&f.sqr(&zz), &z1z1), &z2z2), &h);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// `P1 + P2` with `P2` affine (madd-2007-bl), handling the special cases.
    fn add_affine(&self, p1: &Jacobian<N>, p2: &Affine<N>) -> Jacobian<N> {
        if p1.is_infinity() {
            return self.to_jacobian(p2);
        }
        let f = &self.fp;
        let z1z1 = f.sqr(&p1.z);
        let u2 = f.mul(&p2.x, &z1z1);
        let s2 = f.mul(&f.mul(&p2.y, &p1.z), &z1z1);
        let h = f.sub(&u2, &p1.x);
        let r = f.dbl(&f.sub(&s2, &p1.y));
        if is_zero(&h) {
            return if is_zero(&r) {
                self.double(p1)
            } else {
                Jacobian::infinity()
            };
        }
        let hh = f.sqr(&h);
        let i = f.dbl(&f.dbl(&hh));
        let j = f.mul(&h, &i);
        let v = f.mul(&p1.x, &i);
        let x3 = f.sub(&f.sub(&f.sqr(&r), &j), &f.dbl(&v));
        let y3 = f.sub(&f.mul(&r, &f.sub(&v, &x3)), &f.dbl(&f.mul(&p1.y, &j)));
        let zh = f.add(&p1.z, &h);
        let z3 = f.sub(&f.sub(&f.sqr(&zh), &z1z1), &hh);
        Jacobian {
            x: x3,
            y: y3,
            z: z3,
        }
    }

    /// `P1 − P2` with `P2` affine.
    fn sub_affine(&self, p1: &Jacobian<N>, p2: &Affine<N>) -> Jacobian<N> {
        self.add_affine(p1, &self.neg_affine(p2))
    }

    /// Affine forms of non-infinity points with one inversion (Montgomery's trick).
    fn batch_to_affine(&self, pts: &[Jacobian<N>]) -> Vec<Affine<N>> {
        let f = &self.fp;
        let mut prefix = Vec::with_capacity(pts.len());
        let mut acc = f.one;
        for pt in pts {
            acc = f.mul(&acc, &pt.z);
            prefix.push(acc);
        }
        let mut inv = f.inv(&acc);
        let mut out = vec![self.g; pts.len()];
        for i in (0..pts.len()).rev() {
            let z_inv = if i == 0 {
                inv
            } else {
                f.mul(&inv, &prefix[i - 1])
            };
            inv = f.mul(&inv, &pts[i].z);
            let z_inv2 = f.sqr(&z_inv);
            out[i] = Affine {
                x: f.mul(&pts[i].x, &z_inv2),
                y: f.mul(&pts[i].y, &f.mul(&z_inv2, &z_inv)),
            };
        }
        out
    }

    /// The fixed-window table of `pt` (a point of order `q`, so no multiple below is infinity).
    fn fixed_table(&self, pt: &Affine<N>, w: usize) -> FixedTable<N> {
        let rows = FixedTable::<N>::rows(w);
        let row_len = 1usize << (w - 1);
        let mut flat = Vec::with_capacity(rows * row_len);
        let mut base = self.to_jacobian(pt);
        for _ in 0..rows {
            let mut multiple = base;
            flat.push(multiple);
            if row_len > 1 {
                multiple = self.double(&base);
                flat.push(multiple);
            }
            for _ in 2..row_len {
                multiple = self.add(&multiple, &base);
                flat.push(multiple);
            }
            for _ in 0..w {
                base = self.double(&base);
            }
        }
        FixedTable {
            w,
            points: self.batch_to_affine(&flat),
        }
    }

    /// The fixed-base table for `G`, built on first use.
    fn g_table(&self) -> &FixedTable<N> {
        self.table
            .get_or_init(|| self.fixed_table(&self.g, G_WINDOW))
    }

    /// `acc + k·P` with `P`'s fixed-window table: one mixed addition per nonzero digit.
    fn add_mul_fixed(&self, mut acc: Jacobian<N>, t: &FixedTable<N>, k: &[u64; N]) -> Jacobian<N> {
        let half = t.row_len() as i32;
        let mut carry = 0i32;
        for (i, row) in t.points.chunks_exact(t.row_len()).enumerate() {
            let mut d = bits(k, t.w * i, t.w) as i32 + carry;
            if d > half {
                d -= 1 << t.w;
                carry = 1;
            } else {
                carry = 0;
            }
            if d > 0 {
                acc = self.add_affine(&acc, &row[d as usize - 1]);
            } else if d < 0 {
                acc = self.sub_affine(&acc, &row[(-d) as usize - 1]);
            }
        }
        acc
    }

    /// `k·G` with the fixed-base table.
    fn mul_g(&self, k: &[u64; N]) -> Jacobian<N> {
        self.add_mul_fixed(Jacobian::infinity(), self.g_table(), k)
    }

    /// `k·P` with a width-5 wNAF; the odd multiples made affine with one inversion (about 25
    /// multiplications' worth), so that each of the ~`64N/6` additions is a mixed one.
    fn mul_var(&self, pt: &Affine<N>, k: &[u64; N]) -> Jacobian<N> {
        let digits = wnaf(k, WNAF_WIDTH);
        let base = self.to_jacobian(pt);
        let twice = self.double(&base);
        let mut odd = [base; WNAF_TABLE];
        for i in 1..WNAF_TABLE {
            odd[i] = self.add(&odd[i - 1], &twice);
        }
        // P has order q, so no odd multiple below q is infinity.
        let odd = self.batch_to_affine(&odd);
        let mut acc = Jacobian::infinity();
        for &d in digits.iter().rev() {
            if !acc.is_infinity() {
                acc = self.double(&acc);
            }
            if d > 0 {
                acc = self.add_affine(&acc, &odd[(d as usize - 1) / 2]);
            } else if d < 0 {
                acc = self.sub_affine(&acc, &odd[((-d) as usize - 1) / 2]);
            }
        }
        acc
    }

    /// GOST R 34.10 verification of `signature` (`r ‖ s` little-endian) over `digest` with the
    /// public point `key`, with this curve's per-key cache.
    fn verify(&self, key: &Affine<N>, digest: &[u8], signature: &[u8]) -> Result<(), GostError> {
        self.verify_with(&self.keys, KeyTables::Use, key, digest, signature)
    }

    /// [`Curve::verify`] with a given per-key cache, or none.
    fn verify_with(
        &self,
        cache: &KeyCache<N>,
        tables: KeyTables,
        key: &Affine<N>,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<(), GostError> {
        let n = Self::size();
        if signature.len() != 2 * n {
            return Err(GostError::Malformed(format!(
                "signature is {} bytes, expected {}",
                signature.len(),
                2 * n
            )));
        }
        if digest.len() != n {
            return Err(GostError::Malformed(format!(
                "digest is {} bytes, expected {}",
                digest.len(),
                n
            )));
        }
        let r: [u64; N] = limbs_from_le(&signature[..n]);
        let s: [u64; N] = limbs_from_le(&signature[n..]);
        if is_zero(&r) || !lt(&r, &self.q) {
            return Err(GostError::Malformed(
                "signature r is 0 or not below q".into(),
            ));
        }
        if is_zero(&s) || !lt(&s, &self.q) {
            return Err(GostError::Malformed(
                "signature s is 0 or not below q".into(),
            ));
        }
        // e = h mod q, h read little-endian; q > 2^(64N−1), so one subtraction suffices.
        let mut e: [u64; N] = limbs_from_le(digest);
        while !lt(&e, &self.q) {
            e = sub_borrow(&e, &self.q).0;
        }
        if is_zero(&e) {
            e[0] = 1;
        }
        let fq = &self.fq;
        let v = fq.inv(&fq.to_field(&e));
        let z1 = fq.to_plain(&fq.mul(&fq.to_field(&s), &v));
        let z2 = fq.to_plain(&fq.mul(&fq.neg(&fq.to_field(&r)), &v));

        let (table, build) = match tables {
            KeyTables::Use => cache.lookup(key),
            KeyTables::Bypass => (None, false),
        };
        let table = if build {
            Some(std::sync::Arc::new(self.fixed_table(key, KEY_WINDOW)))
        } else {
            table
        };
        let sum = match &table {
            // Both multiples from tables: no doublings, one accumulator.
            Some(t) => self.add_mul_fixed(self.mul_g(&z1), t, &z2),
            None => self.add(&self.mul_g(&z1), &self.mul_var(key, &z2)),
        };
        let verdict = self.check_x(&sum, &r);
        if verdict.is_ok() && tables == KeyTables::Use {
            cache.note(key, if build { table } else { None });
        }
        verdict
    }

    /// `R.x mod q = r` for `R = sum` (Jacobian), without inverting `Z`.
    fn check_x(&self, sum: &Jacobian<N>, r: &[u64; N]) -> Result<(), GostError> {
        if sum.is_infinity() {
            return Err(GostError::BadSignature);
        }
        // R.x mod q = r  ⇔  X = x·Z² for some x < p with x ≡ r (mod q): x ∈ {r, r + q, …}.
        let f = &self.fp;
        let zz = f.sqr(&sum.z);
        let mut x = *r;
        loop {
            if !lt(&x, &f.m) {
                return Err(GostError::BadSignature);
            }
            if f.mul(&f.to_field(&x), &zz) == sum.x {
                return Ok(());
            }
            let (next, carry) = add_carry(&x, &self.q);
            if carry {
                return Err(GostError::BadSignature);
            }
            x = next;
        }
    }
}

/// Width-`w` non-adjacent form of `k`: `k = Σ dᵢ·2^i`, each nonzero `dᵢ` odd with
/// `|dᵢ| < 2^(w−1)`, at least `w − 1` zeros between nonzero digits.
fn wnaf<const N: usize>(k: &[u64; N], w: usize) -> Vec<i8> {
    let len = 64 * N + w;
    let mut out = vec![0i8; len];
    let mut carry = 0u32;
    let mut bit = 0;
    while bit < len {
        if bits(k, bit, 1) == carry {
            bit += 1;
            continue;
        }
        let now = w.min(len - bit);
        let mut word = (bits(k, bit, now) + carry) as i32;
        carry = ((word >> (w - 1)) & 1) as u32;
        word -= (carry as i32) << w;
        out[bit] = word as i8;
        bit += now;
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use der::{Decode, Encode};
    use x509_cert::Certificate;

    const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nca/");

    /// DER bytes of a certificate file, PEM or DER.
    fn cert_der(name: &str) -> Vec<u8> {
        let raw = std::fs::read(format!("{DATA}{name}")).expect("test file");
        if raw.starts_with(b"-----BEGIN") {
            let text = String::from_utf8(raw).expect("PEM is text");
            let b64: String = text
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<Vec<_>>()
                .concat();
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .expect("PEM base64")
        } else {
            raw
        }
    }

    struct CertParts {
        spki: Vec<u8>,
        tbs: Vec<u8>,
        sig_oid: String,
        sig: Vec<u8>,
    }

    fn cert_parts(der: &[u8]) -> CertParts {
        // x509-cert (RustCrypto), not our own `filter::cert`, so that these tests do not lean on
        // the parser the filter uses; the NCA files are DER, so re-encoding gives their bytes.
        let cert = Certificate::from_der(der).expect("certificate parses");
        let tbs = cert.tbs_certificate.to_der().expect("TBS encodes");
        assert!(
            der.windows(tbs.len()).any(|w| w == tbs),
            "TBS re-encodes to its bytes"
        );
        CertParts {
            spki: cert
                .tbs_certificate
                .subject_public_key_info
                .to_der()
                .expect("SPKI encodes"),
            tbs,
            sig_oid: cert.signature_algorithm.oid.to_string(),
            sig: cert.signature.raw_bytes().to_vec(),
        }
    }

    fn load(name: &str) -> CertParts {
        cert_parts(&cert_der(name))
    }

    const ROOT_2004: &str = "ca/root_gost_test.pem";
    const NCA_2004: &str = "ca/nca_gost_test.pem";
    const ROOT_2022: &str = "ca/root_test_gost_2022.cer";
    const NCA_2022: &str = "ca/nca_gost2022_test.cer";
    const EE_2004: &str = "certs/ncanode_ceo_sign_gost2004_2022.cer";
    const EE_2015: &str = "certs/gokalkan_gost1_2023.pem";

    fn check_cert_signed_by(subject: &str, issuer: &str, variant: Variant) {
        let subject = load(subject);
        let issuer = load(issuer);
        let key = PublicKey::from_spki_der(&issuer.spki).expect("issuer key parses");
        assert_eq!(key.variant(), variant);
        assert_eq!(Variant::from_sig_oid(&subject.sig_oid), Some(variant));
        assert_eq!(subject.sig.len(), variant.signature_len());
        verify(&key, &subject.tbs, &subject.sig).expect("certificate signature verifies");
        // Same through verify_digest.
        let digest = variant.digest(&subject.tbs);
        verify_digest(&key, &digest, &subject.sig).expect("verify_digest agrees");
    }

    // ----- curve self-checks ------------------------------------------------------------------

    /// A little-endian limb array as an OpenSSL `BIGNUM`: an independent big-integer
    /// implementation to cross-check ours against.
    fn bn_from_limbs<const N: usize>(a: &[u64; N]) -> openssl::bn::BigNum {
        let mut be = Vec::with_capacity(8 * N);
        for l in a.iter().rev() {
            be.extend_from_slice(&l.to_be_bytes());
        }
        openssl::bn::BigNum::from_slice(&be).expect("BIGNUM")
    }

    /// A hex curve constant (whitespace ignored) parsed by OpenSSL.
    fn bn_from_hex(hex: &str) -> openssl::bn::BigNum {
        let digits: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        openssl::bn::BigNum::from_hex_str(&digits).expect("hex")
    }

    /// Plain double-and-add, independent of the table and the wNAF.
    fn mul_simple<const N: usize>(c: &Curve<N>, pt: &Affine<N>, k: &[u64; N]) -> Jacobian<N> {
        let mut acc = Jacobian::infinity();
        for i in (0..64 * N).rev() {
            acc = c.double(&acc);
            if bits(k, i, 1) == 1 {
                acc = c.add_affine(&acc, pt);
            }
        }
        acc
    }

    fn to_affine<const N: usize>(c: &Curve<N>, pt: &Jacobian<N>) -> Option<Affine<N>> {
        if pt.is_infinity() {
            return None;
        }
        Some(c.batch_to_affine(&[*pt])[0])
    }

    fn self_check<const N: usize>(c: &Curve<N>, def: &CurveDef) {
        assert!(c.is_on_curve(&c.g), "G on the curve");
        // q·G = ∞ (simple ladder, no special-case shortcuts), and (q−1)·G = −G.
        assert!(mul_simple(c, &c.g, &c.q).is_infinity(), "q·G = ∞");
        let q_minus_1 = sub_borrow(&c.q, &{
            let mut one = [0u64; N];
            one[0] = 1;
            one
        })
        .0;
        let p = mul_simple(c, &c.g, &q_minus_1);
        assert_eq!(to_affine(c, &p), Some(c.neg_affine(&c.g)));
        // The fixed-base table and the wNAF agree with the plain ladder.
        for k in [
            q_minus_1,
            limbs_from_le(&[0x5a; 64]),
            limbs_from_le(&[1]),
            {
                let mut k = [u64::MAX; N];
                k[N - 1] = 0x0123_4567_89ab_cdef;
                k
            },
        ] {
            let expect = to_affine(c, &mul_simple(c, &c.g, &k));
            assert_eq!(to_affine(c, &c.mul_g(&k)), expect, "table");
            assert_eq!(to_affine(c, &c.mul_var(&c.g, &k)), expect, "wNAF");
        }
        assert!(c.mul_var(&c.g, &c.q).is_infinity(), "wNAF q·G = ∞");
        // Field round trip and inversion.
        let x = c.fp.to_field(&limbs_from_le(&[0x37; 40]));
        assert_eq!(c.fp.mul(&x, &c.fp.inv(&x)), c.fp.one);
        assert_eq!(bn_from_limbs(&c.fp.m), bn_from_hex(def.p));
        assert_eq!(bn_from_limbs(&c.q), bn_from_hex(def.q));
        assert_eq!(bn_from_limbs(&c.fp.to_plain(&c.b)), bn_from_hex(def.b));
        let seven = c.fp.to_plain(&c.fp.to_field(&limbs_from_le(&[7])));
        assert_eq!(seven, limbs_from_le(&[7]));
    }

    #[test]
    fn curve_self_check_cryptopro_a() {
        self_check(cryptopro_a(), &CRYPTOPRO_A);
    }

    #[test]
    fn curve_self_check_tc26_512_a() {
        self_check(tc26_512_a(), &TC26_512_A);
    }

    #[test]
    fn wnaf_recomposes() {
        for seed in [0u8, 1, 0x7f, 0xff, 0x10, 0xa5] {
            let k: [u64; 4] = limbs_from_le(&[seed; 32]);
            let digits = wnaf(&k, WNAF_WIDTH);
            let mut acc = openssl::bn::BigNum::new().expect("BIGNUM");
            for (i, d) in digits.iter().enumerate() {
                assert!(*d == 0 || (d % 2 != 0 && d.abs() < 16));
                let digit =
                    openssl::bn::BigNum::from_u32(u32::from(d.unsigned_abs())).expect("BIGNUM");
                let mut term = openssl::bn::BigNum::new().expect("BIGNUM");
                term.lshift(&digit, i as i32).expect("shift");
                term.set_negative(*d < 0);
                let prev = acc.to_owned().expect("BIGNUM");
                acc.checked_add(&prev, &term).expect("add");
            }
            assert_eq!(acc, bn_from_limbs(&k));
        }
    }

    // ----- OIDs and digests -------------------------------------------------------------------

    #[test]
    fn oid_mapping() {
        assert_eq!(
            Variant::from_key_oid("1.2.398.3.10.1.1.1.1"),
            Some(Variant::Gost2004)
        );
        assert_eq!(
            Variant::from_key_oid("1.2.398.3.10.1.1.2.2"),
            Some(Variant::Gost2015_512)
        );
        assert_eq!(
            Variant::from_sig_oid("1.2.398.3.10.1.1.1.2"),
            Some(Variant::Gost2004)
        );
        assert_eq!(
            Variant::from_sig_oid("1.2.398.3.10.1.1.2.3.2"),
            Some(Variant::Gost2015_512)
        );
        assert_eq!(
            Variant::from_digest_oid("1.2.398.3.10.1.3.1"),
            Some(Variant::Gost2004)
        );
        assert_eq!(
            Variant::from_digest_oid("1.2.398.3.10.1.3.3"),
            Some(Variant::Gost2015_512)
        );
        assert_eq!(Variant::from_key_oid("1.2.398.3.10.1.1.1.2"), None);
        assert_eq!(Variant::from_sig_oid("1.2.840.113549.1.1.11"), None);
        assert!(is_gost_oid("1.2.398.3.10.1.3.3"));
        assert!(!is_gost_oid("1.2.643.7.1.1.1.2"));
        assert!(!is_gost_oid("2.16.840.1.101.3.4.2.1"));
        assert_eq!(Variant::Gost2004.name(), "gost34310-2004");
        assert_eq!(Variant::Gost2015_512.name(), "gost34310-2015-512");
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn digests_known_answers() {
        // GOST R 34.11-94 with the test parameter set: the published vectors for "" and "abc".
        assert_eq!(
            hex(&Variant::Gost2004.digest(b"")),
            "ce85b99cc46752fffee35cab9a7b0278abb4c2d2055cff685af4912c49490f8d"
        );
        assert_eq!(
            hex(&Variant::Gost2004.digest(b"abc")),
            "f3134348c44fb1b2a277729e2285ebb5cb5e0f29c975bc753b70497c06a4d51d"
        );
        // Streebog-512 of the empty string (GOST R 34.11-2012).
        assert_eq!(Variant::Gost2015_512.digest(b"").len(), 64);
        assert_eq!(
            hex(&Variant::Gost2015_512.digest(b"")),
            "8e945da209aa869f0455928529bcae4679e9873ab707b55315f56ceb98bef0a7\
             362f715528356ee83cda5f2aac4c6ad2ba3a715c1bcd81cb8e9f90bf4c1c1a8a"
        );
    }

    // ----- SPKI structure ---------------------------------------------------------------------

    #[test]
    fn spki_parses_real_keys() {
        for (name, variant) in [
            (ROOT_2004, Variant::Gost2004),
            (NCA_2004, Variant::Gost2004),
            (EE_2004, Variant::Gost2004),
            (ROOT_2022, Variant::Gost2015_512),
            (NCA_2022, Variant::Gost2015_512),
            (EE_2015, Variant::Gost2015_512),
        ] {
            let parts = load(name);
            let key = PublicKey::from_spki_der(&parts.spki).expect(name);
            assert_eq!(key.variant(), variant, "{name}");
            // Cofactor 1: q·Q = ∞ for every real key.
            match &key.point {
                KeyPoint::P256(pt) => {
                    assert!(mul_simple(cryptopro_a(), pt, &cryptopro_a().q).is_infinity())
                }
                KeyPoint::P512(pt) => {
                    assert!(mul_simple(tc26_512_a(), pt, &tc26_512_a().q).is_infinity())
                }
            }
        }
    }

    /// Replaces the first occurrence of `from` in `der` by `to` (same length).
    fn patched(der: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let at = der
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        let mut out = der.to_vec();
        out[at..at + to.len()].copy_from_slice(to);
        out
    }

    fn oid_der(oid: &str) -> Vec<u8> {
        der::Encode::to_der(&ObjectIdentifier::new_unwrap(oid)).expect("OID encodes")
    }

    /// An SPKI for `variant` with the given parameters (DER, or none) and point bytes.
    fn build_spki(key_oid: &str, params: Option<&[u8]>, xy: &[u8]) -> Vec<u8> {
        fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            let len = content.len();
            if len < 0x80 {
                out.push(len as u8);
            } else if len < 0x100 {
                out.extend_from_slice(&[0x81, len as u8]);
            } else {
                out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
            }
            out.extend_from_slice(content);
            out
        }
        let mut alg = oid_der(key_oid);
        if let Some(p) = params {
            alg.extend_from_slice(p);
        }
        let mut bits = vec![0u8];
        bits.extend_from_slice(&tlv(0x04, xy));
        let mut body = tlv(0x30, &alg);
        body.extend_from_slice(&tlv(0x03, &bits));
        tlv(0x30, &body)
    }

    fn real_xy(name: &str) -> Vec<u8> {
        let spki = load(name).spki;
        let parsed = SpkiRef::from_der(&spki).expect("spki");
        let bits = parsed.subject_public_key.as_bytes().expect("octets");
        OctetStringRef::from_der(bits)
            .expect("octet string")
            .as_bytes()
            .to_vec()
    }

    #[test]
    fn spki_parameter_forms() {
        let xy = real_xy(ROOT_2004);
        let seq = |oids: &[&str]| {
            let mut content = Vec::new();
            for o in oids {
                content.extend_from_slice(&oid_der(o));
            }
            let mut out = vec![0x30, content.len() as u8];
            out.extend_from_slice(&content);
            out
        };
        // The NCA form, the Russian curve OID, a bare OID, NULL and absent parameters: all fine.
        for params in [
            Some(seq(&[OID_CURVE_2004_KZ, "1.2.398.3.10.1.3.1.1.0"])),
            Some(seq(&[OID_CURVE_CRYPTOPRO_A, "1.2.643.2.2.30.1"])),
            Some(oid_der(OID_CURVE_2004_KZ)),
            Some(vec![0x05, 0x00]),
            None,
        ] {
            let spki = build_spki(OID_KEY_2004, params.as_deref(), &xy);
            let key = PublicKey::from_spki_der(&spki).expect("accepted");
            assert_eq!(key.variant(), Variant::Gost2004);
        }
        // Unknown or mismatched curves.
        for curve in [
            "1.2.643.2.2.35.2",
            OID_CURVE_2015_512_KZ,
            OID_CURVE_TC26_512_A,
        ] {
            let spki = build_spki(OID_KEY_2004, Some(&seq(&[curve])), &xy);
            assert!(
                matches!(
                    PublicKey::from_spki_der(&spki),
                    Err(GostError::UnknownParams(_))
                ),
                "{curve}"
            );
        }
        // Unknown key algorithm (the Russian GOST 2012-256 key OID).
        let spki = build_spki("1.2.643.7.1.1.1.1", None, &xy);
        assert!(matches!(
            PublicKey::from_spki_der(&spki),
            Err(GostError::UnknownParams(_))
        ));
        // Odd parameter types and an empty SEQUENCE.
        for params in [vec![0x02, 0x01, 0x01], vec![0x30, 0x00]] {
            let spki = build_spki(OID_KEY_2004, Some(&params), &xy);
            assert!(matches!(
                PublicKey::from_spki_der(&spki),
                Err(GostError::Malformed(_))
            ));
        }
        // A 2004 point under the 512-bit key OID: wrong length.
        let spki = build_spki(OID_KEY_2015_512, None, &xy);
        assert!(matches!(
            PublicKey::from_spki_der(&spki),
            Err(GostError::Malformed(_))
        ));
    }

    #[test]
    fn spki_real_curve_oid_patched_is_unknown() {
        // In the real root SPKI, 1.2.398.3.10.1.1.1.1.1 → 1.2.398.3.10.1.1.1.1.2 (same length).
        let spki = load(ROOT_2004).spki;
        let from = oid_der(OID_CURVE_2004_KZ);
        let to = oid_der("1.2.398.3.10.1.1.1.1.2");
        let bad = patched(&spki, &from, &to);
        assert!(matches!(
            PublicKey::from_spki_der(&bad),
            Err(GostError::UnknownParams(_))
        ));
    }

    #[test]
    fn malformed_spki_never_panics() {
        let spki = load(ROOT_2022).spki;
        for cut in 0..spki.len() {
            assert!(PublicKey::from_spki_der(&spki[..cut]).is_err());
        }
        for i in 0..spki.len() {
            for bit in [0x01u8, 0x80] {
                let mut m = spki.clone();
                m[i] ^= bit;
                let _ = PublicKey::from_spki_der(&m); // must not panic
            }
        }
        assert!(PublicKey::from_spki_der(&[]).is_err());
    }

    // ----- real certificate chains ------------------------------------------------------------

    #[test]
    fn root_2004_self_signature() {
        check_cert_signed_by(ROOT_2004, ROOT_2004, Variant::Gost2004);
    }

    #[test]
    fn nca_2004_signed_by_root() {
        check_cert_signed_by(NCA_2004, ROOT_2004, Variant::Gost2004);
    }

    #[test]
    fn root_2022_self_signature() {
        check_cert_signed_by(ROOT_2022, ROOT_2022, Variant::Gost2015_512);
    }

    #[test]
    fn nca_2022_signed_by_root() {
        check_cert_signed_by(NCA_2022, ROOT_2022, Variant::Gost2015_512);
    }

    #[test]
    fn end_entity_2004_signed_by_nca() {
        check_cert_signed_by(EE_2004, NCA_2004, Variant::Gost2004);
    }

    #[test]
    fn end_entity_2015_signed_by_nca_2022() {
        check_cert_signed_by(EE_2015, NCA_2022, Variant::Gost2015_512);
    }

    #[test]
    fn wrong_issuer_fails() {
        // The end-entity 2004 cert is not signed by the root, nor by an intermediate's sibling.
        let ee = load(EE_2004);
        let root = PublicKey::from_spki_der(&load(ROOT_2004).spki).expect("root key");
        assert_eq!(
            verify(&root, &ee.tbs, &ee.sig),
            Err(GostError::BadSignature)
        );
        let ee = load(EE_2015);
        let root = PublicKey::from_spki_der(&load(ROOT_2022).spki).expect("root key");
        assert_eq!(
            verify(&root, &ee.tbs, &ee.sig),
            Err(GostError::BadSignature)
        );
        // Variant mismatch: a 2015 signature under a 2004 key has the wrong length.
        let nca04 = PublicKey::from_spki_der(&load(NCA_2004).spki).expect("key");
        assert!(matches!(
            verify(&nca04, &ee.tbs, &ee.sig),
            Err(GostError::Malformed(_))
        ));
    }

    // ----- negative vectors -------------------------------------------------------------------

    struct Case {
        key: PublicKey,
        tbs: Vec<u8>,
        sig: Vec<u8>,
        digest: Vec<u8>,
    }

    fn case(subject: &str, issuer: &str) -> Case {
        let subject = load(subject);
        let key = PublicKey::from_spki_der(&load(issuer).spki).expect("key");
        let digest = key.variant().digest(&subject.tbs);
        Case {
            key,
            tbs: subject.tbs,
            sig: subject.sig,
            digest,
        }
    }

    fn cases() -> [Case; 2] {
        [case(NCA_2004, ROOT_2004), case(NCA_2022, ROOT_2022)]
    }

    #[test]
    fn flipped_bytes_fail() {
        for c in cases() {
            verify_digest(&c.key, &c.digest, &c.sig).expect("baseline verifies");
            for i in [0, 1, c.sig.len() / 2 - 1, c.sig.len() / 2, c.sig.len() - 2] {
                let mut sig = c.sig.clone();
                sig[i] ^= 0x01;
                assert_eq!(
                    verify_digest(&c.key, &c.digest, &sig),
                    Err(GostError::BadSignature),
                    "signature byte {i}"
                );
            }
            for i in [0, 7, c.digest.len() - 1] {
                let mut digest = c.digest.clone();
                digest[i] ^= 0x40;
                assert_eq!(
                    verify_digest(&c.key, &digest, &c.sig),
                    Err(GostError::BadSignature),
                    "digest byte {i}"
                );
            }
            let mut tbs = c.tbs.clone();
            let last = tbs.len() - 1;
            tbs[last] ^= 0x01;
            assert_eq!(verify(&c.key, &tbs, &c.sig), Err(GostError::BadSignature));
        }
    }

    #[test]
    fn other_sbox_fails() {
        let c = case(NCA_2004, ROOT_2004);
        let digest = gost94::Gost94CryptoPro::digest(&c.tbs).to_vec();
        assert_ne!(digest, c.digest);
        assert_eq!(
            verify_digest(&c.key, &digest, &c.sig),
            Err(GostError::BadSignature)
        );
    }

    #[test]
    fn big_endian_byte_orders_fail() {
        for c in cases() {
            let n = c.sig.len() / 2;
            // Digest read big-endian.
            let mut digest = c.digest.clone();
            digest.reverse();
            assert_eq!(
                verify_digest(&c.key, &digest, &c.sig),
                Err(GostError::BadSignature)
            );
            // r and s each big-endian.
            let mut sig = c.sig.clone();
            sig[..n].reverse();
            sig[n..].reverse();
            assert!(verify_digest(&c.key, &c.digest, &sig).is_err());
            // RFC 4491 layout (s ‖ r big-endian) = the whole value reversed.
            let mut sig = c.sig.clone();
            sig.reverse();
            assert!(verify_digest(&c.key, &c.digest, &sig).is_err());
            // r and s swapped.
            let mut sig = c.sig[n..].to_vec();
            sig.extend_from_slice(&c.sig[..n]);
            assert!(verify_digest(&c.key, &c.digest, &sig).is_err());
        }
    }

    fn le_bytes<const N: usize>(a: &[u64; N]) -> Vec<u8> {
        a.iter().flat_map(|l| l.to_le_bytes()).collect()
    }

    #[test]
    fn out_of_range_r_s() {
        for c in cases() {
            let n = c.sig.len() / 2;
            let q = match c.key.variant() {
                Variant::Gost2004 => le_bytes(&cryptopro_a().q),
                Variant::Gost2015_512 => le_bytes(&tc26_512_a().q),
            };
            let mut r0 = c.sig.clone();
            r0[..n].fill(0);
            let mut s0 = c.sig.clone();
            s0[n..].fill(0);
            let mut r_q = c.sig.clone();
            r_q[..n].copy_from_slice(&q);
            let mut s_q = c.sig.clone();
            s_q[n..].copy_from_slice(&q);
            let mut s_max = c.sig.clone();
            s_max[n..].fill(0xff);
            for sig in [r0, s0, r_q, s_q, s_max] {
                assert!(matches!(
                    verify_digest(&c.key, &c.digest, &sig),
                    Err(GostError::Malformed(_))
                ));
            }
            // r + q would be the same residue: must still be rejected (r ≥ q).
            let r_plus_q = {
                let (sum, _) = match c.key.variant() {
                    Variant::Gost2004 => {
                        let r: [u64; 4] = limbs_from_le(&c.sig[..n]);
                        let (s, carry) = add_carry(&r, &cryptopro_a().q);
                        (le_bytes(&s), carry)
                    }
                    Variant::Gost2015_512 => {
                        let r: [u64; 8] = limbs_from_le(&c.sig[..n]);
                        let (s, carry) = add_carry(&r, &tc26_512_a().q);
                        (le_bytes(&s), carry)
                    }
                };
                let mut sig = sum;
                sig.extend_from_slice(&c.sig[n..]);
                sig
            };
            assert!(verify_digest(&c.key, &c.digest, &r_plus_q).is_err());
        }
    }

    #[test]
    fn wrong_lengths() {
        for c in cases() {
            let n = c.sig.len();
            for len in [0, 1, n / 2, n - 1, n + 1, 2 * n] {
                let mut sig = c.sig.clone();
                sig.resize(len, 0);
                assert!(
                    matches!(
                        verify_digest(&c.key, &c.digest, &sig),
                        Err(GostError::Malformed(_))
                    ),
                    "signature length {len}"
                );
            }
            for len in [
                0,
                c.digest.len() - 1,
                c.digest.len() + 1,
                2 * c.digest.len(),
            ] {
                let mut digest = c.digest.clone();
                digest.resize(len, 0);
                assert!(matches!(
                    verify_digest(&c.key, &digest, &c.sig),
                    Err(GostError::Malformed(_))
                ));
            }
        }
    }

    #[test]
    fn bad_public_points() {
        for (name, variant) in [
            (ROOT_2004, Variant::Gost2004),
            (ROOT_2022, Variant::Gost2015_512),
        ] {
            let xy = real_xy(name);
            let n = xy.len() / 2;
            PublicKey::from_xy_le(variant, &xy).expect("real point");
            // Off-curve: y + 1.
            let mut off = xy.clone();
            off[n] ^= 0x01;
            // "Infinity" encodings: all zeros, (0, 0) by another name.
            let zero = vec![0u8; 2 * n];
            // Coordinates ≥ p.
            let ff = vec![0xffu8; 2 * n];
            // Truncated / extended.
            let short = xy[..2 * n - 1].to_vec();
            let mut long = xy.clone();
            long.push(0);
            for bad in [off, zero, ff, short, long] {
                assert!(matches!(
                    PublicKey::from_xy_le(variant, &bad),
                    Err(GostError::Malformed(_))
                ));
            }
            // Off-curve point inside a real SPKI.
            let spki = load(name).spki;
            let mut m = spki.clone();
            let last = m.len() - 1;
            m[last] ^= 0x01;
            assert!(matches!(
                PublicKey::from_spki_der(&m),
                Err(GostError::Malformed(_))
            ));
        }
    }

    /// id-GostR3410-2001-CryptoPro-B-ParamSet (RFC 4357 §11.4): another `a = −3` curve of the
    /// same size, to show that the curve matters.
    const CRYPTOPRO_B: CurveDef = CurveDef {
        p: "8000000000000000000000000000000000000000000000000000000000000C99",
        a: "8000000000000000000000000000000000000000000000000000000000000C96",
        b: "3E1AF419A269A5F866A7D3C25C3DF80AE979259373FF2B182F49D4CE7E1BBC8B",
        q: "800000000000000000000000000000015F700CFFF1A624E5E497161BCC8A198F",
        x: "1",
        y: "3FA8124359F96680B83D1C3EB2C070E5C545C9858D03ECFB744BF8D717717EFC",
    };

    #[test]
    fn wrong_curve_fails() {
        let curve_b: Curve<4> = Curve::new(&CRYPTOPRO_B);
        self_check(&curve_b, &CRYPTOPRO_B);
        let c = case(NCA_2004, ROOT_2004);
        let xy = real_xy(ROOT_2004);
        // The real key is not a point of CryptoPro-B …
        assert!(matches!(
            curve_b.point_from_le(&xy),
            Err(GostError::Malformed(_))
        ));
        // … and forcing the coordinates onto it does not verify either.
        let forced = Affine {
            x: curve_b.fp.to_field(&limbs_from_le(&xy[..32])),
            y: curve_b.fp.to_field(&limbs_from_le(&xy[32..])),
        };
        assert!(curve_b.verify(&forced, &c.digest, &c.sig).is_err());
        // The right curve still does.
        let KeyPoint::P256(pt) = &c.key.point else {
            panic!("2004 key")
        };
        cryptopro_a()
            .verify(pt, &c.digest, &c.sig)
            .expect("right curve verifies");
    }

    #[test]
    fn zero_digest_maps_to_one() {
        // e = 0 → 1: the digest q (≡ 0) and the digest 1 must give the same verdict.
        let c = case(NCA_2004, ROOT_2004);
        let q = le_bytes(&cryptopro_a().q);
        let mut one = vec![0u8; 32];
        one[0] = 1;
        assert_eq!(
            verify_digest(&c.key, &q, &c.sig),
            verify_digest(&c.key, &one, &c.sig)
        );
        assert_eq!(
            verify_digest(&c.key, &[0u8; 32], &c.sig),
            Err(GostError::BadSignature)
        );
    }

    // ----- CMS samples ------------------------------------------------------------------------

    /// A DER TLV: tag byte, the whole encoding, the contents.
    #[derive(Clone, Copy)]
    struct Tlv<'a> {
        tag: u8,
        raw: &'a [u8],
        content: &'a [u8],
    }

    /// Reads one TLV (low tag numbers, definite lengths) and returns it with the rest.
    fn tlv(buf: &[u8]) -> (Tlv<'_>, &[u8]) {
        let tag = buf[0];
        assert_ne!(tag & 0x1f, 0x1f, "high tag numbers not needed here");
        let (len, hdr) = match buf[1] {
            l if l < 0x80 => (l as usize, 2),
            0x80 => panic!("indefinite length"),
            l => {
                let n = (l & 0x7f) as usize;
                let len = buf[2..2 + n]
                    .iter()
                    .fold(0usize, |a, b| (a << 8) | *b as usize);
                (len, 2 + n)
            }
        };
        let raw = &buf[..hdr + len];
        (
            Tlv {
                tag,
                raw,
                content: &buf[hdr..hdr + len],
            },
            &buf[hdr + len..],
        )
    }

    fn children(content: &[u8]) -> Vec<Tlv<'_>> {
        let mut out = Vec::new();
        let mut rest = content;
        while !rest.is_empty() {
            let (t, r) = tlv(rest);
            out.push(t);
            rest = r;
        }
        out
    }

    fn oid_of(t: &Tlv<'_>) -> String {
        assert_eq!(t.tag, 0x06);
        ObjectIdentifier::from_der(t.raw).expect("OID").to_string()
    }

    /// Checks the one GOST signer of a CMS SignedData: its signature over the signed attributes
    /// (as a DER SET) and messageDigest = the variant's digest of the content. Returns the signer
    /// certificate (DER) and the content.
    fn check_cms_gost_signer(
        file: &str,
        detached: Option<&[u8]>,
        expect: Variant,
    ) -> (Vec<u8>, Vec<u8>) {
        let der = std::fs::read(format!("{DATA}{file}")).expect("cms file");
        let (ci, rest) = tlv(&der);
        assert!(rest.is_empty());
        let ci = children(ci.content);
        assert_eq!(oid_of(&ci[0]), "1.2.840.113549.1.7.2");
        let (sd, _) = tlv(ci[1].content); // [0] EXPLICIT SignedData
        let sd = children(sd.content);
        // version, digestAlgorithms, encapContentInfo, [0] certificates, [1] crls?, signerInfos
        let encap = children(sd[2].content);
        let content: Vec<u8> = match (encap.get(1), detached) {
            (Some(eci), None) => {
                let (octets, _) = tlv(eci.content);
                assert_eq!(octets.tag, 0x04);
                octets.content.to_vec()
            }
            (None, Some(data)) => data.to_vec(),
            _ => panic!("attached/detached mismatch"),
        };
        let certs: Vec<Vec<u8>> = sd
            .iter()
            .find(|t| t.tag == 0xa0)
            .map(|t| children(t.content).iter().map(|c| c.raw.to_vec()).collect())
            .expect("certificates");
        let signer_infos = sd.last().expect("signerInfos");
        assert_eq!(signer_infos.tag, 0x31);
        let mut gost_signer = None;
        for si in children(signer_infos.content) {
            let f = children(si.content);
            // version, sid, digestAlgorithm, [0] signedAttrs, signatureAlgorithm, signature
            let digest_oid = oid_of(&children(f[2].content)[0]);
            let sig_oid = oid_of(&children(f[4].content)[0]);
            let Some(variant) = Variant::from_sig_oid(&sig_oid) else {
                continue;
            };
            assert!(gost_signer.is_none(), "one GOST signer");
            assert_eq!(variant, expect);
            assert_eq!(Variant::from_digest_oid(&digest_oid), Some(variant));
            assert_eq!(f[3].tag, 0xa0);
            assert_eq!(f[5].tag, 0x04);
            let signature = f[5].content;
            assert_eq!(signature.len(), variant.signature_len());

            // The signer's certificate by issuerAndSerialNumber.
            let sid = children(f[1].content);
            let serial = sid[1].content;
            let cert = certs
                .iter()
                .find(|c| {
                    let x = Certificate::from_der(c).expect("cert");
                    x.tbs_certificate.serial_number.as_bytes() == serial
                })
                .expect("signer certificate in the CMS");
            let key = PublicKey::from_spki_der(&cert_parts(cert).spki).expect("signer key");
            assert_eq!(key.variant(), variant);

            // Signed attributes, re-tagged [0] → SET.
            let mut signed_attrs = f[3].raw.to_vec();
            signed_attrs[0] = 0x31;
            verify(&key, &signed_attrs, signature).expect("CMS GOST signature verifies");

            // messageDigest attribute = digest(content), bytes as the hash outputs them.
            let md = children(f[3].content)
                .into_iter()
                .find_map(|attr| {
                    let a = children(attr.content);
                    (oid_of(&a[0]) == "1.2.840.113549.1.9.4")
                        .then(|| tlv(a[1].content).0.content.to_vec())
                })
                .expect("messageDigest attribute");
            assert_eq!(md, variant.digest(&content));
            let mut reversed = md.clone();
            reversed.reverse();
            assert_ne!(reversed, variant.digest(&content));

            // Negative: the [0]-tagged bytes, or a changed attribute, do not verify.
            assert_eq!(
                verify(&key, f[3].raw, signature),
                Err(GostError::BadSignature)
            );
            let last = signed_attrs.len() - 1;
            signed_attrs[last] ^= 0x01;
            assert_eq!(
                verify(&key, &signed_attrs, signature),
                Err(GostError::BadSignature)
            );
            gost_signer = Some(cert.clone());
        }
        (gost_signer.expect("a GOST signer"), content)
    }

    #[test]
    fn cms_attached_two_signers_gost_signer() {
        let (_, content) = check_cms_gost_signer(
            "cms/ncanode_attached_2signers_rsa+gost2015.p7s",
            None,
            Variant::Gost2015_512,
        );
        assert_eq!(content, b"test123");
    }

    #[test]
    fn cms_detached_two_signers_gost_signer() {
        let (_, content) = check_cms_gost_signer(
            "cms/ncanode_detached_2signers_rsa+gost2015__data_test123.p7s",
            Some(b"test123"),
            Variant::Gost2015_512,
        );
        assert_eq!(content, b"test123");
    }

    /// A real GOST 34.310-2004 CMS signer: the TSA's signature in an RFC 3161 token; the TSA
    /// certificate itself is signed by the 2004 intermediate.
    #[test]
    fn cms_tsp_token_gost2004_signer() {
        let (tsa_cert, content) =
            check_cms_gost_signer("tsp/ncanode_tsp_token.bin", None, Variant::Gost2004);
        assert_eq!(content[0], 0x30, "TSTInfo");
        let tsa = cert_parts(&tsa_cert);
        let nca = PublicKey::from_spki_der(&load(NCA_2004).spki).expect("NCA key");
        verify(&nca, &tsa.tbs, &tsa.sig).expect("TSA certificate signed by the NCA");
    }

    /// CRLs signed by the two GOST intermediates: signature over tbsCertList.
    #[test]
    fn crl_signatures() {
        for (crl, issuer) in [
            ("crl/ncanode_nca_gost_test.crl", NCA_2004),
            ("crl/ncanode_nca_gost2022_test.crl", NCA_2022),
            ("crl/jhs_nca_gost_test_2022.crl", NCA_2022),
        ] {
            let der = std::fs::read(format!("{DATA}{crl}")).expect("crl");
            let (list, _) = tlv(&der);
            let f = children(list.content);
            let sig_oid = oid_of(&children(f[1].content)[0]);
            let key = PublicKey::from_spki_der(&load(issuer).spki).expect("issuer key");
            assert_eq!(Variant::from_sig_oid(&sig_oid), Some(key.variant()));
            assert_eq!(f[2].tag, 0x03);
            assert_eq!(f[2].content[0], 0, "no unused bits");
            let sig = &f[2].content[1..];
            verify(&key, f[0].raw, sig).expect(crl);
            let mut tbs = f[0].raw.to_vec();
            tbs[10] ^= 0x01;
            assert_eq!(verify(&key, &tbs, sig), Err(GostError::BadSignature));
        }
    }

    /// Random signatures, digests and points: errors, never panics, never acceptance.
    #[test]
    fn random_inputs_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for c in cases() {
            let n = c.sig.len();
            for round in 0..40 {
                let mut sig: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                if round % 2 == 0 {
                    // Keep r and s below q most of the time.
                    sig[n / 2 - 1] &= 0x3f;
                    sig[n - 1] &= 0x3f;
                }
                assert!(verify_digest(&c.key, &c.digest, &sig).is_err());
                let xy: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                assert!(PublicKey::from_xy_le(c.key.variant(), &xy).is_err());
            }
        }
    }

    // ----- fast paths against the reference paths --------------------------------------------

    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// A random value below `m` (top limb masked, then reduced by subtraction).
    fn random_below<const N: usize>(next: &mut impl FnMut() -> u64, m: &[u64; N]) -> [u64; N] {
        let mut a = [0u64; N];
        for l in a.iter_mut() {
            *l = next();
        }
        while !lt(&a, m) {
            a = sub_borrow(&a, m).0;
        }
        a
    }

    type BinOp<'a, const N: usize> = dyn Fn(&[u64; N], &[u64; N]) -> [u64; N] + 'a;

    /// The special-form field arithmetic (plain residues, HAC 14.47 folding) against Montgomery
    /// form over the same prime and against OpenSSL's BN, on random and edge values.
    fn special_field_matches<const N: usize>(c: &Curve<N>) {
        let f = &c.fp;
        assert!(
            matches!(f.kind, FieldKind::Special(_)),
            "GOST primes are special"
        );
        let monty = Field::<N>::new_monty(&f.m);
        let mut ctx = openssl::bn::BigNumContext::new().expect("BN_CTX");
        let p_bn = bn_from_limbs(&f.m);
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let mut p_minus_1 = f.m;
        p_minus_1[0] -= 1;
        // 0, 1, p − 1, and 2^(64N−1) (products whose high half is near its maximum).
        let mut top = [0u64; N];
        top[N - 1] = 1 << 63;
        let mut values = vec![[0u64; N], f.one, p_minus_1, top];
        values.retain(|v| lt(v, &f.m));
        for _ in 0..200 {
            values.push(random_below(&mut next, &f.m));
        }
        for pair in values.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let via_monty =
                |op: &BinOp<'_, N>| monty.to_plain(&op(&monty.to_field(a), &monty.to_field(b)));
            assert_eq!(f.mul(a, b), via_monty(&|x, y| monty.mul(x, y)), "mul");
            assert_eq!(f.sqr(a), via_monty(&|x, _| monty.sqr(x)), "sqr");
            assert_eq!(f.add(a, b), via_monty(&|x, y| monty.add(x, y)), "add");
            assert_eq!(f.sub(a, b), via_monty(&|x, y| monty.sub(x, y)), "sub");
            assert_eq!(f.neg(a), via_monty(&|x, _| monty.neg(x)), "neg");
            assert_eq!(f.inv(a), via_monty(&|x, _| monty.inv(x)), "inv");
            let mut prod = openssl::bn::BigNum::new().expect("BN");
            prod.mod_mul(&bn_from_limbs(a), &bn_from_limbs(b), &p_bn, &mut ctx)
                .expect("BN_mod_mul");
            assert_eq!(bn_from_limbs(&f.mul(a, b)), prod, "mul vs OpenSSL");
        }
    }

    /// The special-prime folding on double-width inputs that products of reduced values rarely or
    /// never give (every carry branch: `top·c` carrying out, a result in `[m, 2^(64N))`), and
    /// addition and subtraction at the wrap-arounds, against OpenSSL's BN.
    fn special_edges_match<const N: usize>(c: &Curve<N>) {
        let FieldKind::Special(small) = c.fp.kind else {
            panic!("GOST primes are special");
        };
        let m = c.fp.m;
        let p_bn = bn_from_limbs(&m);
        let mut ctx = openssl::bn::BigNumContext::new().expect("BN_CTX");
        let max = [u64::MAX; N];
        let mut one = [0u64; N];
        one[0] = 1;
        let m_minus_1 = sub_borrow(&m, &one).0;
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut pairs = vec![
            (max, max),
            (m, [0; N]),
            (max, [0; N]),
            (m_minus_1, [0; N]),
            ([0; N], max),
            (max, one),
            (m, one),
        ];
        for _ in 0..50 {
            let mut lo = [0u64; N];
            lo.iter_mut().for_each(|l| *l = next());
            let mut hi = max;
            hi[0] = next();
            pairs.push((lo, hi));
        }
        for (lo, hi) in pairs {
            let mut wide = bn_from_limbs(&hi);
            wide.lshift(&bn_from_limbs(&hi), (64 * N) as i32)
                .expect("shift");
            let mut sum = openssl::bn::BigNum::new().expect("BN");
            sum.checked_add(&wide, &bn_from_limbs(&lo)).expect("add");
            let mut expect = openssl::bn::BigNum::new().expect("BN");
            expect.nnmod(&sum, &p_bn, &mut ctx).expect("mod");
            let got = special::reduce(&lo, &hi, small.0);
            assert!(lt(&got, &m), "fully reduced");
            assert_eq!(bn_from_limbs(&got), expect, "reduce");
        }
        let reduced = [[0; N], one, m_minus_1, sub_borrow(&m_minus_1, &one).0];
        for a in &reduced {
            for b in &reduced {
                let (a_bn, b_bn) = (bn_from_limbs(a), bn_from_limbs(b));
                let mut expect = openssl::bn::BigNum::new().expect("BN");
                expect.mod_add(&a_bn, &b_bn, &p_bn, &mut ctx).expect("add");
                assert_eq!(bn_from_limbs(&c.fp.add(a, b)), expect, "add");
                expect.mod_sub(&a_bn, &b_bn, &p_bn, &mut ctx).expect("sub");
                assert_eq!(bn_from_limbs(&c.fp.sub(a, b)), expect, "sub");
                expect.mod_mul(&a_bn, &b_bn, &p_bn, &mut ctx).expect("mul");
                assert_eq!(bn_from_limbs(&c.fp.mul(a, b)), expect, "mul");
                assert_eq!(c.fp.sqr(a), c.fp.mul(a, a), "sqr");
            }
            assert_eq!(c.fp.add(a, &c.fp.neg(a)), [0; N], "neg");
        }
    }

    /// The schoolbook products against crypto-bigint's `widening_mul` / `widening_square`, and
    /// `k·a` against repeated addition, on random and all-ones limbs.
    fn special_products_match<const N: usize>(c: &Curve<N>) {
        let FieldKind::Special(small) = c.fp.kind else {
            panic!("GOST primes are special");
        };
        let mut next = xorshift(0x5851_f42d_4c95_7f2d);
        let mut values = vec![[u64::MAX; N], [0; N], c.fp.m];
        for _ in 0..100 {
            let mut a = [0u64; N];
            a.iter_mut().for_each(|l| *l = next());
            values.push(a);
        }
        for pair in values.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            let (lo, hi) = Uint::from_words(*a).widening_mul(&Uint::from_words(*b));
            let w = special::mul_wide(a, b);
            assert_eq!(w[..N], lo.to_words(), "mul low");
            assert_eq!(w[N..2 * N], hi.to_words(), "mul high");
            let (lo, hi) = Uint::from_words(*a).widening_square();
            let w = special::sqr_wide(a);
            assert_eq!(w[..N], lo.to_words(), "square low");
            assert_eq!(w[N..2 * N], hi.to_words(), "square high");
            if lt(a, &c.fp.m) {
                for k in [1, 2, 3, 4, 8, u32::MAX] {
                    let mut k_limbs = [0u64; N];
                    k_limbs[0] = u64::from(k);
                    let expect = c.fp.mul(a, &k_limbs);
                    assert_eq!(special::mul_small(a, k, small.0), expect, "k·a");
                }
            }
        }
    }

    #[test]
    fn special_products() {
        special_products_match(cryptopro_a());
        special_products_match(tc26_512_a());
    }

    #[test]
    fn special_field_edges() {
        special_edges_match(cryptopro_a());
        special_edges_match(tc26_512_a());
    }

    #[test]
    fn special_field_matches_reference() {
        special_field_matches(cryptopro_a());
        special_field_matches(tc26_512_a());
    }

    /// Random scalars through the G table (7-bit), a per-key table (4-bit) and the affine wNAF,
    /// against plain double-and-add; and whole verifications with and without a key table.
    fn fast_paths_match<const N: usize>(c: &Curve<N>, seed: u64) {
        let mut next = xorshift(seed);
        let key = to_affine(c, &mul_simple(c, &c.g, &random_below(&mut next, &c.q))).expect("key");
        let table = c.fixed_table(&key, KEY_WINDOW);
        for _ in 0..8 {
            let k = random_below(&mut next, &c.q);
            let expect_g = to_affine(c, &mul_simple(c, &c.g, &k));
            assert_eq!(to_affine(c, &c.mul_g(&k)), expect_g, "G table");
            let expect_q = to_affine(c, &mul_simple(c, &key, &k));
            assert_eq!(
                to_affine(c, &c.add_mul_fixed(Jacobian::infinity(), &table, &k)),
                expect_q,
                "key table"
            );
            assert_eq!(to_affine(c, &c.mul_var(&key, &k)), expect_q, "wNAF");
            // acc + k·Q from the table = the sum of the two.
            let j = random_below(&mut next, &c.q);
            let both = c.add_mul_fixed(c.mul_g(&j), &table, &k);
            let sum = c.add(&mul_simple(c, &c.g, &j), &mul_simple(c, &key, &k));
            assert_eq!(
                to_affine(c, &both),
                to_affine(c, &sum),
                "G table + key table"
            );
        }
        // Edge scalars: 0, 1, q − 1, and q itself (∞) through the key table.
        let mut one = [0u64; N];
        one[0] = 1;
        let q_minus_1 = sub_borrow(&c.q, &one).0;
        assert!(c
            .add_mul_fixed(Jacobian::infinity(), &table, &[0; N])
            .is_infinity());
        assert_eq!(
            to_affine(c, &c.add_mul_fixed(Jacobian::infinity(), &table, &one)),
            Some(key)
        );
        assert_eq!(
            to_affine(
                c,
                &c.add_mul_fixed(Jacobian::infinity(), &table, &q_minus_1)
            ),
            Some(c.neg_affine(&key))
        );
        assert!(c
            .add_mul_fixed(Jacobian::infinity(), &table, &c.q)
            .is_infinity());
    }

    /// The point formulas at their special cases: equal points, opposite points, infinity, and
    /// a Jacobian input with `Z ≠ 1` (a doubled point) against its affine form.
    fn point_edges<const N: usize>(c: &Curve<N>, seed: u64) {
        let mut next = xorshift(seed);
        for _ in 0..4 {
            let p = to_affine(c, &mul_simple(c, &c.g, &random_below(&mut next, &c.q))).expect("P");
            let pj = c.to_jacobian(&p);
            let twice = to_affine(c, &c.double(&pj));
            // A Jacobian form of P with Z ≠ 1: 2P − P.
            let p_z = c.sub_affine(&c.double(&pj), &p);
            assert_ne!(p_z.z, c.fp.one, "Z ≠ 1");
            assert_eq!(to_affine(c, &p_z), Some(p), "2P − P = P");
            assert_eq!(to_affine(c, &c.add(&pj, &pj)), twice, "P + P");
            assert_eq!(to_affine(c, &c.add(&p_z, &p_z)), twice, "P + P, Z ≠ 1");
            assert_eq!(to_affine(c, &c.add_affine(&p_z, &p)), twice, "P + P mixed");
            assert!(c.sub_affine(&p_z, &p).is_infinity(), "P − P mixed");
            assert!(
                c.add(&p_z, &c.to_jacobian(&c.neg_affine(&p))).is_infinity(),
                "P − P"
            );
            assert!(c.double(&Jacobian::infinity()).is_infinity(), "2·∞");
            assert_eq!(
                to_affine(c, &c.add(&Jacobian::infinity(), &p_z)),
                Some(p),
                "∞ + P"
            );
            assert_eq!(
                to_affine(c, &c.add(&p_z, &Jacobian::infinity())),
                Some(p),
                "P + ∞"
            );
            assert_eq!(
                to_affine(c, &c.add_affine(&Jacobian::infinity(), &p)),
                Some(p),
                "∞ + P"
            );
            // 3P three ways.
            let thrice = to_affine(c, &mul_simple(c, &p, &limbs_from_le(&[3])));
            assert_eq!(
                to_affine(c, &c.add_affine(&c.double(&pj), &p)),
                thrice,
                "2P + P"
            );
            assert_eq!(
                to_affine(c, &c.add(&p_z, &c.double(&p_z))),
                thrice,
                "P + 2P"
            );
        }
    }

    #[test]
    fn point_formulas_at_special_cases() {
        point_edges(cryptopro_a(), 0x51af_d7ed_558c_cd1f);
        point_edges(tc26_512_a(), 0xc4ce_b9fe_1a85_ec53);
    }

    #[test]
    fn fast_paths_match_double_and_add() {
        fast_paths_match(cryptopro_a(), 0x1234_5678_9abc_def1);
        fast_paths_match(tc26_512_a(), 0x0fed_cba9_8765_4321);
    }

    /// Verifies with a private cache through the curve of the key.
    fn verify_cached(
        caches: &(KeyCache<4>, KeyCache<8>),
        key: &PublicKey,
        digest: &[u8],
        sig: &[u8],
    ) -> Result<(), GostError> {
        match &key.point {
            KeyPoint::P256(q) => {
                cryptopro_a().verify_with(&caches.0, KeyTables::Use, q, digest, sig)
            }
            KeyPoint::P512(q) => {
                tc26_512_a().verify_with(&caches.1, KeyTables::Use, q, digest, sig)
            }
        }
    }

    fn cache_state(caches: &(KeyCache<4>, KeyCache<8>), key: &PublicKey) -> Option<bool> {
        match &key.point {
            KeyPoint::P256(q) => caches.0.has_table(q),
            KeyPoint::P512(q) => caches.1.has_table(q),
        }
    }

    /// A key's first good signature records it, the second builds its table; from then on the
    /// table serves: good signatures verify, wrong ones (other s, other r, other digest, r + q)
    /// fail exactly as without the table.
    #[test]
    fn cached_key_tables_give_the_same_verdicts() {
        let caches = (KeyCache::<4>::new(8), KeyCache::<8>::new(8));
        for c in cases() {
            let n = c.sig.len() / 2;
            // A bad signature before any good one records nothing.
            let mut bad_s = c.sig.clone();
            bad_s[n] ^= 0x01;
            assert_eq!(
                verify_cached(&caches, &c.key, &c.digest, &bad_s),
                Err(GostError::BadSignature)
            );
            assert_eq!(cache_state(&caches, &c.key), None);
            verify_cached(&caches, &c.key, &c.digest, &c.sig).expect("first");
            assert_eq!(
                cache_state(&caches, &c.key),
                Some(false),
                "recorded, no table"
            );
            verify_cached(&caches, &c.key, &c.digest, &c.sig).expect("second builds");
            assert_eq!(cache_state(&caches, &c.key), Some(true), "table built");

            let mut bad_r = c.sig.clone();
            bad_r[0] ^= 0x01;
            let mut bad_digest = c.digest.clone();
            bad_digest[0] ^= 0x01;
            let mut next = xorshift(0x5555_aaaa_1234_4321);
            let mut random_sig: Vec<u8> = (0..2 * n).map(|_| next() as u8).collect();
            random_sig[n - 1] &= 0x3f;
            random_sig[2 * n - 1] &= 0x3f;
            for round in 0..3 {
                assert_eq!(verify_cached(&caches, &c.key, &c.digest, &c.sig), Ok(()));
                for (digest, sig) in [
                    (&c.digest, &bad_s),
                    (&c.digest, &bad_r),
                    (&bad_digest, &c.sig),
                    (&c.digest, &random_sig),
                ] {
                    let cached = verify_cached(&caches, &c.key, digest, sig);
                    assert_eq!(cached, Err(GostError::BadSignature), "round {round}");
                    assert_eq!(cached, verify_digest_uncached(&c.key, digest, sig));
                }
                assert_eq!(cache_state(&caches, &c.key), Some(true), "still cached");
            }
        }
        assert_eq!(caches.0.len() + caches.1.len(), 2);
    }

    /// The other real signatures (end-entity and TSA certificates by the intermediates, CRLs,
    /// self-signed roots) through a warm per-key cache.
    #[test]
    fn real_signatures_verify_with_cached_keys() {
        let caches = (KeyCache::<4>::new(8), KeyCache::<8>::new(8));
        for _ in 0..3 {
            for (subject, issuer) in [
                (NCA_2004, ROOT_2004),
                (ROOT_2004, ROOT_2004),
                (EE_2004, NCA_2004),
                (NCA_2022, ROOT_2022),
                (ROOT_2022, ROOT_2022),
                (EE_2015, NCA_2022),
            ] {
                let c = case(subject, issuer);
                verify_cached(&caches, &c.key, &c.digest, &c.sig).expect(subject);
                // Another key of the same curve never verifies it, cached or not.
                let other = if issuer == ROOT_2004 {
                    NCA_2004
                } else if issuer == NCA_2004 {
                    ROOT_2004
                } else if issuer == ROOT_2022 {
                    NCA_2022
                } else {
                    ROOT_2022
                };
                let other = PublicKey::from_spki_der(&load(other).spki).expect("key");
                assert_eq!(
                    verify_cached(&caches, &other, &c.digest, &c.sig),
                    Err(GostError::BadSignature),
                    "{subject} by the wrong key"
                );
            }
        }
        for name in [ROOT_2004, NCA_2004, ROOT_2022, NCA_2022] {
            let key = PublicKey::from_spki_der(&load(name).spki).expect("key");
            assert_eq!(cache_state(&caches, &key), Some(true), "{name}");
        }
    }

    /// At most `capacity` keys; the least recently used one goes; an evicted key verifies as
    /// before (without its table) and comes back.
    #[test]
    fn key_cache_is_bounded_lru() {
        let c = cryptopro_a();
        let cache = KeyCache::<4>::new(2);
        let point = |k: u8| to_affine(c, &c.mul_g(&limbs_from_le(&[k]))).expect("k·G");
        let (p1, p2, p3) = (point(1), point(2), point(3));
        cache.note(&p1, None);
        cache.note(
            &p2,
            Some(std::sync::Arc::new(c.fixed_table(&p2, KEY_WINDOW))),
        );
        assert_eq!(cache.len(), 2);
        // Touch p1: p2 is now the least recently used, and goes for p3.
        assert!(cache.lookup(&p1).1, "p1 due for a table");
        cache.note(&p3, None);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.has_table(&p1), Some(false));
        assert_eq!(cache.has_table(&p2), None, "p2 evicted with its table");
        assert_eq!(cache.has_table(&p3), Some(false));
        for k in 4..40u8 {
            cache.note(&point(k), None);
            assert!(cache.len() <= 2);
        }
        let none = KeyCache::<4>::new(0);
        none.note(&p1, None);
        assert_eq!(none.len(), 0);

        // Through verification: three real keys through a cache of one.
        let caches = (KeyCache::<4>::new(1), KeyCache::<8>::new(1));
        let a = case(NCA_2004, ROOT_2004);
        let b = case(EE_2004, NCA_2004);
        for _ in 0..3 {
            verify_cached(&caches, &a.key, &a.digest, &a.sig).expect("a");
            verify_cached(&caches, &a.key, &a.digest, &a.sig).expect("a again");
            assert_eq!(cache_state(&caches, &a.key), Some(true));
            verify_cached(&caches, &b.key, &b.digest, &b.sig).expect("b");
            assert_eq!(cache_state(&caches, &a.key), None, "a evicted");
            assert_eq!(cache_state(&caches, &b.key), Some(false));
            assert_eq!(caches.0.len(), 1);
        }
    }

    /// The uncached entry point neither reads nor fills the global cache's verdicts.
    #[test]
    fn uncached_and_cached_entry_points_agree() {
        for c in cases() {
            for _ in 0..3 {
                assert_eq!(verify_digest(&c.key, &c.digest, &c.sig), Ok(()));
                assert_eq!(verify_digest_uncached(&c.key, &c.digest, &c.sig), Ok(()));
            }
            let mut bad = c.sig.clone();
            bad[1] ^= 0x40;
            assert_eq!(
                verify_digest(&c.key, &c.digest, &bad),
                verify_digest_uncached(&c.key, &c.digest, &bad)
            );
        }
    }

    #[test]
    fn public_key_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<PublicKey>();
        assert_send_sync::<GostError>();
    }
}
