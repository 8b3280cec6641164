//! RFC 3161 timestamp tokens: the trusted signing time.
//!
//! A signer may carry a token in the unsigned attribute `id-aa-timeStampToken`
//! (1.2.840.113549.1.9.16.2.14). The token is itself a CMS SignedData whose content is a
//! `TSTInfo`. We accept its `genTime` as the validation time only when
//! * the `messageImprint` is the hash of the SignerInfo's signature value (RFC 3161 Appendix A),
//!   under the hash algorithm the token names;
//! * the token has exactly one SignerInfo, with signed attributes whose messageDigest is the
//!   hash of the TSTInfo and whose contentType is `id-ct-TSTInfo`, and its signature verifies
//!   with the TSA certificate through the same algorithm dispatch as every other signature
//!   ([`super::algo`]: RSA, ECDSA, GOST);
//! * the TSA certificate has the `id-kp-timeStamping` extended key usage (RFC 3161 §2.3), and
//!   chains to an anchor of `trust_dir` with every certificate valid at `genTime`;
//! * no certificate of that chain was revoked before `genTime` (when revocation checking is
//!   on; an unknown status is noted, not fatal: see docs/revocation.md);
//! * `genTime` is not later than the arrival time (plus [`CLOCK_SKEW`]).
//!
//! Pure: no I/O, no clock.

use super::algo::{self, AlgError, Digest};
use super::asn1;
use super::cert::{Cert, KU_DIGITAL_SIGNATURE, KU_NON_REPUDIATION};
use super::chain::{self, ChainError, RevocationSource, RevocationStatus, TrustStore};
use super::cms;
use super::report::rfc3339;

pub const OID_TIMESTAMP_TOKEN: &str = "1.2.840.113549.1.9.16.2.14";
pub const OID_TST_INFO: &str = "1.2.840.113549.1.9.16.1.4";
pub const EKU_TIME_STAMPING: &str = "1.3.6.1.5.5.7.3.8";

/// How far a token's genTime may lie after the arrival time (clocks differ).
pub const CLOCK_SKEW: i64 = 300;

asn1::message_error!(
    /// Why a token is not accepted.
    TspError
);

fn bad<T>(msg: impl Into<String>) -> Result<T, TspError> {
    Err(TspError(msg.into()))
}

/// The parts of a TSTInfo (RFC 3161 §2.4.2) we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TstInfo {
    pub policy: String,
    /// messageImprint hashAlgorithm (dotted OID).
    pub imprint_alg: String,
    pub imprint: Vec<u8>,
    /// Serial number magnitude.
    pub serial: Vec<u8>,
    /// genTime, seconds since the epoch (fractions dropped).
    pub gen_time: i64,
    pub nonce: Option<Vec<u8>>,
}

/// A parsed timestamp token.
#[derive(Debug, Clone)]
pub struct Token {
    pub signed: cms::SignedData,
    pub info: TstInfo,
}

/// A token that verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub gen_time: i64,
    /// The TSA's certificate.
    pub tsa: Cert,
    /// Things worth telling people that did not make the token fail.
    pub notes: Vec<String>,
}

/// Parses a TimeStampToken (a ContentInfo with SignedData of a TSTInfo).
pub fn parse_token(data: &[u8]) -> Result<Token, TspError> {
    let signed = cms::parse(data).map_err(|e| TspError(format!("timestamp token: {e}")))?;
    if signed.econtent_type != OID_TST_INFO {
        return bad(format!(
            "timestamp token: content type {} is not TSTInfo",
            signed.econtent_type
        ));
    }
    let Some(content) = &signed.content else {
        return bad("timestamp token without its TSTInfo");
    };
    let info = parse_tst_info(content)?;
    Ok(Token { signed, info })
}

/// Parses a TimeStampResp (RFC 3161 §2.4.2) and returns its token; a status other than
/// granted (0) or grantedWithMods (1) is an error.
pub fn parse_response(der: &[u8]) -> Result<Token, TspError> {
    let e = |e: asn1::Asn1Error| TspError(format!("TimeStampResp: {e}"));
    let outer = asn1::parse_one(der).map_err(e)?;
    let mut r = outer.reader();
    let status = r.expect(asn1::TAG_SEQUENCE, "status").map_err(e)?;
    let code = asn1::small_uint(&status.reader().next_tlv().map_err(e)?).map_err(e)?;
    if code > 1 {
        return bad(format!("the TSA refused the request (status {code})"));
    }
    let token = r.expect(asn1::TAG_SEQUENCE, "timeStampToken").map_err(e)?;
    parse_token(token.raw)
}

