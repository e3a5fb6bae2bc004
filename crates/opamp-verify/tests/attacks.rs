//! Attack fixtures: one folder per attack under `tests/data/`, each holding the bytes a hostile
//! server would send (package file, signature field, offer fields) and the key the agent trusts.
//! Every test loads its folder and runs the agent-side trust policy on it through the public API.
//!
//! The fixtures are real files, so they can also be fed to other implementations or to the
//! `opamp package verify` command. Regenerate them (deterministic keys and signatures, so the
//! bytes only change when the generator does) with:
//!
//! ```text
//! cargo test -p opamp-verify --test attacks -- --ignored
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opamp_verify::{
    ContentHash, DowngradeAuthorisation, KeyRing, PackageToVerify, PublicKey, ReleaseSigner,
    Statement, TrustPolicy, TrustedKey, VerificationContext, Verified, VerifiedPackage,
    VerifyError,
};

/// The agent's clock in every fixture: 2030-01-01T00:00:00Z.
const NOW: u64 = 1_893_456_000;
const DAY: u64 = 86_400;
const NAME: &str = "otelcol-contrib";
/// Generous download limit: the signed size is what bounds the download.
const MAX_SIZE: u64 = 1 << 20;

fn data_dir(attack: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(attack)
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// A fixture folder, loaded.
struct Fixture {
    offer: BTreeMap<String, String>,
    payload: Vec<u8>,
    signature: Vec<u8>,
    trusted: PublicKey,
}

impl Fixture {
    fn load(attack: &str) -> Self {
        let dir = data_dir(attack);
        let text = std::fs::read_to_string(dir.join("offer.txt")).unwrap();
        let offer = text
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (key, value) = line.split_once('=').expect("offer.txt lines are key=value");
                (key.trim().to_owned(), value.trim().to_owned())
            })
            .collect();
        let signature = match std::fs::read(dir.join("signature.bin")) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("{attack}: {e}"),
        };
        Self {
            offer,
            payload: std::fs::read(dir.join("payload.bin")).unwrap(),
            signature,
            trusted: PublicKey::from_spki_pem(
                &std::fs::read_to_string(dir.join("trusted.pub.pem")).unwrap(),
            )
            .unwrap(),
        }
    }

    fn field(&self, key: &str) -> Option<&str> {
        self.offer.get(key).map(String::as_str)
    }

    /// The agent's trust policy as the fixture describes it.
    fn policy(&self) -> TrustPolicy {
        let mut trusted = TrustedKey::new(self.trusted.clone());
        if let Some(not_after) = self.field("trusted_key_not_after") {
            trusted = trusted.with_not_after(at(not_after.parse().unwrap()));
        }
        let mut keys = KeyRing::new();
        keys.trust(trusted);
        if self.field("trusted_key_revoked") == Some("true") {
            keys.revoke(self.trusted.id());
        }
        TrustPolicy::new(keys)
    }

    fn context(&self) -> VerificationContext {
        let context = VerificationContext::new(at(self.field("now").unwrap().parse().unwrap()));
        match self.field("highest_installed") {
            Some(version) => context.with_highest_installed(version.parse().unwrap()),
            None => context,
        }
    }

    /// Runs the whole agent-side check: offer, then the downloaded file.
    fn verify_with(&self, policy: &TrustPolicy) -> Result<Verified<VerifiedPackage>, VerifyError> {
        let content_hash = hex::decode(self.field("content_hash").unwrap()).unwrap();
        let offer = PackageToVerify::new(
            self.field("name").unwrap(),
            self.field("version").unwrap(),
            &content_hash,
            &self.signature,
        );
        policy.verify_package(&offer, &self.context(), &self.payload[..], MAX_SIZE)
    }

    fn verify(&self) -> Result<Verified<VerifiedPackage>, VerifyError> {
        self.verify_with(&self.policy())
    }
}

#[test]
fn control_valid_release_is_accepted() {
    // Without this, every refusal below could come from a broken harness.
    let fixture = Fixture::load("control-valid-release");
    let verified = fixture.verify().unwrap();
    assert_eq!(verified.name(), NAME);
    assert_eq!(verified.version(), "1.1.0");
    assert_eq!(verified.key_id(), Some(fixture.trusted.id()));
}

