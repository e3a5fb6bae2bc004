//! Agent identity: whether a connection may speak for the instance uid it claims, per
//! `[agent_identity] mode` (see `docs/security.md`). Refusals are logged and audited
//! (`impersonation_refused`); enrollments are audited (`agent_enrolled`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use opamp_proto::InstanceUid;
use opamp_transport::server::{AgentClaim, AgentVerdict, ClientIdentity};
use subtle::ConstantTimeEq;

use crate::FleetError;
use crate::audit::{Actor, AuditAction, AuditRecord, FLEET_RECORDS};
use crate::catalog::{SharedStore, lock};
use crate::config::AgentIdentityMode;
use crate::enrollment::{random_secret, sha256};
use crate::rollout::RolloutId;
use crate::store::EnrollmentOutcome;
use crate::time::Timestamp;

/// The SAN URI prefix that binds a client certificate to an instance uid.
pub(crate) const INSTANCE_URI_PREFIX: &str = "urn:opamp:instance:";

/// Refusals of one (uid, peer address) are audited at most once per this interval, and at
/// most [`AUDITS_PER_SECOND`] overall, so a flood of forged claims cannot flood the
/// append-only audit log (every refusal is still logged).
const AUDIT_EVERY: Duration = Duration::from_secs(10);
const AUDITS_PER_SECOND: u32 = 20;
/// Bound of the map behind [`AUDIT_EVERY`]; cleared when full.
const RECENT_REFUSALS_CAP: usize = 10_000;

/// Decides agent claims for the fleet server (the transport's `authorize_agent`).
pub(crate) struct IdentityGate {
    mode: AgentIdentityMode,
    store: SharedStore,
    /// Digest of each enrolled agent's credential (enrollment mode), mirrored from the store.
    credentials: Mutex<HashMap<InstanceUid, [u8; 32]>>,
    audits: Mutex<AuditBudget>,
}

#[derive(Default)]
struct AuditBudget {
    recent: HashMap<(InstanceUid, IpAddr), Instant>,
    second: u64,
    in_second: u32,
}

impl AuditBudget {
    fn allows(&mut self, uid: InstanceUid, ip: IpAddr, now: Instant, epoch_second: u64) -> bool {
        if self.second != epoch_second {
            self.second = epoch_second;
            self.in_second = 0;
        }
        if self.in_second >= AUDITS_PER_SECOND {
            return false;
        }
        if self
            .recent
            .get(&(uid, ip))
            .is_some_and(|last| now.duration_since(*last) < AUDIT_EVERY)
        {
            return false;
        }
        if self.recent.len() >= RECENT_REFUSALS_CAP {
            self.recent.clear();
        }
        self.recent.insert((uid, ip), now);
        self.in_second += 1;
        true
    }
}

impl IdentityGate {
    /// The gate for `mode`; `None` in `dangerous_open` mode (every claim is believed), after
    /// a loud warning.
    pub(crate) fn start(
        mode: AgentIdentityMode,
        store: SharedStore,
    ) -> Result<Option<Arc<Self>>, FleetError> {
        let credentials = match mode {
            AgentIdentityMode::DangerousOpen => {
                tracing::warn!(
                    "agent_identity.mode = \"dangerous_open\": any network peer can speak for any \
                     agent and steer rollouts with forged reports; use \"mtls\" or \"enrollment\" \
                     outside labs (docs/security.md)"
                );
                return Ok(None);
            }
            AgentIdentityMode::Mtls => HashMap::new(),
            AgentIdentityMode::Enrollment => {
                lock(&store).agent_credentials()?.into_iter().collect()
            }
        };
        tracing::info!(mode = mode.as_str(), "agent identity enforced");
        Ok(Some(Arc::new(Self {
            mode,
            store,
            credentials: Mutex::new(credentials),
            audits: Mutex::new(AuditBudget::default()),
        })))
    }

    /// Whether this gate enrolls agents (and so knows their credentials).
    pub(crate) fn issues_credentials(&self) -> bool {
        self.mode == AgentIdentityMode::Enrollment
    }

    /// Whether `secret` is the credential of an enrolled agent (for package downloads, which
    /// do not say which agent is asking). Compared in constant time against every one.
    pub(crate) fn is_agent_credential(&self, secret: &str) -> bool {
        let digest = sha256(secret);
        self.credentials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .fold(false, |found, known| {
                found | bool::from(digest.ct_eq(known))
            })
    }

    /// The verdict on one claim; refusals are logged and audited.
    pub(crate) fn authorize(&self, claim: &AgentClaim<'_>) -> AgentVerdict {
        let identity = claim.connection.client_identity();
        let verdict = match self.mode {
            AgentIdentityMode::Mtls => match certificate_binds(identity.as_ref(), claim.uid) {
                Ok(()) => AgentVerdict::Allow,
                Err(reason) => AgentVerdict::refuse(reason),
            },
            _ => self.enrollment_verdict(claim),
        };
        if let AgentVerdict::Refuse { reason } = &verdict {
            self.refused(claim, identity.as_ref(), reason);
        }
        verdict
    }

