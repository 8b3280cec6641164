//! The byte stream of the raw SMTP and IMAP test clients (`smtp::Client`, `imap::Imap`): a
//! blocking TCP connection that can become TLS (rustls, trusting the test server's
//! self-signed certificate), for implicit TLS and STARTTLS.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Gone,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
            Stream::Gone => Ok(0),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
            Stream::Gone => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
            Stream::Gone => Ok(()),
        }
    }
}

impl Stream {
    /// A plain TCP connection (20 s read timeout, no Nagle delay).
    pub fn connect(addr: SocketAddr) -> Stream {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_nodelay(true).unwrap();
        Stream::Plain(tcp)
    }

    /// Like [`Stream::connect`], from the local address `from` (any 127.0.0.x emulates another
    /// client machine).
    pub fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> Stream {
        Stream::Plain(tcp_from(addr, from))
    }

    /// The TCP connection underneath, if still open.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Stream::Plain(s) => Some(s),
            Stream::Tls(s) => Some(s.get_ref()),
            Stream::Gone => None,
        }
    }

    /// Turns the plain connection into TLS to `mail.example.test`, trusting `cert`; the
    /// handshake is complete on return, so that a failure shows here.
    pub fn start_tls(&mut self, cert: &Path) {
        let Stream::Plain(tcp) = std::mem::replace(self, Stream::Gone) else {
            panic!("already TLS")
        };
        let name = rustls::pki_types::ServerName::try_from("mail.example.test").unwrap();
        let conn = rustls::ClientConnection::new(tls_config(cert), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn
                .complete_io(&mut tls.sock)
                .expect("TLS handshake with the server");
        }
        *self = Stream::Tls(Box::new(tls));
    }
}

/// A rustls client config that trusts the test server's self-signed certificate.
pub fn tls_config(cert: &Path) -> Arc<rustls::ClientConfig> {
    let pem = std::fs::read(cert).expect("reading the server certificate");
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// A TCP connection to `addr` from the local address `from` (20 s read timeout, no Nagle delay).
pub fn tcp_from(addr: SocketAddr, from: std::net::IpAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::new(from, 0).into())
        .expect("bind the client socket");
    sock.connect(&addr.into()).expect("connect");
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.set_nodelay(true).unwrap();
    tcp
}
