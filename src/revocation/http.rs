//! A small blocking HTTP/1.1 client for CRLs, OCSP and certificate downloads (RFC 9112).
//!
//! Plain `http://` only: CRL distribution points and OCSP responders are plain HTTP by design
//! (RFC 5280 §4.2.1.13, RFC 6960 Appendix A; the data is signed), and NCA RK publishes them so.
//! Everything is bounded: name resolution, connecting and the whole exchange share one deadline,
//! headers are limited to [`MAX_HEADER`] bytes and bodies to the caller's limit. GET follows up
//! to three redirects to other `http://` URLs. One request per connection (`Connection: close`).
//!
//! It runs on a blocking thread (the filter already runs under `spawn_blocking`), so it uses
//! `std::net` rather than the async runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Longest response header section.
pub const MAX_HEADER: usize = 32 * 1024;
const MAX_REDIRECTS: usize = 3;

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

/// GET `url`; the body of a 200 answer, at most `max` bytes.
pub fn get(url: &str, max: usize, timeout: Duration) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let mut u = parse_url(url)?;
    for _ in 0..=MAX_REDIRECTS {
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tanba/{}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
            u.path,
            host_header(&u),
            env!("CARGO_PKG_VERSION")
        );
        let resp = exchange(&u, req.as_bytes(), max, deadline)?;
        match resp.status {
            200 => return Ok(resp.body),
            301 | 302 | 303 | 307 | 308 => {
                let Some(loc) = resp.location else {
                    return Err(format!("{u}: redirect without a Location"));
                };
                u = if loc.starts_with('/') {
                    Url {
                        path: loc,
                        ..u.clone()
                    }
                } else {
                    parse_url(&loc)?
                };
            }
            code => return Err(format!("{u}: HTTP {code}")),
        }
    }
    Err(format!("{url}: too many redirects"))
}

/// POST `body` (of `content_type`) to `url`; the body of a 200 answer, at most `max` bytes.
pub fn post(
    url: &str,
    content_type: &str,
    body: &[u8],
    max: usize,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + timeout;
    let u = parse_url(url)?;
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: tanba/{}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        u.path,
        host_header(&u),
        env!("CARGO_PKG_VERSION"),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let resp = exchange(&u, &req, max, deadline)?;
    match resp.status {
        200 => Ok(resp.body),
        code => Err(format!("{u}: HTTP {code}")),
    }
}

fn host_header(u: &Url) -> String {
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    if u.port == 80 {
        host
    } else {
        format!("{host}:{}", u.port)
    }
}

struct Response {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

fn remaining(deadline: Instant, what: &Url) -> Result<Duration, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("{what}: timed out"));
    }
    Ok(left)
}

/// Resolves the host within the deadline (getaddrinfo itself cannot be interrupted, so it runs
/// on a thread of its own that we stop waiting for).
fn resolve(u: &Url, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    if let Ok(ip) = u.host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, u.port)]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let target = (u.host.clone(), u.port);
    std::thread::Builder::new()
        .name("tanba-resolve".into())
        .spawn(move || {
            let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .map_err(|e| format!("{u}: {e}"))?;
    match rx.recv_timeout(remaining(deadline, u)?) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("{u}: {} has no address", u.host)),
        Ok(Err(e)) => Err(format!("{u}: cannot resolve {}: {e}", u.host)),
        Err(_) => Err(format!("{u}: resolving {} timed out", u.host)),
    }
}

fn exchange(u: &Url, request: &[u8], max: usize, deadline: Instant) -> Result<Response, String> {
    let addrs = resolve(u, deadline)?;
    let mut stream = None;
    let mut last = String::new();
    for a in addrs.iter().take(4) {
        match TcpStream::connect_timeout(a, remaining(deadline, u)?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{u}: cannot connect to {a}: {e}"),
        }
    }
    let Some(mut stream) = stream else {
        return Err(last);
    };
    stream
        .set_write_timeout(Some(remaining(deadline, u)?))
        .map_err(|e| format!("{u}: {e}"))?;
    stream
        .write_all(request)
        .map_err(|e| format!("{u}: sending the request: {e}"))?;
    let _ = stream.flush();

    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = [0u8; 16384];
    let io_err = |e: std::io::Error| {
        if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!("{u}: timed out")
        } else {
            format!("{u}: {e}")
        }
    };
    let mut read_more = |stream: &mut TcpStream, buf: &mut Vec<u8>| -> Result<bool, String> {
        stream
            .set_read_timeout(Some(remaining(deadline, u)?))
            .map_err(|e| format!("{u}: {e}"))?;
        let n = stream.read(&mut chunk).map_err(io_err)?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    };

    // Header section.
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADER {
            return Err(format!("{u}: response header too long"));
        }
        if !read_more(&mut stream, &mut buf)? {
            return Err(format!("{u}: connection closed before the response header"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("{u}: not an HTTP/1.x response"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{u}: bad status line"))?;
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut location = None;
    for l in lines {
        let Some((name, value)) = l.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse()
                        .map_err(|_| format!("{u}: bad Content-Length"))?,
                )
            }
            "transfer-encoding" => chunked = value.to_ascii_lowercase().contains("chunked"),
            "location" => location = Some(value.to_string()),
            _ => {}
        }
    }
    let mut body = buf.split_off(header_end + 4);
    let too_big = || format!("{u}: response larger than {max} bytes");
    if status != 200 {
        // Nothing of the body is needed.
        return Ok(Response {
            status,
            location,
            body: Vec::new(),
        });
    }
    if chunked {
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            // Chunk size line.
            let line_end = loop {
                if let Some(i) = find(&body[pos..], b"\r\n") {
                    break pos + i;
                }
                if body.len() - pos > 1024 {
                    return Err(format!("{u}: bad chunk header"));
                }
                if !read_more(&mut stream, &mut body)? {
                    return Err(format!("{u}: connection closed inside the body"));
                }
            };
            let size_text = String::from_utf8_lossy(&body[pos..line_end]);
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size =
                usize::from_str_radix(size_text, 16).map_err(|_| format!("{u}: bad chunk size"))?;
            if size == 0 {
                break;
            }
            if size > max.saturating_sub(out.len()) {
                return Err(too_big());
            }
            let data_start = line_end + 2;
            while body.len() < data_start + size + 2 {
                if !read_more(&mut stream, &mut body)? {
                    return Err(format!("{u}: connection closed inside the body"));
                }
            }
            out.extend_from_slice(&body[data_start..data_start + size]);
            pos = data_start + size + 2;
            // Keep the buffer from growing with what was consumed.
            if pos > 1 << 20 {
                body.drain(..pos);
                pos = 0;
            }
        }
        return Ok(Response {
            status,
            location,
            body: out,
        });
    }
    match length {
        Some(n) => {
            if n > max {
                return Err(too_big());
            }
            while body.len() < n {
                if !read_more(&mut stream, &mut body)? {
                    return Err(format!("{u}: connection closed inside the body"));
                }
            }
            body.truncate(n);
        }
        None => loop {
            if body.len() > max {
                return Err(too_big());
            }
            if !read_more(&mut stream, &mut body)? {
                break;
            }
        },
    }
    Ok(Response {
        status,
        location,
        body,
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

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
        let u = serve(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n".to_vec(),
        );
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
