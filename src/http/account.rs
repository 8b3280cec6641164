//! The self-service page at `/account` (issue 14 point 6, docs/web.md "Self-service page"): a
//! mail user signs in with their address and password, changes the password, sees the client
//! settings for their address and downloads the client add-ons. Server-rendered HTML, no script.
//!
//! - **HTTPS only.** On `http.listen` every `/account` path answers `308` to the same path on
//!   `https://<server.hostname>[:port]` (the first `http.listen_tls` address); nothing of the page
//!   is served without TLS.
//! - **Logins** go through [`Authenticator::login`](crate::auth::Authenticator::login) with
//!   `proto=http`: the same argon2 pool, credential cache, failure counts per address and per
//!   account, delays and bans as IMAP and SMTP (a guesser on the page is banned on every port, and
//!   the other way round). Changing the password asks for the current one through the same call.
//! - **Sessions** are a random 256-bit id in the cookie `tanba_session` (`Secure; HttpOnly;
//!   SameSite=Strict; Path=/account`), mapped server-side to the account, a CSRF token and two
//!   deadlines ([`IDLE`], [`LIFETIME`]). The map is process-wide (it outlives a reload) and
//!   bounded: [`MAX_SESSIONS`] in all (a login beyond it is refused with 503 after expired ones
//!   are dropped) and [`MAX_PER_ACCOUNT`] per account (the oldest goes).
//! - **CSRF**: every form carries a token (the session's; before login the value of a random
//!   `tanba_login` cookie, double-submitted), and every POST is refused with 403 when the token
//!   is missing or wrong, when `Sec-Fetch-Site` says anything but `same-origin` or `none`, or when
//!   `Origin` is not `https://<the Host of the request>` (RFC 6454 §7; Fetch's Sec-Fetch-Site).
//! - **A password change** is `tanba user passwd`'s own request
//!   ([`admin::execute_with`] with [`Request::UserPasswd`]: same length rule, same store call,
//!   hashed on the server's argon2 workers), then the account's IMAP/SMTP sessions end as after
//!   that command, and its other page sessions end too; the current one gets a new id.
//!   `tanba user passwd` and `user del` end the account's page sessions ([`end_account_sessions`]).
//! - **Headers** on every answer: CSP `default-src 'self'; frame-ancestors 'none'; form-action
//!   'self'; base-uri 'none'`, `X-Frame-Options: DENY`, `Cache-Control: no-store`,
//!   `Referrer-Policy: same-origin`, `X-Content-Type-Options: nosniff`. Every string that came
//!   from a client or the store is HTML-escaped ([`esc`]). Bodies are at most [`MAX_FORM`] bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::FormRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;

use super::{Listener, Peer, Web};
use crate::admin::{self, Request};
use crate::auth::{Outcome, Proto};
use crate::server::App;

/// A session unused this long ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Live sessions in the whole process.
pub const MAX_SESSIONS: usize = 4096;
/// Live sessions of one account (a new login ends the oldest beyond it).
pub const MAX_PER_ACCOUNT: usize = 8;
/// Largest form body (the forms hold an address, three passwords and a token).
pub const MAX_FORM: usize = 8 * 1024;
/// Longest password accepted from the form (argon2 input stays small).
const MAX_PASSWORD: usize = 1024;

const SESSION_COOKIE: &str = "tanba_session";
const LOGIN_COOKIE: &str = "tanba_login";

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/account", get(page).post(refuse_post))
        .route("/account/", get(page))
        .route("/account/login", post(login))
        .route("/account/password", post(change_password))
        .route("/account/logout", post(logout))
        .route("/account/style.css", get(style))
        .layer(DefaultBodyLimit::max(MAX_FORM))
}

// ---- sessions ----

struct Session {
    account: u64,
    email: String,
    csrf: String,
    created: Instant,
    seen: Instant,
}

impl Session {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.seen) < IDLE && now.duration_since(self.created) < LIFETIME
    }
}

/// The process-wide session map (see the module docs for its bounds).
fn sessions() -> &'static Mutex<HashMap<String, Session>> {
    static MAP: OnceLock<Mutex<HashMap<String, Session>>> = OnceLock::new();
    MAP.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<String, Session>> {
    sessions().lock().unwrap_or_else(|p| p.into_inner())
}

