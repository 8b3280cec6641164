//! `tanba import maildir|mbox` (issue 12 item 4): a maildir written by a real Dovecot
//! (`doveadm` against a throw-away `dovecot -c CONF` without listeners), an mbox round trip through
//! `tanba export`, with the server running and stopped, oversize messages skipped with a warning.
//! Everything is checked over IMAP with Python's imaplib.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{python, run, TestServer};

/// Dumps every mailbox over IMAP (STARTTLS): name → [(sorted flags, INTERNALDATE, bytes)].
const PY_DUMP: &str = r#"
import imaplib, ssl, sys, re, json, base64, datetime
port, cafile, user, pw = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
m = imaplib.IMAP4('127.0.0.1', port)
m.starttls(ssl_context=ctx)
m.login(user, pw)
typ, boxes = m.list('""', '"*"')
out = {}
for b in boxes:
    name = re.match(rb'\(.*?\) "/" (.*)$', b).group(1).decode()
    if name.startswith('"'):
        name = name[1:-1]
    typ, _ = m.select('"%s"' % name, readonly=True)
    assert typ == 'OK', name
    typ, data = m.uid('FETCH', '1:*', '(FLAGS INTERNALDATE BODY.PEEK[])')
    msgs = []
    for d in data:
        if isinstance(d, tuple):
            meta = d[0].decode()
            flags = sorted(f for f in re.search(r'FLAGS \((.*?)\)', meta).group(1).split() if f != '\\Recent')
            idate = re.search(r'INTERNALDATE "(.*?)"', meta).group(1).strip()
            ts = int(datetime.datetime.strptime(idate, '%d-%b-%Y %H:%M:%S %z').timestamp())
            msgs.append([flags, ts, base64.b64encode(d[1]).decode()])
    out[name] = msgs
print(json.dumps(out))
"#;

/// (flags, INTERNALDATE, bytes) of one message as IMAP shows it.
type Msg = (Vec<String>, i64, Vec<u8>);

fn dump(srv: &TestServer, user: &str, pw: &str) -> BTreeMap<String, Vec<Msg>> {
    let out = python(
        PY_DUMP,
        &[
            &srv.imap.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
            user,
            pw,
        ],
    );
    let v: BTreeMap<String, Vec<(Vec<String>, i64, String)>> =
        serde_json::from_str(out.trim()).expect("dump JSON");
    use base64::Engine;
    v.into_iter()
        .map(|(k, msgs)| {
            let msgs = msgs
                .into_iter()
                .map(|(f, d, b)| {
                    let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                    (f, d, bytes)
                })
                .collect();
            (k, msgs)
        })
        .collect()
}

