//! `250` means "on disk": messages acknowledged by concurrent sessions survive a SIGKILL that
//! follows the last acknowledgement immediately — small ones (inline in sled, group commit) and
//! large ones (over 64 KiB: a file beside sled, store/files.rs) alike.

use std::collections::BTreeSet;

use crate::smtp::{server_with_users, stored, Client};

const CONNECTIONS: usize = 5;
const PER_CONNECTION: usize = 10;
/// Lines of 81 octets that make every third message about 100 KB.
const BIG_LINES: usize = 1250;

#[test]
fn every_acknowledged_message_survives_kill_9() {
    let mut srv = server_with_users(&[]);
    let mx = srv.mx;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|w| {
            std::thread::spawn(move || {
                let mut c = Client::connect(mx);
                c.ok("EHLO load.example", "250");
                let mut acked = Vec::new();
                for i in 0..PER_CONNECTION {
                    let subject = format!("durable {w}-{i}");
                    let mut body =
                        format!("Subject: {subject}\r\n\r\nmessage {i} of worker {w}\r\n");
                    if i % 3 == 0 {
                        for l in 0..BIG_LINES {
                            body.push_str(&format!("{l:08} {}\r\n", "x".repeat(70)));
                        }
                        body.push_str("end of a large message\r\n");
                    }
                    let r = c.send_mail(
                        "load@sender.example",
                        &["alice@example.test", "bob@example.test"],
                        body.as_bytes(),
                    );
                    assert!(r.line().starts_with("250 2.0.0 Ok: queued as "), "{r:?}");
                    acked.push(subject);
                }
                acked
            })
        })
        .collect();
    let acked: BTreeSet<String> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    // Right after the last 250: no graceful anything.
    srv.kill9();
    assert_eq!(acked.len(), CONNECTIONS * PER_CONNECTION);

    srv.restart();
    for user in ["alice@example.test", "bob@example.test"] {
        let messages = stored(&srv, user);
        let subjects: Vec<String> = messages
            .iter()
            .map(|m| {
                let text = String::from_utf8_lossy(m);
                text.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .expect("a Subject header")
                    .to_string()
            })
            .collect();
        let large = messages
            .iter()
            .filter(|m| m.len() > 100_000)
            .inspect(|m| assert!(m.ends_with(b"end of a large message\r\n")))
            .count();
        assert_eq!(large, CONNECTIONS * PER_CONNECTION.div_ceil(3), "{user}");
        let unique: BTreeSet<String> = subjects.iter().cloned().collect();
        assert_eq!(subjects.len(), unique.len(), "duplicates for {user}");
        let missing: Vec<&String> = acked.difference(&unique).collect();
        assert!(missing.is_empty(), "{user} lost {missing:?}");
    }
}
