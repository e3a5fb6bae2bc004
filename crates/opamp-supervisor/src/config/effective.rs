//! The collector's config files as the OpAMP `EffectiveConfig` report.

use std::collections::HashMap;
use std::path::Path;

use opamp_proto::v1::{AgentConfigFile, AgentConfigMap, EffectiveConfig};

use super::{AgentSettings, ConfigError};

impl AgentSettings {
    /// Reads `config_files` into an `EffectiveConfig`, keyed by each file's path, with a
    /// content type from its extension (`text/yaml`, `application/json`, else `text/plain`).
    ///
    /// # Errors
    /// [`ConfigError::EffectiveConfig`] naming the file that cannot be read.
    pub fn read_effective_config(&self) -> Result<EffectiveConfig, ConfigError> {
        let mut config_map = HashMap::with_capacity(self.config_files.len());
        for path in &self.config_files {
            let body = std::fs::read(path).map_err(|source| ConfigError::EffectiveConfig {
                path: path.clone(),
                source,
            })?;
            config_map.insert(
                path.display().to_string(),
                AgentConfigFile {
                    body,
                    content_type: content_type(path).to_owned(),
                },
            );
        }
        Ok(EffectiveConfig {
            config_map: Some(AgentConfigMap { config_map }),
        })
    }
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => "text/yaml",
        Some("json") => "application/json",
        _ => "text/plain",
    }
}
