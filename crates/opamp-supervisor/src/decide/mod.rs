//! What the supervisor does with a package offer: one pure function, [`decide`].
//!
//! Every choice about an offer is made here and nowhere else: install it, report that it is
//! already installed, report an earlier failure without retrying, refuse it before anything is
//! downloaded (with the reason), leave the install in progress alone or pre-empt it, and what to
//! say about offered packages this supervisor does not install. The function reads no file and
//! no clock (the caller passes what it knows and the time), so it is tested by tables and
//! property tests; the worker only carries out its result, and every status it reports comes
//! from [`StatusReport`], built on `opamp_packages`' typed statuses.
//!
//! ```
//! use std::time::SystemTime;
//! use opamp_proto::v1;
//! use opamp_supervisor::decide::{CollectorDecision, Facts, Running, decide};
//! use opamp_supervisor::journal::{InstalledState, RollbackFloor};
//! use opamp_verify::{KeyRing, TrustPolicy};
//!
//! let running = Running::new("otelcol", "1.1.0", vec![7; 32], Some([1; 32].into()));
//! let offer = v1::PackagesAvailable {
//!     packages: [(
//!         "otelcol".to_owned(),
//!         v1::PackageAvailable {
//!             r#type: v1::PackageType::TopLevel as i32,
//!             version: "1.1.0".into(),
//!             file: Some(v1::DownloadableFile {
//!                 download_url: "https://example.invalid/otelcol".into(),
//!                 content_hash: vec![1; 32],
//!                 ..Default::default()
//!             }),
//!             hash: vec![7; 32],
//!         },
//!     )]
//!     .into(),
//!     all_packages_hash: vec![9; 32],
//! };
//! let (state, floor) = (InstalledState::default(), RollbackFloor::default());
//! let policy = TrustPolicy::new(KeyRing::new());
//! let facts = Facts::new(&running, &state, &floor, &policy, SystemTime::now());
//! // The server sent again what runs: report Installed, do nothing else.
//! let decision = decide(&offer, &facts);
//! assert!(matches!(decision.collector, CollectorDecision::AlreadyInstalled { .. }));
//! ```

mod report;
#[cfg(test)]
pub(crate) mod tests;

use std::time::SystemTime;

use opamp_packages::{
    ContentHash, InstalledPackage, InstalledPackages, PackageAction, PackageKey, RejectionReason,
    plan_sync,
};
use opamp_proto::v1;
use opamp_verify::{ApprovedPackage, PackageToVerify, TrustPolicy, VerificationContext, Verified};

pub use report::StatusReport;

use crate::install::InstallError;
use crate::journal::{InstallStep, InstalledState, RollbackFloor};

/// Most offered packages, besides the collector's, that get an `InstallFailed` status each: a
/// server must not be able to make the agent echo an arbitrarily large report.
pub const MAX_OTHER_STATUSES: usize = 64;

/// Longest offered version echoed back in a status.
const MAX_ECHOED_VERSION: usize = 256;

/// The collector package that runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Running {
    /// Package name (the offer's key, `agent.package_name`, or the executable's name).
    pub name: String,
    /// Version (`agent_has_version`); empty when unknown.
    pub version: String,
    /// The server's package hash of the offer it was installed from (`agent_has_hash`); empty
    /// before the first install through OpAMP.
    pub server_hash: Vec<u8>,
    /// SHA-256 of the package file it came from (or of the executable before the first install).
    pub content_hash: Option<ContentHash>,
}

