//! Outlook autodiscover: the POX protocol ([MS-OXDSCLI], `POST /autodiscover/autodiscover.xml`)
//! and the JSON "v2" lookup new Outlook asks first (`GET /autodiscover/autodiscover.json?Email=…
//! &Protocol=…`, also as `/autodiscover/autodiscover.json/v1.0/<address>?Protocol=…`).
//!
//! POX: the request is `<Autodiscover><Request><EMailAddress>…</EMailAddress>
//! <AcceptableResponseSchema>…/outlook/responseschema/2006a</AcceptableResponseSchema>`
//! ([MS-OXDSCLI] §2.2.3); the answer is an `Account` with `AccountType` `email`, `Action`
//! `settings` and one `Protocol` per type (`IMAP`, `SMTP`) carrying `Server`, `Port`,
//! `LoginName`, `DomainRequired`, `SPA` (off: no NTLM), `SSL`, `Encryption` (`SSL` for implicit
//! TLS, `TLS` for STARTTLS), `AuthRequired` and, for SMTP, `UsePOPAuth`/`SMTPLast`
//! ([MS-OXDSCLI] §2.2.4.1.1.2.x). Outlook takes the first `Protocol` of a type, so each type
//! appears once, implicit TLS preferred. Outlook writes the path as `/Autodiscover/Autodiscover.xml`,
//! so both spellings are routed.
//!
//! JSON: `Protocol=AutodiscoverV1` answers `{"Protocol":"AutodiscoverV1","Url":"https://<hostname>
//! /autodiscover/autodiscover.xml"}`, sending Outlook on to the POX endpoint; other protocols
//! (ActiveSync, EWS, REST: nothing Tanba speaks) get 400 `InvalidProtocol`, as Exchange answers.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use super::autoconfig::{local_address, not_found, Security, Settings};
use super::esc;
use super::Web;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/autodiscover/autodiscover.xml", post(pox))
        .route("/Autodiscover/Autodiscover.xml", post(pox))
        .route("/autodiscover/autodiscover.json", get(json_query))
        .route("/Autodiscover/Autodiscover.json", get(json_query))
        .route(
            "/autodiscover/autodiscover.json/v1.0/{email}",
            get(json_path),
        )
        .route(
            "/Autodiscover/Autodiscover.json/v1.0/{email}",
            get(json_path),
        )
}

/// The response schema a POX request must accept ([MS-OXDSCLI] §2.2.3.1.1.1).
const OUTLOOK_SCHEMA: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";

/// What a POX request asks: the address and the response schema. Bounded: the body is at most
/// [`super::MAX_BODY_BYTES`]; quick-xml reads it as a flat stream of events (no recursion, no
/// entity expansion beyond the five predefined ones); a DOCTYPE is refused.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PoxRequest {
    pub email: Option<String>,
    pub schema: Option<String>,
}

pub fn parse_pox(body: &[u8]) -> Option<PoxRequest> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().trim_text(true);
    let mut buf = Vec::new();
    let mut current: Option<&'static str> = None;
    let mut text = String::new();
    let mut req = PoxRequest::default();
    loop {
        match reader.read_event_into(&mut buf).ok()? {
            Event::Start(e) => {
                text.clear();
                current = match e.local_name().as_ref() {
                    b"EMailAddress" => Some("email"),
                    b"AcceptableResponseSchema" => Some("schema"),
                    _ => None,
                };
            }
            Event::Text(t) if current.is_some() => {
                text.push_str(&t.decode().ok()?);
                if text.len() > super::MAX_BODY_BYTES {
                    return None;
                }
            }
            // quick-xml reports `&amp;` and `&#64;` apart from the text around them.
            Event::GeneralRef(r) if current.is_some() => {
                let name = r.decode().ok()?;
                let c = match r.resolve_char_ref().ok()? {
                    Some(c) => c,
                    None => match quick_xml::escape::resolve_predefined_entity(&name)? {
                        s if s.chars().count() == 1 => s.chars().next()?,
                        _ => return None,
                    },
                };
                text.push(c);
            }
            Event::End(_) => {
                match current.take() {
                    Some("email") => req.email = Some(text.trim().to_string()),
                    Some(_) => req.schema = Some(text.trim().to_string()),
                    None => {}
                }
                text.clear();
            }
            Event::DocType(_) => return None,
            Event::Eof => return Some(req),
            _ => {}
        }
        buf.clear();
    }
}

