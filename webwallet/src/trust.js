// The trust data the page was given: the province's key list (the healthcode-key-list JSON of
// healthcode/keylist.py, the same document terminals get from the trust repository), served
// next to the page. Pure apart from WebCrypto's importKey.
//
// The page's code and its key list come from the same origin over TLS, so they are trusted alike;
// the page keeps the last good list (IndexedDB) for offline use and refuses one with a lower
// serial, as terminals do.

import { ALG_EDDSA, ALG_ES256 } from './credential.js';

const ALGS = new Map([['ES256', -7], ['EdDSA', -8], ['SM2-SM3', -65537]]);
const STATUSES = new Set(['active', 'retired', 'compromised']);
const POLICIES = new Set(['reject_from_compromise', 'reject_all']);
const MAX_KEYS = 64;

export class TrustError extends Error {
  constructor(message) { super(message); this.reason = 'trust_data'; }
}

function seconds(value, where) {
  if (typeof value !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/.test(value)) {
    throw new TrustError(`${where}: not a UTC time like 2026-11-01T00:00:00Z`);
  }
  return Date.parse(value) / 1000;
}

function pemToDer(pem) {
  const body = pem.replace(/-----(BEGIN|END) PUBLIC KEY-----/g, '').replace(/\s+/g, '');
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * Parse the key lists in `json` (one key list object, or an array of them) and import their
 * ES256 keys; keys of other algorithms are kept without a cryptoKey (the page cannot check them).
 * Returns {serials: {province: serial}, keys, find(province, kidBytes)}; throws TrustError.
 */
export async function parseTrust(json) {
  const lists = Array.isArray(json) ? json : [json];
  const keys = [];
  const serials = {};
  for (const list of lists) {
    if (!list || list.type !== 'healthcode-key-list' || list.version !== 1) throw new TrustError('not a key list (healthcode-key-list, version 1)');
    if (typeof list.province !== 'string' || !/^[1-8][0-9]$/.test(list.province)) throw new TrustError('key list province must be two digits');
    if (!Number.isInteger(list.serial) || list.serial < 0) throw new TrustError('key list serial must be a whole number');
    if (!Array.isArray(list.keys) || list.keys.length > MAX_KEYS) throw new TrustError('key list keys must be a list');
    if (list.province in serials) throw new TrustError(`province ${list.province} has two key lists`);
    serials[list.province] = list.serial;
    for (const [i, entry] of list.keys.entries()) {
      const where = `key ${i} of province ${list.province}`;
      if (!ALGS.has(entry.alg)) throw new TrustError(`${where}: unknown algorithm`);
      if (typeof entry.kid !== 'string' || !/^([0-9a-f]{2}){1,32}$/.test(entry.kid)) throw new TrustError(`${where}: bad kid`);
      if (!STATUSES.has(entry.status) || !POLICIES.has(entry.compromise_policy)) throw new TrustError(`${where}: bad status`);
      const key = {
        province: list.province, kidHex: entry.kid, alg: ALGS.get(entry.alg), algName: entry.alg,
        status: entry.status, compromisePolicy: entry.compromise_policy,
        compromisedSince: entry.compromised_since === null ? null : seconds(entry.compromised_since, where),
        useFrom: seconds(entry.use_from, where), useUntil: seconds(entry.use_until, where),
        verifyUntil: seconds(entry.verify_until, where), cryptoKey: null,
      };
      if ((key.status === 'compromised') !== (key.compromisedSince !== null)) throw new TrustError(`${where}: compromised_since iff compromised`);
      if (key.alg === ALG_ES256) {
        try {
          key.cryptoKey = await crypto.subtle.importKey('spki', pemToDer(entry.public_key_pem),
            { name: 'ECDSA', namedCurve: 'P-256' }, false, ['verify']);
        } catch {
          throw new TrustError(`${where}: not a P-256 public key`);
        }
      } else if (key.alg === ALG_EDDSA) {
        try {  // WebCrypto's Ed25519 (Chromium 137 and later); without it such a key cannot be checked here
          key.cryptoKey = await crypto.subtle.importKey('spki', pemToDer(entry.public_key_pem), { name: 'Ed25519' },
            false, ['verify']);
        } catch {
          key.cryptoKey = null;
        }
      }  // SM2-SM3: WebCrypto has no SM2; such keys stay without a cryptoKey
      keys.push(key);
    }
  }
  return {
    serials,
    keys,
    find(province, kid) {
      const wanted = hex(kid);
      return keys.find((k) => k.province === province && k.kidHex === wanted) || null;
    },
  };
}

/** Whether `fresh` may replace `kept` (`{serials}`: a parsed list, or the highest serials seen): no
 * province's serial goes down. */
export function notRolledBack(kept, fresh) {
  if (!kept) return true;
  return Object.entries(kept.serials).every(([p, s]) => !(p in fresh.serials) || fresh.serials[p] >= s);
}

/** The highest serial seen per province, over both: what a later list must not go below, even after a
 * list that left a province out replaced the one that had it. */
export function highestSerials(a, b) {
  const out = { ...a };
  for (const [p, s] of Object.entries(b)) out[p] = Math.max(out[p] ?? s, s);
  return out;
}
