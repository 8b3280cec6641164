//! Sender authentication on the MX (SPEC §10, docs/senderauth.md): SPF (RFC 7208) for MAIL FROM
//! and HELO, DKIM (RFC 6376) for every signature, DMARC (RFC 7489) with alignment, ARC (RFC 8617)
//! validation, all with mail-auth, and the policy that follows from them.
//!
//! - Runs once per message at the end of DATA, before the signature filter; the results go into
//!   the one `Authentication-Results` header the filter stamps (`stamp::SenderContext`).
//! - DNS: the `delivery.resolver` server (empty: the system's), 3 s per query, 2 tries; SPF's
//!   limits (10 DNS-querying terms, RFC 7208 §4.6.4; 20 s per evaluation) are mail-auth's; each
//!   method has a deadline ([`METHOD_TIMEOUT`]) after which it is `temperror`. Parsed records are cached
//!   ([`cache::Cache`], bounded, by the records' TTL) on top of hickory's response cache.
//! - Work proportional to the message (header parsing, body hashes) runs on a blocking thread,
//!   never on an async worker; at most [`MAX_DKIM_SIGNATURES`] DKIM signatures are verified
//!   (RFC 6376 §6.1: verifiers MAY limit them). Hostile input gives `permerror`/`fail`, never a
//!   panic (a panic inside mail-auth is caught and reported as `permerror`).
//! - Policy (RFC 7489 §6.6.2/§6.7, the receiver's choice): DMARC fail with `p=reject` refuses the
//!   message (550 5.7.1, all recipients); `p=quarantine` delivers to Junk with `$Junk`; an SPF
//!   `fail` with no DMARC record delivers to Junk. DMARC `temperror` never refuses.

mod cache;
pub mod greylist;

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DmarcResult, MessageAuthenticator, Parameters, SpfOutput,
    SpfResult,
};

use crate::config::{AuthSection, Config};
use crate::filter::stamp::SenderContext;

/// Deadline of one method (SPF MAIL FROM + HELO, DKIM, ARC, DMARC): then `temperror`.
pub const METHOD_TIMEOUT: Duration = Duration::from_secs(20);
/// DKIM signatures verified per message, at most (the first ones in header order).
pub const MAX_DKIM_SIGNATURES: usize = 10;
/// DNS query timeout and tries for sender checks.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);
const DNS_ATTEMPTS: usize = 2;
/// Deadline of one DNSBL query.
pub const DNSBL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the MX does with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Deliver,
    /// To each local recipient's Junk, with `$Junk`; the reason is logged.
    Junk(String),
    /// `550 5.7.1` with this text.
    Reject(String),
}

/// The results of the checks on one message.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub context: SenderContext,
    pub action: Action,
}

/// The SMTP facts the checks need.
pub struct Input<'a> {
    pub ip: IpAddr,
    pub helo: &'a str,
    /// Reverse path, empty for `<>`.
    pub mail_from: &'a str,
    /// `[auth]` and `server.hostname` of the configuration in force (SIGHUP reloads them).
    pub config: &'a AuthSection,
    pub hostname: &'a str,
}

/// The resolver and caches, shared by every session (built on first use).
pub struct Checker {
    auth: Result<MessageAuthenticator, String>,
    caches: cache::Caches,
}

impl Checker {
    fn new(config: &Config) -> Checker {
        let auth = crate::delivery::mx::build_resolver(
            config.delivery.resolver,
            DNS_TIMEOUT,
            DNS_ATTEMPTS,
        )
        .map(MessageAuthenticator)
        .map_err(|e| {
            tracing::error!("DNS resolver for sender checks: {e}");
            format!("resolver unavailable: {e}")
        });
        Checker {
            auth,
            caches: cache::Caches::default(),
        }
    }

    /// The process-wide resolver and caches (one server per process; `delivery.resolver` as at
    /// the first message).
    pub fn get(config: &Config) -> Arc<Checker> {
        static CHECKER: OnceLock<Arc<Checker>> = OnceLock::new();
        CHECKER
            .get_or_init(|| Arc::new(Checker::new(config)))
            .clone()
    }

