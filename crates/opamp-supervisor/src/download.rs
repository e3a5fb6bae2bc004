//! Resumable, size-capped, hashing HTTP downloads of offered packages.
//!
//! A download writes `downloads/<name>.partial` and remembers the server's validator (ETag or
//! Last-Modified) in `downloads/<name>.meta`. If it is interrupted, the next attempt re-hashes the
//! bytes already on disk and asks only for the rest (`Range` + `If-Range`). The server decides:
//! `206` continues the file, `200` means the file changed (or ranges are unsupported) and the
//! download restarts from zero, `416` means the partial is already complete or is garbage.
//! The finished file is fsynced and renamed to `downloads/<name>.download` before it is returned.
//!
//! Every attempt runs against three clocks ([`DownloadLimits`]): silence longer than the idle
//! timeout, a throughput window below the minimum rate, and the total deadline each end it, and
//! a caller's [`CancellationToken`] ends it at once ([`Downloader::download_cancellable`]). The
//! body is cut at the smallest of the declared length, the trusted expected size (the signed
//! size) and [`DownloadLimits::max_size`], whatever the server declares. Redirects are followed
//! by the downloader itself: the offer's headers go only to the offer's own origin.
//!
//! The SHA-256 computed here is a convenience (early mismatch detection, no second read); the
//! authoritative check is the verification step that follows.
//!
//! ```no_run
//! # async fn demo() -> Result<(), opamp_supervisor::download::DownloadError> {
//! use opamp_supervisor::download::{DownloadLimits, DownloadRequest, Downloader};
//! let downloader = Downloader::new("/var/lib/opamp/downloads", DownloadLimits::default())?;
//! let request = DownloadRequest::new("otelcol", "https://releases.example/otelcol-0.100.0");
//! let file = downloader
//!     .download(&request, |p| println!("{} of {:?} bytes", p.bytes, p.total))
//!     .await?;
//! println!("{} has sha256 {}", file.path.display(), file.sha256());
//! # Ok(()) }
//! ```

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::storage::{self, safe_file_stem};
use opamp_packages::ContentHash;
use opamp_verify::{ContentHasher, HashedContent};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

mod busy;
mod pace;
mod writer;
use pace::{Expired, Pace};
use writer::PartialWriter;

/// Redirects followed for one request at most.
const MAX_REDIRECTS: usize = 10;

/// Limits and timeouts for one [`Downloader`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownloadLimits {
    /// Largest file accepted, in bytes. Default 1 GiB (collector binaries are ~100-300 MB).
    pub max_size: u64,
    /// Time allowed to establish the connection. Default 30 s.
    pub connect_timeout: Duration,
    /// Longest silence allowed between two body chunks (and before the response headers).
    /// Default 60 s.
    pub idle_timeout: Duration,
    /// Minimum interval between two progress callbacks. Default 250 ms.
    pub progress_interval: Duration,
    /// Longest time one attempt may take from request to last byte. Default 1 hour.
    pub total_timeout: Duration,
    /// Slowest average rate accepted over a [`throughput_window`](Self::throughput_window), in
    /// bytes per second; 0 disables the rule. Default 1 KiB/s: a body that trickles (which the
    /// idle timeout never catches) is given up after one window.
    pub min_bytes_per_second: u64,
    /// Window over which [`min_bytes_per_second`](Self::min_bytes_per_second) is measured (at
    /// least 1 s). Default 60 s.
    pub throughput_window: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        Self {
            max_size: 1 << 30,
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            progress_interval: Duration::from_millis(250),
            total_timeout: Duration::from_secs(60 * 60),
            min_bytes_per_second: 1024,
            throughput_window: Duration::from_secs(60),
        }
    }
}

impl DownloadLimits {
    /// Default limits with a different maximum size.
    pub fn with_max_size(max_size: u64) -> Self {
        Self {
            max_size,
            ..Self::default()
        }
    }
}

/// What to download and what to expect.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownloadRequest {
    /// Names the files in the downloads directory (the package name; made file-name safe).
    pub name: String,
    /// `http` or `https` URL.
    pub url: String,
    /// Extra request headers (OpAMP `DownloadableFile.headers`).
    pub headers: Vec<(String, String)>,
    /// Exact size the file must have, when known from a trusted source (e.g. a signed statement).
    pub expected_size: Option<u64>,
    /// SHA-256 the file must have; a mismatch discards the file.
    pub expected_sha256: Option<ContentHash>,
}

