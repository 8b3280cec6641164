//! MTA-STS (RFC 8461): whether a recipient domain asks for verified TLS, and which MX hosts it
//! names.
//!
//! - §3.1: the `_mta-sts.<domain>` TXT record (`v=STSv1; id=...`) says a policy exists and its
//!   version; it is asked from the delivery resolver for every destination (hickory caches it).
//! - §3.3: the policy is fetched from `https://mta-sts.<domain>/.well-known/mta-sts.txt` only when
//!   the id changed or the cached copy expired: HTTPS with a certificate that validates for
//!   `mta-sts.<domain>` (system roots + `delivery.tls_ca_file`), no redirects, `200` and
//!   `text/plain` only, at most [`MAX_POLICY`] bytes, within [`FETCH_TIMEOUT`]. A failed fetch is
//!   not repeated for the same id within [`FETCH_BACKOFF`] (§3.3 suggests five minutes).
//! - §3.2: the policy is parsed strictly ([`parse_policy`]).
//! - §5.1: the cached policy is used while younger than its `max_age`, also when the TXT
//!   record or the policy server is gone; it lives in memory and in `<data_dir>/mta-sts.json`
//!   (0600), so a restart keeps it.
//! - §4: what a policy means for a connection is applied by `delivery::Worker::connect_any` and
//!   `client::Session` (MX name match, STARTTLS, certificate for the MX name).
//!
//! The HTTPS client is ureq (blocking, rustls with ring), run on a blocking thread; its name
//! resolver asks the delivery resolver (so tests serve `mta-sts.<domain>` from loopback DNS).
//! `delivery.mta_sts_port` replaces 443 for tests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use serde::{Deserialize, Serialize};

use super::verify::Trust;
use crate::config::Config;

/// Largest policy body accepted (RFC 8461 §3.3 lets senders limit it; 64 KiB as Postfix's
/// mta-sts-resolver and mox).
pub const MAX_POLICY: u64 = 64 * 1024;
/// The whole HTTPS exchange (§3.3 suggests a timeout of at least one minute for the fetch).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A failed fetch is retried for the same id after this long at the earliest (§3.3).
pub const FETCH_BACKOFF: Duration = Duration::from_secs(300);
/// `max_age` is capped at one year (§3.2).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// Policies kept, at most (the oldest are forgotten beyond it).
const MAX_POLICIES: usize = 10_000;
/// Name of the cache file in `data_dir`.
pub const CACHE_FILE: &str = "mta-sts.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

/// A fetched policy with the id of the TXT record it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub mode: Mode,
    /// Patterns, lower-case, without a trailing dot (`mx.example.com`, `*.example.net`).
    pub mx: Vec<String>,
    pub max_age: u64,
    /// When it was fetched (Unix seconds).
    pub fetched: i64,
}

impl Policy {
    /// Still usable at `now` (§5.1: younger than `max_age`).
    pub fn fresh(&self, now: i64) -> bool {
        now < self.fetched.saturating_add(self.max_age as i64)
    }

    /// Whether MX host `host` is one the policy names (§4.1).
    pub fn matches(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

/// §4.1: a pattern is a host name, or `*.` and a domain, which matches exactly one more label
/// on the left. Case and a trailing dot do not matter.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => match host.split_once('.') {
            Some((label, rest)) => !label.is_empty() && rest == parent,
            None => false,
        },
        None => host == pattern,
    }
}

/// §3.1: the policy id from the TXT strings of `_mta-sts.<domain>` (each record's strings
/// joined). Records not starting with `v=STSv1` are ignored; none left: `Ok(None)`; more than
/// one, or one without a valid id: an error (treated as no policy, unless one is cached).
pub fn txt_id(records: &[Vec<u8>]) -> Result<Option<String>, String> {
    let mut found = None;
    for r in records {
        let Ok(text) = std::str::from_utf8(r) else {
            continue;
        };
        let mut fields = text.split(';').map(|f| f.trim_matches([' ', '\t']));
        if fields.next() != Some("v=STSv1") {
            continue;
        }
        if found.is_some() {
            return Err("more than one v=STSv1 TXT record".into());
        }
        let mut id = None;
        for f in fields.filter(|f| !f.is_empty()) {
            let Some((k, v)) = f.split_once('=') else {
                return Err(format!("malformed field {:?}", clip(f)));
            };
            if k == "id" {
                if v.is_empty() || v.len() > 32 || !v.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(format!("invalid id {:?}", clip(v)));
                }
                id.get_or_insert(v.to_string());
            }
        }
        found = Some(id.ok_or("no id= field")?);
    }
    Ok(found)
}

