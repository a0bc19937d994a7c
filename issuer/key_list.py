"""The province's key list as the issuer serves it to its web wallet (``/wallet/keys.json``).

The page checks every credential against a key list before it shows a code
(``docs/web-wallet.md``). :class:`ServedKeyList` makes that list from the
issuer's *own* keys, so a deployment does not copy a file into the wallet's
directory and the page learns of a rotation without a redeploy:

* a rotating signer (``keys.key_set``, :class:`keys.rotating_signer.RotatingSigner`):
  ``KeyList(province, serial=<key set revision>, keys=key_set.trusted_keys(now))``,
  the same keys, windows and statuses that ``healthcode-keys province publish``
  signs into the trust repository as ``provinces/<code>/keys.json``
  (:meth:`keys.province_keys.ProvinceKeyAdmin.publish`). The signer re-reads its
  key-set file every ``keys.key_set_check_seconds`` and on SIGHUP, and at once
  after a KeyAdmin change; each request reads the signer's current key set, so
  the served list follows within that interval. The serial is the key set's
  revision, which grows with every change of the keys (the page refuses a list
  with a lower serial than one it kept);
* one fixed ``keys.signing_key`` (development): that key, serial 1, valid from
  2000 to 2999, as the issuer's own national link trusts it
  (``issuer/national_setup.py``).

The bytes are the canonical ``healthcode-key-list`` JSON (:mod:`healthcode.keylist`),
made again only when the key set's revision, or a key's presence or status at ``now``
(a key past its ``use_until`` reads retired, one past its ``verify_until`` drops out), changes.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, Callable

import healthcode as hc
from healthcode.keylist import KeyList

__all__ = ["ServedKeyList", "FIXED_KEY_FROM", "FIXED_KEY_UNTIL"]

#: The window given to one fixed signing key (it has none of its own).
FIXED_KEY_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
FIXED_KEY_UNTIL = dt.datetime(2999, 1, 1, tzinfo=dt.timezone.utc)


class ServedKeyList:
    """The current key list of one issuer's signer: call :meth:`current` for its bytes.

    ``signer`` is a :class:`keys.rotating_signer.RotatingSigner` (anything with a
    ``key_set`` attribute) or one fixed :class:`healthcode.Signer` (``kid``,
    ``public_key()``); ``clock`` returns the aware UTC time of a request.
    """

    def __init__(self, signer: Any, *, province: str, clock: Callable[[], dt.datetime]) -> None:
        self._signer = signer
        self._province = hc.ProvinceCode(hc.parse_province(province))
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[Any, bytes] | None = None  # (what the bytes were made from, the bytes)
        self._fixed: bytes | None = None
        if getattr(signer, "key_set", None) is None:
            key = hc.TrustedKey(kid=signer.kid, province=self._province, public_key=signer.public_key(),
                                use_from=FIXED_KEY_FROM, use_until=FIXED_KEY_UNTIL, verify_until=FIXED_KEY_UNTIL)
            self._fixed = KeyList(province=self._province, serial=1, keys=(key,)).to_bytes()

    def current(self) -> bytes:
        """The key list's canonical bytes now (see the module docstring)."""
        if self._fixed is not None:
            return self._fixed
        key_set = self._signer.key_set
        keys = key_set.trusted_keys(self._clock())
        made_from = (key_set.revision, tuple((k.kid, k.status) for k in keys))
        with self._lock:
            cached = self._cached
            if cached is not None and cached[0] == made_from:
                return cached[1]
            data = KeyList(province=self._province, serial=key_set.revision, keys=keys).to_bytes()
            self._cached = (made_from, data)
            return data
