//! Configuration: one TOML file, read in two stages.
//!
//! [`FileConfig`] mirrors the TOML exactly (serde, unknown keys rejected) and carries the built-in
//! defaults of SPEC §3. [`Config`] is the validated, resolved form the rest of the program uses:
//! addresses parsed, durations parsed, relative paths made absolute against the directory of the
//! config file (or the working directory when running on the built-in defaults).
//!
//! Every validation error names the key (`smtp.mx`, `tls.cert`, ...) and, when the key is written in
//! the file, its line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The raw file, as written by the operator. Field names are the TOML keys of SPEC §3.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub server: ServerSection,
    pub tls: TlsSection,
    pub smtp: SmtpSection,
    pub imap: ImapSection,
    pub http: HttpSection,
    pub acme: AcmeSection,
    pub mta_sts: MtaStsSection,
    pub signatures: SignaturesSection,
    pub delivery: DeliverySection,
    pub limits: LimitsSection,
    pub auth: AuthSection,
    pub dkim: BTreeMap<String, DkimSection>,
    pub store: StoreSection,
}

/// `[store]` (SPEC §13): which store backend holds the mail (docs/cluster.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: String,
    pub url: String,
    /// Connections per node to the database (backend = "postgres").
    pub pool: usize,
    /// PEM CA certificates for the database's certificate (sslmode verify-ca / verify-full).
    pub ca_file: String,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            backend: "sled".into(),
            url: String::new(),
            pool: crate::store::DEFAULT_POOL,
            ca_file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub hostname: String,
    pub domains: Vec<String>,
    pub data_dir: String,
    /// Where `postmaster@` and `abuse@` of every local domain go when no alias names them
    /// (empty: the first account created). docs/operations.md, "Aliases".
    pub postmaster: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            hostname: "localhost".into(),
            domains: vec!["localhost".into()],
            data_dir: "data".into(),
            postmaster: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSection {
    pub mx: Vec<String>,
    pub submission: Vec<String>,
    pub submissions: Vec<String>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    /// SPEC §8: simultaneous MX sessions (421 beyond it); submission has its own pool.
    pub max_connections: usize,
    /// SPEC §8: simultaneous sessions on the submission ports (587 and 465 together).
    pub max_submission_connections: usize,
    /// Not in SPEC §3's list: a session idle this long is closed (421 4.4.2).
    pub idle_timeout: String,
    /// Not in SPEC §3's list: a session older than this is closed after its current command.
    pub session_timeout: String,
}

impl Default for SmtpSection {
    fn default() -> Self {
        SmtpSection {
            mx: vec!["127.0.0.1:2525".into()],
            submission: vec!["127.0.0.1:2587".into()],
            submissions: vec!["127.0.0.1:2465".into()],
            max_message_size: 52_428_800,
            max_recipients: 100,
            max_connections: 512,
            max_submission_connections: 512,
            idle_timeout: "5m".into(),
            session_timeout: "30m".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImapSection {
    pub listen: Vec<String>,
    pub listen_tls: Vec<String>,
    /// Not in SPEC §3's list: simultaneous IMAP connections (BYE beyond it).
    pub max_connections: usize,
    /// Not in SPEC §3's list: RFC 3501 §5.4 requires at least 30 minutes.
    pub idle_timeout: String,
    /// Not in SPEC §3's list: the largest literal (APPEND) accepted; default = smtp.max_message_size.
    pub max_literal_size: u64,
}

impl Default for ImapSection {
    fn default() -> Self {
        ImapSection {
            listen: vec!["127.0.0.1:2143".into()],
            listen_tls: vec!["127.0.0.1:2993".into()],
            max_connections: 1024,
            idle_timeout: "30m".into(),
            max_literal_size: 52_428_800,
        }
    }
}

/// SPEC §11: the web endpoint's listeners (docs/web.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// Plain HTTP: autoconfig, MTA-STS, ACME HTTP-01 (production: 80).
    pub listen: Vec<String>,
    /// HTTPS with the mail certificate (production: 443).
    pub listen_tls: Vec<String>,
    /// Prometheus `/metrics` and `/healthz`; empty: off.
    pub metrics: Vec<String>,
    /// Not in SPEC §11's list: simultaneous HTTP connections over all three (closed beyond it).
    pub max_connections: usize,
    /// Not in SPEC §11's list: where the client add-ons served under `/clients/` are
    /// (docs/web.md, "Self-service page"); relative to the config file's directory.
    pub clients_dir: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: vec!["127.0.0.1:2080".into()],
            listen_tls: vec!["127.0.0.1:2443".into()],
            metrics: vec!["127.0.0.1:2090".into()],
            max_connections: 512,
            clients_dir: "clients".into(),
        }
    }
}

/// SPEC §11: certificates by ACME (docs/web.md, "Certificates by ACME").
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AcmeSection {
    /// ACME directory URL (https); empty: ACME off, certificates from `[tls]`.
    pub directory: String,
    /// Account contacts, e.g. `mailto:admin@example.kz`.
    pub contact: Vec<String>,
    /// Names on the certificate; empty: server.hostname plus `autoconfig.<d>` and `mta-sts.<d>`.
    pub domains: Vec<String>,
    /// Not in SPEC §11: PEM CA certificate that signs the directory's HTTPS certificate (a
    /// private or test ACME CA such as pebble); empty: the system's roots.
    pub ca_file: String,
    /// Not in SPEC §11: renew when less than this remains; empty: a third of the lifetime.
    pub renew_before: String,
    /// Not in SPEC §11: how often the certificate is checked.
    pub check_interval: String,
}

impl Default for AcmeSection {
    fn default() -> Self {
        AcmeSection {
            directory: String::new(),
            contact: Vec::new(),
            domains: Vec::new(),
            ca_file: String::new(),
            renew_before: String::new(),
            check_interval: "12h".into(),
        }
    }
}

/// The MTA-STS policy (RFC 8461) served at `https://mta-sts.<domain>/.well-known/mta-sts.txt`
/// and announced by `tanba dns` (docs/web.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MtaStsSection {
    /// `none`, `testing` (senders report but deliver anyway) or `enforce`.
    pub mode: String,
    /// How long senders cache the policy (RFC 8461 §3.2: at most 31557600 s).
    pub max_age: String,
}

