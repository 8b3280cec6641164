//! Greylisting (`auth.greylisting`, RFC 6647) and the per-address MX message rate
//! (`limits.mx_messages_per_ip`), over the real binary on loopback. Clients on 127.0.0.2, ...
//! emulate other machines (127.0.0.x is one /24 for greylisting, separate addresses for the rate).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::smtp::{server_with_users, stored, Client};
use crate::support::mail::header_fields;
use crate::support::tls::Stream;
use crate::support::*;

/// The greylisting delay of these tests (seconds).
const DELAY: u64 = 2;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// An MX client from `from`, after EHLO.
fn mx(srv: &TestServer, from: IpAddr) -> Client {
    let mut c = Client::from_stream(Stream::connect_from(srv.mx, from));
    assert_eq!(c.reply().line(), "220 mail.example.test ESMTP Tanba");
    c.ok("EHLO sender.example", "250");
    c
}

fn greylisting_server(extra: &str) -> TestServer {
    let lines = format!(
        "greylisting = true\ngreylist_delay = \"{DELAY}s\"\ngreylist_expire = \"1h\"\n{extra}"
    );
    server_with_users(&[("top", &lines)])
}

/// MAIL + RCPT of `from` → `to` from `client`: the RCPT's reply.
fn rcpt(srv: &TestServer, client: IpAddr, from: &str, to: &str) -> String {
    let mut c = mx(srv, client);
    c.ok(&format!("MAIL FROM:<{from}>"), "250 2.1.0");
    let r = c.cmd(&format!("RCPT TO:<{to}>")).line();
    c.ok("QUIT", "221");
    r
}

fn subjects(srv: &TestServer, email: &str) -> Vec<String> {
    stored(srv, email)
        .iter()
        .filter_map(|m| {
            String::from_utf8_lossy(m)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        })
        .collect()
}

#[test]
fn a_new_triplet_is_deferred_then_accepted_after_the_delay_and_remembered_across_kill_9() {
    let mut srv = greylisting_server("");
    let local = ip("127.0.0.1");
    // First attempt: 451 4.7.1 at RCPT, saying how long to wait. An unknown recipient still
    // gets its 550 (no record made for it).
    let mut c = mx(&srv, local);
    c.ok("MAIL FROM:<news@sender.example>", "250 2.1.0");
    let r = c.cmd("RCPT TO:<alice@example.test>").line();
    assert_eq!(
        r,
        format!(
            "451 4.7.1 Greylisted: first attempt from your network for this sender and \
             recipient, try again in {DELAY} seconds"
        )
    );
    // The server counts whole seconds from its first attempt, which was before this instant.
    let first = Instant::now();
    c.ok("RCPT TO:<nobody@example.test>", "550 5.1.1");
    c.ok("DATA", "503");
    c.ok("QUIT", "221");
    // An immediate retry, here from another address of the same /24: still deferred.
    let r = rcpt(
        &srv,
        ip("127.0.0.2"),
        "news@sender.example",
        "alice@example.test",
    );
    assert!(r.starts_with("451 4.7.1 Greylisted"), "{r}");
    // Past the delay: accepted and stored.
    std::thread::sleep(Duration::from_secs(DELAY).saturating_sub(first.elapsed()));
    let mut c = mx(&srv, local);
    c.send_mail_ok(
        "news@sender.example",
        &["alice@example.test"],
        b"Subject: after the delay\r\n\r\nhello\r\n",
    );
    c.ok("QUIT", "221");
    assert_eq!(subjects(&srv, "alice@example.test"), ["after the delay"]);
    let log = srv.log();
    assert!(
        log.contains("greylist: deferred (new triplet)")
            && log.contains("greylist: deferred (retried too early)")
            && log.contains("greylist: passed after"),
        "{log}"
    );
    assert!(log.contains("client_ip=127.0.0.2"), "{log}");

    // kill -9 right after the 250: the pass was durable with the message.
    srv.restart();
    let mut c = mx(&srv, ip("127.0.0.3"));
    c.send_mail_ok(
        "news@sender.example",
        &["alice@example.test"],
        b"Subject: after the restart\r\n\r\nhello again\r\n",
    );
    // Another recipient is another triplet: deferred, greylisting is still on.
    c.ok("MAIL FROM:<news@sender.example>", "250 2.1.0");
    c.ok("RCPT TO:<bob@example.test>", "451 4.7.1");
    c.ok("QUIT", "221");
    assert_eq!(
        subjects(&srv, "alice@example.test"),
        ["after the delay", "after the restart"]
    );
    assert!(srv.log().contains("greylist: passed (known triplet)"));
    // The message that waited says how long, under our Received header; the next one does not.
    let msgs = stored(&srv, "alice@example.test");
    let waited = |m: &[u8]| {
        let fields = header_fields(m);
        let at = fields.iter().position(|(n, _)| n == "X-Greylist")?;
        assert_eq!(fields[at - 1].0, "Received", "{fields:?}");
        let v = fields[at].1.clone();
        let secs = v
            .strip_prefix("delayed ")
            .and_then(|r| r.strip_suffix(" seconds by mail.example.test (Tanba)"))
            .unwrap_or_else(|| panic!("{v}"));
        Some(secs.parse::<u64>().unwrap())
    };
    assert!(waited(&msgs[0]).is_some_and(|s| s >= DELAY), "{msgs:?}");
    assert_eq!(waited(&msgs[1]), None);
}

