//! Certificates by ACME (RFC 8555; SPEC §11 `[acme]`, docs/web.md "Certificates by ACME").
//!
//! A background task ([`run`]) checks the certificate at start, then every
//! `acme.check_interval` and after every SIGHUP reload ([`State::wake`]). It orders a new
//! certificate when there is none in `<data_dir>/acme/`, when its names differ from
//! `acme.domains` (or the derived list), or when less than `acme.renew_before` (default: a
//! third of its lifetime) remains. Domain control is proven by HTTP-01 (RFC 8555 §8.3): the
//! task puts each token's key authorization into [`State`], which the route of
//! `src/http/acme.rs` serves on `http.listen` (port 80 in production). The new chain and key
//! are written to `<data_dir>/acme/` (0700 directory, 0600 files, each written to a temporary
//! file, fsynced and renamed) and swapped into [`crate::tls::Certs`], which every TLS listener
//! uses for its next handshake. A failure is logged, the current certificate keeps serving, and
//! the task retries with a doubling delay (1 min up to `acme.check_interval`).
//!
//! The account key lives in `<data_dir>/acme/account.json` (the crate's credentials: key,
//! account URL and directory) and is reused across restarts while `acme.directory` stays the
//! same; another directory gets a new account.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::server::{App, Live};
use crate::shutdown::Shutdown;

/// First delay after a failed check; it doubles up to `acme.check_interval`.
pub const FIRST_RETRY: Duration = Duration::from_secs(60);
/// Longest time one issuance (order, challenges, finalization, download) may take.
pub const ISSUE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest token the challenge route looks up (RFC 8555 §8.1: base64url, at least 128 bits;
/// CAs use 43 characters).
pub const MAX_TOKEN_LEN: usize = 256;

/// What the renewal task shares with the rest of the server: the HTTP-01 tokens it is
/// answering, and a way to make it check now.
#[derive(Debug, Default)]
pub struct State {
    /// token → key authorization, while an order is pending (at most one entry per name).
    challenges: Mutex<HashMap<String, String>>,
    wake: tokio::sync::Notify,
    /// Held while the files of `<data_dir>/acme/` are written or read as a pair (a reload must
    /// not read a new key with the old certificate).
    files: Mutex<()>,
}

impl State {
    pub fn new() -> Arc<State> {
        Arc::new(State::default())
    }

    /// The key authorization to answer for `token` (RFC 8555 §8.3), if an order waits for it.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        self.map().get(token).cloned()
    }

    /// Makes the renewal task check now (after a reload: `[acme]` may have changed).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Held by a reload while it reads the certificate, by the task while it writes it.
    pub fn files(&self) -> std::sync::MutexGuard<'_, ()> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.challenges.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes the tokens of one order from [`State`] however the order ends.
struct Tokens<'a> {
    state: &'a State,
    tokens: Vec<String>,
}

impl Tokens<'_> {
    fn add(&mut self, token: String, key_authorization: String) {
        self.state.map().insert(token.clone(), key_authorization);
        self.tokens.push(token);
    }
}

impl Drop for Tokens<'_> {
    fn drop(&mut self) {
        let mut map = self.state.map();
        for t in &self.tokens {
            map.remove(t);
        }
    }
}

