//! The self-checking file format shared by the journal files: a header line
//! `opamp-<kind> v1 <sha256 of the rest>`, then JSON; replaced atomically.

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::JournalError;
use crate::storage;

fn header_prefix(kind: &str) -> String {
    format!("opamp-{kind} v1 ")
}

pub(crate) fn save_checked<T: Serialize>(
    path: &Path,
    kind: &str,
    value: &T,
) -> Result<(), JournalError> {
    let body = serde_json::to_vec_pretty(value).map_err(|err| JournalError::Io {
        action: "encode",
        path: path.to_path_buf(),
        source: io::Error::other(err),
    })?;
    let mut bytes = header_prefix(kind).into_bytes();
    bytes.extend_from_slice(hex::encode(Sha256::digest(&body)).as_bytes());
    bytes.push(b'\n');
    bytes.extend_from_slice(&body);
    storage::write_atomic(path, &bytes).map_err(|source| JournalError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn load_checked<T: DeserializeOwned>(
    path: &Path,
    kind: &str,
) -> Result<Option<T>, JournalError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(JournalError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let corrupt = |reason: String| JournalError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| corrupt("no header line".into()))?;
    let (header, body) = (&bytes[..newline], &bytes[newline + 1..]);
    let header = std::str::from_utf8(header).map_err(|_| corrupt("header is not UTF-8".into()))?;
    let expected = header
        .strip_prefix(&header_prefix(kind))
        .ok_or_else(|| corrupt(format!("header {header:?} is not opamp-{kind} v1")))?;
    let actual = hex::encode(Sha256::digest(body));
    if expected != actual {
        return Err(corrupt(format!(
            "checksum mismatch (header {expected}, content {actual})"
        )));
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|err| corrupt(format!("invalid content: {err}")))
}

pub(crate) fn quarantine(path: &Path) -> Result<PathBuf, JournalError> {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".corrupt");
    let target = path.with_file_name(name);
    std::fs::rename(path, &target).map_err(|source| JournalError::Io {
        action: "quarantine",
        path: path.to_path_buf(),
        source,
    })?;
    tracing::warn!(from = %path.display(), to = %target.display(), "moved corrupt file aside");
    Ok(target)
}
