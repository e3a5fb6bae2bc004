//! The demo's steps, in order; each one records what it expected and what happened.

use std::path::Path;
use std::time::Instant;

use opamp_fleet::admin::{AdminClient, RolloutRequest, RolloutView};
use opamp_fleet::server::{FleetServer, RunningFleetServer};
use opamp_fleet::{
    AgentPhase, AuditAction, BatchPlan, FailureBudget, FailureReason, FleetServerConfig,
    RolloutStatus,
};

use super::Timing;
use super::agents::{AgentSettings, DEMO_LABEL, Supervisors, running_config};
use super::release::{self, PACKAGE, Release, SignedPackage};
use super::summary::Summary;
use crate::cmd::watch;
use crate::failure::{CommandError, Failure, ResultExt as _};
use crate::output;

/// How often the demo reads the fleet while it waits for agents to settle.
const FLEET_POLL: std::time::Duration = std::time::Duration::from_millis(300);

/// Runs every step, then stops every process, prints the summary and keeps the files when a
/// step failed. Ctrl-C, SIGTERM or SIGHUP stops the demo the same way.
pub(crate) async fn run(agents: u32, timing: Timing) -> Result<(), CommandError> {
    let dir = tempfile::Builder::new()
        .prefix("opamp-demo-")
        .tempdir()
        .or_fail(
            Failure::Unreachable,
            || "cannot create a temporary directory",
        )?;
    let supervisors = Supervisors::default();
    let mut server = None;
    let mut summary = Summary::default();
    let started = Instant::now();
    let interrupted = tokio::select! {
        () = steps(dir.path(), agents, &timing, &supervisors, &mut server, &mut summary) => None,
        signal = crate::service::stop_signal() => Some(signal.unwrap_or("a signal")),
    };
    // Children first, whatever happened to the terminal (after SIGHUP stdout may be gone).
    let _ = output::line("stopping the supervisors and the server ...");
    supervisors.stop_all().await;
    if let Some(server) = server {
        server.shutdown().await;
    }
    output::line(format_args!(
        "\nSummary ({agents} agents and one that joins later, {:.0}s):\n{}",
        started.elapsed().as_secs_f64(),
        summary.table()
    ))?;
    let failure = match (interrupted, summary.first_failure()) {
        (Some(signal), _) => Some(format!("interrupted by {signal}")),
        (None, Some(step)) => Some(format!("step '{}' failed: {}", step.name, step.outcome)),
        (None, None) => None,
    };
    match failure {
        None => output::line("\nopamp demo: every step ended as expected."),
        Some(reason) => {
            let kept = dir.keep();
            Err(CommandError::operation(anyhow::anyhow!(
                "{reason}\n  files and logs kept in {}",
                kept.display()
            )))
        }
    }
}

