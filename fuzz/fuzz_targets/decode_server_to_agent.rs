//! ServerToAgent decoding: never panics; whatever decodes re-encodes and decodes equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opamp_proto::codec::{self, Limits};
use opamp_proto::v1::ServerToAgent;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::with_max_message_size(1 << 20);
    if let Ok(message) = codec::decode::<ServerToAgent>(data, &limits) {
        let again = codec::encode(&message);
        let back = codec::decode::<ServerToAgent>(&again, &Limits::default())
            .expect("re-encoded message decodes");
        // NaN in a double field (AnyValue, download details) never equals itself.
        assert!(
            back == message || format!("{message:?}").contains("NaN"),
            "round trip changed the message"
        );
    }
});
