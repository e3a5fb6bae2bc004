//! The crate's single error type.

use opamp_proto::{CodecError, InstanceUid, InstanceUidError};

/// Why a session refused an input.
///
/// Every variant leaves the session usable: the offending message is dropped (the server
/// side also queues a `BAD_REQUEST` error response for the agent) and later inputs are
/// processed normally.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The bytes handed to `handle_bytes` are not a valid message for this transport mode.
    #[error("could not decode the peer's message")]
    Decode(#[from] CodecError),
    /// An instance uid field did not hold exactly 16 bytes.
    #[error("invalid instance uid in `{field}`")]
    InvalidInstanceUid {
        /// The protobuf field that carried it, e.g. `AgentToServer.instance_uid`.
        field: &'static str,
        /// What was wrong with it.
        source: InstanceUidError,
    },
    /// The message names an instance uid other than the one this session serves.
    #[error("message is addressed to instance {received}, this session serves {expected}")]
    InstanceUidMismatch {
        /// The uid this session expects.
        expected: InstanceUid,
        /// The uid the message carried.
        received: InstanceUid,
    },
    /// `AgentToServer.sequence_num` jumped further ahead than any real agent could.
    #[error("sequence number {received} is more than {max_gap} past the last one ({last})")]
    SequenceNumberOutOfRange {
        /// The last sequence number accepted in this session.
        last: u64,
        /// The sequence number received.
        received: u64,
        /// The largest forward jump accepted ([`crate::SessionLimits::max_sequence_gap`]).
        max_gap: u64,
    },
    /// A map or list in the message holds more entries than the configured limit.
    #[error("`{field}` holds {count} entries, more than the limit of {limit}")]
    TooManyEntries {
        /// Which field, e.g. `PackagesAvailable.packages`.
        field: &'static str,
        /// How many entries it held (counted across nesting levels where it nests).
        count: usize,
        /// The limit in force ([`crate::SessionLimits::max_map_entries`]).
        limit: usize,
    },
    /// A field (or one of its entries) is larger, in bytes, than the configured limit.
    #[error("`{field}` is {size} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Which field, e.g. `AgentDescription`.
        field: &'static str,
        /// Its size in bytes (key plus value for an attribute).
        size: usize,
        /// The limit in force (see [`crate::SessionLimits`]).
        limit: usize,
    },
    /// A recursive structure (component health) nests deeper than the configured limit.
    #[error("`{field}` nests deeper than the limit of {limit} levels")]
    TooDeep {
        /// Which field, e.g. `ComponentHealth.component_health_map`.
        field: &'static str,
        /// The limit in force ([`crate::SessionLimits::max_nesting_depth`]).
        limit: usize,
    },
    /// A custom message names a custom capability the sending side never declared.
    #[error("custom capability {capability:?} is not declared by this side")]
    UndeclaredCustomCapability {
        /// The capability named in the message.
        capability: String,
    },
    /// Too many custom messages are waiting to be sent.
    #[error("{limit} custom messages are already waiting to be sent")]
    CustomMessageQueueFull {
        /// The queue limit ([`crate::SessionLimits::max_pending_custom_messages`]).
        limit: usize,
    },
}