/// The files in `<data_dir>/acme/`.
pub struct Paths {
    pub dir: PathBuf,
    pub account: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Paths {
    pub fn of(data_dir: &Path) -> Paths {
        let dir = data_dir.join("acme");
        Paths {
            account: dir.join("account.json"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        }
    }
}

/// The certificate and key stored by an earlier issuance; None when there is none yet.
pub fn stored_identity(data_dir: &Path) -> Result<Option<CertifiedKey>> {
    Ok(read_stored(&Paths::of(data_dir))?.map(|s| s.key))
}

struct Stored {
    key: CertifiedKey,
    /// The leaf certificate's names and validity.
    leaf: Leaf,
}

fn read_stored(p: &Paths) -> Result<Option<Stored>> {
    if !p.cert.exists() && !p.key.exists() {
        return Ok(None);
    }
    let certs = crate::tls::load_certs(&p.cert)?;
    let key = crate::tls::load_key(&p.key)?;
    let leaf = Leaf::parse(&certs[0])?;
    let key = crate::tls::certified_key(certs, key)
        .with_context(|| format!("{} and {}", p.cert.display(), p.key.display()))?;
    Ok(Some(Stored { key, leaf }))
}

/// What the renewal decision needs from a leaf certificate.
struct Leaf {
    names: Vec<String>,
    /// Seconds from now to notAfter (negative: expired).
    remaining: i64,
    /// Seconds from notBefore to notAfter.
    lifetime: i64,
}

impl Leaf {
    fn parse(der: &CertificateDer<'_>) -> Result<Leaf> {
        let x = openssl::x509::X509::from_der(der).context("parsing the certificate")?;
        let now = openssl::asn1::Asn1Time::days_from_now(0)?;
        let secs = |d: openssl::asn1::TimeDiff| d.days as i64 * 86_400 + d.secs as i64;
        let remaining = secs(now.diff(x.not_after())?);
        let lifetime = secs(x.not_before().diff(x.not_after())?);
        let names = x
            .subject_alt_names()
            .map(|sans| {
                sans.iter()
                    .filter_map(|n| n.dnsname().map(|d| d.to_ascii_lowercase()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Leaf {
            names,
            remaining,
            lifetime,
        })
    }

    /// Why this certificate must be replaced, if it must.
    fn due(&self, want: &[String], renew_before: Option<Duration>) -> Option<String> {
        let mut have = self.names.clone();
        have.sort();
        let mut want = want.to_vec();
        want.sort();
        if have != want {
            return Some(format!(
                "its names ({}) are not acme.domains ({})",
                have.join(", "),
                want.join(", ")
            ));
        }
        let (before, rule) = match renew_before {
            Some(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                "acme.renew_before",
            ),
            None => (self.lifetime / 3, "a third of its lifetime"),
        };
        if self.remaining < before {
            return Some(format!(
                "it expires in {}, less than {rule}",
                humantime::format_duration(Duration::from_secs(self.remaining.max(0) as u64))
            ));
        }
        None
    }
}

/// The renewal task: checks at start, every `acme.check_interval`, after each reload, and
/// sooner after a failure (backoff). Ends on shutdown.
pub async fn run(live: Arc<Live>, mut shutdown: Shutdown) {
    // instant-acme's HTTPS client takes rustls' process-wide provider: ring, like ours.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut retry = FIRST_RETRY;
    loop {
        let app = live.app();
        let interval = app.config.acme.check_interval;
        let wait = if app.config.acme.directory.is_none() {
            interval
        } else {
            let checked = tokio::select! {
                r = tokio::time::timeout(ISSUE_TIMEOUT, check(&app)) => {
                    r.unwrap_or_else(|_| Err(anyhow!("no certificate within {ISSUE_TIMEOUT:?}")))
                }
                _ = shutdown.stopping() => return,
            };
            match checked {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    interval
                }
                Err(e) => {
                    let wait = retry.min(interval);
                    retry = (retry * 2).min(interval);
                    // The chain may quote what a CA or a validated host sent: printable ASCII only.
                    tracing::warn!(
                        "acme: {}; the current certificate keeps serving; next attempt in {}",
                        printable(&format!("{e:#}")),
                        humantime::format_duration(wait)
                    );
                    wait
                }
            }
        };
        let state = app.acme.clone();
        drop(app);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = state.wake.notified() => {}
            _ = shutdown.stopping() => return,
        }
    }
}

/// One check: serves the stored certificate, or issues a new one when it is missing or due.
async fn check(app: &App) -> Result<()> {
    let cfg = &app.config;
    let paths = Paths::of(&cfg.data_dir);
    let stored = {
        let p = Paths::of(&cfg.data_dir);
        let state = app.acme.clone();
        tokio::task::spawn_blocking(move || {
            let _files = state.files();
            read_stored(&p)
        })
        .await?
    };
    let why = match stored {
        Ok(Some(s)) => match s.leaf.due(&cfg.acme.domains, cfg.acme.renew_before) {
            None => {
                let current = app.certs.current();
                if current.end_entity_cert().ok() != s.key.end_entity_cert().ok() {
                    app.certs.set(s.key);
                }
                tracing::debug!(
                    "acme: the certificate is valid for another {}",
                    humantime::format_duration(Duration::from_secs(s.leaf.remaining as u64))
                );
                return Ok(());
            }
            Some(why) => why,
        },
        Ok(None) => "there is none yet".to_string(),
        Err(e) => format!("the stored one is unusable ({e:#})"),
    };
    tracing::info!(
        "acme: ordering a certificate for {} because {why}",
        cfg.acme.domains.join(", ")
    );
    let (chain, key) = issue(cfg, &paths, &app.acme).await?;
    let certs = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .context("parsing the issued chain")?;
    if certs.is_empty() {
        bail!("the CA sent no certificate");
    }
    let leaf = Leaf::parse(&certs[0])?;
    let pkey = PrivateKeyDer::from_pem_slice(key.as_bytes())
        .map_err(|e| anyhow!("the new private key: {e}"))?;
    let ck = crate::tls::certified_key(certs, pkey)?;
    {
        let (dir, kp, cp) = (paths.dir.clone(), paths.key.clone(), paths.cert.clone());
        let (chain, key) = (chain.clone(), key.clone());
        let state = app.acme.clone();
        let certs = app.certs.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let _files = state.files();
            crate::perms::create_dir_all(&dir)?;
            write_atomic(&kp, key.as_bytes())?;
            write_atomic(&cp, chain.as_bytes())?;
            certs.set(ck);
            Ok(())
        })
        .await??;
    }
    tracing::info!(
        "acme: new certificate for {} installed on every TLS listener (valid for {})",
        cfg.acme.domains.join(", "),
        humantime::format_duration(Duration::from_secs(leaf.remaining.max(0) as u64))
    );
    Ok(())
}

/// The account's credentials as stored, with the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

async fn account(cfg: &Config, paths: &Paths, directory: &str) -> Result<Account> {
    let builder = || -> Result<instant_acme::AccountBuilder> {
        Ok(match &cfg.acme.ca_file {
            Some(ca) => Account::builder_with_root(ca).context("acme.ca_file")?,
            None => Account::builder()?,
        })
    };
    if let Ok(data) = std::fs::read(&paths.account) {
        match serde_json::from_slice::<StoredAccount>(&data) {
            Ok(s) if s.directory == directory => {
                return builder()?
                    .from_credentials(s.credentials)
                    .await
                    .context("restoring the ACME account");
            }
            Ok(_) => tracing::info!("acme: acme.directory changed; creating a new account"),
            Err(e) => tracing::warn!(
                "acme: {} is unreadable ({e}); creating a new account",
                paths.account.display()
            ),
        }
    }
    let contact: Vec<&str> = cfg.acme.contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            directory.to_string(),
            None,
        )
        .await
        .context("creating the ACME account")?;
    let data = serde_json::to_vec_pretty(&StoredAccount {
        directory: directory.to_string(),
        credentials,
    })?;
    let (dir, path) = (paths.dir.clone(), paths.account.clone());
    tokio::task::spawn_blocking(move || -> Result<()> {
        crate::perms::create_dir_all(&dir)?;
        write_atomic(&path, &data)
    })
    .await??;
    tracing::info!("acme: created an account at {directory}");
    Ok(account)
}

