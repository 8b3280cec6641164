//! SMTP input: the codec (src/smtp/codec.rs: command lines, DotDecoder, Body) and the command
//! parser (src/smtp/command.rs) on arbitrary bytes, checked for chunking invariance; and, for
//! odd first bytes, the real `smtp::session::Session` on an in-memory stream with a real store
//! (MX or submission port; after STARTTLS the session goes on over the same stream as if the
//! handshake had happened, so that AUTH and the post-TLS states are reached too).
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use tanba::smtp::codec::{Body, DotDecoder, Input, Line, MAX_LINE};
use tanba::smtp::command::{self, Command};
use tanba::smtp::session::{Outcome, Session};
use tanba::smtp::Port;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        codec(mode, input);
    } else {
        session(mode, input);
    }
});

/// Feeds `input` through the line splitter in chunks of `chunk` bytes, as reads would arrive.
fn lines(input: &[u8], chunk: usize) -> Vec<Line> {
    let mut inp = Input::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        inp.read_target().extend_from_slice(piece);
        while let Some(l) = inp.next_line() {
            out.push(l);
        }
    }
    out
}

fn dot_decode(input: &[u8], chunk: usize, limit: u64) -> (Vec<u8>, u64, bool, usize) {
    let mut dec = DotDecoder::new(limit);
    let mut used = 0;
    let mut done = false;
    for piece in input.chunks(chunk.max(1)) {
        let (n, end) = dec.feed(piece);
        assert!(n <= piece.len());
        used += n;
        if end {
            done = true;
            break;
        }
        assert_eq!(
            n,
            piece.len(),
            "DotDecoder left bytes unconsumed before the end"
        );
    }
    let total = dec.body.total();
    let overflowed = dec.body.overflowed();
    let body = dec.body.into_bytes();
    assert!(body.len() as u64 <= limit);
    assert_eq!(overflowed, total > limit);
    if overflowed {
        assert!(body.is_empty());
    }
    (body, total, done, used)
}

fn codec(mode: u8, input: &[u8]) {
    let chunk = (mode >> 1) as usize + 1;
    // Lines: the same whether the bytes arrive at once or in pieces.
    let whole = lines(input, input.len());
    let pieces = lines(input, chunk);
    assert_eq!(whole, pieces, "line splitting depends on read boundaries");
    for l in &whole {
        if let Line::Line(l) = l {
            assert!(l.len() <= MAX_LINE && l.ends_with(b"\n"));
            match command::parse(l) {
                Ok(cmd) => {
                    let _ = command::verb(&cmd);
                    if let Command::Bdat { size, .. } = cmd {
                        let mut b = Body::new(1 << 16);
                        b.push(&input[..input.len().min(size.min(1 << 16) as usize)]);
                        assert_eq!(b.overflowed(), b.total() > (1 << 16));
                    }
                }
                Err(e) => {
                    let mut out = Vec::new();
                    e.0.write_to(&mut out);
                    assert!(out.ends_with(b"\r\n"));
                    // A reply never carries a bare CR or LF inside (reply injection).
                    let inner = &out[..out.len() - 2];
                    for line in inner.split(|&b| b == b'\n') {
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'));
                    }
                }
            }
        }
    }
    // DATA: the same body and end whatever the read boundaries; small and large limits.
    for limit in [64u64, 1 << 20] {
        let a = dot_decode(input, input.len(), limit);
        let b = dot_decode(input, chunk, limit);
        assert_eq!(a, b, "DATA decoding depends on read boundaries");
    }
}

fn session(mode: u8, input: &[u8]) {
    let (app, _account) = tanba_fuzz::Fixture::get();
    let port = if mode & 2 == 0 {
        Port::Mx
    } else {
        Port::Submission
    };
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    tanba_fuzz::runtime().block_on(async move {
        let (server, client) = tokio::io::duplex(64 * 1024);
        let mut s = Session::new(app, port, peer, tanba_fuzz::shutdown());
        let run = async move {
            if let Outcome::StartTls(stream) = s.run(server, true).await {
                // Go on as if the TLS handshake had been made (RFC 3207 §4.2: fresh state).
                s.tls_established();
                let _ = s.run(stream, false).await;
            }
        };
        let ((), _out) = tokio::join!(run, tanba_fuzz::client(client, input));
    });
}
