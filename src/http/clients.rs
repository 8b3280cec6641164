//! Add-on downloads (issue 15 points 3–4, SPEC §12, docs/web.md "Self-service page"): files of
//! `http.clients_dir` served on `http.listen_tls` (the plain listener redirects to HTTPS):
//!
//! - `GET /clients/thunderbird/tanba-eds.xpi`: `<clients_dir>/thunderbird/tanba-eds.xpi`, else
//!   `<clients_dir>/thunderbird/dist/tanba-eds.xpi` (where `clients/thunderbird/build.sh` writes
//!   it in a source tree);
//! - `GET /clients/outlook/<path>` and `/clients/shared/<path>`: the Office add-in (manifest,
//!   task pane HTML/JS/CSS, icons) and the module both add-ons share. In `.xml` files (the
//!   manifest) every `TANBA_HOST` becomes `<server.hostname>[:port]` of the first
//!   `http.listen_tls` address, so the manifest names this server's HTTPS URLs.
//!
//! A path is at most [`MAX_DEPTH`] segments of `[A-Za-z0-9._-]`, none starting with a dot, with
//! an extension of [`content_type`]'s list; anything else, and a file that is absent or larger
//! than [`MAX_FILE`], is a plain 404. These files are meant to be framed by Outlook, so they get
//! `nosniff` and `no-cache` but not the account page's `frame-ancestors 'none'`.

use std::path::{Path, PathBuf};

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::account::{https_base, to_https};
use super::esc;
use super::{Peer, Web};
use crate::server::App;

/// Largest file served (the .xpi is well below; a stray big file is not read into memory).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// Most path segments below `/clients/outlook/` or `/clients/shared/`.
pub const MAX_DEPTH: usize = 4;
/// Longest path below them.
const MAX_PATH: usize = 200;

pub const XPI_PATH: &str = "/clients/thunderbird/tanba-eds.xpi";
pub const OUTLOOK_MANIFEST_PATH: &str = "/clients/outlook/manifest.xml";

pub fn routes() -> Router<Web> {
    Router::new()
        .route(XPI_PATH, get(xpi))
        .route("/clients/outlook/{*path}", get(outlook))
        .route("/clients/shared/{*path}", get(shared))
}

/// The .xpi in `dir`, if built.
fn xpi_file(dir: &Path) -> Option<PathBuf> {
    [
        "thunderbird/tanba-eds.xpi",
        "thunderbird/dist/tanba-eds.xpi",
    ]
    .iter()
    .map(|p| dir.join(p))
    .find(|p| p.is_file())
}

/// The `Content-Type` of a file we serve, by extension; None: not served.
fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "xpi" => "application/x-xpinstall",
        "xml" => "application/xml; charset=utf-8",
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/vnd.microsoft.icon",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

/// `rel` as a safe relative path (module docs), or None.
fn safe_rel(rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.len() > MAX_PATH {
        return None;
    }
    let segs: Vec<&str> = rel.split('/').collect();
    if segs.len() > MAX_DEPTH {
        return None;
    }
    let mut p = PathBuf::new();
    for s in segs {
        let ok = !s.is_empty()
            && !s.starts_with('.')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return None;
        }
        p.push(s);
    }
    content_type(rel)?;
    Some(p)
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

/// Reads `path` (a regular file of at most [`MAX_FILE`] bytes) and answers it.
async fn serve_file(path: &Path, ctype: &'static str, subst: Option<&str>) -> Response {
    match tokio::fs::metadata(path).await {
        Ok(m) if m.is_file() && m.len() <= MAX_FILE => {}
        _ => return not_found(),
    }
    let mut data = match tokio::fs::read(path).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("http.clients_dir: cannot read {}: {e}", path.display());
            return not_found();
        }
    };
    if let Some(authority) = subst {
        data = match String::from_utf8(data) {
            Ok(text) => text.replace("TANBA_HOST", authority).into_bytes(),
            Err(e) => e.into_bytes(),
        };
    }
    let mut r = data.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

async fn xpi(State(web): State<Web>, Extension(peer): Extension<Peer>, uri: Uri) -> Response {
    if let Some(r) = to_https(&web, &peer, &uri) {
        return r;
    }
    let app = web.app();
    match xpi_file(&app.config.http.clients_dir) {
        Some(p) => serve_file(&p, "application/x-xpinstall", None).await,
        None => not_found(),
    }
}

async fn outlook(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    axum::extract::Path(rel): axum::extract::Path<String>,
) -> Response {
    files(web, peer, uri, "outlook", &rel).await
}

async fn shared(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    axum::extract::Path(rel): axum::extract::Path<String>,
) -> Response {
    files(web, peer, uri, "shared", &rel).await
}

async fn files(web: Web, peer: Peer, uri: Uri, sub: &str, rel: &str) -> Response {
    if let Some(r) = to_https(&web, &peer, &uri) {
        return r;
    }
    let Some(p) = safe_rel(rel) else {
        return not_found();
    };
    let Some(ctype) = content_type(rel) else {
        return not_found();
    };
    let app = web.app();
    let path = app.config.http.clients_dir.join(sub).join(p);
    let authority = rel
        .to_ascii_lowercase()
        .ends_with(".xml")
        .then(|| https_base(&web, &app).map(|b| b.trim_start_matches("https://").to_string()))
        .flatten();
    serve_file(&path, ctype, authority.as_deref()).await
}

/// The "Signature add-ons" section of the account page: links to what is installed.
pub fn download_links(web: &Web, app: &App) -> String {
    let dir = &app.config.http.clients_dir;
    let mut out = String::new();
    if xpi_file(dir).is_some() {
        out.push_str(&format!(
            "<p><a href=\"{XPI_PATH}\" download>Thunderbird add-on (tanba-eds.xpi)</a>: shows \
             who signed a document above the message. Open it in Thunderbird (Add-ons and \
             Themes → gear → Install Add-on From File).</p>\n"
        ));
    }
    if dir.join("outlook/manifest.xml").is_file() {
        let url = https_base(web, app)
            .map(|b| format!("{b}{OUTLOOK_MANIFEST_PATH}"))
            .unwrap_or_else(|| OUTLOOK_MANIFEST_PATH.to_string());
        out.push_str(&format!(
            "<p><a href=\"{OUTLOOK_MANIFEST_PATH}\" download>Outlook add-in (manifest.xml)</a>: \
             in Outlook, Get Add-ins → My add-ins → Add a custom add-in → From URL: \
             <code>{}</code></p>\n",
            esc(&url)
        ));
    }
    if out.is_empty() {
        out.push_str(
            "<p class=\"note\">The add-ons are not installed on this server. Your \
             administrator can install them (docs/web.md).</p>\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_of_known_types() {
        assert!(safe_rel("manifest.xml").is_some());
        assert!(safe_rel("taskpane/taskpane.js").is_some());
        assert!(safe_rel("icons/icon-64.png").is_some());
        for bad in [
            "",
            "../secret.xml",
            "a/../../b.xml",
            ".hidden.js",
            "a//b.js",
            "/etc/passwd.txt",
            "a\\b.js",
            "x.sh",
            "noext",
            "a/b/c/d/e.js",
            "%2e%2e/x.js",
        ] {
            assert!(safe_rel(bad).is_none(), "{bad}");
        }
        assert!(safe_rel(&format!("{}.js", "a".repeat(300))).is_none());
    }
}
