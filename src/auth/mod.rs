//! Password logins for every protocol (SMTP AUTH, IMAP LOGIN/AUTHENTICATE): one call,
//! [`Authenticator::login`], that
//!
//! 1. refuses an address banned for failed logins (SPEC §8 `limits.auth_failures`, `ban_time`);
//! 2. looks the account up and answers from the credential cache (`cache.rs`) when this exact
//!    password was verified for this exact stored hash within the last minutes;
//! 3. otherwise verifies with argon2 on the fixed worker pool (`hasher.rs`), against a dummy hash
//!    when the account does not exist, so that both cost the same; logins with the *same*
//!    account and password that arrive while one is being verified wait for it and then answer
//!    from the cache (a client opening ten connections at once pays one argon2, not ten). Other
//!    passwords never wait for each other: a guesser cannot hold up the owner;
//! 4. on failure records it (`throttle.rs`), logs one line, bans the address when the count is
//!    reached, and answers after a growing delay — on a timer, not holding a hashing worker;
//! 5. on success waits the account's delay (failures for it from any address), never refusing.
//!
//! Log lines (fixed format, matched by `config/fail2ban/filter.d/tanba.conf`; the user name is
//! escaped with Rust's debug quoting, so it can contain neither a quote nor a control character):
//!
//! ```text
//! auth failure client_ip=192.0.2.7 proto=smtp user="bob@example.kz"
//! auth ban client_ip=192.0.2.7 failures=10 ban_time=900s
//! auth ok client_ip=192.0.2.8 proto=imap user="alice@example.kz" cached=false
//! ```

pub mod cache;
pub mod hasher;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::LimitsConfig;
use crate::store::account::Account;
use crate::store::Store;

pub use cache::CredentialCache;
pub use hasher::Hasher;
pub use throttle::Throttle;

/// Longest user name looked up (an address is at most 320 octets, RFC 5321 §4.5.3.1).
const MAX_USER: usize = 320;
/// Characters of a user name that reach the log.
const MAX_LOGGED_USER: usize = MAX_USER;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Smtp,
    Imap,
    /// The self-service page (`src/http/account.rs`).
    Http,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Smtp => "smtp",
            Proto::Imap => "imap",
            Proto::Http => "http",
        }
    }
}

#[derive(Debug)]
pub enum Outcome {
    /// The password is right.
    Ok(Account),
    /// Wrong user or password (already delayed).
    Failed,
    /// The client's address is banned: refuse and close.
    Banned,
}

pub struct Authenticator {
    store: Store,
    hasher: Hasher,
    cache: CredentialCache,
    throttle: Throttle,
    /// Verified against when the account does not exist; made on the pool at first need (no
    /// 19 MiB allocation outside the workers).
    dummy: tokio::sync::OnceCell<String>,
    /// Verifications in progress, by the cache's digest of (account, password): at most one
    /// per distinct credentials (step 3 of the module docs). Entries live while a login holds
    /// them, so there are at most as many as logins in progress.
    inflight: std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

/// One login's place in [`Authenticator::inflight`]; leaves it (and drops the entry when it was
/// the last) on drop, also when the login future is cancelled.
struct Inflight<'a> {
    map: &'a std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
    key: Vec<u8>,
    gate: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Inflight<'a> {
    fn enter(
        map: &'a std::sync::Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
        key: Vec<u8>,
    ) -> Inflight<'a> {
        let gate = map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        Inflight { map, key, gate }
    }
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else is waiting.
        if Arc::strong_count(&self.gate) <= 2 {
            map.remove(&self.key);
        }
    }
}

