//! Start-up settings: the embedded variant, overridden by environment, overridden by flags.

use std::fmt;
use std::path::PathBuf;

use crate::variant::{Behaviour, Variant};

/// Port of the collector's `health_check` extension, used when nothing else is configured.
pub const DEFAULT_HEALTH_PORT: u16 = 13133;

/// Prefix of every environment variable the test collector reads.
pub const ENV_PREFIX: &str = "OPAMP_TEST_COLLECTOR_";

/// What the binary was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--version`: print this version and exit.
    PrintVersion(String),
    /// `components`: print the component list (the text to print, in the format of
    /// `otelcol-contrib components`) and exit.
    PrintComponents(String),
    /// `--build-variant OUT`: write a copy of this executable to `OUT` that embeds `variant`
    /// (the resolved version and behaviour), then exit. For demos without a compiler.
    BuildVariant {
        /// Where to write the variant.
        out: PathBuf,
        /// What it embeds.
        variant: Variant,
    },
    /// Run as a collector.
    Run(Settings),
}

/// Everything a running test collector needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Reported version and scripted behaviour.
    pub variant: Variant,
    /// Loopback port of the health endpoint.
    pub health_port: u16,
    /// The `--config` file, if any.
    pub config_path: Option<PathBuf>,
    /// Contents of the `--config` file, kept to report as effective config.
    pub config_text: Option<String>,
}

/// A bad flag, environment value or config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Resolves settings. Precedence, lowest first: built-in defaults, the `embedded` trailer
/// variant, the config file (health port only), environment (`OPAMP_TEST_COLLECTOR_*`), flags.
///
/// Flags: `--version`, `components`, `--build-variant OUT`, `--config FILE`, `--health-port N`, `--set-version V`,
/// `--crash-on-start`, `--crash-after-ms N`, `--unhealthy-after-ms N`, `--hang-on-sigterm`.
/// Environment: `VERSION`, `HEALTH_PORT`, `CRASH_ON_START`, `CRASH_AFTER_MS`,
/// `UNHEALTHY_AFTER_MS`, `HANG_ON_SIGTERM` (each with the prefix; booleans are `1`/`true`).
///
/// The config file is the collector's YAML; the health port is taken from its
/// `endpoint: host:port` line (as under `extensions.health_check`) or a `health_port: N` line.
///
/// # Errors
/// Unknown flags, missing or malformed values, or an unreadable config file.
pub fn resolve(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
    embedded: Option<Variant>,
) -> Result<Command, UsageError> {
    let mut variant = embedded.unwrap_or_else(|| Variant::healthy(env!("CARGO_PKG_VERSION")));
    let mut health_port = DEFAULT_HEALTH_PORT;
    let mut flags = Flags::default();

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .ok_or_else(|| UsageError(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "--version" => flags.print_version = true,
            "components" => flags.print_components = true,
            "--build-variant" => {
                flags.build_variant = Some(PathBuf::from(value("--build-variant")?));
            }
            "--config" => flags.config = Some(PathBuf::from(value("--config")?)),
            "--health-port" => {
                flags.health_port = Some(number("--health-port", &value("--health-port")?)?)
            }
            "--set-version" => flags.version = Some(value("--set-version")?),
            "--crash-on-start" => flags.crash_on_start = true,
            "--crash-after-ms" => {
                flags.crash_after_ms =
                    Some(number("--crash-after-ms", &value("--crash-after-ms")?)?)
            }
            "--unhealthy-after-ms" => {
                flags.unhealthy_after_ms = Some(number(
                    "--unhealthy-after-ms",
                    &value("--unhealthy-after-ms")?,
                )?);
            }
            "--hang-on-sigterm" => flags.hang_on_sigterm = true,
            other => return Err(UsageError(format!("unknown argument {other:?}"))),
        }
    }

    let config_text = match &flags.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| UsageError(format!("cannot read config {}: {e}", path.display())))?,
        ),
        None => None,
    };
    if let Some(port) = config_text.as_deref().and_then(health_port_from_config) {
        health_port = port;
    }

    let env_var = |name: &str| env(&format!("{ENV_PREFIX}{name}"));
    if let Some(v) = env_var("VERSION") {
        variant.version = v;
    }
    if let Some(v) = env_var("HEALTH_PORT") {
        health_port = number("HEALTH_PORT", &v)?;
    }
    apply_env_behaviour(&mut variant.behaviour, &env_var)?;

    if let Some(v) = flags.version {
        variant.version = v;
    }
    if let Some(p) = flags.health_port {
        health_port = p;
    }
    let b = &mut variant.behaviour;
    b.crash_on_start |= flags.crash_on_start;
    b.hang_on_sigterm |= flags.hang_on_sigterm;
    b.crash_after_ms = flags.crash_after_ms.or(b.crash_after_ms);
    b.unhealthy_after_ms = flags.unhealthy_after_ms.or(b.unhealthy_after_ms);

    if flags.print_version {
        return Ok(Command::PrintVersion(variant.version));
    }
    if flags.print_components {
        return Ok(Command::PrintComponents(components_yaml(&variant.version)));
    }
    if let Some(out) = flags.build_variant {
        return Ok(Command::BuildVariant { out, variant });
    }
    Ok(Command::Run(Settings {
        variant,
        health_port,
        config_path: flags.config,
        config_text,
    }))
}

