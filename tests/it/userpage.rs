//! The self-service page (issue 14 point 6) and the add-on downloads and Thunderbird policy
//! (issue 15 points 3–4), driven with curl (a cookie jar, TLS against the server's certificate)
//! against the real server; passwords checked afterwards over IMAP.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::imap::Imap;
use crate::support::*;

const ALICE: &str = "alice@example.test";
const OLD_PW: &str = "alice-old-password";
const NEW_PW: &str = "alice-new-password-2";
const HOST: &str = "mail.example.test";

/// A response as curl printed it (`-i`): status, header lines (names lower-case), body.
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "set-cookie")
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of the hidden `csrf` field of the first form.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

/// curl with a cookie jar, from a chosen loopback source address.
struct Browser<'a> {
    srv: &'a TestServer,
    jar: PathBuf,
    source: &'a str,
}

impl<'a> Browser<'a> {
    fn new(srv: &'a TestServer, name: &str, source: &'a str) -> Browser<'a> {
        Browser {
            srv,
            jar: srv.dir.path().join(format!("cookies-{name}.txt")),
            source,
        }
    }

    /// One request over HTTPS (`https://mail.example.test:<port>`); None when curl could not
    /// get a response (connection refused or closed).
    fn try_request(
        &self,
        method: &str,
        path: &str,
        form: &[(&str, &str)],
        headers: &[&str],
    ) -> Option<Resp> {
        let port = self.srv.https.expect("http.listen_tls").port();
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-i",
            "--path-as-is",
            "--max-time",
            "60",
            "--interface",
            self.source,
        ])
        .arg("--cacert")
        .arg(self.srv.cert_pem())
        .arg("--resolve")
        .arg(format!("{HOST}:{port}:127.0.0.1"))
        .arg("-b")
        .arg(&self.jar)
        .arg("-c")
        .arg(&self.jar)
        .args(["-X", method]);
        for (k, v) in form {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        for h in headers {
            cmd.arg("-H").arg(h);
        }
        cmd.arg(format!("https://{HOST}:{port}{path}"));
        let out = cmd.output().expect("curl");
        if !out.status.success() {
            return None;
        }
        Some(parse(&String::from_utf8_lossy(&out.stdout)))
    }

    fn request(&self, method: &str, path: &str, form: &[(&str, &str)], headers: &[&str]) -> Resp {
        self.try_request(method, path, form, headers)
            .unwrap_or_else(|| panic!("curl {method} {path} failed; log:\n{}", self.srv.log()))
    }

    fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], &[])
    }

    /// Signs in; asserts the redirect to the account page.
    fn login(&self, email: &str, password: &str) -> Resp {
        let form = self.get("/account");
        let csrf = form.csrf();
        let r = self.request(
            "POST",
            "/account/login",
            &[("email", email), ("password", password), ("csrf", &csrf)],
            &[],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("/account"));
        let page = self.get("/account");
        assert!(page.body.contains("Signed in as"), "{}", page.body);
        page
    }
}

