//! Property tests: every message survives encode -> decode unchanged, with every
//! field of AgentToServer and ServerToAgent populated, through both the plain
//! codec and the WebSocket frame codec; arbitrary bytes never panic a decoder.

use std::collections::HashMap;

use opamp_proto::codec::{self, Limits};
use opamp_proto::v1;
use opamp_proto::v1::any_value::Value;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..max)
}

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._/-]{0,12}"
}

fn finite() -> impl Strategy<Value = f64> {
    -1.0e12f64..1.0e12
}

fn any_value() -> impl Strategy<Value = v1::AnyValue> {
    let leaf = prop_oneof![
        text().prop_map(Value::StringValue),
        any::<bool>().prop_map(Value::BoolValue),
        any::<i64>().prop_map(Value::IntValue),
        finite().prop_map(Value::DoubleValue),
        bytes(8).prop_map(Value::BytesValue),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        let any = inner.prop_map(|value| v1::AnyValue { value: Some(value) });
        prop_oneof![
            vec(any.clone(), 0..3).prop_map(|values| Value::ArrayValue(v1::ArrayValue { values })),
            vec((text(), any), 0..3).prop_map(|pairs| {
                Value::KvlistValue(v1::KeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(key, value)| v1::KeyValue {
                            key,
                            value: Some(value),
                        })
                        .collect(),
                })
            }),
        ]
    });
    value.prop_map(|value| v1::AnyValue { value: Some(value) })
}

fn key_values() -> impl Strategy<Value = Vec<v1::KeyValue>> {
    vec((text(), any_value()), 1..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(key, value)| v1::KeyValue {
                key,
                value: Some(value),
            })
            .collect()
    })
}

fn health() -> impl Strategy<Value = v1::ComponentHealth> {
    let leaf = (
        any::<bool>(),
        any::<u64>(),
        text(),
        text(),
        any::<u64>(),
        key_values(),
    )
        .prop_map(
            |(healthy, start, last_error, status, status_time, attributes)| v1::ComponentHealth {
                healthy,
                start_time_unix_nano: start,
                last_error,
                status,
                status_time_unix_nano: status_time,
                component_health_map: HashMap::new(),
                attributes,
            },
        );
    leaf.prop_recursive(3, 20, 3, |inner| {
        (inner.clone(), hash_map(text(), inner, 1..3)).prop_map(|(mut node, children)| {
            node.component_health_map = children;
            node
        })
    })
}

fn config_map() -> impl Strategy<Value = v1::AgentConfigMap> {
    hash_map(text(), (bytes(32), text()), 1..3).prop_map(|files| v1::AgentConfigMap {
        config_map: files
            .into_iter()
            .map(|(name, (body, content_type))| (name, v1::AgentConfigFile { body, content_type }))
            .collect(),
    })
}

fn package_status() -> impl Strategy<Value = v1::PackageStatus> {
    (
        text(),
        text(),
        bytes(32),
        text(),
        bytes(32),
        0i32..5,
        text(),
        finite(),
        finite(),
    )
        .prop_map(
            |(name, has_v, has_h, off_v, off_h, status, error, percent, rate)| v1::PackageStatus {
                name,
                agent_has_version: has_v,
                agent_has_hash: has_h,
                server_offered_version: off_v,
                server_offered_hash: off_h,
                status,
                error_message: error,
                download_details: Some(v1::PackageDownloadDetails {
                    download_percent: percent,
                    download_bytes_per_second: rate,
                }),
            },
        )
}

fn component_details() -> impl Strategy<Value = v1::ComponentDetails> {
    let leaf = key_values().prop_map(|metadata| v1::ComponentDetails {
        metadata,
        sub_component_map: HashMap::new(),
    });
    leaf.prop_recursive(2, 8, 2, |inner| {
        (key_values(), hash_map(text(), inner, 1..3)).prop_map(|(metadata, sub)| {
            v1::ComponentDetails {
                metadata,
                sub_component_map: sub,
            }
        })
    })
}

fn custom_message() -> impl Strategy<Value = v1::CustomMessage> {
    (text(), text(), bytes(16)).prop_map(|(capability, r#type, data)| v1::CustomMessage {
        capability,
        r#type,
        data,
    })
}

