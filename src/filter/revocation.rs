//! Revocation answers from CRLs and OCSP responses that are already at hand: the pure half of
//! revocation checking. Fetching and caching is [`crate::revocation`]'s job; this module decides
//! what the material says about one certificate at one instant, and reads the material a CMS
//! carries itself (RFC 5940 `crls` field, CAdES `revocationValues`, Adobe's
//! `adbe-revocationInfoArchival`).
//!
//! The decision for a certificate `cert` issued by `issuer` at the validation time `at`:
//! * only material whose signature verifies with `issuer`'s key is considered (for OCSP, or
//!   with a delegated responder `issuer` certified; see [`super::ocsp`]);
//! * an OCSP SingleResponse speaks for `at` when its thisUpdate is not older than `at` minus
//!   [`OCSP_MAX_AGE`], or its nextUpdate is not before `at`;
//! * a complete CRL speaks for `at` when its nextUpdate is not before `at` (it was current
//!   then, or was issued later); the newest such CRL is read, with the newest delta CRL based
//!   on it (`removeFromCRL` entries lift a hold);
//! * a permanent revocation (any reason but certificateHold) dated at or before `at` counts
//!   from any verified source, current or not;
//! * answers combine to the worst: revoked before `at` > revoked after `at` > good. With no
//!   answer at all the status is unknown, with the reasons.

use std::sync::Arc;

use super::asn1;
use super::cert::{self, Cert};
use super::chain::{RevocationSource, RevocationStatus};
use super::cms::SignedData;
use super::crl::{self, Crl, REASON_CERTIFICATE_HOLD, REASON_REMOVE_FROM_CRL};
use super::ocsp::{self, BasicResponse, CertStatus};
use super::report::rfc3339;

/// How long an OCSP answer without nextUpdate is taken to hold (NCA RK's responder sends no
/// nextUpdate): ten minutes.
pub const OCSP_MAX_AGE: i64 = 600;

const OID_RI_OCSP_RESPONSE: &str = "1.3.6.1.5.5.7.16.2";
const OID_REVOCATION_VALUES: &str = "1.2.840.113549.1.9.16.2.24";
const OID_ADBE_REVOCATION: &str = "1.2.840.113583.1.1.8";
const OID_CRL_DISTRIBUTION_POINTS: &str = "2.5.29.31";
const OID_FRESHEST_CRL: &str = "2.5.29.46";
const OID_AUTHORITY_INFO_ACCESS: &str = "1.3.6.1.5.5.7.1.1";
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

/// CRLs and OCSP responses (not yet verified: [`decide`] verifies what it uses).
#[derive(Debug, Default, Clone)]
pub struct Material {
    pub crls: Vec<Arc<Crl>>,
    pub ocsp: Vec<Arc<BasicResponse>>,
}

impl Material {
    pub fn is_empty(&self) -> bool {
        self.crls.is_empty() && self.ocsp.is_empty()
    }

    /// The revocation values a SignedData carries: its `crls` field, each signer's CAdES
    /// `revocationValues` (unsigned) and Adobe `adbe-revocationInfoArchival` (signed)
    /// attributes. Unreadable items are skipped (they could only make a status unknown).
    pub fn from_signed_data(sd: &SignedData) -> Material {
        let mut m = Material::default();
        for choice in &sd.revocation_info {
            let Ok(t) = asn1::parse_one(choice) else {
                continue;
            };
            match t.tag {
                asn1::TAG_SEQUENCE => m.add_crl(t.raw),
                // [1] OtherRevocationInfoFormat { otherRevInfoFormat, otherRevInfo }
                0xA1 => {
                    let mut r = t.reader();
                    let is_ocsp = r
                        .next_tlv()
                        .ok()
                        .and_then(|o| asn1::read_oid(&o).ok())
                        .is_some_and(|o| o == OID_RI_OCSP_RESPONSE);
                    if let (true, Ok(v)) = (is_ocsp, r.next_tlv()) {
                        m.add_ocsp(v.raw);
                    }
                }
                _ => {}
            }
        }
        for si in sd.signers.iter().flatten() {
            for (oid, values) in &si.unsigned_attrs {
                if oid == OID_REVOCATION_VALUES {
                    for v in values {
                        m.add_archive(v);
                    }
                }
            }
            if let Some(attrs) = &si.signed_attrs {
                for (oid, value) in attributes(attrs) {
                    if oid == OID_ADBE_REVOCATION {
                        m.add_archive(value);
                    }
                }
            }
        }
        m
    }

    const MAX_ITEMS: usize = 16;

