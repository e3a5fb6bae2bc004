//! A staged rollout over your own agent list, persisted in a store of your own, driven by your
//! own clock: everything `opamp-rollout` needs from an embedder.
//!
//! The store here is a JSON journal (one line per step, plus the latest snapshot of each
//! rollout); the "agents" are a list of hosts that install whatever they are offered a few
//! seconds later. Halfway through, the coordinator is thrown away and rebuilt from the journal,
//! as after a crash, and the rollout carries on.
//!
//! Run: `cargo run -p opamp-rollout --example custom_store`

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use opamp_proto::{AgentCapabilities, InstanceUid};
use opamp_rollout::fleet::{AgentReport, Fleet, FleetSettings, Output, PackageReport};
use opamp_rollout::store::RolloutStore;
use opamp_rollout::{
    AgentRecord, AuditRecord, Command, Event, LabelSelector, Labels, Rollout, RolloutId,
    RolloutSpec, RolloutStatus, Timestamp,
};

/// The embedder's store: an append-only journal of steps as JSON lines, and each rollout's
/// latest snapshot (what a restart loads).
#[derive(Default)]
struct JsonJournal {
    lines: Vec<String>,
    snapshots: BTreeMap<RolloutId, (String, Timestamp)>,
}

impl JsonJournal {
    fn snapshot(&self, id: &RolloutId) -> Result<Option<Rollout>, serde_json::Error> {
        self.snapshots
            .get(id)
            .map(|(json, _)| serde_json::from_str(json))
            .transpose()
    }
}

impl RolloutStore for JsonJournal {
    type Error = serde_json::Error;

    fn create_rollout(&mut self, rollout: &Rollout) -> Result<(), Self::Error> {
        let json = serde_json::to_string(rollout)?;
        self.snapshots
            .insert(rollout.id().clone(), (json, rollout.created_at()));
        Ok(())
    }

    fn record_step(
        &mut self,
        rollout: &Rollout,
        event: &Event,
        now: Timestamp,
        commands: &[Command],
    ) -> Result<(), Self::Error> {
        let audit: Vec<&AuditRecord> = commands
            .iter()
            .filter_map(|command| match command {
                Command::Audit(record) => Some(record),
                _ => None,
            })
            .collect();
        let line = serde_json::to_string(&(rollout.id(), now, event, audit))?;
        let snapshot = serde_json::to_string(rollout)?;
        // Both or neither: the line and the snapshot are built before either is kept.
        self.lines.push(line);
        self.snapshots.insert(rollout.id().clone(), (snapshot, now));
        Ok(())
    }

    fn load_rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, Self::Error> {
        self.snapshot(id)
    }

    fn active_rollouts(&self) -> Result<Vec<Rollout>, Self::Error> {
        let mut active = Vec::new();
        for id in self.snapshots.keys() {
            if let Some(rollout) = self.snapshot(id)?.filter(|r| !r.is_terminal()) {
                active.push(rollout);
            }
        }
        Ok(active)
    }

    fn standing_rollouts(&self) -> Result<Vec<(Rollout, Timestamp)>, Self::Error> {
        let mut completed = Vec::new();
        for (id, (_, at)) in &self.snapshots {
            if let Some(rollout) = self
                .snapshot(id)?
                .filter(|r| r.status() == RolloutStatus::Completed)
            {
                completed.push((rollout, *at));
            }
        }
        Ok(completed)
    }

    fn ended_since(&self, since: Timestamp) -> Result<Vec<(Rollout, Timestamp)>, Self::Error> {
        let mut ended = Vec::new();
        for (id, (_, at)) in &self.snapshots {
            if let Some(rollout) = self
                .snapshot(id)?
                .filter(|r| r.is_terminal() && *at >= since)
            {
                ended.push((rollout, *at));
            }
        }
        Ok(ended)
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<(), Self::Error> {
        self.lines.push(serde_json::to_string(records)?);
        Ok(())
    }
}

/// One of the embedder's hosts.
struct Host {
    uid: InstanceUid,
    labels: Labels,
    running: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let hosts: Vec<Host> = (0..40u8)
        .map(|i| Host {
            uid: InstanceUid::from([i; 16]),
            labels: [("env", if i % 4 == 0 { "staging" } else { "prod" })]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            running: "1.4.0".to_owned(),
        })
        .collect();
    let mut now = Timestamp::from_millis(1_700_000_000_000);
    let mut journal = JsonJournal::default();
    let mut fleet = Fleet::new(FleetSettings::default());