fn message(n: u32, body: &str) -> Vec<u8> {
    format!(
        "From: Bob <bob@remote.example>\r\nTo: alice@example.test\r\nSubject: message {n}\r\n\
Date: Mon, 20 Nov 2023 10:15:00 +0600\r\nMessage-ID: <m{n}@remote.example>\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// `tanba import KIND PATH --user USER [extra…]`: exit code, stdout, stderr.
fn import(
    srv: &TestServer,
    kind: &str,
    path: &Path,
    user: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec!["import", kind, path.to_str().unwrap(), "--user", user];
    args.extend_from_slice(extra);
    let out = srv.tanba(&args, None);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------------------------
// A real Dovecot.

/// A Dovecot master with no listeners (`protocols =`), only there so that `doveadm` can look the
/// user up; stopped on drop.
struct Dovecot {
    conf: PathBuf,
    maildir: PathBuf,
}

impl Dovecot {
    fn start(dir: &Path) -> Dovecot {
        assert!(
            Path::new("/usr/sbin/dovecot").exists() && Path::new("/usr/bin/doveadm").exists(),
            "these tests need a real Dovecot: apt-get install dovecot-core (scripts/test.sh does)"
        );
        // Dovecot refuses mail access as root: the maildir belongs to `nobody` then.
        let (uid, gid) = unsafe { (libc_getuid(), libc_getgid()) };
        let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let st = Command::new("chown")
            .arg(format!("{uid}:{gid}"))
            .arg(&home)
            .status()
            .unwrap();
        assert!(st.success());
        std::fs::write(
            dir.join("passwd"),
            format!("alice:{{PLAIN}}x:{uid}:{gid}::{}\n", home.display()),
        )
        .unwrap();
        let conf = dir.join("dovecot.conf");
        let d = dir.display();
        std::fs::write(
            &conf,
            format!(
                "base_dir = {d}/run\nstate_dir = {d}/state\nlog_path = {d}/dovecot.log\n\
                 ssl = no\nprotocols =\nlisten = 127.0.0.1\nfirst_valid_uid = 1\n\
                 mail_location = maildir:~/Maildir\n\
                 passdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = {d}/passwd\n}}\n"
            ),
        )
        .unwrap();
        let st = Command::new("dovecot")
            .arg("-c")
            .arg(&conf)
            .status()
            .unwrap();
        assert!(st.success(), "dovecot did not start");
        Dovecot {
            conf,
            maildir: home.join("Maildir"),
        }
    }

    fn doveadm(&self, args: &[&str], stdin: Option<&[u8]>) {
        let mut cmd = Command::new("doveadm");
        cmd.arg("-c").arg(&self.conf).args(args);
        let out = run(cmd, stdin.map(|b| std::str::from_utf8(b).unwrap()));
        assert!(
            out.status.success(),
            "doveadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("doveadm")
            .arg("-c")
            .arg(&self.conf)
            .arg("stop")
            .status();
    }
}

extern "C" {
    #[link_name = "getuid"]
    fn libc_getuid() -> u32;
    #[link_name = "getgid"]
    fn libc_getgid() -> u32;
}

/// The one file of a maildir folder whose bytes contain `needle`.
fn file_with(folder: &Path, needle: &str) -> PathBuf {
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(folder.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if String::from_utf8_lossy(&std::fs::read(&p).unwrap()).contains(needle) {
                return p;
            }
        }
    }
    panic!("no message with {needle} in {}", folder.display());
}

fn mtime(p: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().mtime()
}

#[test]
fn import_maildir_written_by_dovecot() {
    let tmp = tempfile::tempdir().unwrap();
    let dc = Dovecot::start(tmp.path());
    let m1 = message(1, "plain, unseen");
    let m2 = message(2, "a body with\r\nFrom a line that mbox would quote\r\n");
    let m3 = message(3, "seen, labelled");
    let m4 = message(4, "flagged and answered");
    let m5 = message(5, "в папке Спам");
    dc.doveadm(
        &[
            "mailbox",
            "create",
            "-u",
            "alice",
            "Work",
            "Work.Projects",
            "Спам",
        ],
        None,
    );
    dc.doveadm(&["save", "-u", "alice"], Some(&m1));
    dc.doveadm(&["save", "-u", "alice"], Some(&m2));
    dc.doveadm(&["save", "-u", "alice", "-m", "Work"], Some(&m3));
    dc.doveadm(&["save", "-u", "alice", "-m", "Work.Projects"], Some(&m4));
    dc.doveadm(&["save", "-u", "alice", "-m", "Спам"], Some(&m5));
    dc.doveadm(
        &[
            "flags",
            "add",
            "-u",
            "alice",
            "\\Seen $Label1 Important",
            "mailbox",
            "Work",
            "uid",
            "1",
        ],
        None,
    );
    dc.doveadm(
        &[
            "flags",
            "add",
            "-u",
            "alice",
            "\\Flagged \\Answered",
            "mailbox",
            "Work.Projects",
            "all",
        ],
        None,
    );
    dc.doveadm(
        &[
            "flags", "add", "-u", "alice", "\\Seen", "mailbox", "INBOX", "uid", "2",
        ],
        None,
    );
    let md = dc.maildir.clone();
    // What Dovecot wrote: folder names in modified UTF-7, keywords in dovecot-keywords.
    assert!(md.join(".&BCEEPwQwBDw-").is_dir(), "Dovecot's folder names");
    let kw = std::fs::read_to_string(md.join(".Work/dovecot-keywords")).unwrap();
    assert!(kw.contains("$Label1") && kw.contains("Important"), "{kw}");
    // An old delivery: Dovecot keeps the received date in the mtime.
    let old = file_with(&md, "message 1");
    let st = Command::new("touch")
        .args(["-d", "@1600000000"])
        .arg(&old)
        .status()
        .unwrap();
    assert!(st.success());
    let dates: Vec<i64> = [
        (md.clone(), "message 1"),
        (md.clone(), "message 2"),
        (md.join(".Work"), "message 3"),
        (md.join(".Work.Projects"), "message 4"),
        (md.join(".&BCEEPwQwBDw-"), "message 5"),
    ]
    .iter()
    .map(|(f, n)| mtime(&file_with(f, n)))
    .collect();
    assert_eq!(dates[0], 1600000000);

    let srv = TestServer::start();
    srv.add_user("alice@example.test", "secret-alice");
    let (code, out, err) = import(&srv, "maildir", &md, "alice@example.test", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 5 messages"), "{out}");

    let boxes = dump(&srv, "alice@example.test", "secret-alice");
    let names: Vec<&str> = boxes.keys().map(|s| s.as_str()).collect();
    for n in ["INBOX", "Work", "Work/Projects", "&BCEEPwQwBDw-"] {
        assert!(names.contains(&n), "{n} missing from {names:?}");
    }
    let inbox = &boxes["INBOX"];
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[0], (vec![], dates[0], m1.clone()), "INBOX 1");
    assert_eq!(inbox[1], (vec!["\\Seen".to_string()], dates[1], m2.clone()));
    assert_eq!(
        boxes["Work"],
        vec![(
            vec!["$Label1".to_string(), "Important".into(), "\\Seen".into()],
            dates[2],
            m3.clone()
        )]
    );
    assert_eq!(
        boxes["Work/Projects"],
        vec![(
            vec!["\\Answered".to_string(), "\\Flagged".into()],
            dates[3],
            m4.clone()
        )]
    );
    assert_eq!(boxes["&BCEEPwQwBDw-"], vec![(vec![], dates[4], m5.clone())]);

    // Again: nothing is added twice.
    let (code, out, err) = import(&srv, "maildir", &md, "alice@example.test", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 0 messages (5 already there"),
        "{out}"
    );
    assert_eq!(dump(&srv, "alice@example.test", "secret-alice"), boxes);
}

// ---------------------------------------------------------------------------------------------
// mbox.

const PY_APPEND: &str = r#"
import imaplib, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
m = imaplib.IMAP4('127.0.0.1', port)
m.starttls(ssl_context=ctx)
m.login('alice@example.test', 'secret-alice')
m.create('Lists')
msgs = [
  ('INBOX', '(\\Seen)', '"01-Feb-2021 10:00:00 +0000"', b'Subject: one\r\n\r\nFrom the start\r\n\r\nFrom me Thu Nov 27 14:32:18 2026\r\n>From quoted\r\n>>From twice\r\n'),
  ('INBOX', '(\\Flagged $Label2)', '"02-Feb-2021 11:00:00 +0100"', b'Subject: two\r\n\r\nno final line end'),
  ('Lists', '()', '"03-Mar-2022 12:00:00 +0000"', b'Subject: three\r\n\r\n\r\n\r\nblank lines above and below\r\n\r\n\r\n'),
]
for box, flags, date, body in msgs:
    typ, _ = m.append(box, flags, date, body)
    assert typ == 'OK'
print('ok')
"#;

#[test]
fn import_mbox_round_trip_through_export() {
    let mut srv = TestServer::start();
    srv.add_user("alice@example.test", "secret-alice");
    srv.add_user("bob@example.test", "secret-bob1");
    srv.add_user("carol@example.test", "secret-carol");
    python(
        PY_APPEND,
        &[
            &srv.imap.port().to_string(),
            srv.cert_pem().to_str().unwrap(),
        ],
    );
    let mbox = srv.dir.path().join("alice.mbox");
    std::fs::write(&mbox, srv.export("alice@example.test")).unwrap();
    let alice = dump(&srv, "alice@example.test", "secret-alice");
    // Export order: mailboxes by name, messages by UID; `no final line end` gains a CRLF.
    let mut want: Vec<(i64, Vec<u8>)> = Vec::new();
    for msgs in alice.values() {
        for (_, d, b) in msgs {
            let mut b = b.clone();
            if !b.ends_with(b"\r\n") {
                b.extend_from_slice(b"\r\n");
            }
            want.push((*d, b));
        }
    }
    assert_eq!(want.len(), 3);

    // While serving: streamed over the admin socket.
    let (code, out, err) = import(
        &srv,
        "mbox",
        &mbox,
        "bob@example.test",
        &["--mailbox", "Old/Alice"],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("imported 3 messages") && out.contains("1 mailboxes created"),
        "{out}"
    );
    // The mailbox the import created is subscribed (its parent, created on the way, is not).
    let mut c = crate::imap::Imap::login(&srv, "bob@example.test", "secret-bob1");
    for (pattern, want) in [
        ("Old/%", "* LSUB () \"/\" Old/Alice"),
        ("Old", "* LSUB (\\Noselect) \"/\" Old"),
    ] {
        let u = c.ok(&format!("LSUB \"\" {pattern}"));
        assert_eq!(
            u.iter().map(|r| crate::imap::text(r)).collect::<Vec<_>>(),
            [want]
        );
    }
    drop(c);
    let got: Vec<(i64, Vec<u8>)> = dump(&srv, "bob@example.test", "secret-bob1")["Old/Alice"]
        .iter()
        .map(|(_, d, b)| (*d, b.clone()))
        .collect();
    assert_eq!(got, want);
    // Re-running adds nothing.
    let (code, out, _) = import(
        &srv,
        "mbox",
        &mbox,
        "bob@example.test",
        &["--mailbox", "Old/Alice"],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("imported 0 messages (3 already there"),
        "{out}"
    );

    // Stopped: straight into the store.
    assert_eq!(srv.stop(), Some(0));
    let (code, out, err) = import(&srv, "mbox", &mbox, "carol@example.test", &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("imported 3 messages"), "{out}");
    srv.restart();
    let got: Vec<(i64, Vec<u8>)> = dump(&srv, "carol@example.test", "secret-carol")["INBOX"]
        .iter()
        .map(|(_, d, b)| (*d, b.clone()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn import_skips_oversize_message_with_a_warning() {
    let mut srv = TestServer::start_with(&[("imap", "max_literal_size = 2000")]);
    srv.add_user("alice@example.test", "secret-alice");
    let big = "x".repeat(70);
    let big: String = (0..60).map(|_| format!("{big}\n")).collect();
    let mbox = srv.dir.path().join("in.mbox");
    std::fs::write(
        &mbox,
        format!(
            "From a Mon Feb  1 10:00:00 2021\nSubject: small 1\nStatus: RO\n\nhello\n\n\
             From b Mon Feb  1 10:00:01 2021\nSubject: big\n\n{big}\n\
             From c Mon Feb  1 10:00:02 2021\nSubject: small 2\nX-Status: F\n\nbye\n"
        ),
    )
    .unwrap();
    let (code, out, err) = import(&srv, "mbox", &mbox, "alice@example.test", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("imported 2 messages (0 already there, 1 skipped"),
        "{out}"
    );
    let line = format!(
        "skipped {}:7: over imap.max_literal_size (2000)",
        mbox.display()
    );
    assert!(err.contains(&line), "{err}");
    let inbox = &dump(&srv, "alice@example.test", "secret-alice")["INBOX"];
    assert_eq!(inbox.len(), 2);
    assert_eq!(
        inbox[0],
        (
            vec!["\\Seen".to_string()],
            1612173600,
            b"Subject: small 1\r\nStatus: RO\r\n\r\nhello\r\n".to_vec()
        )
    );
    assert_eq!(inbox[1].0, vec!["\\Flagged".to_string()]);

    // A maildir with the server stopped: the big file is named, the small one imported.
    assert_eq!(srv.stop(), Some(0));
    let md = srv.dir.path().join("Maildir");
    // `INBOXй` (.INBOX&BDk-): a name whose sixth byte is inside a character, where the store
    // once sliced it (and panicked).
    for d in ["cur", "new", "tmp", ".Old/cur", ".INBOX&BDk-/new"] {
        std::fs::create_dir_all(md.join(d)).unwrap();
    }
    let big_file = md.join("cur/1600000000.M1P1.host,S=4260:2,S");
    std::fs::write(&big_file, big.as_bytes()).unwrap();
    std::fs::write(
        md.join(".INBOX&BDk-/new/1600000002.M3P1.host"),
        "Subject: y\n\ny\n",
    )
    .unwrap();
    std::fs::write(
        md.join(".Old/cur/1600000001.M2P1.host:2,F"),
        "Subject: s\n\nok\n",
    )
    .unwrap();
    let (code, out, err) = import(&srv, "maildir", &md, "alice@example.test", &[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains(&format!(
            "skipped {}: 4260 bytes, over imap.max_literal_size (2000)",
            big_file.display()
        )),
        "{err}"
    );
    assert!(
        out.contains("imported 2 messages (0 already there, 1 skipped; 2 mailboxes created)"),
        "{out}"
    );
    srv.restart();
    let boxes = dump(&srv, "alice@example.test", "secret-alice");
    assert_eq!(boxes["INBOX"].len(), 2);
    assert_eq!(
        boxes["INBOX&BDk-"][0].2,
        b"Subject: y\r\n\r\ny\r\n".to_vec()
    );
    assert_eq!(
        boxes["Old"],
        vec![(
            vec!["\\Flagged".to_string()],
            mtime(&md.join(".Old/cur/1600000001.M2P1.host:2,F")),
            b"Subject: s\r\n\r\nok\r\n".to_vec()
        )]
    );
}

#[test]
fn import_stamps_only_when_asked() {
    let srv = TestServer::start();
    srv.add_user("alice@example.test", "secret-alice");
    let mbox = srv.dir.path().join("in.mbox");
    // A forged verdict from the old server: kept as is without --stamp, removed with it.
    let msg = "X-EDS-Status: pass; signers=1; valid=1\nSubject: old\n\nbody\n";
    std::fs::write(&mbox, format!("From a Mon Feb  1 10:00:00 2021\n{msg}")).unwrap();
    for (extra, mailbox) in [(&[][..], "Plain"), (&["--stamp"][..], "Stamped")] {
        let extra = [&["--mailbox", mailbox][..], extra].concat();
        let (code, out, err) = import(&srv, "mbox", &mbox, "alice@example.test", &extra);
        assert_eq!(code, 0, "{out}{err}");
    }
    let boxes = dump(&srv, "alice@example.test", "secret-alice");
    let crlf = msg.replace('\n', "\r\n").into_bytes();
    assert_eq!(boxes["Plain"][0].2, crlf);
    let stamped = String::from_utf8(boxes["Stamped"][0].2.clone()).unwrap();
    assert!(
        stamped.starts_with("Authentication-Results: mail.example.test; smime=none\r\n"),
        "{stamped}"
    );
    assert!(
        stamped.contains("X-EDS-Status: none") && !stamped.contains("X-EDS-Status: pass"),
        "{stamped}"
    );
    assert!(
        stamped.ends_with("Subject: old\r\n\r\nbody\r\n"),
        "{stamped}"
    );
}

/// What another program on the admin socket could send: frames with flags that are no IMAP
/// atoms, mailbox names the store refuses, a size over the limit. The server checks each
/// message as it checks APPEND.
const PY_HOSTILE: &str = r#"
import socket, sys, json
path = sys.argv[1]
def session(frames):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(json.dumps({'cmd': 'import', 'email': 'alice@example.test', 'stamp': False, 'dedup': True}).encode() + b'\n')
    for head, body in frames:
        s.sendall(json.dumps(head).encode() + b'\n' + body)
    s.shutdown(socket.SHUT_WR)
    data = b''
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    return json.loads(data.split(b'\n')[0])
def frame(mailbox, flags, body, size=None):
    return ({'mailbox': mailbox, 'flags': flags, 'internal_date': 1600000000,
             'size': len(body) if size is None else size, 'origin': 'o\x1b[31m'}, body)
ok = b'Subject: ok\r\n\r\nok\r\n'
r = session([frame('INBOX', ['bad(flag'], ok), frame('a//b', [], ok), frame('INBOX', [], b''),
             frame('INBOX', ['\\Seen', '$Fine'], ok)])
print(json.dumps(r))
r = session([frame('INBOX', [], b'x' * 10, size=3000)])
print(json.dumps(r))
"#;

#[test]
fn import_frames_pass_the_append_limits() {
    let srv = TestServer::start_with(&[("imap", "max_literal_size = 2000")]);
    srv.add_user("alice@example.test", "secret-alice");
    let out = python(
        PY_HOSTILE,
        &[srv.data_dir().join("admin.sock").to_str().unwrap()],
    );
    let mut lines = out.lines();
    let first: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["data"]["imported"], 1, "{first}");
    assert_eq!(first["data"]["skipped"], 3, "{first}");
    let warnings = first["data"]["warnings"].to_string();
    for w in [
        "is not an IMAP keyword",
        "mailbox name",
        "not accepted",
        "empty message",
    ] {
        assert!(warnings.contains(w), "{w}: {warnings}");
    }
    // The client's origin string is escaped, not passed on raw.
    for w in first["data"]["warnings"].as_array().unwrap() {
        let w = w.as_str().unwrap();
        assert!(!w.contains('\u{1b}') && w.contains("skipped o"), "{w}");
    }
    let second: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(second["ok"], false, "{second}");
    assert!(
        second["text"]
            .as_str()
            .unwrap()
            .contains("over imap.max_literal_size"),
        "{second}"
    );
    let boxes = dump(&srv, "alice@example.test", "secret-alice");
    assert_eq!(
        boxes["INBOX"],
        vec![(
            vec!["$Fine".to_string(), "\\Seen".into()],
            1600000000,
            b"Subject: ok\r\n\r\nok\r\n".to_vec()
        )]
    );
    assert!(!boxes.keys().any(|k| k.starts_with('a')), "{boxes:?}");
}
