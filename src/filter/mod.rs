//! The inbound signature filter: finds every CMS signature a message carries, verifies it, and
//! stamps the verdict and the signer's identity into headers (SPEC §5–§7).
//!
//! Pipeline: [`find`] (MIME walk over the exact bytes) → [`cms`] (SignedData, BER → DER) →
//! per signer: [`tsp`] (a verified RFC 3161 timestamp sets the validation time) → [`algo`]
//! (signature by OID: RSA/ECDSA via OpenSSL, GOST via [`gost`]) → [`chain`] (path to an anchor
//! of `trust_dir`, validity) → [`revocation`] (CRLs [`crl`] and OCSP answers [`ocsp`] handed in
//! by a [`RevocationSource`], plus those the CMS carries) → [`nca`] (who signed) → [`report`]
//! (verdict, JSON, human text) → [`stamp`] (headers).
//!
//! Pure: [`Filter::process`] does no I/O, reads no clock (the validation time is a parameter)
//! and never panics; the only file access is loading `trust_dir` in [`Filter::new`].

pub mod algo;
pub mod asn1;
pub mod cache;
pub mod cert;
pub mod chain;
pub mod cms;
pub mod crl;
pub mod find;
pub mod gost;
pub mod nca;
pub mod ocsp;
pub mod report;
pub mod revocation;
pub mod stamp;
#[cfg(test)]
mod tests;
pub mod tsp;

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;

use crate::config::{Config, Language};
use algo::{AlgError, Digest};
use cert::Cert;
pub use chain::TrustStore;
use chain::{ChainError, NoRevocation, NoRevocationData};
pub use chain::{RevocationSource, RevocationStatus};
use find::{Content, Found};
pub use report::{Kind, Reason, Report, SignatureReport, SignerReport, SignerResult, Verdict};

/// The filter, built once at start-up (trust anchors loaded from `signatures.trust_dir`).
pub struct Filter {
    /// Our authserv-id.
    hostname: String,
    trust: TrustStore,
    revocation: Box<dyn RevocationSource>,
    /// With `revocation_soft_fail`, an unknown revocation status does not make a temperror.
    soft_fail: bool,
    language: Language,
    keywords: bool,
    subject_tag: bool,
}

/// What the filter made of one message.
pub struct Processed {
    /// The message to store: the prepended stamp headers, then the original bytes with forged
    /// `X-EDS-*` / own `Authentication-Results` headers removed. No other byte changes (except
    /// the Subject tag when `signatures.subject_tag` is on).
    pub message: Vec<u8>,
    /// IMAP keywords to set on delivery (`$EDSValid` / `$EDSInvalid`), empty when disabled.
    pub keywords: Vec<String>,
    /// Message verdict (`none`, `pass`, `fail`, `permerror`, `temperror`).
    pub verdict: String,
    /// The SPEC §5 reason of each signer that did not pass (for the metrics).
    pub reasons: Vec<&'static str>,
}

impl Filter {
    /// Builds the filter from the configuration, loading `signatures.trust_dir`. A missing or
    /// empty trust directory is not an error (nothing is trusted, so signatures come out
    /// `untrusted`), but it is logged.
    pub fn new(config: &Config) -> anyhow::Result<Filter> {
        Self::with_trust_dir(config, &config.signatures.trust_dir)
    }

    /// Like [`Filter::new`] with another trust directory (`tanba verify --trust`).
    pub fn with_trust_dir(config: &Config, trust_dir: &Path) -> anyhow::Result<Filter> {
        let trust = TrustStore::load_dir(trust_dir)
            .with_context(|| format!("signatures.trust_dir: {}", trust_dir.display()))?;
        if trust.is_empty() {
            tracing::warn!(
                "signatures.trust_dir {} holds no certificates: no signature can pass until the \
                 NCA RK roots are installed there (docs/signatures.md)",
                trust_dir.display()
            );
        } else {
            tracing::debug!(
                "signatures.trust_dir {}: {} trusted certificates",
                trust_dir.display(),
                trust.len()
            );
        }
        Ok(Filter::with_trust_store(config, trust))
    }

