//! Applying events: [`Rollout::handle`].

use opamp_proto::InstanceUid;

use super::{AgentPhase, AgentProgress, FailureReason, Rollout, RolloutState};
use crate::RolloutError;
use crate::audit::{Actor, AuditAction, AuditRecord};
use crate::events::{Command, Event, RolloutStatus};
use crate::time::Timestamp;

impl Rollout {
    /// Applies `event` at time `now` and returns what the caller must do, in order.
    ///
    /// Deadlines that passed by `now` are processed first, so every event doubles as a timeout.
    /// `now` earlier than a previous call is treated as that previous time. Agent events for
    /// agents outside the rollout return no commands.
    ///
    /// # Errors
    /// [`RolloutError::InvalidTransition`] when an operator event does not apply to the current
    /// status (start twice, resume when not paused, anything after the end, ...). The rollout is
    /// left unchanged then, so a rejected event need not be persisted.
    ///
    /// See [`Rollout`] for an example.
    pub fn handle(&mut self, event: Event, now: Timestamp) -> Result<Vec<Command>, RolloutError> {
        self.check_allowed(&event)?;
        let now = now.max(self.data.clock);
        self.data.clock = now;
        self.data.sequence += 1;
        let mut out = Vec::new();
        self.expire_deadlines(now, &mut out);
        match event {
            Event::Start { by } => self.start(by, now, &mut out),
            Event::Pause { by } => self.pause(by, now, &mut out),
            Event::Resume { by } => self.resume(by, now, &mut out),
            Event::Abort { by, reason } => {
                if self.is_running() {
                    self.abort(Actor::Operator(by), reason, now, &mut out);
                }
            }
            Event::AgentInstalled {
                uid,
                version,
                healthy,
            } => self.on_installed(uid, version, healthy, now, &mut out),
            Event::AgentInstallFailed { uid, error } => {
                if let Some(index) = self.running_agent(&uid)
                    && matches!(
                        self.data.agents[index as usize].phase,
                        AgentPhase::Offered { .. }
                    )
                {
                    self.fail_agent(index, FailureReason::InstallFailed { error }, now, &mut out);
                }
            }
            Event::AgentHealth { uid, healthy } => self.on_health(uid, healthy, now, &mut out),
            Event::AgentDisconnected { uid } => self.set_connected(&uid, false),
            Event::AgentConnected { uid } => self.set_connected(&uid, true),
            Event::Timeout => {}
        }
        self.advance(now, &mut out);
        Ok(out)
    }

    fn check_allowed(&self, event: &Event) -> Result<(), RolloutError> {
        let status = self.status();
        let allowed = match event {
            Event::Start { .. } => status == RolloutStatus::Planned,
            Event::Pause { .. } => {
                matches!(
                    status,
                    RolloutStatus::Canary | RolloutStatus::Batch | RolloutStatus::Baking
                )
            }
            Event::Resume { .. } => status == RolloutStatus::Paused,
            Event::Abort { .. } => !status.is_terminal() && status != RolloutStatus::Aborting,
            _ => true,
        };
        if allowed {
            Ok(())
        } else {
            Err(RolloutError::InvalidTransition {
                rollout: self.data.id.clone(),
                status,
                event: event.kind(),
            })
        }
    }

    /// Planned, installing, baking or paused: failures still count and may abort.
    fn is_running(&self) -> bool {
        matches!(
            self.data.state,
            RolloutState::Planned
                | RolloutState::Canary
                | RolloutState::Batch { .. }
                | RolloutState::Baking { .. }
                | RolloutState::Paused { .. }
        )
    }

    fn running_agent(&self, uid: &InstanceUid) -> Option<u32> {
        if self.is_running() {
            self.index.get(uid).copied()
        } else {
            None
        }
    }

    fn audit(&self, now: Timestamp, actor: Actor, action: AuditAction, out: &mut Vec<Command>) {
        out.push(Command::Audit(AuditRecord::new(
            now,
            self.data.id.clone(),
            actor,
            action,
        )));
    }

