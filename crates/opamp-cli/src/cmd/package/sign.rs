//! `opamp package sign`: a signed statement (default) or a compatible-mode signature.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use opamp_verify::{DowngradeAuthorisation, ReleaseSigner, Statement};
use zeroize::Zeroizing;

use super::files::{read_text, write_public};
use super::keygen::SchemeArg;
use crate::cmd::{parse_duration, parse_version};
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::progress::hash_file;

/// Validity of a statement when neither `--expires-in` nor `--not-after` is given.
const DEFAULT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 60 * 60);

/// Arguments of `opamp package sign`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp package sign otelcol-1.1.0 --key keys/release.key --name otelcol --version 1.1.0 \\
      --expires-in 90d --out otelcol-1.1.0.sig
  # let agents that reached at most 1.2.0 go back to 1.0.0:
  opamp package sign otelcol-1.0.0 --key keys/release.key --name otelcol --version 1.0.0 \\
      --allow-downgrade-from-at-most 1.2.0 --out otelcol-1.0.0.downgrade.sig
  # the source article's format (RSA PKCS#1 v1.5 over the content hash; binds no version):
  opamp package sign otelcol-1.1.0 --key keys/rsa.key --compatible --out otelcol-1.1.0.sig

The default statement binds name, version, SHA-256, size, expiry and the downgrade rule.
Without --expires-in or --not-after a statement expires after 90 days.")]
pub(crate) struct SignArgs {
    /// The package file to sign.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Private release key (PKCS#8 PEM, as written by `opamp package keygen`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,

    /// Scheme for RSA keys (default rsa-pss; Ed25519 keys always use ed25519).
    #[arg(long, value_enum)]
    scheme: Option<SchemeArg>,

    /// Package name agents will be offered.
    #[arg(long, value_name = "NAME", required_unless_present = "compatible")]
    name: Option<String>,

    /// Package version agents will be offered (canonical semver, e.g. 1.2.0).
    #[arg(long, value_name = "V", required_unless_present = "compatible")]
    version: Option<String>,

    /// How long the statement stays valid (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "not_after")]
    expires_in: Option<Duration>,

    /// Absolute expiry, RFC 3339 UTC (e.g. 2027-01-31T00:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = parse_rfc3339)]
    not_after: Option<SystemTime>,

    /// Authorise agents whose highest installed version is at most V to downgrade to this one.
    #[arg(long, value_name = "V", value_parser = parse_version)]
    allow_downgrade_from_at_most: Option<semver::Version>,

    /// Compatible mode: bare RSA PKCS#1 v1.5/SHA-256 over the content hash (no name, version,
    /// expiry or downgrade rule; agents accept it only with compatible mode enabled).
    #[arg(long, conflicts_with_all = ["name", "version", "expires_in", "not_after", "allow_downgrade_from_at_most", "scheme"])]
    compatible: bool,

    /// Where to write the signature (default: FILE.sig).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Replace an existing signature file.
    #[arg(long)]
    force: bool,

    /// Print the summary as JSON (field names as in the text summary, snake_case).
    #[arg(long)]
    json: bool,
}

fn parse_rfc3339(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339_weak(text).map_err(|e| e.to_string())
}

/// Runs `opamp package sign`.
pub(crate) fn run(args: &SignArgs) -> Result<(), CommandError> {
    // The key text is wiped from memory when dropped.
    let pem = Zeroizing::new(read_text(&args.key, "private key")?);
    let signer = ReleaseSigner::from_pkcs8_pem(&pem, args.scheme.map(Into::into))
        .or_fail(Failure::Operation, || {
            format!("cannot use {} as a release key", args.key.display())
        })?;
    drop(pem);
    let hashed = hash_file(&args.file)?;

    let out = args.out.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(".sig");
        PathBuf::from(name)
    });

    // The summary is printed only once the signature is safely written.
    let mut summary = Vec::new();
    let signature = if args.compatible {
        let signature = signer.sign_compatible(&hashed.hash()).or_fail(
            Failure::Operation,
            || "cannot make a compatible-mode signature (it needs an RSA key)",
        )?;
        summary.push("mode:        compatible (RSA PKCS#1 v1.5 over the content hash)".to_owned());
        signature
    } else {
        let statement = statement(args, &hashed)?;
        let signature = signer
            .sign_statement(&statement)
            .or_fail(Failure::Operation, || "cannot sign the statement")?;
        summary.push("mode:        signed statement".to_owned());
        summary.push(format!("name:        {}", statement.name()));
        summary.push(format!("version:     {}", statement.version()));
        summary.push(format!(
            "not after:   {}",
            humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + Duration::from_secs(statement.not_after())
            )
        ));
        summary.push(match statement.downgrade() {
            DowngradeAuthorisation::AllowFromAtMost(from) => {
                format!("downgrade:   allowed for agents whose highest version is at most {from}")
            }
            _ => "downgrade:   forbidden".to_owned(),
        });
        signature
    };
    write_public(&out, &signature, args.force)?;
    summary.push(format!("sha256:      {}", hashed.hash()));
    summary.push(format!("size:        {}", hashed.len()));
    let scheme = if args.compatible {
        opamp_verify::Scheme::RsaPkcs1v15Sha256
    } else {
        signer.scheme()
    };
    summary.push(format!("key id:      {} ({scheme})", signer.key_id()));
    summary.push(format!("signature:   {}", out.display()));
    if args.json {
        // The text lines' facts with typed values; the statement's fields when there is one.
        let mut fields = serde_json::Map::new();
        for line in &summary {
            if let Some((label, value)) = line.split_once(':') {
                fields.insert(label.trim().replace(' ', "_"), value.trim().into());
            }
        }
        fields.insert("size".into(), hashed.len().into());
        fields.insert("key_id".into(), signer.key_id().to_string().into());
        fields.insert("scheme".into(), scheme.to_string().into());
        fields.insert("compatible_mode".into(), args.compatible.into());
        return crate::output::line(crate::cmd::json::to_json(&fields)?);
    }
    crate::output::line(summary.join("\n"))
}

fn statement(
    args: &SignArgs,
    hashed: &opamp_verify::HashedContent,
) -> Result<Statement, CommandError> {
    let (Some(name), Some(version)) = (&args.name, &args.version) else {
        return Err(CommandError::operation(anyhow::anyhow!(
            "a signed statement needs --name and --version"
        )));
    };
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
    let statement = Statement::new(name, version, hashed.hash(), hashed.len(), not_after)
        .or_fail(Failure::Operation, || {
            format!("cannot build a statement for {name} {version}")
        })?;
    if let Some(from) = &args.allow_downgrade_from_at_most {
        // The statement parsed, so its version is valid semver.
        let signed = opamp_packages::parse_version(version)
            .or_fail(Failure::Operation, || format!("invalid version {version}"))?;
        if from.cmp_precedence(&signed).is_le() {
            return Err(CommandError::operation(anyhow::anyhow!(
                "--allow-downgrade-from-at-most {from} authorises nothing: it must be higher than \
                 the signed version {version}"
            )));
        }
    }
    Ok(match &args.allow_downgrade_from_at_most {
        Some(from) => {
            statement.with_downgrade(DowngradeAuthorisation::AllowFromAtMost(from.clone()))
        }
        None => statement,
    })
}
