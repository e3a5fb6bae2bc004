//! Forwards the collector's stdout and stderr, line by line, into `tracing`.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

/// Longer lines are split: a runaway collector must not grow the supervisor's memory.
const MAX_LINE_BYTES: u64 = 16 * 1024;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    Stdout,
    Stderr,
}

/// Logs every line of `reader` until end of file, tagged with the agent name and pid.
pub(super) async fn forward_lines(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    agent: String,
    pid: u32,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE_BYTES)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                match stream {
                    Stream::Stdout => {
                        tracing::info!(agent = %agent, pid, stream = "stdout", "{text}")
                    }
                    Stream::Stderr => {
                        tracing::info!(agent = %agent, pid, stream = "stderr", "{text}")
                    }
                }
            }
            Err(e) => {
                tracing::warn!(agent = %agent, pid, ?stream, error = %e, "cannot read collector output");
                break;
            }
        }
    }
}
