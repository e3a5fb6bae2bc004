//! Server-side reading of an arbitrary `PackageStatuses` message.
//!
//! `parse_package_statuses` never panics, and whatever it accepts survives a round trip
//! through `PackageStatusesBuilder` unchanged (the typed form loses nothing it promises to keep).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opamp_packages::{PackageStatusesBuilder, parse_package_statuses};
use opamp_proto::v1;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(statuses) = v1::PackageStatuses::decode(data) else {
        return;
    };
    let Ok(parsed) = parse_package_statuses(&statuses) else {
        return;
    };
    assert_eq!(parsed.packages.len(), statuses.packages.len());
    let mut builder = PackageStatusesBuilder::new(parsed.server_provided_all_packages_hash.clone());
    for (key, state) in &parsed.packages {
        assert_eq!(state.to_proto(key), statuses.packages[key.wire_key()]);
        builder = builder.package(key.clone(), state.clone());
    }
    if let Some(message) = &parsed.error_message {
        builder = builder.error_message(message.clone());
    }
    let rebuilt = builder.build();
    assert_eq!(rebuilt, statuses, "accepted statuses rebuild differently");
    let again = parse_package_statuses(&rebuilt).expect("rebuilt statuses parse");
    assert_eq!(again, parsed);
});
