//! The add-time check of a package's signature: a signed statement must describe the very file,
//! name and version it is added as, so a mismatch is refused by the operator's `package add`
//! instead of by the first canary.

use opamp_verify::{DowngradeAuthorisation, HashedContent, PublicKey, Scheme, SignatureEnvelope};

/// Why a signature does not fit the file it is added with, or `Ok` when it does or cannot be
/// judged here.
///
/// A signed statement (the default of `opamp package sign`) names the package, the version,
/// the SHA-256 and the size; each must equal the upload's. A bare compatible-mode signature
/// binds only the content hash with a key the server does not hold, and an empty signature is
/// an unsigned package: both are relayed as they are, and each supervisor's trust policy
/// decides.
///
/// # Errors
/// A one-line reason naming the field that differs.
pub(crate) fn check_statement(
    name: &str,
    version: &str,
    content: &HashedContent,
    signature: &[u8],
) -> Result<(), String> {
    if !SignatureEnvelope::is_envelope(signature) {
        return Ok(());
    }
    let envelope = SignatureEnvelope::parse(signature)
        .map_err(|e| format!("the signature cannot be read: {e}"))?;
    let statement = envelope.statement();
    if statement.name() != name {
        return Err(format!(
            "the signature is for package {:?}, not {name:?}",
            statement.name()
        ));
    }
    if statement.version() != version {
        return Err(format!(
            "the signature is for version {:?}, not {version:?}",
            statement.version()
        ));
    }
    if statement.size() != content.len() {
        return Err(format!(
            "the signature is for a file of {} bytes, this one has {} (a different or changed file)",
            statement.size(),
            content.len()
        ));
    }
    if statement.content_hash() != content.hash() {
        return Err(format!(
            "the signature is for a file with sha256 {}, this one has {} (a different or changed file)",
            statement.content_hash(),
            content.hash()
        ));
    }
    Ok(())
}

/// Why an agent that runs `target` will refuse the version signed by `signature` as a
/// downgrade, or `None` when its signed statement authorises that downgrade or the signature is
/// no signed statement (unsigned or compatible-mode packages are judged by each agent's own
/// policy, which the server does not know). Only meaningful for a version lower than the
/// target: the trust policy needs no authorisation to go up.
pub(crate) fn downgrade_refusal(signature: &[u8], target: &semver::Version) -> Option<String> {
    if !SignatureEnvelope::is_envelope(signature) {
        return None;
    }
    let envelope = match SignatureEnvelope::parse(signature) {
        Ok(envelope) => envelope,
        Err(err) => return Some(format!("its signature cannot be read: {err}")),
    };
    match envelope.statement().downgrade() {
        DowngradeAuthorisation::AllowFromAtMost(bound) if bound >= target => None,
        DowngradeAuthorisation::AllowFromAtMost(bound) => Some(format!(
            "its signature authorises a downgrade only from {bound} or lower"
        )),
        _ => Some("its signature does not authorise a downgrade".to_owned()),
    }
}

