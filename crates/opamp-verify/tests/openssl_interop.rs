//! Test vectors from an independent implementation: the `openssl` command line tool.
//!
//! Each test prints a SKIPPED line and passes only if `openssl` is not installed.
// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use opamp_verify::{
    ContentHash, KeyId, PackageToVerify, PublicKey, ReleaseSigner, SIGNING_DOMAIN, Scheme,
    SignatureEnvelope, VerificationContext, VerifyError,
};

fn run(openssl: &Path, dir: &Path, args: &[&str]) -> Vec<u8> {
    let output = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn read(dir: &Path, name: &str) -> Vec<u8> {
    std::fs::read(dir.join(name)).unwrap()
}

fn public_key(openssl: &Path, dir: &Path, private: &str) -> PublicKey {
    run(
        openssl,
        dir,
        &["pkey", "-in", private, "-pubout", "-out", "pub.pem"],
    );
    PublicKey::from_spki_pem(&String::from_utf8(read(dir, "pub.pem")).unwrap()).unwrap()
}

/// The message a statement signature covers, assembled here from the documented layout rather
/// than by the crate's own code.
fn documented_message(scheme: u8, key_id: &KeyId, statement: &[u8]) -> Vec<u8> {
    let mut message = SIGNING_DOMAIN.to_vec();
    message.push(1);
    message.push(scheme);
    message.extend_from_slice(key_id.as_bytes());
    message.extend_from_slice(statement);
    message
}

fn documented_envelope(scheme: u8, key_id: &KeyId, statement: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut out = b"OPAMPSIG".to_vec();
    out.push(1);
    out.push(scheme);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&(statement.len() as u16).to_be_bytes());
    out.extend_from_slice(statement);
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(signature);
    out
}

#[test]
fn compatible_signature_made_by_openssl_is_accepted_and_flips_are_refused() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    run(
        &openssl,
        dir,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "key.pem",
        ],
    );
    let key = public_key(&openssl, dir, "key.pem");

    // What the Go code does: sign sha256(content_hash) with PKCS#1 v1.5 / SHA-256, i.e. sign
    // the 32 content-hash bytes as the message.
    let file = file();
    let hash = ContentHash::of(&file);
    std::fs::write(dir.join("hash.bin"), hash.as_bytes()).unwrap();
    run(
        &openssl,
        dir,
        &[
            "dgst", "-sha256", "-sign", "key.pem", "-out", "sig.bin", "hash.bin",
        ],
    );
    let signature = read(dir, "sig.bin");
    assert_eq!(signature.len(), 256);

    let policy = {
        let mut keys = opamp_verify::KeyRing::new();
        keys.trust(opamp_verify::TrustedKey::new(key.clone()));
        opamp_verify::TrustPolicy::new(keys).allow_compatible_mode(true)
    };
    let context = VerificationContext::new(now());
    let offer = PackageToVerify::new("otelcol", "1.0.0", hash.as_bytes(), &signature);
    let verified = policy
        .verify_package(&offer, &context, &file[..], 1 << 20)
        .unwrap();
    assert_eq!(verified.key_id(), Some(key.id()));

    for position in [0, 1, 100, 128, 200, 255] {
        let mut flipped = signature.clone();
        flipped[position] ^= 0x01;
        let offer = PackageToVerify::new("otelcol", "1.0.0", hash.as_bytes(), &flipped);
        let err = policy.verify_offer(&offer, &context).unwrap_err();
        assert!(
            matches!(err, VerifyError::NoTrustedKeyVerifies { tried: 1 }),
            "{err}"
        );
    }
    for position in [0, 13, 31] {
        let mut other_hash = *hash.as_bytes();
        other_hash[position] ^= 0x01;
        let offer = PackageToVerify::new("otelcol", "1.0.0", &other_hash, &signature);
        let err = policy.verify_offer(&offer, &context).unwrap_err();
        assert!(
            matches!(err, VerifyError::NoTrustedKeyVerifies { .. }),
            "{err}"
        );
    }
}

#[test]
fn openssl_verifies_our_compatible_signature() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let signer = rsa_signer('a', Scheme::RsaPkcs1v15Sha256);
    std::fs::write(
        dir.join("pub.pem"),
        signer.public_key().to_spki_pem().unwrap(),
    )
    .unwrap();
    let hash = ContentHash::of(&file());
    std::fs::write(dir.join("hash.bin"), hash.as_bytes()).unwrap();
    std::fs::write(dir.join("sig.bin"), signer.sign_compatible(&hash).unwrap()).unwrap();
    let out = run(
        &openssl,
        dir,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "pub.pem",
            "-signature",
            "sig.bin",
            "hash.bin",
        ],
    );
    assert!(String::from_utf8_lossy(&out).contains("Verified OK"));
}

