//! Typed package statuses (`PackageStatus` / `PackageStatuses`); rules on [`PackageState`].

use std::collections::{BTreeMap, HashMap};

use opamp_proto::v1;

use crate::error::{PackagesError, StatusError};
use crate::name::PackageKey;

/// The package the agent has: version and hash, both non-empty (`agent_has_*`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentHas {
    version: String,
    hash: Vec<u8>,
}

impl AgentHas {
    /// `hash` is the package hash the server sent with the installed package (or, for a
    /// locally installed package, one the agent chose).
    ///
    /// # Errors
    /// [`StatusError::EmptyField`] if `version` or `hash` is empty: the specification requires
    /// both whenever the agent has the package.
    pub fn new(
        version: impl Into<String>,
        hash: impl Into<Vec<u8>>,
    ) -> Result<Self, PackagesError> {
        let (version, hash) = (version.into(), hash.into());
        if version.is_empty() {
            return Err(StatusError::EmptyField {
                field: "agent_has_version",
            }
            .into());
        }
        if hash.is_empty() {
            return Err(StatusError::EmptyField {
                field: "agent_has_hash",
            }
            .into());
        }
        Ok(Self { version, hash })
    }

    /// Installed version.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Installed package hash.
    #[must_use]
    pub fn hash(&self) -> &[u8] {
        &self.hash
    }
}

/// The offer that started an installation (`server_offered_*`).
///
/// The hash must be non-empty: it identifies the offer. The version may be empty, but only
/// because the offer itself carried no version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerOffered {
    version: String,
    hash: Vec<u8>,
}

impl ServerOffered {
    /// `version` and `hash` are `PackageAvailable.version` and `PackageAvailable.hash`.
    ///
    /// # Errors
    /// [`StatusError::EmptyField`] if `hash` is empty.
    pub fn new(
        version: impl Into<String>,
        hash: impl Into<Vec<u8>>,
    ) -> Result<Self, PackagesError> {
        let hash = hash.into();
        if hash.is_empty() {
            return Err(StatusError::EmptyField {
                field: "server_offered_hash",
            }
            .into());
        }
        Ok(Self {
            version: version.into(),
            hash,
        })
    }

    /// Offered version.
    #[must_use]
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Offered package hash.
    #[must_use]
    pub fn hash(&self) -> &[u8] {
        &self.hash
    }
}

/// Download progress (`download_details`): a percentage within 0..=100 and a finite,
/// non-negative rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownloadProgress {
    percent: f64,
    bytes_per_second: f64,
}

impl DownloadProgress {
    /// Checks and wraps the values.
    ///
    /// # Errors
    /// [`StatusError::InvalidDownloadProgress`] for a percentage outside 0..=100 (or NaN) or a
    /// negative or non-finite rate.
    pub fn new(percent: f64, bytes_per_second: f64) -> Result<Self, PackagesError> {
        let percent_ok = (0.0..=100.0).contains(&percent);
        let rate_ok = bytes_per_second.is_finite() && bytes_per_second >= 0.0;
        if percent_ok && rate_ok {
            Ok(Self {
                percent,
                bytes_per_second,
            })
        } else {
            Err(StatusError::InvalidDownloadProgress {
                percent,
                bytes_per_second,
            }
            .into())
        }
    }

    /// Percentage downloaded, 0..=100.
    #[must_use]
    pub fn percent(&self) -> f64 {
        self.percent
    }

    /// Current download rate.
    #[must_use]
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_per_second
    }
}