#[test]
fn submission_and_allow_listed_clients_are_never_greylisted() {
    let srv = greylisting_server("greylist_allow = [\"127.0.0.2\", \"10.0.0.0/8\"]\n");
    // Submission (authenticated), to a local recipient and to ourselves: accepted at once.
    let mut c = Client::connect_tls(srv.submissions, &srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    c.send_mail_ok(
        "alice@example.test",
        &["bob@example.test"],
        b"Subject: submitted\r\n\r\nno delay\r\n",
    );
    c.ok("QUIT", "221");
    assert_eq!(subjects(&srv, "bob@example.test"), ["submitted"]);
    // An allow-listed MX client passes at once; its neighbour does not.
    let mut c = mx(&srv, ip("127.0.0.2"));
    c.send_mail_ok(
        "news@sender.example",
        &["bob@example.test"],
        b"Subject: allowed\r\n\r\nno delay\r\n",
    );
    c.ok("QUIT", "221");
    let r = rcpt(
        &srv,
        ip("127.0.0.3"),
        "news@sender.example",
        "bob@example.test",
    );
    assert!(r.starts_with("451 4.7.1 Greylisted"), "{r}");
    assert_eq!(subjects(&srv, "bob@example.test"), ["submitted", "allowed"]);
    let log = srv.log();
    assert!(
        log.contains("greylist: skipped, client in auth.greylist_allow"),
        "{log}"
    );
    // The submission never reached greylisting: the only decisions are the two MX ones.
    let decisions = log
        .lines()
        .filter(|l| l.contains("tanba::senderauth::greylist"))
        .count();
    assert_eq!(decisions, 2, "{log}");
}

/// Messages per address in the rate test, and its window: N + 1 MAILs from one address must
/// fall within WINDOW / N of each other (the bucket refills one message per WINDOW / N), which
/// leaves seconds for a handful of local messages.
const N: usize = 3;
const WINDOW: u64 = 15;

#[test]
fn the_mx_message_rate_is_per_address_and_refills_after_the_window() {
    let srv = server_with_users(&[(
        "limits",
        &format!(
            "mx_messages_per_ip = {N}\nmx_messages_window = \"{WINDOW}s\"\nmx_rate_exempt = []"
        ),
    )]);
    let a = ip("127.0.0.1");
    let started = Instant::now();
    let mut c = mx(&srv, a);
    for i in 0..N {
        c.send_mail_ok(
            "bulk@sender.example",
            &["alice@example.test"],
            format!("Subject: bulk {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    // The (N+1)-th message from the same address, on the same or a new connection: 451 at MAIL.
    c.ok(
        "MAIL FROM:<bulk@sender.example>",
        "451 4.7.0 Too many messages",
    );
    c.ok("QUIT", "221");
    let mut c2 = mx(&srv, a);
    c2.ok(
        "MAIL FROM:<bulk@sender.example>",
        "451 4.7.0 Too many messages",
    );
    assert!(
        started.elapsed() < Duration::from_secs(WINDOW / N as u64),
        "this machine is too slow for the test's window"
    );
    // The session goes on (a 4xx is no error): RCPT without a transaction is still refused.
    c2.ok("RCPT TO:<alice@example.test>", "503");
    c2.ok("QUIT", "221");
    // Another address has its own budget.
    let mut b = mx(&srv, ip("127.0.0.2"));
    b.send_mail_ok(
        "other@sender.example",
        &["alice@example.test"],
        b"Subject: other address\r\n\r\nx\r\n",
    );
    b.ok("QUIT", "221");
    // Submission from the limited address is not counted.
    let mut s = Client::connect_tls(srv.submissions, &srv.cert_pem());
    s.login("bob@example.test", "secret-bob-1");
    s.send_mail_ok(
        "bob@example.test",
        &["alice@example.test"],
        b"Subject: submitted\r\n\r\nx\r\n",
    );
    s.ok("QUIT", "221");
    // One line in the log for the refusals, with the address; not a fail2ban match (the filter
    // only counts `tanba::auth` lines).
    let log = srv.log();
    assert_eq!(log.matches("MX message rate exceeded").count(), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("MX message rate exceeded") && l.contains("client_ip=127.0.0.1")),
        "{log}"
    );
    // After the window (counted from before the first message, plus a second for the time
    // from `started` to that message) the address's whole budget is back.
    std::thread::sleep(Duration::from_secs(WINDOW + 1).saturating_sub(started.elapsed()));
    let mut c = mx(&srv, a);
    for i in 0..N {
        c.send_mail_ok(
            "bulk@sender.example",
            &["alice@example.test"],
            format!("Subject: again {i}\r\n\r\nx\r\n").as_bytes(),
        );
    }
    c.ok("QUIT", "221");
    assert_eq!(subjects(&srv, "alice@example.test").len(), 2 * N + 2);
}
