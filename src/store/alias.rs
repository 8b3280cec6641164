//! Aliases and address resolution: which mailboxes (and remote addresses) a recipient address of
//! a local domain stands for.
//!
//! The `aliases` tree maps a lower-case source to its targets (JSON [`Alias`]):
//! - `sales@example.kz` → one or more addresses (local accounts, other aliases, remote addresses);
//! - `@old.kz` → exactly one `@new.kz`: a domain alias (`x@old.kz` is resolved as `x@new.kz`);
//! - `@example.kz` → addresses: the domain's catch-all (any address nothing else matches).
//!
//! [`Sled::resolve`] applies, for an address of a local domain, the first rule that matches:
//! an exact alias; an account (primary address or [`Account::aliases`]); `local+tag@domain` as
//! `local@domain` (sub-addressing, RFC 5233 style; the copy goes to the INBOX); a domain alias;
//! `postmaster@` and `abuse@` (RFC 5321 §4.5.1, RFC 2142) to the operator's address
//! (`server.postmaster`, else the first account created); the domain's catch-all. Addresses of
//! other domains resolve to themselves as remote destinations.
//!
//! Resolution is bounded: at most [`MAX_DEPTH`] alias steps on any path and [`MAX_STEPS`]
//! lookups in all; an address met again on its own path is a loop. `alias add` refuses an entry
//! that would make a loop, so a loop at delivery time needs a hand-edited store.

use serde::{Deserialize, Serialize};

use super::{dec, enc, Account, Result, Sled, StoreError};

/// Alias steps on one path, at most (a longer chain is treated as a loop).
pub const MAX_DEPTH: usize = 8;
/// Lookups for one recipient, at most (bounds the fan-out of aliases to aliases).
pub const MAX_STEPS: usize = 256;
/// Targets of one alias, at most.
pub const MAX_TARGETS: usize = 100;

/// One alias: a source (`user@domain` or `@domain`) and its targets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Alias {
    pub address: String,
    pub targets: Vec<String>,
}

impl Alias {
    /// `@domain` → `@other`: a domain alias (else, for `@domain`, a catch-all).
    pub fn is_domain_alias(&self) -> bool {
        self.address.starts_with('@') && self.targets.iter().all(|t| t.starts_with('@'))
    }
}

/// Where one copy of a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// An account (its INBOX).
    Account(Account),
    /// An address on another server (the outbound queue).
    Remote(String),
}

/// What an address resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// Deliver here (never empty).
    Found(Vec<Dest>),
    /// No such address.
    Unknown,
    /// An alias loop or a chain beyond [`MAX_DEPTH`] / [`MAX_STEPS`]; the text shows the path.
    Loop(String),
    /// `postmaster@`/`abuse@` with nowhere to go yet (no account at all, or `server.postmaster`
    /// names an address that does not resolve): accepted only temporarily.
    NoPostmaster,
}

/// What resolution needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    /// Local domains, lower-case.
    pub domains: &'a [String],
    /// `server.postmaster`, if set.
    pub postmaster: Option<&'a str>,
    /// Only rules that make an address a user's own (exact aliases, domain aliases,
    /// sub-addresses): no catch-all, no postmaster default. Used for "may send as".
    pub own_only: bool,
}

/// The local part and the domain of an address (lower-case input).
fn split(addr: &str) -> (&str, &str) {
    addr.rsplit_once('@').unwrap_or((addr, ""))
}

/// Validates an alias source: `user@domain` or `@domain`, lower-cased.
pub fn normalize_source(s: &str) -> Result<String> {
    let s = s.trim().to_ascii_lowercase();
    if let Some(d) = s.strip_prefix('@') {
        return normalize_domain(d).map(|d| format!("@{d}"));
    }
    super::account::normalize_email(&s)
}

fn normalize_domain(d: &str) -> Result<String> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !ok {
        return Err(StoreError::Invalid(format!("{d:?} is not a domain name")));
    }
    Ok(d.to_string())
}

struct Walk<'a> {
    rules: Rules<'a>,
    /// An entry not yet stored (`alias add` checks it before writing it).
    overlay: Option<&'a Alias>,
    steps: usize,
    path: Vec<String>,
    out: Vec<Dest>,
}

/// The outcome of one step.
enum Step {
    Found,
    Unknown,
    Loop(String),
    NoPostmaster,
}

impl Sled {
    pub fn alias(&self, address: &str) -> Result<Option<Alias>> {
        let a = address.trim().to_ascii_lowercase();
        match self.t.aliases.get(a.as_bytes())? {
            Some(v) => Ok(Some(dec(&v)?)),
            None => Ok(None),
        }
    }

    pub fn aliases(&self) -> Result<Vec<Alias>> {
        self.t.aliases.iter().values().map(|v| dec(&v?)).collect()
    }

