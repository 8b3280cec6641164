//! `GET /metrics` (issue 14 point 5, SPEC §11): the Prometheus text on the `http.metrics`
//! listener moves by exactly what SMTP, the signature filter, IMAP logins and outbound delivery
//! did; it parses (a strict line check here, and Python's `prometheus_client` parser, Debian
//! `python3-prometheus-client`); it is not served on the public HTTP listeners.

use std::collections::BTreeMap;

use crate::filter::server_trusting_pki;
use crate::filter_pki::{signed_contract, signed_message};
use crate::http::{get, get_tls};
use crate::imap::Imap;
use crate::smtp::{mx_to_alice, Client};
use crate::support::tls;
use crate::support::*;

/// The names SPEC §11 promises, with the labels it names.
const SPEC_NAMES: [(&str, &[&str]); 5] = [
    ("tanba_messages_received_total", &[]),
    ("tanba_signature_verdicts_total", &["result"]),
    ("tanba_queue_messages", &[]),
    ("tanba_logins_total", &["protocol", "result"]),
    ("tanba_connections", &["protocol"]),
];

/// A scrape: every sample by its series as written (`name{a="x",b="y"}`), values as numbers.
struct Scrape {
    text: String,
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    /// The value of `series`; panics (with the scrape) when it is missing.
    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }
}

fn scrape(srv: &TestServer) -> Scrape {
    let r = get(srv.metrics.expect("http.metrics"), "localhost", "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let ct = r.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text();
    let samples = check_exposition(&text);
    Scrape { text, samples }
}

fn is_name(s: &str, first: fn(char) -> bool) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(first) && c.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn metric_name(s: &str) -> bool {
    is_name(s, |c| c.is_ascii_alphabetic() || c == '_' || c == ':')
}

fn label_name(s: &str) -> bool {
    is_name(s, |c| c.is_ascii_alphabetic() || c == '_') && !s.contains(':')
}

/// Checks every line against the text format 0.0.4 (HELP, TYPE, samples with escaped label
/// values and a float value; each sample after the TYPE of its family, families not repeated)
/// and returns the samples.
fn check_exposition(text: &str) -> BTreeMap<String, f64> {
    assert!(
        text.ends_with('\n'),
        "the last line must end with a line feed"
    );
    let mut samples = BTreeMap::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(metric_name(name), "{line}");
            // Escapes in HELP: only \\ and \n.
            let mut it = help.chars();
            while let Some(c) = it.next() {
                if c == '\\' {
                    assert!(matches!(it.next(), Some('\\' | 'n')), "{line}");
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect(line);
            assert!(metric_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                typed.insert(name.to_string(), kind.to_string()).is_none(),
                "family {name} typed twice"
            );
            current = Some((name.to_string(), kind.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment line {line:?}");
        // name, optional {labels}, one space, value.
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l.strip_suffix('}').expect(line))),
            None => (series, None),
        };
        assert!(metric_name(name), "{line}");
        if let Some(labels) = labels {
            let mut rest = labels;
            loop {
                let (k, after) = rest.split_once("=\"").expect(line);
                assert!(label_name(k), "{line}");
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next().expect(line) {
                        (_, '\\') => {
                            let (_, e) = chars.next().expect(line);
                            assert!(matches!(e, '\\' | '"' | 'n'), "{line}");
                        }
                        (i, '"') => break i,
                        (_, c) => assert!(c != '\n', "{line}"),
                    }
                };
                rest = &after[end + 1..];
                if rest.is_empty() {
                    break;
                }
                rest = rest.strip_prefix(',').expect(line);
            }
        }
        let (family, kind) = current.as_ref().expect("a sample before any TYPE line");
        let ok = match kind.as_str() {
            "histogram" => [
                format!("{family}_bucket"),
                format!("{family}_sum"),
                format!("{family}_count"),
            ]
            .contains(&name.to_string()),
            _ => name == family,
        };
        assert!(ok, "sample {name} outside its family {family}");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "{series} twice"
        );
    }
    samples
}

