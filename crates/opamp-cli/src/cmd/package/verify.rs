//! `opamp package verify`: the supervisor's trust policy, run on local files.

use std::path::PathBuf;
use std::time::SystemTime;

use opamp_verify::{
    KeyId, KeyRing, PackageToVerify, PublicKey, SignatureEnvelope, TrustPolicy, TrustedKey,
    VerificationContext, VerifyError,
};

use super::files::{read_bytes, read_text};
use super::refusal::classify;
use crate::cmd::parse_version;
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::progress::hash_file;

/// Arguments of `opamp package verify`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp package verify otelcol-1.1.0 --sig otelcol-1.1.0.sig --pub keys/release.pub
  opamp package verify otelcol-1.1.0 --sig otelcol-1.1.0.sig --pub keys/release.pub --json
  # would an agent that has run 1.2.0 accept this downgrade?
  opamp package verify otelcol-1.0.0 --sig otelcol-1.0.0.sig --pub keys/release.pub \\
      --name otelcol --version 1.0.0 --highest-installed 1.2.0

Runs the same trust policy as the supervisor, at the current system time: trusted key,
signature, expiry, name/version/hash match, size, and anti-rollback. Without --name and
--version the ones in the signed statement are used. Exits 3 with the reason when refused.")]
pub(crate) struct VerifyArgs {
    /// The package file.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// The signature file (statement envelope or compatible-mode signature).
    #[arg(long, value_name = "FILE")]
    sig: PathBuf,

    /// Trusted public key (SPKI PEM); repeat to trust several (key rotation).
    #[arg(long = "pub", value_name = "FILE", required = true)]
    public_keys: Vec<PathBuf>,

    /// Key id (hex) to treat as revoked, even if one of the --pub keys has it; repeatable.
    #[arg(long = "revoked", value_name = "KEY_ID", value_parser = parse_key_id)]
    revoked: Vec<KeyId>,

    /// Package name the server would offer (default: the signed name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// Version the server would offer (default: the signed version).
    #[arg(long, value_name = "V")]
    version: Option<String>,

    /// Highest version the agent has ever installed (turns on the anti-rollback check).
    #[arg(long, value_name = "V", value_parser = parse_version)]
    highest_installed: Option<semver::Version>,

    /// Accept compatible-mode signatures (RSA PKCS#1 v1.5 over the content hash only).
    #[arg(long)]
    allow_compatible: bool,

    /// Print the verified package as JSON (a refusal still exits 3 with the reason).
    #[arg(long)]
    json: bool,
}

/// Runs `opamp package verify`.
pub(crate) fn run(args: &VerifyArgs) -> Result<(), CommandError> {
    let mut keys = KeyRing::new();
    for path in &args.public_keys {
        let pem = read_text(path, "public key")?;
        let key = PublicKey::from_spki_pem(&pem).or_fail(Failure::Operation, || {
            format!("cannot use {} as a trusted key", path.display())
        })?;
        keys.trust(TrustedKey::new(key));
    }
    for key_id in &args.revoked {
        keys.revoke(*key_id);
    }
    let signature = read_bytes(&args.sig, "signature")?;
    let (name, version) = offered_name_and_version(args, &signature)?;
    let hashed = hash_file(&args.file)?;

    let policy = TrustPolicy::new(keys).allow_compatible_mode(args.allow_compatible);
    let mut context = VerificationContext::new(SystemTime::now());
    if let Some(highest) = &args.highest_installed {
        context = context.with_highest_installed(highest.clone());
    }
    // The offer carries the file's hash, as a server that computed it would send.
    let file_hash = hashed.hash();
    let offer = PackageToVerify::new(&name, &version, file_hash.as_bytes(), &signature);
    let verified = policy
        .verify_offer(&offer, &context)
        .and_then(|approved| approved.accept_hashed(hashed))
        .map_err(|error| refusal(error, &name, &version, args))?;

    if args.json {
        let summary = serde_json::json!({
            "verified": true,
            "name": verified.name(),
            "version": verified.version().to_string(),
            "sha256": verified.content_hash().to_string(),
            "size": verified.size(),
            "signed_by": verified.provenance().to_string(),
            "downgrade_authorised": verified.downgrade_authorised(),
        });
        return crate::output::line(crate::cmd::json::to_json(&summary)?);
    }
    let mut summary = format!(
        "verified:    {} {}\nsha256:      {}\nsize:        {}\nsigned by:   {}",
        verified.name(),
        verified.version(),
        verified.content_hash(),
        verified.size(),
        verified.provenance()
    );
    if verified.downgrade_authorised() {
        summary.push_str("\ndowngrade:   authorised by the signed statement");
    }
    crate::output::line(summary)
}

fn parse_key_id(text: &str) -> Result<KeyId, String> {
    text.parse().map_err(|e: VerifyError| e.to_string())
}

/// The name and version to check: the flags, else the signed statement's.
fn offered_name_and_version(
    args: &VerifyArgs,
    signature: &[u8],
) -> Result<(String, String), CommandError> {
    if let (Some(name), Some(version)) = (&args.name, &args.version) {
        return Ok((name.clone(), version.clone()));
    }
    if !SignatureEnvelope::is_envelope(signature) {
        return Err(CommandError::operation(anyhow::anyhow!(
            "{} is not a signed statement, so it names no package: pass --name and --version",
            args.sig.display()
        )));
    }
    let envelope = SignatureEnvelope::parse(signature).map_err(|error| {
        CommandError::new(
            classify(&error),
            anyhow::Error::new(error).context(format!("refused {}", args.sig.display())),
        )
    })?;
    let statement = envelope.statement();
    Ok((
        args.name
            .clone()
            .unwrap_or_else(|| statement.name().to_owned()),
        args.version
            .clone()
            .unwrap_or_else(|| statement.version().to_owned()),
    ))
}

fn refusal(error: VerifyError, name: &str, version: &str, args: &VerifyArgs) -> CommandError {
    let failure = classify(&error);
    let hint = match error {
        VerifyError::CompatibleModeDisabled { .. } => " (--allow-compatible accepts it)",
        _ => "",
    };
    let headline = match failure {
        Failure::Refused => format!(
            "refused {name} {version} ({}, signature {}){hint}",
            args.file.display(),
            args.sig.display()
        ),
        _ => format!("cannot verify {}", args.file.display()),
    };
    CommandError::new(failure, anyhow::Error::new(error).context(headline))
}
