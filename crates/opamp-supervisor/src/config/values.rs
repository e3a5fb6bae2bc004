//! Deserializers for single values. Each rejects a bad value while serde_yaml still knows its
//! position, so the error names the line of the value itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::de::{self, Deserialize, Deserializer};

/// A humantime duration such as `"250ms"`, `"5s"` or `"1m 30s"` that is not zero.
pub(super) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let value = humantime::parse_duration(&text).map_err(|e| {
        de::Error::custom(format_args!(
            "invalid duration {text:?}: {e} (use forms like \"250ms\", \"5s\", \"2m\")"
        ))
    })?;
    if value.is_zero() {
        return Err(de::Error::custom(format_args!(
            "duration {text:?} must be greater than zero"
        )));
    }
    Ok(value)
}

/// An RFC 3339 timestamp such as `"2027-01-01T00:00:00Z"`.
pub(super) fn optional_timestamp<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SystemTime>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_rfc3339_weak(&text).map(Some).map_err(|e| {
        de::Error::custom(format_args!(
            "invalid timestamp {text:?}: {e} (use RFC 3339, e.g. \"2027-01-01T00:00:00Z\")"
        ))
    })
}

/// A non-empty path.
pub(super) fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Err(de::Error::custom("path must not be empty"));
    }
    Ok(PathBuf::from(text))
}

/// A bare file name: no directory separators, not `.` or `..`.
pub(super) fn optional_file_name<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.is_empty() || text == "." || text == ".." || text.contains(['/', '\0']) {
        return Err(de::Error::custom(format_args!(
            "{text:?} must be a plain file name (no '/', not '.' or '..')"
        )));
    }
    Ok(Some(text))
}

/// Environment variables: names non-empty without `=` or NUL, values without NUL.
pub(super) fn environment<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let env = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &env {
        if name.is_empty() || name.contains(['=', '\0']) {
            return Err(de::Error::custom(format_args!(
                "environment variable name {name:?} is invalid (empty, or contains '=' or NUL)"
            )));
        }
        if value.contains('\0') {
            return Err(de::Error::custom(format_args!(
                "environment variable {name} contains a NUL byte"
            )));
        }
    }
    Ok(env)
}

/// HTTP headers sent on every request to the OpAMP server.
pub(super) fn headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let headers = BTreeMap::<String, String>::deserialize(d)?;
    for (name, value) in &headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| de::Error::custom(format_args!("{name:?} is not a valid header name")))?;
        http::HeaderValue::from_str(value).map_err(|_| {
            de::Error::custom(format_args!(
                "value of header {name} is not a valid header value"
            ))
        })?;
    }
    Ok(headers)
}

/// A URL checked for an allowed scheme and a host.
pub(super) fn url<'de, D: Deserializer<'de>>(
    d: D,
    allowed: &[&str],
) -> Result<(String, String), D::Error> {
    let text = String::deserialize(d)?;
    let uri: http::Uri = text
        .parse()
        .map_err(|e| de::Error::custom(format_args!("invalid URL {text:?}: {e}")))?;
    let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
    if !allowed.contains(&scheme.as_str()) {
        return Err(de::Error::custom(format_args!(
            "URL {text:?} must use one of the schemes {}",
            Listing(allowed)
        )));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(de::Error::custom(format_args!("URL {text:?} has no host")));
    }
    Ok((text, scheme))
}

struct Listing<'a>(&'a [&'a str]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, item) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{item}://")?;
        }
        Ok(())
    }
}
