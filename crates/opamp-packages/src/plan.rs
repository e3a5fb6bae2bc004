//! Agent-side sync planning: what to do with a `PackagesAvailable` offer.
//!
//! [`plan_sync`] follows the download procedure of the specification (v0.18.0, "Downloading
//! Packages"): compare the aggregate hash first, then each package hash, then the file's content
//! hash, and remove what is no longer offered. It only decides; downloading, verifying and
//! installing belong to the caller, and whether a downgrade or an unordered replacement may
//! happen is decided by the signed trust policy of `opamp-verify`.

use std::collections::BTreeMap;

use opamp_proto::v1;

use crate::content_hash::ContentHash;
use crate::error::{NameError, OfferError};
use crate::name::{PackageKey, PackageName};
use crate::version::{VersionOrder, compare_versions};

/// A package the agent has installed from an earlier offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    version: String,
    package_hash: Vec<u8>,
    content_hash: ContentHash,
}

impl InstalledPackage {
    /// `package_hash` is the server's `PackageAvailable.hash` stored when the package was
    /// installed (opaque bytes); `content_hash` is the SHA-256 of the installed file.
    #[must_use]
    pub fn new(
        version: impl Into<String>,
        package_hash: impl Into<Vec<u8>>,
        content_hash: ContentHash,
    ) -> Self {
        Self {
            version: version.into(),
            package_hash: package_hash.into(),
            content_hash,
        }
    }

    /// The installed version.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The server-provided package hash recorded at install time.
    #[must_use]
    pub fn package_hash(&self) -> &[u8] {
        &self.package_hash
    }

    /// SHA-256 of the installed file.
    #[must_use]
    pub fn content_hash(&self) -> &ContentHash {
        &self.content_hash
    }
}

/// What the agent has: the packages it installed from offers, and the `all_packages_hash` of
/// the last offer it fully applied.
///
/// List only packages that came from the server: the specification excludes locally installed
/// packages from the aggregate hash, and anything listed here that the next offer omits is
/// planned for removal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstalledPackages {
    packages: BTreeMap<PackageKey, InstalledPackage>,
    last_applied_all_packages_hash: Option<Vec<u8>>,
}

impl InstalledPackages {
    /// Nothing installed, no offer applied yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a package, builder style.
    #[must_use]
    pub fn with_package(mut self, key: impl Into<PackageKey>, package: InstalledPackage) -> Self {
        self.insert(key, package);
        self
    }

    /// Records a package; returns the one it replaces.
    pub fn insert(
        &mut self,
        key: impl Into<PackageKey>,
        package: InstalledPackage,
    ) -> Option<InstalledPackage> {
        self.packages.insert(key.into(), package)
    }

    /// Forgets a package; returns it.
    pub fn remove(&mut self, key: &PackageKey) -> Option<InstalledPackage> {
        self.packages.remove(key)
    }

    /// The package under `key`.
    #[must_use]
    pub fn get(&self, key: &PackageKey) -> Option<&InstalledPackage> {
        self.packages.get(key)
    }

    /// All packages in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&PackageKey, &InstalledPackage)> {
        self.packages.iter()
    }

    /// Sets the `all_packages_hash` of the last offer applied completely, builder style.
    #[must_use]
    pub fn with_last_applied_all_packages_hash(mut self, hash: impl Into<Vec<u8>>) -> Self {
        self.set_last_applied_all_packages_hash(hash);
        self
    }

    /// Sets the `all_packages_hash` of the last offer applied completely.
    pub fn set_last_applied_all_packages_hash(&mut self, hash: impl Into<Vec<u8>>) {
        self.last_applied_all_packages_hash = Some(hash.into());
    }

    /// The `all_packages_hash` of the last offer applied completely, if any.
    #[must_use]
    pub fn last_applied_all_packages_hash(&self) -> Option<&[u8]> {
        self.last_applied_all_packages_hash.as_deref()
    }
}

