//! `opamp package`: release-side keys, signatures and hashes, and the server's catalog.

mod catalog;
pub(crate) mod files;
mod hash;
mod keygen;
mod refusal;
mod sign;
mod verify;

use clap::Subcommand;

use crate::failure::CommandError;

const AFTER_HELP: &str = "\
Example (release side, on an offline machine):
  opamp package keygen --scheme ed25519 --out keys/
  opamp package sign otelcol-1.1.0 --key keys/release.key --name otelcol --version 1.1.0 \\
      --expires-in 90d --out otelcol-1.1.0.sig
  opamp package verify otelcol-1.1.0 --sig otelcol-1.1.0.sig --pub keys/release.pub
  opamp package add otelcol-1.1.0 --name otelcol --version 1.1.0 --signature otelcol-1.1.0.sig";

/// Arguments of `opamp package`.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub(crate) struct PackageArgs {
    #[command(subcommand)]
    pub(crate) command: PackageCommand,
}

/// `opamp package` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PackageCommand {
    /// Create a release signing key pair (keep the private key offline).
    Keygen(keygen::KeygenArgs),
    /// Sign a package file: a signed statement (default) or a compatible-mode signature.
    Sign(sign::SignArgs),
    /// Check a package file and its signature exactly as a supervisor's trust policy would.
    Verify(verify::VerifyArgs),
    /// Print the SHA-256 of files (the OpAMP content_hash), streaming.
    Hash(hash::HashArgs),
    /// Add a signed package file to the server's catalog.
    Add(catalog::AddArgs),
    /// List the packages in the server's catalog.
    List(catalog::ListArgs),
}

/// Runs `opamp package ...`.
pub(crate) fn run(args: PackageArgs) -> Result<(), CommandError> {
    match args.command {
        PackageCommand::Keygen(args) => keygen::run(&args),
        PackageCommand::Sign(args) => sign::run(&args),
        PackageCommand::Verify(args) => verify::run(&args),
        PackageCommand::Hash(args) => hash::run(&args),
        PackageCommand::Add(args) => catalog::add(&args),
        PackageCommand::List(args) => catalog::list(&args),
    }
}