#[test]
fn tampered_binary_with_the_original_hash_is_refused() {
    let fixture = Fixture::load("tampered-binary");
    let err = fixture.verify().unwrap_err();
    assert!(matches!(err, VerifyError::HashMismatch { .. }), "{err}");
}

#[test]
fn right_hash_wrong_signature_is_refused() {
    let fixture = Fixture::load("wrong-signature");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::BadSignature { key_id, .. } if key_id == fixture.trusted.id()),
        "{err}"
    );
}

#[test]
fn signature_by_an_unknown_key_is_refused() {
    let fixture = Fixture::load("unknown-key");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::UnknownKey { key_id } if key_id != fixture.trusted.id()),
        "{err}"
    );
}

#[test]
fn signature_by_a_revoked_key_is_refused() {
    let fixture = Fixture::load("revoked-key");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::RevokedKey { key_id } if key_id == fixture.trusted.id()),
        "{err}"
    );
}

#[test]
fn expired_statement_is_refused() {
    let fixture = Fixture::load("expired-statement");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::Expired { now, not_after } if now == NOW && not_after < NOW),
        "{err}"
    );
}

#[test]
fn signature_by_an_expired_key_is_refused() {
    let fixture = Fixture::load("expired-key");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(err, VerifyError::KeyExpired { key_id, now, .. } if key_id == fixture.trusted.id() && now == NOW),
        "{err}"
    );
}

#[test]
fn replay_of_an_older_signed_release_is_refused() {
    let fixture = Fixture::load("rollback-replay");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::Rollback { highest_installed, offered }
            if highest_installed.to_string() == "1.1.0" && offered.to_string() == "1.0.0"),
        "{err}"
    );
    // The same release is fine for an agent that never went past it: the signature is genuine.
    let fresh = VerificationContext::new(at(NOW));
    let content_hash = hex::decode(fixture.field("content_hash").unwrap()).unwrap();
    let offer = PackageToVerify::new(NAME, "1.0.0", &content_hash, &fixture.signature);
    assert!(
        fixture
            .policy()
            .verify_package(&offer, &fresh, &fixture.payload[..], MAX_SIZE)
            .is_ok()
    );
}

#[test]
fn stale_downgrade_authorisation_is_refused() {
    let fixture = Fixture::load("stale-downgrade-authorisation");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::DowngradeNotAuthorised { authorised_from, highest_installed, .. }
            if authorised_from.to_string() == "1.1.0" && highest_installed.to_string() == "1.2.0"),
        "{err}"
    );
}

#[test]
fn unsigned_downgrade_is_refused() {
    let fixture = Fixture::load("unsigned-downgrade");
    assert!(fixture.signature.is_empty());
    let err = fixture.verify().unwrap_err();
    assert!(matches!(err, VerifyError::MissingSignature { .. }), "{err}");
    // Even a test setup that lets unsigned packages through keeps anti-rollback.
    let lax = fixture.policy().dangerous_accept_unsigned(true);
    let err = fixture.verify_with(&lax).unwrap_err();
    assert!(matches!(err, VerifyError::Rollback { .. }), "{err}");
}

#[test]
fn version_label_changed_on_a_signed_file_is_refused() {
    let fixture = Fixture::load("version-label-changed");
    let err = fixture.verify().unwrap_err();
    assert!(
        matches!(&err, VerifyError::VersionMismatch { signed, offered }
            if signed == "1.0.0" && offered == "2.0.0"),
        "{err}"
    );
}

/// Every fixture folder has a test above and a README; no folder is left untested.
#[test]
fn every_fixture_folder_is_known() {
    let mut found: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
    found.sort();
    let mut known: Vec<String> = ATTACKS.iter().map(|a| a.folder.to_owned()).collect();
    known.sort();
    assert_eq!(found, known);
    for attack in ATTACKS {
        assert!(
            data_dir(attack.folder).join("README.md").is_file(),
            "{}",
            attack.folder
        );
    }
}

// ----- generator ----------------------------------------------------------------------------

/// What the generator writes for one attack.
struct Attack {
    folder: &'static str,
    what: &'static str,
    must: &'static str,
}

