// The admin page: the service API (the same one the factory and the Azure service SDKs use),
// authenticated as they are, with a shared access signature per request made in this page from
// the policy key. The key becomes a non-extractable WebCrypto key at sign-in and is never
// stored, logged or put in a URL; requests carry it only as a signature in the Authorization
// header, so there is no cookie for another site to ride on (no CSRF).
'use strict';

const API = 'api-version=2021-10-01';
const PAGE = 25;
const TOKEN_SECONDS = 300;

const state = { policy: null, key: null, continuation: null, current: null };
const $ = (id) => document.getElementById(id);

function say(text) { $('message').textContent = text; }

function b64ToBytes(b64) {
  const raw = atob(b64.trim());
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function bytesToB64(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes)));
}

async function token() {
  const sr = encodeURIComponent(document.body.dataset.serviceHostName.toLowerCase());
  const se = Math.floor(Date.now() / 1000) + TOKEN_SECONDS;
  const sig = await crypto.subtle.sign('HMAC', state.key, new TextEncoder().encode(`${sr}\n${se}`));
  return `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(bytesToB64(sig))}&se=${se}&skn=${encodeURIComponent(state.policy)}`;
}

// What the registration's quote proved: the verdict, the failed check, the PCRs quoted.
function attestationSummary(a) {
  if (!a) return 'not attested';
  const quoted = Object.entries(a.pcrs || {})
    .map(([bank, values]) => `${bank}: ${Object.keys(values).join(',')}`).join('; ');
  const pinned = Object.keys(a.pinnedPcrs || {}).length ? ', values pinned' : '';
  return `${a.verdict}${a.reason ? ` (${a.reason})` : ''}${quoted ? `, quoted ${quoted}` : ''}${pinned}`;
}