/// 256 random bits from the OS, URL-safe base64 (43 characters).
fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// A well-formed token as [`random_token`] makes them (anything else is never looked up).
fn token_shape(t: &str) -> bool {
    t.len() == 43
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Comparison whose time does not depend on where the strings differ.
fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Creates a session; None when [`MAX_SESSIONS`] live ones exist.
fn open_session(account: u64, email: &str) -> Option<String> {
    let now = Instant::now();
    let mut map = lock();
    if map.len() >= MAX_SESSIONS {
        map.retain(|_, s| s.live(now));
        if map.len() >= MAX_SESSIONS {
            return None;
        }
    }
    let mut mine: Vec<(Instant, String)> = map
        .iter()
        .filter(|(_, s)| s.account == account)
        .map(|(id, s)| (s.created, id.clone()))
        .collect();
    if mine.len() >= MAX_PER_ACCOUNT {
        mine.sort();
        for (_, id) in mine.iter().take(mine.len() + 1 - MAX_PER_ACCOUNT) {
            map.remove(id);
        }
    }
    let id = random_token();
    map.insert(
        id.clone(),
        Session {
            account,
            email: email.to_string(),
            csrf: random_token(),
            created: now,
            seen: now,
        },
    );
    Some(id)
}

/// The live session the request's cookie names: (id, account, email, csrf). Touches it.
/// A signed-in session as the handlers see it: (id, account id, email, CSRF token).
type SessionInfo = (String, u64, String, String);

fn current(headers: &HeaderMap) -> Option<SessionInfo> {
    let id = cookie(headers, SESSION_COOKIE)?;
    if !token_shape(id) {
        return None;
    }
    let now = Instant::now();
    let mut map = lock();
    let s = map.get_mut(id)?;
    if !s.live(now) {
        map.remove(id);
        return None;
    }
    s.seen = now;
    Some((id.to_string(), s.account, s.email.clone(), s.csrf.clone()))
}

/// Ends the page sessions of `account` except `keep`; returns how many ended. `tanba user
/// passwd` and `user del` call it through the admin socket.
pub fn end_account_sessions(account: u64, keep: Option<&str>) -> usize {
    let mut map = lock();
    let before = map.len();
    map.retain(|id, s| s.account != account || Some(id.as_str()) == keep);
    before - map.len()
}

/// Gives the session `id` a new id (after a password change), keeping its account; the new id.
fn rotate(id: &str) -> Option<String> {
    let mut map = lock();
    let mut s = map.remove(id)?;
    s.csrf = random_token();
    let new = random_token();
    map.insert(new.clone(), s);
    Some(new)
}

/// The value of cookie `name` (RFC 6265 §5.4 `Cookie: a=b; c=d`), first occurrence.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn set_cookie(name: &str, value: &str, max_age: Option<u64>) -> HeaderValue {
    let age = match max_age {
        Some(s) => format!("; Max-Age={s}"),
        None => String::new(),
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Secure; HttpOnly; SameSite=Strict; Path=/account{age}"
    ))
    .expect("ASCII cookie")
}

// ---- CSRF ----

/// Whether a POST may come from our own page (module docs, "CSRF"): `Sec-Fetch-Site` absent or
/// `same-origin`/`none`, and `Origin` absent or `https://<Host>`.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return false;
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        // A default port is left out of an origin's serialisation (RFC 6454 §6.2).
        let host = host.strip_suffix(":443").unwrap_or(&host);
        return origin == format!("https://{host}");
    }
    true
}

fn forbidden() -> Response {
    page_response(
        StatusCode::FORBIDDEN,
        "Refused",
        "<p class=\"error\">This request did not come from this page (cross-site request or \
         missing form token). Open <a href=\"/account\">the account page</a> and try again.</p>",
    )
}

// ---- handlers ----

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    old: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    new2: String,
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
}

/// A signed-in form: it carries the session's CSRF token.
trait CsrfForm {
    fn csrf(&self) -> &str;
}

impl CsrfForm for PasswordForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

