//! JSON and time output shared by the operator commands.
//!
//! The admin API carries times as epoch milliseconds and hashes as byte arrays, which suits
//! programs but not people reading `--json` output or piping it to `jq`. Output rewrites the
//! fields that hold them: times become RFC 3339 text (UTC, milliseconds) and byte strings
//! become lowercase hex. Tables show times relative to now ("12s ago").

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opamp_fleet::Timestamp;
use serde_json::Value;

use crate::failure::{CommandError, Failure, ResultExt as _};

/// Fields holding a [`opamp_fleet::Timestamp`] (epoch milliseconds) in the admin API's bodies.
const TIME_FIELDS: &[&str] = &[
    "at",
    "added_at",
    "created_at",
    "updated_at",
    "last_seen",
    "started_at",
    "settled_at",
    "deadline",
    "until",
    "clock",
    "connected_since",
];

/// Fields holding bytes (hashes, signatures) in the admin API's bodies.
const BYTES_FIELDS: &[&str] = &["content_hash", "signature", "hash"];

/// `value` as pretty JSON, with times as RFC 3339 and byte strings as hex.
pub(crate) fn to_json(value: &impl serde::Serialize) -> Result<String, CommandError> {
    let mut value =
        serde_json::to_value(value).or_fail(Failure::Operation, || "cannot encode JSON")?;
    humanise(&mut value);
    serde_json::to_string_pretty(&value).or_fail(Failure::Operation, || "cannot encode JSON")
}

/// Rewrites the time and byte fields of `value`, at any depth.
fn humanise(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                let replacement = if TIME_FIELDS.contains(&key.as_str()) {
                    field.as_u64().map(rfc3339)
                } else if BYTES_FIELDS.contains(&key.as_str()) {
                    bytes_as_hex(field)
                } else {
                    None
                };
                match replacement {
                    Some(text) => *field = Value::String(text),
                    None => humanise(field),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(humanise),
        _ => {}
    }
}

/// An array of byte values as hex; `None` when it is anything else.
fn bytes_as_hex(value: &Value) -> Option<String> {
    let items = value.as_array()?;
    let mut text = String::with_capacity(items.len() * 2);
    for item in items {
        let byte = u8::try_from(item.as_u64()?).ok()?;
        text.push_str(&format!("{byte:02x}"));
    }
    Some(text)
}

/// Epoch milliseconds as RFC 3339 (`2026-12-04T16:58:07.123Z`).
pub(crate) fn rfc3339(millis: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(millis);
    humantime::format_rfc3339_millis(time).to_string()
}

/// `at` relative to now: `12s ago`, `5m ago`, `3h ago`, `2d ago` (`in 40s` for
/// the future), for tables.
pub(crate) fn ago(at: Timestamp) -> String {
    at.relative_to(Timestamp::from(SystemTime::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_become_rfc3339_and_hashes_hex_at_any_depth() {
        let mut value = serde_json::json!({
            "added_at": 1_764_000_000_123u64,
            "content_hash": [0, 171, 255],
            "name": "otelcol",
            "waves": [{"started_at": 0, "settled_at": null, "agents": [1, 2]}],
        });
        humanise(&mut value);
        assert_eq!(value["added_at"], "2025-11-24T16:00:00.123Z");
        assert_eq!(value["content_hash"], "00abff");
        assert_eq!(value["name"], "otelcol");
        assert_eq!(value["waves"][0]["started_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(value["waves"][0]["settled_at"], Value::Null);
        assert_eq!(value["waves"][0]["agents"], serde_json::json!([1, 2]));
    }
}