fn parse(mut out: &str) -> Resp {
    // An interim `100 Continue` (curl may send `Expect: 100-continue` with a large body).
    while out.starts_with("HTTP/1.1 100") {
        out = out
            .split_once("\r\n\r\n")
            .map(|(_, rest)| rest)
            .unwrap_or("");
    }
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {out:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

fn server(extra: &[(&str, &str)]) -> TestServer {
    let srv = TestServer::start_with(extra);
    srv.add_user(ALICE, OLD_PW);
    srv
}

/// IMAP LOGIN over implicit TLS: the tagged reply.
fn imap_login(srv: &TestServer, password: &str) -> String {
    let mut c = Imap::tls(srv.imaps, &srv.cert_pem());
    c.cmd(&format!("LOGIN {ALICE} \"{password}\"")).1
}

fn assert_password_is(srv: &TestServer, right: &str, wrong: &str) {
    let t = imap_login(srv, right);
    assert!(t.contains(" OK "), "{right}: {t}");
    let t = imap_login(srv, wrong);
    assert!(t.contains(" NO "), "{wrong}: {t}");
}

fn assert_page_headers(r: &Resp) {
    let csp = r.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    // Not no-referrer: under it browsers send `Origin: null` with the page's own form posts.
    assert_eq!(r.header("referrer-policy"), Some("same-origin"));
}

#[test]
fn userpage_password_change_then_imap_takes_the_new_one_and_sessions_end() {
    let srv = server(&[]);
    // A mail program signed in with the old password.
    let mut imap = Imap::login(&srv, ALICE, OLD_PW);

    let b = Browser::new(&srv, "alice", "127.0.0.1");
    let form = b.get("/account");
    assert_eq!(form.status, 200);
    assert!(
        form.body.contains("action=\"/account/login\""),
        "{}",
        form.body
    );
    assert_page_headers(&form);
    let login_cookie = form.cookies().join("\n");
    assert!(login_cookie.starts_with("tanba_login="), "{login_cookie}");

    let csrf = form.csrf();
    let r = b.request(
        "POST",
        "/account/login",
        &[("email", ALICE), ("password", OLD_PW), ("csrf", &csrf)],
        &[],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let session = r
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("tanba_session="))
        .expect("session cookie")
        .to_string();
    let id = &session["tanba_session=".len()..session.find(';').unwrap()];
    assert_eq!(id.len(), 43, "256 bits in URL-safe base64: {session}");
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/account"] {
        assert!(session.split("; ").any(|a| a == attr), "{attr}: {session}");
    }

    // The account page: the address, the client settings with the ports actually bound.
    let page = b.get("/account");
    assert_eq!(page.status, 200);
    assert_page_headers(&page);
    assert!(page
        .body
        .contains(&format!("Signed in as <strong>{ALICE}</strong>")));
    for port in [
        srv.imaps.port(),
        srv.imap.port(),
        srv.submissions.port(),
        srv.submission.port(),
    ] {
        assert!(
            page.body
                .contains(&format!("<td>{HOST}</td><td>{port}</td>")),
            "port {port}: {}",
            page.body
        );
    }

    // Mismatched new passwords and a wrong current password change nothing.
    let csrf = page.csrf();
    let r = b.request(
        "POST",
        "/account/password",
        &[
            ("old", OLD_PW),
            ("new", NEW_PW),
            ("new2", "something-else-1"),
            ("csrf", &csrf),
        ],
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("The two new passwords differ."),
        "{}",
        r.body
    );
    let r = b.request(
        "POST",
        "/account/password",
        &[
            ("old", "not-the-password"),
            ("new", NEW_PW),
            ("new2", NEW_PW),
            ("csrf", &csrf),
        ],
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body.contains("The current password is wrong."),
        "{}",
        r.body
    );
    let r = b.request(
        "POST",
        "/account/password",
        &[
            ("old", OLD_PW),
            ("new", "short-pw"),
            ("new2", "short-pw"),
            ("csrf", &csrf),
        ],
        &[],
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("at least 10 characters"), "{}", r.body);
    assert_password_is(&srv, OLD_PW, NEW_PW);

    // Same-origin headers as a browser sends them are accepted.
    let port = srv.https.unwrap().port();
    let origin = format!("Origin: https://{HOST}:{port}");
    let r = b.request(
        "POST",
        "/account/password",
        &[
            ("old", OLD_PW),
            ("new", NEW_PW),
            ("new2", NEW_PW),
            ("csrf", &csrf),
        ],
        &[&origin, "Sec-Fetch-Site: same-origin"],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Your password was changed."), "{}", r.body);
    // The session continues under a new id.
    assert!(r
        .cookies()
        .iter()
        .any(|c| c.starts_with("tanba_session=") && !c.contains(id)));

    // As after `tanba user passwd`: the old session is ended, the new password works, the old
    // one no longer does.
    assert!(
        imap.closed(),
        "the IMAP session of the old password still runs"
    );
    assert_password_is(&srv, NEW_PW, OLD_PW);
    assert!(srv.log().contains("proto=http user=\"alice@example.test\""));
    assert!(!srv.log().contains(NEW_PW) && !srv.log().contains(OLD_PW));

    // `tanba user passwd` in turn ends the page's sessions.
    let page = b.get("/account");
    assert!(page.body.contains("Signed in as"), "{}", page.body);
    let out = srv.tanba(
        &["user", "passwd", ALICE, "--password-stdin"],
        Some("operator-set-password\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let page = b.get("/account");
    assert!(
        page.body.contains("action=\"/account/login\""),
        "{}",
        page.body
    );
}

#[test]
fn userpage_refuses_cross_site_posts_and_posts_without_the_token() {
    let srv = server(&[]);
    let b = Browser::new(&srv, "alice", "127.0.0.1");

    // Login: without the token, with a foreign Origin, cross-site fetch metadata.
    let csrf = b.get("/account").csrf();
    for (form, headers) in [
        (vec![("email", ALICE), ("password", OLD_PW)], vec![]),
        (
            vec![
                ("email", ALICE),
                ("password", OLD_PW),
                ("csrf", "x".repeat(43).as_str()),
            ],
            vec![],
        ),
        (
            vec![
                ("email", ALICE),
                ("password", OLD_PW),
                ("csrf", csrf.as_str()),
            ],
            vec!["Origin: https://evil.example"],
        ),
        (
            vec![
                ("email", ALICE),
                ("password", OLD_PW),
                ("csrf", csrf.as_str()),
            ],
            vec!["Sec-Fetch-Site: cross-site"],
        ),
    ] {
        let r = b.request("POST", "/account/login", &form, &headers);
        assert_eq!(r.status, 403, "{headers:?}: {}", r.body);
        assert!(r.cookies().iter().all(|c| !c.starts_with("tanba_session=")));
    }
    // Nothing was even tried: no login line for those.
    assert!(!srv.log().contains("proto=http"), "{}", srv.log());

    let csrf = b.login(ALICE, OLD_PW).csrf();
    let r = b.request("POST", "/account/password", &change(""), &[]);
    assert_eq!(r.status, 403);
    let without: Vec<_> = change("").into_iter().take(3).collect();
    let r = b.request("POST", "/account/password", &without, &[]);
    assert_eq!(r.status, 403);
    let r = b.request("POST", "/account/password", &change(&"A".repeat(43)), &[]);
    assert_eq!(r.status, 403);
    let r = b.request(
        "POST",
        "/account/password",
        &change(&csrf),
        &["Origin: https://evil.example"],
    );
    assert_eq!(r.status, 403);
    let r = b.request(
        "POST",
        "/account/password",
        &change(&csrf),
        &["Sec-Fetch-Site: same-site"],
    );
    assert_eq!(r.status, 403);
    // A cross-site form in another encoding: 403 too, before the body is read.
    let r = b.request(
        "POST",
        "/account/password",
        &change(&csrf),
        &["Origin: https://evil.example", "Content-Type: text/plain"],
    );
    assert_eq!(r.status, 403);
    // A body beyond the form bound (8 KiB) is not read.
    let big = "x".repeat(9 * 1024);
    let mut form = change(&csrf);
    form.push(("pad", big.as_str()));
    let r = b.request("POST", "/account/password", &form, &[]);
    assert_eq!(r.status, 413);
    // Another user's browser (no session) with a token it saw: refused too.
    let other = Browser::new(&srv, "mallory", "127.0.0.1");
    let r = other.request("POST", "/account/password", &change(&csrf), &[]);
    assert_eq!(r.status, 403);

    assert_password_is(&srv, OLD_PW, NEW_PW);
    // The session and its token still work for the real page.
    let r = b.request("POST", "/account/password", &change(&csrf), &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_password_is(&srv, NEW_PW, OLD_PW);
}

#[test]
fn userpage_guessing_bans_the_address_on_every_port() {
    let srv = server(&[
        ("limits", "auth_failures = 3"),
        ("limits", "ban_time = \"60s\""),
    ]);
    let guesser = Browser::new(&srv, "guesser", "127.0.0.7");
    for _ in 0..3 {
        let csrf = guesser.get("/account").csrf();
        let r = guesser.request(
            "POST",
            "/account/login",
            &[
                ("email", ALICE),
                ("password", "guess-password"),
                ("csrf", &csrf),
            ],
            &[],
        );
        assert_eq!(r.status, 200);
        assert!(r.body.contains("Wrong address or password."), "{}", r.body);
    }
    let log = srv.log();
    assert_eq!(
        log.matches("auth failure client_ip=127.0.0.7 proto=http user=\"alice@example.test\"")
            .count(),
        3,
        "{log}"
    );
    assert!(
        log.contains("auth ban client_ip=127.0.0.7 failures=3 ban_time=60s"),
        "{log}"
    );
    // Banned like after IMAP guessing: the page and IMAPS close new connections from that
    // address, even for the right password.
    assert!(
        guesser.try_request("GET", "/account", &[], &[]).is_none(),
        "the page still answers a banned address"
    );
    let mut tcp = {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind("127.0.0.7:0".parse().unwrap()).unwrap();
            sock.connect(srv.imap).await.unwrap().into_std().unwrap()
        })
    };
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut tcp), &mut line).unwrap();
    assert!(line.starts_with("* BYE Too many failed logins"), "{line}");

    // Another address is not affected.
    Browser::new(&srv, "alice", "127.0.0.8").login(ALICE, OLD_PW);
}

#[test]
fn userpage_is_not_served_on_the_plain_listener() {
    let srv = server(&[]);
    let http = srv.http.expect("http.listen");
    let https_port = srv.https.unwrap().port();
    for (method, path) in [
        ("GET", "/account"),
        ("POST", "/account/login"),
        ("GET", "/clients/thunderbird/tanba-eds.xpi"),
    ] {
        let out = Command::new("curl")
            .args(["-sS", "-i", "-X", method])
            .args(if method == "POST" {
                vec![
                    "--data-urlencode",
                    "email=alice@example.test",
                    "--data-urlencode",
                    "password=alice-old-password",
                ]
            } else {
                vec![]
            })
            .arg(format!("http://{http}{path}"))
            .output()
            .expect("curl");
        let r = parse(&String::from_utf8_lossy(&out.stdout));
        assert_eq!(r.status, 308, "{method} {path}: {}", r.body);
        assert_eq!(
            r.header("location"),
            Some(format!("https://{HOST}:{https_port}{path}").as_str())
        );
        assert!(
            !r.body.contains("password") && !r.body.contains("<form"),
            "{}",
            r.body
        );
        assert!(r.cookies().is_empty());
    }
    assert!(
        !srv.log().contains("proto=http"),
        "a login was tried over plain HTTP"
    );
}

/// A clients_dir as an install has it: the built .xpi and the Outlook add-in.
fn clients_dir(root: &Path) -> PathBuf {
    let dir = root.join("clients");
    std::fs::create_dir_all(dir.join("thunderbird/dist")).unwrap();
    std::fs::create_dir_all(dir.join("outlook/taskpane")).unwrap();
    std::fs::write(
        dir.join("thunderbird/dist/tanba-eds.xpi"),
        b"PK\x03\x04 xpi bytes",
    )
    .unwrap();
    std::fs::write(
        dir.join("outlook/manifest.xml"),
        "<OfficeApp><SourceLocation DefaultValue=\"https://TANBA_HOST/clients/outlook/taskpane/taskpane.html\"/></OfficeApp>\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("outlook/taskpane/taskpane.js"),
        "// TANBA_HOST stays\n",
    )
    .unwrap();
    std::fs::write(dir.join("outlook/secret.sh"), "#!/bin/sh\n").unwrap();
    dir
}

#[test]
fn clients_addons_are_downloaded_over_https_with_this_servers_url() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = clients_dir(tmp.path());
    let line = format!("clients_dir = \"{}\"", dir.display());
    let srv = server(&[("http", &line)]);
    let b = Browser::new(&srv, "dl", "127.0.0.1");
    let port = srv.https.unwrap().port();

    let r = b.get("/clients/thunderbird/tanba-eds.xpi");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-xpinstall"));
    assert_eq!(r.body, "PK\u{3}\u{4} xpi bytes");

    let r = b.get("/clients/outlook/manifest.xml");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/xml"));
    assert!(
        r.body.contains(&format!(
            "DefaultValue=\"https://{HOST}:{port}/clients/outlook/taskpane/taskpane.html\""
        )),
        "{}",
        r.body
    );
    let r = b.get("/clients/outlook/taskpane/taskpane.js");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "// TANBA_HOST stays\n");
    for bad in [
        "/clients/outlook/secret.sh",
        "/clients/outlook/../../tanba.toml",
        "/clients/outlook/%2e%2e/thunderbird/dist/tanba-eds.xpi",
        "/clients/outlook/missing.xml",
        "/clients/shared/eds.js",
    ] {
        assert_eq!(b.get(bad).status, 404, "{bad}");
    }

    // The account page links both.
    let page = b.login(ALICE, OLD_PW);
    assert!(
        page.body
            .contains("href=\"/clients/thunderbird/tanba-eds.xpi\""),
        "{}",
        page.body
    );
    assert!(page.body.contains(&format!(
        "https://{HOST}:{port}/clients/outlook/manifest.xml"
    )));

    // Absent files: a clean 404, and the page says the add-ons are not installed.
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(b.get("/clients/thunderbird/tanba-eds.xpi").status, 404);
    assert_eq!(b.get("/clients/outlook/manifest.xml").status, 404);
    assert!(b
        .get("/account")
        .body
        .contains("The add-ons are not installed"));
}

