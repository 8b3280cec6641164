//! OCSP (RFC 6960): requests to build, responses to parse and verify. Pure: the HTTP exchange
//! belongs to [`crate::revocation`].
//!
//! A response is trusted for a certificate only when
//! * its signature verifies with the key of the certificate's issuer, or with the key of a
//!   delegated responder certificate carried in the response that the same issuer signed, that
//!   has the `id-kp-OCSPSigning` extended key usage and that was valid when the response was
//!   produced (RFC 6960 §4.2.2.2). The responder certificate's own revocation is not checked
//!   (NCA RK's responders carry `id-pkix-ocsp-nocheck`);
//! * one of its SingleResponses names the certificate: issuer name hash, issuer key hash and
//!   serial number all match, under whichever hash algorithm the responder used (SHA-1, SHA-2,
//!   GOST).
//!
//! When a response speaks for which instant is decided by the caller from `thisUpdate` /
//! `nextUpdate` ([`super::revocation`]).

use super::algo::{self, AlgId, Digest};
use super::asn1::{self, Tlv};
use super::cert::{self, Cert};
use super::crl::Checked;

pub const OID_OCSP_BASIC: &str = "1.3.6.1.5.5.7.48.1.1";
pub const OID_OCSP_NONCE: &str = "1.3.6.1.5.5.7.48.1.2";
pub const EKU_OCSP_SIGNING: &str = "1.3.6.1.5.5.7.3.9";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";

/// Largest OCSP response we read.
pub const MAX_RESPONSE_SIZE: usize = 1 << 20;
/// Most SingleResponses / certificates examined in one response.
const MAX_ITEMS: usize = 64;

asn1::message_error!(
    /// Why a response cannot be used.
    OcspError
);

impl From<asn1::Asn1Error> for OcspError {
    fn from(e: asn1::Asn1Error) -> Self {
        OcspError(format!("OCSP response: {e}"))
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, OcspError> {
    Err(OcspError(msg.into()))
}

/// The status the responder gives a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked {
        /// revocationTime, seconds since the epoch.
        time: i64,
        reason: Option<u8>,
    },
    Unknown,
}

/// A CertID (RFC 6960 §4.1.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertId {
    /// The hash algorithm, or None when we do not know it (the entry can then match nothing).
    pub hash: Option<Digest>,
    pub name_hash: Vec<u8>,
    pub key_hash: Vec<u8>,
    /// Serial number magnitude.
    pub serial: Vec<u8>,
}

impl CertId {
    /// The CertID of `cert` issued by `issuer` under `hash`.
    pub fn of(cert: &Cert, issuer: &Cert, hash: Digest) -> CertId {
        CertId {
            hash: Some(hash),
            name_hash: hash.compute(&cert.issuer),
            key_hash: hash.compute(&public_key_bits(issuer).unwrap_or_default()),
            serial: cert.serial.clone(),
        }
    }

    /// Whether this CertID names `cert`, issued by `issuer`.
    pub fn matches(&self, cert: &Cert, issuer: &Cert) -> bool {
        let Some(hash) = self.hash else {
            return false;
        };
        self.serial == cert.serial
            && cert.issuer == issuer.subject
            && self.name_hash == hash.compute(&issuer.subject)
            && public_key_bits(issuer).is_some_and(|k| self.key_hash == hash.compute(&k))
    }
}

/// One SingleResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleResponse {
    pub id: CertId,
    pub status: CertStatus,
    pub this_update: i64,
    pub next_update: Option<i64>,
}

/// How the response names its signer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponderId {
    /// DER Name.
    ByName(Vec<u8>),
    /// SHA-1 of the responder's public key bits.
    ByKey(Vec<u8>),
}

/// A BasicOCSPResponse.
pub struct BasicResponse {
    /// The whole DER BasicOCSPResponse.
    raw: Vec<u8>,
    /// Byte range of the DER ResponseData (what the responder signed).
    tbs: (usize, usize),
    pub sig_alg: AlgId,
    pub signature: Vec<u8>,
    /// Certificates carried in the response (delegated responder, its chain).
    pub certs: Vec<Cert>,
    pub responder: ResponderId,
    pub produced_at: i64,
    pub responses: Vec<SingleResponse>,
    /// The nonce extension's value (the contents of extnValue), if any.
    pub nonce: Option<Vec<u8>>,
    /// Issuer keys the signature was checked against, with the outcome.
    checked: Checked,
}

