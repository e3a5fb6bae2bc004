//! The rollout pages: the list with the start form, one rollout with its waves, failures,
//! controls and audit trail, and the form posts that start, pause, resume and abort.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use http::StatusCode;
use serde::Deserialize;

use super::Dashboard;
use super::html::{Nav, csrf_field, esc, page, time};
use super::pages::{audit_table, rollout_table, store_failure};
use super::session::{Session, refusal};
use crate::FleetError;
use crate::admin::requests::{Operation, Request as DriverRequest};
use crate::admin::routes::{ask, read, status_of};
use crate::admin::types::{RolloutRequest, RolloutView};
use crate::events::RolloutStatus;
use crate::rollout::{AgentPhase, FailureReason, Rollout, RolloutId, RolloutState};
use crate::spec::{BatchPlan, FailureBudget};
use crate::store::{AuditQuery, StoredAudit};

/// Failed agents listed on a rollout page (the counts cover the rest).
const FAILURES_SHOWN: usize = 100;
/// Audit records shown on a rollout page: the newest.
const AUDIT_SHOWN: usize = 50;

/// `GET /ui/rollouts`: every rollout, newest first, and (for operators who may write) the
/// form that starts one.
pub(super) async fn list(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> Response {
    let found = read(&dashboard.admin, |store| {
        Ok((store.list_rollouts()?, store.packages()?))
    })
    .await;
    let (rollouts, packages) = match found {
        Ok(found) => found,
        Err(error) => return store_failure(&error),
    };
    let mut body = String::new();
    if !session.read_only {
        let names: BTreeSet<&str> = packages.iter().map(|p| p.name.as_str()).collect();
        let versions: BTreeSet<&str> = packages.iter().map(|p| p.version.as_str()).collect();
        let mut options = String::new();
        for name in names {
            let _ = write!(options, "<option>{}</option>", esc(name));
        }
        let mut version_list = String::new();
        for version in versions {
            let _ = write!(version_list, "<option value=\"{}\"></option>", esc(version));
        }
        let _ = write!(
            body,
            "<details class=\"start\" open><summary>Start a rollout</summary>\
             <form method=\"post\" action=\"/ui/rollouts\" class=\"grid\" id=\"start-rollout\">{csrf}\
             <label>Package <select name=\"package\" required>{options}</select></label>\
             <label>Version <input name=\"version\" list=\"versions\" required></label>\
             <datalist id=\"versions\">{version_list}</datalist>\
             <label>Selector <input name=\"selector\" placeholder=\"env=prod (empty: every agent)\"></label>\
             <label>Canary share <input name=\"canary_share\" value=\"0.05\" inputmode=\"decimal\"></label>\
             <label>Batches <input name=\"batches\" value=\"4\" inputmode=\"numeric\"></label>\
             <label>Bake time <input name=\"bake_time\" value=\"30s\"></label>\
             <label>Install timeout <input name=\"install_timeout\" value=\"10m\"></label>\
             <label>Health timeout <input name=\"health_timeout\" value=\"2m\"></label>\
             <label>Failure budget <input name=\"failure_budget\" value=\"0\" inputmode=\"numeric\"></label>\
             <button type=\"submit\">Start rollout</button></form></details>",
            csrf = csrf_field(&session),
        );
    }
    body.push_str(&rollout_table(rollouts.iter()));
    Html(page("Rollouts", Nav::Rollouts, &session, &body)).into_response()
}

/// `GET /ui/rollouts/{id}`.
pub(super) async fn show(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Response {
    let mut tail = AuditTail::default();
    let fragment =
        match rollout_fragment(&dashboard, &session, RolloutId::new(id.clone()), &mut tail).await {
            Ok(Some((fragment, _))) => fragment,
            Ok(None) => return refusal(StatusCode::NOT_FOUND, "No such rollout."),
            Err(error) => return store_failure(&error),
        };
    let body = format!(
        "<section id=\"rollout\" data-live=\"/ui/live/rollouts/{id}\" data-event=\"rollout\">{fragment}</section>",
        id = esc(&id)
    );
    Html(page(
        &format!("Rollout {id}"),
        Nav::Rollouts,
        &session,
        &body,
    ))
    .into_response()
}

/// The newest audit records of one rollout, kept up to date by reading only what was added
/// since the last read (a 10,000-agent rollout logs tens of thousands of records; the page
/// shows the newest [`AUDIT_SHOWN`]).
#[derive(Debug, Default)]
pub(super) struct AuditTail {
    records: std::collections::VecDeque<StoredAudit>,
    total: usize,
    last_position: Option<i64>,
}

impl AuditTail {
    fn take(&mut self, new: Vec<StoredAudit>) {
        self.total += new.len();
        if let Some(last) = new.last() {
            self.last_position = Some(last.position);
        }
        self.records.extend(new);
        while self.records.len() > AUDIT_SHOWN {
            self.records.pop_front();
        }
    }
}

/// The live part of a rollout page and the rollout's status, read from the store now; `None`
/// if there is no such rollout. `tail` carries the audit records between calls.
pub(super) async fn rollout_fragment(
    dashboard: &Dashboard,
    session: &Session,
    id: RolloutId,
    tail: &mut AuditTail,
) -> Result<Option<(String, RolloutStatus)>, FleetError> {
    let after = tail.last_position;
    let found = read(&dashboard.admin, move |store| {
        let Some(rollout) = store.load_rollout(&id)? else {
            return Ok(None);
        };
        let mut query = AuditQuery::all().rollout(id);
        if let Some(after) = after {
            query = query.after(after);
        }
        Ok(Some((rollout, store.audit_log(&query)?)))
    })
    .await?;
    Ok(found.map(|(rollout, new)| {
        tail.take(new);
        (render_rollout(&rollout, tail, session), rollout.status())
    }))
}

fn render_rollout(rollout: &Rollout, audit: &AuditTail, session: &Session) -> String {
    // Borrowed, not copied into a `RolloutView`: a 10,000-agent rollout renders twice a second.
    let status = rollout.status();
    let p = rollout.progress();
    let spec = rollout.spec();
    let state = rollout.state();
    let agents = rollout.agents();
    let mut out = format!(
        "<div class=\"summary\" data-status=\"{status}\"><span class=\"status {status}\" \
         data-testid=\"rollout-status\">{status}</span> <strong>{pkg} {ver}</strong> \
         to <code>{sel}</code> · {stage} · created {created} by {by}</div>",
        pkg = if spec.target_kind.is_package() {
            esc(&spec.package_name)
        } else {
            format!("config {}", esc(&spec.package_name))
        },
        ver = esc(&spec.target_version),
        sel = esc(&spec.selector.to_string()),
        stage = esc(&stage(state)),
        created = time(rollout.created_at()),
        by = esc(&spec.created_by),
    );
    if let Some(reason) = reason(state) {
        let _ = write!(
            out,
            "<p class=\"error\" role=\"alert\" data-testid=\"rollout-reason\">{}</p>",
            esc(reason)
        );
    }
    if !session.read_only && !status.is_terminal() {
        out.push_str("<div class=\"controls\">");
        let csrf = csrf_field(session);
        let id = esc(rollout.id().as_str());
        if matches!(state, RolloutState::Paused { .. }) {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/rollouts/{id}/resume\">{csrf}<button type=\"submit\">Resume</button></form>"
            );
        } else if !matches!(state, RolloutState::Aborting { .. }) {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/rollouts/{id}/pause\">{csrf}<button type=\"submit\">Pause</button></form>"
            );
        }
        if !matches!(state, RolloutState::Aborting { .. }) {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/rollouts/{id}/abort\" data-confirm=\"Abort this rollout and revert every agent already moved?\">{csrf}\
                 <input name=\"reason\" placeholder=\"reason (for the audit log)\">\
                 <button type=\"submit\" class=\"danger\">Abort</button></form>"
            );
        }
        out.push_str("</div>");
    }
    let _ = write!(
        out,
        "<div class=\"cards\"><div class=\"card\"><span class=\"n\">{}</span> agents</div>\
         <div class=\"card\"><span class=\"n\">{}</span> pending</div>\
         <div class=\"card\"><span class=\"n\">{}</span> offered</div>\
         <div class=\"card\"><span class=\"n\">{}</span> installed</div>\
         <div class=\"card\"><span class=\"n\" data-testid=\"rollout-healthy\">{}</span> healthy</div>\
         <div class=\"card bad\"><span class=\"n\" data-testid=\"rollout-failed\">{}</span> failed</div>\
         <div class=\"card\"><span class=\"n\">{}</span> reverted</div></div>\
         <progress max=\"{}\" value=\"{}\"></progress>",
        p.total,
        p.pending,
        p.offered,
        p.installed,
        p.healthy,
        p.failed,
        p.reverted,
        p.total.max(1),
        p.healthy + p.failed,
    );
    out.push_str(
        "<h2>Waves</h2><table><thead><tr><th>Wave</th><th>Agents</th><th>Pending</th>\
         <th>Offered</th><th>Installed</th><th>Healthy</th><th>Failed</th><th>Budget</th>\
         <th>Started</th><th>Settled</th></tr></thead><tbody>",
    );
    for (index, wave) in rollout.waves().iter().enumerate() {
        let members = agents
            .iter()
            .skip(wave.start as usize)
            .take(wave.size() as usize);
        let (mut pending, mut offered, mut installed, mut healthy) = (0, 0, 0, 0);
        for agent in members {
            match agent.phase {
                AgentPhase::Pending => pending += 1,
                AgentPhase::Offered { .. } => offered += 1,
                AgentPhase::Installed { .. } => installed += 1,
                AgentPhase::Healthy { .. } => healthy += 1,
                _ => {}
            }
        }
        let name = if index == 0 {
            "canary".to_owned()
        } else {
            format!("batch {index}")
        };
        let _ = write!(
            out,
            "<tr><td>{name}</td><td class=\"num\">{}</td><td class=\"num\">{pending}</td>\
             <td class=\"num\">{offered}</td><td class=\"num\">{installed}</td>\
             <td class=\"num\">{healthy}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td>{}</td><td>{}</td></tr>",
            wave.size(),
            wave.failed,
            wave.budget,
            wave.started_at.map_or_else(|| "—".to_owned(), time),
            wave.settled_at.map_or_else(|| "—".to_owned(), time),
        );
    }
    out.push_str("</tbody></table><h2>Failures</h2>");
    let failures: Vec<_> = agents
        .iter()
        .filter_map(|a| match &a.phase {
            AgentPhase::Failed { at, reason } => Some((a, *at, reason)),
            _ => None,
        })
        .collect();
    if failures.is_empty() {
        out.push_str("<p class=\"empty\">None.</p>");
    } else {
        out.push_str(
            "<table class=\"failures\"><thead><tr><th>Agent</th><th>Wave</th><th>When</th>\
             <th>Reason</th><th>Reverted</th></tr></thead><tbody>",
        );
        for (agent, at, reason) in failures.iter().take(FAILURES_SHOWN) {
            let _ = write!(
                out,
                "<tr><td><a href=\"/ui/agents/{uid}\"><code>{uid}</code></a></td><td>{wave}</td>\
                 <td>{when}</td><td data-testid=\"failure-reason\">{why}</td><td>{rev}</td></tr>",
                uid = agent.uid,
                wave = agent.wave,
                when = time(*at),
                why = esc(&failure_text(reason)),
                rev = if agent.reverted { "yes" } else { "no" },
            );
        }
        out.push_str("</tbody></table>");
        if failures.len() > FAILURES_SHOWN {
            let _ = write!(
                out,
                "<p class=\"hint\">{} more failures: see the audit log.</p>",
                failures.len() - FAILURES_SHOWN
            );
        }
    }
    out.push_str("<h2>Audit trail</h2>");
    out.push_str(&audit_table(audit.records.iter()));
    if audit.total > audit.records.len() {
        let _ = write!(
            out,
            "<p class=\"hint\">Showing the newest {} of {} records: the whole trail is in the \
             <a href=\"/ui/audit\">audit log</a>.</p>",
            audit.records.len(),
            audit.total
        );
    }
    out
}

