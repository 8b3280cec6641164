//! THREAD=ORDEREDSUBJECT and THREAD=REFERENCES (RFC 5256 §3) over the messages a search found.
//!
//! The trees live in one arena (`Vec<Node>`, links are indices), every walk is a loop with an
//! explicit stack — a reply chain thousands deep must not exhaust the thread's stack — and the
//! answer is written by [`write_threads`] the same way. Work per message is bounded: at most
//! [`MAX_REFERENCES`] Message-IDs of a References header are used.

use std::collections::HashMap;

use super::fetch::structure;
use super::mime;
use super::search::Msg;
use super::sort::{base_subject, casemap, sent_date};
use crate::store::Store;

/// The last this many Message-IDs of a References header are linked (the nearest ancestors;
/// the rest of a very long chain is already linked by the earlier messages of the thread).
pub const MAX_REFERENCES: usize = 128;

/// What threading needs of one message.
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// The number reported: sequence number or UID.
    pub num: u32,
    /// Sequence number: the tie-breaker of equal dates.
    pub seq: u32,
    pub sent: i64,
    /// Base subject, i;ascii-casemap folded.
    pub subject: Vec<u8>,
    /// The base subject extraction removed a reply/forward marker.
    pub refwd: bool,
    pub message_id: Option<String>,
    /// References (or, without valid ones, the first In-Reply-To id), oldest first.
    pub references: Vec<String>,
}

/// The Message-IDs (`<...>`, without the brackets) in a header value, in order. An id must
/// hold an `@` to count as valid (RFC 5322 msg-id = "<" id-left "@" id-right ">").
pub fn message_ids(v: &[u8]) -> Vec<String> {
    let (v, _) = mime::split_comments(v, Some(b' '));
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(lt) = memchr::memchr(b'<', &v[i..]).map(|p| i + p) {
        let Some(gt) = memchr::memchr(b'>', &v[lt..]).map(|p| lt + p) else {
            break;
        };
        let id: Vec<u8> = v[lt + 1..gt]
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        if id.len() > 2 && memchr::memchr(b'@', &id).is_some() && !id.contains(&b'<') {
            out.push(String::from_utf8_lossy(&id).into_owned());
        }
        i = gt + 1;
    }
    out
}

/// Reads what threading needs of the hits (seq, uid) of `msgs` (`msgs[seq - 1]`).
pub fn infos(store: &Store, msgs: &[Msg], hits: &[(u32, u32)], uid: bool) -> Vec<Info> {
    hits.iter()
        .filter_map(|&(seq, u)| {
            let msg = msgs.get((seq as usize).checked_sub(1)?)?;
            let c = structure(store, msg.meta.blob_id, None);
            let header = c.as_ref().map(|c| c.header.as_slice()).unwrap_or_default();
            let (subject, refwd) =
                base_subject(&mime::header_value(header, "Subject").unwrap_or_default());
            let message_id = mime::header_value(header, "Message-ID")
                .and_then(|v| message_ids(&v).into_iter().next());
            let mut references = mime::header_value(header, "References")
                .map(|v| message_ids(&v))
                .unwrap_or_default();
            if references.is_empty() {
                references = mime::header_value(header, "In-Reply-To")
                    .and_then(|v| message_ids(&v).into_iter().next())
                    .into_iter()
                    .collect();
            }
            if references.len() > MAX_REFERENCES {
                references.drain(..references.len() - MAX_REFERENCES);
            }
            Some(Info {
                num: if uid { u } else { seq },
                seq,
                sent: sent_date(c.as_ref(), msg.meta.internal_date),
                subject: casemap(&subject),
                refwd,
                message_id,
                references,
            })
        })
        .collect()
}

/// A node of the thread forest: a message (index into the infos) or a dummy.
#[derive(Debug, Clone, Default)]
struct Node {
    msg: Option<usize>,
    parent: Option<usize>,
    children: Vec<usize>,
}

struct Forest<'a> {
    infos: &'a [Info],
    nodes: Vec<Node>,
}