impl Default for MtaStsSection {
    fn default() -> Self {
        MtaStsSection {
            mode: "testing".into(),
            max_age: "7days".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignaturesSection {
    pub trust_dir: String,
    pub crl_dir: String,
    pub revocation: String,
    pub revocation_soft_fail: bool,
    /// Not in SPEC §3's list: the OCSP responder to ask instead of the one each certificate
    /// names (authorityInfoAccess); empty: the certificate's.
    pub ocsp_url: String,
    pub language: String,
    pub keywords: bool,
    pub subject_tag: bool,
    /// Not in SPEC §3's list: the IANA time zone `tanba verify` shows times in, beside UTC.
    pub timezone: String,
}

impl Default for SignaturesSection {
    fn default() -> Self {
        SignaturesSection {
            trust_dir: "certs/trust".into(),
            crl_dir: String::new(),
            revocation: "off".into(),
            revocation_soft_fail: false,
            ocsp_url: String::new(),
            language: "en".into(),
            keywords: true,
            subject_tag: false,
            timezone: "Asia/Almaty".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySection {
    pub relay: String,
    pub retry: Vec<String>,
    pub give_up_after: String,
    pub resolver: String,
    pub remote_port: u16,
    /// Not in SPEC §3's list: credentials for `relay` (AUTH PLAIN, only over TLS).
    pub relay_user: String,
    pub relay_password: String,
    /// Not in SPEC §3's list: refuse to deliver without STARTTLS.
    pub require_tls: bool,
    /// Not in SPEC §3's list: concurrent outbound deliveries.
    pub concurrency: usize,
    /// PEM file of CA certificates trusted besides the system's, for MX hosts under an MTA-STS
    /// policy, MTA-STS policy servers and the relay (private or test CAs). Empty: none.
    pub tls_ca_file: String,
    /// MTA-STS (RFC 8461) on MX delivery.
    pub mta_sts: bool,
    /// Test-only: the port of `https://mta-sts.<domain>/` (443 in production).
    pub mta_sts_port: u16,
    /// DANE (RFC 7672) on MX delivery, effective only when DNSSEC validation works.
    pub dane: bool,
    /// A file of DNSKEY records trusted as DNSSEC trust anchors besides the IANA root's
    /// (private or test zones). Empty: the root's only.
    pub dnssec_trust_anchor: String,
}

impl Default for DeliverySection {
    fn default() -> Self {
        DeliverySection {
            relay: String::new(),
            retry: ["5m", "15m", "30m", "1h", "2h", "4h", "8h"]
                .map(String::from)
                .to_vec(),
            give_up_after: "5d".into(),
            resolver: String::new(),
            remote_port: 25,
            relay_user: String::new(),
            relay_password: String::new(),
            require_tls: false,
            concurrency: 8,
            tls_ca_file: String::new(),
            mta_sts: true,
            mta_sts_port: 443,
            dane: true,
            dnssec_trust_anchor: String::new(),
        }
    }
}

/// SPEC §8: limits against abuse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub unauthenticated_per_ip: usize,
    pub mx_per_ip: usize,
    pub sessions_per_user_ip: usize,
    pub login_timeout: String,
    pub auth_failures: u32,
    pub ban_time: String,
    pub max_command_size: u64,
    pub max_unauthenticated_command: u64,
    pub min_password_length: usize,
    /// The storage quota `tanba user add` gives a new account (`none`, bytes, or 500M, 2G, ...).
    pub default_quota: String,
    /// MX messages (MAIL commands) per client address (IPv6: /64) per `mx_messages_window`,
    /// beyond which MAIL gets `451 4.7.0`; 0: no limit (docs/security.md).
    pub mx_messages_per_ip: u32,
    pub mx_messages_window: String,
    /// Client addresses or networks the MX message rate never counts (local injection:
    /// content filters, monitoring, load tools on the host itself).
    pub mx_rate_exempt: Vec<String>,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            unauthenticated_per_ip: 20,
            mx_per_ip: 50,
            sessions_per_user_ip: 20,
            login_timeout: "60s".into(),
            auth_failures: 10,
            ban_time: "15m".into(),
            max_command_size: 65536,
            max_unauthenticated_command: 8192,
            min_password_length: 10,
            default_quota: "none".into(),
            mx_messages_per_ip: 60,
            mx_messages_window: "1m".into(),
            mx_rate_exempt: vec!["127.0.0.0/8".into(), "::1".into()],
        }
    }
}

/// SPEC §10: sender authentication on the MX (docs/senderauth.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// RFC 7208 on MAIL FROM and HELO.
    pub spf: bool,
    /// Verify every DKIM-Signature (RFC 6376).
    pub dkim: bool,
    /// RFC 7489: `p=reject` refuses with 550 5.7.1, `p=quarantine` delivers to Junk.
    pub dmarc: bool,
    /// Validate ARC chains (RFC 8617).
    pub arc: bool,
    /// DNS blocklist zones (RFC 5782): a listed MX client is refused at RCPT, naming the zone.
    pub dnsbl: Vec<String>,
    /// Greylisting on the MX (RFC 6647): unknown (client network, sender, recipient) triplets
    /// get `451 4.7.1` at RCPT until they retry (docs/senderauth.md, "Greylisting").
    pub greylisting: bool,
    /// How long a new triplet is deferred.
    pub greylist_delay: String,
    /// How long after its first attempt a deferred triplet's retry is still remembered.
    pub greylist_expire: String,
    /// How long a triplet that passed stays accepted without delay (renewed by each pass).
    pub greylist_lifetime: String,
    /// Client addresses or networks (`192.0.2.0/24`, `2001:db8::/32`) never greylisted.
    pub greylist_allow: Vec<String>,
    /// Triplets remembered at most; beyond, the one closest to its expiry is forgotten.
    pub greylist_max_entries: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            spf: true,
            dkim: true,
            dmarc: true,
            arc: true,
            dnsbl: Vec::new(),
            greylisting: false,
            greylist_delay: "5m".into(),
            greylist_expire: "24h".into(),
            greylist_lifetime: "36d".into(),
            greylist_allow: Vec::new(),
            greylist_max_entries: 100_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSection {
    pub selector: String,
    pub key: String,
}

/// Which revocation sources the filter consults (`signatures.revocation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub crl: bool,
    pub ocsp: bool,
}

/// Language of `X-EDS-Summary` (`signatures.language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    En,
    Ru,
    Kk,
}

/// The validated configuration. Cheap to share behind an `Arc`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from (None: built-in defaults).
    pub path: Option<PathBuf>,
    pub hostname: String,
    /// Local domains, lower-case.
    pub domains: Vec<String>,
    pub data_dir: PathBuf,
    /// `server.postmaster`, lower-case (None: the first account created).
    pub postmaster: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub smtp: SmtpConfig,
    pub imap: ImapConfig,
    /// `[http]`: the web endpoint (SPEC §11).
    pub http: HttpConfig,
    /// `[acme]`: certificates by ACME (SPEC §11).
    pub acme: AcmeConfig,
    /// `[mta_sts]`: the policy the web endpoint serves.
    pub mta_sts: MtaStsConfig,
    pub signatures: SignaturesConfig,
    pub delivery: DeliveryConfig,
    pub limits: LimitsConfig,
    /// `[auth]`: which sender checks run on the MX.
    pub auth: AuthSection,
    /// `auth.greylisting` and its `auth.greylist_*` keys, validated.
    pub greylist: GreylistConfig,
    /// DKIM keys by local domain (lower-case).
    pub dkim: BTreeMap<String, DkimConfig>,
    /// `[store]`: the backend (SPEC §13).
    pub store: crate::store::Backend,
}