/// The steps; stops at the first failure (the summary holds it).
async fn steps(
    dir: &Path,
    agents: u32,
    timing: &Timing,
    supervisors: &Supervisors,
    server: &mut Option<RunningFleetServer>,
    summary: &mut Summary,
) {
    let _ = output::line(format_args!(
        "opamp demo: {agents} agents on 127.0.0.1, files in {}",
        dir.display()
    ));
    let Ok(opamp) = std::env::current_exe() else {
        summary.record(
            "locate opamp",
            "the running executable",
            Instant::now(),
            Err("cannot find the running executable".to_owned()),
        );
        return;
    };

    // 1. Release side.
    let at = Instant::now();
    let release = release::prepare(dir, &opamp);
    let release = match release {
        Ok(release) => {
            summary.record(
                "release",
                "key created, 3 versions built and signed",
                at,
                Ok("ed25519 key; 1.0.0, 1.1.0, bad 1.2.0 signed (1.0.0 with a downgrade authorisation)".to_owned()),
            );
            release
        }
        Err(error) => {
            summary.record("release", "key and packages", at, Err(error.report()));
            return;
        }
    };

    // 2. Server and catalog.
    let at = Instant::now();
    let token = random_token();
    let client = match start_server(dir, &token, &release, server).await {
        Ok((client, text)) => {
            summary.record(
                "server",
                "server up, 5 packages in the catalog",
                at,
                Ok(text),
            );
            client
        }
        Err(error) => {
            summary.record(
                "server",
                "server up, 5 packages in the catalog",
                at,
                Err(error),
            );
            return;
        }
    };
    let Some(opamp_addr) = server.as_ref().map(RunningFleetServer::opamp_addr) else {
        return;
    };

    // 3. Agents.
    let at = Instant::now();
    let settings = AgentSettings {
        endpoint: format!("ws://{opamp_addr}/v1/opamp"),
        public_key: &release.public_key,
        initial_collector: &release.initial,
        timing,
    };
    let mut started = Ok(());
    for index in 0..agents {
        if let Err(error) = supervisors.start(&opamp, dir, index, &settings) {
            started = Err(error.report());
            break;
        }
    }
    let result = match started {
        Ok(()) => wait_fleet(&client, supervisors, agents, "1.0.0", timing).await,
        Err(error) => Err(error),
    };
    if !summary.record(
        "agents",
        &format!("{agents} supervisors report 1.0.0 healthy"),
        at,
        result,
    ) {
        return;
    }

    // 4. Good upgrade.
    let at = Instant::now();
    let result = async {
        let view = rollout(&client, "1.1.0", timing).await?;
        expect_status(&view, RolloutStatus::Completed)?;
        let fleet = wait_fleet(&client, supervisors, agents, "1.1.0", timing).await?;
        Ok(format!("{} waves completed; {fleet}", view.waves.len()))
    }
    .await;
    if !summary.record("rollout 1.1.0", "completes, all healthy", at, result) {
        return;
    }

    // 5. A host added after the rollout joins at the fleet's version, without a new rollout.
    let at = Instant::now();
    let result = async {
        supervisors
            .start(&opamp, dir, agents, &settings)
            .map_err(|error| error.report())?;
        wait_fleet(&client, supervisors, agents + 1, "1.1.0", timing).await
    }
    .await;
    if !summary.record(
        "new host joins",
        "a host added on 1.0.0 is moved to 1.1.0",
        at,
        result,
    ) {
        return;
    }
    let agents = agents + 1;

    // 6. Bad upgrade, then the two refused downgrades.
    let refused: [(&str, &str, &SignedPackage, Option<&[&str]>); 3] = [
        (
            "rollout bad 1.2.0",
            "canary fails its health gate and rolls back; aborted before any other agent",
            &release.bad,
            None,
        ),
        (
            "downgrade, no authorisation",
            "canary's trust policy refuses; aborted",
            &release.unauthorised,
            Some(&["downgrade"]),
        ),
        (
            "downgrade, tampered file",
            "canary refuses the hash mismatch; aborted",
            &release.tampered,
            Some(&["hash", "digest", "mismatch"]),
        ),
    ];
    for (name, expected, package, refusal_words) in refused {
        let at = Instant::now();
        let result = async {
            let view = rollout(&client, &package.version, timing).await?;
            let canary = only_canary_touched(&client, &view, refusal_words).await?;
            let fleet = wait_fleet(&client, supervisors, agents, "1.1.0", timing).await?;
            Ok(format!("{canary}; {fleet}"))
        }
        .await;
        if !summary.record(name, expected, at, result) {
            return;
        }
    }

    // 7. The signed downgrade.
    let at = Instant::now();
    let result = async {
        let view = rollout(&client, &release.downgrade.version, timing).await?;
        expect_status(&view, RolloutStatus::Completed)?;
        let fleet = wait_fleet(&client, supervisors, agents, "1.0.0", timing).await?;
        Ok(format!("{} waves completed; {fleet}", view.waves.len()))
    }
    .await;
    if !summary.record(
        "signed downgrade to 1.0.0",
        "completes, all on 1.0.0 healthy",
        at,
        result,
    ) {
        return;
    }

    // 8. A config the collector refuses: the canary's supervisor puts its config back and
    //    reports FAILED, the rollout is rolled back, every host keeps the config it had.
    let at = Instant::now();
    let result = async {
        let view = bad_config_rollout(&client, timing).await?;
        let canary = only_canary_touched(&client, &view, Some(&["unknown exporter"])).await?;
        let fleet = wait_fleet(&client, supervisors, agents, "1.0.0", timing).await?;
        let changed = (0..agents)
            .filter(|index| running_config(dir, *index).contains("fail_with"))
            .count();
        if changed > 0 {
            return Err(format!("{changed} hosts still run the bad config"));
        }
        Ok(format!("{canary}; {fleet}, every host on its old config"))
    }
    .await;
    summary.record(
        "config rollout, bad config",
        "canary's collector refuses it; rolled back, the fleet keeps its config",
        at,
        result,
    );
}

