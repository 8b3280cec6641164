//! The web endpoint (issue 14, SPEC §11): the listeners, and the documents clients read.

use std::io::{Read, Write};

use crate::support::tls::Stream;
use crate::support::TestServer;

/// A response as read off the wire.
pub struct Response {
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (a whole HTTP/1.1 request, which should say `Connection: close`) and reads
/// the response to the end of the connection.
pub fn exchange(mut s: Stream, request: &[u8]) -> Response {
    s.write_all(request).unwrap();
    s.flush().unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse(&raw)
}

fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..eol])
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        b = &b[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// `GET path` with `Host: host` over plain HTTP.
pub fn get(addr: std::net::SocketAddr, host: &str, path: &str) -> Response {
    exchange(
        Stream::connect(addr),
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// `GET path` over TLS, trusting the server's self-signed certificate for `mail.example.test`.
pub fn get_tls(srv: &TestServer, host: &str, path: &str) -> Response {
    let mut s = Stream::connect(srv.https.expect("http.listen_tls"));
    s.start_tls(&srv.cert_pem());
    exchange(
        s,
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn healthz_on_plain_tls_and_metrics_listeners() {
    let srv = TestServer::start();
    let r = get(
        srv.http.expect("http.listen"),
        "mail.example.test",
        "/healthz",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let r = get_tls(&srv, "mail.example.test", "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(srv.metrics.expect("http.metrics"), "localhost", "/healthz");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = get(srv.http.unwrap(), "mail.example.test", "/nothing-here");
    assert_eq!(r.status, 404);
}

#[test]
fn oversized_head_is_refused() {
    let srv = TestServer::start();
    // A head beyond 16 KiB: 431 (hyper's bound), not a buffer that grows with the client.
    let big = "a".repeat(20 * 1024);
    let r = exchange(
        Stream::connect(srv.http.unwrap()),
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 431);
    // The server still answers afterwards.
    let r = get(srv.http.unwrap(), "x", "/healthz");
    assert_eq!(r.status, 200);
}

/// A server for two domains, `example.test` and `second.test`, named `mail.example.test`.
fn two_domains() -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let toml = crate::support::base_toml(dir.path()).replace(
        "domains = [\"example.test\"]",
        "domains = [\"example.test\", \"Second.Test\"]",
    );
    TestServer::start_toml(dir, &toml)
}

/// Parses `body` with Python's standard library as the client would see it (`kind`:
/// thunderbird, pox, plist) and returns the fields as JSON.
fn py_fields(srv: &TestServer, kind: &str, body: &[u8]) -> serde_json::Value {
    let file = srv.dir.path().join(format!("doc-{kind}"));
    std::fs::write(&file, body).unwrap();
    let out = crate::support::python(PY_FIELDS, &[kind, file.to_str().unwrap()]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

const PY_FIELDS: &str = r#"
import json, plistlib, sys
import xml.etree.ElementTree as ET
kind, path = sys.argv[1], sys.argv[2]
data = open(path, 'rb').read()
if kind == 'thunderbird':
    # Mozilla wiki, Thunderbird:Autoconfiguration:ConfigFileFormat
    root = ET.fromstring(data)
    assert root.tag == 'clientConfig', root.tag
    p = root.find('emailProvider')
    def server(e):
        return {'type': e.get('type'), 'hostname': e.findtext('hostname'),
                'port': int(e.findtext('port')), 'socketType': e.findtext('socketType'),
                'authentication': e.findtext('authentication'), 'username': e.findtext('username')}
    out = {'version': root.get('version'), 'id': p.get('id'),
           'domains': [d.text for d in p.findall('domain')],
           'incoming': [server(e) for e in p.findall('incomingServer')],
           'outgoing': [server(e) for e in p.findall('outgoingServer')]}
elif kind == 'pox':
    # [MS-OXDSCLI] 2.2.4: Autodiscover/Response/Account/Protocol
    ns = {'a': 'http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006',
          'r': 'http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a'}
    root = ET.fromstring(data)
    acc = root.find('r:Response/r:Account', ns)
    protos = []
    for p in acc.findall('r:Protocol', ns):
        protos.append({c.tag.split('}')[1]: c.text for c in p})
    out = {'root': root.tag, 'AccountType': acc.findtext('r:AccountType', namespaces=ns),
           'Action': acc.findtext('r:Action', namespaces=ns), 'Protocol': protos}
elif kind == 'plist':
    out = plistlib.loads(data)
print(json.dumps(out))
"#;

fn thunderbird_doc(imap: &[(u16, &str)], smtp: &[(u16, &str)], domain: &str) -> serde_json::Value {
    let server = |kind: &str, port: u16, socket: &str| {
        serde_json::json!({
            "type": kind, "hostname": "mail.example.test", "port": port, "socketType": socket,
            "authentication": "password-cleartext", "username": "%EMAILADDRESS%",
        })
    };
    serde_json::json!({
        "version": "1.1", "id": domain, "domains": [domain],
        "incoming": imap.iter().map(|(p, s)| server("imap", *p, s)).collect::<Vec<_>>(),
        "outgoing": smtp.iter().map(|(p, s)| server("smtp", *p, s)).collect::<Vec<_>>(),
    })
}

#[test]
fn thunderbird_autoconfig_for_each_domain() {
    let srv = two_domains();
    let http = srv.http.unwrap();
    for domain in ["example.test", "second.test"] {
        let expected = thunderbird_doc(
            &[(srv.imaps.port(), "SSL"), (srv.imap.port(), "STARTTLS")],
            &[
                (srv.submissions.port(), "SSL"),
                (srv.submission.port(), "STARTTLS"),
            ],
            domain,
        );
        // What Thunderbird asks first (autoconfig.<domain>), then the well-known URL over TLS.
        let r = get(
            http,
            &format!("autoconfig.{domain}"),
            &format!("/mail/config-v1.1.xml?emailaddress=anna%40{domain}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("content-type").unwrap().contains("xml"));
        assert_eq!(py_fields(&srv, "thunderbird", &r.body), expected);
        let r = get_tls(
            &srv,
            domain,
            &format!("/.well-known/autoconfig/mail/config-v1.1.xml?emailaddress=Anna@{domain}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(py_fields(&srv, "thunderbird", &r.body), expected);
        // Without the address, the autoconfig.<domain> host names the domain.
        let r = get(
            http,
            &format!("autoconfig.{domain}"),
            "/mail/config-v1.1.xml",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(py_fields(&srv, "thunderbird", &r.body), expected);
    }
    // Domains we do not serve, and what is not an address, get 404.
    for q in [
        "emailaddress=anna%40other.test",
        "emailaddress=a%3Cb%3E%40example.test",
        "emailaddress=example.test",
    ] {
        let r = get(
            http,
            "autoconfig.example.test",
            &format!("/mail/config-v1.1.xml?{q}"),
        );
        assert_eq!(r.status, 404, "{q}");
    }
    let r = get(http, "autoconfig.other.test", "/mail/config-v1.1.xml");
    assert_eq!(r.status, 404);
}

fn pox_request(email: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n\
         <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\
         <Request><EMailAddress>{email}</EMailAddress>\
         <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>\
         </Request></Autodiscover>"
    )
}

fn post(s: Stream, host: &str, path: &str, body: &str) -> Response {
    exchange(
        s,
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
}

#[test]
fn outlook_autodiscover_for_each_domain() {
    let srv = two_domains();
    let http = srv.http.unwrap();
    for domain in ["example.test", "second.test"] {
        let email = format!("boris@{domain}");
        let expected = serde_json::json!({
            "root": "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}Autodiscover",
            "AccountType": "email", "Action": "settings",
            "Protocol": [
                {"Type": "IMAP", "Server": "mail.example.test", "Port": srv.imaps.port().to_string(),
                 "DomainRequired": "off", "LoginName": email, "SPA": "off", "SSL": "on",
                 "Encryption": "SSL", "AuthRequired": "on"},
                {"Type": "SMTP", "Server": "mail.example.test",
                 "Port": srv.submissions.port().to_string(), "DomainRequired": "off",
                 "LoginName": email, "SPA": "off", "SSL": "on", "Encryption": "SSL",
                 "AuthRequired": "on", "UsePOPAuth": "off", "SMTPLast": "off"},
            ],
        });
        // Outlook's spelling of the path, over TLS (autodiscover.<domain> in production).
        let mut s = Stream::connect(srv.https.unwrap());
        s.start_tls(&srv.cert_pem());
        let r = post(
            s,
            &format!("autodiscover.{domain}"),
            "/Autodiscover/Autodiscover.xml",
            &pox_request(&email),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(py_fields(&srv, "pox", &r.body), expected);
        let r = post(
            Stream::connect(http),
            domain,
            "/autodiscover/autodiscover.xml",
            &pox_request(&email.to_uppercase()),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(py_fields(&srv, "pox", &r.body), expected);

        // JSON v2, both forms: AutodiscoverV1 sends Outlook on to the POX URL.
        let url = format!(
            "https://mail.example.test:{}/autodiscover/autodiscover.xml",
            srv.https.unwrap().port()
        );
        for path in [
            format!("/autodiscover/autodiscover.json?Email={email}&Protocol=AutodiscoverV1"),
            format!("/autodiscover/autodiscover.json/v1.0/{email}?Protocol=AutodiscoverV1"),
        ] {
            let r = get(http, &format!("autodiscover.{domain}"), &path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(
                v,
                serde_json::json!({"Protocol": "AutodiscoverV1", "Url": url}),
                "{path}"
            );
        }
        let r = get(
            http,
            domain,
            &format!("/autodiscover/autodiscover.json?Email={email}&Protocol=ActiveSync"),
        );
        assert_eq!(r.status, 400);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["ErrorCode"], "InvalidProtocol");
    }
    // Unknown domains: 404 in both protocols; a body that is not XML: 400.
    let r = post(
        Stream::connect(http),
        "x",
        "/autodiscover/autodiscover.xml",
        &pox_request("boris@other.test"),
    );
    assert_eq!(r.status, 404);
    let r = get(
        http,
        "x",
        "/autodiscover/autodiscover.json?Email=boris@other.test&Protocol=AutodiscoverV1",
    );
    assert_eq!(r.status, 404);
    let r = post(
        Stream::connect(http),
        "x",
        "/autodiscover/autodiscover.xml",
        "<Autodiscover></Request>",
    );
    assert_eq!(r.status, 400);
    // A body beyond the bound: 413, not read into memory whole.
    let big = format!("<x>{}</x>", "a".repeat(100 * 1024));
    let r = post(
        Stream::connect(http),
        "x",
        "/autodiscover/autodiscover.xml",
        &big,
    );
    assert_eq!(r.status, 413);
}

#[test]
fn apple_profile_for_each_domain() {
    let srv = two_domains();
    for domain in ["example.test", "second.test"] {
        let email = format!("vera@{domain}");
        for path in [
            format!("/apple/{email}.mobileconfig"),
            format!("/apple/mail.mobileconfig?email={email}"),
        ] {
            let r = get_tls(&srv, "mail.example.test", &path);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(
                r.header("content-type"),
                Some("application/x-apple-aspen-config")
            );
            let p = py_fields(&srv, "plist", &r.body);
            // Apple's Configuration Profile Reference: the top level and the Mail payload.
            assert_eq!(p["PayloadType"], "Configuration");
            assert_eq!(p["PayloadVersion"], 1);
            assert_eq!(p["PayloadRemovalDisallowed"], false);
            let mail = &p["PayloadContent"][0];
            assert_eq!(p["PayloadContent"].as_array().unwrap().len(), 1);
            assert_eq!(mail["PayloadType"], "com.apple.mail.managed");
            assert_eq!(mail["EmailAccountType"], "EmailTypeIMAP");
            assert_eq!(mail["EmailAddress"], email.as_str());
            assert_eq!(mail["IncomingMailServerHostName"], "mail.example.test");
            assert_eq!(mail["IncomingMailServerPortNumber"], srv.imaps.port());
            assert_eq!(mail["IncomingMailServerUseSSL"], true);
            assert_eq!(mail["IncomingMailServerUsername"], email.as_str());
            assert_eq!(
                mail["IncomingMailServerAuthentication"],
                "EmailAuthPassword"
            );
            assert_eq!(mail["OutgoingMailServerHostName"], "mail.example.test");
            assert_eq!(mail["OutgoingMailServerPortNumber"], srv.submissions.port());
            assert_eq!(mail["OutgoingMailServerUseSSL"], true);
            assert_eq!(mail["OutgoingMailServerUsername"], email.as_str());
            assert_eq!(
                mail["OutgoingMailServerAuthentication"],
                "EmailAuthPassword"
            );
            assert_eq!(mail["OutgoingPasswordSameAsIncomingPassword"], true);
            assert_ne!(mail["PayloadUUID"], p["PayloadUUID"]);
            assert!(mail.get("IncomingPassword").is_none());
        }
    }
    let r = get_tls(
        &srv,
        "mail.example.test",
        "/apple/vera@other.test.mobileconfig",
    );
    assert_eq!(r.status, 404);
}
