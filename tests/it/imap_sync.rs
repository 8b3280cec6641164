//! A full two-way sync with a real syncing client: mbsync (Debian package `isync`) between
//! Tanba and a local Maildir, over implicit TLS and over STARTTLS. Skips with a message when
//! `mbsync` is not installed (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::imap::{text, Imap};
use crate::support::*;

fn mbsync() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v mbsync"])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!p.is_empty()).then(|| PathBuf::from(p))
}

fn write_config(dir: &Path, srv: &TestServer, starttls: bool) -> PathBuf {
    let (port, ssl) = if starttls {
        (srv.imap.port(), "STARTTLS")
    } else {
        (srv.imaps.port(), "IMAPS")
    };
    let rc = format!(
        "IMAPAccount tanba\n\
Host 127.0.0.1\n\
Port {port}\n\
User alice@example.test\n\
Pass secret-alice\n\
SSLType {ssl}\n\
CertificateFile {cert}\n\
AuthMechs PLAIN\n\
\n\
IMAPStore remote\n\
Account tanba\n\
\n\
MaildirStore local\n\
Path {mail}/\n\
Inbox {mail}/INBOX\n\
SubFolders Verbatim\n\
\n\
Channel tanba\n\
Far :remote:\n\
Near :local:\n\
Patterns *\n\
Create Both\n\
Expunge Both\n\
SyncState *\n",
        cert = srv.cert_pem().display(),
        mail = dir.join("mail").display(),
    );
    let path = dir.join("mbsyncrc");
    std::fs::write(&path, rc).unwrap();
    path
}

fn run_mbsync(bin: &Path, rc: &Path, home: &Path) -> String {
    let out = Command::new(bin)
        .arg("-c")
        .arg(rc)
        .arg("-a")
        .env("HOME", home)
        .output()
        .expect("running mbsync");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "mbsync failed ({}):\n{log}",
        out.status
    );
    log
}

/// The messages of a Maildir folder: (file name, contents with LF line ends).
fn maildir(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(rd) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            out.push((e.path(), data));
        }
    }
    out.sort();
    out
}

/// LF line ends, and without the `X-TUID:` line mbsync adds to its copies.
fn lf(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .replace("\r\n", "\n")
        .lines()
        .filter(|l| !l.starts_with("X-TUID: "))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn msg(subject: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: {subject}\r\n\
Date: Tue, 21 Nov 2023 09:00:00 +0600\r\nMessage-ID: <{subject}@remote.example>\r\n\r\nbody of {subject}\r\n"
    )
    .into_bytes()
}

