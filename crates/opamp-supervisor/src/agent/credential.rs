//! The agent's credential for an OpAMP server that enrolls agents: read at start, written
//! when the server issues it (atomically, readable by the supervisor's user only).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use super::Error;
use crate::storage;

/// Name of the credential file inside `agent.storage_dir`.
pub const AGENT_CREDENTIAL_FILE: &str = "agent_credential";

/// The credential stored in `storage_dir`, if the agent was enrolled.
///
/// # Errors
/// [`Error::Credential`] when the file exists but cannot be read or is empty.
pub fn load(storage_dir: &Path) -> Result<Option<String>, Error> {
    let path = storage_dir.join(AGENT_CREDENTIAL_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => non_empty(&path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(failed(&path, format!("cannot read: {e}"))),
    }
}

/// Reads the enrollment token from `server.enrollment_token_file`.
///
/// # Errors
/// [`Error::Credential`] when the file cannot be read or is empty.
pub fn read_enrollment_token(path: &Path) -> Result<String, Error> {
    let text =
        std::fs::read_to_string(path).map_err(|e| failed(path, format!("cannot read: {e}")))?;
    non_empty(path, &text)
}

/// Stores the credential the server issued: a temp file created with mode 0600, fsynced and
/// renamed over `agent_credential`, then the directory fsynced.
///
/// # Errors
/// [`Error::Credential`] when it cannot be written.
pub fn store(storage_dir: &Path, credential: &str) -> Result<(), Error> {
    let path = storage_dir.join(AGENT_CREDENTIAL_FILE);
    let tmp = storage_dir.join(format!(".{AGENT_CREDENTIAL_FILE}.tmp"));
    let written = (|| {
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{credential}\n").as_bytes())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        storage::sync_dir(storage_dir)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(&path, format!("cannot write: {e}")));
    }
    tracing::info!(path = %path.display(), "stored the agent credential the server issued");
    Ok(())
}

/// The file's content without the surrounding whitespace an editor or `echo` adds.
fn non_empty(path: &Path, text: &str) -> Result<String, Error> {
    let value = text.trim();
    if value.is_empty() {
        return Err(failed(path, "is empty".into()));
    }
    Ok(value.to_owned())
}

fn failed(path: &Path, reason: String) -> Error {
    Error::Credential {
        path: PathBuf::from(path),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_stored_credential_is_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        store(dir.path(), "first").unwrap();
        store(dir.path(), "second").unwrap();
        assert_eq!(load(dir.path()).unwrap().as_deref(), Some("second"));
        let mode = std::fs::metadata(dir.path().join(AGENT_CREDENTIAL_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(AGENT_CREDENTIAL_FILE), "\n").unwrap();
        assert!(load(dir.path()).is_err(), "an empty credential is an error");
    }
}