impl Running {
    /// What runs: `name` at `version`, installed from an offer with `server_hash` (empty if
    /// none) whose file had `content_hash`.
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        server_hash: Vec<u8>,
        content_hash: Option<ContentHash>,
    ) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            server_hash,
            content_hash,
        }
    }

    /// The hash that identifies what runs in `agent_has_hash`: the server's, or for a collector
    /// not installed through OpAMP, the SHA-256 of its executable.
    pub fn has_hash(&self) -> Vec<u8> {
        if self.server_hash.is_empty() {
            self.content_hash
                .map(|h| h.as_bytes().to_vec())
                .unwrap_or_default()
        } else {
            self.server_hash.clone()
        }
    }

    /// The session's view of what is installed (no aggregate hash: [`decide`] plans every
    /// offer in full, so a re-sent offer is recognised package by package).
    pub fn installed_packages(&self) -> InstalledPackages {
        let mut installed = InstalledPackages::new();
        if let (Ok(key), Some(hash)) = (PackageKey::parse(&self.name), self.content_hash) {
            installed = installed.with_package(
                key,
                InstalledPackage::new(&self.version, self.server_hash.clone(), hash),
            );
        }
        installed
    }
}

/// The install being carried out while a new offer arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// The server's package hash of the offer being installed.
    pub offered_hash: Vec<u8>,
    /// The step it has reached.
    pub step: InstallStep,
}

impl InFlight {
    /// An install of the offer with `offered_hash`, at `step`.
    pub fn new(offered_hash: Vec<u8>, step: InstallStep) -> Self {
        Self { offered_hash, step }
    }

    /// Whether the install can still be abandoned: while it downloads, nothing live has changed
    /// and a new install's journal record simply replaces its own.
    pub fn can_be_preempted(&self) -> bool {
        // Verifying hands the file to a staging thread that cannot be called back.
        matches!(self.step, InstallStep::Idle | InstallStep::Downloading)
    }
}

/// Everything [`decide`] looks at besides the offer.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Facts<'a> {
    /// What runs now.
    pub running: &'a Running,
    /// The installed state (failed offers).
    pub installed: &'a InstalledState,
    /// The anti-rollback floor.
    pub floor: &'a RollbackFloor,
    /// `agent.package_name`: the offered package that is this collector. `None`: the offer's
    /// top-level package.
    pub collector_package: Option<&'a str>,
    /// The install in progress, if any.
    pub in_flight: Option<&'a InFlight>,
    /// The trust policy.
    pub policy: &'a TrustPolicy,
    /// The time signatures and statements are checked at.
    pub now: SystemTime,
}

impl<'a> Facts<'a> {
    /// Facts with no configured package name and no install in progress.
    pub fn new(
        running: &'a Running,
        installed: &'a InstalledState,
        floor: &'a RollbackFloor,
        policy: &'a TrustPolicy,
        now: SystemTime,
    ) -> Self {
        Self {
            running,
            installed,
            floor,
            collector_package: None,
            in_flight: None,
            policy,
            now,
        }
    }

    /// Sets `agent.package_name`.
    #[must_use]
    pub fn collector_package(mut self, name: Option<&'a str>) -> Self {
        self.collector_package = name;
        self
    }

    /// Sets the install in progress.
    #[must_use]
    pub fn in_flight(mut self, in_flight: Option<&'a InFlight>) -> Self {
        self.in_flight = in_flight;
        self
    }
}

/// The collector's package in an offer, as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Offered {
    /// The wire key (the package name; empty for the unnamed top-level package).
    pub key: PackageKey,
    /// The name installs are recorded under: the wire key, or the running package's name for
    /// the unnamed top-level package.
    pub name: String,
    /// The offer as received.
    pub available: v1::PackageAvailable,
}

/// What to do about the collector's own package.
#[derive(Debug)]
#[non_exhaustive]
pub enum CollectorDecision {
    /// The offer has no package for this collector (or no longer offers it): keep what runs.
    NotOffered,
    /// What runs is what is offered (same package hash, or same version and file): record the
    /// offer's hash and report `Installed`.
    AlreadyInstalled {
        /// The offer.
        offered: Offered,
    },
    /// This exact offer failed before: report that failure again, do not retry until the
    /// server changes the offer.
    PreviouslyFailed {
        /// The offer.
        offered: Offered,
        /// The original `InstallFailed` message.
        error_message: String,
    },
    /// Refused before anything was downloaded.
    Refused {
        /// The offer.
        offered: Offered,
        /// Why.
        error: InstallError,
        /// Whether to record it as failed so it is not retried until the offer changes (not
        /// for an unknown floor, which an operator can fix without the server changing).
        remember: bool,
    },
    /// Install it.
    Install {
        /// The offer.
        offered: Offered,
        /// The trust policy's approval, which caps the download and checks the file.
        approved: Box<Verified<ApprovedPackage>>,
    },
    /// The offer being installed right now: nothing changes.
    InstallingAlready,
    /// Another install is past the point where it can be abandoned: decide again when it ends.
    AfterCurrentInstall,
}

