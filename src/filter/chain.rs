//! Certificate paths: from a signer's certificate to a trust anchor in `trust_dir`.
//!
//! Our own path building, so that every certificate signature goes through the same algorithm
//! dispatch as signer signatures ([`super::algo`], GOST included):
//!
//! * an issuer candidate has a subject Name DER-equal to the child's issuer Name (and a matching
//!   key identifier when both are present), and the child's signature must verify with the
//!   candidate's key. Names and serial numbers alone never make a certificate trusted: an
//!   impostor chain with identical names fails on the signatures and ends at no anchor;
//! * a trust anchor is a certificate that is byte-for-byte one of those loaded from `trust_dir`
//!   (roots and intermediates alike: an operator who installs an intermediate trusts it). The
//!   path ends at the first anchor reached;
//! * every certificate on the path, anchor included, must be valid at the validation time;
//!   every issuing certificate must be a CA (basicConstraints cA, keyCertSign when keyUsage is
//!   present, pathLenConstraint honoured; a v1 certificate only as an anchor); a critical
//!   extension we do not understand disqualifies a certificate.
//!
//! Revocation is asked of a [`RevocationSource`] (no I/O here: whoever fetches CRLs or OCSP
//! answers hands the filter a source that already holds them).

use std::path::Path;

use anyhow::Context;

use super::algo::AlgError;
use super::cert::{certs_from_pem_or_der, Cert, KU_KEY_CERT_SIGN};

/// Longest path (signer included).
const MAX_PATH: usize = 10;
/// Most certificate signatures one path search may check.
const MAX_SIGNATURE_CHECKS: usize = 64;
/// Files larger than this in `trust_dir` are refused.
const MAX_TRUST_FILE: u64 = 1 << 20;

/// Trusted certificates (roots and intermediates) from `trust_dir`.
#[derive(Debug, Default, Clone)]
pub struct TrustStore {
    certs: Vec<Cert>,
}

impl TrustStore {
    pub fn from_certs(certs: Vec<Cert>) -> TrustStore {
        let mut s = TrustStore { certs: Vec::new() };
        for c in certs {
            if !s.contains(&c) {
                s.certs.push(c);
            }
        }
        s
    }

    /// Loads every certificate file (PEM, possibly with several certificates, or DER) in `dir`.
    /// A missing or empty directory gives an empty store (nothing is trusted). A file that is
    /// not a certificate (or is over 1 MiB) is skipped with a warning naming it, as `tanba certs
    /// list` does: a stray file can only mean fewer anchors, never more. Hidden files and
    /// `*.md`, `*.txt`, `*.crl`, `README*` are skipped silently. This is the filter's only file
    /// access, at start-up.
    pub fn load_dir(dir: &Path) -> anyhow::Result<TrustStore> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TrustStore::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        let mut paths = Vec::new();
        for entry in rd {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            let lower = name.to_ascii_lowercase();
            if name.starts_with('.')
                || lower.starts_with("readme")
                || [".md", ".txt", ".crl"].iter().any(|e| lower.ends_with(e))
            {
                continue;
            }
            let meta =
                std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if !meta.is_file() {
                continue;
            }
            if meta.len() > MAX_TRUST_FILE {
                tracing::warn!(
                    "trust_dir: {}: larger than 1 MiB, not a certificate; skipped",
                    path.display()
                );
                continue;
            }
            paths.push(path);
        }
        paths.sort();
        let mut certs = Vec::new();
        for p in paths {
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            match certs_from_pem_or_der(&data) {
                Ok(found) => certs.extend(found),
                Err(e) => tracing::warn!(
                    "trust_dir: {}: not a certificate ({e}); skipped",
                    p.display()
                ),
            }
        }
        Ok(TrustStore::from_certs(certs))
    }

    pub fn certs(&self) -> &[Cert] {
        &self.certs
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// Whether `cert` is byte-for-byte one of the trusted certificates.
    pub fn contains(&self, cert: &Cert) -> bool {
        self.certs.iter().any(|c| c.raw == cert.raw)
    }
}

