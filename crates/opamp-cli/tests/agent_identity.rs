//! `opamp agents enroll-token create` against a real `opamp server` process: a token is
//! printed once (bare or as JSON) in enrollment mode, and refused (exit 1, 409) otherwise.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Workdir, spawn_server, start_server};

#[test]
fn enrollment_tokens_are_created_only_in_enrollment_mode() {
    let work = Workdir::new();
    work.write(
        "server.toml",
        b"listen = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
          [admin]\nlisten = \"127.0.0.1:0\"\ntoken = \"secret\"\n\
          [agent_identity]\nmode = \"enrollment\"\n",
    );
    let (server, admin, _) = spawn_server(&work, &["server", "--config", "server.toml"]);
    let connection = ["--server", admin.as_str(), "--token", "secret"];
    let create = |extra: &[&str]| {
        let mut args = vec!["agents", "enroll-token", "create"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&connection);
        work.opamp(&args).expect_code(0).stdout
    };
    let bare = create(&["--ttl", "1h"]);
    let token = bare.trim();
    assert_eq!(token.len(), 64, "{bare}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{bare}");
    let json: serde_json::Value = serde_json::from_str(&create(&["--json"])).unwrap();
    let second = json["token"].as_str().unwrap();
    assert_ne!(second, token, "every token is new");
    assert!(
        json["expires_at"].is_string() || json["expires_at"].is_u64(),
        "{json}"
    );
    drop(server);

    let open = Workdir::new();
    let (server, admin, _) = start_server(&open, "secret", &[]);
    let refused = open
        .opamp(&[
            "agents",
            "enroll-token",
            "create",
            "--server",
            admin.as_str(),
            "--token",
            "secret",
        ])
        .expect_code(1);
    assert!(refused.stderr.contains("enrollment"), "{}", refused.stderr);
    drop(server);
}
