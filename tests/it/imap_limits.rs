//! IMAP limits against abuse (issue 11, SPEC §8): the size of one command, the state gate before
//! any literal, the login timeout, the error limits, and LIST patterns that cost no more than
//! their size. Each test is named after the finding it covers.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::imap::{text, Imap};
use crate::support::*;

/// A raw plaintext connection whose reading half is separate from its writing half, so that a
/// test can keep sending while it reads what the server says.
struct Raw {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let tcp = TcpStream::connect(addr).expect("connect");
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.set_nodelay(true).unwrap();
        let mut r = Raw {
            writer: tcp.try_clone().unwrap(),
            reader: BufReader::new(tcp),
        };
        let greeting = r.line().expect("greeting");
        assert!(greeting.starts_with("* OK"), "{greeting}");
        r
    }

    fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// One line without its CRLF; `None` at EOF or when the server reset the connection.
    fn line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).trim_end().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Every line until the server closes the connection.
    fn rest(&mut self) -> Vec<String> {
        std::iter::from_fn(|| self.line()).collect()
    }
}

/// Sends `len` bytes of `x` on a clone of the socket from another thread, stopping at the
/// first write error (the server closed): the test reads meanwhile.
fn flood(tcp: &TcpStream, mut len: usize) -> std::thread::JoinHandle<usize> {
    let mut w = tcp.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while len > 0 {
            let n = len.min(chunk.len());
            if w.write_all(&chunk[..n]).is_err() {
                break;
            }
            sent += n;
            len -= n;
        }
        sent
    })
}

const FIFTY_MIB: usize = 52_428_800;

/// The server still answers a new client: greeting and CAPABILITY.
fn still_serves(srv: &TestServer) {
    let mut c = Imap::plain(srv.imap);
    c.ok("CAPABILITY");
    c.ok("LOGOUT");
}

#[test]
fn finding_2_prelogin_id_with_a_50_mib_literal_plus_is_refused_and_the_connection_closed() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.imap);
    // RFC 7888 non-synchronizing literal before login: the client sends it without waiting.
    c.send(b"s1 ID ({52428800+}\r\n");
    let sender = flood(&c.writer, FIFTY_MIB);
    let lines = c.rest();
    assert_eq!(
        lines.first().map(String::as_str),
        Some(
            "s1 BAD [TOOBIG] Literal too large (the limit is 34816 bytes for the whole command, \
             literals included)"
        ),
        "{lines:?}"
    );
    assert_eq!(
        lines.get(1).map(String::as_str),
        Some("* BYE Too much input before login, closing"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    sender.join().unwrap();
    still_serves(&srv);
    // The same with twelve connections in a row: each one ends, the server stays.
    for i in 0..12 {
        let mut c = Raw::connect(srv.imap);
        c.send(format!("s{i} ID (\"a\" {{52428800+}}\r\n").as_bytes());
        let sender = flood(&c.writer, 1024 * 1024);
        let lines = c.rest();
        assert!(
            lines[0].starts_with(&format!("s{i} BAD [TOOBIG]")),
            "{lines:?}"
        );
        assert!(lines.last().unwrap().starts_with("* BYE"), "{lines:?}");
        sender.join().unwrap();
    }
    still_serves(&srv);
}

#[test]
fn finding_2_prelogin_synchronizing_50_mib_literal_gets_no_without_continuation() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.imap);
    c.send(b"s2 ID ({52428800}\r\n");
    // No "+": the refusal comes instead, and the client (waiting for "+") sends nothing more.
    assert_eq!(
        c.line().as_deref(),
        Some(
            "s2 NO [TOOBIG] Literal too large (the limit is 34816 bytes for the whole command, \
             literals included)"
        )
    );
    c.send(b"s3 NOOP\r\n");
    assert_eq!(c.line().as_deref(), Some("s3 OK NOOP completed"));
    // Within the pre-login budget, ID with a literal works.
    c.send(b"s4 ID (\"name\" {4}\r\n");
    assert_eq!(c.line().as_deref(), Some("+ Ready for literal data"));
    c.send(b"mutt)\r\n");
    assert!(c.line().unwrap().starts_with("* ID"));
    assert_eq!(c.line().as_deref(), Some("s4 OK ID completed"));
    // Lines count too: 8 KiB of command line before login is the end (ID has a budget of its
    // own, RFC 2971's bound: `prelogin_id_may_be_as_large_as_rfc_2971_allows_and_no_larger`).
    let mut long = b"s5 CAPABILITY ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 9000));
    long.extend_from_slice(b"\r\n");
    c.send(&long);
    let lines = c.rest();
    assert_eq!(
        lines,
        [
            "s5 BAD Command too long (the limit is 8192 bytes, literals included)",
            "* BYE Too much input before login, closing"
        ]
    );
    still_serves(&srv);
}

