//! The one way versions are read ([`parse_version`]) and compared ([`compare_versions`]),
//! used by the signature checks, the supervisor's anti-rollback floor and the fleet server.

use std::cmp::Ordering;

use crate::error::VersionError;

/// Longest version text accepted, in bytes (a version is also a directory name and part of
/// signed statements).
pub const MAX_VERSION_LEN: usize = 128;

/// Parses a package version: [Semantic Versioning 2.0.0](https://semver.org) text, optionally
/// after one leading `v` or `V`, at most [`MAX_VERSION_LEN`] bytes, written canonically (it
/// prints back identically, so two different texts never name the same version and a signed
/// text is the text compared).
///
/// ```
/// use opamp_packages::parse_version;
///
/// assert_eq!(parse_version("v0.110.0").unwrap(), semver::Version::new(0, 110, 0));
/// assert_eq!(parse_version("1.0.0-rc.1+b7").unwrap().pre.as_str(), "rc.1");
/// assert!(parse_version("vv1.0.0").is_err()); // one prefix only
/// assert!(parse_version("1.0").is_err());
/// assert!(parse_version("01.0.0").is_err());
/// ```
///
/// # Errors
/// [`VersionError`] naming the text and why it is not a version.
pub fn parse_version(text: &str) -> Result<semver::Version, VersionError> {
    if text.len() > MAX_VERSION_LEN {
        return Err(VersionError::TooLong {
            len: text.len(),
            max: MAX_VERSION_LEN,
        });
    }
    let bare = text
        .strip_prefix('v')
        .or_else(|| text.strip_prefix('V'))
        .unwrap_or(text);
    let version = semver::Version::parse(bare).map_err(|e| VersionError::NotSemver {
        reason: e.to_string(),
    })?;
    let canonical = version.to_string();
    if canonical != bare {
        return Err(VersionError::NotCanonical { canonical });
    }
    Ok(version)
}

/// The offered version relative to the installed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionOrder {
    /// The offer is newer: an upgrade.
    Newer,
    /// Same version (equal strings, or equal semver precedence).
    Same,
    /// The offer is older: a downgrade.
    Older,
    /// At least one side is not semver and the strings differ: no order is known.
    Unordered,
}

/// Compares `offered` with `installed`.
///
/// Rules, in order:
/// 1. identical strings are [`VersionOrder::Same`];
/// 2. if both parse as [Semantic Versioning 2.0.0](https://semver.org) after removing one
///    leading `v` or `V` (`v0.110.0` is `0.110.0`), they compare by semver precedence: pre-releases
///    sort before their release (`1.0.0-rc.1 < 1.0.0`) and build metadata is ignored
///    (`1.0.0+a` is the same as `1.0.0+b`);
/// 3. otherwise (for example `0.110`, `2024.10.1-nightly_3`, `latest`) they are
///    [`VersionOrder::Unordered`]: nothing says which is newer, so the sync planner proposes a
///    [`PackageAction::Replace`](crate::PackageAction::Replace), which a caller may perform only
///    when its signed trust policy (`opamp-verify`) authorises installing that exact offer.
///
/// ```
/// use opamp_packages::{VersionOrder, compare_versions};
///
/// assert_eq!(compare_versions("0.109.0", "v0.110.0"), VersionOrder::Newer);
/// assert_eq!(compare_versions("1.0.0", "1.0.0-rc.1"), VersionOrder::Older);
/// assert_eq!(compare_versions("1.0.0+build.1", "v1.0.0+build.2"), VersionOrder::Same);
/// assert_eq!(compare_versions("0.110", "0.111"), VersionOrder::Unordered);
/// ```
#[must_use]
pub fn compare_versions(installed: &str, offered: &str) -> VersionOrder {
    if installed == offered {
        return VersionOrder::Same;
    }
    match (parse(installed), parse(offered)) {
        (Some(installed), Some(offered)) => match offered.cmp_precedence(&installed) {
            Ordering::Greater => VersionOrder::Newer,
            Ordering::Equal => VersionOrder::Same,
            Ordering::Less => VersionOrder::Older,
        },
        _ => VersionOrder::Unordered,
    }
}

fn parse(version: &str) -> Option<semver::Version> {
    parse_version(version).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_version_names_why_it_refuses() {
        assert!(matches!(
            parse_version(&"1".repeat(MAX_VERSION_LEN + 1)),
            Err(VersionError::TooLong { .. })
        ));
        assert!(matches!(
            parse_version("V1.2"),
            Err(VersionError::NotSemver { .. })
        ));
        assert_eq!(
            parse_version("V1.2.3").unwrap(),
            semver::Version::new(1, 2, 3)
        );
        assert!(parse_version("").is_err());
        assert!(parse_version("v").is_err());
        assert!(parse_version(" 1.0.0").is_err());
    }

    proptest::proptest! {
        /// Whatever parses prints back as the text after its prefix: one text per version.
        #[test]
        fn parsed_versions_are_canonical(text in "[vV]?[0-9a-z.+-]{0,24}") {
            if let Ok(version) = parse_version(&text) {
                let bare = text.trim_start_matches(['v', 'V']);
                proptest::prop_assert_eq!(version.to_string(), bare);
            }
        }
    }

    #[test]
    fn identical_strings_are_same_even_without_semver() {
        assert_eq!(compare_versions("latest", "latest"), VersionOrder::Same);
        assert_eq!(compare_versions("", ""), VersionOrder::Same);
    }

    #[test]
    fn semver_orders_numerically_not_lexically() {
        assert_eq!(compare_versions("0.9.0", "0.10.0"), VersionOrder::Newer);
        assert_eq!(compare_versions("0.10.0", "0.9.0"), VersionOrder::Older);
        assert_eq!(compare_versions("1.2.3", "1.2.4"), VersionOrder::Newer);
    }

    #[test]
    fn leading_v_is_ignored_on_either_side() {
        assert_eq!(compare_versions("v1.2.3", "1.2.3"), VersionOrder::Same);
        assert_eq!(compare_versions("V1.2.3", "v1.2.4"), VersionOrder::Newer);
        assert_eq!(
            compare_versions("vv1.2.3", "1.2.3"),
            VersionOrder::Unordered
        );
    }

    #[test]
    fn pre_release_sorts_before_release_and_build_metadata_is_ignored() {
        assert_eq!(compare_versions("1.0.0-rc.1", "1.0.0"), VersionOrder::Newer);
        assert_eq!(
            compare_versions("1.0.0-alpha", "1.0.0-beta"),
            VersionOrder::Newer
        );
        assert_eq!(compare_versions("1.0.0+a", "1.0.0+b"), VersionOrder::Same);
    }

    #[test]
    fn anything_not_semver_is_unordered() {
        assert_eq!(compare_versions("0.110", "0.111"), VersionOrder::Unordered);
        assert_eq!(compare_versions("1.0.0", "latest"), VersionOrder::Unordered);
        assert_eq!(compare_versions("", "1.0.0"), VersionOrder::Unordered);
        assert_eq!(compare_versions("01.0.0", "1.0.0"), VersionOrder::Unordered);
    }
}