/// When the server is configured with release keys: the signature must verify under one of
/// them (a statement under the key it names, a compatible-mode signature under any RSA key).
/// With no keys configured every signature passes; each supervisor's trust policy decides.
///
/// # Errors
/// A one-line reason.
pub(crate) fn check_release_key(
    keys: &[PublicKey],
    content: &HashedContent,
    signature: &[u8],
) -> Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    if signature.is_empty() {
        return Err(
            "the package is unsigned and this server requires a release key's signature".into(),
        );
    }
    if SignatureEnvelope::is_envelope(signature) {
        let envelope = SignatureEnvelope::parse(signature)
            .map_err(|e| format!("the signature cannot be read: {e}"))?;
        let key = keys
            .iter()
            .find(|key| key.id() == envelope.key_id())
            .ok_or_else(|| {
                format!(
                    "the signature was made with key {}, which is not one of this server's release keys",
                    envelope.key_id()
                )
            })?;
        return key
            .verify(
                envelope.scheme(),
                &envelope.signed_message(),
                envelope.signature(),
            )
            .map_err(|e| format!("the signature does not verify under key {}: {e}", key.id()));
    }
    let verifies = keys.iter().any(|key| {
        key.supports(Scheme::RsaPkcs1v15Sha256)
            && key
                .verify(
                    Scheme::RsaPkcs1v15Sha256,
                    content.hash().as_bytes(),
                    signature,
                )
                .is_ok()
    });
    if verifies {
        Ok(())
    } else {
        Err(
            "the compatible-mode signature does not verify under any of this server's release keys"
                .into(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use opamp_verify::{ContentHash, ReleaseSigner, Statement, hash_reader};

    use super::{DowngradeAuthorisation, check_release_key, check_statement, downgrade_refusal};

    fn signed(name: &str, version: &str, bytes: &[u8]) -> Vec<u8> {
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let size = u64::try_from(bytes.len()).unwrap();
        let statement = Statement::new(
            name,
            version,
            ContentHash::of(bytes),
            size,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
        signer.sign_statement(&statement).unwrap()
    }

    #[test]
    fn a_statement_must_name_the_file_name_and_version_it_is_added_with() {
        let file = b"collector 1.1.0".as_slice();
        let content = hash_reader(file, 1 << 20).unwrap();
        let signature = signed("otelcol", "1.1.0", file);
        assert_eq!(
            check_statement("otelcol", "1.1.0", &content, &signature),
            Ok(())
        );
        let other_name = check_statement("otelcol-contrib", "1.1.0", &content, &signature);
        assert!(other_name.unwrap_err().contains("package \"otelcol\""));
        let other_version = check_statement("otelcol", "1.2.0", &content, &signature);
        assert!(other_version.unwrap_err().contains("version \"1.1.0\""));
        let changed = hash_reader(b"collector 1.1.1".as_slice(), 1 << 20).unwrap();
        let other_file = check_statement("otelcol", "1.1.0", &changed, &signature);
        assert!(other_file.unwrap_err().contains("sha256"));
        let longer = hash_reader(b"collector 1.1.0!".as_slice(), 1 << 20).unwrap();
        let other_size = check_statement("otelcol", "1.1.0", &longer, &signature);
        assert!(other_size.unwrap_err().contains("bytes"));
    }

    #[test]
    fn configured_release_keys_must_have_made_the_signature() {
        let file = b"collector 1.1.0".as_slice();
        let content = hash_reader(file, 1 << 20).unwrap();
        let release = ReleaseSigner::generate_ed25519().unwrap();
        let statement = Statement::new(
            "otelcol",
            "1.1.0",
            ContentHash::of(file),
            15,
            SystemTime::now() + Duration::from_secs(3600),
        )
        .unwrap();
        let good = release.sign_statement(&statement).unwrap();
        let keys = [release.public_key().clone()];
        assert_eq!(check_release_key(&keys, &content, &good), Ok(()));
        assert_eq!(check_release_key(&[], &content, b""), Ok(()));
        let stranger = signed("otelcol", "1.1.0", file);
        let refused = check_release_key(&keys, &content, &stranger).unwrap_err();
        assert!(
            refused.contains("not one of this server's release keys"),
            "{refused}"
        );
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert!(check_release_key(&keys, &content, &forged).is_err());
        assert!(
            check_release_key(&keys, &content, b"")
                .unwrap_err()
                .contains("unsigned")
        );
        assert!(check_release_key(&keys, &content, b"bare bytes").is_err());
    }

    #[test]
    fn a_damaged_statement_is_refused_and_bare_signatures_are_relayed() {
        let file = b"collector".as_slice();
        let content = hash_reader(file, 1 << 20).unwrap();
        let mut signature = signed("otelcol", "1.0.0", file);
        signature.truncate(20);
        let damaged = check_statement("otelcol", "1.0.0", &content, &signature);
        assert!(damaged.unwrap_err().contains("cannot be read"));
        assert_eq!(
            check_statement("otelcol", "1.0.0", &content, b"compatible-mode bytes"),
            Ok(())
        );
        assert_eq!(check_statement("otelcol", "1.0.0", &content, b""), Ok(()));
    }

    #[test]
    fn downgrade_refusals_name_what_the_signature_lacks() {
        let target = semver::Version::new(1, 1, 0);
        assert_eq!(downgrade_refusal(b"", &target), None);
        assert_eq!(downgrade_refusal(&[7; 256], &target), None);
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let sign = |downgrade| {
            let statement = Statement::new(
                "otelcol",
                "1.0.0",
                ContentHash::of(b"old"),
                3,
                std::time::SystemTime::now() + std::time::Duration::from_secs(3600),
            )
            .unwrap()
            .with_downgrade(downgrade);
            signer.sign_statement(&statement).unwrap()
        };
        let forbidden = sign(DowngradeAuthorisation::Forbidden);
        assert!(
            downgrade_refusal(&forbidden, &target)
                .is_some_and(|r| r.contains("does not authorise a downgrade"))
        );
        let too_low = sign(DowngradeAuthorisation::AllowFromAtMost(
            semver::Version::new(1, 0, 5),
        ));
        assert!(
            downgrade_refusal(&too_low, &target).is_some_and(|r| r.contains("only from 1.0.5"))
        );
        let enough = sign(DowngradeAuthorisation::AllowFromAtMost(
            semver::Version::new(1, 1, 0),
        ));
        assert_eq!(downgrade_refusal(&enough, &target), None);
    }
}
