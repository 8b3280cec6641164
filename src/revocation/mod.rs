//! Revocation data for the signature filter: the half of revocation checking that does I/O.
//!
//! A [`Checker`] holds CRLs (from `signatures.crl_dir`, `tanba verify --crl`, and downloads from
//! the distribution points certificates name) and OCSP answers (from the responder a certificate
//! names in authorityInfoAccess, or `signatures.ocsp_url`), in memory and in a cache on disk
//! under `<data_dir>/revocation/`. It implements [`RevocationSource`] by reading only what it
//! already holds; the decision itself is [`crate::filter::revocation::decide`].
//!
//! Per message it runs the filter twice at most ([`Checker::verify_message`]):
//! 1. with a probe that answers from what is held, and notes every (certificate, issuer) pair it
//!    could not answer for but could fetch for. The filter only asks about certificates whose
//!    path to a trust anchor verified, so a stranger's certificate never makes us fetch a URL it
//!    chose (no SSRF through `cRLDistributionPoints`);
//! 2. if anything was noted: fetch (disk cache first, then the network, with timeouts), then run
//!    the filter again with what is now held. Warm caches make this a single pass.
//!
//! Network access never blocks delivery for long: every request has a deadline
//! ([`Options::timeout`]), at most [`MAX_PAIRS`] certificates are fetched for per message, and a
//! source that just failed is not asked again for [`RETRY_AFTER`].
//!
//! Cache freshness follows the data: a CRL is used for validation times up to its nextUpdate; an
//! OCSP answer up to its nextUpdate, or for [`crate::filter::revocation::OCSP_MAX_AGE`] after its
//! thisUpdate when it has none (NCA RK's responder sends none).

pub mod http;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::config::Config;
use crate::filter::cert::Cert;
use crate::filter::crl::{Crl, MAX_CRL_SIZE};
use crate::filter::find;
use crate::filter::ocsp::{self, BasicResponse, MAX_RESPONSE_SIZE};
use crate::filter::revocation::{decide, locations};
use crate::filter::{unix, Filter, Processed, Report, RevocationSource, RevocationStatus};

/// A source that failed (or was just asked) is not asked again for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Most (certificate, issuer) pairs fetched for per message.
pub const MAX_PAIRS: usize = 8;
/// Most CRL URLs and OCSP answers kept in memory.
const MAX_URLS: usize = 64;
const MAX_OCSP: usize = 4096;
/// How often `crl_dir` is looked at for changes.
const RESCAN: Duration = Duration::from_secs(60);
/// A downloaded complete CRL is fetched again after this long even if its nextUpdate is further
/// away (NCA RK's CRLs name a nextUpdate months ahead but are reissued far more often).
pub const CRL_REFRESH: Duration = Duration::from_secs(6 * 3600);
/// The same for delta CRLs.
pub const DELTA_REFRESH: Duration = Duration::from_secs(3600);

/// What the checker does.
#[derive(Debug, Clone)]
pub struct Options {
    /// Download CRLs from the distribution points certificates name.
    pub fetch_crl: bool,
    /// Ask OCSP responders.
    pub fetch_ocsp: bool,
    /// Responder to ask instead of the certificate's own.
    pub ocsp_url: Option<String>,
    /// Where downloads are cached (`<data_dir>/revocation`); None: memory only.
    pub cache_dir: Option<PathBuf>,
    /// `signatures.crl_dir`.
    pub crl_dir: Option<PathBuf>,
    /// More CRL files (`tanba verify --crl`).
    pub extra_crls: Vec<PathBuf>,
    /// Deadline of one HTTP exchange.
    pub timeout: Duration,
    /// Time all fetches for one message may take together.
    pub budget: Duration,
}