    fn add_crl(&mut self, der: &[u8]) {
        if self.crls.len() < Self::MAX_ITEMS {
            match Crl::from_der(der) {
                Ok(c) => self.crls.push(Arc::new(c)),
                Err(e) => tracing::debug!("skipping an embedded CRL: {e}"),
            }
        }
    }

    fn add_ocsp(&mut self, der: &[u8]) {
        if self.ocsp.len() < Self::MAX_ITEMS {
            match ocsp::parse_any(der) {
                Ok(r) => self.ocsp.push(Arc::new(r)),
                Err(e) => tracing::debug!("skipping an embedded OCSP response: {e}"),
            }
        }
    }

    /// RevocationValues (CAdES, RFC 5126 §6.3.4) or RevocationInfoArchival (Adobe): a SEQUENCE
    /// with `[0]` CRLs and `[1]` OCSP responses (basic or full), each EXPLICIT SEQUENCE OF.
    fn add_archive(&mut self, der: &[u8]) {
        let Ok(t) = asn1::parse_one(der) else {
            return;
        };
        let Ok(fields) = t.children() else {
            return;
        };
        for f in fields {
            let Ok(list) = asn1::parse_one(f.value) else {
                continue;
            };
            let Ok(items) = list.children() else {
                continue;
            };
            for item in items {
                if f.is_context(0) {
                    self.add_crl(item.raw);
                } else if f.is_context(1) {
                    self.add_ocsp(item.raw);
                }
            }
        }
    }

    /// What this material says about `cert` at `at` (see the module comment).
    pub fn decide(&self, cert: &Cert, issuer: &Cert, at: i64) -> RevocationStatus {
        let crls: Vec<&Crl> = self.crls.iter().map(|c| c.as_ref()).collect();
        let ocsp: Vec<&BasicResponse> = self.ocsp.iter().map(|r| r.as_ref()).collect();
        decide(cert, issuer, at, &crls, &ocsp)
    }
}

impl RevocationSource for Material {
    fn status(&self, cert: &Cert, issuer: &Cert, at: i64) -> RevocationStatus {
        self.decide(cert, issuer, at)
    }
}

/// The material a CMS carries, consulted before another source (the one fetching and caching):
/// when it answers, that answer stands and nothing is fetched. When the other source does not
/// check revocation at all (`revocation = "off"`), neither does this.
pub struct Layered<'a> {
    pub first: &'a Material,
    pub then: &'a dyn RevocationSource,
}

impl RevocationSource for Layered<'_> {
    fn status(&self, cert: &Cert, issuer: &Cert, at: i64) -> RevocationStatus {
        if !self.then.checks() || self.first.is_empty() {
            return self.then.status(cert, issuer, at);
        }
        match self.first.decide(cert, issuer, at) {
            RevocationStatus::Unknown(_) => self.then.status(cert, issuer, at),
            known => known,
        }
    }

    fn checks(&self) -> bool {
        self.then.checks()
    }
}

