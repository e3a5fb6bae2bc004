//! The install steps and which step may follow which.

use serde::{Deserialize, Serialize};

/// Steps of an install, in order; `RollingBack` and `Failed` can follow any in-progress step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum InstallStep {
    /// No install in progress.
    Idle,
    /// Fetching the package file.
    Downloading,
    /// Checking hash and signature.
    Verifying,
    /// A verified executable is in the staging directory; nothing live has changed.
    Staged,
    /// Stopping the running collector.
    Stopping,
    /// Replacing the executable (the previous one is kept).
    Swapping,
    /// Starting the new executable.
    Starting,
    /// Waiting for the new collector to prove healthy.
    HealthGate,
    /// The new version runs and passed the health gate.
    Installed,
    /// Restoring the previous executable after a failure.
    RollingBack,
    /// The install failed; the previous executable runs (see the record's error).
    Failed,
}

impl InstallStep {
    /// Whether an install was under way at this step (recovery has work to do).
    pub fn is_in_progress(self) -> bool {
        !matches!(self, Self::Idle | Self::Installed | Self::Failed)
    }

    /// Whether this step must reach the disk before it takes effect. `Verifying`, `Stopping`,
    /// `Starting` and `HealthGate` need not: recovery from each is the same as from the step
    /// before it (abandon before the swap; start and gate the new binary after it), so
    /// [`Journal::enter`](crate::journal::Journal::enter) keeps them in memory and an install
    /// costs four fewer fsynced writes, on the path between the offer and the new start.
    pub fn needs_journaling(self) -> bool {
        !matches!(
            self,
            Self::Verifying | Self::Stopping | Self::Starting | Self::HealthGate
        )
    }

    /// Whether the executable path may already hold the new binary at this step.
    pub fn may_have_swapped(self) -> bool {
        matches!(
            self,
            Self::Swapping | Self::Starting | Self::HealthGate | Self::RollingBack
        )
    }

    /// Whether `next` is a legal successor of `self`.
    pub fn can_advance_to(self, next: Self) -> bool {
        use InstallStep::*;
        match (self, next) {
            (Idle | Installed | Failed, Downloading | Verifying | Idle) => true,
            (Downloading, Verifying)
            | (Verifying, Staged)
            | (Staged, Stopping)
            | (Stopping, Swapping)
            | (Swapping, Starting)
            | (Starting, HealthGate)
            | (HealthGate, Installed)
            | (RollingBack, Failed) => true,
            (from, RollingBack | Failed) => from.is_in_progress(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_path_transitions_are_legal_and_skips_are_not() {
        use InstallStep::*;
        let path = [
            Idle,
            Downloading,
            Verifying,
            Staged,
            Stopping,
            Swapping,
            Starting,
            HealthGate,
            Installed,
        ];
        for pair in path.windows(2) {
            assert!(
                pair[0].can_advance_to(pair[1]),
                "{:?} -> {:?}",
                pair[0],
                pair[1]
            );
        }
        assert!(!Staged.can_advance_to(Swapping));
        assert!(!Downloading.can_advance_to(Installed));
        assert!(HealthGate.can_advance_to(RollingBack));
        assert!(!Installed.can_advance_to(RollingBack));
    }
}
