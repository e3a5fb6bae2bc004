//! Properties of config parsing over mutated files: never a panic, and every rejection points
//! at a line that exists in the file.

use std::path::Path;

use opamp_supervisor::config::{ConfigError, SupervisorConfig};
use proptest::prelude::*;

const BASE: &str = "\
server:
  endpoint: https://127.0.0.1:4320/v1/opamp
  tls:
    ca_file: ca.pem
  headers:
    Authorization: Bearer abc
agent:
  executable: /opt/otelcol/otelcol
  storage_dir: /var/lib/opamp
  args: [--config, /etc/otelcol.yaml]
  env:
    GOMAXPROCS: \"2\"
  config_files: [/etc/otelcol.yaml]
health:
  http_url: http://127.0.0.1:13133/
  liveness_window: 1s
  start_timeout: 10s
stop_timeout: 3s
restart_backoff:
  initial: 100ms
  max: 1s
trust:
  keys:
    - file: k.pem
      not_after: 2030-01-01T00:00:00Z
heartbeat_interval: 30s
";

/// Replacement values that are wrong for most keys.
const JUNK: &[&str] = &[
    "",
    "0s",
    "-1",
    "soon",
    "ftp://x",
    "[1, 2]",
    "{a: b}",
    "\"\"",
    "..",
    "a=b",
    "yes",
    "9999999999999999999999",
    "\"\\u0000\"",
];

fn check(text: &str) {
    match SupervisorConfig::from_yaml_str(text, Path::new("s.yaml")) {
        Ok(_) => {}
        Err(err @ ConfigError::Invalid { .. }) => {
            let lines = text.lines().count().max(1);
            if let Some(line) = err.line() {
                // serde_norway may point one past the last line for "unexpected end of input".
                assert!(
                    line >= 1 && line <= lines + 1,
                    "line {line} outside 1..={lines}: {err}"
                );
            }
            assert!(err.to_string().starts_with("s.yaml"), "{err}");
        }
        Err(other) => panic!("unexpected error kind: {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn replacing_any_value_never_panics_and_errors_point_inside_the_file(
        line_index in 0usize..36,
        junk in prop::sample::select(JUNK),
    ) {
        let mutated: Vec<String> = BASE
            .lines()
            .enumerate()
            .map(|(i, l)| match (i == line_index, l.split_once(": ")) {
                (true, Some((key, _))) => format!("{key}: {junk}"),
                _ => l.to_owned(),
            })
            .collect();
        check(&mutated.join("\n"));
    }

    #[test]
    fn deleting_or_duplicating_a_line_never_panics(line_index in 0usize..36, duplicate: bool) {
        let mut lines: Vec<&str> = BASE.lines().collect();
        let i = line_index.min(lines.len() - 1);
        if duplicate {
            lines.insert(i, lines[i]);
        } else {
            lines.remove(i);
        }
        check(&lines.join("\n"));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[a-z_:\\- \n\\[\\]{}\"0-9.]{0,200}") {
        check(&text);
    }
}

#[test]
fn base_is_valid() {
    SupervisorConfig::from_yaml_str(BASE, Path::new("s.yaml")).unwrap();
}
