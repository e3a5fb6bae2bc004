//! Variants: a version and a scripted behaviour, embedded as a trailer at the end of the executable.
//!
//! A demo needs "different builds" of the collector without a compiler. A variant build is a copy
//! of this binary with a trailer appended; the binary reads its own trailer at start-up. The
//! trailer layout, from the start of the trailer to the end of the file, is:
//!
//! ```text
//! BEGIN_MAGIC (16 bytes) | JSON of Variant (n bytes) | n as u64 little-endian | END_MAGIC (16 bytes)
//! ```
//!
//! Executable formats ignore bytes past the last section, so the copy still runs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

const BEGIN_MAGIC: &[u8; 16] = b"OTC-VARIANT-BEG\0";
const END_MAGIC: &[u8; 16] = b"OTC-VARIANT-END\0";
/// A trailer larger than this is treated as absent: real variants are a few hundred bytes.
const MAX_TRAILER_JSON: u64 = 64 * 1024;
const FOOTER_LEN: u64 = 8 + END_MAGIC.len() as u64;

/// What a collector build reports and how it misbehaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    /// Version string the collector reports (`--version`, `/version`, start-up log).
    pub version: String,
    /// Scripted failures of this build.
    #[serde(default)]
    pub behaviour: Behaviour,
}

/// Scripted failures, so every supervisor failure path can run against a real process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Behaviour {
    /// Exit with [`EXIT_CODE_CRASH_ON_START`] before serving anything.
    pub crash_on_start: bool,
    /// Exit with [`EXIT_CODE_CRASH_LATER`] this many milliseconds after start.
    pub crash_after_ms: Option<u64>,
    /// Answer health checks with 503 from this many milliseconds after start on.
    pub unhealthy_after_ms: Option<u64>,
    /// Ignore SIGTERM, so only SIGKILL stops the process.
    pub hang_on_sigterm: bool,
}

/// Exit code of a collector told to crash on start.
pub const EXIT_CODE_CRASH_ON_START: i32 = 3;
/// Exit code of a collector told to crash after a delay.
pub const EXIT_CODE_CRASH_LATER: i32 = 4;

impl Variant {
    /// A well-behaved build reporting `version`.
    pub fn healthy(version: impl Into<String>) -> Self {
        Variant {
            version: version.into(),
            behaviour: Behaviour::default(),
        }
    }

    /// The same variant with another behaviour.
    #[must_use]
    pub fn with_behaviour(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }
}

/// Copies the executable `src_exe` to `dst`, appends the trailer for `variant`, and makes `dst`
/// executable (mode 0755).
///
/// A trailer already present in `src_exe` is dropped first, so variants can be built from
/// variants. `dst` is written to a temporary name beside it and renamed into place, so a reader
/// never sees a half-written file.
///
/// # Errors
/// I/O errors reading `src_exe` or writing `dst`; `InvalidInput` when both name the same file.
///
/// # Example
/// ```no_run
/// use opamp_test_collector::{build_variant, Behaviour, Variant};
/// let me = std::env::current_exe()?;
/// let crashing = Variant::healthy("0.2.0").with_behaviour(Behaviour {
///     crash_on_start: true,
///     ..Behaviour::default()
/// });
/// build_variant(&me, std::path::Path::new("/tmp/collector-0.2.0"), &crashing)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn build_variant(src_exe: &Path, dst: &Path, variant: &Variant) -> io::Result<()> {
    if let (Ok(a), Ok(b)) = (src_exe.canonicalize(), dst.canonicalize())
        && a == b
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "variant destination {} is the source executable",
                dst.display()
            ),
        ));
    }
    let mut src = File::open(src_exe)?;
    let payload_len = payload_len(&mut src)?;
    src.seek(SeekFrom::Start(0))?;

    let file_name = dst.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name")
    })?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".partial");
    let tmp = dst.with_file_name(tmp_name);
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    io::copy(&mut (&mut src).take(payload_len), &mut out)?;
    out.write_all(&encode_trailer(variant)?)?;
    out.sync_all()?;
    drop(out);
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
    fs::rename(&tmp, dst)
}