/// Python's own parser of the format must read the whole scrape; returns its family names.
fn python_parse(text: &str) -> Vec<String> {
    const PY: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
for f in text_string_to_metric_families(text):
    print(f.name, f.type, len(f.samples))
"#;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("scrape.txt");
    std::fs::write(&f, text).unwrap();
    python(PY, &[f.to_str().unwrap()])
        .lines()
        .map(|l| l.to_string())
        .collect()
}

#[test]
fn metrics_move_with_smtp_filter_and_imap_traffic() {
    let srv = server_trusting_pki("");
    let before = scrape(&srv);

    // Every name SPEC §11 promises, with HELP, TYPE and its labels.
    for (name, labels) in SPEC_NAMES {
        assert!(
            before.text.contains(&format!("# HELP {name} ")),
            "{name}: {}",
            before.text
        );
        assert!(before.text.contains(&format!("# TYPE {name} ")), "{name}");
        let sample = before
            .samples
            .keys()
            .find(|s| s.split('{').next() == Some(name))
            .unwrap_or_else(|| panic!("no sample of {name}"));
        for l in labels {
            assert!(sample.contains(&format!("{l}=\"")), "{sample}: {l}");
        }
    }
    // Python's parser reads it too (it names counters without `_total`).
    let families = python_parse(&before.text);
    for want in [
        "tanba_messages_received counter",
        "tanba_signature_verdicts counter",
        "tanba_queue_messages gauge",
        "tanba_logins counter",
        "tanba_connections gauge",
        "tanba_filter_duration_seconds histogram",
        "tanba_store_sync_duration_seconds histogram",
    ] {
        assert!(
            families.iter().any(|f| f.starts_with(&format!("{want} "))),
            "{want} not in {families:?}"
        );
    }

    // Traffic: a validly signed NCA message, an unsigned one and one with an expired signer,
    // over the MX; then IMAP: one wrong login and one right one, on one connection.
    let signed = signed_message("legal", "Договор поставки");
    let expired = signed_contract("expired", "expired");
    let plain = b"From: a@b.kz\r\nTo: alice@example.test\r\nSubject: plain\r\n\r\nno signature\r\n"
        .to_vec();
    for m in [&signed, &plain, &expired] {
        mx_to_alice(&srv, m);
    }
    let mut imap = Imap::tls(srv.imaps, &srv.cert_pem());
    let (_, t) = imap.cmd("LOGIN alice@example.test wrong-password-1");
    assert!(t.contains(" NO "), "{t}");
    imap.ok("LOGIN alice@example.test secret-alice");
    let during = scrape(&srv);
    // The IMAP connection is open while we scrape (its greeting came after it was counted).
    assert_eq!(during.get("tanba_connections{protocol=\"imap\"}"), 1.0);
    imap.ok("LOGOUT");
    let after = scrape(&srv);

    let delta = |s: &str| after.get(s) - before.get(s);
    let moved = [
        ("tanba_messages_received_total{listener=\"mx\"}", 3.0),
        (
            "tanba_messages_received_total{listener=\"submission\"}",
            0.0,
        ),
        ("tanba_messages_delivered_total{destination=\"local\"}", 3.0),
        (
            "tanba_messages_delivered_total{destination=\"remote\"}",
            0.0,
        ),
        ("tanba_signature_verdicts_total{result=\"pass\"}", 1.0),
        ("tanba_signature_verdicts_total{result=\"none\"}", 1.0),
        ("tanba_signature_verdicts_total{result=\"fail\"}", 1.0),
        ("tanba_signature_verdicts_total{result=\"permerror\"}", 0.0),
        ("tanba_signature_verdicts_total{result=\"temperror\"}", 0.0),
        ("tanba_signature_reasons_total{reason=\"expired\"}", 1.0),
        ("tanba_signature_reasons_total{reason=\"untrusted\"}", 0.0),
        ("tanba_filter_duration_seconds_count", 3.0),
        ("tanba_filter_duration_seconds_bucket{le=\"+Inf\"}", 3.0),
        (
            "tanba_logins_total{protocol=\"imap\",result=\"success\"}",
            1.0,
        ),
        (
            "tanba_logins_total{protocol=\"imap\",result=\"failure\"}",
            1.0,
        ),
        (
            "tanba_logins_total{protocol=\"imap\",result=\"banned\"}",
            0.0,
        ),
        (
            "tanba_logins_total{protocol=\"smtp\",result=\"success\"}",
            0.0,
        ),
        ("tanba_connections_accepted_total{protocol=\"smtp\"}", 3.0),
        ("tanba_connections_accepted_total{protocol=\"imap\"}", 1.0),
        (
            "tanba_connections_accepted_total{protocol=\"submission\"}",
            0.0,
        ),
        (
            "tanba_connections_refused_total{protocol=\"imap\",reason=\"pool\"}",
            0.0,
        ),
        ("tanba_bans_total", 0.0),
        ("tanba_messages_deferred_total", 0.0),
        ("tanba_messages_bounced_total", 0.0),
    ];
    let wrong: Vec<String> = moved
        .iter()
        .filter(|(s, d)| delta(s) != *d)
        .map(|(s, d)| format!("{s}: moved {} (expected {d})", delta(s)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}\n{}", after.text);

    // Each message waited for a group commit before its 250 (sled's flush + fdatasync: on
    // PostgreSQL each write commits in its own transaction and this histogram stays still).
    if !crate::support::backend_is_postgres() {
        assert!(delta("tanba_store_sync_duration_seconds_count") >= 3.0);
    }
    assert!(after.get("tanba_filter_duration_seconds_sum") > 0.0);
    // Gauges measured at the scrape: nothing queued, no bans, three message files more.
    assert_eq!(after.get("tanba_queue_messages"), 0.0);
    assert_eq!(after.get("tanba_queue_oldest_age_seconds"), 0.0);
    assert_eq!(after.get("tanba_bans"), 0.0);
    let grown = delta("tanba_store_bytes");
    let sent = (signed.len() + plain.len() + expired.len()) as f64;
    assert!(
        grown >= sent,
        "store grew by {grown}, messages are {sent} bytes"
    );
    assert!(after.get("tanba_process_start_time_seconds") > 1.7e9);
    python_parse(&after.text);
}

#[test]
fn metrics_are_not_on_the_public_listeners() {
    let srv = TestServer::start();
    assert_eq!(
        get(srv.http.unwrap(), "mail.example.test", "/metrics").status,
        404
    );
    assert_eq!(get_tls(&srv, "mail.example.test", "/metrics").status, 404);
}

/// An aiosmtpd receiver on `port`: recipients starting with `reject` get a 550, others 250.
const PY_RECEIVER: &str = r#"
import sys
from aiosmtpd.controller import Controller
class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith('reject'):
            return '550 5.1.1 <%s>: no such user' % address
        envelope.rcpt_tos.append(address)
        return '250 2.1.5 OK'
    async def handle_DATA(self, server, session, envelope):
        return '250 2.0.0 OK'
c = Controller(Handler(), hostname='127.0.0.1', port=int(sys.argv[1]))
c.start()
print(sys.argv[1], flush=True)
sys.stdin.read()
c.stop()
"#;

#[test]
fn queue_deferrals_deliveries_and_bounces_are_counted() {
    // The relay is down at first: the message waits in the queue, deferred.
    let closed = closed_port();
    let relay = format!("relay = \"localhost:{}\"", closed.port);
    let srv = TestServer::start_with(&[("delivery", &relay), ("delivery", "retry = [\"1s\"]")]);
    srv.add_user("alice@example.test", "secret-alice");
    let before = scrape(&srv);
    let mut c = Client::connect(srv.submission);
    c.ok("EHLO client.example", "250");
    c.starttls(&srv.cert_pem());
    c.login("alice@example.test", "secret-alice");
    let msg = b"From: alice@example.test\r\nSubject: out\r\n\r\nhello\r\n";
    let r = c.send_mail("alice@example.test", &["ok@b.test", "reject@b.test"], msg);
    assert_eq!(r.code, 250, "{}", r.line());
    c.cmd("QUIT");

    let deferred = wait_for("a deferral", &srv, || {
        let s = scrape(&srv);
        (s.get("tanba_messages_deferred_total") >= 2.0).then_some(s)
    });
    assert_eq!(deferred.get("tanba_queue_messages"), 1.0);
    assert!(deferred.get("tanba_queue_oldest_age_seconds") >= 0.0);
    assert_eq!(
        deferred.get("tanba_messages_received_total{listener=\"submission\"}")
            - before.get("tanba_messages_received_total{listener=\"submission\"}"),
        1.0
    );
    assert_eq!(
        deferred.get("tanba_logins_total{protocol=\"smtp\",result=\"success\"}"),
        1.0
    );
    // Only local copies go through the filter: none here.
    assert_eq!(deferred.get("tanba_filter_duration_seconds_count"), 0.0);

    // The relay comes up: one recipient delivered, one refused for good (bounced to alice).
    let (mut receiver, _) = spawn_python_server(PY_RECEIVER, [closed.release().to_string()]);
    // The record leaves the queue in the transaction that marks the refusal bounced; the
    // counter follows right after it.
    let done = wait_for("an empty queue and a bounce", &srv, || {
        let s = scrape(&srv);
        let over = s.get("tanba_queue_messages") == 0.0;
        (over && s.get("tanba_messages_bounced_total") >= 1.0).then_some(s)
    });
    let _ = receiver.kill();
    let _ = receiver.wait();
    assert_eq!(
        done.get("tanba_messages_delivered_total{destination=\"remote\"}"),
        1.0
    );
    assert_eq!(done.get("tanba_messages_bounced_total"), 1.0);
    assert_eq!(done.get("tanba_queue_oldest_age_seconds"), 0.0);
}

/// A TCP connection to `addr` from 127.0.0.2 (another client than the scraper on 127.0.0.1).
fn connect_from_2(addr: std::net::SocketAddr) -> std::net::TcpStream {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&std::net::SocketAddr::from(([127, 0, 0, 2], 0)).into())
        .unwrap();
    s.connect(&addr.into()).unwrap();
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    s
}