const ATTACKS: &[Attack] = &[
    Attack {
        folder: "control-valid-release",
        what: "No attack: a correctly signed 1.1.0 release, offered to an agent that has 1.0.0.",
        must: "Accepted. Proves the harness can accept, so the refusals in the other folders mean something.",
    },
    Attack {
        folder: "tampered-binary",
        what: "The server serves a modified file (one byte changed) but keeps the original content hash and the genuine signature.",
        must: "Refused after download with `HashMismatch`: the file's SHA-256 is not the signed one.",
    },
    Attack {
        folder: "wrong-signature",
        what: "Right content hash and statement, but the signature bytes are altered (last byte flipped).",
        must: "Refused before download with `BadSignature` naming the trusted key id.",
    },
    Attack {
        folder: "unknown-key",
        what: "A well-formed statement signed by a key the agent does not trust.",
        must: "Refused before download with `UnknownKey` naming the stranger's key id.",
    },
    Attack {
        folder: "revoked-key",
        what: "A statement signed by the release key, which the agent has revoked (`trusted_key_revoked=true`).",
        must: "Refused before download with `RevokedKey`: revocation wins over trust.",
    },
    Attack {
        folder: "expired-statement",
        what: "A genuine statement whose not-after passed one day before the agent's clock.",
        must: "Refused before download with `Expired`.",
    },
    Attack {
        folder: "expired-key",
        what: "A genuine statement signed by a key the agent trusted only until one day ago (`trusted_key_not_after`).",
        must: "Refused before download with `KeyExpired`.",
    },
    Attack {
        folder: "rollback-replay",
        what: "The genuine, unexpired signed 1.0.0 release replayed to an agent that has already installed 1.1.0.",
        must: "Refused with `Rollback` (anti-rollback); the same files are accepted by an agent that never went past 1.0.0.",
    },
    Attack {
        folder: "stale-downgrade-authorisation",
        what: "A signed 1.0.0 statement that authorises downgrades from at most 1.1.0, replayed to an agent that has installed 1.2.0.",
        must: "Refused with `DowngradeNotAuthorised`: an old rollback statement cannot drag agents back from later releases.",
    },
    Attack {
        folder: "unsigned-downgrade",
        what: "An unsigned 1.0.0 offered to an agent that has 1.1.0 (no `signature.bin`).",
        must: "Refused with `MissingSignature`; with `require_signature(false)` still refused with `Rollback`.",
    },
    Attack {
        folder: "version-label-changed",
        what: "The genuine signed 1.0.0 file and signature, offered under the version label 2.0.0 to an agent that has 1.1.0.",
        must: "Refused before download with `VersionMismatch` (the statement binds the version).",
    },
];

fn payload(version: &str) -> Vec<u8> {
    // Looks like a tiny executable; the content only needs to differ per version.
    let mut bytes = b"#!/bin/sh\n# fake otelcol-contrib for attack fixtures\necho ".to_vec();
    bytes.extend_from_slice(version.as_bytes());
    bytes.push(b'\n');
    bytes
}

fn seeded_signer(seed: u64) -> ReleaseSigner {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_le_bytes());
    ReleaseSigner::ed25519_from_secret(&secret).unwrap()
}

fn sign(signer: &ReleaseSigner, version: &str, not_after: u64, downgrade: Option<&str>) -> Vec<u8> {
    let file = payload(version);
    let mut statement = Statement::new(
        NAME,
        version,
        ContentHash::of(&file),
        file.len() as u64,
        at(not_after),
    )
    .unwrap();
    if let Some(from) = downgrade {
        statement = statement.with_downgrade(DowngradeAuthorisation::AllowFromAtMost(
            from.parse().unwrap(),
        ));
    }
    signer.sign_statement(&statement).unwrap()
}

