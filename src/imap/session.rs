//! One IMAP session: the state machine of RFC 3501 §3, the single state gate
//! ([`is_allowed`]), and the read → decode → gate → dispatch → sync → tagged reply loop.

use std::net::SocketAddr;
use std::sync::Arc;

use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{Code, StatusKind};
use imap_codec::imap_types::IntoStatic;
use imap_codec::CommandCodec;

use super::cmd;
use super::conn::{self, Conn, Frame, Refusal, Rest};
use super::list_ext;
use super::response::{self, CmdError, Reply};
use super::search_ext::{self, ReturnOpts};
use super::selected::Selected;
use crate::server::App;
use crate::shutdown::Shutdown;
use crate::store::Account;

/// RFC 3501 §3 connection states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    Authenticated,
    Selected,
    Logout,
}

/// Commands as the state gate sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Capability,
    Noop,
    Logout,
    Id,
    StartTls,
    Login,
    Authenticate,
    Select,
    Examine,
    Create,
    Delete,
    Rename,
    Subscribe,
    Unsubscribe,
    List,
    Lsub,
    Status,
    Append,
    Idle,
    Namespace,
    Enable,
    Check,
    Close,
    Unselect,
    Expunge,
    Search,
    Sort,
    Thread,
    Fetch,
    Store,
    Copy,
    Move,
    /// Parsed but not offered by us (SORT, THREAD, COMPRESS, QUOTA, ...), or unknown.
    Unsupported,
}

impl Kind {
    pub fn of(body: &CommandBody<'_>) -> Kind {
        use CommandBody as C;
        match body {
            C::Capability => Kind::Capability,
            C::Noop => Kind::Noop,
            C::Logout => Kind::Logout,
            C::Id { .. } => Kind::Id,
            C::StartTLS => Kind::StartTls,
            C::Login { .. } => Kind::Login,
            C::Authenticate { .. } => Kind::Authenticate,
            C::Select { .. } => Kind::Select,
            C::Examine { .. } => Kind::Examine,
            C::Create { .. } => Kind::Create,
            C::Delete { .. } => Kind::Delete,
            C::Rename { .. } => Kind::Rename,
            C::Subscribe { .. } => Kind::Subscribe,
            C::Unsubscribe { .. } => Kind::Unsubscribe,
            C::List { .. } => Kind::List,
            C::Lsub { .. } => Kind::Lsub,
            C::Status { .. } => Kind::Status,
            C::Append { .. } => Kind::Append,
            C::Idle => Kind::Idle,
            C::Namespace => Kind::Namespace,
            C::Enable { .. } => Kind::Enable,
            C::Check => Kind::Check,
            C::Close => Kind::Close,
            C::Unselect => Kind::Unselect,
            C::Expunge | C::ExpungeUid { .. } => Kind::Expunge,
            C::Search { .. } => Kind::Search,
            C::Sort { .. } => Kind::Sort,
            C::Thread { .. } => Kind::Thread,
            C::Fetch { .. } => Kind::Fetch,
            C::Store { .. } => Kind::Store,
            C::Copy { .. } => Kind::Copy,
            C::Move { .. } => Kind::Move,
            _ => Kind::Unsupported,
        }
    }