impl CsrfForm for TokenForm {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// What every signed-in POST checks before anything else: HTTPS (else the redirect), a
/// same-origin request, a live session, a well-formed form carrying that session's CSRF token.
/// Ok: the session (id, account, email, csrf) and the form; Err: the response to give instead.
// The Err is the response itself, made at most once per request: boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn signed_in_post<F: CsrfForm>(
    web: &Web,
    peer: &Peer,
    uri: &Uri,
    headers: &HeaderMap,
    form: Result<Form<F>, FormRejection>,
) -> Result<(SessionInfo, F), Response> {
    if let Some(r) = to_https(web, peer, uri) {
        return Err(r);
    }
    if !same_origin(headers) {
        return Err(forbidden());
    }
    let Some(session) = current(headers) else {
        return Err(forbidden());
    };
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return Err(bad_form(e.status())),
    };
    if !same_secret(&session.3, f.csrf()) {
        return Err(forbidden());
    }
    Ok((session, f))
}

/// On `http.listen`: a redirect to the same path on the HTTPS listener (None on the TLS
/// listener). Also used by the add-on downloads (`clients.rs`).
pub(super) fn to_https(web: &Web, peer: &Peer, uri: &Uri) -> Option<Response> {
    if peer.listener == Listener::Tls {
        return None;
    }
    let app = web.app();
    let Some(base) = https_base(web, &app) else {
        return Some(
            (
                StatusCode::NOT_FOUND,
                "the account page is served over HTTPS only, and http.listen_tls is off\n",
            )
                .into_response(),
        );
    };
    let path = uri.path();
    // Only our own paths go into Location (the router matched them; a URI path holds no
    // control characters or spaces).
    let ours = path.starts_with("/account") || path.starts_with("/clients/");
    let path = if ours && path.len() <= 256 {
        path
    } else {
        "/account"
    };
    let mut r = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{base}{path}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Some(secured(r))
}

async fn page(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = to_https(&web, &peer, &uri) {
        return r;
    }
    let app = web.app();
    match current(&headers) {
        Some((_, _, email, csrf)) => account_page(&web, &app, &email, &csrf, None, StatusCode::OK),
        None => login_page(&headers, None, StatusCode::OK),
    }
}

async fn refuse_post(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
) -> Response {
    if let Some(r) = to_https(&web, &peer, &uri) {
        return r;
    }
    StatusCode::METHOD_NOT_ALLOWED.into_response()
}

async fn login(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if let Some(r) = to_https(&web, &peer, &uri) {
        return r;
    }
    // Cross-site first: a foreign form gets 403 whatever its encoding.
    if !same_origin(&headers) {
        return forbidden();
    }
    let f = match form {
        Ok(Form(f)) => f,
        Err(e) => return bad_form(e.status()),
    };
    let expected = cookie(&headers, LOGIN_COOKIE).filter(|t| token_shape(t));
    if !expected.is_some_and(|t| same_secret(t, &f.csrf)) {
        return forbidden();
    }
    let app = web.app();
    let ip = peer.addr.ip();
    let outcome = if f.password.len() > MAX_PASSWORD {
        Ok(app.auth.reject(ip, Proto::Http, &f.email).await)
    } else {
        app.auth.login(ip, Proto::Http, &f.email, &f.password).await
    };
    match outcome {
        Ok(Outcome::Ok(account)) => match open_session(account.id, &account.email) {
            Some(id) => {
                let mut r = StatusCode::SEE_OTHER.into_response();
                let h = r.headers_mut();
                h.insert(header::LOCATION, HeaderValue::from_static("/account"));
                h.append(
                    header::SET_COOKIE,
                    set_cookie(SESSION_COOKIE, &id, Some(LIFETIME.as_secs())),
                );
                h.append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, "", Some(0)));
                secured(r)
            }
            None => {
                tracing::warn!(
                    "account page: {MAX_SESSIONS} sessions are open, refusing a new one"
                );
                page_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Busy",
                    "<p class=\"error\">Too many people are signed in right now. Try again later.</p>",
                )
            }
        },
        Ok(Outcome::Failed) => {
            login_page(&headers, Some("Wrong address or password."), StatusCode::OK)
        }
        Ok(Outcome::Banned) => banned(),
        Err(e) => internal(&e),
    }
}

