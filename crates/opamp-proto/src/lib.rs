#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod capabilities;
pub mod codec;
mod instance_uid;
mod key_value;

pub use capabilities::{
    AgentCapabilities, AgentToServerFlags, ServerCapabilities, ServerToAgentFlags,
};
pub use codec::{CodecError, Limits};
pub use instance_uid::{InstanceUid, InstanceUidError};

/// Generated protobuf types for package `opamp.proto.v1`.
///
/// Names follow prost's conventions: enum values lose their `Type_` prefix
/// (`PackageType_TopLevel` becomes [`v1::PackageType::TopLevel`]), `oneof`s become
/// nested enums, maps are `HashMap`s and `bytes` fields are `Vec<u8>`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/opamp.proto.v1.rs"));
}
