//! Size-limited protobuf encode/decode and the OpAMP WebSocket frame codec.
//!
//! Every decoder takes [`Limits`] so a peer cannot make us allocate or parse an
//! unbounded message. On WebSocket each binary message is a varint header
//! (currently always 0) followed by the protobuf bytes.

use prost::Message;

/// Default maximum size of one decoded message: 64 MiB, as the design sets.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// The only WebSocket header value OpAMP defines today.
pub const WS_HEADER: u64 = 0;

/// Longest varint we accept as a WebSocket header (10 bytes encode any `u64`).
const MAX_VARINT_LEN: usize = 10;

/// Bounds applied when decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest protobuf payload accepted, in bytes (after any decompression).
    pub max_message_size: usize,
}

impl Limits {
    /// Limits with the given maximum message size.
    pub const fn with_max_message_size(max_message_size: usize) -> Self {
        Self { max_message_size }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::with_max_message_size(DEFAULT_MAX_MESSAGE_SIZE)
    }
}

/// Why bytes could not become a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The payload is larger than [`Limits::max_message_size`].
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the refused payload.
        size: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The bytes are not a valid protobuf encoding of the expected message.
    #[error("malformed protobuf")]
    Malformed(#[from] prost::DecodeError),
    /// The WebSocket header is missing, truncated or not the value OpAMP defines.
    #[error("bad OpAMP WebSocket header: {0}")]
    BadWsHeader(WsHeaderError),
}

/// What was wrong with a WebSocket frame header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WsHeaderError {
    /// The frame was empty.
    #[error("empty frame")]
    Empty,
    /// The varint ran off the end of the frame or past 10 bytes.
    #[error("truncated or overlong varint header")]
    BadVarint,
    /// The header decoded to a value other than 0.
    #[error("header value {0}, expected 0")]
    UnknownValue(u64),
}

/// Encodes `message` to protobuf bytes.
///
/// ```
/// use opamp_proto::{codec, v1};
/// let msg = v1::AgentToServer { sequence_num: 1, ..Default::default() };
/// let bytes = codec::encode(&msg);
/// assert_eq!(codec::decode::<v1::AgentToServer>(&bytes, &codec::Limits::default()).unwrap(), msg);
/// ```
pub fn encode<M: Message>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Appends the protobuf encoding of `message` to `buf` (reuse a buffer on hot paths).
pub fn encode_into<M: Message>(message: &M, buf: &mut Vec<u8>) {
    buf.reserve(message.encoded_len());
    // Encoding into a Vec cannot run out of space after the reserve above.
    message.encode_raw(buf);
}

/// Decodes a protobuf payload, refusing it before parsing if it exceeds `limits`.
pub fn decode<M: Message + Default>(bytes: &[u8], limits: &Limits) -> Result<M, CodecError> {
    check_size(bytes.len(), limits)?;
    merge_new(bytes)
}

/// `M::decode`, but merged into a value built here: converting prost's `Result<M, _>` into
/// ours moved the whole message once more (hundreds of bytes for `AgentToServer`), which was
/// 5-12% of decoding a heartbeat.
fn merge_new<M: Message + Default>(bytes: &[u8]) -> Result<M, CodecError> {
    let mut message = M::default();
    match message.merge(bytes) {
        Ok(()) => Ok(message),
        Err(error) => Err(CodecError::from(error)),
    }
}

/// Encodes `message` as one OpAMP WebSocket binary message (header 0 + protobuf).
///
/// ```
/// use opamp_proto::{codec, v1};
/// let msg = v1::ServerToAgent { flags: 1, ..Default::default() };
/// let frame = codec::encode_ws_frame(&msg);
/// assert_eq!(frame[0], 0x00);
/// let back: v1::ServerToAgent = codec::decode_ws_frame(&frame, &codec::Limits::default()).unwrap();
/// assert_eq!(back, msg);
/// ```
pub fn encode_ws_frame<M: Message>(message: &M) -> Vec<u8> {
    let mut frame = Vec::with_capacity(1 + message.encoded_len());
    frame.push(0x00);
    message.encode_raw(&mut frame);
    frame
}