    /// From the command name at the start of a command's first line (`tag NAME ...`, `tag UID
    /// NAME ...`), before the command is complete — for the literal gate.
    pub fn from_line(line: &[u8]) -> Kind {
        let mut words = line
            .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
            .filter(|w| !w.is_empty())
            .skip(1);
        let mut name = words.next().unwrap_or_default().to_ascii_uppercase();
        if name == b"UID" {
            name = words.next().unwrap_or_default().to_ascii_uppercase();
        }
        match name.as_slice() {
            b"CAPABILITY" => Kind::Capability,
            b"NOOP" => Kind::Noop,
            b"LOGOUT" => Kind::Logout,
            b"ID" => Kind::Id,
            b"STARTTLS" => Kind::StartTls,
            b"LOGIN" => Kind::Login,
            b"AUTHENTICATE" => Kind::Authenticate,
            b"SELECT" => Kind::Select,
            b"EXAMINE" => Kind::Examine,
            b"CREATE" => Kind::Create,
            b"DELETE" => Kind::Delete,
            b"RENAME" => Kind::Rename,
            b"SUBSCRIBE" => Kind::Subscribe,
            b"UNSUBSCRIBE" => Kind::Unsubscribe,
            b"LIST" => Kind::List,
            b"LSUB" => Kind::Lsub,
            b"STATUS" => Kind::Status,
            b"APPEND" => Kind::Append,
            b"IDLE" => Kind::Idle,
            b"NAMESPACE" => Kind::Namespace,
            b"ENABLE" => Kind::Enable,
            b"CHECK" => Kind::Check,
            b"CLOSE" => Kind::Close,
            b"UNSELECT" => Kind::Unselect,
            b"EXPUNGE" => Kind::Expunge,
            b"SEARCH" => Kind::Search,
            b"SORT" => Kind::Sort,
            b"THREAD" => Kind::Thread,
            b"FETCH" => Kind::Fetch,
            b"STORE" => Kind::Store,
            b"COPY" => Kind::Copy,
            b"MOVE" => Kind::Move,
            _ => Kind::Unsupported,
        }
    }
}

/// The state gate: whether `kind` may run in `state` (RFC 3501 §6, RFC 2177, RFC 5161, RFC 2971),
/// and the answer when it may not. Handlers assume it has said yes. LOGIN and AUTHENTICATE need
/// TLS (SPEC §4; RFC 3501 §6.2.3 LOGINDISABLED).
pub fn is_allowed(kind: Kind, state: State, tls: bool) -> Result<(), Reply> {
    use Kind as K;
    use State as S;
    match (kind, state) {
        (K::Unsupported, _) => Err(Reply::bad("Unknown or unsupported command")),
        (_, S::Logout) => Err(Reply::bad("Logging out")),
        (K::Capability | K::Noop | K::Logout | K::Id, _) => Ok(()),
        (K::StartTls, S::NotAuthenticated) if !tls => Ok(()),
        (K::StartTls, S::NotAuthenticated) => Err(Reply::bad("TLS is already active")),
        (K::Login | K::Authenticate, S::NotAuthenticated) if !tls => Err(Reply::no(
            "Log in over TLS: use STARTTLS first (or the implicit-TLS port)",
        )
        .other("PRIVACYREQUIRED")),
        (K::Login | K::Authenticate, S::NotAuthenticated) => Ok(()),
        (K::StartTls | K::Login | K::Authenticate, _) => Err(Reply::bad("Already logged in")),
        (_, S::NotAuthenticated) => Err(Reply::bad("Log in first")),
        // RFC 5161 §3.1: ENABLE only before a mailbox is selected.
        (K::Enable, S::Authenticated) => Ok(()),
        (K::Enable, _) => Err(Reply::bad("ENABLE is only valid before SELECT")),
        (
            K::Select
            | K::Examine
            | K::Create
            | K::Delete
            | K::Rename
            | K::Subscribe
            | K::Unsubscribe
            | K::List
            | K::Lsub
            | K::Status
            | K::Append
            | K::Idle
            | K::Namespace,
            _,
        ) => Ok(()),
        (_, S::Selected) => Ok(()),
        (_, S::Authenticated) => Err(Reply::bad("No mailbox selected")),
    }
}

