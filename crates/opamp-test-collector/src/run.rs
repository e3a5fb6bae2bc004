//! The collector's main loop: crash, serve, wait for a signal or the scripted crash time.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::health_server::{self, HealthState};
use crate::settings::Settings;
use crate::variant::{EXIT_CODE_CRASH_LATER, EXIT_CODE_CRASH_ON_START};

/// Writes a line to stdout, ignoring errors: after its supervisor dies the pipe is broken, and
/// a collector must keep running (and keep its scripted behaviour) rather than panic.
macro_rules! say_out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Like `say_out!`, for stderr.
macro_rules! say_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Exit code when the health port cannot be bound or signals cannot be set up.
pub const EXIT_CODE_SETUP_FAILED: i32 = 1;
/// Exit code when the config file has a top-level `fail_with: <reason>` key.
pub const EXIT_CODE_CONFIG_REFUSED: i32 = 5;

/// Runs the collector until SIGTERM/SIGINT (exit 0) or a scripted crash; returns the exit code.
pub fn run(settings: Settings) -> i32 {
    let Settings {
        variant,
        health_port,
        config_path,
        config_text,
    } = settings;
    let behaviour = &variant.behaviour;
    let name = format!("opamp-test-collector {}", variant.version);
    if behaviour.crash_on_start {
        say_err!("{name}: crashing on start as configured");
        return EXIT_CODE_CRASH_ON_START;
    }
    // Like a collector that rejects its config: the reason is the last line on stderr.
    if let Some(reason) = config_text.as_deref().and_then(fail_with_from_config) {
        say_err!("{reason}");
        return EXIT_CODE_CONFIG_REFUSED;
    }
    let started = Instant::now();
    let (signal_tx, signal_rx) = mpsc::channel();
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            say_err!("{name}: cannot install signal handlers: {e}");
            return EXIT_CODE_SETUP_FAILED;
        }
    };
    thread::spawn(move || {
        for signal in signals.forever() {
            if signal_tx.send(signal).is_err() {
                break;
            }
        }
    });
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, health_port)) {
        Ok(l) => l,
        Err(e) => {
            say_err!("{name}: cannot bind health endpoint 127.0.0.1:{health_port}: {e}");
            return EXIT_CODE_SETUP_FAILED;
        }
    };
    let state = Arc::new(HealthState {
        started,
        unhealthy_after: behaviour.unhealthy_after_ms.map(Duration::from_millis),
        version: variant.version.clone(),
        config_text,
    });
    health_server::serve(listener, state);
    let config = config_path.map_or_else(|| "none".to_owned(), |p| p.display().to_string());
    say_out!("{name} started; health endpoint http://127.0.0.1:{health_port}/ ; config {config}");
    say_err!(
        "{name}: behaviour {}",
        serde_json::to_string(behaviour).unwrap_or_default()
    );

    let crash_at = behaviour
        .crash_after_ms
        .map(|ms| started + Duration::from_millis(ms));
    loop {
        let received = match crash_at {
            Some(at) => {
                match signal_rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(signal) => signal,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        say_err!(
                            "{name}: crashing after {:?} as configured",
                            started.elapsed()
                        );
                        return EXIT_CODE_CRASH_LATER;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return EXIT_CODE_SETUP_FAILED,
                }
            }
            None => match signal_rx.recv() {
                Ok(signal) => signal,
                Err(_) => return EXIT_CODE_SETUP_FAILED,
            },
        };
        if received == SIGTERM && behaviour.hang_on_sigterm {
            say_err!("{name}: ignoring SIGTERM as configured");
            continue;
        }
        say_out!("{name} received signal {received}; shutting down");
        return 0;
    }
}

/// The value of a top-level `fail_with:` line, without quotes (no YAML parser on purpose: the
/// test collector stays tiny).
pub fn fail_with_from_config(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix("fail_with:")?.trim();
        let unquoted = value
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| value.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(value);
        (!unquoted.is_empty()).then(|| unquoted.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::fail_with_from_config;

    #[test]
    fn fail_with_is_read_from_a_top_level_line_only() {
        assert_eq!(
            fail_with_from_config("receivers: {}\nfail_with: 'bad: exporter'\n").as_deref(),
            Some("bad: exporter")
        );
        assert_eq!(
            fail_with_from_config("fail_with: \"x\"").as_deref(),
            Some("x")
        );
        assert_eq!(fail_with_from_config("a:\n  fail_with: nested\n"), None);
        assert_eq!(fail_with_from_config("receivers: {}\n"), None);
    }
}
