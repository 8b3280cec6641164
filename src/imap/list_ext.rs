//! LIST as extended by RFC 5258 (LIST-EXTENDED: selection options SUBSCRIBED, REMOTE,
//! RECURSIVEMATCH; return options SUBSCRIBED, CHILDREN; several patterns), RFC 6154
//! (`SPECIAL-USE` as selection and return option) and RFC 5819 (LIST-STATUS: `RETURN (STATUS
//! (MESSAGES UNSEEN ...))`): `LIST (SUBSCRIBED RECURSIVEMATCH) "" ("a/%" b) RETURN (CHILDREN)`.
//! imap-codec parses only the RFC 3501 form, so commands it rejects and that start with `tag
//! LIST` are parsed here. Unknown options, and RECURSIVEMATCH alone or only with REMOTE, make the
//! command BAD (RFC 5258 §3).

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::status::StatusDataItemName;
use imap_codec::imap_types::IntoStatic;

/// What every LIST/LSUB handler needs, whichever parser produced it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListArgs {
    /// Raw (modified UTF-7) reference and patterns.
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub lsub: bool,
    pub select_subscribed: bool,
    pub select_special_use: bool,
    /// RECURSIVEMATCH (RFC 5258 §3.1): also parents whose descendants meet the selection.
    pub select_recursive: bool,
    pub return_subscribed: bool,
    pub return_special_use: bool,
    /// RFC 5819: a STATUS response after each selectable mailbox listed, with these items
    /// (each at most once).
    pub return_status: Option<Vec<StatusDataItemName>>,
}

pub struct ListCommand {
    pub tag: Tag<'static>,
    pub args: ListArgs,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    /// Atom, list-char string, quoted string or literal: the string's bytes.
    Str(Vec<u8>),
}