/// Everything the agent needs to fetch and install one offered package, copied from the offer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PackageTarget {
    /// Top-level or addon.
    pub package_type: v1::PackageType,
    /// Offered version.
    pub version: String,
    /// Where to fetch the file (HTTP GET).
    pub download_url: String,
    /// SHA-256 the downloaded file must have.
    pub content_hash: ContentHash,
    /// Signature bytes, for `opamp-verify`.
    pub signature: Vec<u8>,
    /// HTTP headers to send with the download, in offer order.
    pub headers: Vec<(String, String)>,
    /// The server's package hash, to record once installed.
    pub package_hash: Vec<u8>,
}

/// What to do with one package.
///
/// [`PackageAction::Downgrade`] and [`PackageAction::Replace`] must only be carried out when
/// the trust policy (`opamp-verify`) authorises them; the planner only names them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PackageAction {
    /// Already installed as offered (same package hash, or same version and content hash).
    /// Callers should still record `target.package_hash`, which may have changed for reasons
    /// that need no download (for example a new download URL).
    NothingToDo {
        /// The offer.
        target: PackageTarget,
    },
    /// Not installed yet.
    Install {
        /// The offer.
        target: PackageTarget,
    },
    /// The offer has a higher semver version.
    Upgrade {
        /// Installed version.
        from: String,
        /// The offer.
        target: PackageTarget,
    },
    /// The offer has a lower semver version: only with a signed downgrade authorisation.
    Downgrade {
        /// Installed version.
        from: String,
        /// The offer.
        target: PackageTarget,
    },
    /// The versions cannot be ordered (not both semver): only when signed policy allows.
    Replace {
        /// Installed version.
        from: String,
        /// The offer.
        target: PackageTarget,
    },
    /// Same version, but the offered file has a different content hash.
    Redownload {
        /// Content hash of the installed file.
        installed_content_hash: ContentHash,
        /// The offer.
        target: PackageTarget,
    },
    /// Installed but no longer offered.
    Remove {
        /// Installed version.
        installed_version: String,
    },
}

impl PackageAction {
    /// The offer behind this action (every action except [`PackageAction::Remove`]).
    #[must_use]
    pub fn target(&self) -> Option<&PackageTarget> {
        match self {
            Self::NothingToDo { target }
            | Self::Install { target }
            | Self::Upgrade { target, .. }
            | Self::Downgrade { target, .. }
            | Self::Replace { target, .. }
            | Self::Redownload { target, .. } => Some(target),
            Self::Remove { .. } => None,
        }
    }

    /// Whether the agent has to change anything on disk.
    #[must_use]
    pub fn changes_something(&self) -> bool {
        !matches!(self, Self::NothingToDo { .. })
    }
}

/// One package's planned action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPackage {
    /// Which package.
    pub key: PackageKey,
    /// What to do.
    pub action: PackageAction,
}

/// Why an offered package was left out of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectionReason {
    /// The name cannot be used as a file name.
    InvalidName(NameError),
    /// The name is empty but the package is an addon (only a top-level package may be unnamed).
    UnnamedAddon,
    /// The name is empty but the offer has other top-level packages.
    UnnamedTopLevelNotAlone,
    /// `type` is not a known `PackageType`.
    UnknownType {
        /// The unknown enum number.
        value: i32,
    },
    /// `file` is missing.
    MissingFile,
    /// `file.download_url` is empty.
    MissingDownloadUrl,
    /// `file.content_hash` is not a SHA-256 digest.
    BadContentHash(OfferError),
}

/// An offered package the planner refused; the rest of the offer is still planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedPackage {
    /// The key as offered, cut to 64 characters (keys come from the network).
    pub wire_key: String,
    /// Why it was refused.
    pub reason: RejectionReason,
}

/// The result of [`plan_sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncPlan {
    already_applied: bool,
    offered_all_packages_hash: Vec<u8>,
    packages: Vec<PlannedPackage>,
    rejected: Vec<RejectedPackage>,
}