    /// Stores (replaces) an alias as given; `alias add` validates it first (admin.rs).
    pub fn put_alias(&self, alias: &Alias) -> Result<()> {
        let _w = self.write_gate();
        self.t
            .aliases
            .insert(alias.address.as_bytes(), enc(alias))?;
        Ok(())
    }

    pub fn delete_alias(&self, address: &str) -> Result<Alias> {
        let a = address.trim().to_ascii_lowercase();
        let _w = self.write_gate();
        match self.t.aliases.remove(a.as_bytes())? {
            Some(v) => dec(&v),
            None => Err(StoreError::NotFound(format!("alias {a}"))),
        }
    }

    /// Resolves a recipient address (see the module docs). `overlay` is consulted before the
    /// stored table (to check an entry before it is written).
    pub fn resolve(
        &self,
        addr: &str,
        rules: Rules<'_>,
        overlay: Option<&Alias>,
    ) -> Result<Resolution> {
        resolve_with(self, addr, rules, overlay)
    }
}

/// What resolution reads from a backend (the same walk on sled and PostgreSQL).
pub(crate) trait Lookup {
    fn alias(&self, address: &str) -> Result<Option<Alias>>;
    fn account_for_address(&self, addr: &str) -> Result<Option<Account>>;
    fn accounts(&self) -> Result<Vec<Account>>;
}

impl Lookup for Sled {
    fn alias(&self, address: &str) -> Result<Option<Alias>> {
        Sled::alias(self, address)
    }
    fn account_for_address(&self, addr: &str) -> Result<Option<Account>> {
        Sled::account_for_address(self, addr)
    }
    fn accounts(&self) -> Result<Vec<Account>> {
        Sled::accounts(self)
    }
}

/// [`Sled::resolve`] over any backend.
pub(crate) fn resolve_with<L: Lookup + ?Sized>(
    l: &L,
    addr: &str,
    rules: Rules<'_>,
    overlay: Option<&Alias>,
) -> Result<Resolution> {
    let mut w = Walk {
        rules,
        overlay,
        steps: 0,
        path: Vec::new(),
        out: Vec::new(),
    };
    let addr = addr.trim().to_ascii_lowercase();
    Ok(match walk(l, &mut w, &addr)? {
        Step::Found if !w.out.is_empty() => Resolution::Found(w.out),
        Step::Found | Step::Unknown => Resolution::Unknown,
        Step::Loop(p) => Resolution::Loop(p),
        Step::NoPostmaster => Resolution::NoPostmaster,
    })
}

fn lookup_alias<L: Lookup + ?Sized>(l: &L, w: &Walk<'_>, key: &str) -> Result<Option<Alias>> {
    if let Some(o) = w.overlay.filter(|o| o.address == key) {
        return Ok(Some(o.clone()));
    }
    l.alias(key)
}

fn push(w: &mut Walk<'_>, d: Dest) {
    let dup = w.out.iter().any(|x| match (x, &d) {
        (Dest::Account(a), Dest::Account(b)) => a.id == b.id,
        (Dest::Remote(a), Dest::Remote(b)) => a == b,
        _ => false,
    });
    if !dup {
        w.out.push(d);
    }
}

/// Expands each target; found if at least one target is (dangling ones are skipped with a
/// warning: one deleted account must not bounce a list's mail).
fn walk_targets<L: Lookup + ?Sized>(
    l: &L,
    w: &mut Walk<'_>,
    from: &str,
    targets: &[String],
) -> Result<Step> {
    let mut found = false;
    for t in targets {
        match walk(l, w, t)? {
            Step::Found => found = true,
            Step::Unknown | Step::NoPostmaster => {
                tracing::warn!("alias {from}: target {t} does not exist; skipped")
            }
            l @ Step::Loop(_) => return Ok(l),
        }
    }
    Ok(if found { Step::Found } else { Step::Unknown })
}

fn walk<L: Lookup + ?Sized>(l: &L, w: &mut Walk<'_>, addr: &str) -> Result<Step> {
    w.steps += 1;
    if w.path.iter().any(|p| p == addr) || w.path.len() > MAX_DEPTH || w.steps > MAX_STEPS {
        let mut p = w.path.join(" → ");
        p.push_str(" → ");
        p.push_str(addr);
        return Ok(Step::Loop(p));
    }
    let (local, domain) = split(addr);
    if !w.rules.domains.iter().any(|d| d == domain) {
        push(w, Dest::Remote(addr.to_string()));
        return Ok(Step::Found);
    }
    w.path.push(addr.to_string());
    let r = walk_local(l, w, addr, local, domain);
    w.path.pop();
    r
}

