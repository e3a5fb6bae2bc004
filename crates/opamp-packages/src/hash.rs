//! Deterministic `PackageAvailable.hash` and `PackagesAvailable.all_packages_hash`.
//!
//! OpAMP leaves both hashes to the server; agents only store and compare them. Ours are SHA-256
//! over a domain-separated, length-prefixed encoding, so they depend only on the fields an agent
//! acts on, never on map iteration order, process or platform. `docs/hashes.md` gives the layout
//! byte by byte with a worked example (checked by this module's tests):
//!
//! * every variable-length field is written as its length (`u64`, big-endian) then its bytes;
//! * package input = tag `opamp-rs/package-hash/v1`, name, type (4 bytes, big-endian), version,
//!   download URL, content hash, signature, header count (`u64` BE) then each header's key and
//!   value, headers sorted by key bytes then value bytes;
//! * aggregate input = tag `opamp-rs/all-packages-hash/v1`, package count (`u64` BE), then for
//!   each package in ascending byte order of its name: name, package hash.

use opamp_proto::v1;
use sha2::{Digest, Sha256};

/// Domain-separation tag that starts every package hash input.
pub const PACKAGE_HASH_TAG: &str = "opamp-rs/package-hash/v1";

/// Domain-separation tag that starts every aggregate (all packages) hash input.
pub const ALL_PACKAGES_HASH_TAG: &str = "opamp-rs/all-packages-hash/v1";

/// Length in bytes of every hash this module produces (SHA-256).
pub const HASH_LEN: usize = 32;

/// Where encoded bytes go: straight into SHA-256, or into a buffer to show them.
trait ByteSink {
    fn put(&mut self, bytes: &[u8]);

    fn put_u64(&mut self, value: u64) {
        self.put(&value.to_be_bytes());
    }

    /// A variable-length field: length then bytes, so no two field lists encode alike.
    fn put_field(&mut self, bytes: &[u8]) {
        // usize -> u64 is lossless on every platform Rust supports.
        self.put_u64(bytes.len() as u64);
        self.put(bytes);
    }
}

impl ByteSink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

impl ByteSink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

fn encode_package(sink: &mut impl ByteSink, name: &str, package: &v1::PackageAvailable) {
    let file = package.file.as_ref();
    sink.put_field(PACKAGE_HASH_TAG.as_bytes());
    sink.put_field(name.as_bytes());
    // Fixed width: the enum number as a 32-bit big-endian two's complement integer.
    sink.put(&package.r#type.to_be_bytes());
    sink.put_field(package.version.as_bytes());
    sink.put_field(file.map_or(&b""[..], |f| f.download_url.as_bytes()));
    sink.put_field(file.map_or(&b""[..], |f| &f.content_hash));
    sink.put_field(file.map_or(&b""[..], |f| &f.signature));

    let mut headers: Vec<(&str, &str)> = file
        .and_then(|f| f.headers.as_ref())
        .map(|h| {
            h.headers
                .iter()
                .map(|header| (header.key.as_str(), header.value.as_str()))
                .collect()
        })
        .unwrap_or_default();
    headers.sort_unstable();
    sink.put_u64(headers.len() as u64);
    for (key, value) in headers {
        sink.put_field(key.as_bytes());
        sink.put_field(value.as_bytes());
    }
}

fn encode_aggregate<'a>(
    sink: &mut impl ByteSink,
    package_hashes: impl IntoIterator<Item = (&'a str, [u8; HASH_LEN])>,
) {
    let mut sorted: Vec<(&str, [u8; HASH_LEN])> = package_hashes.into_iter().collect();
    // Names are map keys, so unique: an unstable sort is deterministic here.
    sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    sink.put_field(ALL_PACKAGES_HASH_TAG.as_bytes());
    sink.put_u64(sorted.len() as u64);
    for (name, hash) in sorted {
        sink.put_field(name.as_bytes());
        sink.put_field(&hash);
    }
}

/// The package hash for `PackageAvailable.hash`: SHA-256 of [`package_hash_input`].
///
/// Covers the name (the map key, `""` for an unnamed top-level package), type, version,
/// download URL, content hash, signature and download headers. The `hash` field of `package`
/// itself is ignored. A missing `file` encodes like a file whose fields are all empty.
///
/// ```
/// use opamp_packages::package_hash;
/// use opamp_proto::v1;
///
/// let package = v1::PackageAvailable {
///     version: "0.110.0".into(),
///     file: Some(v1::DownloadableFile {
///         download_url: "https://downloads.example/otelcol".into(),
///         content_hash: vec![7; 32],
///         ..Default::default()
///     }),
///     ..Default::default()
/// };
/// let hash = package_hash("otelcol", &package);
/// assert_eq!(hash, package_hash("otelcol", &package.clone()));
/// assert_ne!(hash, package_hash("otelcol-contrib", &package));
/// ```
#[must_use]
pub fn package_hash(name: &str, package: &v1::PackageAvailable) -> [u8; HASH_LEN] {
    let mut hasher = Sha256::new();
    encode_package(&mut hasher, name, package);
    hasher.finalize().into()
}

/// The exact bytes [`package_hash`] feeds to SHA-256 (for documentation, debugging and other
/// implementations).
#[must_use]
pub fn package_hash_input(name: &str, package: &v1::PackageAvailable) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_package(&mut bytes, name, package);
    bytes
}

/// The aggregate hash for `PackagesAvailable.all_packages_hash`: SHA-256 of
/// [`all_packages_hash_input`].
///
/// Each package's hash is recomputed with [`package_hash`]; the `hash` fields and the
/// `all_packages_hash` already in `offer` are ignored, so the result only depends on what the
/// agent acts on. Map order does not matter.
///
/// ```
/// use opamp_packages::{all_packages_hash, package_hash};
/// use opamp_proto::v1;
///
/// let mut offer = v1::PackagesAvailable::default();
/// let empty = all_packages_hash(&offer);
/// offer.packages.insert("otelcol".into(), v1::PackageAvailable::default());
/// assert_ne!(all_packages_hash(&offer), empty);
/// ```
#[must_use]
pub fn all_packages_hash(offer: &v1::PackagesAvailable) -> [u8; HASH_LEN] {
    aggregate_of(
        offer
            .packages
            .iter()
            .map(|(name, package)| (name.as_str(), package_hash(name, package))),
    )
}

/// The exact bytes [`all_packages_hash`] feeds to SHA-256.
#[must_use]
pub fn all_packages_hash_input(offer: &v1::PackagesAvailable) -> Vec<u8> {
    let mut bytes = Vec::new();
    encode_aggregate(
        &mut bytes,
        offer
            .packages
            .iter()
            .map(|(name, package)| (name.as_str(), package_hash(name, package))),
    );
    bytes
}

/// Aggregate over package hashes computed already (the offer builder has them at hand).
pub(crate) fn aggregate_of<'a>(
    package_hashes: impl IntoIterator<Item = (&'a str, [u8; HASH_LEN])>,
) -> [u8; HASH_LEN] {
    let mut hasher = Sha256::new();
    encode_aggregate(&mut hasher, package_hashes);
    hasher.finalize().into()
}

#[cfg(test)]
mod tests;