    fn set_state(&mut self, state: RolloutState, out: &mut Vec<Command>) {
        let from = self.status();
        let to = state.status();
        self.data.state = state;
        if from != to {
            tracing::info!(rollout = %self.data.id, %from, %to, "rollout state changed");
            out.push(Command::StateChanged { from, to });
        }
    }

    fn start(&mut self, by: String, now: Timestamp, out: &mut Vec<Command>) {
        self.audit(now, Actor::Operator(by.clone()), AuditAction::Started, out);
        if !self.data.spec.adopted_versions.is_empty() {
            let versions = self.data.spec.adopted_versions.clone();
            self.audit(
                now,
                Actor::Operator(by),
                AuditAction::AdoptedVersions { versions },
                out,
            );
        }
        self.set_state(RolloutState::Canary, out);
        self.start_wave(0, now, out);
    }

    fn pause(&mut self, by: String, now: Timestamp, out: &mut Vec<Command>) {
        // A deadline processed in this very step may have aborted the rollout already.
        if !matches!(
            self.data.state,
            RolloutState::Canary | RolloutState::Batch { .. } | RolloutState::Baking { .. }
        ) {
            return;
        }
        self.audit(now, Actor::Operator(by.clone()), AuditAction::Paused, out);
        let resume_to = Box::new(self.data.state.clone());
        self.set_state(RolloutState::Paused { by, resume_to }, out);
    }

    fn resume(&mut self, by: String, now: Timestamp, out: &mut Vec<Command>) {
        if let RolloutState::Paused { resume_to, .. } = &self.data.state {
            let resume_to = (**resume_to).clone();
            self.audit(now, Actor::Operator(by), AuditAction::Resumed, out);
            self.set_state(resume_to, out);
        }
    }

    fn start_wave(&mut self, wave: u32, now: Timestamp, out: &mut Vec<Command>) {
        let deadline = now.saturating_add(self.data.spec.install_timeout);
        let target = self.data.spec.target_key();
        let range = {
            let w = &mut self.data.waves[wave as usize];
            w.started_at = Some(now);
            w.start..w.end
        };
        out.push(Command::Audit(AuditRecord::new(
            now,
            self.data.id.clone(),
            Actor::Engine,
            AuditAction::WaveStarted {
                wave,
                agents: range.end - range.start,
            },
        )));
        let health_deadline = now.saturating_add(self.data.spec.health_timeout);
        for index in range {
            let agent = &mut self.data.agents[index as usize];
            let uid = agent.uid;
            out.push(Command::Offer {
                uid,
                version: target.to_owned(),
            });
            if agent.reported_version != target {
                agent.phase = AgentPhase::Offered { at: now };
                agent.deadline = Some(deadline);
                self.deadlines.insert((deadline, index));
            } else if agent.health == Some(true) {
                // Installed (and healthy) before its wave started, for example by hand: it
                // counts like any other agent that got there.
                agent.phase = AgentPhase::Healthy { at: now };
                self.data.waves[wave as usize].settled += 1;
                out.push(Command::Audit(AuditRecord::new(
                    now,
                    self.data.id.clone(),
                    Actor::Agent(uid),
                    AuditAction::AgentHealthy { uid },
                )));
            } else {
                agent.phase = AgentPhase::Installed { at: now };
                agent.deadline = Some(health_deadline);
                self.deadlines.insert((health_deadline, index));
            }
        }
    }

    fn set_deadline(&mut self, index: u32, deadline: Option<Timestamp>) {
        let agent = &mut self.data.agents[index as usize];
        if let Some(old) = agent.deadline.take() {
            self.deadlines.remove(&(old, index));
        }
        agent.deadline = deadline;
        if let Some(new) = deadline {
            self.deadlines.insert((new, index));
        }
    }

