//! Remote configs in the worker: decide with [`crate::remote_config::evaluate`], then write,
//! restart, health-gate, and put the last good config back on failure.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use opamp_proto::v1::{self, RemoteConfigStatuses};
use opamp_verify::KeyRing;

use super::worker::Worker;
use crate::config::{RemoteConfigSettings, SupervisorConfig};
use crate::install::{Collector, HealthOutcome};
use crate::remote_config::{
    self, BaseFile, ConfigFacts, ConfigRecord, ConfigStore, LIVE_CONFIG_FILE, RemoteConfigError,
    redact,
};
use crate::report::ErrorReport;

/// How long to wait for a failed collector's last stderr line after its exit was seen.
const STDERR_DRAIN: Duration = Duration::from_secs(1);

/// The worker's remote-config state (present when `remote_config.mode` is on).
#[derive(Debug)]
pub(super) struct RemoteConfigs {
    pub(super) settings: RemoteConfigSettings,
    pub(super) config_files: Vec<PathBuf>,
    pub(super) store: ConfigStore,
    pub(super) record: ConfigRecord,
    pub(super) keys: KeyRing,
    pub(super) attributes: BTreeMap<String, String>,
    pub(super) start_timeout: Duration,
    pub(super) reports_effective: bool,
}

/// Start-up: the config store recovered (an interrupted apply undone), or `None` when remote
/// configs are off.
pub(super) fn recover(
    config: &SupervisorConfig,
) -> Result<Option<(ConfigStore, ConfigRecord)>, RemoteConfigError> {
    if !config.remote_config.mode.is_on() {
        return Ok(None);
    }
    let base = read_base(&config.agent.config_files)?;
    let initial = remote_config::compose::to_yaml(&remote_config::compose::compose_base(&base)?)?;
    let store = ConfigStore::new(&config.agent.storage_dir);
    let record = store.recover(&initial)?;
    Ok(Some((store, record)))
}

fn read_base(paths: &[PathBuf]) -> Result<Vec<BaseFile>, RemoteConfigError> {
    paths
        .iter()
        .map(|path| {
            std::fs::read(path)
                .map(|body| BaseFile {
                    name: path.display().to_string(),
                    body,
                })
                .map_err(|source| RemoteConfigError::Io {
                    action: "read",
                    path: path.clone(),
                    source,
                })
        })
        .collect()
}

/// The effective config to report: the live file in remote mode, else `agent.config_files`;
/// secrets redacted ([`redact`]). Only called when `reports_effective_config` is on.
pub(super) fn effective_config(
    config_files: &[PathBuf],
    store: Option<&ConfigStore>,
) -> Option<v1::EffectiveConfig> {
    let files: Vec<(String, PathBuf)> = match store {
        Some(store) => vec![(LIVE_CONFIG_FILE.to_owned(), store.live_path().to_path_buf())],
        None => config_files
            .iter()
            .map(|p| (p.display().to_string(), p.clone()))
            .collect(),
    };
    let mut config_map = HashMap::with_capacity(files.len());
    for (name, path) in files {
        match std::fs::read(&path) {
            Ok(body) => {
                config_map.insert(
                    name,
                    v1::AgentConfigFile {
                        body: redact::redact_text(&body),
                        content_type: content_type(&path).to_owned(),
                    },
                );
            }
            Err(err) => {
                tracing::warn!(error = %ErrorReport(&err), path = %path.display(), "effective config not reported");
                return None;
            }
        }
    }
    Some(v1::EffectiveConfig {
        config_map: Some(v1::AgentConfigMap { config_map }),
    })
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        _ => "text/yaml",
    }
}

impl Worker {
    /// Decides on an offered remote config and carries it out; reports every outcome.
    pub(super) async fn handle_config(&mut self, offer: v1::AgentRemoteConfig) {
        let Some(mut remote) = self.remote.take() else {
            tracing::warn!("remote config offered, but remote_config.mode is off; ignoring it");
            return;
        };
        self.apply_config(&mut remote, offer).await;
        self.remote = Some(remote);
    }

