//! Storage directory lock across processes: a second supervisor process is refused while the
//! first holds the lock, and a SIGKILLed holder leaves no stale lock.
//!
//! The holder is this test binary re-executed with `HOLD_LOCK_DIR` set, running only
//! `lock_holder_child`, which takes the lock, reports it on stdout and waits for stdin to close.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

use opamp_supervisor::lock::{LockError, StorageLock};

const HOLD_ENV: &str = "HOLD_LOCK_DIR";

#[test]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(HOLD_ENV) else {
        return; // Only meaningful when re-executed by the test below.
    };
    let _lock = StorageLock::acquire(dir.as_ref()).unwrap();
    println!("LOCKED {}", std::process::id());
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
}

#[test]
fn second_process_is_refused_until_the_holder_dies() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "lock_holder_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLD_ENV, &storage)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let holder_pid: u32 = loop {
        let line = lines.next().expect("holder reports the lock").unwrap();
        // libtest prints "test lock_holder_child ... " on the same line first.
        if let Some((_, pid)) = line.split_once("LOCKED ") {
            break pid.trim().parse().unwrap();
        }
    };
    assert_eq!(holder_pid, holder.id());

    match StorageLock::acquire(&storage) {
        Err(LockError::Busy {
            holder_pid: Some(pid),
            ..
        }) => assert_eq!(pid, holder_pid),
        other => panic!("expected Busy held by {holder_pid}, got {other:?}"),
    }

    // SIGKILL: no cleanup code runs; the kernel must release the lock.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let lock = StorageLock::acquire(&storage).unwrap();
    assert_eq!(lock.dir(), storage);
}
