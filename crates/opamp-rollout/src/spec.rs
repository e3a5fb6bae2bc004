//! What an operator asks for: [`RolloutSpec`] and its knobs.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::RolloutError;
use crate::selector::LabelSelector;

/// How the agents left after the canaries are split into batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BatchPlan {
    /// Each batch holds this share (0 < share <= 1) of the agents left after the canaries,
    /// rounded up; the last batch takes whatever remains.
    Share(f64),
    /// Explicit batch sizes in order; agents left after the last size form one final batch.
    Sizes(Vec<u32>),
}

impl Default for BatchPlan {
    fn default() -> Self {
        BatchPlan::Share(0.25)
    }
}

/// How many agents of one wave may fail before the whole rollout is aborted. The canary wave
/// always has a budget of zero.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureBudget {
    /// At most this many failed agents per batch.
    Count(u32),
    /// At most this share (0..=1) of the batch, rounded down.
    Share(f64),
}

impl Default for FailureBudget {
    fn default() -> Self {
        FailureBudget::Count(0)
    }
}

impl FailureBudget {
    /// The number of failures a batch of `batch_size` agents tolerates.
    #[must_use]
    pub fn allowed(self, batch_size: usize) -> usize {
        match self {
            FailureBudget::Count(count) => usize::try_from(count).unwrap_or(usize::MAX),
            // Float to integer casts saturate; the share was validated to lie in 0..=1.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            FailureBudget::Share(share) => (share * batch_size as f64).floor() as usize,
        }
    }
}

/// What a rollout moves agents to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TargetKind {
    /// A package version, offered in `PackagesAvailable` (the default).
    #[default]
    Package,
    /// A config version from the config catalog, offered as `AgentRemoteConfig`. The spec's
    /// `package_name` is the config's name, `target_version` its version label and
    /// `target_ref` its config hash (lower-case hex); the versions the engine tracks for each
    /// agent are config hashes (see [`RolloutSpec::target_key`]).
    Config,
}

impl TargetKind {
    /// Whether this is [`TargetKind::Package`].
    #[must_use]
    pub fn is_package(&self) -> bool {
        *self == TargetKind::Package
    }
}

/// A request to move the agents matching `selector` to `target_version` of `package_name`.
///
/// A downgrade is simply a spec whose target is older than what the agents run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutSpec {
    /// A package (the default) or a config rollout.
    #[serde(default, skip_serializing_if = "TargetKind::is_package")]
    pub target_kind: TargetKind,
    /// The package name as offered in `PackagesAvailable` (for example `otelcol-contrib`).
    pub package_name: String,
    /// The version agents end up with.
    pub target_version: String,
    /// Opaque reference to the catalog entry being offered (for example its content hash), so
    /// the server offers exactly the bytes the operator chose.
    pub target_ref: Option<String>,
    /// Which agents take part.
    pub selector: LabelSelector,
    /// Share of the selected agents in the canary wave (default 0.05; at least one agent).
    pub canary_share: f64,
    /// How the remaining agents are split.
    pub batches: BatchPlan,
    /// How long a wave must stay installed and healthy before the next wave starts.
    pub bake_time: Duration,
    /// Time from an offer until the agent must report the target installed.
    pub install_timeout: Duration,
    /// Time from an install report until the agent must report healthy.
    pub health_timeout: Duration,
    /// Failures each batch tolerates (the canary wave tolerates none).
    pub failure_budget: FailureBudget,
    /// Who asked for the rollout (operator identity for the audit log).
    pub created_by: String,
    /// The operator accepts agents that run a version the catalog does not have: the server
    /// cannot offer it back, so such agents are never reverted by the server (their supervisor
    /// still rolls back locally when the new version fails its health gate). Without it such a
    /// rollout is refused.
    #[serde(default)]
    pub adopt_unknown_versions: bool,
    /// The versions adopted that way, filled in by the server when it plans the rollout:
    /// agents whose previous version is listed here get no revert offer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub adopted_versions: Vec<String>,
    /// Versions the server can offer back but that an agent already running the target will
    /// likely refuse, with why (filled in by the server when it plans the rollout: the
    /// version's signed statement authorises no downgrade from the target). An abort still
    /// offers them, names those agents at once and does not wait for them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unrevertible_versions: BTreeMap<String, String>,
}

