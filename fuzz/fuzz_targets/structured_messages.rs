//! Structured AgentToServer/ServerToAgent values (opamp-proto's `arbitrary` feature): each one
//! encodes, decodes back equal, and survives the WebSocket frame codec.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opamp_proto::codec::{self, Limits};
use opamp_proto::v1::{AgentToServer, ServerToAgent};

fuzz_target!(|messages: (AgentToServer, ServerToAgent)| {
    let (report, answer) = messages;
    let encoded = codec::encode(&report);
    let back = codec::decode::<AgentToServer>(&encoded, &Limits::default())
        .expect("an encoded report decodes");
    assert!(back == report || format!("{report:?}").contains("NaN"));
    let frame = codec::encode_ws_frame(&report);
    let from_frame = codec::decode_ws_frame::<AgentToServer>(&frame, &Limits::default())
        .expect("a framed report decodes");
    assert!(from_frame == back || format!("{report:?}").contains("NaN"));
    let encoded = codec::encode(&answer);
    let back = codec::decode::<ServerToAgent>(&encoded, &Limits::default())
        .expect("an encoded answer decodes");
    assert!(back == answer || format!("{answer:?}").contains("NaN"));
});
