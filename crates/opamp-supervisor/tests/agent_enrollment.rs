//! Enrollment (issue 22): a real supervisor sends its one-time token, keeps the credential
//! the server issues (`opamp-agent-credential`) in `storage_dir/agent_credential`, uses it
//! for downloads from the server, and after a restart reconnects with it alone (the token is
//! spent). A second supervisor claiming the same uid without the credential is refused.
//!
//! The server here is the transport's, with an authoriser that follows the fleet server's
//! enrollment rules (the fleet's own tests attack those rules: opamp-fleet
//! `tests/agent_identity.rs`).

// Test code: a panic is a failed test (see clippy.toml).
#![allow(clippy::unwrap_used)]

mod agent_support;
mod collector_support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use agent_support::{Fleet, Host, InProcess, WAIT, package};
use collector_support::Behaviour;
use opamp_proto::InstanceUid;
use opamp_proto::v1::PackageStatusEnum;
use opamp_transport::server::{AgentClaim, AgentVerdict};
use opamp_verify::DowngradeAuthorisation;

const TOKEN: &str = "one-time-enrollment-token";

/// Tokens not yet spent, credentials issued per uid, and the refusals seen per uid.
#[derive(Default)]
struct Enrollment {
    tokens: HashSet<String>,
    credentials: HashMap<InstanceUid, String>,
    refused: HashMap<InstanceUid, usize>,
    issued: usize,
}

impl Enrollment {
    fn decide(&mut self, claim: &AgentClaim<'_>) -> AgentVerdict {
        let presented = claim
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let verdict = match (self.credentials.get(&claim.uid), presented) {
            (Some(known), Some(presented)) if *known == presented => AgentVerdict::Allow,
            (Some(_), _) => AgentVerdict::refuse("enrolled; credential missing or wrong"),
            (None, Some(token)) if claim.can_issue_credential && self.tokens.remove(&token) => {
                self.issued += 1;
                let credential = format!("credential-{}-{}", claim.uid, self.issued);
                self.credentials.insert(claim.uid, credential.clone());
                AgentVerdict::AllowWithCredential { credential }
            }
            (None, _) => AgentVerdict::refuse("not enrolled"),
        };
        if !verdict.is_allowed() {
            *self.refused.entry(claim.uid).or_default() += 1;
        }
        verdict
    }
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervisor_enrolls_keeps_its_credential_across_a_restart_and_cannot_be_impersonated() {
    let enrollment = Arc::new(Mutex::new(Enrollment {
        tokens: HashSet::from([TOKEN.to_owned()]),
        ..Enrollment::default()
    }));
    let for_agents = enrollment.clone();
    let for_downloads = enrollment.clone();
    let mut fleet = Fleet::start_with(move |mut config| {
        // Downloads need an enrolled agent's credential.
        let downloads = config
            .downloads
            .take()
            .unwrap()
            .authorize(move |token, _path| {
                let state = for_downloads.lock().unwrap();
                token.is_some_and(|token| state.credentials.values().any(|known| known == token))
            });
        config
            .downloads(downloads)
            .authorize_agent(move |claim| for_agents.lock().unwrap().decide(claim))
    })
    .await;

    let host = Host::new("1.0.0");
    let token_file = host.dir.path().join("enrollment.token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let extra = format!("  enrollment_token_file: {}", token_file.display());
    let (_, config) = host.config_with_server(&fleet.endpoint(), "500ms", "5s", &extra);
    let supervisor = InProcess::spawn(config.clone());
    let uid = fleet.wait_connected().await;
    let credential_file = host.storage.join("agent_credential");
    wait_for("the credential to be stored", || credential_file.exists()).await;
    let stored = std::fs::read_to_string(&credential_file).unwrap();
    let issued = enrollment.lock().unwrap().credentials[&uid].clone();
    assert_eq!(stored.trim(), issued);
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&credential_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "only the supervisor's user reads it");
    }

    // Downloads from the server carry the credential.
    let new = host.build("1.1.0", Behaviour::default());
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.1.0",
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let status = fleet
        .wait_until(uid, "1.1.0 installed or failed", |s| {
            package(s).is_some_and(|p| {
                p.server_offered_version == "1.1.0"
                    && (p.status == PackageStatusEnum::Installed as i32
                        || p.status == PackageStatusEnum::InstallFailed as i32)
            })
        })
        .await;
    let reported = package(&status).unwrap();
    assert_eq!(
        reported.status,
        PackageStatusEnum::Installed as i32,
        "{}",
        reported.error_message
    );

    // Restarted (the token is spent and its file gone), it reconnects with the credential.
    supervisor.shutdown().await;
    std::fs::remove_file(&token_file).unwrap();
    let (_, config) = host.config_with_server(&fleet.endpoint(), "500ms", "5s", "");
    let supervisor = InProcess::spawn(config);
    assert_eq!(fleet.wait_connected().await, uid);
    assert_eq!(enrollment.lock().unwrap().refused.get(&uid), None);

    // Another host claiming the same uid, without the credential, is refused.
    let impostor = Host::new("1.0.0");
    std::fs::create_dir_all(&impostor.storage).unwrap();
    std::fs::write(impostor.storage.join("instance_uid"), format!("{uid}\n")).unwrap();
    let spent = impostor.dir.path().join("enrollment.token");
    std::fs::write(&spent, TOKEN).unwrap();
    let extra = format!("  enrollment_token_file: {}", spent.display());
    let (_, config) = impostor.config_with_server(&fleet.endpoint(), "500ms", "5s", &extra);
    let impostor_run = InProcess::spawn(config);
    wait_for("the impostor to be refused twice", || {
        enrollment
            .lock()
            .unwrap()
            .refused
            .get(&uid)
            .copied()
            .unwrap_or(0)
            >= 2
    })
    .await;
    assert!(!impostor.storage.join("agent_credential").exists());
    assert_eq!(enrollment.lock().unwrap().credentials.len(), 1);
    impostor_run.shutdown().await;
    supervisor.shutdown().await;
}
