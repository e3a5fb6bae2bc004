//! Forwards the collector's stdout and stderr, line by line, into `tracing`.

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::watch;

use super::StderrLine;
use crate::report::ErrorReport;

/// Longer lines are split: a runaway collector must not grow the supervisor's memory.
const MAX_LINE_BYTES: u64 = 16 * 1024;

/// Which output stream a line came from; stderr keeps its last line for error reports.
#[derive(Debug, Clone)]
pub(super) enum Stream {
    Stdout,
    Stderr(watch::Sender<Option<StderrLine>>),
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
                match &stream {
                    Stream::Stdout => {
                        tracing::info!(agent = %agent, pid, stream = "stdout", "{text}")
                    }
                    Stream::Stderr(tail) => {
                        tracing::info!(agent = %agent, pid, stream = "stderr", "{text}");
                        if !text.trim().is_empty() {
                            tail.send_replace(Some(StderrLine {
                                pid,
                                line: text.to_owned(),
                            }));
                        }
                    }
                }
            }
            Err(e) => {
                let stream = match &stream {
                    Stream::Stdout => "stdout",
                    Stream::Stderr(_) => "stderr",
                };
                tracing::warn!(agent = %agent, pid, stream, error = %ErrorReport(&e), "cannot read collector output");
                break;
            }
        }
    }
}
