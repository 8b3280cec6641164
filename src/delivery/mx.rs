//! Where mail for a domain goes: MX lookup (RFC 5321 §5.1) with hickory-resolver, or the
//! `delivery.relay` smarthost.
//!
//! - MX records are tried by preference, equal preferences in random order (§5.1 "SHOULD
//!   randomize"); each exchange's addresses come from A/AAAA.
//! - No MX record (NODATA) means the domain itself is the implicit MX (its A/AAAA).
//! - A null MX (RFC 7505: one MX of preference 0 whose exchange is `.`) and a domain that does not
//!   exist (NXDOMAIN) are permanent failures; every other DNS trouble is temporary.
//! - `delivery.resolver` names the DNS server (tests run one on loopback); empty: the system's.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::{Name, RData};
use hickory_resolver::{ResolverBuilder, TokioResolver};
use rand::seq::SliceRandom;

use crate::config::DeliveryConfig;

/// Addresses tried for one destination, at most (Postfix's `smtp_mx_address_limit` is 5).
const MAX_TARGETS: usize = 8;

/// One host to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The name used for TLS SNI and shown in errors (the MX exchange, or the relay host).
    pub host: String,
    pub addr: SocketAddr,
}

impl Target {
    /// `mx.example.com[192.0.2.1]:25`, the way errors and DSNs name a remote host.
    pub fn display(&self) -> String {
        format!("{}[{}]", self.host, self.addr.ip())
    }
}

/// Why no host could be found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    Temporary(String),
    /// With the RFC 3463 status to report.
    Permanent {
        status: &'static str,
        text: String,
    },
}

/// Resolves destinations. Built once per worker.
pub struct Router {
    resolver: Result<TokioResolver, String>,
    port: u16,
}

impl Router {
    pub fn new(config: &DeliveryConfig) -> Router {
        let resolver = build_resolver(config.resolver, Duration::from_secs(5), 2).map_err(|e| {
            tracing::error!("DNS resolver: {e}");
            format!("DNS resolver unavailable: {e}")
        });
        Router {
            resolver,
            port: config.remote_port,
        }
    }

    /// The hosts to try for `domain` (the part after `@`, possibly a `[address literal]`).
    pub async fn mx_targets(&self, domain: &str) -> Result<Vec<Target>, RouteError> {
        if let Some(ip) = address_literal(domain) {
            return Ok(vec![Target {
                host: ip.to_string(),
                addr: SocketAddr::new(ip, self.port),
            }]);
        }
        let resolver = self
            .resolver
            .as_ref()
            .map_err(|e| RouteError::Temporary(e.clone()))?;
        let name = fqdn(domain).map_err(|e| RouteError::Permanent {
            status: "5.1.2",
            text: format!("{domain}: not a valid domain name: {e}"),
        })?;

        let exchanges: Vec<Name> = match resolver.mx_lookup(name.clone()).await {
            Ok(mx) => {
                let mut recs: Vec<(u16, Name)> = mx
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(m) => Some((m.preference, m.exchange.clone())),
                        _ => None,
                    })
                    .collect();
                if !recs.is_empty() && recs.iter().all(|(_, n)| n.is_root()) {
                    return Err(RouteError::Permanent {
                        status: "5.1.10",
                        text: format!("{domain} does not accept mail (null MX, RFC 7505)"),
                    });
                }
                recs.retain(|(_, n)| !n.is_root());
                by_preference(&mut recs);
                recs.into_iter().map(|(_, n)| n).collect()
            }
            Err(e) if e.is_nx_domain() => {
                return Err(RouteError::Permanent {
                    status: "5.1.2",
                    text: format!("{domain}: no such domain (NXDOMAIN)"),
                })
            }
            // RFC 5321 §5.1: no MX records: the domain is its own (implicit) MX.
            Err(e) if e.is_no_records_found() => vec![name.clone()],
            Err(e) => {
                return Err(RouteError::Temporary(format!(
                    "MX lookup for {domain} failed: {}",
                    short(&e)
                )))
            }
        };

        let mut out = Vec::new();
        let mut errors = Vec::new();
        for exchange in &exchanges {
            if out.len() >= MAX_TARGETS {
                break;
            }
            let host = exchange.to_ascii().trim_end_matches('.').to_string();
            match resolver.lookup_ip(exchange.clone()).await {
                Ok(ips) => {
                    for ip in ips.iter().take(MAX_TARGETS - out.len()) {
                        out.push(Target {
                            host: host.clone(),
                            addr: SocketAddr::new(ip, self.port),
                        });
                    }
                }
                Err(e) => errors.push((host, e)),
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        let implicit = exchanges.len() == 1 && exchanges[0] == name;
        match errors.first() {
            Some((host, e)) if implicit && (e.is_nx_domain() || e.is_no_records_found()) => {
                Err(RouteError::Permanent {
                    status: "5.1.2",
                    text: format!("{host}: no MX, A or AAAA record"),
                })
            }
            Some((host, e)) => Err(RouteError::Temporary(format!(
                "cannot resolve {host} (MX of {domain}): {}",
                short(e)
            ))),
            None => Err(RouteError::Temporary(format!(
                "no usable MX host for {domain}"
            ))),
        }
    }
}

