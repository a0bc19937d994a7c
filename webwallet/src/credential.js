// The credential (an EHC1: code bound to this phone's key) taken apart and checked against the
// trust data the page was given: docs/code-format.md §3 (COSE_Sign1), §4 (claims), §8-9 (the key
// and its windows) and §4.6 (cnf). Pure: bytes and times in, a checked credential out, no I/O
// (WebCrypto's verify is the only primitive it calls).
//
// The page refuses to show a live code for a credential that does not pass checkCredential: a
// terminal would refuse it anyway, and a wallet that shows codes it cannot check hides faults.

import { decode as cborDecode } from 'cborg';
import { b45decode, Base45Error } from './base45.js';

export const CODE_PREFIX = 'EHC1:';
const MAX_CODE_TEXT = 1021;
const MAX_COSE_BYTES = 600;
const ALG_ES256 = -7;
const ALG_EDDSA = -8;
const ALG_NAMES = new Map([[-7, 'ES256'], [-8, 'EdDSA'], [-65537, 'SM2-SM3']]);
const CBOR_OPTIONS = {
  useMaps: true, strict: true, rejectDuplicateMapKeys: true, allowIndefinite: false,
  allowUndefined: false, allowInfinity: false, allowNaN: false,
};

/** A credential the wallet cannot use; `reason` is a stable code (the verifier's where one exists). */
export class CredentialError extends Error {
  constructor(reason, message) {
    super(message);
    this.reason = reason;
  }
}

const fail = (reason, message) => { throw new CredentialError(reason, message); };

/** [content start, end] of the definite, shortest-form byte string whose head is at `pos`. */
function bstrSpan(data, pos) {
  const head = data[pos];
  if (head === undefined) fail('malformed', 'truncated COSE_Sign1');
  if (head >> 5 !== 2) fail('malformed', 'byte string expected in COSE_Sign1');
  const ai = head & 0x1f;
  let start, length;
  if (ai < 24) { start = pos + 1; length = ai; }
  else if (ai === 24) { start = pos + 2; length = data[pos + 1]; if (!(length >= 24)) fail('malformed', 'byte string length not in shortest form'); }
  else if (ai === 25) { start = pos + 3; length = (data[pos + 1] << 8) | data[pos + 2]; if (!(length >= 256)) fail('malformed', 'byte string length not in shortest form'); }
  else fail('malformed', 'byte string too long or of indefinite length');
  if (start + length > data.length) fail('malformed', 'truncated byte string');
  return [start, start + length];
}

/** The parts of a tagged COSE_Sign1 `d2 84 <protected> a0 <payload> <signature>`, checked for form only. */
export function splitCose(cose) {
  if (cose.length < 8 || cose[0] !== 0xd2 || cose[1] !== 0x84) fail('malformed', 'not a tagged COSE_Sign1');
  const [pStart, pEnd] = bstrSpan(cose, 2);
  if (cose[pEnd] !== 0xa0) fail('malformed', 'unprotected header must be an empty map');
  const [cStart, cEnd] = bstrSpan(cose, pEnd + 1);
  const [sStart, sEnd] = bstrSpan(cose, cEnd);
  if (sEnd !== cose.length) fail('malformed', 'truncated or trailing bytes after COSE_Sign1');
  return {
    protectedItem: cose.subarray(2, pEnd), protected: cose.subarray(pStart, pEnd),
    payloadItem: cose.subarray(pEnd + 1, cEnd), payload: cose.subarray(cStart, cEnd),
    signature: cose.subarray(sStart, sEnd),
  };
}

function strictCbor(bytes, what) {
  try {
    return cborDecode(bytes, CBOR_OPTIONS);
  } catch (err) {
    return fail('malformed', `${what} is not strict CBOR: ${err.message}`);
  }
}

const isUint = (v) => typeof v === 'number' && Number.isInteger(v) && v >= 0;

/** The credential's text taken apart, NOT verified: {cose, alg, kid, claims, sigStructure, signature}. */
export function decodeCredentialUnverified(text) {
  if (typeof text !== 'string' || text.length > MAX_CODE_TEXT) fail('malformed', 'credential text too long');
  if (!text.startsWith(CODE_PREFIX)) fail('malformed', 'not an EHC1: code');
  let cose;
  try {
    cose = b45decode(text.slice(CODE_PREFIX.length));
  } catch (err) {
    if (err instanceof Base45Error) fail('malformed', `bad Base45: ${err.message}`);
    throw err;
  }
  if (cose.length > MAX_COSE_BYTES) fail('malformed', `credential larger than ${MAX_COSE_BYTES} bytes`);
  const parts = splitCose(cose);
  const header = strictCbor(parts.protected, 'protected header');
  if (!(header instanceof Map) || header.has(2)) fail('malformed', 'protected header must be a map without crit');
  const alg = header.get(1);
  const kid = header.get(4);
  if (!Number.isInteger(alg)) fail('malformed', 'alg must be an integer');
  if (!(kid instanceof Uint8Array) || kid.length < 1 || kid.length > 32) fail('malformed', 'kid must be 1-32 bytes');
  const claims = parseClaims(strictCbor(parts.payload, 'claims'));
  // Sig_structure = ["Signature1", protected, h'', payload] with both items exactly as received (§3.3)
  const head = Uint8Array.of(0x84, 0x6a, ...new TextEncoder().encode('Signature1'));
  const sigStructure = concat(head, parts.protectedItem, Uint8Array.of(0x40), parts.payloadItem);
  return { cose, alg, kid, claims, sigStructure, signature: parts.signature };
}