/// imaptest `id`: RFC 2971 §3.3 allows 30 field-value pairs with values of 1024 octets, about
/// 31 KB, more than `limits.max_unauthenticated_command`; ID before login gets that much
/// (`ID_BUDGET`, 34 KiB) and no more.
#[test]
fn prelogin_id_may_be_as_large_as_rfc_2971_allows_and_no_larger() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.imap);
    let value = "1234567890".repeat(103)[..1024].to_string();
    let pairs: Vec<String> = (0..30)
        .map(|i| format!("\"f{i:02}3456789012345678901234567890\" \"{value}\""))
        .collect();
    let cmd = format!("i1 ID ({})\r\n", pairs.join(" "));
    assert!(cmd.len() > 31_000, "{}", cmd.len());
    c.send(cmd.as_bytes());
    assert!(c.line().unwrap().starts_with("* ID"));
    assert_eq!(c.line().as_deref(), Some("i1 OK ID completed"));
    // The same with literals.
    let pairs: Vec<String> = (0..30)
        .map(|i| format!("\"f{i:02}\" {{1024+}}\r\n{value}"))
        .collect();
    c.send(format!("i2 ID ({})\r\n", pairs.join(" ")).as_bytes());
    assert!(c.line().unwrap().starts_with("* ID"));
    assert_eq!(c.line().as_deref(), Some("i2 OK ID completed"));
    // Beyond it: refused, and before login the connection ends.
    let mut long = b"i3 ID (\"name\" \"".to_vec();
    long.extend(std::iter::repeat_n(b'a', 40_000));
    long.extend_from_slice(b"\")\r\n");
    c.send(&long);
    assert_eq!(
        c.rest(),
        [
            "i3 BAD Command too long (the limit is 34816 bytes, literals included)",
            "* BYE Too much input before login, closing"
        ]
    );
    still_serves(&srv);
}

#[test]
fn finding_2_prelogin_state_gate_comes_before_any_literal() {
    let srv = TestServer::start();
    // APPEND before login: refused before "+", and the session goes on.
    let mut c = Raw::connect(srv.imap);
    c.send(b"a1 APPEND INBOX {10}\r\n");
    assert_eq!(c.line().as_deref(), Some("a1 BAD Log in first"));
    // LOGIN in plaintext: refused before "+" as well (PRIVACYREQUIRED, RFC 3501 §6.2.3).
    c.send(b"a2 LOGIN {5}\r\n");
    let l = c.line().unwrap();
    assert!(l.starts_with("a2 NO [PRIVACYREQUIRED]"), "{l}");
    c.send(b"a3 NOOP\r\n");
    assert_eq!(c.line().as_deref(), Some("a3 OK NOOP completed"));
    // The same with LITERAL+, whose bytes are on their way: refused, then the connection ends.
    c.send(b"a4 APPEND INBOX {100000+}\r\n");
    let sender = flood(&c.writer, 100_000);
    let lines = c.rest();
    assert_eq!(
        lines,
        [
            "a4 BAD Log in first",
            "* BYE Too much input before login, closing"
        ]
    );
    sender.join().unwrap();
    still_serves(&srv);
}