impl Options {
    /// The options `signatures.*` asks for, or None when revocation checking is off and there
    /// are no extra CRLs.
    pub fn from_config(config: &Config, extra_crls: &[PathBuf]) -> Option<Options> {
        let s = &config.signatures;
        if !s.revocation.crl && !s.revocation.ocsp && extra_crls.is_empty() {
            return None;
        }
        Some(Options {
            fetch_crl: s.revocation.crl,
            fetch_ocsp: s.revocation.ocsp,
            ocsp_url: s.ocsp_url.clone(),
            cache_dir: (s.revocation.crl || s.revocation.ocsp)
                .then(|| config.data_dir.join("revocation")),
            crl_dir: s.crl_dir.clone(),
            extra_crls: extra_crls.to_vec(),
            timeout: Duration::from_secs(10),
            budget: Duration::from_secs(30),
        })
    }
}

/// Whether a downloaded CRL is older than `refresh` and its URL was not just tried.
fn due(slot: &UrlSlot, refresh: Duration) -> bool {
    slot.attempt.elapsed() >= RETRY_AFTER && slot.fetched.is_none_or(|f| f.elapsed() >= refresh)
}

/// Files of a directory with their mtime and size (to notice changes).
type Listing = Vec<(PathBuf, SystemTime, u64)>;

/// A downloaded CRL, by URL.
struct UrlSlot {
    crl: Option<Arc<Crl>>,
    /// When `crl` was downloaded (for a copy read from disk: when it was written).
    fetched: Option<Instant>,
    /// When the URL was last tried (successfully or not).
    attempt: Instant,
    error: Option<String>,
}

/// The OCSP answer for one certificate.
struct OcspSlot {
    resp: Option<Arc<BasicResponse>>,
    attempt: Instant,
    error: Option<String>,
}

#[derive(Default)]
struct State {
    /// CRLs from `crl_dir` and `--crl`.
    local: Vec<Arc<Crl>>,
    /// What `crl_dir` looked like when it was read, and when that was.
    local_seen: Option<(Instant, Listing)>,
    by_url: HashMap<String, UrlSlot>,
    ocsp: HashMap<Vec<u8>, OcspSlot>,
}

/// Gathers, caches and serves revocation data (see the module comment).
pub struct Checker {
    opts: Options,
    state: RwLock<State>,
}

/// The key of a certificate's OCSP answer: its issuer's key and its serial number.
fn ocsp_key(cert: &Cert, issuer: &Cert) -> Vec<u8> {
    let mut k = ocsp::public_key_bits(issuer).unwrap_or_default();
    k.push(0);
    k.extend_from_slice(&cert.serial);
    k
}

fn sha256_hex(data: &[u8]) -> String {
    let d = openssl::sha::sha256(data);
    crate::filter::asn1::hex(&d[..16])
}

impl Checker {
    /// A checker for `config` (None when revocation is off and no CRL is given).
    pub fn from_config(config: &Config, extra_crls: &[PathBuf]) -> anyhow::Result<Option<Checker>> {
        match Options::from_config(config, extra_crls) {
            Some(o) => Checker::new(o).map(Some),
            None => Ok(None),
        }
    }