/// Adds a config the collector refuses to start with to the config catalog and rolls it out
/// to the demo agents, following it to its end.
async fn bad_config_rollout(client: &AdminClient, timing: &Timing) -> Result<RolloutView, String> {
    use opamp_fleet::admin::{ConfigFileUpload, ConfigUpload};
    let body = "exporters:\n  nowhere: {}\nfail_with: 'unknown exporter type \"nowhere\"'\n";
    let file = ConfigFileUpload::new("collector.yaml", "text/yaml", body.as_bytes());
    let added = client
        .add_config(&ConfigUpload::new("collector", "2", vec![file]))
        .await
        .map_err(|e| format!("cannot add the config: {e}"))?;
    let _ = output::line(format_args!(
        "\n== config rollout collector 2 (hash {})",
        added.hash
    ));
    let mut request = RolloutRequest::config("collector", "2");
    request.selector = format!("{}={}", DEMO_LABEL.0, DEMO_LABEL.1);
    request.canary_share = Some(0.1);
    request.batches = Some(BatchPlan::Share(0.5));
    request.bake_time = Some(timing.bake);
    request.install_timeout = Some(timing.install_timeout);
    request.health_timeout = Some(timing.health_timeout);
    follow_new(client, &request, "config 2", timing).await
}

/// Starts the server on loopback ports and fills the catalog through the admin API.
async fn start_server(
    dir: &Path,
    token: &str,
    release: &Release,
    slot: &mut Option<RunningFleetServer>,
) -> Result<(AdminClient, String), String> {
    let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut config = FleetServerConfig::new(listen, dir.join("server"), token);
    config.admin.listen = listen;
    config.heartbeat_interval = Some(std::time::Duration::from_secs(5));
    let running = FleetServer::start(config)
        .await
        .map_err(|e| format!("cannot start the server: {e}"))?;
    let admin = format!("http://{}", running.admin_addr());
    let text = format!(
        "agents at ws://{}/v1/opamp, admin API at {admin}",
        running.opamp_addr()
    );
    *slot = Some(running);
    let client = AdminClient::new(&admin, token).map_err(|e| e.to_string())?;
    let packages = [
        &release.good,
        &release.bad,
        &release.downgrade,
        &release.unauthorised,
        &release.tampered,
    ];
    for package in packages {
        let entry = client
            .add_package(&package.file, PACKAGE, &package.version, &package.signature)
            .await
            .map_err(|e| format!("cannot add {PACKAGE} {}: {e}", package.version))?;
        if std::ptr::eq(package, &release.tampered) {
            tamper_with_stored_copy(&entry.file_path)?;
        }
    }
    let listed = client.packages().await.map_err(|e| e.to_string())?;
    Ok((
        client,
        format!("{text}; {} packages in the catalog", listed.len()),
    ))
}

/// Changes the server's stored copy of a package after it was added, as someone with write
/// access to the server's disk could: one byte, so the size still fits and only the canary's
/// hash check (against the hash recorded at add time) can tell.
fn tamper_with_stored_copy(path: &Path) -> Result<(), String> {
    let mut bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let middle = bytes.len() / 2;
    if let Some(byte) = bytes.get_mut(middle) {
        *byte ^= 0x01;
    }
    std::fs::write(path, &bytes).map_err(|e| format!("cannot change {}: {e}", path.display()))
}

/// Starts a rollout of `version` to the demo agents and follows it to its end.
async fn rollout(
    client: &AdminClient,
    version: &str,
    timing: &Timing,
) -> Result<RolloutView, String> {
    let _ = output::line(format_args!("\n== rollout {PACKAGE} {version}"));
    let mut request = RolloutRequest::new(PACKAGE, version);
    request.selector = format!("{}={}", DEMO_LABEL.0, DEMO_LABEL.1);
    request.canary_share = Some(0.1);
    request.batches = Some(BatchPlan::Share(0.5));
    request.bake_time = Some(timing.bake);
    request.install_timeout = Some(timing.install_timeout);
    request.health_timeout = Some(timing.health_timeout);
    request.failure_budget = Some(FailureBudget::Count(0));
    follow_new(client, &request, version, timing).await
}

/// Starts `request` and follows it to its end, showing its progress under `label`.
async fn follow_new(
    client: &AdminClient,
    request: &RolloutRequest,
    label: &str,
    timing: &Timing,
) -> Result<RolloutView, String> {
    let view = client
        .create_rollout(request)
        .await
        .map_err(|e| format!("cannot start the rollout: {e}"))?;
    let id = view.id.to_string();
    let _ = output::line(format_args!(
        "   rollout {id}: {} agents, canary {}, {} batches, bake {}",
        view.progress.total,
        view.waves.first().map_or(0, opamp_fleet::Wave::size),
        view.waves.len().saturating_sub(1),
        humantime::format_duration(timing.bake)
    ));
    let label = format!("{label:>18}");
    let view = tokio::time::timeout(timing.step_timeout, watch::follow(client, &id, &label))
        .await
        .map_err(|_| {
            format!(
                "rollout {id} did not end within {}",
                humantime::format_duration(timing.step_timeout)
            )
        })?
        .map_err(|e| format!("cannot follow rollout {id}: {e}"))?;
    let _ = output::line(format_args!(
        "   rollout {id} ended {}: {}",
        view.status,
        watch::counts(&view)
    ));
    Ok(view)
}