impl Authenticator {
    pub fn new(store: Store, limits: &LimitsConfig) -> Result<Authenticator> {
        let hasher = Hasher::start(Hasher::default_workers())
            .context("starting the password hashing workers")?;
        Ok(Authenticator {
            store,
            hasher,
            cache: CredentialCache::new(cache::TTL, cache::MAX_ENTRIES),
            throttle: Throttle::new(limits.auth_failures, limits.ban_time),
            dummy: tokio::sync::OnceCell::new(),
            inflight: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The hashing pool (the admin commands hash new passwords on it).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Whether `ip` is banned for failed logins (the accept loops refuse its connections).
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.throttle.is_banned(ip, Instant::now())
    }

    /// Addresses banned now (the metrics).
    pub fn bans_now(&self) -> u64 {
        self.throttle.banned_now(Instant::now())
    }

    /// Checks `user`'s `password` for a client at `ip`; see the module docs for the steps.
    pub async fn login(
        &self,
        ip: IpAddr,
        proto: Proto,
        user: &str,
        password: &str,
    ) -> Result<Outcome> {
        let outcome = self.check(ip, proto, user, password).await;
        count(proto, outcome.as_ref().ok());
        outcome
    }

    async fn check(&self, ip: IpAddr, proto: Proto, user: &str, password: &str) -> Result<Outcome> {
        let start = Instant::now();
        if self.throttle.is_banned(ip, start) {
            return Ok(self.banned(ip, proto, user));
        }
        let name = normalize(user);
        let found = if name.is_empty() || name.len() > MAX_USER {
            None
        } else {
            self.store.account(&name)?
        };
        if let Some(a) = &found {
            if self.cache.hit(&a.email, &a.password_hash, password, start) {
                tracing::info!(
                    "auth ok client_ip={ip} proto={} user={:?} cached=true",
                    proto.as_str(),
                    a.email
                );
                return Ok(Outcome::Ok(found.expect("checked")));
            }
        }
        // Wait for a verification of the same credentials already running, then ask the
        // cache again (step 3). Released before any delay below.
        let inflight = found
            .as_ref()
            .and_then(|a| self.cache.mac(&a.email, password))
            .map(|key| Inflight::enter(&self.inflight, key));
        let held = match &inflight {
            Some(i) => Some(i.gate.lock().await),
            None => None,
        };
        if let (Some(a), Some(_)) = (&found, &held) {
            if self
                .cache
                .hit(&a.email, &a.password_hash, password, Instant::now())
            {
                drop(held);
                tracing::info!(
                    "auth ok client_ip={ip} proto={} user={:?} cached=true",
                    proto.as_str(),
                    a.email
                );
                return Ok(Outcome::Ok(found.expect("checked")));
            }
        }
        let phc = match &found {
            Some(a) => a.password_hash.clone(),
            None => self
                .dummy
                .get_or_try_init(|| self.hasher.hash("tanba: no such user".into()))
                .await?
                .clone(),
        };
        let right = self.hasher.verify(phc, password.to_string()).await?;
        if let (true, Some(a)) = (right, &found) {
            // Before the waiting logins of the same credentials look again.
            self.cache
                .insert(&a.email, &a.password_hash, password, Instant::now());
        }
        drop(held);
        drop(inflight);
        match found {
            Some(a) if right => {
                let now = Instant::now();
                if self.throttle.is_banned(ip, now) {
                    // Banned while we were verifying (parallel attempts from the same address).
                    return Ok(self.banned(ip, proto, user));
                }
                tokio::time::sleep_until(
                    (start + self.throttle.account_delay(&a.email, now)).into(),
                )
                .await;
                tracing::info!(
                    "auth ok client_ip={ip} proto={} user={:?} cached=false",
                    proto.as_str(),
                    a.email
                );
                Ok(Outcome::Ok(a))
            }
            _ => {
                self.fail(ip, proto, user, start).await;
                Ok(Outcome::Failed)
            }
        }
    }

    /// Credentials too malformed to check (not UTF-8): a failure like a wrong password.
    pub async fn reject(&self, ip: IpAddr, proto: Proto, user: &str) -> Outcome {
        let start = Instant::now();
        let outcome = if self.throttle.is_banned(ip, start) {
            self.banned(ip, proto, user)
        } else {
            self.fail(ip, proto, user, start).await;
            Outcome::Failed
        };
        count(proto, Some(&outcome));
        outcome
    }

    async fn fail(&self, ip: IpAddr, proto: Proto, user: &str, start: Instant) {
        let name = normalize(user);
        let key = truncate(&name, MAX_USER);
        let f = self.throttle.failure(ip, key, Instant::now());
        tracing::warn!(
            "auth failure client_ip={ip} proto={} user={:?}",
            proto.as_str(),
            truncate(user, MAX_LOGGED_USER)
        );
        if let Some(n) = f.banned {
            crate::metrics::REGISTRY.bans.inc();
            tracing::warn!(
                "auth ban client_ip={ip} failures={n} ban_time={}s",
                self.throttle.ban_time().as_secs()
            );
        }
        tokio::time::sleep_until((start + f.delay).into()).await;
    }

    fn banned(&self, ip: IpAddr, proto: Proto, user: &str) -> Outcome {
        tracing::info!(
            "auth refused client_ip={ip} proto={} user={:?}: address banned",
            proto.as_str(),
            truncate(user, MAX_LOGGED_USER)
        );
        Outcome::Banned
    }
}

/// Counts a login in `tanba_logins_total` (`None`: the check itself failed).
fn count(proto: Proto, outcome: Option<&Outcome>) {
    let result = match outcome {
        Some(Outcome::Ok(_)) => "success",
        Some(Outcome::Failed) => "failure",
        Some(Outcome::Banned) => "banned",
        None => "error",
    };
    crate::metrics::REGISTRY.logins.inc(proto.as_str(), result);
}

/// The account key: what the store looks up (trimmed, lower-case).
fn normalize(user: &str) -> String {
    user.trim().to_ascii_lowercase()
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_are_cut_at_char_boundaries_and_logged_escaped() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("жжж", 3), "ж");
        let logged = format!(
            "user={:?}",
            truncate("x\n2026 auth ban client_ip=1.2.3.4\"", 100)
        );
        assert_eq!(logged, r#"user="x\n2026 auth ban client_ip=1.2.3.4\"""#);
        assert!(!logged.contains('\n'));
    }
}