#[test]
fn bans_and_refusals_are_counted() {
    let srv = TestServer::start_with(&[
        ("limits", "auth_failures = 2"),
        ("limits", "ban_time = \"60s\""),
    ]);
    srv.add_user("alice@example.test", "secret-alice");
    let mut stream = tls::Stream::Plain(connect_from_2(srv.imaps));
    stream.start_tls(&srv.cert_pem());
    let mut imap = Imap::from_stream(stream);
    imap.response();
    // Two wrong passwords from 127.0.0.2: the second bans the address.
    imap.send(b"a LOGIN alice@example.test wrong-password-1\r\n");
    imap.send(b"b LOGIN alice@example.test wrong-password-2\r\n");
    // A login is counted when it answers (after its delay), the ban before that.
    let banned = wait_for("two failed logins", &srv, || {
        let s = scrape(&srv);
        (s.get("tanba_logins_total{protocol=\"imap\",result=\"failure\"}") >= 2.0).then_some(s)
    });
    assert_eq!(banned.get("tanba_bans_total"), 1.0);
    assert_eq!(banned.get("tanba_bans"), 1.0);
    assert_eq!(
        banned.get("tanba_logins_total{protocol=\"imap\",result=\"failure\"}"),
        2.0
    );
    // A new connection from the banned address is refused at accept, and counted.
    let mut c = connect_from_2(srv.imap);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(&mut c), &mut line).unwrap();
    assert!(line.starts_with("* BYE"), "{line}");
    let after = scrape(&srv);
    assert_eq!(
        after.get("tanba_connections_refused_total{protocol=\"imap\",reason=\"banned\"}"),
        1.0
    );
    assert_eq!(
        after.get("tanba_connections_accepted_total{protocol=\"imap\"}"),
        1.0
    );
}
