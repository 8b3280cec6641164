//! IMAP subscriptions and LIST (issue 16): subscriptions as a set of names of their own (RFC
//! 3501 §6.3.6, §6.3.9), their migration from store format 1, LIST-EXTENDED (RFC 5258) with
//! RECURSIVEMATCH and CHILDINFO, LIST-STATUS (RFC 5819), STATUS=SIZE (RFC 8438) and an invalid
//! modified UTF-7 pattern — over implicit TLS against the real `tanba serve`, asserting the bytes
//! of every response line. The LIST-EXTENDED cases follow imaptest's `listext` and `subscribe`
//! scripts.

use crate::imap::{text, Imap, Resp};
use crate::support::*;

const USER: &str = "alice@example.test";
const PASS: &str = "secret-alice";

fn server() -> TestServer {
    crate::smtp::server_with_users(&[])
}

fn lines(rs: &[Resp]) -> Vec<String> {
    rs.iter().map(|r| text(r)).collect()
}

/// The untagged lines of `command`, which must succeed.
fn ok(c: &mut Imap, command: &str) -> Vec<String> {
    lines(&c.ok(command))
}

/// The tagged line of `command`, which must not succeed.
fn refused(c: &mut Imap, command: &str) -> String {
    let (u, t) = c.cmd(command);
    assert!(
        !t.contains(" OK "),
        "{command:?} succeeded: {t} {:?}",
        lines(&u)
    );
    t
}

fn message(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@remote.example>\r\nTo: Alice <alice@example.test>\r\nSubject: {subject}\r\n\
Date: Mon, 20 Nov 2023 10:15:00 +0600\r\nMessage-ID: <{subject}@remote.example>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[test]
fn lsub_returns_the_noselect_parent_of_a_subscribed_grandchild_and_create_does_not_subscribe() {
    let srv = server();
    let mut c = Imap::login(&srv, USER, PASS);
    // A new account has its default mailboxes subscribed.
    assert_eq!(
        ok(&mut c, "LSUB \"\" *"),
        [
            "* LSUB () \"/\" Archive",
            "* LSUB () \"/\" Drafts",
            "* LSUB () \"/\" INBOX",
            "* LSUB () \"/\" Junk",
            "* LSUB () \"/\" Sent",
            "* LSUB () \"/\" Trash",
        ]
    );
    c.ok("CREATE a/b/c");
    // CREATE subscribes neither the mailbox nor the parents it creates.
    assert_eq!(ok(&mut c, "LSUB \"\" a*"), Vec::<String>::new());
    c.ok("SUBSCRIBE a/b/c");
    // RFC 3501 §6.3.9: "foo/bar" subscribed, "foo" not: "%" returns foo, with \Noselect.
    assert_eq!(
        ok(&mut c, "LSUB \"\" a/%"),
        ["* LSUB (\\Noselect) \"/\" a/b"]
    );
    // Names sort as bytes: upper case first.
    assert_eq!(
        ok(&mut c, "LSUB \"\" %"),
        [
            "* LSUB () \"/\" Archive",
            "* LSUB () \"/\" Drafts",
            "* LSUB () \"/\" INBOX",
            "* LSUB () \"/\" Junk",
            "* LSUB () \"/\" Sent",
            "* LSUB () \"/\" Trash",
            "* LSUB (\\Noselect) \"/\" a",
        ]
    );
    assert_eq!(ok(&mut c, "LSUB \"\" a/*"), ["* LSUB () \"/\" a/b/c"]);
    assert_eq!(ok(&mut c, "LSUB a/ %"), ["* LSUB (\\Noselect) \"/\" a/b"]);
    // A subscribed parent is listed as itself.
    c.ok("SUBSCRIBE a/b");
    assert_eq!(ok(&mut c, "LSUB \"\" a/%"), ["* LSUB () \"/\" a/b"]);
    c.ok("UNSUBSCRIBE a/b");
    c.ok("UNSUBSCRIBE a/b/c");
    assert_eq!(ok(&mut c, "LSUB \"\" a*"), Vec::<String>::new());
}

#[test]
fn subscriptions_are_names_of_their_own_kept_by_delete_moved_by_rename_and_durable() {
    let mut srv = server();
    let mut c = Imap::login(&srv, USER, PASS);
    // A name without a mailbox can be subscribed (as Dovecot allows).
    c.ok("SUBSCRIBE Ghost");
    assert_eq!(ok(&mut c, "LSUB \"\" Ghost"), ["* LSUB () \"/\" Ghost"]);
    assert_eq!(ok(&mut c, "LIST \"\" Ghost"), Vec::<String>::new());
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED) \"\" Ghost"),
        ["* LIST (\\NonExistent \\Subscribed) \"/\" Ghost"]
    );
    // Not a valid name: refused.
    assert!(refused(&mut c, "SUBSCRIBE a//b").contains("NO"));
    // UNSUBSCRIBE of a name that is not subscribed is fine.
    c.ok("UNSUBSCRIBE Never");

    // DELETE keeps the subscription (RFC 3501 §6.3.6: never removed unilaterally).
    c.ok("CREATE Old");
    c.ok("SUBSCRIBE Old");
    c.ok("DELETE Old");
    assert_eq!(ok(&mut c, "LIST \"\" Old"), Vec::<String>::new());
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED) \"\" Old"),
        ["* LIST (\\NonExistent \\Subscribed) \"/\" Old"]
    );
    // A mailbox created again under the name is subscribed from the start.
    c.ok("CREATE Old");
    assert_eq!(
        ok(&mut c, "LIST \"\" Old RETURN (SUBSCRIBED)"),
        ["* LIST (\\HasNoChildren \\Subscribed) \"/\" Old"]
    );

    // RENAME moves the subscriptions of the name and of the names under it.
    c.ok("CREATE p/q/r");
    c.ok("SUBSCRIBE p");
    c.ok("SUBSCRIBE p/q/r");
    c.ok("SUBSCRIBE p/ghost");
    c.ok("RENAME p x/y");
    assert_eq!(ok(&mut c, "LSUB \"\" p*"), Vec::<String>::new());
    assert_eq!(
        ok(&mut c, "LSUB \"\" x/*"),
        [
            "* LSUB () \"/\" x/y",
            "* LSUB () \"/\" x/y/ghost",
            "* LSUB () \"/\" x/y/q/r",
        ]
    );
    // The parent RENAME created is not subscribed.
    assert_eq!(ok(&mut c, "LSUB \"\" x"), ["* LSUB (\\Noselect) \"/\" x"]);
    // RENAME INBOX moves messages, not the mailbox: INBOX stays subscribed, the new one is not.
    c.ok("RENAME INBOX Saved");
    assert_eq!(ok(&mut c, "LSUB \"\" INBOX"), ["* LSUB () \"/\" INBOX"]);
    assert_eq!(ok(&mut c, "LSUB \"\" Saved"), Vec::<String>::new());

    // Another session sees them; so does the server after a kill -9 (each OK was durable).
    let mut d = Imap::login(&srv, USER, PASS);
    let before = ok(&mut d, "LSUB \"\" *");
    assert!(
        before.contains(&"* LSUB () \"/\" Ghost".to_string()),
        "{before:?}"
    );
    drop((c, d));
    srv.restart();
    let mut c = Imap::login(&srv, USER, PASS);
    assert_eq!(ok(&mut c, "LSUB \"\" *"), before);
    // Subscriptions are per account.
    let mut b = Imap::login(&srv, "bob@example.test", "secret-bob-1");
    assert_eq!(ok(&mut b, "LSUB \"\" Ghost"), Vec::<String>::new());
}

