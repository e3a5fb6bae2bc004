//! `opamp package keygen`: a release signing key pair.

use std::path::PathBuf;

use opamp_verify::{ReleaseSigner, Scheme};

use super::files::{write_private, write_public};
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::output;

/// File name of the private key inside `--out`.
pub(super) const PRIVATE_KEY_FILE: &str = "release.key";
/// File name of the public key inside `--out`.
pub(super) const PUBLIC_KEY_FILE: &str = "release.pub";

/// Signature schemes as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum SchemeArg {
    /// Ed25519 (small keys, fast, recommended).
    Ed25519,
    /// RSA-PSS with SHA-256.
    #[value(alias = "rsa-pss-sha256")]
    RsaPss,
    /// RSA PKCS#1 v1.5 with SHA-256 (also the only scheme compatible mode uses).
    #[value(alias = "rsa-pkcs1v15-sha256")]
    RsaPkcs1,
}

impl From<SchemeArg> for Scheme {
    fn from(scheme: SchemeArg) -> Self {
        match scheme {
            SchemeArg::Ed25519 => Scheme::Ed25519,
            SchemeArg::RsaPss => Scheme::RsaPssSha256,
            SchemeArg::RsaPkcs1 => Scheme::RsaPkcs1v15Sha256,
        }
    }
}

/// Arguments of `opamp package keygen`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp package keygen --scheme ed25519 --out keys/
  opamp package keygen --scheme rsa-pss --bits 4096 --out keys/

Writes DIR/release.key (PKCS#8 PEM, mode 0600: keep it offline) and DIR/release.pub (SPKI PEM:
give it to supervisors), and prints the key id (SHA-256 of the public key's DER) on stdout.
RSA keys are written without a scheme: pass the same --scheme to `opamp package sign`.")]
pub(crate) struct KeygenArgs {
    /// Signature scheme the key is for.
    #[arg(long, value_enum, default_value_t = SchemeArg::Ed25519)]
    scheme: SchemeArg,

    /// RSA modulus size (RSA schemes only; at least 2048).
    #[arg(long, value_name = "BITS", value_parser = clap::value_parser!(u32).range(2048..=16384))]
    bits: Option<u32>,

    /// Directory to write release.key and release.pub into (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,

    /// Replace existing key files.
    #[arg(long)]
    force: bool,

    /// Print the key id, scheme and file names as JSON.
    #[arg(long)]
    json: bool,
}

/// Default RSA modulus size.
const DEFAULT_RSA_BITS: u32 = 3072;

/// Runs `opamp package keygen`.
pub(crate) fn run(args: &KeygenArgs) -> Result<(), CommandError> {
    let scheme = Scheme::from(args.scheme);
    let signer = match args.scheme {
        SchemeArg::Ed25519 => {
            if args.bits.is_some() {
                return Err(CommandError::operation(anyhow::anyhow!(
                    "--bits applies to RSA keys only; Ed25519 keys have a fixed size"
                )));
            }
            ReleaseSigner::generate_ed25519()
        }
        SchemeArg::RsaPss | SchemeArg::RsaPkcs1 => {
            let bits = args.bits.unwrap_or(DEFAULT_RSA_BITS);
            let spinner = crate::progress::spinner(format!("generating a {bits}-bit RSA key"));
            let signer = ReleaseSigner::generate_rsa(bits as usize, scheme);
            spinner.finish_and_clear();
            signer
        }
    }
    .or_fail(Failure::Operation, || {
        format!("cannot generate a {scheme} key")
    })?;

    let private_pem = signer
        .to_pkcs8_pem()
        .or_fail(Failure::Operation, || "cannot encode the private key")?;
    let public_pem = signer
        .public_key()
        .to_spki_pem()
        .or_fail(Failure::Operation, || "cannot encode the public key")?;

    std::fs::create_dir_all(&args.out).or_fail(Failure::Unreachable, || {
        format!("cannot create directory {}", args.out.display())
    })?;
    let private_path = args.out.join(PRIVATE_KEY_FILE);
    let public_path = args.out.join(PUBLIC_KEY_FILE);
    if !args.force {
        // Check both first so a refusal never leaves a half-written pair behind.
        for path in [&private_path, &public_path] {
            if path.exists() {
                return Err(CommandError::operation(anyhow::anyhow!(
                    "{} already exists; pass --force to replace it",
                    path.display()
                )));
            }
        }
    }
    write_private(&private_path, private_pem.as_bytes(), args.force)?;
    write_public(&public_path, public_pem.as_bytes(), args.force)?;

    if args.json {
        let written = serde_json::json!({
            "key_id": signer.key_id().to_string(),
            "scheme": scheme.to_string(),
            "private_key": private_path,
            "public_key": public_path,
        });
        return output::line(crate::cmd::json::to_json(&written)?);
    }
    output::note(format_args!(
        "wrote {} (private key, mode 0600): keep it offline",
        private_path.display()
    ));
    output::note(format_args!(
        "wrote {} (public key): put it in the supervisors' trusted keys",
        public_path.display()
    ));
    output::note(format_args!("scheme {scheme}, key id:"));
    output::line(signer.key_id())
}
