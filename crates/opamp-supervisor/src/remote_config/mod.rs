//! Remote configuration: what the supervisor does with an `AgentRemoteConfig` from the server.
//!
//! With `remote_config.mode` on, the collector runs `--config <storage_dir>/collector-config.yaml`,
//! which the supervisor writes. For each offered config the decision needs no I/O
//! ([`evaluate`]): the signature when `remote_config.require_signed` is on (the
//! `opamp.signature` entry, a [`opamp_verify::ConfigSignature`] over the config digest and a
//! selector on the agent's own attributes, checked with the package trust keys), the merge with
//! the local base files ([`compose`]), then the host policy ([`policy`]). Refusals change
//! nothing and are reported `FAILED` with the reason. An accepted config is applied by the
//! agent: journaled and written atomically ([`ConfigStore`]), the collector restarted and
//! health-gated; a collector that fails is put back on the last good config and the failure
//! reported with the collector's own last stderr line. The effective config is reported with
//! secrets redacted ([`redact`]).

pub mod compose;
pub mod policy;
pub mod redact;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::SystemTime;

use opamp_proto::v1;
use opamp_verify::{CONFIG_SIGNATURE_ENTRY, ConfigEntry, KeyId, KeyRing, VerifyError};

pub use compose::BaseFile;
pub use store::{
    CONFIG_JOURNAL_FILE, ConfigRecord, ConfigStore, FailedConfig, GOOD_CONFIG_FILE,
    LIVE_CONFIG_FILE,
};

use crate::config::RemoteConfigSettings;

/// Why a remote config was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteConfigError {
    /// The config map has no entry besides the signature.
    #[error("the remote config has no entries")]
    Empty,
    /// An entry (or local base file) is not a YAML mapping.
    #[error("config entry {entry} is not a YAML mapping: {reason}")]
    NotYaml {
        /// The entry's name, or the local file's path.
        entry: String,
        /// What the parser said.
        reason: String,
    },
    /// The host policy refuses it.
    #[error("refused by the host policy: {0}")]
    Refused(String),
    /// Signatures are required and there is none.
    #[error(
        "the config is not signed (no {CONFIG_SIGNATURE_ENTRY} entry) and remote_config.require_signed is on"
    )]
    Unsigned,
    /// The signature does not vouch for this config on this agent.
    #[error("config signature refused")]
    Signature(#[source] VerifyError),
    /// A config file or the journal could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The journal could not be written.
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
}

/// Everything [`evaluate`] needs besides the offer.
#[derive(Debug, Clone, Copy)]
pub struct ConfigFacts<'a> {
    /// `remote_config` from the supervisor config.
    pub settings: &'a RemoteConfigSettings,
    /// The local base files (`agent.config_files`), read.
    pub base: &'a [BaseFile],
    /// The trusted keys (`trust`).
    pub keys: &'a KeyRing,
    /// The agent's own attributes, which a signed selector must match.
    pub attributes: &'a BTreeMap<String, String>,
    /// Now (for key and statement expiry).
    pub now: SystemTime,
}

/// An offered config the host accepts: the collector config to write.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Candidate {
    /// The composed collector config, YAML.
    pub yaml: String,
    /// Who signed it, when it was signed and checked.
    pub signed_by: Option<KeyId>,
}

/// Decides on an offered config map: signature (when required), merge, host policy.
///
/// # Errors
/// The [`RemoteConfigError`] to report as `FAILED`; nothing is applied.
pub fn evaluate(
    offered: &v1::AgentConfigMap,
    facts: &ConfigFacts<'_>,
) -> Result<Candidate, RemoteConfigError> {
    let signed_by = if facts.settings.require_signed {
        let signature = offered
            .config_map
            .get(CONFIG_SIGNATURE_ENTRY)
            .ok_or(RemoteConfigError::Unsigned)?;
        let digest = digest_of(offered);
        let approved = opamp_verify::verify_config(
            facts.keys,
            &signature.body,
            &digest,
            |key| facts.attributes.get(key).cloned(),
            facts.now,
        )
        .map_err(RemoteConfigError::Signature)?;
        Some(approved.key_id)
    } else {
        None
    };
    let composed = compose::compose(facts.base, offered, facts.settings.mode)?;
    policy::check(&composed, facts.settings)?;
    Ok(Candidate {
        yaml: compose::to_yaml(&composed)?,
        signed_by,
    })
}

/// The config digest (as signed) of an offered config map.
pub fn digest_of(offered: &v1::AgentConfigMap) -> opamp_verify::ContentHash {
    opamp_verify::config_digest(offered.config_map.iter().map(|(name, file)| ConfigEntry {
        name,
        content_type: &file.content_type,
        body: &file.body,
    }))
}

/// A `RemoteConfigStatus` for `hash` (raw bytes of `config_hash`).
pub fn status(
    hash: &[u8],
    status: v1::RemoteConfigStatuses,
    message: &str,
) -> v1::RemoteConfigStatus {
    v1::RemoteConfigStatus {
        last_remote_config_hash: hash.to_vec(),
        status: status as i32,
        error_message: message.to_owned(),
    }
}

