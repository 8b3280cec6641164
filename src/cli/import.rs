//! `tanba import maildir PATH --user EMAIL` / `tanba import mbox FILE --user EMAIL`
//! (issue 12 item 4, SPEC §9). This process reads the source (as the user who runs it) one
//! message at a time; with a server running, each message is streamed over the admin socket,
//! else it is stored directly. See `crate::import` and docs/operations.md.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use crate::admin::{Request, Response};
use crate::config::Config;
use crate::import::{maildir::Maildir, mbox::Mbox, Event, Frame, Importer, Stats};

#[derive(Debug, Subcommand)]
pub enum ImportCmd {
    /// Import a Maildir++ tree (Dovecot, Courier): INBOX from cur/ and new/, folders from
    /// .Name and .Parent.Child, flags and dovecot-keywords, INTERNALDATE from each file's mtime.
    Maildir {
        /// The maildir (the directory holding cur/, new/ and the .Folder directories).
        path: PathBuf,
        #[command(flatten)]
        opts: ImportOpts,
    },
    /// Import an mbox file (mboxrd as `tanba export` writes it; mboxo and mboxcl2 read too).
    Mbox {
        /// The mbox file.
        file: PathBuf,
        /// Mailbox to import into (created when missing).
        #[arg(long, default_value = "INBOX")]
        mailbox: String,
        #[command(flatten)]
        opts: ImportOpts,
    },
}

#[derive(Debug, Args)]
pub struct ImportOpts {
    /// The account to import into (it must exist: tanba user add).
    #[arg(long, value_name = "EMAIL")]
    pub user: String,
    /// Run the signature filter on each message as on delivery (with the current trust_dir),
    /// instead of storing the bytes as they are.
    #[arg(long)]
    pub stamp: bool,
    /// Import messages even when the mailbox already holds them (same INTERNALDATE and bytes or
    /// Message-ID); without it, re-running an import adds nothing twice.
    #[arg(long)]
    pub allow_duplicates: bool,
}

/// Runs the import; exit 0 when every message was imported or already there, 1 when some were
/// skipped (each named on stderr), 2 on errors.
pub fn run(cmd: ImportCmd, config: &Config) -> Result<i32> {
    let max = config.imap.max_literal_size;
    let (source, opts): (Box<dyn Iterator<Item = Result<Event>>>, ImportOpts) = match cmd {
        ImportCmd::Maildir { path, opts } => (Box::new(Maildir::open(&path, max)?), opts),
        ImportCmd::Mbox {
            file,
            mailbox,
            opts,
        } => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            if !f.metadata()?.is_file() {
                bail!("{} is not a file", file.display());
            }
            let r = BufReader::with_capacity(64 * 1024, f);
            (
                Box::new(Mbox::new(r, &file.display().to_string(), &mailbox, max)),
                opts,
            )
        }
    };
    let stats = match UnixStream::connect(config.admin_socket()) {
        Ok(stream) => via_socket(stream, source, &opts)?,
        Err(_) => direct(config, source, &opts)?,
    };
    for w in &stats.warnings {
        eprintln!("tanba: {w}");
    }
    println!("{}", stats.summary());
    Ok(if stats.skipped > 0 { 1 } else { 0 })
}

/// Server stopped: stores into the store directly.
fn direct(
    config: &Config,
    source: Box<dyn Iterator<Item = Result<Event>>>,
    opts: &ImportOpts,
) -> Result<Stats> {
    let store = crate::admin::open_store(config)?;
    let stamper = if opts.stamp {
        let filter = crate::filter::Filter::new(config).context("signatures")?;
        let revocation = crate::revocation::Checker::from_config(config, &[])
            .context("signatures")?
            .map(Arc::new);
        Some(crate::import::stamper(Arc::new(filter), revocation))
    } else {
        None
    };
    let mut imp = Importer::new(
        store,
        &opts.user,
        config.imap.max_literal_size,
        stamper,
        !opts.allow_duplicates,
    )?;
    let mut local = Stats::default();
    let result = (|| -> Result<()> {
        for ev in source {
            match ev? {
                Event::Message(item) => {
                    imp.add(item)?;
                }
                Event::Skipped { origin, reason } => skipped(&mut local, &origin, &reason),
            }
        }
        Ok(())
    })();
    // What was stored before an error is kept (and durable): re-running skips it.
    imp.flush()?;
    result?;
    let mut stats = imp.stats;
    merge(&mut stats, local);
    Ok(stats)
}

/// Server running: streams the messages over the admin socket.
fn via_socket(
    stream: UnixStream,
    source: Box<dyn Iterator<Item = Result<Event>>>,
    opts: &ImportOpts,
) -> Result<Stats> {
    let req = Request::Import {
        email: opts.user.clone(),
        stamp: opts.stamp,
        dedup: !opts.allow_duplicates,
    };
    let mut w = std::io::BufWriter::with_capacity(64 * 1024, stream.try_clone()?);
    let mut local = Stats::default();
    let sent = (|| -> Result<()> {
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        w.write_all(&line)?;
        for ev in source {
            match ev? {
                Event::Message(item) => {
                    let f = Frame {
                        mailbox: item.mailbox,
                        flags: item.flags,
                        internal_date: item.internal_date,
                        size: item.data.len() as u64,
                        origin: item.origin,
                    };
                    let mut head = serde_json::to_vec(&f)?;
                    head.push(b'\n');
                    w.write_all(&head)?;
                    w.write_all(&item.data)?;
                }
                Event::Skipped { origin, reason } => skipped(&mut local, &origin, &reason),
            }
        }
        w.flush()?;
        Ok(())
    })();
    drop(w);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    // The server's answer comes also when it stopped reading early (its error says why).
    let mut head = String::new();
    let read = BufReader::new(&stream).read_line(&mut head);
    let resp: Option<Response> = match read {
        Ok(n) if n > 0 => serde_json::from_str(&head).ok(),
        _ => None,
    };
    let Some(resp) = resp else {
        sent?;
        bail!("the server closed the admin connection without an answer");
    };
    if !resp.ok {
        bail!("{}", resp.text);
    }
    sent?;
    let mut stats: Stats = serde_json::from_value(resp.data).context("the server's answer")?;
    merge(&mut stats, local);
    Ok(stats)
}

/// A message the reader skipped (too big, unreadable): said on stderr at once.
fn skipped(local: &mut Stats, origin: &str, reason: &str) {
    local.skipped += 1;
    eprintln!(
        "tanba: skipped {}: {reason}",
        crate::logging::escape(origin, 512)
    );
}

/// Adds the reader's skips to the store side's counts.
fn merge(stats: &mut Stats, local: Stats) {
    stats.skipped += local.skipped;
}
