//! `opamp package keygen|sign|verify|hash` on real files, through the built binary.

mod common;

use common::Workdir;

/// A package file big enough to take more than one read.
fn package_bytes(seed: u8) -> Vec<u8> {
    (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn sign(work: &Workdir, file: &str, key: &str, version: &str, extra: &[&str]) -> String {
    let out = format!("{file}-{version}.sig");
    let mut args = vec![
        "package",
        "sign",
        file,
        "--key",
        key,
        "--name",
        "otelcol",
        "--version",
        version,
        "--out",
        &out,
    ];
    args.extend_from_slice(extra);
    work.opamp(&args).expect_code(0);
    out
}

fn verify(work: &Workdir, file: &str, sig: &str, public: &str, extra: &[&str]) -> common::Run {
    let mut args = vec!["package", "verify", file, "--sig", sig, "--pub", public];
    args.extend_from_slice(extra);
    work.opamp(&args)
}

#[test]
fn keygen_sign_verify_round_trip() {
    let work = Workdir::new();
    let key_id = work.keygen("keys", &["--scheme", "ed25519"]);

    let private = work.path("keys/release.key");
    let private_pem = std::fs::read_to_string(&private).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private key mode {mode:o}");
    }
    let public_pem = std::fs::read_to_string(work.path("keys/release.pub")).unwrap();
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));

    work.write("otelcol", &package_bytes(1));
    let sign_run = work
        .opamp(&[
            "package",
            "sign",
            "otelcol",
            "--key",
            "keys/release.key",
            "--name",
            "otelcol",
            "--version",
            "1.1.0",
            "--expires-in",
            "30d",
        ])
        .expect_code(0);
    assert!(sign_run.stdout.contains(&key_id), "{}", sign_run.stdout);
    let envelope = std::fs::read(work.path("otelcol.sig")).unwrap();
    assert!(envelope.starts_with(b"OPAMPSIG"));

    let run = verify(&work, "otelcol", "otelcol.sig", "keys/release.pub", &[]).expect_code(0);
    assert!(
        run.stdout.contains("verified:    otelcol 1.1.0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&key_id));
    // An upgrade past the installed version needs no downgrade rule.
    verify(
        &work,
        "otelcol",
        "otelcol.sig",
        "keys/release.pub",
        &[
            "--name",
            "otelcol",
            "--version",
            "1.1.0",
            "--highest-installed",
            "1.0.0",
        ],
    )
    .expect_code(0);
}

#[test]
fn tampered_file_is_refused_with_exit_3() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    let mut bytes = package_bytes(2);
    work.write("otelcol", &bytes);
    let sig = sign(&work, "otelcol", "keys/release.key", "1.0.0", &[]);
    verify(&work, "otelcol", &sig, "keys/release.pub", &[]).expect_code(0);

    bytes[150_000] ^= 0x01;
    work.write("otelcol", &bytes);
    let run = verify(&work, "otelcol", &sig, "keys/release.pub", &[]).expect_code(3);
    assert!(
        run.stderr.starts_with("error: refused otelcol 1.0.0"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("caused by: content hash mismatch"),
        "{}",
        run.stderr
    );

    // Appending bytes is refused as well.
    bytes[150_000] ^= 0x01;
    bytes.push(0);
    work.write("otelcol", &bytes);
    verify(&work, "otelcol", &sig, "keys/release.pub", &[]).expect_code(3);
}

#[test]
fn signature_by_an_untrusted_key_is_refused_with_exit_3() {
    let work = Workdir::new();
    let signing_id = work.keygen("release", &[]);
    work.keygen("other", &[]);
    work.write("otelcol", &package_bytes(3));
    let sig = sign(&work, "otelcol", "release/release.key", "1.0.0", &[]);

    let run = verify(&work, "otelcol", &sig, "other/release.pub", &[]).expect_code(3);
    assert!(
        run.stderr
            .contains(&format!("signing key {signing_id} is not trusted")),
        "{}",
        run.stderr
    );
    // Trusting both keys (rotation) accepts it again.
    verify(
        &work,
        "otelcol",
        &sig,
        "other/release.pub",
        &["--pub", "release/release.pub"],
    )
    .expect_code(0);
}

#[test]
fn revoked_key_is_refused_even_when_trusted() {
    let work = Workdir::new();
    let key_id = work.keygen("keys", &[]);
    work.write("otelcol", &package_bytes(9));
    let sig = sign(&work, "otelcol", "keys/release.key", "1.0.0", &[]);
    let run = verify(
        &work,
        "otelcol",
        &sig,
        "keys/release.pub",
        &["--revoked", &key_id],
    )
    .expect_code(3);
    assert!(
        run.stderr
            .contains(&format!("signing key {key_id} is revoked")),
        "{}",
        run.stderr
    );
    // A key id that is not 64 hex digits is a usage error.
    let run = verify(
        &work,
        "otelcol",
        &sig,
        "keys/release.pub",
        &["--revoked", "abc"],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn unsigned_downgrade_is_refused_and_signed_downgrade_accepted() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.write("otelcol-1.0.0", &package_bytes(4));

    let plain = sign(&work, "otelcol-1.0.0", "keys/release.key", "1.0.0", &[]);
    let run = verify(
        &work,
        "otelcol-1.0.0",
        &plain,
        "keys/release.pub",
        &["--highest-installed", "1.2.0"],
    )
    .expect_code(3);
    assert!(run.stderr.contains("rollback refused"), "{}", run.stderr);

    let downgrade = work.path("downgrade.sig");
    let downgrade = downgrade.to_str().unwrap();
    work.opamp(&[
        "package",
        "sign",
        "otelcol-1.0.0",
        "--key",
        "keys/release.key",
        "--name",
        "otelcol",
        "--version",
        "1.0.0",
        "--allow-downgrade-from-at-most",
        "1.2.0",
        "--out",
        downgrade,
    ])
    .expect_code(0);
    let run = verify(
        &work,
        "otelcol-1.0.0",
        downgrade,
        "keys/release.pub",
        &["--highest-installed", "1.2.0"],
    )
    .expect_code(0);
    assert!(
        run.stdout.contains("downgrade:   authorised"),
        "{}",
        run.stdout
    );

    // The authorisation does not reach agents that already ran a later release.
    let run = verify(
        &work,
        "otelcol-1.0.0",
        downgrade,
        "keys/release.pub",
        &["--highest-installed", "1.3.0"],
    )
    .expect_code(3);
    assert!(
        run.stderr.contains("downgrade not authorised"),
        "{}",
        run.stderr
    );
}

#[test]
fn offers_that_differ_from_the_statement_are_refused() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.write("otelcol", &package_bytes(5));
    let sig = sign(&work, "otelcol", "keys/release.key", "1.0.0", &[]);

    let relabelled = ["--name", "otelcol", "--version", "1.5.0"];
    let run = verify(&work, "otelcol", &sig, "keys/release.pub", &relabelled).expect_code(3);
    assert!(run.stderr.contains("version mismatch"), "{}", run.stderr);

    let renamed = ["--name", "otelcol-contrib", "--version", "1.0.0"];
    let run = verify(&work, "otelcol", &sig, "keys/release.pub", &renamed).expect_code(3);
    assert!(run.stderr.contains("name mismatch"), "{}", run.stderr);
}

#[test]
fn missing_or_malformed_signatures_are_refused() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.write("otelcol", &package_bytes(6));
    let named = ["--name", "otelcol", "--version", "1.0.0"];

    work.write("empty.sig", b"");
    let run = verify(&work, "otelcol", "empty.sig", "keys/release.pub", &named).expect_code(3);
    assert!(run.stderr.contains("has no signature"), "{}", run.stderr);

    work.write("truncated.sig", b"OPAMPSIG\x01\x01");
    verify(
        &work,
        "otelcol",
        "truncated.sig",
        "keys/release.pub",
        &named,
    )
    .expect_code(3);
    verify(&work, "otelcol", "truncated.sig", "keys/release.pub", &[]).expect_code(3);
}

