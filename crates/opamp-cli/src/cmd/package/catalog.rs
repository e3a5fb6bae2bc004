//! `opamp package add|list`: the server's package catalog.

use std::path::PathBuf;

use crate::cmd::{AdminConnection, not_available, parse_version};
use crate::failure::CommandError;

/// Arguments of `opamp package add`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp package add otelcol-1.1.0 --name otelcol --version 1.1.0 \\
      --signature otelcol-1.1.0.sig --server http://127.0.0.1:4321 --token \"$TOKEN\"

The server stores the file and relays the signature; it never needs the release private key.")]
pub(crate) struct AddArgs {
    /// The package file (raw executable or .tar.gz release archive).
    pub(crate) file: PathBuf,

    /// Package name agents see (the PackagesAvailable key).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: String,

    /// Package version.
    #[arg(long, value_name = "V", value_parser = parse_version)]
    pub(crate) version: semver::Version,

    /// Signature file made by `opamp package sign`.
    #[arg(long, value_name = "FILE")]
    pub(crate) signature: PathBuf,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Arguments of `opamp package list`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Example:\n  opamp package list --server http://127.0.0.1:4321 --json")]
pub(crate) struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,

    #[command(flatten)]
    pub(crate) connection: AdminConnection,
}

/// Runs `opamp package add`.
pub(crate) fn add(args: &AddArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "package add requested");
    Err(not_available(
        "package add",
        "the opamp-fleet admin API client (POST /packages)",
    ))
}

/// Runs `opamp package list`.
pub(crate) fn list(args: &ListArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "package list requested");
    Err(not_available(
        "package list",
        "the opamp-fleet admin API client (GET /packages)",
    ))
}
