//! The package trust policy from the config's `trust` section.

use std::str::FromStr;

use opamp_verify::{KeyId, KeyRing, PublicKey, TrustPolicy, TrustedKey};

use super::Error;
use crate::config::{KeySource, TrustConfig};

/// Builds the [`TrustPolicy`] for `trust`: every key trusted (with its `not_after`), every
/// revoked id revoked, signatures required and compatible mode allowed as configured.
///
/// # Errors
/// [`Error::Trust`] for an unreadable key file, a PEM that is not a public key, a configured
/// `id` that is not the key's id, or a revoked id that is not 64 hex digits.
pub fn trust_policy(trust: &TrustConfig) -> Result<TrustPolicy, Error> {
    let mut ring = KeyRing::new();
    for (index, key) in trust.keys.iter().enumerate() {
        let what = match &key.source {
            KeySource::File(path) => format!("trust.keys[{index}] ({})", path.display()),
            KeySource::Pem(_) => format!("trust.keys[{index}] (inline pem)"),
        };
        let refuse = |reason: String| Error::Trust {
            what: what.clone(),
            reason,
        };
        let pem = match &key.source {
            KeySource::File(path) => {
                std::fs::read_to_string(path).map_err(|e| refuse(format!("cannot read: {e}")))?
            }
            KeySource::Pem(text) => text.clone(),
        };
        let public = PublicKey::from_spki_pem(&pem).map_err(|e| refuse(e.to_string()))?;
        if let Some(id) = &key.id {
            let configured = KeyId::from_str(id).map_err(|e| refuse(e.to_string()))?;
            if configured != public.id() {
                return Err(refuse(format!(
                    "id {id} is not the id of this key ({})",
                    public.id()
                )));
            }
        }
        let mut trusted = TrustedKey::new(public);
        if let Some(not_after) = key.not_after {
            trusted = trusted.with_not_after(not_after);
        }
        ring.trust(trusted);
    }
    for id in &trust.revoked {
        let key_id = KeyId::from_str(id).map_err(|e| Error::Trust {
            what: format!("trust.revoked {id:?}"),
            reason: e.to_string(),
        })?;
        ring.revoke(key_id);
    }
    Ok(TrustPolicy::new(ring)
        .dangerous_accept_unsigned(!trust.require_signature)
        .allow_compatible_mode(trust.allow_compatible_mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SupervisorConfig;

    fn trust(section: &str) -> TrustConfig {
        let yaml = format!(
            "server:\n  endpoint: ws://127.0.0.1:1/v1/opamp\nagent:\n  executable: /bin/true\n  storage_dir: /tmp/x\n{section}"
        );
        SupervisorConfig::from_yaml_str(&yaml, "s.yaml".as_ref())
            .unwrap()
            .trust
    }

    #[test]
    fn keys_ids_and_revocations_are_checked() {
        let signer = opamp_verify::ReleaseSigner::generate_ed25519().unwrap();
        let pem = signer.public_key().to_spki_pem().unwrap();
        let indented: String = pem.lines().map(|l| format!("        {l}\n")).collect();
        let id = signer.key_id();
        let with =
            |extra: &str| trust(&format!("trust:\n  keys:\n    - pem: |\n{indented}{extra}"));
        let policy = trust_policy(&with("")).unwrap();
        assert!(policy.keys().trusted().any(|k| k.key().id() == id));
        assert!(trust_policy(&with(&format!("      id: {id}\n"))).is_ok());
        let wrong = trust_policy(&with(&format!("      id: {}\n", "ab".repeat(32))));
        assert!(
            matches!(&wrong, Err(Error::Trust { reason, .. }) if reason.contains("is not the id")),
            "{wrong:?}"
        );
        let revoked = trust_policy(&with(&format!("  revoked: [\"{id}\"]\n"))).unwrap();
        assert!(revoked.keys().is_revoked(&id));
        assert!(matches!(
            trust_policy(&with("  revoked: [\"not-hex\"]\n")),
            Err(Error::Trust { .. })
        ));
        assert!(matches!(
            trust_policy(&trust("trust:\n  keys:\n    - pem: not a key\n")),
            Err(Error::Trust { .. })
        ));
    }
}
