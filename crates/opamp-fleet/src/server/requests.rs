//! The admin API's requests to the driver: plan and start a rollout (with the catalog checks
//! only the server can make), pause, resume or abort one, restart agents. The coordinator
//! decides; this is the part that reads the catalogs and answers with views.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use opamp_proto::{AgentCapabilities, InstanceUid};

use super::config_offers::{can_offer, empty_hash_hex};
use super::driver::{Driver, Operation, Request, now};
use crate::admin::agents::{RestartReport, RestartRequest};
use crate::admin::types::{RolloutRequest, RolloutView};
use crate::audit::{Actor, AuditAction, AuditRecord};
use crate::catalog::lock;
use crate::rollout::{Rollout, RolloutId};
use crate::selector::LabelSelector;
use crate::spec::{RolloutSpec, TargetKind};
use crate::store::AgentRecord;
use crate::time::Timestamp;
use crate::{FleetError, RolloutError};

impl Driver {
    pub(super) fn on_request(&mut self, request: Request) {
        match request {
            Request::Create { request, by, reply } => {
                let _ = reply.send(self.create(request, by));
            }
            Request::Operate {
                id,
                operation,
                by,
                reply,
            } => {
                let _ = reply.send(self.operate(&id, operation, by));
            }
            Request::Restart { request, by, reply } => {
                let _ = reply.send(self.restart(&request, by));
            }
        }
        self.carry_out();
    }

    /// Sends the `Restart` command to the connected agents the request selects that accept
    /// it. The audit record is written first: a restart nobody could account for must not
    /// happen.
    fn restart(
        &mut self,
        request: &RestartRequest,
        by: String,
    ) -> Result<RestartReport, FleetError> {
        let selector: LabelSelector = request.selector.trim().parse()?;
        let named: HashSet<InstanceUid> = request.agents.iter().copied().collect();
        let mut report = RestartReport::default();
        let mut matching: Vec<&AgentRecord> = self
            .fleet
            .agents()
            .filter(|a| a.connected && selector.matches(&a.labels))
            .filter(|a| named.is_empty() || named.contains(&a.uid))
            .collect();
        matching.sort_by_key(|a| a.uid);
        for agent in matching {
            let accepts = AgentCapabilities::from_wire(agent.capabilities)
                .contains(AgentCapabilities::ACCEPTS_RESTART_COMMAND);
            if accepts {
                report.restarted.push(agent.uid);
            } else {
                report.not_accepting.push(agent.uid);
            }
        }
        if report.restarted.is_empty() {
            return Err(FleetError::NothingToRestart {
                selector: selector.to_string(),
                not_accepting: report.not_accepting.len(),
            });
        }
        let action = AuditAction::RestartSent {
            selector: selector.to_string(),
            agents: report.restarted.clone(),
        };
        // Not about a rollout: filed with the other fleet-wide records.
        let record = AuditRecord::new(
            now(),
            RolloutId::new(crate::audit::FLEET_RECORDS),
            Actor::Operator(by.clone()),
            action,
        );
        lock(&self.store).append_audit(&[record])?;
        let command = opamp_proto::v1::ServerToAgentCommand {
            r#type: opamp_proto::v1::CommandType::Restart.into(),
        };
        let sent = self.link.command(&report.restarted, command);
        tracing::info!(by, selector = %selector, agents = sent, "restart command sent");
        Ok(report)
    }

    fn create(&mut self, request: RolloutRequest, by: String) -> Result<RolloutView, FleetError> {
        let now = now();
        let mut spec = request.into_spec(&by)?;
        if spec.target_kind == TargetKind::Config {
            return self.create_config_rollout(spec, by, now);
        }
        if self
            .catalog
            .get(&spec.package_name, &spec.target_version)?
            .is_none()
        {
            return Err(FleetError::NotFound {
                what: format!(
                    "package {} {} in the catalog",
                    spec.package_name, spec.target_version
                ),
            });
        }
        let id = RolloutId::new(uuid::Uuid::now_v7().to_string());
        let mut rollout = self.fleet.plan_packages(id.clone(), spec.clone(), now)?;
        let unknown = self.versions_not_in_catalog(&rollout)?;
        if let Some((version, agents)) = unknown.first()
            && !spec.adopt_unknown_versions
        {
            return Err(FleetError::NotFound {
                what: format!(
                    "package {} {version} in the catalog ({agents} agents run it and would \
                     need it offered to revert; add it, or accept that the server will not \
                     revert them: `opamp rollout start --adopt-unknown-versions`, \
                     `adopt_unknown_versions: true` in the API)",
                    spec.package_name
                ),
            });
        }
        let unrevertible = self.versions_agents_would_refuse(&rollout)?;
        if !unknown.is_empty() || !unrevertible.is_empty() {
            // Planned again with the same id, so the same agents in the same waves.
            spec.adopted_versions = unknown.into_iter().map(|(version, _)| version).collect();
            spec.unrevertible_versions = unrevertible;
            rollout = self.fleet.plan_packages(id, spec, now)?;
        }
        self.start_planned(rollout, by, now)
    }

    /// Stores a planned rollout, registers it and starts it.
    fn start_planned(
        &mut self,
        rollout: Rollout,
        by: String,
        now: Timestamp,
    ) -> Result<RolloutView, FleetError> {
        let id = rollout.id().clone();
        self.fleet
            .start(rollout, &by, now, &mut *lock(&self.store))?;
        self.view(&id)
    }

