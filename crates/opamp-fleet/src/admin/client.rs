//! A typed client of the admin API (what `opamp rollout ...` and `opamp agents list` use).

use std::path::Path;

use base64::Engine as _;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::agents::{AgentView, RestartReport, RestartRequest};
use super::configs::{ConfigUpload, ConfigView};
use super::types::{AbortRequest, ApiError, RolloutRequest, RolloutUpdate, RolloutView};
use super::views::{AgentSummary, AuditEntry, PackageView, RolloutListItem};
use crate::FleetError;

/// Talks to a fleet server's admin API with a bearer token.
///
/// # Example
/// ```no_run
/// use opamp_fleet::admin::{AdminClient, RolloutRequest};
///
/// # async fn run() -> Result<(), opamp_fleet::FleetError> {
/// let client = AdminClient::new("http://127.0.0.1:4321", "secret")?;
/// let mut request = RolloutRequest::new("otelcol-contrib", "0.115.0");
/// request.selector = "env=prod".into();
/// let rollout = client.create_rollout(&request).await?;
/// let mut events = client.rollout_events(&rollout.id.to_string()).await?;
/// while let Some(update) = events.next().await {
///     println!("{}: {:?}", update?.status, rollout.progress);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: url::Url,
    token: String,
}

fn transport_error(error: reqwest::Error) -> FleetError {
    match error.status() {
        Some(status) => FleetError::AdminApi {
            status: Some(status.as_u16()),
            message: error.to_string(),
        },
        // No answer: keep the error as the source so the OS error below it stays visible.
        None => FleetError::AdminUnreachable { source: error },
    }
}

