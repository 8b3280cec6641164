//! Commands valid in any state (CAPABILITY, NOOP, LOGOUT, ID) and the small authenticated-state
//! extensions (NAMESPACE, ENABLE).

use imap_codec::imap_types::core::{Atom, IString, NString, QuotedChar};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::namespace::Namespace;
use imap_codec::imap_types::response::Data;

use crate::imap::response::{self, CmdResult, Reply};
use crate::imap::session::{Session, State};

pub async fn capability(s: &mut Session) -> CmdResult {
    let caps = response::capabilities(s.tls());
    s.conn.write(&response::data(Data::Capability(caps)));
    Ok(Reply::ok("CAPABILITY completed"))
}

/// NOOP: the sync that follows every command in the Selected state does the work (RFC 3501
/// §6.1.2: NOOP is how clients poll for updates).
pub async fn noop(_s: &mut Session) -> CmdResult {
    Ok(Reply::ok("NOOP completed"))
}

pub async fn logout(s: &mut Session) -> CmdResult {
    // A client that logs out has everything it did on disk, the implicit `\Seen` of FETCH
    // included (docs/imap.md, "Durability per command"). Free when no flush is pending.
    s.app.store.settled().await?;
    s.conn
        .write(&response::bye("Logging out, thank you for using Tanba"));
    s.state = State::Logout;
    s.selected = None;
    Ok(Reply::ok("LOGOUT completed"))
}

/// ID (RFC 2971): we say who we are; what the client says only goes to the debug log.
pub async fn id(s: &mut Session) -> CmdResult {
    let params = vec![
        (istr("name"), NString(Some(istr("Tanba")))),
        (
            istr("version"),
            NString(Some(istr(env!("CARGO_PKG_VERSION")))),
        ),
    ];
    s.conn.write(&response::data(Data::Id {
        parameters: Some(params),
    }));
    Ok(Reply::ok("ID completed"))
}

fn istr(v: &'static str) -> IString<'static> {
    response::istring(v.as_bytes())
}

/// NAMESPACE (RFC 2342): one personal namespace, no prefix, "/" as delimiter.
pub async fn namespace(s: &mut Session) -> CmdResult {
    let personal = vec![Namespace::new(istr(""), QuotedChar::try_from('/').ok())];
    s.conn.write(&response::data(Data::Namespace {
        personal,
        other: Vec::new(),
        shared: Vec::new(),
    }));
    Ok(Reply::ok("NAMESPACE completed"))
}

/// ENABLE (RFC 5161): CONDSTORE and QRESYNC (RFC 7162 §3.1, §3.2.3) can be enabled; the
/// ENABLED response names those this command enabled, other names are ignored.
pub async fn enable(s: &mut Session, caps: &[CapabilityEnable<'_>]) -> CmdResult {
    let mut enabled: Vec<CapabilityEnable<'static>> = Vec::new();
    for c in caps {
        let name = c.to_string();
        if name.eq_ignore_ascii_case("CONDSTORE") {
            if !s.condstore {
                s.enable_condstore();
                enabled.push(CapabilityEnable::CondStore);
            }
        } else if name.eq_ignore_ascii_case("QRESYNC") && !s.qresync {
            s.enable_qresync();
            if let Ok(a) = Atom::try_from("QRESYNC") {
                enabled.push(CapabilityEnable::from(a));
            }
        }
    }
    s.conn.write(&response::data(Data::Enabled {
        capabilities: enabled,
    }));
    Ok(Reply::ok("ENABLE completed"))
}
