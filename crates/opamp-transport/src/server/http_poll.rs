//! HTTP agents: `POST` with `Content-Type: application/x-protobuf`, optionally gzip, one
//! `AgentToServer` in and one `ServerToAgent` out.
//!
//! Refusals: 415 for another content type or encoding, 413 over the size limit (checked on
//! the compressed body and again after decompression), 400 for bytes that are not an
//! `AgentToServer` or carry an invalid instance uid, 408 for a body that does not arrive
//! within the body timeout, 403 when the connection may not speak for the instance uid.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use opamp_proto::InstanceUid;
use opamp_proto::codec::{self, CodecError};
use opamp_proto::v1::{AgentToServer, ServerToAgent};
use opamp_session::{SessionError, TransportMode, framing};

use super::Shared;
use super::authorize::{self, AGENT_CREDENTIAL_HEADER, AgentClaim};
use super::listener::ConnectionInfo;
use super::stats::RefusalReason;

/// The media type of OpAMP HTTP bodies.
pub(crate) const PROTOBUF: &str = "application/x-protobuf";

pub(crate) async fn handle(
    shared: Arc<Shared>,
    connection: ConnectionInfo,
    endpoint_url: Option<String>,
    request: axum::extract::Request,
) -> Response {
    let accepts_gzip = accepts_gzip(request.headers());
    let _open = shared.stats.opened(TransportMode::HttpPolling);
    match handle_inner(&shared, &connection, endpoint_url, request).await {
        Ok((reply, credential)) => {
            let body = framing::encode_server_message(TransportMode::HttpPolling, &reply);
            // The spec asks servers to compress when the agent accepts it; tiny answers
            // (most of them) are not worth the gzip header.
            let compressed = (accepts_gzip && body.len() >= GZIP_THRESHOLD)
                .then(|| gzip(&body))
                .flatten();
            let body = compressed.clone().unwrap_or(body);
            shared.stats.sent(TransportMode::HttpPolling, body.len());
            let mut response = Body::from(body).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROTOBUF));
            if compressed.is_some() {
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            if let Some(credential) = credential {
                headers.insert(AGENT_CREDENTIAL_HEADER, credential);
            }
            response
        }
        Err((status, reason)) => {
            shared
                .stats
                .refused(TransportMode::HttpPolling, refusal_counted_as(status));
            tracing::info!(remote_addr = %connection.remote_addr, %status, reason, "HTTP request refused");
            (status, reason).into_response()
        }
    }
}

type Refusal = (StatusCode, &'static str);

async fn handle_inner(
    shared: &Shared,
    connection: &ConnectionInfo,
    endpoint_url: Option<String>,
    request: axum::extract::Request,
) -> Result<(ServerToAgent, Option<HeaderValue>), Refusal> {
    let limit = shared.config.limits.max_message_size;
    let request_headers = request.headers().clone();
    let headers = &request_headers;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(PROTOBUF) {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-protobuf",
        ));
    }
    let gzip = match headers
        .get(header::CONTENT_ENCODING)
        .map(HeaderValue::as_bytes)
    {
        None => false,
        Some(b"gzip") => true,
        Some(b"identity") => false,
        Some(_) => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Encoding must be gzip or identity",
            ));
        }
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "message too large"));
    }
    let collect = Limited::new(request.into_body(), limit).collect();
    // A body trickled byte by byte would otherwise hold the connection forever.
    let body = tokio::time::timeout(shared.config.body_read_timeout, collect)
        .await
        .map_err(|_| {
            (
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time",
            )
        })?
        .map_err(|error| {
            if error
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                (StatusCode::PAYLOAD_TOO_LARGE, "message too large")
            } else {
                (StatusCode::BAD_REQUEST, "could not read the request body")
            }
        })?
        .to_bytes();
    let limits = shared.config.limits;
    let received = body.len();
    let message = if gzip {
        tokio::task::spawn_blocking(move || decode_agent_body(&body, true, &limits))
            .await
            .map_err(|_| (StatusCode::INTERNAL_SERVER_ERROR, "decompression failed"))?
    } else {
        decode_agent_body(&body, false, &limits)
    }
    .map_err(|refusal| (refusal.status, refusal.reason))?;
    let uid = InstanceUid::from_slice(&message.instance_uid)
        .map_err(|_| (StatusCode::BAD_REQUEST, "instance_uid must be 16 bytes"))?;
    let claim = AgentClaim {
        uid,
        connection,
        headers: &request_headers,
        can_issue_credential: true,
    };
    let verdict = authorize::check(shared, &claim);
    if !verdict.is_allowed() {
        return Err((
            StatusCode::FORBIDDEN,
            "not authorised for this instance_uid",
        ));
    }
    shared.stats.received(TransportMode::HttpPolling, received);
    let reply = shared
        .sessions
        .http_request(connection.clone(), endpoint_url, message)
        .await;
    Ok((reply, authorize::credential_header(&verdict)))
}

