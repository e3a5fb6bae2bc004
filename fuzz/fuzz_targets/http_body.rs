//! HTTP request bodies as the server receives them: plain or gzip, with the decompressed
//! size limit. Never panics; a body over the limit after
//! decompression is refused with 413, never decoded; within the limit, gzip changes nothing.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use opamp_proto::codec::{self, Limits};
use prost::Message;
use opamp_transport::server::decode_agent_body;

/// Small enough that the fuzzer reaches it with compressible input.
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::with_max_message_size(LIMIT);
    // The raw bytes, as a plain body and as a (probably corrupt) gzip body.
    for gzip in [false, true] {
        let _ = decode_agent_body(data, gzip, &limits);
    }
    // The same bytes gzip-compressed: accepted exactly when they decode within the limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("writing to a Vec");
    let compressed = encoder.finish().expect("finishing a Vec");
    let result = decode_agent_body(&compressed, true, &limits);
    if data.len() > LIMIT {
        let refusal = result.expect_err("over the decompressed limit must be refused");
        assert_eq!(refusal.status, 413);
    } else {
        let plain = codec::decode::<opamp_proto::v1::AgentToServer>(data, &limits).ok();
        let gzipped = result.ok();
        assert_eq!(gzipped.is_some(), plain.is_some());
        if let (Some(gzipped), Some(plain)) = (gzipped, plain) {
            // Neither equality nor re-encoded bytes alone will do: a NaN double is not equal
            // to itself, and map fields (HashMaps) re-encode in a different order each time.
            assert_eq!(gzipped.encoded_len(), plain.encoded_len());
            #[allow(clippy::eq_op)] // false exactly when a NaN is inside
            let comparable = plain == plain;
            if comparable {
                assert_eq!(gzipped, plain);
            }
        }
    }
});
