// The unmodified Azure Node DPS device SDK with its TPM security client, as a device runs it:
//   node device-sdk.js ek        prints {registrationId, endorsementKey} (what a factory reads)
//   node device-sdk.js register  registers and prints the result
// The SDK and tss.js take no ports: the HTTP transport always calls https://HOST/ (443) and
// tss.js reaches a TPM without /dev/tpm* at 127.0.0.1:2323. Both are redirected below, at the
// socket, to the test's service (DPS_PORT) and swtpm (TPM_PORT); nothing in the SDK is changed.
'use strict';

const net = require('net');

const redirects = { 443: Number(process.env.DPS_PORT), 2323: Number(process.env.TPM_PORT) };
const connect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...args) {
  const first = args[0];
  if (typeof first === 'number' && redirects[first]) {
    args[0] = redirects[first];
  } else if (Array.isArray(first) && first[0] && redirects[Number(first[0].port)]) {
    first[0] = { ...first[0], port: redirects[Number(first[0].port)] };
  } else if (first && typeof first === 'object' && redirects[Number(first.port)]) {
    args[0] = { ...first, port: redirects[Number(first.port)] };
  }
  return connect.apply(this, args);
};

const { ProvisioningDeviceClient } = require('azure-iot-provisioning-device');
const { Http } = require('azure-iot-provisioning-device-http');
const { TpmSecurityClient } = require('azure-iot-security-tpm');

function fail(what, err) {
  console.error(what, err && (err.message || err), err && err.result ? JSON.stringify(err.result) : '');
  process.exit(1);
}

const security = new TpmSecurityClient();
if (process.argv[2] === 'ek') {
  security.getEndorsementKey((err, ek) => {
    if (err) fail('reading the EK failed:', err);
    security.getRegistrationId((err2, registrationId) => {
      if (err2) fail('deriving the registration id failed:', err2);
      console.log(JSON.stringify({ registrationId, endorsementKey: ek.toString('base64') }));
      process.exit(0);
    });
  });
} else {
  const client = ProvisioningDeviceClient.create('localhost', process.env.DPS_ID_SCOPE, new Http(), security);
  client.register((err, result) => {
    if (err) fail('registration failed:', err);
    console.log(JSON.stringify(result));
    process.exit(0);
  });
}
