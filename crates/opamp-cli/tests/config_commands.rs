//! `opamp config add|list|rollout start` against a real `opamp server` process.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Workdir, start_server};

#[test]
fn config_commands_add_list_and_start_against_a_running_server() {
    let work = Workdir::new();
    let (_server, admin, _) = start_server(&work, "secret", &[]);
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--server".into(),
            admin.clone(),
            "--token".into(),
            "secret".into(),
        ]);
        all
    };
    let run = |args: &[&str]| {
        let args = with(args);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        work.opamp(&args)
    };
    work.write("collector.yaml", b"receivers: {otlp: {}}\n");
    work.write("extra.yaml", b"processors: {batch: {}}\n");
    work.write("collector-1.sig", b"signature envelope bytes");

    let added = run(&[
        "config",
        "add",
        "collector",
        "--version",
        "1",
        "collector.yaml",
        "extra.yaml",
        "--signature",
        "collector-1.sig",
    ])
    .expect_code(0);
    assert!(
        added
            .stdout
            .starts_with("added config collector 1 (2 files, signed, hash "),
        "{}",
        added.stdout
    );
    // The same files again are a no-op; other files under the same version are refused.
    run(&[
        "config",
        "add",
        "collector",
        "--version",
        "1",
        "collector.yaml",
        "extra.yaml",
        "--signature",
        "collector-1.sig",
    ])
    .expect_code(0);
    let changed =
        run(&["config", "add", "collector", "--version", "1", "extra.yaml"]).expect_code(1);
    assert!(changed.stderr.contains("409"), "{}", changed.stderr);
    let reserved = work.write("opamp.signature", b"x");
    let refused = run(&[
        "config",
        "add",
        "collector",
        "--version",
        "2",
        reserved.to_str().unwrap(),
    ])
    .expect_code(1);
    assert!(refused.stderr.contains("reserved"), "{}", refused.stderr);

    let json = run(&["config", "list", "--json"]).expect_code(0);
    let configs: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let hash = configs[0]["hash"].as_str().unwrap();
    assert!(hash.len() == 64 && added.stdout.contains(hash), "{configs}");
    assert_eq!(configs[0]["signed"], true);
    // The server's hash is the digest `config sign` signs, so a signature made on the release
    // side fits the version added from the same files.
    work.keygen("keys", &[]);
    let signed = work
        .opamp(&[
            "config",
            "sign",
            "collector.yaml",
            "extra.yaml",
            "--key",
            "keys/release.key",
            "--out",
            "signed.sig",
        ])
        .expect_code(0);
    assert!(
        signed.stdout.contains(&format!("config digest: {hash}")),
        "{}\nserver hash {hash}",
        signed.stdout
    );
    assert_eq!(configs[0]["files"][1]["name"], "extra.yaml");
    let table = run(&["config", "list"]).expect_code(0);
    assert!(
        table.stdout.contains("collector  1") && table.stdout.contains(hash),
        "{}",
        table.stdout
    );

    // No agent is connected, so there is nothing to roll out to; an unknown version is 404.
    let start = run(&[
        "config",
        "rollout",
        "start",
        "collector",
        "1",
        "--selector",
        "env=prod",
    ])
    .expect_code(1);
    assert!(
        start
            .stderr
            .starts_with("error: cannot start a rollout of config collector 1"),
        "{}",
        start.stderr
    );
    let missing = run(&["config", "rollout", "start", "collector", "9"]).expect_code(1);
    assert!(missing.stderr.contains("404"), "{}", missing.stderr);
}
