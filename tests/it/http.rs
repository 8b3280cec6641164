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
