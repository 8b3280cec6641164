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

#[test]
fn mta_sts_policy_on_the_policy_host_only() {
    let srv = two_domains();
    // RFC 8461 §3.3: https://mta-sts.<domain>/.well-known/mta-sts.txt, text/plain.
    for domain in ["example.test", "second.test"] {
        let r = get_tls(
            &srv,
            &format!("mta-sts.{domain}"),
            "/.well-known/mta-sts.txt",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        // §3.2: the fields senders read; defaults mode testing, max_age one week.
        assert_eq!(
            r.text(),
            "version: STSv1\r\nmode: testing\r\nmx: mail.example.test\r\nmax_age: 604800\r\n"
        );
    }
    for host in ["mta-sts.other.test", "mail.example.test", "example.test"] {
        let r = get_tls(&srv, host, "/.well-known/mta-sts.txt");
        assert_eq!(r.status, 404, "{host}");
    }
    // The `_mta-sts` id `tanba dns` prints is a hash of exactly the served policy.
    let served = get_tls(&srv, "mta-sts.example.test", "/.well-known/mta-sts.txt").body;
    let out = srv.tanba(&["dns", "example.test"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zone = String::from_utf8(out.stdout).unwrap();
    let id: String = openssl::sha::sha256(&served)[..10]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        zone.contains(&format!(
            "_mta-sts.example.test. 3600 IN TXT \"v=STSv1; id={id}\""
        )),
        "{zone}"
    );
}

/// A config for `tanba dns` (never served, so fixed ports are fine) with a DKIM key for
/// `example.test` made by `tanba dkim generate`; returns the dir, the config and the key.
fn dns_config(extra: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tanba.toml");
    let base = format!(
        "[server]\nhostname = \"mail.example.test\"\ndomains = [\"example.test\", \"second.test\"]\n\
         data_dir = \"{d}/data\"\n\n[smtp]\nmx = [\"192.0.2.10:25\"]\nsubmission = [\"127.0.0.1:587\"]\n\
         submissions = []\n\n[imap]\nlisten = [\"127.0.0.1:143\"]\nlisten_tls = [\"127.0.0.1:993\"]\n\n\
         [http]\nlisten_tls = [\"127.0.0.1:443\"]\n\n{extra}\n",
        d = dir.path().display()
    );
    std::fs::write(&cfg, &base).unwrap();
    let key = dir.path().join("s1.key");
    let out = crate::support::tanba_with_config(
        &cfg,
        &[
            "dkim",
            "generate",
            "example.test",
            "--selector",
            "s1",
            "--out",
            key.to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        &cfg,
        format!(
            "{base}[dkim.\"example.test\"]\nselector = \"s1\"\nkey = \"{}\"\n",
            key.display()
        ),
    )
    .unwrap();
    (dir, cfg, key)
}

/// The records of a zone text as dnslib reads them: `[name, type, rdata]`, TXT strings joined.
fn parse_zone(zone: &str) -> Vec<(String, String, String)> {
    let out = crate::support::python(
        r#"
import sys, json, dnslib
from dnslib import RR, QTYPE
out = []
for rr in RR.fromZone(sys.stdin.read() if sys.argv[1] == '-' else sys.argv[1]):
    if rr.rtype == QTYPE.TXT:
        data = b''.join(rr.rdata.data).decode()
    else:
        data = str(rr.rdata)
    out.append([str(rr.rname), QTYPE[rr.rtype], data])
print(json.dumps(out))
"#,
        &[zone],
    );
    serde_json::from_str(&out).unwrap()
}

#[test]
fn tanba_dns_prints_every_record_the_config_needs() {
    let (_dir, cfg, key) = dns_config("[mta_sts]\nmode = \"enforce\"\n");
    let out = crate::support::tanba_with_config(&cfg, &["dns"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let zone = String::from_utf8(out.stdout).unwrap();
    let recs = parse_zone(&zone);
    let has = |name: &str, typ: &str, data: &str| {
        recs.iter()
            .any(|(n, t, d)| n == name && t == typ && d == data)
    };
    // The DKIM public key, derived here from the key file independently of tanba.
    let pem = std::fs::read(&key).unwrap();
    let spki = openssl::pkey::PKey::private_key_from_pem(&pem)
        .unwrap()
        .public_key_to_der()
        .unwrap();
    use base64::Engine;
    let p = base64::engine::general_purpose::STANDARD.encode(spki);
    assert!(
        has(
            "s1._domainkey.example.test.",
            "TXT",
            &format!("v=DKIM1; k=rsa; p={p}")
        ),
        "{zone}"
    );
    // No key for second.test: no DKIM record for it.
    assert!(!recs
        .iter()
        .any(|(n, _, _)| n.ends_with("_domainkey.second.test.")));
    assert!(has("mail.example.test.", "A", "192.0.2.10"), "{zone}");
    for d in ["example.test", "second.test"] {
        let expect = [
            (format!("{d}."), "MX", "10 mail.example.test.".to_string()),
            (format!("{d}."), "TXT", "v=spf1 mx -all".into()),
            (
                format!("_dmarc.{d}."),
                "TXT",
                format!("v=DMARC1; p=quarantine; rua=mailto:postmaster@{d}"),
            ),
            (
                format!("_smtp._tls.{d}."),
                "TXT",
                format!("v=TLSRPTv1; rua=mailto:postmaster@{d}"),
            ),
            (
                format!("mta-sts.{d}."),
                "CNAME",
                "mail.example.test.".into(),
            ),
            (
                format!("autoconfig.{d}."),
                "CNAME",
                "mail.example.test.".into(),
            ),
            (
                format!("autodiscover.{d}."),
                "CNAME",
                "mail.example.test.".into(),
            ),
            // RFC 6186 / 8314 SRV from the configured ports; submissions is off: target ".".
            (
                format!("_imaps._tcp.{d}."),
                "SRV",
                "0 1 993 mail.example.test.".into(),
            ),
            (
                format!("_imap._tcp.{d}."),
                "SRV",
                "0 1 143 mail.example.test.".into(),
            ),
            (format!("_submissions._tcp.{d}."), "SRV", "0 0 0 .".into()),
            (
                format!("_submission._tcp.{d}."),
                "SRV",
                "0 1 587 mail.example.test.".into(),
            ),
            (
                format!("_autodiscover._tcp.{d}."),
                "SRV",
                "0 1 443 mail.example.test.".into(),
            ),
            (format!("{d}."), "CAA", "0 issue \"letsencrypt.org\"".into()),
        ];
        for (n, t, v) in &expect {
            assert!(has(n, t, v), "{n} {t} {v} missing in:\n{zone}");
        }
        let sts = recs
            .iter()
            .find(|(n, t, _)| *n == format!("_mta-sts.{d}.") && t == "TXT")
            .unwrap_or_else(|| panic!("_mta-sts.{d} in {zone}"));
        assert!(sts.2.starts_with("v=STSv1; id="), "{}", sts.2);
    }
    // The policy id follows the policy: another mode, another id.
    let (_dir2, cfg2, _) = dns_config("[mta_sts]\nmode = \"testing\"\n");
    let out2 = crate::support::tanba_with_config(&cfg2, &["dns", "second.test"], None);
    let zone2 = String::from_utf8(out2.stdout).unwrap();
    let id = |z: &str| {
        parse_zone(z)
            .into_iter()
            .find(|(n, _, _)| n == "_mta-sts.second.test.")
            .unwrap()
            .2
    };
    assert_ne!(id(&zone), id(&zone2));
    // One domain only; a domain that is not ours is an error naming server.domains.
    assert!(!zone2.contains("example.test. 3600 IN MX"), "{zone2}");
    let out = crate::support::tanba_with_config(&cfg, &["dns", "other.test"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.domains"));
}

#[test]
fn tanba_dns_check_against_a_resolver() {
    let (_dir, cfg, _) = dns_config("");
    let out = crate::support::tanba_with_config(&cfg, &["dns", "example.test"], None);
    let zone = String::from_utf8(out.stdout).unwrap();
    let line = |prefix: &str| {
        zone.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {zone}"))
            .to_string()
    };
    // Published: the MX, SPF, the DKIM key (as printed), the host's address; a DMARC record
    // with another policy; an unrelated TXT at the apex. Nothing else.
    let served = [
        line("example.test. 3600 IN MX"),
        line("example.test. 3600 IN TXT \"v=spf1"),
        line("s1._domainkey.example.test."),
        line("mail.example.test. 3600 IN A"),
        "_dmarc.example.test. 3600 IN TXT \"v=DMARC1; p=none\"".into(),
        "example.test. 3600 IN TXT \"site-verification=xyz\"".into(),
        line("autoconfig.example.test."),
    ]
    .join("\n");
    // `tanba dns --check` against a loopback DNS server serving `zone`: (exit code, stdout).
    let check = |zone: &str| {
        let dns = crate::support::dns::Dns::start(zone, &[]);
        let resolver = format!("127.0.0.1:{}", dns.port);
        let out = crate::support::tanba_with_config(
            &cfg,
            &["dns", "example.test", "--check", "--resolver", &resolver],
            None,
        );
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    let (code, text) = check(&served);
    assert_eq!(code, Some(1), "{text}");
    let verdict = |what: &str| {
        text.lines()
            .find(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what} in {text}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(verdict("IN MX 10 mail.example.test."), "ok");
    assert_eq!(verdict("\"v=spf1 mx -all\""), "ok");
    assert_eq!(verdict("s1._domainkey.example.test."), "ok");
    assert_eq!(verdict("mail.example.test. 3600 IN A"), "ok");
    assert_eq!(verdict("autoconfig.example.test."), "ok");
    assert_eq!(verdict("_dmarc.example.test."), "different");
    assert!(text.contains("found: v=DMARC1; p=none"), "{text}");
    for missing in [
        "_mta-sts.example.test.",
        "mta-sts.example.test.",
        "_smtp._tls.example.test.",
        "autodiscover.example.test.",
        "_imaps._tcp.example.test.",
        "_submissions._tcp.example.test.",
        "IN CAA",
    ] {
        assert_eq!(verdict(missing), "missing", "{missing}: {text}");
    }

    // Everything published: exit 0.
    let (code, text) = check(&zone);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.lines()
            .filter(|l| !l.starts_with(';'))
            .all(|l| l.starts_with("ok ")),
        "{text}"
    );
    assert!(text.contains("; 16 ok, 0 missing, 0 different"), "{text}");
}

#[test]
fn per_address_limit_and_drain_on_shutdown() {
    // HTTP connections count with IMAP/submission connections not logged in (SPEC §8).
    let mut srv = TestServer::start_with(&[("limits", "unauthenticated_per_ip = 2")]);
    let http = srv.http.unwrap();
    let mut held: Vec<std::net::TcpStream> = Vec::new();
    for _ in 0..2 {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        // One request answered on each, so that both are accepted and counted.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let r = get(http, "x", "/healthz");
    assert_eq!(r.status, 503, "{}", r.text());
    // An IMAP connection from the same address is refused too: one count per address.
    let mut imap = std::net::TcpStream::connect(srv.imap).unwrap();
    imap.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    let _ = (&mut imap).take(200).read_to_string(&mut line);
    assert!(line.starts_with("* BYE"), "{line}");
    drop(held.pop());
    // SIGTERM with a kept-alive idle HTTP connection open: the server drains and exits 0.
    assert_eq!(srv.stop(), Some(0));
    let mut buf = [0u8; 16];
    let n = held[0].read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the connection is closed");
}