#[test]
fn finding_2_after_login_a_command_over_max_command_size_gets_bad_and_the_session_goes_on() {
    let srv = crate::smtp::server_with_users(&[("imap", "max_literal_size = 300000")]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    // The state gate still comes first: SEARCH needs a selected mailbox.
    c.send(b"b0 SEARCH SUBJECT {70000}\r\n");
    assert_eq!(text(&c.response()), "b0 BAD No mailbox selected");
    c.ok("SELECT INBOX");
    // One literal over max_command_size (65536), LITERAL+: BAD [TOOBIG], the bytes are skipped.
    let mut cmd = b"b1 SEARCH SUBJECT {70000+}\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b'x', 70_000));
    cmd.extend_from_slice(b"\r\nb2 NOOP\r\n");
    c.send(&cmd);
    assert_eq!(
        text(&c.response()),
        "b1 BAD [TOOBIG] Literal too large (the limit is 65536 bytes for the whole command, \
         literals included)"
    );
    assert_eq!(text(&c.response()), "b2 OK NOOP completed");
    // Synchronizing: NO instead of "+".
    c.send(b"b3 SEARCH SUBJECT {70000}\r\n");
    assert!(text(&c.response()).starts_with("b3 NO [TOOBIG]"));
    // Several literals, each small, together over the limit.
    let mut cmd = b"b4 LIST {40000+}\r\n".to_vec();
    cmd.extend(std::iter::repeat_n(b'y', 40_000));
    cmd.extend_from_slice(b" {40000+}\r\n");
    cmd.extend(std::iter::repeat_n(b'z', 40_000));
    cmd.extend_from_slice(b"\r\n");
    c.send(&cmd);
    assert!(text(&c.response()).starts_with("b4 BAD [TOOBIG]"));
    c.ok("NOOP");
    // APPEND: the message may be as large as imap.max_literal_size, beyond max_command_size.
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    while msg.len() < 300_000 - 80 {
        msg.extend_from_slice(&[b'q'; 78]);
        msg.extend_from_slice(b"\r\n");
    }
    let t = c.append("INBOX", "()", &msg);
    assert!(t.contains("OK [APPENDUID"), "{t}");
    // ... and no larger.
    let tag = c.tag();
    c.send(format!("{tag} APPEND INBOX {{300001}}\r\n").as_bytes());
    assert_eq!(
        text(&c.response()),
        format!("{tag} NO [TOOBIG] Literal too large (the limit is 300000 bytes)")
    );
    let u = c.ok("FETCH 1 (RFC822.SIZE)");
    assert!(text(&u[0]).contains(&format!("RFC822.SIZE {}", msg.len())));
}

#[test]
fn finding_4_login_timeout_ends_a_connection_that_does_not_log_in() {
    let srv = crate::smtp::server_with_users(&[("limits", "login_timeout = \"2s\"")]);
    // Idle after the greeting.
    let mut c = Raw::connect(srv.imap);
    assert_eq!(
        c.rest(),
        ["* BYE Login timeout: not logged in in time, closing"]
    );
    // Busy, but never logging in: NOOPs do not extend the time.
    let mut c = Raw::connect(srv.imap);
    let mut lines = Vec::new();
    for i in 0..100 {
        c.send(format!("n{i} NOOP\r\n").as_bytes());
        let l = c.line().unwrap();
        let bye = l.starts_with("* BYE");
        lines.push(l);
        if bye {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("* BYE Login timeout: not logged in in time, closing"),
        "{lines:?}"
    );
    // Half a command line, then nothing (slowloris).
    let mut c = Raw::connect(srv.imap);
    c.send(b"h1 NOO");
    assert_eq!(
        c.rest(),
        ["* BYE Login timeout: not logged in in time, closing"]
    );
    // Over implicit TLS.
    let mut c = Imap::tls(srv.imaps, &srv.cert_pem());
    assert_eq!(
        text(&c.response()),
        "* BYE Login timeout: not logged in in time, closing"
    );
    assert!(c.closed());
    // A session that logged in is not bound by it (imap.idle_timeout applies instead).
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    std::thread::sleep(Duration::from_secs(3));
    c.ok("NOOP");
}

#[test]
fn finding_4_error_limit_before_login() {
    let srv = TestServer::start();
    let mut c = Raw::connect(srv.imap);
    for i in 1..=9 {
        c.send(format!("e{i} FROB\r\n").as_bytes());
        assert_eq!(c.line(), Some(format!("e{i} BAD Unknown command")));
    }
    // Good commands do not reset the count before login.
    c.send(b"e10 NOOP\r\n");
    assert_eq!(c.line().as_deref(), Some("e10 OK NOOP completed"));
    c.send(b"e11 LOGIN a b\r\n");
    assert_eq!(
        c.rest(),
        [
            "e11 NO [PRIVACYREQUIRED] Log in over TLS: use STARTTLS first (or the implicit-TLS \
             port)",
            "* BYE Too many invalid commands, closing"
        ]
    );
    still_serves(&srv);
}

#[test]
fn finding_4_error_limit_after_login_counts_bad_answers_in_a_row() {
    let srv = crate::smtp::server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    // 19 BAD, a good command, 19 BAD and NO answers: the session goes on.
    for _ in 0..19 {
        let (_, t) = c.cmd("FROB");
        assert!(t.contains(" BAD "), "{t}");
    }
    c.ok("NOOP");
    for _ in 0..19 {
        let (_, t) = c.cmd("FROB");
        assert!(t.contains(" BAD "), "{t}");
    }
    let (_, t) = c.cmd("SELECT Nowhere");
    assert!(t.contains(" NO "), "{t}");
    for _ in 0..19 {
        let (_, t) = c.cmd("FROB");
        assert!(t.contains(" BAD "), "{t}");
    }
    // The 20th BAD in a row ends it.
    let tag = c.tag();
    c.send(format!("{tag} FROB\r\n").as_bytes());
    assert_eq!(text(&c.response()), format!("{tag} BAD Unknown command"));
    assert_eq!(
        text(&c.response()),
        "* BYE Too many invalid commands, closing"
    );
    assert!(c.closed());
}

#[test]
fn finding_7_list_with_a_pathological_pattern_completes_and_other_clients_are_served() {
    // The finding's command: a 200,000-byte pattern over 50 mailboxes of 500-character names.
    // max_command_size is raised so that the pattern reaches the matcher.
    let srv = crate::smtp::server_with_users(&[("limits", "max_command_size = 1000000")]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let before = c.ok("LIST \"\" %").len();
    let names: Vec<String> = (0..50)
        .map(|i| format!("{}{i:010}", "a".repeat(490)))
        .collect();
    for n in &names {
        c.ok(&format!("CREATE {n}"));
    }
    // `a%` 245 times, then wildcards up to 200,000 bytes: matches all 50; with a `b` in the
    // middle: none.
    let pattern = |mid: &str| {
        let mut p = "a%".repeat(245);
        p.push_str(mid);
        while p.len() < 200_000 {
            p.push_str("*%");
        }
        p
    };
    // Several clients at once, more than the server has worker threads.
    let mut clients: Vec<(Imap, String, usize)> = Vec::new();
    for k in 0..4 {
        let mut l = Imap::login(&srv, "alice@example.test", "secret-alice");
        let (p, want) = if k % 2 == 0 {
            (pattern(""), 50)
        } else {
            (pattern("b"), 0)
        };
        let tag = l.tag();
        let mut cmd = format!("{tag} LIST \"\" {{{}+}}\r\n", p.len()).into_bytes();
        cmd.extend_from_slice(p.as_bytes());
        cmd.extend_from_slice(b"\r\n");
        l.send(&cmd);
        clients.push((l, tag, want));
    }
    // Meanwhile a new client gets its greeting and answers.
    still_serves(&srv);
    for (mut l, tag, want) in clients {
        let (u, t) = l.until_tagged(&tag);
        assert_eq!(t, format!("{tag} OK LIST completed"));
        assert_eq!(u.len(), want);
        for r in &u {
            let r = text(r);
            assert!(names.iter().any(|n| r.ends_with(n.as_str())), "{r}");
        }
    }
    // Plain patterns still work.
    let u = c.ok("LIST \"\" %");
    assert_eq!(u.len(), before + 50);
    let u = c.ok(&format!("LIST \"\" {}*", "a".repeat(490)));
    assert_eq!(u.len(), 50);
    // Too many patterns (RFC 5258 lists): BAD.
    let many = vec!["x"; 65].join(" ");
    let (_, t) = c.cmd(&format!("LIST \"\" ({many})"));
    assert!(t.contains("BAD Too many patterns"), "{t}");
}

#[test]
fn finding_7_search_and_fetch_work_is_bounded() {
    let srv = crate::smtp::server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let t = c.append("INBOX", "()", b"Subject: hello\r\n\r\nbody\r\n");
    assert!(t.contains("OK"), "{t}");
    c.ok("SELECT INBOX");
    // Many keys: up to 256 fine, more refused.
    let keys = |n: usize| vec!["SUBJECT hello"; n].join(" ");
    let u = c.ok(&format!("SEARCH {}", keys(256)));
    assert_eq!(text(&u[0]), "* SEARCH 1");
    let (_, t) = c.cmd(&format!("SEARCH {}", keys(257)));
    assert!(t.contains("BAD Too many search keys"), "{t}");
    // OR/NOT nest: counted as well.
    let ors = format!("{}ALL{}", "OR ALL ".repeat(8), "");
    let u = c.ok(&format!("SEARCH {ors}"));
    assert_eq!(text(&u[0]), "* SEARCH 1");
    // Nesting deeper than imap-codec's recursion limit: BAD, never a deep recursion.
    let (_, t) = c.cmd(&format!(
        "SEARCH {}ALL{}",
        "(".repeat(5000),
        ")".repeat(5000)
    ));
    assert!(t.contains(" BAD "), "{t}");
    // A large command (decoded off the async workers): a sequence set of many ranges.
    let set: Vec<String> = (0..9000).map(|i| format!("{}", i * 2 + 1)).collect();
    let u = c.ok(&format!("FETCH {} (FLAGS)", set.join(",")));
    assert_eq!(u.len(), 1);
    let u = c.ok(&format!("SEARCH {}", set.join(",")));
    assert_eq!(text(&u[0]), "* SEARCH 1");
    // FETCH: at most 8 body sections, at most 64 items.
    c.ok(&format!("FETCH 1 ({})", ["BODY.PEEK[]"; 8].join(" ")));
    let (_, t) = c.cmd(&format!("FETCH 1 ({})", ["BODY.PEEK[]"; 9].join(" ")));
    assert!(t.contains("BAD Too many body sections"), "{t}");
    let (_, t) = c.cmd(&format!("FETCH 1 ({})", ["FLAGS"; 65].join(" ")));
    assert!(t.contains("BAD Too many FETCH items"), "{t}");
    c.ok("NOOP");
}
