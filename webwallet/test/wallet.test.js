// The wallet's logic (src/wallet.js) with a test issuer: enrolment's idempotency key kept across a
// lost answer and dropped after a refusal, the renewal policy (due from half the validity, a
// 5-minute wait after a failure unless back online), a revoked credential dropped, and a
// credential bound to another key refused. The store is an in-memory stand-in for IndexedDB
// (the browser test, tests/integration/test_web_wallet.py, uses the real one); the issuer signs
// real credentials with a WebCrypto key, and the page checks them as it does in the browser.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encode } from 'cborg';

import { ApiError, fromBase64, toBase64 } from '../src/api.js';
import { b45encode } from '../src/base45.js';
import { concat } from '../src/credential.js';
import { proofOfPossessionInput } from '../src/presentation.js';
import { parseTrust } from '../src/trust.js';
import { RETRY_AFTER, Wallet } from '../src/wallet.js';

const T0 = 1796616000;  // 2026-12-07 04:00 UTC
const VALIDITY = 7 * 24 * 3600;
const ECDSA = { name: 'ECDSA', namedCurve: 'P-256' };
const SIGN = { name: 'ECDSA', hash: 'SHA-256' };

function memoryStore() {
  const records = new Map();
  return {
    records,
    async get(name) { return records.get(name); },
    async put(values) { for (const [k, v] of Object.entries(values)) { if (v === undefined) records.delete(k); else records.set(k, v); } },
  };
}

const iso = (s) => new Date(s * 1000).toISOString().replace('.000Z', 'Z');

/** A province issuer: a P-256 key, its key list, and credentials bound to a device point. */
async function testIssuer() {
  const key = await crypto.subtle.generateKey(ECDSA, true, ['sign', 'verify']);
  const spki = new Uint8Array(await crypto.subtle.exportKey('spki', key.publicKey));
  const kid = new Uint8Array(8).fill(7);
  const keyList = {
    type: 'healthcode-key-list', version: 1, province: '33', serial: 1,
    keys: [{ alg: 'ES256', kid: '0707070707070707', status: 'active', compromise_policy: 'reject_from_compromise',
      compromised_since: null, use_from: iso(T0 - 86400), use_until: iso(T0 + 90 * 86400), verify_until: iso(T0 + 97 * 86400),
      public_key_pem: `-----BEGIN PUBLIC KEY-----\n${toBase64(spki)}\n-----END PUBLIC KEY-----\n` }],
  };
  let serial = 0;
  async function credential(point, iat) {
    const cnf = new Map([[1, new Map([[1, 2], [-1, 1], [-2, point.subarray(1, 33)], [-3, (point[64] & 1) === 1]])]]);
    serial += 1;
    const claims = new Map([[1, '33'], [2, 'AAAAAAAAAAAAAAAAAAAAAAAAAA'], [4, iat + VALIDITY], [6, iat], [7, Uint8Array.of(serial)], [8, cnf]]);
    const protectedBytes = encode(new Map([[1, -7], [4, kid]]));
    const payload = encode(claims);
    const toSign = concat(encode(['Signature1', protectedBytes, new Uint8Array(0), payload]));
    const signature = new Uint8Array(await crypto.subtle.sign(SIGN, key.privateKey, toSign));
    return `EHC1:${b45encode(concat(Uint8Array.of(0xd2), encode([protectedBytes, new Map(), payload, signature])))}`;
  }
  return { keyList, credential };
}

/** A scripted issuer API: each method answers from `answers[method]` (a function), and calls are recorded. */
function scriptedApi(answers) {
  const calls = [];
  const api = {};
  for (const method of ['findResident', 'registerResident', 'createChallenge', 'issueCredential', 'renewCode', 'getCodeStatus']) {
    api[method] = async (...args) => {
      calls.push([method, ...args]);
      if (!answers[method]) throw new ApiError('unimplemented', method);
      return answers[method](...args);
    };
  }
  return { api, calls };
}

async function setup(answers) {
  const issuer = await testIssuer();
  const store = memoryStore();
  const { api, calls } = scriptedApi(answers(issuer, store));
  const wallet = new Wallet({ store, api, trust: await parseTrust(issuer.keyList) });
  return { issuer, store, wallet, calls };
}

const DOCUMENT = { type: 'DOCUMENT_TYPE_RESIDENT_ID', number: '330106198603140019' };
const CHALLENGE = toBase64(new Uint8Array(32).fill(9));