/// The decision over CRLs and OCSP responses (see the module comment).
pub fn decide(
    cert: &Cert,
    issuer: &Cert,
    at: i64,
    crls: &[&Crl],
    ocsp: &[&BasicResponse],
) -> RevocationStatus {
    let mut answers: Vec<RevocationStatus> = Vec::new();
    let mut why: Vec<String> = Vec::new();

    for r in ocsp {
        let Some(s) = r.find(cert, issuer) else {
            continue;
        };
        if let Err(e) = r.verify(issuer) {
            why.push(e);
            continue;
        }
        let covers = s.this_update >= at.saturating_sub(OCSP_MAX_AGE)
            || s.next_update.is_some_and(|n| n >= at);
        match s.status {
            CertStatus::Good if covers => answers.push(RevocationStatus::Good),
            CertStatus::Good => why.push(format!(
                "the OCSP answer of {} is older than the validation time {}",
                rfc3339(s.this_update),
                rfc3339(at)
            )),
            CertStatus::Revoked { time, reason } => {
                let hold = reason == Some(REASON_CERTIFICATE_HOLD);
                if time <= at && (covers || !hold) {
                    answers.push(RevocationStatus::Revoked { at: time });
                } else if time > at && covers {
                    answers.push(RevocationStatus::RevokedLater { at: time });
                } else {
                    why.push(format!(
                        "the OCSP answer of {} is older than the validation time {}",
                        rfc3339(s.this_update),
                        rfc3339(at)
                    ));
                }
            }
            CertStatus::Unknown => why.push(format!(
                "the OCSP responder {} does not know the certificate",
                r.responder_name()
            )),
        }
    }

    // CRLs of this issuer whose signature verifies and whose scope includes the certificate.
    let mut complete: Vec<&Crl> = Vec::new();
    let mut deltas: Vec<&Crl> = Vec::new();
    for c in crls {
        if c.issuer != cert.issuer {
            continue;
        }
        if let Err(e) = c
            .scope_includes(cert)
            .and_then(|_| c.verify_signature(issuer))
        {
            why.push(e);
            continue;
        }
        if c.is_delta() {
            deltas.push(c);
        } else {
            complete.push(c);
        }
    }
    // A permanent revocation dated before `at` counts from any verified CRL.
    for c in complete.iter().chain(deltas.iter()) {
        if let Some(e) = c.lookup(&cert.serial) {
            let permanent = !matches!(
                e.reason,
                Some(REASON_CERTIFICATE_HOLD) | Some(REASON_REMOVE_FROM_CRL)
            );
            if permanent && e.effective() <= at {
                answers.push(RevocationStatus::Revoked { at: e.effective() });
            }
        }
    }
    let current = complete
        .iter()
        .filter(|c| c.covers(at))
        .max_by_key(|c| c.this_update);
    match current {
        Some(base) => {
            let mut entry = base.lookup(&cert.serial);
            let delta = deltas
                .iter()
                .filter(|d| {
                    d.this_update >= base.this_update
                        && match (&d.delta_base, &base.crl_number) {
                            (Some(b), Some(n)) => cmp_number(b, n).is_le(),
                            _ => false,
                        }
                })
                .max_by_key(|d| d.this_update);
            if let Some(d) = delta {
                if let Some(e) = d.lookup(&cert.serial) {
                    entry = if e.reason == Some(REASON_REMOVE_FROM_CRL) {
                        None
                    } else {
                        Some(e)
                    };
                }
            }
            answers.push(match entry {
                Some(e) if e.effective() <= at => RevocationStatus::Revoked { at: e.effective() },
                Some(e) => RevocationStatus::RevokedLater { at: e.effective() },
                None => RevocationStatus::Good,
            });
        }
        None => {
            if let Some(newest) = complete.iter().max_by_key(|c| c.this_update) {
                why.push(format!(
                    "the newest CRL of {} (next update {}) is older than the validation time {}",
                    newest.issuer_string(),
                    newest
                        .next_update
                        .map(rfc3339)
                        .unwrap_or_else(|| "not given".into()),
                    rfc3339(at)
                ));
            }
        }
    }

    if let Some(first) = answers
        .iter()
        .filter_map(|a| match a {
            RevocationStatus::Revoked { at } => Some(*at),
            _ => None,
        })
        .min()
    {
        return RevocationStatus::Revoked { at: first };
    }
    if let Some(a) = answers
        .iter()
        .find(|a| matches!(a, RevocationStatus::RevokedLater { .. }))
    {
        return a.clone();
    }
    if answers.contains(&RevocationStatus::Good) {
        return RevocationStatus::Good;
    }
    why.dedup();
    if why.is_empty() {
        why.push(format!(
            "no CRL or OCSP answer for the certificate of {}",
            cert.display_name()
        ));
    }
    RevocationStatus::Unknown(why.join("; "))
}

/// Orders two INTEGER magnitudes numerically.
fn cmp_number(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let (a, b) = (asn1::integer_bytes(a), asn1::integer_bytes(b));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// (OID, DER of the first value) of each attribute in a DER SET OF Attribute.
fn attributes(set_der: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let Ok(set) = asn1::parse_one(set_der) else {
        return out;
    };
    let Ok(attrs) = set.children() else {
        return out;
    };
    for a in attrs {
        let mut r = a.reader();
        let Some(oid) = r.next_tlv().ok().and_then(|o| asn1::read_oid(&o).ok()) else {
            continue;
        };
        let Some(values) = r.next_tlv().ok() else {
            continue;
        };
        if let Some(first) = values.children().ok().and_then(|v| v.into_iter().next()) {
            out.push((oid, first.raw));
        }
    }
    out
}

/// Where a certificate says its status is published.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locations {
    /// cRLDistributionPoints URIs.
    pub crl: Vec<String>,
    /// freshestCRL URIs (delta CRLs).
    pub delta: Vec<String>,
    /// authorityInfoAccess OCSP URIs.
    pub ocsp: Vec<String>,
}