impl RolloutSpec {
    /// A spec with the default knobs: 5 % canaries, batches of 25 %, 10 min bake time, 10 min
    /// install timeout, 5 min health timeout and no failures tolerated.
    #[must_use]
    pub fn new(
        package_name: impl Into<String>,
        target_version: impl Into<String>,
        selector: LabelSelector,
        created_by: impl Into<String>,
    ) -> Self {
        RolloutSpec {
            target_kind: TargetKind::Package,
            package_name: package_name.into(),
            target_version: target_version.into(),
            target_ref: None,
            selector,
            canary_share: 0.05,
            batches: BatchPlan::default(),
            bake_time: Duration::from_secs(600),
            install_timeout: Duration::from_secs(600),
            health_timeout: Duration::from_secs(300),
            failure_budget: FailureBudget::default(),
            created_by: created_by.into(),
            adopt_unknown_versions: false,
            adopted_versions: Vec::new(),
            unrevertible_versions: BTreeMap::new(),
        }
    }

    /// A spec (default knobs) rolling out version `version` of the catalog config `name`,
    /// whose config hash is `hash_hex` (lower-case hex).
    #[must_use]
    pub fn config(
        name: impl Into<String>,
        version: impl Into<String>,
        hash_hex: impl Into<String>,
        selector: LabelSelector,
        created_by: impl Into<String>,
    ) -> Self {
        let mut spec = RolloutSpec::new(name, version, selector, created_by);
        spec.target_kind = TargetKind::Config;
        spec.target_ref = Some(hash_hex.into());
        spec
    }

    /// What agent versions are compared with: the target version for a package, the config
    /// hash (`target_ref`) for a config, since agents report the hash of the config they
    /// applied, not its label.
    #[must_use]
    pub fn target_key(&self) -> &str {
        match self.target_kind {
            TargetKind::Config => self.target_ref.as_deref().unwrap_or(&self.target_version),
            TargetKind::Package => &self.target_version,
        }
    }

    /// Sets [`RolloutSpec::adopt_unknown_versions`].
    #[must_use]
    pub fn adopt_unknown_versions(mut self, adopt: bool) -> Self {
        self.adopt_unknown_versions = adopt;
        self
    }

    /// Whether the server must not offer `version` back to an agent (see
    /// [`RolloutSpec::adopted_versions`]).
    #[must_use]
    pub fn is_adopted(&self, version: &str) -> bool {
        self.adopted_versions.iter().any(|v| v == version)
    }

    /// Sets [`RolloutSpec::target_ref`].
    #[must_use]
    pub fn target_ref(mut self, reference: impl Into<String>) -> Self {
        self.target_ref = Some(reference.into());
        self
    }

    /// Sets [`RolloutSpec::canary_share`].
    #[must_use]
    pub fn canary_share(mut self, share: f64) -> Self {
        self.canary_share = share;
        self
    }

    /// Sets [`RolloutSpec::batches`].
    #[must_use]
    pub fn batches(mut self, batches: BatchPlan) -> Self {
        self.batches = batches;
        self
    }

    /// Sets [`RolloutSpec::bake_time`].
    #[must_use]
    pub fn bake_time(mut self, bake_time: Duration) -> Self {
        self.bake_time = bake_time;
        self
    }

    /// Sets [`RolloutSpec::install_timeout`].
    #[must_use]
    pub fn install_timeout(mut self, timeout: Duration) -> Self {
        self.install_timeout = timeout;
        self
    }

