//! CMS SignedData (RFC 5652): recognise it in any of the encodings mail carries (DER, BER with
//! indefinite lengths, PEM, base64 text), normalise BER to DER, and take it apart into what
//! verification needs.
//!
//! The outer layers (ContentInfo, SignedData, the certificate set) are walked with our own DER
//! reader, so that one odd certificate or a duplicate in a SET OF does not make the whole CMS
//! unreadable and so that signed bytes are never re-encoded. Each SignerInfo and its attributes
//! are decoded with the `cms` crate; the bytes the signature covers (the DER SET of the signed
//! attributes) are taken from the input as they are.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use std::sync::Arc;

use der::asn1::{ObjectIdentifier, OctetString};
use der::Decode;

use super::algo::AlgId;
use super::asn1::{self, Tlv};
use super::cert::Cert;

pub const OID_SIGNED_DATA: &str = "1.2.840.113549.1.7.2";
pub const OID_DATA: &str = "1.2.840.113549.1.7.1";
const OID_CONTENT_TYPE: &str = "1.2.840.113549.1.9.3";
const OID_MESSAGE_DIGEST: &str = "1.2.840.113549.1.9.4";
const OID_SIGNING_TIME: &str = "1.2.840.113549.1.9.5";

/// DER of the signedData OID, the second element of every CMS SignedData ContentInfo.
const SIGNED_DATA_OID_DER: [u8; 11] = [
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
];

/// At most this many SignerInfos per SignedData are examined.
pub const MAX_SIGNERS: usize = 16;
/// At most this many certificates per SignedData are kept.
pub const MAX_CERTS: usize = 64;
/// At most this many revocation values (CRLs, OCSP responses) per SignedData are kept.
pub const MAX_REVOCATION_INFO: usize = 16;

/// How the signer's certificate is named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sid {
    /// issuerAndSerialNumber: the DER issuer Name and the serial magnitude.
    IssuerSerial { issuer: Vec<u8>, serial: Vec<u8> },
    /// subjectKeyIdentifier.
    Ski(Vec<u8>),
}

/// One SignerInfo.
#[derive(Debug, Clone)]
pub struct SignerInfo {
    pub sid: Sid,
    pub digest_alg: AlgId,
    /// DER of the signed attributes with the SET OF tag (0x31): what the signature covers.
    pub signed_attrs: Option<Vec<u8>>,
    /// messageDigest attribute.
    pub message_digest: Option<Vec<u8>>,
    /// contentType attribute (dotted OID).
    pub content_type: Option<String>,
    /// signingTime attribute, seconds since the epoch: the signer's claim.
    pub signing_time: Option<i64>,
    pub sig_alg: AlgId,
    pub signature: Vec<u8>,
    /// Unsigned attributes: (OID, DER of each value). Timestamp tokens live here.
    pub unsigned_attrs: Vec<(String, Vec<Vec<u8>>)>,
}

/// A parsed SignedData.
#[derive(Debug, Clone)]
pub struct SignedData {
    /// eContentType (dotted OID).
    pub econtent_type: String,
    /// The encapsulated content, None when detached.
    pub content: Option<Vec<u8>>,
    /// Certificates carried in the CMS that could be parsed (shared parses: [`super::cache`]).
    pub certs: Vec<Arc<Cert>>,
    /// One entry per SignerInfo: parsed, or why not.
    pub signers: Vec<Result<SignerInfo, String>>,
    /// DER of each RevocationInfoChoice in the `crls` field (CRLs, or OCSP responses per
    /// RFC 5940), for [`super::revocation`]; at most [`MAX_REVOCATION_INFO`].
    pub revocation_info: Vec<Vec<u8>>,
}

/// The base64 engine of [`base64_lenient`]: padding optional, trailing bits allowed.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A lenient base64 decoder for mail: whitespace ignored, padding optional.
pub fn base64_lenient(text: &str) -> Option<Vec<u8>> {
    let cleaned: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64_clean(&cleaned)
}

/// [`base64_lenient`] for text already without whitespace.
pub fn base64_clean(text: &[u8]) -> Option<Vec<u8>> {
    LENIENT.decode(text).ok()
}