    async fn apply_config(&mut self, remote: &mut RemoteConfigs, offer: v1::AgentRemoteConfig) {
        let hash = offer.config_hash.clone();
        let hash_hex = hex::encode(&hash);
        let Some(offered) = offer.config.as_ref() else {
            return;
        };
        if remote
            .record
            .failed
            .as_ref()
            .is_some_and(|f| f.hash == hash_hex)
        {
            tracing::info!(hash = %hash_hex, "remote config failed before; not retrying it");
            return;
        }
        if remote.record.applied.as_deref() == Some(&hash_hex) {
            // What runs (e.g. the server reverting to it after a failed config): no restart.
            if remote.record.failed.is_some()
                && let Err(err) = remote.store.clear_failure(&mut remote.record)
            {
                tracing::error!(error = %ErrorReport(&err), "cannot journal the remote config status");
            }
            let status = remote_config::status(&hash, RemoteConfigStatuses::Applied, "");
            return self.report_config(remote, status, None);
        }
        let base = match read_base(&remote.config_files) {
            Ok(base) => base,
            Err(err) => {
                return self.config_failed(remote, &hash, &ErrorReport(&err).to_string());
            }
        };
        let facts = ConfigFacts {
            settings: &remote.settings,
            base: &base,
            keys: &remote.keys,
            attributes: &remote.attributes,
            now: SystemTime::now(),
        };
        let candidate = match remote_config::evaluate(offered, &facts) {
            Ok(candidate) => candidate,
            Err(err) => {
                tracing::warn!(hash = %hash_hex, error = %ErrorReport(&err), "remote config refused");
                return self.config_failed(remote, &hash, &ErrorReport(&err).to_string());
            }
        };
        tracing::info!(hash = %hash_hex, signed_by = ?candidate.signed_by, "applying remote config");
        let applying = remote_config::status(&hash, RemoteConfigStatuses::Applying, "");
        self.report_config(remote, applying, None);
        if let Err(err) = remote
            .store
            .begin(&mut remote.record, &hash_hex, &candidate.yaml)
        {
            return self.config_failed(remote, &hash, &ErrorReport(&err).to_string());
        }
        let outcome = self.restart_gated(remote.start_timeout).await;
        if outcome.is_healthy() {
            if let Err(err) = remote
                .store
                .commit(&mut remote.record, &hash_hex, &candidate.yaml)
            {
                tracing::error!(error = %ErrorReport(&err), "remote config applied but not journaled");
            }
            tracing::info!(hash = %hash_hex, "remote config applied");
            let health = self.health.fresh().await;
            let applied = remote_config::status(&hash, RemoteConfigStatuses::Applied, "");
            return self.report_config(remote, applied, health);
        }
        // Only the failed process's own line: an older process's (the one stopped for the
        // restart) would blame the wrong config.
        let line = match outcome {
            HealthOutcome::Exited { .. } => {
                self.collector.last_exit_stderr_line(STDERR_DRAIN).await
            }
            _ => self.collector.running_stderr_line(),
        };
        let message = match line {
            Some(line) => format!("collector {outcome} with the new config: {line}"),
            None => format!("collector {outcome} with the new config"),
        };
        tracing::error!(hash = %hash_hex, %message, "remote config failed; restoring the last good config");
        if let Err(err) = remote
            .store
            .roll_back(&mut remote.record, &hash_hex, &message)
        {
            tracing::error!(error = %ErrorReport(&err), "cannot restore the last good config");
        }
        let restored = self.restart_gated(remote.start_timeout).await;
        if !restored.is_healthy() {
            tracing::error!(outcome = %restored, "the collector is not healthy on the last good config either");
        }
        let health = self.health.fresh().await;
        let failed = remote_config::status(&hash, RemoteConfigStatuses::Failed, &message);
        self.report_config(remote, failed, health);
    }

    /// Stops and starts the collector (it reads the live config file) and waits for the gate.
    async fn restart_gated(&mut self, timeout: Duration) -> HealthOutcome {
        if let Err(err) = self.collector.stop().await {
            tracing::error!(error = %ErrorReport(&err), "stopping the collector for a config change failed");
        }
        if let Err(err) = self.collector.start(&self.identity.executable).await {
            return HealthOutcome::Exited {
                status: format!("could not start: {}", ErrorReport(&err)),
            };
        }
        self.collector
            .wait_healthy(tokio::time::Instant::now() + timeout)
            .await
    }

    fn config_failed(&self, remote: &mut RemoteConfigs, hash: &[u8], message: &str) {
        if let Err(err) =
            remote
                .store
                .record_failure(&mut remote.record, &hex::encode(hash), message)
        {
            tracing::error!(error = %ErrorReport(&err), "cannot journal the refused remote config");
        }
        let failed = remote_config::status(hash, RemoteConfigStatuses::Failed, message);
        self.report_config(remote, failed, None);
    }

    fn report_config(
        &self,
        remote: &RemoteConfigs,
        status: v1::RemoteConfigStatus,
        health: Option<v1::ComponentHealth>,
    ) {
        let effective = remote
            .reports_effective
            .then(|| effective_config(&remote.config_files, Some(&remote.store)))
            .flatten();
        self.uplink.set_remote_config(status, effective, health);
    }
}