/// Where the rollout is, in words.
fn stage(state: &RolloutState) -> String {
    match state {
        RolloutState::Planned => "planned".to_owned(),
        RolloutState::Canary => "canary wave installing".to_owned(),
        RolloutState::Batch { wave } => format!("batch {wave} installing"),
        RolloutState::Baking { wave, until } => {
            format!("wave {wave} baking until {}", until.relative_to(now()))
        }
        RolloutState::Paused { by, .. } => format!("paused by {by}"),
        RolloutState::Aborting { .. } => "aborting: reverting moved agents".to_owned(),
        RolloutState::Completed => "completed".to_owned(),
        RolloutState::RolledBack { .. } => "rolled back".to_owned(),
        RolloutState::Failed { .. } => "failed".to_owned(),
        other => format!("{other:?}"),
    }
}

fn now() -> crate::time::Timestamp {
    crate::time::Timestamp::from_system_time(std::time::SystemTime::now())
}

fn reason(state: &RolloutState) -> Option<&str> {
    match state {
        RolloutState::Aborting { reason, .. }
        | RolloutState::RolledBack { reason }
        | RolloutState::Failed { reason } => Some(reason),
        _ => None,
    }
}

fn failure_text(reason: &FailureReason) -> String {
    match reason {
        FailureReason::InstallFailed { error } => format!("install failed: {error}"),
        FailureReason::InstallTimedOut { connected } => format!(
            "no install report within the install timeout ({})",
            if *connected {
                "connected"
            } else {
                "disconnected"
            }
        ),
        FailureReason::HealthTimedOut { connected } => format!(
            "not healthy within the health timeout ({})",
            if *connected {
                "connected"
            } else {
                "disconnected"
            }
        ),
        FailureReason::Unhealthy => "reported unhealthy after installing".to_owned(),
        other => format!("{other:?}"),
    }
}