/// One `-----BEGIN label-----` block of PEM text (RFC 7468).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PemBlock<'a> {
    pub label: &'a str,
    /// The text between the BEGIN and END lines; None when the END line is missing (the
    /// last block then).
    pub body: Option<&'a str>,
}

/// The PEM blocks of `text`, in order (text outside blocks is ignored).
pub fn pem_blocks(text: &str) -> PemBlocks<'_> {
    PemBlocks { rest: Some(text) }
}

/// Iterator of [`pem_blocks`].
pub struct PemBlocks<'a> {
    rest: Option<&'a str>,
}

impl<'a> Iterator for PemBlocks<'a> {
    type Item = PemBlock<'a>;

    fn next(&mut self) -> Option<PemBlock<'a>> {
        const BEGIN: &str = "-----BEGIN ";
        let rest = self.rest.take()?;
        let after = &rest[rest.find(BEGIN)? + BEGIN.len()..];
        let label_end = after.find("-----")?;
        let label = &after[..label_end];
        let body = &after[label_end + 5..];
        let end_marker = format!("-----END {label}-----");
        let Some(end) = body.find(&end_marker) else {
            return Some(PemBlock { label, body: None });
        };
        self.rest = Some(&body[end + end_marker.len()..]);
        Some(PemBlock {
            label,
            body: Some(&body[..end]),
        })
    }
}

/// Objects read from one DER object (`data` starts with a SEQUENCE) or from every PEM block of
/// `data` labelled with one of `labels`; `what` names the object in the error when there is
/// none. A PEM block without its END line, or with bad base64, is an error (`err`).
pub fn pem_or_der<T, E>(
    data: &[u8],
    labels: &[&str],
    what: &str,
    from_der: impl Fn(&[u8]) -> Result<T, E>,
    err: impl Fn(String) -> E,
) -> Result<Vec<T>, E> {
    if data.first() == Some(&asn1::TAG_SEQUENCE) {
        return Ok(vec![from_der(data)?]);
    }
    let text = String::from_utf8_lossy(data);
    let mut out = Vec::new();
    for block in pem_blocks(&text) {
        let Some(body) = block.body else {
            return Err(err(format!(
                "PEM block {} without its END line",
                block.label
            )));
        };
        if labels.contains(&block.label) {
            let der = base64_lenient(body).ok_or_else(|| err("bad base64 in PEM".into()))?;
            out.push(from_der(&der)?);
        }
    }
    if out.is_empty() {
        return Err(err(format!("no {what} (PEM or DER) found")));
    }
    Ok(out)
}

fn is_base64_text(data: &[u8]) -> bool {
    !data.is_empty()
        && data.iter().all(|&b| {
            b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace()
        })
}

fn trim_start(data: &[u8]) -> &[u8] {
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let skip = data.iter().take_while(|b| b.is_ascii_whitespace()).count();
    &data[skip..]
}

/// Whether binary data starts like a ContentInfo of type signedData (any length form).
pub fn has_signed_data_prefix(bin: &[u8]) -> bool {
    if bin.first() != Some(&asn1::TAG_SEQUENCE) {
        return false;
    }
    let hlen = match bin.get(1) {
        Some(&l) if l <= 0x80 => 2,
        Some(&l) if l <= 0x84 => 2 + (l & 0x7F) as usize,
        _ => return false,
    };
    bin.get(hlen..hlen + SIGNED_DATA_OID_DER.len()) == Some(&SIGNED_DATA_OID_DER[..])
}

/// Cheap check (looks at the first bytes only) whether `data` is probably a CMS SignedData in
/// one of the accepted encodings.
pub fn sniff(data: &[u8]) -> bool {
    let d = trim_start(data);
    if has_signed_data_prefix(d) {
        return true;
    }
    if d.starts_with(b"-----BEGIN ") {
        let head = &d[..d.len().min(64)];
        let head = String::from_utf8_lossy(head);
        return head.contains("PKCS7") || head.contains("CMS") || head.contains("PKCS #7");
    }
    // base64 text: decode a short prefix.
    let prefix: String = d
        .iter()
        .take(256)
        .filter(|b| !b.is_ascii_whitespace())
        .take(32)
        .map(|&b| b as char)
        .collect();
    if prefix.len() < 20 || !is_base64_text(prefix.as_bytes()) {
        return false;
    }
    base64_lenient(&prefix[..prefix.len() / 4 * 4]).is_some_and(|b| has_signed_data_prefix(&b))
}