    /// The first of `zones` (RFC 5782 DNS blocklists) that lists `ip`: its `<reversed ip>.<zone>`
    /// has an A record in 127.0.0.0/8 (§2.1, §2.3). Not listed: NXDOMAIN or no such answer; a
    /// lookup that fails or times out ([`DNSBL_TIMEOUT`]) counts as not listed and is logged
    /// (a blocklist outage must not stop mail).
    pub async fn dnsbl_listed(&self, ip: IpAddr, zones: &[String]) -> Option<String> {
        use hickory_resolver::proto::rr::{RData, RecordType};
        let auth = self.auth.as_ref().ok()?;
        let rev = reversed(ip);
        for zone in zones {
            let name = format!("{rev}.{zone}.");
            match tokio::time::timeout(DNSBL_TIMEOUT, auth.0.lookup(name.as_str(), RecordType::A))
                .await
            {
                Ok(Ok(l)) => {
                    let listed = l
                        .answers()
                        .iter()
                        .any(|r| matches!(&r.data, RData::A(a) if a.0.octets()[0] == 127));
                    if listed {
                        return Some(zone.clone());
                    }
                }
                Ok(Err(e)) if e.is_no_records_found() => {}
                Ok(Err(e)) => {
                    tracing::warn!(client_ip = %ip, zone = %zone, "DNSBL lookup failed: {e}")
                }
                Err(_) => tracing::warn!(client_ip = %ip, zone = %zone, "DNSBL lookup timed out"),
            }
        }
        None
    }