impl Forest<'_> {
    fn is_dummy(&self, n: usize) -> bool {
        self.nodes[n].msg.is_none()
    }

    /// The message a node sorts and is named by: its own, or a dummy's first child's.
    fn rep(&self, mut n: usize) -> Option<&Info> {
        loop {
            if let Some(m) = self.nodes[n].msg {
                return Some(&self.infos[m]);
            }
            n = *self.nodes[n].children.first()?;
        }
    }

    fn key(&self, n: usize) -> (i64, u32) {
        self.rep(n)
            .map(|i| (i.sent, i.seq))
            .unwrap_or((i64::MAX, u32::MAX))
    }

    fn sort_by_date(&self, list: &mut [usize]) {
        list.sort_by_key(|&n| self.key(n));
    }

    /// Whether `a` is `b` or below it. (A walk up from `a`; skipped when `b` has no children,
    /// the usual case of a message linked as it is read.)
    fn is_descendant(&self, mut a: usize, b: usize) -> bool {
        if self.nodes[b].children.is_empty() {
            return a == b;
        }
        loop {
            if a == b {
                return true;
            }
            match self.nodes[a].parent {
                Some(p) => a = p,
                None => return false,
            }
        }
    }

    fn unlink(&mut self, child: usize) {
        if let Some(p) = self.nodes[child].parent.take() {
            self.nodes[p].children.retain(|&c| c != child);
        }
    }

    fn link(&mut self, parent: usize, child: usize) {
        self.nodes[child].parent = Some(parent);
        self.nodes[parent].children.push(child);
    }

    fn new_node(&mut self, msg: Option<usize>) -> usize {
        self.nodes.push(Node {
            msg,
            ..Node::default()
        });
        self.nodes.len() - 1
    }

    /// Sorts every set of siblings by sent date, the deepest first (RFC 5256 §3 REFERENCES
    /// step 6), so that a dummy sorts by its first child as it will be shown.
    fn sort_all(&mut self, roots: &mut [usize]) {
        let mut order = Vec::new();
        let mut stack: Vec<usize> = roots.to_vec();
        while let Some(n) = stack.pop() {
            order.push(n);
            stack.extend(self.nodes[n].children.iter().copied());
        }
        for &n in order.iter().rev() {
            let mut kids = std::mem::take(&mut self.nodes[n].children);
            self.sort_by_date(&mut kids);
            self.nodes[n].children = kids;
        }
        self.sort_by_date(roots);
    }
}

/// THREAD=ORDEREDSUBJECT (RFC 5256 §3): sorted by (base subject, sent date), each run of one
/// base subject a thread whose first message is the parent of all the others; threads in order
/// of their first message's sent date.
pub fn ordered_subject(infos: &[Info]) -> Vec<u8> {
    let mut idx: Vec<usize> = (0..infos.len()).collect();
    idx.sort_by(|&a, &b| {
        let (a, b) = (&infos[a], &infos[b]);
        (&a.subject, a.sent, a.seq).cmp(&(&b.subject, b.sent, b.seq))
    });
    let mut f = Forest {
        infos,
        nodes: Vec::with_capacity(infos.len()),
    };
    let mut roots = Vec::new();
    let mut current: Option<(usize, &[u8])> = None;
    for i in idx {
        let n = f.new_node(Some(i));
        match current {
            Some((root, subject)) if subject == infos[i].subject.as_slice() => f.link(root, n),
            _ => {
                roots.push(n);
                current = Some((n, infos[i].subject.as_slice()));
            }
        }
    }
    f.sort_by_date(&mut roots);
    write_threads(&f, &roots)
}