#[test]
fn rsa_statements_and_compatible_mode() {
    let work = Workdir::new();
    work.keygen("rsa", &["--scheme", "rsa-pkcs1", "--bits", "2048"]);
    work.write("otelcol", &package_bytes(7));

    // Statements signed with either RSA scheme verify with the same public key.
    for scheme in ["rsa-pss", "rsa-pkcs1"] {
        let sig = sign(
            &work,
            "otelcol",
            "rsa/release.key",
            "2.0.0",
            &["--scheme", scheme, "--force"],
        );
        let run = verify(&work, "otelcol", &sig, "rsa/release.pub", &[]).expect_code(0);
        assert!(run.stdout.contains("statement signed by"), "{}", run.stdout);
    }

    work.opamp(&[
        "package",
        "sign",
        "otelcol",
        "--key",
        "rsa/release.key",
        "--compatible",
        "--out",
        "compat.sig",
    ])
    .expect_code(0);
    let named = ["--name", "otelcol", "--version", "2.0.0"];
    let run = verify(&work, "otelcol", "compat.sig", "rsa/release.pub", &named).expect_code(3);
    assert!(run.stderr.contains("--allow-compatible"), "{}", run.stderr);
    let mut allowed = named.to_vec();
    allowed.push("--allow-compatible");
    let run = verify(&work, "otelcol", "compat.sig", "rsa/release.pub", &allowed).expect_code(0);
    assert!(
        run.stdout.contains("compatible-mode signature"),
        "{}",
        run.stdout
    );
    // A compatible signature names no version: verify needs to be told.
    verify(
        &work,
        "otelcol",
        "compat.sig",
        "rsa/release.pub",
        &["--allow-compatible"],
    )
    .expect_code(1);
}