    fn enrollment_verdict(&self, claim: &AgentClaim<'_>) -> AgentVerdict {
        let presented = bearer(claim.headers);
        let known = self
            .credentials
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&claim.uid)
            .copied();
        if let Some(digest) = known {
            let matches = presented.is_some_and(|secret| bool::from(sha256(secret).ct_eq(&digest)));
            return if matches {
                AgentVerdict::Allow
            } else {
                AgentVerdict::refuse("the uid is enrolled; its credential is missing or wrong")
            };
        }
        let Some(token) = presented else {
            return AgentVerdict::refuse(
                "the uid is not enrolled and no enrollment token was sent",
            );
        };
        if !claim.can_issue_credential {
            return AgentVerdict::refuse(
                "enrolling needs the uid in OpAMP-Instance-UID on the WebSocket upgrade",
            );
        }
        let credential = random_secret();
        let credential_digest = sha256(&credential);
        let now = Timestamp::from_system_time(SystemTime::now());
        let audit = AuditRecord::new(
            now,
            RolloutId::new(FLEET_RECORDS),
            Actor::Agent(claim.uid),
            AuditAction::AgentEnrolled {
                uid: claim.uid,
                peer: claim.connection.remote_addr.to_string(),
            },
        );
        let outcome =
            lock(&self.store).enroll(&sha256(token), claim.uid, &credential_digest, now, &audit);
        match outcome {
            Ok(EnrollmentOutcome::Enrolled) => {
                self.credentials
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(claim.uid, credential_digest);
                tracing::info!(uid = %claim.uid, remote_addr = %claim.connection.remote_addr, "agent enrolled");
                AgentVerdict::AllowWithCredential { credential }
            }
            Ok(EnrollmentOutcome::AlreadyEnrolled) => {
                AgentVerdict::refuse("the uid is already enrolled")
            }
            Ok(EnrollmentOutcome::TokenInvalid) => AgentVerdict::refuse(
                "the uid is not enrolled and the enrollment token is unknown, spent or expired",
            ),
            Err(error) => {
                // Fail closed: a store that cannot record the enrollment admits nobody new.
                tracing::error!(%error, uid = %claim.uid, "cannot record an enrollment");
                AgentVerdict::refuse("the enrollment could not be stored")
            }
        }
    }

    fn refused(&self, claim: &AgentClaim<'_>, identity: Option<&ClientIdentity>, reason: &str) {
        let peer = claim.connection.remote_addr;
        let subject = identity.map(|identity| identity.subject.clone());
        tracing::warn!(
            uid = %claim.uid,
            remote_addr = %peer,
            certificate_subject = subject.as_deref().unwrap_or("-"),
            reason,
            "impersonation refused: the connection may not speak for this agent"
        );
        let epoch_second = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let audit = self
            .audits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allows(claim.uid, peer.ip(), Instant::now(), epoch_second);
        if !audit {
            return;
        }
        let record = AuditRecord::new(
            Timestamp::from_system_time(SystemTime::now()),
            RolloutId::new(FLEET_RECORDS),
            Actor::Peer {
                address: peer.to_string(),
            },
            AuditAction::ImpersonationRefused {
                uid: claim.uid,
                peer: peer.to_string(),
                certificate_subject: subject,
                reason: reason.to_owned(),
            },
        );
        if let Err(error) = lock(&self.store).append_audit(&[record]) {
            tracing::error!(%error, "cannot write a refused impersonation to the audit log");
        }
    }
}

/// Whether the client certificate names `uid` in a SAN URI `urn:opamp:instance:<uid>`.
fn certificate_binds(identity: Option<&ClientIdentity>, uid: InstanceUid) -> Result<(), String> {
    let Some(identity) = identity else {
        return Err("no client certificate".into());
    };
    let named: Vec<&str> = identity
        .uris
        .iter()
        .filter_map(|uri| uri.strip_prefix(INSTANCE_URI_PREFIX))
        .collect();
    if named
        .iter()
        .any(|text| text.parse::<InstanceUid>().is_ok_and(|named| named == uid))
    {
        return Ok(());
    }
    Err(if named.is_empty() {
        format!("the client certificate names no {INSTANCE_URI_PREFIX}<uid>")
    } else {
        format!(
            "the client certificate names {INSTANCE_URI_PREFIX}{}",
            named.join(",")
        )
    })
}

/// The secret of an `Authorization: Bearer <secret>` header, exactly as sent.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .filter(|secret| !secret.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(uris: &[&str]) -> ClientIdentity {
        let mut identity = ClientIdentity::default();
        identity.subject = "CN=agent".into();
        identity.uris = uris.iter().map(|uri| (*uri).to_owned()).collect();
        identity
    }

    #[test]
    fn a_certificate_binds_only_the_uid_its_san_uri_names() {
        let uid = InstanceUid::new_v7();
        let other = InstanceUid::new_v7();
        let own = identity(&[&format!("{INSTANCE_URI_PREFIX}{uid}")]);
        assert!(certificate_binds(Some(&own), uid).is_ok());
        let refused = certificate_binds(Some(&own), other).unwrap_err();
        assert!(refused.contains(&uid.to_string()), "{refused}");
        assert!(certificate_binds(Some(&identity(&["spiffe://x"])), uid).is_err());
        assert!(certificate_binds(None, uid).is_err());
    }

    #[test]
    fn bearer_secrets_are_taken_exactly() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(http::header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(http::header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(
            bearer(&headers),
            Some(" abc "),
            "never trimmed into a match"
        );
        headers.insert(http::header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn refusal_audits_are_bounded_per_peer_and_per_second() {
        let mut budget = AuditBudget::default();
        let uid = InstanceUid::new_v7();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let start = Instant::now();
        assert!(budget.allows(uid, ip, start, 1));
        assert!(!budget.allows(uid, ip, start + Duration::from_secs(1), 1));
        assert!(budget.allows(uid, ip, start + AUDIT_EVERY, 2));
        let allowed = (0..100)
            .filter(|_| budget.allows(InstanceUid::new_v7(), ip, start, 3))
            .count();
        assert_eq!(allowed, AUDITS_PER_SECOND as usize);
    }
}
