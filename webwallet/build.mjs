// The web wallet's build: src/ -> dist/ (docs/web-wallet.md). esbuild bundles and minifies
// src/main.js with its npm dependencies (qrcode, cborg) into dist/app.js; index.html and the
// manifest are copied; sw.js gets the build's content hash, so a new build replaces the cache.
// dist/ is not committed: `./dev setup` runs `npm ci && npm run build` here.

import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';

const out = 'dist';
rmSync(out, { recursive: true, force: true });
mkdirSync(out);
await build({
  entryPoints: ['src/main.js'], bundle: true, minify: true, format: 'esm', target: ['chrome100', 'safari15'],
  outfile: `${out}/app.js`, legalComments: 'eof', logLevel: 'warning',
});
copyFileSync('src/index.html', `${out}/index.html`);
copyFileSync('src/manifest.webmanifest', `${out}/manifest.webmanifest`);
const hash = createHash('sha256');
for (const name of ['app.js', 'index.html', 'manifest.webmanifest']) hash.update(readFileSync(`${out}/${name}`));
const sw = readFileSync('src/sw.js', 'utf8').replace('__BUILD__', hash.digest('hex').slice(0, 16));
writeFileSync(`${out}/sw.js`, sw);
console.log(`webwallet: built ${out}/ (app.js ${readFileSync(`${out}/app.js`).length} bytes)`);