pub struct Session {
    pub app: Arc<App>,
    pub conn: Conn,
    pub peer: SocketAddr,
    pub state: State,
    pub account: Option<Account>,
    pub selected: Option<Selected>,
    pub shutdown: Shutdown,
    /// Per-address counts and the end of the account's sessions (SPEC §8; `imap/mod.rs`).
    pub ticket: crate::limits::Ticket,
    /// BAD/NO answers so far, for the error limits ([`Errors`]).
    errors: Errors,
    /// RFC 7162: CONDSTORE / QRESYNC enabled in this session (`imap/condstore.rs`).
    pub condstore: bool,
    pub qresync: bool,
    /// The SEARCHRES search result variable (RFC 5182 §2.1): UIDs, ascending. Emptied when a
    /// mailbox is selected or deselected; expunged UIDs simply no longer name a message.
    pub saved_search: Vec<u32>,
    /// The ESEARCH `RETURN (...)` options of the command being run (RFC 4731), taken by SEARCH.
    pub search_return: Option<ReturnOpts>,
}

/// Error limits (docs/security.md): before login, [`Errors::MAX_BEFORE_LOGIN`] BAD or NO
/// answers in all end the connection (Dovecot's imap-login closes after 10 bad commands too);
/// after login, [`Errors::MAX_BAD_IN_A_ROW`] BAD answers in a row do (Dovecot's imap: 20), NO
/// being an ordinary answer there (no such mailbox, ...).
#[derive(Debug, Default, Clone, Copy)]
struct Errors {
    before_login: u32,
    bad_in_a_row: u32,
}

impl Errors {
    const MAX_BEFORE_LOGIN: u32 = 10;
    const MAX_BAD_IN_A_ROW: u32 = 20;

    /// Counts one tagged or untagged status answer given in `state`.
    fn count(&mut self, state: State, kind: StatusKind) {
        match (state, kind) {
            (State::NotAuthenticated, StatusKind::Bad | StatusKind::No) => self.before_login += 1,
            (State::NotAuthenticated, StatusKind::Ok) => {}
            (_, StatusKind::Bad) => self.bad_in_a_row += 1,
            (_, _) => self.bad_in_a_row = 0,
        }
    }

    fn exceeded(&self, state: State) -> bool {
        match state {
            State::NotAuthenticated => self.before_login >= Self::MAX_BEFORE_LOGIN,
            _ => self.bad_in_a_row >= Self::MAX_BAD_IN_A_ROW,
        }
    }
}

/// A decoded command: imap-codec's, or our extended LIST (RFC 5258/6154) which it does not parse.
enum Parsed<'a> {
    Std(Command<'a>),
    List(list_ext::ListCommand),
}

impl Session {
    pub fn new(app: Arc<App>, conn: Conn, peer: SocketAddr, shutdown: Shutdown) -> Session {
        Session {
            app,
            conn,
            peer,
            state: State::NotAuthenticated,
            account: None,
            selected: None,
            shutdown,
            ticket: crate::limits::Ticket::detached(peer.ip()),
            errors: Errors::default(),
            condstore: false,
            qresync: false,
            saved_search: Vec::new(),
            search_return: None,
        }
    }

    pub fn tls(&self) -> bool {
        self.conn.is_tls()
    }

    pub fn account_id(&self) -> u64 {
        self.account.as_ref().map(|a| a.id).unwrap_or(0)
    }