#[test]
fn key_id_is_sha256_of_the_spki_der_openssl_writes() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    for algorithm in ["ED25519", "RSA"] {
        run(
            &openssl,
            dir,
            &["genpkey", "-algorithm", algorithm, "-out", "key.pem"],
        );
        let key = public_key(&openssl, dir, "key.pem");
        let der = run(
            &openssl,
            dir,
            &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"],
        );
        assert_eq!(key.id(), KeyId::of_spki_der(&der));
        // The private key openssl wrote loads as a signer with the same id.
        let private = String::from_utf8(read(dir, "key.pem")).unwrap();
        assert_eq!(
            ReleaseSigner::from_pkcs8_pem(&private, None)
                .unwrap()
                .key_id(),
            key.id()
        );
    }
}

#[test]
fn statements_signed_by_openssl_over_the_documented_layout_are_accepted() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let statement = statement("1.4.2").with_downgrade(downgrade_from("1.5.0"));
    let statement_bytes = statement.to_bytes();
    let hash = ContentHash::of(&file());
    let context = VerificationContext::new(now()).with_highest_installed("1.5.0".parse().unwrap());

    let cases: [(&str, &[&str], &[&str], Scheme); 2] = [
        (
            "ED25519",
            &[],
            &[
                "pkeyutl", "-sign", "-rawin", "-inkey", "key.pem", "-in", "msg.bin", "-out",
                "sig.bin",
            ],
            Scheme::Ed25519,
        ),
        (
            "RSA",
            &["-pkeyopt", "rsa_keygen_bits:2048"],
            &[
                "dgst",
                "-sha256",
                "-sign",
                "key.pem",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
                "-out",
                "sig.bin",
                "msg.bin",
            ],
            Scheme::RsaPssSha256,
        ),
    ];
    for (algorithm, keygen_options, sign_args, scheme) in cases {
        let mut keygen = vec!["genpkey", "-algorithm", algorithm];
        keygen.extend_from_slice(keygen_options);
        keygen.extend_from_slice(&["-out", "key.pem"]);
        run(&openssl, dir, &keygen);
        let key = public_key(&openssl, dir, "key.pem");
        let message = documented_message(scheme.code(), &key.id(), &statement_bytes);
        std::fs::write(dir.join("msg.bin"), &message).unwrap();
        run(&openssl, dir, sign_args);
        let envelope = documented_envelope(
            scheme.code(),
            &key.id(),
            &statement_bytes,
            &read(dir, "sig.bin"),
        );
        assert_eq!(
            SignatureEnvelope::parse(&envelope)
                .unwrap()
                .signed_message(),
            message
        );

        let mut keys = opamp_verify::KeyRing::new();
        keys.trust(opamp_verify::TrustedKey::new(key));
        let policy = opamp_verify::TrustPolicy::new(keys);
        let offer = PackageToVerify::new("otelcol-contrib", "1.4.2", hash.as_bytes(), &envelope);
        let verified = policy
            .verify_package(&offer, &context, &file()[..], 1 << 20)
            .unwrap();
        assert!(verified.downgrade_authorised(), "{algorithm}");
    }
}

#[test]
fn openssl_verifies_our_statement_signatures() {
    let Some(openssl) = openssl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let pss = rsa_signer('b', Scheme::RsaPssSha256);
    let pkcs1 = rsa_signer('b', Scheme::RsaPkcs1v15Sha256);
    let ed = ed25519_signer(7);
    for (signer, verify_args) in [
        (
            &pss,
            vec![
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
                "-signature",
                "sig.bin",
                "msg.bin",
            ],
        ),
        (
            &pkcs1,
            vec![
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "sig.bin",
                "msg.bin",
            ],
        ),
        (
            &ed,
            vec![
                "pkeyutl", "-verify", "-rawin", "-pubin", "-inkey", "pub.pem", "-sigfile",
                "sig.bin", "-in", "msg.bin",
            ],
        ),
    ] {
        let envelope =
            SignatureEnvelope::parse(&signer.sign_statement(&statement("2.0.0")).unwrap()).unwrap();
        std::fs::write(
            dir.join("pub.pem"),
            signer.public_key().to_spki_pem().unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("msg.bin"), envelope.signed_message()).unwrap();
        std::fs::write(dir.join("sig.bin"), envelope.signature()).unwrap();
        let out = run(&openssl, dir, &verify_args);
        assert!(
            String::from_utf8_lossy(&out).contains("Verified"),
            "{}",
            signer.scheme()
        );
    }
}
