// The web wallet's encoder and credential check against the project's vectors
// (tests/vectors/presentation: 64, 16 of them with SM2 device keys; tests/vectors: the v1 codes) and docs/wallet.md's worked example.
// Run: `npm test` in webwallet/ (tests/unit/test_web_wallet_js.py runs it under pytest).

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { b45decode, b45encode, Base45Error } from '../src/base45.js';
import { boundTo, checkCredential, CODE_PREFIX, CredentialError, decodeCredentialUnverified } from '../src/credential.js';
import {
  decodePresentationUnverified, deviceSigningInput, encodePresentation, present, proofOfPossessionInput, stepAt,
} from '../src/presentation.js';
import { highestSerials, notRolledBack, parseTrust, TrustError } from '../src/trust.js';

const VECTORS = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'tests', 'vectors');
// serialText: the claims' serial as written (JSON numbers past 2^53 lose digits in JSON.parse)
const load = (dir) => readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((f) => {
  const raw = readFileSync(join(dir, f), 'utf8');
  return { name: f.slice(0, -5), serialText: (raw.match(/"serial": (\d+)/) || [])[1], ...JSON.parse(raw) };
});
const PRESENTATIONS = load(join(VECTORS, 'presentation'));
const CODES = load(VECTORS);
const fromHex = (h) => Uint8Array.from(h.match(/../g) || [], (b) => parseInt(b, 16));
const toHex = (b) => Buffer.from(b).toString('hex');
const seconds = (iso) => Date.parse(iso) / 1000;
// WebCrypto has no SM2: the page makes P-256 device keys only, so vectors of SM2 device keys are not its to sign
const SM2_DEVICE = (v) => v.holder_alg === 'SM2-SM3';

/** The key list a page would be given for vector `v` (its one key, with its windows and status). */
function keyListOf(v) {
  return {
    type: 'healthcode-key-list', version: 1, province: v.province, serial: 1,
    keys: [{ alg: v.alg, kid: v.kid, public_key_pem: v.public_key_pem, ...v.key }],
  };
}

/** The presentation's credential as its EHC1: text. */
function credentialText(v) {
  return CODE_PREFIX + b45encode(decodePresentationUnverified(v.presentation).cose);
}

async function deviceSignatureVerifies(v) {
  const { cose, step, signature } = decodePresentationUnverified(v.presentation);
  const key = await crypto.subtle.importKey('raw', fromHex(v.holder_public_key), { name: 'ECDSA', namedCurve: 'P-256' },
    false, ['verify']);
  return crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, key, signature, await deviceSigningInput(cose, step));
}

test('there are 64 presentation vectors, 20 valid', () => {
  assert.equal(PRESENTATIONS.length, 64);
  assert.equal(PRESENTATIONS.filter((v) => v.expected === 'valid').length, 20);
});

test('Base45 round-trips every v1 vector text and refuses bad input', () => {
  let checked = 0;
  for (const v of CODES) {
    if (typeof v.code !== 'string' || !v.code.startsWith('HC1:') && !v.code.startsWith(CODE_PREFIX)) continue;
    const body = v.code.slice(v.code.indexOf(':') + 1);
    let bytes;
    try { bytes = b45decode(body); } catch (err) { assert.ok(err instanceof Base45Error); continue; }
    assert.equal(b45encode(bytes), body, v.name);
    checked += 1;
  }
  assert.ok(checked >= 40, `only ${checked} codes checked`);
  for (const bad of ['A', 'GGW', ':::', 'ab']) assert.throws(() => b45decode(bad), Base45Error);
  assert.deepEqual(b45decode('BB8'), Uint8Array.of(0x41, 0x42));  // RFC 9285 §4.3: "AB"
  assert.equal(b45encode(new TextEncoder().encode('ietf!')), 'QED8WEX0');
});