fn agent_to_server() -> impl Strategy<Value = v1::AgentToServer> {
    let status = (
        (
            bytes(16),
            any::<u64>(),
            key_values(),
            key_values(),
            any::<u64>(),
            health(),
        ),
        (config_map(), bytes(32), 0i32..4, text()),
        (hash_map(text(), package_status(), 1..4), bytes(32), text()),
    );
    let rest = (
        any::<u64>(),
        bytes(64),
        vec(text(), 1..3),
        custom_message(),
        hash_map(text(), component_details(), 1..3),
        bytes(32),
        (bytes(32), 0i32..4, text()),
    );
    (status, rest).prop_map(|(status, rest)| {
        let (
            (uid, seq, ident, non_ident, caps, health),
            (config, rc_hash, rc_status, rc_err),
            pkgs,
        ) = status;
        let (flags, csr, custom_caps, custom, components, comp_hash, (cs_hash, cs_status, cs_err)) =
            rest;
        v1::AgentToServer {
            instance_uid: uid,
            sequence_num: seq,
            agent_description: Some(v1::AgentDescription {
                identifying_attributes: ident,
                non_identifying_attributes: non_ident,
            }),
            capabilities: caps,
            health: Some(health),
            effective_config: Some(v1::EffectiveConfig {
                config_map: Some(config),
            }),
            remote_config_status: Some(v1::RemoteConfigStatus {
                last_remote_config_hash: rc_hash,
                status: rc_status,
                error_message: rc_err,
            }),
            package_statuses: Some(v1::PackageStatuses {
                packages: pkgs.0,
                server_provided_all_packages_hash: pkgs.1,
                error_message: pkgs.2,
            }),
            agent_disconnect: Some(v1::AgentDisconnect {}),
            flags,
            connection_settings_request: Some(v1::ConnectionSettingsRequest {
                opamp: Some(v1::OpAmpConnectionSettingsRequest {
                    certificate_request: Some(v1::CertificateRequest { csr }),
                }),
            }),
            custom_capabilities: Some(v1::CustomCapabilities {
                capabilities: custom_caps,
            }),
            custom_message: Some(custom),
            available_components: Some(v1::AvailableComponents {
                components,
                hash: comp_hash,
            }),
            connection_settings_status: Some(v1::ConnectionSettingsStatus {
                last_connection_settings_hash: cs_hash,
                status: cs_status,
                error_message: cs_err,
            }),
        }
    })
}

fn headers() -> impl Strategy<Value = v1::Headers> {
    vec((text(), text()), 1..3).prop_map(|pairs| v1::Headers {
        headers: pairs
            .into_iter()
            .map(|(key, value)| v1::Header { key, value })
            .collect(),
    })
}

fn tls() -> impl Strategy<Value = v1::TlsConnectionSettings> {
    (
        text(),
        any::<bool>(),
        any::<bool>(),
        text(),
        text(),
        vec(text(), 1..3),
    )
        .prop_map(
            |(ca, system, insecure, min, max, suites)| v1::TlsConnectionSettings {
                ca_pem_contents: ca,
                include_system_ca_certs_pool: system,
                insecure_skip_verify: insecure,
                min_version: min,
                max_version: max,
                cipher_suites: suites,
            },
        )
}

fn certificate() -> impl Strategy<Value = v1::TlsCertificate> {
    (bytes(16), bytes(16), bytes(16)).prop_map(|(cert, private_key, ca_cert)| v1::TlsCertificate {
        cert,
        private_key,
        ca_cert,
    })
}

fn proxy() -> impl Strategy<Value = v1::ProxyConnectionSettings> {
    (text(), headers()).prop_map(|(url, headers)| v1::ProxyConnectionSettings {
        url,
        connect_headers: Some(headers),
    })
}

fn telemetry() -> impl Strategy<Value = v1::TelemetryConnectionSettings> {
    (text(), headers(), certificate(), tls(), proxy()).prop_map(|(endpoint, h, c, t, p)| {
        v1::TelemetryConnectionSettings {
            destination_endpoint: endpoint,
            headers: Some(h),
            certificate: Some(c),
            tls: Some(t),
            proxy: Some(p),
        }
    })
}

fn other_connection() -> impl Strategy<Value = v1::OtherConnectionSettings> {
    (
        text(),
        headers(),
        certificate(),
        hash_map(text(), text(), 1..3),
        tls(),
        proxy(),
    )
        .prop_map(
            |(endpoint, h, c, other, t, p)| v1::OtherConnectionSettings {
                destination_endpoint: endpoint,
                headers: Some(h),
                certificate: Some(c),
                other_settings: other,
                tls: Some(t),
                proxy: Some(p),
            },
        )
}

fn connection_offers() -> impl Strategy<Value = v1::ConnectionSettingsOffers> {
    let opamp = (
        text(),
        headers(),
        certificate(),
        any::<u64>(),
        tls(),
        proxy(),
    )
        .prop_map(
            |(endpoint, h, c, heartbeat, t, p)| v1::OpAmpConnectionSettings {
                destination_endpoint: endpoint,
                headers: Some(h),
                certificate: Some(c),
                heartbeat_interval_seconds: heartbeat,
                tls: Some(t),
                proxy: Some(p),
            },
        );
    (
        bytes(32),
        opamp,
        telemetry(),
        telemetry(),
        telemetry(),
        hash_map(text(), other_connection(), 1..3),
    )
        .prop_map(
            |(hash, opamp, metrics, traces, logs, other)| v1::ConnectionSettingsOffers {
                hash,
                opamp: Some(opamp),
                own_metrics: Some(metrics),
                own_traces: Some(traces),
                own_logs: Some(logs),
                other_connections: other,
            },
        )
}