/// THREAD=REFERENCES (RFC 5256 §3), steps 1 to 6.
pub fn references(infos: &[Info]) -> Vec<u8> {
    let mut f = Forest {
        infos,
        nodes: Vec::with_capacity(infos.len() * 2),
    };
    // Message-ID → node. Messages without a (valid) id, and duplicates, get a node of their
    // own that no reference can find (a "unique Message ID").
    let mut ids: HashMap<&str, usize> = HashMap::with_capacity(infos.len());
    for (i, info) in infos.iter().enumerate() {
        let node = match info.message_id.as_deref() {
            Some(id) => match ids.get(id) {
                // A dummy made by an earlier reference: this message fills it.
                Some(&n) if f.is_dummy(n) => {
                    f.nodes[n].msg = Some(i);
                    n
                }
                Some(_) => f.new_node(Some(i)),
                None => {
                    let n = f.new_node(Some(i));
                    ids.insert(id, n);
                    n
                }
            },
            None => f.new_node(Some(i)),
        };
        // (1A) Link the references in order, each the parent of the next, where neither link
        // exists nor a loop would result.
        let mut prev: Option<usize> = None;
        for r in &info.references {
            let n = match ids.get(r.as_str()) {
                Some(&n) => n,
                None => {
                    let n = f.new_node(None);
                    ids.insert(r.as_str(), n);
                    n
                }
            };
            if let Some(p) = prev {
                if p != n && f.nodes[n].parent.is_none() && !f.is_descendant(p, n) {
                    f.link(p, n);
                }
            }
            prev = Some(n);
        }
        // (1B) The last reference is the message's parent (replacing any parent it had),
        // unless that makes a loop; no references: no parent.
        f.unlink(node);
        if let Some(p) = prev {
            if !f.is_descendant(p, node) {
                f.link(p, node);
            }
        }
    }
    // (2) The roots, in the order their nodes were made.
    let mut roots: Vec<usize> = (0..f.nodes.len())
        .filter(|&n| f.nodes[n].parent.is_none())
        .collect();
    // (3) Prune dummies: childless ones go; the others give their children to their parent —
    // at the top only when they have one child.
    roots = prune(&mut f, None, roots);
    let mut stack: Vec<usize> = roots.clone();
    while let Some(n) = stack.pop() {
        let kids = std::mem::take(&mut f.nodes[n].children);
        let kids = prune(&mut f, Some(n), kids);
        stack.extend(kids.iter().copied());
        f.nodes[n].children = kids;
    }
    // (4) Top level by sent date (a dummy by its earliest child).
    for &r in &roots {
        if f.is_dummy(r) {
            let mut kids = std::mem::take(&mut f.nodes[r].children);
            f.sort_by_date(&mut kids);
            f.nodes[r].children = kids;
        }
    }
    f.sort_by_date(&mut roots);
    // (5) Gather top-level threads of one base subject.
    let subject_of = |f: &Forest<'_>, n: usize| -> Option<Vec<u8>> {
        f.rep(n)
            .map(|i| i.subject.clone())
            .filter(|s| !s.is_empty())
    };
    let refwd = |f: &Forest<'_>, n: usize| f.nodes[n].msg.is_some_and(|m| infos[m].refwd);
    let mut table: HashMap<Vec<u8>, usize> = HashMap::new();
    for &r in &roots {
        let Some(s) = subject_of(&f, r) else {
            continue;
        };
        // (C) In the table: the first of a subject, unless a later one is a dummy where the
        // first is not, or is no reply/forward where the first is.
        let replace = match table.get(&s) {
            None => true,
            Some(&t) => (f.is_dummy(r) && !f.is_dummy(t)) || (refwd(&f, t) && !refwd(&f, r)),
        };
        if replace {
            table.insert(s, r);
        }
    }
    let mut slot: HashMap<usize, usize> = roots.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut gone = vec![false; roots.len()];
    for i in 0..roots.len() {
        if gone[i] {
            continue;
        }
        let r = roots[i];
        let Some(s) = subject_of(&f, r) else {
            continue;
        };
        let Some(&t) = table.get(&s) else {
            continue;
        };
        if t == r {
            continue;
        }
        match (f.is_dummy(t), f.is_dummy(r)) {
            (true, true) => {
                let kids = std::mem::take(&mut f.nodes[r].children);
                for k in kids {
                    f.nodes[k].parent = None;
                    f.link(t, k);
                }
                gone[i] = true;
            }
            (true, false) => {
                f.link(t, r);
                gone[i] = true;
            }
            (false, _) if refwd(&f, r) && !refwd(&f, t) => {
                f.link(t, r);
                gone[i] = true;
            }
            _ => {
                let Some(&ts) = slot.get(&t) else {
                    continue;
                };
                let d = f.new_node(None);
                f.link(d, t);
                f.link(d, r);
                roots[ts] = d;
                slot.insert(d, ts);
                table.insert(s, d);
                gone[i] = true;
            }
        }
    }
    let mut roots: Vec<usize> = roots
        .iter()
        .zip(&gone)
        .filter(|(_, &g)| !g)
        .map(|(&r, _)| r)
        .collect();
    // (6) Every set of siblings by sent date.
    f.sort_all(&mut roots);
    write_threads(&f, &roots)
}

