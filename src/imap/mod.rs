//! IMAP4rev1 server sessions (RFC 3501). STUB.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::server::App;
use crate::shutdown::Shutdown;

/// Runs one IMAP session to completion. `implicit_tls`: the `listen_tls` port.
pub async fn handle(
    _stream: TcpStream,
    _peer: SocketAddr,
    _app: Arc<App>,
    _implicit_tls: bool,
    _shutdown: Shutdown,
) {
}
