//! What the fleet server checks at start (issue 23, items 6, 7 and 10), with real servers on
//! 127.0.0.1 and real files: one server per data directory, no silently empty store next to
//! package files, a damaged database found at start, no upload left over from a killed run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic fails the test

mod fleet_support;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use fleet_support::{admin, config, upload};
use opamp_fleet::store::StoreError;
use opamp_fleet::{FleetError, FleetServer, FleetServerConfig};

fn loopback(data_dir: &Path) -> FleetServerConfig {
    let any = "127.0.0.1:0".parse().unwrap();
    config(data_dir, any, any)
}

/// A data directory whose catalog holds two packages, with the server stopped.
async fn data_dir_with_packages() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let server = FleetServer::start(loopback(dir.path())).await.unwrap();
    let client = admin(server.admin_addr());
    upload(&client, dir.path(), "1.0.0").await;
    upload(&client, dir.path(), "1.1.0").await;
    server.shutdown().await;
    dir
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = FleetServer::start(loopback(dir.path())).await.unwrap();
    let err = FleetServer::start(loopback(dir.path())).await.unwrap_err();
    assert!(matches!(err, FleetError::DataDirInUse { .. }), "{err}");
    assert!(err.to_string().contains("another opamp server"), "{err}");
    // The first one still serves, and once it stops the directory is free again.
    admin(first.admin_addr()).agents().await.unwrap();
    first.shutdown().await;
    let again = FleetServer::start(loopback(dir.path())).await.unwrap();
    again.shutdown().await;
}

#[tokio::test]
async fn a_missing_or_empty_store_next_to_package_files_is_refused() {
    let dir = data_dir_with_packages().await;
    let database = dir.path().join("fleet.db");
    for leftover in ["fleet.db-wal", "fleet.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(leftover));
    }

    std::fs::remove_file(&database).unwrap();
    let err = FleetServer::start(loopback(dir.path())).await.unwrap_err();
    assert!(
        matches!(
            err,
            FleetError::StoreMissing {
                state: "missing",
                files: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(!database.exists(), "the refusal must not create the store");

    std::fs::write(&database, b"").unwrap();
    let err = FleetServer::start(loopback(dir.path())).await.unwrap_err();
    assert!(
        matches!(
            err,
            FleetError::StoreMissing {
                state: "empty (0 bytes)",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--initialise-store"), "{err}");

    // Told to initialise, it starts with an empty catalog.
    let mut settings = loopback(dir.path());
    settings.store.initialise = true;
    let server = FleetServer::start(settings).await.unwrap();
    assert!(
        admin(server.admin_addr())
            .packages()
            .await
            .unwrap()
            .is_empty()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_fresh_data_directory_needs_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let server = FleetServer::start(loopback(dir.path())).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn a_damaged_database_page_is_found_at_start() {
    let dir = data_dir_with_packages().await;
    let database = dir.path().join("fleet.db");
    assert!(
        !dir.path().join("fleet.db-wal").exists()
            || std::fs::metadata(dir.path().join("fleet.db-wal"))
                .unwrap()
                .len()
                == 0,
        "the stopped server should have checkpointed its WAL"
    );
    // Overwrite the last page (table or index content, never the schema on page 1).
    let len = std::fs::metadata(&database).unwrap().len();
    assert!(len >= 3 * 4096, "database has {len} bytes");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&database)
        .unwrap();
    file.seek(SeekFrom::Start(len - 4096)).unwrap();
    file.write_all(&[0xA5; 4096]).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let err = FleetServer::start(loopback(dir.path())).await.unwrap_err();
    assert!(
        matches!(
            err,
            FleetError::Store(StoreError::Corrupt { .. } | StoreError::Database { .. })
        ),
        "{err}"
    );
}

#[tokio::test]
async fn an_upload_cut_by_a_killed_server_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // What a server killed in the middle of an upload leaves behind.
    let leftover = dir.path().join("uploads").join(".tmpAbC123");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("package"), vec![0u8; 64 * 1024]).unwrap();

    let server = FleetServer::start(loopback(dir.path())).await.unwrap();
    assert!(!leftover.exists(), "partial upload still in uploads/");
    // Uploads still work afterwards.
    upload(&admin(server.admin_addr()), dir.path(), "1.0.0").await;
    server.shutdown().await;
}
