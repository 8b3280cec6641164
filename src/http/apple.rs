//! An Apple configuration profile (`.mobileconfig`) for iOS/iPadOS/macOS Mail:
//! `/apple/<address>.mobileconfig`, or `/apple/mail.mobileconfig?email=<address>`.
//!
//! The profile is an XML property list (Apple's "Configuration Profile Reference"): a top-level
//! payload of `PayloadType` `Configuration` whose `PayloadContent` holds one
//! `com.apple.mail.managed` payload with `EmailAccountType` `EmailTypeIMAP`, `EmailAddress`,
//! `IncomingMailServerHostName`/`PortNumber`/`UseSSL`/`Username`/`Authentication`
//! (`EmailAuthPassword`) and the same `OutgoingMailServer…` keys, plus
//! `OutgoingPasswordSameAsIncomingPassword`. No password is in it: Mail asks for it on install.
//! It is unsigned (Settings shows "Not Verified"); the identifiers and UUIDs derive from the
//! address and `server.hostname`, so fetching it twice gives the same profile (a re-install
//! replaces rather than duplicates it). Served as `application/x-apple-aspen-config`.

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::autoconfig::{local_address, not_found, Endpoint, Security, Settings};
use super::esc;
use super::Web;

pub fn routes() -> Router<Web> {
    Router::new().route("/apple/{file}", get(profile))
}

#[derive(Deserialize)]
struct ProfileQuery {
    email: Option<String>,
}

async fn profile(
    State(web): State<Web>,
    Path(file): Path<String>,
    Query(q): Query<ProfileQuery>,
) -> Response {
    let Some(stem) = file.strip_suffix(".mobileconfig") else {
        return not_found();
    };
    let raw = if stem.contains('@') {
        Some(stem.to_string())
    } else {
        q.email
    };
    let app = web.app();
    let Some(email) = raw.as_deref().and_then(|e| local_address(&app, e)) else {
        return not_found();
    };
    let s = Settings::of(&web, &app);
    let (Some(imap), Some(smtp)) = (s.imap.first(), s.smtp.first()) else {
        return not_found();
    };
    let body = mobileconfig(&email, &app.config.hostname, imap, smtp);
    let disposition = format!(
        "attachment; filename=\"{}.mobileconfig\"",
        ascii_name(&email)
    );
    (
        [
            (
                header::CONTENT_TYPE,
                "application/x-apple-aspen-config".to_string(),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response()
}

/// A file name safe in a quoted header parameter.
fn ascii_name(email: &str) -> String {
    email
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A UUID (version 4 layout) derived from `parts`: stable across requests.
fn stable_uuid(parts: &[&str]) -> String {
    let mut data = Vec::new();
    for p in parts {
        data.extend_from_slice(p.as_bytes());
        data.push(0);
    }
    let d = openssl::sha::sha256(&data);
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The profile for `email` (already known to be ours).
pub fn mobileconfig(email: &str, hostname: &str, imap: &Endpoint, smtp: &Endpoint) -> String {
    // Reverse-DNS identifiers from the host name, as Apple's examples use.
    let reverse: Vec<&str> = hostname.split('.').rev().collect();
    let base = format!("{}.tanba", reverse.join("."));
    let key = |k: &str, v: String| format!("\t\t\t<key>{k}</key>\n\t\t\t{v}\n");
    let s = |v: &str| format!("<string>{}</string>", esc(v));
    let int = |v: u16| format!("<integer>{v}</integer>");
    let b = |v: bool| {
        if v {
            "<true/>".to_string()
        } else {
            "<false/>".to_string()
        }
    };
    let mut mail = String::new();
    mail.push_str(&key("EmailAccountDescription", s(email)));
    mail.push_str(&key("EmailAccountName", s(email)));
    mail.push_str(&key("EmailAccountType", s("EmailTypeIMAP")));
    mail.push_str(&key("EmailAddress", s(email)));
    mail.push_str(&key(
        "IncomingMailServerAuthentication",
        s("EmailAuthPassword"),
    ));
    mail.push_str(&key("IncomingMailServerHostName", s(&imap.host)));
    mail.push_str(&key("IncomingMailServerPortNumber", int(imap.port)));
    // Mail negotiates STARTTLS on a plain port when UseSSL is true.
    mail.push_str(&key(
        "IncomingMailServerUseSSL",
        b(matches!(
            imap.security,
            Security::Implicit | Security::StartTls
        )),
    ));
    mail.push_str(&key("IncomingMailServerUsername", s(email)));
    mail.push_str(&key(
        "OutgoingMailServerAuthentication",
        s("EmailAuthPassword"),
    ));
    mail.push_str(&key("OutgoingMailServerHostName", s(&smtp.host)));
    mail.push_str(&key("OutgoingMailServerPortNumber", int(smtp.port)));
    mail.push_str(&key(
        "OutgoingMailServerUseSSL",
        b(matches!(
            smtp.security,
            Security::Implicit | Security::StartTls
        )),
    ));
    mail.push_str(&key("OutgoingMailServerUsername", s(email)));
    mail.push_str(&key("OutgoingPasswordSameAsIncomingPassword", b(true)));
    mail.push_str(&key(
        "PayloadDescription",
        s(&format!("Mail account {email}")),
    ));
    mail.push_str(&key("PayloadDisplayName", s(email)));
    mail.push_str(&key(
        "PayloadIdentifier",
        s(&format!("{base}.mail.{email}")),
    ));
    mail.push_str(&key("PayloadType", s("com.apple.mail.managed")));
    mail.push_str(&key(
        "PayloadUUID",
        s(&stable_uuid(&[hostname, email, "mail"])),
    ));
    mail.push_str(&key("PayloadVersion", int(1)));
    mail.push_str(&key("PreventAppSheet", b(false)));
    mail.push_str(&key("PreventMove", b(false)));
    mail.push_str(&key("SMIMEEnabled", b(false)));

    let top = |k: &str, v: String| format!("\t<key>{k}</key>\n\t{v}\n");
    let mut x = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \
         \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n",
    );
    x.push_str(&format!(
        "\t<key>PayloadContent</key>\n\t<array>\n\t\t<dict>\n{mail}\t\t</dict>\n\t</array>\n"
    ));
    x.push_str(&top(
        "PayloadDescription",
        s(&format!("Mail settings for {email}")),
    ));
    x.push_str(&top("PayloadDisplayName", s(&format!("Mail: {email}"))));
    x.push_str(&top(
        "PayloadIdentifier",
        s(&format!("{base}.profile.{email}")),
    ));
    x.push_str(&top("PayloadOrganization", s(hostname)));
    x.push_str(&top("PayloadRemovalDisallowed", b(false)));
    x.push_str(&top("PayloadType", s("Configuration")));
    x.push_str(&top(
        "PayloadUUID",
        s(&stable_uuid(&[hostname, email, "profile"])),
    ));
    x.push_str(&top("PayloadVersion", int(1)));
    x.push_str("</dict>\n</plist>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable_and_well_formed() {
        let a = stable_uuid(&["h", "a@b"]);
        assert_eq!(a, stable_uuid(&["h", "a@b"]));
        assert_ne!(a, stable_uuid(&["h", "c@b"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