#[derive(Default)]
struct Flags {
    print_version: bool,
    print_components: bool,
    build_variant: Option<PathBuf>,
    config: Option<PathBuf>,
    health_port: Option<u16>,
    version: Option<String>,
    crash_on_start: bool,
    crash_after_ms: Option<u64>,
    unhealthy_after_ms: Option<u64>,
    hang_on_sigterm: bool,
}

fn apply_env_behaviour(
    b: &mut Behaviour,
    env_var: &impl Fn(&str) -> Option<String>,
) -> Result<(), UsageError> {
    if let Some(v) = env_var("CRASH_ON_START") {
        b.crash_on_start = boolean("CRASH_ON_START", &v)?;
    }
    if let Some(v) = env_var("HANG_ON_SIGTERM") {
        b.hang_on_sigterm = boolean("HANG_ON_SIGTERM", &v)?;
    }
    if let Some(v) = env_var("CRASH_AFTER_MS") {
        b.crash_after_ms = Some(number("CRASH_AFTER_MS", &v)?);
    }
    if let Some(v) = env_var("UNHEALTHY_AFTER_MS") {
        b.unhealthy_after_ms = Some(number("UNHEALTHY_AFTER_MS", &v)?);
    }
    Ok(())
}

/// What `components` prints: the shape of `otelcol-contrib components` (build info, then each
/// kind with name, module and stability), for a small fixed set of components.
pub fn components_yaml(version: &str) -> String {
    format!(
        "buildinfo:\n    command: opamp-test-collector\n    description: test collector\n    version: {version}\n\
         receivers:\n    - name: otlp\n      module: example.invalid/otlpreceiver v{version}\n      stability:\n        logs: Beta\n\
         processors:\n    - name: batch\n      module: example.invalid/batchprocessor v{version}\n\
         exporters:\n    - name: otlphttp\n      module: example.invalid/otlphttpexporter v{version}\n    - name: debug\n      module: example.invalid/debugexporter v{version}\n\
         extensions:\n    - name: health_check\n      module: example.invalid/healthcheckextension v{version}\n"
    )
}

/// Finds the health port in collector YAML without a YAML parser: the first
/// `endpoint: host:port` or `health_port: N` line.
pub fn health_port_from_config(text: &str) -> Option<u16> {
    text.lines().find_map(|line| {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("health_port:") {
            return v.trim().parse().ok();
        }
        let v = line
            .strip_prefix("endpoint:")?
            .trim()
            .trim_matches(['"', '\'']);
        v.rsplit_once(':')?.1.parse().ok()
    })
}

fn number<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, UsageError> {
    text.trim()
        .parse()
        .map_err(|_| UsageError(format!("{name}: {text:?} is not a valid number")))
}

