//! IMAP input: the real `imap::session::Session` — framing with literals (src/imap/conn.rs),
//! imap-codec's `CommandCodec` and our extended-LIST parser, the state gate and the command
//! handlers — on a loopback TCP connection (`Conn` owns a `TcpStream`), with a real store in a
//! temporary directory holding one account and two messages. The first byte picks the state the
//! session starts in: not authenticated, or authenticated as the account (set directly: LOGIN on
//! plaintext is refused, and argon2 per input would be too slow). Not reached: STARTTLS and the
//! TLS stream, LOGIN/AUTHENTICATE success (password check), IDLE wake-ups from other sessions.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tanba::imap::conn::Conn;
use tanba::imap::session::{Session, State};
use tokio::net::{TcpListener, TcpStream};

fuzz_target!(|data: &[u8]| {
    tanba_fuzz::tolerate_caught_panics();
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    let (app, account) = tanba_fuzz::Fixture::get();
    tanba_fuzz::runtime().block_on(async move {
        let listener = listener().await;
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let client = client.expect("connect");
        let (server, peer) = accepted.expect("accept");
        // Idle timeout: only reached if the session waited for input that never comes, which
        // the closed client side rules out; keep it short anyway.
        let conn = Conn::new(server, Duration::from_secs(5));
        let mut s = Session::new(app, conn, peer, tanba_fuzz::shutdown());
        if mode & 1 == 1 {
            s.state = State::Authenticated;
            s.account = Some(account);
        }
        let run = async move {
            let _ = s.run().await;
        };
        let ((), _out) = tokio::join!(run, tanba_fuzz::client(client, input));
    });
});

/// One listener on 127.0.0.1 for the whole run.
async fn listener() -> &'static TcpListener {
    thread_local! {
        static L: std::cell::OnceCell<&'static TcpListener> = const { std::cell::OnceCell::new() };
    }
    if let Some(l) = L.with(|c| c.get().copied()) {
        return l;
    }
    let l: &'static TcpListener = Box::leak(Box::new(
        TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1"),
    ));
    L.with(|c| {
        let _ = c.set(l);
    });
    l
}
