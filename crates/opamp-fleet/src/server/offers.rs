//! Building an agent's `PackagesAvailable` from the versions the rollouts want it to have.

use std::collections::BTreeMap;

use opamp_packages::{ContentHash, OfferedPackage, PackageName, PackageOffer};
use opamp_proto::v1;

use crate::FleetError;
use crate::catalog::Catalog;

/// Where offers point agents to, and what they must send to download.
#[derive(Debug, Clone)]
pub(crate) struct OfferSettings {
    /// `<public_url>/packages` without a trailing slash.
    pub(crate) download_base: String,
    /// Sent as `Authorization: Bearer` with each download when set.
    pub(crate) download_token: Option<String>,
}

/// The offer giving an agent `versions` (package name to version), each a top-level
/// package from the catalog with its URL, content hash and relayed signature.
///
/// # Errors
/// [`FleetError::NotFound`] when a version is not in the catalog; [`FleetError::InvalidPackage`]
/// when a stored entry cannot be offered.
pub(crate) fn build_offer(
    catalog: &Catalog,
    settings: &OfferSettings,
    versions: &BTreeMap<String, String>,
) -> Result<v1::PackagesAvailable, FleetError> {
    let mut offer = PackageOffer::new();
    for (name, version) in versions {
        let entry = catalog
            .get(name, version)?
            .ok_or_else(|| FleetError::NotFound {
                what: format!("package {name} {version} in the catalog"),
            })?;
        let invalid = |reason: String| FleetError::InvalidPackage {
            name: name.clone(),
            version: version.clone(),
            reason,
        };
        let relative = catalog
            .relative_path(&entry)
            .ok_or_else(|| invalid("file outside the catalog directory".into()))?;
        let content_hash =
            ContentHash::from_slice(&entry.content_hash).map_err(|e| invalid(e.to_string()))?;
        let package_name = PackageName::new(name.clone()).map_err(|e| invalid(e.to_string()))?;
        let url = download_url(&settings.download_base, &relative).map_err(invalid)?;
        let mut package =
            OfferedPackage::top_level(package_name, version.clone(), url, content_hash)
                .with_signature(entry.signature.clone());
        if let Some(token) = &settings.download_token {
            package = package.with_header("Authorization", format!("Bearer {token}"));
        }
        offer.add(package).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(offer.build())
}

/// `base` followed by the segments of `relative`, each percent-encoded: names and versions
/// may hold characters (space, `#`, `?`, `%`) that mean something else in a URL.
fn download_url(base: &str, relative: &str) -> Result<String, String> {
    let mut url = url::Url::parse(base).map_err(|e| format!("public URL {base:?}: {e}"))?;
    url.path_segments_mut()
        .map_err(|()| format!("public URL {base:?} cannot have a path"))?
        .pop_if_empty()
        .extend(relative.split('/'));
    Ok(url.into())
}

#[cfg(test)]
mod tests {
    use super::download_url;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(
            download_url(
                "http://127.0.0.1:4320/packages",
                "otelcol/1.0 rc#1?/a%b.tgz"
            )
            .unwrap(),
            "http://127.0.0.1:4320/packages/otelcol/1.0%20rc%231%3F/a%25b.tgz"
        );
        assert_eq!(
            download_url("https://h/base/packages", "p/1.0.0+build/f").unwrap(),
            "https://h/base/packages/p/1.0.0+build/f"
        );
        assert!(download_url("not a url", "p").is_err());
    }
}