    /// A filter over an already loaded trust store.
    pub fn with_trust_store(config: &Config, trust: TrustStore) -> Filter {
        let r = config.signatures.revocation;
        let revocation: Box<dyn RevocationSource> = if r.crl || r.ocsp {
            Box::new(NoRevocationData)
        } else {
            Box::new(NoRevocation)
        };
        Filter {
            hostname: config.hostname.clone(),
            trust,
            revocation,
            soft_fail: config.signatures.revocation_soft_fail,
            language: config.signatures.language,
            keywords: config.signatures.keywords,
            subject_tag: config.signatures.subject_tag,
        }
    }

    /// Replaces the revocation source (CRL/OCSP data gathered outside the filter).
    pub fn set_revocation(&mut self, source: Box<dyn RevocationSource>) {
        self.revocation = source;
    }

    pub fn trust(&self) -> &TrustStore {
        &self.trust
    }

    /// Verifies every signature `raw` carries, as of `now`, and stamps the result. Never
    /// panics and never loses the message: if verification itself fails, the message is
    /// stamped `permerror`.
    pub fn process(&self, raw: &[u8], now: SystemTime) -> Processed {
        self.process_with(raw, now, &*self.revocation)
    }

    /// Like [`Filter::process`], with revocation answers from `rev`.
    pub fn process_with(
        &self,
        raw: &[u8],
        now: SystemTime,
        rev: &dyn RevocationSource,
    ) -> Processed {
        // `process_report` runs the MIME guard before it calls the closure, so the walk after it
        // need not scan the same bytes again (one scan per delivery, issue 18).
        self.process_report(raw, || {
            self.verify_found_all(&find::find_scanned(raw), now, rev)
        })
    }

