//! How an offered version compares with the installed one (rules on [`compare_versions`]).

use std::cmp::Ordering;

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
    let bare = version
        .strip_prefix('v')
        .or_else(|| version.strip_prefix('V'))
        .unwrap_or(version);
    semver::Version::parse(bare).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

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
