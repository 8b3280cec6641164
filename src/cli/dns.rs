//! `tanba dns [DOMAIN] [--check [--resolver ADDR:PORT]]`: every DNS record this configuration
//! needs, in zone-file syntax, and with `--check` which of them a resolver already serves
//! (docs/web.md, "DNS").
//!
//! Per local domain: MX (RFC 5321 §5.1) to `server.hostname`; SPF (RFC 7208) `v=spf1 mx -all`;
//! the DKIM key of `[dkim."<domain>"]` (RFC 6376 §3.6.1; public key taken from the key file);
//! DMARC (RFC 7489) `p=quarantine` with reports to postmaster@; `_mta-sts` (RFC 8461 §3.1, the
//! id of the served policy) and `mta-sts.<domain>`; TLS-RPT (RFC 8460) `_smtp._tls`;
//! `autoconfig.`/`autodiscover.` names (Thunderbird, Outlook); SRV records for
//! `_imaps`/`_imap`/`_submissions`/`_submission` (RFC 6186, RFC 8314 §5.1; a listener that is
//! off gets the "not available" target `.`, RFC 6186 §4) and `_autodiscover._tcp`; CAA
//! (RFC 8659) allowing Let's Encrypt. Once for `server.hostname`: A/AAAA, from the MX
//! listener's address when it is a public one, else a commented hint.
//!
//! `--check` asks the resolver (`--resolver`, else `delivery.resolver`, else the system's: the
//! one delivery and the sender checks use) for each record and prints `ok`, `missing` or
//! `different` (a record of that kind is there with another value: shown, for the operator to
//! judge). Exit 1 when any record is missing, else 0.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use hickory_resolver::proto::rr::{RData, RecordType};

use crate::config::Config;

/// TTL written on every record.
const TTL: u32 = 3600;

/// One record this configuration needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Absolute name, with the trailing dot.
    pub name: String,
    pub rtype: RecordType,
    /// The data in zone-file syntax; None for a hint whose value only the operator knows (the
    /// server's public address): printed as a comment, checked for presence.
    pub data: Option<String>,
    /// Why the record is there (printed as a comment above it).
    pub why: &'static str,
}

impl Record {
    fn new(name: String, rtype: RecordType, data: String, why: &'static str) -> Record {
        Record {
            name,
            rtype,
            data: Some(data),
            why,
        }
    }

    /// The zone-file line (commented out for a hint).
    pub fn line(&self) -> String {
        match &self.data {
            Some(d) => format!("{} {TTL} IN {} {d}", self.name, self.rtype),
            None => format!(
                "; {} {TTL} IN {} <the server's public address>",
                self.name, self.rtype
            ),
        }
    }
}

/// A TXT value as zone-file character-strings of at most 255 bytes each (RFC 1035 §3.3.14).
fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

/// The DKIM TXT value for the key file of `[dkim."<domain>"]`.
fn dkim_value(path: &std::path::Path) -> Result<String> {
    use base64::Engine;
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let key = openssl::pkey::PKey::private_key_from_pem(&pem)
        .map_err(|_| anyhow!("{} holds no PEM private key", path.display()))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    match key.id() {
        openssl::pkey::Id::RSA => Ok(format!(
            "v=DKIM1; k=rsa; p={}",
            b64.encode(key.public_key_to_der()?)
        )),
        // RFC 8463 §4.2: the raw 32-byte public key.
        openssl::pkey::Id::ED25519 => Ok(format!(
            "v=DKIM1; k=ed25519; p={}",
            b64.encode(key.raw_public_key()?)
        )),
        _ => bail!("{}: neither an RSA nor an Ed25519 key", path.display()),
    }
}

/// A public (routable) address of the MX listener, if it is bound to one.
fn public_addr(addrs: &[SocketAddr], v4: bool) -> Option<IpAddr> {
    addrs.iter().map(|a| a.ip()).find(|ip| {
        ip.is_ipv4() == v4
            && !ip.is_unspecified()
            && !ip.is_loopback()
            && match ip {
                IpAddr::V4(a) => !a.is_private() && !a.is_link_local(),
                IpAddr::V6(a) => (a.segments()[0] & 0xfe00) != 0xfc00,
            }
    })
}