/// imaptest's `listext` script, with our attribute order and `box` as its mailbox.
#[test]
fn list_extended_selection_and_return_options_with_recursivematch_and_childinfo() {
    let srv = server();
    let mut c = Imap::login(&srv, USER, PASS);
    let caps = ok(&mut c, "CAPABILITY");
    assert!(
        caps[0].contains(" LIST-EXTENDED") && caps[0].contains(" LIST-STATUS"),
        "{caps:?}"
    );
    for m in [
        "box/test1",
        "box/test2/",
        "box/test2/test1",
        "box/test3",
        "box/test4/test5",
        "box/test4/test52",
        "box/test6",
        "box/test7/test7",
        "box/test8/test8",
        "box/test8/test9",
    ] {
        c.ok(&format!("CREATE {m}"));
    }
    for m in [
        "box/test1",
        "box/test2/test1",
        "box/test6",
        "box/test7/test7",
        "box/test8/test8",
        "box/test8/test9",
    ] {
        c.ok(&format!("SUBSCRIBE {m}"));
    }
    c.ok("DELETE box/test6");

    // Several patterns.
    assert_eq!(
        ok(&mut c, "LIST \"\" (box/*2 box/test3)"),
        [
            "* LIST (\\HasChildren) \"/\" box/test2",
            "* LIST (\\HasNoChildren) \"/\" box/test3",
            "* LIST (\\HasNoChildren) \"/\" box/test4/test52",
        ]
    );
    // Errors (RFC 5258 §3.1: RECURSIVEMATCH alone or only with REMOTE).
    for bad in [
        "LIST (imaptest) \"\" \"\"",
        "LIST (RECURSIVEMATCH) \"\" \"\"",
        "LIST (RECURSIVEMATCH REMOTE) \"\" \"\"",
        "LIST \"\" \"\" RETURN (imaptest)",
    ] {
        assert!(refused(&mut c, bad).contains(" BAD "), "{bad}");
    }
    assert_eq!(
        ok(&mut c, "LIST (REMOTE) \"\" box/%"),
        ok(&mut c, "LIST \"\" box/%")
    );

    // SUBSCRIBED: every subscribed name, the deleted one as \NonExistent.
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED) \"\" box/*"),
        [
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test1",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test2/test1",
            "* LIST (\\NonExistent \\Subscribed) \"/\" box/test6",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test7/test7",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test8/test8",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test8/test9",
        ]
    );
    // RECURSIVEMATCH: a parent whose subscribed child the pattern does not match, with CHILDINFO.
    assert_eq!(
        ok(
            &mut c,
            "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" box/test2% RETURN (CHILDREN)"
        ),
        ["* LIST (\\HasChildren) \"/\" box/test2 (\"CHILDINFO\" (\"SUBSCRIBED\"))"]
    );
    assert_eq!(
        ok(&mut c, "LIST \"\" box/% RETURN (CHILDREN SUBSCRIBED)"),
        [
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test1",
            "* LIST (\\HasChildren) \"/\" box/test2",
            "* LIST (\\HasNoChildren) \"/\" box/test3",
            "* LIST (\\HasChildren) \"/\" box/test4",
            "* LIST (\\HasChildren) \"/\" box/test7",
            "* LIST (\\HasChildren) \"/\" box/test8",
        ]
    );
    // The child matches the pattern itself: no parent.
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *test7"),
        ["* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test7/test7"]
    );
    // One child matches, the other does not: the parent with CHILDINFO, and the child.
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" *test8"),
        [
            "* LIST (\\HasChildren) \"/\" box/test8 (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test8/test8",
        ]
    );
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (box/test2)"),
        ["* LIST (\\HasChildren) \"/\" box/test2 (\"CHILDINFO\" (\"SUBSCRIBED\"))"]
    );
    assert_eq!(
        ok(
            &mut c,
            "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (box/test2 box/test2/test1)"
        ),
        ["* LIST (\\HasNoChildren \\Subscribed) \"/\" box/test2/test1"]
    );
    assert_eq!(
        ok(&mut c, "LIST \"\" (box/test7 box/test7/test7)"),
        [
            "* LIST (\\HasChildren) \"/\" box/test7",
            "* LIST (\\HasNoChildren) \"/\" box/test7/test7",
        ]
    );
    // Parents that do not exist: \NonExistent with CHILDINFO.
    c.ok("SUBSCRIBE far/away/leaf");
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED RECURSIVEMATCH) \"\" far/%"),
        ["* LIST (\\NonExistent) \"/\" far/away (\"CHILDINFO\" (\"SUBSCRIBED\"))"]
    );
    assert_eq!(
        ok(&mut c, "LIST (SUBSCRIBED) \"\" far/%"),
        Vec::<String>::new()
    );
    // SPECIAL-USE as selection option and as return option (RFC 6154).
    assert_eq!(
        ok(&mut c, "LIST (SPECIAL-USE) \"\" % RETURN (SUBSCRIBED)"),
        [
            "* LIST (\\HasNoChildren \\Subscribed \\Archive) \"/\" Archive",
            "* LIST (\\HasNoChildren \\Subscribed \\Drafts) \"/\" Drafts",
            "* LIST (\\HasNoChildren \\Subscribed \\Junk) \"/\" Junk",
            "* LIST (\\HasNoChildren \\Subscribed \\Sent) \"/\" Sent",
            "* LIST (\\HasNoChildren \\Subscribed \\Trash) \"/\" Trash",
        ]
    );
    // An invalid modified UTF-7 pattern names no mailbox: an empty OK, as Dovecot answers.
    for cmd in ["LIST \"\" a&b", "LSUB \"\" a&b", "LIST \"\" (a&b)"] {
        assert_eq!(ok(&mut c, cmd), Vec::<String>::new(), "{cmd}");
    }
    // A valid pattern beside an invalid one still counts.
    assert_eq!(
        ok(&mut c, "LIST \"\" (a&b box/test3)"),
        ["* LIST (\\HasNoChildren) \"/\" box/test3"]
    );
}

