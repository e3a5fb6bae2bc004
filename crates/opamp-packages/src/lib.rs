#![doc = include_str!("../README.md")]
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
pub use error::{
    InvalidNameReason, NameError, OfferError, PackagesError, StatusError, VersionError,
};
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
pub use version::{MAX_VERSION_LEN, VersionOrder, compare_versions, parse_version};
