//! With the `serde` feature, messages render as JSON and read back unchanged.
#![cfg(feature = "serde")]

use opamp_proto::{AgentCapabilities, InstanceUid, v1};

#[test]
fn messages_round_trip_through_json() {
    let message = v1::AgentToServer {
        instance_uid: vec![7; 16],
        sequence_num: 3,
        capabilities: 0x9,
        health: Some(v1::ComponentHealth {
            healthy: true,
            last_error: "none".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let json = serde_json::to_string(&message).unwrap();
    assert!(json.contains("\"sequenceNum\":3"), "{json}");
    let back: v1::AgentToServer = serde_json::from_str(&json).unwrap();
    assert_eq!(back, message);
}

#[test]
fn helper_types_serialise() {
    let uid = InstanceUid::from([0x11; 16]);
    assert_eq!(
        serde_json::to_string(&uid).unwrap(),
        "\"11111111-1111-1111-1111-111111111111\""
    );
    let caps = AgentCapabilities::REPORTS_STATUS | AgentCapabilities::ACCEPTS_PACKAGES;
    let json = serde_json::to_string(&caps).unwrap();
    let back: AgentCapabilities = serde_json::from_str(&json).unwrap();
    assert_eq!(back, caps);
}