impl CollectorDecision {
    /// A short name of the decision, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotOffered => "not offered",
            Self::AlreadyInstalled { .. } => "already installed",
            Self::PreviouslyFailed { .. } => "failed before",
            Self::Refused { .. } => "refused",
            Self::Install { .. } => "install",
            Self::InstallingAlready => "installing already",
            Self::AfterCurrentInstall => "after the current install",
        }
    }
}

/// The statuses for an offered package this supervisor does not install.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OtherPackage {
    /// The package.
    pub key: PackageKey,
    /// Offered version.
    pub version: String,
    /// Offered package hash.
    pub hash: Vec<u8>,
    /// Why it is not installed.
    pub reason: String,
}

/// The result of [`decide`]. While an install is in progress, every decision except
/// [`CollectorDecision::InstallingAlready`] and [`CollectorDecision::AfterCurrentInstall`]
/// abandons it (it has not touched the collector yet) and replaces it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Decision {
    /// The offer's `all_packages_hash`.
    pub all_packages_hash: Vec<u8>,
    /// What to do about the collector.
    pub collector: CollectorDecision,
    /// The other offered packages, each with why it is not installed (at most
    /// [`MAX_OTHER_STATUSES`], in name order).
    pub others: Vec<OtherPackage>,
}

impl Decision {
    /// Whether the decision leaves the current report as it is (the offer is already being
    /// installed, or waits for the install in progress).
    pub fn keeps_current_report(&self) -> bool {
        matches!(
            self.collector,
            CollectorDecision::InstallingAlready | CollectorDecision::AfterCurrentInstall
        )
    }
}

/// Decides what to do with `offer`.
///
/// The offer is planned package by package every time (a re-sent offer whose
/// `all_packages_hash` was applied before is recognised by its package hash, so it is reported
/// `Installed` instead of being mistaken for an offer without this collector). In order, for the
/// collector's package: the offer in progress is left alone; what runs is reported installed;
/// an offer that failed before is not retried; an offer that cannot be installed (not top-level,
/// no file, unknown rollback floor, refused by the trust policy) is refused; anything else is
/// installed, pre-empting an install in progress that has not yet stopped the collector.
pub fn decide(offer: &v1::PackagesAvailable, facts: &Facts<'_>) -> Decision {
    let plan = plan_sync(offer, &facts.running.installed_packages());
    let collector_key = collector_key(offer, facts);
    let collector = match &collector_key {
        None => CollectorDecision::NotOffered,
        Some(key) => {
            let action = plan.packages().iter().find(|p| p.key.wire_key() == key);
            let rejected = plan.rejected().iter().find(|r| r.wire_key == *key);
            match (offer.packages.get(key.as_str()), action, rejected) {
                (Some(available), _, Some(rejected)) => match offered(key, available, facts) {
                    Some(offered) => {
                        let error = rejection_error(key, available, &rejected.reason);
                        refused_offer(offered, error)
                    }
                    None => CollectorDecision::NotOffered,
                },
                (Some(available), Some(planned), None) => match offered(key, available, facts) {
                    Some(offered) => collector_decision(offered, &planned.action, facts),
                    None => CollectorDecision::NotOffered,
                },
                _ => CollectorDecision::NotOffered,
            }
        }
    };
    Decision {
        all_packages_hash: offer.all_packages_hash.clone(),
        collector,
        others: other_packages(offer, &plan, collector_key.as_deref(), facts),
    }
}

