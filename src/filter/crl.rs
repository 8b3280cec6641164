//! X.509 certificate revocation lists (RFC 5280 §5): parsing, the issuer's signature, and
//! lookups by serial number. Pure: bytes in, answers out.
//!
//! NCA RK's production CRLs are large (`nca_gost_2022.crl` is about 20 MB with over 400,000
//! entries), so a [`Crl`] keeps its DER bytes and an index of entry offsets sorted by serial
//! number (4 bytes per entry) instead of an object per entry; a lookup is a binary search that
//! decodes the few entries it touches. The signature over the TBS bytes is checked once per
//! issuer key and remembered.
//!
//! What we accept, and why:
//! * complete and delta CRLs (`deltaCRLIndicator`); the caller combines them
//!   ([`super::revocation`]);
//! * `issuingDistributionPoint` scopes (user-only / CA-only) are honoured; a CRL limited to
//!   some reasons, an indirect CRL, or an entry naming another issuer (`certificateIssuer`)
//!   makes the CRL unusable rather than half-read: we would otherwise attribute entries to the
//!   wrong issuer;
//! * a critical extension we do not understand (on the CRL or an entry) makes the CRL unusable
//!   (RFC 5280 §5.2 / §5.3);
//! * entries with a negative serial number are skipped: read as a magnitude they could match a
//!   real (positive) serial.

use std::cmp::Ordering;
use std::sync::Mutex;

use super::algo::{self, AlgId};
use super::asn1::{self, Tlv};
use super::cert::{self, Cert, NameAttr};

/// keyUsage cRLSign (RFC 5280 §4.2.1.3, bit 6).
pub const KU_CRL_SIGN: u16 = 1 << 6;

/// Largest CRL we read (NCA RK's largest are about 20 MB).
pub const MAX_CRL_SIZE: usize = 128 << 20;
/// Most entries one CRL may hold.
pub const MAX_ENTRIES: usize = 8_000_000;

/// CRL reason codes (RFC 5280 §5.3.1) we act on.
pub const REASON_CERTIFICATE_HOLD: u8 = 6;
pub const REASON_REMOVE_FROM_CRL: u8 = 8;

asn1::message_error!(
    /// Why a CRL cannot be read.
    CrlError
);

impl From<asn1::Asn1Error> for CrlError {
    fn from(e: asn1::Asn1Error) -> Self {
        CrlError(e.0)
    }
}

impl From<cert::CertError> for CrlError {
    fn from(e: cert::CertError) -> Self {
        CrlError(e.0)
    }
}

fn bad<T>(msg: impl Into<String>) -> Result<T, CrlError> {
    Err(CrlError(msg.into()))
}

/// The `issuingDistributionPoint` extension (RFC 5280 §5.2.5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IssuingDistributionPoint {
    pub only_user_certs: bool,
    pub only_ca_certs: bool,
    pub only_some_reasons: bool,
    pub indirect: bool,
    pub only_attribute_certs: bool,
    /// URIs of the distribution point name, if it is a full name.
    pub uris: Vec<String>,
}

/// Issuer keys (DER SubjectPublicKeyInfo) a signature was checked against, with the outcome:
/// each CRL and OCSP response checks its signature once per issuer key.
#[derive(Default)]
pub struct Checked(Mutex<Vec<KeyOutcome>>);

/// An issuer key (DER SubjectPublicKeyInfo) and what checking a signature with it gave.
type KeyOutcome = (Vec<u8>, Result<(), String>);

impl Checked {
    /// The outcome remembered for `issuer`'s key, else that of `check` (remembered for up to
    /// 16 keys).
    pub fn outcome(
        &self,
        issuer: &Cert,
        check: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), String> {
        if let Ok(done) = self.0.lock() {
            if let Some((_, r)) = done.iter().find(|(k, _)| *k == issuer.spki) {
                return r.clone();
            }
        }
        let r = check();
        if let Ok(mut done) = self.0.lock() {
            if done.len() < 16 {
                done.push((issuer.spki.clone(), r.clone()));
            }
        }
        r
    }
}