// One service API call; resolves to {status, body, headers}, throws on a network error.
async function api(method, path, body, extraHeaders = {}) {
  const headers = { Authorization: await token(), ...extraHeaders };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`${path}${path.includes('?') ? '&' : '?'}${API}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'omit', cache: 'no-store',
  });
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  return { status: response.status, body: parsed, headers: response.headers };
}

function failure(what, result) {
  const detail = result.body && result.body.message ? `: ${result.body.message}` : '';
  say(`${what} failed (HTTP ${result.status})${detail}`);
}

function cell(text, className) {
  const td = document.createElement('td');
  td.textContent = text || '—';
  if (className) td.className = className;
  return td;
}

function row(enrollment) {
  const tr = document.createElement('tr');
  const td = document.createElement('td');
  const open = document.createElement('button');
  open.type = 'button';
  open.className = 'link';
  open.textContent = enrollment.registrationId;
  open.addEventListener('click', () => showDetails(enrollment.registrationId));
  td.append(open);
  tr.append(td, cell(enrollment.provisioningStatus, `status-${enrollment.provisioningStatus}`),
    cell(enrollment.deviceId), cell(enrollment.enrollmentGroupId));
  return tr;
}

async function loadPage(reset) {
  if (reset) { state.continuation = null; $('rows').replaceChildren(); }
  const headers = { 'x-ms-max-item-count': String(PAGE) };
  if (state.continuation) headers['x-ms-continuation'] = state.continuation;
  const result = await api('POST', '/enrollments/query', { query: '*' }, headers);
  if (result.status !== 200) return failure('Listing enrollments', result);
  for (const enrollment of result.body) $('rows').append(row(enrollment));
  state.continuation = result.headers.get('x-ms-continuation');
  $('next-page').hidden = !state.continuation;
  say(`${$('rows').children.length} enrollments shown${state.continuation ? '; more on the next page' : ''}.`);
}

async function search(id) {
  const result = await api('GET', `/enrollments/${encodeURIComponent(id)}`);
  $('rows').replaceChildren();
  $('next-page').hidden = true;
  if (result.status === 404) return say(`No enrollment ${id}.`);
  if (result.status !== 200) return failure('Finding the enrollment', result);
  $('rows').append(row(result.body));
  say('1 enrollment found.');
}

function fields(list, pairs) {
  list.replaceChildren();
  for (const [name, value, className] of pairs) {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = value === undefined || value === null || value === '' ? '—' : String(value);
    if (className) dd.className = className;
    list.append(dt, dd);
  }
}

async function showDetails(id, note) {
  const [enrollment, registration] = await Promise.all([
    api('GET', `/enrollments/${encodeURIComponent(id)}`),
    api('GET', `/registrations/${encodeURIComponent(id)}`),
  ]);
  if (enrollment.status !== 200) return failure('Reading the enrollment', enrollment);
  const e = enrollment.body;
  state.current = e;
  $('list').hidden = true;
  $('details').hidden = false;
  $('details-title').textContent = e.registrationId;
  fields($('enrollment-fields'), [
    ['Status', e.provisioningStatus, `status-${e.provisioningStatus}`],
    ['Device id', e.deviceId],
    ['Hub', e.iotHubHostName || (e.iotHubs || []).join(', ')],
    ['Allocation', e.allocationPolicy || 'hashed'],
    ['Attestation', e.attestation && e.attestation.type],
    ['Created', e.createdDateTimeUtc],
    ['Updated', e.lastUpdatedDateTimeUtc],
    ['Etag', e.etag],
  ]);
  if (registration.status === 200) {
    const r = registration.body;
    fields($('registration-fields'), [
      ['Status', r.status, `status-${r.status}`],
      ['Substatus', r.substatus],
      ['Hub', r.assignedHub],
      ['Device id', r.deviceId],
      ['Last error', r.errorCode ? `${r.errorCode}: ${r.errorMessage || ''}` : ''],
      ['Updated', r.lastUpdatedDateTimeUtc],
      ['Attestation', attestationSummary(r.attestation)],
    ]);
  } else {
    fields($('registration-fields'), [['Status', 'not registered yet']]);
  }
  $('toggle').textContent = e.provisioningStatus === 'enabled' ? 'Disable' : 'Enable';
  $('confirm-delete').hidden = true;
  say(note || '');
  $('details-title').focus();
}

async function toggle() {
  const e = { ...state.current };
  e.provisioningStatus = e.provisioningStatus === 'enabled' ? 'disabled' : 'enabled';
  const result = await api('PUT', `/enrollments/${encodeURIComponent(e.registrationId)}`, e,
    { 'If-Match': `"${e.etag}"` });
  if (result.status !== 200) return failure('Changing the status', result);
  await showDetails(e.registrationId, `${e.registrationId} is ${result.body.provisioningStatus} now.`);
}

async function remove() {
  const e = state.current;
  const result = await api('DELETE', `/enrollments/${encodeURIComponent(e.registrationId)}`, undefined,
    { 'If-Match': `"${e.etag}"` });
  if (result.status !== 204) return failure('Deleting', result);
  state.current = null;
  $('details').hidden = true;
  $('list').hidden = false;
  await loadPage(true);
  say(`${e.registrationId} was deleted.`);
  $('search').focus();
}

async function signIn(event) {
  event.preventDefault();
  const name = $('policy-name').value.trim();
  const keyField = $('policy-key');
  let key;
  try {
    key = await crypto.subtle.importKey('raw', b64ToBytes(keyField.value), { name: 'HMAC', hash: 'SHA-256' },
      false, ['sign']);
  } catch {
    return say('The key is not base64.');
  } finally {
    keyField.value = '';
  }
  state.policy = name;
  state.key = key;
  const probe = await api('POST', '/enrollments/query', { query: '*' }, { 'x-ms-max-item-count': '1' });
  if (probe.status !== 200) {
    state.key = null;
    return failure('Signing in', probe);
  }
  $('sign-in').hidden = true;
  $('list').hidden = false;
  $('who').hidden = false;
  $('who').textContent = `Signed in with policy ${name}`;
  $('sign-out').hidden = false;
  await loadPage(true);
  $('search').focus();
}

function signOut() {
  state.policy = null;
  state.key = null;
  state.current = null;
  $('rows').replaceChildren();
  for (const id of ['list', 'details', 'who', 'sign-out']) $(id).hidden = true;
  $('sign-in').hidden = false;
  say('Signed out.');
  $('policy-key').focus();
}

document.addEventListener('DOMContentLoaded', () => {
  $('sign-in-form').addEventListener('submit', signIn);
  $('sign-out').addEventListener('click', signOut);
  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const id = $('search').value.trim();
    if (id) search(id); else loadPage(true);
  });
  $('show-all').addEventListener('click', () => { $('search').value = ''; loadPage(true); });
  $('next-page').addEventListener('click', () => loadPage(false));
  $('toggle').addEventListener('click', toggle);
  $('delete').addEventListener('click', () => { $('confirm-delete').hidden = false; $('confirm-delete').focus(); });
  $('confirm-delete').addEventListener('click', remove);
  $('back').addEventListener('click', () => {
    $('details').hidden = true;
    $('list').hidden = false;
    loadPage(true);
  });
});
