//! DANE for SMTP (RFC 7672): TLSA records, published under DNSSEC, say which certificate an MX
//! host presents on port 25; a sender that finds them requires STARTTLS and checks the
//! certificate against them instead of trusting any CA.
//!
//! - Lookups go through a DNSSEC-validating hickory resolver (same server as
//!   `delivery.resolver`; trust anchors: the IANA root keys, plus the DNSKEY records of
//!   `delivery.dnssec_trust_anchor` for private or test zones). DANE is only used while
//!   validation works: a probe ([`Dane::active`]) asks for the DNSKEY set of the first trust
//!   anchor's zone and must get a secure answer; a resolver that strips DNSSEC data turns DANE
//!   off (logged) rather than deferring all mail.
//! - RFC 7672 §2.2.1: the MX RRset of the recipient domain must be secure for its hosts' TLSA
//!   records to be used (the implicit MX, a domain without MX records, counts as secure when
//!   the denial is). A bogus MX answer defers the domain.
//! - §2.2: per MX host, `_25._tcp.<host>` TLSA: secure and usable → DANE applies to that host;
//!   NXDOMAIN/NODATA, insecure, or no usable record → as without DANE; bogus or a failed lookup →
//!   that host is not used (the message waits).
//! - §3.1: only DANE-TA(2) and DANE-EE(3) are usable for SMTP (PKIX usages 0 and 1 are not);
//!   selectors Cert(0)/SPKI(1); matching Full(0)/SHA-256(1)/SHA-512(2) (RFC 6698 §2.1).
//!   DANE-EE: the leaf alone, no name or validity check (§3.1.1). DANE-TA: the matching
//!   certificate must be in the presented chain and become the one trust anchor of an ordinary
//!   chain check (signatures, validity) for the MX host name, the TLSA base domain (§3.2.2,
//!   §3.2.3).
//! - RFC 8461 §2: where DANE applies to a host, MTA-STS does not (checked by the caller).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::{Algorithm, Proof, PublicKeyBuf, TrustAnchors};
use hickory_resolver::proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_resolver::proto::rr::{LowerName, Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;

use super::mx::Target;
use super::verify::Failure;
use crate::config::DeliveryConfig;

/// TLSA records kept per host, at most (more are ignored; real RRsets have 1 to 4).
const MAX_TLSA: usize = 16;
/// Trust anchor file size, at most.
const MAX_ANCHOR_FILE: u64 = 64 * 1024;
/// How long a probe result is believed.
const PROBE_OK_FOR: Duration = Duration::from_secs(3600);
const PROBE_FAILED_FOR: Duration = Duration::from_secs(300);

/// One usable TLSA record (RFC 6698 §2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// 2 (DANE-TA) or 3 (DANE-EE).
    pub usage: u8,
    /// 0 (full certificate) or 1 (SubjectPublicKeyInfo).
    pub selector: u8,
    /// 0 (exact), 1 (SHA-256), 2 (SHA-512).
    pub matching: u8,
    pub data: Vec<u8>,
}

impl Tlsa {
    /// The record when Tanba can use it for SMTP (RFC 7672 §3.1), else None.
    pub fn usable(usage: u8, selector: u8, matching: u8, data: &[u8]) -> Option<Tlsa> {
        let len_ok = match matching {
            0 => !data.is_empty(),
            1 => data.len() == 32,
            2 => data.len() == 64,
            _ => false,
        };
        (matches!(usage, 2 | 3) && selector <= 1 && len_ok).then(|| Tlsa {
            usage,
            selector,
            matching,
            data: data.to_vec(),
        })
    }

    /// Whether `cert` (DER) is what this record names.
    fn matches(&self, cert: &[u8]) -> bool {
        let selected = match self.selector {
            0 => cert.to_vec(),
            _ => match spki(cert) {
                Some(s) => s,
                None => return false,
            },
        };
        match self.matching {
            0 => selected == self.data,
            1 => ring::digest::digest(&ring::digest::SHA256, &selected).as_ref() == self.data,
            2 => ring::digest::digest(&ring::digest::SHA512, &selected).as_ref() == self.data,
            _ => false,
        }
    }
}