/// One package's status, in a form that cannot break the specification's field rules.
///
/// The specification (v0.18.0, "PackageStatus Message") ties fields to situations:
/// `agent_has_version`/`agent_has_hash` are set exactly when the agent has the package;
/// `server_offered_version`/`server_offered_hash` exactly when an offer started the
/// installation (always for `Installing` and `InstallFailed`); `error_message` only with
/// `InstallFailed`; `download_details` only with `Downloading`. [`PackageState`] can only
/// express those combinations, [`PackageState::to_proto`] writes exactly the fields they
/// require, and [`parse_package_status`] turns a received message back into the typed form or
/// says which rule it breaks.
///
/// `has` is the package the agent has (absent when it has none yet, for example on a first
/// install); `offered` is the offer that started the installation.
///
/// ```
/// use opamp_packages::{
///     AgentHas, DownloadProgress, PackageKey, PackageName, PackageState, PackageStatusesBuilder,
///     ServerOffered, parse_package_statuses,
/// };
///
/// let otelcol = PackageKey::from(PackageName::new("otelcol")?);
/// let state = PackageState::Downloading {
///     has: Some(AgentHas::new("0.109.0", vec![1; 32])?),
///     offered: ServerOffered::new("0.110.0", vec![2; 32])?,
///     progress: Some(DownloadProgress::new(42.0, 1_000_000.0)?),
/// };
/// let wire = state.to_proto(&otelcol);
/// assert_eq!(wire.agent_has_version, "0.109.0");
/// assert_eq!(wire.server_offered_version, "0.110.0");
/// assert!(wire.error_message.is_empty());
///
/// let statuses = PackageStatusesBuilder::new(vec![3; 32]).package(otelcol.clone(), state.clone()).build();
/// let parsed = parse_package_statuses(&statuses)?;
/// assert_eq!(parsed.packages[&otelcol], state);
/// # Ok::<(), opamp_packages::PackagesError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PackageState {
    /// Installed and in use. `offered` is `None` for a package installed locally.
    Installed {
        /// The installed package.
        has: AgentHas,
        /// The offer it was installed from, if any.
        offered: Option<ServerOffered>,
    },
    /// Offered; installation will start later.
    InstallPending {
        /// What the agent has now, if anything.
        has: Option<AgentHas>,
        /// The offer.
        offered: ServerOffered,
    },
    /// Being installed.
    Installing {
        /// What the agent has now, if anything.
        has: Option<AgentHas>,
        /// The offer being installed.
        offered: ServerOffered,
    },
    /// Being downloaded.
    Downloading {
        /// What the agent has now, if anything.
        has: Option<AgentHas>,
        /// The offer being downloaded.
        offered: ServerOffered,
        /// Progress, when known.
        progress: Option<DownloadProgress>,
    },
    /// Installation failed; `has` is what the agent kept.
    InstallFailed {
        /// What the agent still has, if anything.
        has: Option<AgentHas>,
        /// The offer that failed.
        offered: ServerOffered,
        /// What went wrong, for operators.
        error_message: String,
    },
}

impl PackageState {
    /// The wire status value.
    #[must_use]
    pub fn status(&self) -> v1::PackageStatusEnum {
        match self {
            Self::Installed { .. } => v1::PackageStatusEnum::Installed,
            Self::InstallPending { .. } => v1::PackageStatusEnum::InstallPending,
            Self::Installing { .. } => v1::PackageStatusEnum::Installing,
            Self::Downloading { .. } => v1::PackageStatusEnum::Downloading,
            Self::InstallFailed { .. } => v1::PackageStatusEnum::InstallFailed,
        }
    }

    /// What the agent has, if anything.
    #[must_use]
    pub fn has(&self) -> Option<&AgentHas> {
        match self {
            Self::Installed { has, .. } => Some(has),
            Self::InstallPending { has, .. }
            | Self::Installing { has, .. }
            | Self::Downloading { has, .. }
            | Self::InstallFailed { has, .. } => has.as_ref(),
        }
    }

    /// The offer behind this state, if any.
    #[must_use]
    pub fn offered(&self) -> Option<&ServerOffered> {
        match self {
            Self::Installed { offered, .. } => offered.as_ref(),
            Self::InstallPending { offered, .. }
            | Self::Installing { offered, .. }
            | Self::Downloading { offered, .. }
            | Self::InstallFailed { offered, .. } => Some(offered),
        }
    }

