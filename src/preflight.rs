//! What `tanba serve` and `tanba config check` both look at before anything listens: one
//! instance per `data_dir`, a writable `data_dir`, listeners that can be bound (with the reason
//! in an operator's words), and NCA RK **test** certificates in the trust directory.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::filter::chain::TrustStore;

/// Held by `tanba serve` for its whole life: an exclusive `flock` on `<data_dir>/tanba.pid`,
/// which holds the pid. A second `serve` on the same `data_dir` fails with that pid instead of
/// sled's raw lock error. The file stays after exit; only the lock says whether someone runs.
pub struct InstanceLock {
    _file: File,
    pub path: PathBuf,
}

/// The pid file in `data_dir`.
pub fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tanba.pid")
}

/// Takes the instance lock (creating `data_dir`, mode 0700, if needed).
pub fn lock_instance(data_dir: &Path) -> Result<InstanceLock> {
    crate::perms::create_dir_all(data_dir)
        .with_context(|| format!("server.data_dir: creating {}", data_dir.display()))?;
    let path = pid_file(data_dir);
    let mut file = crate::perms::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("server.data_dir: opening {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; non-blocking.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            let mut text = String::new();
            let _ = file.take(32).read_to_string(&mut text);
            let pid = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "pid not written yet".into(),
            };
            bail!(
                "another tanba is running with data_dir {} ({pid}); stop it first \
                 (systemctl stop tanba), or give this one another server.data_dir",
                data_dir.display()
            );
        }
        return Err(e).with_context(|| format!("locking {}", path.display()));
    }
    file.set_len(0)?;
    file.rewind()?;
    writeln!(file, "{}", std::process::id())?;
    Ok(InstanceLock { _file: file, path })
}

/// The message for a listener that cannot be bound, with what to do about the usual causes.
pub fn bind_error(key: &str, addr: SocketAddr, e: &io::Error) -> String {
    let hint = match e.kind() {
        io::ErrorKind::PermissionDenied if addr.port() != 0 && addr.port() < 1024 => format!(
            "ports below 1024 need root or the capability CAP_NET_BIND_SERVICE: the unit \
             systemd/tanba.service grants it (AmbientCapabilities=CAP_NET_BIND_SERVICE); \
             outside systemd run `setcap cap_net_bind_service=+ep {}` or use ports above 1023",
            std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "/usr/local/bin/tanba".into())
        ),
        io::ErrorKind::AddrInUse => format!(
            "another program listens there (another tanba, postfix, exim, dovecot?): \
             `ss -ltnp 'sport = :{}'` shows which",
            addr.port()
        ),
        io::ErrorKind::AddrNotAvailable => {
            "this machine has no such address (use 0.0.0.0 or [::] for all)".into()
        }
        _ => String::new(),
    };
    if hint.is_empty() {
        format!("{key}: cannot listen on {addr}: {e}")
    } else {
        format!("{key}: cannot listen on {addr}: {e}; {hint}")
    }
}

/// Binds and drops every address, as `serve` would bind them (`config check --bind`).
pub fn try_bind(key: &str, addrs: &[SocketAddr]) -> Vec<String> {
    addrs
        .iter()
        .filter_map(|a| {
            std::net::TcpListener::bind(a)
                .err()
                .map(|e| bind_error(key, *a, &e))
        })
        .collect()
}