/// Splits the rest of a command into tokens; `None` on anything malformed.
fn tokens(mut b: &[u8]) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    loop {
        while let Some(rest) = b.strip_prefix(b" ") {
            b = rest;
        }
        if b == b"\r\n" || b.is_empty() {
            return Some(out);
        }
        match b[0] {
            b'(' => {
                out.push(Tok::Open);
                b = &b[1..];
            }
            b')' => {
                out.push(Tok::Close);
                b = &b[1..];
            }
            b'"' => {
                let mut s = Vec::new();
                let mut i = 1;
                loop {
                    match *b.get(i)? {
                        b'\\' => {
                            s.push(*b.get(i + 1)?);
                            i += 2;
                        }
                        b'"' => break,
                        b'\r' | b'\n' => return None,
                        c => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
                b = &b[i + 1..];
            }
            b'{' => {
                let close = memchr::memchr(b'}', b)?;
                let digits = b[1..close].strip_suffix(b"+").unwrap_or(&b[1..close]);
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                let data_start = close + 3;
                if b.get(close + 1..data_start)? != b"\r\n" {
                    return None;
                }
                let data_end = data_start.checked_add(n)?;
                out.push(Tok::Str(b.get(data_start..data_end)?.to_vec()));
                b = &b[data_end..];
            }
            _ => {
                let end = b
                    .iter()
                    .position(|&c| c == b' ' || c == b'(' || c == b')' || c == b'\r')
                    .unwrap_or(b.len());
                let word = &b[..end];
                // An empty word (a CR that does not end the command) would never advance: found
                // by the imap_command fuzz target, it looped here adding tokens until memory ran
                // out, before login.
                if word.is_empty()
                    || word
                        .iter()
                        .any(|&c| c < 0x21 || c == b'"' || c == b'{' || c == 0x7f)
                {
                    return None;
                }
                out.push(Tok::Str(word.to_vec()));
                b = &b[end..];
            }
        }
    }
}

/// The strings of a parenthesised list whose `(` has been read, up to its `)`. `None` when the
/// list nests or does not end.
fn rest_of_list(it: &mut impl Iterator<Item = Tok>) -> Option<Vec<Vec<u8>>> {
    let mut items = Vec::new();
    loop {
        match it.next()? {
            Tok::Close => return Some(items),
            Tok::Str(s) => items.push(s),
            Tok::Open => return None,
        }
    }
}

/// A STATUS item LIST-STATUS can return (the ones the STATUS command answers).
pub fn status_att(a: &[u8]) -> Option<StatusDataItemName> {
    Some(match a.to_ascii_uppercase().as_slice() {
        b"MESSAGES" => StatusDataItemName::Messages,
        b"RECENT" => StatusDataItemName::Recent,
        b"UIDNEXT" => StatusDataItemName::UidNext,
        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
        b"UNSEEN" => StatusDataItemName::Unseen,
        b"SIZE" => StatusDataItemName::Size,
        _ => return None,
    })
}

/// Parses `tag LIST ...` in its extended forms. `None` when it is not a valid LIST command.
pub fn parse(msg: &[u8]) -> Option<ListCommand> {
    let sp = memchr::memchr(b' ', msg)?;
    let tag = Tag::try_from(super::conn::tag_of(msg)?).ok()?.into_static();
    let rest = &msg[sp + 1..];
    let kw = rest.get(..5)?;
    if !kw.eq_ignore_ascii_case(b"LIST ") {
        return None;
    }
    let toks = tokens(&rest[5..])?;
    let mut it = toks.into_iter().peekable();
    let mut args = ListArgs::default();
    // Selection options.
    if it.peek() == Some(&Tok::Open) {
        it.next();
        for o in rest_of_list(&mut it)? {
            match o.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => args.select_subscribed = true,
                b"SPECIAL-USE" => args.select_special_use = true,
                b"RECURSIVEMATCH" => args.select_recursive = true,
                // No remote mailboxes here: REMOTE selects nothing more.
                b"REMOTE" => {}
                _ => return None,
            }
        }
        // RFC 5258 §3.1: RECURSIVEMATCH "MUST NOT occur as the only selection option (or only
        // with REMOTE)"; the server returns BAD.
        if args.select_recursive && !args.select_subscribed && !args.select_special_use {
            return None;
        }
    }
    let Tok::Str(reference) = it.next()? else {
        return None;
    };
    args.reference = reference;
    match it.next()? {
        Tok::Str(p) => args.patterns.push(p),
        Tok::Open => args.patterns = rest_of_list(&mut it)?,
        Tok::Close => return None,
    }
    if args.patterns.is_empty() {
        return None;
    }
    if let Some(t) = it.next() {
        let Tok::Str(r) = t else { return None };
        if !r.eq_ignore_ascii_case(b"RETURN") || it.next()? != Tok::Open {
            return None;
        }
        loop {
            let o = match it.next()? {
                Tok::Str(o) => o,
                Tok::Close => break,
                // A nested list other than STATUS's is not valid.
                Tok::Open => return None,
            };
            match o.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => args.return_subscribed = true,
                b"SPECIAL-USE" => args.return_special_use = true,
                // We always return \HasChildren/\HasNoChildren (RFC 5258 §4 allows it).
                b"CHILDREN" => {}
                b"STATUS" if args.return_status.is_none() => {
                    if it.next()? != Tok::Open {
                        return None;
                    }
                    let mut items: Vec<StatusDataItemName> = Vec::new();
                    for a in rest_of_list(&mut it)? {
                        let a = status_att(&a)?;
                        if !items.contains(&a) {
                            items.push(a);
                        }
                    }
                    if items.is_empty() {
                        return None;
                    }
                    args.return_status = Some(items);
                }
                _ => return None,
            }
        }
        if it.next().is_some() {
            return None;
        }
    }
    Some(ListCommand { tag, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_forms() {
        let c = parse(b"a1 LIST \"\" \"*\" RETURN (SPECIAL-USE)\r\n").unwrap();
        assert_eq!(c.tag.as_ref(), "a1");
        assert!(c.args.return_special_use);
        assert_eq!(c.args.patterns, vec![b"*".to_vec()]);
        let c = parse(b"a2 list (special-use) \"\" (INBOX %)\r\n").unwrap();
        assert!(c.args.select_special_use);
        assert_eq!(c.args.patterns.len(), 2);
        let c = parse(b"a3 LIST \"\" {1}\r\n*\r\n").unwrap();
        assert_eq!(c.args.patterns, vec![b"*".to_vec()]);
        assert!(parse(b"a4 LIST (BOGUS) \"\" *\r\n").is_none());
        assert!(parse(b"a5 LIST \"\" * RETURN (X)\r\n").is_none());
        assert!(parse(b"a6 LIST \"\"\r\n").is_none());
        assert!(parse(b"a7 LSUB \"\" *\r\n").is_none());
        assert!(parse(b"a8 LIST \"\" {5}\r\n*\r\n").is_none());
        // Found by the imap_command fuzz target: a CR inside the line looped forever.
        assert!(parse(b"a9 LIST \"\" *\rX\r\n").is_none());
        assert!(parse(b"b1 LIST \"\" {18446744073709551615}\r\n*\r\n").is_none());
    }

    #[test]
    fn list_extended_and_list_status() {
        let c = parse(b"a LIST (SUBSCRIBED RECURSIVEMATCH remote) \"\" (a/% b) RETURN (CHILDREN subscribed STATUS (MESSAGES size UNSEEN messages))\r\n").unwrap();
        assert!(c.args.select_subscribed && c.args.select_recursive && c.args.return_subscribed);
        assert_eq!(c.args.patterns, vec![b"a/%".to_vec(), b"b".to_vec()]);
        assert_eq!(
            c.args.return_status,
            Some(vec![
                StatusDataItemName::Messages,
                StatusDataItemName::Size,
                StatusDataItemName::Unseen
            ])
        );
        let c = parse(b"a LIST \"\" % RETURN ()\r\n").unwrap();
        assert_eq!(c.args.return_status, None);
        // RFC 5258 §3.1: RECURSIVEMATCH alone, or only with REMOTE, is BAD.
        assert!(parse(b"a LIST (RECURSIVEMATCH) \"\" %\r\n").is_none());
        assert!(parse(b"a LIST (RECURSIVEMATCH REMOTE) \"\" %\r\n").is_none());
        assert!(parse(b"a LIST (SPECIAL-USE RECURSIVEMATCH) \"\" %\r\n").is_some());
        assert!(parse(b"a LIST (REMOTE) \"\" %\r\n").is_some());
        assert!(parse(b"a LIST \"\" % RETURN (STATUS ())\r\n").is_none());
        assert!(parse(b"a LIST \"\" % RETURN (STATUS (BOGUS))\r\n").is_none());
        assert!(parse(b"a LIST \"\" % RETURN (STATUS MESSAGES)\r\n").is_none());
        assert!(parse(b"a LIST \"\" % RETURN ((CHILDREN))\r\n").is_none());
        assert!(parse(b"a LIST \"\" % RETURN (CHILDREN\r\n").is_none());
        assert!(parse(b"a LIST \"\" % RETURN (STATUS (MESSAGES) STATUS (UNSEEN))\r\n").is_none());
    }
}
