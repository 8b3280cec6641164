//! Signature and digest algorithms, dispatched by OID.
//!
//! One entry point verifies both CMS signer signatures and certificate signatures, so every
//! algorithm added here works for signers and for whole chains at once:
//!
//! * RSA PKCS#1 v1.5 with SHA-1/224/256/384/512, RSA-PSS and ECDSA on P-256/P-384/P-521 go through
//!   OpenSSL;
//! * the NCA RK GOST algorithms (34.310-2004 and 34.310-2015-512) go through [`super::gost`],
//!   our own code, because no library knows the Kazakh OIDs.
//!
//! Anything else is [`AlgError::Unsupported`], which the verdict reports as
//! `permerror` / `unsupported-algorithm`.

use openssl::hash::MessageDigest;
use openssl::rsa::Padding;
use openssl::sign::{RsaPssSaltlen, Verifier};

use super::asn1::{self, Tlv};
use super::gost;

pub const OID_RSA: &str = "1.2.840.113549.1.1.1";
pub const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
pub const OID_EC: &str = "1.2.840.10045.2.1";

/// An algorithm identifier: the OID and the raw DER of its parameters, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgId {
    pub oid: String,
    pub params: Option<Vec<u8>>,
}

impl AlgId {
    /// Reads an `AlgorithmIdentifier` element.
    pub fn from_tlv(t: &Tlv<'_>) -> Result<AlgId, asn1::Asn1Error> {
        let mut r = t.reader();
        let oid = asn1::read_oid(&r.next_tlv()?)?;
        let params = if r.is_empty() {
            None
        } else {
            Some(r.next_tlv()?.raw.to_vec())
        };
        Ok(AlgId { oid, params })
    }
}

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
    /// The digest of a GOST variant (GOST 34.311-95 or Streebog-512).
    Gost(gost::Variant),
}

impl Digest {
    /// The digest named by a digest algorithm OID.
    pub fn from_oid(oid: &str) -> Option<Digest> {
        Some(match oid {
            "1.3.14.3.2.26" => Digest::Sha1,
            "2.16.840.1.101.3.4.2.4" => Digest::Sha224,
            "2.16.840.1.101.3.4.2.1" => Digest::Sha256,
            "2.16.840.1.101.3.4.2.2" => Digest::Sha384,
            "2.16.840.1.101.3.4.2.3" => Digest::Sha512,
            _ => return gost::Variant::from_digest_oid(oid).map(Digest::Gost),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Digest::Sha1 => "sha1",
            Digest::Sha224 => "sha224",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
            Digest::Sha512 => "sha512",
            Digest::Gost(gost::Variant::Gost2004) => "gost34311",
            Digest::Gost(gost::Variant::Gost2015_512) => "streebog512",
        }
    }

    fn openssl(self) -> Option<MessageDigest> {
        Some(match self {
            Digest::Sha1 => MessageDigest::sha1(),
            Digest::Sha224 => MessageDigest::sha224(),
            Digest::Sha256 => MessageDigest::sha256(),
            Digest::Sha384 => MessageDigest::sha384(),
            Digest::Sha512 => MessageDigest::sha512(),
            Digest::Gost(_) => return None,
        })
    }

    /// The digest of `data`.
    pub fn compute(self, data: &[u8]) -> Vec<u8> {
        match self {
            Digest::Gost(v) => v.digest(data),
            other => match other.openssl() {
                Some(md) => openssl::hash::hash(md, data)
                    .map(|d| d.to_vec())
                    .unwrap_or_default(),
                None => Vec::new(),
            },
        }
    }
}

/// A signature scheme: how a signature value is checked against a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    RsaPkcs1(Digest),
    RsaPss {
        digest: Digest,
        mgf1: Digest,
        salt_len: u32,
    },
    Ecdsa(Digest),
    Gost(gost::Variant),
}

