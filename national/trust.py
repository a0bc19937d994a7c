"""The province keys the national service verifies scanned codes with.

Two sources, as files the operator keeps current (re-read on SIGHUP):

* ``trust.key_lists``: province key lists (``healthcode-key-list`` documents,
  the TUF targets ``provinces/<code>/keys.json`` of the national trust
  repository, :func:`healthcode.keylist.parse_key_list`), parsed strictly,
  each under the province it names;
* ``trust.dev_bundle``: the verifier's unsigned development bundle
  (:mod:`verifier.trust_sources`), for tests and demos only.
"""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import tempfile
from typing import Sequence

import healthcode as hc
from healthcode.keylist import MAX_KEY_LIST_BYTES, InvalidKeyList, parse_key_list

from .errors import ConfigError

__all__ = ["load_keyring", "KeyringHolder"]


def _key_list_keys(path: pathlib.Path) -> tuple[hc.TrustedKey, ...]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read key list {path}: {e.strerror}") from None
    if len(raw) > MAX_KEY_LIST_BYTES:
        raise ConfigError(f"key list {path} is too large")
    try:
        province = json.loads(raw).get("province")
        return parse_key_list(raw, province=str(province)).trusted_keys()
    except (ValueError, AttributeError, InvalidKeyList) as e:
        raise ConfigError(f"key list {path} is not valid: {e}") from None


def _dev_bundle_keys(path: pathlib.Path, now: dt.datetime) -> tuple[hc.TrustedKey, ...]:
    from verifier.errors import TrustError
    from verifier.trust_sources import DevBundleSource

    with tempfile.TemporaryDirectory(prefix="national-trust-") as cache:
        source = DevBundleSource(cache, path)
        try:
            source.refresh(now)
            return tuple(source.load(now).keyring)
        except TrustError as e:
            raise ConfigError(f"trust.dev_bundle {path}: {e}") from None


def load_keyring(*, key_lists: Sequence[pathlib.Path] = (), dev_bundle: pathlib.Path | None = None,
                 now: dt.datetime) -> hc.Keyring:
    """The keyring of every trusted province key the files name (an empty keyring if none)."""
    keys: list[hc.TrustedKey] = []
    for path in key_lists:
        keys.extend(_key_list_keys(pathlib.Path(path)))
    if dev_bundle is not None:
        keys.extend(_dev_bundle_keys(pathlib.Path(dev_bundle), now))
    try:
        return hc.Keyring(keys)
    except hc.HealthCodeError as e:
        raise ConfigError(f"the trusted keys do not form a keyring: {e}") from None


class KeyringHolder:
    """The current keyring; :meth:`replace` swaps it (one reference assignment: readers never see half)."""

    def __init__(self, keyring: hc.Keyring) -> None:
        self._keyring = keyring

    def __call__(self) -> hc.Keyring:
        return self._keyring

    def replace(self, keyring: hc.Keyring) -> None:
        self._keyring = keyring