#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub mx: Vec<SocketAddr>,
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_connections: usize,
    pub max_submission_connections: usize,
    pub idle_timeout: Duration,
    pub session_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ImapConfig {
    pub listen: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_literal_size: u64,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen: Vec<SocketAddr>,
    pub listen_tls: Vec<SocketAddr>,
    pub metrics: Vec<SocketAddr>,
    pub max_connections: usize,
    /// `http.clients_dir`: the add-ons served under `/clients/` (absolute).
    pub clients_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AcmeConfig {
    /// None: ACME off.
    pub directory: Option<String>,
    pub contact: Vec<String>,
    /// The names to get a certificate for (lower-case, `acme.domains` or the derived list).
    pub domains: Vec<String>,
    pub ca_file: Option<PathBuf>,
    /// None: a third of the certificate's lifetime.
    pub renew_before: Option<Duration>,
    pub check_interval: Duration,
}

/// Most names on one ACME certificate (Let's Encrypt's limit).
pub const ACME_MAX_DOMAINS: usize = 100;
/// `mta_sts.mode` (RFC 8461 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtaStsMode {
    None,
    Testing,
    Enforce,
}

impl MtaStsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MtaStsMode::None => "none",
            MtaStsMode::Testing => "testing",
            MtaStsMode::Enforce => "enforce",
        }
    }
}

#[derive(Debug, Clone)]
pub struct MtaStsConfig {
    pub mode: MtaStsMode,
    pub max_age: Duration,
}

#[derive(Debug, Clone)]
pub struct SignaturesConfig {
    pub trust_dir: PathBuf,
    pub crl_dir: Option<PathBuf>,
    pub revocation: Revocation,
    pub revocation_soft_fail: bool,
    /// `signatures.ocsp_url` (None: each certificate's own responder).
    pub ocsp_url: Option<String>,
    pub language: Language,
    pub keywords: bool,
    pub subject_tag: bool,
    /// `signatures.timezone`, from the tz database bundled in `chrono-tz`.
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub relay: Option<String>,
    pub retry: Vec<Duration>,
    pub give_up_after: Duration,
    pub resolver: Option<SocketAddr>,
    pub remote_port: u16,
    pub relay_user: Option<String>,
    pub relay_password: Option<String>,
    pub require_tls: bool,
    pub concurrency: usize,
    /// `delivery.tls_ca_file`, absolute (None: system roots only).
    pub tls_ca_file: Option<PathBuf>,
    pub mta_sts: bool,
    pub mta_sts_port: u16,
    pub dane: bool,
    /// `delivery.dnssec_trust_anchor`, absolute (None: the IANA root's keys only).
    pub dnssec_trust_anchor: Option<PathBuf>,
}

/// SPEC §8, validated (see [`LimitsSection`] for the keys).
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub unauthenticated_per_ip: usize,
    pub mx_per_ip: usize,
    pub sessions_per_user_ip: usize,
    pub login_timeout: Duration,
    pub auth_failures: u32,
    pub ban_time: Duration,
    pub max_command_size: u64,
    pub max_unauthenticated_command: u64,
    pub min_password_length: usize,
    /// KiB; `None`: new accounts get no limit.
    pub default_quota_kib: Option<u64>,
    /// 0: no limit.
    pub mx_messages_per_ip: u32,
    pub mx_messages_window: Duration,
    pub mx_rate_exempt: Vec<ipnet::IpNet>,
}

/// Greylisting (`[auth] greylisting`, `greylist_*`; docs/senderauth.md).
#[derive(Debug, Clone)]
pub struct GreylistConfig {
    pub enabled: bool,
    pub delay: Duration,
    pub expire: Duration,
    pub lifetime: Duration,
    pub allow: Vec<ipnet::IpNet>,
    pub max_entries: u64,
}

#[derive(Debug, Clone)]
pub struct DkimConfig {
    pub selector: String,
    pub key: PathBuf,
}

impl Config {
    /// Reads the config a [`Source`] names.
    pub fn load_source(source: &Source) -> Result<Config> {
        Self::load(source.path())
    }

