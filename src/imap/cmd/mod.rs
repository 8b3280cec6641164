//! Command handlers, one file per group. Each handler runs after the state gate said yes and
//! returns the tagged reply; untagged data it writes straight to the connection.

pub mod any;
pub mod append;
pub mod auth;
pub mod copy;
pub mod expunge;
pub mod fetch;
pub mod idle;
pub mod mailbox;
pub mod search;
pub mod select;
pub mod store;

use imap_codec::imap_types::command::CommandBody;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};

use super::list_ext::ListArgs;
use super::response::{CmdError, CmdResult, Reply};
use super::selected::Selected;
use super::session::Session;
use super::utf7;

pub async fn dispatch(s: &mut Session, tag: &Tag<'static>, body: CommandBody<'_>) -> CmdResult {
    use CommandBody as C;
    match body {
        C::Capability => any::capability(s).await,
        C::Noop => any::noop(s).await,
        C::Logout => any::logout(s).await,
        C::Id { .. } => any::id(s).await,
        C::Namespace => any::namespace(s).await,
        C::Enable { .. } => any::enable(s).await,
        C::StartTLS => auth::starttls(s, tag).await,
        C::Login { username, password } => {
            auth::login(s, username.as_ref(), password.declassify().as_ref()).await
        }
        C::Authenticate {
            mechanism,
            initial_response,
        } => {
            let ir = initial_response.map(|r| r.declassify().to_vec());
            auth::authenticate(s, &mechanism, ir).await
        }
        C::Select { mailbox, .. } => select::select(s, &mailbox, false).await,
        C::Examine { mailbox, .. } => select::select(s, &mailbox, true).await,
        C::Close => select::close(s).await,
        C::Unselect => select::unselect(s).await,
        C::Check => select::check(s).await,
        C::Create { mailbox } => mailbox::create(s, &mailbox).await,
        C::Delete { mailbox } => mailbox::delete(s, &mailbox).await,
        C::Rename { from, to } => mailbox::rename(s, &from, &to).await,
        C::Subscribe { mailbox } => mailbox::subscribe(s, &mailbox, true).await,
        C::Unsubscribe { mailbox } => mailbox::subscribe(s, &mailbox, false).await,
        C::List {
            reference,
            mailbox_wildcard,
        } => mailbox::list(s, plain_list_args(&reference, &mailbox_wildcard, false)).await,
        C::Lsub {
            reference,
            mailbox_wildcard,
        } => mailbox::list(s, plain_list_args(&reference, &mailbox_wildcard, true)).await,
        C::Status {
            mailbox,
            item_names,
        } => mailbox::status(s, &mailbox, &item_names).await,
        C::Append {
            mailbox,
            flags,
            date,
            message,
        } => append::append(s, &mailbox, &flags, date.as_ref(), message).await,
        C::Expunge => expunge::expunge(s, None).await,
        C::ExpungeUid { sequence_set } => expunge::expunge(s, Some(&sequence_set)).await,
        C::Search {
            charset,
            criteria,
            uid,
        } => search::search(s, charset.as_ref(), criteria, uid).await,
        C::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            ..
        } => fetch::fetch(s, &sequence_set, macro_or_item_names, uid).await,
        C::Store {
            sequence_set,
            kind,
            response,
            flags,
            uid,
            ..
        } => store::store(s, &sequence_set, kind, response, &flags, uid).await,
        C::Copy {
            sequence_set,
            mailbox,
            uid,
        } => copy::copy(s, &sequence_set, &mailbox, uid, false).await,
        C::Move {
            sequence_set,
            mailbox,
            uid,
        } => copy::copy(s, &sequence_set, &mailbox, uid, true).await,
        C::Idle => idle::idle(s).await,
        _ => Ok(Reply::bad("Unsupported command")),
    }
}

/// The arguments of a basic LIST (RFC 3501 §6.3.8) or LSUB (§6.3.9): one pattern, no
/// selection or return options.
fn plain_list_args(reference: &Mailbox<'_>, pattern: &ListMailbox<'_>, lsub: bool) -> ListArgs {
    ListArgs {
        reference: mailbox_bytes(reference),
        patterns: vec![mailbox::list_mailbox_bytes(pattern)],
        lsub,
        ..ListArgs::default()
    }
}

/// The raw bytes of a mailbox argument (`INBOX` for the INBOX variant).
pub fn mailbox_bytes(m: &Mailbox<'_>) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

/// A mailbox argument as a store name (UTF-8), or the NO that says why it is not one.
pub fn mailbox_name(m: &Mailbox<'_>) -> Result<String, CmdError> {
    let raw = mailbox_bytes(m);
    utf7::decode(&raw).ok_or_else(|| {
        Reply::no("Mailbox name is not valid modified UTF-7")
            .other("CANNOT")
            .into()
    })
}

/// The selected mailbox (the gate guarantees one in the Selected state).
pub fn selected(s: &mut Session) -> Result<&mut Selected, CmdError> {
    s.selected
        .as_mut()
        .ok_or_else(|| Reply::bad("No mailbox selected").into())
}

/// Waits for the group commit; a tagged OK may follow only after this (SPEC §4).
pub async fn durable(s: &Session) -> Result<(), CmdError> {
    s.app.store.durable().await?;
    Ok(())
}
