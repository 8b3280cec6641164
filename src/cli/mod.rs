//! The command line (SPEC §2). Parses arguments with clap and runs one command; returns the
//! process exit code. Only this module and `main.rs` print to stdout.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::admin::{self, Request};
use crate::config::{Config, Source, DEFAULT_TOML};

pub mod alias;
pub mod certs;
pub mod check;
pub mod clients;
pub mod dns;
pub mod import;
pub mod store;
pub mod verify;

#[derive(Debug, Parser)]
#[command(
    name = "tanba",
    version,
    about = "Mail server that verifies NCA RK (Kazakhstan) digital signatures"
)]
pub struct Cli {
    /// Config file (TOML). Without it: $TANBA_CONFIG, else /etc/tanba/tanba.toml if it exists,
    /// else the built-in defaults.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every listener and the delivery queue until SIGTERM/SIGINT.
    Serve,
    /// Check or print the configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Manage mail accounts (works whether or not the server runs).
    #[command(subcommand)]
    User(UserCmd),
    /// Manage aliases, domain aliases and catch-alls (works whether or not the server runs).
    #[command(subcommand)]
    Alias(alias::AliasCmd),
    /// Verify the CMS signatures of a message (.eml) or a CMS file.
    Verify(VerifyArgs),
    /// Print a message exactly as the inbound filter would store it.
    Stamp(StampArgs),
    /// Write an account's mailboxes as mboxrd to stdout.
    Export {
        /// The account (user@domain).
        email: String,
        /// Only this mailbox (e.g. INBOX, Sent).
        #[arg(long, value_name = "NAME")]
        mailbox: Option<String>,
    },
    /// Bring mail in from another server: a Maildir++ tree or an mbox file.
    #[command(subcommand)]
    Import(import::ImportCmd),
    /// Inspect and steer the outbound queue.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// DKIM keys for outbound mail.
    #[command(subcommand)]
    Dkim(DkimCmd),
    /// Trusted certificates for signature verification.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Print every DNS record this configuration needs (zone-file syntax); --check asks a
    /// resolver which are published (exit 1 when any is missing).
    Dns {
        /// Only this local domain (default: every domain of server.domains).
        domain: Option<String>,
        /// Look each record up and mark it ok, missing or different.
        #[arg(long)]
        check: bool,
        /// The DNS server to ask (ADDR:PORT; default: delivery.resolver, else the system's).
        #[arg(long, value_name = "ADDR:PORT", requires = "check")]
        resolver: Option<String>,
    },
    /// Check the store, or rebuild it from a backup and the body files on disk.
    #[command(subcommand)]
    Store(store::StoreCmd),
    /// Deploy the client add-ons: print enterprise policies for this server.
    #[command(subcommand)]
    Clients(clients::ClientsCmd),
    /// Write a backup of the whole store into DIR (new or empty); works while the server runs.
    Backup {
        /// Directory for the backup (written by the server itself when it runs).
        dir: PathBuf,
    },
    /// Restore a backup written by `tanba backup` (server stopped).
    Restore {
        /// The backup directory.
        dir: PathBuf,
        /// Replace an existing store (it is kept aside as store.replaced-TIME, not deleted).
        #[arg(long)]
        force: bool,
        /// Give every mailbox a new UIDVALIDITY, so that clients resynchronise (use when the
        /// server ran after the backup was taken).
        #[arg(long)]
        new_uidvalidity: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate the config and what serve needs (TLS pair, data_dir, DKIM keys, trust_dir);
    /// errors name the key and line (exit 2).
    Check {
        /// Also bind every listener once (fails while tanba or another server holds the ports).
        #[arg(long)]
        bind: bool,
    },
    /// Print the built-in defaults as commented TOML.
    Default,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create an account (password from --password-stdin or a prompt).
    Add {
        /// The new address (user@domain, domain in server.domains).
        email: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password.
    Passwd {
        /// The account (user@domain).
        email: String,
        /// Read the password from the first line of stdin instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove an account and all its mail.
    Del {
        /// The account (user@domain).
        email: String,
    },
    /// List accounts.
    List,
    /// Show an account's storage quota and usage, or set it (SIZE: bytes, or with a unit K, M,
    /// G, T in powers of 1024, e.g. 500M; `none`: unlimited).
    Quota {
        /// The account (user@domain).
        email: String,
        /// The new limit (e.g. 2G, 500M, 1048576, none); without it, shows the current one.
        size: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// What waits, why, and when it is tried next.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Try an entry again now.
    Retry {
        /// Queue entry id (first column of `queue list`).
        id: u64,
    },
    /// Remove an entry (with a bounce to the sender unless --silent).
    Drop {
        /// Queue entry id (first column of `queue list`).
        id: u64,
        /// Send no bounce to the sender.
        #[arg(long)]
        silent: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DkimCmd {
    /// Write a DKIM key and print the DNS TXT record and the `[dkim]` config lines.
    Generate {
        /// The signing domain (a local domain, e.g. example.kz).
        domain: String,
        /// DKIM selector: the record is published at SELECTOR._domainkey.DOMAIN.
        #[arg(long, default_value = "tanba")]
        selector: String,
        /// Where to write the key (default: <data_dir>/dkim/DOMAIN.key).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum CertsCmd {
    /// Show the trusted roots and intermediates in signatures.trust_dir.
    List,
    /// Download NCA RK's production roots, intermediates and CRLs.
    FetchNca {
        /// Base URL to fetch from instead of the official addresses (mirrors, tests).
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Message (.eml) or CMS file (.p7s, .cms, .p7m; DER, PEM or base64).
    pub file: PathBuf,
    /// Print the report as JSON (verdict, then each signature with its signers).
    #[arg(long)]
    pub json: bool,
    /// The signed file, for a detached CMS signature (e.g. contract.pdf for contract.pdf.p7s);
    /// required when the CMS does not carry the content.
    #[arg(long, value_name = "FILE")]
    pub content: Option<PathBuf>,
    /// Trust anchors directory (overrides signatures.trust_dir).
    #[arg(long, value_name = "DIR")]
    pub trust: Option<PathBuf>,
    /// Extra CRL files (repeatable).
    #[arg(long, value_name = "FILE")]
    pub crl: Vec<PathBuf>,
    /// Verify as of this instant (RFC 3339), instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct StampArgs {
    /// The message (.eml).
    pub file: PathBuf,
    /// Trust anchors directory (overrides signatures.trust_dir).
    #[arg(long, value_name = "DIR")]
    pub trust: Option<PathBuf>,
    /// Stamp as of this instant (RFC 3339), instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
}

impl Command {
    /// Whether the command may create files in `data_dir` (the store, keys, the socket, the
    /// revocation cache that `verify` and `stamp` fill): those run with umask 077 (docs/security.md, "File modes"). Not `certs`, whose files in
    /// `signatures.trust_dir` are public and may be read by another user than the one who fetched
    /// them.
    pub fn writes_data_dir(&self) -> bool {
        matches!(
            self,
            Command::Serve
                | Command::User(_)
                | Command::Alias(_)
                | Command::Export { .. }
                | Command::Import(_)
                | Command::Queue(_)
                | Command::Dkim(_)
                | Command::Verify(_)
                | Command::Stamp(_)
                | Command::Store(_)
                | Command::Backup { .. }
                | Command::Restore { .. }
        )
    }
}

/// Exit code for errors (usage, I/O, config): SPEC §2.
pub const EXIT_ERROR: i32 = 2;

/// Runs the parsed command with the config `source` names (SPEC §9, [`Source::locate`]) and
/// returns the exit code.
pub fn run(cli: Cli, source: &Source) -> Result<i32> {
    if cli.command.writes_data_dir() {
        crate::perms::restrict_umask();
    }
    let load = || Config::load_source(source);
    let config_path = source.path();
    match cli.command {
        Command::Serve => {
            let config = load()?;
            // Before the store: a second serve on this data_dir names the first one's pid.
            let _lock = crate::preflight::lock_instance(&config.data_dir)?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(crate::server::serve(config))?;
            Ok(0)
        }
        Command::Config(ConfigCmd::Default) => {
            print!("{DEFAULT_TOML}");
            Ok(0)
        }
        Command::Config(ConfigCmd::Check { bind }) => check::run(&load()?, source, bind),
        Command::User(cmd) => {
            let config = load()?;
            let req = match cmd {
                UserCmd::Add {
                    email,
                    password_stdin,
                } => {
                    let password = read_password(password_stdin, true)?;
                    Request::UserAdd { email, password }
                }
                UserCmd::Passwd {
                    email,
                    password_stdin,
                } => {
                    let password = read_password(password_stdin, true)?;
                    Request::UserPasswd { email, password }
                }
                UserCmd::Del { email } => Request::UserDel { email },
                UserCmd::List => Request::UserList,
                UserCmd::Quota { email, size } => {
                    let limit_kib = match size.as_deref() {
                        None => None,
                        Some(s) => Some(crate::admin::parse_quota_size(s)?),
                    };
                    Request::UserQuota {
                        email,
                        set: size.is_some(),
                        limit_kib: limit_kib.flatten(),
                    }
                }
            };
            admin_command(&config, &req, false)
        }
        Command::Alias(cmd) => {
            let config = load()?;
            let (req, json) = cmd.request();
            admin_command(&config, &req, json)
        }
        Command::Export { email, mailbox } => {
            let config = load()?;
            admin_command(&config, &Request::Export { email, mailbox }, false)
        }
        Command::Import(cmd) => import::run(cmd, &load()?),
        Command::Queue(cmd) => {
            let config = load()?;
            let (req, json) = match cmd {
                QueueCmd::List { json } => (Request::QueueList, json),
                QueueCmd::Retry { id } => (Request::QueueRetry { id }, false),
                QueueCmd::Drop { id, silent } => (Request::QueueDrop { id, silent }, false),
            };
            admin_command(&config, &req, json)
        }
        Command::Verify(args) => verify::verify(&args, config_path),
        Command::Stamp(args) => verify::stamp(&args, config_path),
        Command::Dkim(DkimCmd::Generate {
            domain,
            selector,
            out,
        }) => {
            let config = load()?;
            let g = crate::delivery::dkim::generate(&config, &domain, &selector, out.as_deref())?;
            print!("{}", g.text);
            Ok(0)
        }
        Command::Certs(cmd) => certs::run(&cmd, config_path),
        Command::Dns {
            domain,
            check,
            resolver,
        } => dns::run(&load()?, domain.as_deref(), check, resolver.as_deref()),
        Command::Clients(cmd) => clients::run(&cmd, &load()?),
        Command::Store(store::StoreCmd::Check) => store::check(&load()?),
        Command::Store(store::StoreCmd::Migrate { from, to }) => {
            store::migrate(&load()?, &from, &to)
        }
        Command::Store(store::StoreCmd::Rebuild { from_backup }) => {
            store::rebuild(&load()?, from_backup.as_deref())
        }
        Command::Backup { dir } => store::backup(&load()?, &dir),
        Command::Restore {
            dir,
            force,
            new_uidvalidity,
        } => store::restore(&load()?, &dir, force, new_uidvalidity),
    }
}

fn admin_command(config: &Config, req: &Request, json: bool) -> Result<i32> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let resp = admin::run(config, req, &mut out)?;
    out.flush()?;
    if !resp.ok {
        bail!("{}", resp.text);
    }
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&resp.data)?)?;
    } else if matches!(req, Request::QueueList) && resp.text.trim().is_empty() {
        // On stderr: stdout keeps one line per entry for scripts (`queue list | wc -l`).
        eprintln!("the outbound queue is empty");
    } else if matches!(req, Request::Export { .. }) {
        eprintln!("{}", resp.text);
    } else if !resp.text.is_empty() {
        write!(out, "{}", resp.text)?;
        if !resp.text.ends_with('\n') {
            writeln!(out)?;
        }
    }
    Ok(0)
}

/// Reads a password: one line from stdin with `--password-stdin`, else a prompt on the terminal.
/// The password is never echoed or logged.
fn read_password(from_stdin: bool, confirm: bool) -> Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            bail!("no password on stdin");
        }
        return Ok(p);
    }
    let p = prompt_hidden("Password: ")?;
    if confirm && prompt_hidden("Again: ")? != p {
        bail!("the passwords do not match");
    }
    Ok(p)
}

fn prompt_hidden(prompt: &str) -> Result<String> {
    use std::io::IsTerminal;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no terminal to prompt for a password: use --password-stdin");
    }
    eprint!("{prompt}");
    // Turn echo off while reading.
    let fd = 0;
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    let have = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    let saved = term;
    if have {
        term.c_lflag &= !libc::ECHO;
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    let mut line = String::new();
    let r = stdin.lock().read_line(&mut line);
    if have {
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    r?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Issue 12, item 9: every argument of every command says what it is for.
    #[test]
    fn every_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "tanba", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }
}
