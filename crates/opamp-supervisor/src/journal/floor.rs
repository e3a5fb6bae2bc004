//! The anti-rollback floor: the highest version of each package ever installed, below which the
//! trust policy demands a signed downgrade authorisation.
//!
//! The floor is security state, so it fails closed. It is kept twice: as each package's
//! `highest_version` in `installed-state.json` and in its own file, `rollback-floor.json`. Either
//! valid copy is enough (the higher value wins). When neither can be read, or a stored floor is
//! not a version, the floor is [`FloorUnknown`] and every install of the package is refused until
//! an operator sets it again (`opamp supervisor reset-rollback-floor`); that state is written to
//! the floor file itself, so a restart does not forget it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A floor version, read with the one version parser (`None`: not a version, which leaves
/// the floor unknown).
fn parse_floor_version(version: &str) -> Option<semver::Version> {
    opamp_packages::parse_version(version).ok()
}

/// The floor of every package, as loaded from the two copies.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RollbackFloor {
    /// Highest installed version per package, as text (always a parsable version when written
    /// by this crate; anything else reads as unknown).
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
    /// Set when the floor could not be recovered: why. Every package's floor is unknown then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown: Option<String>,
}

/// The floor of a package cannot be known; installs are refused until an operator resets it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the anti-rollback floor of {package} is unknown ({reason}); no version is installed until \
     an operator sets it with `opamp supervisor reset-rollback-floor`"
)]
#[non_exhaustive]
pub struct FloorUnknown {
    /// The package.
    pub package: String,
    /// Why the floor is unknown.
    pub reason: String,
}

impl RollbackFloor {
    /// A floor that is unknown for every package, for `reason`.
    pub fn unknown(reason: impl Into<String>) -> Self {
        Self {
            versions: BTreeMap::new(),
            unknown: Some(reason.into()),
        }
    }

    /// The floor of `package`: `Ok(None)` when nothing was ever installed through a signed
    /// offer.
    ///
    /// # Errors
    /// [`FloorUnknown`] when the floor could not be recovered or the stored value is not a
    /// version: the caller must refuse the install.
    pub fn for_package(&self, package: &str) -> Result<Option<semver::Version>, FloorUnknown> {
        if let Some(reason) = &self.unknown {
            return Err(FloorUnknown {
                package: package.to_owned(),
                reason: reason.clone(),
            });
        }
        match self.versions.get(package) {
            None => Ok(None),
            Some(text) => parse_floor_version(text)
                .map(Some)
                .ok_or_else(|| FloorUnknown {
                    package: package.to_owned(),
                    reason: format!("the stored floor {text:?} is not a version"),
                }),
        }
    }

    /// Raises the floor of `package` to `version` if that is higher. A version that does not
    /// parse never becomes a floor (signed offers always carry one that does); an unreadable
    /// stored floor stays unreadable.
    pub fn raise(&mut self, package: &str, version: &str) {
        let Some(new) = parse_floor_version(version) else {
            return;
        };
        let higher = match self.versions.get(package) {
            None => true,
            Some(old) => parse_floor_version(old).is_some_and(|old| new > old),
        };
        if higher {
            self.versions.insert(package.to_owned(), version.to_owned());
        }
    }

    /// Merges another copy: the higher floor of each package wins, an unreadable value in
    /// either copy stays unreadable, and an unknown floor stays unknown.
    pub fn merge(&mut self, other: &RollbackFloor) {
        if self.unknown.is_none() {
            self.unknown.clone_from(&other.unknown);
        }
        for (package, theirs) in &other.versions {
            let keep_ours = match (self.versions.get(package), parse_floor_version(theirs)) {
                (None, _) => false,
                // Theirs is unreadable: keep it, so the package fails closed.
                (Some(_), None) => false,
                (Some(ours), Some(theirs)) => {
                    parse_floor_version(ours).is_none_or(|ours| ours >= theirs)
                }
            };
            if !keep_ours {
                self.versions.insert(package.clone(), theirs.clone());
            }
        }
    }

    /// Sets the floor of `package` to exactly `version` and clears an unknown floor (the
    /// operator's reset). The other packages keep theirs.
    pub fn reset(&mut self, package: &str, version: &str) {
        self.unknown = None;
        self.versions.insert(package.to_owned(), version.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_only_rises() {
        let mut floor = RollbackFloor::default();
        assert_eq!(floor.for_package("otelcol"), Ok(None));
        floor.raise("otelcol", "0.100.0");
        floor.raise("otelcol", "0.99.0");
        floor.raise("otelcol", "not-a-version");
        assert_eq!(
            floor.for_package("otelcol"),
            Ok(Some(semver::Version::new(0, 100, 0)))
        );
    }

    #[test]
    fn an_unparsable_stored_floor_fails_closed() {
        let mut floor = RollbackFloor::default();
        floor.versions.insert("otelcol".into(), "banana".into());
        let err = floor.for_package("otelcol").unwrap_err();
        assert!(
            err.to_string().contains("\"banana\" is not a version"),
            "{err}"
        );
        // Installing cannot raise an unreadable floor back into a readable one.
        floor.raise("otelcol", "1.0.0");
        assert!(floor.for_package("otelcol").is_err());
        // Other packages are unaffected.
        assert_eq!(floor.for_package("other"), Ok(None));
    }

    #[test]
    fn an_unknown_floor_refuses_every_package_until_reset() {
        let mut floor = RollbackFloor::unknown("both copies are corrupt");
        assert!(floor.for_package("otelcol").is_err());
        assert!(floor.for_package("anything").is_err());
        floor.reset("otelcol", "1.2.0");
        assert_eq!(
            floor.for_package("otelcol"),
            Ok(Some(semver::Version::new(1, 2, 0)))
        );
    }

    #[test]
    fn merging_keeps_the_higher_and_the_unreadable() {
        let mut a = RollbackFloor::default();
        a.raise("otelcol", "1.0.0");
        a.raise("agent", "2.0.0");
        let mut b = RollbackFloor::default();
        b.raise("otelcol", "1.5.0");
        b.raise("agent", "1.0.0");
        b.versions.insert("odd".into(), "???".into());
        a.merge(&b);
        assert_eq!(a.versions["otelcol"], "1.5.0");
        assert_eq!(a.versions["agent"], "2.0.0");
        assert!(a.for_package("odd").is_err());
        let mut c = RollbackFloor::default();
        c.merge(&RollbackFloor::unknown("lost"));
        assert!(c.for_package("otelcol").is_err());
    }
}
