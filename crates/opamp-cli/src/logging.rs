//! Logging to stderr through `tracing`, as text or JSON lines, filtered by `RUST_LOG` or `-v`.

use std::io::{IsTerminal as _, Write};

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// How much a command logs before any `-v`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BaseLevel {
    /// Long-running services (server, supervisor, demo): `info`.
    Service,
    /// One-shot tools: `error`, since their failures are already reported on stderr.
    Tool,
}

/// The filter directive for `base` raised by `verbosity` steps of `-v`.
fn level(base: BaseLevel, verbosity: u8) -> &'static str {
    const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
    let start = match base {
        BaseLevel::Tool => 0,
        BaseLevel::Service => 2,
    };
    LEVELS[(start + usize::from(verbosity)).min(LEVELS.len() - 1)]
}

/// Installs the global subscriber. `RUST_LOG` wins over `-v` when it is set.
pub(crate) fn init(format: LogFormat, base: BaseLevel, verbosity: u8) -> anyhow::Result<()> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(directives)?,
        _ => EnvFilter::new(level(base, verbosity)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!(e))
}

/// Standard error that never fails: with its reader gone (`opamp server 2>&1 | head -3`),
/// a log line is dropped instead of reaching tracing-subscriber's error path, which reports
/// the failed write with `eprintln!` and so panics on the same closed stderr.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_raises_the_level_and_saturates() {
        assert_eq!(level(BaseLevel::Tool, 0), "error");
        assert_eq!(level(BaseLevel::Tool, 2), "info");
        assert_eq!(level(BaseLevel::Service, 0), "info");
        assert_eq!(level(BaseLevel::Service, 1), "debug");
        assert_eq!(level(BaseLevel::Service, 9), "trace");
    }
}
