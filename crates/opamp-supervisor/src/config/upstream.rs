//! Converting an upstream `opampsupervisor` config (the OpenTelemetry Collector contrib
//! supervisor) into this supervisor's config, for the keys that mean the same thing.
//!
//! | upstream | here |
//! | --- | --- |
//! | `server.endpoint`, `server.headers` | same keys |
//! | `server.tls.ca_file`, `cert_file`, `key_file` | same keys |
//! | `server.tls.insecure_skip_verify: true` | refused: the server's certificate is always checked |
//! | `storage.directory` | `agent.storage_dir` |
//! | `agent.executable`, `agent.args`, `agent.env` | same keys |
//! | `agent.config_files` | `--config <file>` arguments first, and `agent.config_files` |
//! | `agent.description.non_identifying_attributes` | `agent.labels` |
//! | `agent.health_check_port` | `health.http_url: http://127.0.0.1:<port>/` |
//! | `capabilities.*` we implement | same keys |
//! | other capabilities set to `true`, other keys | a warning each, then ignored |
//!
//! Upstream has no package trust settings; the release keys are given separately.
//!
//! ```
//! use opamp_supervisor::config::upstream::convert;
//! let upstream = "
//! server:
//!   endpoint: wss://opamp.example.invalid/v1/opamp
//! capabilities:
//!   reports_effective_config: true
//!   accepts_remote_config: true
//! storage:
//!   directory: /var/lib/otelcol/supervisor
//! agent:
//!   executable: /usr/local/bin/otelcol-contrib
//! ";
//! let converted = convert(upstream, &["/etc/opamp/release.pub".into()])?;
//! assert!(converted.yaml.contains("storage_dir: \"/var/lib/otelcol/supervisor\""));
//! assert_eq!(converted.warnings.len(), 1); // accepts_remote_config is not implemented
//! # Ok::<(), opamp_supervisor::config::upstream::UpstreamError>(())
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;

/// Capabilities this supervisor implements, by their upstream (and our) key.
const IMPLEMENTED: [&str; 4] = [
    "accepts_packages",
    "reports_health",
    "reports_effective_config",
    "accepts_restart_command",
];

/// Why an upstream config cannot be converted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The text is not a YAML document of the upstream shape.
    #[error("not an opampsupervisor config: {reason}")]
    Parse {
        /// What the parser said.
        reason: String,
    },
    /// A key this supervisor needs is absent.
    #[error("{key} is required")]
    Missing {
        /// The upstream key.
        key: &'static str,
    },
    /// A setting this supervisor deliberately does not offer.
    #[error("{key}: {reason}")]
    Unsupported {
        /// The upstream key.
        key: &'static str,
        /// Why, and what to do instead.
        reason: &'static str,
    },
}

