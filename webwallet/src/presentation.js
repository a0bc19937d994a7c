// The live code: docs/code-format.md §16. Every 30 s the phone signs
//   "EHC-DYN-v1" 00 || step (8 bytes, big-endian) || SHA-256(credential COSE_Sign1)
// and shows "EHCD:" + Base45([credential COSE_Sign1, step, device signature]).
// Enrolment's proof of possession signs
//   "EHC-ENROL-v1" 00 || challenge (32 bytes) || SHA-256(public key, SEC 1 uncompressed).
// Pure: bytes and times in (WebCrypto's digest is the only primitive it calls).

import { b45decode, b45encode } from './base45.js';
import { concat, splitCose } from './credential.js';

export const PRESENTATION_PREFIX = 'EHCD:';
export const STEP_SECONDS = 30;
const DYN_CONTEXT = new TextEncoder().encode('EHC-DYN-v1\0');
const ENROL_CONTEXT = new TextEncoder().encode('EHC-ENROL-v1\0');
const MAX_STEP = Math.floor(0xffffffff / STEP_SECONDS);

/** The step containing `seconds` (POSIX seconds): floor(seconds / 30). */
export function stepAt(seconds) {
  return Math.floor(seconds / STEP_SECONDS);
}

async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

/** The bytes the device signs for a presentation of `cose` at `step` (51 bytes). */
export async function deviceSigningInput(cose, step) {
  const be = new Uint8Array(8);
  new DataView(be.buffer).setBigUint64(0, BigInt(step));
  return concat(DYN_CONTEXT, be, await sha256(cose));
}

/** The bytes the device signs to enrol (77 bytes). */
export async function proofOfPossessionInput(challenge, point) {
  if (challenge.length !== 32) throw new Error('challenge must be 32 bytes');
  return concat(ENROL_CONTEXT, challenge, await sha256(point));
}

/** The step as a CBOR uint in its shortest form. */
export function cborUint(n) {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error('step out of range');
  if (n < 24) return Uint8Array.of(n);
  if (n < 0x100) return Uint8Array.of(0x18, n);
  if (n < 0x10000) return Uint8Array.of(0x19, n >> 8, n & 0xff);
  return Uint8Array.of(0x1a, n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff);
}

/** The presentation text of `cose` (the credential's COSE_Sign1) at `step` with `signature` (64 bytes raw r || s). */
export function encodePresentation(cose, step, signature) {
  if (!Number.isInteger(step) || step < 0 || step > MAX_STEP) throw new Error('step out of range');
  if (signature.length !== 64) throw new Error('device signature must be 64 bytes (raw r || s)');
  splitCose(cose);
  const body = concat(Uint8Array.of(0x83), cose, cborUint(step), Uint8Array.of(0x58, 0x40), signature);
  return PRESENTATION_PREFIX + b45encode(body);
}

/** The presentation of `cose` at `step`, signed with `privateKey` (a WebCrypto ECDSA P-256 key). */
export async function present(cose, step, privateKey) {
  const input = await deviceSigningInput(cose, step);
  const signature = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, privateKey, input));
  return encodePresentation(cose, step, signature);
}

/** A presentation taken apart (form only, NOT verified): {cose, step, signature}. For tests and diagnostics. */
export function decodePresentationUnverified(text) {
  if (!text.startsWith(PRESENTATION_PREFIX)) throw new Error('not a presentation');
  const data = b45decode(text.slice(PRESENTATION_PREFIX.length));
  if (data[0] !== 0x83 || data.length < 76 || data[data.length - 66] !== 0x58 || data[data.length - 65] !== 0x40) {
    throw new Error('not an array of credential, step and signature');
  }
  let end = 3;  // the credential: d2 84, then three byte strings and a0
  const span = (pos) => {
    const ai = data[pos] & 0x1f;
    if (ai < 24) return pos + 1 + ai;
    if (ai === 24) return pos + 2 + data[pos + 1];
    return pos + 3 + ((data[pos + 1] << 8) | data[pos + 2]);
  };
  end = span(end);
  end = span(end + 1);
  end = span(end);
  const cose = data.subarray(1, end);
  splitCose(cose);
  const stepBytes = data.subarray(end, data.length - 66);
  let step = 0;
  if (stepBytes[0] < 24 && stepBytes.length === 1) step = stepBytes[0];
  else for (const b of stepBytes.subarray(1)) step = step * 256 + b;
  if (!cborUint(step).every((b, i) => b === stepBytes[i]) || cborUint(step).length !== stepBytes.length) {
    throw new Error('step not a shortest-form uint');
  }
  return { cose, step, signature: data.subarray(data.length - 64) };
}