    /// The `PackageStatus` message for the package under `key`, with exactly the fields this
    /// state requires.
    #[must_use]
    pub fn to_proto(&self, key: &PackageKey) -> v1::PackageStatus {
        let has = self.has();
        let offered = self.offered();
        let (error_message, download_details) = match self {
            Self::InstallFailed { error_message, .. } => (error_message.clone(), None),
            Self::Downloading {
                progress: Some(progress),
                ..
            } => (
                String::new(),
                Some(v1::PackageDownloadDetails {
                    download_percent: progress.percent,
                    download_bytes_per_second: progress.bytes_per_second,
                }),
            ),
            _ => (String::new(), None),
        };
        v1::PackageStatus {
            name: key.wire_key().to_owned(),
            agent_has_version: has.map(|h| h.version.clone()).unwrap_or_default(),
            agent_has_hash: has.map(|h| h.hash.clone()).unwrap_or_default(),
            server_offered_version: offered.map(|o| o.version.clone()).unwrap_or_default(),
            server_offered_hash: offered.map(|o| o.hash.clone()).unwrap_or_default(),
            status: self.status().into(),
            error_message,
            download_details,
        }
    }
}

/// Builds a `PackageStatuses` message from typed states.
///
/// The agent must list every package it has or is processing.
#[derive(Debug, Clone, Default)]
pub struct PackageStatusesBuilder {
    packages: BTreeMap<PackageKey, PackageState>,
    server_provided_all_packages_hash: Vec<u8>,
    error_message: Option<String>,
}

impl PackageStatusesBuilder {
    /// Starts a report; `server_provided_all_packages_hash` is the `all_packages_hash` of the
    /// last offer the agent processed (empty if none).
    #[must_use]
    pub fn new(server_provided_all_packages_hash: impl Into<Vec<u8>>) -> Self {
        Self {
            server_provided_all_packages_hash: server_provided_all_packages_hash.into(),
            ..Self::default()
        }
    }

    /// Sets the state of one package (a later call for the same key replaces the earlier one).
    #[must_use]
    pub fn package(mut self, key: PackageKey, state: PackageState) -> Self {
        self.packages.insert(key, state);
        self
    }

    /// Sets the top-level `error_message`: the offer as a whole could not be processed.
    #[must_use]
    pub fn error_message(mut self, message: impl Into<String>) -> Self {
        self.error_message = Some(message.into());
        self
    }

    /// The `PackageStatuses` message.
    #[must_use]
    pub fn build(self) -> v1::PackageStatuses {
        v1::PackageStatuses {
            packages: self
                .packages
                .iter()
                .map(|(key, state)| (key.wire_key().to_owned(), state.to_proto(key)))
                .collect::<HashMap<_, _>>(),
            server_provided_all_packages_hash: self.server_provided_all_packages_hash,
            error_message: self.error_message.unwrap_or_default(),
        }
    }
}

/// A received `PackageStatuses` message in typed form.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ParsedPackageStatuses {
    /// Every package's state.
    pub packages: BTreeMap<PackageKey, PackageState>,
    /// The `all_packages_hash` of the last offer the agent processed.
    pub server_provided_all_packages_hash: Vec<u8>,
    /// The agent's error about the offer as a whole, if any.
    pub error_message: Option<String>,
}