    /// Stamps `raw` with the report `verify` makes (the revocation checker verifies in two
    /// passes around its fetches). Never panics, as [`Filter::process`].
    ///
    /// A message whose MIME structure is beyond [`crate::mime_guard`]'s limits (nesting, parts)
    /// is not verified at all: no parser that recurses may see it (issue 11, finding 1). It is
    /// stamped `permerror` with the reason in `Authentication-Results` and kept.
    pub fn process_report(&self, raw: &[u8], verify: impl FnOnce() -> Report) -> Processed {
        if let Err(e) = crate::mime_guard::scan(raw) {
            tracing::warn!("message not verified: {e}; stamped permerror");
            return self.processed(
                Verdict::PermError,
                stamp::stamp_error(raw, &self.hostname, Verdict::PermError, &e.to_string()),
            );
        }
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let report = verify();
            if !report.signatures.is_empty() {
                let c = cache::stats();
                tracing::debug!(
                    cert_signatures_cached = c.verified_hits,
                    cert_signatures_verified = c.verified_misses,
                    keys_cached = c.key_hits,
                    keys_parsed = c.key_misses,
                    certs_cached = c.cert_hits,
                    certs_parsed = c.cert_misses,
                    "signature cache (since start)"
                );
            }
            let message = self.stamp(raw, &report);
            let reasons = report.signatures.iter().flat_map(|s| &s.signers);
            let reasons = reasons
                .filter_map(|s| s.reason.map(Reason::as_str))
                .collect();
            (report.verdict, message, reasons)
        }));
        let (verdict, message, reasons) = match run {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("signature filter failed on a message; stamped permerror");
                let fallback = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    stamp::stamp_error(raw, &self.hostname, Verdict::PermError, "filter error")
                }));
                let message = fallback.unwrap_or_else(|_| {
                    let mut m = b"X-EDS-Status: permerror; signers=0; valid=0\r\n".to_vec();
                    m.extend_from_slice(raw);
                    m
                });
                (Verdict::PermError, message, Vec::new())
            }
        };
        Processed {
            reasons,
            ..self.processed(verdict, message)
        }
    }

    fn processed(&self, verdict: Verdict, message: Vec<u8>) -> Processed {
        let keywords = match (self.keywords, verdict) {
            (false, _) | (_, Verdict::None) => Vec::new(),
            (true, Verdict::Pass) => vec!["$EDSValid".to_string()],
            (true, _) => vec!["$EDSInvalid".to_string()],
        };
        Processed {
            message,
            keywords,
            verdict: verdict.as_str().to_string(),
            reasons: Vec::new(),
        }
    }

    /// The stamped form of `raw` for `report`.
    pub fn stamp(&self, raw: &[u8], report: &Report) -> Vec<u8> {
        stamp::stamp(
            raw,
            report,
            &stamp::StampOptions {
                hostname: &self.hostname,
                language: self.language,
                subject_tag: self.subject_tag,
            },
        )
    }

    /// Verifies every signature of a message (RFC 5322 bytes) as of `now`.
    pub fn verify_message(&self, raw: &[u8], now: SystemTime) -> Report {
        self.verify_message_with(raw, now, &*self.revocation)
    }

    /// Like [`Filter::verify_message`], with revocation answers from `rev`.
    pub fn verify_message_with(
        &self,
        raw: &[u8],
        now: SystemTime,
        rev: &dyn RevocationSource,
    ) -> Report {
        self.verify_found_all(&find::find(raw), now, rev)
    }

    /// Verifies the signatures [`find`] found in a message. The revocation checker calls it
    /// twice around its fetches with one walk's result (`revocation::Checker::process`).
    pub(crate) fn verify_found_all(
        &self,
        found: &[Found],
        now: SystemTime,
        rev: &dyn RevocationSource,
    ) -> Report {
        let at = unix(now);
        Report::new(
            found
                .iter()
                .map(|f| self.verify_found(f, at, rev))
                .collect(),
        )
    }

    /// Verifies a bare CMS file (`tanba verify x.p7s`), with detached content if given.
    pub fn verify_cms(
        &self,
        data: &[u8],
        file: Option<&str>,
        content: Option<(&str, &[u8])>,
        now: SystemTime,
    ) -> Report {
        self.verify_cms_with(data, file, content, now, &*self.revocation)
    }

    /// Like [`Filter::verify_cms`], with revocation answers from `rev`.
    pub fn verify_cms_with(
        &self,
        data: &[u8],
        file: Option<&str>,
        content: Option<(&str, &[u8])>,
        now: SystemTime,
        rev: &dyn RevocationSource,
    ) -> Report {
        let found = Found {
            part: String::new(),
            kind: Kind::Cms,
            file: file.map(str::to_string),
            covers: content.map(|(n, _)| n.to_string()),
            cms: Ok(data.to_vec()),
            content: match content {
                Some((_, c)) => Content::Detached(vec![c.to_vec()]),
                None => Content::Missing(
                    "detached signature: give the signed file with --content".into(),
                ),
            },
        };
        let mut sig = self.verify_found(&found, unix(now), rev);
        sig.part = None;
        Report::new(vec![sig])
    }

    fn verify_found(&self, f: &Found, at: i64, rev: &dyn RevocationSource) -> SignatureReport {
        let mut sig = SignatureReport {
            part: Some(f.part.clone()),
            kind: f.kind,
            file: f.file.clone(),
            covers: None,
            signers: Vec::new(),
        };
        let data = match &f.cms {
            Ok(d) => d,
            Err(e) => {
                sig.signers
                    .push(SignerReport::failed(Reason::Malformed, e.clone()));
                return sig;
            }
        };
        let sd = match cms::parse(data) {
            Ok(sd) => sd,
            Err(e) => {
                sig.signers.push(SignerReport::failed(
                    Reason::Malformed,
                    format!("the CMS cannot be read: {e}"),
                ));
                return sig;
            }
        };
        // Revocation values the CMS carries come before the outside source.
        let embedded = revocation::Material::from_signed_data(&sd);
        let rev = revocation::Layered {
            first: &embedded,
            then: rev,
        };
        // What was signed: the embedded content, else what the message puts beside it.
        let embedded;
        let content: Result<Vec<&[u8]>, String> = match (&sd.content, &f.content) {
            (Some(c), _) => {
                embedded = [c.as_slice()];
                Ok(embedded.to_vec())
            }
            (None, Content::Detached(cands)) => {
                sig.covers = f.covers.clone();
                Ok(cands.iter().map(Vec::as_slice).collect())
            }
            (None, Content::Missing(why)) => Err(why.clone()),
            (None, Content::Embedded) => {
                Err("the CMS should carry its content but does not".into())
            }
        };
        if sd.signers.is_empty() {
            sig.signers.push(SignerReport::failed(
                Reason::Malformed,
                "the CMS has no SignerInfo",
            ));
        }
        for si in &sd.signers {
            sig.signers.push(match si {
                Ok(si) => self.verify_signer(si, &sd, &content, at, &rev),
                Err(e) => SignerReport::failed(Reason::Malformed, e.clone()),
            });
        }
        sig
    }

    /// Verifies one SignerInfo (SPEC §5 "what pass means"), in this order: algorithms known →
    /// certificate found → signature over the signed attributes → messageDigest over the
    /// content → path to an anchor, valid at `at` → key usage → revocation.
    fn verify_signer(
        &self,
        si: &cms::SignerInfo,
        sd: &cms::SignedData,
        content: &Result<Vec<&[u8]>, String>,
        at: i64,
        rev: &dyn RevocationSource,
    ) -> SignerReport {
        let mut r = SignerReport::new(SignerResult::Pass, None);
        r.signing_time = si.signing_time.map(report::rfc3339);
        let (at, tsp, notes) = self.validation_time(si, at, rev);
        r.tsp_time = tsp.map(report::rfc3339);
        r.notes = notes;

        let Some(digest) = Digest::from_oid(&si.digest_alg.oid) else {
            r.set_failure(
                Reason::UnsupportedAlgorithm,
                format!("digest algorithm {}", si.digest_alg.oid),
            );
            return r;
        };
        let scheme = match algo::scheme_for_signer(digest, &si.sig_alg) {
            Ok(s) => s,
            Err(e) => {
                let reason = match e {
                    AlgError::Malformed(_) => Reason::Malformed,
                    _ => Reason::UnsupportedAlgorithm,
                };
                r.set_failure(reason, e.to_string());
                return r;
            }
        };
        r.algorithm = Some(scheme.name());

        // Candidates named by the sid: in the CMS first, then among the trusted certificates.
        let candidates: Vec<&Cert> = sd
            .certs
            .iter()
            .map(|c| &**c)
            .chain(self.trust.certs())
            .filter(|c| sid_matches(&si.sid, c))
            .collect();
        if candidates.is_empty() {
            r.set_failure(
                Reason::NoCertificate,
                "the signer's certificate is neither in the CMS nor in the trust directory",
            );
            return r;
        }

        // The signature: over the DER signed attributes, or over the content itself.
        let mut signer_cert = None;
        let mut unsupported = None;
        let mut malformed = None;
        'certs: for c in &candidates {
            let messages: Vec<&[u8]> = match (&si.signed_attrs, content) {
                (Some(attrs), _) => vec![attrs.as_slice()],
                (None, Ok(cands)) => cands.clone(),
                (None, Err(why)) => {
                    fill_cert(&mut r, c);
                    r.set_failure(Reason::Malformed, why.clone());
                    return r;
                }
            };
            for m in messages {
                match algo::verify(&scheme, &c.spki, m, &si.signature) {
                    Ok(()) => {
                        signer_cert = Some(*c);
                        break 'certs;
                    }
                    Err(AlgError::Unsupported(s)) => unsupported = Some(s),
                    Err(AlgError::Malformed(s)) => malformed = Some(s),
                    Err(AlgError::BadSignature) => {}
                }
            }
        }
        let Some(cert) = signer_cert else {
            fill_cert(&mut r, candidates[0]);
            match (unsupported, malformed) {
                (Some(s), _) => r.set_failure(Reason::UnsupportedAlgorithm, s),
                (None, Some(s)) => r.set_failure(Reason::Malformed, s),
                (None, None) => r.set_failure(
                    Reason::BadSignature,
                    "the signature does not verify with the signer's certificate",
                ),
            }
            return r;
        };
        fill_cert(&mut r, cert);

        if let Some(expected) = &si.message_digest {
            let cands = match content {
                Ok(c) => c,
                Err(why) => {
                    r.set_failure(Reason::Malformed, why.clone());
                    return r;
                }
            };
            if !cands.iter().any(|c| digest.compute(c) == *expected) {
                r.set_failure(
                    Reason::DigestMismatch,
                    "the signed content was changed: its digest differs from messageDigest",
                );
                return r;
            }
            if let Some(ct) = &si.content_type {
                if *ct != sd.econtent_type {
                    r.set_failure(
                        Reason::Malformed,
                        "the contentType attribute differs from the encapsulated content type",
                    );
                    return r;
                }
            }
        }

        let path = match chain::build(cert, sd.certs.iter().map(|c| &**c), &self.trust, at) {
            Ok(p) => p,
            Err(e) => {
                let reason = match e {
                    ChainError::Expired(_) => Reason::Expired,
                    ChainError::NotYetValid(_) => Reason::NotYetValid,
                    ChainError::Unsupported(_) => Reason::UnsupportedAlgorithm,
                    ChainError::Untrusted(_) => Reason::Untrusted,
                };
                r.set_failure(reason, e.detail().to_string());
                return r;
            }
        };

        let use_ = nca::key_use(cert);
        if use_ != nca::KeyUse::Sign {
            r.set_failure(
                Reason::KeyUsage,
                match use_ {
                    nca::KeyUse::Auth => {
                        "an authentication (AUTH) key, not meant for signing documents"
                    }
                    _ => "the certificate's key usage does not allow signing",
                },
            );
            return r;
        }

        for pair in path.windows(2) {
            let (c, issuer) = (pair[0], pair[1]);
            match rev.status(c, issuer, at) {
                RevocationStatus::Good => {}
                RevocationStatus::RevokedLater { at: when } => r.notes.push(format!(
                    "certificate of {} was revoked {}, after the validation time {}",
                    c.display_name(),
                    report::rfc3339(when),
                    report::rfc3339(at)
                )),
                RevocationStatus::Revoked { at: when } => {
                    r.set_failure(
                        Reason::Revoked,
                        format!(
                            "certificate of {} revoked {}",
                            c.display_name(),
                            report::rfc3339(when)
                        ),
                    );
                    return r;
                }
                RevocationStatus::Unknown(why) => {
                    if !self.soft_fail {
                        r.set_failure(Reason::RevocationUnknown, why);
                        return r;
                    }
                    r.notes.push(format!(
                        "revocation status of {} unknown (ignored: revocation_soft_fail): {why}",
                        c.display_name()
                    ));
                }
            }
        }
        r
    }
}

