//! OpAMP packages: offers, deterministic hashes, agent-side sync plans and typed statuses.
//!
//! This crate is pure logic: no IO, no clock, no async runtime. It covers the package half of
//! OpAMP v0.18.0 ("Packages", "PackagesAvailable", "PackageStatuses"):
//!
//! * [`PackageName`] / [`PackageKey`]: names that are safe as file names, with the lone unnamed
//!   top-level package the specification allows made explicit;
//! * [`PackageOffer`]: server-side builder for `PackagesAvailable`, filling the hashes;
//! * [`package_hash`] / [`all_packages_hash`]: deterministic SHA-256 hashes whose byte layout is
//!   documented in `docs/hashes.md`;
//! * [`plan_sync`]: agent-side decision of what to install, upgrade, downgrade, re-download or
//!   remove for an offer;
//! * [`PackageState`] / [`PackageStatusesBuilder`] / [`parse_package_statuses`]: package statuses
//!   whose field combinations follow the specification's MUST rules by construction.
//!
//! Signature checking and trust policy live in `opamp-verify`; this crate carries signatures as
//! opaque bytes.
//!
//! # Example: one round
//!
//! ```
//! use opamp_packages::{
//!     ContentHash, InstalledPackages, OfferedPackage, PackageAction, PackageName, PackageOffer,
//!     PackageState, PackageStatusesBuilder, ServerOffered, parse_package_statuses, plan_sync,
//! };
//!
//! // Server: offer a collector build.
//! let otelcol = PackageName::new("otelcol")?;
//! let offer = PackageOffer::new()
//!     .with_package(OfferedPackage::top_level(
//!         otelcol.clone(),
//!         "0.110.0",
//!         "https://downloads.example/otelcol_0.110.0_linux_amd64.tar.gz",
//!         ContentHash::digest(b"release archive"),
//!     ))?
//!     .build();
//!
//! // Agent: decide what to do, then report that the install started.
//! let plan = plan_sync(&offer, &InstalledPackages::new());
//! let planned = &plan.packages()[0];
//! let PackageAction::Install { target } = &planned.action else { unreachable!() };
//! let statuses = PackageStatusesBuilder::new(plan.offered_all_packages_hash().to_vec())
//!     .package(
//!         planned.key.clone(),
//!         PackageState::Installing {
//!             has: None,
//!             offered: ServerOffered::new(target.version.clone(), target.package_hash.clone())?,
//!         },
//!     )
//!     .build();
//!
//! // Server: read the report back, strictly.
//! let report = parse_package_statuses(&statuses)?;
//! assert!(matches!(report.packages[&otelcol.into()], PackageState::Installing { .. }));
//! # Ok::<(), opamp_packages::PackagesError>(())
//! ```
#![forbid(unsafe_code)]

mod content_hash;
mod error;
pub mod hash;
mod name;
mod offer;
mod plan;
mod status;
mod version;

pub use content_hash::ContentHash;
pub use error::{InvalidNameReason, NameError, OfferError, PackagesError, StatusError};
pub use hash::{all_packages_hash, all_packages_hash_input, package_hash, package_hash_input};
pub use name::{MAX_NAME_BYTES, PackageKey, PackageName};
pub use offer::{OfferedPackage, PackageOffer};
pub use plan::{
    InstalledPackage, InstalledPackages, PackageAction, PackageTarget, PlannedPackage,
    RejectedPackage, RejectionReason, SyncPlan, plan_sync,
};
pub use status::{
    AgentHas, DownloadProgress, PackageState, PackageStatusesBuilder, ParsedPackageStatuses,
    ServerOffered, parse_package_status, parse_package_statuses,
};
pub use version::{VersionOrder, compare_versions};
