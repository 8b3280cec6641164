//! Issue 12, item 1: faults heal. The data dir is a small tmpfs (mounted here; the tests print
//! why and return when `mount` is not permitted), filled with a filler file, remounted
//! read-only, or pulled away under the running server:
//! - a full disk refuses new mail (`452 4.3.1`, APPEND `NO [OVERQUOTA]`, `user add` fails
//!   whole) while everything acknowledged stays readable, and serves again by itself once space
//!   returns;
//! - an I/O error under sled (ENOSPC despite the reserve, a read-only remount, a vanished store)
//!   refuses with 4xx, logs why and exits non-zero; restarted as systemd's
//!   `Restart=on-failure` would, the server recovers, and every `250`'d message is there.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::imap::Imap;
use crate::smtp::{stored, Client};
use crate::support::{base_toml, TestServer, BIN};

const ALICE: &str = "alice@example.test";
const PASSWORD: &str = "secret-alice";
/// What the store keeps free for sled (src/store/sync.rs, `RESERVE`).
const RESERVE: u64 = 8 << 20;

/// A tmpfs mounted on `<tempdir>/data`; unmounted (and its mount point removed) on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs {
                path: at.to_path_buf(),
            }),
            Ok(o) => {
                eprintln!(
                    "skipping: cannot mount a tmpfs (needs root): {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                None
            }
        }
    }

    fn remount(&self, opt: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(st.success(), "remount {opt} failed");
    }

    /// A read-only bind mount of the tmpfs over itself.
    fn bind_read_only(&self) {
        let p = self.path.as_os_str();
        for args in [
            vec!["--bind".as_ref(), p, p],
            vec!["-o".as_ref(), "remount,bind,ro".as_ref(), p],
        ] {
            let st = Command::new("mount").args(&args).status().unwrap();
            assert!(st.success(), "mount {args:?} failed");
        }
    }

    fn unbind(&self) {
        let st = Command::new("umount").arg(&self.path).status().unwrap();
        assert!(st.success());
    }

    /// Fills the file system with a file until `leave` bytes are free.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x55u8; 64 * 1024];
        loop {
            let free = free_bytes(&self.path);
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            if f.write_all(&chunk[..n]).is_err() {
                break;
            }
        }
        f.sync_all().ok();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut c = Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(&self.path).stderr(Stdio::null()).status()
        };
        // The tmpfs and a bind mount over it, if a test left one.
        for _ in 0..2 {
            if !matches!(umount(false), Ok(s) if s.success()) {
                let _ = umount(true);
            }
        }
        let _ = std::fs::remove_dir(&self.path);
    }
}

fn free_bytes(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
    s.f_bavail as u64 * s.f_frsize as u64
}

/// A server whose data_dir is a fresh tmpfs of `size`, with alice. `None` without `mount`.
/// The tmpfs comes first so that, bound in that order, it is dropped (unmounted) after the
/// server is killed, also when a test panics.
fn server_on_tmpfs(size: &str) -> Option<(Tmpfs, TestServer)> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("trust")).unwrap();
    let fs = Tmpfs::mount(&dir.path().join("data"), size)?;
    let toml = base_toml(dir.path());
    let srv = TestServer::start_toml(dir, &toml);
    srv.add_user(ALICE, PASSWORD);
    Some((fs, srv))
}

fn message(subject: &str, size: usize) -> Vec<u8> {
    let mut m = format!("Subject: {subject}\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(format!("{subject} {:068}\r\n", m.len()).as_bytes());
    }
    m
}

/// One message over MX to alice; the final reply.
fn send(srv: &TestServer, subject: &str, size: usize) -> crate::smtp::Reply {
    let mut c = Client::connect(srv.mx);
    c.ok("EHLO sender.example", "250");
    c.send_mail("sender@example.kz", &[ALICE], &message(subject, size))
}

/// Sends a message with `subject`, which must be accepted, and adds it to `acked`.
#[track_caller]
fn send_acked(srv: &TestServer, acked: &mut Vec<String>, subject: String, size: usize) {
    let r = send(srv, &subject, size);
    assert_eq!(r.code, 250, "{}", r.line());
    acked.push(subject);
}

/// Subjects of alice's stored messages (`tanba export`).
fn subjects(srv: &TestServer) -> Vec<String> {
    stored(srv, ALICE)
        .iter()
        .map(|m| {
            String::from_utf8_lossy(m)
                .lines()
                .find_map(|l| l.strip_prefix("Subject: "))
                .expect("a Subject header")
                .to_string()
        })
        .collect()
}