    /// Checks `message` (as received, without our Received header). Runs on a blocking thread
    /// (`tokio::task::spawn_blocking`), driving the DNS lookups through `rt`.
    pub fn check_blocking(
        &self,
        rt: &tokio::runtime::Handle,
        input: &Input<'_>,
        message: &[u8],
    ) -> Outcome {
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(self.check(input, message))
        }));
        run.unwrap_or_else(|_| {
            tracing::error!("sender checks failed on a message; results permerror");
            Outcome {
                context: SenderContext {
                    methods: vec!["dkim=permerror reason=\"internal error\"".into()],
                    domain: None,
                },
                action: Action::Deliver,
            }
        })
    }

    async fn check(&self, input: &Input<'_>, message: &[u8]) -> Outcome {
        let c = input.config;
        let mut methods = Vec::new();
        let helo = input.helo.trim_end_matches('.');
        let mail_from = input.mail_from;
        let mail_domain = mail_from
            .rsplit_once('@')
            .map(|(_, d)| d.trim_end_matches('.'))
            .unwrap_or(helo);

        let auth = match &self.auth {
            Ok(a) => a,
            Err(e) => {
                let why = ar_quote(e);
                for (on, m) in [(c.spf, "spf"), (c.dkim, "dkim"), (c.dmarc, "dmarc")] {
                    if on {
                        methods.push(format!("{m}=temperror reason={why}"));
                    }
                }
                return self.finish(input, methods, None, Action::Deliver);
            }
        };
        let msg = AuthenticatedMessage::parse(message).map(|mut m| {
            m.dkim_headers.truncate(MAX_DKIM_SIGNATURES);
            m
        });

        // SPF: the HELO identity and the MAIL FROM identity (RFC 7208 §2.3, §2.4). With a
        // null reverse path, MAIL FROM is postmaster@HELO (§2.4), which is the HELO check.
        let mut spf_mail: Option<SpfOutput> = None;
        if c.spf {
            let host = input.hostname;
            let helo_out = timed(
                auth.verify_spf(
                    self.caches
                        .with(SpfParameters::verify_ehlo(input.ip, helo, host)),
                ),
            )
            .await;
            let mail_out = if mail_from.is_empty() {
                helo_out.clone()
            } else {
                timed(
                    auth.verify_spf(self.caches.with(SpfParameters::verify_mail_from(
                        input.ip, helo, host, mail_from,
                    ))),
                )
                .await
            };
            let mail_result = mail_out
                .as_ref()
                .map_or(SpfResult::TempError, |o| o.result());
            if !mail_from.is_empty() {
                methods.push(format!(
                    "spf={} smtp.mailfrom={}",
                    spf_str(mail_result),
                    ar_addr(mail_from)
                ));
            }
            let helo_result = helo_out
                .as_ref()
                .map_or(SpfResult::TempError, |o| o.result());
            methods.push(format!(
                "spf={} smtp.helo={}",
                spf_str(helo_result),
                ar_addr(helo)
            ));
            spf_mail = Some(mail_out.unwrap_or_else(|| {
                SpfOutput::new(mail_domain.to_string()).with_result(SpfResult::TempError)
            }));
        }

        let Some(msg) = msg else {
            for (on, m) in [(c.dkim, "dkim"), (c.arc, "arc"), (c.dmarc, "dmarc")] {
                if on {
                    methods.push(format!("{m}=permerror reason=\"no header\""));
                }
            }
            let action = spf_action(spf_mail.as_ref(), false);
            return self.finish(input, methods, spf_domain(spf_mail.as_ref()), action);
        };

        let dkim = if c.dkim || c.dmarc {
            timed(auth.verify_dkim(self.caches.with(&msg)))
                .await
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let dkim_timed_out = (c.dkim || c.dmarc) && dkim.is_empty() && !msg.dkim_headers.is_empty();
        let mut dkim_pass_domain = None;
        if c.dkim {
            if dkim_timed_out {
                methods.push("dkim=temperror reason=\"timeout\"".into());
            } else if dkim.is_empty() {
                methods.push("dkim=none".into());
            }
            // Malformed signatures are reported too (mail-auth: `neutral`); the header names at
            // most MAX_DKIM_SIGNATURES results, however many a message carries.
            for out in dkim.iter().take(MAX_DKIM_SIGNATURES) {
                let mut m = format!("dkim={}", dkim_str(out.result()));
                if let Some(sig) = out.signature() {
                    m.push_str(&format!(
                        " header.d={} header.s={}",
                        ar_value(&sig.d),
                        ar_value(&sig.s)
                    ));
                    if out.result() == &DkimResult::Pass && dkim_pass_domain.is_none() {
                        dkim_pass_domain = Some(sig.d.to_ascii_lowercase());
                    }
                }
                if let Some(reason) = dkim_reason(out.result()) {
                    m.push_str(&format!(" reason={}", ar_quote(&reason)));
                }
                methods.push(m);
            }
        }

        if c.arc {
            let r = timed(auth.verify_arc(self.caches.with(&msg)))
                .await
                .map(|o| o.result().clone())
                .unwrap_or(DkimResult::TempError(mail_auth::Error::Io(
                    "timeout".into(),
                )));
            methods.push(format!("arc={}", dkim_str(&r)));
        }

        let mut action = Action::Deliver;
        let mut domain = None;
        let mut dmarc_record = false;
        if c.dmarc {
            let none_spf = SpfOutput::new(mail_domain.to_string());
            let spf_for_dmarc = spf_mail.as_ref().unwrap_or(&none_spf);
            let out = timed(auth.verify_dmarc(self.caches.with(DmarcParameters::new(
                &msg,
                &dkim,
                mail_domain,
                spf_for_dmarc,
            ))))
            .await;
            match out {
                None => methods.push("dmarc=temperror reason=\"timeout\"".into()),
                Some(out) => {
                    let result = out.result();
                    dmarc_record = out.dmarc_record().is_some();
                    let from = out.domain().to_ascii_lowercase();
                    let policy = match out.policy() {
                        Policy::Reject => "reject",
                        Policy::Quarantine => "quarantine",
                        Policy::None | Policy::Unspecified => "none",
                    };
                    let mut m = format!("dmarc={}", dmarc_str(&result));
                    if dmarc_record {
                        m.push_str(&format!(" policy.dmarc={policy}"));
                    }
                    if !from.is_empty() {
                        m.push_str(&format!(" header.from={}", ar_value(&from)));
                    }
                    methods.push(m);
                    if result == DmarcResult::Pass && !from.is_empty() {
                        domain = Some(from.clone());
                    }
                    // RFC 7489 §6.6.2 step 6 / §6.7: apply the domain's policy to a failure.
                    if matches!(result, DmarcResult::Fail(_)) {
                        match out.policy() {
                            Policy::Reject => {
                                action = Action::Reject(format!(
                                    "DMARC policy of {} rejects this message",
                                    ar_value(&from).trim_matches('"')
                                ))
                            }
                            Policy::Quarantine => {
                                action = Action::Junk(format!("DMARC quarantine ({from})"))
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if action == Action::Deliver {
            action = spf_action(spf_mail.as_ref(), dmarc_record);
        }
        let domain = domain
            .or(dkim_pass_domain)
            .or_else(|| spf_domain(spf_mail.as_ref()));
        self.finish(input, methods, domain, action)
    }

    fn finish(
        &self,
        input: &Input<'_>,
        methods: Vec<String>,
        domain: Option<String>,
        action: Action,
    ) -> Outcome {
        let summary = methods
            .iter()
            .map(|m| m.split(' ').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join(" ");
        let what = match &action {
            Action::Deliver => "deliver".to_string(),
            Action::Junk(r) => format!("junk ({r})"),
            Action::Reject(r) => format!("reject ({r})"),
        };
        tracing::info!(
            client_ip = %input.ip,
            results = %summary,
            sender_domain = %crate::logging::escape(domain.as_deref().unwrap_or("-"), 256),
            decision = %crate::logging::escape(&what, 300),
            "sender checks"
        );
        Outcome {
            context: SenderContext { methods, domain },
            action,
        }
    }
}

/// The address as a DNSBL query prefix (RFC 5782 §2.1 IPv4 octets, §2.4 IPv6 nibbles, reversed).
fn reversed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => a
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [b & 0xf, b >> 4])
            .map(|n| format!("{n:x}"))
            .collect::<Vec<_>>()
            .join("."),
    }
}

/// An SPF `fail` (`-all`) without a DMARC record to decide instead: Junk.
fn spf_action(spf: Option<&SpfOutput>, dmarc_record: bool) -> Action {
    match spf {
        Some(o) if o.result() == SpfResult::Fail && !dmarc_record => {
            Action::Junk(format!("SPF fail for {}", o.domain()))
        }
        _ => Action::Deliver,
    }
}

fn spf_domain(spf: Option<&SpfOutput>) -> Option<String> {
    spf.filter(|o| o.result() == SpfResult::Pass)
        .map(|o| o.domain().trim_end_matches('.').to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

/// Runs one method under [`METHOD_TIMEOUT`].
async fn timed<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(METHOD_TIMEOUT, f).await.ok()
}

fn spf_str(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn dkim_str(r: &DkimResult) -> &'static str {
    match r {
        DkimResult::Pass => "pass",
        // mail-auth calls a body hash mismatch neutral; RFC 6376 §6.1.3 makes it a verification
        // failure ("body hash did not verify"), which RFC 8601 §2.7.1 reports as `fail`.
        DkimResult::Neutral(mail_auth::Error::Dkim(
            mail_auth::dkim::DkimError::FailedBodyHashMatch,
        )) => "fail",
        DkimResult::Neutral(_) => "neutral",
        DkimResult::Fail(_) => "fail",
        DkimResult::PermError(_) => "permerror",
        DkimResult::TempError(_) => "temperror",
        DkimResult::None => "none",
    }
}

fn dkim_reason(r: &DkimResult) -> Option<String> {
    match r {
        DkimResult::Neutral(e)
        | DkimResult::Fail(e)
        | DkimResult::PermError(e)
        | DkimResult::TempError(e) => Some(e.to_string()),
        DkimResult::Pass | DkimResult::None => None,
    }
}

fn dmarc_str(r: &DmarcResult) -> &'static str {
    match r {
        DmarcResult::Pass => "pass",
        DmarcResult::Fail(_) => "fail",
        DmarcResult::TempError(_) => "temperror",
        DmarcResult::PermError(_) => "permerror",
        DmarcResult::None => "none",
    }
}

/// A quoted-string of at most 100 printable ASCII characters.
fn ar_quote(s: &str) -> String {
    let t: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"' && *c != '\\')
        .take(100)
        .collect();
    format!("\"{t}\"")
}

/// A `pvalue` (RFC 8601 §2.2): a token or a domain as is, anything else quoted (ASCII only).
fn ar_value(s: &str) -> String {
    let token = !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b));
    if token {
        s.to_string()
    } else {
        ar_quote(s)
    }
}

/// An address or a domain as a `pvalue`: `local@domain` as is when both are plain ASCII.
pub fn ar_addr(s: &str) -> String {
    let plain = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
    };
    match s.rsplit_once('@') {
        Some((l, d)) if plain(l) && plain(d) && s.len() <= 320 => s.to_string(),
        None if plain(s) && s.len() <= 255 => s.to_string(),
        _ => ar_quote(s),
    }
}

/// Parameters with our caches (mail-auth's builder, by method input).
impl cache::Caches {
    fn with<'x, P>(
        &'x self,
        params: P,
    ) -> Parameters<
        'x,
        P,
        cache::TxtCache,
        cache::MxCache,
        cache::Ipv4Cache,
        cache::Ipv6Cache,
        cache::PtrCache,
    > {
        Parameters::new(params)
            .with_txt_cache(&self.txt)
            .with_mx_cache(&self.mx)
            .with_ipv4_cache(&self.ipv4)
            .with_ipv6_cache(&self.ipv6)
            .with_ptr_cache(&self.ptr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dnsbl_names() {
        assert_eq!(reversed("192.0.2.99".parse().unwrap()), "99.2.0.192");
        assert_eq!(
            reversed("2001:db8:1:2:3:4:567:89ab".parse().unwrap()),
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"
        );
    }

    #[test]
    fn pvalues() {
        assert_eq!(ar_addr("a.b@bank.kz"), "a.b@bank.kz");
        assert_eq!(ar_addr("a b@bank.kz"), "\"a b@bank.kz\"");
        assert_eq!(ar_addr("x\r\ny@z"), "\"xy@z\"");
        assert_eq!(ar_value("bank.kz"), "bank.kz");
        assert_eq!(ar_value("a;b"), "\"a;b\"");
    }
}