/// The converted config and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Conversion {
    /// This supervisor's config, as YAML.
    pub yaml: String,
    /// One line per upstream setting that was ignored.
    pub warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Upstream {
    server: Option<Server>,
    #[serde(default)]
    capabilities: BTreeMap<String, bool>,
    storage: Option<Storage>,
    agent: Option<Agent>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct Server {
    endpoint: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    tls: Option<Tls>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct Tls {
    #[serde(default)]
    insecure_skip_verify: bool,
    ca_file: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct Storage {
    directory: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct Agent {
    executable: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    config_files: Vec<String>,
    description: Option<Description>,
    health_check_port: Option<u16>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct Description {
    #[serde(default)]
    non_identifying_attributes: BTreeMap<String, String>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

/// Converts the upstream config `text`; `trust_keys` are the release public keys (PEM files)
/// that sign the packages this supervisor may install.
///
/// # Errors
/// [`UpstreamError`] for text that is not an upstream config, a missing `server.endpoint`,
/// `storage.directory` or `agent.executable`, or `insecure_skip_verify: true`.
pub fn convert(text: &str, trust_keys: &[PathBuf]) -> Result<Conversion, UpstreamError> {
    let upstream: Upstream = serde_norway::from_str(text).map_err(|e| UpstreamError::Parse {
        reason: e.to_string(),
    })?;
    let mut warnings = Vec::new();
    let mut ignore = |prefix: &str, other: &BTreeMap<String, IgnoredAny>| {
        for key in other.keys() {
            warnings.push(format!("{prefix}{key} has no equivalent here; ignored"));
        }
    };
    ignore("", &upstream.other);
    let server = upstream.server.ok_or(UpstreamError::Missing {
        key: "server.endpoint",
    })?;
    ignore("server.", &server.other);
    let endpoint = server.endpoint.ok_or(UpstreamError::Missing {
        key: "server.endpoint",
    })?;
    let storage = upstream.storage.ok_or(UpstreamError::Missing {
        key: "storage.directory",
    })?;
    ignore("storage.", &storage.other);
    let storage_dir = storage.directory.ok_or(UpstreamError::Missing {
        key: "storage.directory",
    })?;
    let agent = upstream.agent.ok_or(UpstreamError::Missing {
        key: "agent.executable",
    })?;
    ignore("agent.", &agent.other);
    let executable = agent.executable.ok_or(UpstreamError::Missing {
        key: "agent.executable",
    })?;

    let mut yaml = String::from(
        "# Converted from an opampsupervisor config by `opamp supervisor convert-config`.\n",
    );
    line(&mut yaml, 0, "server:");
    line(&mut yaml, 1, &format!("endpoint: {}", quote(&endpoint)));
    if let Some(tls) = server.tls {
        ignore("server.tls.", &tls.other);
        if tls.insecure_skip_verify {
            return Err(UpstreamError::Unsupported {
                key: "server.tls.insecure_skip_verify",
                reason: "this supervisor always checks the server's certificate; name the CA \
                         that signed it in server.tls.ca_file instead",
            });
        }
        let files = [
            ("ca_file", tls.ca_file),
            ("cert_file", tls.cert_file),
            ("key_file", tls.key_file),
        ];
        if files.iter().any(|(_, file)| file.is_some()) {
            line(&mut yaml, 1, "tls:");
            for (key, file) in files {
                if let Some(file) = file {
                    line(&mut yaml, 2, &format!("{key}: {}", quote(&file)));
                }
            }
        }
    }
    map(&mut yaml, 1, "headers", &server.headers);

    line(&mut yaml, 0, "agent:");
    line(&mut yaml, 1, &format!("executable: {}", quote(&executable)));
    line(
        &mut yaml,
        1,
        &format!("storage_dir: {}", quote(&storage_dir)),
    );
    // Upstream passes each config file to the collector itself; here the arguments are explicit.
    let mut args: Vec<&str> = Vec::new();
    for file in &agent.config_files {
        args.extend(["--config", file.as_str()]);
    }
    args.extend(agent.args.iter().map(String::as_str));
    list(&mut yaml, 1, "args", &args);
    map(&mut yaml, 1, "env", &agent.env);
    let files: Vec<&str> = agent.config_files.iter().map(String::as_str).collect();
    list(&mut yaml, 1, "config_files", &files);
    if let Some(description) = &agent.description {
        ignore("agent.description.", &description.other);
        map(
            &mut yaml,
            1,
            "labels",
            &description.non_identifying_attributes,
        );
    }

    line(&mut yaml, 0, "capabilities:");
    for (name, enabled) in &upstream.capabilities {
        if IMPLEMENTED.contains(&name.as_str()) {
            line(&mut yaml, 1, &format!("{name}: {enabled}"));
        } else if *enabled {
            warnings.push(format!(
                "capabilities.{name} is not implemented by this supervisor; ignored"
            ));
        }
    }
    if let Some(port) = agent.health_check_port {
        line(&mut yaml, 0, "health:");
        line(
            &mut yaml,
            1,
            &format!("http_url: \"http://127.0.0.1:{port}/\""),
        );
    }
    if !trust_keys.is_empty() {
        line(&mut yaml, 0, "trust:");
        line(&mut yaml, 1, "keys:");
        for key in trust_keys {
            line(
                &mut yaml,
                2,
                &format!("- file: {}", quote(&key.to_string_lossy())),
            );
        }
    }
    Ok(Conversion { yaml, warnings })
}

fn line(out: &mut String, depth: usize, text: &str) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{:width$}{text}", "", width = depth * 2);
}

fn list(out: &mut String, depth: usize, key: &str, items: &[&str]) {
    if items.is_empty() {
        return;
    }
    let quoted: Vec<String> = items.iter().map(|item| quote(item)).collect();
    line(out, depth, &format!("{key}: [{}]", quoted.join(", ")));
}

fn map(out: &mut String, depth: usize, key: &str, entries: &BTreeMap<String, String>) {
    if entries.is_empty() {
        return;
    }
    line(out, depth, &format!("{key}:"));
    for (name, value) in entries {
        line(
            out,
            depth + 1,
            &format!("{}: {}", quote(name), quote(value)),
        );
    }
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::SupervisorConfig;

    const UPSTREAM: &str = r#"
server:
  endpoint: wss://opamp.example.invalid:4320/v1/opamp
  headers:
    Authorization: "Bearer t0ken"
  tls:
    insecure_skip_verify: false
    ca_file: /etc/opamp/ca.pem
capabilities:
  accepts_remote_config: true
  reports_effective_config: true
  reports_own_metrics: true
  reports_health: true
  accepts_restart_command: false
  reports_remote_config: false
storage:
  directory: /var/lib/otelcol/supervisor
agent:
  executable: /opt/otelcol-contrib/otelcol-contrib
  config_files: [/etc/otelcol/base.yaml, "/etc/otelcol/extra: quoted.yaml"]
  args: ["--feature-gates=-x"]
  env:
    GOMEMLIMIT: 512MiB
  description:
    identifying_attributes:
      service.name: otelcol
    non_identifying_attributes:
      env: prod
  health_check_port: 13133
  orphan_detection_interval: 5s
telemetry:
  logs:
    level: info
"#;

    #[test]
    fn the_fields_that_mean_the_same_carry_over_and_the_result_loads() {
        let converted = convert(UPSTREAM, &[PathBuf::from("/etc/opamp/release.pub")]).unwrap();
        let config =
            SupervisorConfig::from_yaml_str(&converted.yaml, Path::new("/etc/opamp/s.yaml"))
                .unwrap_or_else(|e| panic!("{e}\n{}", converted.yaml));
        assert_eq!(
            config.agent.storage_dir,
            Path::new("/var/lib/otelcol/supervisor")
        );
        assert_eq!(
            config.agent.executable,
            Path::new("/opt/otelcol-contrib/otelcol-contrib")
        );
        assert_eq!(
            config.agent.args,
            [
                "--config",
                "/etc/otelcol/base.yaml",
                "--config",
                "/etc/otelcol/extra: quoted.yaml",
                "--feature-gates=-x"
            ]
        );
        assert_eq!(config.agent.config_files.len(), 2);
        assert_eq!(config.agent.env["GOMEMLIMIT"], "512MiB");
        assert_eq!(config.agent.labels["env"], "prod");
        assert_eq!(config.server.headers["Authorization"], "Bearer t0ken");
        let tls = config.server.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/opamp/ca.pem")));
        assert!(config.capabilities.reports_health);
        assert!(config.capabilities.reports_effective_config);
        assert!(!config.capabilities.accepts_restart_command);
        assert_eq!(
            config.health.http_url.as_deref(),
            Some("http://127.0.0.1:13133/")
        );
        assert_eq!(config.trust.keys.len(), 1);
        let mut warnings = converted.warnings.clone();
        warnings.sort();
        assert_eq!(
            warnings,
            [
                "agent.description.identifying_attributes has no equivalent here; ignored",
                "agent.orphan_detection_interval has no equivalent here; ignored",
                "capabilities.accepts_remote_config is not implemented by this supervisor; ignored",
                "capabilities.reports_own_metrics is not implemented by this supervisor; ignored",
                "telemetry has no equivalent here; ignored",
            ]
        );
    }

    #[test]
    fn skipping_certificate_checks_and_missing_keys_are_refused() {
        let insecure =
            UPSTREAM.replace("insecure_skip_verify: false", "insecure_skip_verify: true");
        assert!(matches!(
            convert(&insecure, &[]),
            Err(UpstreamError::Unsupported {
                key: "server.tls.insecure_skip_verify",
                ..
            })
        ));
        let no_storage =
            UPSTREAM.replace("storage:\n  directory: /var/lib/otelcol/supervisor\n", "");
        assert!(matches!(
            convert(&no_storage, &[]),
            Err(UpstreamError::Missing {
                key: "storage.directory"
            })
        ));
        assert!(matches!(
            convert("server: [", &[]),
            Err(UpstreamError::Parse { .. })
        ));
    }
}
