// The issuer's API over the Connect protocol (unary, JSON): POST <base><package>.<Service>/<Method>
// with the proto3 JSON form of the request; errors come back as {code, message, details}.
// `fetch` failing (no network, the server gone) and the codes that say "not now" are `offline`.

export const OFFLINE_CODES = new Set(['unavailable', 'deadline_exceeded', 'resource_exhausted']);
const PACKAGE = 'healthcode.issuer.v1';

export class ApiError extends Error {
  /** `code`: a Connect error code ("invalid_argument", ...) or "unavailable" for no answer at all. */
  constructor(code, message, details = []) {
    super(message);
    this.code = code;
    this.details = details;
  }
  get offline() { return OFFLINE_CODES.has(this.code); }
}

export function toBase64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function fromBase64(text) {
  const std = text.replace(/-/g, '+').replace(/_/g, '/');
  return Uint8Array.from(atob(std + '='.repeat((4 - (std.length % 4)) % 4)), (c) => c.charCodeAt(0));
}

/**
 * An API client for `base` (the issuer's origin, or the app back end's that relays to it).
 * `authorization` (optional) is sent as the Authorization header: an API key with the issuer's
 * wallet role at most (docs/web-wallet.md). The page calls only the wallet role's methods.
 */
export function apiClient({ base, authorization = null, timeoutMs = 10000, fetch = globalThis.fetch.bind(globalThis) }) {
  const root = base.endsWith('/') ? base : `${base}/`;
  async function call(service, method, body) {
    const headers = { 'Content-Type': 'application/json', 'Connect-Protocol-Version': '1' };
    if (authorization) headers.Authorization = authorization;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), timeoutMs);
    let response;
    try {
      response = await fetch(`${root}${PACKAGE}.${service}/${method}`, {
        method: 'POST', headers, body: JSON.stringify(body), signal: abort.signal, cache: 'no-store',
      });
    } catch (err) {
      throw new ApiError(abort.signal.aborted ? 'deadline_exceeded' : 'unavailable', `no answer from the issuer (${err.message})`);
    } finally {
      clearTimeout(timer);
    }
    let payload = null;
    try { payload = await response.json(); } catch { payload = null; }
    if (response.ok && payload) return payload;
    if (payload && typeof payload.code === 'string') {
      throw new ApiError(payload.code, payload.message || payload.code, payload.details || []);
    }
    const code = response.status >= 500 || response.status === 429 ? 'unavailable' : 'unknown';
    throw new ApiError(code, `HTTP ${response.status} from the issuer`);
  }
  return {
    findResident: (document) => call('ResidentIndex', 'FindResident', { document }),
    registerResident: (document) => call('ResidentIndex', 'RegisterResident', { primary: document }),
    createChallenge: (resident) => call('Wallets', 'CreateChallenge', resident),  // {document} or {mainIndexId}
    issueCredential: (request) => call('Wallets', 'IssueCredential', request),
    listLiveCodes: (mainIndexId) => call('Wallets', 'ListLiveCodes', { mainIndexId }),
  };
}