/// Whether this process (effective ids) can create files in `dir`, or create `dir` itself when
/// it does not exist yet. The error names the reason: not a directory, permission denied for
/// this uid, read-only file system.
pub fn writable_dir(dir: &Path) -> std::result::Result<(), String> {
    let mut probe = dir;
    let mut missing = false;
    loop {
        match std::fs::metadata(probe) {
            Ok(m) if m.is_dir() => break,
            Ok(_) if missing => {
                return Err(format!(
                    "{} cannot be created: {} is a file, not a directory",
                    dir.display(),
                    probe.display()
                ))
            }
            Ok(_) => return Err(format!("{} is not a directory", dir.display())),
            // ENOTDIR: a file on the way; found when walking up.
            Err(e)
                if e.kind() == io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                missing = true;
                match probe.parent() {
                    Some(p) if !p.as_os_str().is_empty() => probe = p,
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(format!("{}: {e}", probe.display())),
        }
    }
    let c = std::ffi::CString::new(probe.as_os_str().as_bytes())
        .map_err(|_| format!("{}: NUL in path", probe.display()))?;
    // SAFETY: a NUL-terminated path; AT_EACCESS checks with the effective ids, as open would.
    let r = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let what = if missing {
        format!(
            "{} cannot be created: {} is",
            dir.display(),
            probe.display()
        )
    } else {
        format!("{} is", dir.display())
    };
    Err(match e.raw_os_error() {
        Some(libc::EROFS) => format!("{what} on a read-only file system"),
        Some(libc::EACCES) | Some(libc::EPERM) => {
            format!("{what} not writable by uid {uid} (the user running this command): permission denied")
        }
        _ => format!("{what} not writable: {e}"),
    })
}

/// SHA-256 fingerprints of the NCA RK test roots and intermediates shipped in
/// `tests/data/nca/ca/` (published with their private keys: trusted only by tests).
const NCA_TEST_FINGERPRINTS: &[(&str, &str)] = &[
    (
        "beeffc0bdb77cd798c35983eb0715f6ef0051cccb71d7cd05505e8a4fb2c6f4d",
        "NCA GOST 2022 TEST (intermediate)",
    ),
    (
        "0307e8bdf77cb708b7c9d9a5799facdc6de7154447cb394af9ac9b528c3d82c7",
        "NCA GOST TEST (intermediate)",
    ),
    (
        "7e96a36409dc11e0fc99efae41f8c639e16a495d77c2f2278edb98580f997231",
        "NCA RSA TEST (intermediate)",
    ),
    (
        "06021684f52054692a1859686d5af527eda779e6183c2f3cd4fc1278e4067beb",
        "root GOST TEST",
    ),
    (
        "4d05179bcb02180bfc37618372671357df7dd8b7865973eae77b83213cae717b",
        "root RSA TEST",
    ),
    (
        "b995e79e7c07429f8f79e185451e5599ce342ac720000f01b3854fdfa03031a6",
        "root GOST 2022 TEST",
    ),
];

/// The NCA RK **test** certificates among the trust anchors: the known ones by fingerprint, and
/// any other `C=KZ` certificate whose common name says TEST (NCA names its test CAs so).
pub fn nca_test_certs(trust: &TrustStore) -> Vec<String> {
    let mut found = Vec::new();
    for cert in trust.certs() {
        let fp: String = openssl::sha::sha256(&cert.raw)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if let Some((_, name)) = NCA_TEST_FINGERPRINTS.iter().find(|(f, _)| *f == fp) {
            found.push(format!("{name}, SHA-256 {fp}"));
            continue;
        }
        let Ok(x) = openssl::x509::X509::from_der(&cert.raw) else {
            continue;
        };
        let text = |nid| {
            x.subject_name()
                .entries_by_nid(nid)
                .filter_map(|e| e.data().to_string().ok())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let cn = text(openssl::nid::Nid::COMMONNAME);
        let country = text(openssl::nid::Nid::COUNTRYNAME);
        if country.eq_ignore_ascii_case("KZ")
            && cn
                .split(|c: char| !c.is_alphanumeric())
                .any(|w| w == "TEST")
        {
            found.push(format!("{cn}, SHA-256 {fp}"));
        }
    }
    found
}

/// The warning for [`nca_test_certs`] findings (one line, for the log and `config check`).
pub fn nca_test_warning(trust_dir: &Path, found: &[String]) -> String {
    format!(
        "signatures.trust_dir {} holds {} NCA RK TEST certificate(s) ({}): their private keys \
         are public, so anyone can forge a signature that passes. Remove them unless this is a \
         test installation (docs/signatures.md)",
        trust_dir.display(),
        found.len(),
        found.join("; ")
    )
}
