//! `supervisor.yaml`: accepted shapes, defaults, and every rejection with file, line and reason.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use opamp_supervisor::config::{ConfigError, EndpointScheme, KeySource, SupervisorConfig};

/// The upstream article's shape, nothing more.
const ARTICLE: &str = "\
server:
  endpoint: wss://opamp.example.invalid:4320/v1/opamp
  tls:
    ca_file: certs/ca.pem
    cert_file: certs/client.pem
    key_file: certs/client-key.pem
agent:
  executable: /usr/local/bin/otelcol-contrib
  storage_dir: /var/lib/opamp-supervisor
capabilities:
  accepts_packages: true
  reports_health: true
  reports_effective_config: true
";

const FULL: &str = "\
server:
  endpoint: http://127.0.0.1:4320/v1/opamp
  headers:
    Authorization: Bearer abc
agent:
  executable: bin/otelcol
  storage_dir: state
  args: [--config, /etc/otelcol/config.yaml]
  env:
    GOMAXPROCS: \"2\"
  config_files: [/etc/otelcol/config.yaml]
  package_name: otelcol
  archive_executable: otelcol-contrib
capabilities:
  accepts_packages: false
  reports_health: true
  reports_effective_config: false
health:
  http_url: http://127.0.0.1:13133/
  liveness_window: 1500ms
  start_timeout: 20s
  health_timeout: 2s
  check_interval: 5s
stop_timeout: 3s
restart_backoff:
  initial: 250ms
  max: 8s
  max_restarts: 7
  reset_after: 2m
trust:
  keys:
    - file: keys/release.pem
      id: release-2026
      not_after: 2027-01-01T00:00:00Z
    - pem: |
        -----BEGIN PUBLIC KEY-----
        MCowBQYDK2VwAyEA
        -----END PUBLIC KEY-----
  revoked: [old-key]
  require_signature: true
  allow_compatible_mode: true
heartbeat_interval: 45s
";

fn parse(text: &str) -> Result<SupervisorConfig, ConfigError> {
    SupervisorConfig::from_yaml_str(text, Path::new("/etc/opamp/supervisor.yaml"))
}

/// Asserts a rejection at `line` whose message contains every `needles`, and that the
/// rendered error names the file and line.
fn assert_rejected(text: &str, line: usize, needles: &[&str]) {
    let err = parse(text).expect_err("config should be rejected");
    let rendered = err.to_string();
    assert_eq!(err.line(), Some(line), "wrong line in: {rendered}");
    assert!(
        rendered.starts_with(&format!("/etc/opamp/supervisor.yaml: line {line}")),
        "file and line missing in: {rendered}"
    );
    for needle in needles {
        assert!(
            rendered.contains(needle),
            "{needle:?} missing in: {rendered}"
        );
    }
}

#[test]
fn article_shape_parses_with_defaults() {
    let c = parse(ARTICLE).unwrap();
    assert_eq!(c.server.endpoint.scheme(), EndpointScheme::Wss);
    assert_eq!(
        c.server.endpoint.url(),
        "wss://opamp.example.invalid:4320/v1/opamp"
    );
    let tls = c.server.tls.as_ref().unwrap();
    assert_eq!(
        tls.ca_file.as_deref(),
        Some(Path::new("/etc/opamp/certs/ca.pem"))
    );
    assert_eq!(
        c.agent.executable,
        Path::new("/usr/local/bin/otelcol-contrib")
    );
    assert_eq!(
        c.agent.archive_executable_name().as_deref(),
        Some("otelcol-contrib")
    );
    assert!(c.capabilities.accepts_packages && c.capabilities.reports_health);
    assert_eq!(c.health.http_url, None);
    assert_eq!(c.health.start_timeout, Duration::from_secs(30));
    assert_eq!(c.stop_timeout, Duration::from_secs(10));
    assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(c.restart_backoff.max_restarts, 5);
    assert!(c.trust.require_signature && c.trust.refuses_all_packages());
}

