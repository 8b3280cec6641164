//! CONDSTORE and QRESYNC (RFC 7162), keywords announced before use (RFC 3501 §7.2.6), and
//! sessions that patch their view from the store's modseq index — over implicit TLS against a
//! real `tanba serve`, with the raw client of `imap.rs`.

use crate::imap::{text, Imap, Resp};
use crate::support::*;

fn server() -> TestServer {
    crate::smtp::server_with_users(&[])
}

fn login(srv: &TestServer) -> Imap {
    Imap::login(srv, "alice@example.test", "secret-alice")
}

fn dump(rs: &[Resp]) -> String {
    rs.iter().map(|r| text(r)).collect::<Vec<_>>().join("\n")
}

fn msg(i: u32) -> Vec<u8> {
    format!("From: a@b.test\r\nSubject: m{i}\r\nMessage-ID: <m{i}@b.test>\r\n\r\nbody {i}\r\n")
        .into_bytes()
}

/// The number after `key` in the first response that has it (`HIGHESTMODSEQ 7`, `MODSEQ (7)`).
fn number_after(rs: &[Resp], key: &str) -> Option<u64> {
    rs.iter().find_map(|r| {
        let t = text(r);
        let at = t.find(key)? + key.len();
        let digits: String = t[at..]
            .trim_start_matches([' ', '('])
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    })
}

fn with_messages(srv: &TestServer, n: u32) -> Imap {
    let mut c = login(srv);
    for i in 1..=n {
        let t = c.append("INBOX", "()", &msg(i));
        assert!(t.contains("OK"), "{t}");
    }
    c
}

#[test]
fn a_flag_change_in_one_session_is_returned_by_changedsince_in_another() {
    let srv = server();
    let mut a = with_messages(&srv, 3);
    let caps = a.ok("CAPABILITY");
    assert!(
        text(&caps[0]).contains("CONDSTORE") && text(&caps[0]).contains("QRESYNC"),
        "{}",
        dump(&caps)
    );
    a.ok("SELECT INBOX");
    let mut b = login(&srv);
    let u = b.ok("SELECT INBOX (CONDSTORE)");
    let m = number_after(&u, "[HIGHESTMODSEQ").expect("HIGHESTMODSEQ in SELECT");

    a.ok("STORE 2 +FLAGS.SILENT (\\Flagged)");
    let u = b.ok(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {m})"));
    let fetches: Vec<String> = u
        .iter()
        .map(|r| text(r))
        .filter(|t| t.contains(" FETCH "))
        .collect();
    assert!(!fetches.is_empty(), "{}", dump(&u));
    for f in &fetches {
        assert!(f.starts_with("* 2 FETCH ("), "only message 2 changed: {f}");
        assert!(f.contains("\\Flagged") && f.contains("MODSEQ ("), "{f}");
    }
    let m2 = number_after(&u, "MODSEQ").unwrap();
    assert!(m2 > m, "{m2} > {m}");
    // Nothing changed since then.
    let u = b.ok(&format!("FETCH 1:* (FLAGS) (CHANGEDSINCE {m2})"));
    assert!(!u.iter().any(|r| text(r).contains("FETCH")), "{}", dump(&u));
    // STATUS and SEARCH MODSEQ agree.
    let u = a.ok("STATUS INBOX (HIGHESTMODSEQ)");
    assert_eq!(number_after(&u, "HIGHESTMODSEQ"), Some(m2), "{}", dump(&u));
    let u = a.ok(&format!("SEARCH MODSEQ {m2}"));
    assert!(
        u.iter()
            .any(|r| text(r) == format!("* SEARCH 2 (MODSEQ {m2})")),
        "{}",
        dump(&u)
    );
    // An implicit \Seen reports the new flags with their modseq.
    let u = b.ok("FETCH 3 (BODY[])");
    let t = text(&u[0]);
    assert!(
        t.contains("\\Seen") && t.contains("MODSEQ ("),
        "{}",
        dump(&u)
    );
    assert!(number_after(&u, "MODSEQ").unwrap() > m2, "{}", dump(&u));
}

