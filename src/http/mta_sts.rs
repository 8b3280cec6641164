//! MTA-STS policy hosting (RFC 8461): `GET /.well-known/mta-sts.txt` on the host
//! `mta-sts.<domain>` of each local domain.
//!
//! A sending MTA that finds `_mta-sts.<domain>` TXT `v=STSv1; id=…` (§3.1) fetches
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt` (§3.3: HTTPS, certificate valid for that
//! name, no redirects followed, `text/plain`) and reads the policy (§3.2): `version: STSv1`,
//! `mode` (`mta_sts.mode`), one `mx` per MX host (ours: `server.hostname`) and `max_age` in
//! seconds (`mta_sts.max_age`). The `id` that `tanba dns` prints is a hash of exactly this text,
//! so it changes when, and only when, the policy does (§3.1: senders re-fetch on a new id).
//! Any other Host gets 404: the policy is about the domain the sender asked for.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::autoconfig::{not_found, request_host};
use super::Web;
use crate::config::Config;

pub fn routes() -> Router<Web> {
    Router::new().route("/.well-known/mta-sts.txt", get(policy_file))
}

async fn policy_file(State(web): State<Web>, headers: HeaderMap) -> Response {
    let app = web.app();
    let ours = request_host(&headers)
        .and_then(|h| h.strip_prefix("mta-sts.").map(str::to_string))
        .filter(|d| app.config.is_local_domain(d));
    if ours.is_none() {
        return not_found();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        policy(&app.config),
    )
        .into_response()
}

/// The policy text (RFC 8461 §3.2), the same for every local domain: they share the MX.
/// Lines end with CRLF, as in the RFC's example (LF alone is also allowed).
pub fn policy(config: &Config) -> String {
    format!(
        "version: STSv1\r\nmode: {}\r\nmx: {}\r\nmax_age: {}\r\n",
        config.mta_sts.mode.as_str(),
        config.hostname.trim_end_matches('.'),
        config.mta_sts.max_age.as_secs()
    )
}

/// The policy id of the `_mta-sts` TXT record (§3.1: 1 to 32 letters and digits): the first
/// 20 hex digits of the SHA-256 of [`policy`].
pub fn policy_id(config: &Config) -> String {
    let d = openssl::sha::sha256(policy(config).as_bytes());
    d[..10].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_and_id_follow_the_config() {
        let c = Config::from_toml(
            "[server]\nhostname = \"mx.example.kz\"\n[mta_sts]\nmode = \"enforce\"\nmax_age = \"1d\"\n",
            None,
        )
        .unwrap();
        assert_eq!(
            policy(&c),
            "version: STSv1\r\nmode: enforce\r\nmx: mx.example.kz\r\nmax_age: 86400\r\n"
        );
        let id = policy_id(&c);
        assert_eq!(id.len(), 20);
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
        let d = Config::from_toml("[server]\nhostname = \"mx.example.kz\"\n", None).unwrap();
        assert_ne!(policy_id(&d), id);
        let e = Config::from_toml("[mta_sts]\nmax_age = \"2years\"\n", None).unwrap_err();
        assert!(
            format!("{e:#}").contains("mta_sts.max_age (line 2)"),
            "{e:#}"
        );
        let e = Config::from_toml("[mta_sts]\nmode = \"strict\"\n", None).unwrap_err();
        assert!(format!("{e:#}").contains("mta_sts.mode (line 2)"), "{e:#}");
    }
}