    /// Reads `path`, or the built-in defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            None => {
                let base = std::env::current_dir().context("reading the working directory")?;
                Self::resolve(FileConfig::default(), None, "", &base)
            }
            Some(p) => {
                let raw = std::fs::read_to_string(p)
                    .with_context(|| format!("reading config file {}", p.display()))?;
                Self::from_toml(&raw, Some(p))
            }
        }
    }

    /// Parses TOML text; `path` (if any) anchors relative paths and is named in errors.
    pub fn from_toml(raw: &str, path: Option<&Path>) -> Result<Config> {
        let name = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<config>".into());
        let file: FileConfig =
            toml::from_str(raw).map_err(|e| anyhow!("{name}: {}", e.to_string().trim_end()))?;
        let base = match path.and_then(|p| p.parent()) {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => std::env::current_dir().context("reading the working directory")?,
        };
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        Self::resolve(file, path, raw, &base)
            .with_context(|| format!("{name}: invalid configuration"))
    }

    fn resolve(f: FileConfig, path: Option<&Path>, raw: &str, base: &Path) -> Result<Config> {
        let err = |key: &str, msg: String| -> anyhow::Error {
            match line_of(raw, key) {
                Some(line) => anyhow!("{key} (line {line}): {msg}"),
                None => anyhow!("{key}: {msg}"),
            }
        };
        let abs = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        if f.server.hostname.trim().is_empty() || f.server.hostname.contains(char::is_whitespace) {
            return Err(err(
                "server.hostname",
                "must be a host name without spaces".into(),
            ));
        }
        if f.server.domains.is_empty() {
            return Err(err(
                "server.domains",
                "at least one local domain is required".into(),
            ));
        }
        let mut domains = Vec::new();
        for d in &f.server.domains {
            let d = d.trim().to_ascii_lowercase();
            if d.is_empty() || d.contains(['@', ' ', '/']) {
                return Err(err("server.domains", format!("{d:?} is not a domain name")));
            }
            domains.push(d);
        }
        if f.server.data_dir.trim().is_empty() {
            return Err(err("server.data_dir", "must not be empty".into()));
        }

        let postmaster = match f.server.postmaster.trim() {
            "" => None,
            p => Some(
                crate::store::account::normalize_email(p)
                    .map_err(|e| err("server.postmaster", e.to_string()))?,
            ),
        };

        let (tls_cert, tls_key) = match (f.tls.cert.is_empty(), f.tls.key.is_empty()) {
            (true, true) => (None, None),
            (false, false) => {
                let (c, k) = (abs(&f.tls.cert), abs(&f.tls.key));
                if let Err(e) = readable_file(&c) {
                    return Err(err("tls.cert", e));
                }
                if let Err(e) = readable_file(&k) {
                    return Err(err("tls.key", e));
                }
                (Some(c), Some(k))
            }
            (false, true) => {
                return Err(err(
                    "tls.key",
                    "tls.cert is set, so tls.key must be too".into(),
                ))
            }
            (true, false) => {
                return Err(err(
                    "tls.cert",
                    "tls.key is set, so tls.cert must be too".into(),
                ))
            }
        };

        let addrs = |key: &str, list: &[String]| -> Result<Vec<SocketAddr>> {
            list.iter()
                .map(|a| {
                    a.parse::<SocketAddr>().map_err(|_| {
                        err(
                            key,
                            format!(
                                "{a:?} is not an address like \"127.0.0.1:2525\" (port 0-65535)"
                            ),
                        )
                    })
                })
                .collect()
        };
        // Addresses or networks (`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32`).
        let networks = |key: &str, list: &[String]| -> Result<Vec<ipnet::IpNet>> {
            list.iter()
                .map(|a| {
                    let a = a.trim();
                    a.parse::<ipnet::IpNet>()
                        .or_else(|_| a.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map(|n| n.trunc())
                        .map_err(|_| {
                            err(
                                key,
                                format!(
                                    "{a:?} is not an address or a network like \"192.0.2.0/24\""
                                ),
                            )
                        })
                })
                .collect()
        };
        let dur = |key: &str, v: &str| -> Result<Duration> {
            humantime::parse_duration(v).map_err(|e| {
                err(
                    key,
                    format!("{v:?} is not a duration like \"5m\" or \"1h\": {e}"),
                )
            })
        };
        let positive = |key: &str, v: u64| -> Result<()> {
            if v == 0 {
                return Err(err(key, "must be greater than 0".into()));
            }
            Ok(())
        };

        let smtp = SmtpConfig {
            mx: addrs("smtp.mx", &f.smtp.mx)?,
            submission: addrs("smtp.submission", &f.smtp.submission)?,
            submissions: addrs("smtp.submissions", &f.smtp.submissions)?,
            max_message_size: f.smtp.max_message_size,
            max_recipients: f.smtp.max_recipients,
            max_connections: f.smtp.max_connections,
            max_submission_connections: f.smtp.max_submission_connections,
            idle_timeout: dur("smtp.idle_timeout", &f.smtp.idle_timeout)?,
            session_timeout: dur("smtp.session_timeout", &f.smtp.session_timeout)?,
        };
        positive("smtp.max_message_size", smtp.max_message_size)?;
        positive("smtp.max_recipients", smtp.max_recipients as u64)?;
        positive("smtp.max_connections", smtp.max_connections as u64)?;
        positive(
            "smtp.max_submission_connections",
            smtp.max_submission_connections as u64,
        )?;

        let imap = ImapConfig {
            listen: addrs("imap.listen", &f.imap.listen)?,
            listen_tls: addrs("imap.listen_tls", &f.imap.listen_tls)?,
            max_connections: f.imap.max_connections,
            idle_timeout: dur("imap.idle_timeout", &f.imap.idle_timeout)?,
            max_literal_size: f.imap.max_literal_size,
        };
        positive("imap.max_connections", imap.max_connections as u64)?;
        positive("imap.max_literal_size", imap.max_literal_size)?;

        let http = HttpConfig {
            listen: addrs("http.listen", &f.http.listen)?,
            listen_tls: addrs("http.listen_tls", &f.http.listen_tls)?,
            metrics: addrs("http.metrics", &f.http.metrics)?,
            max_connections: f.http.max_connections,
            clients_dir: abs(&f.http.clients_dir),
        };
        positive("http.max_connections", http.max_connections as u64)?;

        let acme = {
            let a = &f.acme;
            let directory = match a.directory.trim() {
                "" => None,
                // RFC 8555 §6.1: ACME runs over HTTPS only.
                d if d.starts_with("https://") && !d.contains(char::is_whitespace) => {
                    Some(d.to_string())
                }
                d => {
                    return Err(err(
                        "acme.directory",
                        format!("{d:?} is not an https:// URL"),
                    ))
                }
            };
            for c in &a.contact {
                if !c.starts_with("mailto:") || c.len() <= "mailto:".len() || c.contains(',') {
                    return Err(err(
                        "acme.contact",
                        format!("{c:?} is not a contact like \"mailto:admin@example.kz\""),
                    ));
                }
            }
            let mut names = Vec::new();
            if a.domains.is_empty() {
                names.push(f.server.hostname.trim().to_ascii_lowercase());
                for d in &domains {
                    names.push(format!("autoconfig.{d}"));
                    names.push(format!("mta-sts.{d}"));
                }
            } else {
                names.extend(a.domains.iter().map(|d| d.trim().to_ascii_lowercase()));
            }
            let mut domains_out: Vec<String> = Vec::new();
            // The derived names are checked only when ACME is on (the defaults' "localhost"
            // would not do, but need not while ACME is off).
            let check = directory.is_some() || !a.domains.is_empty();
            for n in names {
                if check && !acme_name_ok(&n) {
                    return Err(err(
                        "acme.domains",
                        format!(
                            "{n:?} is not a DNS name a certificate can be issued for{}",
                            if a.domains.is_empty() {
                                " (derived from server.hostname and server.domains)"
                            } else {
                                ""
                            }
                        ),
                    ));
                }
                if !domains_out.contains(&n) {
                    domains_out.push(n);
                }
            }
            if domains_out.len() > ACME_MAX_DOMAINS {
                return Err(err(
                    "acme.domains",
                    format!("at most {ACME_MAX_DOMAINS} names on one certificate"),
                ));
            }
            let ca_file = match a.ca_file.trim() {
                "" => None,
                p => {
                    let p = abs(p);
                    if let Err(e) = readable_file(&p) {
                        return Err(err("acme.ca_file", e));
                    }
                    Some(p)
                }
            };
            let renew_before = match a.renew_before.trim() {
                "" => None,
                v => Some(dur("acme.renew_before", v)?),
            };
            let check_interval = dur("acme.check_interval", &a.check_interval)?;
            positive("acme.check_interval", check_interval.as_secs())?;
            AcmeConfig {
                directory,
                contact: a.contact.clone(),
                domains: domains_out,
                ca_file,
                renew_before,
                check_interval,
            }
        };
        let mta_sts = MtaStsConfig {
            mode: match f.mta_sts.mode.as_str() {
                "none" => MtaStsMode::None,
                "testing" => MtaStsMode::Testing,
                "enforce" => MtaStsMode::Enforce,
                other => {
                    return Err(err(
                        "mta_sts.mode",
                        format!("{other:?} is not one of none, testing, enforce"),
                    ))
                }
            },
            max_age: dur("mta_sts.max_age", &f.mta_sts.max_age)?,
        };
        // RFC 8461 §3.2: "a maximum value of 31557600" seconds.
        if mta_sts.max_age.as_secs() > 31_557_600 || mta_sts.max_age.as_secs() == 0 {
            return Err(err(
                "mta_sts.max_age",
                "must be between 1s and one year (31557600 s, RFC 8461 §3.2)".into(),
            ));
        }

        let s = &f.signatures;
        let revocation = match s.revocation.as_str() {
            "off" => Revocation {
                crl: false,
                ocsp: false,
            },
            "crl" => Revocation {
                crl: true,
                ocsp: false,
            },
            "ocsp" => Revocation {
                crl: false,
                ocsp: true,
            },
            "crl+ocsp" | "ocsp+crl" => Revocation {
                crl: true,
                ocsp: true,
            },
            other => {
                return Err(err(
                    "signatures.revocation",
                    format!("{other:?} is not one of off, crl, ocsp, crl+ocsp"),
                ))
            }
        };
        let language = match s.language.as_str() {
            "en" => Language::En,
            "ru" => Language::Ru,
            "kk" => Language::Kk,
            other => {
                return Err(err(
                    "signatures.language",
                    format!("{other:?} is not one of en, ru, kk"),
                ))
            }
        };
        let signatures = SignaturesConfig {
            trust_dir: abs(&s.trust_dir),
            crl_dir: (!s.crl_dir.is_empty()).then(|| abs(&s.crl_dir)),
            revocation,
            revocation_soft_fail: s.revocation_soft_fail,
            ocsp_url: (!s.ocsp_url.trim().is_empty()).then(|| s.ocsp_url.trim().to_string()),
            language,
            keywords: s.keywords,
            subject_tag: s.subject_tag,
            timezone: s.timezone.trim().parse::<chrono_tz::Tz>().map_err(|_| {
                err(
                    "signatures.timezone",
                    format!(
                        "{:?} is not a time zone of the tz database (e.g. \"Asia/Almaty\", \"UTC\")",
                        s.timezone
                    ),
                )
            })?,
        };
        if let Some(url) = &signatures.ocsp_url {
            if let Err(e) = crate::revocation::http::parse_url(url) {
                return Err(err("signatures.ocsp_url", e));
            }
        }
        if let Some(dir) = &signatures.crl_dir {
            if !dir.is_dir() {
                return Err(err(
                    "signatures.crl_dir",
                    format!("no such directory: {}", dir.display()),
                ));
            }
        }

        let d = &f.delivery;
        if d.retry.is_empty() {
            return Err(err(
                "delivery.retry",
                "at least one interval is required".into(),
            ));
        }
        let retry = d
            .retry
            .iter()
            .map(|r| dur("delivery.retry", r))
            .collect::<Result<Vec<_>>>()?;
        let relay = (!d.relay.is_empty()).then(|| d.relay.clone());
        if let Some(r) = &relay {
            match r.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(err("delivery.relay", format!("{r:?} is not \"host:port\""))),
            }
        }
        let resolver = if d.resolver.is_empty() {
            None
        } else {
            Some(d.resolver.parse::<SocketAddr>().map_err(|_| {
                err(
                    "delivery.resolver",
                    format!("{:?} is not an address like \"127.0.0.1:53\"", d.resolver),
                )
            })?)
        };
        if d.remote_port == 0 {
            return Err(err(
                "delivery.remote_port",
                "must be a port from 1 to 65535".into(),
            ));
        }
        positive("delivery.concurrency", d.concurrency as u64)?;
        let tls_ca_file = match d.tls_ca_file.trim() {
            "" => None,
            p => {
                let p = abs(p);
                readable_file(&p).map_err(|e| err("delivery.tls_ca_file", e))?;
                Some(p)
            }
        };
        if d.mta_sts_port == 0 {
            return Err(err(
                "delivery.mta_sts_port",
                "must be a port from 1 to 65535".into(),
            ));
        }
        let dnssec_trust_anchor = match d.dnssec_trust_anchor.trim() {
            "" => None,
            p => {
                let p = abs(p);
                readable_file(&p).map_err(|e| err("delivery.dnssec_trust_anchor", e))?;
                Some(p)
            }
        };
        let delivery = DeliveryConfig {
            relay,
            retry,
            give_up_after: dur("delivery.give_up_after", &d.give_up_after)?,
            resolver,
            remote_port: d.remote_port,
            relay_user: (!d.relay_user.is_empty()).then(|| d.relay_user.clone()),
            relay_password: (!d.relay_password.is_empty()).then(|| d.relay_password.clone()),
            require_tls: d.require_tls,
            concurrency: d.concurrency,
            tls_ca_file,
            mta_sts: d.mta_sts,
            mta_sts_port: d.mta_sts_port,
            dane: d.dane,
            dnssec_trust_anchor,
        };

        let store = match f.store.backend.trim() {
            "sled" => {
                if !f.store.ca_file.trim().is_empty() {
                    return Err(err(
                        "store.ca_file",
                        "is only used with store.backend = \"postgres\"".into(),
                    ));
                }
                if !f.store.url.trim().is_empty() {
                    return Err(err(
                        "store.url",
                        "is only used with store.backend = \"postgres\"".into(),
                    ));
                }
                crate::store::Backend::Embedded
            }
            "postgres" => {
                let url = f.store.url.trim();
                if url.is_empty() {
                    return Err(err(
                        "store.url",
                        "required with store.backend = \"postgres\" (postgres://user@host:port/db)"
                            .into(),
                    ));
                }
                // The URL may hold a password: errors never repeat it.
                crate::store::check_postgres_url(url).map_err(|e| err("store.url", e))?;
                if !(1..=crate::store::MAX_POOL).contains(&f.store.pool) {
                    return Err(err(
                        "store.pool",
                        format!("must be from 1 to {} connections", crate::store::MAX_POOL),
                    ));
                }
                let ca_file = match f.store.ca_file.trim() {
                    "" => None,
                    p => {
                        if !crate::store::postgres_url_verifies(url) {
                            return Err(err(
                                "store.ca_file",
                                "is only used with sslmode=verify-ca or sslmode=verify-full \
                                 in store.url"
                                    .into(),
                            ));
                        }
                        let p = abs(p);
                        readable_file(&p).map_err(|e| err("store.ca_file", e))?;
                        Some(p)
                    }
                };
                crate::store::Backend::Postgres {
                    url: url.to_string(),
                    pool: f.store.pool,
                    ca_file,
                }
            }
            other => {
                return Err(err(
                    "store.backend",
                    format!("{other:?} is not a store backend: \"sled\" or \"postgres\""),
                ))
            }
        };

        let l = &f.limits;
        let limits = LimitsConfig {
            unauthenticated_per_ip: l.unauthenticated_per_ip,
            mx_per_ip: l.mx_per_ip,
            sessions_per_user_ip: l.sessions_per_user_ip,
            login_timeout: dur("limits.login_timeout", &l.login_timeout)?,
            auth_failures: l.auth_failures,
            ban_time: dur("limits.ban_time", &l.ban_time)?,
            max_command_size: l.max_command_size,
            max_unauthenticated_command: l.max_unauthenticated_command,
            min_password_length: l.min_password_length,
            default_quota_kib: crate::store::quota::parse_limit(&l.default_quota)
                .map_err(|e| err("limits.default_quota", e))?,
            mx_messages_per_ip: l.mx_messages_per_ip,
            mx_messages_window: dur("limits.mx_messages_window", &l.mx_messages_window)?,
            mx_rate_exempt: networks("limits.mx_rate_exempt", &l.mx_rate_exempt)?,
        };
        if limits.mx_messages_window.is_zero() {
            return Err(err(
                "limits.mx_messages_window",
                "must be longer than 0s".into(),
            ));
        }
        positive(
            "limits.unauthenticated_per_ip",
            limits.unauthenticated_per_ip as u64,
        )?;
        positive("limits.mx_per_ip", limits.mx_per_ip as u64)?;
        positive(
            "limits.sessions_per_user_ip",
            limits.sessions_per_user_ip as u64,
        )?;
        positive("limits.login_timeout", limits.login_timeout.as_secs())?;
        positive("limits.auth_failures", limits.auth_failures as u64)?;
        positive("limits.max_command_size", limits.max_command_size)?;
        positive(
            "limits.max_unauthenticated_command",
            limits.max_unauthenticated_command,
        )?;
        if limits.max_unauthenticated_command > limits.max_command_size {
            return Err(err(
                "limits.max_unauthenticated_command",
                "must not be larger than limits.max_command_size".into(),
            ));
        }

        let mut auth = f.auth.clone();
        let greylist = GreylistConfig {
            enabled: auth.greylisting,
            delay: dur("auth.greylist_delay", &auth.greylist_delay)?,
            expire: dur("auth.greylist_expire", &auth.greylist_expire)?,
            lifetime: dur("auth.greylist_lifetime", &auth.greylist_lifetime)?,
            allow: networks("auth.greylist_allow", &auth.greylist_allow)?,
            max_entries: auth.greylist_max_entries,
        };
        if greylist.delay.is_zero() {
            return Err(err("auth.greylist_delay", "must be longer than 0s".into()));
        }
        if greylist.expire <= greylist.delay {
            return Err(err(
                "auth.greylist_expire",
                "must be longer than auth.greylist_delay (a retry has to fit between them)".into(),
            ));
        }
        if greylist.lifetime.is_zero() {
            return Err(err(
                "auth.greylist_lifetime",
                "must be longer than 0s".into(),
            ));
        }
        positive("auth.greylist_max_entries", greylist.max_entries)?;
        for z in auth.dnsbl.iter_mut() {
            *z = z.trim().trim_matches('.').to_ascii_lowercase();
            let ok = !z.is_empty()
                && z.len() <= 200
                && z.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
            if !ok {
                return Err(err("auth.dnsbl", format!("{z:?} is not a DNS zone name")));
            }
        }
        let mut dkim = BTreeMap::new();
        for (domain, sec) in &f.dkim {
            let key = format!("dkim.\"{domain}\"");
            if sec.selector.is_empty() {
                return Err(err(&format!("{key}.selector"), "must not be empty".into()));
            }
            let path = abs(&sec.key);
            if let Err(e) = readable_file(&path) {
                return Err(err(&format!("{key}.key"), e));
            }
            dkim.insert(
                domain.to_ascii_lowercase(),
                DkimConfig {
                    selector: sec.selector.clone(),
                    key: path,
                },
            );
        }

        Ok(Config {
            path: path.map(Path::to_path_buf),
            hostname: f.server.hostname.clone(),
            domains,
            data_dir: abs(&f.server.data_dir),
            postmaster,
            tls_cert,
            tls_key,
            smtp,
            imap,
            http,
            acme,
            mta_sts,
            signatures,
            delivery,
            limits,
            auth,
            greylist,
            dkim,
            store,
        })
    }

    /// True when `domain` is one of `server.domains` (case-insensitive).
    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
    }

    /// The admin socket that user and queue commands use while `serve` runs.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join("admin.sock")
    }

    /// A description of what `serve` binds, written to `<data_dir>/listeners.json` once bound,
    /// so that scripts and tests can use port 0.
    pub fn listeners_file(&self) -> PathBuf {
        self.data_dir.join("listeners.json")
    }
}

