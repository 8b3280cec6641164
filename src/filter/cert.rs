//! X.509 certificates as the filter needs them: the exact bytes that were signed (TBS, names,
//! public key) plus the few extensions that path validation and the NCA profile read.
//!
//! Parsing is our own walk over DER ([`super::asn1`]) so that every byte string we compare or
//! verify is the one in the certificate, never a re-encoding.

use std::fmt;

use super::algo::AlgId;
use super::asn1::{self, Tlv};

/// keyUsage bits (RFC 5280 §4.2.1.3), as a mask over [`Cert::key_usage`].
pub const KU_DIGITAL_SIGNATURE: u16 = 1 << 0;
pub const KU_NON_REPUDIATION: u16 = 1 << 1;
pub const KU_KEY_ENCIPHERMENT: u16 = 1 << 2;
pub const KU_KEY_CERT_SIGN: u16 = 1 << 5;

pub const EKU_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";
pub const EKU_EMAIL_PROTECTION: &str = "1.3.6.1.5.5.7.3.4";

/// Extensions we understand; a critical extension outside this list makes the certificate
/// unusable (RFC 5280 §4.2).
const KNOWN_EXTENSIONS: &[&str] = &[
    "2.5.29.14",         // subjectKeyIdentifier
    "2.5.29.15",         // keyUsage
    "2.5.29.17",         // subjectAltName
    "2.5.29.19",         // basicConstraints
    "2.5.29.31",         // cRLDistributionPoints
    "2.5.29.32",         // certificatePolicies
    "2.5.29.35",         // authorityKeyIdentifier
    "2.5.29.37",         // extKeyUsage
    "2.5.29.46",         // freshestCRL
    "1.3.6.1.5.5.7.1.1", // authorityInfoAccess
];

/// One attribute of a distinguished name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAttr {
    pub oid: String,
    /// The ASN.1 tag of the value (UTF8String, PrintableString, BMPString, ...).
    pub tag: u8,
    /// The value's contents octets.
    pub value: Vec<u8>,
    /// The value's whole DER element (for `#hex` in RFC 4514 output).
    pub raw: Vec<u8>,
}

impl NameAttr {
    /// The value as text, if it is a character string.
    pub fn text(&self) -> Option<String> {
        decode_string(self.tag, &self.value)
    }
}

/// A parsed certificate.
#[derive(Clone)]
pub struct Cert {
    /// The whole DER certificate.
    pub raw: Vec<u8>,
    /// The DER `TBSCertificate` (what the issuer signed).
    pub tbs: Vec<u8>,
    pub version: u64,
    /// Serial number magnitude, big-endian, without redundant leading zeros.
    pub serial: Vec<u8>,
    /// `signatureAlgorithm` of the outer certificate.
    pub sig_alg: AlgId,
    pub signature: Vec<u8>,
    /// DER of the issuer and subject names, as they appear in the certificate.
    pub issuer: Vec<u8>,
    pub subject: Vec<u8>,
    /// Subject RDNs in DER order.
    pub subject_rdns: Vec<Vec<NameAttr>>,
    pub issuer_rdns: Vec<Vec<NameAttr>>,
    /// Validity, seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    /// DER `SubjectPublicKeyInfo`.
    pub spki: Vec<u8>,
    /// basicConstraints: (cA, pathLenConstraint), None when absent.
    pub basic_constraints: Option<(bool, Option<u64>)>,
    /// keyUsage bits (bit 0 = digitalSignature), None when absent.
    pub key_usage: Option<u16>,
    /// extKeyUsage OIDs, None when absent.
    pub eku: Option<Vec<String>>,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    /// rfc822Name entries of subjectAltName.
    pub san_emails: Vec<String>,
    /// Critical extensions we do not understand.
    pub unknown_critical: Vec<String>,
}

impl fmt::Debug for Cert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cert")
            .field("subject", &rfc4514(&self.subject_rdns, false))
            .field("issuer", &rfc4514(&self.issuer_rdns, false))
            .field("serial", &asn1::hex(&self.serial))
            .finish()
    }
}

asn1::message_error!(
    /// Why a certificate could not be parsed.
    CertError
);

impl From<asn1::Asn1Error> for CertError {
    fn from(e: asn1::Asn1Error) -> Self {
        CertError(e.0)
    }
}