#[test]
fn clients_policy_thunderbird_names_this_servers_xpi_and_the_preferences() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tanba.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nhostname = \"mail.example.kz\"\ndomains = [\"example.kz\"]\n\
             data_dir = \"{}/data\"\n[http]\nlisten_tls = [\"0.0.0.0:443\"]\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let out = tanba_with_config(&cfg, &["clients", "policy", "thunderbird"], None);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let ext = &v["policies"]["ExtensionSettings"]["eds@tanba"];
    assert_eq!(ext["installation_mode"], "force_installed");
    assert_eq!(
        ext["install_url"],
        "https://mail.example.kz/clients/thunderbird/tanba-eds.xpi"
    );
    let managed = &v["policies"]["3rdparty"]["Extensions"]["eds@tanba"];
    assert_eq!(
        managed["trustedServers"],
        serde_json::json!(["mail.example.kz"])
    );
    assert_eq!(managed["domains"], serde_json::json!(["example.kz"]));
    let prefs = &v["policies"]["Preferences"];
    let headers = prefs["mailnews.headers.extraExpandedHeaders"]["Value"]
        .as_str()
        .unwrap();
    for h in [
        "X-EDS-Summary",
        "X-EDS-Signer-1-Name",
        "X-EDS-Signer-1-IIN",
        "X-EDS-Signer-1-Organization",
        "X-EDS-Signer-1-BIN",
        "X-EDS-Signer-1-Signing-Time",
    ] {
        assert!(headers.split(' ').any(|x| x == h), "{h}: {headers}");
    }
    for key in ["$edsvalid", "$edsinvalid"] {
        assert_eq!(prefs[format!("mailnews.tags.{key}.key")]["Value"], key);
        assert!(prefs[format!("mailnews.tags.{key}.tag")]["Value"].is_string());
        assert!(prefs[format!("mailnews.tags.{key}.color")]["Value"]
            .as_str()
            .unwrap()
            .starts_with('#'));
    }

    // A non-default port is part of the URL; no HTTPS listener is an error naming the key.
    std::fs::write(
        &cfg,
        "[server]\nhostname = \"mail.example.kz\"\n[http]\nlisten_tls = [\"127.0.0.1:8443\"]\n",
    )
    .unwrap();
    let out = tanba_with_config(&cfg, &["clients", "policy", "thunderbird"], None);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        v["policies"]["ExtensionSettings"]["eds@tanba"]["install_url"],
        "https://mail.example.kz:8443/clients/thunderbird/tanba-eds.xpi"
    );
    std::fs::write(
        &cfg,
        "[server]\nhostname = \"mail.example.kz\"\n[http]\nlisten_tls = []\n",
    )
    .unwrap();
    let out = tanba_with_config(&cfg, &["clients", "policy", "thunderbird"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http.listen_tls"));
}

fn change(csrf: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("old", OLD_PW),
        ("new", NEW_PW),
        ("new2", NEW_PW),
        ("csrf", csrf),
    ]
}