fn parse_tst_info(der: &[u8]) -> Result<TstInfo, TspError> {
    let e = |e: asn1::Asn1Error| TspError(format!("TSTInfo: {e}"));
    let t = asn1::parse_one(der).map_err(e)?;
    if t.tag != asn1::TAG_SEQUENCE {
        return bad("TSTInfo is not a SEQUENCE");
    }
    let mut r = t.reader();
    let version =
        asn1::small_uint(&r.expect(asn1::TAG_INTEGER, "version").map_err(e)?).map_err(e)?;
    if version != 1 {
        return bad(format!("TSTInfo version {version} is not supported"));
    }
    let policy = asn1::read_oid(&r.next_tlv().map_err(e)?).map_err(e)?;
    let mi = r.expect(asn1::TAG_SEQUENCE, "messageImprint").map_err(e)?;
    let mut mr = mi.reader();
    let alg = algo::AlgId::from_tlv(&mr.expect(asn1::TAG_SEQUENCE, "hashAlgorithm").map_err(e)?)
        .map_err(e)?;
    let imprint = mr
        .expect(asn1::TAG_OCTET_STRING, "hashedMessage")
        .map_err(e)?;
    let serial = r.expect(asn1::TAG_INTEGER, "serialNumber").map_err(e)?;
    let gen_time =
        asn1::read_time(&r.expect(asn1::TAG_GENERALIZED_TIME, "genTime").map_err(e)?).map_err(e)?;
    let mut nonce = None;
    while !r.is_empty() {
        let f = r.next_tlv().map_err(e)?;
        if f.tag == asn1::TAG_INTEGER {
            nonce = Some(asn1::integer_bytes(f.value).to_vec());
        }
    }
    Ok(TstInfo {
        policy,
        imprint_alg: alg.oid,
        imprint: imprint.value.to_vec(),
        serial: asn1::integer_bytes(serial.value).to_vec(),
        gen_time,
        nonce,
    })
}

impl Token {
    /// Checks that the token's messageImprint is the hash of `data`.
    pub fn check_imprint(&self, data: &[u8]) -> Result<(), TspError> {
        let Some(d) = Digest::from_oid(&self.info.imprint_alg) else {
            return bad(format!(
                "timestamp imprint algorithm {} is not supported",
                self.info.imprint_alg
            ));
        };
        if d.compute(data) != self.info.imprint {
            return bad("the timestamp covers another signature (messageImprint differs)");
        }
        Ok(())
    }

    /// Verifies the TSA's signature, its certificate (timeStamping EKU, path to `trust`, valid
    /// at genTime) and, through `rev`, that no certificate of that path was revoked before
    /// genTime.
    pub fn verify(
        &self,
        trust: &TrustStore,
        rev: &dyn RevocationSource,
    ) -> Result<Verified, TspError> {
        let sd = &self.signed;
        let si = match sd.signers.as_slice() {
            [Ok(si)] => si,
            [Err(e)] => return bad(format!("timestamp token: {e}")),
            _ => return bad("a timestamp token must have exactly one SignerInfo"),
        };
        let Some(digest) = Digest::from_oid(&si.digest_alg.oid) else {
            return bad(format!(
                "timestamp token: digest algorithm {}",
                si.digest_alg.oid
            ));
        };
        let scheme = algo::scheme_for_signer(digest, &si.sig_alg)
            .map_err(|e| TspError(format!("timestamp token: {e}")))?;
        let Some(attrs) = &si.signed_attrs else {
            return bad("timestamp token without signed attributes");
        };
        let Some(content) = &sd.content else {
            return bad("timestamp token without its TSTInfo");
        };
        if si.content_type.as_deref() != Some(OID_TST_INFO) {
            return bad("timestamp token: the contentType attribute is not TSTInfo");
        }
        if si.message_digest.as_deref() != Some(digest.compute(content).as_slice()) {
            return bad("timestamp token: the TSTInfo was changed (messageDigest differs)");
        }
        let mut tsa = None;
        let mut last = String::from("the TSA's certificate is neither in the token nor trusted");
        for c in sd
            .certs
            .iter()
            .map(|c| &**c)
            .chain(trust.certs())
            .filter(|c| sid_matches(&si.sid, c))
        {
            match algo::verify(&scheme, &c.spki, attrs, &si.signature) {
                Ok(()) => {
                    tsa = Some(c);
                    break;
                }
                Err(AlgError::BadSignature) => {
                    last = "the TSA's signature on the timestamp does not verify".into();
                }
                Err(e) => last = format!("timestamp token: {e}"),
            }
        }
        let Some(tsa) = tsa else {
            return bad(last);
        };
        if !tsa
            .eku
            .as_ref()
            .is_some_and(|e| e.iter().any(|o| o == EKU_TIME_STAMPING))
        {
            return bad(format!(
                "the certificate of {} is not a timestamping certificate (no timeStamping EKU)",
                tsa.display_name()
            ));
        }
        if let Some(ku) = tsa.key_usage {
            if ku & (KU_DIGITAL_SIGNATURE | KU_NON_REPUDIATION) == 0 {
                return bad(format!(
                    "the certificate of {} may not sign (keyUsage)",
                    tsa.display_name()
                ));
            }
        }
        let at = self.info.gen_time;
        let path = chain::build(tsa, sd.certs.iter().map(|c| &**c), trust, at).map_err(|e| {
            TspError(match e {
                ChainError::Untrusted(s) => format!("timestamp from an untrusted TSA: {s}"),
                other => format!("TSA at genTime: {}", other.detail()),
            })
        })?;
        let mut notes = Vec::new();
        for pair in path.windows(2) {
            match rev.status(pair[0], pair[1], at) {
                RevocationStatus::Good | RevocationStatus::RevokedLater { .. } => {}
                RevocationStatus::Revoked { at: when } => {
                    return bad(format!(
                        "the TSA certificate of {} was revoked {} (before the timestamp)",
                        pair[0].display_name(),
                        rfc3339(when)
                    ))
                }
                RevocationStatus::Unknown(why) => notes.push(format!(
                    "revocation status of the TSA certificate {} unknown: {why}",
                    pair[0].display_name()
                )),
            }
        }
        Ok(Verified {
            gen_time: at,
            tsa: tsa.clone(),
            notes,
        })
    }
}

