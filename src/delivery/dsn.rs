//! Bounces: RFC 3464 delivery status notifications, as `multipart/report;
//! report-type=delivery-status` (RFC 6522) built with mail-builder: a human explanation, the
//! machine-readable `message/delivery-status`, and the original header (`text/rfc822-headers`).
//!
//! A bounce goes to the envelope sender: into its INBOX (through the inbound filter, like any
//! local delivery) when the sender is a local account, else into the queue with the null sender
//! `<>`. A message with the null sender never causes a bounce (RFC 5321 §4.5.5), so bounces
//! cannot loop. The caller stores the [`Bounce`] in the same transaction as the queue change
//! that caused it ([`Store::queue_commit`]).

use std::time::SystemTime;

use anyhow::{Context, Result};
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::raw::Raw;
use mail_builder::mime::MimePart;
use mail_builder::MessageBuilder;

use crate::config::Config;
use crate::filter::Filter;
use crate::store::{Bounce, QueueRecord, RcptStatus, Store};

/// Longest original header section quoted in a bounce.
const MAX_QUOTED_HEADER: usize = 64 * 1024;

/// Builds the DSN for `failed` recipients of `rec` (whose message bytes are `original`).
pub fn build(
    hostname: &str,
    rec: &QueueRecord,
    failed: &[&RcptStatus],
    original: &[u8],
    now: i64,
) -> Result<Vec<u8>> {
    let date = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .unwrap_or_default()
            .format("%a, %d %b %Y %H:%M:%S +0000")
            .to_string()
    };

    let mut human = format!(
        "This is the mail system at {hostname}.\r\n\r\n\
         Your message could not be delivered to one or more recipients.\r\n\
         Its header is attached below.\r\n\r\n"
    );
    for r in failed {
        human.push_str(&format!("<{}>: ", r.addr));
        if r.status.as_deref() == Some("4.4.7") {
            human.push_str("delivery time expired; last error: ");
        }
        match (&r.remote_mta, &r.last_error) {
            (Some(host), Some(e)) if is_smtp_reply(e) => {
                human.push_str(&format!("host {host} said: {e}"));
            }
            (_, Some(e)) => human.push_str(e),
            (_, None) => human.push_str("delivery failed"),
        }
        human.push_str("\r\n");
    }

    // RFC 3464 §2.2 (per-message) and §2.3 (per-recipient) fields.
    let mut status = format!(
        "Reporting-MTA: dns; {}\r\nArrival-Date: {}\r\n",
        field(hostname),
        date(rec.created)
    );
    for r in failed {
        let addr_type = if r.addr.is_ascii() { "rfc822" } else { "utf-8" };
        status.push_str(&format!(
            "\r\nFinal-Recipient: {addr_type}; {}\r\nAction: failed\r\nStatus: {}\r\n",
            field(&r.addr),
            r.status
                .as_deref()
                .filter(|s| valid_status(s))
                .unwrap_or("5.0.0")
        ));
        if let Some(host) = &r.remote_mta {
            let name = host.split('[').next().unwrap_or(host);
            status.push_str(&format!("Remote-MTA: dns; {}\r\n", field(name)));
        }
        match r.last_error.as_deref() {
            Some(e) if is_smtp_reply(e) => {
                status.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", field(e)));
            }
            // Our own reason (MTA-STS, DNS, connection): RFC 3464 §2.3.6 allows a
            // diagnostic type of our own, as Postfix's `X-Postfix;`.
            Some(e) => status.push_str(&format!("Diagnostic-Code: X-Tanba; {}\r\n", field(e))),
            None => {}
        }
        status.push_str(&format!("Last-Attempt-Date: {}\r\n", date(now)));
    }

    let headers = header_section(original);
    let headers_cte = if headers.is_ascii() { "7bit" } else { "8bit" };

    let report = MimePart::new(
        ContentType::new("multipart/report").attribute("report-type", "delivery-status"),
        vec![
            MimePart::new("text/plain", human),
            MimePart::new("message/delivery-status", status.into_bytes()).transfer_encoding("7bit"),
            MimePart::new("text/rfc822-headers", headers.to_vec()).transfer_encoding(headers_cte),
        ],
    );
    let mailer_daemon = format!("MAILER-DAEMON@{hostname}");
    let msg = MessageBuilder::new()
        .from(("Mail Delivery System", mailer_daemon.as_str()))
        .to(rec.sender.clone())
        .subject("Undelivered Mail Returned to Sender")
        .date(now)
        .message_id(format!("dsn.{}.{now}@{hostname}", rec.id))
        .header("Auto-Submitted", Raw::new("auto-replied"))
        .body(report)
        .write_to_vec()
        .context("building the DSN")?;
    Ok(msg)
}

