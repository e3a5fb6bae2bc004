//! The command frame: help texts, usage errors, exit codes, logging, unreachable servers.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::Workdir;

/// Every command path that has its own `--help`.
const COMMANDS: &[&[&str]] = &[
    &[],
    &["server"],
    &["supervisor"],
    &["agents"],
    &["agents", "list"],
    &["agents", "show"],
    &["agents", "restart"],
    &["package"],
    &["package", "keygen"],
    &["package", "sign"],
    &["package", "verify"],
    &["package", "hash"],
    &["package", "add"],
    &["package", "list"],
    &["rollout"],
    &["rollout", "start"],
    &["rollout", "status"],
    &["rollout", "pause"],
    &["rollout", "resume"],
    &["rollout", "abort"],
    &["rollout", "list"],
    &["demo"],
];

#[test]
fn every_command_help_shows_an_example() {
    let work = Workdir::new();
    for path in COMMANDS {
        let mut args = path.to_vec();
        args.push("--help");
        let run = work.opamp(&args).expect_code(0);
        assert!(
            run.stdout.contains("Example"),
            "`opamp {}` has no example:\n{}",
            args.join(" "),
            run.stdout
        );
        // The example must show this very command.
        let invocation = format!("opamp {}", path.join(" "));
        assert!(
            run.stdout.contains(invocation.trim_end()),
            "`opamp {}` example does not show `{invocation}`:\n{}",
            args.join(" "),
            run.stdout
        );
    }
}

