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
use imap_codec::imap_types::fetch::{MacroOrMessageDataItemNames, MessageDataItemName};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox};
use imap_codec::imap_types::search::SearchKey;

use super::list_ext::ListArgs;
use super::response::{CmdError, CmdResult, Reply};
use super::selected::Selected;
use super::session::Session;
use super::utf7;

/// Most SEARCH keys in one command, nested ones included: evaluation costs keys × messages
/// (docs/security.md). imap-codec itself bounds their nesting (9 levels).
pub const MAX_SEARCH_KEYS: usize = 256;
/// Most data items in one FETCH, and most of those that return message bytes (each is
/// rendered in memory for every message).
pub const MAX_FETCH_ITEMS: usize = 64;
pub const MAX_FETCH_CONTENT_ITEMS: usize = 8;

/// The number of keys in a SEARCH criterion, nested ones included; stops counting past `max`.
fn search_keys(k: &SearchKey<'_>, max: usize) -> usize {
    match k {
        SearchKey::And(v) => {
            v.as_ref()
                .iter()
                .fold(1, |n, k| if n > max { n } else { n + search_keys(k, max) })
        }
        SearchKey::Or(a, b) => 1 + search_keys(a, max) + search_keys(b, max),
        SearchKey::Not(a) => 1 + search_keys(a, max),
        _ => 1,
    }
}

/// Refuses commands whose work would be out of proportion (SEARCH keys, FETCH items); the
/// sizes of everything else are bounded by the command budget of the framer.
fn too_much_work(body: &CommandBody<'_>) -> Option<Reply> {
    match body {
        CommandBody::Search { criteria, .. }
        | CommandBody::Sort {
            search_criteria: criteria,
            ..
        }
        | CommandBody::Thread {
            search_criteria: criteria,
            ..
        } => {
            let n = criteria
                .as_ref()
                .iter()
                .fold(0, |n, k| n + search_keys(k, MAX_SEARCH_KEYS));
            (n > MAX_SEARCH_KEYS)
                .then(|| Reply::bad(format!("Too many search keys (at most {MAX_SEARCH_KEYS})")))
        }
        CommandBody::Fetch {
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            ..
        } => {
            let content = items
                .iter()
                .filter(|i| {
                    matches!(
                        i,
                        MessageDataItemName::BodyExt { .. }
                            | MessageDataItemName::Binary { .. }
                            | MessageDataItemName::Rfc822
                            | MessageDataItemName::Rfc822Header
                            | MessageDataItemName::Rfc822Text
                    )
                })
                .count();
            if items.len() > MAX_FETCH_ITEMS {
                Some(Reply::bad(format!(
                    "Too many FETCH items (at most {MAX_FETCH_ITEMS})"
                )))
            } else if content > MAX_FETCH_CONTENT_ITEMS {
                Some(Reply::bad(format!(
                    "Too many body sections in one FETCH (at most {MAX_FETCH_CONTENT_ITEMS})"
                )))
            } else {
                None
            }
        }
        _ => None,
    }
}

pub async fn dispatch(s: &mut Session, tag: &Tag<'static>, body: CommandBody<'_>) -> CmdResult {
    use CommandBody as C;
    if let Some(r) = too_much_work(&body) {
        return Ok(r);
    }
    match body {
        C::Capability => any::capability(s).await,
        C::Noop => any::noop(s).await,
        C::Logout => any::logout(s).await,
        C::Id { .. } => any::id(s).await,
        C::Namespace => any::namespace(s).await,
        C::Enable { capabilities } => any::enable(s, capabilities.as_ref()).await,
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
        C::Select {
            mailbox,
            parameters,
        } => select::select(s, &mailbox, false, &parameters).await,
        C::Examine {
            mailbox,
            parameters,
        } => select::select(s, &mailbox, true, &parameters).await,
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
        } => search::search(s, tag, charset.as_ref(), criteria, uid).await,
        C::Sort {
            sort_criteria,
            charset,
            search_criteria,
            uid,
        } => search::sort(s, sort_criteria, &charset, search_criteria, uid).await,
        C::Thread {
            algorithm,
            charset,
            search_criteria,
            uid,
        } => search::thread(s, &algorithm, &charset, search_criteria, uid).await,
        C::Fetch {
            sequence_set,
            macro_or_item_names,
            uid,
            modifiers,
        } => fetch::fetch(s, &sequence_set, macro_or_item_names, uid, &modifiers).await,
        C::Store {
            sequence_set,
            kind,
            response,
            flags,
            uid,
            modifiers,
        } => store::store(s, &sequence_set, kind, response, &flags, uid, &modifiers).await,
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