fn assert_all_present(srv: &TestServer, acked: &[String]) {
    let have = subjects(srv);
    let missing: Vec<&String> = acked.iter().filter(|s| !have.contains(s)).collect();
    assert!(missing.is_empty(), "lost acknowledged messages {missing:?}");
}

/// `tanba serve` on `srv`'s config, run directly: whether it exits (non-zero) within a while,
/// with its output. Used while the disk is still broken, where systemd would keep restarting.
fn serve_once(srv: &TestServer) -> (Option<i32>, String) {
    let log = srv.dir.path().join("serve_once.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&srv.config_path)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// Flag changes until the store fails (each is a sled write and a group commit); the number
/// that succeeded. The connection may close as the server exits.
fn store_flags_until_refused(imap: &mut Imap, limit: usize) -> usize {
    for i in 0..limit {
        let op = if i % 2 == 0 { "+FLAGS" } else { "-FLAGS" };
        let tag = imap.tag();
        imap.send(format!("{tag} UID STORE 1:* {op} (\\Seen)\r\n").as_bytes());
        loop {
            match imap.try_response() {
                None => return i,
                Some(r) if r.starts_with(format!("{tag} OK").as_bytes()) => break,
                Some(r) if r.starts_with(format!("{tag} ").as_bytes()) => {
                    let t = crate::imap::text(&r);
                    assert!(
                        t.starts_with(&format!("{tag} NO [OVERQUOTA]"))
                            || t.starts_with(&format!("{tag} NO [UNAVAILABLE]")),
                        "{t}"
                    );
                    return i;
                }
                Some(_) => {}
            }
        }
    }
    panic!("{limit} flag changes succeeded on a full/broken disk");
}

#[test]
fn disk_full_answers_452_and_overquota_then_serves_again_and_loses_nothing() {
    if crate::support::sled_only() {
        return;
    }
    let Some((fs, mut srv)) = server_on_tmpfs("32m") else {
        return;
    };
    let mut acked = Vec::new();
    for i in 0..10 {
        send_acked(
            &srv,
            &mut acked,
            format!("before {i}"),
            if i % 2 == 0 { 300_000 } else { 2_000 },
        );
    }

    // The disk fills (another process, a log file...): half the store's reserve is left.
    let filler = fs.fill(RESERVE / 2);
    let r = send(&srv, "while full", 2_000);
    assert_eq!(r.line(), "452 4.3.1 Insufficient system storage");
    assert!(srv.log().contains("not enough disk space"), "{}", srv.log());
    let mut imap = Imap::login(&srv, ALICE, PASSWORD);
    let t = imap.append("INBOX", "(\\Seen)", &message("appended while full", 2_000));
    assert!(t.starts_with("t2 NO [OVERQUOTA]"), "{t}");
    // A failed `user add` leaves no half-made account.
    let out = srv.tanba(
        &["user", "add", "carol@example.test", "--password-stdin"],
        Some("pw-carol-12\n"),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not enough disk space"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = srv.tanba(&["user", "list"], None);
    assert!(!String::from_utf8_lossy(&list.stdout).contains("carol"));
    // What was acknowledged is readable; flag changes still work within the reserve.
    let sel = imap.ok("SELECT INBOX");
    assert!(sel.iter().any(|r| crate::imap::text(r) == "* 10 EXISTS"));
    imap.ok("UID STORE 1:* +FLAGS (\\Flagged)");
    assert_all_present(&srv, &acked);

    // Space returns: the same process serves again, no restart.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..3 {
        send_acked(&srv, &mut acked, format!("after {i}"), 50_000);
    }
    let t = imap.append("INBOX", "(\\Seen)", &message("appended after", 2_000));
    assert!(t.starts_with("t5 OK"), "{t}");
    acked.push("appended after".into());
    srv.add_user("carol@example.test", "pw-carol-12");
    assert_all_present(&srv, &acked);

    srv.restart();
    assert_all_present(&srv, &acked);
    assert_eq!(subjects(&srv).len(), acked.len());
}

#[test]
fn sled_out_of_space_exits_for_a_restart_and_loses_nothing() {
    if crate::support::sled_only() {
        return;
    }
    let Some((fs, mut srv)) = server_on_tmpfs("32m") else {
        return;
    };
    let mut acked = Vec::new();
    for i in 0..20 {
        send_acked(&srv, &mut acked, format!("before {i}"), 3_000);
    }
    // Something fills the disk to the last byte, the store's reserve too: sled's log runs
    // out of space under flag changes.
    let filler = fs.fill(0);
    let mut imap = Imap::login(&srv, ALICE, PASSWORD);
    imap.ok("SELECT INBOX");
    store_flags_until_refused(&mut imap, 20_000);
    let code = srv.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    let log = srv.log();
    assert!(log.contains("I/O error under the database"), "{log}");
    assert!(
        log.contains("exiting so that a restart recovers it"),
        "{log}"
    );

    // systemd restarts it while the disk is still full: it refuses to run (or, if sled
    // manages to open, runs and refuses mail); nothing it does there may break the store.
    let (code, out) = serve_once(&srv);
    // What sled leaves when the disk fills while it writes a snapshot at open (seen with an
    // older store): an empty `snap.<lsn>.generating`, which sled itself then reads as the
    // newest snapshot and refuses to open ("Read corrupted data") even with space back.
    std::fs::write(fs.path.join("store/snap.00000000FFFFFFFF.generating"), b"").unwrap();
    if let Some(c) = code {
        assert_ne!(c, 0, "{out}");
    }

    // Space returns; the next restart serves, with every acknowledged message.
    std::fs::remove_file(&filler).unwrap();
    srv.restart();
    assert!(
        srv.log().contains("removed the incomplete sled snapshot"),
        "{}",
        srv.log()
    );
    assert_all_present(&srv, &acked);
    let r = send(&srv, "after", 3_000);
    assert_eq!(r.code, 250, "{}", r.line());
    acked.push("after".into());
    let mut imap = Imap::login(&srv, ALICE, PASSWORD);
    imap.ok("SELECT INBOX");
    imap.ok("UID STORE 1:* +FLAGS (\\Flagged)");
    assert_all_present(&srv, &acked);
}

#[test]
fn read_only_data_dir_refuses_with_4xx_and_recovers() {
    if crate::support::sled_only() {
        return;
    }
    let Some((fs, mut srv)) = server_on_tmpfs("32m") else {
        return;
    };
    let mut acked = Vec::new();
    for i in 0..5 {
        send_acked(&srv, &mut acked, format!("before {i}"), 3_000);
    }
    let mut imap = Imap::login(&srv, ALICE, PASSWORD);
    imap.ok("SELECT INBOX");

    // data_dir turns read-only under the running server (a read-only bind mount over it: the
    // files the server has open stay writable, new ones cannot be created).
    fs.bind_read_only();
    let r = send(&srv, "while read-only", 3_000);
    assert_eq!(
        r.line(),
        "451 4.3.0 Local error in processing, try again later"
    );
    let t = imap.append("INBOX", "()", &message("appended while read-only", 2_000));
    assert!(t.starts_with("t3 NO [UNAVAILABLE]"), "{t}");
    assert!(srv.log().contains("Read-only file system"), "{}", srv.log());
    imap.ok("UID STORE 1:* +FLAGS (\\Flagged)");
    assert_all_present(&srv, &acked);

    // Writable again: the same process accepts mail.
    fs.unbind();
    let r = send(&srv, "after bind", 3_000);
    assert_eq!(r.code, 250, "{}", r.line());
    acked.push("after bind".into());

    // Read-only at start (systemd restarting it after a remount): it says why, exits non-zero.
    srv.stop();
    fs.remount("ro");
    let (code, out) = serve_once(&srv);
    assert!(matches!(code, Some(c) if c != 0), "{code:?} {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    fs.remount("rw");
    srv.restart();
    assert_all_present(&srv, &acked);
    let r = send(&srv, "after restart", 3_000);
    assert_eq!(r.code, 250, "{}", r.line());
    acked.push("after restart".into());
    srv.restart();
    assert_all_present(&srv, &acked);
}

#[test]
fn vanished_store_is_noticed_refused_and_the_server_exits() {
    if crate::support::sled_only() {
        return;
    }
    let Some((fs, mut srv)) = server_on_tmpfs("32m") else {
        return;
    };
    let r = send(&srv, "before", 3_000);
    assert_eq!(r.code, 250, "{}", r.line());
    let mut imap = Imap::login(&srv, ALICE, PASSWORD);
    imap.ok("SELECT INBOX");

    // Someone moves the store away (a botched migration, `rm -r` of the wrong directory):
    // sled would go on writing into the open, unlinked file and lose it all.
    let store = fs.path.join("store");
    std::fs::rename(&store, fs.path.join("store.moved")).unwrap();
    let r = send(&srv, "while gone", 3_000);
    assert_eq!(r.code / 100, 4, "{}", r.line());
    store_flags_until_refused(&mut imap, 10);
    let code = srv.wait_exit(Duration::from_secs(30));
    assert!(matches!(code, Some(c) if c != 0), "exit code {code:?}");
    assert!(srv.log().contains("store/db"), "{}", srv.log());

    // Put back, it serves what it had.
    std::fs::rename(fs.path.join("store.moved"), &store).unwrap();
    srv.restart();
    assert_eq!(subjects(&srv), ["before"]);
}