/// Reads cRLDistributionPoints, freshestCRL and the OCSP entries of authorityInfoAccess from a
/// certificate. Malformed extensions give no locations.
pub fn locations(cert: &Cert) -> Locations {
    let mut loc = Locations::default();
    for (oid, value) in extensions(&cert.tbs) {
        match oid.as_str() {
            OID_CRL_DISTRIBUTION_POINTS => {
                loc.crl = crl::distribution_point_uris(value).unwrap_or_default()
            }
            OID_FRESHEST_CRL => loc.delta = crl::distribution_point_uris(value).unwrap_or_default(),
            OID_AUTHORITY_INFO_ACCESS => {
                let Ok(seq) = asn1::parse_one(value) else {
                    continue;
                };
                for ad in seq.children().unwrap_or_default() {
                    let mut r = ad.reader();
                    let method = r.next_tlv().ok().and_then(|o| asn1::read_oid(&o).ok());
                    let Ok(name) = r.next_tlv() else {
                        continue;
                    };
                    if method.as_deref() == Some(OID_AD_OCSP) && name.tag == 0x86 {
                        if let Ok(s) = std::str::from_utf8(name.value) {
                            loc.ocsp.push(s.to_string());
                        }
                    }
                }
            }
            _ => {}
        }
    }
    loc
}

/// (OID, extnValue contents) of each extension in a DER TBSCertificate.
fn extensions(tbs: &[u8]) -> Vec<(String, &[u8])> {
    let mut out = Vec::new();
    let Ok(t) = asn1::parse_one(tbs) else {
        return out;
    };
    let Ok(fields) = t.children() else {
        return out;
    };
    let Some(exts) = fields.iter().find(|f| f.tag == 0xA3) else {
        return out;
    };
    let Ok(seq) = asn1::parse_one(exts.value) else {
        return out;
    };
    for ext in seq.children().unwrap_or_default() {
        if let Ok(e) = cert::read_extension(&ext) {
            out.push((e.oid, e.value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::cert::fixtures::{cert, nca};

    fn crl(path: &str) -> Arc<Crl> {
        Arc::new(Crl::parse_any(&nca(path)).unwrap().remove(0))
    }

    fn t(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn locations_of_nca_certificates() {
        let l = locations(&cert("certs/gokalkan_gost1_2023.pem"));
        assert_eq!(l.crl, ["http://test.pki.gov.kz/crl/nca_gost2022_test.crl"]);
        assert_eq!(l.ocsp, ["http://test.pki.gov.kz/ocsp/"]);
        let tsa = locations(&cert("certs/prod_tsa_rsa2022.cer"));
        assert_eq!(tsa.crl, ["http://crl.pki.gov.kz/nca_rsa_2022.crl"]);
        assert_eq!(tsa.ocsp, ["http://ocsp.pki.gov.kz"]);
    }

    #[test]
    fn rsa_crl_decisions() {
        let m = Material {
            crls: vec![crl("crl/ncanode_nca_rsa_test.crl")],
            ocsp: vec![],
        };
        let issuer = cert("ca/nca_rsa_test.pem");
        let good = cert("certs/ncanode_individual_sign_rsa_2022.cer");
        // Inside the CRL's period: good.
        assert_eq!(
            m.decide(&good, &issuer, t("2022-09-20T00:00:00Z")),
            RevocationStatus::Good
        );
        // After its nextUpdate: unknown.
        assert!(matches!(
            m.decide(&good, &issuer, t("2022-10-20T00:00:00Z")),
            RevocationStatus::Unknown(_)
        ));
        // A certificate of another CA: unknown.
        let other = cert("certs/gokalkan_gost1_2023.pem");
        let other_issuer = cert("ca/nca_gost2022_test.cer");
        assert!(matches!(
            m.decide(&other, &other_issuer, t("2022-09-20T00:00:00Z")),
            RevocationStatus::Unknown(_)
        ));
    }

    #[test]
    fn real_ocsp_answers() {
        let good = Material {
            crls: vec![],
            ocsp: vec![Arc::new(
                ocsp::parse_response(&nca("ocsp/ncanode_ocsp_response_individual_2015.bin"))
                    .unwrap(),
            )],
        };
        // The GOST-2015 signer of the NCANode two-signer samples, on hold since 1970.
        let sd = crate::filter::cms::parse(&nca("cms/ncanode_attached_2signers_rsa+gost2015.p7s"))
            .unwrap();
        let gost = sd
            .certs
            .iter()
            .find(|c| asn1::hex(&c.serial) == "0ff06211dc82beb00253ffa000f1de84abef454f")
            .unwrap();
        let issuer = cert("ca/nca_gost2022_test.cer");
        assert_eq!(
            good.decide(gost, &issuer, t("2022-09-01T00:00:00Z")),
            RevocationStatus::Revoked { at: 0 }
        );
        // Long after the answer (a hold may have been lifted since): unknown.
        assert!(matches!(
            good.decide(gost, &issuer, t("2023-06-01T00:00:00Z")),
            RevocationStatus::Unknown(_)
        ));
    }
}
