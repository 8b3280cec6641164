//! SMTP against hostile input (issue 11): SMTP smuggling with bare CR / bare LF (finding 8),
//! forged `Authentication-Results` and headers hidden behind a bare CR (finding 8), and large
//! unfinished messages that must not live in memory (finding 3b). A raw loopback SMTP sink
//! ([`Sink`]) stands for the next hop and keeps the exact bytes it received after DATA.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::smtp::{assert_stored_as, server_with_users, stored, Client};
use crate::support::*;

// ---------------------------------------------------------------------------------------------
// Helpers.

/// A minimal SMTP server on loopback (no TLS, no PIPELINING) that keeps, per message, the raw
/// bytes that followed `354` up to and including CRLF "." CRLF.
struct Sink {
    port: u16,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Sink {
    fn start() -> Sink {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(conn) = conn else { return };
                let g = g.clone();
                std::thread::spawn(move || Sink::serve(conn, g));
            }
        });
        Sink { port, got }
    }

    fn serve(conn: TcpStream, got: Arc<Mutex<Vec<Vec<u8>>>>) {
        conn.set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut w = conn.try_clone().unwrap();
        let mut r = BufReader::new(conn);
        let _ = w.write_all(b"220 sink ESMTP\r\n");
        loop {
            let mut line = Vec::new();
            if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                return;
            }
            let verb = String::from_utf8_lossy(&line).to_ascii_uppercase();
            let reply: &[u8] = if verb.starts_with("EHLO") {
                b"250-sink\r\n250 8BITMIME\r\n"
            } else if verb.starts_with("DATA") {
                let _ = w.write_all(b"354 go on\r\n");
                // Read to CRLF "." CRLF (the message may start with "." CRLF when empty).
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                        return;
                    }
                    data.extend_from_slice(&l);
                    if data == b".\r\n" || data.ends_with(b"\r\n.\r\n") {
                        break;
                    }
                }
                got.lock().unwrap().push(data);
                b"250 2.0.0 saved\r\n"
            } else if verb.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            } else {
                b"250 2.0.0 ok\r\n"
            };
            if w.write_all(reply).is_err() {
                return;
            }
        }
    }

    fn messages(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }
}

