//! Secrets redacted from the effective config before it is reported to the server.
//!
//! The rule, applied to YAML (and JSON) at any depth: the value of a mapping key whose name,
//! lower-cased, contains one of [`SECRET_KEY_PARTS`] is replaced by [`REDACTED`] (every scalar
//! inside it, when it is a mapping or a list); so is every value inside a `headers` mapping;
//! and a password in a URL (`scheme://user:password@host`) becomes `scheme://user:<redacted>@host`.
//! Keys and structure stay, so the server still sees which settings are set. A file that does
//! not parse as YAML is not reported at all (its body is replaced by a one-line note): the
//! supervisor cannot tell its secrets apart.

use serde_norway::Value;

/// What a redacted value reads as.
pub const REDACTED: &str = "<redacted>";

/// Parts of key names whose values are secrets.
pub const SECRET_KEY_PARTS: [&str; 10] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "credential",
    "private_key",
    "bearer",
];

/// The redacted text of one config file, or a note when it does not parse.
pub fn redact_text(body: &[u8]) -> Vec<u8> {
    let parsed = std::str::from_utf8(body)
        .ok()
        .and_then(|text| serde_norway::from_str::<Value>(text).ok());
    match parsed {
        Some(mut value) => {
            redact(&mut value);
            serde_norway::to_string(&value)
                .map(String::into_bytes)
                .unwrap_or_else(|_| not_reported())
        }
        None => not_reported(),
    }
}

fn not_reported() -> Vec<u8> {
    b"# not reported: this file does not parse as YAML, so its secrets cannot be redacted\n"
        .to_vec()
}

/// Redacts `value` in place (see the module documentation).
pub fn redact(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (key, inner) in map.iter_mut() {
                let name = key.as_str().unwrap_or_default().to_ascii_lowercase();
                if name == "headers" || SECRET_KEY_PARTS.iter().any(|p| name.contains(p)) {
                    blank(inner);
                } else {
                    redact(inner);
                }
            }
        }
        Value::Sequence(items) => items.iter_mut().for_each(redact),
        Value::String(text) => {
            if let Some(clean) = redact_url_password(text) {
                *text = clean;
            }
        }
        Value::Tagged(tagged) => redact(&mut tagged.value),
        _ => {}
    }
}

fn blank(value: &mut Value) {
    match value {
        Value::Mapping(map) => map.iter_mut().for_each(|(_, v)| blank(v)),
        Value::Sequence(items) => items.iter_mut().for_each(blank),
        Value::Null => {}
        Value::Tagged(tagged) => blank(&mut tagged.value),
        other => *other = Value::String(REDACTED.to_owned()),
    }
}

fn redact_url_password(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (userinfo, _) = rest[..authority_end].rsplit_once('@')?;
    let (user, _) = userinfo.split_once(':')?;
    let after = &rest[userinfo.len()..];
    Some(format!("{scheme}://{user}:{REDACTED}{after}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_and_the_rest_kept() {
        let text = "exporters:\n  otlphttp:\n    endpoint: https://collector:4318\n    headers:\n      X-Scope: tenant-a\n      Authorization: Bearer abc\n  kafka:\n    auth:\n      sasl:\n        username: u\n        password: hunter2\n    client_api_key: k123\nreceivers:\n  sql:\n    datasource: postgres://app:s3cret@db:5432/x\n";
        let out = String::from_utf8(redact_text(text.as_bytes())).unwrap();
        for secret in ["tenant-a", "Bearer abc", "hunter2", "k123", "s3cret"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        for kept in [
            "https://collector:4318",
            "username: u",
            "postgres://app:<redacted>@db:5432/x",
        ] {
            assert!(out.contains(kept), "{kept} missing: {out}");
        }
    }

    #[test]
    fn unparsable_files_are_not_reported() {
        let out = String::from_utf8(redact_text(b"password: [unclosed")).unwrap();
        assert!(!out.contains("unclosed"));
        assert!(out.starts_with("# not reported"));
    }
}
