//! The release side of the demo: a signing key, collector packages and their signatures.
//!
//! Each package is a small launcher script that execs `opamp __test-collector` with a version
//! and a behaviour. Scripts keep the packages a few hundred bytes, so N supervisors download,
//! hash and verify them in no time even with a debug build of `opamp` (a copy of the 180 MB
//! debug binary per agent and version would dominate the demo's run time and disk use).

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use opamp_verify::{ContentHash, DowngradeAuthorisation, ReleaseSigner, Statement};

use crate::failure::{CommandError, Failure, ResultExt as _};

/// The package name agents see in `PackagesAvailable`.
pub(crate) const PACKAGE: &str = "otelcol";

/// How long the demo's signatures stay valid.
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// One signed package file ready for the catalog.
#[derive(Debug, Clone)]
pub(crate) struct SignedPackage {
    /// Catalog version (the statement's version).
    pub(crate) version: String,
    /// The file uploaded to the server.
    pub(crate) file: PathBuf,
    /// The release signature relayed to agents.
    pub(crate) signature: Vec<u8>,
}

/// Everything the release side produced.
#[derive(Debug)]
pub(crate) struct Release {
    /// The public key file supervisors trust.
    pub(crate) public_key: PathBuf,
    /// The good 1.0.0 launcher every agent starts with.
    pub(crate) initial: PathBuf,
    /// Good 1.1.0.
    pub(crate) good: SignedPackage,
    /// Bad 1.2.0: crashes shortly after start.
    pub(crate) bad: SignedPackage,
    /// 1.0.0 signed with a downgrade authorisation (from at most 1.2.0).
    pub(crate) downgrade: SignedPackage,
    /// The 1.0.0 bytes signed WITHOUT a downgrade authorisation.
    pub(crate) unauthorised: SignedPackage,
    /// 1.0.0 signed with a downgrade authorisation; its copy on the server is changed after
    /// it is added.
    pub(crate) tampered: SignedPackage,
}

/// How long after start the bad version crashes.
pub(crate) const BAD_CRASH_AFTER_MS: u64 = 600;

/// Creates the key and the packages under `dir` (`release/`).
pub(crate) fn prepare(dir: &Path, opamp: &Path) -> Result<Release, CommandError> {
    let dir = dir.join("release");
    std::fs::create_dir_all(&dir).or_fail(Failure::Unreachable, || {
        format!("cannot create {}", dir.display())
    })?;
    let signer = ReleaseSigner::generate_ed25519()
        .or_fail(Failure::Operation, || "cannot generate the release key")?;
    let public_key = dir.join("release.pub");
    let public_pem = signer
        .public_key()
        .to_spki_pem()
        .or_fail(Failure::Operation, || "cannot encode the public key")?;
    write(&public_key, public_pem.as_bytes(), 0o644)?;

    let initial = launcher(&dir, opamp, "1.0.0", &[])?;
    let good_file = launcher(&dir, opamp, "1.1.0", &[])?;
    let crash = BAD_CRASH_AFTER_MS.to_string();
    let bad_file = launcher(&dir, opamp, "1.2.0", &["--crash-after-ms", &crash])?;
    let allow_from = semver::Version::new(1, 2, 0);

    let good = sign(&signer, &good_file, "1.1.0", None)?;
    let bad = sign(&signer, &bad_file, "1.2.0", None)?;
    let downgrade = sign(&signer, &initial, "1.0.0", Some(&allow_from))?;
    // The catalog keeps one signature per version text, so the two refused 1.0.0 offers carry
    // semver build metadata, which has no effect on version precedence.
    let unauthorised = sign(&signer, &initial, "1.0.0+unauthorised", None)?;
    // Added as signed (the catalog refuses a statement that does not fit the file), then
    // changed in the server's storage: see `scenario::tamper_with_stored_copy`.
    let tampered = sign(&signer, &initial, "1.0.0+tampered", Some(&allow_from))?;

    Ok(Release {
        public_key,
        initial,
        good,
        bad,
        downgrade,
        unauthorised,
        tampered,
    })
}

/// Writes the launcher script of `version` with extra collector `flags`.
fn launcher(
    dir: &Path,
    opamp: &Path,
    version: &str,
    flags: &[&str],
) -> Result<PathBuf, CommandError> {
    let mut command = vec![
        shell_quote(&opamp.to_string_lossy()),
        crate::collector_mode::COLLECTOR_ARG.to_owned(),
        "--set-version".to_owned(),
        version.to_owned(),
    ];
    command.extend(flags.iter().map(|flag| shell_quote(flag)));
    let text = format!(
        "#!/bin/sh\n# opamp demo collector {version}\nexec {} \"$@\"\n",
        command.join(" ")
    );
    let path = dir.join(format!("otelcol-{version}"));
    write(&path, text.as_bytes(), 0o755)?;
    Ok(path)
}

/// Quotes `text` for `/bin/sh` (single quotes; an embedded quote is closed, escaped, reopened).
pub(crate) fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn sign(
    signer: &ReleaseSigner,
    file: &Path,
    version: &str,
    allow_downgrade_from: Option<&semver::Version>,
) -> Result<SignedPackage, CommandError> {
    let bytes = std::fs::read(file).or_fail(Failure::Unreachable, || {
        format!("cannot read {}", file.display())
    })?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    let not_after = SystemTime::now() + SIGNATURE_LIFETIME;
    let mut statement = Statement::new(PACKAGE, version, ContentHash::of(&bytes), size, not_after)
        .or_fail(Failure::Operation, || {
            format!("cannot build the statement of {PACKAGE} {version}")
        })?;
    if let Some(from) = allow_downgrade_from {
        statement = statement.with_downgrade(DowngradeAuthorisation::AllowFromAtMost(from.clone()));
    }
    let signature = signer
        .sign_statement(&statement)
        .or_fail(Failure::Operation, || {
            format!("cannot sign {PACKAGE} {version}")
        })?;
    Ok(SignedPackage {
        version: version.to_owned(),
        file: file.to_owned(),
        signature,
    })
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CommandError> {
    std::fs::write(path, bytes)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)))
        .or_fail(Failure::Unreachable, || {
            format!("cannot write {}", path.display())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("/a b/opamp"), "'/a b/opamp'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
