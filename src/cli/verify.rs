//! `tanba verify` and `tanba stamp` (SPEC §2): the inbound filter on one file.
//!
//! `verify` prints the report (human, or SPEC §6 JSON with `--json`) and exits 0 for pass, 1 for
//! any other verdict, 3 when no signature was found and 2 on usage or I/O errors. `stamp` prints
//! the message exactly as the inbound filter would store it.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};

use super::{StampArgs, VerifyArgs};
use crate::config::Config;
use crate::filter::{cms, Filter, Verdict};
use crate::revocation::Checker;

/// Exit code when the file carries no signature.
pub const EXIT_NO_SIGNATURE: i32 = 3;
/// Exit code for any verdict other than pass.
pub const EXIT_FAIL: i32 = 1;

/// File names that are CMS files rather than messages.
const CMS_EXTENSIONS: &[&str] = &[
    ".p7s", ".p7m", ".p7b", ".cms", ".sig", ".der", ".pem", ".b64",
];

pub fn verify(args: &VerifyArgs, config_path: Option<&Path>) -> Result<i32> {
    let config = Config::load(config_path)?;
    let at = parse_at(args.at.as_deref())?;
    let filter = build_filter(&config, args.trust.as_deref())?;
    // Revocation data: `--crl` files (which turn CRL checking on for this run) and, as
    // `signatures.revocation` says, crl_dir, downloads and OCSP.
    let checker = Checker::from_config(&config, &args.crl).context("--crl")?;
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let name = file_name(&args.file);
    let lower = name.to_ascii_lowercase();
    let is_cms = cms::sniff(&data) || CMS_EXTENSIONS.iter().any(|e| lower.ends_with(e));
    if is_cms && args.content.is_none() && is_detached(&data) {
        bail!(
            "{} is a detached signature: it does not carry the file it signs. Give that file \
             with --content FILE (e.g. tanba verify contract.pdf.p7s --content contract.pdf)",
            args.file.display()
        );
    }
    let report = if is_cms {
        let content = match &args.content {
            Some(p) => Some((
                file_name(p),
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
            )),
            None => None,
        };
        let content = content.as_ref().map(|(n, c)| (n.as_str(), c.as_slice()));
        match &checker {
            Some(c) => c.verify_cms(&filter, &data, Some(&name), content, at),
            None => filter.verify_cms(&data, Some(&name), content, at),
        }
    } else {
        if args.content.is_some() {
            bail!(
                "--content applies to a bare CMS file; {} is a message",
                args.file.display()
            );
        }
        match &checker {
            Some(c) => c.verify_message(&filter, &data, at),
            None => filter.verify_message(&data, at),
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        let human = report.human();
        let (verdict, rest) = human.split_once('\n').unwrap_or((&human, ""));
        writeln!(out, "{verdict}")?;
        writeln!(out, "{}", validated_at(at, config.signatures.timezone))?;
        if report
            .signatures
            .iter()
            .flat_map(|s| &s.signers)
            .any(|s| s.tsp_time.is_some())
        {
            writeln!(
                out,
                "              (a signer with a trusted timestamp is validated at its time)"
            )?;
        }
        write!(out, "{rest}")?;
    }
    out.flush()?;
    Ok(match report.verdict {
        Verdict::Pass => 0,
        Verdict::None => EXIT_NO_SIGNATURE,
        _ => EXIT_FAIL,
    })
}

pub fn stamp(args: &StampArgs, config_path: Option<&Path>) -> Result<i32> {
    let config = Config::load(config_path)?;
    let at = parse_at(args.at.as_deref())?;
    let filter = build_filter(&config, args.trust.as_deref())?;
    let data =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let p = match Checker::from_config(&config, &[])? {
        Some(c) => c.process(&filter, &data, at),
        None => filter.process(&data, at),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    out.write_all(&p.message)?;
    out.flush()?;
    eprintln!(
        "verdict: {}{}",
        p.verdict,
        if p.keywords.is_empty() {
            String::new()
        } else {
            format!(" (keywords {})", p.keywords.join(" "))
        }
    );
    Ok(0)
}

fn build_filter(config: &Config, trust: Option<&Path>) -> Result<Filter> {
    match trust {
        Some(dir) => {
            if !dir.is_dir() {
                bail!("--trust {}: not a directory", dir.display());
            }
            Filter::with_trust_dir(config, dir).context("--trust")
        }
        None => Filter::new(config),
    }
}

/// `--at` (RFC 3339), or now.
fn parse_at(at: Option<&str>) -> Result<SystemTime> {
    let Some(at) = at else {
        return Ok(SystemTime::now());
    };
    let t = chrono::DateTime::parse_from_rfc3339(at).with_context(|| {
        format!("--at {at:?}: not an RFC 3339 time (e.g. 2022-09-28T14:40:30Z)")
    })?;
    let secs = t.timestamp();
    let base = SystemTime::UNIX_EPOCH;
    Ok(if secs >= 0 {
        base + std::time::Duration::from_secs(secs as u64)
    } else {
        base - std::time::Duration::from_secs(secs.unsigned_abs())
    })
}

/// Whether `data` is a CMS SignedData without encapsulated content (a detached signature).
fn is_detached(data: &[u8]) -> bool {
    cms::decode_input(data)
        .and_then(|der| cms::parse(&der))
        .is_ok_and(|sd| sd.content.is_none())
}

/// `Validated at: 2025-01-01 00:00:00 UTC = 2025-01-01 05:00:00 Asia/Almaty (UTC+05:00)`: the
/// instant the report holds for, in UTC and in `signatures.timezone`.
fn validated_at(at: SystemTime, tz: chrono_tz::Tz) -> String {
    let secs = match at.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let Some(utc) = chrono::DateTime::from_timestamp(secs, 0) else {
        return format!("Validated at: {secs} (seconds since 1970)");
    };
    let local = utc.with_timezone(&tz);
    format!(
        "Validated at: {} UTC = {} {} (UTC{})",
        utc.format("%Y-%m-%d %H:%M:%S"),
        local.format("%Y-%m-%d %H:%M:%S"),
        tz.name(),
        local.format("%:z")
    )
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| p.display().to_string())
}
