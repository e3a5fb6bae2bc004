//! How a command fails: the exit code category plus an error with its cause chain.

use std::fmt::Write as _;
use std::process::ExitCode;

/// Why a command failed, which decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Exit 1: the operation could not be done (bad input file, refused by the server, ...).
    Operation,
    /// Exit 3: a signature, hash or policy check refused the package.
    Refused,
    /// Exit 4: the server could not be reached, or reading or writing a file failed.
    Unreachable,
}

impl Failure {
    /// The process exit code for this category.
    pub(crate) fn exit_code(self) -> ExitCode {
        ExitCode::from(match self {
            Self::Operation => 1,
            Self::Refused => 3,
            Self::Unreachable => 4,
        })
    }
}

/// A failed command: what went wrong (with causes) and which exit code it maps to.
#[derive(Debug)]
pub(crate) struct CommandError {
    failure: Failure,
    error: anyhow::Error,
}

impl CommandError {
    /// A failure of category `failure`.
    pub(crate) fn new(failure: Failure, error: impl Into<anyhow::Error>) -> Self {
        Self {
            failure,
            error: error.into(),
        }
    }

    /// Exit 1.
    pub(crate) fn operation(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Failure::Operation, error)
    }

    /// Exit 4.
    pub(crate) fn io(error: impl Into<anyhow::Error>) -> Self {
        Self::new(Failure::Unreachable, error)
    }

    /// The exit code category.
    pub(crate) fn failure(&self) -> Failure {
        self.failure
    }

    /// One line for the error, then one `caused by:` line per cause, no backtrace.
    pub(crate) fn report(&self) -> String {
        let mut out = format!("error: {}\n", self.error);
        for cause in self.error.chain().skip(1) {
            // Writing to a String cannot fail.
            let _ = writeln!(out, "  caused by: {cause}");
        }
        out
    }
}

/// Adds context to a failure and picks its exit code category.
pub(crate) trait ResultExt<T> {
    /// On error: wrap it with `context` and give it category `failure`.
    fn or_fail<C>(self, failure: Failure, context: impl FnOnce() -> C) -> Result<T, CommandError>
    where
        C: std::fmt::Display + Send + Sync + 'static;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn or_fail<C>(self, failure: Failure, context: impl FnOnce() -> C) -> Result<T, CommandError>
    where
        C: std::fmt::Display + Send + Sync + 'static,
    {
        self.map_err(|error| {
            CommandError::new(failure, anyhow::Error::new(error).context(context()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_lists_every_cause_on_its_own_line() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error: Result<(), _> = Err(io);
        let report = error
            .or_fail(Failure::Unreachable, || "cannot read release.key")
            .unwrap_err();
        assert_eq!(report.failure(), Failure::Unreachable);
        assert_eq!(
            report.report(),
            "error: cannot read release.key\n  caused by: no such file\n"
        );
    }
}