#[test]
fn store_unchangedsince_reports_modified_and_changes_the_rest() {
    let srv = server();
    let mut a = with_messages(&srv, 3);
    a.ok("SELECT INBOX");
    let mut b = login(&srv);
    let u = b.ok("SELECT INBOX (CONDSTORE)");
    let m = number_after(&u, "[HIGHESTMODSEQ").unwrap();
    a.ok("STORE 2 +FLAGS.SILENT (\\Answered)");
    let (u, tagged) = b.cmd(&format!("STORE 1:3 (UNCHANGEDSINCE {m}) +FLAGS (\\Seen)"));
    assert!(tagged.contains("OK [MODIFIED 2]"), "{tagged}\n{}", dump(&u));
    let seen: Vec<String> = u
        .iter()
        .map(|r| text(r))
        .filter(|t| t.contains("\\Seen"))
        .collect();
    assert_eq!(seen.len(), 2, "{}", dump(&u));
    assert!(seen.iter().all(|t| t.contains("MODSEQ (")), "{seen:?}");
    let u = b.ok("UID FETCH 2 (FLAGS)");
    assert!(
        !u.iter().any(|r| text(r).contains("\\Seen")),
        "{}",
        dump(&u)
    );
    // UID STORE names UIDs; 0 always fails (every modseq is above it).
    let (_, tagged) = b.cmd("UID STORE 3 (UNCHANGEDSINCE 0) +FLAGS (\\Draft)");
    assert!(tagged.contains("OK [MODIFIED 3]"), "{tagged}");
}

#[test]
fn qresync_reconnect_gets_vanished_earlier_and_changes() {
    let srv = server();
    let mut a = with_messages(&srv, 6);
    let u = a.ok("SELECT INBOX (CONDSTORE)");
    let validity = number_after(&u, "[UIDVALIDITY").unwrap();
    let m = number_after(&u, "[HIGHESTMODSEQ").unwrap();
    a.ok("LOGOUT");

    let mut b = login(&srv);
    b.ok("SELECT INBOX");
    b.ok("UID STORE 2,4 +FLAGS.SILENT (\\Deleted)");
    b.ok("EXPUNGE");
    b.ok("UID STORE 5 +FLAGS.SILENT (\\Flagged)");

    let mut c = login(&srv);
    // QRESYNC needs ENABLE first (RFC 7162 §3.2.5).
    let (_, t) = c.cmd(&format!("SELECT INBOX (QRESYNC ({validity} {m}))"));
    assert!(t.contains("BAD"), "{t}");
    let u = c.ok("ENABLE QRESYNC");
    assert!(text(&u[0]).contains("ENABLED") && text(&u[0]).contains("QRESYNC"));
    let u = c.ok(&format!("SELECT INBOX (QRESYNC ({validity} {m} 1:6))"));
    assert!(
        u.iter().any(|r| text(r) == "* VANISHED (EARLIER) 2,4"),
        "{}",
        dump(&u)
    );
    let changed: Vec<String> = u
        .iter()
        .map(|r| text(r))
        .filter(|t| t.contains(" FETCH "))
        .collect();
    assert_eq!(changed.len(), 1, "{}", dump(&u));
    assert!(
        changed[0].contains("UID 5")
            && changed[0].contains("\\Flagged")
            && changed[0].contains("MODSEQ"),
        "{changed:?}"
    );
    // With QRESYNC on, another session's expunge arrives as VANISHED, not EXPUNGE.
    b.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    b.ok("EXPUNGE");
    let u = c.ok("NOOP");
    assert!(u.iter().any(|r| text(r) == "* VANISHED 1"), "{}", dump(&u));
    assert!(
        !u.iter().any(|r| text(r).contains("EXPUNGE")),
        "{}",
        dump(&u)
    );
    // UID FETCH (CHANGEDSINCE m VANISHED): the expunges of the set since m, then the changes.
    let u = c.ok(&format!(
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {m} VANISHED)"
    ));
    assert_eq!(text(&u[0]), "* VANISHED (EARLIER) 1:2,4", "{}", dump(&u));
    assert!(
        u.iter().skip(1).all(|r| text(r).contains("UID 5")),
        "{}",
        dump(&u)
    );
    // VANISHED without CHANGEDSINCE is a BAD (RFC 7162 §3.2.6).
    let (_, t) = c.cmd("UID FETCH 1:* (FLAGS) (VANISHED)");
    assert!(t.contains("BAD"), "{t}");
    // Selecting again closes the old mailbox with [CLOSED] first.
    let u = c.ok("EXAMINE INBOX");
    assert!(text(&u[0]).contains("[CLOSED]"), "{}", dump(&u));
}