impl DownloadRequest {
    /// A request with no extra headers and no expectations.
    pub fn new(name: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            headers: Vec::new(),
            expected_size: None,
            expected_sha256: None,
        }
    }

    /// The request for an OpAMP `DownloadableFile`: its URL, headers, and its `content_hash` as
    /// the expected SHA-256 when it is 32 bytes long.
    pub fn from_downloadable_file(
        name: impl Into<String>,
        file: &opamp_proto::v1::DownloadableFile,
    ) -> Self {
        let mut request = Self::new(name, file.download_url.clone());
        if let Some(headers) = &file.headers {
            request.headers = headers
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.clone()))
                .collect();
        }
        request.expected_sha256 = ContentHash::from_slice(&file.content_hash).ok();
        request
    }

    /// Sets [`Self::expected_size`].
    pub fn with_expected_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// Sets [`Self::expected_sha256`].
    pub fn with_expected_sha256(mut self, sha256: impl Into<ContentHash>) -> Self {
        self.expected_sha256 = Some(sha256.into());
        self
    }

    /// Adds one extra request header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Progress of a running download, for `Downloading` package statuses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownloadProgress {
    /// Bytes on disk, including a resumed prefix.
    pub bytes: u64,
    /// Total size when the server declared it.
    pub total: Option<u64>,
    /// Average transfer rate of this attempt.
    pub bytes_per_second: f64,
}

impl DownloadProgress {
    /// `0..=100` when the total is known.
    pub fn percent(&self) -> Option<f64> {
        self.total.map(|total| {
            if total == 0 {
                100.0
            } else {
                (self.bytes as f64 * 100.0 / total as f64).min(100.0)
            }
        })
    }
}

/// A complete, fsynced download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedFile {
    /// `downloads/<name>.download`.
    pub path: PathBuf,
    /// SHA-256 and size of the whole file as `opamp-verify` computed them while the bytes
    /// streamed to disk: hand it to [`accept_hashed`](opamp_verify::Verified::accept_hashed)
    /// instead of reading the file again.
    pub hashed: HashedContent,
    /// Bytes that came from an earlier, interrupted attempt.
    pub resumed_from: u64,
}

impl DownloadedFile {
    /// SHA-256 of the whole file.
    pub fn sha256(&self) -> ContentHash {
        self.hashed.hash()
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.hashed.len()
    }
}

/// Why a download failed. After `Interrupted`, `Truncated`, `TimedOut`, `TooSlow`,
/// `DeadlineExceeded` and `Cancelled` the partial file is kept and the next attempt of the same
/// URL resumes; after the other errors it is discarded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The request cannot be sent as given (bad URL or header).
    #[error("invalid download request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// No response (connection refused, TLS failure, DNS...).
    #[error("cannot reach {url}")]
    Connect {
        /// The URL requested.
        url: String,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("download server answered HTTP {status} for {url}")]
    HttpStatus {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The connection broke in the middle of the body.
    #[error("download interrupted after {received} bytes")]
    Interrupted {
        /// Bytes on disk so far.
        received: u64,
        /// The client error.
        #[source]
        source: reqwest::Error,
    },
    /// The body ended before the declared length.
    #[error("download truncated: received {received} of {expected} bytes")]
    Truncated {
        /// Bytes on disk.
        received: u64,
        /// Declared size.
        expected: u64,
    },
    /// Nothing arrived for longer than the idle timeout.
    #[error("download stalled: no data for {idle:?} after {received} bytes")]
    TimedOut {
        /// Bytes on disk so far.
        received: u64,
        /// The idle timeout that expired.
        idle: Duration,
    },
    /// A whole throughput window brought less than the minimum rate.
    #[error(
        "download too slow: {measured} bytes/s is below the minimum of {minimum} bytes/s \
         (after {received} bytes)"
    )]
    TooSlow {
        /// Bytes on disk so far.
        received: u64,
        /// Rate measured over the last window.
        measured: u64,
        /// The minimum in force.
        minimum: u64,
    },
    /// The attempt took longer than the total deadline.
    #[error("download took longer than its deadline of {deadline:?} (after {received} bytes)")]
    DeadlineExceeded {
        /// Bytes on disk so far.
        received: u64,
        /// The deadline that expired.
        deadline: Duration,
    },
    /// The caller cancelled the download (e.g. a newer offer replaced it).
    #[error("download cancelled after {received} bytes")]
    Cancelled {
        /// Bytes on disk so far.
        received: u64,
    },
    /// More redirects than the downloader follows.
    #[error("too many redirects (more than {MAX_REDIRECTS}) for {url}")]
    TooManyRedirects {
        /// The URL requested.
        url: String,
    },
    /// The file is (or is declared to be) larger than allowed.
    #[error("download too large: {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size declared or reached.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The server's size differs from the trusted expected size.
    #[error("download size mismatch: expected {expected} bytes, server has {actual}")]
    SizeMismatch {
        /// Trusted size.
        expected: u64,
        /// Size served.
        actual: u64,
    },
    /// The bytes do not have the expected SHA-256.
    #[error("content hash mismatch: expected sha256 {expected}, downloaded file has {actual}")]
    HashMismatch {
        /// Hex of the expected hash.
        expected: String,
        /// Hex of the downloaded file's hash.
        actual: String,
    },
    /// The server's `Content-Range` header is missing, malformed, or not the range asked for.
    #[error("bad Content-Range from download server: {value:?}")]
    BadContentRange {
        /// The header value (empty when missing).
        value: String,
    },
    /// Local file operation failed (disk full, permissions).
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