fn expect_status(view: &RolloutView, expected: RolloutStatus) -> Result<(), String> {
    if view.status == expected {
        Ok(())
    } else {
        Err(format!(
            "rollout {} ended {} instead of {expected}: {}",
            view.id,
            view.status,
            failures(view).join("; ")
        ))
    }
}

/// Checks an aborted rollout: rolled back, only canaries were offered the target (from the
/// rollout view and from the audit log), and each canary failed; with `refusal_words`, the
/// canary's install error must name one of them (the trust policy's reason).
async fn only_canary_touched(
    client: &AdminClient,
    view: &RolloutView,
    refusal_words: Option<&[&str]>,
) -> Result<String, String> {
    expect_status(view, RolloutStatus::RolledBack)?;
    let canaries = view.waves.first().map_or(0, opamp_fleet::Wave::size);
    let offered = view.agents.iter().filter(|a| a.was_offered()).count();
    if offered > usize::try_from(canaries).unwrap_or(usize::MAX) {
        return Err(format!(
            "{offered} agents were offered the target, canary wave is {canaries}"
        ));
    }
    let audit = client
        .audit(Some(&view.id.to_string()))
        .await
        .map_err(|e| format!("cannot read the audit log: {e}"))?;
    if let Some(wave) = audit.iter().find_map(|entry| match &entry.record.action {
        AuditAction::WaveStarted { wave, .. } if *wave > 0 => Some(*wave),
        _ => None,
    }) {
        return Err(format!("the audit log shows wave {wave} started"));
    }
    let reasons = failures(view);
    if reasons.is_empty() {
        return Err("no canary failed".to_owned());
    }
    if let Some(words) = refusal_words {
        let refused = reasons.iter().all(|reason| {
            let reason = reason.to_lowercase();
            words.iter().any(|word| reason.contains(word))
        });
        if !refused {
            return Err(format!(
                "the canary failed for another reason than expected ({}): {}",
                words.join("/"),
                reasons.join("; ")
            ));
        }
    }
    Ok(format!(
        "{offered} of {} agents offered, rolled back; canary: {}",
        view.progress.total,
        reasons.join("; ")
    ))
}

/// Why each failed agent of the rollout failed.
fn failures(view: &RolloutView) -> Vec<String> {
    view.agents
        .iter()
        .filter_map(|agent| match &agent.phase {
            AgentPhase::Failed { reason, .. } => Some(match reason {
                FailureReason::InstallFailed { error } => format!("install failed: {error}"),
                FailureReason::InstallTimedOut { .. } => "install timed out".to_owned(),
                FailureReason::HealthTimedOut { .. } => "no healthy report in time".to_owned(),
                FailureReason::Unhealthy => "unhealthy after install".to_owned(),
                _ => "failed".to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// Waits until all `agents` demo agents are connected, healthy and on `version`.
async fn wait_fleet(
    client: &AdminClient,
    supervisors: &Supervisors,
    agents: u32,
    version: &str,
    timing: &Timing,
) -> Result<String, String> {
    let deadline = Instant::now() + timing.step_timeout;
    let want = usize::try_from(agents).unwrap_or(usize::MAX);
    loop {
        let fleet = client
            .agents()
            .await
            .map_err(|e| format!("cannot list the agents: {e}"))?;
        let demo: Vec<_> = fleet
            .into_iter()
            .filter(|a| a.labels.get(DEMO_LABEL.0) == Some(DEMO_LABEL.1))
            .collect();
        let settled = demo
            .iter()
            .filter(|a| a.is_settled_on(PACKAGE, version))
            .count();
        if settled == want {
            return Ok(format!("all {want} agents on {version}, healthy"));
        }
        let exited = supervisors.exited();
        if exited > 0 {
            return Err(format!(
                "{exited} supervisors exited (see agents/*/supervisor.log)"
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "after {}: {settled} of {want} agents on {version} and healthy ({})",
                humantime::format_duration(timing.step_timeout),
                watch::versions(&demo, PACKAGE)
            ));
        }
        tokio::time::sleep(FLEET_POLL).await;
    }
}

/// A random admin token for this run.
fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
