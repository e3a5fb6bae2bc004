//! The admin API's bodies about single agents: the agent page
//! (`GET /api/v1/agents/{uid}`) and the restart command (`POST /api/v1/agents/restart`).

use opamp_proto::InstanceUid;
use serde::{Deserialize, Serialize};

use super::views::AgentSummary;
use crate::store::AgentDetails;

/// `GET /api/v1/agents/{uid}`: the registry row and everything else the agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AgentView {
    /// The registry row (labels, capabilities, installed versions, health, last seen).
    #[serde(flatten)]
    pub record: AgentSummary,
    /// Description attributes, package statuses, effective config, remote config status,
    /// health tree and connection (each absent until reported).
    pub details: AgentDetails,
}

impl AgentView {
    /// The view of `record` with `details`.
    #[must_use]
    pub fn new(record: AgentSummary, details: AgentDetails) -> Self {
        AgentView { record, details }
    }
}

/// `POST /api/v1/agents/restart`: which agents to restart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RestartRequest {
    /// Label selector text (`env=prod,region in (eu,us)`); empty selects every agent.
    #[serde(default)]
    pub selector: String,
    /// When not empty, only these agents (those of them the selector also matches).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<String>)]
    pub agents: Vec<InstanceUid>,
}

impl RestartRequest {
    /// A request for the agents `selector` matches.
    #[must_use]
    pub fn new(selector: impl Into<String>) -> Self {
        RestartRequest {
            selector: selector.into(),
            agents: Vec::new(),
        }
    }

    /// A request for one agent (the dashboard's restart button).
    #[must_use]
    pub fn agent(uid: InstanceUid) -> Self {
        RestartRequest {
            selector: String::new(),
            agents: vec![uid],
        }
    }
}

/// The answer to [`RestartRequest`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct RestartReport {
    /// Connected agents that were sent the `Restart` command.
    #[schema(value_type = Vec<String>)]
    pub restarted: Vec<InstanceUid>,
    /// Connected, matching agents that do not accept restart commands (left alone).
    #[schema(value_type = Vec<String>)]
    pub not_accepting: Vec<InstanceUid>,
}
