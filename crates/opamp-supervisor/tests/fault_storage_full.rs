//! Full disks during an install, on real 2 MiB tmpfs mounts: once for the storage directory
//! (the download cannot be written) and once for the directory of the collector executable
//! (the new binary cannot be staged next to it). Each time the install must fail with the
//! operating system's "No space left on device", the old collector keep running healthy, and
//! the executable stay whole: no partial file in its place or next to it.
//!
//! Mounting needs root (CAP_SYS_ADMIN); without it each test prints why and passes without
//! checking anything.
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

mod install_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use install_support::{FileServer, PACKAGE, ScriptCollector, healthy_script, write_executable};
use opamp_proto::v1::{DownloadableFile, PackageAvailable, PackageType};
use opamp_supervisor::install::{Collector, InstallConfig, InstallError, Installer};
use opamp_supervisor::journal::{InstalledState, InstalledStateStore};
use opamp_supervisor::storage::StorageLayout;
use opamp_verify::{
    ContentHash, KeyRing, PublicKey, ReleaseSigner, Statement, TrustPolicy, TrustedKey,
};

/// A tmpfs mounted for the test's lifetime; unmounted (lazily) when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (e.g. "2m") at `path`, or says why it cannot.
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if output.status.success() {
            Ok(Self {
                path: path.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
        }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A shell collector that prints `ready <version>`, padded with comment lines to `len` bytes
/// (the shell never reads past the `exec`).
fn padded_script(version: &str, len: usize) -> Vec<u8> {
    let mut script = healthy_script(version);
    let line = format!("# padding {}\n", "x".repeat(100));
    while script.len() < len {
        script.extend_from_slice(line.as_bytes());
    }
    script
}

/// An offer of `bytes` signed by a fresh release key, and a policy trusting that key.
fn signed_offer(url: &str, version: &str, bytes: &[u8]) -> (PackageAvailable, TrustPolicy) {
    let signer = ReleaseSigner::generate_ed25519().unwrap();
    let mut keys = KeyRing::new();
    keys.trust(TrustedKey::new(
        PublicKey::from_spki_pem(&signer.public_key().to_spki_pem().unwrap()).unwrap(),
    ));
    let hash = ContentHash::of(bytes);
    let expiry = std::time::SystemTime::now() + Duration::from_secs(3600);
    let statement = Statement::new(PACKAGE, version, hash, bytes.len() as u64, expiry).unwrap();
    let offer = PackageAvailable {
        r#type: PackageType::TopLevel as i32,
        version: version.to_owned(),
        file: Some(DownloadableFile {
            download_url: url.to_owned(),
            content_hash: hash.as_bytes().to_vec(),
            signature: signer.sign_statement(&statement).unwrap(),
            headers: None,
        }),
        hash: install_support::sha256(format!("{version}:{url}").as_bytes()).to_vec(),
    };
    (offer, TrustPolicy::new(keys))
}

/// What a full-disk install left behind.
struct Outcome {
    error: InstallError,
    message: String,
    bin_entries: Vec<String>,
}

/// Installs a 3 MiB 2.0.0 over a running, healthy 1.0.0 with the executable in `bin` and the
/// storage in `storage`, and checks everything that must hold whatever was full.
async fn install_too_big(bin: &Path, storage: &Path) -> Outcome {
    let exe = bin.join("otelcol");
    let old = healthy_script("1.0.0");
    write_executable(&exe, &old);
    let layout = StorageLayout::create(storage).unwrap();
    let mut config = InstallConfig::new(&exe);
    config.health_timeout = Duration::from_secs(2);
    let installer = Installer::new(layout.clone(), config).unwrap();
    let mut state = InstalledState::default();
    state.record_installed(PACKAGE, "1.0.0", b"initial".to_vec(), None, None);
    InstalledStateStore::new(layout.installed_state_path())
        .save(&state)
        .unwrap();
    let mut collector = ScriptCollector::new();
    collector.start(&exe).await.unwrap();
    assert!(
        collector
            .wait_healthy(tokio::time::Instant::now() + Duration::from_secs(5))
            .await
            .is_healthy()
    );

    let new = padded_script("2.0.0", 3 * 1024 * 1024);
    let server = FileServer::start(new.clone()).await;
    let (offer, policy) = signed_offer(&server.url(), "2.0.0", &new);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        installer.install_offer(
            &mut collector,
            PACKAGE,
            &offer,
            &policy,
            std::time::SystemTime::now(),
            &mut |_| {},
        ),
    )
    .await
    .expect("the install gave up in time");
    let failed = result.unwrap_err();

    // The old collector never stopped and is healthy; the executable is the old one.
    assert!(
        collector.is_running(),
        "the old collector must keep running"
    );
    assert_eq!(collector.healthy_version.as_deref(), Some("1.0.0"));
    assert_eq!(collector.started.len(), 1, "{:?}", collector.started);
    assert_eq!(std::fs::read(&exe).unwrap(), old);
    let state = InstalledStateStore::new(layout.installed_state_path())
        .load()
        .unwrap();
    assert_eq!(state.packages[PACKAGE].version, "1.0.0");
    let mut bin_entries: Vec<String> = std::fs::read_dir(bin)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    bin_entries.sort();
    collector.stop().await.unwrap();
    Outcome {
        error: failed.error,
        message: failed.error_message,
        bin_entries,
    }
}

fn assert_disk_full_message(outcome: &Outcome) {
    assert!(
        outcome.message.contains("No space left on device"),
        "{}",
        outcome.message
    );
}

#[tokio::test]
async fn full_storage_directory_fails_the_download_and_keeps_the_old_collector() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let disk = match SmallDisk::mount(&storage, "2m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs ({why}); the storage-full fault needs root");
            return;
        }
    };
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let outcome = install_too_big(&bin, &disk.path).await;
    assert_disk_full_message(&outcome);
    assert!(
        matches!(
            outcome.error,
            InstallError::Download(_) | InstallError::Io { .. }
        ),
        "{}",
        outcome.error
    );
    assert_eq!(
        outcome.bin_entries,
        ["otelcol"],
        "nothing staged next to it"
    );
    let downloads: Vec<_> = std::fs::read_dir(disk.path.join("downloads"))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    println!(
        "storage full: {}; left in downloads/: {downloads:?}",
        outcome.message
    );
}

#[tokio::test]
async fn full_executable_directory_fails_staging_and_leaves_no_partial_binary() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let disk = match SmallDisk::mount(&bin, "2m") {
        Ok(disk) => disk,
        Err(why) => {
            println!("SKIPPED: cannot mount a tmpfs ({why}); the disk-full fault needs root");
            return;
        }
    };
    let outcome = install_too_big(&disk.path, &dir.path().join("storage")).await;
    assert_disk_full_message(&outcome);
    assert_eq!(
        outcome.bin_entries,
        ["otelcol"],
        "a half-written staged binary was left next to the executable"
    );
    println!("executable directory full: {}", outcome.message);
}