/// §3.2: `key: value` lines (LF or CRLF); `version: STSv1`, `mode`, `max_age` exactly once,
/// `mx` at least once unless the mode is `none`; other keys ignored.
pub fn parse_policy(body: &[u8]) -> Result<(Mode, Vec<String>, u64), String> {
    let text = std::str::from_utf8(body).map_err(|_| "the policy is not UTF-8".to_string())?;
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("malformed line {:?}", clip(line)));
        };
        let (k, v) = (k.trim_matches([' ', '\t']), v.trim_matches([' ', '\t']));
        let once = |slot: &Option<String>| -> Result<(), String> {
            match slot {
                Some(_) => Err(format!("{k} appears twice")),
                None => Ok(()),
            }
        };
        match k {
            "version" => {
                once(&version)?;
                version = Some(v.to_string());
            }
            "mode" => {
                once(&mode.map(|m: Mode| m.as_str().to_string()))?;
                mode = Some(match v {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    _ => return Err(format!("unknown mode {:?}", clip(v))),
                });
            }
            "max_age" => {
                once(&max_age.map(|a: u64| a.to_string()))?;
                if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("invalid max_age {:?}", clip(v)));
                }
                max_age = Some(v.parse::<u64>().unwrap_or(u64::MAX).min(MAX_AGE_LIMIT));
            }
            "mx" => {
                let p = v.trim_end_matches('.').to_ascii_lowercase();
                if !valid_pattern(&p) {
                    return Err(format!("invalid mx pattern {:?}", clip(v)));
                }
                mx.push(p);
            }
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no \"version: STSv1\"".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mode != Mode::None && mx.is_empty() {
        return Err("no mx".into());
    }
    Ok((mode, mx, max_age))
}

/// `host.name` or `*.host.name`: LDH labels of at most 63 characters.
fn valid_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// At most 80 characters of remote text, for messages.
fn clip(s: &str) -> String {
    s.chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The cache file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    policies: HashMap<String, Policy>,
}

/// Looks up, fetches and caches policies. One per delivery worker.
pub struct Sts {
    resolver: Option<TokioResolver>,
    agent: ureq::Agent,
    port: u16,
    path: PathBuf,
    policies: Arc<Mutex<HashMap<String, Arc<Policy>>>>,
    /// Fetches that failed: (domain → id, when), so that they are not repeated at once.
    failed: Mutex<HashMap<String, (String, Instant)>>,
    /// Serialises writes of the cache file.
    write: Arc<Mutex<()>>,
}