    // Each host says who it is and what it runs (an OpAMP agent's first message).
    let accepts_packages = AgentCapabilities::ACCEPTS_PACKAGES.bits();
    for host in &hosts {
        fleet.report(
            host.uid,
            AgentReport::Capabilities(accepts_packages),
            now,
            &mut journal,
        );
        fleet.report(
            host.uid,
            AgentReport::Labels(host.labels.clone()),
            now,
            &mut journal,
        );
        let running = vec![(
            "collector".to_owned(),
            PackageReport::Installed(host.running.clone()),
        )];
        fleet.report(host.uid, AgentReport::Packages(running), now, &mut journal);
    }

    let selector: LabelSelector = "env=prod".parse()?;
    let spec = RolloutSpec::new("collector", "1.5.0", selector, "alice")
        .canary_share(0.1)
        .bake_time(Duration::from_secs(300));
    let rollout = fleet.plan_packages(RolloutId::new("upgrade-1.5.0"), spec, now)?;
    println!(
        "planned {} agents in {} waves ({} skipped)",
        rollout.agents().len(),
        rollout.waves().len(),
        rollout.skipped().len()
    );
    fleet.start(rollout, "alice", now, &mut journal)?;

    // Installs the hosts will report, in time order: (when, host, version).
    let mut installs: VecDeque<(Timestamp, usize, String)> = VecDeque::new();
    let mut restarted = false;
    let id = RolloutId::new("upgrade-1.5.0");
    while fleet.rollout(&id).is_some() {
        while let Some(output) = fleet.poll_output() {
            match output {
                Output::OfferPackages { uid, versions } => {
                    let host = hosts
                        .iter()
                        .position(|h| h.uid == uid)
                        .ok_or("unknown host")?;
                    let version = versions.get("collector").cloned().ok_or("no version")?;
                    installs.push_back((
                        now.saturating_add(Duration::from_secs(20)),
                        host,
                        version,
                    ));
                }
                Output::RolloutStepped(step) if step.status_changed => {
                    println!(
                        "{:>6}s  {}",
                        (now.as_millis() - 1_700_000_000_000) / 1000,
                        step.status
                    );
                }
                _ => {}
            }
        }
        // Halfway, the process "crashes": a new coordinator is built from the journal and the
        // registry rows the embedder kept.
        if !restarted && journal.lines.len() > 20 {
            restarted = true;
            let registry: Vec<AgentRecord> = fleet.agents().cloned().collect();
            fleet = Fleet::recover(&journal, registry, [], FleetSettings::default(), now)?;
            println!("restarted from {} journal lines", journal.lines.len());
            // Hosts reconnect and get their offers again.
            for host in &hosts {
                fleet.connected(host.uid, now, &mut journal);
            }
        }
        // The next thing to happen: a host's install, or the coordinator's deadline.
        let next_install = installs.front().map(|(at, _, _)| *at);
        let deadline = fleet.poll_timeout();
        let install_first = match (next_install, deadline) {
            (Some(at), Some(deadline)) => at <= deadline,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if install_first {
            let (at, host, version) = installs.pop_front().ok_or("empty")?;
            now = at;
            let report = vec![("collector".to_owned(), PackageReport::Installed(version))];
            fleet.report(
                hosts[host].uid,
                AgentReport::Health(true),
                now,
                &mut journal,
            );
            fleet.report(
                hosts[host].uid,
                AgentReport::Packages(report),
                now,
                &mut journal,
            );
        } else if let Some(deadline) = deadline {
            now = now.max(deadline);
            fleet.handle_timeout(now, &mut journal);
        } else {
            return Err("nothing left to wait for".into());
        }
    }
    let done = journal.load_rollout(&id)?.ok_or("stored")?;
    println!(
        "{}: {} of {} agents on 1.5.0, {} journal lines",
        done.status(),
        done.progress().healthy,
        done.agents().len(),
        journal.lines.len()
    );
    if done.status() != RolloutStatus::Completed {
        return Err(format!("rollout ended {}", done.status()).into());
    }
    Ok(())
}