test('the encoder rebuilds every well-formed presentation vector byte for byte', () => {
  let rebuilt = 0;
  for (const v of PRESENTATIONS.filter((p) => p.expected !== 'malformed')) {
    if (v.name === 'invalid-presentation-step-beyond-2106') {  // a 64-bit step: no phone makes one before 2106
      assert.throws(() => decodePresentationUnverified(v.presentation), /step out of range/);
      continue;
    }
    const parts = decodePresentationUnverified(v.presentation);
    assert.equal(parts.step, v.step, v.name);
    assert.equal(encodePresentation(parts.cose, parts.step, parts.signature), v.presentation, v.name);
    rebuilt += 1;
  }
  assert.equal(rebuilt, PRESENTATIONS.filter((p) => p.expected !== 'malformed').length - 1);
  assert.ok(rebuilt >= 51, `only ${rebuilt} rebuilt`);
});

test('malformed presentation vectors are refused by the decoder or the credential check', async () => {
  for (const v of PRESENTATIONS.filter((p) => p.expected === 'malformed')) {
    let refused = false;
    try {
      const parts = decodePresentationUnverified(v.presentation);
      decodeCredentialUnverified(CODE_PREFIX + b45encode(parts.cose));
      refused = encodePresentation(parts.cose, parts.step, parts.signature) !== v.presentation;
    } catch { refused = true; }
    assert.ok(refused, v.name);
  }
});

test('the device signing input matches: every valid vector verifies, every bad device signature does not', async () => {
  for (const v of PRESENTATIONS.filter((p) => !SM2_DEVICE(p))) {
    if (v.expected === 'valid') assert.ok(await deviceSignatureVerifies(v), v.name);
    if (v.expected === 'bad_device_signature' && !v.name.includes('another-device')) {
      assert.equal(await deviceSignatureVerifies(v), false, v.name);
    }
  }
});

test('a presentation made with WebCrypto verifies with the public key', async () => {
  const pair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
  const v = PRESENTATIONS.find((p) => p.name === 'valid-presentation-basic');
  const { cose } = decodePresentationUnverified(v.presentation);
  const text = await present(cose, 59787001, pair.privateKey);
  const parts = decodePresentationUnverified(text);
  assert.equal(parts.step, 59787001);
  assert.ok(await crypto.subtle.verify({ name: 'ECDSA', hash: 'SHA-256' }, pair.publicKey, parts.signature,
    await deviceSigningInput(parts.cose, parts.step)));
  assert.equal(stepAt(1796616010), 59887200);  // docs/wallet.md's worked example
});

const CREDENTIAL_REASONS = new Map([
  ['invalid-presentation-credential-expired', 'expired'],
  ['invalid-presentation-credential-key-compromised', 'key_compromised'],
  ['invalid-presentation-credential-tampered', 'bad_signature'],
  ['invalid-presentation-credential-unknown-key', 'unknown_key'],
  ['invalid-presentation-credential-without-cnf', 'no_holder_key'],
  ['invalid-presentation-cnf-kid-only', 'no_holder_key'],
  ['invalid-presentation-holder-key-okp', 'no_holder_key'],
  ['invalid-presentation-holder-key-p384', 'no_holder_key'],
  ['invalid-presentation-holder-key-short-x', 'no_holder_key'],
  // the point is not this phone's (a wallet compares with its own key, which is on the curve)
  ['invalid-presentation-holder-key-not-on-curve', 'other_device'],
]);

test('the credential check accepts every valid vector and refuses the bad credentials with their reasons', async () => {
  for (const v of PRESENTATIONS) {
    const trust = await parseTrust(keyListOf(v));
    const options = { now: seconds(v.verify_at), skew: v.clock_skew_seconds, devicePoint: fromHex(v.holder_public_key) };
    if (v.expected === 'valid') {
      if (SM2_DEVICE(v)) {  // a credential bound to an SM2 device key is never this page's: refused, nothing shown
        await assert.rejects(checkCredential(credentialText(v), trust, options),
          (err) => err instanceof CredentialError  // an SM2 issuer key is refused first (unknown to WebCrypto)
            && err.reason === (v.alg === 'SM2-SM3' ? 'unknown_key' : 'no_holder_key'), v.name);
        continue;
      }
      if (v.alg === 'SM2-SM3') {  // WebCrypto has no SM2: the page says it cannot check, and shows nothing
        await assert.rejects(checkCredential(credentialText(v), trust, options), { reason: 'unknown_key' });
        continue;
      }
      const claims = await checkCredential(credentialText(v), trust, options);
      assert.equal(claims.province, v.province, v.name);
      assert.equal(claims.serial, v.serialText === undefined ? BigInt(v.claims.serial) : BigInt(v.serialText), v.name);
      assert.equal(toHex(claims.kid), v.kid, v.name);
    } else if (CREDENTIAL_REASONS.has(v.name)) {
      await assert.rejects(checkCredential(credentialText(v), trust, options),
        (err) => err instanceof CredentialError && err.reason === CREDENTIAL_REASONS.get(v.name), v.name);
    }
  }
});

