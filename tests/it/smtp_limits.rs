//! SMTP limits and bad input: message size, line length, error count, timeouts, clients that
//! vanish, byte-at-a-time clients, the connection limit, and graceful shutdown. Each test checks
//! that the session (or the server) goes on afterwards.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::smtp::{server_with_users, stored, Client};

fn begin(c: &mut Client) {
    c.ok("MAIL FROM:<a@sender.example>", "250 2.1.0");
    c.ok("RCPT TO:<alice@example.test>", "250 2.1.5");
}

#[test]
fn oversize_message_is_refused_and_the_session_stays_usable() {
    let srv = server_with_users(&[("smtp", "max_message_size = 1000")]);
    let mut c = Client::connect(srv.mx);
    let ehlo = c.ok("EHLO client.example", "250");
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 1000"), "{ehlo:?}");

    // Declared too big: refused at MAIL.
    c.ok(
        "MAIL FROM:<a@sender.example> SIZE=1001",
        "552 5.3.4 Message size exceeds fixed maximum message size",
    );
    // Not declared, but too big: read to the end, then 552.
    begin(&mut c);
    c.ok("DATA", "354");
    let big = "0123456789".repeat(50);
    for _ in 0..10 {
        c.send(format!("{big}\r\n").as_bytes());
    }
    c.send(b".\r\n");
    assert_eq!(c.reply().line(), "552 5.3.4 Message too big");
    // The transaction is over; a normal message goes through on the same session.
    c.ok("RCPT TO:<alice@example.test>", "503 5.5.1");
    begin(&mut c);
    c.ok("DATA", "354");
    c.send(b"Subject: small\r\n\r\nfits\r\n.\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));

    // The same with BDAT: the chunk that crosses the limit and every later one get 552, and
    // BDAT LAST ends the transaction.
    begin(&mut c);
    let chunk = vec![b'z'; 600];
    c.send(b"BDAT 600\r\n");
    c.send(&chunk);
    assert_eq!(c.reply().line(), "250 2.0.0 600 octets received");
    c.send(b"BDAT 600\r\n");
    c.send(&chunk);
    assert_eq!(c.reply().line(), "552 5.3.4 Message too big");
    c.send(b"BDAT 3 LAST\r\nabc");
    assert_eq!(c.reply().line(), "552 5.3.4 Message too big");
    begin(&mut c);
    c.send(b"BDAT 24 LAST\r\nSubject: small 2\r\n\r\nok\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));
    c.ok("QUIT", "221");

    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 2);
    assert!(alice[0].ends_with(b"Subject: small\r\n\r\nfits\r\n"));
    assert!(alice[1].ends_with(b"Subject: small 2\r\n\r\nok\r\n"));
}

#[test]
fn long_command_line_gets_500_and_the_session_goes_on() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    // 10 kB in one line, sent in pieces.
    c.send(b"MAIL FROM:<");
    for _ in 0..10 {
        c.send(&[b'a'; 1000]);
    }
    c.send(b"@sender.example>\r\nNOOP\r\n");
    assert_eq!(c.reply().line(), "500 5.5.6 Line too long");
    assert_eq!(c.reply().line(), "250 2.0.0 Ok");
    // A line exactly at the limit (4096 octets with CRLF) is still a command.
    let noop = format!("NOOP {}", "n".repeat(4096 - 7));
    c.ok(&noop, "250 2.0.0");
    c.ok(&format!("{noop}x"), "500 5.5.6");
    // Text lines in DATA may be much longer than 1000 octets (we accept them).
    begin(&mut c);
    c.ok("DATA", "354");
    let long = "y".repeat(20_000);
    c.send(format!("Subject: long\r\n\r\n{long}\r\n.\r\n").as_bytes());
    assert!(c.reply().line().starts_with("250 2.0.0 Ok: queued as "));
    let alice = stored(&srv, "alice@example.test");
    assert!(alice[0].ends_with(format!("\r\n\r\n{long}\r\n").as_bytes()));
}

#[test]
fn too_many_errors_close_the_session() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    for _ in 0..19 {
        c.ok("BOGUS", "500 5.5.2");
    }
    c.send(b"BOGUS\r\n");
    assert_eq!(c.reply().line(), "500 5.5.2 Command unrecognized");
    assert_eq!(
        c.reply().line(),
        "421 4.7.0 Too many errors, closing connection"
    );
    assert!(c.closed());
    // The server is fine.
    let mut c = Client::connect(srv.mx);
    c.ok("NOOP", "250");
}

#[test]
fn idle_session_is_closed_with_421() {
    let srv = server_with_users(&[("smtp", "idle_timeout = \"1s\"")]);
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    // Say nothing: the server gives up.
    assert_eq!(
        c.reply().line(),
        "421 4.4.2 Idle timeout, closing connection"
    );
    assert!(c.closed());
}

