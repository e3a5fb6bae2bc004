//! Config rollouts on the wire: `RemoteConfigStatus` reports into engine events, and the
//! config hash a rollout wants into the `AgentRemoteConfig` the agent is offered.

use opamp_proto::v1;

use crate::FleetError;
use crate::config_catalog::{ConfigCatalog, empty_config_hash, remote_config};
pub(crate) use opamp_rollout::fleet::ConfigReport;

/// What one `RemoteConfigStatus` says, reduced to what the coordinator uses (hashes as
/// lower-case hex).
pub(crate) fn config_report(status: &v1::RemoteConfigStatus) -> ConfigReport {
    let hash = hex::encode(&status.last_remote_config_hash);
    match v1::RemoteConfigStatuses::try_from(status.status) {
        Ok(v1::RemoteConfigStatuses::Applied) => ConfigReport::Applied(hash),
        Ok(v1::RemoteConfigStatuses::Failed) => ConfigReport::Failed {
            hash,
            error: status.error_message.clone(),
        },
        _ => ConfigReport::InProgress,
    }
}

/// The hex hash of the empty config map (what agents without a remote config go back to).
pub(crate) fn empty_hash_hex() -> String {
    hex::encode(empty_config_hash())
}

/// Whether the server can offer the config whose hash is `hash_hex`: the empty config, or a
/// version in the catalog.
pub(crate) fn can_offer(catalog: &ConfigCatalog, hash_hex: &str) -> Result<bool, FleetError> {
    if hash_hex == empty_hash_hex() {
        return Ok(true);
    }
    let Ok(hash) = hex::decode(hash_hex) else {
        return Ok(false);
    };
    Ok(catalog.by_hash(&hash)?.is_some())
}

/// The `AgentRemoteConfig` for the config whose hash is `hash_hex`.
///
/// # Errors
/// [`FleetError::NotFound`] when neither the empty config nor in the catalog.
pub(crate) fn build_remote_config(
    catalog: &ConfigCatalog,
    hash_hex: &str,
) -> Result<v1::AgentRemoteConfig, FleetError> {
    if hash_hex == empty_hash_hex() {
        return Ok(remote_config(None));
    }
    let not_found = || FleetError::NotFound {
        what: format!("config with hash {hash_hex} in the config catalog"),
    };
    let hash = hex::decode(hash_hex).map_err(|_| not_found())?;
    let entry = catalog.by_hash(&hash)?.ok_or_else(not_found)?;
    Ok(remote_config(Some(&entry)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_give_applied_and_failed_reports_by_hex_hash() {
        let status = |status: v1::RemoteConfigStatuses, error: &str| v1::RemoteConfigStatus {
            last_remote_config_hash: vec![0xab, 0x01],
            status: status.into(),
            error_message: error.into(),
        };
        assert_eq!(
            config_report(&status(v1::RemoteConfigStatuses::Applied, "")),
            ConfigReport::Applied("ab01".into())
        );
        assert_eq!(
            config_report(&status(v1::RemoteConfigStatuses::Failed, "bad exporter")),
            ConfigReport::Failed {
                hash: "ab01".into(),
                error: "bad exporter".into()
            }
        );
        assert_eq!(
            config_report(&status(v1::RemoteConfigStatuses::Applying, "")),
            ConfigReport::InProgress
        );
    }
}