    fn expire_deadlines(&mut self, now: Timestamp, out: &mut Vec<Command>) {
        while let Some(&(when, index)) = self.deadlines.first() {
            if when > now {
                break;
            }
            self.deadlines.pop_first();
            let agent = &mut self.data.agents[index as usize];
            agent.deadline = None;
            let connected = agent.connected;
            let reason = match agent.phase {
                AgentPhase::Offered { .. } => FailureReason::InstallTimedOut { connected },
                AgentPhase::Installed { .. } => FailureReason::HealthTimedOut { connected },
                _ => continue,
            };
            if self.is_running() {
                self.fail_agent(index, reason, when, out);
            }
        }
    }

    fn on_installed(
        &mut self,
        uid: InstanceUid,
        version: String,
        healthy: Option<bool>,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let Some(&index) = self.index.get(&uid) else {
            return;
        };
        let running = self.is_running();
        let health_deadline = now.saturating_add(self.data.spec.health_timeout);
        let agent = &mut self.data.agents[index as usize];
        if agent.reported_version == version {
            return; // a repeated status report, nothing new
        }
        let was_pending = agent.revert_pending();
        agent.reported_version = version.clone();
        agent.health = None;
        let is_pending = agent.revert_pending();
        self.adjust_pending_reverts(was_pending, is_pending);
        let agent = &self.data.agents[index as usize];
        let is_target = version == self.data.spec.target_key();
        let is_previous = version == agent.previous_version;
        let reverted = agent.reverted;
        let offered = matches!(agent.phase, AgentPhase::Offered { .. });
        let previous = agent.previous_version.clone();
        if is_previous && reverted {
            self.audit(
                now,
                Actor::Agent(uid),
                AuditAction::AgentReverted { uid, version },
                out,
            );
            return;
        }
        self.audit(
            now,
            Actor::Agent(uid),
            AuditAction::AgentInstalled { uid, version },
            out,
        );
        if is_target && reverted {
            // A late installer: it was told to go back already; say it again.
            out.push(Command::Revert {
                uid,
                to_version: previous,
            });
        } else if is_target && offered && running {
            self.data.agents[index as usize].phase = AgentPhase::Installed { at: now };
            self.set_deadline(index, Some(health_deadline));
            // The health that came with the report is the new version's first reading.
            if let Some(healthy) = healthy {
                self.on_health(uid, healthy, now, out);
            }
        }
    }

    fn on_health(
        &mut self,
        uid: InstanceUid,
        healthy: bool,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        let Some(index) = self.running_agent(&uid) else {
            return;
        };
        self.data.agents[index as usize].health = Some(healthy);
        let phase = &self.data.agents[index as usize].phase;
        match (phase, healthy) {
            (AgentPhase::Installed { .. }, true) => {
                self.data.agents[index as usize].phase = AgentPhase::Healthy { at: now };
                self.set_deadline(index, None);
                let wave = self.data.agents[index as usize].wave;
                self.data.waves[wave as usize].settled += 1;
                self.audit(
                    now,
                    Actor::Agent(uid),
                    AuditAction::AgentHealthy { uid },
                    out,
                );
            }
            (AgentPhase::Installed { .. } | AgentPhase::Healthy { .. }, false) => {
                self.fail_agent(index, FailureReason::Unhealthy, now, out);
            }
            _ => {}
        }
    }

    fn set_connected(&mut self, uid: &InstanceUid, connected: bool) {
        if let Some(&index) = self.index.get(uid) {
            self.data.agents[index as usize].connected = connected;
        }
    }