#[test]
fn top_level_help_documents_exit_codes() {
    let run = Workdir::new().opamp(&["--help"]).expect_code(0);
    for line in [
        "0  success",
        "1  the operation failed",
        "2  usage error",
        "3  verification refused",
        "4  cannot reach the server",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let work = Workdir::new();
    for args in [
        &["package", "hash", "x", "--no-such-flag"][..],
        &["no-such-command"],
        &["rollout", "start", "--package", "otelcol"],
        &[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.0.0",
            "--canary-share",
            "2",
        ],
        &[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.0",
        ],
        &[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.0.0",
            "--batches",
            "3",
            "--batch-size",
            "10",
        ],
        &[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.0.0",
            "--bake-time",
            "soon",
        ],
        &[
            "package",
            "sign",
            "f",
            "--key",
            "k",
            "--compatible",
            "--version",
            "1.0.0",
        ],
        &["package", "keygen", "--out", "k", "--scheme", "dsa"],
        &["--log-format", "xml", "demo"],
        &["demo", "--agents", "0"],
    ] {
        let run = work.opamp(args);
        assert_eq!(
            run.code,
            2,
            "`opamp {}` exited {}:\n{}",
            args.join(" "),
            run.code,
            run.stderr
        );
        assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    }
    // A missing subcommand prints the help (with its usage line) and is a usage error too.
    let run = work.opamp(&["package"]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("Usage: opamp package"),
        "{}",
        run.stderr
    );
}

/// A loopback URL nothing listens on (the port was free a moment ago).
fn closed_admin_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

#[test]
fn operator_commands_without_a_reachable_server_exit_4() {
    let work = Workdir::new();
    work.write("f", b"x");
    work.write("f.sig", b"x");
    let url = closed_admin_url();
    let connection = ["--server", url.as_str(), "--token", "t"];
    let commands: [&[&str]; 10] = [
        &["agents", "list", "--selector", "env=prod"],
        &[
            "package",
            "add",
            "f",
            "--name",
            "otelcol",
            "--version",
            "1.0.0",
            "--signature",
            "f.sig",
        ],
        &["package", "list"],
        &[
            "rollout",
            "start",
            "--package",
            "otelcol",
            "--version",
            "1.1.0",
            "--selector",
            "env=prod",
            "--canary-share",
            "0.1",
            "--batches",
            "3",
            "--bake-time",
            "1m",
            "--health-timeout",
            "30s",
            "--install-timeout",
            "5m",
            "--failure-budget",
            "2",
            "--watch",
        ],
        &["rollout", "status", "7", "--watch"],
        &["rollout", "status", "7"],
        &["rollout", "pause", "7"],
        &["rollout", "resume", "7"],
        &["rollout", "abort", "7", "--reason", "bad"],
        &["rollout", "list"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.extend_from_slice(&connection);
        let run = work.opamp(&args).expect_code(4);
        assert!(
            run.stderr.starts_with("error: cannot ") && run.stderr.contains("caused by: "),
            "`opamp {}`:\n{}",
            args.join(" "),
            run.stderr
        );
    }
}

#[test]
fn operator_commands_without_a_token_exit_1_before_connecting() {
    let work = Workdir::new();
    for args in [
        &["agents", "list"][..],
        &["rollout", "list"],
        &["package", "list"],
    ] {
        let run = work.opamp(args).expect_code(1);
        assert!(
            run.stderr
                .contains("no admin token: pass --token or set OPAMP_ADMIN_TOKEN"),
            "{}",
            run.stderr
        );
    }
    // The token and URL also come from the environment.
    let url = closed_admin_url();
    work.opamp_with_env(
        &["rollout", "list"],
        &[
            ("OPAMP_ADMIN_TOKEN", "t"),
            ("OPAMP_ADMIN_URL", url.as_str()),
        ],
    )
    .expect_code(4);
}

#[test]
fn server_and_supervisor_report_bad_configuration() {
    let work = Workdir::new();
    let run = work.opamp(&["server"]).expect_code(1);
    assert!(run.stderr.contains("no data directory"), "{}", run.stderr);
    let run = work
        .opamp(&["server", "--data-dir", "data", "--listen", "127.0.0.1:0"])
        .expect_code(1);
    assert!(run.stderr.contains("admin"), "{}", run.stderr);
    let run = work
        .opamp(&["supervisor", "--config", "missing.yaml"])
        .expect_code(1);
    assert!(
        run.stderr.starts_with("error: cannot load missing.yaml"),
        "{}",
        run.stderr
    );
    work.write("supervisor.yaml", b"server: {}\n");
    let run = work
        .opamp(&["supervisor", "--config", "supervisor.yaml"])
        .expect_code(1);
    assert!(run.stderr.contains("caused by:"), "{}", run.stderr);
}

#[test]
fn rust_log_and_json_format_reach_stderr() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.write("otelcol", b"collector");
    work.opamp(&[
        "package",
        "sign",
        "otelcol",
        "--key",
        "keys/release.key",
        "--name",
        "otelcol",
        "--version",
        "1.0.0",
    ])
    .expect_code(0);
    let verify = [
        "--log-format",
        "json",
        "package",
        "verify",
        "otelcol",
        "--sig",
        "otelcol.sig",
        "--pub",
        "keys/release.pub",
    ];

    // Quiet by default: one-shot tools log errors only.
    let run = work.opamp(&verify).expect_code(0);
    assert!(run.stderr.is_empty(), "{}", run.stderr);

    let run = work
        .opamp_with_env(&verify, &[("RUST_LOG", "opamp_verify=debug")])
        .expect_code(0);
    let line = run
        .stderr
        .lines()
        .find(|line| line.contains("package offer approved"))
        .unwrap_or_else(|| panic!("no approval log line:\n{}", run.stderr));
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    assert!(line.contains("\"level\":\"DEBUG\""), "{line}");

    // -vvv reaches debug for tools too; text format has no JSON braces.
    let mut verbose = vec!["-vvv"];
    verbose.extend_from_slice(&verify[2..]);
    let run = work.opamp(&verbose).expect_code(0);
    assert!(
        run.stderr.contains("package offer approved"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.starts_with('{'), "{}", run.stderr);
}

#[test]
fn closed_stdout_is_not_a_panic() {
    let work = Workdir::new();
    work.write("abc", b"abc");
    // A pipe whose reader is already gone: every write to it fails with EPIPE.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_opamp"))
        .args(["package", "hash", "abc", "abc"])
        .current_dir(work.root())
        .stdout(writer)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(output.status.code(), Some(0), "{stderr}");
}

/// Each line of an error report says something new: no cause repeats the one below it.
fn assert_each_cause_once(stderr: &str, root_cause: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let occurrences = stderr.matches(root_cause).count();
    assert_eq!(
        occurrences, 1,
        "{root_cause:?} must appear exactly once:\n{stderr}"
    );
    assert!(
        lines.last().is_some_and(|l| l.contains(root_cause)),
        "the root cause comes last:\n{stderr}"
    );
    for (i, line) in lines.iter().enumerate() {
        let text = line.trim_start().trim_start_matches("caused by: ");
        for later in &lines[i + 1..] {
            assert!(
                !later.contains(text),
                "{later:?} repeats {text:?}:\n{stderr}"
            );
        }
    }
}

#[test]
fn errors_print_each_cause_once_down_to_the_os_error() {
    let work = Workdir::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = work.opamp(&[
        "server",
        "--data-dir",
        "data",
        "--listen",
        &addr,
        "--admin-listen",
        "127.0.0.1:0",
        "--admin-token",
        "t",
    ]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert_each_cause_once(&run.stderr, "Address already in use");

    let url = closed_admin_url();
    let run = work
        .opamp(&["package", "list", "--server", &url, "--token", "t"])
        .expect_code(4);
    assert_each_cause_once(&run.stderr, "Connection refused");
    drop(taken);
}