impl AdminClient {
    /// A client of the admin API at `base_url` (for example `http://127.0.0.1:4321`).
    ///
    /// # Errors
    /// [`FleetError::Config`] when the URL does not parse or the HTTP client cannot be built.
    pub fn new(base_url: &str, token: impl Into<String>) -> Result<Self, FleetError> {
        let base = url::Url::parse(base_url).map_err(|e| FleetError::Config {
            reason: format!("admin URL {base_url:?}: {e}"),
        })?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| FleetError::Config {
                reason: format!("building the HTTP client: {e}"),
            })?;
        Ok(AdminClient {
            http,
            base,
            token: token.into(),
        })
    }

    fn url(&self, path: &str) -> Result<url::Url, FleetError> {
        self.base.join(path).map_err(|e| FleetError::Config {
            reason: format!("admin URL path {path:?}: {e}"),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, FleetError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(transport_error)?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = response.bytes().await.unwrap_or_default();
        let message = serde_json::from_slice::<ApiError>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        Err(FleetError::AdminApi {
            status: Some(status),
            message,
        })
    }

    async fn json<T: DeserializeOwned>(response: reqwest::Response) -> Result<T, FleetError> {
        let body = response.bytes().await.map_err(transport_error)?;
        serde_json::from_slice(&body).map_err(|e| FleetError::AdminApi {
            status: None,
            message: format!("unexpected answer: {e}"),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, FleetError> {
        let url = self.url(path)?;
        Self::json(self.send(self.http.get(url)).await?).await
    }

    async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, FleetError> {
        let url = self.url(path)?;
        let body = serde_json::to_vec(body).map_err(|e| FleetError::Config {
            reason: format!("encoding the request: {e}"),
        })?;
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        Self::json(self.send(request).await?).await
    }

    /// `GET /api/v1/agents`.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn agents(&self) -> Result<Vec<AgentSummary>, FleetError> {
        self.get("/api/v1/agents").await
    }

    /// A page of at most `limit` agents in uid order, after the uid `after` (the last of the
    /// previous page; `None` for the first). A page shorter than `limit` is the last.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn agents_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AgentSummary>, FleetError> {
        let mut url = self.url("/api/v1/agents")?;
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        if let Some(after) = after {
            url.query_pairs_mut().append_pair("after", after);
        }
        Self::json(self.send(self.http.get(url)).await?).await
    }

    /// One agent with everything it reported (`GET /api/v1/agents/{uid}`).
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (404 for an unknown agent).
    pub async fn agent(&self, uid: &str) -> Result<AgentView, FleetError> {
        let uid: String = url::form_urlencoded::byte_serialize(uid.as_bytes()).collect();
        self.get(&format!("/api/v1/agents/{uid}")).await
    }

    /// Sends the `Restart` command to the connected agents `request` selects
    /// (`POST /api/v1/agents/restart`).
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (422 when none matches that accepts the command).
    pub async fn restart_agents(
        &self,
        request: &RestartRequest,
    ) -> Result<RestartReport, FleetError> {
        self.post("/api/v1/agents/restart", request).await
    }

    /// `GET /api/v1/packages`.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn packages(&self) -> Result<Vec<PackageView>, FleetError> {
        self.get("/api/v1/packages").await
    }

    /// Uploads `file` as `name` `version` with the release `signature`
    /// (`POST /api/v1/packages`), streaming it from disk.
    ///
    /// # Errors
    /// [`FleetError::Io`] when the file cannot be opened; [`FleetError::AdminApi`].
    pub async fn add_package(
        &self,
        file: &Path,
        name: &str,
        version: &str,
        signature: &[u8],
    ) -> Result<PackageView, FleetError> {
        let mut url = self.url("/api/v1/packages")?;
        if let Some(file_name) = file.file_name().and_then(|n| n.to_str()) {
            url.query_pairs_mut().append_pair("file_name", file_name);
        }
        url.query_pairs_mut()
            .append_pair("name", name)
            .append_pair("version", version)
            .append_pair(
                "signature",
                &base64::engine::general_purpose::STANDARD.encode(signature),
            );
        let body = tokio::fs::File::open(file)
            .await
            .map_err(|source| FleetError::Io {
                context: format!("opening {}", file.display()),
                source,
            })?;
        let request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::from(body));
        Self::json(self.send(request).await?).await
    }

    /// `GET /api/v1/configs`: the config catalog.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn configs(&self) -> Result<Vec<ConfigView>, FleetError> {
        self.get("/api/v1/configs").await
    }

    /// Adds a config version (`POST /api/v1/configs`).
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (400 for a bad upload, 409 for changed content).
    pub async fn add_config(&self, upload: &ConfigUpload) -> Result<ConfigView, FleetError> {
        self.post("/api/v1/configs", upload).await
    }

    /// Creates and starts a rollout (`POST /api/v1/rollouts`).
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (409 for a conflicting rollout, with the reason).
    pub async fn create_rollout(
        &self,
        request: &RolloutRequest,
    ) -> Result<RolloutView, FleetError> {
        self.post("/api/v1/rollouts", request).await
    }

    /// `GET /api/v1/rollouts`, newest first.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn rollouts(&self) -> Result<Vec<RolloutListItem>, FleetError> {
        self.get("/api/v1/rollouts").await
    }

    /// `GET /api/v1/rollouts/{id}`.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (404 for an unknown id).
    pub async fn rollout(&self, id: &str) -> Result<RolloutView, FleetError> {
        self.get(&format!("/api/v1/rollouts/{id}")).await
    }

    /// Pauses a rollout.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (409 when it cannot be paused now).
    pub async fn pause(&self, id: &str) -> Result<RolloutView, FleetError> {
        self.post(&format!("/api/v1/rollouts/{id}/pause"), &())
            .await
    }

    /// Creates a one-time enrollment token for one agent (`[agent_identity] mode =
    /// "enrollment"`), valid for `ttl` (one day when `None`). The token is shown only here.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (409 when the server is not in enrollment mode, 403 for a
    /// read-only operator).
    pub async fn create_enrollment_token(
        &self,
        ttl: Option<std::time::Duration>,
    ) -> Result<super::EnrollmentToken, FleetError> {
        let request = super::EnrollmentTokenRequest { ttl };
        self.post("/api/v1/enrollment-tokens", &request).await
    }

    /// Resumes a paused rollout.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn resume(&self, id: &str) -> Result<RolloutView, FleetError> {
        self.post(&format!("/api/v1/rollouts/{id}/resume"), &())
            .await
    }

    /// Aborts a rollout: every agent already moved is offered its previous version.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn abort(&self, id: &str, reason: &str) -> Result<RolloutView, FleetError> {
        let body = AbortRequest {
            reason: reason.to_owned(),
        };
        self.post(&format!("/api/v1/rollouts/{id}/abort"), &body)
            .await
    }

    /// The audit log (`GET /api/v1/audit`), optionally one rollout's.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn audit(&self, rollout: Option<&str>) -> Result<Vec<AuditEntry>, FleetError> {
        let mut url = self.url("/api/v1/audit")?;
        if let Some(rollout) = rollout {
            url.query_pairs_mut().append_pair("rollout", rollout);
        }
        Self::json(self.send(self.http.get(url)).await?).await
    }

    /// The Prometheus text of `GET /metrics`.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`].
    pub async fn metrics(&self) -> Result<String, FleetError> {
        let url = self.url("/metrics")?;
        let response = self.send(self.http.get(url)).await?;
        response.text().await.map_err(transport_error)
    }

    /// Follows a rollout's progress (`GET /api/v1/rollouts/{id}/events`): the current state
    /// first, then one update per step, ending after a terminal status.
    ///
    /// # Errors
    /// [`FleetError::AdminApi`] (404 for an unknown id).
    pub async fn rollout_events(&self, id: &str) -> Result<RolloutEvents, FleetError> {
        let url = self.url(&format!("/api/v1/rollouts/{id}/events"))?;
        let response = self
            .send(
                self.http
                    .get(url)
                    .header(reqwest::header::ACCEPT, "text/event-stream"),
            )
            .await?;
        Ok(RolloutEvents {
            body: response.bytes_stream().boxed(),
            buffer: Vec::new(),
        })
    }
}

/// The updates of one rollout, read from a Server-Sent Events stream.
pub struct RolloutEvents {
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: Vec<u8>,
}

impl std::fmt::Debug for RolloutEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutEvents").finish_non_exhaustive()
    }
}

impl RolloutEvents {
    /// The next update; `None` when the stream ended (after a terminal status, or when the
    /// server shut down).
    pub async fn next(&mut self) -> Option<Result<RolloutUpdate, FleetError>> {
        loop {
            if let Some(end) = find_blank_line(&self.buffer) {
                let block: Vec<u8> = self.buffer.drain(..end.1).collect();
                let text = String::from_utf8_lossy(&block[..end.0]);
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // keep-alive comment
                }
                return Some(serde_json::from_str(&data.join("\n")).map_err(|e| {
                    FleetError::AdminApi {
                        status: None,
                        message: format!("unexpected event: {e}"),
                    }
                }));
            }
            match self.body.next().await? {
                Ok(chunk) => self.buffer.extend_from_slice(&chunk),
                Err(error) => return Some(Err(transport_error(error))),
            }
        }
    }
}

/// `(end of the event's text, end of the separator)` of the first event in `buffer`.
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::find_blank_line;

    #[test]
    fn events_are_split_at_blank_lines() {
        assert_eq!(find_blank_line(b"data: 1\n\ndata: 2"), Some((7, 9)));
        assert_eq!(find_blank_line(b"data: 1\r\n\r\n"), Some((7, 11)));
        assert_eq!(find_blank_line(b"data: 1\n"), None);
    }
}
