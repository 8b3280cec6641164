//! `tanba clients policy thunderbird` (SPEC §12, docs/clients.md "Deploying to organisations"):
//! prints a Thunderbird enterprise `policies.json` for this server: the add-on force-installed
//! from this server's HTTPS endpoint, and the header and tag preferences of docs/signatures.md
//! ("Showing it in Thunderbird") for fleets that prefer no add-on.

use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::config::Config;

/// The add-on's id (clients/thunderbird/manifest.json).
pub const EXTENSION_ID: &str = "eds@tanba";

/// The stamp headers Thunderbird shows with `mailnews.headers.extraExpandedHeaders`: the
/// summary and status, then name, IIN, organisation, BIN and signing time of two signers.
pub const EXPANDED_HEADERS: &str = "X-EDS-Summary X-EDS-Status \
X-EDS-Signer-1-Name X-EDS-Signer-1-IIN X-EDS-Signer-1-Organization X-EDS-Signer-1-BIN \
X-EDS-Signer-1-Signing-Time \
X-EDS-Signer-2-Name X-EDS-Signer-2-IIN X-EDS-Signer-2-Organization X-EDS-Signer-2-BIN \
X-EDS-Signer-2-Signing-Time";

#[derive(Debug, Subcommand)]
pub enum ClientsCmd {
    /// Print an enterprise policy that deploys the add-on and preferences to a client.
    #[command(subcommand)]
    Policy(PolicyCmd),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Thunderbird `policies.json` (put it in /etc/thunderbird/policies/ or the install's
    /// distribution/ folder).
    Thunderbird,
}

/// The URL the add-on is installed from: `https://<server.hostname>[:port]` of the first
/// `http.listen_tls` address.
pub fn xpi_url(config: &Config) -> anyhow::Result<String> {
    let Some(addr) = config.http.listen_tls.first() else {
        anyhow::bail!(
            "http.listen_tls is empty: the add-on is served over HTTPS only, so there is no \
             install URL"
        );
    };
    let host = &config.hostname;
    let base = match addr.port() {
        443 => format!("https://{host}"),
        0 => anyhow::bail!("http.listen_tls has port 0: set the port clients reach"),
        p => format!("https://{host}:{p}"),
    };
    Ok(format!("{base}{}", crate::http::clients::XPI_PATH))
}

/// The `policies.json` document.
pub fn thunderbird_policy(config: &Config) -> anyhow::Result<Value> {
    let url = xpi_url(config)?;
    let pref = |v: &str| json!({ "Value": v, "Status": "default", "Type": "string" });
    let mut prefs = Map::new();
    prefs.insert(
        "mailnews.headers.extraExpandedHeaders".into(),
        pref(EXPANDED_HEADERS),
    );
    // Tags keyed like the IMAP keywords (case-insensitive in Thunderbird).
    for (key, tag, color) in [
        ("$edsvalid", "EDS valid", "#2E7D32"),
        ("$edsinvalid", "EDS INVALID", "#C62828"),
    ] {
        prefs.insert(format!("mailnews.tags.{key}.key"), pref(key));
        prefs.insert(format!("mailnews.tags.{key}.tag"), pref(tag));
        prefs.insert(format!("mailnews.tags.{key}.color"), pref(color));
    }
    Ok(json!({
        "policies": {
            "ExtensionSettings": {
                EXTENSION_ID: {
                    "installation_mode": "force_installed",
                    "install_url": url,
                }
            },
            "Preferences": Value::Object(prefs),
            // Read by the add-on as `storage.managed` (docs/clients.md, "The trust rule"): the
            // stamps of this server count in accounts of its domains, with nothing to set up.
            "3rdparty": {
                "Extensions": {
                    EXTENSION_ID: {
                        "trustedServers": [config.hostname],
                        "domains": config.domains,
                    }
                }
            },
        }
    }))
}

pub fn run(cmd: &ClientsCmd, config: &Config) -> anyhow::Result<i32> {
    match cmd {
        ClientsCmd::Policy(PolicyCmd::Thunderbird) => {
            let doc = thunderbird_policy(config)?;
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(0)
        }
    }
}