impl Filter {
    /// The validation time of a signer and its trusted signing time: the verified RFC 3161
    /// timestamp (`genTime`, unsigned attribute 1.2.840.113549.1.9.16.2.14, see [`tsp`]) when
    /// the signer carries one, else the arrival time. A token that does not verify is reported
    /// in the notes and ignored for time.
    fn validation_time(
        &self,
        si: &cms::SignerInfo,
        arrival: i64,
        rev: &dyn RevocationSource,
    ) -> (i64, Option<i64>, Vec<String>) {
        let mut notes = Vec::new();
        let tokens = si
            .unsigned_attrs
            .iter()
            .filter(|(oid, _)| oid == tsp::OID_TIMESTAMP_TOKEN)
            .flat_map(|(_, values)| values)
            .take(4);
        for token in tokens {
            match tsp::verify_for_signer(token, &si.signature, &self.trust, rev, arrival) {
                Ok(v) => {
                    notes.extend(v.notes);
                    return (v.gen_time, Some(v.gen_time), notes);
                }
                Err(e) => notes.push(format!("timestamp ignored: {e}")),
            }
        }
        (arrival, None, notes)
    }
}

/// Whether `cert` is the one a SignerInfo's sid names (a claim only: the signature decides).
fn sid_matches(sid: &cms::Sid, cert: &Cert) -> bool {
    match sid {
        cms::Sid::IssuerSerial { issuer, serial } => {
            cert.issuer == *issuer && cert.serial == *serial
        }
        cms::Sid::Ski(ski) => cert.subject_key_id.as_deref() == Some(ski.as_slice()),
    }
}

/// Copies what a certificate states into a signer report.
fn fill_cert(r: &mut SignerReport, c: &Cert) {
    let p = nca::profile(c);
    r.common_name = p.common_name;
    r.surname = p.surname;
    r.given_name = p.given_name;
    r.full_name = p.full_name;
    r.email = p.email;
    r.iin = p.iin;
    r.bin = p.bin;
    r.organization = p.organization;
    r.roles = p.roles;
    r.key_usage = Some(nca::key_use(c).as_str().to_string());
    r.cert_serial = Some(asn1::hex(&c.serial));
    r.issuer = Some(c.issuer_string());
    r.issuer_ascii = Some(cert::rfc4514(&c.issuer_rdns, true));
    r.not_before = Some(report::rfc3339(c.not_before));
    r.not_after = Some(report::rfc3339(c.not_after));
}

/// Seconds since the epoch (negative before it).
pub fn unix(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