/// Reads one `PackageStatus` (server side), refusing combinations the specification forbids.
///
/// # Errors
/// A [`StatusError`] naming the rule broken: invalid name, unknown status, half-set
/// version/hash pair, `Installed` without `agent_has_*`, an in-progress or failed status
/// without `server_offered_*`, `error_message` outside `InstallFailed`, `download_details`
/// outside `Downloading`, or invalid progress values.
pub fn parse_package_status(
    status: &v1::PackageStatus,
) -> Result<(PackageKey, PackageState), PackagesError> {
    let name = &status.name;
    let key = PackageKey::parse(name).map_err(StatusError::InvalidName)?;
    let kind =
        v1::PackageStatusEnum::try_from(status.status).map_err(|_| StatusError::UnknownStatus {
            name: name.clone(),
            value: status.status,
        })?;
    let status_name = kind.as_str_name();

    let has = pair(
        name,
        (&status.agent_has_version, "agent_has_version"),
        (&status.agent_has_hash, "agent_has_hash"),
        true,
    )?
    .map(|(version, hash)| AgentHas { version, hash });
    let offered = pair(
        name,
        (&status.server_offered_version, "server_offered_version"),
        (&status.server_offered_hash, "server_offered_hash"),
        false,
    )?
    .map(|(version, hash)| ServerOffered { version, hash });

    if !status.error_message.is_empty() && kind != v1::PackageStatusEnum::InstallFailed {
        return Err(StatusError::UnexpectedErrorMessage {
            name: name.clone(),
            status: status_name,
        }
        .into());
    }
    if status.download_details.is_some() && kind != v1::PackageStatusEnum::Downloading {
        return Err(StatusError::UnexpectedDownloadDetails {
            name: name.clone(),
            status: status_name,
        }
        .into());
    }

    let needs_offer = || StatusError::MissingServerOffered {
        name: name.clone(),
        status: status_name,
    };
    let state = match kind {
        v1::PackageStatusEnum::Installed => PackageState::Installed {
            has: has.ok_or_else(|| StatusError::InstalledWithoutAgentHas { name: name.clone() })?,
            offered,
        },
        v1::PackageStatusEnum::InstallPending => PackageState::InstallPending {
            has,
            offered: offered.ok_or_else(needs_offer)?,
        },
        v1::PackageStatusEnum::Installing => PackageState::Installing {
            has,
            offered: offered.ok_or_else(needs_offer)?,
        },
        v1::PackageStatusEnum::Downloading => PackageState::Downloading {
            has,
            offered: offered.ok_or_else(needs_offer)?,
            progress: status
                .download_details
                .as_ref()
                .map(|d| DownloadProgress::new(d.download_percent, d.download_bytes_per_second))
                .transpose()?,
        },
        v1::PackageStatusEnum::InstallFailed => PackageState::InstallFailed {
            has,
            offered: offered.ok_or_else(needs_offer)?,
            error_message: status.error_message.clone(),
        },
    };
    Ok((key, state))
}

/// Reads a version/hash pair: `None` when both are empty. The hash is what identifies a
/// package, so it may never be missing alone; the version may be missing alone only when
/// `version_required` is false (an offer without a version).
fn pair(
    name: &str,
    (version, version_field): (&String, &'static str),
    (hash, hash_field): (&Vec<u8>, &'static str),
    version_required: bool,
) -> Result<Option<(String, Vec<u8>)>, StatusError> {
    let half_set = |set, missing| StatusError::HalfSetPair {
        name: name.to_owned(),
        set,
        missing,
    };
    match (version.is_empty(), hash.is_empty()) {
        (true, true) => Ok(None),
        (false, false) => Ok(Some((version.clone(), hash.clone()))),
        (false, true) => Err(half_set(version_field, hash_field)),
        (true, false) if version_required => Err(half_set(hash_field, version_field)),
        (true, false) => Ok(Some((String::new(), hash.clone()))),
    }
}

/// Reads a whole `PackageStatuses` message (server side).
///
/// # Errors
/// [`StatusError::KeyNameMismatch`] when a map key differs from its status's `name`, or the
/// first error [`parse_package_status`] reports (in key order, so the result is deterministic).
pub fn parse_package_statuses(
    statuses: &v1::PackageStatuses,
) -> Result<ParsedPackageStatuses, PackagesError> {
    let mut entries: Vec<(&String, &v1::PackageStatus)> = statuses.packages.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut packages = BTreeMap::new();
    for (wire_key, status) in entries {
        if *wire_key != status.name {
            return Err(StatusError::KeyNameMismatch {
                key: wire_key.clone(),
                name: status.name.clone(),
            }
            .into());
        }
        let (key, state) = parse_package_status(status)?;
        packages.insert(key, state);
    }
    Ok(ParsedPackageStatuses {
        packages,
        server_provided_all_packages_hash: statuses.server_provided_all_packages_hash.clone(),
        error_message: (!statuses.error_message.is_empty()).then(|| statuses.error_message.clone()),
    })
}

#[cfg(test)]
mod tests;
