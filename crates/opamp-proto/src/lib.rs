//! OpAMP protocol types.
#![forbid(unsafe_code)]

/// Generated protobuf types for package `opamp.proto.v1`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/opamp.proto.v1.rs"));
}