/// Every record for `only` (one local domain) or for all of `server.domains`.
pub fn records(config: &Config, only: Option<&str>) -> Result<Vec<Record>> {
    let domains: Vec<String> = match only {
        Some(d) => {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if !config.is_local_domain(&d) {
                bail!(
                    "{d} is not one of server.domains ({})",
                    config.domains.join(", ")
                );
            }
            vec![d]
        }
        None => config.domains.clone(),
    };
    let host = fqdn(&config.hostname);
    let mut out = Vec::new();
    for (v4, rtype) in [(true, RecordType::A), (false, RecordType::AAAA)] {
        match public_addr(&config.smtp.mx, v4) {
            Some(ip) => out.push(Record::new(
                host.clone(),
                rtype,
                ip.to_string(),
                "the address of server.hostname (smtp.mx listens on it)",
            )),
            None if v4 => out.push(Record {
                name: host.clone(),
                rtype,
                data: None,
                why: "server.hostname must resolve to the server (A and/or AAAA)",
            }),
            None => {}
        }
    }
    let srv_port = |addrs: &[SocketAddr]| addrs.first().map(|a| a.port());
    let policy_id = crate::http::mta_sts::policy_id(config);
    for d in &domains {
        let n = |prefix: &str| fqdn(&format!("{prefix}{d}"));
        out.push(Record::new(
            n(""),
            RecordType::MX,
            format!("10 {host}"),
            "mail for the domain goes to server.hostname",
        ));
        out.push(Record::new(
            n(""),
            RecordType::TXT,
            txt("v=spf1 mx -all"),
            "SPF: only the MX hosts send for the domain",
        ));
        if let Some(k) = config.dkim.get(d) {
            let value = dkim_value(&k.key).with_context(|| format!("dkim.\"{d}\".key"))?;
            out.push(Record::new(
                n(&format!("{}._domainkey.", k.selector)),
                RecordType::TXT,
                txt(&value),
                "DKIM: the public key of [dkim] (outbound mail is signed with it)",
            ));
        }
        out.push(Record::new(
            n("_dmarc."),
            RecordType::TXT,
            txt(&format!(
                "v=DMARC1; p=quarantine; rua=mailto:postmaster@{d}"
            )),
            "DMARC: mail failing SPF and DKIM goes to spam; aggregate reports to postmaster@",
        ));
        out.push(Record::new(
            n("_mta-sts."),
            RecordType::TXT,
            txt(&format!("v=STSv1; id={policy_id}")),
            "MTA-STS: senders fetch https://mta-sts.<domain>/.well-known/mta-sts.txt",
        ));
        out.push(Record::new(
            n("mta-sts."),
            RecordType::CNAME,
            host.clone(),
            "MTA-STS policy host (tanba's HTTPS listener serves it)",
        ));
        out.push(Record::new(
            n("_smtp._tls."),
            RecordType::TXT,
            txt(&format!("v=TLSRPTv1; rua=mailto:postmaster@{d}")),
            "TLS-RPT: senders report TLS failures to postmaster@",
        ));
        out.push(Record::new(
            n("autoconfig."),
            RecordType::CNAME,
            host.clone(),
            "Thunderbird autoconfig",
        ));
        out.push(Record::new(
            n("autodiscover."),
            RecordType::CNAME,
            host.clone(),
            "Outlook autodiscover",
        ));
        for (service, addrs, why) in [
            (
                "_imaps._tcp.",
                &config.imap.listen_tls,
                "IMAP over implicit TLS (RFC 6186, RFC 8314)",
            ),
            ("_imap._tcp.", &config.imap.listen, "IMAP with STARTTLS"),
            (
                "_submissions._tcp.",
                &config.smtp.submissions,
                "submission over implicit TLS (RFC 8314)",
            ),
            (
                "_submission._tcp.",
                &config.smtp.submission,
                "submission with STARTTLS",
            ),
            (
                "_autodiscover._tcp.",
                &config.http.listen_tls,
                "Outlook autodiscover over HTTPS",
            ),
        ] {
            let data = match srv_port(addrs) {
                Some(port) => format!("0 1 {port} {host}"),
                // RFC 6186 §4: target "." says the service is not offered.
                None => "0 0 0 .".to_string(),
            };
            out.push(Record::new(n(service), RecordType::SRV, data, why));
        }
        out.push(Record::new(
            n(""),
            RecordType::CAA,
            "0 issue \"letsencrypt.org\"".into(),
            "CAA: which CA may issue certificates for the domain (adjust to your ACME CA)",
        ));
    }
    Ok(out)
}

/// The zone text `tanba dns` prints.
pub fn zone_text(config: &Config, records: &[Record]) -> String {
    let mut s = format!(
        "; DNS records for {} (server.hostname {}), written by `tanba dns`\n",
        config.domains.join(", "),
        config.hostname
    );
    for r in records {
        s.push_str(&format!("; {}\n{}\n", r.why, r.line()));
    }
    s
}

/// What the resolver said about one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    Missing,
    /// A record of that kind with other values (shown).
    Different(Vec<String>),
}

