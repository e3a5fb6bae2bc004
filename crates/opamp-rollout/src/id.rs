//! The rollout's identity, a leaf every other module may name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A rollout's identity (chosen by the server, e.g. a UUID).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RolloutId(String);

impl RolloutId {
    /// Wraps an id.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        RolloutId(id.into())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
