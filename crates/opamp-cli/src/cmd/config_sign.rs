//! `opamp config sign`: the `opamp.signature` entry for a remote config made of FILEs.
//!
//! Each FILE becomes one `AgentConfigMap` entry named by its file name, with a content type
//! from its extension ([`config_entry`]); the signature binds the digest of those entries
//! (`opamp_verify::config_digest`), the selector and the expiry. Whoever offers the config
//! (the server's catalog) must use the same names, content types and bytes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use opamp_verify::{CONFIG_SIGNATURE_ENTRY, ConfigEntry, ConfigStatement, ReleaseSigner};
use zeroize::Zeroizing;

use crate::cmd::package::files::{read_text, write_public};
use crate::cmd::{parse_duration, parse_label};
use crate::failure::{CommandError, Failure, ResultExt as _};

/// Validity of a config signature when neither `--expires-in` nor `--not-after` is given.
const DEFAULT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Arguments of `opamp config sign`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example (on the release machine, with the key from `opamp package keygen`):
  opamp config sign --key keys/release.key --selector env=prod --expires-in 30d collector.yaml

Each FILE is one config-map entry named by its file name (content type text/yaml for .yaml and
.yml, application/json for .json, else text/plain). The signature (default: opamp.signature
next to the first FILE) is the body of the entry named opamp.signature. Supervisors with
remote_config.require_signed refuse configs whose entries, selector or expiry do not match.
Without --expires-in or --not-after the signature expires after 30 days.")]
pub(crate) struct ConfigSignArgs {
    /// The config files (entries of the config map).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,

    /// Private release key (PKCS#8 PEM, as written by `opamp package keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,

    /// Only agents with this attribute value (repeat: all must match; none: every agent).
    #[arg(long = "selector", value_name = "KEY=VALUE", value_parser = parse_label)]
    selectors: Vec<(String, String)>,

    /// How long the signature stays valid (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "not_after")]
    expires_in: Option<Duration>,

    /// Absolute expiry, RFC 3339 UTC (e.g. 2027-01-31T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    not_after: Option<SystemTime>,

    /// Where to write the signature entry's body (default: opamp.signature beside FILE).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Replace an existing signature file.
    #[arg(long)]
    force: bool,
}

fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text).map_err(|e| e.to_string())
}

/// The config-map entry name and content type of a config file.
pub(crate) fn config_entry(path: &Path) -> (String, &'static str) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let content_type = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => "text/yaml",
        Some("json") => "application/json",
        _ => "text/plain",
    };
    (name, content_type)
}

/// Runs `opamp config sign`.
pub(crate) fn run(args: &ConfigSignArgs) -> Result<(), CommandError> {
    let pem = Zeroizing::new(read_text(&args.key, "private key")?);
    let signer = ReleaseSigner::from_pkcs8_pem(&pem, None).or_fail(Failure::Operation, || {
        format!("cannot use {} as a release key", args.key.display())
    })?;
    drop(pem);

    let mut names = BTreeSet::new();
    let mut files = Vec::with_capacity(args.files.len());
    for path in &args.files {
        let (name, content_type) = config_entry(path);
        if name == CONFIG_SIGNATURE_ENTRY || !names.insert(name.clone()) {
            return Err(CommandError::operation(anyhow::anyhow!(
                "two FILEs (or a FILE named {CONFIG_SIGNATURE_ENTRY}) would share the entry name {name:?}"
            )));
        }
        let body = std::fs::read(path).or_fail(Failure::Unreachable, || {
            format!("cannot read config file {}", path.display())
        })?;
        files.push((name, content_type, body));
    }
    let digest =
        opamp_verify::config_digest(files.iter().map(|(name, content_type, body)| ConfigEntry {
            name,
            content_type,
            body,
        }));

    let now = SystemTime::now();
    let not_after = match (args.not_after, args.expires_in) {
        (Some(at), _) => at,
        (None, validity) => now + validity.unwrap_or(DEFAULT_VALIDITY),
    };
    if not_after <= now {
        return Err(CommandError::operation(anyhow::anyhow!(
            "the expiry {} is not in the future",
            humantime::format_rfc3339_seconds(not_after)
        )));
    }
    let mut statement = ConfigStatement::new(digest, not_after);
    for (key, value) in &args.selectors {
        statement = statement
            .with_selector(key, value)
            .or_fail(Failure::Operation, || format!("selector {key}={value}"))?;
    }
    let signature = signer
        .sign_config(&statement)
        .or_fail(Failure::Operation, || "cannot sign the config statement")?;
    let out = args.out.clone().unwrap_or_else(|| {
        args.files[0]
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join(CONFIG_SIGNATURE_ENTRY)
    });
    write_public(&out, &signature, args.force)?;

    let mut summary = vec![format!("config digest: {digest}")];
    for (name, content_type, body) in &files {
        summary.push(format!(
            "entry:         {name} ({content_type}, {} bytes)",
            body.len()
        ));
    }
    let selector = if args.selectors.is_empty() {
        "(every agent)".to_owned()
    } else {
        let pairs: Vec<String> = statement
            .selector()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join(",")
    };
    summary.push(format!("selector:      {selector}"));
    summary.push(format!(
        "not after:     {}",
        humantime::format_rfc3339_seconds(
            SystemTime::UNIX_EPOCH + Duration::from_secs(statement.not_after())
        )
    ));
    summary.push(format!(
        "key id:        {} ({})",
        signer.key_id(),
        signer.scheme()
    ));
    summary.push(format!(
        "signature:     {} (entry {CONFIG_SIGNATURE_ENTRY})",
        out.display()
    ));
    crate::output::line(summary.join("\n"))
}
