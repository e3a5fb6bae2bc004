//! Which compressible sub-messages the next `AgentToServer` must carry.

bitflags::bitflags! {
    /// One bit per sub-message that status compression may omit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub(crate) struct Parts: u8 {
        const DESCRIPTION = 1 << 0;
        const HEALTH = 1 << 1;
        const EFFECTIVE_CONFIG = 1 << 2;
        const REMOTE_CONFIG_STATUS = 1 << 3;
        const PACKAGE_STATUSES = 1 << 4;
        const CUSTOM_CAPABILITIES = 1 << 5;
        const AVAILABLE_COMPONENTS = 1 << 6;
        const CONNECTION_SETTINGS_STATUS = 1 << 7;
    }
}
