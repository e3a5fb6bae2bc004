//! WebSocket frame codec: never panics; an accepted frame round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opamp_proto::codec::{self, Limits};
use opamp_proto::v1::{AgentToServer, ServerToAgent};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::with_max_message_size(1 << 20);
    if let Ok(message) = codec::decode_ws_frame::<AgentToServer>(data, &limits) {
        let frame = codec::encode_ws_frame(&message);
        assert_eq!(frame[0], 0);
        let back: AgentToServer =
            codec::decode_ws_frame(&frame, &Limits::default()).expect("own frame decodes");
        // NaN in a double field (AnyValue, download details) never equals itself.
        assert!(
            back == message || format!("{message:?}").contains("NaN"),
            "round trip changed the message"
        );
    }
    let _ = codec::decode_ws_frame::<ServerToAgent>(data, &limits);
});
