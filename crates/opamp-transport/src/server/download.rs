//! Package download route: files from one directory with `Range` (206/416, from tower-http's
//! `ServeDir`), plus a strong `ETag`, `If-None-Match` (304) and `If-Range`, and optional
//! per-token authorisation, so an agent can resume an interrupted download safely: if the file
//! changed, `If-Range` no longer matches and the agent gets the whole new file instead of a
//! spliced one. At most a configured number of files are sent at once; more requests get
//! `503` with `Retry-After`.

use std::convert::Infallible;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Decides whether a bearer token may fetch a file. Arguments: the token (`None` when the
/// request had no `Authorization: Bearer` header) and the file path relative to the download
/// directory, with `/` separators.
pub type DownloadAuthorizer = Arc<dyn Fn(Option<&str>, &str) -> bool + Send + Sync>;

/// Where package files are served from.
#[derive(Clone)]
#[non_exhaustive]
pub struct DownloadConfig {
    /// Directory whose files are served.
    pub root: PathBuf,
    /// URL prefix of the route, for example `/packages`.
    pub prefix: String,
    /// Per-token authorisation; `None` serves every file to everyone.
    pub authorize: Option<DownloadAuthorizer>,
}

impl std::fmt::Debug for DownloadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadConfig")
            .field("root", &self.root)
            .field("prefix", &self.prefix)
            .field("authorize", &self.authorize.is_some())
            .finish()
    }
}

impl DownloadConfig {
    /// Serves `root` under `/packages` to everyone.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            prefix: "/packages".to_owned(),
            authorize: None,
        }
    }

    /// Changes the URL prefix (must start with `/`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Requires `Authorization: Bearer <token>` accepted by `authorize`.
    #[must_use]
    pub fn authorize(
        mut self,
        authorize: impl Fn(Option<&str>, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Arc::new(authorize));
        self
    }
}

/// The route's settings and the slots of the downloads in progress.
pub(crate) struct Downloads {
    config: DownloadConfig,
    slots: Arc<tokio::sync::Semaphore>,
    retry_after: std::time::Duration,
}

impl Downloads {
    pub(crate) fn new(
        config: DownloadConfig,
        max_concurrent: usize,
        retry_after: std::time::Duration,
    ) -> Self {
        Self {
            config,
            slots: Arc::new(tokio::sync::Semaphore::new(max_concurrent)),
            retry_after,
        }
    }
}

/// Serves one request whose URI path is already relative to the prefix.
pub(crate) async fn serve(
    downloads: Arc<Downloads>,
    mut request: Request<Body>,
) -> Result<Response, Infallible> {
    let config = &downloads.config;
    let Ok(relative) =
        percent_encoding::percent_decode_str(request.uri().path().trim_start_matches('/'))
            .decode_utf8()
    else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let relative = relative.into_owned();
    let Some(file_path) = safe_join(&config.root, &relative) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    if let Some(authorize) = &config.authorize
        && !authorize(bearer_token(request.headers()), &relative)
    {
        let mut response = StatusCode::UNAUTHORIZED.into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Ok(response);
    }
    let (etag, chunk_size) = match tokio::fs::metadata(&file_path).await {
        Ok(meta) if meta.is_file() => (entity_tag(&meta), read_chunk_size(meta.len())),
        _ => return Ok(StatusCode::NOT_FOUND.into_response()),
    };
    let headers = request.headers();
    if let Some(etag) = &etag
        && headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| none_match_hits(v, etag))
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        insert_etag(response.headers_mut(), etag);
        return Ok(response);
    }
    // A Range is only honoured when If-Range names the current strong tag; a date or any
    // other tag means "the copy I have may be stale": send the whole file.
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        let current = etag
            .as_deref()
            .is_some_and(|etag| if_range.as_bytes() == etag.as_bytes());
        if !current {
            request.headers_mut().remove(header::RANGE);
        }
    }
    // The slot is held by the body, so it is given back when the file has been sent or
    // the connection dropped (for a stalled reader: at the write timeout).
    let Ok(slot) = downloads.slots.clone().try_acquire_owned() else {
        tracing::warn!(file = %relative.escape_debug(), "download refused: too many at once");
        let mut response = StatusCode::SERVICE_UNAVAILABLE.into_response();
        let seconds = downloads.retry_after.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return Ok(response);
    };
    let result = ServeDir::new(&config.root)
        .with_buf_chunk_size(chunk_size)
        .oneshot(request)
        .await;
    let mut response = match result {
        Ok(response) => response.map(|body| {
            Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
                let _held = &slot;
                frame
            }))
        }),
        Err(error) => match error {},
    };
    if let Some(etag) = &etag
        && response.status().is_success()
    {
        insert_etag(response.headers_mut(), etag);
    }
    Ok(response)
}

/// Joins a decoded URL path onto the root, refusing anything that could leave it.
fn safe_join(root: &Path, relative: &str) -> Option<PathBuf> {
    let relative = Path::new(relative);
    if relative.as_os_str().is_empty()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
    {
        return None;
    }
    Some(root.join(relative))
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Bytes read from the file per body chunk. Every read is a trip to tokio's blocking pool:
/// tower-http's 64 KiB default cost a GiB package 16,000 trips and ~70,000 context switches,
/// a fifth of the CPU of serving it (docs/benchmarks.md). Large chunks only for large files, so
/// that thousands of agents fetching a small package do not each hold a big buffer.
fn read_chunk_size(file_len: u64) -> usize {
    const MIN: usize = 16 << 10;
    const MAX: usize = 1 << 20;
    usize::try_from(file_len).map_or(MAX, |len| len.clamp(MIN, MAX))
}

/// A strong tag from size and modification time: package files are written once per version,
/// so a change in either means different bytes.
fn entity_tag(meta: &std::fs::Metadata) -> Option<String> {
    let modified = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
    Some(format!("\"{:x}-{:x}\"", meta.len(), modified.as_nanos()))
}

fn none_match_hits(header_value: &str, etag: &str) -> bool {
    header_value
        .split(',')
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

fn insert_etag(headers: &mut HeaderMap, etag: &str) {
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_join_refuses_escapes() {
        let root = Path::new("/srv/pkgs");
        assert_eq!(
            safe_join(root, "a/b.tar.gz"),
            Some(PathBuf::from("/srv/pkgs/a/b.tar.gz"))
        );
        assert_eq!(safe_join(root, "../etc/passwd"), None);
        assert_eq!(safe_join(root, "a/../../x"), None);
        assert_eq!(safe_join(root, "/etc/passwd"), None);
        assert_eq!(safe_join(root, ""), None);
    }

    #[test]
    fn if_none_match_lists_and_weak_tags() {
        assert!(none_match_hits("\"a\", \"b\"", "\"b\""));
        assert!(none_match_hits("W/\"b\"", "\"b\""));
        assert!(none_match_hits("*", "\"b\""));
        assert!(!none_match_hits("\"c\"", "\"b\""));
    }

    #[test]
    fn bearer_token_is_case_insensitive_on_scheme() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer abc"),
        );
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
    }

    proptest::proptest! {
        #[test]
        fn joined_paths_never_leave_the_root(parts in proptest::collection::vec("(\\.\\.|\\.|a|b c|/|//|\\\\)", 0..8)) {
            let relative: String = parts.concat();
            let root = Path::new("/srv/pkgs");
            if let Some(joined) = safe_join(root, &relative) {
                proptest::prop_assert!(joined.starts_with(root));
                proptest::prop_assert!(joined.components().all(|c| !matches!(c, Component::ParentDir)));
                proptest::prop_assert!(joined != root);
            }
        }
    }
}