#[test]
fn compatible_mode_needs_an_rsa_key() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.write("otelcol", &package_bytes(8));
    let run = work
        .opamp(&[
            "package",
            "sign",
            "otelcol",
            "--key",
            "keys/release.key",
            "--compatible",
        ])
        .expect_code(1);
    assert!(run.stderr.contains("needs an RSA key"), "{}", run.stderr);
    assert!(!work.path("otelcol.sig").exists());
}

#[test]
fn keygen_does_not_overwrite_keys_without_force() {
    let work = Workdir::new();
    let first = work.keygen("keys", &[]);
    let before = std::fs::read(work.path("keys/release.key")).unwrap();
    let run = work
        .opamp(&["package", "keygen", "--out", "keys"])
        .expect_code(1);
    assert!(run.stderr.contains("already exists"), "{}", run.stderr);
    assert_eq!(
        std::fs::read(work.path("keys/release.key")).unwrap(),
        before
    );

    let second = work.keygen("keys", &["--force"]);
    assert_ne!(first, second);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(work.path("keys/release.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn sign_refuses_bad_keys_and_past_expiry() {
    let work = Workdir::new();
    work.keygen("keys", &[]);
    work.write("otelcol", b"binary");
    work.write("not-a-key.pem", b"hello");

    let run = work
        .opamp(&[
            "package",
            "sign",
            "otelcol",
            "--key",
            "not-a-key.pem",
            "--name",
            "otelcol",
            "--version",
            "1.0.0",
        ])
        .expect_code(1);
    assert!(
        run.stderr
            .contains("cannot use not-a-key.pem as a release key"),
        "{}",
        run.stderr
    );

    work.opamp(&[
        "package",
        "sign",
        "otelcol",
        "--key",
        "missing.pem",
        "--name",
        "otelcol",
        "--version",
        "1.0.0",
    ])
    .expect_code(4);

    let run = work
        .opamp(&[
            "package",
            "sign",
            "otelcol",
            "--key",
            "keys/release.key",
            "--name",
            "otelcol",
            "--version",
            "1.0.0",
            "--not-after",
            "2020-01-01T00:00:00Z",
        ])
        .expect_code(1);
    assert!(run.stderr.contains("not in the future"), "{}", run.stderr);

    // A downgrade bound at or below the signed version authorises nothing: a mistake.
    let run = work
        .opamp(&[
            "package",
            "sign",
            "otelcol",
            "--key",
            "keys/release.key",
            "--name",
            "otelcol",
            "--version",
            "1.2.0",
            "--allow-downgrade-from-at-most",
            "1.2.0",
        ])
        .expect_code(1);
    assert!(run.stderr.contains("authorises nothing"), "{}", run.stderr);
    assert!(!work.path("otelcol.sig").exists());

    // Versions must be canonical semver, as agents parse them.
    work.opamp(&[
        "package",
        "sign",
        "otelcol",
        "--key",
        "keys/release.key",
        "--name",
        "otelcol",
        "--version",
        "1.0",
    ])
    .expect_code(1);
}

#[test]
fn hash_prints_sha256_like_sha256sum() {
    let work = Workdir::new();
    work.write("abc", b"abc");
    work.write("empty", b"");
    let run = work
        .opamp(&["package", "hash", "abc", "empty"])
        .expect_code(0);
    assert_eq!(
        run.stdout,
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad  abc\n\
         e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  empty\n"
    );
    let run = work.opamp(&["package", "hash", "missing"]).expect_code(4);
    assert!(
        run.stderr
            .starts_with("error: cannot open missing\n  caused by: "),
        "{}",
        run.stderr
    );
}

#[test]
fn hash_streams_files_larger_than_the_progress_threshold() {
    let work = Workdir::new();
    // 65 MiB of zeros: over the progress-bar threshold, written without holding it in memory.
    let path = work.path("big");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(65 * 1024 * 1024).unwrap();
    drop(file);
    let run = work.opamp(&["package", "hash", "big"]).expect_code(0);
    assert_eq!(
        run.stdout,
        "25631f11bd18756ec0029380ec886af0c8824dc6b2706bbdb1d9451c7cf45f42  big\n"
    );
    // stderr is not a terminal here, so no progress bar is drawn into it.
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn release_commands_print_json_on_request() {
    let work = Workdir::new();
    let keygen = work
        .opamp(&["package", "keygen", "--out", "keys", "--json"])
        .expect_code(0);
    let keygen: serde_json::Value = serde_json::from_str(&keygen.stdout).unwrap();
    let key_id = keygen["key_id"].as_str().unwrap().to_owned();
    assert_eq!(key_id.len(), 64, "{keygen}");
    work.write("pkg", b"collector bytes");
    let hash = work
        .opamp(&["package", "hash", "pkg", "--json"])
        .expect_code(0);
    let hash: serde_json::Value = serde_json::from_str(&hash.stdout).unwrap();
    let sha256 = hash[0]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(hash[0]["size"], 15, "{hash}");
    let sign = work
        .opamp(&[
            "package",
            "sign",
            "pkg",
            "--key",
            "keys/release.key",
            "--name",
            "otelcol",
            "--version",
            "1.1.0",
            "--json",
        ])
        .expect_code(0);
    let sign: serde_json::Value = serde_json::from_str(&sign.stdout).unwrap();
    assert_eq!(sign["sha256"], sha256.as_str(), "{sign}");
    assert_eq!(sign["version"], "1.1.0", "{sign}");
    assert_eq!(sign["size"], 15, "{sign}");
    assert_eq!(sign["key_id"], key_id.as_str(), "{sign}");
    assert_eq!(sign["scheme"], "ed25519", "{sign}");
    let verify = work
        .opamp(&[
            "package",
            "verify",
            "pkg",
            "--sig",
            "pkg.sig",
            "--pub",
            "keys/release.pub",
            "--json",
        ])
        .expect_code(0);
    let verify: serde_json::Value = serde_json::from_str(&verify.stdout).unwrap();
    assert_eq!(verify["verified"], true, "{verify}");
    assert_eq!(verify["sha256"], sha256.as_str(), "{verify}");
    assert!(
        verify["signed_by"].as_str().unwrap().contains(&key_id),
        "{verify}"
    );
}
