//! Command syntax: one command line in, one [`Command`] (or a [`ParseError`] that says which reply
//! to give) out. The grammar is smtp-proto's (RFC 5321 and extension parameters); this module
//! narrows it to what Tanba implements and advertises. Pure: no state, no I/O.

use smtp_proto::{Error as ProtoError, Request};

use super::reply::{self, Reply};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    Auth {
        mechanism: Mechanism,
        /// `None`: no initial response; `Some("")`: the empty one (sent as `=`, RFC 4954 §4).
        initial: Option<String>,
    },
    Mail(MailFrom),
    Rcpt(RcptTo),
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy,
    Help,
    /// Known to smtp-proto but not offered here (EXPN, ETRN, ATRN, BURL).
    NotImplemented(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailFrom {
    /// Empty for the null reverse-path `<>`.
    pub address: String,
    /// Declared size (RFC 1870), if given.
    pub size: Option<u64>,
    /// BODY=8BITMIME (RFC 6152).
    pub eight_bit: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptTo {
    /// The forward-path; `postmaster` (no domain) for `<Postmaster>` (RFC 5321 §4.5.1).
    pub address: String,
}

/// A line that is not a command we can execute, with the reply it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub Reply);

/// MAIL parameters we accept. Others (DSN, BINARYMIME, REQUIRETLS, ...) belong to extensions we
/// do not advertise, so a client that sends them gets 555 (RFC 5321 §4.1.1.11).
const MAIL_FLAGS_ALLOWED: u64 =
    smtp_proto::MAIL_BODY_7BIT | smtp_proto::MAIL_BODY_8BITMIME | smtp_proto::MAIL_SMTPUTF8;

pub fn parse(line: &[u8]) -> Result<Command, ParseError> {
    let req = Request::parse(&mut line.iter()).map_err(|e| ParseError(error_reply(e)))?;
    Ok(match req {
        Request::Ehlo { host } => Command::Ehlo(host.into_owned()),
        Request::Helo { host } => Command::Helo(host.into_owned()),
        Request::Lhlo { .. } => return Err(ParseError(reply::UNKNOWN_COMMAND)),
        Request::StartTls => Command::StartTls,
        Request::Auth {
            mechanism,
            initial_response,
        } => Command::Auth {
            mechanism: match mechanism {
                smtp_proto::AUTH_PLAIN => Mechanism::Plain,
                smtp_proto::AUTH_LOGIN => Mechanism::Login,
                _ => Mechanism::Other,
            },
            initial: match initial_response {
                s if s.is_empty() => None,
                s if s == "=" => Some(String::new()),
                s => Some(s.into_owned()),
            },
        },
        Request::Mail { from } => {
            let extra = from.flags & !MAIL_FLAGS_ALLOWED != 0
                || from.trans_id.is_some()
                || from.by != 0
                || from.env_id.is_some()
                || from.solicit.is_some()
                || from.mtrk.is_some()
                || from.hold_for != 0
                || from.hold_until != 0
                || from.mt_priority != 0;
            if extra {
                return Err(ParseError(reply::unsupported_param(
                    "(only SIZE, BODY=7BIT/8BITMIME, SMTPUTF8, AUTH)",
                )));
            }
            let address = from.address.into_owned();
            if !address.is_empty() && !has_domain(&address) {
                return Err(ParseError(reply::BAD_SENDER_SYNTAX));
            }
            Command::Mail(MailFrom {
                address,
                size: (from.size > 0).then_some(from.size as u64),
                eight_bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
                smtputf8: from.flags & smtp_proto::MAIL_SMTPUTF8 != 0,
            })
        }
        Request::Rcpt { to } => {
            if to.flags != 0 || to.orcpt.is_some() || to.rrvs != 0 {
                return Err(ParseError(reply::unsupported_param("(none are supported)")));
            }
            let address = to.address.into_owned();
            if address.is_empty() {
                // smtp-proto maps both <> and <Postmaster> to "": only the latter is valid here.
                if contains_ci(line, b"<postmaster>") {
                    Command::Rcpt(RcptTo {
                        address: "postmaster".into(),
                    })
                } else {
                    return Err(ParseError(reply::BAD_RCPT_SYNTAX));
                }
            } else if !has_domain(&address) {
                return Err(ParseError(reply::BAD_RCPT_SYNTAX));
            } else {
                Command::Rcpt(RcptTo { address })
            }
        }
        Request::Data => Command::Data,
        Request::Bdat {
            chunk_size,
            is_last,
        } => Command::Bdat {
            size: chunk_size as u64,
            last: is_last,
        },
        Request::Rset => Command::Rset,
        Request::Noop { .. } => Command::Noop,
        Request::Quit => Command::Quit,
        Request::Vrfy { .. } => Command::Vrfy,
        Request::Help { .. } => Command::Help,
        Request::Expn { .. } => Command::NotImplemented("EXPN"),
        Request::Etrn { .. } => Command::NotImplemented("ETRN"),
        Request::Atrn { .. } => Command::NotImplemented("ATRN"),
        Request::Burl { .. } => Command::NotImplemented("BURL"),
    })
}

/// The verb of a command for logs (never the arguments: AUTH lines carry secrets).
pub fn verb(cmd: &Command) -> &'static str {
    match cmd {
        Command::Ehlo(_) => "EHLO",
        Command::Helo(_) => "HELO",
        Command::StartTls => "STARTTLS",
        Command::Auth { .. } => "AUTH",
        Command::Mail(_) => "MAIL",
        Command::Rcpt(_) => "RCPT",
        Command::Data => "DATA",
        Command::Bdat { .. } => "BDAT",
        Command::Rset => "RSET",
        Command::Noop => "NOOP",
        Command::Quit => "QUIT",
        Command::Vrfy => "VRFY",
        Command::Help => "HELP",
        Command::NotImplemented(v) => v,
    }
}

fn error_reply(e: ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => reply::UNKNOWN_COMMAND,
        ProtoError::InvalidSenderAddress => reply::BAD_SENDER_SYNTAX,
        ProtoError::InvalidRecipientAddress => reply::BAD_RCPT_SYNTAX,
        ProtoError::SyntaxError { syntax } => reply::syntax(syntax),
        ProtoError::InvalidParameter { param } => reply::bad_param(param),
        ProtoError::UnsupportedParameter { param } => {
            let p: String = param
                .chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect();
            reply::unsupported_param(&p)
        }
        // A complete line always ends in LF, so these do not occur; answer as for bad syntax.
        ProtoError::NeedsMoreData { .. }
        | ProtoError::ResponseTooLong
        | ProtoError::InvalidResponse { .. } => reply::syntax("command line"),
    }
}