    /// Plans and starts a config rollout: agents that accept remote config and whose current
    /// config the server knows (reported since it started), each reverted, if need be, to the
    /// config it had (the empty config when it had none).
    fn create_config_rollout(
        &mut self,
        mut spec: RolloutSpec,
        by: String,
        now: Timestamp,
    ) -> Result<RolloutView, FleetError> {
        let entry = self
            .configs
            .get(&spec.package_name, &spec.target_version)?
            .ok_or_else(|| FleetError::NotFound {
                what: format!(
                    "config {} {} in the config catalog",
                    spec.package_name, spec.target_version
                ),
            })?;
        spec.target_ref = Some(hex::encode(&entry.hash));
        let empty = empty_hash_hex();
        let id = RolloutId::new(uuid::Uuid::now_v7().to_string());
        let mut rollout = self
            .fleet
            .plan_config(id.clone(), spec.clone(), &empty, now)?;
        let mut unknown = Vec::new();
        let previous: BTreeSet<&str> = rollout
            .agents()
            .iter()
            .map(|a| a.previous_version.as_str())
            .collect();
        for hash in previous {
            if !can_offer(&self.configs, hash)? {
                unknown.push(hash.to_owned());
            }
        }
        if let Some(hash) = unknown.first() {
            if !spec.adopt_unknown_versions {
                return Err(FleetError::NotFound {
                    what: format!(
                        "config with hash {hash} in the config catalog (agents run it and \
                         would need it offered to revert; add it, or accept that the server \
                         will not revert them: `adopt_unknown_versions: true`)"
                    ),
                });
            }
            spec.adopted_versions = unknown;
            rollout = self.fleet.plan_config(id, spec, &empty, now)?;
        }
        self.start_planned(rollout, by, now)
    }

    /// The versions below the target that agents of `rollout` would go back to and that an
    /// agent running the target would refuse (their signature authorises no downgrade from
    /// it), with why: an abort names those agents at once instead of waiting for them.
    fn versions_agents_would_refuse(
        &self,
        rollout: &Rollout,
    ) -> Result<BTreeMap<String, String>, FleetError> {
        let spec = rollout.spec();
        let Ok(target) = opamp_packages::parse_version(&spec.target_version) else {
            return Ok(BTreeMap::new());
        };
        let previous: BTreeSet<&str> = rollout
            .agents()
            .iter()
            .map(|a| a.previous_version.as_str())
            .collect();
        let mut refused = BTreeMap::new();
        for version in previous {
            let lower = opamp_packages::parse_version(version)
                .is_ok_and(|v| v.cmp_precedence(&target).is_lt());
            if !lower {
                continue;
            }
            let Some(entry) = self.catalog.get(&spec.package_name, version)? else {
                continue;
            };
            if let Some(why) = crate::catalog::downgrade_refusal(&entry.signature, &target) {
                refused.insert(version.to_owned(), why);
            }
        }
        Ok(refused)
    }

    /// The versions agents of `rollout` would go back to that the catalog does not have, with
    /// how many agents run each: the server could not offer them, so an abort could only end
    /// in `Failed` unless the operator adopts them.
    fn versions_not_in_catalog(
        &self,
        rollout: &Rollout,
    ) -> Result<Vec<(String, usize)>, FleetError> {
        let package = &rollout.spec().package_name;
        let previous: BTreeSet<&str> = rollout
            .agents()
            .iter()
            .map(|a| a.previous_version.as_str())
            .collect();
        let mut unknown = Vec::new();
        for version in previous {
            if self.catalog.get(package, version)?.is_none() {
                let agents = rollout
                    .agents()
                    .iter()
                    .filter(|a| a.previous_version == version)
                    .count();
                unknown.push((version.to_owned(), agents));
            }
        }
        Ok(unknown)
    }

    fn operate(
        &mut self,
        id: &RolloutId,
        operation: Operation,
        by: String,
    ) -> Result<RolloutView, FleetError> {
        let event = match &operation {
            Operation::Pause => "pause",
            Operation::Resume => "resume",
            Operation::Abort { .. } => "abort",
            _ => "operate",
        };
        let result = self
            .fleet
            .operate(id, operation, &by, now(), &mut *lock(&self.store));
        match result {
            Ok(()) => self.view(id),
            // Finished (or never was): say which.
            Err(RolloutError::NotActive { .. }) => match lock(&self.store).load_rollout(id)? {
                Some(rollout) => Err(FleetError::Rollout(RolloutError::InvalidTransition {
                    rollout: id.clone(),
                    status: rollout.status(),
                    event,
                })),
                None => Err(FleetError::NotFound {
                    what: format!("rollout {id}"),
                }),
            },
            Err(error) => Err(error.into()),
        }
    }

    fn view(&self, id: &RolloutId) -> Result<RolloutView, FleetError> {
        if let Some(rollout) = self.fleet.rollout(id) {
            return Ok(RolloutView::of(rollout));
        }
        lock(&self.store)
            .load_rollout(id)?
            .map(|r| RolloutView::of(&r))
            .ok_or_else(|| FleetError::NotFound {
                what: format!("rollout {id}"),
            })
    }
}
