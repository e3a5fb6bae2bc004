//! Named bit sets for the `capabilities` and `flags` fields.
//!
//! The wire carries plain `u64`s. These types give the bits names while keeping
//! unknown bits (set by a newer peer) visible instead of dropping them.

use std::fmt;

macro_rules! wire_bit_set {
    (
        $(#[doc = $doc:literal])*
        $name:ident {
            $( $(#[doc = $flag_doc:literal])* $flag:ident = $value:expr; )+
        }
    ) => {
        bitflags::bitflags! {
            $(#[doc = $doc])*
            #[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
            #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
            pub struct $name: u64 {
                $( $(#[doc = $flag_doc])* const $flag = $value; )+
            }
        }

        impl $name {
            /// Builds the set from the wire value, keeping bits this crate does not know.
            pub const fn from_wire(bits: u64) -> Self {
                Self::from_bits_retain(bits)
            }

            /// Bits that are set but have no name in this version of the protocol.
            pub const fn unknown_bits(&self) -> u64 {
                self.bits() & !Self::all().bits()
            }
        }

        impl From<u64> for $name {
            fn from(bits: u64) -> Self {
                Self::from_wire(bits)
            }
        }

        impl From<$name> for u64 {
            fn from(set: $name) -> u64 {
                set.bits()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                bitflags::parser::to_writer(self, &mut *f)?;
                write!(f, ")")
            }
        }
    };
}

wire_bit_set! {
    /// What an agent can do (`AgentToServer.capabilities`).
    ///
    /// ```
    /// use opamp_proto::AgentCapabilities;
    /// let caps = AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_PACKAGES;
    /// assert_eq!(caps.bits(), 0x9);
    /// let from_newer_peer = AgentCapabilities::from_wire(0x9 | 1 << 40);
    /// assert!(from_newer_peer.contains(AgentCapabilities::ACCEPTS_PACKAGES));
    /// assert_eq!(from_newer_peer.unknown_bits(), 1 << 40);
    /// ```
    AgentCapabilities {
        /// Reports status; every agent must set it.
        REPORTS_STATUS = 0x1;
        /// Accepts remote configuration.
        ACCEPTS_REMOTE_CONFIG = 0x2;
        /// Reports its effective configuration.
        REPORTS_EFFECTIVE_CONFIG = 0x4;
        /// Accepts package offers.
        ACCEPTS_PACKAGES = 0x8;
        /// Reports package statuses.
        REPORTS_PACKAGE_STATUSES = 0x10;
        /// Can send its own traces where told.
        REPORTS_OWN_TRACES = 0x20;
        /// Can send its own metrics where told.
        REPORTS_OWN_METRICS = 0x40;
        /// Can send its own logs where told.
        REPORTS_OWN_LOGS = 0x80;
        /// Accepts OpAMP connection settings.
        ACCEPTS_OPAMP_CONNECTION_SETTINGS = 0x100;
        /// Accepts other connection settings.
        ACCEPTS_OTHER_CONNECTION_SETTINGS = 0x200;
        /// Accepts the restart command.
        ACCEPTS_RESTART_COMMAND = 0x400;
        /// Reports health.
        REPORTS_HEALTH = 0x800;
        /// Reports remote config status.
        REPORTS_REMOTE_CONFIG = 0x1000;
        /// Sends heartbeats.
        REPORTS_HEARTBEAT = 0x2000;
        /// Reports available components.
        REPORTS_AVAILABLE_COMPONENTS = 0x4000;
        /// Reports connection settings status.
        REPORTS_CONNECTION_SETTINGS_STATUS = 0x8000;
    }
}

wire_bit_set! {
    /// What a server can do (`ServerToAgent.capabilities`).
    ///
    /// ```
    /// use opamp_proto::ServerCapabilities;
    /// let caps = ServerCapabilities::ACCEPTS_STATUS | ServerCapabilities::OFFERS_PACKAGES;
    /// assert!(caps.contains(ServerCapabilities::OFFERS_PACKAGES));
    /// assert_eq!(caps.iter_names().count(), 2);
    /// ```
    ServerCapabilities {
        /// Accepts status reports; every server must set it.
        ACCEPTS_STATUS = 0x1;
        /// Offers remote configuration.
        OFFERS_REMOTE_CONFIG = 0x2;
        /// Accepts effective configuration reports.
        ACCEPTS_EFFECTIVE_CONFIG = 0x4;
        /// Offers packages.
        OFFERS_PACKAGES = 0x8;
        /// Accepts package statuses.
        ACCEPTS_PACKAGES_STATUS = 0x10;
        /// Offers connection settings.
        OFFERS_CONNECTION_SETTINGS = 0x20;
        /// Accepts connection settings requests.
        ACCEPTS_CONNECTION_SETTINGS_REQUEST = 0x40;
    }
}

wire_bit_set! {
    /// `ServerToAgent.flags`.
    ServerToAgentFlags {
        /// The agent must send its full state in the next message.
        REPORT_FULL_STATE = 0x1;
        /// The agent must send its full available components list.
        REPORT_AVAILABLE_COMPONENTS = 0x2;
    }
}

wire_bit_set! {
    /// `AgentToServer.flags`.
    AgentToServerFlags {
        /// The agent asks the server to assign it an instance uid.
        REQUEST_INSTANCE_UID = 0x1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn agent_bits_match_the_generated_enum() {
        let pairs = [
            (
                AgentCapabilities::REPORTS_STATUS,
                v1::AgentCapabilities::ReportsStatus,
            ),
            (
                AgentCapabilities::ACCEPTS_REMOTE_CONFIG,
                v1::AgentCapabilities::AcceptsRemoteConfig,
            ),
            (
                AgentCapabilities::REPORTS_EFFECTIVE_CONFIG,
                v1::AgentCapabilities::ReportsEffectiveConfig,
            ),
            (
                AgentCapabilities::ACCEPTS_PACKAGES,
                v1::AgentCapabilities::AcceptsPackages,
            ),
            (
                AgentCapabilities::REPORTS_PACKAGE_STATUSES,
                v1::AgentCapabilities::ReportsPackageStatuses,
            ),
            (
                AgentCapabilities::REPORTS_OWN_TRACES,
                v1::AgentCapabilities::ReportsOwnTraces,
            ),
            (
                AgentCapabilities::REPORTS_OWN_METRICS,
                v1::AgentCapabilities::ReportsOwnMetrics,
            ),
            (
                AgentCapabilities::REPORTS_OWN_LOGS,
                v1::AgentCapabilities::ReportsOwnLogs,
            ),
            (
                AgentCapabilities::ACCEPTS_OPAMP_CONNECTION_SETTINGS,
                v1::AgentCapabilities::AcceptsOpAmpConnectionSettings,
            ),
            (
                AgentCapabilities::ACCEPTS_OTHER_CONNECTION_SETTINGS,
                v1::AgentCapabilities::AcceptsOtherConnectionSettings,
            ),
            (
                AgentCapabilities::ACCEPTS_RESTART_COMMAND,
                v1::AgentCapabilities::AcceptsRestartCommand,
            ),
            (
                AgentCapabilities::REPORTS_HEALTH,
                v1::AgentCapabilities::ReportsHealth,
            ),
            (
                AgentCapabilities::REPORTS_REMOTE_CONFIG,
                v1::AgentCapabilities::ReportsRemoteConfig,
            ),
            (
                AgentCapabilities::REPORTS_HEARTBEAT,
                v1::AgentCapabilities::ReportsHeartbeat,
            ),
            (
                AgentCapabilities::REPORTS_AVAILABLE_COMPONENTS,
                v1::AgentCapabilities::ReportsAvailableComponents,
            ),
            (
                AgentCapabilities::REPORTS_CONNECTION_SETTINGS_STATUS,
                v1::AgentCapabilities::ReportsConnectionSettingsStatus,
            ),
        ];
        assert_eq!(pairs.len(), AgentCapabilities::all().iter().count());
        for (ours, generated) in pairs {
            assert_eq!(ours.bits(), generated as u64, "{ours:?}");
        }
    }

    #[test]
    fn server_bits_match_the_generated_enum() {
        let pairs = [
            (
                ServerCapabilities::ACCEPTS_STATUS,
                v1::ServerCapabilities::AcceptsStatus,
            ),
            (
                ServerCapabilities::OFFERS_REMOTE_CONFIG,
                v1::ServerCapabilities::OffersRemoteConfig,
            ),
            (
                ServerCapabilities::ACCEPTS_EFFECTIVE_CONFIG,
                v1::ServerCapabilities::AcceptsEffectiveConfig,
            ),
            (
                ServerCapabilities::OFFERS_PACKAGES,
                v1::ServerCapabilities::OffersPackages,
            ),
            (
                ServerCapabilities::ACCEPTS_PACKAGES_STATUS,
                v1::ServerCapabilities::AcceptsPackagesStatus,
            ),
            (
                ServerCapabilities::OFFERS_CONNECTION_SETTINGS,
                v1::ServerCapabilities::OffersConnectionSettings,
            ),
            (
                ServerCapabilities::ACCEPTS_CONNECTION_SETTINGS_REQUEST,
                v1::ServerCapabilities::AcceptsConnectionSettingsRequest,
            ),
        ];
        assert_eq!(pairs.len(), ServerCapabilities::all().iter().count());
        for (ours, generated) in pairs {
            assert_eq!(ours.bits(), generated as u64, "{ours:?}");
        }
        assert_eq!(
            ServerToAgentFlags::REPORT_FULL_STATE.bits(),
            v1::ServerToAgentFlags::ReportFullState as u64
        );
        assert_eq!(
            AgentToServerFlags::REQUEST_INSTANCE_UID.bits(),
            v1::AgentToServerFlags::RequestInstanceUid as u64
        );
    }

    #[test]
    fn unknown_bits_survive_a_round_trip() {
        let wire = 0x8 | (1u64 << 63) | (1 << 20);
        let caps = AgentCapabilities::from_wire(wire);
        assert_eq!(u64::from(caps), wire);
        assert_eq!(caps.unknown_bits(), (1u64 << 63) | (1 << 20));
        assert_eq!(
            caps.iter_names().map(|(name, _)| name).collect::<Vec<_>>(),
            ["ACCEPTS_PACKAGES"]
        );
        let debug = format!("{caps:?}");
        assert!(debug.contains("ACCEPTS_PACKAGES"), "{debug}");
    }
}