/// Positions of a CR not followed by LF, and of an LF not preceded by CR.
fn bare_line_ends(b: &[u8]) -> Vec<usize> {
    (0..b.len())
        .filter(|&i| {
            (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n'))
                || (b[i] == b'\n' && (i == 0 || b[i - 1] != b'\r'))
        })
        .collect()
}

fn queue_is_empty(srv: &TestServer) -> bool {
    let out = srv.tanba(&["queue", "list", "--json"], None);
    assert!(out.status.success());
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .is_none_or(|a| a.is_empty())
}

fn spool_files(srv: &TestServer) -> Vec<PathBuf> {
    std::fs::read_dir(srv.data_dir().join("spool"))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// `n` bytes of message text: lines of 998 printable characters (no "From " at a line start,
/// so an mboxrd export gives it back unchanged).
fn text(n: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 1000);
    let mut x = seed as u32 + 1;
    while out.len() < n {
        for _ in 0..998 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            out.push(b'!' + ((x >> 16) % 90) as u8);
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn mx_session(srv: &TestServer) -> Client {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c
}

fn begin(c: &mut Client, from: &str, to: &str) {
    c.ok(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
    c.ok(&format!("RCPT TO:<{to}>"), "250 2.1.5");
}

const REFUSED: &str =
    "550 5.6.0 Message refused: bare CR, or a line of only \".\" not ended by CRLF";

// ---------------------------------------------------------------------------------------------
// Finding 8: bare CR / bare LF.

/// `\r.\r\n` (and `\n.\n`) inside DATA on submission is refused with 550 5.6.0 once the real
/// end arrives, the session goes on, and the next hop never sees those bytes; a message with
/// bare LF line ends is accepted and relayed with CRLF only.
#[test]
fn finding8_bare_cr_smuggling_on_submission_is_refused_and_never_relayed() {
    let sink = Sink::start();
    let relay = format!("relay = \"127.0.0.1:{}\"", sink.port);
    let srv = server_with_users(&[("delivery", &relay), ("delivery", "retry = [\"1s\"]")]);
    let mut c = Client::connect(srv.submission);
    c.ok("EHLO client.example", "250");
    c.starttls(&srv.cert_pem());
    c.login("alice@example.test", "secret-alice");

    let smuggled: [&[u8]; 3] = [
        b"Subject: smuggle 1\r\n\r\nhi\r.\r\nMAIL FROM:<alice@example.test>\r\n\
RCPT TO:<victim@far-away.test>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\n",
        b"Subject: smuggle 2\r\n\r\nhi\n.\nMAIL FROM:<alice@example.test>\r\n\
RCPT TO:<victim@far-away.test>\r\nDATA\r\nSubject: forged\r\n\r\nforged\r\n.\r\n",
        b"Subject: smuggle 3\r\n\r\nhi\r\n.\rQUIT\r\n.\r\n",
    ];
    for msg in smuggled {
        begin(&mut c, "alice@example.test", "friend@far-away.test");
        c.ok("DATA", "354");
        c.send(msg);
        assert_eq!(c.reply().line(), REFUSED);
        // Nothing of the message was taken for commands, and the session goes on.
        c.ok("NOOP", "250 2.0.0");
    }
    // The same in BDAT chunks, the bare CR at a chunk's end.
    begin(&mut c, "alice@example.test", "friend@far-away.test");
    c.send(b"BDAT 25\r\nSubject: smuggle 4\r\n\r\nhi\r");
    assert_eq!(c.reply().line(), "250 2.0.0 25 octets received");
    c.send(b"BDAT 11 LAST\r\n.\r\nforged\r\n");
    assert_eq!(c.reply().line(), REFUSED);

    // Bare LF line ends: taken as line ends, relayed as CRLF.
    begin(&mut c, "alice@example.test", "friend@far-away.test");
    c.ok("DATA", "354");
    c.send(b"Subject: bare lf\n\nline 1\n..line 2\nline 3\r\n.\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));
    c.ok("QUIT", "221");

    wait_for("the message at the next hop", &srv, || {
        (!sink.messages().is_empty() && queue_is_empty(&srv)).then_some(())
    });
    let got = sink.messages();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert!(
        bare_line_ends(m).is_empty(),
        "bare CR/LF sent at {:?}: {:?}",
        bare_line_ends(m),
        String::from_utf8_lossy(m)
    );
    let s = String::from_utf8_lossy(m);
    assert!(
        s.contains("Subject: bare lf\r\n\r\nline 1\r\n..line 2\r\nline 3\r\n.\r\n"),
        "{s}"
    );
    assert!(!s.contains("smuggle") && !s.contains("forged"), "{s}");
}

/// On MX the same: a bare CR or a smuggled end of data is refused, nothing is stored.
#[test]
fn finding8_bare_cr_on_mx_is_refused_and_not_stored() {
    let srv = server_with_users(&[]);
    let mut c = mx_session(&srv);
    for msg in [
        &b"Subject: x\rX-EDS-Status: pass\r\n\r\nbody\r\n.\r\n"[..],
        b"Subject: y\r\n\r\nhi\r\n.\nRSET\r\n.\r\n",
    ] {
        begin(&mut c, "s@sender.example", "alice@example.test");
        c.ok("DATA", "354");
        c.send(msg);
        assert_eq!(c.reply().line(), REFUSED);
    }
    begin(&mut c, "s@sender.example", "alice@example.test");
    c.ok("DATA", "354");
    c.send(b"Subject: fine\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0"));
    c.ok("QUIT", "221");
    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 1);
    assert!(alice[0].ends_with(b"Subject: fine\r\n\r\nbody\r\n"));
}

/// Forged `Authentication-Results` with our authserv-id plus a trailing dot, or in capitals,
/// are removed; the stored message carries only ours (and the other server's).
#[test]
fn finding8_forged_authentication_results_trailing_dot_and_case_are_stripped() {
    let srv = server_with_users(&[]);
    let msg = b"Authentication-Results: mail.example.test.; smime=pass\r\n\
Authentication-Results: MAIL.EXAMPLE.TEST; smime=pass\r\n\
Authentication-Results: \"Mail.Example.Test.\"; smime=pass\r\n\
Authentication-Results: other.example; dkim=pass\r\n\
Subject: forged results\r\n\r\nbody\r\n";
    crate::smtp::mx_to_alice(&srv, msg);
    let alice = stored(&srv, "alice@example.test");
    let m = String::from_utf8_lossy(&alice[0]).into_owned();
    let ar: Vec<&str> = m
        .split("\r\n")
        .filter(|l| {
            l.to_ascii_lowercase()
                .starts_with("authentication-results:")
        })
        .collect();
    assert_eq!(
        ar,
        [
            "Authentication-Results: mail.example.test; smime=none",
            "Authentication-Results: other.example; dkim=pass"
        ],
        "{m}"
    );
    assert!(m.starts_with("Authentication-Results: mail.example.test; smime=none\r\n"));
}

/// `Subject: x\rX-EDS-Status: pass` given to `tanba stamp` (which also serves files and
/// APPENDed mail, not just SMTP): the hidden header is seen and removed; the output has only our
/// X-EDS-Status and no bare CR in its header section.
#[test]
fn finding8_bare_cr_in_a_header_never_hides_a_header_from_tanba_stamp() {
    let srv = TestServer::start();
    let file = srv.dir.path().join("hidden.eml");
    std::fs::write(
        &file,
        b"From: a@sender.example\r\nSubject: x\rX-EDS-Status: pass\r\n\
Subject2: y\rAuthentication-Results: mail.example.test.; smime=pass\r\n\r\nbody\r\n",
    )
    .unwrap();
    let out = srv.tanba(&["stamp", file.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = out.stdout;
    let s = String::from_utf8_lossy(&m);
    let head = &m[..memchr_crlfcrlf(&m)];
    assert!(bare_line_ends(head).is_empty(), "{s:?}");
    assert_eq!(s.matches("X-EDS-Status:").count(), 1, "{s}");
    assert!(
        s.contains("\r\nX-EDS-Status: none; signers=0; valid=0\r\n"),
        "{s}"
    );
    assert_eq!(s.matches("Authentication-Results:").count(), 1, "{s}");
    assert!(
        s.contains("\r\nSubject: x\r\nSubject2: y\r\n\r\nbody\r\n"),
        "{s:?}"
    );
}

fn memchr_crlfcrlf(m: &[u8]) -> usize {
    m.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(m.len())
}

// ---------------------------------------------------------------------------------------------
// Finding 3b: unfinished messages spool to disk.

/// 5 MB of an unfinished DATA is in a spool file (0600 in a 0700 directory) that grows with
/// the message and is removed when the client drops the connection; a file a crash left behind
/// (kill -9) is removed at the next start.
#[test]
fn finding3b_unfinished_large_data_spools_to_disk_and_is_removed() {
    let mut srv = server_with_users(&[]);
    let spool = srv.data_dir().join("spool");
    {
        let mut c = mx_session(&srv);
        begin(&mut c, "s@sender.example", "alice@example.test");
        c.ok("DATA", "354");
        c.send(b"Subject: big\r\n\r\n");
        c.send(&text(5_000_000, 1));
        let file = wait_for("a spool file of 3 MB", &srv, || {
            spool_files(&srv).into_iter().find(|p| size(p) >= 3_000_000)
        });
        assert_eq!(spool_files(&srv).len(), 1);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file:?}");
        let dmode = std::fs::metadata(&spool).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        c.send(&text(3_000_000, 2));
        wait_for("the spool file to grow past 6 MB", &srv, || {
            (size(&file) >= 6_000_000).then_some(())
        });
        // Dropped here, mid-message.
    }
    wait_for("the spool file to be removed", &srv, || {
        spool_files(&srv).is_empty().then_some(())
    });

    // A crash leaves the file; the next start removes it.
    let mut c = mx_session(&srv);
    begin(&mut c, "s@sender.example", "alice@example.test");
    c.ok("DATA", "354");
    c.send(&text(3_000_000, 3));
    let file = wait_for("a spool file", &srv, || {
        spool_files(&srv).into_iter().find(|p| size(p) > 0)
    });
    srv.kill9();
    drop(c);
    assert!(file.exists());
    srv.restart();
    assert!(spool_files(&srv).is_empty(), "{:?}", spool_files(&srv));
    assert!(stored(&srv, "alice@example.test").is_empty());
}

/// A 20 MB message (DATA) and a 12 MB one (BDAT in 3 MB chunks, which sit in the spool file
/// between chunks) pass through the spool and are stored byte for byte; the spool is empty
/// afterwards.
#[test]
fn finding3b_large_messages_through_the_spool_arrive_intact() {
    let srv = server_with_users(&[]);
    let mut big = b"Subject: twenty megabytes\r\n\r\n".to_vec();
    big.extend_from_slice(&text(20_000_000, 4));
    crate::smtp::mx_to_alice(&srv, &big);

    let mut chunked = b"Subject: chunked\r\n\r\n".to_vec();
    chunked.extend_from_slice(&text(12_000_000, 5));
    let mut c = mx_session(&srv);
    begin(&mut c, "s@sender.example", "alice@example.test");
    let pieces: Vec<&[u8]> = chunked.chunks(3_000_000).collect();
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        c.send(format!("BDAT {}{}\r\n", p.len(), if last { " LAST" } else { "" }).as_bytes());
        c.send(p);
        let r = c.reply();
        assert_eq!(r.code, 250, "{}", r.line());
        if i == 1 {
            // Between chunks, 6 MB received: all but the last piece is in the spool file.
            let f = spool_files(&srv);
            assert_eq!(f.len(), 1, "{f:?}");
            assert!(size(&f[0]) >= 5_000_000, "{}", size(&f[0]));
        }
    }
    c.ok("QUIT", "221");

    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 2);
    assert_stored_as(&alice[0], &big, "Received: from sender.example");
    assert_stored_as(&alice[1], &chunked, "Received: from sender.example");
    assert!(spool_files(&srv).is_empty());
}
