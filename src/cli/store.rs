//! `tanba store check`, `tanba store rebuild`, `tanba backup DIR`, `tanba restore DIR`
//! (docs/operations.md, "Backup and restore" and "When the store does not open").

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use crate::admin::{self, Request};
use crate::config::Config;
use crate::store::backup::{self, Manifest, RestoreOptions};
use crate::store::Store;

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Check the store's consistency (accounts, mailboxes, UIDs, body files, queue); exit 0
    /// when consistent, 1 with the list of problems. Works whether or not the server runs.
    Check,
    /// Build a new store from what survives when the store does not open: a backup
    /// (--from-backup) plus the body files on disk. The old store is kept aside, never deleted.
    /// The server must be stopped.
    Rebuild {
        /// The newest backup (a directory written by `tanba backup`).
        #[arg(long, value_name = "DIR")]
        from_backup: Option<PathBuf>,
    },
    /// Copy the whole embedded store (accounts, mailboxes, messages with their UIDs, flags and
    /// bodies, the queue, aliases, greylist) into an empty PostgreSQL database
    /// (docs/cluster.md, "Migrating from sled"), then compare both: exit 0 when verified, 1
    /// with the differences. The server must be stopped.
    Migrate {
        /// The source: `sled`, the embedded store of the configured data_dir (the default;
        /// choose another data_dir with --config).
        #[arg(long, value_name = "sled", default_value = "sled")]
        from: String,
        /// postgres://user@host:port/db (an empty database, or one with Tanba's schema only).
        #[arg(long, value_name = "URL")]
        to: String,
    },
}

fn store_dir(config: &Config) -> PathBuf {
    config.data_dir.join("store")
}

fn config_name(config: &Config) -> String {
    match &config.path {
        Some(p) => p.display().to_string(),
        None => "the built-in defaults".into(),
    }
}

/// Opens an existing store; never creates one (SPEC §9).
fn open_existing(config: &Config, for_check: bool) -> Result<Store> {
    let dir = store_dir(config);
    if config.store != crate::store::Backend::Embedded {
        // Refuses with what is missing (docs/cluster.md).
        return Ok(Store::open_backend(&config.store, &dir)?);
    }
    if !backup::store_exists(&dir) {
        bail!(
            "no store in {} (server.data_dir of {}): this command never creates one",
            dir.display(),
            config_name(config)
        );
    }
    Ok(if for_check {
        Store::open_for_check(&dir)?
    } else {
        Store::open(&dir)?
    })
}

/// Refuses when a server runs on this data_dir (its admin socket answers or the store is locked).
fn require_stopped(config: &Config, what: &str) -> Result<()> {
    if admin::server_running(config) || backup::store_in_use(&store_dir(config)) {
        bail!(
            "a tanba server is running on {}: stop it first (systemctl stop tanba), then {what}",
            config.data_dir.display()
        );
    }
    Ok(())
}

/// `tanba store migrate [--from sled] --to URL`: the configured (embedded) store into
/// PostgreSQL. Exit 0 when the copy is verified, 1 when it differs (listed on stderr).
pub fn migrate(config: &Config, from: &str, url: &str) -> Result<i32> {
    if from != "sled" {
        bail!(
            "--from: only `sled` can be migrated (the embedded store of the configured data_dir; \
             choose another data_dir with --config)"
        );
    }
    if config.store != crate::store::Backend::Embedded {
        bail!("store migrate copies the embedded store: this config already uses store.backend = \"postgres\"");
    }
    crate::store::check_postgres_url(url).map_err(|e| anyhow::anyhow!("--to {e}"))?;
    require_stopped(config, "migrate")?;
    let store = open_existing(config, false)?;
    let sum = store.migrate_to_postgres(url)?;
    println!(
        "copied {} accounts, {} mailboxes, {} subscriptions, {} messages ({} bodies), {} \
         expunged UIDs, {} queued, {} aliases, {} greylist entries into PostgreSQL (schema \
         version {})",
        sum.accounts,
        sum.mailboxes,
        sum.subscriptions,
        sum.messages,
        sum.bodies,
        sum.vanished,
        sum.queued,
        sum.aliases,
        sum.greylist,
        sum.schema_version
    );
    if sum.mismatches.is_empty() {
        println!("verified: counts, mailboxes and a SHA-256 of every mailbox's messages match");
        return Ok(0);
    }
    eprintln!(
        "the copy does not match the store ({} differences); do not switch to it:",
        sum.mismatches.len()
    );
    for m in &sum.mismatches {
        eprintln!("  {}", crate::logging::escape(m, 4096));
    }
    Ok(1)
}

pub fn check(config: &Config) -> Result<i32> {
    let problems: Vec<String> = if admin::server_running(config) {
        let resp = admin::run(config, &Request::StoreCheck, &mut std::io::sink())?;
        if !resp.ok {
            bail!("{}", resp.text);
        }
        serde_json::from_value(resp.data["problems"].clone())
            .context("bad answer from the server")?
    } else {
        open_existing(config, true)?.check(true)?
    };
    if problems.is_empty() {
        println!("store is consistent");
        return Ok(0);
    }
    println!("store has {} problems:", problems.len());
    for p in &problems {
        println!("  {}", crate::logging::escape(p, 4096));
    }
    Ok(1)
}

