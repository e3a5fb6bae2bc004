//! `opamp package add|list`: the server's package catalog.

use std::path::PathBuf;

use crate::cmd::{AdminConnection, fleet_error, parse_version, runtime, table};
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::output;

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

    /// Print the catalog entry as JSON.
    #[arg(long)]
    pub(crate) json: bool,

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

/// Runs `opamp package add`: uploads the file with its signature through the admin API.
pub(crate) fn add(args: &AddArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "package add requested");
    let signature = std::fs::read(&args.signature).or_fail(Failure::Unreachable, || {
        format!("cannot read signature file {}", args.signature.display())
    })?;
    let client = args.connection.client()?;
    let version = args.version.to_string();
    let entry = runtime()?
        .block_on(client.add_package(&args.file, &args.name, &version, &signature))
        .map_err(|e| {
            fleet_error(
                e,
                format!(
                    "cannot add {} as {} {version}",
                    args.file.display(),
                    args.name
                ),
            )
        })?;
    if args.json {
        return output::line(crate::cmd::json::to_json(&entry)?);
    }
    output::line(format_args!(
        "added {} {} ({} bytes, sha256 {})",
        entry.name,
        entry.version,
        entry.size,
        hex(&entry.content_hash)
    ))
}

/// Runs `opamp package list`.
pub(crate) fn list(args: &ListArgs) -> Result<(), CommandError> {
    tracing::debug!(?args, "package list requested");
    let client = args.connection.client()?;
    let packages = runtime()?
        .block_on(client.packages())
        .map_err(|e| fleet_error(e, "cannot list the packages"))?;
    if args.json {
        return output::line(crate::cmd::json::to_json(&packages)?);
    }
    let rows: Vec<Vec<String>> = packages
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.version.clone(),
                p.size.to_string(),
                hex(&p.content_hash),
                crate::cmd::json::ago(p.added_at),
                p.added_by.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    output::line(table::render(
        &["NAME", "VERSION", "SIZE", "SHA256", "ADDED", "BY"],
        &rows,
    ))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