#[test]
fn new_keywords_are_announced_before_any_fetch_shows_them() {
    let srv = server();
    let mut a = with_messages(&srv, 2);
    a.ok("SELECT INBOX");
    let mut b = login(&srv);
    b.ok("SELECT INBOX");
    let check = |u: &[Resp], who: &str| {
        let flags_at = u
            .iter()
            .position(|r| text(r).starts_with("* FLAGS (") && text(r).contains("$hello"));
        let fetch_at = u
            .iter()
            .position(|r| text(r).contains("FETCH") && text(r).contains("$hello"));
        match (flags_at, fetch_at) {
            (Some(f), Some(x)) => assert!(f < x, "{who}: FLAGS after FETCH:\n{}", dump(u)),
            _ => panic!("{who}: missing FLAGS or FETCH:\n{}", dump(u)),
        }
    };
    let u = a.ok("STORE 1 +FLAGS ($hello)");
    check(&u, "storing session");
    let u = b.ok("NOOP");
    check(&u, "other session");
}

#[test]
fn modseqs_and_the_expunge_log_survive_a_restart() {
    let mut srv = server();
    let mut a = with_messages(&srv, 3);
    a.ok("SELECT INBOX");
    a.ok("STORE 2 +FLAGS.SILENT (\\Flagged)");
    let u = a.ok("FETCH 1:3 (MODSEQ)");
    let before = dump(&u);
    let st = a.ok("STATUS INBOX (HIGHESTMODSEQ UIDVALIDITY)");
    let m = number_after(&st, "HIGHESTMODSEQ").unwrap();
    let validity = number_after(&st, "UIDVALIDITY").unwrap();
    a.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)");
    a.ok("EXPUNGE");
    drop(a);
    srv.restart();
    let mut b = login(&srv);
    b.ok("ENABLE QRESYNC");
    let u = b.ok(&format!("SELECT INBOX (QRESYNC ({validity} {m}))"));
    assert!(
        u.iter().any(|r| text(r) == "* VANISHED (EARLIER) 3"),
        "{}",
        dump(&u)
    );
    let after = dump(&b.ok("FETCH 1:2 (MODSEQ)"));
    let first_two: Vec<&str> = before.lines().take(2).collect();
    assert_eq!(after.lines().collect::<Vec<_>>(), first_two);
}

/// A small deterministic generator (no new dependency for a test).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u32) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as u32
    }
}

/// What a client knows of the mailbox: (uid, flags) in sequence order.
struct View {
    msgs: Vec<(u32, Vec<String>)>,
    /// Keywords announced by `* FLAGS` so far (RFC 3501 §7.2.6: before any FETCH shows one).
    announced: Vec<String>,
}

fn flags_of(t: &str) -> Option<Vec<String>> {
    let at = t.find("FLAGS (")? + 7;
    let end = t[at..].find(')')? + at;
    let mut f: Vec<String> = t[at..end]
        .split_whitespace()
        .filter(|f| *f != "\\Recent")
        .map(String::from)
        .collect();
    f.sort();
    Some(f)
}

fn uid_of(t: &str) -> Option<u32> {
    let at = t.find("UID ")? + 4;
    t[at..].split([' ', ')']).next()?.parse().ok()
}

