// Drives the unmodified Azure Node service SDK (azure-iot-provisioning-service) through every
// individual-enrollment, registration-state and enrollment-group call it offers (DPS's group
// types refused clearly; this service's TPM group accepted), against the service under test. Run by tests/it/node_service_sdk.rs, which installs the SDK and passes:
//   DPS_PORT, DPS_CA_FILE, DPS_SAS (a service SAS), DPS_EK (base64 TPM2B_PUBLIC of a test EK, and
//   DPS_EK_2..4 for the bulk items), DPS_REGISTERED (the registration id of a provisioned device).
// The SDK always talks to port 443 of its host; the agent below only redirects its connections to
// the test's port (the SDK's documented `setOptions({ http: { agent } })`), changing nothing else.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const { ProvisioningServiceClient } = require('azure-iot-provisioning-service');
const { RestApiClient } = require('azure-iot-http-base');

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const port = Number(env('DPS_PORT'));
const ca = fs.readFileSync(env('DPS_CA_FILE'));
const config = { host: 'localhost', sharedAccessSignature: env('DPS_SAS') };
const rest = new RestApiClient(config, 'dps-tpm-compat-test');
const agent = new https.Agent({ ca });
const connect = agent.createConnection.bind(agent);
agent.createConnection = (options, callback) => connect({ ...options, port }, callback);
rest.setOptions({ http: { agent }, ca });
const client = new ProvisioningServiceClient(config, rest);

const tpm = (ek) => ({ type: 'tpm', tpm: { endorsementKey: ek } });
const status = (err) => err.response && err.response.statusCode;

// runBulkEnrollmentOperation settles its promise only when given a callback (1.11.2:
// dist/provisioningserviceclient.js calls back `if (callback)`), so it is called that way.
const bulk = (operation) => new Promise((resolve, reject) => {
  client.runBulkEnrollmentOperation(operation, (err, result) => (err ? reject(err) : resolve(result)));
});

async function refused(what, promise, expected) {
  try {
    await promise;
  } catch (err) {
    assert.equal(status(err), expected, `${what}: ${err}`);
    console.log(`ok ${what}: ${expected} ${err.name}`);
    return err;
  }
  assert.fail(`${what} succeeded`);
}

