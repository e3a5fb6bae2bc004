//! With the `arbitrary` feature, fuzzers build structured `AgentToServer` and `ServerToAgent`
//! values; every such value encodes within the codec's limits and decodes back equal.

use arbitrary::{Arbitrary, Unstructured};
use opamp_proto::codec::{self, Limits};
use opamp_proto::v1::{AgentToServer, ServerToAgent};

/// Deterministic filler bytes (a 64-bit LCG), so a failure reproduces.
fn fuzz_input(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        })
        .collect()
}

fn round_trips<M>(message: &M) -> bool
where
    M: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    let encoded = codec::encode(message);
    let back =
        codec::decode::<M>(&encoded, &Limits::default()).expect("an encoded message decodes");
    // NaN in a double field never equals itself.
    back == *message || format!("{message:?}").contains("NaN")
}

#[test]
fn structured_messages_round_trip_through_the_codec() {
    let mut non_empty = 0;
    for seed in 0..300 {
        let input = fuzz_input(seed, 2048);
        let mut bytes = Unstructured::new(&input);
        let report = AgentToServer::arbitrary(&mut bytes).expect("enough input");
        assert!(round_trips(&report), "seed {seed}: {report:?}");
        let answer = ServerToAgent::arbitrary(&mut bytes).expect("enough input");
        assert!(round_trips(&answer), "seed {seed}: {answer:?}");
        if report != AgentToServer::default() {
            non_empty += 1;
        }
    }
    // The generator really builds messages, not only empty defaults.
    assert!(non_empty > 250, "{non_empty} non-empty reports");
}
