// Base45 (RFC 9285), the text form of health codes and live codes (docs/code-format.md §2.2).
// Strict like healthcode/base45.py: only the 45 characters, no trailing single character, every
// chunk in range. Pure: no I/O.

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:';
const VALUE = new Map([...ALPHABET].map((c, i) => [c, i]));

export class Base45Error extends Error {}

/** Bytes (Uint8Array) to Base45 text. */
export function b45encode(bytes) {
  let out = '';
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let n = bytes[i] * 256 + bytes[i + 1];
    const c = n % 45; n = (n - c) / 45;
    const d = n % 45; const e = (n - d) / 45;
    out += ALPHABET[c] + ALPHABET[d] + ALPHABET[e];
  }
  if (bytes.length % 2) {
    const n = bytes[bytes.length - 1];
    out += ALPHABET[n % 45] + ALPHABET[Math.floor(n / 45)];
  }
  return out;
}

/** Base45 text to bytes; throws Base45Error for a character outside the alphabet or a bad length or value. */
export function b45decode(text) {
  if (text.length % 3 === 1) throw new Base45Error('bad Base45 length');
  const out = new Uint8Array(Math.floor(text.length / 3) * 2 + (text.length % 3 === 2 ? 1 : 0));
  let o = 0;
  for (let i = 0; i < text.length; i += 3) {
    const chunk = text.slice(i, i + 3);
    let n = 0;
    for (let j = chunk.length - 1; j >= 0; j--) {
      const v = VALUE.get(chunk[j]);
      if (v === undefined) throw new Base45Error('character outside the Base45 alphabet');
      n = n * 45 + v;
    }
    if (chunk.length === 3) {
      if (n > 0xffff) throw new Base45Error('Base45 chunk out of range');
      out[o++] = n >> 8; out[o++] = n & 0xff;
    } else {
      if (n > 0xff) throw new Base45Error('Base45 chunk out of range');
      out[o++] = n;
    }
  }
  return out;
}