fn has_domain(addr: &str) -> bool {
    matches!(addr.rsplit_once('@'), Some((l, d)) if !l.is_empty() && !d.is_empty())
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Command, ParseError> {
        parse(s.as_bytes())
    }

    fn code(s: &str) -> (u16, &'static str) {
        let e = p(s).unwrap_err().0;
        (e.code, e.enhanced)
    }

    #[test]
    fn commands() {
        assert_eq!(
            p("EHLO client.example\r\n"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(p("helo x\r\n"), Ok(Command::Helo("x".into())));
        assert_eq!(p("STARTTLS\r\n"), Ok(Command::StartTls));
        assert_eq!(p("noop hello\r\n"), Ok(Command::Noop));
        assert_eq!(p("VRFY bob\r\n"), Ok(Command::Vrfy));
        assert_eq!(p("EXPN list\r\n"), Ok(Command::NotImplemented("EXPN")));
        assert_eq!(
            p("BDAT 100 LAST\r\n"),
            Ok(Command::Bdat {
                size: 100,
                last: true
            })
        );
        assert_eq!(
            p("BDAT 0\r\n"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
    }

    #[test]
    fn mail_parameters() {
        assert_eq!(
            p("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8\r\n"),
            Ok(Command::Mail(MailFrom {
                address: "a@b.example".into(),
                size: Some(1000),
                eight_bit: true,
                smtputf8: true
            }))
        );
        assert_eq!(
            p("MAIL FROM:<>\r\n"),
            Ok(Command::Mail(MailFrom {
                address: String::new(),
                size: None,
                eight_bit: false,
                smtputf8: false
            }))
        );
        assert_eq!(code("MAIL FROM:<a@b> RET=FULL\r\n"), (555, "5.5.4"));
        assert_eq!(code("MAIL FROM:<a@b> BODY=BINARYMIME\r\n"), (555, "5.5.4"));
        assert_eq!(code("MAIL FROM:<a@b> FOO=1\r\n"), (555, "5.5.4"));
        assert_eq!(code("MAIL FROM:<a@b> SIZE=x\r\n"), (501, "5.5.4"));
        assert_eq!(code("MAIL FROM:a@b\r\n"), (501, "5.5.4"));
        assert_eq!(code("MAIL FROM:<a@>\r\n"), (501, "5.1.7"));
    }

    #[test]
    fn rcpt() {
        assert_eq!(
            p("RCPT TO:<Bob@Example.test>\r\n"),
            Ok(Command::Rcpt(RcptTo {
                address: "Bob@Example.test".into()
            }))
        );
        assert_eq!(
            p("RCPT TO:<Postmaster>\r\n"),
            Ok(Command::Rcpt(RcptTo {
                address: "postmaster".into()
            }))
        );
        assert_eq!(code("RCPT TO:<>\r\n"), (501, "5.1.3"));
        assert_eq!(code("RCPT TO:<a@b> NOTIFY=NEVER\r\n"), (555, "5.5.4"));
        assert_eq!(code("RCPT TO:\r\n"), (501, "5.5.4"));
    }

    #[test]
    fn auth() {
        assert_eq!(
            p("AUTH PLAIN\r\n"),
            Ok(Command::Auth {
                mechanism: Mechanism::Plain,
                initial: None
            })
        );
        assert_eq!(
            p("AUTH LOGIN dXNlcg==\r\n"),
            Ok(Command::Auth {
                mechanism: Mechanism::Login,
                initial: Some("dXNlcg==".into())
            })
        );
        assert_eq!(
            p("AUTH PLAIN =\r\n"),
            Ok(Command::Auth {
                mechanism: Mechanism::Plain,
                initial: Some(String::new())
            })
        );
        assert_eq!(
            p("AUTH CRAM-MD5\r\n"),
            Ok(Command::Auth {
                mechanism: Mechanism::Other,
                initial: None
            })
        );
    }

    #[test]
    fn errors() {
        assert_eq!(code("FOO\r\n"), (500, "5.5.2"));
        assert_eq!(code("\r\n"), (500, "5.5.2"));
        assert_eq!(code("LHLO x\r\n"), (500, "5.5.2"));
        assert_eq!(code("EHLO\r\n"), (501, "5.5.4"));
        assert_eq!(code("BDAT x\r\n"), (501, "5.5.4"));
        // Garbage bytes never panic.
        for b in [
            &b"\xff\xfe\x00\r\n"[..],
            b"MAIL FROM:<\xff@\xff>\r\n",
            b"\x00",
        ] {
            let _ = parse(b);
        }
    }
}