/// The status to report at start-up from the journal: the last failure, else the applied
/// config, else an empty hash with status `UNSET` (no remote config runs; after an
/// interrupted first apply this tells the server to offer its config again).
pub fn status_from_record(record: &ConfigRecord) -> v1::RemoteConfigStatus {
    let decode = |hex_text: &str| hex::decode(hex_text).unwrap_or_default();
    if let Some(failed) = &record.failed {
        return status(
            &decode(&failed.hash),
            v1::RemoteConfigStatuses::Failed,
            &failed.message,
        );
    }
    match record.applied.as_deref() {
        Some(hash) => status(&decode(hash), v1::RemoteConfigStatuses::Applied, ""),
        None => status(&[], v1::RemoteConfigStatuses::Unset, ""),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, UNIX_EPOCH};

    use opamp_verify::{ConfigStatement, ReleaseSigner, TrustedKey};

    use super::*;
    use crate::config::RemoteConfigMode;

    struct Setup {
        signer: ReleaseSigner,
        keys: KeyRing,
        settings: RemoteConfigSettings,
        attributes: BTreeMap<String, String>,
    }

    fn setup() -> Setup {
        let signer = ReleaseSigner::generate_ed25519().unwrap();
        let mut keys = KeyRing::new();
        keys.trust(TrustedKey::new(signer.public_key().clone()));
        let settings = RemoteConfigSettings {
            mode: RemoteConfigMode::RemoteOnly,
            require_signed: true,
            ..RemoteConfigSettings::default()
        };
        let attributes = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        Setup {
            signer,
            keys,
            settings,
            attributes,
        }
    }

    fn offer(body: &str) -> v1::AgentConfigMap {
        v1::AgentConfigMap {
            config_map: HashMap::from([(
                "collector.yaml".to_owned(),
                v1::AgentConfigFile {
                    body: body.as_bytes().to_vec(),
                    content_type: "text/yaml".to_owned(),
                },
            )]),
        }
    }

    fn sign(s: &Setup, map: &mut v1::AgentConfigMap, selector: (&str, &str)) {
        let statement = ConfigStatement::new(digest_of(map), UNIX_EPOCH + Duration::from_secs(200))
            .with_selector(selector.0, selector.1)
            .unwrap();
        let body = s.signer.sign_config(&statement).unwrap();
        map.config_map.insert(
            CONFIG_SIGNATURE_ENTRY.to_owned(),
            v1::AgentConfigFile {
                body,
                content_type: "application/octet-stream".to_owned(),
            },
        );
    }

    fn run(s: &Setup, map: &v1::AgentConfigMap) -> Result<Candidate, RemoteConfigError> {
        let facts = ConfigFacts {
            settings: &s.settings,
            base: &[],
            keys: &s.keys,
            attributes: &s.attributes,
            now: UNIX_EPOCH + Duration::from_secs(100),
        };
        evaluate(map, &facts)
    }

    #[test]
    fn signed_configs_pass_and_unsigned_tampered_or_mistargeted_ones_do_not() {
        let s = setup();
        let mut good = offer("receivers:\n  otlp: {}\n");
        sign(&s, &mut good, ("env", "prod"));
        let candidate = run(&s, &good).unwrap();
        assert_eq!(candidate.signed_by, Some(s.signer.key_id()));
        assert!(candidate.yaml.contains("otlp"));

        assert!(matches!(
            run(&s, &offer("receivers: {}\n")),
            Err(RemoteConfigError::Unsigned)
        ));
        let mut tampered = good.clone();
        tampered
            .config_map
            .get_mut("collector.yaml")
            .unwrap()
            .body
            .extend_from_slice(b"exporters:\n  file: {}\n");
        let err = run(&s, &tampered).unwrap_err();
        let text = crate::report::ErrorReport(&err).to_string();
        assert!(text.contains("digest mismatch"), "{text}");
        let mut staging = offer("receivers:\n  otlp: {}\n");
        sign(&s, &mut staging, ("env", "staging"));
        let err = run(&s, &staging).unwrap_err();
        let text = crate::report::ErrorReport(&err).to_string();
        assert!(text.contains("env=staging"), "{text}");
    }

    #[test]
    fn the_policy_applies_to_signed_configs_too() {
        let mut s = setup();
        s.settings.deny_components = vec!["file".to_owned()];
        let mut map = offer("exporters:\n  file: {path: /tmp/x}\n");
        sign(&s, &mut map, ("env", "prod"));
        assert!(matches!(run(&s, &map), Err(RemoteConfigError::Refused(_))));
    }

    #[test]
    fn the_journal_gives_the_status_to_report() {
        let mut record = ConfigRecord::default();
        let nothing = status_from_record(&record);
        assert!(nothing.last_remote_config_hash.is_empty());
        assert_eq!(nothing.status, v1::RemoteConfigStatuses::Unset as i32);
        record.applied = Some("0a".to_owned());
        let applied = status_from_record(&record);
        assert_eq!(applied.last_remote_config_hash, vec![0x0a]);
        assert_eq!(applied.status, v1::RemoteConfigStatuses::Applied as i32);
        record.failed = Some(FailedConfig {
            hash: "0b".to_owned(),
            message: "bad".to_owned(),
        });
        let failed = status_from_record(&record);
        assert_eq!(failed.status, v1::RemoteConfigStatuses::Failed as i32);
        assert_eq!(failed.error_message, "bad");
    }
}