/// Turns DER/BER, PEM or base64 text into binary BER (not yet normalised).
pub fn decode_input(data: &[u8]) -> Result<Vec<u8>, String> {
    decode_input_cow(data).map(std::borrow::Cow::into_owned)
}

/// [`decode_input`], borrowing binary input instead of copying it.
fn decode_input_cow(data: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, String> {
    let d = trim_start(data);
    if d.first() == Some(&asn1::TAG_SEQUENCE) {
        return Ok(std::borrow::Cow::Borrowed(d));
    }
    if d.starts_with(b"-----BEGIN ") {
        let text = String::from_utf8_lossy(d);
        for PemBlock { label, body } in pem_blocks(&text) {
            if matches!(label, "PKCS7" | "CMS" | "PKCS #7 SIGNED DATA") {
                let Some(body) = body else {
                    return Err(format!("PEM block {label} without its END line"));
                };
                // Skip RFC 1421 header lines ("Name: value") if any.
                let b64: String = body
                    .lines()
                    .filter(|l| !l.contains(':'))
                    .collect::<Vec<_>>()
                    .join("");
                return base64_lenient(&b64)
                    .map(std::borrow::Cow::Owned)
                    .ok_or_else(|| "bad base64 in PEM".to_string());
            }
        }
        return Err("no PKCS7 or CMS block in the PEM text".into());
    }
    if is_base64_text(d) {
        if let Some(bin) = base64_lenient(&String::from_utf8_lossy(d)) {
            if bin.first() == Some(&asn1::TAG_SEQUENCE) {
                return Ok(std::borrow::Cow::Owned(bin));
            }
        }
    }
    Err("not CMS: neither DER/BER, PEM nor base64".into())
}

fn malformed<T>(msg: impl std::fmt::Display) -> Result<T, String> {
    Err(msg.to_string())
}

/// Parses a CMS SignedData from any accepted encoding. An error means the whole structure is
/// unusable (`permerror` / `malformed`); a bad SignerInfo is reported in `signers` instead.
pub fn parse(data: &[u8]) -> Result<SignedData, String> {
    let bin = decode_input_cow(data)?;
    let der = asn1::normalise(&bin).map_err(|e| format!("bad BER: {e}"))?;
    let ci = asn1::parse_one(&der).map_err(|e| format!("ContentInfo: {e}"))?;
    if ci.tag != asn1::TAG_SEQUENCE {
        return malformed("ContentInfo is not a SEQUENCE");
    }
    let mut r = ci.reader();
    let ctype = asn1::read_oid(&r.next_tlv().map_err(|e| format!("ContentInfo: {e}"))?)
        .map_err(|e| format!("ContentInfo: {e}"))?;
    if ctype != OID_SIGNED_DATA {
        return malformed(format!("content type {ctype} is not signedData"));
    }
    let wrapped = r
        .expect(0xA0, "ContentInfo content")
        .map_err(|e| e.to_string())?;
    let sd = asn1::parse_one(wrapped.value).map_err(|e| format!("SignedData: {e}"))?;
    if sd.tag != asn1::TAG_SEQUENCE {
        return malformed("SignedData is not a SEQUENCE");
    }
    parse_signed_data(&sd).map_err(|e| format!("SignedData: {e}"))
}

fn parse_signed_data(sd: &Tlv<'_>) -> Result<SignedData, String> {
    let e = |e: asn1::Asn1Error| e.to_string();
    let mut r = sd.reader();
    r.expect(asn1::TAG_INTEGER, "version").map_err(e)?;
    r.expect(asn1::TAG_SET, "digestAlgorithms").map_err(e)?;
    let eci_t = r
        .expect(asn1::TAG_SEQUENCE, "encapContentInfo")
        .map_err(e)?;
    let eci = cms::signed_data::EncapsulatedContentInfo::from_der(eci_t.raw)
        .map_err(|err| format!("encapContentInfo: {err}"))?;
    // RFC 5652: eContent is an OCTET STRING; old PKCS#7 signers put other types here, and then
    // the signed bytes are the contents of whatever is there.
    let content = eci.econtent.as_ref().map(|any| any.value().to_vec());

    let mut certs = Vec::new();
    let mut revocation_info = Vec::new();
    let mut signer_set = None;
    while !r.is_empty() {
        let t = r.next_tlv().map_err(e)?;
        match t.tag {
            0xA0 => {
                for c in asn1::read_all(t.value).map_err(e)? {
                    if c.tag == asn1::TAG_SEQUENCE && certs.len() < MAX_CERTS {
                        match super::cache::parsed_cert(c.raw) {
                            Ok(cert) => {
                                if !certs.iter().any(|x: &Arc<Cert>| x.raw == cert.raw) {
                                    certs.push(cert)
                                }
                            }
                            Err(err) => tracing::debug!("skipping a certificate in CMS: {err}"),
                        }
                    }
                }
            }
            0xA1 => {
                // RevocationInfoChoices: kept raw, read by revocation.
                for c in asn1::read_all(t.value).map_err(e)? {
                    if revocation_info.len() < MAX_REVOCATION_INFO {
                        revocation_info.push(c.raw.to_vec());
                    }
                }
            }
            asn1::TAG_SET => {
                signer_set = Some(t);
                break;
            }
            other => return malformed(format!("unexpected element 0x{other:02x}")),
        }
    }
    let Some(signer_set) = signer_set else {
        return malformed("no signerInfos");
    };
    let raw_signers = signer_set.children().map_err(e)?;
    if raw_signers.len() > MAX_SIGNERS {
        return malformed(format!(
            "{} SignerInfos (at most {MAX_SIGNERS} are examined)",
            raw_signers.len()
        ));
    }
    let signers = raw_signers.iter().map(parse_signer_info).collect();
    Ok(SignedData {
        econtent_type: eci.econtent_type.to_string(),
        content,
        certs,
        signers,
        revocation_info,
    })
}

fn parse_signer_info(t: &Tlv<'_>) -> Result<SignerInfo, String> {
    let e = |e: asn1::Asn1Error| format!("SignerInfo: {e}");
    if t.tag != asn1::TAG_SEQUENCE {
        return malformed("SignerInfo is not a SEQUENCE");
    }
    // Raw pieces first: the sid as it is, and the signed attributes as they were signed.
    let mut r = t.reader();
    r.expect(asn1::TAG_INTEGER, "version").map_err(e)?;
    let sid_t = r.next_tlv().map_err(e)?;
    let sid = match sid_t.tag {
        asn1::TAG_SEQUENCE => {
            let mut s = sid_t.reader();
            let issuer = s.expect(asn1::TAG_SEQUENCE, "issuer").map_err(e)?;
            let serial = s.expect(asn1::TAG_INTEGER, "serialNumber").map_err(e)?;
            Sid::IssuerSerial {
                issuer: issuer.raw.to_vec(),
                serial: asn1::integer_bytes(serial.value).to_vec(),
            }
        }
        0x80 => Sid::Ski(sid_t.value.to_vec()),
        other => return malformed(format!("SignerInfo: unknown sid form 0x{other:02x}")),
    };
    r.expect(asn1::TAG_SEQUENCE, "digestAlgorithm").map_err(e)?;
    let signed_attrs = r.optional(0xA0).map_err(e)?.map(|a| {
        let mut der = a.raw.to_vec();
        der[0] = asn1::TAG_SET;
        der
    });

    // Typed view through the cms crate.
    let si = cms::signed_data::SignerInfo::from_der(t.raw)
        .map_err(|err| format!("SignerInfo: {err}"))?;
    let alg = |a: &x509_cert::spki::AlgorithmIdentifierOwned| -> Result<AlgId, String> {
        Ok(AlgId {
            oid: a.oid.to_string(),
            params: match &a.parameters {
                Some(p) => Some(der::Encode::to_der(p).map_err(|e| e.to_string())?),
                None => None,
            },
        })
    };
    let mut info = SignerInfo {
        sid,
        digest_alg: alg(&si.digest_alg)?,
        signed_attrs,
        message_digest: None,
        content_type: None,
        signing_time: None,
        sig_alg: alg(&si.signature_algorithm)?,
        signature: si.signature.as_bytes().to_vec(),
        unsigned_attrs: Vec::new(),
    };
    if let Some(attrs) = &si.signed_attrs {
        for a in attrs.iter() {
            let single = || -> Result<&der::Any, String> {
                match a.values.as_slice() {
                    [v] => Ok(v),
                    _ => malformed(format!("attribute {} must have exactly one value", a.oid)),
                }
            };
            match a.oid.to_string().as_str() {
                OID_MESSAGE_DIGEST => {
                    let v: OctetString = single()?
                        .decode_as()
                        .map_err(|e| format!("messageDigest: {e}"))?;
                    info.message_digest = Some(v.as_bytes().to_vec());
                }
                OID_CONTENT_TYPE => {
                    let v: ObjectIdentifier = single()?
                        .decode_as()
                        .map_err(|e| format!("contentType: {e}"))?;
                    info.content_type = Some(v.to_string());
                }
                OID_SIGNING_TIME => {
                    let der =
                        der::Encode::to_der(single()?).map_err(|e| format!("signingTime: {e}"))?;
                    let t = asn1::parse_one(&der).map_err(|e| format!("signingTime: {e}"))?;
                    info.signing_time =
                        Some(asn1::read_time(&t).map_err(|e| format!("signingTime: {e}"))?);
                }
                _ => {}
            }
        }
        if info.message_digest.is_none() {
            return malformed("signed attributes without messageDigest");
        }
    }
    if let Some(attrs) = &si.unsigned_attrs {
        for a in attrs.iter() {
            let values = a
                .values
                .iter()
                .filter_map(|v| der::Encode::to_der(v).ok())
                .collect();
            info.unsigned_attrs.push((a.oid.to_string(), values));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_and_pem_or_der() {
        let text = "junk\n-----BEGIN A-----\nQQ==\n-----END A-----\n-----BEGIN B-----\nQg\n\
                    -----END B-----\n-----BEGIN C-----\nQw==\n";
        let blocks: Vec<PemBlock<'_>> = pem_blocks(text).collect();
        assert_eq!(
            blocks,
            [
                PemBlock {
                    label: "A",
                    body: Some("\nQQ==\n")
                },
                PemBlock {
                    label: "B",
                    body: Some("\nQg\n")
                },
                PemBlock {
                    label: "C",
                    body: None
                },
            ]
        );
        let read = |data: &[u8], labels: &[&str]| {
            pem_or_der(data, labels, "thing", |d| Ok(d.to_vec()), |e| e)
        };
        let two = text.rsplit_once("-----BEGIN C").unwrap().0.as_bytes();
        assert_eq!(
            read(two, &["A", "B"]),
            Ok(vec![b"A".to_vec(), b"B".to_vec()])
        );
        assert_eq!(read(two, &["B"]), Ok(vec![b"B".to_vec()]));
        assert_eq!(
            read(two, &["X"]),
            Err("no thing (PEM or DER) found".to_string())
        );
        assert_eq!(
            read(text.as_bytes(), &["A"]),
            Err("PEM block C without its END line".to_string())
        );
        assert_eq!(read(&[0x30, 0], &["A"]), Ok(vec![vec![0x30, 0]]));
    }

    #[test]
    fn sniffing() {
        let der = [
            0x30, 0x80, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02, 0xA0,
            0x80,
        ];
        assert!(sniff(&der));
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        assert!(sniff(b64.as_bytes()));
        assert!(sniff(b"-----BEGIN PKCS7-----\nMIA=\n-----END PKCS7-----\n"));
        assert!(!sniff(b"Hello, world"));
        assert!(!sniff(&[0x30, 0x03, 0x02, 0x01, 0x00]));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x80",
            b"\x30\x84\x80\x00\x00\x00\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02",
            b"MIAGCSqGSIb3DQEHAqCA",
        ] {
            assert!(parse(input).is_err());
        }
    }
}
