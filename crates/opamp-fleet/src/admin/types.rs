//! The JSON bodies of the admin API, shared by the server and [`super::AdminClient`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::FleetError;
use crate::audit::AuditRecord;
use crate::config::duration_text;
use crate::events::RolloutStatus;
use crate::rollout::{
    AgentProgress, Progress, Rollout, RolloutId, RolloutState, SkippedAgent, Wave,
};
use crate::selector::LabelSelector;
use crate::spec::{BatchPlan, FailureBudget, RolloutSpec, TargetKind};
use crate::time::Timestamp;

/// `POST /api/v1/rollouts`: what to roll out where. Unset knobs take the engine's defaults
/// ([`RolloutSpec::new`]). Durations are humantime text (`90s`, `10m`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RolloutRequest {
    /// Package name in the catalog.
    pub package: String,
    /// Target version (in the catalog).
    pub version: String,
    /// Label selector text (`env=prod,region in (eu,us)`); empty selects every agent.
    #[serde(default)]
    pub selector: String,
    /// Share of agents in the canary wave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_share: Option<f64>,
    /// Batch plan: `{"share": 0.25}` (a fraction of the agents per batch) or
    /// `{"sizes": [10, 50]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub batches: Option<BatchPlan>,
    /// Bake time between waves.
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "90s")]
    pub bake_time: Option<Duration>,
    /// Time an agent has to install after its offer.
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "90s")]
    pub install_timeout: Option<Duration>,
    /// Time an agent has to report healthy after installing.
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "90s")]
    pub health_timeout: Option<Duration>,
    /// Failures each batch tolerates: `{"count": 2}` or `{"share": 0.1}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub failure_budget: Option<FailureBudget>,
    /// Accept agents on versions the catalog does not have
    /// ([`RolloutSpec::adopt_unknown_versions`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub adopt_unknown_versions: bool,
    /// `config` rolls out version `version` of the config catalog's config `package` as
    /// remote config; `package` (the default) a package version.
    #[serde(default, skip_serializing_if = "TargetKind::is_package")]
    #[schema(value_type = Option<String>, example = "config")]
    pub kind: TargetKind,
}

impl RolloutRequest {
    /// A request with every knob at its default.
    #[must_use]
    pub fn new(package: impl Into<String>, version: impl Into<String>) -> Self {
        RolloutRequest {
            package: package.into(),
            version: version.into(),
            selector: String::new(),
            canary_share: None,
            batches: None,
            bake_time: None,
            install_timeout: None,
            health_timeout: None,
            failure_budget: None,
            adopt_unknown_versions: false,
            kind: TargetKind::Package,
        }
    }

    /// A request rolling out version `version` of the catalog config `name`.
    #[must_use]
    pub fn config(name: impl Into<String>, version: impl Into<String>) -> Self {
        let mut request = RolloutRequest::new(name, version);
        request.kind = TargetKind::Config;
        request
    }

    /// The engine spec, created by `by`.
    ///
    /// # Errors
    /// [`FleetError::Rollout`] (an invalid selector or spec).
    pub fn into_spec(self, by: &str) -> Result<RolloutSpec, FleetError> {
        let selector: LabelSelector = self.selector.parse()?;
        let mut spec = RolloutSpec::new(self.package, self.version, selector, by);
        if let Some(share) = self.canary_share {
            spec = spec.canary_share(share);
        }
        if let Some(batches) = self.batches {
            spec = spec.batches(batches);
        }
        if let Some(bake) = self.bake_time {
            spec = spec.bake_time(bake);
        }
        if let Some(timeout) = self.install_timeout {
            spec = spec.install_timeout(timeout);
        }
        if let Some(timeout) = self.health_timeout {
            spec = spec.health_timeout(timeout);
        }
        if let Some(budget) = self.failure_budget {
            spec = spec.failure_budget(budget);
        }
        spec = spec.adopt_unknown_versions(self.adopt_unknown_versions);
        spec.target_kind = self.kind;
        if spec.target_kind.is_package() {
            spec.validate()?;
        }
        // A config spec is complete (and validated when planned) once the server filled in
        // the config hash from its catalog.
        Ok(spec)
    }
}

/// A rollout as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutView {
    /// Id.
    pub id: RolloutId,
    /// What was asked for.
    pub spec: RolloutSpec,
    /// Coarse status.
    pub status: RolloutStatus,
    /// Engine events applied (and persisted) so far.
    pub sequence: u64,
    /// Full state.
    pub state: RolloutState,
    /// Counts by phase.
    pub progress: Progress,
    /// When planned.
    pub created_at: Timestamp,
    /// The waves (0 = canary).
    pub waves: Vec<Wave>,
    /// Participating agents.
    pub agents: Vec<AgentProgress>,
    /// Selected agents left out.
    pub skipped: Vec<SkippedAgent>,
}

impl RolloutView {
    /// The view of `rollout`.
    #[must_use]
    pub fn of(rollout: &Rollout) -> Self {
        RolloutView {
            id: rollout.id().clone(),
            spec: rollout.spec().clone(),
            status: rollout.status(),
            sequence: rollout.sequence(),
            state: rollout.state().clone(),
            progress: rollout.progress(),
            created_at: rollout.created_at(),
            waves: rollout.waves().to_vec(),
            agents: rollout.agents().to_vec(),
            skipped: rollout.skipped().to_vec(),
        }
    }
}

/// One message of `GET /api/v1/rollouts/{id}/events` (Server-Sent Events, event name
/// `progress`): the rollout after a step and the audit records the step produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RolloutUpdate {
    /// The rollout.
    pub rollout: RolloutId,
    /// Events applied so far.
    pub sequence: u64,
    /// Status after the step.
    pub status: RolloutStatus,
    /// Counts by phase after the step.
    pub progress: Progress,
    /// What the step logged.
    pub audit: Vec<AuditRecord>,
}

impl RolloutUpdate {
    /// The update describing `rollout` now, with `audit`.
    #[must_use]
    pub fn of(rollout: &Rollout, audit: Vec<AuditRecord>) -> Self {
        RolloutUpdate {
            rollout: rollout.id().clone(),
            sequence: rollout.sequence(),
            status: rollout.status(),
            progress: rollout.progress(),
            audit,
        }
    }
}

/// `POST /api/v1/rollouts/{id}/abort` body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct AbortRequest {
    /// Why, for the audit log.
    #[serde(default)]
    pub reason: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

/// `POST /api/v1/enrollment-tokens`: a one-time token an agent exchanges for its credential
/// (`[agent_identity] mode = "enrollment"`). The body may be empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EnrollmentTokenRequest {
    /// How long the token stays valid (humantime text; one day when unset).
    #[serde(
        default,
        with = "duration_text::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, example = "1h")]
    pub ttl: Option<Duration>,
}

/// The answer to `POST /api/v1/enrollment-tokens`. The token is shown this once: the server
/// keeps only its SHA-256.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct EnrollmentToken {
    /// The token, for the agent's `server.enrollment_token_file`.
    pub token: String,
    /// When it stops being valid (epoch milliseconds).
    #[schema(value_type = u64)]
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrollmentToken")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}
