"""Drives the OpenTelemetry Python OpAMP client (an implementation we did not write)
against an OpAMP server given on the command line, and prints what the server answered.

Usage: python_client.py ENDPOINT [CA_FILE CLIENT_CERT CLIENT_KEY]
Prints one JSON object on stdout; exits non-zero if any exchange fails.
"""

import json
import sys

from opentelemetry._opamp.client import OpAMPClient


def main() -> int:
    endpoint = sys.argv[1]
    tls = {}
    if len(sys.argv) == 5:
        tls = {
            "tls_certificate": sys.argv[2],
            "tls_client_certificate": sys.argv[3],
            "tls_client_key": sys.argv[4],
        }
    client = OpAMPClient(
        endpoint=endpoint,
        agent_identifying_attributes={"service.name": "interop-python"},
        **tls,
    )
    first = client.send(client.build_full_state_message())
    heartbeat = client.send(client.build_heartbeat_message())
    goodbye = client.send(client.build_agent_disconnect_message())
    print(
        json.dumps(
            {
                "instance_uid": client._instance_uid.hex(),
                "first_capabilities": first.capabilities,
                "first_instance_uid": first.instance_uid.hex(),
                "heartbeat_flags": heartbeat.flags,
                "goodbye_ok": goodbye is not None,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