#[test]
fn every_extension_key_is_read() {
    let c = parse(FULL).unwrap();
    assert_eq!(c.server.endpoint.scheme(), EndpointScheme::Http);
    assert_eq!(c.server.headers["Authorization"], "Bearer abc");
    assert_eq!(c.agent.executable, Path::new("/etc/opamp/bin/otelcol"));
    assert_eq!(c.agent.storage_dir, Path::new("/etc/opamp/state"));
    assert_eq!(c.agent.args, ["--config", "/etc/otelcol/config.yaml"]);
    assert_eq!(c.agent.env["GOMAXPROCS"], "2");
    assert_eq!(
        c.agent.config_files,
        [Path::new("/etc/otelcol/config.yaml")]
    );
    assert_eq!(c.agent.package_name.as_deref(), Some("otelcol"));
    assert_eq!(
        c.agent.archive_executable_name().as_deref(),
        Some("otelcol-contrib")
    );
    assert!(!c.capabilities.accepts_packages && !c.capabilities.reports_effective_config);
    assert_eq!(
        c.health.http_url.as_deref(),
        Some("http://127.0.0.1:13133/")
    );
    assert_eq!(c.health.liveness_window, Duration::from_millis(1500));
    assert_eq!(c.health.start_timeout, Duration::from_secs(20));
    assert_eq!(c.health.health_timeout, Duration::from_secs(2));
    assert_eq!(c.health.check_interval, Duration::from_secs(5));
    assert_eq!(c.stop_timeout, Duration::from_secs(3));
    assert_eq!(c.restart_backoff.initial, Duration::from_millis(250));
    assert_eq!(c.restart_backoff.max, Duration::from_secs(8));
    assert_eq!(c.restart_backoff.max_restarts, 7);
    assert_eq!(c.restart_backoff.reset_after, Duration::from_secs(120));
    assert_eq!(c.trust.keys.len(), 2);
    assert_eq!(
        c.trust.keys[0].source,
        KeySource::File("/etc/opamp/keys/release.pem".into())
    );
    assert_eq!(c.trust.keys[0].id.as_deref(), Some("release-2026"));
    assert_eq!(
        c.trust.keys[0]
            .not_after
            .unwrap()
            .duration_since(UNIX_EPOCH)
            .unwrap(),
        Duration::from_secs(1_798_761_600)
    );
    assert!(
        matches!(&c.trust.keys[1].source, KeySource::Pem(p) if p.starts_with("-----BEGIN PUBLIC KEY-----"))
    );
    assert_eq!(c.trust.revoked, ["old-key"]);
    assert!(c.trust.allow_compatible_mode && !c.trust.refuses_all_packages());
    assert_eq!(c.heartbeat_interval, Duration::from_secs(45));
}

#[test]
fn load_reads_the_file_and_names_it_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("supervisor.yaml");
    std::fs::write(&path, ARTICLE).unwrap();
    let c = SupervisorConfig::load(&path).unwrap();
    assert_eq!(
        c.server.tls.unwrap().key_file.unwrap(),
        dir.path().join("certs/client-key.pem")
    );
    let missing = dir.path().join("nope.yaml");
    let err = SupervisorConfig::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains(&missing.display().to_string()));
}

#[test]
fn unknown_keys_are_rejected_at_their_line() {
    assert_rejected(
        &ARTICLE.replace(
            "  reports_health: true\n",
            "  reports_health: true\n  reports_weather: true\n",
        ),
        13,
        &["unknown field `reports_weather`", "capabilities"],
    );
    assert_rejected(
        &format!("{ARTICLE}colour: blue\n"),
        14,
        &["unknown field `colour`"],
    );
    assert_rejected(
        &ARTICLE.replace("    ca_file:", "    ca_fle:"),
        4,
        &["unknown field `ca_fle`", "ca_file"],
    );
    assert_rejected(
        &FULL.replace("      id: release-2026", "      kid: release-2026"),
        33,
        &["unknown field `kid`"],
    );
}

#[test]
fn missing_required_keys_are_named() {
    let err = parse("server:\n  endpoint: ws://127.0.0.1:1/\n").unwrap_err();
    assert!(err.to_string().contains("missing field `agent`"), "{err}");
    let text = ARTICLE.replace("  storage_dir: /var/lib/opamp-supervisor\n", "");
    let err = parse(&text).unwrap_err();
    assert!(
        err.to_string().contains("missing field `storage_dir`"),
        "{err}"
    );
    assert_eq!(err.line(), Some(8));
}

