// What the web wallet does, with every side effect named (docs/web-wallet.md; the Python
// reference is wallet/core.py, the bytes are docs/wallet.md's):
//
// * device(): the P-256 device key, made once with WebCrypto as NON-EXTRACTABLE and kept in
//   IndexedDB; its public point (SEC 1 uncompressed) is stored beside it;
// * enrol(document): FindResident (RegisterResident when unknown), CreateChallenge, the device
//   signs the proof of possession, IssueCredential; the answer is kept only once it verifies
//   against the trust data and names this device's key;
// * present(now): the live code of the current 30-s step, offline;
// * renewIfDue(now): once less than half the validity remains (at most every 5 min after a
//   failure), the device enrols again for the credential's resident: ListLiveCodes (is the held
//   credential still live?), CreateChallenge, the proof, IssueCredential, which supersedes the
//   old credential at the issuer. Only the phone holding the device key can renew, and only the
//   wallet's own calls are used (the page's API key may have the issuer's wallet role only:
//   docs/web-wallet.md). A credential no longer live is dropped and the resident asked to enrol
//   again.
//
// Enrolment and renewal persist their idempotency key before the call and clear it in the write
// that stores the result, so a lost answer never mints two credentials. Times are passed in
// (seconds since the epoch); the page's clock is read only by main.js.

import { ApiError, fromBase64, toBase64 } from './api.js';
import { boundTo, checkCredential, CredentialError, decodeCredentialUnverified } from './credential.js';
import { present, proofOfPossessionInput, stepAt } from './presentation.js';

export const RENEW_BELOW = 0.5;
export const RETRY_AFTER = 300;

/** A failure the page shows: reason (offline, revoked, refused, bad_credential, ...) and detail. */
export class WalletError extends Error {
  constructor(reason, detail) {
    super(detail);
    this.reason = reason;
  }
}

export function newIdempotencyKey() {
  return `web-${crypto.randomUUID().replace(/-/g, '')}`;
}

function walletError(err, doing) {
  if (err instanceof WalletError) return err;
  if (err instanceof ApiError) {
    if (err.offline) return new WalletError('offline', `cannot ${doing}: the issuer cannot be reached now (${err.code}); try again later`);
    return new WalletError('refused', `cannot ${doing}: the issuer refused (${err.code}: ${err.message})`);
  }
  if (err instanceof CredentialError) return new WalletError('bad_credential', `the issuer's credential is unusable (${err.reason}: ${err.message})`);
  return new WalletError('refused', `cannot ${doing}: ${err.message}`);
}

/** When the credential `claims` (issuedAt, expiresAt in seconds) is due for renewal. */
export function renewAt(claims) {
  return claims.expiresAt - (claims.expiresAt - claims.issuedAt) * RENEW_BELOW;
}

export class Wallet {
  /** `store`: store.js; `api`: api.js's client, or null (no network configured); `trust`: trust.js's, or null. */
  constructor({ store, api, trust }) {
    this.store = store;
    this.api = api;
    this.trust = trust;
  }

  /** The device key {keyPair, point}, made on first use (non-extractable private key). */
  async device() {
    let device = await this.store.get('device');
    if (!device) {
      const keyPair = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify']);
      const point = new Uint8Array(await crypto.subtle.exportKey('raw', keyPair.publicKey));
      device = { keyPair, point };
      await this.store.put({ device });
    }
    return device;
  }

  /** The credential held and checked now: {text, claims}; throws WalletError (not_enrolled, expired, bad_credential, no_trust_data). */
  async credential(now) {
    const held = await this.store.get('credential');
    if (!held) throw new WalletError('not_enrolled', 'no credential yet: enrol with your document');
    return { text: held.text, claims: await this.check(held.text, now) };
  }

  async check(text, now) {
    if (!this.trust) throw new WalletError('no_trust_data', "no issuer keys to check the credential with: open the page online once");
    const { point } = await this.device();
    try {
      return await checkCredential(text, this.trust, { now, devicePoint: point });
    } catch (err) {
      if (err instanceof CredentialError && err.reason === 'expired') throw new WalletError('expired', 'the credential has expired: connect to renew it, or enrol again');
      if (err instanceof CredentialError) throw new WalletError('bad_credential', `this credential cannot be verified (${err.reason}: ${err.message})`);
      throw err;
    }
  }

  /** The live code of the step containing `now`: {text, step}. Never touches the network. */
  async present(now) {
    const { claims } = await this.credential(now);
    const { keyPair } = await this.device();
    const step = stepAt(now);
    return { text: await present(claims.cose, step, keyPair.privateKey), step, claims };
  }

  /** Enrol this device for the resident holding `document` ({type, number, country}); returns the claims. */
  async enrol(document, now) {
    if (!this.api) throw new WalletError('offline', 'no issuer configured');
    await this.device();  // made before anything is sent: the key the issuer will bind
    const kept = await this.store.get('pending');
    const pending = kept && kept.operation === 'enrol' ? kept : { operation: 'enrol', idempotencyKey: newIdempotencyKey() };
    await this.store.put({ pending });
    return this.keep(async () => {
      await this.findOrRegister(document);
      return this.bind({ document }, pending.idempotencyKey);
    }, now, 'enrol');
  }