impl Cert {
    /// Parses one DER certificate (exactly; trailing bytes are an error).
    pub fn from_der(der: &[u8]) -> Result<Cert, CertError> {
        let outer = asn1::parse_one(der)?;
        if outer.tag != asn1::TAG_SEQUENCE {
            return Err(CertError("certificate is not a SEQUENCE".into()));
        }
        let Signed {
            tbs,
            sig_alg,
            signature,
        } = read_signed(&mut outer.reader(), "tbsCertificate", "signatureValue")?;
        let signature =
            signature.ok_or_else(|| CertError("signature BIT STRING has unused bits".into()))?;

        let mut t = tbs.reader();
        let version = match t.optional(0xA0)? {
            Some(v) => asn1::small_uint(&asn1::parse_one(v.value)?)? + 1,
            None => 1,
        };
        let serial_t = t.expect(asn1::TAG_INTEGER, "serialNumber")?;
        let inner_alg = AlgId::from_tlv(&t.expect(asn1::TAG_SEQUENCE, "signature")?)?;
        if inner_alg.oid != sig_alg.oid {
            return Err(CertError(
                "signature algorithm inside and outside the TBS differ".into(),
            ));
        }
        let issuer = t.expect(asn1::TAG_SEQUENCE, "issuer")?;
        let validity = t.expect(asn1::TAG_SEQUENCE, "validity")?;
        let subject = t.expect(asn1::TAG_SEQUENCE, "subject")?;
        let spki = t.expect(asn1::TAG_SEQUENCE, "subjectPublicKeyInfo")?;
        let mut v = validity.reader();
        let not_before = asn1::read_time(&v.next_tlv()?)?;
        let not_after = asn1::read_time(&v.next_tlv()?)?;

        let mut cert = Cert {
            raw: der.to_vec(),
            tbs: tbs.raw.to_vec(),
            version,
            serial: asn1::integer_bytes(serial_t.value).to_vec(),
            sig_alg,
            signature,
            issuer: issuer.raw.to_vec(),
            subject: subject.raw.to_vec(),
            subject_rdns: parse_name(&subject)?,
            issuer_rdns: parse_name(&issuer)?,
            not_before,
            not_after,
            spki: spki.raw.to_vec(),
            basic_constraints: None,
            key_usage: None,
            eku: None,
            subject_key_id: None,
            authority_key_id: None,
            san_emails: Vec::new(),
            unknown_critical: Vec::new(),
        };

        while !t.is_empty() {
            let field = t.next_tlv()?;
            if field.tag == 0xA3 {
                let exts = asn1::parse_one(field.value)?;
                for ext in exts.children()? {
                    cert.extension(&ext)?;
                }
            }
        }
        Ok(cert)
    }

    fn extension(&mut self, ext: &Tlv<'_>) -> Result<(), CertError> {
        let Extension {
            oid,
            critical,
            value,
        } = read_extension(ext)?;
        let bad = |what: &str| CertError(format!("bad {what} extension"));
        match oid.as_str() {
            "2.5.29.19" => {
                let seq = asn1::parse_one(value)?;
                let mut s = seq.reader();
                let ca = s.optional_bool()?;
                let path_len = match s.optional(asn1::TAG_INTEGER)? {
                    Some(i) => Some(asn1::small_uint(&i)?),
                    None => None,
                };
                self.basic_constraints = Some((ca, path_len));
            }
            "2.5.29.15" => {
                let bits = asn1::parse_one(value)?;
                if bits.tag != asn1::TAG_BIT_STRING {
                    return Err(bad("keyUsage"));
                }
                let bytes = bits.value.get(1..).unwrap_or_default();
                let mut mask = 0u16;
                for i in 0..9u16 {
                    let byte = bytes.get((i / 8) as usize).copied().unwrap_or(0);
                    if byte & (0x80 >> (i % 8)) != 0 {
                        mask |= 1 << i;
                    }
                }
                self.key_usage = Some(mask);
            }
            "2.5.29.37" => {
                let seq = asn1::parse_one(value)?;
                let mut oids = Vec::new();
                for o in seq.children()? {
                    oids.push(asn1::read_oid(&o)?);
                }
                self.eku = Some(oids);
            }
            "2.5.29.17" => {
                let seq = asn1::parse_one(value)?;
                for gn in seq.children()? {
                    if gn.tag == 0x81 {
                        if let Ok(s) = std::str::from_utf8(gn.value) {
                            self.san_emails.push(s.to_string());
                        }
                    }
                }
            }
            "2.5.29.14" => {
                let o = asn1::parse_one(value)?;
                if o.tag != asn1::TAG_OCTET_STRING {
                    return Err(bad("subjectKeyIdentifier"));
                }
                self.subject_key_id = Some(o.value.to_vec());
            }
            "2.5.29.35" => {
                let seq = asn1::parse_one(value)?;
                for f in seq.children()? {
                    if f.tag == 0x80 {
                        self.authority_key_id = Some(f.value.to_vec());
                    }
                }
            }
            other => {
                if critical && !KNOWN_EXTENSIONS.contains(&other) {
                    self.unknown_critical.push(other.to_string());
                }
            }
        }
        Ok(())
    }