#[test]
fn session_time_limit_closes_a_busy_session() {
    let srv = server_with_users(&[("smtp", "session_timeout = \"2s\"")]);
    let mut c = Client::connect(srv.mx);
    let start = Instant::now();
    let last = loop {
        let r = c.cmd("NOOP");
        if r.code != 250 {
            break r;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "never closed");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        last.line(),
        "421 4.4.2 Session time limit exceeded, closing connection"
    );
    assert!(c.closed());
}

#[test]
fn client_vanishing_mid_data_stores_nothing() {
    let mut srv = server_with_users(&[]);
    {
        let mut c = Client::connect(srv.mx);
        c.ok("EHLO client.example", "250");
        begin(&mut c);
        c.ok("DATA", "354");
        c.send(b"Subject: half\r\n\r\nthe first half of a message\r\n");
        // Dropped here: the connection closes in the middle of DATA.
    }
    {
        // The same, in the middle of a BDAT chunk.
        let mut c = Client::connect(srv.mx);
        c.ok("EHLO client.example", "250");
        begin(&mut c);
        c.send(b"BDAT 100 LAST\r\nSubject: half\r\n");
    }
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO client.example", "250");
    begin(&mut c);
    c.ok("DATA", "354");
    c.send(b"Subject: whole\r\n\r\ncomplete\r\n.\r\n");
    assert!(c.reply().line().starts_with("250 2.0.0"));
    c.ok("QUIT", "221");
    // A graceful stop waits for every session, so the vanished ones have surely ended.
    assert_eq!(srv.stop(), Some(0));
    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 1, "{alice:?}");
    assert!(alice[0].ends_with(b"Subject: whole\r\n\r\ncomplete\r\n"));
}

#[test]
fn byte_at_a_time_client() {
    let srv = server_with_users(&[]);
    let mut c = Client::connect(srv.mx);
    let script = b"EHLO slow.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\nSubject: slow\r\n\r\n..dot\r\n.\r\nQUIT\r\n";
    for b in script {
        c.send(&[*b]);
    }
    let mut got = Vec::new();
    loop {
        let r = c.reply();
        got.push(r.code);
        if r.code == 221 {
            break;
        }
    }
    assert_eq!(got, [250, 250, 250, 354, 250, 221]);
    let alice = stored(&srv, "alice@example.test");
    assert!(alice[0].ends_with(b"Subject: slow\r\n\r\n.dot\r\n"));
}

#[test]
fn connections_beyond_the_limit_get_421() {
    // smtp.max_connections counts MX only (SPEC §8): the submission session takes no MX slot.
    let srv = server_with_users(&[("smtp", "max_connections = 2")]);
    let mut a = Client::connect(srv.mx);
    let _b = Client::connect(srv.submission);
    let _b2 = Client::connect(srv.mx);
    let mut c = Client::connect_raw(srv.mx);
    assert_eq!(
        c.reply().line(),
        "421 4.7.0 Too many connections, try again later"
    );
    assert!(c.closed());
    a.ok("QUIT", "221");
    drop(a);
    // A slot is free again once a session ends.
    let start = Instant::now();
    loop {
        let mut c = Client::connect_raw(srv.mx);
        if c.reply().code == 220 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_finishes_the_current_command_then_says_421_and_exits_0() {
    let mut srv = server_with_users(&[]);
    // An idle session, and one in the middle of DATA.
    let mut idle = Client::connect(srv.mx);
    idle.ok("EHLO idle.example", "250");
    let mut busy = Client::connect(srv.mx);
    busy.ok("EHLO busy.example", "250");
    begin(&mut busy);
    busy.ok("DATA", "354");
    busy.send(b"Subject: in flight\r\n\r\nstarted before SIGTERM\r\n");

    let pid = srv.pid().unwrap() as libc::pid_t;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    // Shutdown has begun once the listeners are closed.
    let start = Instant::now();
    while TcpStream::connect(srv.mx).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(20), "still accepting");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The idle session was told and closed.
    assert_eq!(idle.reply().line(), "421 4.3.2 Server shutting down");
    assert!(idle.closed());
    // The message in flight is completed and acknowledged, then the session ends.
    busy.send(b"and finished after it\r\n.\r\n");
    assert!(busy.reply().line().starts_with("250 2.0.0 Ok: queued as "));
    busy.send(b"NOOP\r\n");
    assert_eq!(busy.reply().line(), "421 4.3.2 Server shutting down");
    assert!(busy.closed());

    assert_eq!(srv.stop(), Some(0));
    let alice = stored(&srv, "alice@example.test");
    assert_eq!(alice.len(), 1);
    assert!(alice[0].ends_with(
        b"Subject: in flight\r\n\r\nstarted before SIGTERM\r\nand finished after it\r\n"
    ));
}