function parseClaims(map) {
  if (!(map instanceof Map)) fail('malformed', 'claims must be a map');
  if (map.has(3) || map.has(5)) fail('malformed', 'aud and nbf must not be present');
  const iss = map.get(1), sub = map.get(2), exp = map.get(4), iat = map.get(6), cti = map.get(7);
  if (typeof iss !== 'string' || !/^[1-8][0-9]$/.test(iss)) fail('malformed', 'iss must be a province code');
  if (typeof sub !== 'string' || !/^[A-Z2-7]{25}[AEIMQUY4]$/.test(sub)) fail('malformed', 'sub must be a main index ID');
  if (!isUint(iat) || !isUint(exp) || !(iat < exp) || exp >= 2 ** 32) fail('malformed', 'iat and exp must be times with iat < exp');
  if (!(cti instanceof Uint8Array) || cti.length < 1 || cti.length > 8 || (cti.length > 1 && cti[0] === 0)) {
    fail('malformed', 'cti must be a minimal 1-8 byte serial');
  }
  let serial = 0n;
  for (const b of cti) serial = (serial << 8n) | BigInt(b);
  return { province: iss, subject: sub, issuedAt: iat, expiresAt: exp, serial, cnf: map.get(8) };
}

/** The holder key's point named by `cnf` ({1: COSE_Key EC2 P-256}), as {x, yOdd} or {x, y}. */
export function holderKeyOf(cnf) {
  if (!(cnf instanceof Map)) fail('no_holder_key', 'credential is not bound to a device key (no cnf)');
  const key = cnf.get(1);
  if (!(key instanceof Map) || key.get(1) !== 2 || key.get(-1) !== 1) fail('no_holder_key', 'holder key is not an EC2 P-256 key');
  const x = key.get(-2), y = key.get(-3);
  if (!(x instanceof Uint8Array) || x.length !== 32) fail('no_holder_key', 'holder key x must be 32 bytes');
  if (typeof y === 'boolean') return { x, yOdd: y };
  if (y instanceof Uint8Array && y.length === 32) return { x, yOdd: (y[31] & 1) === 1, y };
  return fail('no_holder_key', 'holder key y must be 32 bytes or a sign bit');
}

/** Whether the holder key of `cnf` is the device point `point` (SEC 1 uncompressed, 65 bytes). */
export function boundTo(cnf, point) {
  const holder = holderKeyOf(cnf);
  const x = point.subarray(1, 33), y = point.subarray(33, 65);
  if (point.length !== 65 || point[0] !== 4) return false;
  if (!equalBytes(holder.x, x)) return false;
  if (holder.y !== undefined) return equalBytes(holder.y, y);
  return holder.yOdd === ((y[31] & 1) === 1);
}

/**
 * Check the credential `text` as a terminal would, plus the binding to this phone; return its
 * claims and kid, or throw CredentialError (reason: malformed, unknown_key, algorithm_mismatch,
 * key_not_valid_at_issuance, key_compromised, bad_signature, not_yet_valid, expired,
 * no_holder_key, other_device).
 *
 * `trust` is a parsed key list (trust.js); `now` is seconds since the epoch; `skew` seconds of
 * tolerance for an `iat` in the future; `devicePoint` this phone's public point (65 bytes).
 * Steps as docs/code-format.md §9: (1) form, (3) key, (4) algorithm, (5) signature, (6)
 * compromise, (7) windows, (8) validity, then the binding.
 */
export async function checkCredential(text, trust, { now, skew = 30, devicePoint }) {
  // (1) form
  const code = decodeCredentialUnverified(text);
  const { claims } = code;
  // (3) the key: the kid is a hint, the province and windows decide
  const key = trust.find(claims.province, code.kid);
  if (!key) fail('unknown_key', `no trusted key of province ${claims.province} with this kid`);
  // (4) the algorithm comes from the key
  if (code.alg !== key.alg) fail('algorithm_mismatch', `the header says ${ALG_NAMES.get(code.alg) || code.alg}, the key is ${key.algName}`);
  if (!key.cryptoKey) fail('unknown_key', `this browser cannot check ${key.algName} signatures`);
  // (5) the issuer's signature over the bytes received
  const params = key.alg === ALG_ES256 ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'Ed25519' };
  const ok = code.signature.length === 64 &&
    await crypto.subtle.verify(params, key.cryptoKey, code.signature, code.sigStructure);
  if (!ok) fail('bad_signature', "the issuer's signature does not verify");
  // (6) compromise
  if (key.status === 'compromised' &&
      (key.compromisePolicy === 'reject_all' || claims.issuedAt >= key.compromisedSince)) {
    fail('key_compromised', "the issuer's key is withdrawn");
  }
  // (7) windows
  if (claims.issuedAt < key.useFrom || claims.issuedAt > key.useUntil) fail('key_not_valid_at_issuance', 'issued outside the key\'s use window');
  if (now > key.verifyUntil) fail('expired', 'the key no longer verifies anything');
  // (8) validity
  if (claims.issuedAt > now + skew) fail('not_yet_valid', 'issued in the future: check the phone\'s clock');
  if (now >= claims.expiresAt) fail('expired', 'the credential has expired');
  // bound to this phone's key
  holderKeyOf(claims.cnf);
  if (devicePoint && !boundTo(claims.cnf, devicePoint)) fail('other_device', 'the credential is bound to another device key');
  return { ...claims, kid: code.kid, cose: code.cose, text };
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

export function equalBytes(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export { ALG_EDDSA, ALG_ES256, ALG_NAMES };