/// Orders a certificate for `acme.domains`, answering HTTP-01; returns the PEM chain and the
/// PEM (PKCS#8) key.
async fn issue(cfg: &Config, paths: &Paths, state: &State) -> Result<(String, String)> {
    let directory = cfg
        .acme
        .directory
        .as_deref()
        .ok_or_else(|| anyhow!("acme.directory is empty"))?;
    let account = account(cfg, paths, directory).await?;
    let ids: Vec<Identifier> = cfg
        .acme
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .context("new order")?;
    let mut tokens = Tokens {
        state,
        tokens: Vec::new(),
    };
    {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.context("fetching an authorization")?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                s => bail!("the authorization for {} is {s:?}", authz.identifier()),
            }
            let name = authz.identifier().to_string();
            let mut challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| anyhow!("the CA offers no http-01 challenge for {name}"))?;
            tokens.add(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            challenge
                .set_ready()
                .await
                .with_context(|| format!("http-01 for {name}"))?;
        }
    }
    let polling = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(Duration::from_secs(120));
    let status = order.poll_ready(&polling).await.context("validation")?;
    if status != OrderStatus::Ready {
        // Why: the errors of the failed challenges (RFC 8555 §7.1.5, `error` of a challenge).
        let mut why = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            if let Ok(state) = authz.refresh().await {
                for c in &state.challenges {
                    if let Some(e) = &c.error {
                        why.push(format!("{}: {e}", state.identifier()));
                    }
                }
            }
        }
        bail!(
            "the order is {status:?} after validation ({})",
            why.join("; ")
        );
    }
    drop(tokens);
    let key = order.finalize().await.context("finalizing the order")?;
    let chain = order
        .poll_certificate(&polling)
        .await
        .context("downloading the certificate")?;
    Ok((chain, key))
}

/// `s` with anything but printable ASCII replaced by `?`, at most 512 characters.
fn printable(s: &str) -> String {
    s.chars()
        .take(512)
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// [`crate::perms::write_atomic`], its error naming the file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    crate::perms::write_atomic(path, data).with_context(|| format!("writing {}", path.display()))
}