impl DownloadError {
    /// Whether the partial file was kept and another attempt will resume it.
    pub fn is_resumable(&self) -> bool {
        matches!(
            self,
            Self::Interrupted { .. }
                | Self::Truncated { .. }
                | Self::TimedOut { .. }
                | Self::TooSlow { .. }
                | Self::DeadlineExceeded { .. }
                | Self::Cancelled { .. }
        )
    }
}

/// What the previous attempt learnt about the file, to make a resume safe.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartialMeta {
    url: String,
    /// ETag (preferred) or Last-Modified: what `If-Range` must carry.
    validator: String,
    total: Option<u64>,
}

/// Downloads files into one directory.
#[derive(Debug, Clone)]
pub struct Downloader {
    client: reqwest::Client,
    dir: PathBuf,
    limits: DownloadLimits,
    /// Relative `download_url`s are resolved against this (the OpAMP endpoint).
    base_url: Option<reqwest::Url>,
    /// The agent's credential for its OpAMP server, shared with the clones of this
    /// downloader (it may be issued while they run); sent only to the server's origin.
    server_credential: std::sync::Arc<std::sync::RwLock<Option<HeaderValue>>>,
}

impl Downloader {
    /// A downloader with its own HTTP client (rustls, web PKI roots, no transparent
    /// decompression) writing into `dir`, which is created if missing.
    ///
    /// # Errors
    /// The directory cannot be created or the HTTP client cannot be built.
    pub fn new(dir: impl Into<PathBuf>, limits: DownloadLimits) -> Result<Self, DownloadError> {
        let client = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            // Transparent decompression would break ranges and hashes: we want the file's bytes.
            .no_gzip()
            // Redirects are followed by `send`, which keeps the offer's headers on its origin.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|source| DownloadError::InvalidRequest {
                reason: format!("cannot build HTTP client: {source}"),
            })?;
        Self::with_client(client, dir, limits)
    }

    /// Like [`Downloader::new`], also trusting the CA certificates in `pem_bundle` (e.g. the
    /// supervisor's `server.tls.ca_file` for a private download server).
    ///
    /// # Errors
    /// The PEM holds no valid certificate, or as for [`Downloader::new`].
    pub fn with_root_certificates(
        dir: impl Into<PathBuf>,
        limits: DownloadLimits,
        pem_bundle: &[u8],
    ) -> Result<Self, DownloadError> {
        Self::with_tls(dir, limits, Some(pem_bundle), None)
    }

    /// Like [`Downloader::new`], also trusting the CA certificates in `ca_pem` when given,
    /// and presenting the client certificate in `client_identity_pem` (certificate chain
    /// and private key, PEM) to servers that ask for one: the supervisor's
    /// `server.tls.cert_file`/`key_file`, so downloads from a mutual-TLS OpAMP server work.
    ///
    /// # Errors
    /// A PEM holds no valid certificate or key, or as for [`Downloader::new`].
    pub fn with_tls(
        dir: impl Into<PathBuf>,
        limits: DownloadLimits,
        ca_pem: Option<&[u8]>,
        client_identity_pem: Option<&[u8]>,
    ) -> Result<Self, DownloadError> {
        let invalid = |reason: String| DownloadError::InvalidRequest { reason };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(limits.connect_timeout)
            .no_gzip()
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem_bundle) = ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem_bundle)
                .map_err(|err| invalid(format!("invalid CA certificate PEM: {err}")))?;
            if certificates.is_empty() {
                return Err(invalid("CA certificate PEM holds no certificate".into()));
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Some(pem) = client_identity_pem {
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|err| invalid(format!("invalid client certificate or key PEM: {err}")))?;
            builder = builder.identity(identity);
        }
        let client = builder
            .build()
            .map_err(|err| invalid(format!("cannot build HTTP client: {err}")))?;
        Self::with_client(client, dir, limits)
    }

    /// Sends `Authorization: Bearer <credential>` (the agent's enrollment credential) with
    /// every download from the OpAMP server's own origin (see [`Downloader::with_base_url`]),
    /// unless the offer carries its own `Authorization`; never to another origin. Clones of
    /// this downloader share the setting.
    pub fn set_server_credential(&self, credential: &str) {
        let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {credential}")) else {
            tracing::warn!("the agent credential is not a valid header value; not sent");
            return;
        };
        value.set_sensitive(true);
        *self
            .server_credential
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(value);
    }

    /// The credential header for `url`, when it is on the OpAMP server's origin.
    fn credential_for(&self, url: &reqwest::Url) -> Option<HeaderValue> {
        let server = self.base_url.as_ref()?;
        if server.origin() != url.origin() {
            return None;
        }
        self.server_credential
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// A downloader using a caller-built client (custom roots, proxies, client certificates).
    /// The client must not decompress transparently (`ClientBuilder::no_gzip`) and must not
    /// follow redirects itself (`redirect::Policy::none()`): the downloader follows them and
    /// forwards the offer's headers only within the offer's origin.
    ///
    /// # Errors
    /// The directory cannot be created.
    pub fn with_client(
        client: reqwest::Client,
        dir: impl Into<PathBuf>,
        limits: DownloadLimits,
    ) -> Result<Self, DownloadError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| DownloadError::Io {
            action: "create download directory",
            path: dir.clone(),
            source,
        })?;
        Ok(Self {
            client,
            dir,
            limits,
            base_url: None,
            server_credential: std::sync::Arc::default(),
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &DownloadLimits {
        &self.limits
    }

    /// Path of the in-progress file for `name`.
    pub fn partial_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.partial", safe_file_stem(name)))
    }

    /// Path of the completed file for `name`.
    pub fn complete_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.download", safe_file_stem(name)))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{}.meta", safe_file_stem(name)))
    }

    /// Removes every file this downloader keeps for `name` (partial, metadata, completed).
    ///
    /// # Errors
    /// A file exists but cannot be removed.
    pub fn discard(&self, name: &str) -> Result<(), DownloadError> {
        for path in [
            self.partial_path(name),
            self.meta_path(name),
            self.complete_path(name),
        ] {
            storage::remove_file_if_exists(&path).map_err(|source| DownloadError::Io {
                action: "remove",
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// Resolves relative `download_url`s (for example `/packages/otelcol`, which a server
    /// may offer) against `opamp_endpoint`, the URL the agent reaches its OpAMP server at;
    /// `ws` and `wss` become `http` and `https`.
    ///
    /// # Errors
    /// [`DownloadError::InvalidRequest`] when `opamp_endpoint` is not an absolute URL.
    pub fn with_base_url(mut self, opamp_endpoint: &str) -> Result<Self, DownloadError> {
        let mut base =
            reqwest::Url::parse(opamp_endpoint).map_err(|e| DownloadError::InvalidRequest {
                reason: format!("OpAMP endpoint {opamp_endpoint:?} is not a URL: {e}"),
            })?;
        let scheme = match base.scheme() {
            "ws" => Some("http"),
            "wss" => Some("https"),
            _ => None,
        };
        if let Some(scheme) = scheme {
            // Switching between these special schemes is always allowed.
            let _ = base.set_scheme(scheme);
        }
        self.base_url = Some(base);
        Ok(self)
    }

    /// The absolute `http`/`https` URL to fetch for an offer's `download_url`.
    fn resolve_url(&self, url: &str) -> Result<reqwest::Url, DownloadError> {
        let resolved = match (reqwest::Url::parse(url), &self.base_url) {
            (Ok(absolute), _) => absolute,
            // Not absolute: a path such as `/packages/otelcol`, relative to the endpoint.
            (Err(_), Some(base)) => base.join(url).map_err(|e| DownloadError::InvalidRequest {
                reason: format!("download_url {url:?} cannot be resolved against {base}: {e}"),
            })?,
            (Err(e), None) => {
                return Err(DownloadError::InvalidRequest {
                    reason: format!(
                        "download_url {url:?} is not an absolute URL ({e}) and no OpAMP endpoint is known to resolve it against"
                    ),
                });
            }
        };
        if !matches!(resolved.scheme(), "http" | "https") {
            return Err(DownloadError::InvalidRequest {
                reason: format!("download_url {resolved} is not http or https"),
            });
        }
        Ok(resolved)
    }

    /// Downloads `request`, resuming an earlier partial attempt of the same URL, calling
    /// `progress` at most every [`DownloadLimits::progress_interval`] and once at the end.
    ///
    /// # Errors
    /// See [`DownloadError`]; [`DownloadError::is_resumable`] tells whether a retry resumes.
    pub async fn download(
        &self,
        request: &DownloadRequest,
        progress: impl FnMut(DownloadProgress),
    ) -> Result<DownloadedFile, DownloadError> {
        self.download_cancellable(request, &CancellationToken::new(), progress)
            .await
    }

    /// Like [`Downloader::download`], ending with [`DownloadError::Cancelled`] as soon as
    /// `cancel` is cancelled (the bytes received so far are kept for a resume of the same URL).
    ///
    /// # Errors
    /// See [`DownloadError`].
    pub async fn download_cancellable(
        &self,
        request: &DownloadRequest,
        cancel: &CancellationToken,
        mut progress: impl FnMut(DownloadProgress),
    ) -> Result<DownloadedFile, DownloadError> {
        let extra_headers = build_headers(&request.headers)?;
        let mut pace = Pace::start(&self.limits, Instant::now());
        let partial = self.partial_path(&request.name);
        let meta_path = self.meta_path(&request.name);
        let complete = self.complete_path(&request.name);
        storage::remove_file_if_exists(&complete).map_err(|source| DownloadError::Io {
            action: "remove old download",
            path: complete.clone(),
            source,
        })?;

        let (mut hasher, mut offset, validator) =
            self.resume_state(request, &partial, &meta_path).await?;
        // A refused resume restarts from zero without a Range header, after which anything but
        // 200 is an error; a busy server (503, 429) is asked again after the wait it names,
        // within the download's deadline.
        let mut busy_answers = 0u32;
        let response = loop {
            let resume = validator
                .as_deref()
                .filter(|_| offset > 0)
                .map(|validator| (offset, validator));
            let response = self
                .send(request, &extra_headers, resume, &mut pace, cancel)
                .await?;
            let status = response.status();
            if status == StatusCode::OK {
                if offset > 0 {
                    tracing::info!(offset, "server sent the whole file; restarting download");
                    hasher = new_hasher();
                    offset = 0;
                }
                let total = response.content_length();
                if let Some(total) = total {
                    self.check_size(request, total)?;
                }
                break (response, total);
            } else if status == StatusCode::PARTIAL_CONTENT && offset > 0 {
                let range = header_str(&response, header::CONTENT_RANGE);
                if let Some((start, Some(total))) = parse_content_range(&range)
                    && start == offset
                {
                    self.check_size(request, total)?;
                    break (response, Some(total));
                }
                tracing::warn!(range, offset, "server sent another range; restarting");
            } else if status == StatusCode::RANGE_NOT_SATISFIABLE && offset > 0 {
                let range = header_str(&response, header::CONTENT_RANGE);
                if let Some((_, Some(total))) = parse_content_range(&range)
                    && total == offset
                {
                    // The partial already holds the whole file.
                    self.check_size(request, total)?;
                    return self
                        .finish(request, &partial, &meta_path, hasher, offset)
                        .await;
                }
                tracing::warn!(range, offset, "server refused the resume; restarting");
            } else if busy::is_busy(status) && busy_answers < busy::MAX_ANSWERS {
                busy_answers += 1;
                let wait = busy::wait(&response, busy_answers);
                if Instant::now() + wait >= pace.deadline() {
                    return Err(DownloadError::HttpStatus {
                        url: request.url.clone(),
                        status: status.as_u16(),
                    });
                }
                tracing::info!(
                    status = status.as_u16(),
                    ?wait,
                    "download server busy; asking again"
                );
                drop(response);
                tokio::select! {
                    () = cancel.cancelled() => {
                        return Err(DownloadError::Cancelled { received: offset });
                    }
                    () = tokio::time::sleep(wait) => {}
                }
                // Waiting as told is neither silence nor a slow transfer.
                pace.rested(Instant::now());
                continue;
            } else {
                return Err(DownloadError::HttpStatus {
                    url: request.url.clone(),
                    status: status.as_u16(),
                });
            }
            hasher = new_hasher();
            offset = 0;
        };
        let (mut response, total) = response;

        let new_validator = header_opt(&response, header::ETAG)
            .or_else(|| header_opt(&response, header::LAST_MODIFIED));
        match new_validator {
            Some(validator) => {
                let meta = PartialMeta {
                    url: request.url.clone(),
                    validator,
                    total,
                };
                write_meta(&meta_path, &meta)?;
            }
            None => {
                storage::remove_file_if_exists(&meta_path).map_err(|source| DownloadError::Io {
                    action: "remove",
                    path: meta_path.clone(),
                    source,
                })?
            }
        }

        let mut writer = PartialWriter::start(open_partial(&partial, offset).await?);
        let resumed_from = offset;
        let started = Instant::now();
        let mut last_report: Option<Instant> = None;
        // Whatever the server declares (or not, for a chunked or endless body), no byte past
        // the trusted size is written.
        let limit = [total, request.expected_size, Some(self.limits.max_size)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.limits.max_size);
        loop {
            let chunk = match paced(&mut pace, cancel, response.chunk()).await {
                Err(halt) => {
                    flush_partial(writer, &partial).await?;
                    return Err(halt.into_error(offset));
                }
                Ok(Err(source)) => {
                    flush_partial(writer, &partial).await?;
                    return Err(DownloadError::Interrupted {
                        received: offset,
                        source,
                    });
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => chunk,
            };
            let new_offset = offset.saturating_add(chunk.len() as u64);
            // Hashed before it is queued: the writer owns the chunk from then on. The hasher
            // has no limit of its own, so only the size check can refuse here.
            if new_offset > limit || hasher.update(&chunk).is_err() {
                // Waits for the queued bytes so that no write lands after the discard.
                let _ = writer.finish().await;
                let _ = self.discard(&request.name);
                return Err(DownloadError::TooLarge {
                    size: new_offset,
                    limit,
                });
            }
            let chunk_len = chunk.len() as u64;
            if writer.write(chunk).await.is_err() {
                // The writer stopped on an error; finishing it returns that error.
                let source = match writer.finish().await {
                    Err(source) => source,
                    Ok(()) => io::Error::other("download writer stopped"),
                };
                return Err(DownloadError::Io {
                    action: "write",
                    path: partial.clone(),
                    source,
                });
            }
            offset = new_offset;
            let now = Instant::now();
            if let Err(expired) = pace.received(chunk_len, now) {
                flush_partial(writer, &partial).await?;
                return Err(Halt::Expired(expired).into_error(offset));
            }
            if last_report.is_none_or(|at| now.duration_since(at) >= self.limits.progress_interval)
            {
                last_report = Some(now);
                progress(rate(offset, resumed_from, total, started, now));
            }
        }
        flush_partial(writer, &partial).await?;
        if let Some(total) = total
            && offset < total
        {
            return Err(DownloadError::Truncated {
                received: offset,
                expected: total,
            });
        }
        if let Some(expected) = request.expected_size
            && offset != expected
        {
            let _ = self.discard(&request.name);
            return Err(DownloadError::SizeMismatch {
                expected,
                actual: offset,
            });
        }
        progress(rate(offset, resumed_from, total, started, Instant::now()));
        self.finish(request, &partial, &meta_path, hasher, resumed_from)
            .await
    }

    /// Sends the GET for `request` (a range request when `resume` holds the offset and its
    /// validator), following redirects itself: reqwest's own policy forwards every header but
    /// `Authorization` to another host, while the offer's headers are meant for the offer's
    /// origin only.
    async fn send(
        &self,
        request: &DownloadRequest,
        extra_headers: &HeaderMap,
        resume: Option<(u64, &str)>,
        pace: &mut Pace,
        cancel: &CancellationToken,
    ) -> Result<reqwest::Response, DownloadError> {
        let received = resume.map_or(0, |(offset, _)| offset);
        // A relative download_url is resolved against the OpAMP endpoint.
        let mut url = self.resolve_url(&request.url)?;
        let origin = url.origin();
        for _ in 0..=MAX_REDIRECTS {
            let mut builder = self
                .client
                .get(url.clone())
                .header(header::ACCEPT_ENCODING, "identity");
            if url.origin() == origin {
                builder = builder.headers(extra_headers.clone());
            }
            if !(url.origin() == origin && extra_headers.contains_key(header::AUTHORIZATION))
                && let Some(credential) = self.credential_for(&url)
            {
                builder = builder.header(header::AUTHORIZATION, credential);
            }
            if let Some((offset, validator)) = resume {
                builder = builder
                    .header(header::RANGE, format!("bytes={offset}-"))
                    .header(header::IF_RANGE, validator);
            }
            let response = paced(pace, cancel, builder.send())
                .await
                .map_err(|halt| halt.into_error(received))?
                .map_err(|source| DownloadError::Connect {
                    url: url.to_string(),
                    source,
                })?;
            let location = header_opt(&response, header::LOCATION);
            match location {
                Some(location) if response.status().is_redirection() => {
                    url = url
                        .join(&location)
                        .map_err(|err| DownloadError::InvalidRequest {
                            reason: format!("invalid redirect location {location:?}: {err}"),
                        })?;
                    tracing::debug!(%url, same_origin = url.origin() == origin, "following redirect");
                }
                _ => return Ok(response),
            }
        }
        Err(DownloadError::TooManyRedirects {
            url: request.url.clone(),
        })
    }

    fn check_size(&self, request: &DownloadRequest, total: u64) -> Result<(), DownloadError> {
        if total > self.limits.max_size {
            let _ = self.discard(&request.name);
            return Err(DownloadError::TooLarge {
                size: total,
                limit: self.limits.max_size,
            });
        }
        if let Some(expected) = request.expected_size
            && total != expected
        {
            let _ = self.discard(&request.name);
            return Err(DownloadError::SizeMismatch {
                expected,
                actual: total,
            });
        }
        Ok(())
    }

    /// Hasher over the partial's bytes, its length, and the validator that makes resuming it safe.
    /// A partial without a validator for the same URL is discarded: resuming it could splice two
    /// different files together.
    async fn resume_state(
        &self,
        request: &DownloadRequest,
        partial: &Path,
        meta_path: &Path,
    ) -> Result<(ContentHasher, u64, Option<String>), DownloadError> {
        let meta: Option<PartialMeta> = std::fs::read(meta_path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let usable = meta.filter(|m| m.url == request.url);
        let len = tokio::fs::metadata(partial).await.map(|m| m.len()).ok();
        match (usable, len) {
            (Some(meta), Some(len)) if len > 0 => {
                let path = partial.to_path_buf();
                let hasher = tokio::task::spawn_blocking(move || hash_prefix(&path))
                    .await
                    .map_err(|join| DownloadError::Io {
                        action: "hash partial download",
                        path: partial.to_path_buf(),
                        source: io::Error::other(join.to_string()),
                    })?
                    .map_err(|source| DownloadError::Io {
                        action: "hash partial download",
                        path: partial.to_path_buf(),
                        source,
                    })?;
                // What was hashed is what the resume continues from, even if the file changed
                // between the two looks.
                let len = hasher.len();
                tracing::info!(bytes = len, url = %request.url, "resuming download");
                Ok((hasher, len, Some(meta.validator)))
            }
            _ => {
                self.discard(&request.name)?;
                Ok((new_hasher(), 0, None))
            }
        }
    }

    async fn finish(
        &self,
        request: &DownloadRequest,
        partial: &Path,
        meta_path: &Path,
        hasher: ContentHasher,
        resumed_from: u64,
    ) -> Result<DownloadedFile, DownloadError> {
        let hashed = hasher.finish();
        let sha256 = hashed.hash();
        if let Some(expected) = request.expected_sha256
            && expected != sha256
        {
            let _ = self.discard(&request.name);
            return Err(DownloadError::HashMismatch {
                expected: expected.to_string(),
                actual: sha256.to_string(),
            });
        }
        let complete = self.complete_path(&request.name);
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| DownloadError::Io {
                action,
                path,
                source,
            }
        };
        tokio::fs::rename(partial, &complete)
            .await
            .map_err(io_err("rename completed download", partial))?;
        storage::remove_file_if_exists(meta_path).map_err(io_err("remove", meta_path))?;
        storage::sync_dir(&self.dir).map_err(io_err("sync directory", &self.dir))?;
        Ok(DownloadedFile {
            path: complete,
            hashed,
            resumed_from,
        })
    }
}

/// Why a wait ended without its result.
enum Halt {
    Expired(Expired),
    Cancelled,
}

impl Halt {
    fn into_error(self, received: u64) -> DownloadError {
        match self {
            Self::Expired(Expired::Idle(idle)) => DownloadError::TimedOut { received, idle },
            Self::Expired(Expired::Deadline(deadline)) => {
                DownloadError::DeadlineExceeded { received, deadline }
            }
            Self::Expired(Expired::TooSlow { measured, minimum }) => DownloadError::TooSlow {
                received,
                measured,
                minimum,
            },
            Self::Cancelled => DownloadError::Cancelled { received },
        }
    }
}

/// Awaits `work` while the download's clocks run and `cancel` is not cancelled.
async fn paced<F: std::future::Future>(
    pace: &mut Pace,
    cancel: &CancellationToken,
    work: F,
) -> Result<F::Output, Halt> {
    tokio::pin!(work);
    loop {
        let wait = pace.wait(Instant::now());
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(Halt::Cancelled),
            done = tokio::time::timeout(wait, &mut work) => match done {
                Ok(output) => return Ok(output),
                Err(_) => pace.woke(Instant::now()).map_err(Halt::Expired)?,
            },
        }
    }
}

fn rate(
    bytes: u64,
    resumed_from: u64,
    total: Option<u64>,
    started: Instant,
    now: Instant,
) -> DownloadProgress {
    let secs = now.duration_since(started).as_secs_f64();
    let transferred = bytes.saturating_sub(resumed_from) as f64;
    DownloadProgress {
        bytes,
        total,
        bytes_per_second: if secs > 0.0 { transferred / secs } else { 0.0 },
    }
}

fn build_headers(pairs: &[(String, String)]) -> Result<HeaderMap, DownloadError> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name =
            HeaderName::from_bytes(name.as_bytes()).map_err(|_| DownloadError::InvalidRequest {
                reason: format!("invalid header name {name:?}"),
            })?;
        // These carry the resume protocol and the byte encoding; the offer must not override them.
        if [header::RANGE, header::IF_RANGE, header::ACCEPT_ENCODING].contains(&name) {
            tracing::warn!(header = %name, "ignoring offered header that would break resumption");
            continue;
        }
        let value = HeaderValue::from_str(value).map_err(|_| DownloadError::InvalidRequest {
            reason: format!("invalid value for header {name}"),
        })?;
        map.append(name, value);
    }
    Ok(map)
}

fn header_opt(response: &reqwest::Response, name: HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn header_str(response: &reqwest::Response, name: HeaderName) -> String {
    header_opt(response, name).unwrap_or_default()
}

/// Parses `bytes START-END/TOTAL` (or `bytes */TOTAL`) into `(START, TOTAL)`; `START` is the
/// total itself for the `*` form.
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some((total?, total));
    }
    let (start, end) = range.split_once('-')?;
    let start: u64 = start.trim().parse().ok()?;
    let end: u64 = end.trim().parse().ok()?;
    if end < start || total.is_some_and(|t| end >= t) {
        return None;
    }
    Some((start, total))
}

