#!/usr/bin/env python3
"""Independent encoder for opamp-proto's golden vectors.

Compiles the workspace's proto/ files with grpcio-tools (Google's protoc, not
our build), builds the messages described in MESSAGES below with Google's
protobuf runtime, and writes their encodings as hex to vectors.json. The Rust
test `golden_vectors` builds the same messages with prost and must produce the
same bytes, which proves our field numbers and types match the .proto files.

  python3 generate.py          # rewrite vectors.json
  python3 generate.py --check  # fail if vectors.json differs (CI)

Maps hold at most one entry, and no map value is an empty message (protoc
writes an empty value field, prost omits it; both decode the same), so the
bytes are defined for every encoder.
"""
import json
import pathlib
import sys
import tempfile

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parents[1] / "proto"
VECTORS = HERE / "vectors.json"
UID = bytes(range(16))


def compile_protos(out_dir):
    args = [
        "protoc",
        f"-I{PROTO_ROOT.resolve()}",
        f"--python_out={out_dir}",
        "opamp/v1/anyvalue.proto",
        "opamp/v1/opamp.proto",
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, out_dir)
    from opamp.v1 import anyvalue_pb2, opamp_pb2  # noqa: E402

    return anyvalue_pb2, opamp_pb2


def kv(av, key, **value):
    return av.KeyValue(key=key, value=av.AnyValue(**value))