fn walk_local<L: Lookup + ?Sized>(
    l: &L,
    w: &mut Walk<'_>,
    addr: &str,
    local: &str,
    domain: &str,
) -> Result<Step> {
    // 1. An exact alias (it wins over an account of the same name, and over the
    //    postmaster default: the operator's explicit choice).
    if let Some(a) = lookup_alias(l, w, addr)? {
        return walk_targets(l, w, addr, &a.targets);
    }
    // 2. An account.
    if let Some(acc) = l.account_for_address(addr)? {
        push(w, Dest::Account(acc));
        return Ok(Step::Found);
    }
    // 3. Sub-addressing: `alice+tag@` is `alice@` (an account named with a `+` matched above).
    if let Some((base, _tag)) = local.split_once('+') {
        if !base.is_empty() {
            match walk(l, w, &format!("{base}@{domain}"))? {
                Step::Unknown => {}
                other => return Ok(other),
            }
        }
    }
    // 4. A domain alias; 6. the catch-all (after the postmaster rule).
    let domain_entry = lookup_alias(l, w, &format!("@{domain}"))?;
    if let Some(d) = domain_entry.as_ref().filter(|d| d.is_domain_alias()) {
        let targets: Vec<String> = d.targets.iter().map(|t| format!("{local}{t}")).collect();
        return walk_targets(l, w, addr, &targets);
    }
    if w.rules.own_only {
        return Ok(Step::Unknown);
    }
    // 5. postmaster@ and abuse@ of every local domain are always accepted.
    if local == "postmaster" || local == "abuse" {
        return walk_postmaster(l, w, domain);
    }
    if let Some(c) = domain_entry {
        return walk_targets(l, w, addr, &c.targets);
    }
    Ok(Step::Unknown)
}

/// `postmaster@`/`abuse@` without an alias of their own: `server.postmaster`, else the
/// first account created in that domain, else the first account created at all.
fn walk_postmaster<L: Lookup + ?Sized>(l: &L, w: &mut Walk<'_>, domain: &str) -> Result<Step> {
    if let Some(p) = w.rules.postmaster {
        let p = p.to_ascii_lowercase();
        return Ok(match walk(l, w, &p)? {
            Step::Unknown => Step::NoPostmaster,
            s => s,
        });
    }
    let accounts = l.accounts()?;
    let first = accounts
        .iter()
        .filter(|a| split(&a.email).1 == domain)
        .min_by_key(|a| a.id)
        .or_else(|| accounts.iter().min_by_key(|a| a.id));
    match first {
        Some(a) => {
            push(w, Dest::Account(a.clone()));
            Ok(Step::Found)
        }
        None => Ok(Step::NoPostmaster),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(domains: &[String]) -> Rules<'_> {
        Rules {
            domains,
            postmaster: None,
            own_only: false,
        }
    }

    fn ids(r: Resolution) -> Vec<String> {
        match r {
            Resolution::Found(d) => d
                .into_iter()
                .map(|d| match d {
                    Dest::Account(a) => a.email,
                    Dest::Remote(r) => format!("remote:{r}"),
                })
                .collect(),
            other => vec![format!("{other:?}")],
        }
    }

    #[test]
    fn resolution_rules_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sled::open(dir.path()).unwrap();
        let d = vec!["a.test".to_string(), "old.test".to_string()];
        let r = rules(&d);
        s.create_account("boss@a.test", "h").unwrap();
        s.create_account("alice@a.test", "h").unwrap();
        s.create_account("bob@a.test", "h").unwrap();
        let put = |a: &str, t: &[&str]| {
            s.put_alias(&Alias {
                address: a.into(),
                targets: t.iter().map(|x| x.to_string()).collect(),
            })
            .unwrap()
        };
        put(
            "team@a.test",
            &["alice@a.test", "bob@a.test", "x@remote.test"],
        );
        put("@old.test", &["@a.test"]);
        let res = |a: &str| ids(s.resolve(a, r, None).unwrap());
        assert_eq!(
            res("Team@A.test"),
            ["alice@a.test", "bob@a.test", "remote:x@remote.test"]
        );
        assert_eq!(res("alice+news@a.test"), ["alice@a.test"]);
        assert_eq!(res("alice@old.test"), ["alice@a.test"]);
        assert_eq!(res("PostMaster@a.test"), ["boss@a.test"]);
        assert_eq!(res("abuse@old.test"), ["boss@a.test"]);
        assert_eq!(res("nobody@a.test"), ["Unknown"]);
        put("@a.test", &["bob@a.test"]);
        assert_eq!(res("nobody@a.test"), ["bob@a.test"]);
        // A loop is reported with its path, not followed.
        put("l1@a.test", &["l2@a.test"]);
        put("l2@a.test", &["l1@a.test"]);
        assert!(matches!(
            s.resolve("l1@a.test", r, None).unwrap(),
            Resolution::Loop(p) if p == "l1@a.test → l2@a.test → l1@a.test"
        ));
    }
}