fn boolean(name: &str, text: &str) -> Result<bool, UsageError> {
    match text.trim() {
        "1" | "true" => Ok(true),
        "0" | "false" | "" => Ok(false),
        other => Err(UsageError(format!(
            "{name}: {other:?} is not a boolean (1/0/true/false)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(
        args: &[&str],
        env: &[(&str, &str)],
        embedded: Option<Variant>,
    ) -> Result<Command, UsageError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (format!("{ENV_PREFIX}{k}"), v.to_string()))
            .collect();
        resolve(
            args.iter().map(|s| s.to_string()),
            |k| env.get(k).cloned(),
            embedded,
        )
    }

    fn settings(cmd: Command) -> Settings {
        match cmd {
            Command::Run(s) => s,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn flags_override_env_which_overrides_the_trailer() {
        let embedded = Variant::healthy("1.0.0").with_behaviour(Behaviour {
            crash_after_ms: Some(10),
            ..Behaviour::default()
        });
        let s = settings(run(&[], &[], Some(embedded.clone())).unwrap());
        assert_eq!(s.variant, embedded);
        assert_eq!(s.health_port, DEFAULT_HEALTH_PORT);

        let s = settings(
            run(
                &[],
                &[("VERSION", "2.0.0"), ("CRASH_AFTER_MS", "20")],
                Some(embedded.clone()),
            )
            .unwrap(),
        );
        assert_eq!(s.variant.version, "2.0.0");
        assert_eq!(s.variant.behaviour.crash_after_ms, Some(20));

        let s = settings(
            run(
                &[
                    "--set-version",
                    "3.0.0",
                    "--crash-after-ms",
                    "30",
                    "--health-port",
                    "4000",
                ],
                &[
                    ("VERSION", "2.0.0"),
                    ("CRASH_AFTER_MS", "20"),
                    ("HEALTH_PORT", "3000"),
                ],
                Some(embedded),
            )
            .unwrap(),
        );
        assert_eq!(s.variant.version, "3.0.0");
        assert_eq!(s.variant.behaviour.crash_after_ms, Some(30));
        assert_eq!(s.health_port, 4000);
    }

    #[test]
    fn build_variant_takes_the_resolved_version_and_behaviour() {
        let cmd = run(
            &[
                "--build-variant",
                "/tmp/v2",
                "--set-version",
                "2.0.0",
                "--crash-after-ms",
                "2000",
            ],
            &[],
            Some(Variant::healthy("1.0.0")),
        )
        .unwrap();
        let expected = Variant::healthy("2.0.0").with_behaviour(Behaviour {
            crash_after_ms: Some(2000),
            ..Behaviour::default()
        });
        assert_eq!(
            cmd,
            Command::BuildVariant {
                out: PathBuf::from("/tmp/v2"),
                variant: expected
            }
        );
    }

    #[test]
    fn version_flag_reports_the_resolved_version() {
        assert_eq!(
            run(&["--version"], &[], Some(Variant::healthy("9.9.9"))).unwrap(),
            Command::PrintVersion("9.9.9".into())
        );
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason() {
        assert!(
            run(&["--bogus"], &[], None)
                .unwrap_err()
                .0
                .contains("--bogus")
        );
        assert!(
            run(&["--health-port"], &[], None)
                .unwrap_err()
                .0
                .contains("needs a value")
        );
        assert!(
            run(&["--health-port", "x"], &[], None)
                .unwrap_err()
                .0
                .contains("not a valid number")
        );
        assert!(
            run(&[], &[("HANG_ON_SIGTERM", "maybe")], None)
                .unwrap_err()
                .0
                .contains("boolean")
        );
        assert!(
            run(&["--config", "/nonexistent/otel.yaml"], &[], None)
                .unwrap_err()
                .0
                .contains("cannot read config")
        );
    }

    #[test]
    fn config_file_sets_the_port_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("otel.yaml");
        let text = "extensions:\n  health_check:\n    endpoint: \"127.0.0.1:24242\"\n";
        std::fs::write(&path, text).unwrap();
        let s = settings(run(&["--config", path.to_str().unwrap()], &[], None).unwrap());
        assert_eq!(s.health_port, 24242);
        assert_eq!(s.config_text.as_deref(), Some(text));
        assert_eq!(health_port_from_config("health_port: 7\n"), Some(7));
        assert_eq!(health_port_from_config("receivers: {}\n"), None);
    }
}