    /// The session until LOGOUT, EOF, autologout or shutdown. Only I/O errors end it early.
    pub async fn run(&mut self) -> std::io::Result<()> {
        let greeting = response::untagged(
            StatusKind::Ok,
            Some(Code::Capability(response::capabilities(self.tls()))),
            &format!("{} Tanba IMAP4rev1 ready", self.app.config.hostname),
        );
        self.conn.write(&greeting);
        self.conn.flush().await?;
        let max_literal = self.app.config.imap.max_literal_size;
        let limits = &self.app.config.limits;
        let (max_command, max_unauthenticated) =
            (limits.max_command_size, limits.max_unauthenticated_command);
        loop {
            // Shutdown is honoured between commands only (STYLE §3).
            let mut sd = self.shutdown.clone();
            if self.ticket.is_revoked() {
                return self.end_revoked().await;
            }
            let input = tokio::select! {
                r = self.conn.wait_input() => r,
                _ = sd.stopping() => {
                    self.conn.write(&response::bye("Server shutting down, try again later"));
                    self.conn.close().await;
                    return Ok(());
                }
                _ = self.ticket.revoked() => return self.end_revoked().await,
            };
            match input {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return self.end_on(e).await,
            }
            let (state, tls) = (self.state, self.tls());
            // The state gate, before any literal is accepted (`+` included): before login only
            // the commands of the not-authenticated state may carry literals, and only APPEND
            // (authenticated or selected) has a message literal beyond the command budget.
            let gate = move |first: &[u8]| -> Result<u64, Box<Refusal>> {
                let kind = Kind::from_line(first);
                match is_allowed(kind, state, tls) {
                    Ok(()) if kind == Kind::Append => Ok(max_literal),
                    Ok(()) => Ok(0),
                    Err(r) => Err(Box::new(Refusal {
                        tag: conn::tag_of(first),
                        bad: r.kind == StatusKind::Bad,
                        code: r.code,
                        text: r.text,
                        rest: Rest::Nothing,
                    })),
                }
            };
            let budget = if state == State::NotAuthenticated {
                max_unauthenticated
            } else {
                max_command
            };
            let frame = tokio::select! {
                f = self.conn.read_command(budget, &gate) => f,
                _ = self.ticket.revoked() => return self.end_revoked().await,
            };
            let frame = match frame {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return self.end_on(e).await,
            };
            match frame {
                Frame::Refused(r) => {
                    let rest = r.rest;
                    self.refuse(r);
                    if rest != Rest::Nothing && self.state == State::NotAuthenticated {
                        // Before login we do not read what an over-size or refused command
                        // still sends: the connection ends (docs/security.md).
                        tracing::debug!(peer = %self.peer, "imap: oversize input before login");
                        self.conn
                            .write(&response::bye("Too much input before login, closing"));
                        self.conn.close().await;
                        return Ok(());
                    }
                    // Answer first, then swallow what the client is still sending.
                    let r = match self.conn.flush().await {
                        Ok(()) => self.conn.skip_rest(rest).await,
                        Err(e) => Err(e),
                    };
                    match r {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(e) => return self.end_on(e).await,
                    }
                }
                Frame::Command(bytes) => {
                    if let Err(e) = self.execute(bytes).await {
                        return self.end_on(e).await;
                    }
                }
            }
            if self.state != State::NotAuthenticated {
                // Logged in just now: the answer is not bound by the login deadline.
                self.conn.deadline = None;
            }
            if self.state != State::Logout && self.errors.exceeded(self.state) {
                tracing::debug!(peer = %self.peer, state = ?self.state, "imap: too many errors");
                self.conn
                    .write(&response::bye("Too many invalid commands, closing"));
                self.conn.close().await;
                return Ok(());
            }
            if let Err(e) = self.conn.flush().await {
                return self.end_on(e).await;
            }
            if self.state == State::Logout {
                self.conn.close().await;
                return Ok(());
            }
        }
    }

    /// Autologout (RFC 3501 §5.4), the login timeout (SPEC §8 `limits.login_timeout`), or a
    /// broken connection.
    async fn end_on(&mut self, e: std::io::Error) -> std::io::Result<()> {
        if conn::is_login_timeout(&e) {
            tracing::debug!(peer = %self.peer, "imap: login timeout");
            self.conn.write(&response::bye(
                "Login timeout: not logged in in time, closing",
            ));
            self.conn.close().await;
            return Ok(());
        }
        if e.kind() == std::io::ErrorKind::TimedOut {
            tracing::debug!(peer = %self.peer, "imap: autologout");
            self.conn
                .write(&response::bye("Autologout; idle for too long"));
            self.conn.close().await;
            return Ok(());
        }
        Err(e)
    }

