// The service worker: keeps the page so that the live code shows with the network off.
// The page's own files are served from the cache of this build (BUILD is replaced by the
// build's content hash, so a new build installs a new cache and drops the old one); keys.json and
// config.json go to the network first and fall back to the copy kept. API calls are never cached.

const BUILD = '__BUILD__';
const CACHE = `healthcode-wallet-${BUILD}`;
const SHELL = ['./', './index.html', './app.js', './manifest.webmanifest'];
const NETWORK_FIRST = ['keys.json', 'config.json'];

self.addEventListener('install', (event) => {
  event.waitUntil((async () => {
    const cache = await caches.open(CACHE);
    await cache.addAll(SHELL);
    for (const name of NETWORK_FIRST) {  // optional files: a deployment may not have config.json
      try {
        const response = await fetch(name, { cache: 'no-cache' });
        if (response.ok) await cache.put(name, response);
      } catch { /* offline at install: the page fetches them itself later */ }
    }
    await self.skipWaiting();
  })());
});

self.addEventListener('activate', (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith('healthcode-wallet-') && name !== CACHE) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  const scope = new URL(self.registration.scope);
  if (!url.pathname.startsWith(scope.pathname)) return;
  const name = url.pathname.slice(scope.pathname.length);
  if (NETWORK_FIRST.includes(name)) {
    event.respondWith((async () => {
      const cache = await caches.open(CACHE);
      try {
        const response = await fetch(request);
        if (response.ok) await cache.put(name, response.clone());
        return response;
      } catch {
        return (await cache.match(name)) || Response.error();
      }
    })());
    return;
  }
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const key = request.mode === 'navigate' || name === '' ? './index.html' : request;
    return (await cache.match(key, { ignoreSearch: true })) || fetch(request);
  })());
});