/// The DER SubjectPublicKeyInfo of a certificate.
fn spki(cert: &[u8]) -> Option<Vec<u8>> {
    use der::{Decode, Encode};
    let c = x509_cert::Certificate::from_der(cert).ok()?;
    c.tbs_certificate.subject_public_key_info.to_der().ok()
}

/// What DANE says about one MX host.
#[derive(Debug, Clone)]
pub enum Host {
    /// No secure, usable TLSA records: delivery as without DANE.
    None,
    /// DANE applies: STARTTLS required, the certificate must match one of these.
    Tlsa(Arc<Vec<Tlsa>>),
    /// The TLSA lookup was bogus or failed: the host is not used (RFC 7672 §2.2).
    Unusable(Failure),
}

/// The DANE plan for one destination: per MX host name.
pub type Plan = HashMap<String, Host>;

/// Checks the presented chain (end entity first) against the TLSA records for `host`.
/// The handshake (the peer holds the leaf's key) was checked by rustls.
pub fn verify(
    chain: &[CertificateDer<'_>],
    tlsa: &[Tlsa],
    host: &ServerName<'_>,
) -> Result<(), Failure> {
    let Some(ee) = chain.first() else {
        return Err(Failure {
            result_type: "validation-failure",
            text: "no certificate presented".into(),
        });
    };
    // DANE-EE(3): the leaf itself; no name, no validity check (RFC 7672 §3.1.1).
    if tlsa.iter().any(|t| t.usage == 3 && t.matches(ee.as_ref())) {
        return Ok(());
    }
    // DANE-TA(2): a certificate of the chain (not the leaf) is the trust anchor.
    let mut last_err = None;
    for ta in &chain[1..] {
        if !tlsa.iter().any(|t| t.usage == 2 && t.matches(ta.as_ref())) {
            continue;
        }
        let mut roots = RootCertStore::empty();
        if roots.add(ta.clone().into_owned()).is_err() {
            continue;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let v = match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
        {
            Ok(v) => v,
            Err(e) => {
                last_err = Some(e.to_string());
                continue;
            }
        };
        match v.verify_server_cert(ee, &chain[1..], host, &[], UnixTime::now()) {
            Ok(_) => return Ok(()),
            Err(e) => last_err = Some(e.to_string()),
        }
    }
    Err(Failure {
        result_type: "tlsa-invalid",
        text: match last_err {
            Some(e) => format!(
                "certificate chain not valid under the DANE-TA record for {}: {e}",
                host.to_str()
            ),
            None => format!(
                "certificate matches no TLSA record of _25._tcp.{}",
                host.to_str()
            ),
        },
    })
}

/// The validating resolver and the probe state. One per delivery worker.
pub struct Dane {
    resolver: Result<TokioResolver, String>,
    /// The zone whose DNSKEY set the probe asks for (the first trust anchor's).
    probe_zone: Name,
    probe: Mutex<Option<(Instant, bool)>>,
    /// One probe at a time.
    probing: tokio::sync::Mutex<()>,
}

impl Dane {
    pub fn new(config: &DeliveryConfig) -> Dane {
        let (anchors, probe_zone) = match config.dnssec_trust_anchor.as_deref() {
            Some(p) => match read_anchors(p) {
                Ok((a, zone)) => (a, zone),
                Err(e) => {
                    tracing::error!("delivery.dnssec_trust_anchor {}: {e}", p.display());
                    (TrustAnchors::default(), Name::root())
                }
            },
            None => (TrustAnchors::default(), Name::root()),
        };
        let resolver = super::mx::resolver_builder(config.resolver, Duration::from_secs(5), 2)
            .map(|b| b.with_trust_anchor(Arc::new(anchors)))
            .and_then(|mut b| {
                b.options_mut().validate = true;
                b.build()
            })
            .map_err(|e| {
                tracing::error!("DANE: DNS resolver: {e}");
                format!("DNS resolver unavailable: {e}")
            });
        Dane {
            resolver,
            probe_zone,
            probe: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the resolver's answers validate (the probe; its result is kept for a while).
    pub async fn active(&self) -> bool {
        let fresh = |p: &Mutex<Option<(Instant, bool)>>| {
            let g = p.lock().unwrap_or_else(|e| e.into_inner());
            g.and_then(|(at, ok)| {
                let ttl = if ok { PROBE_OK_FOR } else { PROBE_FAILED_FOR };
                (at.elapsed() < ttl).then_some(ok)
            })
        };
        if let Some(ok) = fresh(&self.probe) {
            return ok;
        }
        let _one = self.probing.lock().await;
        if let Some(ok) = fresh(&self.probe) {
            return ok;
        }
        let Ok(r) = &self.resolver else { return false };
        let zone = self.probe_zone.to_ascii();
        let ok = match r.lookup(self.probe_zone.clone(), RecordType::DNSKEY).await {
            Ok(l) => l
                .answers()
                .iter()
                .any(|a| a.record_type() == RecordType::DNSKEY && a.proof == Proof::Secure),
            Err(e) => {
                tracing::debug!("DANE probe {zone} DNSKEY: {e}");
                false
            }
        };
        let before = self
            .probe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace((Instant::now(), ok))
            .map(|(_, b)| b);
        if before != Some(ok) {
            if ok {
                tracing::info!("DANE active: DNSSEC answers for {zone} validate");
            } else {
                tracing::warn!(
                    "DANE inactive: the DNSKEY answer for {zone} does not validate (the resolver \
                     returns no DNSSEC data, or the trust anchor does not match); retried in {}s",
                    PROBE_FAILED_FOR.as_secs()
                );
            }
        }
        ok
    }

    /// The DANE plan for recipient domain `domain` (ASCII) and its `targets`. `Err`: the
    /// domain's MX answer is bogus, so nothing is delivered now (RFC 7672 §2.2.1).
    pub async fn plan(&self, domain: &str, targets: &[Target]) -> Result<Plan, Failure> {
        let mut plan = Plan::new();
        if !self.active().await {
            return Ok(plan);
        }
        let Ok(r) = &self.resolver else {
            return Ok(plan);
        };
        let Ok(mut name) = Name::from_ascii(domain) else {
            return Ok(plan);
        };
        name.set_fqdn(true);
        // The exchanges of the validated MX RRset (lower case, no trailing dot).
        let mut secure_hosts: Vec<String> = Vec::new();
        let mx_secure = match r.lookup(name.clone(), RecordType::MX).await {
            Ok(l) => {
                let mx: Vec<_> = l
                    .answers()
                    .iter()
                    .filter(|a| a.record_type() == RecordType::MX)
                    .collect();
                for a in &mx {
                    if let RData::MX(m) = &a.data {
                        secure_hosts.push(host_key(&m.exchange));
                    }
                }
                !mx.is_empty() && mx.iter().all(|a| a.proof == Proof::Secure)
            }
            Err(e) if is_bogus(&e) => {
                return Err(Failure {
                    result_type: "dnssec-invalid",
                    text: format!("DANE: the MX records of {domain} fail DNSSEC validation"),
                })
            }
            // The implicit MX (RFC 5321 §5.1): secure when the denial of MX records is.
            Err(NetError::Dns(DnsError::Nsec { proof, .. })) => {
                secure_hosts.push(host_key(&name));
                proof == Proof::Secure
            }
            Err(e) => {
                tracing::debug!(domain, "DANE: MX lookup: {e}");
                false
            }
        };
        if !mx_secure {
            tracing::debug!(domain, "DANE: MX answer not secure; DANE does not apply");
            return Ok(plan);
        }
        for t in targets {
            if plan.contains_key(&t.host) {
                continue;
            }
            // The hosts come from the ordinary (unvalidated) lookup: one that the validated
            // MX RRset does not name is not used (a forged answer must not bypass DANE).
            let h = if secure_hosts.contains(&t.host.to_ascii_lowercase()) {
                self.host(r, &t.host).await
            } else {
                Host::Unusable(Failure {
                    result_type: "dnssec-invalid",
                    text: format!(
                        "DANE: {} is not among the DNSSEC-validated MX hosts of {domain}",
                        t.host
                    ),
                })
            };
            plan.insert(t.host.clone(), h);
        }
        Ok(plan)
    }

    /// `_25._tcp.<host>` TLSA (RFC 7672 §2.2).
    async fn host(&self, r: &TokioResolver, host: &str) -> Host {
        let owner = format!("_25._tcp.{host}.");
        let Ok(name) = Name::from_ascii(&owner) else {
            return Host::None;
        };
        match r.lookup(name, RecordType::TLSA).await {
            Ok(l) => {
                let recs: Vec<_> = l
                    .answers()
                    .iter()
                    .filter(|a| a.record_type() == RecordType::TLSA)
                    .collect();
                if recs.iter().any(|a| a.proof == Proof::Bogus) {
                    return Host::Unusable(bogus_tlsa(host));
                }
                if recs.is_empty() || !recs.iter().all(|a| a.proof == Proof::Secure) {
                    tracing::debug!(host, "DANE: TLSA records not secure; not used");
                    return Host::None;
                }
                let usable: Vec<Tlsa> = recs
                    .iter()
                    .filter_map(|a| match &a.data {
                        RData::TLSA(t) => Tlsa::usable(
                            usage_u8(t.cert_usage),
                            selector_u8(t.selector),
                            matching_u8(t.matching),
                            &t.cert_data,
                        ),
                        _ => None,
                    })
                    .take(MAX_TLSA)
                    .collect();
                if usable.is_empty() {
                    // RFC 7672 §2.2: no usable record: as without DANE.
                    tracing::info!(host, "DANE: no usable TLSA record; not used");
                    return Host::None;
                }
                Host::Tlsa(Arc::new(usable))
            }
            Err(e) if is_bogus(&e) => Host::Unusable(bogus_tlsa(host)),
            Err(e) if e.is_no_records_found() || e.is_nx_domain() => Host::None,
            Err(NetError::Dns(DnsError::Nsec { .. })) => Host::None,
            Err(e) => Host::Unusable(Failure {
                result_type: "dnssec-invalid",
                text: format!("DANE: TLSA lookup for {owner} failed: {}", short(&e)),
            }),
        }
    }
}

/// A host name as `Target::host` has it: ASCII, lower case, no trailing dot.
fn host_key(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn bogus_tlsa(host: &str) -> Failure {
    Failure {
        result_type: "dnssec-invalid",
        text: format!("DANE: the TLSA records of _25._tcp.{host} fail DNSSEC validation (bogus)"),
    }
}

fn is_bogus(e: &NetError) -> bool {
    matches!(e, NetError::Dns(DnsError::DnssecBogus))
        || matches!(e, NetError::Dns(DnsError::Nsec { proof, .. }) if *proof == Proof::Bogus)
}

fn short(e: &NetError) -> String {
    e.to_string().chars().take(200).collect()
}

fn usage_u8(u: CertUsage) -> u8 {
    u8::from(u)
}

fn selector_u8(s: Selector) -> u8 {
    u8::from(s)
}

fn matching_u8(m: Matching) -> u8 {
    u8::from(m)
}

/// The IANA root keys plus the DNSKEY records of `path` (zone-file lines:
/// `owner [ttl] [IN] DNSKEY flags protocol algorithm base64`; `;` comments). Returns the
/// anchors and the first anchor's zone (what the probe asks for).
fn read_anchors(path: &Path) -> Result<(TrustAnchors, Name), String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_ANCHOR_FILE).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    let mut anchors = TrustAnchors::default();
    let mut first = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (owner, key) = parse_dnskey(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        first.get_or_insert_with(|| owner.clone());
        anchors.insert_with_name(&key, LowerName::from(&owner));
    }
    let zone = first.ok_or("no DNSKEY record")?;
    Ok((anchors, zone))
}

/// One DNSKEY line → (owner, key). Only zone keys (flag bit 7) of protocol 3.
fn parse_dnskey(line: &str) -> Result<(Name, PublicKeyBuf), String> {
    use base64::Engine;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("DNSKEY"))
        .ok_or("not a DNSKEY record (DS records are not supported)")?;
    if at == 0 || words.len() < at + 5 {
        return Err("DNSKEY: owner flags protocol algorithm key expected".into());
    }
    let mut owner = Name::from_ascii(words[0]).map_err(|e| format!("owner: {e}"))?;
    owner.set_fqdn(true);
    let flags: u16 = words[at + 1].parse().map_err(|_| "flags")?;
    let protocol: u8 = words[at + 2].parse().map_err(|_| "protocol")?;
    let alg: u8 = words[at + 3].parse().map_err(|_| "algorithm")?;
    if flags & 0x0100 == 0 || protocol != 3 {
        return Err("not a zone key (flags bit 7, protocol 3)".into());
    }
    let b64: String = words[at + 4..].concat();
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("key: {e}"))?;
    Ok((owner, PublicKeyBuf::new(key, Algorithm::from_u8(alg))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` (P-256), made with openssl in-process.
    fn self_signed(name: &str) -> Vec<u8> {
        use openssl::asn1::Asn1Time;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::{X509NameBuilder, X509};
        let key = PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap();
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_text("CN", name).unwrap();
        let n = n.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&n).unwrap();
        b.set_issuer_name(&n).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build().to_der().unwrap()
    }

    /// A CA (P-256) and a leaf for `name` it issued: (leaf DER, CA DER).
    fn ca_and_leaf(name: &str) -> (Vec<u8>, Vec<u8>) {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::{BasicConstraints, KeyUsage, SubjectAlternativeName};
        use openssl::x509::{X509NameBuilder, X509};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ca_key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let leaf_key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let dn = |cn: &str| {
            let mut n = X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            n.build()
        };
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(1).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&dn("Test CA")).unwrap();
        b.set_issuer_name(&dn("Test CA")).unwrap();
        b.set_pubkey(&ca_key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
            .unwrap();
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        b.append_extension(KeyUsage::new().critical().key_cert_sign().build().unwrap())
            .unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        let ca = b.build();
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_serial_number(&BigNum::from_u32(2).unwrap().to_asn1_integer().unwrap())
            .unwrap();
        b.set_subject_name(&dn(name)).unwrap();
        b.set_issuer_name(ca.subject_name()).unwrap();
        b.set_pubkey(&leaf_key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let san = SubjectAlternativeName::new()
            .dns(name)
            .build(&b.x509v3_context(Some(&ca), None))
            .unwrap();
        b.append_extension(san).unwrap();
        b.sign(&ca_key, MessageDigest::sha256()).unwrap();
        (b.build().to_der().unwrap(), ca.to_der().unwrap())
    }

    /// DANE-TA(2): the CA in the presented chain is the trust anchor; the leaf must chain to it
    /// and name the MX host (RFC 7672 §3.2.2, §3.2.3); a CA that is not presented is no anchor.
    #[test]
    fn dane_ta_anchors_the_chain_and_checks_the_name() {
        let (leaf, ca) = ca_and_leaf("mx.b.test");
        let chain = [
            CertificateDer::from(leaf.clone()),
            CertificateDer::from(ca.clone()),
        ];
        let ta = Tlsa::usable(2, 1, 1, &sha256(&spki(&ca).unwrap())).unwrap();
        let full = Tlsa::usable(2, 0, 1, &sha256(&ca)).unwrap();
        let mx = ServerName::try_from("mx.b.test").unwrap();
        assert_eq!(verify(&chain, std::slice::from_ref(&ta), &mx), Ok(()));
        assert_eq!(verify(&chain, std::slice::from_ref(&full), &mx), Ok(()));
        let other = ServerName::try_from("mx.other.test").unwrap();
        let f = verify(&chain, std::slice::from_ref(&ta), &other).unwrap_err();
        assert_eq!(f.result_type, "tlsa-invalid");
        assert!(f.text.contains("DANE-TA"), "{}", f.text);
        // The CA is not in the chain: nothing to anchor on.
        let f = verify(&chain[..1], &[ta], &mx).unwrap_err();
        assert!(f.text.contains("matches no TLSA record"), "{}", f.text);
        // A DANE-EE record for the CA's key does not match the leaf.
        let ee = Tlsa::usable(3, 1, 1, &sha256(&spki(&ca).unwrap())).unwrap();
        assert!(verify(&chain, &[ee], &mx).is_err());
    }

    fn sha256(d: &[u8]) -> Vec<u8> {
        ring::digest::digest(&ring::digest::SHA256, d)
            .as_ref()
            .to_vec()
    }

    #[test]
    fn dane_ee_matches_leaf_by_spki_or_certificate_without_name_checks() {
        let cert = self_signed("other.example");
        let chain = [CertificateDer::from(cert.clone())];
        let host = ServerName::try_from("mx.b.test").unwrap();
        let spki_der = spki(&cert).unwrap();
        let sha512 = ring::digest::digest(&ring::digest::SHA512, &cert)
            .as_ref()
            .to_vec();
        for rec in [
            Tlsa::usable(3, 1, 1, &sha256(&spki_der)).unwrap(),
            Tlsa::usable(3, 0, 1, &sha256(&cert)).unwrap(),
            Tlsa::usable(3, 0, 2, &sha512).unwrap(),
            Tlsa::usable(3, 1, 0, &spki_der).unwrap(),
        ] {
            assert_eq!(verify(&chain, &[rec], &host), Ok(()));
        }
        // Another key does not match.
        let other = self_signed("mx.b.test");
        let rec = Tlsa::usable(3, 1, 1, &sha256(&spki(&other).unwrap())).unwrap();
        let f = verify(&chain, std::slice::from_ref(&rec), &host).unwrap_err();
        assert_eq!(f.result_type, "tlsa-invalid");
        assert!(f.text.contains("matches no TLSA record"), "{}", f.text);
        // A DANE-TA record naming the leaf is no match for the leaf (TA must be above it).
        let ta = Tlsa::usable(2, 1, 1, &sha256(&spki_der)).unwrap();
        assert!(verify(&chain, &[ta], &host).is_err());
        assert!(verify(&[], &[rec], &host).is_err());
    }

    #[test]
    fn unusable_records_are_dropped() {
        let h = [0u8; 32];
        assert!(Tlsa::usable(0, 1, 1, &h).is_none(), "PKIX-TA");
        assert!(Tlsa::usable(1, 1, 1, &h).is_none(), "PKIX-EE");
        assert!(Tlsa::usable(3, 2, 1, &h).is_none(), "selector");
        assert!(Tlsa::usable(3, 1, 3, &h).is_none(), "matching");
        assert!(
            Tlsa::usable(3, 1, 2, &h).is_none(),
            "SHA-512 needs 64 bytes"
        );
        assert!(Tlsa::usable(3, 1, 1, &h).is_some());
        assert!(Tlsa::usable(2, 0, 0, b"x").is_some());
    }

    #[test]
    fn trust_anchor_lines() {
        use hickory_resolver::proto::dnssec::PublicKey;
        let (owner, key) = parse_dnskey(
            "test. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+ KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==",
        )
        .unwrap();
        assert_eq!(owner.to_ascii(), "test.");
        assert_eq!(key.algorithm(), Algorithm::ECDSAP256SHA256);
        assert!(parse_dnskey("test. IN DS 1 13 2 abcd").is_err());
        assert!(
            parse_dnskey("test. IN DNSKEY 0 3 13 AAAA").is_err(),
            "not a zone key"
        );
    }
}