    /// Writes a tagged (or, without a tag, untagged) status answer and counts it for the
    /// error limits.
    fn answer(&mut self, tag: Option<&Tag<'_>>, reply: &Reply) {
        self.errors.count(self.state, reply.kind);
        self.conn.write(&response::tagged(tag, reply));
    }

    fn refuse(&mut self, r: Refusal) {
        let mut reply = if r.bad {
            Reply::bad(r.text)
        } else {
            Reply::no(r.text)
        };
        if let Some(code) = r.code {
            reply = reply.code(code);
        }
        let tag = r.tag.and_then(|t| Tag::try_from(t).ok());
        self.answer(tag.as_ref(), &reply);
    }

    async fn execute(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let line_kind = Kind::from_line(&bytes);
        self.search_return = None;
        let bytes = if matches!(
            line_kind,
            Kind::Search
                | Kind::Sort
                | Kind::Thread
                | Kind::Fetch
                | Kind::Store
                | Kind::Copy
                | Kind::Move
                | Kind::Expunge
        ) {
            match search_ext::rewrite(&bytes, &|uid| self.dollar(uid)) {
                Ok(r) => {
                    self.search_return = r.ret;
                    r.bytes.unwrap_or(bytes)
                }
                Err(why) => {
                    let tag = conn::tag_of(&bytes).and_then(|t| Tag::try_from(t).ok());
                    self.answer(tag.as_ref(), &Reply::bad(why));
                    return Ok(());
                }
            }
        } else {
            bytes
        };
        // imap-codec needs about a millisecond per KiB for a command of many short SEARCH
        // keys: a large command is decoded on the blocking pool, not on an async worker.
        let decoded = if bytes.len() <= DECODE_INLINE {
            decode(bytes)
        } else {
            match tokio::task::spawn_blocking(move || decode(bytes)).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!("imap: decoding task failed: {e}");
                    Decoded::Bad(None, Reply::bad("Internal error"))
                }
            }
        };
        let parsed = match decoded {
            Decoded::Ok(p) => p,
            Decoded::Bad(tag, reply) => {
                self.answer(tag.as_ref(), &reply);
                return Ok(());
            }
        };
        let (tag, kind) = match &parsed {
            Parsed::Std(c) => (c.tag.clone().into_static(), Kind::of(&c.body)),
            Parsed::List(l) => (l.tag.clone(), Kind::List),
        };
        if let Err(r) = is_allowed(kind, self.state, self.tls()) {
            self.answer(Some(&tag), &r);
            return Ok(());
        }
        let allow_expunge = match &parsed {
            Parsed::Std(c) => expunge_allowed(&c.body),
            Parsed::List(_) => true,
        };
        let result = match parsed {
            Parsed::Std(c) => cmd::dispatch(self, &tag, c.body).await,
            Parsed::List(l) => cmd::mailbox::list(self, l.args).await,
        };
        let reply = match result {
            Ok(r) => r,
            Err(CmdError::Reply(r)) => r,
            Err(CmdError::Io(e)) => return Err(e),
        };
        // RFC 5182 §2.1: selecting a mailbox (or leaving it) empties the search result variable.
        if matches!(
            kind,
            Kind::Select | Kind::Examine | Kind::Close | Kind::Unselect
        ) {
            self.saved_search.clear();
        }
        // Untagged updates go before the tagged reply (RFC 3501 §7).
        if self.state == State::Selected && kind != Kind::Idle {
            self.sync(allow_expunge).await;
        }
        if !reply.sent {
            self.answer(Some(&tag), &reply);
        }
        Ok(())
    }

    /// The search result variable as the sequence set `$` stands for: UIDs in a UID command,
    /// else the sequence numbers those UIDs have now (RFC 5182 §2.1).
    fn dollar(&self, uid: bool) -> String {
        match &self.selected {
            Some(sel) if !uid => {
                let seqs: Vec<u32> = self
                    .saved_search
                    .iter()
                    .filter_map(|&u| sel.seq_of(u))
                    .collect();
                search_ext::sequence_set(&seqs)
            }
            Some(_) => search_ext::sequence_set(&self.saved_search),
            None => search_ext::sequence_set(&[]),
        }
    }

    /// Reports what changed in the selected mailbox since we last looked.
    pub async fn sync(&mut self, allow_expunge: bool) {
        let Some(mut sel) = self.selected.take() else {
            return;
        };
        let store = self.app.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            let out = sel.sync(&store, allow_expunge);
            (sel, out)
        })
        .await;
        match r {
            Ok((sel, out)) => {
                self.selected = Some(sel);
                match out {
                    Ok(bytes) => self.conn.write(&bytes),
                    Err(e) => tracing::warn!("imap: sync failed: {e}"),
                }
            }
            Err(e) => {
                tracing::error!("imap: sync task failed: {e}");
                self.state = State::Authenticated;
            }
        }
    }
}