/// Decides where the bounce for `sender` goes and prepares it for storing.
pub fn route(
    store: &Store,
    config: &Config,
    filter: &Filter,
    sender: &str,
    dsn: Vec<u8>,
) -> Result<Option<Bounce>> {
    let now = SystemTime::now();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let domain = sender.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
    if !config.is_local_domain(domain) {
        let record = store.new_queue_record("", &[sender.to_string()])?;
        return Ok(Some(Bounce::Queue { record, raw: dsn }));
    }
    let Some(account) = store.account_for_address(sender)? else {
        tracing::warn!("bounce for {sender} discarded: no such local account");
        return Ok(None);
    };
    let inbox = store
        .mailbox(account.id, "INBOX")?
        .with_context(|| format!("account {} has no INBOX", account.email))?;
    let date = chrono::DateTime::from_timestamp(unix, 0)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S +0000");
    let mut raw = format!(
        "Received: by {} (Tanba) for <{}>;\r\n\t{date}\r\n",
        config.hostname,
        field(sender)
    )
    .into_bytes();
    raw.extend_from_slice(&dsn);
    // Every local delivery goes through the inbound filter (SPEC §5).
    let p = filter.process(&raw, now);
    Ok(Some(Bounce::Local {
        mailbox_id: inbox.id,
        raw: p.message,
        keywords: p.keywords,
        internal_date: unix,
    }))
}

/// `550 ...`: text that is an SMTP reply (and so a `Diagnostic-Code: smtp;`).
fn is_smtp_reply(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) && matches!(b[0], b'4' | b'5')
}

fn valid_status(s: &str) -> bool {
    let p: Vec<&str> = s.split('.').collect();
    p.len() == 3
        && matches!(p[0], "2" | "4" | "5")
        && p[1..]
            .iter()
            .all(|x| !x.is_empty() && x.len() <= 3 && x.bytes().all(|b| b.is_ascii_digit()))
}

/// A value safe for one header-like line: printable ASCII, bounded.
fn field(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(900)
        .collect()
}

/// The header section of `raw` (up to and including the blank line), bounded.
fn header_section(raw: &[u8]) -> &[u8] {
    let end = memchr::memmem::find(raw, b"\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| memchr::memmem::find(raw, b"\n\n").map(|i| i + 2))
        .unwrap_or(raw.len());
    let mut h = &raw[..end];
    if h.len() > MAX_QUOTED_HEADER {
        let cut = memchr::memrchr(b'\n', &h[..MAX_QUOTED_HEADER])
            .map(|i| i + 1)
            .unwrap_or(0);
        h = &h[..cut];
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::RcptState;
    use mail_parser::MimeHeaders;

    #[test]
    fn dsn_names_the_recipient_and_the_remote_reply() {
        let rec = QueueRecord {
            id: 42,
            sender: "alice@a.test".into(),
            recipients: vec![],
            blob_id: 1,
            size: 10,
            created: 1_700_000_000,
            next_attempt: 0,
            attempts: 1,
            last_error: None,
        };
        let bob = RcptStatus {
            addr: "bob@b.test".into(),
            state: RcptState::Failed,
            attempts: 1,
            last_error: Some("550 5.1.1 <bob@b.test>: no such user".into()),
            status: Some("5.1.1".into()),
            remote_mta: Some("mx.b.test[127.0.0.1]".into()),
            bounced: false,
        };
        let carol = RcptStatus {
            addr: "carol@c.test".into(),
            last_error: Some("c.test does not accept mail (null MX, RFC 7505)".into()),
            status: Some("5.1.10".into()),
            remote_mta: None,
            ..bob.clone()
        };
        let original = b"From: alice@a.test\r\nSubject: contract\r\n\r\nsecret body\r\n";
        let dsn = build(
            "mail.a.test",
            &rec,
            &[&bob, &carol],
            original,
            1_700_000_100,
        )
        .unwrap();
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(
            text.contains("report-type=\"delivery-status\"")
                || text.contains("report-type=delivery-status"),
            "{text}"
        );
        assert!(text.contains("Final-Recipient: rfc822; bob@b.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.b.test\r\nDiagnostic-Code: smtp; 550 5.1.1 <bob@b.test>: no such user\r\n"), "{text}");
        assert!(
            text.contains(
                "Final-Recipient: rfc822; carol@c.test\r\nAction: failed\r\nStatus: 5.1.10\r\n\
             Diagnostic-Code: X-Tanba; c.test does not accept mail (null MX, RFC 7505)\r\n"
            ),
            "{text}"
        );
        assert!(text.contains("Reporting-MTA: dns; mail.a.test"));
        assert!(text.contains("Subject: contract"));
        assert!(!text.contains("secret body"));
        assert!(text.contains("Auto-Submitted: auto-replied"));
        assert!(
            text.contains("To: <alice@a.test>") || text.contains("To: alice@a.test"),
            "{text}"
        );

        // A real MIME parser sees three parts of the right types.
        let m = mail_parser::MessageParser::new().parse(&dsn).unwrap();
        let ct = m.content_type().unwrap();
        assert_eq!(ct.ctype(), "multipart");
        assert_eq!(ct.subtype(), Some("report"));
        assert_eq!(m.parts.len(), 4, "root + 3 parts");
    }

    #[test]
    fn header_section_is_bounded() {
        assert_eq!(header_section(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_section(b"A: b\n\nbody"), b"A: b\n\n");
        let long = "X: y\r\n".repeat(20_000);
        assert!(header_section(long.as_bytes()).len() <= MAX_QUOTED_HEADER);
        assert!(header_section(long.as_bytes()).ends_with(b"\r\n"));
    }
}
