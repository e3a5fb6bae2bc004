//! Progress on stderr: streaming SHA-256 of files with a bar for big ones, and spinners.

use std::fs::File;
use std::path::Path;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opamp_verify::{HashedContent, VerifyError, hash_reader};

use crate::failure::{CommandError, Failure, ResultExt as _};

/// Files at least this big get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: u64 = 64 * 1024 * 1024;

/// Hashes the file at `path` in one streaming pass.
pub(crate) fn hash_file(path: &Path) -> Result<HashedContent, CommandError> {
    let file = File::open(path).or_fail(Failure::Unreachable, || {
        format!("cannot open {}", path.display())
    })?;
    let len = file
        .metadata()
        .or_fail(Failure::Unreachable, || {
            format!("cannot read metadata of {}", path.display())
        })?
        .len();
    let bar = progress_bar(len, path);
    let hashed = hash_reader(bar.wrap_read(file), u64::MAX);
    bar.finish_and_clear();
    hashed.map_err(|error| {
        let failure = match error {
            VerifyError::Io { .. } => Failure::Unreachable,
            _ => Failure::Operation,
        };
        CommandError::new(
            failure,
            anyhow::Error::new(error).context(format!("cannot hash {}", path.display())),
        )
    })
}

/// A spinner on stderr (drawn only when stderr is a terminal) for work of unknown length.
pub(crate) fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    spinner.set_message(message);
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    spinner
}

fn progress_bar(len: u64, path: &Path) -> ProgressBar {
    if len < PROGRESS_THRESHOLD {
        return ProgressBar::hidden();
    }
    // The stderr target draws nothing when stderr is not a terminal, so pipes and logs stay clean.
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    bar.set_message(format!("hashing {name}"));
    bar
}
