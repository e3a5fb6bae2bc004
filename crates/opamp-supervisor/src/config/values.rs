//! Deserializers for single values. Each rejects a bad value while serde_norway still knows its
//! position, so the error names the line of the value itself.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::de::{self, Deserializer};

/// A humantime duration such as `"250ms"`, `"5s"` or `"1m 30s"` that is not zero.
pub(super) fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_str(d, "a duration such as \"5s\"", |text| {
        let value = humantime::parse_duration(text).map_err(|e| {
            format!("invalid duration {text:?}: {e} (use forms like \"250ms\", \"5s\", \"2m\")")
        })?;
        if value.is_zero() {
            return Err(format!("duration {text:?} must be greater than zero"));
        }
        Ok(value)
    })
}

/// An RFC 3339 timestamp such as `"2027-01-01T00:00:00Z"`.
pub(super) fn optional_timestamp<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SystemTime>, D::Error> {
    parse_str(d, "an RFC 3339 timestamp", |text| {
        humantime::parse_rfc3339_weak(text).map(Some).map_err(|e| {
            format!("invalid timestamp {text:?}: {e} (use RFC 3339, e.g. \"2027-01-01T00:00:00Z\")")
        })
    })
}

/// A non-empty path.
pub(super) fn non_empty_path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    parse_str(d, "a path", |text| {
        if text.trim().is_empty() {
            return Err("path must not be empty".to_owned());
        }
        Ok(PathBuf::from(text))
    })
}

/// A bare file name: no directory separators, not `.` or `..`.
pub(super) fn optional_file_name<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    parse_str(d, "a file name", |text| {
        if text.is_empty() || text == "." || text == ".." || text.contains(['/', '\0']) {
            return Err(format!(
                "{text:?} must be a plain file name (no '/', not '.' or '..')"
            ));
        }
        Ok(Some(text.to_owned()))
    })
}

/// Environment variables: names non-empty without `=` or NUL, values without NUL.
pub(super) fn environment<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    checked_map(
        d,
        "environment variables (NAME: value)",
        |name| {
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(format!(
                    "environment variable name {name:?} is invalid (empty, or contains '=' or NUL)"
                ));
            }
            Ok(())
        },
        |name, value| {
            if value.contains('\0') {
                return Err(format!("environment variable {name} contains a NUL byte"));
            }
            Ok(())
        },
    )
}

/// HTTP headers sent on every request to the OpAMP server.
pub(super) fn headers<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    checked_map(
        d,
        "HTTP headers (Name: value)",
        |name| {
            http::HeaderName::from_bytes(name.as_bytes())
                .map(drop)
                .map_err(|_| format!("{name:?} is not a valid header name"))
        },
        |name, value| {
            http::HeaderValue::from_str(value)
                .map(drop)
                .map_err(|_| format!("value of header {name} is not a valid header value"))
        },
    )
}

type KeyCheck = fn(&str) -> Result<(), String>;
type ValueCheck = fn(&str, &str) -> Result<(), String>;

/// A string-to-string map whose keys and values are checked one by one, each inside its own
/// visitor so an error points at the offending key or value.
fn checked_map<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
    check_key: KeyCheck,
    check_value: ValueCheck,
) -> Result<BTreeMap<String, String>, D::Error> {
    struct MapVisitor {
        expecting: &'static str,
        check_key: KeyCheck,
        check_value: ValueCheck,
    }

    struct Checked<F>(F);

    impl<'de, F: FnOnce(&str) -> Result<(), String>> de::DeserializeSeed<'de> for Checked<F> {
        type Value = String;

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            parse_str(d, "a string", |text| {
                (self.0)(text).map(|()| text.to_owned())
            })
        }
    }

    impl<'de> de::Visitor<'de> for MapVisitor {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            let check_key = self.check_key;
            let check_value = self.check_value;
            while let Some(key) = map.next_key_seed(Checked(check_key))? {
                let value = map.next_value_seed(Checked(|v: &str| check_value(&key, v)))?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }

    d.deserialize_map(MapVisitor {
        expecting,
        check_key,
        check_value,
    })
}

/// A URL checked for an allowed scheme and a host.
pub(super) fn url<'de, D: Deserializer<'de>>(
    d: D,
    allowed: &[&str],
) -> Result<(String, String), D::Error> {
    parse_str(d, "a URL", |text| {
        let uri: http::Uri = text
            .parse()
            .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        if !allowed.contains(&scheme.as_str()) {
            return Err(format!(
                "URL {text:?} must use one of the schemes {}",
                Listing(allowed)
            ));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("URL {text:?} has no host"));
        }
        Ok((text.to_owned(), scheme))
    })
}

/// Deserializes a string and converts it inside the visitor: serde_norway attaches the scalar's
/// own position only to errors raised there (errors raised after `deserialize` returns get the
/// position of the enclosing mapping).
fn parse_str<'de, D, T>(
    d: D,
    expecting: &'static str,
    convert: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StrVisitor<F> {
        expecting: &'static str,
        convert: F,
    }

    impl<T, F: FnOnce(&str) -> Result<T, String>> de::Visitor<'_> for StrVisitor<F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.convert)(text).map_err(E::custom)
        }
    }

    d.deserialize_str(StrVisitor { expecting, convert })
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