impl Scheme {
    /// The name used in reports (SPEC §6 `algorithm`): `rsa-sha256`, `rsa-pss-sha256`,
    /// `ecdsa-sha384`, `gost34310-2004`, `gost34310-2015-512`.
    pub fn name(&self) -> String {
        match self {
            Scheme::RsaPkcs1(d) => format!("rsa-{}", d.name()),
            Scheme::RsaPss { digest, .. } => format!("rsa-pss-{}", digest.name()),
            Scheme::Ecdsa(d) => format!("ecdsa-{}", d.name()),
            Scheme::Gost(v) => v.name().to_string(),
        }
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlgError {
    /// An algorithm (or key type, curve, parameter set) we do not implement.
    Unsupported(String),
    /// A key or parameters that cannot be decoded.
    Malformed(String),
    /// The signature does not verify.
    BadSignature,
}

impl std::fmt::Display for AlgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlgError::Unsupported(s) => write!(f, "unsupported algorithm: {s}"),
            AlgError::Malformed(s) => write!(f, "malformed: {s}"),
            AlgError::BadSignature => f.write_str("signature does not verify"),
        }
    }
}

fn unsupported<T>(what: impl Into<String>) -> Result<T, AlgError> {
    Err(AlgError::Unsupported(what.into()))
}

/// The scheme of a certificate's (or CRL's) `signatureAlgorithm`.
pub fn scheme_for_cert(sig_alg: &AlgId) -> Result<Scheme, AlgError> {
    let oid = sig_alg.oid.as_str();
    if let Some(d) = rsa_pkcs1_digest(oid) {
        return Ok(Scheme::RsaPkcs1(d));
    }
    if let Some(d) = ecdsa_digest(oid) {
        return Ok(Scheme::Ecdsa(d));
    }
    if oid == OID_RSA_PSS {
        return pss_params(sig_alg.params.as_deref());
    }
    if let Some(v) = gost::Variant::from_sig_oid(oid) {
        return Ok(Scheme::Gost(v));
    }
    unsupported(format!("signature algorithm {oid}"))
}

/// The scheme of a CMS SignerInfo: its `signatureAlgorithm`, completed by its `digestAlgorithm`
/// where the signature algorithm names only the key type (`rsaEncryption`, `id-ecPublicKey`).
pub fn scheme_for_signer(digest: Digest, sig_alg: &AlgId) -> Result<Scheme, AlgError> {
    match sig_alg.oid.as_str() {
        OID_RSA => match digest {
            Digest::Gost(_) => unsupported("RSA with a GOST digest"),
            d => Ok(Scheme::RsaPkcs1(d)),
        },
        OID_EC => match digest {
            Digest::Gost(_) => unsupported("ECDSA with a GOST digest"),
            d => Ok(Scheme::Ecdsa(d)),
        },
        oid => match gost::Variant::from_key_oid(oid) {
            // Some signers name the key algorithm instead of the signature algorithm.
            Some(v) => Ok(Scheme::Gost(v)),
            None => scheme_for_cert(sig_alg),
        },
    }
}

fn rsa_pkcs1_digest(oid: &str) -> Option<Digest> {
    Some(match oid {
        "1.2.840.113549.1.1.5" => Digest::Sha1,
        "1.2.840.113549.1.1.14" => Digest::Sha224,
        "1.2.840.113549.1.1.11" => Digest::Sha256,
        "1.2.840.113549.1.1.12" => Digest::Sha384,
        "1.2.840.113549.1.1.13" => Digest::Sha512,
        _ => return None,
    })
}

fn ecdsa_digest(oid: &str) -> Option<Digest> {
    Some(match oid {
        "1.2.840.10045.4.1" => Digest::Sha1,
        "1.2.840.10045.4.3.1" => Digest::Sha224,
        "1.2.840.10045.4.3.2" => Digest::Sha256,
        "1.2.840.10045.4.3.3" => Digest::Sha384,
        "1.2.840.10045.4.3.4" => Digest::Sha512,
        _ => return None,
    })
}