pub fn backup(config: &Config, dir: &Path) -> Result<i32> {
    let dir = std::path::absolute(dir).with_context(|| format!("{}", dir.display()))?;
    let (manifest, how) = if admin::server_running(config) {
        let resp = admin::run(
            config,
            &Request::Backup { dir: dir.clone() },
            &mut std::io::sink(),
        )?;
        if !resp.ok {
            bail!("{}", resp.text);
        }
        let m: Manifest =
            serde_json::from_value(resp.data).context("bad answer from the server")?;
        (m, format!("by the running server, {}", resp.text))
    } else {
        let store = open_existing(config, false)?;
        let b = store.backup(&dir)?;
        (
            b.manifest,
            format!("{} body files linked, {} copied", b.linked, b.copied),
        )
    };
    println!(
        "backup written to {}: {} accounts, {} mailboxes, {} messages, {} queued, {} bodies ({how})",
        dir.display(),
        manifest.accounts,
        manifest.mailboxes,
        manifest.messages,
        manifest.queue,
        manifest.bodies
    );
    if manifest.problems.is_empty() {
        return Ok(0);
    }
    eprintln!("the store lacked what follows (run `tanba store check`):");
    for p in &manifest.problems {
        eprintln!("  {}", crate::logging::escape(p, 4096));
    }
    Ok(1)
}

fn print_restore(sum: &backup::RestoreSummary) {
    println!(
        "restored {} accounts, {} mailboxes, {} messages, {} queued, {} bodies{}",
        sum.accounts,
        sum.mailboxes,
        sum.messages,
        sum.queue,
        sum.bodies,
        if sum.raw > 0 {
            format!(", {} other records", sum.raw)
        } else {
            String::new()
        }
    );
}

fn print_problems(problems: &[String]) -> i32 {
    if problems.is_empty() {
        return 0;
    }
    eprintln!("not restored:");
    for p in problems {
        eprintln!("  {}", crate::logging::escape(p, 4096));
    }
    1
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// Refuses `tanba restore`/`tanba store rebuild` on PostgreSQL: they write an embedded store.
fn refuse_on_postgres(config: &Config, what: &str) -> Result<()> {
    if config.store != crate::store::Backend::Embedded {
        bail!(
            "{what} writes an embedded store; on store.backend = \"postgres\" restore the \
             database with PostgreSQL's tools (pg_restore of a pg_dump, or a base backup and \
             its WAL for point-in-time recovery: docs/cluster.md, \"Backup and restore on \
             PostgreSQL\")"
        );
    }
    Ok(())
}

pub fn restore(config: &Config, from: &Path, force: bool, new_uidvalidity: bool) -> Result<i32> {
    refuse_on_postgres(config, "tanba restore")?;
    require_stopped(config, "restore")?;
    backup::read_manifest(from)?;
    let dir = store_dir(config);
    let occupied = std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    let mut aside = None;
    if occupied {
        if !force {
            bail!(
                "{} already holds a store: restore refuses to replace it without --force (the \
                 old one is then kept as {}.replaced-TIME, never deleted)",
                dir.display(),
                dir.display()
            );
        }
        let to = PathBuf::from(format!("{}.replaced-{}", dir.display(), stamp()));
        std::fs::rename(&dir, &to).with_context(|| format!("moving {} aside", dir.display()))?;
        aside = Some(to);
    } else if dir.exists() {
        std::fs::remove_dir(&dir).ok();
    }
    crate::perms::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    // Built beside, then renamed into place: a failed restore leaves no half-made store.
    let tmp = PathBuf::from(format!(
        "{}.restoring-{}",
        dir.display(),
        std::process::id()
    ));
    let sum = match backup::restore(&tmp, from, RestoreOptions { new_uidvalidity }) {
        Ok(s) => s,
        Err(e) => {
            // Our own unfinished store; the previous one (if any) stays where it was moved.
            let _ = std::fs::remove_dir_all(&tmp);
            if let Some(a) = &aside {
                if std::fs::rename(a, &dir).is_ok() {
                    bail!(
                        "restoring {}: {e} (the previous store is back in place)",
                        from.display()
                    );
                }
                bail!(
                    "restoring {}: {e} (the previous store is in {})",
                    from.display(),
                    a.display()
                );
            }
            bail!("restoring {}: {e}", from.display());
        }
    };
    std::fs::rename(&tmp, &dir).with_context(|| format!("moving {} into place", tmp.display()))?;
    print_restore(&sum);
    if let Some(a) = aside {
        println!("the previous store is kept in {}", a.display());
    }
    Ok(print_problems(&sum.problems))
}

pub fn rebuild(config: &Config, from_backup: Option<&Path>) -> Result<i32> {
    refuse_on_postgres(config, "tanba store rebuild")?;
    require_stopped(config, "rebuild")?;
    let unowned = config.data_dir.join(format!("recovered-{}", stamp()));
    let sum = backup::rebuild(&store_dir(config), from_backup, &unowned)?;
    match &sum.restored {
        Some(r) => print_restore(r),
        None => println!("no backup given: accounts and mailboxes start empty"),
    }
    if let Some(k) = &sum.kept {
        println!("the old store is kept in {}", k.display());
    }
    println!(
        "{} messages found as body files went to their owner's INBOX",
        sum.recovered
    );
    if sum.unowned > 0 {
        println!(
            "{} messages without a known owner were written to {} (import them by hand)",
            sum.unowned,
            unowned.display()
        );
    }
    let mut problems = sum.problems.clone();
    if let Some(r) = &sum.restored {
        problems.extend(r.problems.iter().cloned());
    }
    Ok(print_problems(&problems))
}
