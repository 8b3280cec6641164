//! SMTP server sessions (RFC 5321). STUB.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::server::App;
use crate::shutdown::Shutdown;

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Inbound from the internet: no AUTH, local recipients only.
    Mx,
    /// STARTTLS, then AUTH, then sending.
    Submission,
    /// Implicit TLS, then AUTH, then sending.
    Submissions,
}

/// Runs one SMTP session to completion.
pub async fn handle(
    _stream: TcpStream,
    _peer: SocketAddr,
    _app: Arc<App>,
    _port: Port,
    _shutdown: Shutdown,
) {
}