#[test]
fn invalid_values_are_rejected_at_their_line() {
    assert_rejected(
        &ARTICLE.replace("wss://opamp", "ftp://opamp"),
        2,
        &["ws://, wss://, http://, https://"],
    );
    assert_rejected(
        &ARTICLE.replace("wss://opamp.example.invalid:4320/v1/opamp", "not a url"),
        2,
        &["invalid URL"],
    );
    assert_rejected(
        &ARTICLE.replace("  accepts_packages: true", "  accepts_packages: maybe"),
        11,
        &["accepts_packages", "invalid type"],
    );
    assert_rejected(
        &FULL.replace("  start_timeout: 20s", "  start_timeout: soon"),
        21,
        &["invalid duration \"soon\""],
    );
    assert_rejected(
        &FULL.replace("stop_timeout: 3s", "stop_timeout: 0s"),
        24,
        &["greater than zero"],
    );
    assert_rejected(
        &FULL.replace("  max_restarts: 7", "  max_restarts: -1"),
        28,
        &["max_restarts"],
    );
    assert_rejected(
        &FULL.replace(
            "  http_url: http://127.0.0.1:13133/",
            "  http_url: ws://127.0.0.1:13133/",
        ),
        19,
        &["http://, https://"],
    );
    assert_rejected(
        &FULL.replace(
            "      not_after: 2027-01-01T00:00:00Z",
            "      not_after: next tuesday",
        ),
        34,
        &["invalid timestamp"],
    );
    assert_rejected(
        &FULL.replace(
            "  archive_executable: otelcol-contrib",
            "  archive_executable: ../evil",
        ),
        13,
        &["plain file name"],
    );
    assert_rejected(
        &FULL.replace("    Authorization: Bearer abc", "    \"Bad Header\": x"),
        4,
        &["not a valid header name"],
    );
    assert_rejected(
        &FULL.replace("    GOMAXPROCS: \"2\"", "    \"A=B\": x"),
        10,
        &["environment variable name"],
    );
    assert_rejected(
        &ARTICLE.replace(
            "  executable: /usr/local/bin/otelcol-contrib",
            "  executable: \"\"",
        ),
        8,
        &["path must not be empty"],
    );
}

#[test]
fn trust_keys_need_exactly_one_source() {
    let both = FULL.replace(
        "      id: release-2026",
        "      pem: xyz\n      id: release-2026",
    );
    let err = parse(&both).unwrap_err();
    assert!(
        err.to_string().contains("either `file` or `pem`, not both"),
        "{err}"
    );
    assert_eq!(
        err.line(),
        Some(32),
        "the key item starts on line 32: {err}"
    );
    let neither = FULL.replace("    - file: keys/release.pem\n      id:", "    - id:");
    let err = parse(&neither).unwrap_err();
    assert!(err.to_string().contains("needs `file` or `pem`"), "{err}");
}

#[test]
fn cross_field_mistakes_are_reported_at_the_blamed_key() {
    assert_rejected(
        &ARTICLE.replace("wss://", "ws://"),
        3,
        &["server.tls is set", "not wss:// or https://"],
    );
    assert_rejected(
        &ARTICLE.replace("    key_file: certs/client-key.pem\n", ""),
        3,
        &["cert_file and server.tls.key_file"],
    );
    assert_rejected(
        &FULL.replace("  liveness_window: 1500ms", "  liveness_window: 30s"),
        20,
        &["liveness_window (30s) must be shorter than health.start_timeout (20s)"],
    );
    assert_rejected(
        &FULL.replace("  initial: 250ms", "  initial: 1m"),
        26,
        &["restart_backoff.initial (1m) is longer than restart_backoff.max (8s)"],
    );
    assert_rejected(
        &FULL.replace("  package_name: otelcol", "  package_name: \"\""),
        12,
        &["package_name must not be empty"],
    );
}

#[test]
fn yaml_syntax_errors_carry_a_line() {
    let err = parse("server:\n  endpoint: [unclosed\nagent: {}\n").unwrap_err();
    assert!(err.line().is_some(), "{err}");
    assert!(
        err.to_string()
            .starts_with("/etc/opamp/supervisor.yaml: line"),
        "{err}"
    );
}

#[test]
fn config_files_become_the_effective_config_report() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("otel.yaml"), "receivers: {}\n").unwrap();
    std::fs::write(dir.path().join("extra.json"), "{}").unwrap();
    let text = ARTICLE.replace(
        "  storage_dir: /var/lib/opamp-supervisor\n",
        "  storage_dir: /var/lib/opamp-supervisor\n  config_files: [otel.yaml, extra.json]\n",
    );
    let config =
        SupervisorConfig::from_yaml_str(&text, &dir.path().join("supervisor.yaml")).unwrap();
    let effective = config.agent.read_effective_config().unwrap();
    let map = effective.config_map.unwrap().config_map;
    let yaml = &map[&dir.path().join("otel.yaml").display().to_string()];
    assert_eq!(
        (yaml.body.as_slice(), yaml.content_type.as_str()),
        (&b"receivers: {}\n"[..], "text/yaml")
    );
    let json = &map[&dir.path().join("extra.json").display().to_string()];
    assert_eq!(json.content_type, "application/json");

    std::fs::remove_file(dir.path().join("extra.json")).unwrap();
    let err = config.agent.read_effective_config().unwrap_err();
    assert!(matches!(err, ConfigError::EffectiveConfig { .. }));
    assert!(err.to_string().contains("extra.json"), "{err}");
}