impl std::fmt::Debug for BasicResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicResponse")
            .field("produced_at", &self.produced_at)
            .field("responses", &self.responses)
            .finish()
    }
}

/// The responseStatus of an OCSPResponse, as words.
fn status_name(code: u8) -> &'static str {
    match code {
        0 => "successful",
        1 => "malformedRequest",
        2 => "internalError",
        3 => "tryLater",
        5 => "sigRequired",
        6 => "unauthorized",
        _ => "an unknown status",
    }
}

/// The subjectPublicKey bits of a certificate (the BIT STRING contents after the unused-bits
/// octet): what CertID's issuerKeyHash covers.
pub fn public_key_bits(cert: &Cert) -> Option<Vec<u8>> {
    let spki = asn1::parse_one(&cert.spki).ok()?;
    let mut r = spki.reader();
    r.next_tlv().ok()?;
    let bits = r.expect(asn1::TAG_BIT_STRING, "subjectPublicKey").ok()?;
    bits.value.get(1..).map(<[u8]>::to_vec)
}

/// DER INTEGER of a serial magnitude.
fn integer(magnitude: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(magnitude.len() + 1);
    if magnitude.first().is_none_or(|&b| b & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(magnitude);
    asn1::encode(asn1::TAG_INTEGER, &v)
}

/// A DER OCSPRequest for one certificate with a nonce extension (RFC 6960 §4.1.1, RFC 8954:
/// the nonce is an OCTET STRING inside extnValue). The CertID uses SHA-256, as NCA RK's
/// responder answers in kind.
pub fn request(cert: &Cert, issuer: &Cert, nonce: &[u8]) -> Vec<u8> {
    let id = CertId::of(cert, issuer, Digest::Sha256);
    let mut alg = asn1::oid_der(OID_SHA256).unwrap_or_default();
    alg.extend_from_slice(&[asn1::TAG_NULL, 0]);
    let mut cert_id = asn1::encode(asn1::TAG_SEQUENCE, &alg);
    cert_id.extend(asn1::encode(asn1::TAG_OCTET_STRING, &id.name_hash));
    cert_id.extend(asn1::encode(asn1::TAG_OCTET_STRING, &id.key_hash));
    cert_id.extend(integer(&id.serial));
    let cert_id = asn1::encode(asn1::TAG_SEQUENCE, &cert_id);
    let req = asn1::encode(asn1::TAG_SEQUENCE, &cert_id);
    let request_list = asn1::encode(asn1::TAG_SEQUENCE, &req);

    let mut ext = asn1::oid_der(OID_OCSP_NONCE).unwrap_or_default();
    ext.extend(asn1::encode(
        asn1::TAG_OCTET_STRING,
        &asn1::encode(asn1::TAG_OCTET_STRING, nonce),
    ));
    let exts = asn1::encode(asn1::TAG_SEQUENCE, &asn1::encode(asn1::TAG_SEQUENCE, &ext));
    let mut tbs = request_list;
    tbs.extend(asn1::encode(0xA2, &exts));
    let tbs = asn1::encode(asn1::TAG_SEQUENCE, &tbs);
    asn1::encode(asn1::TAG_SEQUENCE, &tbs)
}

/// Parses an OCSPResponse. Anything but `successful` with a basic response is an error naming
/// what the responder said.
pub fn parse_response(der: &[u8]) -> Result<BasicResponse, OcspError> {
    if der.len() > MAX_RESPONSE_SIZE {
        return bad("OCSP response too large");
    }
    let outer = asn1::parse_one(der)?;
    if outer.tag != asn1::TAG_SEQUENCE {
        return bad("OCSP response is not a SEQUENCE");
    }
    let mut r = outer.reader();
    let status = r.expect(0x0A, "responseStatus")?;
    let code = match status.value {
        [c] => *c,
        _ => return bad("bad OCSP responseStatus"),
    };
    if code != 0 {
        return bad(format!("the OCSP responder answered {}", status_name(code)));
    }
    let bytes = r.expect(0xA0, "responseBytes")?;
    let rb = asn1::parse_one(bytes.value)?;
    let mut rr = rb.reader();
    let ty = asn1::read_oid(&rr.next_tlv()?)?;
    if ty != OID_OCSP_BASIC {
        return bad(format!("unsupported OCSP response type {ty}"));
    }
    let basic = rr.expect(asn1::TAG_OCTET_STRING, "response")?;
    parse_basic(basic.value)
}

/// Parses an OCSPResponse or a bare BasicOCSPResponse (CAdES revocation values carry the
/// latter).
pub fn parse_any(der: &[u8]) -> Result<BasicResponse, OcspError> {
    let outer = asn1::parse_one(der)?;
    let first = outer.reader().peek().map(|t| t.tag);
    if first == Some(0x0A) {
        parse_response(der)
    } else {
        parse_basic(der)
    }
}

/// Parses a DER BasicOCSPResponse.
pub fn parse_basic(der: &[u8]) -> Result<BasicResponse, OcspError> {
    if der.len() > MAX_RESPONSE_SIZE {
        return bad("OCSP response too large");
    }
    let raw = der.to_vec();
    let outer = asn1::parse_one(&raw)?;
    if outer.tag != asn1::TAG_SEQUENCE {
        return bad("BasicOCSPResponse is not a SEQUENCE");
    }
    let mut r = outer.reader();
    let cert::Signed {
        tbs,
        sig_alg,
        signature,
    } = cert::read_signed(&mut r, "tbsResponseData", "signature")?;
    let Some(signature) = signature else {
        return bad("OCSP signature BIT STRING has unused bits");
    };
    let mut certs = Vec::new();
    if let Some(c) = r.optional(0xA0)? {
        let seq = asn1::parse_one(c.value)?;
        for c in seq.children()?.into_iter().take(MAX_ITEMS) {
            match Cert::from_der(c.raw) {
                Ok(cert) => certs.push(cert),
                Err(e) => tracing::debug!("skipping a certificate in an OCSP response: {e}"),
            }
        }
    }
    let tbs_range = asn1::range_in(&raw, tbs.raw);

    let mut t = tbs.reader();
    if let Some(v) = t.optional(0xA0)? {
        let v = asn1::small_uint(&asn1::parse_one(v.value)?)?;
        if v != 0 {
            return bad(format!("OCSP response version {} is not supported", v + 1));
        }
    }
    let rid = t.next_tlv()?;
    let responder = match rid.tag {
        0xA1 => ResponderId::ByName(asn1::parse_one(rid.value)?.raw.to_vec()),
        0xA2 => {
            let k = asn1::parse_one(rid.value)?;
            ResponderId::ByKey(k.value.to_vec())
        }
        _ => return bad("bad OCSP responderID"),
    };
    let produced_at = asn1::read_time(&t.expect(asn1::TAG_GENERALIZED_TIME, "producedAt")?)?;
    let list = t.expect(asn1::TAG_SEQUENCE, "responses")?;
    let mut responses = Vec::new();
    for s in list.children()?.into_iter().take(MAX_ITEMS) {
        responses.push(single_response(&s)?);
    }
    let mut nonce = None;
    if let Some(exts) = t.optional(0xA1)? {
        let seq = asn1::parse_one(exts.value)?;
        for ext in seq.children()? {
            let cert::Extension {
                oid,
                critical,
                value,
            } = cert::read_extension(&ext)?;
            if oid == OID_OCSP_NONCE {
                nonce = Some(value.to_vec());
            } else if critical {
                return bad(format!("unsupported critical OCSP extension {oid}"));
            }
        }
    }
    Ok(BasicResponse {
        tbs: tbs_range,
        sig_alg,
        signature,
        certs,
        responder,
        produced_at,
        responses,
        nonce,
        checked: Checked::default(),
        raw,
    })
}

fn single_response(s: &Tlv<'_>) -> Result<SingleResponse, OcspError> {
    let mut r = s.reader();
    let id_t = r.expect(asn1::TAG_SEQUENCE, "certID")?;
    let mut ir = id_t.reader();
    let alg = AlgId::from_tlv(&ir.expect(asn1::TAG_SEQUENCE, "hashAlgorithm")?)?;
    let name_hash = ir.expect(asn1::TAG_OCTET_STRING, "issuerNameHash")?;
    let key_hash = ir.expect(asn1::TAG_OCTET_STRING, "issuerKeyHash")?;
    let serial = ir.expect(asn1::TAG_INTEGER, "serialNumber")?;
    let id = CertId {
        hash: Digest::from_oid(&alg.oid),
        name_hash: name_hash.value.to_vec(),
        key_hash: key_hash.value.to_vec(),
        serial: asn1::integer_bytes(serial.value).to_vec(),
    };
    let st = r.next_tlv()?;
    let status = match st.tag {
        0x80 => CertStatus::Good,
        0xA1 => {
            let mut sr = st.reader();
            let time = asn1::read_time(&sr.expect(asn1::TAG_GENERALIZED_TIME, "revocationTime")?)?;
            let reason = match sr.optional(0xA0)? {
                Some(x) => {
                    let e = asn1::parse_one(x.value)?;
                    match (e.tag, e.value) {
                        (0x0A, [c]) => Some(*c),
                        _ => None,
                    }
                }
                None => None,
            };
            CertStatus::Revoked { time, reason }
        }
        0x82 => CertStatus::Unknown,
        _ => return bad("bad OCSP certStatus"),
    };
    let this_update = asn1::read_time(&r.expect(asn1::TAG_GENERALIZED_TIME, "thisUpdate")?)?;
    let next_update = match r.optional(0xA0)? {
        Some(n) => Some(asn1::read_time(&asn1::parse_one(n.value)?)?),
        None => None,
    };
    Ok(SingleResponse {
        id,
        status,
        this_update,
        next_update,
    })
}

impl BasicResponse {
    /// The DER ResponseData (what the responder signed).
    pub fn tbs(&self) -> &[u8] {
        &self.raw[self.tbs.0..self.tbs.1]
    }

    /// The whole DER BasicOCSPResponse.
    pub fn der(&self) -> &[u8] {
        &self.raw
    }

    /// The SingleResponse for `cert` issued by `issuer`, if the response has one.
    pub fn find(&self, cert: &Cert, issuer: &Cert) -> Option<&SingleResponse> {
        self.responses.iter().find(|s| s.id.matches(cert, issuer))
    }

    /// Whether the response echoes `nonce` (RFC 8954 form, or the bare bytes some responders
    /// send).
    pub fn nonce_matches(&self, nonce: &[u8]) -> bool {
        match &self.nonce {
            Some(v) => *v == asn1::encode(asn1::TAG_OCTET_STRING, nonce) || v == nonce,
            None => false,
        }
    }

    /// Checks that the response was signed for `issuer`'s certificates: by the issuer itself,
    /// or by a delegated responder the issuer certified (see the module comment). Remembered per
    /// issuer key.
    pub fn verify(&self, issuer: &Cert) -> Result<(), String> {
        self.checked
            .outcome(issuer, || self.verify_uncached(issuer))
    }

    fn verify_uncached(&self, issuer: &Cert) -> Result<(), String> {
        let scheme = algo::scheme_for_cert(&self.sig_alg).map_err(|e| e.to_string())?;
        if algo::verify(&scheme, &issuer.spki, self.tbs(), &self.signature).is_ok() {
            return Ok(());
        }
        let mut why = format!(
            "the OCSP response is signed neither by {} nor by a responder it certified",
            issuer.display_name()
        );
        for c in &self.certs {
            if c.issuer != issuer.subject {
                continue;
            }
            if !c
                .eku
                .as_ref()
                .is_some_and(|e| e.iter().any(|o| o == EKU_OCSP_SIGNING))
            {
                continue;
            }
            if c.signed_with(&issuer.spki).is_err() {
                continue;
            }
            if self.produced_at < c.not_before || self.produced_at > c.not_after {
                why = format!(
                    "the OCSP responder certificate {} was not valid when the response was \
                     produced ({})",
                    c.display_name(),
                    super::report::rfc3339(self.produced_at)
                );
                continue;
            }
            if algo::verify(&scheme, &c.spki, self.tbs(), &self.signature).is_ok() {
                return Ok(());
            }
        }
        Err(why)
    }

    /// The responder's name, for messages.
    pub fn responder_name(&self) -> String {
        match &self.responder {
            ResponderId::ByName(der) => asn1::parse_one(der)
                .ok()
                .and_then(|t| cert::parse_name(&t).ok())
                .map(|rdns| cert::rfc4514(&rdns, false))
                .unwrap_or_else(|| "?".into()),
            ResponderId::ByKey(k) => format!("key {}", asn1::hex(k)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::cert::fixtures::{cert, hex, nca};

    #[test]
    fn real_nca_responses_parse_and_verify() {
        for (file, issuer, serial, revoked) in [
            (
                "ocsp/ncanode_ocsp_response_individual_sign_2004.bin",
                "ca/nca_rsa_test.pem",
                "4279390A141F5353A62947B61ED65E81741467D1",
                false,
            ),
            (
                "ocsp/ncanode_ocsp_response_ceo_sign_2004_revoked.bin",
                "ca/nca_gost_test.pem",
                "12E3E7B9966D09EB9CDA64251457E815C2A8DDED",
                true,
            ),
            (
                "ocsp/ncanode_ocsp_response_ceo_2015_revoked.bin",
                "ca/nca_gost2022_test.cer",
                "3A90343E720594C55204B19CB9A402422EF0E622",
                true,
            ),
            (
                "ocsp/ncanode_ocsp_response_individual_2015.bin",
                "ca/nca_gost2022_test.cer",
                "0FF06211DC82BEB00253FFA000F1DE84ABEF454F",
                true,
            ),
        ] {
            let r = parse_response(&nca(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            let issuer = cert(issuer);
            r.verify(&issuer).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(r.responses.len(), 1, "{file}");
            let s = &r.responses[0];
            assert_eq!(s.id.serial, hex(serial), "{file}");
            assert_eq!(s.id.name_hash, Digest::Sha256.compute(&issuer.subject));
            assert_eq!(
                s.id.key_hash,
                Digest::Sha256.compute(&public_key_bits(&issuer).unwrap())
            );
            assert_eq!(matches!(s.status, CertStatus::Revoked { .. }), revoked);
            assert!(r.nonce.is_some());
            // Signed for another CA: refused.
            assert!(r.verify(&cert("ca/root_rsa_test.pem")).is_err(), "{file}");
        }
    }

    #[test]
    fn tampered_response_is_refused() {
        let mut der = nca("ocsp/ncanode_ocsp_response_individual_sign_2004.bin");
        // Flip a byte inside ResponseData (the producedAt digits).
        let pos = der.windows(4).position(|w| w == b"2022").unwrap();
        der[pos + 3] = b'3';
        let r = parse_response(&der).unwrap();
        assert!(r.verify(&cert("ca/nca_rsa_test.pem")).is_err());
    }

    #[test]
    fn request_round_trip() {
        let leaf = cert("certs/ncanode_individual_sign_rsa_2022.cer");
        let issuer = cert("ca/nca_rsa_test.pem");
        let req = request(&leaf, &issuer, &[7; 16]);
        let t = asn1::parse_one(&req).unwrap();
        assert_eq!(t.tag, asn1::TAG_SEQUENCE);
        // The CertID inside matches the certificate.
        let tbs = asn1::parse_one(t.value).unwrap();
        let list = tbs.children().unwrap()[0];
        let one = list.children().unwrap()[0];
        let id_t = one.children().unwrap()[0];
        let kids = id_t.children().unwrap();
        assert_eq!(kids[1].value, Digest::Sha256.compute(&leaf.issuer));
        assert_eq!(asn1::integer_bytes(kids[3].value), leaf.serial.as_slice());
        let id = CertId::of(&leaf, &issuer, Digest::Sha256);
        assert!(id.matches(&leaf, &issuer));
        assert!(!id.matches(&leaf, &cert("ca/nca_gost_test.pem")));
    }

    #[test]
    fn errors_and_garbage() {
        // tryLater
        let e = parse_response(&[0x30, 0x03, 0x0A, 0x01, 0x03]).unwrap_err();
        assert!(e.0.contains("tryLater"), "{e}");
        let der = nca("ocsp/ncanode_ocsp_response_ceo_2015_revoked.bin");
        for cut in (0..der.len()).step_by(13) {
            let _ = parse_response(&der[..cut]);
            let _ = parse_any(&der[..cut]);
        }
        assert!(parse_any(b"junk").is_err());
    }
}
