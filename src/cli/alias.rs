//! `tanba alias add|del|list` (SPEC §9): the alias table, through the admin channel
//! (`admin.rs`), so it works whether or not `serve` runs. Rules: docs/operations.md, "Aliases".

use clap::Subcommand;

use crate::admin::Request;

#[derive(Debug, Subcommand)]
pub enum AliasCmd {
    /// Add targets to an alias (created if new). ADDRESS is `user@domain`, or `@domain` for a
    /// domain alias (one target `@otherdomain`) or a catch-all (targets are addresses).
    Add {
        /// The address that receives: `sales@example.kz`, `@old.kz`, `@example.kz`.
        address: String,
        /// Where its mail goes: local accounts, other aliases, remote addresses, or `@newdomain`.
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Remove an alias with all its targets.
    Del {
        /// The alias to remove, as `alias list` shows it.
        address: String,
    },
    /// List the aliases: address, then its targets.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl AliasCmd {
    /// The admin request, and whether the answer is printed as JSON.
    pub fn request(self) -> (Request, bool) {
        match self {
            AliasCmd::Add { address, targets } => (Request::AliasAdd { address, targets }, false),
            AliasCmd::Del { address } => (Request::AliasDel { address }, false),
            AliasCmd::List { json } => (Request::AliasList, json),
        }
    }
}