/// One revoked certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Serial number magnitude (big-endian, no leading zeros).
    pub serial: Vec<u8>,
    /// revocationDate, seconds since the epoch.
    pub date: i64,
    /// reasonCode, if given.
    pub reason: Option<u8>,
    /// invalidityDate (when the key is known or suspected to have been compromised), if given.
    pub invalidity: Option<i64>,
}

impl Entry {
    /// The instant from which signatures by this certificate are no longer trusted: the
    /// revocation date, or the invalidity date when that is earlier.
    pub fn effective(&self) -> i64 {
        match self.invalidity {
            Some(i) if i < self.date => i,
            _ => self.date,
        }
    }
}

/// A parsed CRL.
pub struct Crl {
    /// The whole DER CertificateList.
    raw: Vec<u8>,
    /// Byte range of the DER TBSCertList in `raw` (what the issuer signed).
    tbs: (usize, usize),
    pub sig_alg: AlgId,
    pub signature: Vec<u8>,
    /// DER of the issuer Name, as in the CRL.
    pub issuer: Vec<u8>,
    pub issuer_rdns: Vec<Vec<NameAttr>>,
    pub this_update: i64,
    pub next_update: Option<i64>,
    /// cRLNumber magnitude.
    pub crl_number: Option<Vec<u8>>,
    /// BaseCRLNumber of a delta CRL (deltaCRLIndicator); None for a complete CRL.
    pub delta_base: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
    pub idp: Option<IssuingDistributionPoint>,
    /// URIs of the freshestCRL extension (where delta CRLs are published).
    pub freshest: Vec<String>,
    /// Why the CRL cannot be used for status answers (unsupported features), if so.
    pub unusable: Option<String>,
    /// Offsets of the entries in `raw`, sorted by serial number.
    index: Vec<u32>,
    /// Issuer keys (DER SubjectPublicKeyInfo) this CRL's signature was checked against.
    checked: Checked,
}

impl std::fmt::Debug for Crl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crl")
            .field("issuer", &self.issuer_string())
            .field("this_update", &self.this_update)
            .field("next_update", &self.next_update)
            .field("entries", &self.index.len())
            .field("delta", &self.delta_base.is_some())
            .finish()
    }
}