async fn pox(State(web): State<Web>, body: Bytes) -> Response {
    let Some(req) = parse_pox(&body) else {
        return (StatusCode::BAD_REQUEST, "not an autodiscover request\n").into_response();
    };
    if let Some(schema) = &req.schema {
        if schema != OUTLOOK_SCHEMA {
            // The mobilesync (ActiveSync) schema: not something we serve.
            return not_found();
        }
    }
    let app = web.app();
    let Some(email) = req.email.as_deref().and_then(|e| local_address(&app, e)) else {
        return not_found();
    };
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        pox_xml(&email, &Settings::of(&web, &app)),
    )
        .into_response()
}

/// The POX response for `email` (already known to be ours).
pub fn pox_xml(email: &str, s: &Settings) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    x.push_str(
        "<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n",
    );
    x.push_str(&format!("  <Response xmlns=\"{OUTLOOK_SCHEMA}\">\n"));
    x.push_str("    <Account>\n");
    x.push_str("      <AccountType>email</AccountType>\n");
    x.push_str("      <Action>settings</Action>\n");
    let mut protocol = |kind: &str, e: Option<&super::autoconfig::Endpoint>| {
        let Some(e) = e else { return };
        x.push_str("      <Protocol>\n");
        x.push_str(&format!("        <Type>{kind}</Type>\n"));
        x.push_str(&format!("        <Server>{}</Server>\n", esc(&e.host)));
        x.push_str(&format!("        <Port>{}</Port>\n", e.port));
        x.push_str("        <DomainRequired>off</DomainRequired>\n");
        x.push_str(&format!("        <LoginName>{}</LoginName>\n", esc(email)));
        x.push_str("        <SPA>off</SPA>\n");
        let (ssl, enc) = match e.security {
            Security::Implicit => ("on", "SSL"),
            Security::StartTls => ("on", "TLS"),
        };
        x.push_str(&format!("        <SSL>{ssl}</SSL>\n"));
        x.push_str(&format!("        <Encryption>{enc}</Encryption>\n"));
        x.push_str("        <AuthRequired>on</AuthRequired>\n");
        if kind == "SMTP" {
            x.push_str("        <UsePOPAuth>off</UsePOPAuth>\n");
            x.push_str("        <SMTPLast>off</SMTPLast>\n");
        }
        x.push_str("      </Protocol>\n");
    };
    protocol("IMAP", s.imap.first());
    protocol("SMTP", s.smtp.first());
    x.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    x
}

#[derive(Deserialize)]
struct JsonQuery {
    #[serde(alias = "email", alias = "EMail")]
    #[serde(rename = "Email")]
    email: Option<String>,
    #[serde(alias = "protocol")]
    #[serde(rename = "Protocol")]
    protocol: Option<String>,
}

async fn json_query(State(web): State<Web>, Query(q): Query<JsonQuery>) -> Response {
    json_v2(&web, q.email.as_deref(), q.protocol.as_deref())
}

async fn json_path(
    State(web): State<Web>,
    Path(email): Path<String>,
    Query(q): Query<JsonQuery>,
) -> Response {
    json_v2(&web, Some(&email), q.protocol.as_deref())
}

fn json_v2(web: &Web, email: Option<&str>, protocol: Option<&str>) -> Response {
    let app = web.app();
    if email.and_then(|e| local_address(&app, e)).is_none() {
        return not_found();
    }
    let protocol = protocol.unwrap_or("");
    if !protocol.eq_ignore_ascii_case("AutodiscoverV1") {
        let body = serde_json::json!({
            "ErrorCode": "InvalidProtocol",
            "ErrorMessage": "The given protocol value is invalid. Supported values are 'AutodiscoverV1'",
        });
        return (StatusCode::BAD_REQUEST, axum_json(&body)).into_response();
    }
    let port = match web.port("http.listen_tls") {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let body = serde_json::json!({
        "Protocol": "AutodiscoverV1",
        "Url": format!("https://{}{port}/autodiscover/autodiscover.xml", app.config.hostname),
    });
    axum_json(&body).into_response()
}

fn axum_json(v: &serde_json::Value) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pox_request() {
        let body = br#"<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>Anna&amp;@example.kz</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>"#;
        let r = parse_pox(body).unwrap();
        assert_eq!(r.email.as_deref(), Some("Anna&@example.kz"));
        assert_eq!(r.schema.as_deref(), Some(OUTLOOK_SCHEMA));
        assert!(parse_pox(b"<!DOCTYPE x [<!ENTITY a \"b\">]><x/>").is_none());
        assert!(parse_pox(b"<a><b></a>").is_none());
    }
}
