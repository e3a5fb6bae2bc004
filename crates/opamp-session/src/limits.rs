//! Bounds applied to everything a peer sends.

use opamp_proto::codec::Limits;

/// Limits that protect a session from hostile or broken peers.
///
/// The defaults are generous for real fleets and small enough that a single message
/// cannot make a session allocate without bound. The description and package-status caps
/// bound what a server keeps per agent (memory, store rows, metric series): a message over
/// them is refused whole, with the reason logged, and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionLimits {
    /// Decoder limits used by `handle_bytes` (largest message, 64 MiB by default).
    pub codec: Limits,
    /// Largest number of entries accepted in any one map or list of a message
    /// (packages, config files, component health entries counted over all levels,
    /// attributes, headers). Default 10 000.
    pub max_map_entries: usize,
    /// Deepest nesting accepted in `ComponentHealth.component_health_map`. Default 32.
    pub max_nesting_depth: usize,
    /// Largest forward jump of `sequence_num` within one session. A bigger jump is
    /// refused as hostile instead of being treated as lost messages. Default 2^32.
    pub max_sequence_gap: u64,
    /// How many outgoing custom messages may wait to be sent. Default 64.
    pub max_pending_custom_messages: usize,
    /// Most attributes (identifying and non-identifying together) in an agent's
    /// `AgentDescription`; the server keeps each as a label. Default 256.
    pub max_description_attributes: usize,
    /// Largest single description attribute, key plus value, in bytes. Default 4 KiB.
    pub max_attribute_bytes: usize,
    /// Largest `AgentDescription` in total (the sum over its attributes). Default 64 KiB.
    pub max_description_bytes: usize,
    /// Most entries in an agent's `PackageStatuses`. Default 256.
    pub max_package_statuses: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            codec: Limits::default(),
            max_map_entries: 10_000,
            max_nesting_depth: 32,
            max_sequence_gap: 1 << 32,
            max_pending_custom_messages: 64,
            max_description_attributes: 256,
            max_attribute_bytes: 4 * 1024,
            max_description_bytes: 64 * 1024,
            max_package_statuses: 256,
        }
    }
}
