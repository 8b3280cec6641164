//! What imap-codec does not parse of ESEARCH (RFC 4731) and SEARCHRES (RFC 5182): the
//! `RETURN (...)` options of SEARCH and the `$` sequence set. Both are taken out of the command
//! bytes before the codec sees them — `RETURN (...)` is cut out and kept as [`ReturnOpts`], a `$`
//! in a sequence-set position becomes the saved result written out as a sequence set — so the
//! codec parses an ordinary RFC 3501 command.
//!
//! The scan is one pass over the framed command (its size is bounded by the command budget):
//! quoted strings and literals are skipped whole, so a `$` inside them is never touched, and in
//! a search program the arguments of keys (`SUBJECT $` searches for a dollar sign) are skipped
//! too. Anything it cannot read is left as it is: the codec then answers BAD.

/// The ESEARCH result options of one SEARCH (RFC 4731 §3.1, RFC 5182 §2.1 SAVE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReturnOpts {
    pub min: bool,
    pub max: bool,
    pub all: bool,
    pub count: bool,
    pub save: bool,
}

impl ReturnOpts {
    /// `RETURN ()` means `RETURN (ALL)` (RFC 4731 §3.1).
    fn normalised(mut self) -> ReturnOpts {
        if !(self.min || self.max || self.all || self.count || self.save) {
            self.all = true;
        }
        self
    }

    /// Which of `hits` (ascending) SAVE keeps: only MIN and/or MAX when they are the only other
    /// options, else all (RFC 5182 §2.4).
    pub fn saved(&self, hits: &[u32]) -> Vec<u32> {
        if (self.min || self.max) && !(self.all || self.count) {
            let mut v = Vec::new();
            if let (true, Some(&f)) = (self.min, hits.first()) {
                v.push(f);
            }
            if let (true, Some(&l)) = (self.max, hits.last()) {
                if v.last() != Some(&l) {
                    v.push(l);
                }
            }
            v
        } else {
            hits.to_vec()
        }
    }

    /// SAVE alone sends no ESEARCH response (RFC 5182 §2.4).
    pub fn answers(&self) -> bool {
        self.min || self.max || self.all || self.count
    }
}

/// The command after rewriting.
#[derive(Debug, PartialEq, Eq)]
pub struct Rewritten {
    /// `None`: unchanged.
    pub bytes: Option<Vec<u8>>,
    /// `Some` for `SEARCH RETURN (...)`.
    pub ret: Option<ReturnOpts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Atom,
    Quoted,
    Literal,
    Open,
    Close,
}

#[derive(Debug, Clone, Copy)]
struct Tok {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Splits a framed command into tokens; `None` if it is not well formed (left to the codec).
fn tokens(b: &[u8]) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b[i] {
            b' ' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                out.push(Tok {
                    start,
                    end: i,
                    kind: Kind::Open,
                });
                continue;
            }
            b')' => {
                i += 1;
                out.push(Tok {
                    start,
                    end: i,
                    kind: Kind::Close,
                });
                continue;
            }
            b'"' => {
                i += 1;
                loop {
                    match b.get(i)? {
                        b'\\' => i += 2,
                        b'"' => {
                            i += 1;
                            break;
                        }
                        _ => i += 1,
                    }
                }
                out.push(Tok {
                    start,
                    end: i,
                    kind: Kind::Quoted,
                });
                continue;
            }
            b'{' => {
                // `{n}` or `{n+}` (or `~{n}`, not ours) then CRLF and n bytes.
                let close = i + memchr::memchr(b'}', &b[i..])?;
                let digits = b[i + 1..close]
                    .strip_suffix(b"+")
                    .unwrap_or(&b[i + 1..close]);
                if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit)
                {
                    return None;
                }
                let n: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
                let data = close + 1 + b.get(close + 1..)?.strip_prefix(b"\r\n").map(|_| 2)?;
                i = data.checked_add(n)?;
                if i > b.len() {
                    return None;
                }
                out.push(Tok {
                    start,
                    end: i,
                    kind: Kind::Literal,
                });
                continue;
            }
            _ => {}
        }
        while i < b.len() && !matches!(b[i], b' ' | b'\r' | b'\n' | b'(' | b')' | b'"') {
            // `[...]` of FETCH sections may hold spaces and parentheses: keep them in the atom.
            if b[i] == b'[' {
                i += memchr::memchr(b']', &b[i..]).unwrap_or(b.len() - i);
            }
            i += 1;
        }
        out.push(Tok {
            start,
            end: i.min(b.len()),
            kind: Kind::Atom,
        });
    }
    Some(out)
}

