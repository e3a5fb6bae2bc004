//! Package uploads on a full disk (issue 23, item 6): the data directory is a small tmpfs, so
//! the disk really fills. An upload needs its size once (not twice), one that does not fit
//! answers 507 and leaves nothing behind, and the server keeps working.
//!
//! Mounting needs root (CI runs as root); elsewhere the test says so and passes without
//! running.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use fleet_support::{PACKAGE, admin, config};
use opamp_fleet::{FleetError, FleetServer};

/// A tmpfs mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(Self { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn package(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    // Not compressible, not that tmpfs would compress.
    let mut x: u64 = size as u64 | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}

#[tokio::test]
async fn uploads_on_a_full_disk_need_their_size_once_and_answer_507() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let sources = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let server = FleetServer::start(config(&tmpfs.path, any, any))
        .await
        .unwrap();
    let client = admin(server.admin_addr());

    // 2.5 MiB fits once on the 4 MiB disk, but not twice.
    let big = package(sources.path(), "otelcol-big", 2560 * 1024);
    let entry = client
        .add_package(&big, PACKAGE, "1.0.0", b"sig")
        .await
        .expect("an upload that fits once must be accepted");
    assert_eq!(entry.size, 2560 * 1024);
    assert_eq!(
        std::fs::read(&entry.file_path).unwrap(),
        std::fs::read(&big).unwrap()
    );

    // 2 MiB more does not fit: the server's disk is full, not the request wrong.
    let too_big = package(sources.path(), "otelcol-too-big", 2048 * 1024);
    let err = client
        .add_package(&too_big, PACKAGE, "1.1.0", b"sig")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FleetError::AdminApi {
                status: Some(507),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        files_under(&tmpfs.path.join("uploads")).is_empty(),
        "a refused upload left files in uploads/"
    );
    assert_eq!(files_under(&tmpfs.path.join("packages")).len(), 1);

    // The space came back: the server works on.
    let small = package(sources.path(), "otelcol-small", 64 * 1024);
    client
        .add_package(&small, PACKAGE, "1.1.0", b"sig")
        .await
        .unwrap();
    assert_eq!(client.packages().await.unwrap().len(), 2);
    server.shutdown().await;
}
