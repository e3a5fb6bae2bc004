//! One line for an error and every cause behind it.
//!
//! The supervisor's error types follow the convention that a `Display` says what failed and
//! leaves the cause to [`source()`](std::error::Error::source), so a caller that walks the chain
//! (the `opamp` CLI, `anyhow`'s `{:#}`) prints each cause once. Where the supervisor itself turns
//! an error into text (a status message for the server, a log field), it uses [`ErrorReport`] so
//! the root cause (the OS error behind "cannot reach ...") is never dropped.

use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its causes, separated by `": "`.
///
/// ```
/// use opamp_supervisor::report::ErrorReport;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot read the journal")]
/// struct Outer(#[source] std::io::Error);
///
/// let error = Outer(std::io::Error::other("disk on fire"));
/// assert_eq!(ErrorReport(&error).to_string(), "cannot read the journal: disk on fire");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorReport<'a>(pub &'a dyn Error);

impl fmt::Display for ErrorReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            write!(f, ": {error}")?;
            cause = error.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorReport;
    use crate::download::DownloadError;
    use crate::install::InstallError;
    use std::io;

    #[test]
    fn each_cause_is_printed_once_down_to_the_os_error() {
        let error = InstallError::Download(DownloadError::Io {
            action: "write",
            path: "/var/lib/opamp/downloads/otelcol.download".into(),
            source: io::Error::from_raw_os_error(28),
        });
        let text = ErrorReport(&error).to_string();
        assert!(
            text.starts_with(
                "download failed: cannot write /var/lib/opamp/downloads/otelcol.download: "
            ),
            "{text}"
        );
        assert!(text.contains("No space left on device"), "{text}");
        assert_eq!(text.matches("No space left").count(), 1, "{text}");
        assert!(
            !error.to_string().contains("No space"),
            "Display repeats its source"
        );
    }
}