    /// Checks the signature on this certificate with the key `issuer_spki` (DER
    /// SubjectPublicKeyInfo), through the algorithm dispatch of [`super::algo`] (RSA, ECDSA,
    /// GOST). A signature that verified before, for exactly these certificate bytes under
    /// exactly this key, is answered from the process-wide cache ([`super::cache`]); only the
    /// signature is cached, never validity or trust.
    pub fn signed_with(&self, issuer_spki: &[u8]) -> Result<(), super::algo::AlgError> {
        super::cache::cert_signed_with(self, issuer_spki)
    }

    /// [`Cert::signed_with`] without the cache: the signature checked now.
    pub fn verify_signature_with(&self, issuer_spki: &[u8]) -> Result<(), super::algo::AlgError> {
        let scheme = super::algo::scheme_for_cert(&self.sig_alg)?;
        super::algo::verify(&scheme, issuer_spki, &self.tbs, &self.signature)
    }

    /// Subject name equals issuer name (DER-equal): a self-issued certificate.
    pub fn is_self_issued(&self) -> bool {
        self.subject == self.issuer
    }

    /// First value of a subject attribute, as text.
    pub fn subject_attr(&self, oid: &str) -> Option<String> {
        self.subject_rdns
            .iter()
            .flatten()
            .find(|a| a.oid == oid)
            .and_then(|a| a.text())
    }

    /// All values of a subject attribute, as text.
    pub fn subject_attrs(&self, oid: &str) -> Vec<String> {
        self.subject_rdns
            .iter()
            .flatten()
            .filter(|a| a.oid == oid)
            .filter_map(|a| a.text())
            .collect()
    }

    /// The issuer in RFC 4514 form (UTF-8).
    pub fn issuer_string(&self) -> String {
        rfc4514(&self.issuer_rdns, false)
    }

    pub fn subject_string(&self) -> String {
        rfc4514(&self.subject_rdns, false)
    }

    /// A short name for messages: the subject CN, else the whole subject.
    pub fn display_name(&self) -> String {
        self.subject_attr("2.5.4.3")
            .map(|cn| format!("\"{cn}\""))
            .unwrap_or_else(|| self.subject_string())
    }
}

/// The fields of a signed structure (Certificate, CertificateList, BasicOCSPResponse):
/// `SEQUENCE { tbs, signatureAlgorithm, signature BIT STRING, ... }`.
pub struct Signed<'a> {
    /// The element the signature covers.
    pub tbs: Tlv<'a>,
    pub sig_alg: AlgId,
    /// The signature bits; None when the BIT STRING has unused bits.
    pub signature: Option<Vec<u8>>,
}

/// Reads the TBS element (named `tbs` in errors), the signatureAlgorithm and the signature
/// BIT STRING (named `sig`) from `r`.
pub fn read_signed<'a>(
    r: &mut asn1::Reader<'a>,
    tbs: &str,
    sig: &str,
) -> Result<Signed<'a>, asn1::Asn1Error> {
    let tbs = r.expect(asn1::TAG_SEQUENCE, tbs)?;
    let sig_alg = AlgId::from_tlv(&r.expect(asn1::TAG_SEQUENCE, "signatureAlgorithm")?)?;
    let bits = r.expect(asn1::TAG_BIT_STRING, sig)?;
    let signature = match bits.value.split_first() {
        Some((0, rest)) => Some(rest.to_vec()),
        _ => None,
    };
    Ok(Signed {
        tbs,
        sig_alg,
        signature,
    })
}

/// One Extension (RFC 5280 §4.1): extnID, critical (DEFAULT FALSE) and the contents of
/// extnValue.
pub struct Extension<'a> {
    pub oid: String,
    pub critical: bool,
    pub value: &'a [u8],
}

/// Reads the extnID and the critical flag of an Extension, leaving `r` at extnValue.
pub fn extension_head(r: &mut asn1::Reader<'_>) -> Result<(String, bool), asn1::Asn1Error> {
    let oid = asn1::read_oid(&r.next_tlv()?)?;
    let critical = r.optional_bool()?;
    Ok((oid, critical))
}

/// Reads one Extension.
pub fn read_extension<'a>(ext: &Tlv<'a>) -> Result<Extension<'a>, asn1::Asn1Error> {
    let mut r = ext.reader();
    let (oid, critical) = extension_head(&mut r)?;
    let value = r.expect(asn1::TAG_OCTET_STRING, "extnValue")?.value;
    Ok(Extension {
        oid,
        critical,
        value,
    })
}

