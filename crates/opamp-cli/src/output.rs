//! Writing results to stdout and notes to stderr without panicking on closed pipes
//! (`opamp package hash big.tar.gz | head -c 64` must not end in a panic).

use std::io::{self, Write as _};

use crate::failure::{CommandError, Failure, ResultExt as _};

/// Writes `text` and a newline to stdout. A reader that went away (broken pipe) is not an
/// error: nobody is left to read the result.
pub(crate) fn line(text: impl std::fmt::Display) -> Result<(), CommandError> {
    let mut stdout = io::stdout().lock();
    match writeln!(stdout, "{text}").and_then(|()| stdout.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.or_fail(Failure::Unreachable, || "cannot write to stdout"),
    }
}

/// Writes `text` to stderr; a failure to do so has nowhere to be reported and is ignored.
pub(crate) fn note(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}