/// REFERENCES step 3 for one list of siblings under `parent` (`None`: the top level).
fn prune(f: &mut Forest<'_>, parent: Option<usize>, list: Vec<usize>) -> Vec<usize> {
    let mut queue: std::collections::VecDeque<usize> = list.into();
    let mut out = Vec::with_capacity(queue.len());
    while let Some(c) = queue.pop_front() {
        if f.is_dummy(c) {
            let kids = std::mem::take(&mut f.nodes[c].children);
            if kids.is_empty() {
                continue;
            }
            if parent.is_some() || kids.len() == 1 {
                for &k in kids.iter().rev() {
                    f.nodes[k].parent = parent;
                    queue.push_front(k);
                }
                continue;
            }
            f.nodes[c].children = kids;
        }
        out.push(c);
    }
    out
}

/// `(1 2 (3)(4))(5)`: one `thread-list` per root (RFC 5256 §4 `thread-data`), without
/// recursion. A node with one child continues its line; with several, each child is a
/// parenthesised list of its own.
fn write_threads(f: &Forest<'_>, roots: &[usize]) -> Vec<u8> {
    enum Step {
        Open,
        Line(usize),
        Close,
    }
    let mut out = Vec::new();
    let mut stack: Vec<Step> = Vec::new();
    for &r in roots.iter().rev() {
        stack.push(Step::Close);
        stack.push(Step::Line(r));
        stack.push(Step::Open);
    }
    let space = |out: &mut Vec<u8>| {
        if out.last().is_some_and(|b| b.is_ascii_digit()) {
            out.push(b' ');
        }
    };
    while let Some(step) = stack.pop() {
        match step {
            Step::Open => {
                space(&mut out);
                out.push(b'(');
            }
            Step::Close => out.push(b')'),
            Step::Line(mut n) => loop {
                if let Some(m) = f.nodes[n].msg {
                    space(&mut out);
                    out.extend_from_slice(f.infos[m].num.to_string().as_bytes());
                }
                match f.nodes[n].children.as_slice() {
                    [] => break,
                    [only] => n = *only,
                    kids => {
                        for &k in kids.iter().rev() {
                            stack.push(Step::Close);
                            stack.push(Step::Line(k));
                            stack.push(Step::Open);
                        }
                        break;
                    }
                }
            },
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(num: u32, sent: i64, subject: &str, id: &str, refs: &[&str]) -> Info {
        let (s, refwd) = base_subject(subject.as_bytes());
        Info {
            num,
            seq: num,
            sent,
            subject: casemap(&s),
            refwd,
            message_id: (!id.is_empty()).then(|| id.to_string()),
            references: refs.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn message_id_lists() {
        assert_eq!(
            message_ids(b"<a@b> (comment <x@y>) <c@d>\r\n <bad> < e @f >"),
            vec!["a@b", "c@d", "e@f"]
        );
        assert!(message_ids(b"no ids here").is_empty());
    }

    /// imaptest `thread`: a reference loop is not made; the first message is the child of the
    /// third through the second's References.
    #[test]
    fn references_without_loops() {
        let v = [
            info(1, 300, "", "a@b", &[]),
            info(2, 100, "", "b@b", &["c@b", "a@b"]),
            info(3, 200, "", "c@b", &["b@b"]),
        ];
        assert_eq!(s(references(&v)), "(3 1 2)");
        // After the first is expunged (numbers shift).
        let v = [
            info(1, 100, "", "b@b", &["c@b", "a@b"]),
            info(2, 200, "", "c@b", &["b@b"]),
        ];
        assert_eq!(s(references(&v)), "(2 1)");
    }

    /// RFC 5256 §3: dummies are pruned (promoted), kept at the top only with several children;
    /// siblings by date; subjects gather top-level threads.
    #[test]
    fn references_dummies_and_subjects() {
        // Two replies to a missing parent: a dummy at the top keeps them together.
        let v = [
            info(1, 10, "Re: x", "r1@h", &["gone@h"]),
            info(2, 5, "Re: x", "r2@h", &["gone@h"]),
        ];
        assert_eq!(s(references(&v)), "((2)(1))");
        // A reply to a missing message that replied to a present one: the dummy in between
        // is spliced out.
        let v = [
            info(1, 1, "topic", "p@h", &[]),
            info(2, 3, "Re: topic", "c@h", &["p@h", "gone@h"]),
            info(3, 2, "Re: topic", "d@h", &["p@h"]),
        ];
        assert_eq!(s(references(&v)), "(1 (3)(2))");
        // Same base subject, no references: the reply joins the original as its child.
        let v = [
            info(1, 1, "lunch", "l1@h", &[]),
            info(2, 2, "Re: lunch", "l2@h", &[]),
            info(3, 3, "other", "o@h", &[]),
        ];
        assert_eq!(s(references(&v)), "(1 2)(3)");
        // Two originals of one subject: a dummy holds both.
        let v = [
            info(1, 1, "news", "n1@h", &[]),
            info(2, 2, "news", "n2@h", &[]),
        ];
        assert_eq!(s(references(&v)), "((1)(2))");
        // Empty subjects are never gathered.
        let v = [info(1, 1, "", "e1@h", &[]), info(2, 2, "", "e2@h", &[])];
        assert_eq!(s(references(&v)), "(1)(2)");
        // Duplicate and missing Message-IDs get their own nodes.
        let v = [
            info(1, 1, "a", "dup@h", &[]),
            info(2, 2, "b", "dup@h", &[]),
            info(3, 3, "c", "", &["dup@h"]),
        ];
        assert_eq!(s(references(&v)), "(1 3)(2)");
    }

    #[test]
    fn ordered_subject_threads() {
        let v = [
            info(1, 5, "b", "", &[]),
            info(2, 1, "a", "", &[]),
            info(3, 3, "Re: a", "", &[]),
            info(4, 2, "RE: A", "", &[]),
            info(5, 4, "Re: b", "", &[]),
            info(6, 0, "c", "", &[]),
        ];
        // a: 2 (1), 4 (2), 3 (3) → (2 (4)(3)); b: 1 (5), 5 (4) → (5 1); c: (6).
        assert_eq!(s(ordered_subject(&v)), "(6)(2 (4)(3))(5 1)");
    }

    /// Arbitrary subjects and id lists: never a panic.
    #[test]
    fn arbitrary_subjects_and_ids_never_panic() {
        let alphabet: &[u8] = b"Rr eEfFwWdD:[]()<>@\t\r\n\"\\=?xQB";
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let mut y = x;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    y = y
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    alphabet[(y >> 33) as usize % alphabet.len()]
                })
                .collect();
            let _ = base_subject(&v);
            let _ = message_ids(&v);
        }
    }

    #[test]
    fn deep_chains_do_not_recurse() {
        let n = 50_000;
        let v: Vec<Info> = (1..=n)
            .map(|i| {
                let id = format!("m{i}@h");
                let refs: Vec<String> = if i > 1 {
                    vec![format!("m{}@h", i - 1)]
                } else {
                    vec![]
                };
                Info {
                    num: i,
                    seq: i,
                    sent: i as i64,
                    subject: Vec::new(),
                    refwd: false,
                    message_id: Some(id),
                    references: refs,
                }
            })
            .collect();
        let out = s(references(&v));
        assert!(out.starts_with("(1 2 3 "));
        assert!(out.ends_with(" 50000)"));
    }
}