async fn change_password(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<PasswordForm>, FormRejection>,
) -> Response {
    let ((id, account, email, csrf), f) = match signed_in_post(&web, &peer, &uri, &headers, form) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    let app = web.app();
    let again = |msg: &str| {
        account_page(
            &web,
            &app,
            &email,
            &csrf,
            Some(Err(msg)),
            StatusCode::BAD_REQUEST,
        )
    };
    if f.new != f.new2 {
        return again("The two new passwords differ.");
    }
    if f.new == f.old {
        return again("The new password is the same as the current one.");
    }
    if f.new.len() > MAX_PASSWORD {
        return again("The new password is too long.");
    }
    let min = app.config.limits.min_password_length;
    if f.new.chars().count() < min {
        return again(&format!(
            "The new password is too short: at least {min} characters are needed."
        ));
    }
    // The current password, checked like a login (failures count towards the ban).
    let ip = peer.addr.ip();
    let checked = if f.old.len() > MAX_PASSWORD {
        Ok(app.auth.reject(ip, Proto::Http, &email).await)
    } else {
        app.auth.login(ip, Proto::Http, &email, &f.old).await
    };
    match checked {
        Ok(Outcome::Ok(a)) if a.id == account => {}
        Ok(Outcome::Ok(_)) | Ok(Outcome::Failed) => return again("The current password is wrong."),
        Ok(Outcome::Banned) => return banned(),
        Err(e) => return internal(&e),
    }
    match set_password(&app, ip, &email, f.new).await {
        Ok(Ok(())) => {}
        Ok(Err(msg)) => return again(&msg),
        Err(e) => return internal(&e),
    }
    // As after `tanba user passwd`: the account's IMAP/SMTP sessions end; so do its other page
    // sessions, and this one continues under a new id.
    let ended = app.conns.end_sessions(account);
    let pages = end_account_sessions(account, Some(&id));
    tracing::info!(
        "account page: password changed for account {account} client_ip={ip}, \
         ended {ended} mail sessions and {pages} page sessions"
    );
    let Some(new_id) = rotate(&id) else {
        return forbidden();
    };
    let csrf = lock()
        .get(&new_id)
        .map(|s| s.csrf.clone())
        .unwrap_or_default();
    let mut r = account_page(
        &web,
        &app,
        &email,
        &csrf,
        Some(Ok(
            "Your password was changed. Mail programs signed in with the old \
                 password have been signed out: enter the new one there.",
        )),
        StatusCode::OK,
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &new_id, Some(LIFETIME.as_secs())),
    );
    r
}

/// `tanba user passwd`'s request on the server's hashing workers. The outer error is an internal
/// failure; the inner one a refusal to show (the length rule).
async fn set_password(
    app: &Arc<App>,
    ip: IpAddr,
    email: &str,
    password: String,
) -> anyhow::Result<Result<(), String>> {
    let app = app.clone();
    let req = Request::UserPasswd {
        email: email.to_string(),
        password,
    };
    let resp = tokio::task::spawn_blocking(move || {
        let hash = |p: &str| app.auth.hasher().hash_blocking(p.to_string());
        admin::execute_with(&app.store, &app.config, &req, &mut std::io::sink(), &hash)
    })
    .await?;
    match resp {
        Ok(r) if r.ok => Ok(Ok(())),
        Ok(r) => Ok(Err(r.text)),
        Err(e) => {
            tracing::warn!("account page: password change refused client_ip={ip}: {e:#}");
            Ok(Err(format!("{e:#}")))
        }
    }
}

async fn logout(
    State(web): State<Web>,
    Extension(peer): Extension<Peer>,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let ((id, ..), _) = match signed_in_post(&web, &peer, &uri, &headers, form) {
        Ok(ok) => ok,
        Err(r) => return r,
    };
    lock().remove(&id);
    let mut r = StatusCode::SEE_OTHER.into_response();
    let h = r.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/account"));
    h.append(header::SET_COOKIE, set_cookie(SESSION_COOKIE, "", Some(0)));
    secured(r)
}

async fn style(State(web): State<Web>, Extension(peer): Extension<Peer>, uri: Uri) -> Response {
    if let Some(r) = to_https(&web, &peer, &uri) {
        return r;
    }
    let mut r = STYLE.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/css; charset=utf-8"),
    );
    secured(r)
}

