//! ACME HTTP-01 (RFC 8555 §8.3): `GET /.well-known/acme-challenge/{token}` answers the key
//! authorization of a pending order of the renewal task (src/acme), 404 otherwise. The CA asks
//! over plain HTTP on port 80 (`http.listen`); the route is on `http.listen_tls` too, harmless.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::Web;

pub fn routes() -> Router<Web> {
    Router::new().route("/.well-known/acme-challenge/{token}", get(challenge))
}

async fn challenge(State(web): State<Web>, Path(token): Path<String>) -> Response {
    // Tokens are base64url (RFC 8555 §8.3); anything else cannot be ours.
    let plausible = !token.is_empty()
        && token.len() <= crate::acme::MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let answer = if plausible {
        web.app().acme.key_authorization(&token)
    } else {
        None
    };
    match answer {
        // RFC 8555 §8.3's example answers application/octet-stream; the body is the key
        // authorization, nothing else (the CA compares it after trimming whitespace).
        Some(ka) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/octet-stream")],
            ka,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such challenge\n").into_response(),
    }
}
