//! The agent page's restart button and its handler: the same Restart command as
//! `opamp agents restart`, for this one agent, audited under the signed-in operator.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use http::StatusCode;
use opamp_proto::{AgentCapabilities, InstanceUid};

use super::Dashboard;
use super::html::csrf_field;
use super::session::{CsrfForm, Session, refusal};
use crate::admin::agents::{RestartReport, RestartRequest};
use crate::admin::requests::Request as DriverRequest;
use crate::admin::routes::{ask, status_of};
use crate::store::AgentRecord;

/// The button, for operators who may write and agents that are connected and accept the
/// command; nothing otherwise.
pub(super) fn button(session: &Session, agent: &AgentRecord) -> String {
    let accepts = AgentCapabilities::from_wire(agent.capabilities)
        .contains(AgentCapabilities::ACCEPTS_RESTART_COMMAND);
    if session.read_only || !agent.connected || !accepts {
        return String::new();
    }
    format!(
        "<div class=\"controls\"><form method=\"post\" action=\"/ui/agents/{uid}/restart\">{csrf}\
         <button type=\"submit\" class=\"danger\" data-testid=\"restart\">Restart collector</button>\
         </form></div>",
        uid = agent.uid,
        csrf = csrf_field(session),
    )
}

/// `POST /ui/agents/{uid}/restart`.
pub(super) async fn restart(
    State(dashboard): State<Dashboard>,
    Extension(session): Extension<Session>,
    Path(uid): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_matches(&form.csrf) {
        return refusal(StatusCode::FORBIDDEN, "Missing or wrong CSRF token.");
    }
    let Ok(uid) = uid.parse::<InstanceUid>() else {
        return refusal(StatusCode::BAD_REQUEST, "That is not an agent id.");
    };
    let by = session.operator.clone();
    let sent: Result<RestartReport, crate::FleetError> =
        ask(&dashboard.admin, |reply| DriverRequest::Restart {
            request: RestartRequest::agent(uid),
            by,
            reply,
        })
        .await;
    match sent {
        Ok(_) => Redirect::to(&format!("/ui/agents/{uid}")).into_response(),
        Err(error) => refusal(status_of(&error), &error.to_string()),
    }
}
