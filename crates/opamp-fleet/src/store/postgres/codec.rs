//! How values are written to and read from PostgreSQL columns, and how its errors become
//! [`StoreError`]s. The encodings are SQLite's: milliseconds in `BIGINT`, `u64` bit-cast to
//! `BIGINT`, JSON in `TEXT`.

use ::postgres::Row;
use ::postgres::types::FromSql;

use crate::events::RolloutStatus;
use crate::spec::TargetKind;
use crate::store::StoreError;
pub(super) use crate::store::columns::{from_sql_u64, json, millis, parse_uid, sql_u64, timestamp};

/// Maps a database error to [`StoreError::Postgres`] with what the store was doing.
pub(super) fn pg(context: &'static str) -> impl FnOnce(::postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { context, source }
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