#[test]
fn mbsync_two_way_sync() {
    let Some(bin) = mbsync() else {
        eprintln!("SKIPPED: mbsync is not installed (Debian package `isync`)");
        return;
    };
    let srv = crate::smtp::server_with_users(&[]);
    let mut smtp = crate::smtp::Client::connect(srv.mx);
    smtp.ok("EHLO sender.example", "250");
    for s in ["one", "two", "three"] {
        let r = smtp.send_mail("bob@remote.example", &["alice@example.test"], &msg(s));
        assert_eq!(r.code, 250);
    }
    let mut c = Imap::login(&srv, "alice@example.test", "secret-alice");
    c.ok("CREATE Projects/2024");
    assert!(c
        .append("Projects/2024", "(\\Flagged)", &msg("plan"))
        .contains("OK"));
    assert!(c.append("Sent", "(\\Seen)", &msg("sent")).contains("OK"));

    let work = tempfile::tempdir().unwrap();
    let mail = work.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let rc = write_config(work.path(), &srv, false);
    run_mbsync(&bin, &rc, work.path());

    // Everything arrived, byte for byte (Maildir keeps LF line ends).
    let stored = mbox_messages(&srv.export("alice@example.test"));
    let mut local: Vec<Vec<u8>> = Vec::new();
    for folder in [
        "INBOX",
        "Sent",
        "Projects/2024",
        "Trash",
        "Drafts",
        "Junk",
        "Archive",
    ] {
        assert!(mail.join(folder).is_dir(), "folder {folder} not created");
        local.extend(maildir(&mail.join(folder)).into_iter().map(|(_, d)| d));
    }
    let mut want: Vec<String> = stored.iter().map(|m| lf(m)).collect();
    let mut got: Vec<String> = local.iter().map(|m| lf(m)).collect();
    want.sort();
    got.sort();
    assert_eq!(got.len(), 5);
    assert_eq!(got, want, "local copies differ from the server's messages");
    let inbox = maildir(&mail.join("INBOX"));
    assert_eq!(inbox.len(), 3);
    let plan = maildir(&mail.join("Projects/2024"));
    assert!(
        plan[0].0.to_string_lossy().ends_with(":2,F"),
        "\\Flagged became the F flag: {:?}",
        plan[0].0
    );

    // Local changes: read one, delete one (trashed and expunged), add a draft.
    let (seen_path, seen_data) = inbox
        .iter()
        .find(|(_, d)| d.windows(12).any(|w| w == b"Subject: one"))
        .cloned()
        .unwrap();
    let seen_name = seen_path.file_name().unwrap().to_string_lossy().to_string();
    let base = seen_name.split(":2,").next().unwrap().to_string();
    std::fs::rename(
        &seen_path,
        mail.join("INBOX/cur").join(format!("{base}:2,S")),
    )
    .unwrap();
    let (del_path, _) = inbox
        .iter()
        .find(|(_, d)| d.windows(12).any(|w| w == b"Subject: two"))
        .cloned()
        .unwrap();
    let del_name = del_path.file_name().unwrap().to_string_lossy().to_string();
    let del_base = del_name.split(":2,").next().unwrap().to_string();
    std::fs::rename(
        &del_path,
        mail.join("INBOX/cur").join(format!("{del_base}:2,T")),
    )
    .unwrap();
    std::fs::create_dir_all(mail.join("Drafts/cur")).unwrap();
    std::fs::write(
        mail.join("Drafts/cur/1700000000.draft.local:2,D"),
        b"From: alice@example.test\nTo: bob@remote.example\nSubject: draft\n\nnot finished\n",
    )
    .unwrap();
    // A server-side change in the meantime.
    c.ok("SELECT INBOX");
    c.ok("UID STORE 3 +FLAGS (\\Answered)");
    c.ok("UNSELECT");

    // Second run over STARTTLS.
    let rc = write_config(work.path(), &srv, true);
    run_mbsync(&bin, &rc, work.path());

    c.ok("SELECT INBOX");
    let u = c.ok("UID FETCH 1:* (FLAGS)");
    let lines: Vec<String> = u.iter().map(|r| text(r)).collect();
    assert!(
        lines.iter().any(|l| l.contains("UID 1 FLAGS (\\Seen)")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("UID 2 ")),
        "the deleted message is expunged: {lines:?}"
    );
    let u = c.ok("STATUS Drafts (MESSAGES)");
    assert_eq!(text(&u[0]), "* STATUS Drafts (MESSAGES 1)");
    c.ok("SELECT Drafts");
    let u = c.ok("FETCH 1 (FLAGS BODY.PEEK[])");
    let s = text(&u[0]);
    assert!(s.contains("\\Draft") && s.contains("not finished"), "{s}");
    let answered = maildir(&mail.join("INBOX"));
    assert_eq!(answered.len(), 2);
    assert!(
        answered
            .iter()
            .any(|(p, d)| d.windows(14).any(|w| w == b"Subject: three")
                && p.to_string_lossy().ends_with(":2,R")),
        "\\Answered became R: {answered:?}"
    );
    assert!(answered.iter().any(|(_, d)| lf(d) == lf(&seen_data)));

    // A third run has nothing to do and changes nothing.
    run_mbsync(&bin, &rc, work.path());
    assert_eq!(maildir(&mail.join("INBOX")).len(), 2);
    let u = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(text(&u[0]), "* STATUS INBOX (MESSAGES 2)");
}
