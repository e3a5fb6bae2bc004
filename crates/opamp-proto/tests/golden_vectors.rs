//! prost must encode these messages to exactly the bytes Google's protobuf runtime
//! produced from the same .proto files (see golden/generate.py, checked in CI).
//! A wrong field number, type or enum value anywhere in the messages shows up here.

use std::collections::HashMap;

use opamp_proto::codec::{self, Limits};
use opamp_proto::v1;
use opamp_proto::v1::any_value::Value;

const UID: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

fn vectors() -> HashMap<String, String> {
    let text = include_str!("golden/vectors.json");
    serde_json::from_str(text).expect("vectors.json is a map of name -> hex")
}

fn kv(key: &str, value: Value) -> v1::KeyValue {
    v1::KeyValue {
        key: key.into(),
        value: Some(v1::AnyValue { value: Some(value) }),
    }
}

fn one<V>(key: &str, value: V) -> HashMap<String, V> {
    HashMap::from([(key.to_string(), value)])
}

fn config_map() -> v1::AgentConfigMap {
    v1::AgentConfigMap {
        config_map: one(
            "collector.yaml",
            v1::AgentConfigFile {
                body: b"receivers: {}\n".to_vec(),
                content_type: "text/yaml".into(),
            },
        ),
    }
}

fn agent_heartbeat() -> v1::AgentToServer {
    v1::AgentToServer {
        instance_uid: UID.to_vec(),
        sequence_num: 7,
        capabilities: 0x2009,
        ..Default::default()
    }
}

fn agent_full_report() -> v1::AgentToServer {
    let description = v1::AgentDescription {
        identifying_attributes: vec![
            kv("service.name", Value::StringValue("otelcol-contrib".into())),
            kv("service.version", Value::StringValue("0.115.0".into())),
        ],
        non_identifying_attributes: vec![
            kv("bool", Value::BoolValue(true)),
            kv("int", Value::IntValue(-42)),
            kv("double", Value::DoubleValue(1.5)),
            kv("bytes", Value::BytesValue(vec![0x00, 0xff])),
            kv(
                "array",
                Value::ArrayValue(v1::ArrayValue {
                    values: vec![v1::AnyValue {
                        value: Some(Value::IntValue(1)),
                    }],
                }),
            ),
            kv(
                "kvlist",
                Value::KvlistValue(v1::KeyValueList {
                    values: vec![kv("k", Value::StringValue("v".into()))],
                }),
            ),
        ],
    };
    let health = v1::ComponentHealth {
        healthy: true,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        last_error: "none".into(),
        status: "StatusOK".into(),
        status_time_unix_nano: 1_700_000_001_000_000_000,
        component_health_map: one(
            "pipeline:traces",
            v1::ComponentHealth {
                healthy: false,
                last_error: "exporter down".into(),
                ..Default::default()
            },
        ),
        attributes: vec![v1::KeyValue::string("component.kind", "collector")],
    };
    v1::AgentToServer {
        instance_uid: UID.to_vec(),
        sequence_num: 1,
        agent_description: Some(description),
        capabilities: 0xFFFF,
        health: Some(health),
        effective_config: Some(v1::EffectiveConfig {
            config_map: Some(config_map()),
        }),
        remote_config_status: Some(v1::RemoteConfigStatus {
            last_remote_config_hash: vec![1, 2],
            status: v1::RemoteConfigStatuses::Failed as i32,
            error_message: "bad yaml".into(),
        }),
        package_statuses: Some(v1::PackageStatuses {
            packages: one(
                "otelcol",
                v1::PackageStatus {
                    name: "otelcol".into(),
                    agent_has_version: "1.0.0".into(),
                    agent_has_hash: vec![0xaa; 4],
                    server_offered_version: "1.1.0".into(),
                    server_offered_hash: vec![0xbb; 4],
                    status: v1::PackageStatusEnum::Downloading as i32,
                    error_message: String::new(),
                    download_details: Some(v1::PackageDownloadDetails {
                        download_percent: 42.5,
                        download_bytes_per_second: 1_048_576.0,
                    }),
                },
            ),
            server_provided_all_packages_hash: vec![0xcc; 4],
            error_message: "partial".into(),
        }),
        agent_disconnect: Some(v1::AgentDisconnect {}),
        flags: v1::AgentToServerFlags::RequestInstanceUid as u64,
        connection_settings_request: Some(v1::ConnectionSettingsRequest {
            opamp: Some(v1::OpAmpConnectionSettingsRequest {
                certificate_request: Some(v1::CertificateRequest {
                    csr: b"CSR".to_vec(),
                }),
            }),
        }),
        custom_capabilities: Some(v1::CustomCapabilities {
            capabilities: vec!["io.example.a".into(), "io.example.b".into()],
        }),
        custom_message: Some(v1::CustomMessage {
            capability: "io.example.a".into(),
            r#type: "ping".into(),
            data: vec![1],
        }),
        available_components: Some(v1::AvailableComponents {
            components: one(
                "receivers",
                v1::ComponentDetails {
                    metadata: vec![kv("code.namespace", Value::StringValue("otlp".into()))],
                    sub_component_map: one(
                        "otlp",
                        v1::ComponentDetails {
                            metadata: vec![kv("stability", Value::StringValue("stable".into()))],
                            sub_component_map: HashMap::new(),
                        },
                    ),
                },
            ),
            hash: vec![0xdd],
        }),
        connection_settings_status: Some(v1::ConnectionSettingsStatus {
            last_connection_settings_hash: vec![0xee],
            status: v1::ConnectionSettingsStatuses::Applying as i32,
            error_message: "wait".into(),
        }),
    }
}