def messages(av, pb):
    heartbeat = pb.AgentToServer(instance_uid=UID, sequence_num=7, capabilities=0x2009)

    description = pb.AgentDescription(
        identifying_attributes=[
            kv(av, "service.name", string_value="otelcol-contrib"),
            kv(av, "service.version", string_value="0.115.0"),
        ],
        non_identifying_attributes=[
            kv(av, "bool", bool_value=True),
            kv(av, "int", int_value=-42),
            kv(av, "double", double_value=1.5),
            kv(av, "bytes", bytes_value=b"\x00\xff"),
            kv(av, "array", array_value=av.ArrayValue(values=[av.AnyValue(int_value=1)])),
            kv(av, "kvlist", kvlist_value=av.KeyValueList(values=[kv(av, "k", string_value="v")])),
        ],
    )
    health = pb.ComponentHealth(
        healthy=True,
        start_time_unix_nano=1_700_000_000_000_000_000,
        last_error="none",
        status="StatusOK",
        status_time_unix_nano=1_700_000_001_000_000_000,
        component_health_map={
            "pipeline:traces": pb.ComponentHealth(healthy=False, last_error="exporter down")
        },
        attributes=[kv(av, "component.kind", string_value="collector")],
    )
    config_map = pb.AgentConfigMap(
        config_map={"collector.yaml": pb.AgentConfigFile(body=b"receivers: {}\n", content_type="text/yaml")}
    )
    full_report = pb.AgentToServer(
        instance_uid=UID,
        sequence_num=1,
        agent_description=description,
        capabilities=0xFFFF,
        health=health,
        effective_config=pb.EffectiveConfig(config_map=config_map),
        remote_config_status=pb.RemoteConfigStatus(
            last_remote_config_hash=b"\x01\x02", status=pb.RemoteConfigStatuses_FAILED, error_message="bad yaml"
        ),
        package_statuses=pb.PackageStatuses(
            packages={
                "otelcol": pb.PackageStatus(
                    name="otelcol",
                    agent_has_version="1.0.0",
                    agent_has_hash=b"\xaa" * 4,
                    server_offered_version="1.1.0",
                    server_offered_hash=b"\xbb" * 4,
                    status=pb.PackageStatusEnum_Downloading,
                    error_message="",
                    download_details=pb.PackageDownloadDetails(
                        download_percent=42.5, download_bytes_per_second=1048576.0
                    ),
                )
            },
            server_provided_all_packages_hash=b"\xcc" * 4,
            error_message="partial",
        ),
        agent_disconnect=pb.AgentDisconnect(),
        flags=pb.AgentToServerFlags_RequestInstanceUid,
        connection_settings_request=pb.ConnectionSettingsRequest(
            opamp=pb.OpAMPConnectionSettingsRequest(certificate_request=pb.CertificateRequest(csr=b"CSR"))
        ),
        custom_capabilities=pb.CustomCapabilities(capabilities=["io.example.a", "io.example.b"]),
        custom_message=pb.CustomMessage(capability="io.example.a", type="ping", data=b"\x01"),
        available_components=pb.AvailableComponents(
            components={
                "receivers": pb.ComponentDetails(
                    metadata=[kv(av, "code.namespace", string_value="otlp")],
                    sub_component_map={
                        "otlp": pb.ComponentDetails(metadata=[kv(av, "stability", string_value="stable")])
                    },
                )
            },
            hash=b"\xdd",
        ),
        connection_settings_status=pb.ConnectionSettingsStatus(
            last_connection_settings_hash=b"\xee",
            status=pb.ConnectionSettingsStatuses_APPLYING,
            error_message="wait",
        ),
    )

    headers = pb.Headers(headers=[pb.Header(key="Authorization", value="Bearer t")])
    tls = pb.TLSConnectionSettings(
        ca_pem_contents="CA",
        include_system_ca_certs_pool=True,
        insecure_skip_verify=True,
        min_version="1.2",
        max_version="1.3",
        cipher_suites=["TLS_AES_128_GCM_SHA256"],
    )
    cert = pb.TLSCertificate(cert=b"C", private_key=b"K", ca_cert=b"A")
    proxy = pb.ProxyConnectionSettings(url="http://proxy:3128", connect_headers=headers)
    telemetry = pb.TelemetryConnectionSettings(
        destination_endpoint="https://otlp:4318", headers=headers, certificate=cert, tls=tls, proxy=proxy
    )
    offer = pb.ServerToAgent(
        instance_uid=UID,
        error_response=pb.ServerErrorResponse(
            type=pb.ServerErrorResponseType_Unavailable,
            error_message="busy",
            retry_info=pb.RetryInfo(retry_after_nanoseconds=5_000_000_000),
        ),
        remote_config=pb.AgentRemoteConfig(config=config_map, config_hash=b"\x10"),
        connection_settings=pb.ConnectionSettingsOffers(
            hash=b"\x20",
            opamp=pb.OpAMPConnectionSettings(
                destination_endpoint="wss://opamp:4320/v1/opamp",
                headers=headers,
                certificate=cert,
                heartbeat_interval_seconds=30,
                tls=tls,
                proxy=proxy,
            ),
            own_metrics=telemetry,
            own_traces=telemetry,
            own_logs=telemetry,
            other_connections={
                "kafka": pb.OtherConnectionSettings(
                    destination_endpoint="kafka:9092",
                    headers=headers,
                    certificate=cert,
                    other_settings={"acks": "all"},
                    tls=tls,
                    proxy=proxy,
                )
            },
        ),
        packages_available=pb.PackagesAvailable(
            packages={
                "otelcol-contrib": pb.PackageAvailable(
                    type=pb.PackageType_Addon,
                    version="0.115.0",
                    file=pb.DownloadableFile(
                        download_url="https://127.0.0.1:4320/packages/otelcol-contrib/0.115.0",
                        content_hash=bytes(range(32)),
                        signature=b"\x30" * 8,
                        headers=headers,
                    ),
                    hash=b"\x40" * 32,
                )
            },
            all_packages_hash=b"\x50" * 32,
        ),
        flags=pb.ServerToAgentFlags_ReportFullState | pb.ServerToAgentFlags_ReportAvailableComponents,
        capabilities=0x7F,
        agent_identification=pb.AgentIdentification(new_instance_uid=bytes(range(16, 32))),
        command=pb.ServerToAgentCommand(type=pb.CommandType_Restart),
        custom_capabilities=pb.CustomCapabilities(capabilities=["io.example.a"]),
        custom_message=pb.CustomMessage(capability="io.example.a", type="pong", data=b"\x02"),
    )
    return {
        "agent_heartbeat": heartbeat,
        "agent_full_report": full_report,
        "server_full_offer": offer,
        "server_empty": pb.ServerToAgent(),
    }


def main():
    with tempfile.TemporaryDirectory() as out_dir:
        av, pb = compile_protos(out_dir)
        vectors = {
            name: msg.SerializeToString(deterministic=True).hex()
            for name, msg in messages(av, pb).items()
        }
    text = json.dumps(vectors, indent=2, sort_keys=True) + "\n"
    if "--check" in sys.argv:
        if not VECTORS.exists() or VECTORS.read_text() != text:
            sys.exit(f"{VECTORS} differs from what the independent encoder produces; run generate.py")
        print(f"golden vectors match the independent encoder ({len(vectors)} messages)")
    else:
        VECTORS.write_text(text)
        print(f"wrote {VECTORS}")


if __name__ == "__main__":
    main()