/// Parses a DER Name into RDNs (DER order).
pub fn parse_name(name: &Tlv<'_>) -> Result<Vec<Vec<NameAttr>>, CertError> {
    let mut rdns = Vec::new();
    for rdn in name.children()? {
        if rdn.tag != asn1::TAG_SET {
            return Err(CertError("name RDN is not a SET".into()));
        }
        let mut attrs = Vec::new();
        for atv in rdn.children()? {
            let mut r = atv.reader();
            let oid = asn1::read_oid(&r.next_tlv()?)?;
            let v = r.next_tlv()?;
            attrs.push(NameAttr {
                oid,
                tag: v.tag,
                value: v.value.to_vec(),
                raw: v.raw.to_vec(),
            });
        }
        rdns.push(attrs);
    }
    Ok(rdns)
}

/// Decodes an ASN.1 character string: UTF8String, PrintableString, IA5String, TeletexString
/// (read as Latin-1), BMPString (UTF-16BE) and UniversalString (UTF-32BE).
pub fn decode_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        asn1::TAG_UTF8_STRING | asn1::TAG_PRINTABLE_STRING | asn1::TAG_IA5_STRING | 0x12 | 0x1A => {
            String::from_utf8(bytes.to_vec()).ok()
        }
        asn1::TAG_T61_STRING => match std::str::from_utf8(bytes) {
            Ok(s) => Some(s.to_string()),
            Err(_) => Some(bytes.iter().map(|&b| b as char).collect()),
        },
        asn1::TAG_BMP_STRING => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        asn1::TAG_UNIVERSAL_STRING => {
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            bytes
                .chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// Short names RFC 4514 §3 defines, plus the LDAP descriptors (RFC 4519) of the attributes NCA
/// RK names carry.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.42" => "givenName",
        "2.5.4.12" => "title",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.6" => "C",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// A Name in RFC 4514 string form (last RDN first). With `ascii_only`, every non-ASCII byte of
/// the UTF-8 value is written as a `\XX` escape, which RFC 4514 §2.4 allows, so the string can
/// go into a header that must stay ASCII.
pub fn rfc4514(rdns: &[Vec<NameAttr>], ascii_only: bool) -> String {
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, a) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let text = a.text();
            match (short_name(&a.oid), text) {
                (Some(name), Some(text)) => {
                    out.push_str(name);
                    out.push('=');
                    escape_value(&text, ascii_only, &mut out);
                }
                _ => {
                    out.push_str(&a.oid);
                    out.push_str("=#");
                    out.push_str(&asn1::hex(&a.raw));
                }
            }
        }
    }
    out
}

fn escape_value(v: &str, ascii_only: bool, out: &mut String) {
    let n = v.chars().count();
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i + 1 == n && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_control() || (ascii_only && !c.is_ascii()) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
}

/// Reads every certificate from PEM text (several `CERTIFICATE` blocks) or one DER certificate.
pub fn certs_from_pem_or_der(data: &[u8]) -> Result<Vec<Cert>, CertError> {
    super::cms::pem_or_der(
        data,
        &["CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"],
        "certificate",
        Cert::from_der,
        CertError,
    )
}

/// Fixtures shared by the unit tests of the filter modules: the NCA test PKI files.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{certs_from_pem_or_der, Cert};

    /// The bytes of `tests/data/nca/<path>`.
    pub fn nca(path: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/nca/{path}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// The first certificate of `tests/data/nca/<path>`.
    pub fn cert(path: &str) -> Cert {
        certs_from_pem_or_der(&nca(path)).unwrap().remove(0)
    }

    /// Bytes from hex digits.
    pub fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings() {
        assert_eq!(
            decode_string(asn1::TAG_BMP_STRING, &[0x04, 0x22, 0x04, 0x15]).as_deref(),
            Some("ТЕ")
        );
        assert_eq!(
            decode_string(asn1::TAG_PRINTABLE_STRING, b"IIN123").as_deref(),
            Some("IIN123")
        );
        assert_eq!(decode_string(asn1::TAG_BMP_STRING, &[0x04]), None);
    }

    #[test]
    fn rfc4514_escaping() {
        let attr = |oid: &str, v: &str| NameAttr {
            oid: oid.into(),
            tag: asn1::TAG_UTF8_STRING,
            value: v.as_bytes().to_vec(),
            raw: asn1::encode(asn1::TAG_UTF8_STRING, v.as_bytes()),
        };
        let rdns = vec![
            vec![attr("2.5.4.6", "KZ")],
            vec![attr("2.5.4.3", "АО \"ТЕСТ\", 1")],
        ];
        assert_eq!(rfc4514(&rdns, false), "CN=АО \\\"ТЕСТ\\\"\\, 1,C=KZ");
        assert_eq!(
            rfc4514(&rdns, true),
            "CN=\\D0\\90\\D0\\9E \\\"\\D0\\A2\\D0\\95\\D0\\A1\\D0\\A2\\\"\\, 1,C=KZ"
        );
    }
}
