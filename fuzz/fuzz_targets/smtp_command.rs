//! SMTP input: the codec (src/smtp/codec.rs: command lines, DotDecoder, LineEnds) and the
//! command parser (src/smtp/command.rs) on arbitrary bytes, checked for chunking invariance and
//! CRLF-only output; and, for
//! odd first bytes, the real `smtp::session::Session` on an in-memory stream with a real store
//! (DATA/BDAT into `spool::Body`, `inbound::accept`, the filter; MX or submission port; after STARTTLS the session goes on over the same stream as if the
//! handshake had happened, so that AUTH and the post-TLS states are reached too).
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use tanba::limits::Ticket;
use tanba::smtp::codec::{DotDecoder, Input, Line, LineEndFaults, LineEnds, MAX_LINE};
use tanba::smtp::command;
use tanba::smtp::session::{Outcome, Session};
use tanba::smtp::Port;

fuzz_target!(|data: &[u8]| {
    tanba_fuzz::tolerate_caught_panics();
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

type Decoded = (Vec<u8>, LineEndFaults, bool, usize);

fn dot_decode(input: &[u8], chunk: usize) -> Decoded {
    let mut dec = DotDecoder::new();
    let mut out = Vec::new();
    let mut used = 0;
    let mut done = false;
    for piece in input.chunks(chunk.max(1)) {
        let before = out.len();
        let (n, end) = dec.feed(piece, &mut out);
        assert!(n <= piece.len());
        assert!(
            out.len() - before <= 2 * piece.len(),
            "more than twice the input"
        );
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
    (out, dec.faults, done, used)
}

fn line_ends(input: &[u8], chunk: usize) -> (Vec<u8>, LineEndFaults) {
    let mut le = LineEnds::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        le.feed(piece, &mut out);
    }
    le.finish(&mut out);
    (out, le.faults)
}

/// Every CR is followed by LF and every LF preceded by CR, unless a bare CR was reported.
fn only_crlf(out: &[u8], faults: &LineEndFaults) {
    if faults.bare_cr {
        return;
    }
    for (i, &b) in out.iter().enumerate() {
        if b == b'\r' {
            assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR in the output");
        }
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF in the output");
        }
    }
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
    // DATA: the same text, faults and end whatever the read boundaries; CRLF line ends only.
    let a = dot_decode(input, input.len());
    let b = dot_decode(input, chunk);
    assert_eq!(a, b, "DATA decoding depends on read boundaries");
    only_crlf(&a.0, &a.1);
    // BDAT: the same line-end rules without dot-stuffing.
    let a = line_ends(input, input.len());
    let b = line_ends(input, chunk);
    assert_eq!(a, b, "BDAT line ends depend on chunk boundaries");
    only_crlf(&a.0, &a.1);
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
        let mut s = Session::new(
            app,
            port,
            peer,
            tanba_fuzz::shutdown(),
            Ticket::detached(peer.ip()),
        );
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
