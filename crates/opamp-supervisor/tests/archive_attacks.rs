//! Staging packages from real files: raw executables, release archives, and one hostile archive
//! per attack (absolute path, `..`, symlink and hard link escapes, device file, gzip bomb).
#![allow(clippy::unwrap_used)] // helpers outside #[test] fns unwrap too; a panic fails the test

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use flate2::Compression;
use flate2::write::GzEncoder;
use opamp_supervisor::archive::{
    ArchiveError, ArchiveLimits, PackageFormat, detect_format, stage_package,
};
use proptest::prelude::*;
use tar::{EntryType, Header};

/// One archive entry, written with raw header names so hostile paths survive (the `tar`
/// builder would refuse them).
struct Entry<'a> {
    path: &'a str,
    kind: EntryType,
    data: &'a [u8],
    link: Option<&'a str>,
    mode: u32,
}

fn file<'a>(path: &'a str, data: &'a [u8]) -> Entry<'a> {
    Entry {
        path,
        kind: EntryType::Regular,
        data,
        link: None,
        mode: 0o644,
    }
}

fn link<'a>(path: &'a str, kind: EntryType, target: &'a str) -> Entry<'a> {
    Entry {
        path,
        kind,
        data: b"",
        link: Some(target),
        mode: 0o777,
    }
}

fn tar_gz(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut tar = Vec::new();
    for entry in entries {
        let mut header = Header::new_old();
        {
            let raw = header.as_old_mut();
            raw.name[..entry.path.len()].copy_from_slice(entry.path.as_bytes());
            if let Some(target) = entry.link {
                raw.linkname[..target.len()].copy_from_slice(target.as_bytes());
            }
        }
        header.set_entry_type(entry.kind);
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_cksum();
        tar.extend_from_slice(header.as_bytes());
        tar.extend_from_slice(entry.data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn package(&self, bytes: &[u8]) -> std::path::PathBuf {
        let path = self.dir.path().join("package.download");
        fs::write(&path, bytes).unwrap();
        path
    }

    fn staging(&self) -> std::path::PathBuf {
        self.dir.path().join("root").join("staging")
    }

    fn stage(
        &self,
        bytes: &[u8],
        exe: &str,
    ) -> Result<opamp_supervisor::archive::StagedExecutable, ArchiveError> {
        let package = self.package(bytes);
        stage_package(&package, &self.staging(), exe, &ArchiveLimits::default())
    }

    /// Every path under the fixture except the package, the staging directory and its parent.
    fn stray_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        walk(self.dir.path(), &mut out);
        out.retain(|p| {
            !p.starts_with(self.staging())
                && p != &self.dir.path().join("package.download")
                && p != &self.dir.path().join("root")
        });
        out
    }
}

fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push(path.clone());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        }
    }
}

#[test]
fn raw_executable_is_staged_with_execute_bits_and_hash() {
    let fx = Fixture::new();
    let bytes = b"#!/bin/sh\necho hi\n";
    let staged = fx.stage(bytes, "otelcol").unwrap();
    assert_eq!(staged.format, PackageFormat::RawExecutable);
    assert_eq!(staged.path, fx.staging().join("otelcol"));
    assert_eq!(fs::read(&staged.path).unwrap(), bytes);
    let mode = fs::metadata(&staged.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o755);
    assert_eq!(staged.size, bytes.len() as u64);
}