    /// Sets [`RolloutSpec::health_timeout`].
    #[must_use]
    pub fn health_timeout(mut self, timeout: Duration) -> Self {
        self.health_timeout = timeout;
        self
    }

    /// Sets [`RolloutSpec::failure_budget`].
    #[must_use]
    pub fn failure_budget(mut self, budget: FailureBudget) -> Self {
        self.failure_budget = budget;
        self
    }

    /// Checks the knobs are usable.
    ///
    /// # Errors
    /// [`RolloutError::InvalidSpec`] naming the field.
    pub fn validate(&self) -> Result<(), RolloutError> {
        let invalid =
            |field: &'static str, reason: String| Err(RolloutError::InvalidSpec { field, reason });
        if self.package_name.trim().is_empty() {
            return invalid("package_name", "must not be empty".into());
        }
        if self.target_version.trim().is_empty() {
            return invalid("target_version", "must not be empty".into());
        }
        if self.target_kind == TargetKind::Config
            && self.target_ref.as_deref().is_none_or(str::is_empty)
        {
            return invalid(
                "target_ref",
                "a config rollout needs the config hash".into(),
            );
        }
        if !(self.canary_share > 0.0 && self.canary_share <= 1.0) {
            return invalid(
                "canary_share",
                format!("{} is not in (0, 1]", self.canary_share),
            );
        }
        match &self.batches {
            BatchPlan::Share(share) if !(*share > 0.0 && *share <= 1.0) => {
                return invalid("batches", format!("share {share} is not in (0, 1]"));
            }
            BatchPlan::Sizes(sizes) if sizes.contains(&0) => {
                return invalid("batches", "batch sizes must be positive".into());
            }
            _ => {}
        }
        if let FailureBudget::Share(share) = self.failure_budget
            && !(0.0..=1.0).contains(&share)
        {
            return invalid("failure_budget", format!("share {share} is not in [0, 1]"));
        }
        Ok(())
    }
}

/// Splits `count` agents after the canaries into batch sizes (all positive, summing to `count`).
pub(crate) fn batch_sizes(plan: &BatchPlan, count: usize) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = count;
    match plan {
        BatchPlan::Share(share) => {
            // Validated to lie in (0, 1]; ceil keeps every batch at least one agent.
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let step = ((share * count as f64).ceil() as usize).max(1);
            while left > 0 {
                let size = step.min(left);
                sizes.push(size);
                left -= size;
            }
        }
        BatchPlan::Sizes(explicit) => {
            for &size in explicit {
                if left == 0 {
                    break;
                }
                let size = usize::try_from(size).unwrap_or(usize::MAX).min(left);
                sizes.push(size);
                left -= size;
            }
            if left > 0 {
                sizes.push(left);
            }
        }
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_batches_cover_everyone_once() {
        assert_eq!(batch_sizes(&BatchPlan::Share(0.25), 10), vec![3, 3, 3, 1]);
        assert_eq!(batch_sizes(&BatchPlan::Share(1.0), 7), vec![7]);
        assert!(batch_sizes(&BatchPlan::Share(0.5), 0).is_empty());
    }

    #[test]
    fn explicit_sizes_get_a_final_batch_for_the_rest() {
        assert_eq!(
            batch_sizes(&BatchPlan::Sizes(vec![2, 5]), 10),
            vec![2, 5, 3]
        );
        assert_eq!(batch_sizes(&BatchPlan::Sizes(vec![20]), 10), vec![10]);
    }

    #[test]
    fn budget_share_rounds_down() {
        assert_eq!(FailureBudget::Share(0.1).allowed(25), 2);
        assert_eq!(FailureBudget::Count(3).allowed(1), 3);
    }

    #[test]
    fn validation_names_the_field() {
        let spec =
            RolloutSpec::new("otelcol", "1.0.0", LabelSelector::all(), "ops").canary_share(0.0);
        match spec.validate() {
            Err(RolloutError::InvalidSpec { field, .. }) => assert_eq!(field, "canary_share"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