/// How a refused request is counted, from the status it is answered with.
fn refusal_counted_as(status: StatusCode) -> RefusalReason {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => RefusalReason::TooLarge,
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => RefusalReason::Malformed,
        StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => RefusalReason::Unauthorized,
        _ => RefusalReason::Other,
    }
}

/// Answers at least this large are gzipped for agents that accept it.
const GZIP_THRESHOLD: usize = 1024;

fn accepts_gzip(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value.split(',').any(|coding| {
                let mut parts = coding.split(';');
                let name = parts.next().unwrap_or("").trim();
                let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        })
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 2),
        flate2::Compression::fast(),
    );
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

/// Why an HTTP request body was refused, and the status the server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BodyRefusal {
    /// 413 over the size limit (before or after decompression), 400 for anything else.
    pub status: StatusCode,
    /// A short reason, sent as the response body.
    pub reason: &'static str,
}

impl From<Refusal> for BodyRefusal {
    fn from((status, reason): Refusal) -> Self {
        Self { status, reason }
    }
}

/// Turns the bytes of an OpAMP HTTP request body into an `AgentToServer`: gunzips when
/// `gzip` (stopping at `limits.max_message_size` decompressed bytes, so a decompression bomb
/// costs at most the limit), then decodes with the same limit. This is all the server does
/// with untrusted body bytes before the session sees a message; it is public so it can be
/// fuzzed on its own.
///
/// ```
/// use opamp_proto::{codec, v1};
/// use opamp_transport::server::decode_agent_body;
/// let message = v1::AgentToServer { sequence_num: 3, ..Default::default() };
/// let bytes = codec::encode(&message);
/// assert_eq!(decode_agent_body(&bytes, false, &codec::Limits::default()).unwrap(), message);
/// assert_eq!(decode_agent_body(b"junk", true, &codec::Limits::default()).unwrap_err().status, 400);
/// ```
pub fn decode_agent_body(
    body: &[u8],
    gzip: bool,
    limits: &codec::Limits,
) -> Result<AgentToServer, BodyRefusal> {
    let inflated;
    let payload = if gzip {
        inflated = gunzip(body, limits.max_message_size)?;
        inflated.as_slice()
    } else {
        body
    };
    framing::decode_agent_message(TransportMode::HttpPolling, payload, limits).map_err(|error| {
        BodyRefusal::from(match error {
            SessionError::Decode(CodecError::TooLarge { .. }) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "message too large")
            }
            _ => (StatusCode::BAD_REQUEST, "not an AgentToServer message"),
        })
    })
}

/// Decompresses at most `limit` bytes; more is a 413, a corrupt stream a 400.
fn gunzip(compressed: &[u8], limit: usize) -> Result<Vec<u8>, BodyRefusal> {
    let mut decoder = flate2::read::GzDecoder::new(compressed).take(limit as u64 + 1);
    let mut out = Vec::new();
    decoder
        .read_to_end(&mut out)
        .map_err(|_| BodyRefusal::from((StatusCode::BAD_REQUEST, "corrupt gzip body")))?;
    if out.len() > limit {
        return Err(BodyRefusal::from((
            StatusCode::PAYLOAD_TOO_LARGE,
            "message too large after decompression",
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip_best(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn accept_encoding_is_parsed() {
        let accepts = |value: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(value));
            accepts_gzip(&headers)
        };
        assert!(accepts("gzip"));
        assert!(accepts("br, GZIP;q=0.5"));
        assert!(!accepts("gzip;q=0"));
        assert!(!accepts("identity, br"));
        assert!(!accepts_gzip(&http::HeaderMap::new()));
    }

    #[test]
    fn server_gzip_round_trips() {
        let body = vec![7u8; 5000];
        assert_eq!(gunzip(&gzip(&body).unwrap(), body.len()).unwrap(), body);
    }

    #[test]
    fn gunzip_enforces_the_decompressed_limit() {
        let bomb = gzip_best(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 4096, "a megabyte of zeros compresses well");
        assert_eq!(gunzip(&bomb, 1 << 20).unwrap().len(), 1 << 20);
        assert_eq!(
            gunzip(&bomb, (1 << 20) - 1).unwrap_err().status,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            gunzip(b"not gzip", 100).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    proptest::proptest! {
        #[test]
        fn gunzip_round_trips_within_the_limit_and_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096), junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(gunzip(&gzip_best(&data), data.len()).unwrap(), data.clone());
            if !data.is_empty() {
                proptest::prop_assert_eq!(gunzip(&gzip_best(&data), data.len() - 1).unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
            }
            let _ = gunzip(&junk, 1024);
        }
    }
}