/// The wire key of the collector's package in `offer`: the configured name, else the one
/// top-level package (named, or the unnamed one).
fn collector_key(offer: &v1::PackagesAvailable, facts: &Facts<'_>) -> Option<String> {
    if let Some(name) = facts.collector_package {
        return offer.packages.contains_key(name).then(|| name.to_owned());
    }
    let top_level = |p: &v1::PackageAvailable| p.r#type == v1::PackageType::TopLevel as i32;
    if offer.packages.get("").is_some_and(top_level) {
        return Some(String::new());
    }
    let mut named: Vec<&String> = offer
        .packages
        .iter()
        .filter(|(_, p)| top_level(p))
        .map(|(key, _)| key)
        .collect();
    named.sort_unstable();
    // Several top-level packages: the one named like what runs, else none can be chosen.
    match named.as_slice() {
        [only] => Some((*only).clone()),
        many => many
            .iter()
            .find(|key| ***key == facts.running.name)
            .map(|key| (*key).clone()),
    }
}

/// The collector's offer; `None` when its key is not a usable package name (the planner
/// rejected it and nothing can be reported under it).
fn offered(key: &str, available: &v1::PackageAvailable, facts: &Facts<'_>) -> Option<Offered> {
    let Ok(parsed) = PackageKey::parse(key) else {
        tracing::warn!(package = %key.escape_debug(), "the collector's package name is invalid");
        return None;
    };
    let name = if key.is_empty() {
        facts.running.name.clone()
    } else {
        key.to_owned()
    };
    Some(Offered {
        key: parsed,
        name,
        available: available.clone(),
    })
}

fn collector_decision(
    offered: Offered,
    action: &PackageAction,
    facts: &Facts<'_>,
) -> CollectorDecision {
    let hash = &offered.available.hash;
    if let Some(in_flight) = facts.in_flight {
        if in_flight.offered_hash == *hash && !hash.is_empty() {
            return CollectorDecision::InstallingAlready;
        }
        if !in_flight.can_be_preempted() {
            return CollectorDecision::AfterCurrentInstall;
        }
    }
    match action {
        PackageAction::NothingToDo { .. } => {
            return CollectorDecision::AlreadyInstalled { offered };
        }
        PackageAction::Remove { .. } => return CollectorDecision::NotOffered,
        _ if runs_already(&offered, facts.running) => {
            return CollectorDecision::AlreadyInstalled { offered };
        }
        _ => {}
    }
    if let Some(failed) = facts.installed.failed_offers.get(&offered.name)
        && failed.offered_hash == *hash
        && !hash.is_empty()
    {
        return CollectorDecision::PreviouslyFailed {
            error_message: failed.error.clone(),
            offered,
        };
    }
    if offered.available.r#type != v1::PackageType::TopLevel as i32 {
        let error = InstallError::NotTopLevel {
            package: offered.name.clone(),
        };
        return refused_offer(offered, error);
    }
    match approve(&offered, facts) {
        Ok(approved) => CollectorDecision::Install {
            offered,
            approved: Box::new(approved),
        },
        Err(error) => refused_offer(offered, error),
    }
}

/// What runs is this offer even where the planner's keys differ (the unnamed top-level package
/// is recorded under the running package's name): the same package hash, or the same version
/// from the same file.
fn runs_already(offered: &Offered, running: &Running) -> bool {
    let available = &offered.available;
    let same_offer = !available.hash.is_empty() && available.hash == running.server_hash;
    let same_file = available
        .file
        .as_ref()
        .zip(running.content_hash)
        .is_some_and(|(file, hash)| ContentHash::from_slice(&file.content_hash) == Ok(hash));
    offered.name == running.name
        && (same_offer || (same_file && available.version == running.version))
}

fn refused_offer(offered: Offered, error: InstallError) -> CollectorDecision {
    // An unknown floor is fixed by an operator, not by a new offer: ask again after that.
    let remember = !matches!(error, InstallError::RollbackFloorUnknown(_));
    CollectorDecision::Refused {
        offered,
        error,
        remember,
    }
}