test('a credential bound to another phone is refused', async () => {
  const v = PRESENTATIONS.find((p) => p.name === 'valid-presentation-basic');
  const other = PRESENTATIONS.find((p) => p.holder_public_key !== v.holder_public_key);
  const trust = await parseTrust(keyListOf(v));
  const text = credentialText(v);
  const { claims } = decodeCredentialUnverified(text);
  assert.ok(boundTo(claims.cnf, fromHex(v.holder_public_key)));
  assert.equal(boundTo(claims.cnf, fromHex(other.holder_public_key)), false);
  await assert.rejects(checkCredential(text, trust, { now: seconds(v.verify_at), devicePoint: fromHex(other.holder_public_key) }),
    { reason: 'other_device' });
  await assert.rejects(checkCredential(text, await parseTrust({ ...keyListOf(v), province: '44', keys: [] }),
    { now: seconds(v.verify_at) }), { reason: 'unknown_key' });
});

test('key lists: malformed ones are refused, a lower serial is a rollback', async () => {
  const v = PRESENTATIONS[0];
  const good = keyListOf(v);
  for (const bad of [{}, { ...good, type: 'x' }, { ...good, province: '3' },
    { ...good, keys: [{ ...good.keys[0], use_from: '2026-01-01' }] },
    { ...good, keys: [{ ...good.keys[0], public_key_pem: 'nope' }] }]) {
    await assert.rejects(parseTrust(bad), { reason: 'trust_data' });
  }
  const first = await parseTrust({ ...good, serial: 5 });
  assert.ok(notRolledBack(first, await parseTrust({ ...good, serial: 5 })));
  assert.ok(notRolledBack(first, await parseTrust({ ...good, serial: 6 })));
  assert.equal(notRolledBack(first, await parseTrust({ ...good, serial: 4 })), false);
  // a list that leaves the province out cannot reset its serial: the highest seen is kept apart
  const without = await parseTrust({ ...good, province: good.province === '11' ? '12' : '11', serial: 1 });
  assert.ok(notRolledBack(first, without));
  const seen = highestSerials(first.serials, without.serials);
  assert.equal(notRolledBack({ serials: seen }, await parseTrust({ ...good, serial: 3 })), false);
  assert.deepEqual(highestSerials({ 33: 5, 11: 2 }, { 33: 4, 44: 1 }), { 33: 5, 11: 2, 44: 1 });
  // one province twice in one document is refused (which of its lists would count?)
  await assert.rejects(parseTrust([good, { ...good, serial: 1 }]), TrustError);
});

test("the proof of possession input is docs/wallet.md's worked example", async () => {
  const challenge = Uint8Array.from({ length: 32 }, (_, i) => i);
  const point = fromHex('040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e5794');
  assert.equal(toHex(await proofOfPossessionInput(challenge, point)),
    '4548432d454e524f4c2d763100000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f' +
    '2bad0fd610d99eae443e932a26142bca1e5fa995b4518452827e78ef1f317ff0');
  const cose = fromHex(readFileSync(join(VECTORS, '..', '..', 'docs', 'wallet.md'), 'utf8')
    .match(/\n(d2844da2[0-9a-f]+)\n/)[1]);
  assert.equal(toHex(await deviceSigningInput(cose, 59887200)),
    '4548432d44594e2d763100000000000391ce6099a49fb84aa7738acfe8080b98c3165e03927fd93eead3e16291d7255afd15b9');
});
