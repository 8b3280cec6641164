//! Thunderbird autoconfig (config file format v1.1) at `/mail/config-v1.1.xml` and
//! `/.well-known/autoconfig/mail/config-v1.1.xml`, and the client settings every client
//! document (autodiscover, Apple profile, the self-service page) is built from.
//!
//! Thunderbird's account wizard asks `http(s)://autoconfig.<domain>/mail/config-v1.1.xml
//! ?emailaddress=<address>` and `https://<domain>/.well-known/autoconfig/mail/config-v1.1.xml`
//! (Mozilla wiki, "Thunderbird:Autoconfiguration" and "…:ConfigFileFormat"). It reads
//! `emailProvider/domain`, and for each `incomingServer type="imap"` / `outgoingServer
//! type="smtp"`: `hostname`, `port`, `socketType` (`SSL` = implicit TLS, `STARTTLS`),
//! `authentication` and `username`, where `%EMAILADDRESS%` stands for the address typed into the
//! wizard; it tries the servers of a type in the order listed. We offer AUTH PLAIN/LOGIN over TLS
//! only, which that format calls `password-cleartext` (`password-encrypted` means CRAM-MD5).
//!
//! Only addresses of `server.domains` get a document; any other domain is 404, so the endpoint
//! says nothing about domains we do not serve. Client input reaches the document only after
//! [`local_address`] validated it, and then only through [`esc`].

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::Web;
use crate::server::App;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/mail/config-v1.1.xml", get(config_v11))
        .route(
            "/.well-known/autoconfig/mail/config-v1.1.xml",
            get(config_v11),
        )
}

/// How a client secures one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (993, 465; RFC 8314).
    Implicit,
    /// Plaintext greeting, then STARTTLS (143, 587).
    StartTls,
}

/// One server as a client should use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub security: Security,
}

/// The IMAP and SMTP submission servers of this Tanba, implicit TLS first (RFC 8314 §3), from
/// the ports `serve` bound and `server.hostname`. A listener that is off is left out.
#[derive(Debug, Clone)]
pub struct Settings {
    pub imap: Vec<Endpoint>,
    pub smtp: Vec<Endpoint>,
}

impl Settings {
    pub fn of(web: &Web, app: &App) -> Settings {
        let host = &app.config.hostname;
        let list = |pairs: [(&str, Security); 2]| {
            pairs
                .iter()
                .filter_map(|(key, security)| {
                    Some(Endpoint {
                        host: host.clone(),
                        port: web.port(key)?,
                        security: *security,
                    })
                })
                .collect::<Vec<_>>()
        };
        Settings {
            imap: list([
                ("imap.listen_tls", Security::Implicit),
                ("imap.listen", Security::StartTls),
            ]),
            smtp: list([
                ("smtp.submissions", Security::Implicit),
                ("smtp.submission", Security::StartTls),
            ]),
        }
    }
}

/// Longest address accepted from a client (RFC 5321 §4.5.3.1.3: a path is at most 256 octets).
pub const MAX_ADDRESS: usize = 254;

/// `raw` as a lower-case address of one of our domains, or None (not an address, too long, or
/// another domain).
pub fn local_address(app: &App, raw: &str) -> Option<String> {
    if raw.len() > MAX_ADDRESS {
        return None;
    }
    let email = crate::store::account::normalize_email(raw).ok()?;
    let (_, domain) = email.rsplit_once('@')?;
    app.config.is_local_domain(domain).then_some(email)
}

/// The host a request was addressed to (Host header, port removed, lower-case); None without one.
pub fn request_host(headers: &HeaderMap) -> Option<String> {
    let h = headers.get(header::HOST)?.to_str().ok()?;
    let h = match h.rsplit_once(':') {
        // Not inside an IPv6 literal.
        Some((name, port)) if !name.ends_with(']') || h.starts_with('[') => {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                h
            }
        }
        _ => h,
    };
    let h = h.trim_end_matches('.').to_ascii_lowercase();
    (!h.is_empty() && h.len() <= 253).then_some(h)
}

use super::esc;

/// A 404 that says only that: no domain, address or list of what we serve.
pub fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

#[derive(Deserialize)]
struct AutoconfigQuery {
    emailaddress: Option<String>,
}

async fn config_v11(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Query<AutoconfigQuery>,
) -> Response {
    let app = web.app();
    // The address typed into the wizard; without one (older clients), the domain of the
    // `autoconfig.<domain>` host asked.
    let domain = match q.emailaddress.as_deref().filter(|e| !e.is_empty()) {
        Some(raw) => match local_address(&app, raw) {
            Some(email) => email.rsplit_once('@').map(|(_, d)| d.to_string()),
            None => None,
        },
        None => request_host(&headers)
            .and_then(|h| h.strip_prefix("autoconfig.").map(str::to_string))
            .filter(|d| app.config.is_local_domain(d)),
    };
    let Some(domain) = domain else {
        return not_found();
    };
    let body = thunderbird_xml(&domain, &Settings::of(&web, &app));
    (
        [
            (header::CONTENT_TYPE, "application/xml; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The config file of Mozilla's format v1.1 for `domain` (already known to be ours).
pub fn thunderbird_xml(domain: &str, s: &Settings) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str("<clientConfig version=\"1.1\">\n");
    x.push_str(&format!("  <emailProvider id=\"{}\">\n", esc(domain)));
    x.push_str(&format!("    <domain>{}</domain>\n", esc(domain)));
    x.push_str(&format!("    <displayName>{}</displayName>\n", esc(domain)));
    x.push_str(&format!(
        "    <displayShortName>{}</displayShortName>\n",
        esc(domain)
    ));
    let server = |x: &mut String, tag: &str, kind: &str, e: &Endpoint| {
        x.push_str(&format!("    <{tag} type=\"{kind}\">\n"));
        x.push_str(&format!("      <hostname>{}</hostname>\n", esc(&e.host)));
        x.push_str(&format!("      <port>{}</port>\n", e.port));
        let socket = match e.security {
            Security::Implicit => "SSL",
            Security::StartTls => "STARTTLS",
        };
        x.push_str(&format!("      <socketType>{socket}</socketType>\n"));
        x.push_str("      <authentication>password-cleartext</authentication>\n");
        x.push_str("      <username>%EMAILADDRESS%</username>\n");
        x.push_str(&format!("    </{tag}>\n"));
    };
    for e in &s.imap {
        server(&mut x, "incomingServer", "imap", e);
    }
    for e in &s.smtp {
        server(&mut x, "outgoingServer", "smtp", e);
    }
    x.push_str("  </emailProvider>\n</clientConfig>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&#39;");
    }

    #[test]
    fn host_header() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "AutoConfig.Example.KZ:8080".parse().unwrap());
        assert_eq!(request_host(&h).as_deref(), Some("autoconfig.example.kz"));
        h.insert(header::HOST, "[::1]:443".parse().unwrap());
        assert_eq!(request_host(&h).as_deref(), Some("[::1]"));
        h.insert(header::HOST, "mta-sts.example.kz.".parse().unwrap());
        assert_eq!(request_host(&h).as_deref(), Some("mta-sts.example.kz"));
    }
}