/// Splits an OpAMP WebSocket binary message into its protobuf payload, checking the header.
pub fn ws_frame_payload<'a>(frame: &'a [u8], limits: &Limits) -> Result<&'a [u8], CodecError> {
    let (header, header_len) = read_varint(frame).map_err(CodecError::BadWsHeader)?;
    if header != WS_HEADER {
        return Err(CodecError::BadWsHeader(WsHeaderError::UnknownValue(header)));
    }
    let payload = &frame[header_len..];
    check_size(payload.len(), limits)?;
    Ok(payload)
}

/// Decodes an OpAMP WebSocket binary message (header must be 0).
pub fn decode_ws_frame<M: Message + Default>(
    frame: &[u8],
    limits: &Limits,
) -> Result<M, CodecError> {
    let payload = ws_frame_payload(frame, limits)?;
    merge_new(payload)
}

fn check_size(size: usize, limits: &Limits) -> Result<(), CodecError> {
    if size > limits.max_message_size {
        return Err(CodecError::TooLarge {
            size,
            limit: limits.max_message_size,
        });
    }
    Ok(())
}

fn read_varint(bytes: &[u8]) -> Result<(u64, usize), WsHeaderError> {
    if bytes.is_empty() {
        return Err(WsHeaderError::Empty);
    }
    let mut value: u64 = 0;
    for (index, byte) in bytes.iter().take(MAX_VARINT_LEN).enumerate() {
        let low = u64::from(byte & 0x7f);
        // The tenth byte may only carry the top bit of a u64.
        if index == MAX_VARINT_LEN - 1 && low > 1 {
            return Err(WsHeaderError::BadVarint);
        }
        value |= low << (7 * index);
        if byte & 0x80 == 0 {
            return Ok((value, index + 1));
        }
    }
    Err(WsHeaderError::BadVarint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn oversize_payload_is_refused_before_parsing() {
        let msg = v1::AgentToServer {
            instance_uid: vec![1; 16],
            ..Default::default()
        };
        let bytes = encode(&msg);
        let limits = Limits::with_max_message_size(bytes.len() - 1);
        assert_eq!(
            decode::<v1::AgentToServer>(&bytes, &limits),
            Err(CodecError::TooLarge {
                size: bytes.len(),
                limit: bytes.len() - 1
            })
        );
        let frame = encode_ws_frame(&msg);
        assert!(matches!(
            decode_ws_frame::<v1::AgentToServer>(&frame, &limits),
            Err(CodecError::TooLarge { .. })
        ));
        let exact = Limits::with_max_message_size(bytes.len());
        assert_eq!(decode::<v1::AgentToServer>(&bytes, &exact).unwrap(), msg);
    }

    #[test]
    fn ws_header_rules() {
        let limits = Limits::default();
        assert_eq!(
            ws_frame_payload(&[], &limits),
            Err(CodecError::BadWsHeader(WsHeaderError::Empty))
        );
        assert_eq!(
            ws_frame_payload(&[0x01, 0x08, 0x01], &limits),
            Err(CodecError::BadWsHeader(WsHeaderError::UnknownValue(1)))
        );
        assert_eq!(
            ws_frame_payload(&[0x80], &limits),
            Err(CodecError::BadWsHeader(WsHeaderError::BadVarint))
        );
        assert_eq!(
            ws_frame_payload(&[0xff; 11], &limits),
            Err(CodecError::BadWsHeader(WsHeaderError::BadVarint))
        );
        // A non-minimal encoding of 0 is still the value 0.
        assert_eq!(
            ws_frame_payload(&[0x80, 0x00, 0x10], &limits),
            Ok(&[0x10][..])
        );
        // A header-only frame is an empty (all-default) message.
        assert_eq!(
            decode_ws_frame::<v1::ServerToAgent>(&[0x00], &limits).unwrap(),
            v1::ServerToAgent::default()
        );
    }

    #[test]
    fn malformed_protobuf_is_an_error() {
        // Field 1 (bytes) claiming 100 bytes with only 2 present.
        let truncated = [0x0a, 100, 1, 2];
        assert!(matches!(
            decode::<v1::AgentToServer>(&truncated, &Limits::default()),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn encode_into_appends() {
        let msg = v1::AgentToServer {
            sequence_num: 5,
            ..Default::default()
        };
        let mut buf = vec![0xAA];
        encode_into(&msg, &mut buf);
        assert_eq!(buf[0], 0xAA);
        assert_eq!(&buf[1..], encode(&msg).as_slice());
    }
}
