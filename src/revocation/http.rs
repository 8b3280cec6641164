//! Blocking HTTP for CRLs, OCSP and certificate downloads, with ureq (RFC 9112 is ureq's
//! business; this file checks URLs and bounds what comes back).
//!
//! Plain `http://` URLs only ([`parse_url`]): CRL distribution points and OCSP responders are
//! plain HTTP by design (RFC 5280 §4.2.1.13, RFC 6960 Appendix A; the data is signed), and NCA
//! RK publishes them so. Everything is bounded: name resolution, connecting and the whole
//! exchange share one deadline (ureq's global timeout), headers are limited to [`MAX_HEADER`]
//! bytes and bodies to the caller's limit. GET follows up to three redirects.
//!
//! It runs on a blocking thread (the filter already runs under `spawn_blocking`), which suits
//! ureq's blocking I/O.

use std::time::Duration;

/// Longest response header section.
pub const MAX_HEADER: usize = 32 * 1024;
const MAX_REDIRECTS: u32 = 3;

/// An `http://` URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            write!(f, "http://{host}{}", self.path)
        } else {
            write!(f, "http://{host}:{}{}", self.port, self.path)
        }
    }
}

/// Parses an `http://host[:port][/path]` URL.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let s = s.trim();
    let Some(rest) = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("HTTP://"))
    else {
        return Err(format!("{s}: only http:// URLs are supported"));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err(format!("{s}: credentials in URLs are not supported"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((h, after)) = v6.split_once(']') else {
            return Err(format!("{s}: bad IPv6 address"));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| format!("{s}: bad port"))?,
            None if after.is_empty() => 80,
            None => return Err(format!("{s}: bad host")),
        };
        (h.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse().map_err(|_| format!("{s}: bad port"))?,
            ),
            None => (authority.to_string(), 80),
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err(format!("{s}: bad host"));
    }
    if path.bytes().any(|b| b <= b' ' || b == 0x7F) {
        return Err(format!("{s}: bad path"));
    }
    Ok(Url {
        host: host.to_ascii_lowercase(),
        port,
        path,
    })
}

/// GET `url`; the body of a 200 answer, at most `max` bytes. Follows up to three redirects.
pub fn get(url: &str, max: usize, timeout: Duration) -> Result<Vec<u8>, String> {
    let u = parse_url(url)?.to_string();
    let resp = agent()
        .get(&u)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call();
    body(&u, resp, max)
}

/// POST `body` (of `content_type`) to `url`; the body of a 200 answer, at most `max` bytes.
pub fn post(
    url: &str,
    content_type: &str,
    body_bytes: &[u8],
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let u = parse_url(url)?.to_string();
    let resp = agent()
        .post(&u)
        .header("Content-Type", content_type)
        .config()
        .timeout_global(Some(timeout))
        .build()
        .send(body_bytes);
    body(&u, resp, max)
}

/// One agent for the process (it keeps no connections: `Connection: close` semantics are
/// ureq's pool with a zero idle limit).
fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .max_redirects(MAX_REDIRECTS)
            .http_status_as_error(false)
            .max_response_header_size(MAX_HEADER)
            .max_idle_connections(0)
            .proxy(None)
            .user_agent(format!("tanba/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent()
    })
}

/// The body of a `200` answer, at most `max` bytes; every other outcome as an error that names
/// the URL.
fn body(
    u: &str,
    resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    max: usize,
) -> Result<Vec<u8>, String> {
    let mut resp = resp.map_err(|e| match e {
        ureq::Error::Timeout(_) => format!("{u}: timed out"),
        ureq::Error::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("{u}: cannot connect: {e}")
        }
        ureq::Error::ConnectionFailed => format!("{u}: cannot connect"),
        ureq::Error::TooManyRedirects => format!("{u}: too many redirects"),
        e => format!("{u}: {e}"),
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("{u}: HTTP {status}"));
    }
    let too_big = || format!("{u}: response larger than {max} bytes");
    // A declared length over the limit fails before any byte is read.
    if resp.body().content_length().is_some_and(|n| n > max as u64) {
        return Err(too_big());
    }
    resp.body_mut()
        .with_config()
        .limit(max as u64)
        .read_to_vec()
        .map_err(|e| match e {
            ureq::Error::BodyExceedsLimit(_) => too_big(),
            ureq::Error::Timeout(_) => format!("{u}: timed out"),
            e => format!("{u}: {e}"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Instant;

    #[test]
    fn urls() {
        let u = parse_url("http://crl.pki.gov.kz/nca_rsa.crl").unwrap();
        assert_eq!(
            u,
            Url {
                host: "crl.pki.gov.kz".into(),
                port: 80,
                path: "/nca_rsa.crl".into()
            }
        );
        assert_eq!(u.to_string(), "http://crl.pki.gov.kz/nca_rsa.crl");
        let u = parse_url("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/"));
        let u = parse_url("http://[::1]:81/x?y").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 81, "/x?y")
        );
        for bad in [
            "https://x/",
            "ldap://x/",
            "http://",
            "http://a b/",
            "http://u:p@x/",
            "http://x:99999/",
            "http://x/a b",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A one-shot server answering with `reply`; returns its URL.
    fn serve(reply: Vec<u8>) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf);
                let _ = s.write_all(&reply);
            }
        });
        format!("http://{addr}/x")
    }

    #[test]
    fn bodies() {
        let t = Duration::from_secs(5);
        let u = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, extra".to_vec());
        assert_eq!(get(&u, 100, t).unwrap(), b"hello");
        let u = serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n".to_vec());
        assert_eq!(get(&u, 100, t).unwrap(), b"abcde");
        let u = serve(b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec());
        assert_eq!(get(&u, 100, t).unwrap(), b"until close");
        let u = serve(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec());
        assert!(get(&u, 100, t).unwrap_err().contains("HTTP 404"));
        let u = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n".to_vec());
        assert!(get(&u, 100, t).unwrap_err().contains("larger"));
        // A chunk size beyond any limit, then the end: an error (ureq's chunk decoder), no
        // allocation of that size.
        let u = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n".to_vec(),
        );
        let e = get(&u, 100, t).unwrap_err();
        assert!(e.starts_with(&u), "{e}");
        // More chunked bytes than the limit.
        let mut big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        for _ in 0..10 {
            big.extend_from_slice(b"20\r\n0123456789abcdef0123456789abcdef\r\n");
        }
        big.extend_from_slice(b"0\r\n\r\n");
        let u = serve(big);
        assert!(get(&u, 100, t).unwrap_err().contains("larger"));
        let u = serve(b"garbage\r\n\r\n".to_vec());
        assert!(get(&u, 100, t).is_err());
        let u = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort".to_vec());
        assert!(get(&u, 100, t).is_err());
    }

    #[test]
    fn refused_and_silent_servers_fail_fast() {
        // A port nobody listens on.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = get(&format!("http://{addr}/"), 100, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("cannot connect"), "{e}");
        // A server that accepts and never answers: the deadline ends it.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let start = Instant::now();
        let e = post(
            &format!("http://{addr}/"),
            "application/ocsp-request",
            b"x",
            100,
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(5));
        drop(l);
    }
}