/// Whether `path` is a regular file this process can open for reading; the error says which
/// of "no such file", "permission denied" (EACCES, e.g. a key readable only by another group)
/// or "not a file" it is, with the path.
pub fn readable_file(path: &Path) -> std::result::Result<(), String> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no such file: {p}"),
        std::io::ErrorKind::PermissionDenied => {
            format!(
                "{p}: permission denied (a directory on the way is not searchable by this user)"
            )
        }
        _ => format!("{p}: {e}"),
    })?;
    if !meta.is_file() {
        return Err(format!("{p} is not a regular file"));
    }
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("{p}: permission denied (EACCES): not readable by this user")
        }
        _ => format!("{p}: {e}"),
    })?;
    Ok(())
}

/// Where the configuration comes from (SPEC §9): `--config PATH`, else `TANBA_CONFIG`, else
/// `/etc/tanba/tanba.toml` when it exists, else the built-in defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(PathBuf),
    Env(PathBuf),
    Etc(PathBuf),
    Defaults,
}

/// The config file used when neither `--config` nor `TANBA_CONFIG` is given and it exists.
pub const ETC_CONFIG: &str = "/etc/tanba/tanba.toml";

impl Source {
    /// Applies the lookup order to `--config` and the process environment.
    pub fn locate(flag: Option<&Path>) -> Source {
        Self::locate_with(
            flag,
            std::env::var_os("TANBA_CONFIG").as_deref(),
            Path::new(ETC_CONFIG),
        )
    }

