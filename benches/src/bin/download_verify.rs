//! One verified package download over loopback HTTP, timed: an Ed25519-signed release statement
//! for FILE passes `TrustPolicy::verify_offer`, the `opamp-transport` server's download route
//! serves FILE, the supervisor's `Downloader` streams it to DEST_DIR while hashing, fsyncs and
//! renames it, and `accept_hashed` turns the streamed digest into a `Verified<VerifiedPackage>`
//! (what the supervisor installs from). Used by
//! `benches/scripts/download_vs_openssl.sh` to compare with `openssl dgst -sha256 FILE`.
//!
//! ```text
//! cargo run --release -p opamp-benches --bin download_verify -- FILE SHA256_HEX DEST_DIR
//! ```
//! Prints `<wall seconds> <process CPU seconds>` (server and downloader together).
#![allow(clippy::unwrap_used, clippy::expect_used)] // A measuring tool: failing loudly is right.

use opamp_benches::procfs;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use opamp_proto::ServerCapabilities;
use opamp_supervisor::download::{DownloadLimits, DownloadRequest, Downloader};
use opamp_transport::server::{DownloadConfig, OpampServer, OpampServerConfig};
use opamp_verify::{
    ContentHash, KeyRing, PackageToVerify, ReleaseSigner, Statement, TrustPolicy, TrustedKey,
    VerificationContext,
};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: download_verify FILE SHA256_HEX DEST_DIR";
    let file = PathBuf::from(args.next().expect(usage));
    let expected: [u8; 32] = hex::decode(args.next().expect(usage))
        .expect("SHA256_HEX is hex")
        .try_into()
        .expect("SHA256_HEX is 32 bytes");
    let dest = PathBuf::from(args.next().expect(usage));
    let root = file.parent().unwrap().to_path_buf();
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    let size = std::fs::metadata(&file).unwrap().len();
    let content_hash = ContentHash::from_bytes(expected);
    let signer = ReleaseSigner::generate_ed25519().unwrap();
    let now = SystemTime::now();
    let statement = Statement::new(
        "package",
        "1.0.0",
        content_hash,
        size,
        now + Duration::from_secs(3600),
    )
    .unwrap();
    let signature = signer.sign_statement(&statement).unwrap();
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(signer.public_key().clone()));
    let policy = TrustPolicy::new(keys);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = OpampServerConfig::new("127.0.0.1:0".parse().unwrap())
            .session(opamp_session::ServerSessionConfig::new(
                ServerCapabilities::OFFERS_PACKAGES,
            ))
            .downloads(DownloadConfig::new(root));
        let (server, _notifications) = OpampServer::start(config).await.unwrap();
        let url = format!("http://{}/packages/{name}", server.local_addr());
        let downloader = Downloader::new(&dest, DownloadLimits::with_max_size(size)).unwrap();
        let _ = downloader.discard("package");

        let cpu_before = procfs::cpu_time(std::process::id()).unwrap();
        let started = Instant::now();
        let offer = PackageToVerify::new("package", "1.0.0", &expected, &signature);
        let approved = policy
            .verify_offer(&offer, &VerificationContext::new(now))
            .unwrap();
        let mut request = DownloadRequest::new("package", url).with_expected_sha256(expected);
        request.expected_size = approved.signed_size();
        let downloaded = downloader.download(&request, |_| {}).await.unwrap();
        let verified = approved.accept_hashed(downloaded.hashed).unwrap();
        let wall = started.elapsed();
        assert_eq!(verified.size(), size);
        let cpu = procfs::cpu_time(std::process::id())
            .unwrap()
            .saturating_sub(cpu_before);
        assert_eq!(downloaded.size(), size);
        assert_eq!(downloaded.sha256(), content_hash);
        println!("{:.4} {:.4}", wall.as_secs_f64(), cpu.as_secs_f64());
        downloader.discard("package").unwrap();
        server.shutdown().await;
    });
}