/// RSASSA-PSS-params (RFC 4055 §3.1), defaults SHA-1 / MGF1-SHA-1 / salt 20.
fn pss_params(params: Option<&[u8]>) -> Result<Scheme, AlgError> {
    let bad = |e: asn1::Asn1Error| AlgError::Malformed(format!("RSASSA-PSS parameters: {e}"));
    let mut digest = Digest::Sha1;
    let mut mgf1 = Digest::Sha1;
    let mut salt_len = 20u32;
    if let Some(p) = params {
        let seq = asn1::parse_one(p).map_err(bad)?;
        if seq.tag != asn1::TAG_SEQUENCE {
            return Err(AlgError::Malformed(
                "RSASSA-PSS parameters are not a SEQUENCE".into(),
            ));
        }
        for field in seq.children().map_err(bad)? {
            let inner = asn1::parse_one(field.value).map_err(bad)?;
            if field.is_context(0) {
                let alg = AlgId::from_tlv(&inner).map_err(bad)?;
                digest = Digest::from_oid(&alg.oid)
                    .ok_or_else(|| AlgError::Unsupported(format!("PSS digest {}", alg.oid)))?;
            } else if field.is_context(1) {
                let alg = AlgId::from_tlv(&inner).map_err(bad)?;
                if alg.oid != OID_MGF1 {
                    return unsupported(format!("PSS mask generation {}", alg.oid));
                }
                let h = alg
                    .params
                    .as_deref()
                    .ok_or_else(|| AlgError::Malformed("MGF1 without a digest".into()))?;
                let h = AlgId::from_tlv(&asn1::parse_one(h).map_err(bad)?).map_err(bad)?;
                mgf1 = Digest::from_oid(&h.oid)
                    .ok_or_else(|| AlgError::Unsupported(format!("MGF1 digest {}", h.oid)))?;
            } else if field.is_context(2) {
                salt_len = asn1::small_uint(&inner)
                    .map_err(bad)?
                    .try_into()
                    .map_err(|_| AlgError::Malformed("PSS salt length".into()))?;
            } else if field.is_context(3) && asn1::small_uint(&inner).map_err(bad)? != 1 {
                return unsupported("PSS trailer field other than 1");
            }
        }
    }
    if matches!(digest, Digest::Gost(_)) || matches!(mgf1, Digest::Gost(_)) {
        return unsupported("PSS with a GOST digest");
    }
    if salt_len > 1024 {
        return Err(AlgError::Malformed("PSS salt length".into()));
    }
    Ok(Scheme::RsaPss {
        digest,
        mgf1,
        salt_len,
    })
}

/// The algorithm OID of a SubjectPublicKeyInfo, and its parameters.
pub fn spki_algorithm(spki_der: &[u8]) -> Result<AlgId, AlgError> {
    let bad = |e: asn1::Asn1Error| AlgError::Malformed(format!("public key: {e}"));
    let spki = asn1::parse_one(spki_der).map_err(bad)?;
    let mut r = spki.reader();
    let alg = r.expect(asn1::TAG_SEQUENCE, "algorithm").map_err(bad)?;
    AlgId::from_tlv(&alg).map_err(bad)
}