/// Checks the offer's signature against the trust policy and the rollback floor.
///
/// # Errors
/// The offer has no file, the floor is unknown, or the policy refuses the offer.
pub fn approve(
    offered: &Offered,
    facts: &Facts<'_>,
) -> Result<Verified<ApprovedPackage>, InstallError> {
    let available = &offered.available;
    let file = available
        .file
        .as_ref()
        .ok_or_else(|| InstallError::NoFile {
            package: offered.name.clone(),
            version: available.version.clone(),
        })?;
    let floor = facts
        .floor
        .for_package(&offered.name)
        .map_err(InstallError::RollbackFloorUnknown)?;
    let mut context = VerificationContext::new(facts.now);
    if let Some(floor) = floor {
        context = context.with_highest_installed(floor);
    }
    let offer = PackageToVerify::new(
        &offered.name,
        &available.version,
        &file.content_hash,
        &file.signature,
    );
    facts
        .policy
        .verify_offer(&offer, &context)
        .map_err(|source| InstallError::Verify {
            package: offered.name.clone(),
            version: available.version.clone(),
            source: Box::new(source),
        })
}

fn rejection_error(
    key: &str,
    available: &v1::PackageAvailable,
    reason: &RejectionReason,
) -> InstallError {
    let package = key.to_owned();
    let version = available.version.clone();
    match reason {
        RejectionReason::MissingFile | RejectionReason::MissingDownloadUrl => {
            InstallError::NoFile { package, version }
        }
        other => InstallError::InvalidOffer {
            package,
            reason: rejection_text(other),
        },
    }
}

fn rejection_text(reason: &RejectionReason) -> String {
    match reason {
        RejectionReason::InvalidName(err) => format!("invalid package name: {err}"),
        RejectionReason::UnnamedAddon => "an unnamed package must be top-level".to_owned(),
        RejectionReason::UnnamedTopLevelNotAlone => {
            "an unnamed top-level package must be the only top-level package".to_owned()
        }
        RejectionReason::UnknownType { value } => format!("unknown package type {value}"),
        RejectionReason::MissingFile => "the offer has no file".to_owned(),
        RejectionReason::MissingDownloadUrl => "the offer has no download URL".to_owned(),
        RejectionReason::BadContentHash(err) => format!("bad content hash: {err}"),
        other => format!("{other:?}"),
    }
}

/// Why each other offered package is not installed, bounded and in name order.
fn other_packages(
    offer: &v1::PackagesAvailable,
    plan: &opamp_packages::SyncPlan,
    collector_key: Option<&str>,
    facts: &Facts<'_>,
) -> Vec<OtherPackage> {
    let mut others: Vec<(&String, &v1::PackageAvailable)> = offer
        .packages
        .iter()
        .filter(|(key, _)| !key.is_empty() && Some(key.as_str()) != collector_key)
        .collect();
    others.sort_unstable_by_key(|(key, _)| key.as_str());
    if others.len() > MAX_OTHER_STATUSES {
        tracing::warn!(
            offered = others.len(),
            reported = MAX_OTHER_STATUSES,
            "the offer has more packages than this supervisor reports on"
        );
    }
    let collector = collector_key
        .filter(|key| !key.is_empty())
        .unwrap_or(&facts.running.name);
    others
        .into_iter()
        .filter_map(|(key, available)| {
            let key_parsed = PackageKey::parse(key).ok()?;
            if available.version.len() > MAX_ECHOED_VERSION || available.hash.is_empty() {
                return None;
            }
            let rejected = plan.rejected().iter().find(|r| r.wire_key == *key);
            let reason = match rejected {
                Some(rejected) => format!(
                    "not installed: the offer is invalid: {}",
                    rejection_text(&rejected.reason)
                ),
                None => {
                    let kind = if available.r#type == v1::PackageType::Addon as i32 {
                        "add-on packages are not supported"
                    } else {
                        "it is not this collector's package"
                    };
                    format!(
                        "not installed: this supervisor installs only the collector package \
                         {collector:?}; {kind}"
                    )
                }
            };
            Some(OtherPackage {
                key: key_parsed,
                version: available.version.clone(),
                hash: available.hash.clone(),
                reason,
            })
        })
        .take(MAX_OTHER_STATUSES)
        .collect()
}
