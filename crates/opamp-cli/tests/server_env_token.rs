//! Issue 22, finding 5: `OPAMP_ADMIN_TOKEN` in the server's environment (operators export it
//! for the CLI) must not become a hidden operator. It never adds to or overrides a configured
//! token; with nothing configured it is the `admin` operator's, said loudly at start; and
//! tokens are compared exactly, in the API and at the dashboard's sign-in.

#![allow(clippy::unwrap_used)] // Test helpers outside #[test] functions.

mod common;

use std::io::{Read as _, Write as _};

use common::{Workdir, spawn_server_with_env};

const ENV_TOKEN: &str = "token-from-the-environment";

/// Starts `opamp server` on loopback with `extra` arguments and `OPAMP_ADMIN_TOKEN` set;
/// returns it, its admin URL and its log so far.
fn server_with_env_token(
    work: &Workdir,
    extra: &[&str],
) -> (common::ServerProcess, String, String) {
    let log = work.path("server.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let mut args = vec!["server", "--data-dir", "data", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(&["--admin-listen", "127.0.0.1:0"]);
    args.extend_from_slice(extra);
    let (server, admin, _agents) = spawn_server_with_env(
        work,
        &args,
        &[("OPAMP_ADMIN_TOKEN", ENV_TOKEN)],
        stderr.into(),
    );
    // Logged before the listeners' line was printed.
    let log = std::fs::read_to_string(log).unwrap();
    (server, admin, log)
}

/// Exit code of `opamp agents list` against `admin` with `token`.
fn list_agents(work: &Workdir, admin: &str, token: &str) -> i32 {
    work.opamp(&["agents", "list", "--server", admin, "--token", token])
        .code
}

#[test]
fn the_environment_token_never_adds_to_a_configured_token_file() {
    let work = Workdir::new();
    work.write("admin.token", b"file-token\n");
    let (_server, admin, log) =
        server_with_env_token(&work, &["--admin-token-file", "admin.token"]);
    assert_eq!(
        list_agents(&work, &admin, "file-token"),
        0,
        "the file's token (newline stripped)"
    );
    assert_eq!(
        list_agents(&work, &admin, ENV_TOKEN),
        1,
        "the environment's token was let in"
    );
    assert!(
        log.contains("OPAMP_ADMIN_TOKEN is set in the server's environment and ignored"),
        "{log}"
    );
}

#[test]
fn with_nothing_configured_the_environment_token_is_the_admin_operator_said_loudly() {
    let work = Workdir::new();
    let (_server, admin, log) = server_with_env_token(&work, &[]);
    assert!(log.contains("WARN"), "{log}");
    assert!(
        log.contains("operator=\"admin\"") || log.contains("operator=admin"),
        "{log}"
    );
    assert!(log.contains("OPAMP_ADMIN_TOKEN"), "{log}");
    assert_eq!(list_agents(&work, &admin, ENV_TOKEN), 0);
}

/// Posts the dashboard's sign-in form with `token` (form-encoded) and returns the status line.
fn dashboard_sign_in(admin: &str, token_form_value: &str) -> String {
    let authority = admin.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(15)))
        .unwrap();
    let body = format!("token={token_form_value}");
    write!(
        stream,
        "POST /ui/login HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn tokens_are_compared_exactly_and_padded_ones_refused_at_start() {
    let work = Workdir::new();
    let (_server, admin, _log) = server_with_env_token(&work, &["--admin-token", "exact-token"]);
    let signed_in = dashboard_sign_in(&admin, "exact-token");
    assert!(!signed_in.contains(" 401 "), "{signed_in}");
    let padded = dashboard_sign_in(&admin, "+exact-token+");
    assert!(
        padded.contains(" 401 "),
        "a padded token signed in: {padded}"
    );
    assert_eq!(list_agents(&work, &admin, ENV_TOKEN), 1);

    let refused = work.opamp(&[
        "server",
        "--data-dir",
        "other",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token",
        " spaced ",
    ]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("whitespace"), "{}", refused.stderr);
}
