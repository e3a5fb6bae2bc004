//! The dashboard's pages (GET): fleet overview, agents, one agent, catalog, audit log.
//! The rollout pages are in [`super::rollouts`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Response};
use http::StatusCode;
use serde::Deserialize;

use super::Dashboard;
use super::html::{Nav, esc, page, query_value, time};
use super::session::{Session, refusal};
use crate::admin::routes::read;
use crate::audit::AuditRecord;
use crate::selector::LabelSelector;
use crate::store::{AgentRecord, AuditQuery, RolloutSummary, StoredAudit};

/// Agents per page of the agents list.
const AGENTS_PER_PAGE: usize = 50;
/// Records per page of the audit log.
const AUDIT_PER_PAGE: u32 = 100;

/// A store read failed: a 500 page (the error is logged).
pub(super) fn store_failure(error: &crate::FleetError) -> Response {
    tracing::error!(%error, "dashboard store read failed");
    refusal(
        StatusCode::INTERNAL_SERVER_ERROR,
        &format!("Reading the fleet store failed: {error}"),
    )
}

/// `GET /ui`: the fleet at a glance, kept current over Server-Sent Events.
pub(super) async fn overview(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> Response {
    let fragment = match fleet_fragment_now(&dashboard).await {
        Ok(fragment) => fragment,
        Err(error) => return store_failure(&error),
    };
    let body = format!(
        "<section id=\"fleet\" data-live=\"/ui/live/fleet\" data-event=\"fleet\">{fragment}</section>"
    );
    Html(page("Fleet", Nav::Fleet, &session, &body)).into_response()
}

/// The overview's live part, read from the store now.
pub(super) async fn fleet_fragment_now(dashboard: &Dashboard) -> Result<String, crate::FleetError> {
    let (agents, rollouts) = read(&dashboard.admin, |store| {
        Ok((store.agents()?, store.list_rollouts()?))
    })
    .await?;
    Ok(fleet_fragment(&agents, &rollouts))
}

/// Counts per package version and health, and the rollouts still running.
pub(super) fn fleet_fragment(agents: &[AgentRecord], rollouts: &[RolloutSummary]) -> String {
    let connected = agents.iter().filter(|a| a.connected).count();
    let healthy = agents.iter().filter(|a| a.healthy).count();
    let mut out = format!(
        "<div class=\"cards\">\
         <div class=\"card\"><span class=\"n\" data-testid=\"agents-total\">{}</span> agents</div>\
         <div class=\"card\"><span class=\"n\">{connected}</span> connected</div>\
         <div class=\"card\"><span class=\"n\">{healthy}</span> healthy</div>\
         <div class=\"card\"><span class=\"n\">{}</span> unhealthy</div></div>",
        agents.len(),
        agents.len() - healthy,
    );
    // (package, version) → (healthy, unhealthy)
    let mut versions: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
    for agent in agents {
        for (package, version) in &agent.package_versions {
            let entry = versions.entry((package, version)).or_default();
            if agent.healthy {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
    }
    out.push_str(
        "<h2>Versions</h2><table><thead><tr><th>Package</th><th>Version</th>\
         <th>Healthy</th><th>Unhealthy</th><th></th></tr></thead><tbody>",
    );
    for ((package, version), (good, bad)) in &versions {
        let _ = write!(
            out,
            "<tr><td>{p}</td><td>{v}</td><td class=\"num\">{good}</td><td class=\"num\">{bad}</td>\
             <td><a href=\"/ui/agents?version={vq}\">agents</a></td></tr>",
            p = esc(package),
            v = esc(version),
            vq = query_value(version),
        );
    }
    if versions.is_empty() {
        out.push_str(
            "<tr><td colspan=\"5\" class=\"empty\">No agent has reported a package.</td></tr>",
        );
    }
    out.push_str("</tbody></table><h2>Running rollouts</h2>");
    let running: Vec<&RolloutSummary> = rollouts
        .iter()
        .filter(|r| !r.status.is_terminal())
        .collect();
    if running.is_empty() {
        out.push_str("<p class=\"empty\">None.</p>");
    } else {
        out.push_str(&rollout_table(running.into_iter()));
    }
    out
}

/// A table of rollouts, linking each to its page.
pub(super) fn rollout_table<'a>(rollouts: impl Iterator<Item = &'a RolloutSummary>) -> String {
    let mut out = String::from(
        "<table><thead><tr><th>Rollout</th><th>Package</th><th>Version</th><th>Status</th>\
         <th>Selector</th><th>Created</th><th>Updated</th></tr></thead><tbody>",
    );
    for r in rollouts {
        let _ = write!(
            out,
            "<tr><td><a href=\"/ui/rollouts/{id}\">{id}</a></td><td>{p}</td><td>{v}</td>\
             <td><span class=\"status {s}\">{s}</span></td><td><code>{sel}</code></td>\
             <td>{c}</td><td>{u}</td></tr>",
            id = esc(r.id.as_str()),
            p = if r.target_kind.is_package() {
                esc(&r.package)
            } else {
                format!("config {}", esc(&r.package))
            },
            v = esc(&r.target_version),
            s = r.status,
            sel = esc(&r.selector),
            c = time(r.created_at),
            u = time(r.updated_at),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The agents list's filters (all optional; empty means any).
#[derive(Debug, Default, Deserialize)]
pub(super) struct AgentFilter {
    /// Label selector text (`env=prod,region in (eu,us)`).
    #[serde(default)]
    labels: String,
    /// A package version some package of the agent runs.
    #[serde(default)]
    version: String,
    /// `healthy` or `unhealthy`.
    #[serde(default)]
    health: String,
    /// `connected` or `disconnected`.
    #[serde(default)]
    connection: String,
    /// Page number, from 1.
    #[serde(default)]
    page: Option<usize>,
}

impl AgentFilter {
    fn query(&self, page: usize) -> String {
        format!(
            "labels={}&version={}&health={}&connection={}&page={page}",
            query_value(&self.labels),
            query_value(&self.version),
            query_value(&self.health),
            query_value(&self.connection),
        )
    }
}

fn selected(current: &str, value: &str) -> &'static str {
    if current == value { " selected" } else { "" }
}

/// `GET /ui/agents`: filtered and paged on the server, so 10,000 agents cost one page.
pub(super) async fn agents(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(filter): Query<AgentFilter>,
) -> Response {
    let selector = match filter.labels.trim().parse::<LabelSelector>() {
        Ok(selector) => selector,
        Err(error) => {
            return refusal(
                StatusCode::BAD_REQUEST,
                &format!("Bad label selector: {error}"),
            );
        }
    };
    let agents = match read(&dashboard.admin, |store| store.agents()).await {
        Ok(agents) => agents,
        Err(error) => return store_failure(&error),
    };
    let version = filter.version.trim();
    let matching: Vec<&AgentRecord> = agents
        .iter()
        .filter(|a| selector.matches(&a.labels))
        .filter(|a| version.is_empty() || a.package_versions.values().any(|v| v == version))
        .filter(|a| match filter.health.as_str() {
            "healthy" => a.healthy,
            "unhealthy" => !a.healthy,
            _ => true,
        })
        .filter(|a| match filter.connection.as_str() {
            "connected" => a.connected,
            "disconnected" => !a.connected,
            _ => true,
        })
        .collect();
    let pages = matching.len().div_ceil(AGENTS_PER_PAGE).max(1);
    let current = filter.page.unwrap_or(1).clamp(1, pages);
    let mut body = format!(
        "<form method=\"get\" action=\"/ui/agents\" class=\"filters\">\
         <label>Labels <input name=\"labels\" value=\"{labels}\" placeholder=\"env=prod,region in (eu,us)\"></label>\
         <label>Version <input name=\"version\" value=\"{version}\" placeholder=\"1.1.0\"></label>\
         <label>Health <select name=\"health\"><option value=\"\">any</option>\
         <option value=\"healthy\"{h1}>healthy</option><option value=\"unhealthy\"{h2}>unhealthy</option></select></label>\
         <label>Connection <select name=\"connection\"><option value=\"\">any</option>\
         <option value=\"connected\"{c1}>connected</option><option value=\"disconnected\"{c2}>disconnected</option></select></label>\
         <button type=\"submit\">Filter</button></form>\
         <p class=\"count\" data-testid=\"agents-count\">{n} of {total} agents</p>",
        labels = esc(&filter.labels),
        version = esc(&filter.version),
        h1 = selected(&filter.health, "healthy"),
        h2 = selected(&filter.health, "unhealthy"),
        c1 = selected(&filter.connection, "connected"),
        c2 = selected(&filter.connection, "disconnected"),
        n = matching.len(),
        total = agents.len(),
    );
    body.push_str(
        "<table class=\"agents\"><thead><tr><th>Agent</th><th>Versions</th><th>Health</th>\
         <th>Connected</th><th>Labels</th><th>Last seen</th></tr></thead><tbody>",
    );
    for agent in matching
        .iter()
        .skip((current - 1) * AGENTS_PER_PAGE)
        .take(AGENTS_PER_PAGE)
    {
        let versions: Vec<String> = agent
            .package_versions
            .iter()
            .map(|(p, v)| format!("{}={}", esc(p), esc(v)))
            .collect();
        let labels: Vec<String> = agent
            .labels
            .iter()
            .map(|(k, v)| format!("<span class=\"label\">{}={}</span>", esc(k), esc(v)))
            .collect();
        let _ = write!(
            body,
            "<tr><td><a href=\"/ui/agents/{uid}\"><code>{uid}</code></a></td><td>{versions}</td>\
             <td>{health}</td><td>{conn}</td><td>{labels}</td><td>{seen}</td></tr>",
            uid = agent.uid,
            versions = versions.join(" "),
            health = health_badge(agent.healthy),
            conn = if agent.connected { "yes" } else { "no" },
            labels = labels.join(" "),
            seen = time(agent.last_seen),
        );
    }
    body.push_str("</tbody></table><nav class=\"pages\">");
    if current > 1 {
        let _ = write!(
            body,
            "<a href=\"/ui/agents?{}\" rel=\"prev\">← previous</a>",
            esc(&filter.query(current - 1))
        );
    }
    let _ = write!(body, " page {current} of {pages} ");
    if current < pages {
        let _ = write!(
            body,
            "<a href=\"/ui/agents?{}\" rel=\"next\">next →</a>",
            esc(&filter.query(current + 1))
        );
    }
    body.push_str("</nav>");
    Html(page("Agents", Nav::Agents, &session, &body)).into_response()
}

fn health_badge(healthy: bool) -> &'static str {
    if healthy {
        "<span class=\"status healthy\">healthy</span>"
    } else {
        "<span class=\"status unhealthy\">unhealthy</span>"
    }
}

/// `GET /ui/agents/{uid}`: one agent, with the audit records that name it.
pub(super) async fn agent(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(uid): Path<String>,
) -> Response {
    let Ok(uid) = uid.parse::<opamp_proto::InstanceUid>() else {
        return refusal(StatusCode::BAD_REQUEST, "That is not an agent id.");
    };
    let found = read(&dashboard.admin, move |store| {
        let Some(agent) = store.agent(&uid)? else {
            return Ok(None);
        };
        let audit: Vec<StoredAudit> = store
            .audit_log(&AuditQuery::all())?
            .into_iter()
            .filter(|stored| names_agent(&stored.record.action, uid))
            .collect();
        let details = store.agent_details(&uid)?.unwrap_or_default();
        Ok(Some((agent, details, audit)))
    })
    .await;
    let (agent, details, audit) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return refusal(StatusCode::NOT_FOUND, "No such agent."),
        Err(error) => return store_failure(&error),
    };
    let mut body = format!(
        "<dl class=\"facts\"><dt>Instance uid</dt><dd><code>{uid}</code></dd>\
         <dt>Health</dt><dd>{health}</dd><dt>Connected</dt><dd>{conn}</dd>\
         <dt>Last seen</dt><dd>{seen}</dd><dt>Capabilities</dt><dd><code>0x{caps:x}</code></dd></dl>\
         <h2>Labels</h2><table><thead><tr><th>Label</th><th>Value</th></tr></thead><tbody>",
        uid = agent.uid,
        health = health_badge(agent.healthy),
        conn = if agent.connected { "yes" } else { "no" },
        seen = time(agent.last_seen),
        caps = agent.capabilities,
    );
    for (key, value) in &agent.labels {
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(key),
            esc(value)
        );
    }
    body.push_str("</tbody></table>");
    body.push_str(&super::agent_restart::button(&session, &agent));
    body.push_str(&super::agent_details::sections(&agent, &details));
    body.push_str("<h2>Audit entries</h2>");
    body.push_str(&audit_table(audit.iter()));
    Html(page(
        &format!("Agent {}", agent.uid),
        Nav::Agents,
        &session,
        &body,
    ))
    .into_response()
}

/// Whether an audit record is about `uid` (as its subject, or among the agents an operator
/// restarted).
fn names_agent(action: &crate::audit::AuditAction, uid: opamp_proto::InstanceUid) -> bool {
    match action {
        crate::audit::AuditAction::RestartSent { agents, .. } => agents.contains(&uid),
        other => other.agent() == Some(uid),
    }
}

/// `GET /ui/catalog`.
pub(super) async fn catalog(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
) -> Response {
    let packages = match read(&dashboard.admin, |store| store.packages()).await {
        Ok(packages) => packages,
        Err(error) => return store_failure(&error),
    };
    let mut body = String::from(
        "<table><thead><tr><th>Package</th><th>Version</th><th>Size</th><th>SHA-256</th>\
         <th>Signer key id</th><th>Added</th><th>Added by</th></tr></thead><tbody>",
    );
    for p in &packages {
        let signer = if p.signature.is_empty() {
            "unsigned".to_owned()
        } else {
            opamp_verify::SignatureEnvelope::parse(&p.signature).map_or_else(
                |_| "compatible-mode signature".to_owned(),
                |envelope| format!("<code>{}</code>", envelope.key_id()),
            )
        };
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><code class=\"hash\">{}</code></td>\
             <td>{signer}</td><td>{}</td><td>{}</td></tr>",
            esc(&p.name),
            esc(&p.version),
            p.size,
            hex::encode(&p.content_hash),
            time(p.added_at),
            esc(p.added_by.as_deref().unwrap_or("-")),
        );
    }
    if packages.is_empty() {
        body.push_str("<tr><td colspan=\"7\" class=\"empty\">The catalog is empty: add packages with <code>opamp package add</code>.</td></tr>");
    }
    body.push_str("</tbody></table>");
    Html(page("Catalog", Nav::Catalog, &session, &body)).into_response()
}

