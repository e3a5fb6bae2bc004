//! Hashing real files: the one-pass download path and the async reader.
// Helpers outside #[test] functions unwrap too: a panic there is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::{BufWriter, Write};

use common::*;
use opamp_verify::{
    ContentHash, HashingWriter, PackageToVerify, VerificationContext, VerifyError, hash_reader,
};

#[test]
fn download_written_and_hashed_in_one_pass_is_accepted() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let policy = policy_trusting(&[&signer]);
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &signature);
    let approved = policy
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("otelcol-contrib.download");
    assert_eq!(approved.download_limit(1 << 30), file().len() as u64);
    let mut writer = approved.hashing_writer(BufWriter::new(File::create(&path).unwrap()), 1 << 30);
    for chunk in file().chunks(777) {
        writer.write_all(chunk).unwrap();
    }
    let (_, hashed) = writer.finish().unwrap();
    let verified = approved.accept_hashed(hashed).unwrap();
    assert_eq!(verified.content_hash(), hash);
    assert_eq!(std::fs::read(&path).unwrap(), file());
    // The file on disk hashes the same when read back.
    assert_eq!(
        hash_reader(File::open(&path).unwrap(), 1 << 30)
            .unwrap()
            .hash(),
        hash
    );
}

#[test]
fn one_pass_download_of_the_wrong_bytes_is_refused() {
    let signer = ed25519_signer(1);
    let signature = signer.sign_statement(&statement("1.2.0")).unwrap();
    let hash = ContentHash::of(&file());
    let offer = PackageToVerify::new("otelcol-contrib", "1.2.0", hash.as_bytes(), &signature);
    let approved = policy_trusting(&[&signer])
        .verify_offer(&offer, &VerificationContext::new(now()))
        .unwrap();
    let mut writer = HashingWriter::new(Vec::new(), approved.download_limit(1 << 30));
    writer.write_all(&vec![0u8; file().len()]).unwrap();
    let (_, hashed) = writer.finish().unwrap();
    assert!(matches!(
        approved.accept_hashed(hashed),
        Err(VerifyError::HashMismatch { .. })
    ));
}

#[test]
fn large_file_hash_matches_sha2_one_shot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let hashed = hash_reader(File::open(&path).unwrap(), data.len() as u64).unwrap();
    assert_eq!(hashed.len(), data.len() as u64);
    assert_eq!(hashed.hash(), ContentHash::of(&data));
    assert!(matches!(
        hash_reader(File::open(&path).unwrap(), data.len() as u64 - 1),
        Err(VerifyError::TooLarge { .. })
    ));
}

#[cfg(feature = "tokio")]
#[tokio::test]
async fn async_reader_hashes_a_file_and_enforces_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pkg.bin");
    std::fs::write(&path, file()).unwrap();
    let hashed =
        opamp_verify::hash_async_reader(tokio::fs::File::open(&path).await.unwrap(), 1 << 20)
            .await
            .unwrap();
    assert_eq!(hashed.hash(), ContentHash::of(&file()));
    let err = opamp_verify::hash_async_reader(tokio::fs::File::open(&path).await.unwrap(), 9_999)
        .await
        .unwrap_err();
    assert!(matches!(err, VerifyError::TooLarge { limit: 9_999 }));
}
