// Drives Elastic's OpAMP client for Node.js (@elastic/opamp-client-node, an implementation
// we did not write) against an OpAMP server, and prints what the server answered.
//
// Usage: node node_client.js ENDPOINT [CA_FILE CLIENT_CERT CLIENT_KEY]
// Prints one JSON object on stdout after two successful exchanges (the first full report
// and a heartbeat); exits non-zero on a failed exchange or after 10 s.
'use strict';

const diagnostics = require('node:diagnostics_channel');
const fs = require('node:fs');
const {createOpAMPClient} = require('@elastic/opamp-client-node');

const [endpoint, caFile, certFile, keyFile] = process.argv.slice(2);
const connect = caFile
    ? {ca: fs.readFileSync(caFile), cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile)}
    : undefined;

const client = createOpAMPClient({
    endpoint,
    connect,
    heartbeatIntervalSeconds: 0.2,
    diagEnabled: true,
});
client.setAgentDescription({identifyingAttributes: {'service.name': 'interop-node'}});

const replies = [];
const hex = (bytes) => Buffer.from(bytes).toString('hex');
const finish = async (code, report) => {
    clearTimeout(timer);
    await client.shutdown();
    if (report) {
        process.stdout.write(JSON.stringify(report) + '\n');
    }
    process.exit(code);
};
diagnostics.subscribe('opamp-client.send.success', ({a2s, s2a}) => {
    replies.push({a2s, s2a});
    if (replies.length === 2) {
        finish(0, {
            instance_uid: hex(a2s.instanceUid),
            first_instance_uid: hex(replies[0].s2a.instanceUid),
            first_capabilities: Number(replies[0].s2a.capabilities),
            heartbeat_flags: Number(replies[1].s2a.flags),
        });
    }
});
diagnostics.subscribe('opamp-client.send.fail', ({err}) => {
    process.stderr.write(`send failed: ${err}\n`);
    finish(1);
});
const timer = setTimeout(() => {
    process.stderr.write('timed out waiting for two exchanges\n');
    finish(1);
}, 10000);
client.start();