    /// Builds a checker and reads its local CRLs. A `--crl` file that cannot be read is an
    /// error; a file in `crl_dir` that is not a CRL is skipped with a warning.
    pub fn new(opts: Options) -> anyhow::Result<Checker> {
        let mut state = State::default();
        for p in &opts.extra_crls {
            let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            let crls =
                Crl::parse_any(&data).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            state.local.extend(crls.into_iter().map(Arc::new));
        }
        if let Some(dir) = &opts.crl_dir {
            let (crls, seen) = read_crl_dir(dir);
            state.local.extend(crls);
            state.local_seen = Some((Instant::now(), seen));
        }
        if let Some(dir) = &opts.cache_dir {
            for sub in ["crl", "ocsp"] {
                if let Err(e) = std::fs::create_dir_all(dir.join(sub)) {
                    tracing::warn!(
                        "revocation cache {}: {e}; downloads are kept in memory only",
                        dir.display()
                    );
                }
            }
        }
        Ok(Checker {
            opts,
            state: RwLock::new(state),
        })
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Verifies and stamps a message with revocation data (the server's inbound path).
    pub fn process(&self, filter: &Filter, raw: &[u8], now: SystemTime) -> Processed {
        // `process_report` has run the MIME guard: the message is walked once, without a second
        // scan, and both passes verify what that walk found.
        filter.process_report(raw, || {
            let found = find::find_scanned(raw);
            self.two_pass(|rev| filter.verify_found_all(&found, now, rev))
        })
    }

    /// Verifies a message, fetching what revocation data it needs (see the module comment).
    pub fn verify_message(&self, filter: &Filter, raw: &[u8], now: SystemTime) -> Report {
        let found = find::find(raw);
        self.two_pass(|rev| filter.verify_found_all(&found, now, rev))
    }

    /// Verifies a bare CMS file, fetching what revocation data it needs.
    pub fn verify_cms(
        &self,
        filter: &Filter,
        data: &[u8],
        file: Option<&str>,
        content: Option<(&str, &[u8])>,
        now: SystemTime,
    ) -> Report {
        self.two_pass(|rev| filter.verify_cms_with(data, file, content, now, rev))
    }

    fn two_pass(&self, run: impl Fn(&dyn RevocationSource) -> Report) -> Report {
        self.rescan_local();
        let probe = Probe {
            checker: self,
            wanted: Mutex::new(Vec::new()),
        };
        let report = run(&probe);
        let wanted = probe.wanted.into_inner().unwrap_or_default();
        if wanted.is_empty() {
            return report;
        }
        let deadline = Instant::now() + self.opts.budget;
        for (cert, issuer, at) in &wanted {
            self.fetch(cert, issuer, *at, deadline);
        }
        run(self)
    }

    /// Re-reads `crl_dir` when its files changed (checked at most every [`RESCAN`]).
    fn rescan_local(&self) {
        let Some(dir) = &self.opts.crl_dir else {
            return;
        };
        let due = match self.state.read() {
            Ok(s) => s
                .local_seen
                .as_ref()
                .is_none_or(|(when, _)| when.elapsed() >= RESCAN),
            Err(_) => false,
        };
        if !due {
            return;
        }
        let seen_now = listing(dir);
        let changed = self
            .state
            .read()
            .map(|s| s.local_seen.as_ref().map(|(_, l)| l) != Some(&seen_now))
            .unwrap_or(false);
        if !changed {
            if let Ok(mut s) = self.state.write() {
                if let Some((when, _)) = s.local_seen.as_mut() {
                    *when = Instant::now();
                }
            }
            return;
        }
        let mut local = Vec::new();
        for p in &self.opts.extra_crls {
            if let Ok(data) = std::fs::read(p) {
                local.extend(
                    Crl::parse_any(&data)
                        .unwrap_or_default()
                        .into_iter()
                        .map(Arc::new),
                );
            }
        }
        let (crls, seen) = read_crl_dir(dir);
        local.extend(crls);
        tracing::info!(
            "signatures.crl_dir {} changed: {} CRLs loaded",
            dir.display(),
            local.len()
        );
        if let Ok(mut s) = self.state.write() {
            s.local = local;
            s.local_seen = Some((Instant::now(), seen));
        }
    }

    /// Whether fetching could still tell something about `cert`.
    fn can_fetch(&self, cert: &Cert, issuer: &Cert) -> bool {
        let Ok(s) = self.state.read() else {
            return false;
        };
        let loc = locations(cert);
        if self.opts.fetch_ocsp && self.ocsp_url(&loc.ocsp).is_some() {
            let recent = s
                .ocsp
                .get(&ocsp_key(cert, issuer))
                .is_some_and(|slot| slot.attempt.elapsed() < RETRY_AFTER);
            if !recent {
                return true;
            }
        }
        if self.opts.fetch_crl {
            for url in loc.crl.iter().chain(&loc.delta) {
                if http::parse_url(url).is_err() {
                    continue;
                }
                let recent = s
                    .by_url
                    .get(url)
                    .is_some_and(|slot| slot.attempt.elapsed() < RETRY_AFTER);
                if !recent {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a downloaded CRL `cert`'s status came from is due for a refresh ([`CRL_REFRESH`],
    /// [`DELTA_REFRESH`]), or a delta CRL it names was never fetched.
    fn refresh_due(&self, cert: &Cert) -> bool {
        if !self.opts.fetch_crl {
            return false;
        }
        let Ok(s) = self.state.read() else {
            return false;
        };
        let loc = locations(cert);
        let mut deltas = loc.delta.clone();
        let mut downloaded = false;
        for url in &loc.crl {
            let Some(slot) = s.by_url.get(url) else {
                continue;
            };
            if let Some(c) = &slot.crl {
                downloaded = true;
                if due(slot, CRL_REFRESH) {
                    return true;
                }
                deltas.extend(c.freshest.iter().cloned());
            }
        }
        downloaded
            && deltas
                .iter()
                .filter(|u| http::parse_url(u).is_ok())
                .any(|url| {
                    s.by_url
                        .get(url)
                        .is_none_or(|slot| due(slot, DELTA_REFRESH))
                })
    }

    fn ocsp_url(&self, aia: &[String]) -> Option<String> {
        match &self.opts.ocsp_url {
            Some(u) => Some(u.clone()),
            None => aia.iter().find(|u| http::parse_url(u).is_ok()).cloned(),
        }
    }

    /// Gets revocation data for `cert` at `at`: OCSP first (when on), CRLs when OCSP is off or
    /// did not answer. Disk cache before network.
    fn fetch(&self, cert: &Cert, issuer: &Cert, at: i64, deadline: Instant) {
        let loc = locations(cert);
        if self.opts.fetch_ocsp {
            if let Some(url) = self.ocsp_url(&loc.ocsp) {
                self.fetch_ocsp(cert, issuer, at, &url, deadline);
                if !matches!(self.status(cert, issuer, at), RevocationStatus::Unknown(_)) {
                    return;
                }
            }
        }
        if self.opts.fetch_crl {
            for url in &loc.crl {
                if http::parse_url(url).is_err() {
                    continue;
                }
                if let Some(base) = self.fetch_crl(url, issuer, at, deadline) {
                    let deltas: Vec<String> =
                        loc.delta.iter().chain(&base.freshest).cloned().collect();
                    for d in deltas.iter().take(2) {
                        if http::parse_url(d).is_ok() {
                            self.fetch_crl(d, issuer, at, deadline);
                        }
                    }
                    if base.covers(at) {
                        break;
                    }
                }
            }
        }
    }

    /// One CRL URL: the disk copy if it still covers `at`, else a download. The CRL must be
    /// signed by `issuer`; what is kept is returned.
    fn fetch_crl(&self, url: &str, issuer: &Cert, at: i64, deadline: Instant) -> Option<Arc<Crl>> {
        let recent = self.state.read().ok().and_then(|s| {
            s.by_url
                .get(url)
                .filter(|slot| slot.attempt.elapsed() < RETRY_AFTER)
                .map(|slot| slot.crl.clone())
        });
        if let Some(held) = recent {
            return held;
        }
        let path = self.opts.cache_dir.as_ref().map(|d| {
            d.join("crl")
                .join(format!("{}.crl", sha256_hex(url.as_bytes())))
        });
        let mut stale = None;
        if let Some(p) = &path {
            if let Ok(data) = std::fs::read(p) {
                if let Some(crl) = Crl::parse_any(&data)
                    .ok()
                    .and_then(|v| v.into_iter().next())
                {
                    if crl.verify_signature(issuer).is_ok() {
                        let crl = Arc::new(crl);
                        let refresh = if crl.is_delta() {
                            DELTA_REFRESH
                        } else {
                            CRL_REFRESH
                        };
                        let age = std::fs::metadata(p)
                            .and_then(|m| m.modified())
                            .ok()
                            .and_then(|t| t.elapsed().ok());
                        let written = age.and_then(|a| Instant::now().checked_sub(a));
                        let young = age.is_some_and(|age| age < refresh);
                        if young && crl.covers(at) && crl.covers(unix(SystemTime::now())) {
                            tracing::debug!("CRL {url}: from the disk cache");
                            self.keep_crl(url, Some(crl.clone()), None, written);
                            return Some(crl);
                        }
                        stale = Some((crl, written));
                    }
                }
            }
        }
        let Some(timeout) = self.time_left(deadline) else {
            return stale.map(|(c, _)| c);
        };
        let result = http::get(url, MAX_CRL_SIZE, timeout).and_then(|data| {
            // DER, as RFC 5280 §4.2.1.13 says; PEM is accepted too.
            let crl = Crl::parse_any(&data)
                .map_err(|e| format!("{url}: {e}"))?
                .into_iter()
                .next()
                .ok_or_else(|| format!("{url}: no CRL"))?;
            crl.verify_signature(issuer)
                .map_err(|e| format!("{url}: {e}"))?;
            Ok((crl, data))
        });
        match result {
            Ok((crl, data)) => {
                tracing::info!(
                    "CRL {url}: {} entries, this update {}, next update {}",
                    crl.len(),
                    crate::filter::report::rfc3339(crl.this_update),
                    crl.next_update
                        .map(crate::filter::report::rfc3339)
                        .unwrap_or_else(|| "-".into())
                );
                if let Some(p) = &path {
                    write_atomic(p, &data);
                }
                let crl = Arc::new(crl);
                self.keep_crl(url, Some(crl.clone()), None, Some(Instant::now()));
                Some(crl)
            }
            Err(e) => {
                tracing::warn!("CRL {e}");
                // A stale copy may still speak for earlier validation times.
                // What was held before stays; else the stale copy from disk.
                let held = self.state.read().ok().and_then(|s| {
                    s.by_url
                        .get(url)
                        .and_then(|slot| slot.crl.clone().map(|c| (c, slot.fetched)))
                });
                let kept = held.or(stale);
                self.keep_crl(
                    url,
                    kept.as_ref().map(|(c, _)| c.clone()),
                    Some(format!("CRL {e}")),
                    kept.as_ref().and_then(|(_, w)| *w),
                );
                kept.map(|(c, _)| c)
            }
        }
    }

    /// The deadline of the next exchange: the per-request timeout, cut to what is left of the
    /// message's budget (None when nothing is left: the fetch is skipped and the status stays
    /// unknown).
    fn time_left(&self, deadline: Instant) -> Option<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left < Duration::from_millis(100) {
            tracing::warn!("revocation: no time left for fetching in this message");
            return None;
        }
        Some(left.min(self.opts.timeout))
    }

    fn keep_crl(
        &self,
        url: &str,
        crl: Option<Arc<Crl>>,
        error: Option<String>,
        fetched: Option<Instant>,
    ) {
        if let Ok(mut s) = self.state.write() {
            if s.by_url.len() >= MAX_URLS && !s.by_url.contains_key(url) {
                if let Some(oldest) = s
                    .by_url
                    .iter()
                    .min_by_key(|(_, v)| v.attempt)
                    .map(|(k, _)| k.clone())
                {
                    s.by_url.remove(&oldest);
                }
            }
            s.by_url.insert(
                url.to_string(),
                UrlSlot {
                    crl,
                    fetched,
                    attempt: Instant::now(),
                    error,
                },
            );
        }
    }

    /// Asks the OCSP responder at `url` about `cert` (disk cache first).
    fn fetch_ocsp(&self, cert: &Cert, issuer: &Cert, at: i64, url: &str, deadline: Instant) {
        let key = ocsp_key(cert, issuer);
        let path = self
            .opts
            .cache_dir
            .as_ref()
            .map(|d| d.join("ocsp").join(format!("{}.der", sha256_hex(&key))));
        if let Some(p) = &path {
            if let Ok(data) = std::fs::read(p) {
                if let Ok(r) = ocsp::parse_response(&data) {
                    let r = Arc::new(r);
                    let usable = r.verify(issuer).is_ok() && r.find(cert, issuer).is_some();
                    let answers = usable
                        && !matches!(
                            decide(cert, issuer, at, &[], &[r.as_ref()]),
                            RevocationStatus::Unknown(_)
                        );
                    if answers {
                        tracing::debug!(
                            "OCSP answer for {}: from the disk cache",
                            cert.display_name()
                        );
                        self.keep_ocsp(key, Some(r), None);
                        return;
                    }
                }
            }
        }
        let Some(timeout) = self.time_left(deadline) else {
            return;
        };
        let mut nonce = [0u8; 16];
        rand::Rng::fill(&mut rand::thread_rng(), &mut nonce);
        let req = ocsp::request(cert, issuer, &nonce);
        let result = http::post(
            url,
            "application/ocsp-request",
            &req,
            MAX_RESPONSE_SIZE,
            timeout,
        )
        .and_then(|data| {
            let r = ocsp::parse_response(&data).map_err(|e| format!("OCSP {url}: {e}"))?;
            r.verify(issuer).map_err(|e| format!("OCSP {url}: {e}"))?;
            if r.find(cert, issuer).is_none() {
                return Err(format!(
                    "OCSP {url}: the answer is not about the certificate asked for"
                ));
            }
            if r.nonce.is_some() && !r.nonce_matches(&nonce) {
                // Judged by its times alone, like an answer without a nonce
                // (docs/revocation.md).
                tracing::warn!("OCSP {url}: the answer carries another nonce");
            }
            Ok((r, data))
        });
        match result {
            Ok((r, data)) => {
                tracing::info!(
                    "OCSP {url}: answer for {} produced {}",
                    cert.display_name(),
                    crate::filter::report::rfc3339(r.produced_at)
                );
                if let Some(p) = &path {
                    write_atomic(p, &data);
                }
                self.keep_ocsp(key, Some(Arc::new(r)), None);
            }
            Err(e) => {
                let e = if e.starts_with("OCSP ") {
                    e
                } else {
                    format!("OCSP responder {e}")
                };
                tracing::warn!("{e}");
                let old = self
                    .state
                    .read()
                    .ok()
                    .and_then(|s| s.ocsp.get(&key).and_then(|slot| slot.resp.clone()));
                self.keep_ocsp(key, old, Some(e));
            }
        }
    }

    fn keep_ocsp(&self, key: Vec<u8>, resp: Option<Arc<BasicResponse>>, error: Option<String>) {
        if let Ok(mut s) = self.state.write() {
            if s.ocsp.len() >= MAX_OCSP && !s.ocsp.contains_key(&key) {
                let now = Instant::now();
                s.ocsp
                    .retain(|_, v| now.duration_since(v.attempt) < Duration::from_secs(3600));
                if s.ocsp.len() >= MAX_OCSP {
                    s.ocsp.clear();
                }
            }
            s.ocsp.insert(
                key,
                OcspSlot {
                    resp,
                    attempt: Instant::now(),
                    error,
                },
            );
        }
    }
}

impl RevocationSource for Checker {
    /// Answers from what is held; no I/O.
    fn status(&self, cert: &Cert, issuer: &Cert, at: i64) -> RevocationStatus {
        let loc = locations(cert);
        let (crls, ocsps, errors) = {
            let Ok(s) = self.state.read() else {
                return RevocationStatus::Unknown("revocation cache unavailable".into());
            };
            let crls: Vec<Arc<Crl>> = s
                .local
                .iter()
                .chain(s.by_url.values().filter_map(|v| v.crl.as_ref()))
                .filter(|c| c.issuer == cert.issuer)
                .cloned()
                .collect();
            let slot = s.ocsp.get(&ocsp_key(cert, issuer));
            let ocsps: Vec<Arc<BasicResponse>> =
                slot.and_then(|v| v.resp.clone()).into_iter().collect();
            let mut errors: Vec<String> = slot.and_then(|v| v.error.clone()).into_iter().collect();
            for url in loc.crl.iter().chain(&loc.delta) {
                if let Some(e) = s.by_url.get(url).and_then(|v| v.error.clone()) {
                    errors.push(e);
                }
            }
            (crls, ocsps, errors)
        };
        let crl_refs: Vec<&Crl> = crls.iter().map(|c| c.as_ref()).collect();
        let ocsp_refs: Vec<&BasicResponse> = ocsps.iter().map(|r| r.as_ref()).collect();
        match decide(cert, issuer, at, &crl_refs, &ocsp_refs) {
            RevocationStatus::Unknown(why) if !errors.is_empty() => {
                RevocationStatus::Unknown(format!("{}; {why}", errors.join("; ")))
            }
            other => other,
        }
    }
}

/// The first pass: answers from what is held, and notes what fetching could answer.
struct Probe<'a> {
    checker: &'a Checker,
    wanted: Mutex<Vec<(Cert, Cert, i64)>>,
}

impl RevocationSource for Probe<'_> {
    fn status(&self, cert: &Cert, issuer: &Cert, at: i64) -> RevocationStatus {
        let s = self.checker.status(cert, issuer, at);
        let (wanted, answer) = match &s {
            RevocationStatus::Unknown(_) if self.checker.can_fetch(cert, issuer) => {
                // Go on as if good, so that every certificate of the path gets noted.
                (true, RevocationStatus::Good)
            }
            RevocationStatus::Good | RevocationStatus::RevokedLater { .. } => {
                (self.checker.refresh_due(cert), s.clone())
            }
            _ => (false, s.clone()),
        };
        if !wanted {
            return answer;
        }
        if let Ok(mut w) = self.wanted.lock() {
            let seen = w
                .iter()
                .any(|(c, i, _)| c.serial == cert.serial && i.raw == issuer.raw);
            if !seen && w.len() < MAX_PAIRS {
                w.push((cert.clone(), issuer.clone(), at));
            }
        }
        answer
    }
}

/// CRLs in a directory (PEM or DER; other files are skipped with a warning), and what the
/// directory looked like.
fn read_crl_dir(dir: &Path) -> (Vec<Arc<Crl>>, Listing) {
    let seen = listing(dir);
    let mut out = Vec::new();
    for (p, _, len) in &seen {
        if *len as usize > MAX_CRL_SIZE {
            tracing::warn!("signatures.crl_dir: {} is too large; skipped", p.display());
            continue;
        }
        match std::fs::read(p)
            .map_err(|e| e.to_string())
            .and_then(|d| Crl::parse_any(&d).map_err(|e| e.to_string()))
        {
            Ok(crls) => out.extend(crls.into_iter().map(Arc::new)),
            Err(e) => tracing::warn!(
                "signatures.crl_dir: skipping {}: not a CRL ({e})",
                p.display()
            ),
        }
    }
    (out, seen)
}

/// Regular, non-hidden files of a directory (not README/notes), sorted, with mtime and size.
fn listing(dir: &Path) -> Listing {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_lowercase();
        if name.starts_with('.')
            || name.starts_with("readme")
            || name.ends_with(".md")
            || name.ends_with(".txt")
        {
            continue;
        }
        let Ok(meta) = e.metadata() else {
            continue;
        };
        if meta.is_file() {
            out.push((
                e.path(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            ));
        }
    }
    out.sort();
    out
}

/// Writes a cache file whole or not at all ([`crate::perms::write_atomic`]). Failures are
/// logged: the cache is an optimisation.
pub fn write_atomic(path: &Path, data: &[u8]) {
    if let Err(e) = crate::perms::write_atomic(path, data) {
        tracing::warn!("revocation cache: writing {}: {e}", path.display());
    }
}