/// Why no acceptable path was found. Ordered from most to least telling: a path that reached an
/// anchor but had a certificate out of its validity beats an unsupported algorithm, which beats
/// "no path".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainError {
    Expired(String),
    NotYetValid(String),
    Unsupported(String),
    Untrusted(String),
}

impl ChainError {
    fn rank(&self) -> u8 {
        match self {
            ChainError::Expired(_) | ChainError::NotYetValid(_) => 3,
            ChainError::Unsupported(_) => 2,
            ChainError::Untrusted(_) => 1,
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            ChainError::Expired(s)
            | ChainError::NotYetValid(s)
            | ChainError::Unsupported(s)
            | ChainError::Untrusted(s) => s,
        }
    }
}

/// Builds and validates a path from `leaf` to an anchor of `trust` at time `at` (seconds since
/// the epoch). `extra` are untrusted certificates that may serve as intermediates (those carried
/// in the CMS). Returns the path, leaf first, anchor last.
pub fn build<'a>(
    leaf: &'a Cert,
    extra: impl IntoIterator<Item = &'a Cert>,
    trust: &'a TrustStore,
    at: i64,
) -> Result<Vec<&'a Cert>, ChainError> {
    let mut pool: Vec<(&'a Cert, bool)> = trust.certs.iter().map(|c| (c, true)).collect();
    for c in extra {
        if !pool.iter().any(|(p, _)| p.raw == c.raw) {
            pool.push((c, false));
        }
    }
    let mut s = Search {
        pool,
        trust,
        at,
        budget: MAX_SIGNATURE_CHECKS,
        best: None,
    };
    let mut path = vec![leaf];
    match s.dfs(&mut path) {
        Some(p) => Ok(p),
        None => Err(s.best.unwrap_or_else(|| {
            ChainError::Untrusted(format!(
                "no path from {} to a trusted certificate",
                leaf.issuer_string()
            ))
        })),
    }
}

struct Search<'a> {
    pool: Vec<(&'a Cert, bool)>,
    trust: &'a TrustStore,
    at: i64,
    budget: usize,
    best: Option<ChainError>,
}

impl<'a> Search<'a> {
    fn record(&mut self, e: ChainError) {
        if self.best.as_ref().is_none_or(|b| e.rank() > b.rank()) {
            self.best = Some(e);
        }
    }

