//! Whether a connection may speak for the agent it claims to be: what the embedder's
//! [`AgentAuthorizer`](super::AgentAuthorizer) sees and what it answers.

use http::HeaderMap;
use opamp_proto::InstanceUid;

use super::listener::ConnectionInfo;

pub use crate::AGENT_CREDENTIAL_HEADER;

/// One claim to speak for an instance uid: the uid, who is on the other end and the headers
/// of the request (the WebSocket upgrade for WebSocket agents).
#[derive(Debug)]
#[non_exhaustive]
pub struct AgentClaim<'a> {
    /// The instance uid the agent claims.
    pub uid: InstanceUid,
    /// The connection (address, verified client certificate).
    pub connection: &'a ConnectionInfo,
    /// The request headers (for example `Authorization`).
    pub headers: &'a HeaderMap,
    /// Whether a credential in [`AgentVerdict::AllowWithCredential`] can still reach the
    /// agent: false for a WebSocket whose upgrade did not name the uid (the upgrade
    /// response is already sent), in which case such a verdict is a refusal.
    pub can_issue_credential: bool,
}

/// What the embedder decided about an [`AgentClaim`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentVerdict {
    /// The connection may speak for the uid.
    Allow,
    /// The connection may speak for the uid, and the agent gets this credential in the
    /// [`AGENT_CREDENTIAL_HEADER`] response header (for example after enrolling).
    AllowWithCredential {
        /// The credential, a visible-ASCII header value.
        credential: String,
    },
    /// The connection may not speak for the uid: HTTP 403 or WebSocket close 1008.
    Refuse {
        /// Why, for the server's log (never sent to the peer).
        reason: String,
    },
}

impl AgentVerdict {
    /// A refusal with this reason.
    pub fn refuse(reason: impl Into<String>) -> Self {
        Self::Refuse {
            reason: reason.into(),
        }
    }

    /// Whether the claim was allowed.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, Self::Refuse { .. })
    }
}

/// Request header naming the agent (the spec's hint for HTTP; our clients also send it on
/// the WebSocket upgrade, so a credential can be issued in the upgrade response).
pub(crate) const INSTANCE_UID_HEADER: &str = "opamp-instance-uid";

/// The uid a request names in [`INSTANCE_UID_HEADER`], when it names a valid one.
pub(crate) fn uid_from_headers(headers: &HeaderMap) -> Option<InstanceUid> {
    headers
        .get(INSTANCE_UID_HEADER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Asks the embedder's authorizer (none configured: allowed). A credential verdict that
/// cannot reach the agent or is not a valid header value is turned into a refusal, so an
/// embedder never consumes something the agent never receives without hearing of it.
pub(crate) fn check(shared: &super::Shared, claim: &AgentClaim<'_>) -> AgentVerdict {
    let Some(authorize) = &shared.config.authorize_agent else {
        return AgentVerdict::Allow;
    };
    let verdict = authorize(claim);
    match &verdict {
        AgentVerdict::AllowWithCredential { credential } => {
            if !claim.can_issue_credential {
                AgentVerdict::refuse("a credential cannot be issued on this WebSocket")
            } else if http::HeaderValue::from_str(credential).is_err() {
                AgentVerdict::refuse("the issued credential is not a valid header value")
            } else {
                verdict
            }
        }
        AgentVerdict::Refuse { reason } => {
            tracing::warn!(
                uid = %claim.uid,
                remote_addr = %claim.connection.remote_addr,
                reason,
                "agent refused: not authorised for this instance_uid"
            );
            verdict
        }
        _ => verdict,
    }
}

/// The response header for a verdict that issues a credential.
pub(crate) fn credential_header(verdict: &AgentVerdict) -> Option<http::HeaderValue> {
    match verdict {
        AgentVerdict::AllowWithCredential { credential } => {
            http::HeaderValue::from_str(credential).ok()
        }
        _ => None,
    }
}