impl Sts {
    /// Reads the cache file (a missing or broken one is an empty cache).
    pub fn new(config: &Config, resolver: Option<TokioResolver>, trust: &Trust) -> Sts {
        let path = config.data_dir.join(CACHE_FILE);
        let mut policies = HashMap::new();
        match std::fs::read(&path) {
            Ok(data) => match serde_json::from_slice::<CacheFile>(&data) {
                Ok(f) => {
                    let now = now_unix();
                    for (d, p) in f.policies {
                        if p.fresh(now) {
                            policies.insert(d, Arc::new(p));
                        }
                    }
                }
                Err(e) => tracing::warn!("{}: {e}; starting with no policies", path.display()),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("{}: {e}", path.display()),
        }
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(trust.ureq_roots())
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .build();
        let agent_config = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .http_status_as_error(false)
            .proxy(None)
            .timeout_global(Some(FETCH_TIMEOUT))
            .user_agent(format!("tanba/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let dns = DelegatedResolver {
            resolver: resolver.clone(),
            runtime: tokio::runtime::Handle::try_current().ok(),
        };
        let agent = ureq::Agent::with_parts(
            agent_config,
            ureq::unversioned::transport::DefaultConnector::default(),
            dns,
        );
        Sts {
            resolver,
            agent,
            port: config.delivery.mta_sts_port,
            path,
            policies: Arc::new(Mutex::new(policies)),
            failed: Mutex::new(HashMap::new()),
            write: Arc::new(Mutex::new(())),
        }
    }

    /// The policy that applies to mail for `domain` (ASCII, lower-case), if any: `enforce` or
    /// `testing`, fresh. Never fails: every problem means "no (new) policy" and is logged.
    pub async fn policy(&self, domain: &str) -> Option<Arc<Policy>> {
        let now = now_unix();
        let cached = self
            .policies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
            .filter(|p| p.fresh(now))
            .cloned();
        let id = match self.lookup_id(domain).await {
            Ok(Some(id)) => id,
            Ok(None) => return applicable(cached),
            Err(e) => {
                tracing::info!(domain, "MTA-STS: {e}");
                return applicable(cached);
            }
        };
        if cached.as_ref().is_some_and(|p| p.id == id) {
            return applicable(cached);
        }
        if let Some((failed_id, at)) = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(domain)
        {
            if *failed_id == id && at.elapsed() < FETCH_BACKOFF {
                return applicable(cached);
            }
        }
        match self.fetch(domain).await {
            Ok((mode, mx, max_age)) => {
                let p = Arc::new(Policy {
                    id,
                    mode,
                    mx,
                    max_age,
                    fetched: now,
                });
                tracing::info!(
                    domain,
                    id = %p.id,
                    mode = mode.as_str(),
                    max_age,
                    mx = %p.mx.join(" "),
                    "MTA-STS policy fetched"
                );
                self.failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(domain);
                self.store(domain, p.clone()).await;
                applicable(Some(p))
            }
            Err(e) => {
                tracing::warn!(domain, id = %id, "MTA-STS policy fetch failed: {e}");
                let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
                if failed.len() >= MAX_POLICIES {
                    failed.clear();
                }
                failed.insert(domain.to_string(), (id, Instant::now()));
                applicable(cached)
            }
        }
    }

    /// The id of `_mta-sts.<domain>`'s TXT record; `Ok(None)` when there is none.
    async fn lookup_id(&self, domain: &str) -> Result<Option<String>, String> {
        let Some(resolver) = &self.resolver else {
            return Err("no DNS resolver".into());
        };
        let name = format!("_mta-sts.{domain}.");
        match resolver.txt_lookup(name.as_str()).await {
            Ok(l) => {
                let records: Vec<Vec<u8>> = l
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => Some(t.txt_data.concat()),
                        _ => None,
                    })
                    .take(32)
                    .collect();
                txt_id(&records).map_err(|e| format!("{name} TXT: {e}"))
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Ok(None),
            Err(e) => Err(format!("{name} TXT: {}", clip(&e.to_string()))),
        }
    }

    /// GET and parse the policy (on a blocking thread: ureq is synchronous).
    async fn fetch(&self, domain: &str) -> Result<(Mode, Vec<String>, u64), String> {
        let url = if self.port == 443 {
            format!("https://mta-sts.{domain}/.well-known/mta-sts.txt")
        } else {
            format!(
                "https://mta-sts.{domain}:{}/.well-known/mta-sts.txt",
                self.port
            )
        };
        let agent = self.agent.clone();
        let body = tokio::task::spawn_blocking(move || get(&agent, &url))
            .await
            .map_err(|e| format!("policy fetch crashed: {e}"))??;
        parse_policy(&body).map_err(|e| format!("invalid policy: {e}"))
    }

    /// Keeps `p` in memory and writes the cache file.
    async fn store(&self, domain: &str, p: Arc<Policy>) {
        {
            let mut map = self.policies.lock().unwrap_or_else(|p| p.into_inner());
            map.insert(domain.to_string(), p);
            if map.len() > MAX_POLICIES {
                let now = now_unix();
                map.retain(|_, p| p.fresh(now));
                while map.len() > MAX_POLICIES {
                    let Some(oldest) = map
                        .iter()
                        .min_by_key(|(_, p)| p.fetched)
                        .map(|(d, _)| d.clone())
                    else {
                        break;
                    };
                    map.remove(&oldest);
                }
            }
        }
        let (lock, policies, path) = (self.write.clone(), self.policies.clone(), self.path.clone());
        // A small file, written only when a policy id changes. The snapshot is taken under the
        // write lock, so the last write holds the newest state.
        let r = tokio::task::spawn_blocking(move || {
            let _g = lock.lock().unwrap_or_else(|p| p.into_inner());
            let snapshot = CacheFile {
                policies: policies
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(d, p)| (d.clone(), Policy::clone(p)))
                    .collect(),
            };
            let data = serde_json::to_vec_pretty(&snapshot).map_err(|e| e.to_string())?;
            crate::perms::write_atomic(&path, &data)
                .map_err(|e| format!("writing {}: {e}", path.display()))
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = r {
            tracing::warn!("MTA-STS cache: {e}");
        }
    }
}

/// A policy that asks for something (`none` is the domain withdrawing MTA-STS, §3.2).
fn applicable(p: Option<Arc<Policy>>) -> Option<Arc<Policy>> {
    p.filter(|p| p.mode != Mode::None)
}

/// One policy GET (RFC 8461 §3.3).
fn get(agent: &ureq::Agent, url: &str) -> Result<Vec<u8>, String> {
    let mut resp = agent.get(url).call().map_err(|e| format!("{url}: {e}"))?;
    let status = resp.status();
    if status.is_redirection() {
        return Err(format!(
            "{url}: HTTP {}: redirects are not followed (RFC 8461 §3.3)",
            status.as_u16()
        ));
    }
    if status.as_u16() != 200 {
        return Err(format!("{url}: HTTP {}", status.as_u16()));
    }
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ct.split(';').next().map(str::trim) != Some("text/plain") {
        return Err(format!(
            "{url}: Content-Type {:?}, not text/plain",
            clip(&ct)
        ));
    }
    resp.body_mut()
        .with_config()
        .limit(MAX_POLICY)
        .read_to_vec()
        .map_err(|e| format!("{url}: {e}"))
}

/// ureq's name resolution through the delivery resolver (hickory, async), from the blocking
/// thread the fetch runs on.
#[derive(Debug)]
struct DelegatedResolver {
    resolver: Option<TokioResolver>,
    runtime: Option<tokio::runtime::Handle>,
}

impl ureq::unversioned::resolver::Resolver for DelegatedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let (Some(resolver), Some(rt)) = (&self.resolver, &self.runtime) else {
            return Err(ureq::Error::HostNotFound);
        };
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let port = uri.port_u16().unwrap_or(443);
        let mut name = host.to_string();
        name.push('.');
        let lookup = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(15), resolver.lookup_ip(name.as_str())).await
        });
        let ips: Vec<IpAddr> = match lookup {
            Ok(Ok(l)) => l.iter().collect(),
            _ => return Err(ureq::Error::HostNotFound),
        };
        let mut out = self.empty();
        for ip in ips.into_iter().take(4) {
            out.push(SocketAddr::new(ip, port));
        }
        if out.is_empty() {
            return Err(ureq::Error::HostNotFound);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_records() {
        let r = |v: &[&str]| -> Vec<Vec<u8>> { v.iter().map(|s| s.as_bytes().to_vec()).collect() };
        assert_eq!(
            txt_id(&r(&["v=STSv1; id=20160831085700Z;"])).unwrap(),
            Some("20160831085700Z".into())
        );
        assert_eq!(
            txt_id(&r(&["v=spf1 -all", "v=STSv1;id=abc; ext=1"])).unwrap(),
            Some("abc".into())
        );
        assert_eq!(txt_id(&r(&["v=spf1 -all"])).unwrap(), None);
        assert_eq!(txt_id(&[]).unwrap(), None);
        assert!(txt_id(&r(&["v=STSv1; id=1", "v=STSv1; id=2"])).is_err());
        assert!(txt_id(&r(&["v=STSv1;"])).is_err());
        assert!(txt_id(&r(&["v=STSv1; id=a-b"])).is_err());
        assert!(txt_id(&r(&["v=STSv1; id=123456789012345678901234567890123"])).is_err());
        assert!(txt_id(&r(&["v=STSv1; junk"])).is_err());
        // "v=STSv10" is another version.
        assert_eq!(txt_id(&r(&["v=STSv10; id=1"])).unwrap(), None);
    }

    #[test]
    fn policies() {
        let (m, mx, age) = parse_policy(
            b"version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\n",
        )
        .unwrap();
        assert_eq!(m, Mode::Enforce);
        assert_eq!(mx, vec!["mail.example.com", "*.example.net"]);
        assert_eq!(age, 604800);
        // LF only, unknown keys ignored, max_age capped at a year.
        let (m, _, age) = parse_policy(
            b"version: STSv1\nmode: testing\nmx: a.b\nfoo: bar\nmax_age: 9999999999\n",
        )
        .unwrap();
        assert_eq!((m, age), (Mode::Testing, MAX_AGE_LIMIT));
        // none needs no mx.
        assert_eq!(
            parse_policy(b"version: STSv1\nmode: none\nmax_age: 1\n").unwrap(),
            (Mode::None, vec![], 1)
        );
        for bad in [
            &b"mode: enforce\nmx: a.b\nmax_age: 1\n"[..],
            b"version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
            b"version: STSv1\nmode: strict\nmx: a.b\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: a.b\n",
            b"version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
            b"version: STSv1\nmode: enforce\nmode: testing\nmx: a.b\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n",
            b"version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n",
            b"<html>\n",
            b"version: STSv1\nmode: enforce\nmx: \xff\nmax_age: 1\n",
        ] {
            assert!(
                parse_policy(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn mx_patterns() {
        assert!(mx_matches("mail.example.com", "MAIL.example.com."));
        assert!(mx_matches("*.example.com", "mx1.example.com"));
        assert!(!mx_matches("*.example.com", "example.com"));
        assert!(!mx_matches("*.example.com", "a.mx1.example.com"));
        assert!(!mx_matches("mail.example.com", "mail.example.org"));
        assert!(!mx_matches("*.example.com", ".example.com"));
    }

    #[test]
    fn freshness() {
        let p = Policy {
            id: "1".into(),
            mode: Mode::Enforce,
            mx: vec!["*.b.test".into()],
            max_age: 10,
            fetched: 100,
        };
        assert!(p.fresh(109) && !p.fresh(110));
        assert!(p.matches("mx.b.test") && !p.matches("mx.c.test"));
    }
}