function enrolAnswers({ fail = [] } = {}) {
  return (issuer) => ({
    findResident: async () => { throw new ApiError('not_found', 'resident not found'); },
    registerResident: async () => ({ mainIndexId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA' }),
    createChallenge: async () => ({ challenge: CHALLENGE }),
    issueCredential: async (request) => {
      const failure = fail.shift();
      if (failure) throw failure;
      const point = fromBase64(request.deviceKey.publicKey);
      const key = await crypto.subtle.importKey('raw', point, ECDSA, false, ['verify']);
      assert.ok(await crypto.subtle.verify(SIGN, key, fromBase64(request.proof),
        await proofOfPossessionInput(fromBase64(request.challenge), point)), 'the proof of possession verifies');
      return { credential: { codeText: await issuer.credential(point, T0) } };
    },
  });
}

test('enrolment: the device key is not extractable, the proof verifies, the credential is kept', async () => {
  const { wallet, store, calls } = await setup(enrolAnswers());
  const claims = await wallet.enrol(DOCUMENT, T0 + 5);
  assert.equal(claims.serial, 1n);
  assert.deepEqual(calls.map((c) => c[0]), ['findResident', 'registerResident', 'createChallenge', 'issueCredential']);
  assert.equal((await store.get('device')).keyPair.privateKey.extractable, false);
  assert.equal(store.records.has('pending'), false);
  assert.ok(!JSON.stringify([...store.records.values()], (k, v) => (v instanceof CryptoKey ? 'key' : v)).includes(DOCUMENT.number));
  const { text, step } = await wallet.present(T0 + 65);
  assert.ok(text.startsWith('EHCD:'));
  assert.equal(step, Math.floor((T0 + 65) / 30));
});

test('a lost answer keeps the idempotency key for the next attempt; a refusal drops it', async () => {
  const unavailable = new ApiError('unavailable', 'no answer');
  const { wallet, store, calls } = await setup(enrolAnswers({ fail: [unavailable, new ApiError('invalid_argument', 'bad proof')] }));
  await assert.rejects(wallet.enrol(DOCUMENT, T0), { reason: 'offline' });
  const kept = (await store.get('pending')).idempotencyKey;
  assert.match(kept, /^web-[0-9a-f]{32}$/);
  assert.equal((await store.get('lastFailure')).reason, 'offline');
  await assert.rejects(wallet.enrol(DOCUMENT, T0 + 10), { reason: 'refused' });
  const keys = calls.filter((c) => c[0] === 'issueCredential').map((c) => c[1].idempotencyKey);
  assert.deepEqual(keys, [kept, kept]);
  assert.equal(store.records.has('pending'), false);  // refused: nothing was minted
  await wallet.enrol(DOCUMENT, T0 + 20);
  const third = calls.filter((c) => c[0] === 'issueCredential').at(-1)[1].idempotencyKey;
  assert.notEqual(third, kept);
  assert.equal(store.records.has('lastFailure'), false);
});

test('renewal: due from half the validity, waits after a failure unless back online, keeps the binding', async () => {
  let renewFails = true;
  const { wallet, store, calls } = await setup((issuer) => ({
    ...enrolAnswers()(issuer),
    renewCode: async () => {
      if (renewFails) throw new ApiError('unavailable', 'down');
      const { point } = await store.get('device');
      return { code: { codeText: await issuer.credential(point, T0 + VALIDITY / 2 + 100) } };
    },
  }));
  await wallet.enrol(DOCUMENT, T0);
  const half = T0 + VALIDITY / 2;
  assert.deepEqual(await wallet.renewIfDue(half - 1), { renewed: false, error: null });
  assert.equal(calls.filter((c) => c[0] === 'renewCode').length, 0);
  const failed = await wallet.renewIfDue(half);
  assert.equal(failed.error.reason, 'offline');
  assert.equal((await wallet.renewIfDue(half + RETRY_AFTER - 1)).error, null);  // waiting
  assert.equal(calls.filter((c) => c[0] === 'renewCode').length, 1);
  renewFails = false;
  assert.deepEqual(await wallet.renewIfDue(half + 200, { retryNow: true }), { renewed: true, error: null });
  const renewCalls = calls.filter((c) => c[0] === 'renewCode');
  assert.equal(renewCalls[0][2], renewCalls[1][2]);  // the same idempotency key for the same serial
  const { claims } = await wallet.credential(half + 500);
  assert.equal(claims.serial, 2n);
  assert.equal(store.records.has('pending'), false);
});

test('a revoked credential is dropped and the resident asked to enrol again', async () => {
  const { wallet, store } = await setup((issuer) => ({
    ...enrolAnswers()(issuer),
    renewCode: async () => { throw new ApiError('failed_precondition', 'code is revoked'); },
    getCodeStatus: async () => ({ code: { state: 'CODE_STATE_REVOKED', revocationReason: 'REVOCATION_REASON_LOST_DEVICE' } }),
  }));
  await wallet.enrol(DOCUMENT, T0);
  await assert.rejects(wallet.renew(T0 + 100), (err) => err.reason === 'revoked' && /lost_device/.test(err.message));
  assert.equal(store.records.has('credential'), false);
  await assert.rejects(wallet.present(T0 + 101), { reason: 'not_enrolled' });
});

test('a credential bound to another key, or past its expiry, shows no code', async () => {
  const { wallet, store } = await setup((issuer) => ({
    ...enrolAnswers()(issuer),
    issueCredential: async () => {
      const other = await crypto.subtle.generateKey(ECDSA, true, ['sign']);
      const point = new Uint8Array(await crypto.subtle.exportKey('raw', other.publicKey));
      return { credential: { codeText: await issuer.credential(point, T0) } };
    },
  }));
  await assert.rejects(wallet.enrol(DOCUMENT, T0), (err) => err.reason === 'bad_credential' && /other_device/.test(err.message));
  assert.equal(store.records.has('credential'), false);

  const good = await setup(enrolAnswers());
  await good.wallet.enrol(DOCUMENT, T0);
  await assert.rejects(good.wallet.present(T0 + VALIDITY), { reason: 'expired' });
});