/// Commands up to this size are decoded on the async worker; larger ones on the blocking pool.
const DECODE_INLINE: usize = 8 * 1024;

/// A command decoded, or the BAD answer (with the tag, when there is one) that says why not.
enum Decoded {
    Ok(Parsed<'static>),
    Bad(Option<Tag<'static>>, Reply),
}

/// Decodes one framed command: imap-codec, else our extended LIST.
fn decode(bytes: Vec<u8>) -> Decoded {
    if let Ok((b"", cmd)) = CommandCodec::default().decode(&bytes) {
        return Decoded::Ok(Parsed::Std(cmd.into_static()));
    }
    if let Some(l) = list_ext::parse(&bytes) {
        return Decoded::Ok(Parsed::List(l));
    }
    let tag = conn::tag_of(&bytes).and_then(|t| Tag::try_from(t).ok());
    let reply = match &tag {
        Some(_) if Kind::from_line(&bytes) == Kind::Unsupported => Reply::bad("Unknown command"),
        Some(_) => Reply::bad("Syntax error in command arguments"),
        None => Reply::bad("Syntax error: a command starts with a tag"),
    };
    Decoded::Bad(tag, reply)
}

/// RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH by sequence number
/// (COPY too, to be safe: its numbers were chosen by the client against the old view).
fn expunge_allowed(body: &CommandBody<'_>) -> bool {
    match body {
        CommandBody::Fetch { uid, .. }
        | CommandBody::Store { uid, .. }
        | CommandBody::Search { uid, .. }
        | CommandBody::Sort { uid, .. }
        | CommandBody::Thread { uid, .. }
        | CommandBody::Copy { uid, .. } => *uid,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate() {
        use Kind as K;
        use State as S;
        assert!(is_allowed(K::Capability, S::NotAuthenticated, false).is_ok());
        assert!(is_allowed(K::Login, S::NotAuthenticated, false).is_err());
        assert!(is_allowed(K::Login, S::NotAuthenticated, true).is_ok());
        assert!(is_allowed(K::StartTls, S::NotAuthenticated, true).is_err());
        assert!(is_allowed(K::Select, S::NotAuthenticated, true).is_err());
        assert!(is_allowed(K::Append, S::NotAuthenticated, true).is_err());
        assert!(is_allowed(K::Fetch, S::Authenticated, true).is_err());
        assert!(is_allowed(K::Fetch, S::Selected, true).is_ok());
        assert!(is_allowed(K::Enable, S::Selected, true).is_err());
        assert!(is_allowed(K::Login, S::Authenticated, true).is_err());
        assert!(is_allowed(K::Unsupported, S::Selected, true).is_err());
        assert_eq!(Kind::from_line(b"a UID fetch 1 x\r\n"), K::Fetch);
        assert_eq!(Kind::from_line(b"a append x {3}\r\n"), K::Append);
        assert_eq!(Kind::from_line(b"a XYZ\r\n"), K::Unsupported);
    }
}