/// A hasher without a limit of its own: the downloader checks sizes before hashing.
fn new_hasher() -> ContentHasher {
    ContentHasher::new(u64::MAX)
}

fn hash_prefix(path: &Path) -> io::Result<ContentHasher> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = new_hasher();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher),
            Ok(n) => hasher.update(&buf[..n]).map_err(io::Error::other)?,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
}

fn write_meta(path: &Path, meta: &PartialMeta) -> Result<(), DownloadError> {
    let bytes = serde_json::to_vec(meta).map_err(|err| DownloadError::Io {
        action: "encode download metadata",
        path: path.to_path_buf(),
        source: io::Error::other(err),
    })?;
    storage::write_atomic(path, &bytes).map_err(|source| DownloadError::Io {
        action: "write download metadata",
        path: path.to_path_buf(),
        source,
    })
}

async fn open_partial(path: &Path, offset: u64) -> Result<std::fs::File, DownloadError> {
    let io_err = |action: &'static str| {
        let path = path.to_path_buf();
        move |source| DownloadError::Io {
            action,
            path,
            source,
        }
    };
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).write(true);
    if offset == 0 {
        options.truncate(true);
    }
    let mut file = options
        .open(path)
        .await
        .map_err(io_err("open partial download"))?
        .into_std()
        .await;
    if offset > 0 {
        // The file must hold exactly what the hasher saw: anything past it (bytes written after
        // the prefix was hashed) would end up in the middle of the download.
        use std::io::{Seek, SeekFrom};
        file.set_len(offset)
            .map_err(io_err("truncate partial download"))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek partial download"))?;
    }
    Ok(file)
}

