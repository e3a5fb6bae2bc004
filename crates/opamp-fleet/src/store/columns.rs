//! How both database backends store values in columns: timestamps, unsigned integers,
//! instance uids, JSON, and the agent registry row. One definition, so a row written by one
//! backend's rules is read by the same rules in the other.

use opamp_proto::InstanceUid;

use super::{AgentRecord, StoreError};
use crate::time::Timestamp;

/// Maps a JSON error to [`StoreError::Json`].
pub(super) fn json(context: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
    move |source| StoreError::Json { context, source }
}

/// A timestamp as stored: milliseconds since the epoch.
pub(super) fn millis(time: Timestamp) -> i64 {
    i64::try_from(time.as_millis()).unwrap_or(i64::MAX)
}

/// A stored timestamp (negative values, which the store never writes, read as the epoch).
pub(super) fn timestamp(millis: i64) -> Timestamp {
    Timestamp::from_millis(u64::try_from(millis).unwrap_or(0))
}

/// A `u64` in a signed 64-bit column: bit-cast, so capability bits above 2^63 survive a
/// round trip.
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

/// An `agents` row as selected: uid, labels (JSON), capabilities, package versions (JSON),
/// healthy, connected, last seen.
pub(super) type AgentRow = (String, String, i64, String, bool, bool, i64);

/// The registry record of an `agents` row.
pub(super) fn agent_record(
    (uid, labels, capabilities, versions, healthy, connected, last_seen): AgentRow,
) -> Result<AgentRecord, StoreError> {
    let labels = serde_json::from_str(&labels).map_err(json("decoding agent labels"))?;
    let mut agent = AgentRecord::new(
        parse_uid(&uid)?,
        labels,
        from_sql_u64(capabilities),
        timestamp(last_seen),
    );
    agent.package_versions =
        serde_json::from_str(&versions).map_err(json("decoding agent versions"))?;
    agent.healthy = healthy;
    agent.connected = connected;
    Ok(agent)
}

#[cfg(test)]
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
}