fn banned() -> Response {
    let mut r = page_response(
        StatusCode::FORBIDDEN,
        "Refused",
        "<p class=\"error\">Too many failed logins from your address. Try again later.</p>",
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The form could not be read: the extractor's status (400, 413 beyond [`MAX_FORM`], 415 not a
/// form), with our page and headers.
fn bad_form(status: StatusCode) -> Response {
    page_response(
        status,
        "Bad request",
        "<p class=\"error\">The form could not be read.</p>",
    )
}

fn internal(e: &anyhow::Error) -> Response {
    tracing::error!("account page: {e:#}");
    page_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Error",
        "<p class=\"error\">Something went wrong on the server. Try again later.</p>",
    )
}

// ---- pages ----

use super::esc;

/// The security headers of every answer (module docs, "Headers").
fn secured(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not `no-referrer`: under it a browser serialises the origin of its own form posts as
    // `Origin: null` (Fetch, "serializing a request origin"), which [`same_origin`] refuses.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn page_response(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · Tanba mail</title><link rel=\"stylesheet\" href=\"/account/style.css\">\
         </head><body><main>\n<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = esc(title)
    );
    let mut r = (status, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secured(r)
}

fn login_page(headers: &HeaderMap, error: Option<&str>, status: StatusCode) -> Response {
    // Keep a well-formed login token the browser already has (two tabs stay valid).
    let existing = cookie(headers, LOGIN_COOKIE).filter(|t| token_shape(t));
    let token = existing.map(str::to_string).unwrap_or_else(random_token);
    let err = error
        .map(|e| format!("<p class=\"error\" role=\"alert\">{}</p>\n", esc(e)))
        .unwrap_or_default();
    let body = format!(
        "{err}<form method=\"post\" action=\"/account/login\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\n\
         <label>Email address <input type=\"email\" name=\"email\" autocomplete=\"username\" \
         required maxlength=\"254\" autofocus></label>\n\
         <label>Password <input type=\"password\" name=\"password\" \
         autocomplete=\"current-password\" required maxlength=\"{MAX_PASSWORD}\"></label>\n\
         <button type=\"submit\">Sign in</button>\n</form>\n\
         <p class=\"note\">Forgot your password? Ask your mail administrator to set a new one.</p>",
        token = esc(&token)
    );
    let mut r = page_response(status, "Sign in", &body);
    if existing.is_none() {
        r.headers_mut()
            .append(header::SET_COOKIE, set_cookie(LOGIN_COOKIE, &token, None));
    }
    r
}

/// `https://<server.hostname>[:port]` of the first `http.listen_tls` address (no port for 443).
pub fn https_base(web: &Web, app: &App) -> Option<String> {
    let port = web.port("http.listen_tls")?;
    let host = &app.config.hostname;
    Some(if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    })
}