#[test]
fn release_archive_is_detected_by_magic_and_extracted() {
    let fx = Fixture::new();
    let archive = tar_gz(&[
        Entry {
            path: "./",
            kind: EntryType::Directory,
            data: b"",
            link: None,
            mode: 0o755,
        },
        file("./README.md", b"readme"),
        Entry {
            mode: 0o4777, // setuid and world-writable bits must be dropped
            ..file("./otelcol-contrib", b"\x7fELF fake binary")
        },
        link("docs/latest", EntryType::Symlink, "README.md"),
    ]);
    let package = fx.package(&archive);
    assert_eq!(detect_format(&package).unwrap(), PackageFormat::TarGz);
    let staged = fx.stage(&archive, "otelcol-contrib").unwrap();
    assert_eq!(staged.format, PackageFormat::TarGz);
    assert_eq!(fs::read(&staged.path).unwrap(), b"\x7fELF fake binary");
    assert_eq!(
        fs::metadata(&staged.path).unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(fs::read(fx.staging().join("README.md")).unwrap(), b"readme");
}

#[test]
fn executable_missing_from_archive_is_an_error() {
    let fx = Fixture::new();
    let archive = tar_gz(&[file("README.md", b"x")]);
    let err = fx.stage(&archive, "otelcol").unwrap_err();
    assert!(
        matches!(err, ArchiveError::ExecutableNotFound { .. }),
        "{err}"
    );
}

#[test]
fn executable_that_is_a_symlink_is_not_accepted() {
    let fx = Fixture::new();
    let archive = tar_gz(&[
        file("real", b"x"),
        link("otelcol", EntryType::Symlink, "real"),
    ]);
    let err = fx.stage(&archive, "otelcol").unwrap_err();
    assert!(
        matches!(err, ArchiveError::ExecutableNotFound { .. }),
        "{err}"
    );
}

#[test]
fn absolute_path_is_refused() {
    let fx = Fixture::new();
    let target = fx.dir.path().join("owned");
    let path = target.to_str().unwrap().to_owned();
    let archive = tar_gz(&[file(&path, b"pwned")]);
    let err = fx.stage(&archive, "otelcol").unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
    assert!(!target.exists());
}

#[test]
fn parent_dir_component_is_refused() {
    let fx = Fixture::new();
    let archive = tar_gz(&[file("bin/../../../escaped", b"pwned")]);
    let err = fx.stage(&archive, "otelcol").unwrap_err();
    assert!(matches!(err, ArchiveError::UnsafePath { .. }), "{err}");
    assert!(fx.stray_files().is_empty(), "{:?}", fx.stray_files());
}

#[test]
fn symlink_escapes_are_refused_and_nothing_is_written_through_them() {
    for target in ["/etc", "../..", "sub/../../x"] {
        let fx = Fixture::new();
        let archive = tar_gz(&[
            link("evil", EntryType::Symlink, target),
            file("evil/passwd", b"pwned"),
        ]);
        let err = fx.stage(&archive, "otelcol").unwrap_err();
        assert!(
            matches!(err, ArchiveError::UnsafeLink { .. }),
            "{target}: {err}"
        );
        assert!(fx.stray_files().is_empty(), "{:?}", fx.stray_files());
    }
}

#[test]
fn hard_link_escapes_are_refused() {
    for target in ["/etc/passwd", "../outside", "missing-file"] {
        let fx = Fixture::new();
        fs::write(fx.dir.path().join("outside"), b"secret").unwrap();
        let archive = tar_gz(&[link("otelcol", EntryType::Link, target)]);
        let err = fx.stage(&archive, "otelcol").unwrap_err();
        assert!(
            matches!(err, ArchiveError::UnsafeLink { .. }),
            "{target}: {err}"
        );
    }
}

#[test]
fn hard_link_inside_the_archive_is_copied() {
    let fx = Fixture::new();
    let archive = tar_gz(&[
        file("bin/otelcol-1", b"binary"),
        link("otelcol", EntryType::Link, "bin/otelcol-1"),
    ]);
    let staged = fx.stage(&archive, "otelcol").unwrap();
    assert_eq!(fs::read(staged.path).unwrap(), b"binary");
}

#[test]
fn device_files_and_fifos_are_refused() {
    for kind in [EntryType::Char, EntryType::Block, EntryType::Fifo] {
        let fx = Fixture::new();
        let archive = tar_gz(&[Entry {
            path: "dev",
            kind,
            data: b"",
            link: None,
            mode: 0o600,
        }]);
        let err = fx.stage(&archive, "otelcol").unwrap_err();
        assert!(
            matches!(err, ArchiveError::ForbiddenEntry { .. }),
            "{kind:?}: {err}"
        );
    }
}

#[test]
fn gzip_bomb_stops_at_the_unpacked_limit() {
    // 256 MiB of zeros compresses to ~250 KiB; the limit is 4 MiB.
    let fx = Fixture::new();
    let mut tar = Vec::new();
    let mut header = Header::new_gnu();
    header.set_path("otelcol").unwrap();
    header.set_size(256 << 20);
    header.set_mode(0o755);
    header.set_cksum();
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    tar.extend_from_slice(header.as_bytes());
    gz.write_all(&tar).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
    let package = fx.package(&bomb);

    let started = Instant::now();
    let limits = ArchiveLimits::with_max_unpacked_bytes(4 << 20);
    let err = stage_package(&package, &fx.staging(), "otelcol", &limits).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooLarge { limit } if limit == 4 << 20),
        "{err}"
    );
    // Nothing of the refused extraction stays in staging (issue 23, item 5).
    assert!(
        !fx.staging().exists(),
        "staging left behind after a refused bomb"
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn too_many_entries_is_refused() {
    let fx = Fixture::new();
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let entries: Vec<Entry<'_>> = names.iter().map(|n| file(n, b"x")).collect();
    let package = fx.package(&tar_gz(&entries));
    let mut limits = ArchiveLimits::default();
    limits.max_entries = 10;
    let err = stage_package(&package, &fx.staging(), "otelcol", &limits).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooManyEntries { limit: 10 }),
        "{err}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever paths and link targets an archive holds, extraction either fails or leaves every
    /// file inside the staging directory.
    #[test]
    fn nothing_lands_outside_the_staging_dir(
        entries in proptest::collection::vec(
            (
                proptest::sample::select(vec!["a", "b", "..", ".", "/", "/tmp", "a/b", "c"]),
                proptest::sample::select(vec!["a", "..", "b/..", "/", "x", "a/b"]),
                0u8..3,
            ),
            1..6,
        )
    ) {
        let fx = Fixture::new();
        let paths: Vec<String> = entries.iter().map(|(p, _, _)| format!("{p}/f")).collect();
        let archive_entries: Vec<Entry<'_>> = entries
            .iter()
            .zip(&paths)
            .map(|((_, target, kind), path)| match kind {
                0 => file(path, b"data"),
                1 => link(path, EntryType::Symlink, target),
                _ => link(path, EntryType::Link, target),
            })
            .collect();
        let _ = fx.stage(&tar_gz(&archive_entries), "f");
        prop_assert!(fx.stray_files().is_empty(), "{:?}", fx.stray_files());
    }
}
