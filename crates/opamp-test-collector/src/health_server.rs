//! A minimal HTTP/1.1 health endpoint, shaped like the collector's `health_check` extension.
//!
//! `GET /` and `GET /health` answer 200 `{"status":"Server available"}` while healthy and 503
//! `{"status":"Server not available"}` after the scripted unhealthy time. `GET /version` returns
//! the reported version and `GET /config` the `--config` file as given. One short-lived thread
//! per connection; every response closes the connection.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest request head we read; health checks are tiny.
const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoint reports.
#[derive(Debug)]
pub struct HealthState {
    /// When the collector started; the unhealthy delay counts from here.
    pub started: Instant,
    /// Turn unhealthy this long after `started`.
    pub unhealthy_after: Option<Duration>,
    /// Reported by `/version`.
    pub version: String,
    /// Reported by `/config`.
    pub config_text: Option<String>,
}

impl HealthState {
    /// Whether the collector reports itself healthy at `now`.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.unhealthy_after
            .is_none_or(|after| now.duration_since(self.started) < after)
    }
}

/// Serves health requests on `listener` from a background thread until the process exits.
pub fn serve(listener: TcpListener, state: Arc<HealthState>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let state = Arc::clone(&state);
            thread::spawn(move || {
                // A client that hangs up mid-request is its own problem; nothing to report.
                let _ = answer(stream, &state);
            });
        }
    })
}

fn answer(stream: TcpStream, state: &HealthState) -> io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the header block so the client sees a clean close.
    let mut head_len = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        head_len += n;
        if n == 0 || line == "\r\n" || line == "\n" || head_len > MAX_REQUEST_HEAD {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body) = match (method, path) {
        ("GET", "/" | "/health" | "/health/status") => {
            if state.is_healthy(Instant::now()) {
                ("200 OK", r#"{"status":"Server available"}"#.to_owned())
            } else {
                (
                    "503 Service Unavailable",
                    r#"{"status":"Server not available"}"#.to_owned(),
                )
            }
        }
        ("GET", "/version") => (
            "200 OK",
            serde_json::json!({ "version": state.version }).to_string(),
        ),
        ("GET", "/config") => match &state.config_text {
            Some(text) => ("200 OK", text.clone()),
            None => (
                "404 Not Found",
                r#"{"error":"started without --config"}"#.to_owned(),
            ),
        },
        ("GET", _) => ("404 Not Found", r#"{"error":"not found"}"#.to_owned()),
        _ => (
            "405 Method Not Allowed",
            r#"{"error":"only GET"}"#.to_owned(),
        ),
    };
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}