/// The smarthost's addresses (`delivery.relay`, "host:port"), through the system resolver so
/// that `/etc/hosts` names work.
pub async fn relay_targets(relay: &str) -> Result<Vec<Target>, RouteError> {
    let (host, _) = relay
        .rsplit_once(':')
        .ok_or_else(|| RouteError::Temporary(format!("delivery.relay {relay:?}: no port")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs = tokio::net::lookup_host(relay)
        .await
        .map_err(|e| RouteError::Temporary(format!("cannot resolve relay {relay}: {e}")))?;
    let out: Vec<Target> = addrs
        .take(MAX_TARGETS)
        .map(|addr| Target {
            host: host.clone(),
            addr,
        })
        .collect();
    if out.is_empty() {
        return Err(RouteError::Temporary(format!(
            "relay {relay} has no address"
        )));
    }
    Ok(out)
}

/// A resolver for `delivery.resolver` (`server`; `None`: the system's), with a per-query
/// `timeout` and `attempts` tries. Sender checks (`crate::senderauth`) use the same server.
pub(crate) fn build_resolver(
    server: Option<SocketAddr>,
    timeout: Duration,
    attempts: usize,
) -> Result<TokioResolver, NetError> {
    resolver_builder(server, timeout, attempts)?.build()
}

/// The builder behind [`build_resolver`] (`dane.rs` adds DNSSEC validation to it).
pub(crate) fn resolver_builder(
    server: Option<SocketAddr>,
    timeout: Duration,
    attempts: usize,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, NetError> {
    let mut builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio()?,
    };
    let opts = builder.options_mut();
    opts.timeout = timeout;
    opts.attempts = attempts;
    // A domain that had no MX a minute ago may have one now.
    opts.negative_max_ttl = Some(Duration::from_secs(60));
    Ok(builder)
}

/// `[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3).
fn address_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    match inner.get(..5) {
        Some(p) if p.eq_ignore_ascii_case("IPv6:") => inner[5..].parse().ok(),
        _ => inner.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

/// The domain in ASCII (IDNA), lower-case, without a trailing dot; None when it is no valid name.
pub fn ascii_domain(domain: &str) -> Option<String> {
    let n = fqdn(domain).ok()?;
    Some(n.to_ascii().trim_end_matches('.').to_ascii_lowercase())
}

/// The domain as an absolute name (so no search list applies), IDNA-encoded.
fn fqdn(domain: &str) -> Result<Name, String> {
    let mut n = Name::from_utf8(domain.trim_end_matches('.')).map_err(|e| e.to_string())?;
    n.set_fqdn(true);
    Ok(n)
}

/// Sorts by preference; shuffles each run of equal preference.
fn by_preference<T>(recs: &mut [(u16, T)]) {
    let mut rng = rand::thread_rng();
    recs.shuffle(&mut rng);
    recs.sort_by_key(|(p, _)| *p);
}

fn short(e: &NetError) -> String {
    let s = e.to_string();
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals() {
        assert_eq!(
            address_literal("[127.0.0.1]"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(address_literal("[IPv6:::1]"), Some("::1".parse().unwrap()));
        assert_eq!(address_literal("example.com"), None);
        assert_eq!(address_literal("[::1]"), None);
    }

    #[test]
    fn preference_order_is_stable_across_groups() {
        for _ in 0..20 {
            let mut v = vec![(20, "c"), (10, "a"), (10, "b"), (30, "d")];
            by_preference(&mut v);
            let prefs: Vec<u16> = v.iter().map(|x| x.0).collect();
            assert_eq!(prefs, vec![10, 10, 20, 30]);
            assert_eq!(v[3].1, "d");
        }
    }

    #[test]
    fn idna_names() {
        let n = fqdn("пример.қаз").unwrap();
        assert!(n.to_ascii().starts_with("xn--"), "{}", n.to_ascii());
        assert!(n.is_fqdn());
    }
}