    /// [`Source::locate`] with the environment and the `/etc` path as parameters. An empty
    /// `TANBA_CONFIG` counts as unset. `/etc/tanba/tanba.toml` counts as existing unless looking
    /// it up says "no such file" (a file this user may not read is used, and fails loudly,
    /// rather than silently replaced by the defaults).
    pub fn locate_with(flag: Option<&Path>, env: Option<&std::ffi::OsStr>, etc: &Path) -> Source {
        if let Some(p) = flag {
            return Source::Flag(p.to_path_buf());
        }
        if let Some(v) = env.filter(|v| !v.is_empty()) {
            return Source::Env(PathBuf::from(v));
        }
        match std::fs::metadata(etc) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Source::Defaults,
            _ => Source::Etc(etc.to_path_buf()),
        }
    }

    /// The file to read; None for the built-in defaults.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::Flag(p) | Source::Env(p) | Source::Etc(p) => Some(p),
            Source::Defaults => None,
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag(p) => write!(f, "{} (from --config)", p.display()),
            Source::Env(p) => write!(f, "{} (from TANBA_CONFIG)", p.display()),
            Source::Etc(p) => write!(f, "{} (the default location)", p.display()),
            Source::Defaults => write!(
                f,
                "the built-in defaults (no --config, no TANBA_CONFIG, no {ETC_CONFIG})"
            ),
        }
    }
}