/// Reads the variant trailer of the executable at `path`; `Ok(None)` when it has none.
///
/// # Errors
/// I/O errors, or `InvalidData` when a trailer is present but its JSON is not a [`Variant`].
pub fn read_variant(path: &Path) -> io::Result<Option<Variant>> {
    let mut file = File::open(path)?;
    match trailer_json(&mut file)? {
        None => Ok(None),
        Some(json) => serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
    }
}

fn encode_trailer(variant: &Variant) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(variant).map_err(io::Error::other)?;
    let mut trailer = Vec::with_capacity(json.len() + 40);
    trailer.extend_from_slice(BEGIN_MAGIC);
    trailer.extend_from_slice(&json);
    trailer.extend_from_slice(&(json.len() as u64).to_le_bytes());
    trailer.extend_from_slice(END_MAGIC);
    Ok(trailer)
}

/// Length of the file without its trailer (the whole file when there is none).
fn payload_len(file: &mut File) -> io::Result<u64> {
    let total = file.metadata()?.len();
    Ok(match trailer_json(file)? {
        Some(json) => total - FOOTER_LEN - json.len() as u64 - BEGIN_MAGIC.len() as u64,
        None => total,
    })
}

fn trailer_json(file: &mut File) -> io::Result<Option<Vec<u8>>> {
    let total = file.metadata()?.len();
    if total < FOOTER_LEN + BEGIN_MAGIC.len() as u64 {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(total - FOOTER_LEN))?;
    let mut footer = [0u8; FOOTER_LEN as usize];
    file.read_exact(&mut footer)?;
    let (len_bytes, magic) = footer.split_at(8);
    if magic != END_MAGIC {
        return Ok(None);
    }
    let mut len_buf = [0u8; 8];
    len_buf.copy_from_slice(len_bytes);
    let json_len = u64::from_le_bytes(len_buf);
    let trailer_len = BEGIN_MAGIC.len() as u64 + json_len + FOOTER_LEN;
    if json_len > MAX_TRAILER_JSON || trailer_len > total {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(total - trailer_len))?;
    let mut begin = [0u8; 16];
    file.read_exact(&mut begin)?;
    if &begin != BEGIN_MAGIC {
        return Ok(None);
    }
    let mut json = vec![0u8; json_len as usize];
    file.read_exact(&mut json)?;
    Ok(Some(json))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailer_round_trips_and_rebuild_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"\x7fELF pretend executable body").unwrap();
        assert_eq!(read_variant(&src).unwrap(), None);

        let v1 = dir.path().join("v1");
        let variant = Variant::healthy("1.2.3").with_behaviour(Behaviour {
            crash_after_ms: Some(250),
            ..Behaviour::default()
        });
        build_variant(&src, &v1, &variant).unwrap();
        assert_eq!(read_variant(&v1).unwrap(), Some(variant));
        let mode = fs::metadata(&v1).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let v2 = dir.path().join("v2");
        build_variant(&v1, &v2, &Variant::healthy("2.0.0")).unwrap();
        assert_eq!(read_variant(&v2).unwrap(), Some(Variant::healthy("2.0.0")));
        let body = fs::read(&v2).unwrap();
        assert!(body.starts_with(b"\x7fELF pretend executable body"));
        let expected = b"\x7fELF pretend executable body".len()
            + encode_trailer(&Variant::healthy("2.0.0")).unwrap().len();
        assert_eq!(body.len(), expected, "old trailer must be stripped");
    }

    #[test]
    fn building_onto_the_source_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::write(&src, b"body").unwrap();
        let err = build_variant(&src, &src, &Variant::healthy("1")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(fs::read(&src).unwrap(), b"body");
    }

    #[test]
    fn garbage_after_end_magic_is_not_a_trailer() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let mut bytes = b"body".to_vec();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        bytes.extend_from_slice(END_MAGIC);
        fs::write(&src, &bytes).unwrap();
        assert_eq!(read_variant(&src).unwrap(), None);
    }
}