    /// Marks the agent failed, reverts it, and aborts the rollout if its wave is over budget.
    fn fail_agent(
        &mut self,
        index: u32,
        reason: FailureReason,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) {
        self.set_deadline(index, None);
        let agent = &mut self.data.agents[index as usize];
        let was_healthy = matches!(agent.phase, AgentPhase::Healthy { .. });
        agent.phase = AgentPhase::Failed {
            at: now,
            reason: reason.clone(),
        };
        let uid = agent.uid;
        let wave_index = agent.wave;
        let to_version = agent.previous_version.clone();
        let plan = revert_plan(&self.data.spec, agent);
        let adopted = plan == RevertPlan::Adopted;
        let first_revert = !agent.reverted && !adopted;
        let refusal = match &plan {
            RevertPlan::MayBeRefused(why) if first_revert => Some(why.clone()),
            _ => None,
        };
        if !adopted {
            let was_pending = agent.revert_pending();
            agent.reverted = true;
            if refusal.is_some() {
                agent.revert_refusal.clone_from(&refusal);
            }
            let is_pending = agent.revert_pending();
            self.adjust_pending_reverts(was_pending, is_pending);
        }
        let actor = match reason {
            FailureReason::InstallFailed { .. } | FailureReason::Unhealthy => Actor::Agent(uid),
            _ => Actor::Engine,
        };
        tracing::debug!(rollout = %self.data.id, %uid, ?reason, "agent failed");
        self.audit(now, actor, AuditAction::AgentFailed { uid, reason }, out);
        if first_revert {
            if let Some(reason) = refusal {
                let version = to_version.clone();
                let action = AuditAction::AgentNotReverted {
                    uid,
                    version,
                    reason,
                };
                self.audit(now, Actor::Engine, action, out);
            }
            out.push(Command::Revert { uid, to_version });
        } else if adopted {
            self.audit(
                now,
                Actor::Engine,
                AuditAction::AgentNotReverted {
                    uid,
                    version: to_version,
                    reason: String::new(),
                },
                out,
            );
        }
        let wave = &mut self.data.waves[wave_index as usize];
        wave.failed += 1;
        if !was_healthy {
            wave.settled += 1;
        }
        if wave.failed > wave.budget {
            let reason = if wave_index == 0 {
                format!("canary agent {uid} failed")
            } else {
                format!(
                    "wave {wave_index} exceeded its failure budget ({} of {} failed, budget {})",
                    wave.failed,
                    wave.size(),
                    wave.budget
                )
            };
            self.abort(Actor::Engine, reason, now, out);
        }
    }

    /// Reverts every agent that was offered the target and waits for confirmations.
    fn abort(&mut self, actor: Actor, reason: String, now: Timestamp, out: &mut Vec<Command>) {
        tracing::warn!(rollout = %self.data.id, %reason, "rollout aborted");
        self.audit(
            now,
            actor,
            AuditAction::Aborted {
                reason: reason.clone(),
            },
            out,
        );
        let mut not_reverted = Vec::new();
        for agent in &mut self.data.agents {
            agent.deadline = None;
            let plan = revert_plan(&self.data.spec, agent);
            if agent.was_offered() && !agent.reverted && plan == RevertPlan::Adopted {
                // Failed agents were logged when they failed.
                if !matches!(agent.phase, AgentPhase::Failed { .. }) {
                    not_reverted.push((agent.uid, agent.previous_version.clone(), String::new()));
                }
                continue;
            }
            if agent.was_offered() && !agent.reverted {
                if let RevertPlan::MayBeRefused(why) = plan {
                    // Offered all the same (an agent that does not check may comply), but
                    // not waited for, and said now.
                    agent.revert_refusal = Some(why.clone());
                    not_reverted.push((agent.uid, agent.previous_version.clone(), why));
                }
                agent.reverted = true;
                if agent.revert_pending() {
                    self.data.pending_reverts += 1;
                }
                out.push(Command::Revert {
                    uid: agent.uid,
                    to_version: agent.previous_version.clone(),
                });
            }
        }
        let refused = not_reverted
            .iter()
            .filter(|(_, _, why)| !why.is_empty())
            .count();
        let mut reason = reason;
        if let Some((_, version, why)) = not_reverted.iter().find(|(_, _, why)| !why.is_empty()) {
            // Said at abort time, so nobody waits for reverts that cannot happen.
            reason = format!(
                "{reason}; not waiting for {refused} agents on {}, which will likely refuse \
                 {version} ({why})",
                self.data.spec.target_key()
            );
        }
        for (uid, version, why) in not_reverted {
            self.audit(
                now,
                Actor::Engine,
                AuditAction::AgentNotReverted {
                    uid,
                    version,
                    reason: why,
                },
                out,
            );
        }
        self.deadlines.clear();
        let deadline = now.saturating_add(self.data.spec.install_timeout);
        self.set_state(RolloutState::Aborting { reason, deadline }, out);
    }

