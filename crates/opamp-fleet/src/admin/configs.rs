//! The config catalog in the admin API: `GET` and `POST /api/v1/configs`.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::routes::{AdminState, Answer, read};
use super::types::ApiError;
use crate::FleetError;
use crate::config_catalog::ConfigCatalog;
use crate::store::{ConfigEntry, ConfigFile};
use crate::time::Timestamp;

/// One file of a [`ConfigUpload`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConfigFileUpload {
    /// The config-map key agents see (for example `collector.yaml`).
    pub name: String,
    /// Content type (for example `text/yaml`).
    #[serde(default)]
    pub content_type: String,
    /// Standard base64 of the file's bytes.
    pub body: String,
}

impl ConfigFileUpload {
    /// A file from its bytes.
    #[must_use]
    pub fn new(name: impl Into<String>, content_type: impl Into<String>, body: &[u8]) -> Self {
        ConfigFileUpload {
            name: name.into(),
            content_type: content_type.into(),
            body: base64::engine::general_purpose::STANDARD.encode(body),
        }
    }
}

/// `POST /api/v1/configs`: a config version to add to the config catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConfigUpload {
    /// Config name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// The files (at least one).
    pub files: Vec<ConfigFileUpload>,
    /// Standard base64 of the signature envelope delivered as `opamp.signature`; empty for none.
    #[serde(default)]
    pub signature: String,
}

impl ConfigUpload {
    /// An unsigned upload of `files`.
    #[must_use]
    pub fn new(
        name: impl Into<String>,
        version: impl Into<String>,
        files: Vec<ConfigFileUpload>,
    ) -> Self {
        ConfigUpload {
            name: name.into(),
            version: version.into(),
            files,
            signature: String::new(),
        }
    }

    /// Sets the signature envelope.
    #[must_use]
    pub fn signature(mut self, signature: &[u8]) -> Self {
        self.signature = base64::engine::general_purpose::STANDARD.encode(signature);
        self
    }
}

/// A file of a [`ConfigView`] (its body left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigFileView {
    /// Config-map key.
    pub name: String,
    /// Content type.
    pub content_type: String,
    /// Body size in bytes.
    pub size: u64,
}

/// A config version as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConfigView {
    /// Config name.
    pub name: String,
    /// Version label.
    pub version: String,
    /// Config hash (lower-case hex): `AgentRemoteConfig.config_hash`.
    pub hash: String,
    /// The files.
    pub files: Vec<ConfigFileView>,
    /// Whether it carries a signature.
    pub signed: bool,
    /// When it was added.
    pub added_at: Timestamp,
}

impl ConfigView {
    /// The view of `entry`.
    #[must_use]
    pub fn of(entry: &ConfigEntry) -> Self {
        ConfigView {
            name: entry.name.clone(),
            version: entry.version.clone(),
            hash: hex::encode(&entry.hash),
            files: entry
                .files
                .iter()
                .map(|f| ConfigFileView {
                    name: f.name.clone(),
                    content_type: f.content_type.clone(),
                    size: f.body.len() as u64,
                })
                .collect(),
            signed: !entry.signature.is_empty(),
            added_at: entry.added_at,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/configs", tag = "configs",
    responses(
        (status = 200, description = "the config catalog (`ConfigView`: name, version, hash, files, signed, added_at)", body = [Object]),
        (status = 401, description = "missing or wrong token", body = ApiError),
    ))]
pub(super) async fn configs(State(state): State<AdminState>) -> Answer<Response> {
    let entries = read(&state, |store| store.configs()).await?;
    let views: Vec<ConfigView> = entries.iter().map(ConfigView::of).collect();
    Ok(Json(views).into_response())
}

#[utoipa::path(post, path = "/api/v1/configs", tag = "configs",
    request_body = ConfigUpload,
    responses(
        (status = 201, description = "added (`ConfigView`)", body = Object),
        (status = 400, description = "no files, a reserved or repeated file name, bad base64, too large", body = ApiError),
        (status = 401, description = "missing or wrong token", body = ApiError),
        (status = 403, description = "read-only operator", body = ApiError),
        (status = 409, description = "that version exists with other content", body = ApiError),
    ))]
pub(super) async fn add_config(
    State(state): State<AdminState>,
    Json(upload): Json<ConfigUpload>,
) -> Answer<Response> {
    let invalid = |reason: String| FleetError::InvalidConfig {
        name: upload.name.clone(),
        version: upload.version.clone(),
        reason,
    };
    let base64 = base64::engine::general_purpose::STANDARD;
    let signature = base64
        .decode(upload.signature.as_bytes())
        .map_err(|e| invalid(format!("signature is not base64: {e}")))?;
    let mut files = Vec::with_capacity(upload.files.len());
    for file in &upload.files {
        let body = base64
            .decode(file.body.as_bytes())
            .map_err(|e| invalid(format!("file {} is not base64: {e}", file.name)))?;
        files.push(ConfigFile::new(
            file.name.clone(),
            file.content_type.clone(),
            body,
        ));
    }
    let catalog = ConfigCatalog::new(state.store.clone());
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let entry = tokio::task::spawn_blocking(move || {
        catalog.add(&upload.name, &upload.version, files, signature, now)
    })
    .await
    .map_err(|_| FleetError::Stopped)??;
    tracing::info!(name = %entry.name, version = %entry.version, hash = %hex::encode(&entry.hash), "config added");
    Ok((StatusCode::CREATED, Json(ConfigView::of(&entry))).into_response())
}