async function main() {
  // Individual enrollments: create, get, update with the etag, a stale etag, attestation.
  const created = (await client.createOrUpdateIndividualEnrollment({
    registrationId: 'node-1', attestation: tpm(env('DPS_EK')), provisioningStatus: 'enabled',
  })).responseBody;
  assert.equal(created.registrationId, 'node-1');
  const fetched = (await client.getIndividualEnrollment('node-1')).responseBody;
  assert.equal(fetched.etag, created.etag);
  const updated = (await client.createOrUpdateIndividualEnrollment({
    ...fetched, provisioningStatus: 'disabled',
  })).responseBody;
  assert.equal(updated.provisioningStatus, 'disabled');
  assert.notEqual(updated.etag, created.etag);
  await refused('stale etag', client.createOrUpdateIndividualEnrollment({ ...fetched, deviceId: 'x' }), 412);
  const mechanism = (await client.getIndividualEnrollmentAttestationMechanism('node-1')).responseBody;
  assert.equal(mechanism.type, 'tpm');
  assert.equal(mechanism.tpm.endorsementKey, env('DPS_EK'));
  console.log('ok individual enrollment: create, get, update, stale etag, attestation mechanism');

  // Bulk (posted to /enrollments/ with a trailing slash), create then update then delete.
  const items = ['DPS_EK_2', 'DPS_EK_3', 'DPS_EK_4'].map((name, i) => ({
    registrationId: `node-bulk-${i}`, attestation: tpm(env(name)),
  }));
  for (const mode of ['create', 'update']) {
    const result = await bulk({ mode, enrollments: items });
    assert.equal(result.isSuccessful, true, `${mode}: ${JSON.stringify(result)}`);
  }
  const again = await bulk({ mode: 'create', enrollments: items });
  assert.equal(again.isSuccessful, false);
  assert.equal(again.errors.length, 3);
  console.log('ok bulk create and update; a second create reports each item');

  // Query, two per page, following the continuation: the provisioned device, node-1, 3 bulk.
  // (Query.next() without arguments forgets the continuation in 1.11.2, dist/query.js: it is
  // passed explicitly.)
  const query = client.createIndividualEnrollmentQuery({ query: '*' }, 2);
  const seen = [];
  let pages = 0;
  do {
    const page = (await query.next(query.continuationToken)).responseBody;
    assert.ok(page.length <= 2);
    assert.ok(++pages <= 5, 'the continuation does not end');
    seen.push(...page.map((e) => e.registrationId));
  } while (query.hasMoreResults);
  assert.equal(seen.length, 5, JSON.stringify(seen));
  const bulkDeleted = await bulk({ mode: 'delete', enrollments: items });
  assert.equal(bulkDeleted.isSuccessful, true);
  await client.deleteIndividualEnrollment('node-1');
  await refused('deleted enrollment', client.getIndividualEnrollment('node-1'), 404);
  console.log('ok query paging, bulk delete, delete');

  // Registration state of the provisioned device: DPS's fields, no key blob; then deleted.
  const registered = env('DPS_REGISTERED');
  const state = (await client.getDeviceRegistrationState(registered)).responseBody;
  assert.equal(state.registrationId, registered);
  assert.equal(state.status, 'assigned');
  assert.ok(state.assignedHub && state.deviceId && state.etag && state.createdDateTimeUtc);
  assert.equal(state.tpm, undefined);
  await client.deleteDeviceRegistrationState(registered);
  await refused('deleted registration state', client.getDeviceRegistrationState(registered), 404);
  console.log('ok registration state: get, delete');

  // Enrollment groups: a DPS error that says why.
  const groupError = await refused('create enrollment group', client.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'group-1', attestation: { type: 'x509' },
  }), 400);
  assert.match(String(groupError.message), /enrollment groups/);
  await refused('get enrollment group', client.getEnrollmentGroup('group-1'), 404);
  await refused('delete enrollment group', client.deleteEnrollmentGroup('group-1'), 404);
  await refused('group attestation mechanism', client.getEnrollmentGroupAttestationMechanism('group-1'), 404);
  await refused('group registration states',
    client.createEnrollmentGroupDeviceRegistrationStateQuery({ query: '*' }, 'group-1').next(), 404);
  const groups = (await client.createEnrollmentGroupQuery({ query: '*' }).next()).responseBody;
  assert.deepEqual(groups, []);
  console.log('ok enrollment groups answered');

  // This service's TPM enrollment group (trusting a CA by its certificate), through the same
  // unmodified SDK calls: create, get, update with the etag, attestation, query, delete.
  const group = (await client.createOrUpdateEnrollmentGroup({
    enrollmentGroupId: 'tpm-line-1',
    attestation: { type: 'tpmEkCertificate', tpmEkCertificate: { trustedCaCertificates: [ca.toString()] } },
    reprovisionPolicy: { updateHubAssignment: true, migrateDeviceData: false },
  })).responseBody;
  assert.equal(group.attestation.type, 'tpmEkCertificate');
  const fetchedGroup = (await client.getEnrollmentGroup('tpm-line-1')).responseBody;
  assert.equal(fetchedGroup.etag, group.etag);
  assert.equal(fetchedGroup.deviceCount, 0);
  const disabledGroup = (await client.createOrUpdateEnrollmentGroup({
    ...group, provisioningStatus: 'disabled',
  })).responseBody;
  assert.equal(disabledGroup.provisioningStatus, 'disabled');
  await refused('stale group etag', client.createOrUpdateEnrollmentGroup({ ...group }), 412);
  const groupMechanism = (await client.getEnrollmentGroupAttestationMechanism('tpm-line-1')).responseBody;
  assert.equal(groupMechanism.type, 'tpmEkCertificate');
  const listed = (await client.createEnrollmentGroupQuery({ query: '*' }).next()).responseBody;
  assert.deepEqual(listed.map((g) => g.enrollmentGroupId), ['tpm-line-1']);
  await client.deleteEnrollmentGroup('tpm-line-1');
  await refused('deleted group', client.getEnrollmentGroup('tpm-line-1'), 404);
  console.log('ok TPM enrollment group: create, get, update, stale etag, attestation, query, delete');
}

main().then(() => console.log('all service SDK calls passed'), (err) => {
  console.error(err);
  process.exitCode = 1;
});
