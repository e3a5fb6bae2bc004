//! `opamp config sign` through the built binary: the signature it writes verifies for the
//! config map built from the same files, only for agents the selector names, and not for a
//! changed file.

mod common;

use std::collections::BTreeMap;
use std::time::SystemTime;

use common::Workdir;
use opamp_verify::{ConfigEntry, KeyRing, PublicKey, TrustedKey, VerifyError};

#[test]
fn a_config_signature_binds_the_files_and_the_selector() {
    let work = Workdir::new();
    work.keygen("keys", &["--scheme", "ed25519"]);
    work.write("collector.yaml", b"receivers:\n  otlp: {}\n");
    work.write("extra.json", b"{\"exporters\": {}}");
    let run = work.opamp(&[
        "config",
        "sign",
        "--key",
        "keys/release.key",
        "--selector",
        "env=prod",
        "--expires-in",
        "1d",
        "collector.yaml",
        "extra.json",
    ]);
    let run = run.expect_code(0);
    assert!(
        run.stdout.contains("selector:      env=prod"),
        "{}",
        run.stdout
    );
    let signature = std::fs::read(work.path("opamp.signature")).unwrap();

    let public = std::fs::read_to_string(work.path("keys/release.pub")).unwrap();
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(PublicKey::from_spki_pem(&public).unwrap()));
    let digest_of = |yaml: &[u8]| {
        opamp_verify::config_digest([
            ConfigEntry {
                name: "collector.yaml",
                content_type: "text/yaml",
                body: yaml,
            },
            ConfigEntry {
                name: "extra.json",
                content_type: "application/json",
                body: b"{\"exporters\": {}}",
            },
        ])
    };
    let labels = |env: &str| BTreeMap::from([("env".to_owned(), env.to_owned())]);
    let check = |yaml: &[u8], env: &str| {
        let attributes = labels(env);
        opamp_verify::verify_config(
            &keys,
            &signature,
            &digest_of(yaml),
            |key| attributes.get(key).cloned(),
            SystemTime::now(),
        )
    };
    check(b"receivers:\n  otlp: {}\n", "prod").expect("verifies for prod");
    assert!(matches!(
        check(b"receivers:\n  otlp: {}\n", "staging"),
        Err(VerifyError::ConfigNotForThisAgent { .. })
    ));
    assert!(matches!(
        check(b"receivers: {}\n", "prod"),
        Err(VerifyError::ConfigDigestMismatch { .. })
    ));
}