    fn adjust_pending_reverts(&mut self, was_pending: bool, is_pending: bool) {
        match (was_pending, is_pending) {
            (false, true) => self.data.pending_reverts += 1,
            (true, false) => self.data.pending_reverts -= 1,
            _ => {}
        }
    }

    /// Moves the rollout along as far as `now` allows.
    fn advance(&mut self, now: Timestamp, out: &mut Vec<Command>) {
        loop {
            match self.data.state.clone() {
                RolloutState::Canary | RolloutState::Batch { .. } => {
                    let wave_index = match self.data.state {
                        RolloutState::Batch { wave } => wave,
                        _ => 0,
                    };
                    let wave = &mut self.data.waves[wave_index as usize];
                    if wave.settled < wave.size() {
                        return;
                    }
                    wave.settled_at = Some(now);
                    let failed = wave.failed;
                    self.audit(
                        now,
                        Actor::Engine,
                        AuditAction::WaveSettled {
                            wave: wave_index,
                            failed,
                        },
                        out,
                    );
                    let until = now.saturating_add(self.data.spec.bake_time);
                    self.set_state(
                        RolloutState::Baking {
                            wave: wave_index,
                            until,
                        },
                        out,
                    );
                }
                RolloutState::Baking { wave, until } => {
                    if now < until {
                        return;
                    }
                    self.audit(now, Actor::Engine, AuditAction::WaveBaked { wave }, out);
                    let next = wave + 1;
                    if (next as usize) < self.data.waves.len() {
                        self.set_state(RolloutState::Batch { wave: next }, out);
                        self.start_wave(next, now, out);
                    } else {
                        self.audit(now, Actor::Engine, AuditAction::Completed, out);
                        self.set_state(RolloutState::Completed, out);
                        return;
                    }
                }
                RolloutState::Aborting { reason, deadline } => {
                    let unconfirmed = self.data.pending_reverts;
                    if unconfirmed == 0 {
                        self.audit(now, Actor::Engine, AuditAction::RolledBack, out);
                        self.set_state(RolloutState::RolledBack { reason }, out);
                    } else if now >= deadline {
                        let reason = format!(
                            "aborted ({reason}); {unconfirmed} agents did not confirm their previous version"
                        );
                        self.audit(
                            now,
                            Actor::Engine,
                            AuditAction::Failed {
                                reason: reason.clone(),
                            },
                            out,
                        );
                        self.set_state(RolloutState::Failed { reason }, out);
                    }
                    return;
                }
                _ => return,
            }
        }
    }
}

/// How the server reverts an agent after a failure or an abort.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RevertPlan {
    /// Offer the previous version and wait for the agent to confirm it.
    Offer,
    /// An adopted version the catalog does not have: nothing can be offered.
    Adopted,
    /// The agent runs the target and its previous version is signed without a downgrade
    /// authorisation from it (why): offered, but not waited for.
    MayBeRefused(String),
}

fn revert_plan(spec: &crate::spec::RolloutSpec, agent: &AgentProgress) -> RevertPlan {
    if spec.is_adopted(&agent.previous_version) {
        return RevertPlan::Adopted;
    }
    if agent.reported_version != spec.target_key() {
        // Not on the target: the revert offer only confirms what it runs.
        return RevertPlan::Offer;
    }
    match spec.unrevertible_versions.get(&agent.previous_version) {
        Some(why) => RevertPlan::MayBeRefused(why.clone()),
        None => RevertPlan::Offer,
    }
}