fn account_page(
    web: &Web,
    app: &App,
    email: &str,
    csrf: &str,
    notice: Option<Result<&str, &str>>,
    status: StatusCode,
) -> Response {
    let notice = match notice {
        Some(Ok(m)) => format!("<p class=\"ok\" role=\"status\">{}</p>\n", esc(m)),
        Some(Err(m)) => format!("<p class=\"error\" role=\"alert\">{}</p>\n", esc(m)),
        None => String::new(),
    };
    let host = esc(&app.config.hostname);
    let user = esc(email);
    let mut rows = String::new();
    let settings = super::autoconfig::Settings::of(web, app);
    let incoming = settings.imap.iter().map(|e| ("Incoming mail (IMAP)", e));
    let outgoing = settings.smtp.iter().map(|e| ("Outgoing mail (SMTP)", e));
    for (what, e) in incoming.chain(outgoing) {
        let security = match e.security {
            super::autoconfig::Security::Implicit => "SSL/TLS",
            super::autoconfig::Security::StartTls => "STARTTLS",
        };
        rows.push_str(&format!(
            "<tr><td>{what}</td><td>{host}</td><td>{}</td><td>{security}</td><td>{user}</td>\
             <td>Normal password</td></tr>\n",
            e.port
        ));
    }
    let csrf = esc(csrf);
    let min = app.config.limits.min_password_length;
    let downloads = super::clients::download_links(web, app);
    let body = format!(
        "<p>Signed in as <strong>{user}</strong>.</p>\n{notice}\
         <section><h2>Change password</h2>\n\
         <form method=\"post\" action=\"/account/password\">\n\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
         <input type=\"text\" name=\"username\" value=\"{user}\" autocomplete=\"username\" hidden>\n\
         <label>Current password <input type=\"password\" name=\"old\" \
         autocomplete=\"current-password\" required></label>\n\
         <label>New password <input type=\"password\" name=\"new\" autocomplete=\"new-password\" \
         required minlength=\"{min}\" maxlength=\"{MAX_PASSWORD}\"></label>\n\
         <label>New password again <input type=\"password\" name=\"new2\" \
         autocomplete=\"new-password\" required minlength=\"{min}\" maxlength=\"{MAX_PASSWORD}\">\
         </label>\n<button type=\"submit\">Change password</button>\n</form>\n\
         <p class=\"note\">At least {min} characters. Mail programs signed in with the old \
         password are signed out.</p></section>\n\
         <section><h2>Mail program settings</h2>\n\
         <table><thead><tr><th></th><th>Server</th><th>Port</th><th>Security</th>\
         <th>User name</th><th>Authentication</th></tr></thead>\n<tbody>\n{rows}</tbody></table>\n\
         <p class=\"note\">Thunderbird and Outlook find these by themselves from your address.</p>\
         </section>\n\
         <section><h2>Signature add-ons</h2>\n{downloads}</section>\n\
         <form method=\"post\" action=\"/account/logout\" class=\"logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
         <button type=\"submit\">Sign out</button></form>"
    );
    page_response(status, "Your mail account", &body)
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
main{max-width:44rem;margin:2rem auto;padding:1.5rem 2rem;background:#fff;border-radius:8px;box-shadow:0 1px 4px #0002}
h1{font-size:1.5rem;margin-top:0}h2{font-size:1.1rem;margin-top:1.8rem}
label{display:block;margin:.6rem 0}input{display:block;width:100%;max-width:22rem;padding:.4rem;margin-top:.2rem;font-size:1rem}
button{margin-top:.8rem;padding:.45rem 1.2rem;font-size:1rem;background:#1f5fbf;color:#fff;border:0;border-radius:4px;cursor:pointer}
.logout button{background:#6b7280}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e3e5ea}
.error{background:#fdecea;color:#8a1c13;padding:.5rem .8rem;border-radius:4px}
.ok{background:#e7f5ea;color:#1b5e20;padding:.5rem .8rem;border-radius:4px}
.note{color:#5b6270;font-size:.9rem}
[hidden]{display:none!important}
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
    }

    #[test]
    fn tokens_are_256_bits_and_checked_for_shape() {
        let t = random_token();
        assert!(token_shape(&t), "{t}");
        assert_ne!(t, random_token());
        assert!(!token_shape("short"));
        assert!(!token_shape(&format!("{}=", &t[..42])));
        assert!(same_secret(&t, &t.clone()));
        assert!(!same_secret(&t, &random_token()));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        assert!(same_origin(&h(&[("host", "mail.example.kz")])));
        assert!(same_origin(&h(&[
            ("host", "mail.example.kz:2443"),
            ("origin", "https://mail.example.kz:2443"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(same_origin(&h(&[
            ("host", "mail.example.kz:443"),
            ("origin", "https://mail.example.kz"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "mail.example.kz"),
            ("origin", "https://evil.example"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "mail.example.kz"),
            ("origin", "http://mail.example.kz"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "mail.example.kz"),
            ("origin", "null")
        ])));
        assert!(!same_origin(&h(&[
            ("host", "mail.example.kz"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&h(&[
            ("host", "mail.example.kz"),
            ("sec-fetch-site", "same-site"),
        ])));
    }

    #[test]
    fn sessions_are_bounded_per_account_and_end_on_request() {
        let account = u64::MAX - 7;
        let ids: Vec<String> = (0..MAX_PER_ACCOUNT + 2)
            .map(|_| open_session(account, "x@example.test").unwrap())
            .collect();
        let live = |id: &str| lock().contains_key(id);
        assert!(!live(&ids[0]) && !live(&ids[1]));
        assert!(ids[2..].iter().all(|id| live(id)));
        let keep = ids.last().unwrap().clone();
        assert_eq!(
            end_account_sessions(account, Some(&keep)),
            MAX_PER_ACCOUNT - 1
        );
        assert!(live(&keep));
        assert_eq!(end_account_sessions(account, None), 1);
    }
}
