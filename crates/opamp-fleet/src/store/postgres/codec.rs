//! How values are written to and read from PostgreSQL columns, and how its errors become
//! [`StoreError`]s. The encodings are SQLite's: milliseconds in `BIGINT`, `u64` bit-cast to
//! `BIGINT`, JSON in `TEXT`.

use ::postgres::Row;
use ::postgres::types::FromSql;
use opamp_proto::InstanceUid;

use crate::events::RolloutStatus;
use crate::spec::TargetKind;
use crate::store::StoreError;
use crate::time::Timestamp;

/// Maps a database error to [`StoreError::Postgres`] with what the store was doing.
pub(super) fn pg(context: &'static str) -> impl FnOnce(::postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { context, source }
}

/// Maps a JSON error to [`StoreError::Json`].
pub(super) fn json(context: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| StoreError::Json { context, source }
}

/// Column `index` of `row`; a column of an unexpected type is a database error (as SQLite's
/// `row.get` reports it), never a panic.
pub(super) fn column<'a, T: FromSql<'a>>(
    row: &'a Row,
    index: usize,
    context: &'static str,
) -> Result<T, StoreError> {
    row.try_get(index).map_err(pg(context))
}

/// A timestamp as stored: milliseconds since the epoch.
pub(super) fn millis(time: Timestamp) -> i64 {
    i64::try_from(time.as_millis()).unwrap_or(i64::MAX)
}

/// A stored timestamp (negative values, which the store never writes, read as the epoch).
pub(super) fn timestamp(millis: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A `u64` in a `BIGINT`: bit-cast, so capability bits above 2^63 survive a round trip.
pub(super) fn sql_u64(value: u64) -> i64 {
    i64::from_ne_bytes(value.to_ne_bytes())
}

/// The inverse of [`sql_u64`].
pub(super) fn from_sql_u64(value: i64) -> u64 {
    u64::from_ne_bytes(value.to_ne_bytes())
}

/// A stored instance uid.
pub(super) fn parse_uid(text: &str) -> Result<InstanceUid, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt {
        what: format!("bad instance uid {text:?}"),
    })
}

/// How `rollouts.target_kind` names a target kind.
pub(super) fn target_kind_text(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Config => "config",
        _ => "package",
    }
}

/// A stored `rollouts.target_kind`.
pub(super) fn parse_target_kind(text: &str) -> Result<TargetKind, StoreError> {
    match text {
        "package" => Ok(TargetKind::Package),
        "config" => Ok(TargetKind::Config),
        other => Err(StoreError::Corrupt {
            what: format!("unknown rollout target kind {other:?}"),
        }),
    }
}

/// A stored `rollouts.status`.
pub(super) fn parse_status(text: &str) -> Result<RolloutStatus, StoreError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        StoreError::Corrupt {
            what: format!("unknown rollout status {text:?}"),
        }
    })
}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    #[test]
    fn u64_values_above_i64_max_round_trip() {
        for value in [0, 1, u64::MAX, 0x8000_0000_0000_2019] {
            assert_eq!(from_sql_u64(sql_u64(value)), value);
        }
        assert_eq!(timestamp(-5), Timestamp::from_millis(0));
        assert_eq!(millis(Timestamp::from_millis(42)), 42);
    }

    #[test]
    fn unknown_kinds_and_statuses_are_corrupt() {
        assert!(matches!(
            parse_target_kind("bogus"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(
            parse_status("bogus"),
            Err(StoreError::Corrupt { .. })
        ));
        assert!(matches!(parse_uid("x"), Err(StoreError::Corrupt { .. })));
        assert_eq!(parse_target_kind("config").unwrap(), TargetKind::Config);
        let status = RolloutStatus::Planned;
        assert_eq!(parse_status(status.as_str()).unwrap(), status);
    }
}