/// Orders serial magnitudes numerically (shorter is smaller; then bytes).
fn cmp_serial(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

impl Crl {
    /// Parses one DER CRL (exactly; trailing bytes are an error).
    pub fn from_der(der: &[u8]) -> Result<Crl, CrlError> {
        if der.len() > MAX_CRL_SIZE {
            return bad(format!("CRL larger than {} MiB", MAX_CRL_SIZE >> 20));
        }
        let raw = der.to_vec();
        let outer = asn1::parse_one(&raw)?;
        if outer.tag != asn1::TAG_SEQUENCE {
            return bad("CRL is not a SEQUENCE");
        }
        let mut r = outer.reader();
        let cert::Signed {
            tbs,
            sig_alg,
            signature,
        } = cert::read_signed(&mut r, "tbsCertList", "signatureValue")?;
        let Some(signature) = signature else {
            return bad("CRL signature BIT STRING has unused bits");
        };
        if !r.is_empty() {
            return bad("trailing data in CertificateList");
        }
        let tbs_range = asn1::range_in(&raw, tbs.raw);

        let mut t = tbs.reader();
        if let Some(v) = t.optional(asn1::TAG_INTEGER)? {
            let v = asn1::small_uint(&v)?;
            if v > 1 {
                return bad(format!("CRL version {} is not supported", v + 1));
            }
        }
        let inner_alg = AlgId::from_tlv(&t.expect(asn1::TAG_SEQUENCE, "signature")?)?;
        if inner_alg.oid != sig_alg.oid {
            return bad("signature algorithm inside and outside the TBSCertList differ");
        }
        let issuer = t.expect(asn1::TAG_SEQUENCE, "issuer")?;
        let this_update = asn1::read_time(&t.next_tlv()?)?;
        let mut next_update = None;
        if let Some(n) = t.peek() {
            if n.tag == asn1::TAG_UTC_TIME || n.tag == asn1::TAG_GENERALIZED_TIME {
                next_update = Some(asn1::read_time(&t.next_tlv()?)?);
            }
        }
        let revoked = t.optional(asn1::TAG_SEQUENCE)?;
        let exts = t.optional(0xA0)?;
        if !t.is_empty() {
            return bad("unexpected element in TBSCertList");
        }

        let mut crl = Crl {
            tbs: tbs_range,
            sig_alg,
            signature,
            issuer: issuer.raw.to_vec(),
            issuer_rdns: cert::parse_name(&issuer)?,
            this_update,
            next_update,
            crl_number: None,
            delta_base: None,
            authority_key_id: None,
            idp: None,
            freshest: Vec::new(),
            unusable: None,
            index: Vec::new(),
            checked: Checked::default(),
            raw: Vec::new(),
        };
        if let Some(exts) = exts {
            let seq = asn1::parse_one(exts.value)?;
            for ext in seq.children()? {
                crl.extension(&ext)?;
            }
        }
        if let Some(list) = revoked {
            let (index, unusable) = index_entries(&raw, &list)?;
            crl.index = index;
            if crl.unusable.is_none() {
                crl.unusable = unusable;
            }
        }
        crl.raw = raw;
        Ok(crl)
    }

    /// Parses every CRL in PEM text (`X509 CRL` blocks) or one DER CRL.
    pub fn parse_any(data: &[u8]) -> Result<Vec<Crl>, CrlError> {
        let skip = data.iter().take_while(|b| b.is_ascii_whitespace()).count();
        super::cms::pem_or_der(&data[skip..], &["X509 CRL"], "CRL", Crl::from_der, CrlError)
    }

    fn extension(&mut self, ext: &Tlv<'_>) -> Result<(), CrlError> {
        let cert::Extension {
            oid,
            critical,
            value,
        } = cert::read_extension(ext)?;
        match oid.as_str() {
            // cRLNumber
            "2.5.29.20" => {
                let n = asn1::parse_one(value)?;
                if n.tag != asn1::TAG_INTEGER {
                    return bad("bad cRLNumber");
                }
                self.crl_number = Some(asn1::integer_bytes(n.value).to_vec());
            }
            // deltaCRLIndicator
            "2.5.29.27" => {
                let n = asn1::parse_one(value)?;
                if n.tag != asn1::TAG_INTEGER {
                    return bad("bad deltaCRLIndicator");
                }
                self.delta_base = Some(asn1::integer_bytes(n.value).to_vec());
            }
            // authorityKeyIdentifier
            "2.5.29.35" => {
                let seq = asn1::parse_one(value)?;
                for f in seq.children()? {
                    if f.tag == 0x80 {
                        self.authority_key_id = Some(f.value.to_vec());
                    }
                }
            }
            // issuingDistributionPoint
            "2.5.29.28" => {
                let seq = asn1::parse_one(value)?;
                let mut idp = IssuingDistributionPoint::default();
                let flag = |f: &Tlv<'_>| f.value.first().is_some_and(|&v| v != 0);
                for f in seq.children()? {
                    match f.tag {
                        0xA0 => idp.uris = dp_name_uris(&f)?,
                        0x81 => idp.only_user_certs = flag(&f),
                        0x82 => idp.only_ca_certs = flag(&f),
                        0x83 => idp.only_some_reasons = true,
                        0x84 => idp.indirect = flag(&f),
                        0x85 => idp.only_attribute_certs = flag(&f),
                        _ => {}
                    }
                }
                self.idp = Some(idp);
            }
            // freshestCRL
            "2.5.29.46" => self.freshest = distribution_point_uris(value)?,
            // issuerAltName, authorityInfoAccess, expiredCertsOnCRL: informative.
            "2.5.29.18" | "1.3.6.1.5.5.7.1.1" | "2.5.29.60" => {}
            other => {
                if critical && self.unusable.is_none() {
                    self.unusable = Some(format!("unsupported critical CRL extension {other}"));
                }
            }
        }
        Ok(())
    }

    /// The DER TBSCertList (what the issuer signed).
    pub fn tbs(&self) -> &[u8] {
        &self.raw[self.tbs.0..self.tbs.1]
    }

    /// The whole DER CRL.
    pub fn der(&self) -> &[u8] {
        &self.raw
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn is_delta(&self) -> bool {
        self.delta_base.is_some()
    }

    /// The issuer in RFC 4514 form.
    pub fn issuer_string(&self) -> String {
        cert::rfc4514(&self.issuer_rdns, false)
    }

    /// Whether this CRL was the current one at `at` (or is newer): its nextUpdate is not
    /// before `at`. A CRL without nextUpdate speaks only for times up to its thisUpdate.
    pub fn covers(&self, at: i64) -> bool {
        match self.next_update {
            Some(n) => n >= at,
            None => self.this_update >= at,
        }
    }

    /// Whether this CRL's scope includes `cert` (RFC 5280 §5.2.5, §6.3.3 (b)).
    pub fn scope_includes(&self, cert: &Cert) -> Result<(), String> {
        if let Some(why) = &self.unusable {
            return Err(why.clone());
        }
        let Some(idp) = &self.idp else {
            return Ok(());
        };
        let is_ca = matches!(cert.basic_constraints, Some((true, _)));
        if idp.indirect {
            return Err("indirect CRLs are not supported".into());
        }
        if idp.only_some_reasons {
            return Err("the CRL covers only some revocation reasons".into());
        }
        if idp.only_attribute_certs {
            return Err("the CRL covers only attribute certificates".into());
        }
        if idp.only_user_certs && is_ca {
            return Err("the CRL covers only end-entity certificates".into());
        }
        if idp.only_ca_certs && !is_ca {
            return Err("the CRL covers only CA certificates".into());
        }
        Ok(())
    }

    /// The entry for a serial number (magnitude), if the CRL lists it.
    pub fn lookup(&self, serial: &[u8]) -> Option<Entry> {
        let serial = asn1::integer_bytes(serial);
        let pos = self
            .index
            .binary_search_by(|&off| {
                entry_serial(&self.raw, off)
                    .map(|s| cmp_serial(s, serial))
                    .unwrap_or(Ordering::Less)
            })
            .ok()?;
        let off = *self.index.get(pos)?;
        parse_entry(&self.raw, off).ok()
    }

    /// All entries (for listings and tests).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.index
            .iter()
            .filter_map(|&off| parse_entry(&self.raw, off).ok())
    }

    /// Checks that `issuer` issued this CRL: names equal, key identifiers agree when both are
    /// present, keyUsage allows cRLSign when present, and the signature verifies with its key
    /// (through the same algorithm dispatch as certificates: RSA, ECDSA, GOST). The answer is
    /// remembered per issuer key.
    pub fn verify_signature(&self, issuer: &Cert) -> Result<(), String> {
        self.checked
            .outcome(issuer, || self.verify_uncached(issuer))
    }

    fn verify_uncached(&self, issuer: &Cert) -> Result<(), String> {
        if self.issuer != issuer.subject {
            return Err(format!(
                "the CRL is issued by {}, not by {}",
                self.issuer_string(),
                issuer.subject_string()
            ));
        }
        if let (Some(aki), Some(ski)) = (&self.authority_key_id, &issuer.subject_key_id) {
            if aki != ski {
                return Err(format!(
                    "the CRL of {} is signed with another key of that CA",
                    self.issuer_string()
                ));
            }
        }
        if let Some(ku) = issuer.key_usage {
            if ku & KU_CRL_SIGN == 0 {
                return Err(format!(
                    "{} may not sign CRLs (keyUsage)",
                    issuer.display_name()
                ));
            }
        }
        let scheme = algo::scheme_for_cert(&self.sig_alg).map_err(|e| e.to_string())?;
        algo::verify(&scheme, &issuer.spki, self.tbs(), &self.signature).map_err(|e| match e {
            algo::AlgError::BadSignature => format!(
                "the signature on the CRL of {} does not verify",
                self.issuer_string()
            ),
            other => format!("CRL of {}: {other}", self.issuer_string()),
        })
    }
}

/// Reads the revokedCertificates list: sorted offsets of the entries, and why the CRL is
/// unusable if an entry has a feature we do not support.
fn index_entries(raw: &[u8], list: &Tlv<'_>) -> Result<(Vec<u32>, Option<String>), CrlError> {
    let mut index: Vec<u32> = Vec::new();
    let mut unusable = None;
    let mut r = list.reader();
    while !r.is_empty() {
        let e = r.next_tlv()?;
        if e.tag != asn1::TAG_SEQUENCE {
            return bad("CRL entry is not a SEQUENCE");
        }
        if index.len() >= MAX_ENTRIES {
            return bad(format!("more than {MAX_ENTRIES} CRL entries"));
        }
        let mut er = e.reader();
        let serial = er.expect(asn1::TAG_INTEGER, "userCertificate")?;
        let date = er.next_tlv()?;
        asn1::read_time(&date)?;
        if let Some(exts) = er.optional(asn1::TAG_SEQUENCE)? {
            for ext in exts.children()? {
                let (oid, critical) = cert::extension_head(&mut ext.reader())?;
                match oid.as_str() {
                    "2.5.29.21" | "2.5.29.24" => {}
                    // certificateIssuer: the entry belongs to another CA (indirect CRL).
                    "2.5.29.29" => {
                        unusable.get_or_insert_with(|| {
                            "entries for other issuers (indirect CRL) are not supported".to_string()
                        });
                    }
                    other if critical => {
                        unusable.get_or_insert_with(|| {
                            format!("unsupported critical CRL entry extension {other}")
                        });
                    }
                    _ => {}
                }
            }
        }
        if serial.value.first().is_some_and(|&b| b & 0x80 != 0) {
            continue; // negative serial: never a real certificate's
        }
        let off = asn1::offset_in(raw, e.raw);
        let off = u32::try_from(off).map_err(|_| CrlError("CRL too large".into()))?;
        index.push(off);
    }
    index.sort_by(
        |&a, &b| match (entry_serial(raw, a), entry_serial(raw, b)) {
            (Some(x), Some(y)) => cmp_serial(x, y),
            _ => Ordering::Equal,
        },
    );
    Ok((index, unusable))
}

/// The serial magnitude of the entry at `off`.
fn entry_serial(raw: &[u8], off: u32) -> Option<&[u8]> {
    let rest = raw.get(off as usize..)?;
    let mut r = asn1::Reader::new(rest);
    let e = r.next_tlv().ok()?;
    let mut er = e.reader();
    let s = er.expect(asn1::TAG_INTEGER, "serial").ok()?;
    Some(asn1::integer_bytes(s.value))
}

fn parse_entry(raw: &[u8], off: u32) -> Result<Entry, CrlError> {
    let rest = raw
        .get(off as usize..)
        .ok_or_else(|| CrlError("bad entry offset".into()))?;
    let mut r = asn1::Reader::new(rest);
    let e = r.next_tlv()?;
    let mut er = e.reader();
    let serial = er.expect(asn1::TAG_INTEGER, "userCertificate")?;
    let date = asn1::read_time(&er.next_tlv()?)?;
    let mut entry = Entry {
        serial: asn1::integer_bytes(serial.value).to_vec(),
        date,
        reason: None,
        invalidity: None,
    };
    if let Some(exts) = er.optional(asn1::TAG_SEQUENCE)? {
        for ext in exts.children()? {
            let cert::Extension { oid, value, .. } = cert::read_extension(&ext)?;
            match oid.as_str() {
                "2.5.29.21" => {
                    let v = asn1::parse_one(value)?;
                    // CRLReason ::= ENUMERATED
                    if v.tag == 0x0A && v.value.len() == 1 {
                        entry.reason = Some(v.value[0]);
                    }
                }
                "2.5.29.24" => {
                    let v = asn1::parse_one(value)?;
                    entry.invalidity = asn1::read_time(&v).ok();
                }
                _ => {}
            }
        }
    }
    Ok(entry)
}

/// URIs of a DistributionPointName `[0]` element (fullName GeneralNames, uniformResourceIdentifier).
fn dp_name_uris(dpn: &Tlv<'_>) -> Result<Vec<String>, CrlError> {
    let mut out = Vec::new();
    for name in dpn.children()? {
        // fullName [0] GeneralNames; nameRelativeToCRLIssuer [1] is not a URI.
        if name.tag == 0xA0 {
            for gn in name.children()? {
                if gn.tag == 0x86 {
                    if let Ok(s) = std::str::from_utf8(gn.value) {
                        out.push(s.to_string());
                    }
                }
            }
        }
    }
    Ok(out)
}

/// URIs in a CRLDistributionPoints / FreshestCRL extension value (RFC 5280 §4.2.1.13).
pub fn distribution_point_uris(value: &[u8]) -> Result<Vec<String>, CrlError> {
    let seq = asn1::parse_one(value)?;
    if seq.tag != asn1::TAG_SEQUENCE {
        return bad("bad CRL distribution points");
    }
    let mut out = Vec::new();
    for dp in seq.children()? {
        for f in dp.children()? {
            if f.tag == 0xA0 {
                out.extend(dp_name_uris(&f)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::cert::fixtures::{cert, hex, nca};

    #[test]
    fn nca_rsa_test_crl() {
        let crl = Crl::parse_any(&nca("crl/ncanode_nca_rsa_test.crl"))
            .unwrap()
            .remove(0);
        assert_eq!(crl.len(), 126);
        assert!(!crl.is_delta());
        assert_eq!(crl.issuer_string(), "CN=ҰКО 3.0 (RSA TEST),C=KZ");
        // Mar 29 04:18:29 2022 GMT → Sep 25 04:18:29 2022 GMT
        assert_eq!(crl.this_update, 1_648_527_509);
        assert_eq!(crl.next_update, Some(1_664_079_509));
        let e = crl
            .lookup(&hex("46757A2158A604189C40FB1FCDAB1143F83F32DB"))
            .expect("revoked RSA test certificate listed");
        assert_eq!(e.date, 1_642_480_824); // Jan 18 04:40:24 2022 GMT
        assert!(crl
            .lookup(&hex("41E45CC8A04C705963E5CD6769848A934D8EAEF5"))
            .is_none());
        // Every entry is found by its own serial.
        for e in crl.entries() {
            assert_eq!(crl.lookup(&e.serial).unwrap(), e);
        }
        let issuer = cert("ca/nca_rsa_test.pem");
        crl.verify_signature(&issuer).unwrap();
        let root = cert("ca/root_rsa_test.pem");
        assert!(crl.verify_signature(&root).is_err());
    }

    #[test]
    fn nca_gost_crls_verify_with_gost_issuers() {
        for (file, issuer, revoked) in [
            (
                "crl/ncanode_nca_gost_test.crl",
                "ca/nca_gost_test.pem",
                "12E3E7B9966D09EB9CDA64251457E815C2A8DDED",
            ),
            (
                "crl/ncanode_nca_gost2022_test.crl",
                "ca/nca_gost2022_test.cer",
                "3A90343E720594C55204B19CB9A402422EF0E622",
            ),
        ] {
            let crl = Crl::parse_any(&nca(file)).unwrap().remove(0);
            crl.verify_signature(&cert(issuer))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(crl.lookup(&hex(revoked)).is_some(), "{file}");
        }
        let jhs = Crl::parse_any(&nca("crl/jhs_nca_gost_test_2022.crl"))
            .unwrap()
            .remove(0);
        assert_eq!(jhs.len(), 40);
        jhs.verify_signature(&cert("ca/nca_gost2022_test.cer"))
            .unwrap();
    }

    #[test]
    fn broken_signature_is_rejected() {
        let mut der = nca("crl/ncanode_nca_rsa_test.crl");
        let n = der.len();
        der[n - 10] ^= 0x01;
        let crl = Crl::from_der(&der).unwrap();
        let e = crl
            .verify_signature(&cert("ca/nca_rsa_test.pem"))
            .unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        let mut der = nca("crl/ncanode_nca_gost2022_test.crl");
        let n = der.len();
        der[n - 5] ^= 0x40;
        let crl = Crl::from_der(&der).unwrap();
        assert!(crl
            .verify_signature(&cert("ca/nca_gost2022_test.cer"))
            .is_err());
    }

    #[test]
    fn pem_and_garbage() {
        use base64::Engine;
        let der = nca("crl/ncanode_nca_rsa_test.crl");
        let pem = format!(
            "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert_eq!(Crl::parse_any(pem.as_bytes()).unwrap()[0].len(), 126);
        for junk in [
            &b""[..],
            b"\x30",
            b"\x30\x03\x02\x01\x00",
            b"hello",
            &der[..100],
        ] {
            assert!(Crl::parse_any(junk).is_err());
        }
        // Truncations never panic.
        for cut in (0..der.len()).step_by(97) {
            let _ = Crl::from_der(&der[..cut]);
        }
    }
}
