// The page: load the trust data and the wallet, show the live code (offline too), enrol, renew.
// The only module that touches the DOM, the network configuration and the clock.

import QRCode from 'qrcode';
import { apiClient } from './api.js';
import { openStore } from './store.js';
import { highestSerials, notRolledBack, parseTrust, TrustError } from './trust.js';
import { renewAt, Wallet, WalletError } from './wallet.js';
import { STEP_SECONDS, stepAt } from './presentation.js';

const $ = (id) => document.getElementById(id);
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** "2026-12-14 12:50 北京时间 (CST)": people read Beijing time (UTC+8, no daylight saving). */
export function beijing(seconds) {
  const iso = new Date((seconds + 8 * 3600) * 1000).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} 北京时间 (CST)`;
}

const MESSAGES = {
  offline: ['无法连接签发机构', 'Cannot reach the issuer'],
  revoked: ['此凭证已撤销，请重新登记', 'This credential was revoked: enrol again'],
  refused: ['签发机构拒绝了请求', 'The issuer refused'],
  bad_credential: ['凭证无法验证，不显示健康码', 'The credential cannot be verified: no code is shown'],
  expired: ['凭证已过期，请联网续期或重新登记', 'The credential has expired: go online to renew, or enrol again'],
  not_enrolled: ['尚未登记，请用证件登记', 'Not enrolled yet: enrol with your document'],
  no_trust_data: ['没有签发机构公钥，请先联网打开本页', 'No issuer keys: open this page online once'],
  trust_data: ['签发机构公钥有误', 'The issuer keys are invalid'],
};

function say(element, reason, detail) {
  const [zh, en] = MESSAGES[reason] || ['出错了', 'Something went wrong'];
  element.textContent = `${zh} / ${en}${detail ? ` (${detail})` : ''}`;
  element.dataset.reason = reason;
  element.hidden = false;
}

async function loadJson(url) {
  const response = await fetch(url, { cache: 'no-cache' });
  if (!response.ok) throw new Error(`HTTP ${response.status}`);
  return response.json();
}

/** The key list: fetched fresh when possible (not rolled back), else the last good one kept. */
async function loadTrust(store) {
  const kept = await store.get('trust');
  const keptTrust = kept ? await parseTrust(kept.json).catch(() => null) : null;
  const seen = highestSerials((await store.get('trustSerials')) || {}, keptTrust ? keptTrust.serials : {});
  try {
    const json = await loadJson('keys.json');
    const fresh = await parseTrust(json);
    if (notRolledBack({ serials: seen }, fresh)) {
      await store.put({ trust: { json }, trustSerials: highestSerials(seen, fresh.serials) });
      return fresh;
    }
  } catch (err) {
    if (err instanceof TrustError && !keptTrust) throw err;
  }
  return keptTrust;
}

async function loadConfig() {
  try {
    return await loadJson('config.json');
  } catch {
    return {};
  }
}

class Page {
  constructor(wallet) {
    this.wallet = wallet;
    this.timer = null;
    this.shown = false;
  }

  async start() {
    $('enrol-form').addEventListener('submit', (event) => { event.preventDefault(); this.enrol(); });
    window.addEventListener('online', () => { this.retryNow = true; });  // back online: retry a failed renewal at once
    $('document-type').addEventListener('change', () => { $('country-row').hidden = $('document-type').value !== 'DOCUMENT_TYPE_PASSPORT'; });
    await this.tick();
  }

  /** Every second: a new presentation when the step changed (or `force`), else the countdown.
   * Ticks run one at a time (a renewal's forced tick waits for the timer's). */
  tick(force = false) {
    this.queue = (this.queue || Promise.resolve()).then(() => this.tickNow(force));
    return this.queue;
  }

  async tickNow(force) {
    clearTimeout(this.timer);
    const now = nowSeconds();
    try {
      if (force || !this.current || stepAt(now) !== this.current.step || now >= this.current.claims.expiresAt) {
        const { text, step, claims } = await this.wallet.present(now);
        this.current = { step, claims };
        await this.draw(text, step, claims);
      }
      await this.describe(now);
      $('enrol').hidden = true;
    } catch (err) {
      if (!(err instanceof WalletError)) throw err;
      this.current = null;
      this.hideCode();
      if (err.reason !== 'not_enrolled') say($('error'), err.reason, err.message);
      $('enrol').hidden = false;
    }
    this.timer = setTimeout(() => this.tick(), 1000 - (Date.now() % 1000) + 20);
    if (!this.renewing) {
      this.renewInBackground(now, { retryNow: this.retryNow });
      this.retryNow = false;
    }
  }

  async draw(text, step, claims) {
    const canvas = $('qr');
    const width = Math.min(document.documentElement.clientWidth - 24, 480);
    const scale = Math.max(3, Math.floor(width / 73));  // version 12: 65 modules + 2 x 4 quiet zone
    await QRCode.toCanvas(canvas, [{ data: text, mode: 'alphanumeric' }], {
      errorCorrectionLevel: 'M', margin: 4, scale, color: { dark: '#000000ff', light: '#ffffffff' },
    });
    canvas.dataset.step = String(step);
    canvas.dataset.serial = claims.serial.toString();
    $('code').hidden = false;
    $('error').hidden = true;
    if (!this.shown) {
      this.shown = true;
      performance.mark('healthcode:code-shown');
    }
  }

  /** The words under the code: countdown, validity, renewal. */
  async describe(now) {
    const { step, claims } = this.current;
    const left = (step + 1) * STEP_SECONDS - now;
    $('refresh').textContent = `每 30 秒更新，${left} 秒后刷新 / Changes every 30 s, next in ${left} s`;
    $('validity').textContent = `有效期至 / Valid until ${beijing(claims.expiresAt)} · 序号 / serial ${claims.serial}`;
    const failure = await this.wallet.store.get('lastFailure');
    const renewal = $('renewal');
    if (failure && failure.reason === 'offline') {
      const until = beijing(claims.expiresAt);
      renewal.textContent = `暂时无法续期：无法连接签发机构。此码有效至 ${until} / Cannot renew now: the issuer ` +
        `cannot be reached. This code stays valid until ${until}.`;
      renewal.dataset.reason = 'offline';
    } else if (failure) {
      say(renewal, failure.reason, failure.detail);
    } else {
      renewal.textContent = `自动续期自 / Renews on its own from ${beijing(Math.ceil(renewAt(claims)))}`;
      renewal.dataset.reason = '';
    }
    $('offline-ready').hidden = !(navigator.serviceWorker && navigator.serviceWorker.controller);
  }

  hideCode() {
    $('code').hidden = true;
    delete $('qr').dataset.step;
  }

  async renewInBackground(now, options = {}) {
    this.renewing = true;
    try {
      const { renewed, error } = await this.wallet.renewIfDue(now, options);
      if (renewed || (error && error.reason === 'revoked')) await this.tick(true);
      if (error && error.reason === 'revoked') say($('error'), 'revoked', error.message);
    } finally {
      this.renewing = false;
    }
  }

  async enrol() {
    const button = $('enrol-button');
    button.disabled = true;
    $('error').hidden = true;
    const document = { type: $('document-type').value, number: $('document-number').value.trim() };
    if (document.type === 'DOCUMENT_TYPE_PASSPORT') document.country = $('country').value.trim().toUpperCase();
    try {
      await this.wallet.enrol(document, nowSeconds());
      $('document-number').value = '';  // the number is never kept
      await this.tick(true);
    } catch (err) {
      if (!(err instanceof WalletError)) throw err;
      say($('error'), err.reason, err.message);
    } finally {
      button.disabled = false;
    }
  }
}

async function main() {
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js').catch(() => {});  // offline use only; the page works without it
  }
  const store = await openStore();
  const config = await loadConfig();
  let trust = null;
  try {
    trust = await loadTrust(store);
  } catch (err) {
    say($('error'), 'trust_data', err.message);
  }
  const api = apiClient({ base: config.api || new URL('/', location.href).href, authorization: config.authorization || null });
  const page = new Page(new Wallet({ store, api, trust }));
  await page.start();
  if (navigator.serviceWorker) navigator.serviceWorker.ready.then(() => page.tick());  // show 'ready offline'
}

main().catch((err) => {
  const element = $('error');
  element.textContent = `出错了 / Something went wrong: ${err.message}`;
  element.hidden = false;
});
