//! Issue 16: SEARCH FROM/TO/CC/BCC on addresses (imaptest `search-addresses`), ENVELOPE names,
//! ESEARCH (RFC 4731), SEARCHRES (RFC 5182), SORT and SORT=DISPLAY (RFC 5256, RFC 5957), THREAD
//! (RFC 5256) — over implicit TLS against the real server. The SORT and THREAD answers are
//! written out by hand from the RFC rules for the fixture mailbox below.

use crate::imap::{text, Imap};
use crate::support::*;

fn login() -> (TestServer, Imap) {
    let srv = crate::smtp::server_with_users(&[]);
    let c = Imap::login(&srv, "alice@example.test", "secret-alice");
    (srv, c)
}

/// The untagged responses of `cmd` that start with `* NAME`, as text without the prefix.
fn data(c: &mut Imap, cmd: &str, name: &str) -> Vec<String> {
    let prefix = format!("* {name}");
    c.ok(cmd)
        .iter()
        .map(|r| text(r))
        .filter(|l| l == &prefix || l.starts_with(&format!("{prefix} ")))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

/// The one `* NAME ...` answer of `cmd`.
fn one(c: &mut Imap, cmd: &str, name: &str) -> String {
    let d = data(c, cmd, name);
    assert_eq!(d.len(), 1, "{cmd}: {d:?}");
    d[0].clone()
}

fn append(c: &mut Imap, date: &str, msg: &str) {
    let t = c.append("INBOX", &format!("() \"{date}\""), msg.as_bytes());
    assert!(t.contains("OK"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// SEARCH on addresses, ENVELOPE.

#[test]
fn search_from_to_cc_bcc_match_parsed_addresses_not_comments() {
    let (_srv, mut c) = login();
    let d = "22-Feb-2008 17:06:23 +0000";
    append(&mut c, d, "From: user-from@domain.org\r\nTo: user-to@domain.org\r\nCc: user-cc@domain.org\r\nBcc: user-bcc@domain.org\r\n\r\nbody\r\n");
    append(&mut c, d, "From: RealFrom <user-from@domain.org>\r\nTo: RealTo <user-to@domain.org>\r\nCc: RealCc <user-cc@domain.org>\r\nBcc: RealBcc <user-bcc@domain.org>\r\n\r\nbody2\r\n");
    append(&mut c, d, "From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\nCc: <user-cc@domain.org>\r\nBcc: <user-bcc@domain.org>\r\n\r\nbody3\r\n");
    append(&mut c, d, "From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\nCc: user-cc@domain.org (RealCc)\r\nBcc: user-bcc@domain.org (RealBcc)\r\n\r\nbody4\r\n");
    append(&mut c, d, "From: user-from1@domain.org, user-from2@domain.org\r\nCc: user-cc@domain.org\r\n\r\nbody5\r\n");
    append(&mut c, d, "To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\r\n  groupname2: groupuser3@domain.org;\r\n\r\nbody6\r\n");
    c.ok("SELECT INBOX");
    for (q, want) in [
        ("SEARCH FROM user-from@domain.org", "1 2 3 4"),
        ("SEARCH TO user-to@domain.org", "1 2 3 4"),
        ("SEARCH CC user-cc@domain.org", "1 2 3 4 5"),
        ("SEARCH BCC user-bcc@domain.org", "1 2 3 4"),
        ("SEARCH FROM comment", ""),
        ("SEARCH FROM realfrom", "2 4"),
        ("SEARCH BCC ealbc", "2 4"),
        ("SEARCH FROM ser-fro", "1 2 3 4 5"),
        ("SEARCH FROM user-from2", "5"),
        ("SEARCH TO groupname2", "6"),
        ("SEARCH TO groupuser3", "6"),
        ("SEARCH TO groupuser4", ""),
        ("SEARCH HEADER FROM \"\"", "1 2 3 4 5"),
    ] {
        assert_eq!(one(&mut c, q, "SEARCH"), want, "{q}");
    }
    // ENVELOPE: no display name from a comment inside <...> (Dovecot: NIL); a comment after a
    // bare addr-spec still names it.
    let u = c.ok("FETCH 3:4 (ENVELOPE)");
    let env = u.iter().map(|r| text(r)).collect::<Vec<_>>().join("\n");
    assert!(
        env.contains("((NIL NIL \"user-from\" \"domain.org\"))"),
        "{env}"
    );
    assert!(!env.contains("\"comment\""), "{env}");
    assert!(
        env.contains("((\"RealFrom\" NIL \"user-from\" \"domain.org\"))"),
        "{env}"
    );
}

// ---------------------------------------------------------------------------------------------
// The fixture mailbox for ESEARCH, SEARCHRES, SORT and THREAD.
//
// A placeholder is appended first and expunged, so UID = sequence number + 1. Per message:
// Subject, From, To, Cc, Date (UTC), INTERNALDATE (day of January 2024), Message-ID and
// References/In-Reply-To, and a body of `k` KB so that SIZE order is the order of `k`.
//
// seq subject                 from                                 to                       cc      sent (UTC)       arr k  id  refs
//  1  Budget 2024             Abenova Zhanna <zhanna@corp.kz>      team@corp.kz             -       01-01 03:00      10  5  b1  -
//  2  Re: Budget 2024         Arman <arman@corp.kz>                Abenova <zhanna@corp.kz> boss@   01-01 10:00       2 12  b2  R: b1
//  3  Re: [fwd: Budget 2024]  bolat@corp.kz                        zhanna@corp.kz           -       01-01 08:00       3  1  b3  R: b1 b2
//  4  [corp] lunch            "Dana" <dana@corp.kz>                team@corp.kz             arman@  01-02 12:00       4  7  l1  -
//  5  Fwd: lunch (fwd)        Erlan <erlan@corp.kz>                dana@corp.kz             -       01-02 13:00       5  3  l2  -
//  6  Re: Re: lunch           =?UTF-8?B?..?= (Айгүль) <aigul@...>  dana@corp.kz             -       01-02 11:00       6 10  l3  R: l1
//  7  report                  Yerlan <yerlan@corp.kz>              Boss <boss@corp.kz>      -       01-03 09:00       7  2  r1  -
//  8  report                  karl@corp.kz (Karl)                  boss@corp.kz             -       01-03 08:00       8  9  r2  -
//  9  Re: missing parent      Nurlan <nurlan@corp.kz>              -                        -       01-04 10:00       9  4  m2  R: m0 m1 (absent)
// 10  Re: missing parent      olga@corp.kz                         -                        -       01-04 09:00       1 11  m3  R: m0 (absent)
// 11  _underscore             Pavel <pavel@corp.kz>                -                        -       (bad) = 01-11    11  6  -   -
// 12  (no Subject)            Mike <mike@corp.kz>                  -                        -       01-05 10:00      12  8  x1  In-Reply-To: b3

struct M {
    subject: Option<&'static str>,
    from: &'static str,
    to: Option<&'static str>,
    cc: Option<&'static str>,
    date: &'static str,
    arrival: u32,
    k: usize,
    id: Option<&'static str>,
    refs: &'static str,
}

const FIXTURE: &[M] = &[
    M {
        subject: Some("Budget 2024"),
        from: "Abenova Zhanna <zhanna@corp.kz>",
        to: Some("team@corp.kz"),
        cc: None,
        date: "Mon, 01 Jan 2024 09:00:00 +0600",
        arrival: 10,
        k: 5,
        id: Some("b1@corp.kz"),
        refs: "",
    },
    M {
        subject: Some("Re: Budget 2024"),
        from: "Arman <arman@corp.kz>",
        to: Some("Abenova <zhanna@corp.kz>"),
        cc: Some("boss@corp.kz"),
        date: "Mon, 01 Jan 2024 10:00:00 +0000",
        arrival: 2,
        k: 12,
        id: Some("b2@corp.kz"),
        refs: "References: <b1@corp.kz>\r\n",
    },
    M {
        subject: Some("Re: [fwd: Budget 2024]"),
        from: "bolat@corp.kz",
        to: Some("zhanna@corp.kz"),
        cc: None,
        date: "Mon, 01 Jan 2024 03:00:00 -0500",
        arrival: 3,
        k: 1,
        id: Some("b3@corp.kz"),
        refs: "References: <b1@corp.kz>\r\n <b2@corp.kz>\r\n",
    },
    M {
        subject: Some("[corp] lunch"),
        from: "\"Dana\" <dana@corp.kz>",
        to: Some("team@corp.kz"),
        cc: Some("arman@corp.kz"),
        date: "Tue, 02 Jan 2024 12:00:00 +0000",
        arrival: 4,
        k: 7,
        id: Some("l1@corp.kz"),
        refs: "",
    },
    M {
        subject: Some("Fwd: lunch (fwd)"),
        from: "Erlan <erlan@corp.kz>",
        to: Some("dana@corp.kz"),
        cc: None,
        date: "Tue, 02 Jan 2024 13:00:00 +0000",
        arrival: 5,
        k: 3,
        id: Some("l2@corp.kz"),
        refs: "",
    },
    M {
        subject: Some("Re: Re: lunch"),
        from: "=?UTF-8?B?0JDQudCz0q/Qu9GM?= <aigul@corp.kz>",
        to: Some("dana@corp.kz"),
        cc: None,
        date: "Tue, 02 Jan 2024 11:00:00 +0000",
        arrival: 6,
        k: 10,
        id: Some("l3@corp.kz"),
        refs: "References: <l1@corp.kz>\r\n",
    },
    M {
        subject: Some("report"),
        from: "Yerlan <yerlan@corp.kz>",
        to: Some("Boss <boss@corp.kz>"),
        cc: None,
        date: "Wed, 03 Jan 2024 09:00:00 +0000",
        arrival: 7,
        k: 2,
        id: Some("r1@corp.kz"),
        refs: "",
    },
    M {
        subject: Some("report"),
        from: "karl@corp.kz (Karl)",
        to: Some("boss@corp.kz"),
        cc: None,
        date: "Wed, 03 Jan 2024 08:00:00 +0000",
        arrival: 8,
        k: 9,
        id: Some("r2@corp.kz"),
        refs: "",
    },
    M {
        subject: Some("Re: missing parent"),
        from: "Nurlan <nurlan@corp.kz>",
        to: None,
        cc: None,
        date: "Thu, 04 Jan 2024 10:00:00 +0000",
        arrival: 9,
        k: 4,
        id: Some("m2@corp.kz"),
        refs: "References: <m0@gone.kz> <m1@gone.kz>\r\n",
    },
    M {
        subject: Some("Re: missing parent"),
        from: "olga@corp.kz",
        to: None,
        cc: None,
        date: "Thu, 04 Jan 2024 09:00:00 +0000",
        arrival: 1,
        k: 11,
        id: Some("m3@corp.kz"),
        refs: "References: <m0@gone.kz>\r\n",
    },
    M {
        subject: Some("_underscore"),
        from: "Pavel <pavel@corp.kz>",
        to: None,
        cc: None,
        date: "not a date",
        arrival: 11,
        k: 6,
        id: None,
        refs: "",
    },
    M {
        subject: None,
        from: "Mike <mike@corp.kz>",
        to: None,
        cc: None,
        date: "Fri, 05 Jan 2024 10:00:00 +0000",
        arrival: 12,
        k: 8,
        id: Some("x1@corp.kz"),
        refs: "In-Reply-To: <b3@corp.kz>\r\n",
    },
];

/// Fills INBOX with the fixture and selects it.
fn fixture(c: &mut Imap) {
    append(
        c,
        "01-Jan-2020 00:00:00 +0000",
        "Subject: placeholder\r\n\r\nx\r\n",
    );
    for m in FIXTURE {
        let mut h = String::new();
        if let Some(s) = m.subject {
            h.push_str(&format!("Subject: {s}\r\n"));
        }
        h.push_str(&format!("From: {}\r\n", m.from));
        if let Some(t) = m.to {
            h.push_str(&format!("To: {t}\r\n"));
        }
        if let Some(cc) = m.cc {
            h.push_str(&format!("Cc: {cc}\r\n"));
        }
        h.push_str(&format!("Date: {}\r\n", m.date));
        if let Some(id) = m.id {
            h.push_str(&format!("Message-ID: <{id}>\r\n"));
        }
        h.push_str(m.refs);
        let line = format!("{}\r\n", "x".repeat(98));
        let body = line.repeat(10 * m.k);
        append(
            c,
            &format!("{:02}-Jan-2024 00:00:00 +0000", m.arrival),
            &format!("{h}\r\n{body}"),
        );
    }
    c.ok("SELECT INBOX");
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(one(c, "UID SEARCH 1", "SEARCH"), "2");
}

#[test]
fn capabilities_name_the_search_extensions() {
    let (_srv, mut c) = login();
    let caps = one(&mut c, "CAPABILITY", "CAPABILITY");
    for cap in [
        "ESEARCH",
        "SEARCHRES",
        "SORT",
        "SORT=DISPLAY",
        "THREAD=ORDEREDSUBJECT",
        "THREAD=REFERENCES",
    ] {
        assert!(caps.split(' ').any(|c| c == cap), "{cap} in {caps}");
    }
}

// ---------------------------------------------------------------------------------------------
// ESEARCH.

#[test]
fn esearch_return_options() {
    let (_srv, mut c) = login();
    fixture(&mut c);
    let es = |c: &mut Imap, q: &str| -> String {
        let (u, t) = c.cmd(q);
        assert!(t.contains(" OK "), "{q}: {t}");
        let tagword = t.split(' ').next().unwrap().to_string();
        let lines: Vec<String> = u.iter().map(|r| text(r)).collect();
        assert_eq!(lines.len(), 1, "{q}: {lines:?}");
        let prefix = format!("* ESEARCH (TAG \"{tagword}\")");
        assert!(lines[0].starts_with(&prefix), "{q}: {}", lines[0]);
        lines[0][prefix.len()..].trim().to_string()
    };
    assert_eq!(
        es(&mut c, "SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT lunch"),
        "MIN 4 MAX 6 ALL 4:6 COUNT 3"
    );
    assert_eq!(
        es(
            &mut c,
            "UID SEARCH RETURN (MIN MAX COUNT ALL) SUBJECT report"
        ),
        "UID MIN 8 MAX 9 ALL 8:9 COUNT 2"
    );
    assert_eq!(es(&mut c, "SEARCH RETURN () SUBJECT budget"), "ALL 1:3");
    assert_eq!(
        es(
            &mut c,
            "SEARCH RETURN (ALL) OR SUBJECT budget SUBJECT report"
        ),
        "ALL 1:3,7:8"
    );
    assert_eq!(
        es(&mut c, "SEARCH RETURN (COUNT) CHARSET UTF-8 FROM aigul"),
        "COUNT 1"
    );
    // Nothing matched: MIN, MAX and ALL are left out, COUNT is 0.
    assert_eq!(
        es(&mut c, "SEARCH RETURN (MIN MAX ALL COUNT) SUBJECT nothing"),
        "COUNT 0"
    );
    assert_eq!(es(&mut c, "SEARCH RETURN (MIN) SUBJECT nothing"), "");
    assert_eq!(es(&mut c, "UID SEARCH RETURN (ALL) SUBJECT nothing"), "UID");
    // Options we do not know are BAD; plain SEARCH is unchanged.
    let (_, t) = c.cmd("SEARCH RETURN (PARTIAL 1:2) ALL");
    assert!(t.contains(" BAD "), "{t}");
    assert_eq!(one(&mut c, "SEARCH SUBJECT lunch", "SEARCH"), "4 5 6");
}

// ---------------------------------------------------------------------------------------------
// SEARCHRES.

#[test]
fn searchres_saves_reuses_and_resets() {
    let (_srv, mut c) = login();
    fixture(&mut c);
    // SAVE alone: no untagged answer at all.
    let u = c.ok("SEARCH RETURN (SAVE) SUBJECT lunch");
    assert!(
        u.is_empty(),
        "{:?}",
        u.iter().map(|r| text(r)).collect::<Vec<_>>()
    );
    let fetched = |c: &mut Imap, q: &str| -> Vec<String> {
        c.ok(q)
            .iter()
            .map(|r| text(r))
            .filter(|l| l.contains(" FETCH "))
            .collect()
    };
    assert_eq!(
        fetched(&mut c, "FETCH $ (UID)"),
        [
            "* 4 FETCH (UID 5)",
            "* 5 FETCH (UID 6)",
            "* 6 FETCH (UID 7)"
        ]
    );
    assert_eq!(fetched(&mut c, "UID FETCH $ (UID)").len(), 3);
    assert_eq!(one(&mut c, "SEARCH $", "SEARCH"), "4 5 6");
    assert_eq!(one(&mut c, "UID SEARCH $", "SEARCH"), "5 6 7");
    // `$` after the UID key is a UID set in a sequence-number SEARCH too.
    assert_eq!(one(&mut c, "SEARCH UID $ SUBJECT fwd", "SEARCH"), "5");
    // In an argument it is text: SUBJECT $ looks for a dollar sign.
    assert_eq!(one(&mut c, "SEARCH SUBJECT $", "SEARCH"), "");
    c.ok("STORE $ +FLAGS.SILENT (\\Flagged)");
    assert_eq!(one(&mut c, "SEARCH FLAGGED", "SEARCH"), "4 5 6");
    // SAVE with MIN only keeps the minimum (RFC 5182 §2.4).
    assert_eq!(
        one(
            &mut c,
            "UID SEARCH RETURN (SAVE MIN) SUBJECT budget",
            "ESEARCH"
        )
        .split_once(')')
        .unwrap()
        .1
        .trim(),
        "UID MIN 2"
    );
    assert_eq!(fetched(&mut c, "FETCH $ (UID)"), ["* 1 FETCH (UID 2)"]);
    // Pipelined: the FETCH after a SAVE sees the new result.
    let (t1, t2) = (c.tag(), c.tag());
    c.send(
        format!("{t1} SEARCH RETURN (SAVE) SUBJECT report\r\n{t2} FETCH $ (UID)\r\n").as_bytes(),
    );
    let (_, r1) = c.until_tagged(&t1);
    assert!(r1.contains(" OK "), "{r1}");
    let (u, r2) = c.until_tagged(&t2);
    assert!(r2.contains(" OK "), "{r2}");
    let u: Vec<String> = u.iter().map(|r| text(r)).collect();
    assert_eq!(u, ["* 7 FETCH (UID 8)", "* 8 FETCH (UID 9)"]);
    // A BAD SEARCH leaves the result; one that fails with NO empties it.
    let (_, t) = c.cmd("SEARCH RETURN (SAVE) NOSUCHKEY");
    assert!(t.contains(" BAD "), "{t}");
    assert_eq!(one(&mut c, "SEARCH $", "SEARCH"), "7 8");
    let (_, t) = c.cmd("SEARCH RETURN (SAVE) CHARSET KOI8-R ALL");
    assert!(t.contains("NO [BADCHARSET"), "{t}");
    assert_eq!(one(&mut c, "SEARCH $", "SEARCH"), "");
    let (u, t) = c.cmd("FETCH $ (UID)");
    assert!(t.contains(" OK ") && u.is_empty(), "{t}");
    // Expunged messages leave the result; the others keep their place under new numbers.
    c.ok("SEARCH RETURN (SAVE) SUBJECT lunch");
    c.ok("STORE 5 +FLAGS.SILENT (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(one(&mut c, "SEARCH $", "SEARCH"), "4 5");
    assert_eq!(one(&mut c, "UID SEARCH $", "SEARCH"), "5 7");
    // Selecting again empties it.
    c.ok("SELECT INBOX");
    assert_eq!(one(&mut c, "SEARCH $", "SEARCH"), "");
    assert!(fetched(&mut c, "UID FETCH $ (UID)").is_empty());
}

// ---------------------------------------------------------------------------------------------
// SORT.

#[test]
fn sort_orders_by_rfc_5256_and_5957_keys() {
    let (_srv, mut c) = login();
    fixture(&mut c);
    for (q, want) in [
        ("SORT (ARRIVAL) UTF-8 ALL", "10 2 3 4 5 6 7 8 9 1 11 12"),
        ("SORT (DATE) UTF-8 ALL", "1 3 2 6 4 5 8 7 10 9 12 11"),
        ("SORT (SIZE) UTF-8 ALL", "3 7 5 9 1 11 4 12 8 6 10 2"),
        (
            "SORT (REVERSE SIZE) US-ASCII ALL",
            "2 10 6 8 12 4 11 1 9 5 7 3",
        ),
        // Base subjects: "" < BUDGET 2024 < LUNCH < MISSING PARENT < REPORT < _UNDERSCORE
        // (i;ascii-casemap folds to upper case, so `_` sorts after the letters).
        ("SORT (SUBJECT) UTF-8 ALL", "12 1 2 3 4 5 6 9 10 7 8 11"),
        (
            "SORT (SUBJECT DATE) UTF-8 ALL",
            "12 1 3 2 6 4 5 10 9 8 7 11",
        ),
        // REVERSE reverses its own key only: ties stay in sequence order.
        (
            "SORT (REVERSE SUBJECT) UTF-8 ALL",
            "11 7 8 9 10 4 5 6 1 2 3 12",
        ),
        ("SORT (FROM) UTF-8 ALL", "6 2 3 4 5 8 12 9 10 11 7 1"),
        ("SORT (TO) UTF-8 ALL", "9 10 11 12 7 8 5 6 1 4 2 3"),
        ("SORT (CC) UTF-8 ALL", "1 3 5 6 7 8 9 10 11 12 4 2"),
        (
            "SORT (CC REVERSE DATE) UTF-8 ALL",
            "11 12 9 10 7 8 5 6 3 1 4 2",
        ),
        // Display names, decoded (Айгүль sorts after ASCII); none: mailbox@host.
        ("SORT (DISPLAYFROM) UTF-8 ALL", "1 2 3 4 5 8 12 9 10 11 7 6"),
        ("SORT (DISPLAYTO) UTF-8 ALL", "9 10 11 12 2 7 8 5 6 1 4 3"),
        // With search criteria.
        ("SORT (DATE) UTF-8 SUBJECT lunch", "6 4 5"),
        ("SORT (SUBJECT) UTF-8 SUBJECT nothing", ""),
    ] {
        assert_eq!(one(&mut c, q, "SORT"), want, "{q}");
    }
    // UID SORT: the same order as UIDs (UID = seq + 1).
    assert_eq!(
        one(&mut c, "UID SORT (SUBJECT DATE) UTF-8 ALL", "SORT"),
        "13 2 4 3 7 5 6 11 10 9 8 12"
    );
    let (_, t) = c.cmd("SORT (SUBJECT) KOI8-R ALL");
    assert!(t.contains("NO [BADCHARSET"), "{t}");
}

// ---------------------------------------------------------------------------------------------
// THREAD.

#[test]
fn thread_references_and_orderedsubject() {
    let (_srv, mut c) = login();
    fixture(&mut c);
    // REFERENCES: 1→2→3→12 (12 by In-Reply-To); 6 replies to 4 and 5 ("Fwd: lunch") joins 4 by
    // subject; the two "report" originals under a dummy; 9 and 10 under the absent m0 (the
    // absent m1 between m0 and 9 is pruned); 11 alone; threads by date.
    assert_eq!(
        one(&mut c, "THREAD REFERENCES UTF-8 ALL", "THREAD"),
        "(1 2 3 12)(4 (6)(5))((8)(7))((10)(9))(11)"
    );
    assert_eq!(
        one(&mut c, "UID THREAD REFERENCES UTF-8 ALL", "THREAD"),
        "(2 3 4 13)(5 (7)(6))((9)(8))((11)(10))(12)"
    );
    assert_eq!(
        one(&mut c, "THREAD REFERENCES UTF-8 SUBJECT lunch", "THREAD"),
        "(4 (6)(5))"
    );
    // ORDEREDSUBJECT: by base subject, the first (by date) the parent of the rest.
    assert_eq!(
        one(&mut c, "THREAD ORDEREDSUBJECT UTF-8 ALL", "THREAD"),
        "(1 (3)(2))(6 (4)(5))(8 7)(10 9)(12)(11)"
    );
    assert_eq!(
        one(&mut c, "UID THREAD ORDEREDSUBJECT US-ASCII ALL", "THREAD"),
        "(2 (4)(3))(7 (5)(6))(9 8)(11 10)(13)(12)"
    );
    assert_eq!(
        one(&mut c, "THREAD REFERENCES UTF-8 SUBJECT nothing", "THREAD"),
        ""
    );
    let (_, t) = c.cmd("THREAD NOSUCH UTF-8 ALL");
    assert!(t.contains(" BAD "), "{t}");
}