/// The line (1-based) where `key` (`table.key`) is set in `raw`, if it is written there.
pub(crate) fn line_of(raw: &str, key: &str) -> Option<usize> {
    let (table, leaf) = key.rsplit_once('.')?;
    let leaf = leaf.trim_matches('"');
    let mut current = String::new();
    for (i, line) in raw.lines().enumerate() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix('[') {
            current = rest.trim_end_matches(']').trim().to_string();
            continue;
        }
        if current == table {
            if let Some((k, _)) = t.split_once('=') {
                if k.trim().trim_matches('"') == leaf {
                    return Some(i + 1);
                }
            }
        }
    }
    // `table.key = ...` written with a dotted key at top level.
    raw.lines()
        .position(|l| l.trim_start().starts_with(key))
        .map(|i| i + 1)
}

/// A DNS name for an ACME certificate: letters, digits, `-` and dots, labels of 1-63 bytes, at
/// most 253 bytes, not an IP address, no wildcard (HTTP-01 cannot prove one, RFC 8555 §7.1.3).
fn acme_name_ok(n: &str) -> bool {
    n.len() <= 253
        && n.parse::<std::net::IpAddr>().is_err()
        && n.split('.').count() >= 2
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// The built-in defaults as commented TOML (`tanba config default`).
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Fails unless `DEFAULT_TOML` parses to exactly the built-in defaults (used by tests).
pub fn check_default_toml() -> Result<()> {
    let parsed: FileConfig = toml::from_str(DEFAULT_TOML)?;
    let a = serde_json::to_value(&parsed)?;
    let b = serde_json::to_value(FileConfig::default())?;
    if a != b {
        bail!("config/default.toml differs from the built-in defaults:\n{a:#}\nvs\n{b:#}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_matches_builtin_defaults() {
        check_default_toml().unwrap();
    }

    #[test]
    fn auth_keys() {
        let c = Config::from_toml("", None).unwrap();
        assert!(c.auth.spf && c.auth.dkim && c.auth.dmarc && c.auth.arc);
        assert!(c.auth.dnsbl.is_empty());
        let c =
            Config::from_toml("[auth]\ndmarc = false\ndnsbl = [\"Zen.Example.\"]\n", None).unwrap();
        assert!(!c.auth.dmarc && c.auth.spf);
        assert_eq!(c.auth.dnsbl, ["zen.example"]);
        let e = Config::from_toml("[auth]\n\ndnsbl = [\"a b\"]\n", None).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("auth.dnsbl (line 3)"), "{msg}");
        let e = Config::from_toml("[auth]\nspf = \"yes\"\n", None).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("line 2") && msg.contains("spf = \"yes\""),
            "{msg}"
        );
        assert!(!c.greylist.enabled);
    }

    #[test]
    fn greylist_and_mx_rate_keys() {
        let c = Config::from_toml("", None).unwrap();
        assert!(!c.greylist.enabled);
        assert_eq!(c.greylist.delay, Duration::from_secs(300));
        assert_eq!(c.greylist.expire, Duration::from_secs(86_400));
        assert_eq!(c.greylist.lifetime, Duration::from_secs(36 * 86_400));
        assert_eq!(c.limits.mx_messages_per_ip, 60);
        assert_eq!(c.limits.mx_messages_window, Duration::from_secs(60));
        let local: std::net::IpAddr = "127.0.0.5".parse().unwrap();
        assert!(c.limits.mx_rate_exempt.iter().any(|n| n.contains(&local)));
        let c = Config::from_toml(
            "[auth]\ngreylisting = true\ngreylist_allow = [\"192.0.2.7/24\", \"2001:db8::1\"]\n",
            None,
        )
        .unwrap();
        assert!(c.greylist.enabled);
        let allow: Vec<String> = c.greylist.allow.iter().map(|n| n.to_string()).collect();
        assert_eq!(allow, ["192.0.2.0/24", "2001:db8::1/128"]);
        for (toml, key) in [
            (
                "[auth]\ngreylist_allow = [\"mx.example\"]\n",
                "auth.greylist_allow (line 2)",
            ),
            (
                "[auth]\ngreylist_delay = \"1h\"\ngreylist_expire = \"1h\"\n",
                "auth.greylist_expire",
            ),
            ("[auth]\ngreylist_delay = \"soon\"\n", "auth.greylist_delay"),
            (
                "[auth]\ngreylist_max_entries = 0\n",
                "auth.greylist_max_entries",
            ),
            (
                "[limits]\nmx_messages_window = \"0s\"\n",
                "limits.mx_messages_window",
            ),
        ] {
            let e = format!("{:#}", Config::from_toml(toml, None).unwrap_err());
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    #[test]
    fn acme_keys() {
        let c = Config::from_toml(
            "[server]\nhostname = \"Mail.Example.kz\"\ndomains = [\"example.kz\", \"b.kz\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(c.acme.directory, None);
        assert_eq!(
            c.acme.domains,
            [
                "mail.example.kz",
                "autoconfig.example.kz",
                "mta-sts.example.kz",
                "autoconfig.b.kz",
                "mta-sts.b.kz"
            ]
        );
        assert_eq!(c.acme.check_interval, Duration::from_secs(12 * 3600));
        let c = Config::from_toml(
            "[acme]\ndirectory = \"https://acme.example/dir\"\ndomains = [\"a.example\", \"A.example\"]\n\
             renew_before = \"30d\"\ncontact = [\"mailto:a@example.kz\"]\n",
            None,
        )
        .unwrap();
        assert_eq!(
            c.acme.directory.as_deref(),
            Some("https://acme.example/dir")
        );
        assert_eq!(c.acme.domains, ["a.example"]);
        assert_eq!(c.acme.renew_before, Some(Duration::from_secs(30 * 86400)));
        for (toml, key) in [
            (
                "[acme]\ndirectory = \"http://acme.example/dir\"\n",
                "acme.directory",
            ),
            ("[acme]\ndomains = [\"*.example.kz\"]\n", "acme.domains"),
            ("[acme]\ndomains = [\"127.0.0.1\"]\n", "acme.domains"),
            ("[acme]\ncontact = [\"admin@example.kz\"]\n", "acme.contact"),
            ("[acme]\ncheck_interval = \"0s\"\n", "acme.check_interval"),
            ("[acme]\nrenew_before = \"soon\"\n", "acme.renew_before"),
            (
                "[acme]\nca_file = \"/nonexistent/ca.pem\"\n",
                "acme.ca_file",
            ),
        ] {
            let msg = format!("{:#}", Config::from_toml(toml, None).unwrap_err());
            assert!(msg.contains(key), "{toml}: {msg}");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e =
            Config::from_toml("[smtp]\nmx = [\"127.0.0.1:25\"]\nbogus = 1\n", None).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("bogus"), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_port_is_named_with_line() {
        let e = Config::from_toml("[smtp]\n\nmx = [\"127.0.0.1:99999\"]\n", None).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("smtp.mx (line 3)"), "{msg}");
    }

    #[test]
    fn lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("tanba.toml");
        let flag = Path::new("/x/flag.toml");
        let env = std::ffi::OsStr::new("/x/env.toml");
        assert_eq!(
            Source::locate_with(Some(flag), Some(env), &etc),
            Source::Flag(flag.into())
        );
        assert_eq!(
            Source::locate_with(None, Some(env), &etc),
            Source::Env("/x/env.toml".into())
        );
        assert_eq!(
            Source::locate_with(None, Some(std::ffi::OsStr::new("")), &etc),
            Source::Defaults
        );
        std::fs::write(&etc, "").unwrap();
        assert_eq!(
            Source::locate_with(None, None, &etc),
            Source::Etc(etc.clone())
        );
        assert_eq!(
            Source::locate_with(None, Some(env), &etc),
            Source::Env("/x/env.toml".into())
        );
    }

    #[test]
    fn timezone_is_checked() {
        let c = Config::from_toml("", None).unwrap();
        assert_eq!(c.signatures.timezone, chrono_tz::Asia::Almaty);
        let e = Config::from_toml("[signatures]\ntimezone = \"Mars/Olympus\"\n", None).unwrap_err();
        assert!(
            format!("{e:#}").contains("signatures.timezone (line 2)"),
            "{e:#}"
        );
    }

    #[test]
    fn durations_and_revocation() {
        let c = Config::from_toml(
            "[signatures]\nrevocation = \"crl+ocsp\"\n[delivery]\nretry=[\"1s\"]\n",
            None,
        )
        .unwrap();
        assert!(c.signatures.revocation.crl && c.signatures.revocation.ocsp);
        assert_eq!(c.delivery.retry, vec![Duration::from_secs(1)]);
        let e = Config::from_toml("[signatures]\nlanguage = \"fr\"\n", None).unwrap_err();
        assert!(format!("{e:#}").contains("signatures.language (line 2)"));
    }
}