fn uid_set(s: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for part in s.split(',') {
        match part.split_once(':') {
            Some((a, b)) => out.extend(a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

impl View {
    fn default() -> View {
        View {
            msgs: Vec::new(),
            announced: Vec::new(),
        }
    }

    fn apply_flags(&mut self, u: &[Resp]) {
        for r in u {
            let t = text(r);
            if t.starts_with("* FLAGS (") {
                self.announced = flags_of(&t.replacen("* ", "", 1)).unwrap();
            }
        }
    }

    /// Applies untagged responses as a client would; EXISTS makes it fetch the new messages.
    fn apply(&mut self, c: &mut Imap, u: &[Resp]) {
        let mut exists = None;
        for r in u {
            let t = text(r);
            let words: Vec<&str> = t.split(' ').collect();
            if t.starts_with("* FLAGS (") {
                self.announced = flags_of(&t.replacen("* ", "", 1)).unwrap();
            } else if words.len() >= 3 && words[2] == "FETCH" {
                for f in flags_of(&t).unwrap_or_default() {
                    assert!(
                        f.starts_with('\\') || self.announced.contains(&f),
                        "{f} shown before it was announced: {t}"
                    );
                }
            }
            if t.starts_with("* VANISHED ") && !t.contains("EARLIER") {
                let gone = uid_set(words[2]);
                self.msgs.retain(|(u, _)| !gone.contains(u));
            } else if words.len() >= 3 && words[2] == "EXPUNGE" {
                let n: usize = words[1].parse().unwrap();
                self.msgs.remove(n - 1);
            } else if words.len() >= 3 && words[2] == "EXISTS" {
                exists = Some(words[1].parse::<usize>().unwrap());
            } else if words.len() >= 3 && words[2] == "FETCH" {
                let n: usize = words[1].parse().unwrap();
                if let (Some(f), Some(m)) = (flags_of(&t), self.msgs.get_mut(n - 1)) {
                    if let Some(uid) = uid_of(&t) {
                        assert_eq!(m.0, uid, "FETCH {n} names another message: {t}");
                    }
                    m.1 = f;
                }
            }
        }
        if let Some(n) = exists {
            let have = self.msgs.len();
            if n > have {
                let u = c.ok(&format!("FETCH {}:* (UID FLAGS)", have + 1));
                for r in &u {
                    let t = text(r);
                    let words: Vec<&str> = t.split(' ').collect();
                    if words.len() >= 3 && words[2] == "FETCH" {
                        let seq: usize = words[1].parse().unwrap();
                        if seq > have && seq == self.msgs.len() + 1 {
                            self.msgs.push((uid_of(&t).unwrap(), flags_of(&t).unwrap()));
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn two_sessions_stay_right_across_many_interleaved_changes() {
    let srv = server();
    let mut setup = with_messages(&srv, 5);
    setup.ok("LOGOUT");
    let mut sessions = [login(&srv), login(&srv)];
    // Session 1 speaks QRESYNC (VANISHED), session 0 plain IMAP4rev1 (EXPUNGE).
    sessions[1].ok("ENABLE QRESYNC");
    let mut views = [View::default(), View::default()];
    for (c, v) in sessions.iter_mut().zip(views.iter_mut()) {
        let u = c.ok("SELECT INBOX");
        v.apply_flags(&u);
        let u = c.ok("FETCH 1:* (UID FLAGS)");
        for r in &u {
            let t = text(r);
            v.msgs.push((uid_of(&t).unwrap(), flags_of(&t).unwrap()));
        }
    }
    // The model: uid → flags.
    let mut model: std::collections::BTreeMap<u32, Vec<String>> =
        views[0].msgs.iter().cloned().collect();
    let mut next_uid = 6;
    let mut rng = Lcg(7162);
    let flags = ["\\Seen", "\\Flagged", "\\Deleted", "$k1", "$k2"];
    for step in 0..120 {
        let who = rng.next(2) as usize;
        let c = &mut sessions[who];
        let u = match rng.next(10) {
            0..=5 if !model.is_empty() => {
                let uids: Vec<u32> = model.keys().copied().collect();
                let uid = uids[rng.next(uids.len() as u32) as usize];
                let f = flags[rng.next(flags.len() as u32) as usize];
                let add = rng.next(2) == 0;
                let e = model.get_mut(&uid).unwrap();
                if add {
                    if !e.iter().any(|x| x == f) {
                        e.push(f.to_string());
                        e.sort();
                    }
                } else {
                    e.retain(|x| x != f);
                }
                let op = if add { "+" } else { "-" };
                c.ok(&format!("UID STORE {uid} {op}FLAGS ({f})"))
            }
            6 | 7 => {
                // LITERAL+, so that the APPEND's own untagged responses (EXISTS) are seen.
                let m = msg(100 + step);
                let tag = c.tag();
                c.send(format!("{tag} APPEND INBOX ($k1) {{{}+}}\r\n", m.len()).as_bytes());
                c.send(&m);
                c.send(b"\r\n");
                let (u, t) = c.until_tagged(&tag);
                assert!(t.contains("OK"), "{t}");
                model.insert(next_uid, vec!["$k1".to_string()]);
                next_uid += 1;
                u
            }
            _ => {
                model.retain(|_, f| !f.iter().any(|x| x == "\\Deleted"));
                c.ok("EXPUNGE")
            }
        };
        views[who].apply(c, &u);
        let other = 1 - who;
        let u = sessions[other].ok("NOOP");
        views[other].apply(&mut sessions[other], &u);
        for v in &views {
            let seen: Vec<(u32, Vec<String>)> = v.msgs.clone();
            let want: Vec<(u32, Vec<String>)> =
                model.iter().map(|(k, f)| (*k, f.clone())).collect();
            assert_eq!(seen, want, "step {step}");
        }
    }
}
