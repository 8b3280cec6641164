//! Regression tests for what the fuzz targets (fuzz/, docs/security.md "Fuzzing") found, each
//! feeding the reproducer's case to the real server. The minimised inputs themselves are under
//! fuzz/regressions/<target>/ and are replayed by `fuzz/ci.sh` with every target's seeds.

use crate::imap::{text, Imap};

/// fuzz/regressions/rfc2047/space-at-end-of-encoded-word: the RFC 2047 decoder behind SEARCH
/// dropped a space that an encoded word decodes to when another encoded word followed (it
/// trimmed the decoded text, not only the whitespace between the words, RFC 2047 §6.2). Our own
/// stamp headers split long names into such words, so `SEARCH SUBJECT "by Ivanov"` missed
/// "Signed by Ivanov".
#[test]
fn rfc2047_space_at_end_of_encoded_word_is_searchable() {
    let srv = crate::smtp::server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    let msg = "From: bob@example.test\r\nTo: alice@example.test\r\n\
Subject: =?UTF-8?Q?Signed_by_?= =?UTF-8?B?SXZhbm92?=\r\n\r\nbody\r\n";
    assert!(c.append("INBOX", "()", msg.as_bytes()).contains("OK"));
    c.ok("SELECT INBOX");
    let u = c.ok("SEARCH SUBJECT \"by Ivanov\"");
    let line = u
        .iter()
        .map(|r| text(r))
        .find(|l| l.starts_with("* SEARCH"))
        .unwrap_or_default();
    assert_eq!(line, "* SEARCH 1");
}

/// fuzz/regressions/imap_command/list-cr-inside-line-loops-before-login: a LIST that
/// imap-codec rejects goes to our extended-LIST parser, which met the CR inside the line with an
/// empty word and never advanced: one line, before login, on the plaintext port, and the session
/// looped adding tokens until the process ran out of memory. Now the command gets BAD and the
/// session goes on. (The read timeout only keeps a regression from hanging the suite.)
#[test]
fn imap_list_with_cr_inside_the_line_gets_bad_before_login() {
    let srv = crate::smtp::server_with_users(&[]);
    let mut c = Imap::plain(srv.imap);
    c.set_timeout(std::time::Duration::from_secs(30));
    c.send(b"a LIST \"\" *\rX\r\n");
    let (_, tagged) = c.until_tagged("a");
    assert!(tagged.starts_with("a BAD"), "{tagged}");
    c.send(b"b NOOP\r\n");
    let (_, tagged) = c.until_tagged("b");
    assert!(tagged.starts_with("b OK"), "{tagged}");
}

/// fuzz/regressions/imap_command/create-name-with-multibyte-char-at-byte-6: mailbox-name
/// normalisation sliced the name at byte 6 to look for "INBOX/" and panicked when a character
/// straddled it, ending the session without an answer. Now the command is answered and the
/// session goes on.
#[test]
fn imap_create_with_a_character_across_byte_6_is_answered() {
    let srv = crate::smtp::server_with_users(&[]);
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    // "abcde" + U+0F84 (3 bytes in UTF-8, bytes 5..8), in modified UTF-7.
    c.ok("CREATE abcde&D4Q-x");
    c.ok("NOOP");
}
