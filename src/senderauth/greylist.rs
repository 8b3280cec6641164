//! Greylisting on the MX (RFC 6647; docs/senderauth.md, "Greylisting").
//!
//! The triplet is (client network, MAIL FROM, RCPT TO), checked at each RCPT of an MX session
//! once the recipient is known to be ours (RFC 6647 §2.3: SMTP-command-level greylisting; an
//! unknown recipient still gets its 550 at once and leaves no record). The network is the
//! client's /24 (IPv4) or /64 (IPv6), because a sender's retry often comes from another host of
//! the same outbound pool (RFC 6647 §4.5). MAIL FROM and RCPT TO compare without case; the null
//! sender `<>` is a sender like any other.
//!
//! A new triplet gets `451 4.7.1` with the time to wait; a retry from `auth.greylist_delay` after
//! the first attempt up to `auth.greylist_expire` after it passes, and the triplet then passes at
//! once for `auth.greylist_lifetime`, renewed by each pass. Not greylisted: submission (the MX
//! port has no AUTH, so an authenticated session never reaches this) and clients in
//! `auth.greylist_allow`. The records and their bounds are `store/greylist.rs`.
//!
//! Each decision is one log line with `client_ip=`. A failing store lets the recipient through
//! (logged as an error): greylisting delays mail, it must not stop it.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::GreylistConfig;
use crate::logging::escape;
use crate::store::{GreylistPolicy, GreylistVerdict, Store};

/// What the session answers to the RCPT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// `delayed`: seconds since the first attempt when this is the triplet's first pass.
    Accept { delayed: Option<u64> },
    /// `451 4.7.1`: try again in this many seconds.
    Defer(u64),
}

/// The greylisting network of `ip`: its /24 (IPv4, IPv4-mapped IPv6 included) or /64 (IPv6).
pub fn network(ip: IpAddr) -> ipnet::IpNet {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    let prefix = if ip.is_ipv4() { 24 } else { 64 };
    ipnet::IpNet::new(ip, prefix)
        .map(|n| n.trunc())
        .unwrap_or_else(|_| ipnet::IpNet::from(ip))
}

/// Checks one RCPT of an MX transaction (`from`: the reverse path, empty for `<>`).
pub fn check(
    config: &GreylistConfig,
    store: &Store,
    ip: IpAddr,
    from: &str,
    rcpt: &str,
) -> Decision {
    let client = crate::limits::Client::of(ip);
    let (from_log, rcpt_log) = (escape(from, 256), escape(rcpt, 256));
    let mapped = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if config.allow.iter().any(|n| n.contains(&mapped)) {
        tracing::info!(
            client_ip = %client,
            from = %from_log,
            rcpt = %rcpt_log,
            "greylist: skipped, client in auth.greylist_allow"
        );
        return Decision::Accept { delayed: None };
    }
    let net = network(ip).to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let policy = GreylistPolicy {
        delay: config.delay.as_secs().max(1),
        expire: config.expire.as_secs(),
        lifetime: config.lifetime.as_secs(),
        max_entries: config.max_entries,
    };
    match store.greylist_check(&net, from, rcpt, now, &policy) {
        Ok(GreylistVerdict::Defer { retry_in, new }) => {
            tracing::info!(
                client_ip = %client,
                network = %net,
                from = %from_log,
                rcpt = %rcpt_log,
                retry_in,
                "greylist: deferred ({})",
                if new { "new triplet" } else { "retried too early" }
            );
            Decision::Defer(retry_in)
        }
        Ok(GreylistVerdict::Pass {
            waited: Some(waited),
        }) => {
            tracing::info!(
                client_ip = %client,
                network = %net,
                from = %from_log,
                rcpt = %rcpt_log,
                delayed = waited,
                "greylist: passed after {waited} s; triplet accepted from now on"
            );
            Decision::Accept {
                delayed: Some(waited),
            }
        }
        Ok(GreylistVerdict::Pass { waited: None }) => {
            tracing::info!(
                client_ip = %client,
                network = %net,
                from = %from_log,
                rcpt = %rcpt_log,
                "greylist: passed (known triplet)"
            );
            Decision::Accept { delayed: None }
        }
        Err(e) => {
            tracing::error!(client_ip = %client, "greylist: store error, recipient accepted: {e}");
            Decision::Accept { delayed: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n = |s: &str| network(s.parse().unwrap()).to_string();
        assert_eq!(n("192.0.2.77"), "192.0.2.0/24");
        assert_eq!(n("::ffff:192.0.2.77"), "192.0.2.0/24");
        assert_eq!(n("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }
}