/// Verifies the token carried by a signer whose signature value is `signature`: the imprint,
/// the token itself, and that genTime is not after `arrival` (+ [`CLOCK_SKEW`]).
pub fn verify_for_signer(
    token_der: &[u8],
    signature: &[u8],
    trust: &TrustStore,
    rev: &dyn RevocationSource,
    arrival: i64,
) -> Result<Verified, TspError> {
    let token = parse_token(token_der)?;
    token.check_imprint(signature)?;
    if token.info.gen_time > arrival.saturating_add(CLOCK_SKEW) {
        return bad(format!(
            "the timestamp ({}) is later than the arrival of the message",
            rfc3339(token.info.gen_time)
        ));
    }
    token.verify(trust, rev)
}

/// Whether `cert` is the one a SignerInfo's sid names.
fn sid_matches(sid: &cms::Sid, cert: &Cert) -> bool {
    match sid {
        cms::Sid::IssuerSerial { issuer, serial } => {
            cert.issuer == *issuer && cert.serial == *serial
        }
        cms::Sid::Ski(ski) => cert.subject_key_id.as_deref() == Some(ski.as_slice()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::cert::certs_from_pem_or_der;
    use crate::filter::cert::fixtures::nca;
    use crate::filter::chain::{NoRevocation, NoRevocationData};

    fn trust(files: &[&str]) -> TrustStore {
        TrustStore::from_certs(
            files
                .iter()
                .flat_map(|f| certs_from_pem_or_der(&nca(f)).unwrap())
                .collect(),
        )
    }

    #[test]
    fn real_nca_gost_token_verifies() {
        let token = parse_token(&nca("tsp/ncanode_tsp_token.bin")).unwrap();
        assert_eq!(token.info.gen_time, 1_663_507_214); // 2022-09-18T13:20:14Z
        assert_eq!(token.info.policy, "1.2.398.3.3.2.6.1");
        assert_eq!(token.info.imprint_alg, "1.3.14.3.2.26");
        let t = trust(&["ca/root_gost_test.pem", "ca/nca_gost_test.pem"]);
        let v = token.verify(&t, &NoRevocation).unwrap();
        assert_eq!(v.gen_time, 1_663_507_214);
        assert_eq!(
            v.tsa.subject_attr("2.5.4.3").as_deref(),
            Some("СЕРВИС МЕТКИ ВРЕМЕНИ")
        );
        assert!(v.notes.is_empty());
        // Root only: the intermediate comes from the token... it does not carry it, so the
        // TSA is untrusted.
        let root_only = trust(&["ca/root_gost_test.pem"]);
        assert!(token.verify(&root_only, &NoRevocation).is_err());
        // Other roots: untrusted.
        let other = trust(&["ca/root_rsa_test.pem", "ca/nca_rsa_test.pem"]);
        let e = token.verify(&other, &NoRevocation).unwrap_err();
        assert!(e.0.contains("TSA"), "{e}");
        // Revocation unknown for the TSA: noted, not fatal.
        let v = token.verify(&t, &NoRevocationData).unwrap();
        assert_eq!(v.notes.len(), 1);
        // The imprint is over data we do not have: any other data is refused.
        assert!(token.check_imprint(b"not the signature").is_err());
    }

    #[test]
    fn real_nca_response_carries_the_same_token() {
        let token = parse_response(&nca("tsp/ncanode_tsp_response.bin")).unwrap();
        assert_eq!(token.info.gen_time, 1_663_507_214);
    }

    #[test]
    fn tampered_token_is_refused() {
        let t = trust(&["ca/root_gost_test.pem", "ca/nca_gost_test.pem"]);
        let good = nca("tsp/ncanode_tsp_token.bin");
        // genTime digits live in the TSTInfo: changing one breaks messageDigest.
        let mut der = good.clone();
        let pos = der
            .windows(14)
            .position(|w| w == b"20220918132014")
            .unwrap();
        der[pos + 11] = b'9';
        let token = parse_token(&der).unwrap();
        let e = token.verify(&t, &NoRevocation).unwrap_err();
        assert!(e.0.contains("messageDigest"), "{e}");
        // Truncations never panic.
        for cut in (0..good.len()).step_by(7) {
            if let Ok(tok) = parse_token(&good[..cut]) {
                let _ = tok.verify(&t, &NoRevocation);
            }
        }
    }
}
