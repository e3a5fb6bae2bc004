//! The live view of a rollout: its stage, the counts per phase, and the fleet's agents per
//! version and health, redrawn on stderr until the rollout ends.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opamp_fleet::admin::AgentSummary;
use opamp_fleet::admin::{AdminClient, RolloutView};
use opamp_fleet::{FleetError, RolloutState};

/// How often the view asks the admin API for the rollout and the agents.
const POLL_INTERVAL: Duration = Duration::from_millis(400);

/// The stage of a rollout in words: `canary`, `batch 2/4`, `baking wave 1`, ...
pub(crate) fn stage(view: &RolloutView) -> String {
    let batches = view.waves.len().saturating_sub(1);
    match &view.state {
        RolloutState::Planned => "planned".to_owned(),
        RolloutState::Canary => "canary".to_owned(),
        RolloutState::Batch { wave } => format!("batch {wave}/{batches}"),
        RolloutState::Baking { wave, .. } if *wave == 0 => "baking canary".to_owned(),
        RolloutState::Baking { wave, .. } => format!("baking batch {wave}/{batches}"),
        RolloutState::Paused { .. } => "paused".to_owned(),
        RolloutState::Aborting { reason, .. } => format!("aborting ({reason})"),
        _ => view.status.to_string(),
    }
}

/// `1.0.0: 3 healthy, 1 unhealthy | 1.1.0: 16 healthy` for `package` over `agents`.
pub(crate) fn versions(agents: &[AgentSummary], package: &str) -> String {
    let mut by_version: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    for agent in agents {
        let version = agent
            .package_versions
            .get(package)
            .unwrap_or("?")
            .to_owned();
        let entry = by_version.entry(version).or_default();
        if !agent.connected {
            entry.2 += 1;
        } else if agent.healthy {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    let parts: Vec<String> = by_version
        .iter()
        .map(|(version, (healthy, unhealthy, gone))| {
            let mut text = format!("{version}: {healthy} healthy");
            if *unhealthy > 0 {
                text.push_str(&format!(", {unhealthy} unhealthy"));
            }
            if *gone > 0 {
                text.push_str(&format!(", {gone} disconnected"));
            }
            text
        })
        .collect();
    if parts.is_empty() {
        "no agents".to_owned()
    } else {
        parts.join(" | ")
    }
}

/// One line for a rollout's progress counts.
pub(crate) fn counts(view: &RolloutView) -> String {
    let p = &view.progress;
    format!(
        "{} pending, {} offered, {} installed, {} healthy, {} failed, {} reverted",
        p.pending, p.offered, p.installed, p.healthy, p.failed, p.reverted
    )
}

/// Shows rollout `id` live until it reaches a terminal status, and returns its final view.
/// Nothing is drawn when stderr is not a terminal; the caller prints the outcome.
///
/// # Errors
/// The admin API's errors.
pub(crate) async fn follow(
    client: &AdminClient,
    id: &str,
    label: &str,
) -> Result<RolloutView, FleetError> {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:24}] {pos}/{len} {wide_msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    let outcome = loop {
        let view = match client.rollout(id).await {
            Ok(view) => view,
            Err(error) => break Err(error),
        };
        let fleet = client.agents().await.unwrap_or_default();
        bar.set_length(u64::from(view.progress.total));
        bar.set_position(u64::from(view.progress.healthy + view.progress.failed));
        bar.set_message(format!(
            "{} | {} | fleet {}",
            stage(&view),
            counts(&view),
            versions(&fleet, &view.spec.package_name)
        ));
        if view.status.is_terminal() {
            break Ok(view);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    };
    bar.finish_and_clear();
    outcome
}
