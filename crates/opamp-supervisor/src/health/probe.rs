//! One HTTP health check: GET the health URL, 2xx means healthy.

use std::time::Duration;

use super::HealthError;
use crate::report::ErrorReport;

/// Longest part of a non-2xx answer's body kept in reasons and errors.
const MAX_BODY_EXCERPT: usize = 200;

/// An HTTP client bound to one health URL.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: reqwest::Client,
    url: String,
}

/// Result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeResult {
    /// The endpoint answered 2xx.
    Healthy {
        /// HTTP status code.
        status: u16,
    },
    /// The endpoint answered, but not 2xx.
    Unhealthy {
        /// HTTP status code.
        status: u16,
        /// Start of the response body, for the error report.
        body: String,
    },
    /// No answer: connection refused, timeout, bad response.
    Unreachable {
        /// What went wrong.
        error: String,
    },
}

impl ProbeResult {
    /// Whether this result means healthy.
    pub fn is_healthy(&self) -> bool {
        matches!(self, ProbeResult::Healthy { .. })
    }

    /// A one-line description for logs and `last_error`.
    pub fn describe(&self, url: &str) -> String {
        match self {
            ProbeResult::Healthy { status } => format!("{url} answered {status}"),
            ProbeResult::Unhealthy { status, body } => {
                format!("health endpoint {url} answered {status}: {body}")
            }
            ProbeResult::Unreachable { error } => {
                format!("health endpoint {url} unreachable: {error}")
            }
        }
    }
}

impl HttpProbe {
    /// A probe of `url` whose requests time out after `timeout`. Proxies are never used: the
    /// health endpoint is local to the collector.
    ///
    /// # Errors
    /// [`HealthError::Client`] when the HTTP client cannot be built.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, HealthError> {
        let url = url.into();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| HealthError::Client {
                url: url.clone(),
                source,
            })?;
        Ok(HttpProbe { client, url })
    }

    /// The URL probed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends one GET and classifies the answer.
    pub async fn check(&self) -> ProbeResult {
        let response = match self.client.get(&self.url).send().await {
            Ok(r) => r,
            Err(e) => {
                return ProbeResult::Unreachable {
                    // reqwest's top-level message is vague ("error sending request"); the causes say why.
                    error: ErrorReport(&e).to_string(),
                };
            }
        };
        let status = response.status().as_u16();
        if response.status().is_success() {
            return ProbeResult::Healthy { status };
        }
        let body = response.text().await.unwrap_or_default();
        let mut body: String = body.trim().chars().take(MAX_BODY_EXCERPT).collect();
        if body.is_empty() {
            body = "(empty body)".into();
        }
        ProbeResult::Unhealthy { status, body }
    }
}
