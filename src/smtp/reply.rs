//! Every reply the SMTP server sends, in one list, so that codes, enhanced status codes and texts
//! stay consistent and can be reviewed together.
//!
//! Enhanced status codes (RFC 3463, advertised per RFC 2034) are on every 2xx, 4xx and 5xx reply
//! except the greeting and the answers to EHLO/HELO, which RFC 2034 §3 exempts. 3xx replies (354,
//! 334) carry none either.

use std::borrow::Cow;

/// One single-line reply: `<code> <enhanced> <text>` (or `<code> <text>` without an enhanced code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: &'static str,
    pub text: Cow<'static, str>,
}

const fn r(code: u16, enhanced: &'static str, text: &'static str) -> Reply {
    Reply {
        code,
        enhanced,
        text: Cow::Borrowed(text),
    }
}

fn owned(code: u16, enhanced: &'static str, text: String) -> Reply {
    Reply {
        code,
        enhanced,
        text: Cow::Owned(text),
    }
}

impl Reply {
    /// Appends the reply line (with CRLF) to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.code.to_string().as_bytes());
        out.push(b' ');
        if !self.enhanced.is_empty() {
            out.extend_from_slice(self.enhanced.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(self.text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// A permanent failure (5xx): counts towards the session's error limit.
    pub fn is_error(&self) -> bool {
        self.code >= 500
    }
}

/// Writes a multi-line reply (`250-...` lines, then `250 ...`). Used for EHLO only.
pub fn write_multiline(out: &mut Vec<u8>, code: u16, lines: &[String]) {
    let n = lines.len();
    for (i, line) in lines.iter().enumerate() {
        out.extend_from_slice(code.to_string().as_bytes());
        out.push(if i + 1 == n { b' ' } else { b'-' });
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

// ---- connection ----

pub fn greeting(hostname: &str) -> Reply {
    owned(220, "", format!("{hostname} ESMTP Tanba"))
}
pub fn helo(hostname: &str) -> Reply {
    owned(250, "", hostname.to_string())
}
pub const BYE: Reply = r(221, "2.0.0", "Bye");
pub const SHUTTING_DOWN: Reply = r(421, "4.3.2", "Server shutting down");
pub const IDLE_TIMEOUT: Reply = r(421, "4.4.2", "Idle timeout, closing connection");
pub const SESSION_TIMEOUT: Reply = r(
    421,
    "4.4.2",
    "Session time limit exceeded, closing connection",
);
pub const TOO_MANY_ERRORS: Reply = r(421, "4.7.0", "Too many errors, closing connection");
/// Submission: not authenticated within `limits.login_timeout` (SPEC §8).
pub const LOGIN_TIMEOUT: Reply = r(421, "4.4.2", "Login timeout, closing connection");
/// `tanba user del` / `user passwd` ended the logged-in user's sessions (SPEC §8).
pub const ACCOUNT_CHANGED: Reply = r(
    421,
    "4.7.0",
    "Account changed by the administrator, closing connection",
);

// ---- generic ----

pub const OK: Reply = r(250, "2.0.0", "Ok");
pub const VRFY: Reply = r(
    252,
    "2.5.0",
    "Cannot VRFY user, but will accept message and attempt delivery",
);
pub const HELP: Reply = r(
    214,
    "2.0.0",
    "Commands: EHLO HELO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
);
pub const LINE_TOO_LONG: Reply = r(500, "5.5.6", "Line too long");
pub const UNKNOWN_COMMAND: Reply = r(500, "5.5.2", "Command unrecognized");
pub const NOT_IMPLEMENTED: Reply = r(502, "5.5.1", "Command not implemented");
pub fn syntax(usage: &str) -> Reply {
    owned(501, "5.5.4", format!("Syntax: {usage}"))
}
pub const BAD_SENDER_SYNTAX: Reply = r(501, "5.1.7", "Bad sender address syntax");
pub const BAD_RCPT_SYNTAX: Reply = r(501, "5.1.3", "Bad recipient address syntax");
pub fn bad_param(param: &str) -> Reply {
    owned(501, "5.5.4", format!("Invalid value for parameter {param}"))
}
pub fn unsupported_param(param: &str) -> Reply {
    owned(555, "5.5.4", format!("Unsupported parameter {param}"))
}
/// End of DATA: the sender's DMARC policy refuses the message (RFC 7489 §6.6.2, RFC 7372 §3.2).
pub fn policy_refused(why: &str) -> Reply {
    owned(550, "5.7.1", format!("Message refused: {why}"))
}
/// RCPT from an MX client that a DNS blocklist lists (RFC 5782; zone from the config).
pub fn dnsbl_listed(ip: std::net::IpAddr, zone: &str) -> Reply {
    owned(
        550,
        "5.7.1",
        format!("Client address [{ip}] is listed by {zone}"),
    )
}
/// RCPT of a new (client network, sender, recipient) triplet (RFC 6647; `auth.greylisting`).
pub fn greylisted(retry_in: u64) -> Reply {
    owned(
        451,
        "4.7.1",
        format!("Greylisted: first attempt from your network for this sender and recipient, try again in {retry_in} seconds"),
    )
}
/// MAIL beyond `limits.mx_messages_per_ip`.
pub const MX_RATE: Reply = r(
    451,
    "4.7.0",
    "Too many messages from your address, try again later",
);
/// MAIL from a new address while the rate table is full (`limits::MAX_RATE_ENTRIES`).
pub const MX_RATE_FULL: Reply = r(
    451,
    "4.7.0",
    "Too many senders at the moment, try again later",
);
pub const LOCAL_ERROR: Reply = r(451, "4.3.0", "Local error in processing, try again later");

// ---- sequence (RFC 5321 §4.1.4) ----

pub const NEED_EHLO: Reply = r(503, "5.5.1", "Send HELO/EHLO first");
pub const NEED_EHLO_FOR_AUTH: Reply = r(503, "5.5.1", "Send EHLO first");
pub const NESTED_MAIL: Reply = r(503, "5.5.1", "Nested MAIL command");
pub const NEED_MAIL: Reply = r(503, "5.5.1", "Need MAIL command");
pub const NEED_RCPT: Reply = r(503, "5.5.1", "Need RCPT command");
pub const AFTER_BDAT: Reply = r(503, "5.5.1", "Command not allowed after BDAT");
pub const NOT_IN_TRANSACTION: Reply = r(503, "5.5.1", "Not allowed during a mail transaction");

// ---- STARTTLS (RFC 3207) ----

pub const TLS_READY: Reply = r(220, "2.0.0", "Ready to start TLS");
pub const TLS_ACTIVE: Reply = r(503, "5.5.1", "TLS already active");

// ---- AUTH (RFC 4954) ----

pub const AUTH_NOT_HERE: Reply = r(502, "5.5.1", "AUTH not available on this port");
pub const AUTH_NEEDS_TLS: Reply = r(530, "5.7.0", "Must issue a STARTTLS command first");
pub const AUTH_AGAIN: Reply = r(503, "5.5.1", "Already authenticated");
pub const AUTH_MECHANISM: Reply = r(504, "5.5.4", "Unrecognized authentication type");
pub const AUTH_OK: Reply = r(235, "2.7.0", "Authentication successful");
pub const AUTH_FAILED: Reply = r(535, "5.7.8", "Authentication credentials invalid");
pub const AUTH_CANCELLED: Reply = r(501, "5.0.0", "Authentication cancelled");
pub const AUTH_BAD_BASE64: Reply = r(501, "5.5.2", "Cannot decode response");
pub const AUTH_TEMPORARY: Reply = r(454, "4.7.0", "Temporary authentication failure");
/// The client's address is banned for failed logins (SPEC §8); the session closes.
pub const AUTH_BANNED: Reply = r(
    421,
    "4.7.0",
    "Too many failed logins from your address, closing connection",
);
pub const AUTH_REQUIRED: Reply = r(530, "5.7.0", "Authentication required");
/// A SASL challenge line (`334 <base64>`); no enhanced code on 3xx.
pub fn auth_challenge(b64: &'static str) -> Reply {
    r(334, "", b64)
}

// ---- MAIL / RCPT ----

pub const SENDER_OK: Reply = r(250, "2.1.0", "Ok");
pub const RCPT_OK: Reply = r(250, "2.1.5", "Ok");
pub fn not_owner(addr: &str, user: &str) -> Reply {
    owned(
        553,
        "5.7.1",
        format!("<{addr}>: Sender address not owned by user {user}"),
    )
}
pub const NON_ASCII_ADDRESS: Reply = r(
    553,
    "5.6.7",
    "Non-ASCII address requires the SMTPUTF8 parameter",
);
pub fn user_unknown(addr: &str) -> Reply {
    owned(550, "5.1.1", format!("<{addr}>: user unknown"))
}
/// An alias chain that loops or is too long (RFC 3463 X.4.6, routing loop detected).
pub fn alias_loop(addr: &str) -> Reply {
    owned(550, "5.4.6", format!("<{addr}>: alias loop detected"))
}
/// `postmaster@`/`abuse@` must be accepted (RFC 5321 §4.5.1) but have no mailbox yet.
pub const NO_POSTMASTER: Reply = r(
    451,
    "4.3.0",
    "Postmaster mailbox not set up yet, try again later",
);
pub const RELAY_DENIED: Reply = r(554, "5.7.1", "Relaying denied");
pub const TOO_MANY_RCPTS: Reply = r(452, "4.5.3", "Too many recipients");

// ---- DATA / BDAT ----

pub const START_DATA: Reply = r(354, "", "End data with <CR><LF>.<CR><LF>");
pub const SIZE_EXCEEDED: Reply = r(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
pub const TOO_BIG: Reply = r(552, "5.3.4", "Message too big");
/// Quota (`tanba user quota`): at RCPT, the recipient's mailbox is already full — temporary
/// (RFC 5321 §4.5.3.1.10 lets 452 stand for a recipient we cannot take now; RFC 3463 X.2.2
/// "mailbox full"), so the sender retries this recipient later and keeps the others.
pub fn mailbox_full(addr: &str) -> Reply {
    owned(
        452,
        "4.2.2",
        format!("<{addr}>: mailbox full, try again later"),
    )
}
/// Quota: at the end of DATA/BDAT, the message does not fit into a recipient's remaining
/// storage (RFC 5321 §4.2.2 552 "exceeded storage allocation", RFC 3463 5.2.2).
pub const OVER_QUOTA: Reply = r(
    552,
    "5.2.2",
    "Requested mail action aborted: exceeded storage allocation (recipient's mailbox is full)",
);
/// RFC 5321 §2.3.8: CR and LF only as CRLF (see `data.rs`).
pub const BARE_LINE_END: Reply = r(
    550,
    "5.6.0",
    "Message refused: bare CR, or a line of only \".\" not ended by CRLF",
);
/// The spool file or the store could not be written (disk full): RFC 3463 4.3.1.
pub const NO_SPOOL_SPACE: Reply = r(452, "4.3.1", "Insufficient system storage");
pub fn chunk_ok(n: u64) -> Reply {
    owned(250, "2.0.0", format!("{n} octets received"))
}
pub fn queued(id: &str) -> Reply {
    owned(250, "2.0.0", format!("Ok: queued as {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let mut out = Vec::new();
        OK.write_to(&mut out);
        greeting("mx.example").write_to(&mut out);
        START_DATA.write_to(&mut out);
        assert_eq!(
            out,
            b"250 2.0.0 Ok\r\n220 mx.example ESMTP Tanba\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        );
        let mut out = Vec::new();
        write_multiline(&mut out, 250, &["a".into(), "B C".into()]);
        assert_eq!(out, b"250-a\r\n250 B C\r\n");
    }
}