/// The start form's fields (text, as typed).
#[derive(Debug, Deserialize)]
pub(super) struct StartForm {
    csrf: String,
    package: String,
    version: String,
    #[serde(default)]
    selector: String,
    #[serde(default)]
    canary_share: String,
    #[serde(default)]
    batches: String,
    #[serde(default)]
    bake_time: String,
    #[serde(default)]
    install_timeout: String,
    #[serde(default)]
    health_timeout: String,
    #[serde(default)]
    failure_budget: String,
}

impl StartForm {
    fn request(&self) -> Result<RolloutRequest, String> {
        let mut request = RolloutRequest::new(self.package.trim(), self.version.trim());
        request.selector = self.selector.trim().to_owned();
        let text = |field: &str| -> Option<String> {
            let trimmed = field.trim();
            (!trimmed.is_empty()).then(|| trimmed.to_owned())
        };
        if let Some(share) = text(&self.canary_share) {
            request.canary_share = Some(
                share
                    .parse()
                    .map_err(|_| format!("canary share {share:?} is not a number"))?,
            );
        }
        if let Some(batches) = text(&self.batches) {
            let count: u32 = batches
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("batches {batches:?} is not a positive whole number"))?;
            request.batches = Some(BatchPlan::Share(1.0 / f64::from(count)));
        }
        let duration = |name: &str, field: &str| -> Result<Option<std::time::Duration>, String> {
            text(field)
                .map(|t| humantime::parse_duration(&t).map_err(|e| format!("{name} {t:?}: {e}")))
                .transpose()
        };
        request.bake_time = duration("bake time", &self.bake_time)?;
        request.install_timeout = duration("install timeout", &self.install_timeout)?;
        request.health_timeout = duration("health timeout", &self.health_timeout)?;
        if let Some(budget) = text(&self.failure_budget) {
            request.failure_budget =
                Some(FailureBudget::Count(budget.parse().map_err(|_| {
                    format!("failure budget {budget:?} is not a whole number")
                })?));
        }
        Ok(request)
    }
}