    fn dfs(&mut self, path: &mut Vec<&'a Cert>) -> Option<Vec<&'a Cert>> {
        let cur = *path.last()?;
        if self.trust.contains(cur) {
            match self.check(path) {
                Ok(()) => return Some(path.clone()),
                Err(e) => {
                    self.record(e);
                    return None;
                }
            }
        }
        if path.len() >= MAX_PATH {
            self.record(ChainError::Untrusted("certificate path too long".into()));
            return None;
        }
        let candidates: Vec<(&'a Cert, bool)> = self
            .pool
            .iter()
            .filter(|(c, _)| c.subject == cur.issuer && !path.iter().any(|p| p.raw == c.raw))
            .copied()
            .collect();
        for (cand, trusted) in candidates {
            if let (Some(aki), Some(ski)) = (&cur.authority_key_id, &cand.subject_key_id) {
                if aki != ski {
                    continue;
                }
            }
            if self.budget == 0 {
                self.record(ChainError::Untrusted(
                    "too many candidate issuers to check".into(),
                ));
                return None;
            }
            self.budget -= 1;
            match cur.signed_with(&cand.spki) {
                Ok(()) => {}
                Err(AlgError::Unsupported(what)) => {
                    self.record(ChainError::Unsupported(format!(
                        "certificate of {}: {what}",
                        cur.display_name()
                    )));
                    continue;
                }
                Err(_) => {
                    self.record(ChainError::Untrusted(format!(
                        "the signature on the certificate of {} does not verify with the key of \
                         a certificate named {}",
                        cur.display_name(),
                        cand.display_name()
                    )));
                    continue;
                }
            }
            if let Err(why) = can_issue(cand, trusted) {
                self.record(ChainError::Untrusted(why));
                continue;
            }
            path.push(cand);
            if let Some(p) = self.dfs(path) {
                return Some(p);
            }
            path.pop();
        }
        None
    }

    /// Validity and constraints of a path that reached an anchor.
    fn check(&self, path: &[&Cert]) -> Result<(), ChainError> {
        for c in path {
            if !c.unknown_critical.is_empty() {
                return Err(ChainError::Untrusted(format!(
                    "certificate of {} has unsupported critical extensions {}",
                    c.display_name(),
                    c.unknown_critical.join(", ")
                )));
            }
            if self.at < c.not_before {
                return Err(ChainError::NotYetValid(format!(
                    "certificate of {} is valid only from {}",
                    c.display_name(),
                    super::report::rfc3339(c.not_before)
                )));
            }
            if self.at > c.not_after {
                return Err(ChainError::Expired(format!(
                    "certificate of {} expired {}",
                    c.display_name(),
                    super::report::rfc3339(c.not_after)
                )));
            }
        }
        // pathLenConstraint: the number of non-self-issued intermediates below an issuer.
        for (k, issuer) in path.iter().enumerate().skip(1) {
            if let Some((_, Some(max))) = issuer.basic_constraints {
                let below = path[1..k].iter().filter(|c| !c.is_self_issued()).count() as u64;
                if below > max {
                    return Err(ChainError::Untrusted(format!(
                        "path length constraint of {} exceeded",
                        issuer.display_name()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Whether `c` may issue certificates.
fn can_issue(c: &Cert, trusted: bool) -> Result<(), String> {
    let name = c.display_name();
    match c.basic_constraints {
        Some((true, _)) => {}
        Some((false, _)) => return Err(format!("{name} is not a CA (basicConstraints)")),
        None if c.version < 3 && trusted => {}
        None => return Err(format!("{name} is not a CA (no basicConstraints)")),
    }
    if let Some(ku) = c.key_usage {
        if ku & KU_KEY_CERT_SIGN == 0 {
            return Err(format!("{name} may not sign certificates (keyUsage)"));
        }
    }
    Ok(())
}

/// What a revocation source knows about one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationStatus {
    /// Not revoked (as of the validation time).
    Good,
    /// Revoked at this time (seconds since the epoch), at or before the validation time.
    Revoked { at: i64 },
    /// Revoked at this time, after the validation time: what was signed before still stands,
    /// but the report says so.
    RevokedLater { at: i64 },
    /// No usable answer (no CRL or OCSP data, or an unreachable responder).
    Unknown(String),
}

/// Revocation data for the filter. Implementations hold data fetched elsewhere (CRLs from
/// `crl_dir` or distribution points, OCSP answers); `status` itself does no I/O.
pub trait RevocationSource: Send + Sync {
    /// The status of `cert`, issued by `issuer`, at the validation time `at`.
    fn status(&self, cert: &Cert, issuer: &Cert, at: i64) -> RevocationStatus;

    /// Whether this source checks revocation at all (false only for `revocation = "off"`).
    fn checks(&self) -> bool {
        true
    }
}

/// `revocation = "off"`: nothing is ever revoked.
pub struct NoRevocation;

impl RevocationSource for NoRevocation {
    fn status(&self, _cert: &Cert, _issuer: &Cert, _at: i64) -> RevocationStatus {
        RevocationStatus::Good
    }

    fn checks(&self) -> bool {
        false
    }
}

/// Revocation checking is on, but no source was given (the filter alone does no I/O; the
/// server and `tanba verify` pass [`crate::revocation::Checker`]): every answer is unknown, which the verdict reports as `temperror` / `revocation-unknown`
/// (or ignores with `revocation_soft_fail`).
pub struct NoRevocationData;

impl RevocationSource for NoRevocationData {
    fn status(&self, _cert: &Cert, _issuer: &Cert, _at: i64) -> RevocationStatus {
        RevocationStatus::Unknown("no revocation data available".into())
    }
}
