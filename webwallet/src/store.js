// The wallet's state in IndexedDB: the device key pair (its private half a NON-EXTRACTABLE
// WebCrypto CryptoKey, stored as the object itself: the browser keeps the key material, script
// can sign with it but never read it), the credential, the pending idempotency key, the last
// failure and the last good key list. No document number, name or photo is ever stored.
//
// One object store, "state", one record per name. `update` reads and writes in one readwrite
// transaction, so a credential and the clearing of its pending key land together or not at all.

const DB_NAME = 'healthcode-wallet';
const DB_VERSION = 1;
const STORE = 'state';

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

export async function openStore(indexedDB = globalThis.indexedDB) {
  const open = indexedDB.open(DB_NAME, DB_VERSION);
  open.onupgradeneeded = () => open.result.createObjectStore(STORE);
  const db = await request(open);
  return {
    /** The record `name`, or undefined. */
    async get(name) {
      return request(db.transaction(STORE, 'readonly').objectStore(STORE).get(name));
    },
    /** Write several records (value undefined: delete) in one transaction. */
    async put(records) {
      const tx = db.transaction(STORE, 'readwrite');
      const store = tx.objectStore(STORE);
      for (const [name, value] of Object.entries(records)) {
        if (value === undefined) store.delete(name); else store.put(value, name);
      }
      await new Promise((resolve, reject) => {
        tx.oncomplete = resolve;
        tx.onerror = () => reject(tx.error);
        tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
      });
    },
    close() { db.close(); },
  };
}