fn csrf_refusal() -> Response {
    refusal(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.")
}

/// The server's refusal of a write as an error page with the API's status code.
fn fleet_refusal(error: FleetError) -> Response {
    let status = status_of(&error);
    refusal(status, &error.to_string())
}

/// `POST /ui/rollouts`: starts a rollout and shows it.
pub(super) async fn start(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Form(form): Form<StartForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return csrf_refusal();
    }
    let request = match form.request() {
        Ok(request) => request,
        Err(reason) => return refusal(StatusCode::BAD_REQUEST, &reason),
    };
    let by = session.operator.clone();
    let created: Result<RolloutView, FleetError> = ask(&dashboard.admin, |reply| {
        DriverRequest::Create { request, by, reply }
    })
    .await;
    match created {
        Ok(view) => Redirect::to(&format!("/ui/rollouts/{}", view.id)).into_response(),
        Err(error) => fleet_refusal(error),
    }
}

/// The abort form's fields.
#[derive(Debug, Deserialize)]
pub(super) struct AbortForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

async fn operate(
    dashboard: &Dashboard,
    session: &Session,
    id: String,
    operation: Operation,
) -> Response {
    let by = session.operator.clone();
    let target = RolloutId::new(id.clone());
    let done: Result<RolloutView, FleetError> =
        ask(&dashboard.admin, |reply| DriverRequest::Operate {
            id: target,
            operation,
            by,
            reply,
        })
        .await;
    match done {
        Ok(_) => Redirect::to(&format!("/ui/rollouts/{id}")).into_response(),
        Err(error) => fleet_refusal(error),
    }
}

/// `POST /ui/rollouts/{id}/pause`.
pub(super) async fn pause(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<super::session::CsrfForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return csrf_refusal();
    }
    operate(&dashboard, &session, id, Operation::Pause).await
}

/// `POST /ui/rollouts/{id}/resume`.
pub(super) async fn resume(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<super::session::CsrfForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return csrf_refusal();
    }
    operate(&dashboard, &session, id, Operation::Resume).await
}

/// `POST /ui/rollouts/{id}/abort`.
pub(super) async fn abort(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Form(form): Form<AbortForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return csrf_refusal();
    }
    let reason = if form.reason.trim().is_empty() {
        format!("aborted from the dashboard by {}", session.operator)
    } else {
        form.reason.trim().to_owned()
    };
    operate(&dashboard, &session, id, Operation::Abort { reason }).await
}
