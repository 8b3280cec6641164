//! Issue 12, item 2: "durable" means on the platter. sled 0.34 flushes with `pwrite` +
//! `sync_file_range`, which neither writes the drive's cache nor the metadata of its growing log,
//! so each group commit must end in an `fdatasync` of sled's log file (src/store/sync.rs).
//! The server runs under `strace -f -ttt -y -e trace=fsync,fdatasync` (Debian `strace`); for every
//! acknowledged SMTP message and every IMAP STORE, an `fdatasync` of `<data_dir>/store/db`
//! started between the command and its acknowledgement.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::imap::Imap;
use crate::smtp::Client;
use crate::support::{base_toml, TestServer};

/// `tanba serve` under strace. Kills the traced server on drop (SIGKILL to strace would leave
/// it running).
struct Traced {
    srv: TestServer,
    out: std::path::PathBuf,
}

impl Traced {
    fn start() -> Option<Traced> {
        let probe = std::process::Command::new("strace").arg("-V").output();
        if !matches!(&probe, Ok(o) if o.status.success()) {
            eprintln!("skipping: strace is not installed (Debian package `strace`)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("trust")).unwrap();
        let out = dir.path().join("strace.out");
        let toml = base_toml(dir.path());
        let wrapper = [
            "strace",
            "-f",
            "-qq",
            "-ttt",
            "-y",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            out.to_str().unwrap(),
        ];
        let srv = TestServer::start_toml_wrapped(dir, &toml, &wrapper);
        srv.add_user("alice@example.test", "secret-alice");
        Some(Traced { srv, out })
    }

    /// The traced `tanba serve` (strace's child).
    fn tanba_pid(&self) -> Option<i32> {
        let strace = self.srv.pid()?;
        let children =
            std::fs::read_to_string(format!("/proc/{strace}/task/{strace}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// Stops the server (SIGTERM to tanba, which drains and exits; then strace exits and its
    /// output is complete) and returns the start times of the `fdatasync`s of sled's log.
    fn finish(&mut self) -> Vec<f64> {
        let pid = self.tanba_pid().expect("tanba under strace");
        unsafe { kill(pid, 15) };
        assert_eq!(self.srv.wait_exit(Duration::from_secs(40)), Some(0));
        let text = std::fs::read_to_string(&self.out).unwrap();
        // `PID SECONDS.MICROS fdatasync(11</…/data/store/db>) = 0`, or split into
        // `… <unfinished ...>` and `<... fdatasync resumed>) = 0` by concurrent threads.
        text.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let _pid = w.next()?;
                let ts: f64 = w.next()?.parse().ok()?;
                let call = w.next()?;
                (call.starts_with("fdatasync(") && l.contains("/data/store/db>")).then_some(ts)
            })
            .collect()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if let Some(pid) = self.tanba_pid() {
            unsafe { kill(pid, 9) };
        }
    }
}

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Windows `(sent, acknowledged)` without an fdatasync of the log started inside.
fn unsynced(windows: &[(f64, f64)], syncs: &[f64]) -> Vec<(f64, f64)> {
    windows
        .iter()
        .filter(|(a, b)| !syncs.iter().any(|t| t >= a && t <= b))
        .copied()
        .collect()
}

#[test]
fn every_acknowledged_message_and_flag_change_follows_an_fdatasync_of_the_sled_log() {
    if crate::support::sled_only() {
        return;
    }
    let Some(mut t) = Traced::start() else {
        return;
    };
    const MESSAGES: usize = 10;
    const STORES: usize = 10;
    let mut smtp_windows = Vec::new();
    let mut c = Client::connect(t.srv.mx);
    c.ok("EHLO sender.example", "250");
    for i in 0..MESSAGES {
        c.ok("MAIL FROM:<sender@example.kz>", "250");
        c.ok("RCPT TO:<alice@example.test>", "250");
        c.ok("DATA", "354");
        c.send(format!("Subject: m{i}\r\n\r\nbody {i}\r\n").as_bytes());
        let sent = now();
        c.send(b".\r\n");
        let r = c.reply();
        assert_eq!(r.code, 250, "{}", r.line());
        smtp_windows.push((sent, now()));
    }
    c.ok("QUIT", "221");

    let mut store_windows = Vec::new();
    let mut imap = Imap::login(&t.srv, "alice@example.test", "secret-alice");
    imap.ok("SELECT INBOX");
    for i in 0..STORES {
        let op = if i % 2 == 0 { "+FLAGS" } else { "-FLAGS" };
        let sent = now();
        imap.ok(&format!("UID STORE {} {op} (\\Seen)", 1 + i % MESSAGES));
        store_windows.push((sent, now()));
    }
    imap.ok("LOGOUT");

    let syncs = t.finish();
    assert!(!syncs.is_empty(), "no fdatasync of the sled log at all");
    let bad = unsynced(&smtp_windows, &syncs);
    assert!(
        bad.is_empty(),
        "SMTP 250 without an fdatasync of the log: {bad:?}"
    );
    let bad = unsynced(&store_windows, &syncs);
    assert!(
        bad.is_empty(),
        "STORE OK without an fdatasync of the log: {bad:?}"
    );
}