/// Comparable form: lower case, no quotes, single spaces, no trailing dots on words.
fn norm(s: &str) -> String {
    s.replace('"', "")
        .split_whitespace()
        .map(|w| w.trim_end_matches('.').to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A TXT value for comparison: the character-strings joined, whitespace removed, lower case.
fn norm_txt(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .trim_end_matches(';')
        .to_ascii_lowercase()
}

/// The TXT value of zone-file character-strings (`"a" "b"` → `ab`).
fn unquote_txt(zone: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in zone.chars() {
        match c {
            '"' => inside = !inside,
            c if inside => out.push(c),
            _ => {}
        }
    }
    out
}

fn rdata_text(rd: &RData) -> String {
    match rd {
        RData::TXT(t) => t
            .txt_data
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect(),
        other => other.to_string(),
    }
}

/// Compares what the resolver holds with one expected record.
fn judge(r: &Record, found: &[String]) -> Status {
    let Some(data) = &r.data else {
        return if found.is_empty() {
            Status::Missing
        } else {
            Status::Ok
        };
    };
    if r.rtype == RecordType::TXT {
        let want = norm_txt(&unquote_txt(data));
        // Other TXT records at the same name (site verifications...) are not ours to judge:
        // only those of the same kind (`v=spf1`, `v=DKIM1`, ...) are compared.
        let kind = if want.starts_with("v=spf1") {
            "v=spf1"
        } else {
            want.split(';').next().unwrap_or("")
        };
        let same_kind: Vec<&String> = found
            .iter()
            .filter(|f| norm_txt(f).starts_with(kind))
            .collect();
        if same_kind.iter().any(|f| norm_txt(f) == want) {
            return Status::Ok;
        }
        if same_kind.is_empty() {
            return Status::Missing;
        }
        return Status::Different(same_kind.into_iter().cloned().collect());
    }
    let want = norm(data);
    if found.iter().any(|f| norm(f) == want) {
        Status::Ok
    } else if found.is_empty() {
        Status::Missing
    } else {
        Status::Different(found.to_vec())
    }
}

/// Looks every record up and prints the verdicts; returns the exit code.
pub fn check(config: &Config, records: &[Record], resolver: Option<SocketAddr>) -> Result<i32> {
    let server = resolver.or(config.delivery.resolver);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let resolver = crate::delivery::mx::build_resolver(server, Duration::from_secs(5), 2)
        .map_err(|e| anyhow!("DNS resolver: {e}"))?;
    println!(
        "; asking {}",
        server
            .map(|s| s.to_string())
            .unwrap_or_else(|| "the system's resolver".into())
    );
    let (mut ok, mut missing, mut different) = (0, 0, 0);
    for r in records {
        let found: Vec<String> = rt.block_on(async {
            let name = hickory_resolver::proto::rr::Name::from_ascii(&r.name)
                .map_err(|e| anyhow!("{}: {e}", r.name))?;
            Ok::<_, anyhow::Error>(match resolver.lookup(name, r.rtype).await {
                Ok(l) => l
                    .answers()
                    .iter()
                    .filter(|a| a.record_type() == r.rtype)
                    .map(|a| rdata_text(&a.data))
                    .collect(),
                Err(e) if e.is_nx_domain() || e.is_no_records_found() => Vec::new(),
                Err(e) => bail!("looking up {} {}: {e}", r.name, r.rtype),
            })
        })?;
        let line = match &r.data {
            Some(_) => r.line(),
            None => format!("{} {TTL} IN {} <address>", r.name, r.rtype),
        };
        match judge(r, &found) {
            Status::Ok => {
                ok += 1;
                println!("ok        {line}");
            }
            Status::Missing => {
                missing += 1;
                println!("missing   {line}");
            }
            Status::Different(f) => {
                different += 1;
                println!("different {line}");
                for v in f {
                    println!("          found: {v}");
                }
            }
        }
    }
    println!("; {ok} ok, {missing} missing, {different} different");
    Ok(if missing > 0 { 1 } else { 0 })
}

pub fn run(
    config: &Config,
    domain: Option<&str>,
    check_dns: bool,
    resolver: Option<&str>,
) -> Result<i32> {
    let resolver = match resolver {
        Some(r) => Some(
            r.parse::<SocketAddr>()
                .map_err(|_| anyhow!("--resolver {r:?} is not an address like 127.0.0.1:53"))?,
        ),
        None => None,
    };
    if resolver.is_some() && !check_dns {
        bail!("--resolver is for --check");
    }
    let records = records(config, domain)?;
    if check_dns {
        return check(config, &records, resolver);
    }
    print!("{}", zone_text(config, &records));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txt_kinds_are_compared_apart() {
        let r = Record::new(
            "example.kz.".into(),
            RecordType::TXT,
            txt("v=spf1 mx -all"),
            "",
        );
        assert_eq!(judge(&r, &[]), Status::Missing);
        assert_eq!(
            judge(&r, &["google-site-verification=abc".into()]),
            Status::Missing
        );
        assert_eq!(judge(&r, &["v=spf1  mx -all".into()]), Status::Ok);
        assert_eq!(
            judge(&r, &["v=spf1 a -all".into()]),
            Status::Different(vec!["v=spf1 a -all".into()])
        );
        let long = "v=DKIM1; k=rsa; p=".to_string() + &"A".repeat(400);
        assert!(txt(&long).contains("\" \""));
        assert_eq!(unquote_txt(&txt(&long)), long);
    }
}