/// Writes out and fsyncs the partial file: it must hold what the hasher saw before a resume
/// trusts its length.
async fn flush_partial(writer: PartialWriter, path: &Path) -> Result<(), DownloadError> {
    writer.finish().await.map_err(|source| DownloadError::Io {
        action: "write partial download",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 10-19/20"), Some((10, Some(20))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, None)));
        assert_eq!(parse_content_range("bytes */20"), Some((20, Some(20))));
        assert_eq!(parse_content_range("bytes 10-25/20"), None);
        assert_eq!(parse_content_range("bytes 10-5/20"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn offered_headers_cannot_override_range() {
        let map = build_headers(&[
            ("Range".into(), "bytes=0-".into()),
            ("Authorization".into(), "Bearer x".into()),
        ])
        .unwrap();
        assert!(map.get(header::RANGE).is_none());
        assert_eq!(map.get(header::AUTHORIZATION).unwrap(), "Bearer x");
        assert!(build_headers(&[("bad name".into(), "v".into())]).is_err());
    }

    #[test]
    fn percent_is_bounded() {
        let p = DownloadProgress {
            bytes: 50,
            total: Some(200),
            bytes_per_second: 1.0,
        };
        assert_eq!(p.percent(), Some(25.0));
        let empty = DownloadProgress {
            bytes: 0,
            total: Some(0),
            bytes_per_second: 0.0,
        };
        assert_eq!(empty.percent(), Some(100.0));
    }
}
