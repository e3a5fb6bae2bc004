//! Building `PackagesAvailable` offers (server side).

use std::collections::BTreeMap;

use opamp_proto::v1;

use crate::content_hash::ContentHash;
use crate::error::{OfferError, PackagesError};
use crate::hash::{HASH_LEN, aggregate_of, package_hash};
use crate::name::{PackageKey, PackageName};

/// One package of an offer: what the agent should have, and where to fetch it.
///
/// Addons always have a [`PackageName`]; only a top-level package may use
/// [`PackageKey::UnnamedTopLevel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferedPackage {
    key: PackageKey,
    package_type: v1::PackageType,
    version: String,
    download_url: String,
    content_hash: ContentHash,
    signature: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl OfferedPackage {
    /// A top-level package (the agent itself), named or unnamed.
    #[must_use]
    pub fn top_level(
        key: impl Into<PackageKey>,
        version: impl Into<String>,
        download_url: impl Into<String>,
        content_hash: ContentHash,
    ) -> Self {
        Self::new(
            key.into(),
            v1::PackageType::TopLevel,
            version.into(),
            download_url.into(),
            content_hash,
        )
    }

    /// An addon (plugin) package.
    #[must_use]
    pub fn addon(
        name: PackageName,
        version: impl Into<String>,
        download_url: impl Into<String>,
        content_hash: ContentHash,
    ) -> Self {
        Self::new(
            PackageKey::Named(name),
            v1::PackageType::Addon,
            version.into(),
            download_url.into(),
            content_hash,
        )
    }

    fn new(
        key: PackageKey,
        package_type: v1::PackageType,
        version: String,
        download_url: String,
        content_hash: ContentHash,
    ) -> Self {
        Self {
            key,
            package_type,
            version,
            download_url,
            content_hash,
            signature: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Sets `DownloadableFile.signature` (opaque here; `opamp-verify` defines its formats).
    #[must_use]
    pub fn with_signature(mut self, signature: impl Into<Vec<u8>>) -> Self {
        self.signature = signature.into();
        self
    }

    /// Adds an HTTP header the agent must send when downloading (for example authorisation).
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// The package's key in the offer.
    #[must_use]
    pub fn key(&self) -> &PackageKey {
        &self.key
    }

    /// Top-level or addon.
    #[must_use]
    pub fn package_type(&self) -> v1::PackageType {
        self.package_type
    }

    /// The offered version.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `PackageAvailable` message, with `hash` filled by [`package_hash`].
    #[must_use]
    pub fn to_proto(&self) -> v1::PackageAvailable {
        self.to_proto_and_hash().0
    }

    fn to_proto_and_hash(&self) -> (v1::PackageAvailable, [u8; HASH_LEN]) {
        let headers = (!self.headers.is_empty()).then(|| v1::Headers {
            headers: self
                .headers
                .iter()
                .map(|(key, value)| v1::Header {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        });
        let mut package = v1::PackageAvailable {
            r#type: self.package_type.into(),
            version: self.version.clone(),
            file: Some(v1::DownloadableFile {
                download_url: self.download_url.clone(),
                content_hash: self.content_hash.as_bytes().to_vec(),
                signature: self.signature.clone(),
                headers,
            }),
            hash: Vec::new(),
        };
        let hash = package_hash(self.key.wire_key(), &package);
        package.hash = hash.to_vec();
        (package, hash)
    }
}

/// Builder for a `PackagesAvailable` message with one or many packages.
///
/// Fills every `PackageAvailable.hash` and the `all_packages_hash` (see [`crate::hash`]), and
/// refuses offers the specification does not allow: a key offered twice, or an unnamed
/// top-level package next to another top-level package.
///
/// ```
/// use opamp_packages::{ContentHash, OfferedPackage, PackageKey, PackageName, PackageOffer};
///
/// let collector = OfferedPackage::top_level(
///     PackageName::new("otelcol")?,
///     "0.110.0",
///     "https://downloads.example/otelcol_0.110.0_linux_amd64.tar.gz",
///     ContentHash::of(b"collector archive"),
/// )
/// .with_signature(b"signature bytes".to_vec())
/// .with_header("Authorization", "Bearer secret");
/// let addon = OfferedPackage::addon(
///     PackageName::new("geoip-db")?,
///     "2024.10",
///     "https://downloads.example/geoip.mmdb",
///     ContentHash::of(b"database"),
/// );
///
/// let offer = PackageOffer::new().with_package(collector)?.with_package(addon)?.build();
/// assert_eq!(offer.packages.len(), 2);
/// assert_eq!(offer.all_packages_hash, opamp_packages::all_packages_hash(&offer));
/// assert_eq!(offer.packages["otelcol"].hash.len(), 32);
///
/// // A lone top-level package may be unnamed.
/// let unnamed = OfferedPackage::top_level(
///     PackageKey::UnnamedTopLevel,
///     "0.110.0",
///     "https://downloads.example/otelcol",
///     ContentHash::of(b"collector archive"),
/// );
/// assert!(PackageOffer::new().with_package(unnamed)?.build().packages.contains_key(""));
/// # Ok::<(), opamp_packages::PackagesError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageOffer {
    packages: BTreeMap<PackageKey, OfferedPackage>,
}

impl PackageOffer {
    /// An empty offer (valid: it tells the agent to remove every server-installed package).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a package, builder style.
    ///
    /// # Errors
    /// As [`PackageOffer::add`].
    pub fn with_package(mut self, package: OfferedPackage) -> Result<Self, PackagesError> {
        self.add(package)?;
        Ok(self)
    }

    /// Adds a package.
    ///
    /// # Errors
    /// [`OfferError::DuplicatePackage`] if the key is already offered;
    /// [`OfferError::UnnamedTopLevelNotAlone`] if an unnamed top-level package would sit next
    /// to another top-level package.
    pub fn add(&mut self, package: OfferedPackage) -> Result<&mut Self, PackagesError> {
        if self.packages.contains_key(&package.key) {
            return Err(OfferError::DuplicatePackage {
                key: package.key.wire_key().to_owned(),
            }
            .into());
        }
        if package.package_type == v1::PackageType::TopLevel {
            let other_top_level = self
                .packages
                .values()
                .find(|p| p.package_type == v1::PackageType::TopLevel)
                .filter(|other| {
                    package.key == PackageKey::UnnamedTopLevel
                        || other.key == PackageKey::UnnamedTopLevel
                });
            if let Some(other) = other_top_level {
                let named = if other.key == PackageKey::UnnamedTopLevel {
                    &package.key
                } else {
                    &other.key
                };
                return Err(OfferError::UnnamedTopLevelNotAlone {
                    other: named.wire_key().to_owned(),
                }
                .into());
            }
        }
        self.packages.insert(package.key.clone(), package);
        Ok(self)
    }

    /// Number of packages offered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.packages.len()
    }

    /// Whether no package is offered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
    }

    /// The offered packages in key order.
    pub fn packages(&self) -> impl Iterator<Item = &OfferedPackage> {
        self.packages.values()
    }

    /// The `PackagesAvailable` message, every hash filled.
    #[must_use]
    pub fn build(&self) -> v1::PackagesAvailable {
        let mut hashes = Vec::with_capacity(self.packages.len());
        let packages: std::collections::HashMap<String, v1::PackageAvailable> = self
            .packages
            .iter()
            .map(|(key, package)| {
                let (proto, hash) = package.to_proto_and_hash();
                hashes.push((key.wire_key(), hash));
                (key.wire_key().to_owned(), proto)
            })
            .collect();
        let all_packages_hash = aggregate_of(hashes).to_vec();
        tracing::debug!(
            packages = packages.len(),
            all_packages_hash = %hex::encode(&all_packages_hash),
            "built package offer"
        );
        v1::PackagesAvailable {
            packages,
            all_packages_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::all_packages_hash;

    fn name(text: &str) -> PackageName {
        PackageName::new(text).unwrap()
    }

    fn top(key: impl Into<PackageKey>) -> OfferedPackage {
        OfferedPackage::top_level(
            key,
            "1.0.0",
            "https://d.example/a",
            ContentHash::from_bytes([1; 32]),
        )
    }

    fn addon(text: &str) -> OfferedPackage {
        OfferedPackage::addon(
            name(text),
            "1.0.0",
            "https://d.example/b",
            ContentHash::from_bytes([2; 32]),
        )
    }

    #[test]
    fn builds_every_field_and_hash() {
        let offer = PackageOffer::new()
            .with_package(
                top(name("otelcol"))
                    .with_signature(vec![9, 9])
                    .with_header("Authorization", "Bearer t"),
            )
            .unwrap()
            .with_package(addon("plugin"))
            .unwrap()
            .build();

        let collector = &offer.packages["otelcol"];
        assert_eq!(collector.r#type, i32::from(v1::PackageType::TopLevel));
        assert_eq!(collector.version, "1.0.0");
        let file = collector.file.as_ref().unwrap();
        assert_eq!(file.download_url, "https://d.example/a");
        assert_eq!(file.content_hash, vec![1; 32]);
        assert_eq!(file.signature, vec![9, 9]);
        let headers = &file.headers.as_ref().unwrap().headers;
        assert_eq!(headers.len(), 1);
        assert_eq!(
            (headers[0].key.as_str(), headers[0].value.as_str()),
            ("Authorization", "Bearer t")
        );
        assert_eq!(collector.hash, package_hash("otelcol", collector).to_vec());

        let plugin = &offer.packages["plugin"];
        assert_eq!(plugin.r#type, i32::from(v1::PackageType::Addon));
        assert!(plugin.file.as_ref().unwrap().headers.is_none());
        assert_eq!(offer.all_packages_hash, all_packages_hash(&offer).to_vec());
    }

    #[test]
    fn empty_offer_still_has_an_aggregate_hash() {
        let offer = PackageOffer::new().build();
        assert!(offer.packages.is_empty());
        assert_eq!(offer.all_packages_hash, all_packages_hash(&offer).to_vec());
    }

    #[test]
    fn refuses_duplicate_keys() {
        let error = PackageOffer::new()
            .with_package(addon("a"))
            .unwrap()
            .with_package(top(name("a")))
            .unwrap_err();
        assert_eq!(
            error,
            PackagesError::Offer(OfferError::DuplicatePackage { key: "a".into() })
        );
    }

    #[test]
    fn unnamed_top_level_must_be_the_only_top_level() {
        let error = PackageOffer::new()
            .with_package(top(PackageKey::UnnamedTopLevel))
            .unwrap()
            .with_package(top(name("second")))
            .unwrap_err();
        assert_eq!(
            error,
            PackagesError::Offer(OfferError::UnnamedTopLevelNotAlone {
                other: "second".into()
            })
        );
        let error = PackageOffer::new()
            .with_package(top(name("first")))
            .unwrap()
            .with_package(top(PackageKey::UnnamedTopLevel))
            .unwrap_err();
        assert_eq!(
            error,
            PackagesError::Offer(OfferError::UnnamedTopLevelNotAlone {
                other: "first".into()
            })
        );
    }

    #[test]
    fn unnamed_top_level_may_have_addons_and_named_top_levels_may_be_many() {
        let offer = PackageOffer::new()
            .with_package(top(PackageKey::UnnamedTopLevel))
            .unwrap()
            .with_package(addon("plugin"))
            .unwrap();
        assert_eq!(offer.len(), 2);
        let offer = PackageOffer::new()
            .with_package(top(name("a")))
            .unwrap()
            .with_package(top(name("b")))
            .unwrap();
        assert_eq!(offer.build().packages.len(), 2);
    }
}