/// The audit log's paging.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AuditPage {
    /// Only records after this position.
    after: Option<i64>,
}

/// `GET /ui/audit`: the whole audit log, oldest first, a page at a time.
pub(super) async fn audit(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Query(paging): Query<AuditPage>,
) -> Response {
    let mut query = AuditQuery::all().limit(AUDIT_PER_PAGE);
    if let Some(after) = paging.after {
        query = query.after(after);
    }
    let records = match read(&dashboard.admin, move |store| store.audit_log(&query)).await {
        Ok(records) => records,
        Err(error) => return store_failure(&error),
    };
    let mut body = audit_table(records.iter());
    if let Some(last) = records.last()
        && records.len() == AUDIT_PER_PAGE as usize
    {
        let _ = write!(
            body,
            "<nav class=\"pages\"><a href=\"/ui/audit?after={}\" rel=\"next\">next →</a></nav>",
            last.position
        );
    }
    Html(page("Audit log", Nav::Audit, &session, &body)).into_response()
}

/// Audit records as a table.
pub(super) fn audit_table<'a>(records: impl Iterator<Item = &'a StoredAudit>) -> String {
    let mut out = String::from(
        "<table class=\"audit\"><thead><tr><th>#</th><th>When</th><th>Rollout</th><th>Who</th>\
         <th>Action</th><th>Details</th></tr></thead><tbody>",
    );
    let mut any = false;
    for stored in records {
        any = true;
        out.push_str(&audit_row(stored.position, &stored.record));
    }
    if !any {
        out.push_str("<tr><td colspan=\"6\" class=\"empty\">No records.</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn audit_row(position: i64, record: &AuditRecord) -> String {
    let who = match &record.actor {
        crate::audit::Actor::Operator(name) => esc(name),
        crate::audit::Actor::Agent(uid) => format!("agent <code>{uid}</code>"),
        crate::audit::Actor::Engine => "engine".to_owned(),
        crate::audit::Actor::Peer { address } => format!("peer <code>{}</code>", esc(address)),
        other => esc(&format!("{other:?}")),
    };
    let details = match serde_json::to_value(&record.action) {
        Ok(serde_json::Value::Object(fields)) => fields
            .iter()
            .filter(|(key, _)| key.as_str() != "action")
            .map(|(key, value)| match value {
                serde_json::Value::String(text) => format!("{}={}", esc(key), esc(text)),
                other => format!("{}={}", esc(key), esc(&other.to_string())),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    // Records about no rollout (an operator's restart) have an empty rollout id.
    let rollout = if record.rollout_id.as_str().is_empty() {
        "—".to_owned()
    } else {
        format!(
            "<a href=\"/ui/rollouts/{id}\">{short}</a>",
            id = esc(record.rollout_id.as_str()),
            short = esc(record
                .rollout_id
                .as_str()
                .get(..8)
                .unwrap_or(record.rollout_id.as_str())),
        )
    };
    format!(
        "<tr><td class=\"num\">{position}</td><td>{when}</td>\
         <td>{rollout}</td><td>{who}</td>\
         <td><span class=\"action\">{kind}</span></td><td>{details}</td></tr>",
        when = time(record.at),
        kind = record.action.kind(),
    )
}
