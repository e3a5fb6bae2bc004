//! Reading inputs and writing outputs of the package commands, with file names in every error.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use crate::failure::{CommandError, Failure, ResultExt as _};

/// Reads a whole (small) text file such as a PEM key.
pub(crate) fn read_text(path: &Path, what: &str) -> Result<String, CommandError> {
    fs::read_to_string(path).or_fail(Failure::Unreachable, || {
        format!("cannot read {what} {}", path.display())
    })
}

/// Reads a whole (small) binary file such as a signature.
pub(super) fn read_bytes(path: &Path, what: &str) -> Result<Vec<u8>, CommandError> {
    fs::read(path).or_fail(Failure::Unreachable, || {
        format!("cannot read {what} {}", path.display())
    })
}

/// Writes `contents` to a new file at `path` readable by its owner only (mode 0600), refusing
/// to replace an existing file unless `replace`.
pub(super) fn write_private(
    path: &Path,
    contents: &[u8],
    replace: bool,
) -> Result<(), CommandError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    if replace {
        // A fresh file gets the 0600 mode; truncating an old one would keep its mode.
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CommandError::io(
                    anyhow::Error::new(e).context(format!("cannot replace {}", path.display())),
                ));
            }
        }
    }
    let mut file = options.open(path).or_fail(Failure::Unreachable, || {
        format!("cannot create {}", path.display())
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .or_fail(Failure::Unreachable, || {
            format!("cannot write {}", path.display())
        })
}

/// Writes `contents` to `path`, refusing to replace an existing file unless `replace`.
pub(crate) fn write_public(
    path: &Path,
    contents: &[u8],
    replace: bool,
) -> Result<(), CommandError> {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).or_fail(Failure::Unreachable, || {
        format!("cannot create {}", path.display())
    })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .or_fail(Failure::Unreachable, || {
            format!("cannot write {}", path.display())
        })
}