impl SyncPlan {
    /// The offer's `all_packages_hash` equals the last one applied: nothing to do at all
    /// (step 1 of the specification's procedure); [`SyncPlan::packages`] is then empty.
    #[must_use]
    pub fn is_already_applied(&self) -> bool {
        self.already_applied
    }

    /// The offer's `all_packages_hash`: record it as applied once every action succeeded, and
    /// report it as `server_provided_all_packages_hash`.
    #[must_use]
    pub fn offered_all_packages_hash(&self) -> &[u8] {
        &self.offered_all_packages_hash
    }

    /// Per-package actions in key order (offered packages, then removals, interleaved by key).
    #[must_use]
    pub fn packages(&self) -> &[PlannedPackage] {
        &self.packages
    }

    /// Offered packages refused, in wire-key order.
    #[must_use]
    pub fn rejected(&self) -> &[RejectedPackage] {
        &self.rejected
    }

    /// Whether any action changes something on disk.
    #[must_use]
    pub fn has_changes(&self) -> bool {
        self.packages.iter().any(|p| p.action.changes_something())
    }
}

/// Plans how to bring the agent's packages in line with `offer`.
///
/// Never panics and never gives up on the whole offer: a package with an invalid name, type,
/// file or content hash becomes a [`RejectedPackage`] and the others are planned. An installed
/// package whose offer was rejected is left alone (neither updated nor removed).
///
/// For each valid offered package:
/// * not installed: [`PackageAction::Install`];
/// * offered `hash` non-empty and equal to the installed package hash:
///   [`PackageAction::NothingToDo`];
/// * otherwise by [`compare_versions`]: `Newer` is `Upgrade`, `Older` is `Downgrade`,
///   `Unordered` is `Replace`, and `Same` is `Redownload` when the content hashes differ,
///   else `NothingToDo`.
///
/// Installed packages missing from the offer get [`PackageAction::Remove`].
///
/// ```
/// use opamp_packages::{
///     ContentHash, InstalledPackage, InstalledPackages, OfferedPackage, PackageAction,
///     PackageName, PackageOffer, plan_sync,
/// };
///
/// let otelcol = PackageName::new("otelcol")?;
/// let offer = PackageOffer::new()
///     .with_package(OfferedPackage::top_level(
///         otelcol.clone(),
///         "0.110.0",
///         "https://downloads.example/otelcol-0.110.0",
///         ContentHash::of(b"new"),
///     ))?
///     .build();
/// let installed = InstalledPackages::new().with_package(
///     otelcol,
///     InstalledPackage::new("0.109.0", vec![1; 32], ContentHash::of(b"old")),
/// );
///
/// let plan = plan_sync(&offer, &installed);
/// assert!(matches!(
///     &plan.packages()[0].action,
///     PackageAction::Upgrade { from, target } if from == "0.109.0" && target.version == "0.110.0"
/// ));
///
/// // Once applied, the same offer is recognised by its aggregate hash.
/// let installed = installed.with_last_applied_all_packages_hash(offer.all_packages_hash.clone());
/// assert!(plan_sync(&offer, &installed).is_already_applied());
/// # Ok::<(), opamp_packages::PackagesError>(())
/// ```
#[must_use]
pub fn plan_sync(offer: &v1::PackagesAvailable, installed: &InstalledPackages) -> SyncPlan {
    let offered_all_packages_hash = offer.all_packages_hash.clone();
    if !offer.all_packages_hash.is_empty()
        && installed.last_applied_all_packages_hash() == Some(offer.all_packages_hash.as_slice())
    {
        tracing::debug!("package offer already applied (same all_packages_hash)");
        return SyncPlan {
            already_applied: true,
            offered_all_packages_hash,
            packages: Vec::new(),
            rejected: Vec::new(),
        };
    }

    let named_top_levels = offer
        .packages
        .iter()
        .filter(|(key, p)| !key.is_empty() && p.r#type == i32::from(v1::PackageType::TopLevel))
        .count();

    let mut planned: BTreeMap<PackageKey, PackageAction> = BTreeMap::new();
    let mut rejected = Vec::new();
    for (wire_key, offered) in &offer.packages {
        match validate(wire_key, offered, named_top_levels) {
            Ok((key, target)) => {
                let action = decide(installed.get(&key), target);
                planned.insert(key, action);
            }
            Err(reason) => {
                // Keys come from the network: keep logs and the plan bounded.
                let wire_key: String = wire_key.chars().take(64).collect();
                tracing::warn!(package = %wire_key.escape_debug(), ?reason, "rejected offered package");
                rejected.push(RejectedPackage { wire_key, reason });
            }
        }
    }

    for (key, package) in installed.iter() {
        if !offer.packages.contains_key(key.wire_key()) {
            planned.insert(
                key.clone(),
                PackageAction::Remove {
                    installed_version: package.version.clone(),
                },
            );
        }
    }

    rejected.sort_by(|a, b| a.wire_key.cmp(&b.wire_key));
    let plan = SyncPlan {
        already_applied: false,
        offered_all_packages_hash,
        packages: planned
            .into_iter()
            .map(|(key, action)| PlannedPackage { key, action })
            .collect(),
        rejected,
    };
    tracing::debug!(
        packages = plan.packages.len(),
        rejected = plan.rejected.len(),
        changes = plan.has_changes(),
        "planned package sync"
    );
    plan
}

fn validate(
    wire_key: &str,
    offered: &v1::PackageAvailable,
    named_top_levels: usize,
) -> Result<(PackageKey, PackageTarget), RejectionReason> {
    let package_type =
        v1::PackageType::try_from(offered.r#type).map_err(|_| RejectionReason::UnknownType {
            value: offered.r#type,
        })?;
    let key = if wire_key.is_empty() {
        match package_type {
            v1::PackageType::Addon => return Err(RejectionReason::UnnamedAddon),
            v1::PackageType::TopLevel if named_top_levels > 0 => {
                return Err(RejectionReason::UnnamedTopLevelNotAlone);
            }
            v1::PackageType::TopLevel => PackageKey::UnnamedTopLevel,
        }
    } else {
        PackageKey::Named(PackageName::new(wire_key).map_err(RejectionReason::InvalidName)?)
    };
    let file = offered.file.as_ref().ok_or(RejectionReason::MissingFile)?;
    if file.download_url.is_empty() {
        return Err(RejectionReason::MissingDownloadUrl);
    }
    let content_hash =
        ContentHash::from_slice(&file.content_hash).map_err(RejectionReason::BadContentHash)?;
    let headers = file
        .headers
        .as_ref()
        .map(|h| {
            h.headers
                .iter()
                .map(|header| (header.key.clone(), header.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    Ok((
        key,
        PackageTarget {
            package_type,
            version: offered.version.clone(),
            download_url: file.download_url.clone(),
            content_hash,
            signature: file.signature.clone(),
            headers,
            package_hash: offered.hash.clone(),
        },
    ))
}

fn decide(installed: Option<&InstalledPackage>, target: PackageTarget) -> PackageAction {
    let Some(installed) = installed else {
        return PackageAction::Install { target };
    };
    if !target.package_hash.is_empty() && target.package_hash == installed.package_hash {
        return PackageAction::NothingToDo { target };
    }
    let from = installed.version.clone();
    match compare_versions(&installed.version, &target.version) {
        VersionOrder::Newer => PackageAction::Upgrade { from, target },
        VersionOrder::Older => PackageAction::Downgrade { from, target },
        VersionOrder::Unordered => PackageAction::Replace { from, target },
        VersionOrder::Same if target.content_hash != installed.content_hash => {
            PackageAction::Redownload {
                installed_content_hash: installed.content_hash,
                target,
            }
        }
        VersionOrder::Same => PackageAction::NothingToDo { target },
    }
}

#[cfg(test)]
mod tests;