fn package_available() -> impl Strategy<Value = v1::PackageAvailable> {
    (
        0i32..2,
        text(),
        text(),
        bytes(32),
        bytes(64),
        headers(),
        bytes(32),
    )
        .prop_map(
            |(kind, version, url, content_hash, signature, headers, hash)| v1::PackageAvailable {
                r#type: kind,
                version,
                file: Some(v1::DownloadableFile {
                    download_url: url,
                    content_hash,
                    signature,
                    headers: Some(headers),
                }),
                hash,
            },
        )
}

fn server_to_agent() -> impl Strategy<Value = v1::ServerToAgent> {
    let first = (
        bytes(16),
        (0i32..3, text(), any::<u64>()),
        (config_map(), bytes(32)),
        connection_offers(),
        (hash_map(text(), package_available(), 1..4), bytes(32)),
    );
    let second = (
        any::<u64>(),
        any::<u64>(),
        bytes(16),
        vec(text(), 1..3),
        custom_message(),
    );
    (first, second).prop_map(|(first, second)| {
        let (uid, (err_type, err_msg, retry), (config, config_hash), offers, (packages, all_hash)) =
            first;
        let (flags, caps, new_uid, custom_caps, custom) = second;
        v1::ServerToAgent {
            instance_uid: uid,
            error_response: Some(v1::ServerErrorResponse {
                r#type: err_type,
                error_message: err_msg,
                details: Some(v1::server_error_response::Details::RetryInfo(
                    v1::RetryInfo {
                        retry_after_nanoseconds: retry,
                    },
                )),
            }),
            remote_config: Some(v1::AgentRemoteConfig {
                config: Some(config),
                config_hash,
            }),
            connection_settings: Some(offers),
            packages_available: Some(v1::PackagesAvailable {
                packages,
                all_packages_hash: all_hash,
            }),
            flags,
            capabilities: caps,
            agent_identification: Some(v1::AgentIdentification {
                new_instance_uid: new_uid,
            }),
            command: Some(v1::ServerToAgentCommand { r#type: 0 }),
            custom_capabilities: Some(v1::CustomCapabilities {
                capabilities: custom_caps,
            }),
            custom_message: Some(custom),
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn agent_to_server_round_trips(message in agent_to_server()) {
        let limits = Limits::default();
        let bytes = codec::encode(&message);
        prop_assert_eq!(&codec::decode::<v1::AgentToServer>(&bytes, &limits).unwrap(), &message);
        let frame = codec::encode_ws_frame(&message);
        prop_assert_eq!(&codec::decode_ws_frame::<v1::AgentToServer>(&frame, &limits).unwrap(), &message);
    }

    #[test]
    fn server_to_agent_round_trips(message in server_to_agent()) {
        let limits = Limits::default();
        let bytes = codec::encode(&message);
        prop_assert_eq!(&codec::decode::<v1::ServerToAgent>(&bytes, &limits).unwrap(), &message);
        let frame = codec::encode_ws_frame(&message);
        prop_assert_eq!(&codec::decode_ws_frame::<v1::ServerToAgent>(&frame, &limits).unwrap(), &message);
    }

    #[test]
    fn truncations_of_valid_messages_never_panic(message in agent_to_server(), cut in any::<prop::sample::Index>()) {
        let bytes = codec::encode(&message);
        let cut = cut.index(bytes.len() + 1);
        let _ = codec::decode::<v1::AgentToServer>(&bytes[..cut], &Limits::default());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..512)) {
        let limits = Limits::default();
        let _ = codec::decode::<v1::AgentToServer>(&data, &limits);
        let _ = codec::decode::<v1::ServerToAgent>(&data, &limits);
        let _ = codec::decode_ws_frame::<v1::AgentToServer>(&data, &limits);
        let _ = codec::decode_ws_frame::<v1::ServerToAgent>(&data, &limits);
    }

    #[test]
    fn any_limit_below_the_size_refuses(message in server_to_agent()) {
        let bytes = codec::encode(&message);
        let limits = Limits::with_max_message_size(bytes.len() - 1);
        let refused = matches!(
            codec::decode::<v1::ServerToAgent>(&bytes, &limits),
            Err(codec::CodecError::TooLarge { .. })
        );
        prop_assert!(refused);
    }
}