  /** CreateChallenge for `resident` ({document} or {mainIndexId}), the device's proof of possession,
   * IssueCredential: the issued credential ({codeText, ...}). */
  async bind(resident, idempotencyKey) {
    const { keyPair, point } = await this.device();
    const { challenge } = await this.api.createChallenge(resident);
    const proof = new Uint8Array(await crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-256' }, keyPair.privateKey,
      await proofOfPossessionInput(fromBase64(challenge), point)));
    const answer = await this.api.issueCredential({
      ...resident, challenge, proof: toBase64(proof), idempotencyKey,
      deviceKey: { algorithm: 'DEVICE_KEY_ALGORITHM_ES256', publicKey: toBase64(point) },
    });
    return answer.credential;
  }

  async findOrRegister(document) {
    try {
      await this.api.findResident(document);
    } catch (err) {
      if (!(err instanceof ApiError) || err.code !== 'not_found') throw err;
      try {
        await this.api.registerResident(document);
      } catch (again) {
        if (!(again instanceof ApiError) || again.code !== 'already_exists') throw again;  // registered meanwhile
      }
    }
  }

  /** Renew now: this device enrols again for the credential's resident (see the top of the file);
   * returns the new claims or throws WalletError (offline, revoked, expired, refused, ...). */
  async renew(now) {
    if (!this.api) throw new WalletError('offline', 'no issuer configured');
    const held = await this.store.get('credential');
    if (!held) throw new WalletError('not_enrolled', 'no credential yet: enrol with your document');
    const { claims } = decodeCredentialUnverified(held.text);
    const serial = claims.serial.toString();
    const kept = await this.store.get('pending');
    const pending = kept && kept.operation === 'renew' && kept.serial === serial ? kept
      : { operation: 'renew', idempotencyKey: newIdempotencyKey(), serial };
    await this.store.put({ pending });
    return this.keep(async () => {
      const live = await this.liveCredentials(claims.subject);
      if (!live.some((c) => c.serial === serial)) {
        const renewed = live.find((c) => c.serial !== serial);  // a renewal whose answer was lost
        if (renewed) return { codeText: renewed.text };
        if (now >= claims.expiresAt) throw new WalletError('expired', 'the credential has expired: enrol this phone again');
        await this.store.put({ credential: undefined });
        throw new WalletError('revoked', 'the credential is no longer valid at the issuer (revoked, or replaced by ' +
          'an enrolment of another phone): enrol this phone again');
      }
      return this.bind({ mainIndexId: claims.subject }, pending.idempotencyKey);
    }, now, 'renew the credential');
  }

  /** The resident's live phone credentials bound to this device: [{serial, text}], newest first (ListLiveCodes). */
  async liveCredentials(mainIndexId) {
    const { point } = await this.device();
    const { codes = [] } = await this.api.listLiveCodes(mainIndexId);
    const out = [];
    for (const live of codes) {
      if (live.channel !== 'CHANNEL_PHONE' || !live.code || !live.code.codeText) continue;
      try {
        const { claims } = decodeCredentialUnverified(live.code.codeText);
        if (claims.cnf && boundTo(claims.cnf, point)) out.push({ serial: claims.serial.toString(), text: live.code.codeText });
      } catch {
        // not a credential this page can read: not this device's
      }
    }
    return out;
  }

  /** Renew when due; never throws for a failed attempt: {renewed, error}. After a failure it waits
   * RETRY_AFTER seconds, unless `retryNow` (the browser has just come back online). */
  async renewIfDue(now, { retryNow = false } = {}) {
    const held = await this.store.get('credential');
    if (!held || !this.api) return { renewed: false, error: null };
    const claims = decodeCredentialUnverified(held.text).claims;
    const failure = await this.store.get('lastFailure');
    const waiting = failure && !retryNow && now < failure.at + RETRY_AFTER;
    if (now < renewAt(claims) || waiting) return { renewed: false, error: null };
    try {
      await this.renew(now);
      return { renewed: true, error: null };
    } catch (err) {
      return { renewed: false, error: err };
    }
  }

  /** Run the issuer `call` (its idempotency key already persisted); keep the credential it returns
   * once it checks, clearing `pending` in the same write; record a failure and rethrow. */
  async keep(call, now, doing) {
    try {
      const issued = await call();
      const claims = await this.check(issued.codeText, now);
      await this.store.put({ credential: { text: issued.codeText }, pending: undefined, lastFailure: undefined });
      return claims;
    } catch (err) {
      const error = walletError(err, doing);
      const keepPending = error.reason === 'offline';
      await this.store.put({
        lastFailure: { reason: error.reason, detail: error.message, at: now },
        ...(keepPending ? {} : { pending: undefined }),
      });
      throw error;
    }
  }
}