fn is(b: &[u8], t: &Tok, word: &str) -> bool {
    t.kind == Kind::Atom && b[t.start..t.end].eq_ignore_ascii_case(word.as_bytes())
}

/// Most `$` in one command.
pub const MAX_DOLLARS: usize = 16;

/// Search keys followed by one argument (RFC 3501 §6.4.4, RFC 5032, RFC 7162).
const ONE_ARG: &[&str] = &[
    "BCC",
    "BEFORE",
    "BODY",
    "CC",
    "FROM",
    "KEYWORD",
    "LARGER",
    "ON",
    "SENTBEFORE",
    "SENTON",
    "SENTSINCE",
    "SINCE",
    "SMALLER",
    "SUBJECT",
    "TEXT",
    "TO",
    "UNKEYWORD",
    "OLDER",
    "YOUNGER",
];

/// Rewrites `cmd` (one framed command). `dollar(uid)` is the saved result as a sequence set
/// for a UID command (`true`) or a sequence-number one. `Err` is the text of a BAD answer.
pub fn rewrite(cmd: &[u8], dollar: &dyn Fn(bool) -> String) -> Result<Rewritten, String> {
    let unchanged = Rewritten {
        bytes: None,
        ret: None,
    };
    // Fast path: nothing of ours in the command (RETURN can only be on the first line).
    let first = &cmd[..memchr::memchr(b'\n', cmd).unwrap_or(cmd.len())];
    let has_return = memchr::memmem::find(&first.to_ascii_uppercase(), b"RETURN").is_some();
    if memchr::memchr(b'$', cmd).is_none() && !has_return {
        return Ok(unchanged);
    }
    let Some(toks) = tokens(cmd) else {
        return Ok(unchanged);
    };
    let mut i = 1; // after the tag
    let uid = toks.get(i).is_some_and(|t| is(cmd, t, "UID"));
    if uid {
        i += 1;
    }
    let Some(name) = toks.get(i) else {
        return Ok(unchanged);
    };
    let name = String::from_utf8_lossy(&cmd[name.start..name.end]).to_ascii_uppercase();
    i += 1;
    // (token index, as UIDs) of each `$`, and a byte range to cut.
    let mut dollars: Vec<(usize, bool)> = Vec::new();
    let mut cut: Option<(usize, usize)> = None;
    let mut ret = None;
    let is_dollar = |t: &Tok| t.kind == Kind::Atom && &cmd[t.start..t.end] == b"$";
    match name.as_str() {
        "FETCH" | "STORE" | "COPY" | "MOVE" | "EXPUNGE" if toks.get(i).is_some_and(is_dollar) => {
            dollars.push((i, uid));
        }
        "SEARCH" | "SORT" | "THREAD" => {
            if name == "SEARCH" && toks.get(i).is_some_and(|t| is(cmd, t, "RETURN")) {
                if toks.get(i + 1).is_none_or(|t| t.kind != Kind::Open) {
                    return Err("RETURN needs a list of options".into());
                }
                let mut opts = ReturnOpts::default();
                let mut j = i + 2;
                loop {
                    let Some(t) = toks.get(j) else {
                        return Err("RETURN options not closed".into());
                    };
                    j += 1;
                    if t.kind == Kind::Close {
                        break;
                    }
                    let word = String::from_utf8_lossy(&cmd[t.start..t.end]).to_ascii_uppercase();
                    match (t.kind, word.as_str()) {
                        (Kind::Atom, "MIN") => opts.min = true,
                        (Kind::Atom, "MAX") => opts.max = true,
                        (Kind::Atom, "ALL") => opts.all = true,
                        (Kind::Atom, "COUNT") => opts.count = true,
                        (Kind::Atom, "SAVE") => opts.save = true,
                        // RFC 4466 §2.6: an unknown option is BAD (its name is not echoed).
                        _ => return Err("Unknown SEARCH RETURN option".into()),
                    }
                }
                // Cut from the space before RETURN to the end of `)`.
                cut = Some((toks[i].start.saturating_sub(1), toks[j - 1].end));
                ret = Some(opts.normalised());
                i = j;
            }
            // The search program starts after `CHARSET x` (SEARCH), `(criteria) charset` (SORT)
            // or `algorithm charset` (THREAD).
            match name.as_str() {
                "SEARCH" if toks.get(i).is_some_and(|t| is(cmd, t, "CHARSET")) => i += 2,
                "SEARCH" => {}
                "SORT" => {
                    while toks.get(i).is_some_and(|t| t.kind != Kind::Close) {
                        i += 1;
                    }
                    i += 2;
                }
                _ => i += 2,
            }
            let mut skip = 0usize;
            let mut set_next = false;
            while i < toks.len() {
                let t = toks[i];
                i += 1;
                if set_next {
                    set_next = false;
                    // `UID $`: the argument of the UID key is a UID set in any SEARCH.
                    if is_dollar(&t) {
                        dollars.push((i - 1, true));
                    }
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                if t.kind != Kind::Atom {
                    continue;
                }
                let w = &cmd[t.start..t.end];
                if w == b"$" {
                    // A sequence-set search key is sequence numbers, in UID SEARCH too: `$`
                    // names the same messages either way.
                    dollars.push((i - 1, false));
                } else if w.eq_ignore_ascii_case(b"UID") {
                    set_next = true;
                } else if w.eq_ignore_ascii_case(b"HEADER") {
                    skip = 2;
                } else if w.eq_ignore_ascii_case(b"MODSEQ") {
                    // RFC 7162: MODSEQ [entry-name entry-type-req] mod-sequence-valzer.
                    skip = match toks.get(i) {
                        Some(n) if n.kind == Kind::Quoted => 3,
                        _ => 1,
                    };
                } else if ONE_ARG.iter().any(|k| w.eq_ignore_ascii_case(k.as_bytes())) {
                    skip = 1;
                }
            }
        }
        _ => {}
    }
    if dollars.is_empty() && cut.is_none() {
        return Ok(unchanged);
    }
    // Each `$` becomes the whole saved set: a few are plenty, many would multiply its size.
    if dollars.len() > MAX_DOLLARS {
        return Err(format!("Too many $ references (at most {MAX_DOLLARS})"));
    }
    let sets: [String; 2] = [
        if dollars.iter().any(|d| !d.1) {
            dollar(false)
        } else {
            String::new()
        },
        if dollars.iter().any(|d| d.1) {
            dollar(true)
        } else {
            String::new()
        },
    ];
    let mut out = Vec::with_capacity(cmd.len() + (sets[0].len() + sets[1].len()) * dollars.len());
    let mut pos = 0;
    let mut edits: Vec<(usize, usize, &[u8])> = dollars
        .iter()
        .map(|&(d, u)| (toks[d].start, toks[d].end, sets[usize::from(u)].as_bytes()))
        .collect();
    if let Some((a, b)) = cut {
        edits.push((a, b, b""));
    }
    edits.sort_by_key(|e| e.0);
    for (a, b, with) in edits {
        out.extend_from_slice(&cmd[pos..a]);
        out.extend_from_slice(with);
        pos = b;
    }
    out.extend_from_slice(&cmd[pos..]);
    Ok(Rewritten {
        bytes: Some(out),
        ret,
    })
}

/// Numbers (ascending, unique) as a sequence set with ranges: `1:3,5`. An empty list becomes
/// a number no message has (`4294967295`): `$` of an empty result is "a valid, but
/// non-matching list of messages" (RFC 5182 §2.1), and numbers beyond the mailbox name nothing.
pub fn sequence_set(nums: &[u32]) -> String {
    if nums.is_empty() {
        return u32::MAX.to_string();
    }
    crate::imap::response::set_text(nums)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(cmd: &str) -> (String, Option<ReturnOpts>) {
        let r = rewrite(cmd.as_bytes(), &|uid| {
            if uid { "10:12" } else { "1,3" }.to_string()
        })
        .unwrap();
        (
            r.bytes
                .map(|b| String::from_utf8(b).unwrap())
                .unwrap_or_else(|| cmd.to_string()),
            r.ret,
        )
    }

    #[test]
    fn dollar_in_sequence_set_positions_only() {
        assert_eq!(rw("a FETCH $ FLAGS\r\n").0, "a FETCH 1,3 FLAGS\r\n");
        assert_eq!(
            rw("a UID FETCH $ FLAGS\r\n").0,
            "a UID FETCH 10:12 FLAGS\r\n"
        );
        assert_eq!(
            rw("a UID STORE $ +FLAGS ($x)\r\n").0,
            "a UID STORE 10:12 +FLAGS ($x)\r\n"
        );
        assert_eq!(rw("a COPY 1 $\r\n").0, "a COPY 1 $\r\n");
        assert_eq!(
            rw("a SEARCH SUBJECT $ OR $ UID $ KEYWORD $\r\n").0,
            "a SEARCH SUBJECT $ OR 1,3 UID 10:12 KEYWORD $\r\n"
        );
        assert_eq!(
            rw("a SEARCH HEADER X $ \"$\" {1}\r\n$ $\r\n").0,
            "a SEARCH HEADER X $ \"$\" {1}\r\n$ 1,3\r\n"
        );
        assert_eq!(
            rw("a UID SORT (SUBJECT) UTF-8 $ UID $\r\n").0,
            "a UID SORT (SUBJECT) UTF-8 1,3 UID 10:12\r\n"
        );
        assert_eq!(
            rw("a THREAD REFERENCES UTF-8 NOT $\r\n").0,
            "a THREAD REFERENCES UTF-8 NOT 1,3\r\n"
        );
        assert_eq!(
            rw("a SEARCH MODSEQ \"/flags/$x\" all 5 $\r\n").0,
            "a SEARCH MODSEQ \"/flags/$x\" all 5 1,3\r\n"
        );
    }

    #[test]
    fn return_options_are_cut_out() {
        let (b, r) = rw("a SEARCH RETURN (MIN max) CHARSET UTF-8 $\r\n");
        assert_eq!(b, "a SEARCH CHARSET UTF-8 1,3\r\n");
        let r = r.unwrap();
        assert!(r.min && r.max && !r.all && !r.count && !r.save);
        let (b, r) = rw("a UID SEARCH RETURN () ALL\r\n");
        assert_eq!(b, "a UID SEARCH ALL\r\n");
        assert!(r.unwrap().all);
        assert!(rewrite(b"a SEARCH RETURN (PARTIAL 1:5) ALL\r\n", &|_| String::new()).is_err());
        assert!(rewrite(b"a SEARCH RETURN (MIN ALL\r\n", &|_| String::new()).is_err());
        let many = format!("a SEARCH {}\r\n", ["$"; MAX_DOLLARS + 1].join(" "));
        assert!(rewrite(many.as_bytes(), &|_| String::new()).is_err());
        // Not ours: unchanged.
        assert_eq!(rw("a LIST \"\" * RETURN (CHILDREN)\r\n").1, None);
        assert_eq!(rw("a SEARCH SUBJECT return\r\n").1, None);
    }

    /// Arbitrary bytes, dense in the characters the scanner cares about: never a panic, and
    /// an edit only ever replaces `$` tokens and the RETURN clause.
    #[test]
    fn arbitrary_input_never_panics() {
        let alphabet: &[u8] = b"a $(){}\"\\\r\n+0123456789[]RETURNSEARCHUIDFETCHSORTHEADERMODSEQ";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut cmd = b"t ".to_vec();
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                cmd.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            if x.is_multiple_of(3) {
                cmd.splice(2..2, b"UID SEARCH ".iter().copied());
            }
            let _ = rewrite(&cmd, &|_| "1:2".to_string());
        }
    }

    #[test]
    fn saved_results() {
        let o = |min, max, all, count| ReturnOpts {
            min,
            max,
            all,
            count,
            save: true,
        };
        assert_eq!(o(true, false, false, false).saved(&[2, 5, 9]), vec![2]);
        assert_eq!(o(true, true, false, false).saved(&[2, 5, 9]), vec![2, 9]);
        assert_eq!(o(true, true, false, false).saved(&[5]), vec![5]);
        assert_eq!(o(true, false, false, true).saved(&[2, 5, 9]), vec![2, 5, 9]);
        assert_eq!(o(false, false, false, false).saved(&[2, 5]), vec![2, 5]);
        assert!(!o(false, false, false, false).answers());
        assert_eq!(sequence_set(&[1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(sequence_set(&[]), "4294967295");
    }
}
