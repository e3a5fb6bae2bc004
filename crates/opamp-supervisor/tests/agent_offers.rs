//! Offers that arrive while an install is under way, end to end through
//! `opamp_supervisor::run`: a newer offer replaces a download that stalled, instead of waiting
//! behind it for as long as the stalled server keeps the connection open.

mod agent_support;
mod collector_support;

use agent_support::{assert_still_runs, package, running};
use collector_support::Behaviour;
use opamp_proto::v1::PackageStatusEnum;
use opamp_verify::DowngradeAuthorisation;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_offer_replaces_a_stalled_download() {
    let (mut fleet, host, supervisor, uid) = running("1.0.0", "300ms").await;

    // A download server that accepts and then never answers.
    let stalled = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stalled_url = format!(
        "http://{}/otelcol-1.1.0",
        stalled.local_addr().expect("addr")
    );
    let held = tokio::spawn(async move {
        let mut connections = Vec::new();
        while let Ok((socket, _)) = stalled.accept().await {
            connections.push(socket);
        }
    });

    let first = host.build("1.1.0", Behaviour::default());
    let mut offer = fleet.signed_offer(
        &host.signer,
        "1.1.0",
        &first,
        &first,
        DowngradeAuthorisation::Forbidden,
    );
    if let Some(file) = offer
        .packages
        .get_mut("otelcol")
        .and_then(|p| p.file.as_mut())
    {
        file.download_url = stalled_url;
    }
    fleet.offer(uid, offer);
    fleet
        .wait_until(uid, "the 1.1.0 install under way", |s| {
            package(s).is_some_and(|p| {
                p.server_offered_version == "1.1.0"
                    && (p.status == PackageStatusEnum::Installing as i32
                        || p.status == PackageStatusEnum::Downloading as i32)
            })
        })
        .await;

    let newer = host.build("1.2.0", Behaviour::default());
    let offered_at = std::time::Instant::now();
    fleet.offer_signed(
        uid,
        &host.signer,
        "1.2.0",
        &newer,
        DowngradeAuthorisation::Forbidden,
    );
    fleet
        .wait_until(uid, "Installed 1.2.0", |s| {
            package(s).is_some_and(|p| {
                p.status == PackageStatusEnum::Installed as i32 && p.agent_has_version == "1.2.0"
            })
        })
        .await;
    // Without pre-emption it waited for the downloader's 60 s idle timeout first.
    let waited = offered_at.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(20),
        "the newer offer waited {waited:?}"
    );
    assert_still_runs(&mut fleet, uid, &host, "1.2.0").await;
    held.abort();
    supervisor.shutdown().await;
}