fn server_full_offer() -> v1::ServerToAgent {
    let headers = v1::Headers {
        headers: vec![v1::Header {
            key: "Authorization".into(),
            value: "Bearer t".into(),
        }],
    };
    let tls = v1::TlsConnectionSettings {
        ca_pem_contents: "CA".into(),
        include_system_ca_certs_pool: true,
        insecure_skip_verify: true,
        min_version: "1.2".into(),
        max_version: "1.3".into(),
        cipher_suites: vec!["TLS_AES_128_GCM_SHA256".into()],
    };
    let cert = v1::TlsCertificate {
        cert: b"C".to_vec(),
        private_key: b"K".to_vec(),
        ca_cert: b"A".to_vec(),
    };
    let proxy = v1::ProxyConnectionSettings {
        url: "http://proxy:3128".into(),
        connect_headers: Some(headers.clone()),
    };
    let telemetry = v1::TelemetryConnectionSettings {
        destination_endpoint: "https://otlp:4318".into(),
        headers: Some(headers.clone()),
        certificate: Some(cert.clone()),
        tls: Some(tls.clone()),
        proxy: Some(proxy.clone()),
    };
    v1::ServerToAgent {
        instance_uid: UID.to_vec(),
        error_response: Some(v1::ServerErrorResponse {
            r#type: v1::ServerErrorResponseType::Unavailable as i32,
            error_message: "busy".into(),
            details: Some(v1::server_error_response::Details::RetryInfo(
                v1::RetryInfo {
                    retry_after_nanoseconds: 5_000_000_000,
                },
            )),
        }),
        remote_config: Some(v1::AgentRemoteConfig {
            config: Some(config_map()),
            config_hash: vec![0x10],
        }),
        connection_settings: Some(v1::ConnectionSettingsOffers {
            hash: vec![0x20],
            opamp: Some(v1::OpAmpConnectionSettings {
                destination_endpoint: "wss://opamp:4320/v1/opamp".into(),
                headers: Some(headers.clone()),
                certificate: Some(cert.clone()),
                heartbeat_interval_seconds: 30,
                tls: Some(tls.clone()),
                proxy: Some(proxy.clone()),
            }),
            own_metrics: Some(telemetry.clone()),
            own_traces: Some(telemetry.clone()),
            own_logs: Some(telemetry),
            other_connections: one(
                "kafka",
                v1::OtherConnectionSettings {
                    destination_endpoint: "kafka:9092".into(),
                    headers: Some(headers.clone()),
                    certificate: Some(cert),
                    other_settings: one("acks", "all".to_string()),
                    tls: Some(tls),
                    proxy: Some(proxy),
                },
            ),
        }),
        packages_available: Some(v1::PackagesAvailable {
            packages: one(
                "otelcol-contrib",
                v1::PackageAvailable {
                    r#type: v1::PackageType::Addon as i32,
                    version: "0.115.0".into(),
                    file: Some(v1::DownloadableFile {
                        download_url: "https://127.0.0.1:4320/packages/otelcol-contrib/0.115.0"
                            .into(),
                        content_hash: (0..32).collect(),
                        signature: vec![0x30; 8],
                        headers: Some(headers),
                    }),
                    hash: vec![0x40; 32],
                },
            ),
            all_packages_hash: vec![0x50; 32],
        }),
        flags: 0x3,
        capabilities: 0x7F,
        agent_identification: Some(v1::AgentIdentification {
            new_instance_uid: (16..32).collect(),
        }),
        command: Some(v1::ServerToAgentCommand {
            r#type: v1::CommandType::Restart as i32,
        }),
        custom_capabilities: Some(v1::CustomCapabilities {
            capabilities: vec!["io.example.a".into()],
        }),
        custom_message: Some(v1::CustomMessage {
            capability: "io.example.a".into(),
            r#type: "pong".into(),
            data: vec![2],
        }),
    }
}

fn check<M>(name: &str, message: &M)
where
    M: prost::Message + Default + PartialEq + std::fmt::Debug,
{
    let vectors = vectors();
    let expected = vectors
        .get(name)
        .unwrap_or_else(|| panic!("no golden vector named {name}"));
    let ours = hex::encode(codec::encode(message));
    assert_eq!(
        &ours, expected,
        "prost encoding of {name} differs from protoc's"
    );
    let decoded: M = codec::decode(&hex::decode(expected).expect("hex"), &Limits::default())
        .expect("golden bytes decode");
    assert_eq!(&decoded, message, "decoding the golden bytes of {name}");
}

#[test]
fn agent_heartbeat_matches_independent_encoder() {
    check("agent_heartbeat", &agent_heartbeat());
}

#[test]
fn agent_full_report_matches_independent_encoder() {
    check("agent_full_report", &agent_full_report());
}

#[test]
fn server_full_offer_matches_independent_encoder() {
    check("server_full_offer", &server_full_offer());
}

#[test]
fn server_empty_matches_independent_encoder() {
    check("server_empty", &v1::ServerToAgent::default());
}

#[test]
fn every_golden_vector_is_checked() {
    let mut names: Vec<_> = vectors().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agent_full_report",
            "agent_heartbeat",
            "server_empty",
            "server_full_offer"
        ]
    );
}

#[test]
fn truncated_golden_bytes_never_panic() {
    for hex_bytes in vectors().values() {
        let bytes = hex::decode(hex_bytes).unwrap();
        for cut in 0..bytes.len() {
            // Either an error or a (partial) message; never a panic.
            let _ = codec::decode::<v1::AgentToServer>(&bytes[..cut], &Limits::default());
            let _ = codec::decode::<v1::ServerToAgent>(&bytes[..cut], &Limits::default());
        }
    }
}
