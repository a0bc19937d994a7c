// The wallet's logic (src/wallet.js) with a test issuer: enrolment's idempotency key kept across a
// lost answer and dropped after a refusal, the renewal policy (due from half the validity, a
// 5-minute wait after a failure unless back online), renewal as a new enrolment of the same device
// key through the wallet role's calls only (ListLiveCodes, CreateChallenge, IssueCredential; a
// renewal whose answer was lost is found among the live codes), a credential no longer live
// dropped, and a credential bound to another key refused. The store is an in-memory stand-in for IndexedDB
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
  for (const method of ['findResident', 'registerResident', 'createChallenge', 'issueCredential', 'listLiveCodes']) {
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

/** The issuer's side of renewal: the live phone credentials it lists, and IssueCredential superseding them. */
function renewalAnswers({ failIssue = () => null } = {}) {
  return (issuer, store) => {
    const live = [];
    const enrol = enrolAnswers()(issuer);
    return {
      live,
      ...enrol,
      issueCredential: async (request) => {
        const failure = failIssue(request);
        if (failure) throw failure;
        const answer = await enrol.issueCredential(request);
        live.splice(0, live.length, { code: { codeText: answer.credential.codeText }, channel: 'CHANNEL_PHONE' });
        return answer;
      },
      listLiveCodes: async () => (live.length ? { codes: [...live] } : {}),
    };
  };
}

async function setupRenewal(options) {
  let answers;
  const made = await setup((issuer, store) => { answers = renewalAnswers(options)(issuer, store); return answers; });
  return { ...made, live: answers.live };
}

test('renewal: due from half the validity, waits after a failure unless back online, a new enrolment of the same key', async () => {
  let renewFails = true;
  const { wallet, store, calls } = await setupRenewal({
    failIssue: (request) => (request.mainIndexId && renewFails ? new ApiError('unavailable', 'down') : null),
  });
  await wallet.enrol(DOCUMENT, T0);
  const half = T0 + VALIDITY / 2;
  assert.deepEqual(await wallet.renewIfDue(half - 1), { renewed: false, error: null });
  assert.equal(calls.filter((c) => c[0] === 'listLiveCodes').length, 0);
  const failed = await wallet.renewIfDue(half);
  assert.equal(failed.error.reason, 'offline');
  assert.equal((await wallet.renewIfDue(half + RETRY_AFTER - 1)).error, null);  // waiting
  const renewals = () => calls.filter((c) => c[0] === 'issueCredential' && c[1].mainIndexId);
  assert.equal(renewals().length, 1);
  renewFails = false;
  assert.deepEqual(await wallet.renewIfDue(half + 200, { retryNow: true }), { renewed: true, error: null });
  assert.equal(renewals()[0][1].idempotencyKey, renewals()[1][1].idempotencyKey);  // the same key for the same serial
  // by the resident's main index ID (the credential's subject), with a fresh proof by the same device key
  const { point } = await store.get('device');
  assert.deepEqual(calls.filter((c) => c[0] === 'createChallenge').at(-1)[1], { mainIndexId: 'AAAAAAAAAAAAAAAAAAAAAAAAAA' });
  assert.equal(renewals()[1][1].deviceKey.publicKey, toBase64(point));
  assert.equal(renewals()[1][1].document, undefined);  // the document number is not needed, and not kept
  const { claims } = await wallet.credential(half + 500);
  assert.equal(claims.serial, 2n);
  assert.equal(store.records.has('pending'), false);
});

test('a renewal whose answer was lost is found among the live codes, not minted again', async () => {
  let lose = true;
  const { wallet, calls } = await setupRenewal();
  await wallet.enrol(DOCUMENT, T0);
  const issue = wallet.api.issueCredential;
  wallet.api.issueCredential = async (request) => {
    const answer = await issue(request);  // the issuer issued (and superseded the old one) ...
    if (lose && request.mainIndexId) { lose = false; throw new ApiError('unavailable', 'connection reset'); }
    return answer;  // ... but the answer was lost
  };
  const half = T0 + VALIDITY / 2;
  assert.equal((await wallet.renewIfDue(half)).error.reason, 'offline');
  assert.deepEqual(await wallet.renewIfDue(half + 10, { retryNow: true }), { renewed: true, error: null });
  assert.equal(calls.filter((c) => c[0] === 'issueCredential').length, 2);  // enrolment, one renewal: no third
  assert.equal((await wallet.credential(half + 20)).claims.serial, 2n);
});

test('a credential no longer live (revoked, or another phone enrolled) is dropped; the resident enrols again', async () => {
  const { wallet, store, live, calls } = await setupRenewal();
  await wallet.enrol(DOCUMENT, T0);
  live.splice(0);  // revoked at the issuer (a lost phone)
  await assert.rejects(wallet.renew(T0 + 100), (err) => err.reason === 'revoked' && /no longer valid/.test(err.message));
  assert.equal(store.records.has('credential'), false);
  assert.equal(calls.filter((c) => c[0] === 'issueCredential').length, 1);  // not renewed
  await assert.rejects(wallet.present(T0 + 101), { reason: 'not_enrolled' });

  const later = await setupRenewal();  // expired and not live: revoked or merely expired, the page cannot tell
  await later.wallet.enrol(DOCUMENT, T0);
  later.live.splice(0);
  await assert.rejects(later.wallet.renew(T0 + VALIDITY), { reason: 'expired' });
  assert.equal(later.calls.filter((c) => c[0] === 'issueCredential').length, 1);  // not renewed either
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
