//! Offers the trust policy refuses never touch the running collector, and are reported as
//! `InstallFailed` with the verifier's reason. A signed downgrade is installed.

mod agent_support;
mod collector_support;

use agent_support::{assert_still_runs, package, running, wait_failed};
use collector_support::Behaviour;
use opamp_proto::v1::PackageStatusEnum;
use opamp_verify::{DowngradeAuthorisation, ReleaseSigner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_without_authorisation_is_refused_and_old_keeps_running() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;
    let old = host.build("0.9.0", Behaviour::default());
    fleet.offer_signed(
        uid,
        &host.signer,
        "0.9.0",
        &old,
        DowngradeAuthorisation::Forbidden,
    );
    let error = wait_failed(&mut fleet, uid, "0.9.0").await;
    assert!(
        error.contains("does not authorise a downgrade"),
        "error: {error}"
    );
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_downgrade_is_installed() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;
    let old = host.build("0.9.0", Behaviour::default());
    let authorised = DowngradeAuthorisation::AllowFromAtMost(semver::Version::new(1, 0, 0));
    fleet.offer_signed(uid, &host.signer, "0.9.0", &old, authorised);
    fleet
        .wait_until(uid, "Installed 0.9.0", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "0.9.0"
            })
        })
        .await;
    assert_still_runs(&mut fleet, uid, &host, "0.9.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_file_that_does_not_match_the_signed_hash_is_refused() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;
    let signed = host.build("1.1.0", Behaviour::default());
    let mut served = signed.clone();
    let middle = served.len() / 2;
    served[middle] ^= 0xff;
    let offer = fleet.signed_offer(
        &host.signer,
        "1.1.0",
        &served,
        &signed,
        DowngradeAuthorisation::Forbidden,
    );
    fleet.offer(uid, offer);
    let error = wait_failed(&mut fleet, uid, "1.1.0").await;
    assert!(error.contains("hash mismatch"), "error: {error}");
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_signature_is_refused() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;
    let new = host.build("1.1.0", Behaviour::default());
    let mut offer = fleet.signed_offer(
        &host.signer,
        "1.1.0",
        &new,
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let package = offer.packages.get_mut("otelcol").unwrap();
    let signature = &mut package.file.as_mut().unwrap().signature;
    let last = signature.len() - 1;
    signature[last] ^= 0x01;
    fleet.offer(uid, offer);
    let error = wait_failed(&mut fleet, uid, "1.1.0").await;
    assert!(error.contains("does not verify"), "error: {error}");
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_by_an_unknown_key_is_refused() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;
    let new = host.build("1.1.0", Behaviour::default());
    let stranger = ReleaseSigner::generate_ed25519().unwrap();
    fleet.offer_signed(
        uid,
        &stranger,
        "1.1.0",
        &new,
        DowngradeAuthorisation::Forbidden,
    );
    let error = wait_failed(&mut fleet, uid, "1.1.0").await;
    assert!(error.contains("is not trusted"), "error: {error}");
    assert_still_runs(&mut fleet, uid, &host, "1.0.0").await;
    supervisor.shutdown().await;
}