/// Verifies `signature` over `message` with the public key `spki_der` (a DER
/// SubjectPublicKeyInfo) under `scheme`.
pub fn verify(
    scheme: &Scheme,
    spki_der: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), AlgError> {
    let key_alg = spki_algorithm(spki_der)?;
    match scheme {
        Scheme::Gost(v) => {
            let key = gost::PublicKey::from_spki_der(spki_der).map_err(|e| match e {
                gost::GostError::UnknownParams(s) => AlgError::Unsupported(s),
                gost::GostError::Malformed(s) => AlgError::Malformed(s),
                gost::GostError::BadSignature => AlgError::BadSignature,
            })?;
            if key.variant() != *v {
                return Err(AlgError::BadSignature);
            }
            gost::verify(&key, message, signature).map_err(|_| AlgError::BadSignature)
        }
        Scheme::RsaPkcs1(d) => {
            if key_alg.oid != OID_RSA {
                return key_mismatch(&key_alg.oid, scheme);
            }
            openssl_verify(spki_der, *d, None, message, signature)
        }
        Scheme::RsaPss {
            digest,
            mgf1,
            salt_len,
        } => {
            if key_alg.oid != OID_RSA && key_alg.oid != OID_RSA_PSS {
                return key_mismatch(&key_alg.oid, scheme);
            }
            openssl_verify(
                spki_der,
                *digest,
                Some((*mgf1, *salt_len)),
                message,
                signature,
            )
        }
        Scheme::Ecdsa(d) => {
            if key_alg.oid != OID_EC {
                return key_mismatch(&key_alg.oid, scheme);
            }
            let curve = key_alg
                .params
                .as_deref()
                .and_then(|p| asn1::parse_one(p).ok())
                .and_then(|t| asn1::read_oid(&t).ok())
                .unwrap_or_default();
            if !matches!(
                curve.as_str(),
                "1.2.840.10045.3.1.7" | "1.3.132.0.34" | "1.3.132.0.35"
            ) {
                return unsupported(format!("elliptic curve {curve:?}"));
            }
            openssl_verify(spki_der, *d, None, message, signature)
        }
    }
}

fn key_mismatch(key_oid: &str, scheme: &Scheme) -> Result<(), AlgError> {
    if gost::is_gost_oid(key_oid) || key_oid == OID_RSA || key_oid == OID_EC {
        // A known key that does not fit the signature algorithm: the signature cannot be right.
        Err(AlgError::BadSignature)
    } else {
        unsupported(format!("public key {key_oid} for {}", scheme.name()))
    }
}

fn openssl_verify(
    spki_der: &[u8],
    digest: Digest,
    pss: Option<(Digest, u32)>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), AlgError> {
    let md = digest
        .openssl()
        .ok_or_else(|| AlgError::Unsupported(format!("digest {}", digest.name())))?;
    // Parsed once per key and process: OpenSSL 3's decoder costs more than the verification.
    let key = super::cache::public_key(spki_der)?;
    let mut v =
        Verifier::new(md, &key).map_err(|e| AlgError::Unsupported(format!("OpenSSL: {e}")))?;
    if let Some((mgf1, salt)) = pss {
        let mgf1 = mgf1
            .openssl()
            .ok_or_else(|| AlgError::Unsupported("MGF1 digest".into()))?;
        let salt = i32::try_from(salt).map_err(|_| AlgError::Malformed("salt".into()))?;
        v.set_rsa_padding(Padding::PKCS1_PSS)
            .and_then(|_| v.set_rsa_mgf1_md(mgf1))
            .and_then(|_| v.set_rsa_pss_saltlen(RsaPssSaltlen::custom(salt)))
            .map_err(|e| AlgError::Unsupported(format!("RSA-PSS: {e}")))?;
    }
    match v.verify_oneshot(signature, message) {
        Ok(true) => Ok(()),
        _ => Err(AlgError::BadSignature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(Scheme::RsaPkcs1(Digest::Sha256).name(), "rsa-sha256");
        assert_eq!(
            Scheme::Gost(gost::Variant::Gost2015_512).name(),
            "gost34310-2015-512"
        );
        let alg = AlgId {
            oid: OID_RSA.into(),
            params: None,
        };
        assert_eq!(
            scheme_for_signer(Digest::Sha384, &alg).unwrap(),
            Scheme::RsaPkcs1(Digest::Sha384)
        );
        let unknown = AlgId {
            oid: "1.2.3.4".into(),
            params: None,
        };
        assert!(matches!(
            scheme_for_cert(&unknown),
            Err(AlgError::Unsupported(_))
        ));
    }

    #[test]
    fn pss_defaults() {
        assert_eq!(
            pss_params(None).unwrap(),
            Scheme::RsaPss {
                digest: Digest::Sha1,
                mgf1: Digest::Sha1,
                salt_len: 20
            }
        );
    }
}