#[test]
fn list_status_and_status_size_give_exact_byte_counts() {
    let srv = server();
    let mut c = Imap::login(&srv, USER, PASS);
    let caps = ok(&mut c, "CAPABILITY");
    assert!(caps[0].contains(" STATUS=SIZE"), "{caps:?}");
    c.ok("CREATE Work");
    let m1 = message("one", "first");
    let m2 = message("two", &"x".repeat(70_000)); // a body kept as a file
    assert!(c.append("Work", "(\\Seen)", &m1).contains("OK"));
    assert!(c.append("Work", "()", &m2).contains("OK"));
    let total = m1.len() + m2.len();
    assert_eq!(
        ok(&mut c, "STATUS Work (MESSAGES SIZE UNSEEN)"),
        [format!("* STATUS Work (MESSAGES 2 SIZE {total} UNSEEN 1)")]
    );
    assert_eq!(
        ok(&mut c, "STATUS INBOX (SIZE)"),
        ["* STATUS INBOX (SIZE 0)"]
    );
    // LIST-STATUS: each selectable mailbox's STATUS right after its LIST line.
    assert_eq!(
        ok(
            &mut c,
            "LIST \"\" (Work INBOX) RETURN (STATUS (MESSAGES UNSEEN SIZE RECENT))"
        ),
        [
            "* LIST (\\HasNoChildren) \"/\" INBOX".to_string(),
            "* STATUS INBOX (MESSAGES 0 UNSEEN 0 SIZE 0 RECENT 0)".to_string(),
            "* LIST (\\HasNoChildren) \"/\" Work".to_string(),
            format!("* STATUS Work (MESSAGES 2 UNSEEN 1 SIZE {total} RECENT 2)"),
        ]
    );
    // No STATUS for a name without a mailbox.
    c.ok("SUBSCRIBE Ghost");
    c.ok("SUBSCRIBE Work");
    assert_eq!(
        ok(
            &mut c,
            "LIST (SUBSCRIBED) \"\" (Ghost Work) RETURN (STATUS (MESSAGES))"
        ),
        [
            "* LIST (\\NonExistent \\Subscribed) \"/\" Ghost",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" Work",
            "* STATUS Work (MESSAGES 2)",
        ]
    );
    // Expunged messages no longer count.
    c.ok("SELECT Work");
    c.ok("STORE 2 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
    assert_eq!(
        ok(&mut c, "STATUS Work (SIZE MESSAGES)"),
        [format!("* STATUS Work (SIZE {} MESSAGES 1)", m1.len())]
    );
    assert!(refused(&mut c, "LIST \"\" % RETURN (STATUS (BOGUS))").contains(" BAD "));
    assert!(refused(&mut c, "STATUS Work (DELETED)").contains(" BAD "));
}

/// A store written by format 1 (subscriptions a flag of each mailbox record, no subscriptions
/// tree, `format_version` 1) is migrated when the server opens it.
#[test]
fn a_format_1_store_keeps_its_subscriptions_after_the_upgrade() {
    if crate::support::sled_only() {
        return;
    }
    let mut srv = server();
    let mut c = Imap::login(&srv, USER, PASS);
    c.ok("CREATE Work/2026");
    c.ok("CREATE Other");
    drop(c);
    assert_eq!(srv.stop(), Some(0));
    let subscribed = ["INBOX", "Sent", "Work/2026"];
    {
        let db = sled::open(srv.data_dir().join("store")).unwrap();
        let boxes = db.open_tree("mailboxes").unwrap();
        for kv in boxes.iter() {
            let (k, v) = kv.unwrap();
            // Format 1 wrote JSON (the other trees stay MessagePack: both read).
            let meta: tanba::store::MailboxMeta = rmp_serde::from_slice(&v).unwrap();
            let mut m = serde_json::to_value(&meta).unwrap();
            let name = m["name"].as_str().unwrap().to_string();
            m["subscribed"] = subscribed.contains(&name.as_str()).into();
            boxes.insert(k, serde_json::to_vec(&m).unwrap()).unwrap();
        }
        db.open_tree("subscriptions").unwrap().clear().unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("format_version", &1u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    srv.restart();
    let mut c = Imap::login(&srv, USER, PASS);
    assert_eq!(
        ok(&mut c, "LSUB \"\" *"),
        [
            "* LSUB () \"/\" INBOX",
            "* LSUB () \"/\" Sent",
            "* LSUB () \"/\" Work/2026",
        ]
    );
    assert_eq!(
        ok(&mut c, "LSUB \"\" %"),
        [
            "* LSUB () \"/\" INBOX",
            "* LSUB () \"/\" Sent",
            "* LSUB (\\Noselect) \"/\" Work",
        ]
    );
    drop(c);
    assert_eq!(srv.stop(), Some(0));
    let o = srv.tanba(&["store", "check"], None);
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let db = sled::open(srv.data_dir().join("store")).unwrap();
    let v = db.open_tree("meta").unwrap().get("format_version").unwrap();
    // Formats 3 (MessagePack) and 4 (the modseq index) follow in the same open.
    assert_eq!(v.unwrap().as_ref(), &4u32.to_be_bytes());
}
