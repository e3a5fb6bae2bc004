//! `opamp package hash`: SHA-256 of files, streaming.

use std::path::PathBuf;

use crate::failure::CommandError;
use crate::progress::hash_file;

/// Arguments of `opamp package hash`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Example:
  opamp package hash otelcol-contrib_0.115.0_linux_amd64.tar.gz

Prints `<sha256 hex>  <file>` per file, the format `sha256sum -c` reads. Files of 64 MiB or
more show a progress bar when stderr is a terminal.")]
pub(crate) struct HashArgs {
    /// Files to hash.
    #[arg(required = true, value_name = "FILE")]
    pub(crate) files: Vec<PathBuf>,

    /// Print `[{"file", "sha256", "size"}]` as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Runs `opamp package hash`.
pub(crate) fn run(args: &HashArgs) -> Result<(), CommandError> {
    let mut hashes = Vec::new();
    for path in &args.files {
        let hashed = hash_file(path)?;
        if args.json {
            hashes.push(serde_json::json!({
                "file": path,
                "sha256": hashed.hash().to_string(),
                "size": hashed.len(),
            }));
        } else {
            crate::output::line(format_args!("{}  {}", hashed.hash(), path.display()))?;
        }
    }
    if args.json {
        crate::output::line(crate::cmd::json::to_json(&hashes)?)?;
    }
    Ok(())
}