#[test]
#[ignore = "regenerates tests/data; run with --ignored"]
fn regenerate_attack_fixtures() {
    let release = seeded_signer(1001);
    let stranger = seeded_signer(1002);
    let valid = NOW + 30 * DAY;
    for attack in ATTACKS {
        let mut offer = vec![("name", NAME.to_owned()), ("now", NOW.to_string())];
        let (version, offered_version, highest, signature, mut file): (
            &str,
            &str,
            Option<&str>,
            Option<Vec<u8>>,
            Vec<u8>,
        ) = match attack.folder {
            "control-valid-release" => (
                "1.1.0",
                "1.1.0",
                Some("1.0.0"),
                Some(sign(&release, "1.1.0", valid, None)),
                payload("1.1.0"),
            ),
            "tampered-binary" | "wrong-signature" | "revoked-key" | "expired-key" => (
                "1.1.0",
                "1.1.0",
                Some("1.0.0"),
                Some(sign(&release, "1.1.0", valid, None)),
                payload("1.1.0"),
            ),
            "unknown-key" => (
                "1.1.0",
                "1.1.0",
                Some("1.0.0"),
                Some(sign(&stranger, "1.1.0", valid, None)),
                payload("1.1.0"),
            ),
            "expired-statement" => (
                "1.1.0",
                "1.1.0",
                Some("1.0.0"),
                Some(sign(&release, "1.1.0", NOW - DAY, None)),
                payload("1.1.0"),
            ),
            "rollback-replay" => (
                "1.0.0",
                "1.0.0",
                Some("1.1.0"),
                Some(sign(&release, "1.0.0", valid, None)),
                payload("1.0.0"),
            ),
            "stale-downgrade-authorisation" => (
                "1.0.0",
                "1.0.0",
                Some("1.2.0"),
                Some(sign(&release, "1.0.0", valid, Some("1.1.0"))),
                payload("1.0.0"),
            ),
            "unsigned-downgrade" => ("1.0.0", "1.0.0", Some("1.1.0"), None, payload("1.0.0")),
            "version-label-changed" => (
                "1.0.0",
                "2.0.0",
                Some("1.1.0"),
                Some(sign(&release, "1.0.0", valid, None)),
                payload("1.0.0"),
            ),
            other => panic!("no generator for {other}"),
        };
        // The offer always carries the genuine hash of the signed version's file.
        let content_hash = ContentHash::of(&payload(version));
        let mut signature = signature;
        match attack.folder {
            "tampered-binary" => {
                let last = file.len() - 2;
                file[last] ^= 0x01;
            }
            "wrong-signature" => {
                let bytes = signature.as_mut().unwrap();
                *bytes.last_mut().unwrap() ^= 0x01;
            }
            "revoked-key" => offer.push(("trusted_key_revoked", "true".to_owned())),
            "expired-key" => offer.push(("trusted_key_not_after", (NOW - DAY).to_string())),
            _ => {}
        }
        offer.push(("version", offered_version.to_owned()));
        offer.push(("content_hash", hex::encode(content_hash.as_bytes())));
        if let Some(highest) = highest {
            offer.push(("highest_installed", highest.to_owned()));
        }

        let dir = data_dir(attack.folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("payload.bin"), &file).unwrap();
        match &signature {
            Some(bytes) => std::fs::write(dir.join("signature.bin"), bytes).unwrap(),
            None => {
                let _ = std::fs::remove_file(dir.join("signature.bin"));
            }
        }
        std::fs::write(
            dir.join("trusted.pub.pem"),
            release.public_key().to_spki_pem().unwrap(),
        )
        .unwrap();
        let mut text = String::from(
            "# The offer as the server sends it, and the agent's state. Generated by\n\
             # `cargo test -p opamp-verify --test attacks -- --ignored`.\n",
        );
        for (key, value) in &offer {
            text.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(dir.join("offer.txt"), text).unwrap();
        std::fs::write(
            dir.join("README.md"),
            format!(
                "# Attack: {}\n\n{}\n\n**Must happen:** {}\n\n\
                 Files: `payload.bin` (the file the server serves), `signature.bin` \
                 (`DownloadableFile.signature`, absent when unsigned), `trusted.pub.pem` (the key the \
                 agent trusts), `offer.txt` (offer fields and agent state: clock `now` in unix \
                 seconds, `highest_installed`, key revocation or expiry). Test: \
                 `crates/opamp-verify/tests/attacks.rs`.\n",
                attack.folder, attack.what, attack.must
            ),
        )
        .unwrap();
    }
}
