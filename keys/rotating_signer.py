"""Where a rotation takes effect while the issuer serves: its rotating signer.

:class:`RotatingSigner` gives :class:`issuer.issuance.CodeIssuer` its
``signer_for(now)``. It preloads the signers of the keys that sign now or later, re-reads the key-set file when it
changes (:meth:`RotatingSigner.refresh`, driven every few seconds and on
SIGHUP by :meth:`RotatingSigner.watch`), so a rotation while serving is a
dictionary lookup and loses no request, and it enforces the per-key code cap.
It writes its per-key counts back into the key-set file
(:meth:`RotatingSigner.record_codes_signed`: from the watcher, at most every
``record_every`` seconds, and once more at shutdown), so ``healthcode-keys
province key list``, KeyAdmin and :meth:`ProvinceKeySet.plan_next` see them.

It serves from a :class:`keys.lifecycle.ProvinceKeySet`, read from its file with
:mod:`keys.key_set_file`.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import os
import pathlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from shellkit.times import iso_utc

from .errors import CodeCapReached, InvalidKeySet, KeyManagementError, KeyNotFound, NoActiveKey
from .key_set_file import key_set_lock, load_key_set, save_key_set
from .keystore.base import Keystore, KeystoreSigner
from .lifecycle import ProvinceKeySet
from .managed_key import KeyState, ManagedKey

__all__ = ["RotatingSigner"]

#: The logger keeps the name it had when this class lived in keys/lifecycle.py (operators filter on it).
log = logging.getLogger("keys.lifecycle")


@dataclass(frozen=True)
class _Loaded:
    key_set: ProvinceKeySet
    signers: Mapping[bytes, KeystoreSigner]


class RotatingSigner:
    """``signer_for(now)`` for :class:`issuer.issuance.CodeIssuer`: the signer of the key that signs at ``now``.

    * Signers of every key that signs now or later are loaded when a key set
      is installed (at construction and on each :meth:`refresh`), so the
      rotation instant costs a lookup; the key set and its signers are swapped
      together in one assignment, so a request sees the old pair or the new.
    * Each :meth:`signer_for` call counts one code against the key's cap (the
      issuer signs at most once per call); the call that would exceed
      ``policy.max_codes_per_key`` raises :class:`~keys.errors.CodeCapReached`.
      ``codes_signed(kid)`` seeds a key's count the first time it is used
      (the issuer passes its store's next serial, so a restart keeps counting).
    * With ``path``, :meth:`refresh` re-reads the key-set file when it changed
      (inode, size, mtime); a file from another province or with a lower
      revision is refused and the current key set stays.
    * With ``path``, :meth:`record_codes_signed` writes the counts back into the
      file (merged under :func:`key_set_lock`, only ever raising a count);
      :meth:`watch` does it every ``record_every`` seconds when a count moved,
      the issuer once more after its last RPC (:meth:`write_back`).

    Thread-safe: :meth:`refresh` may run in a worker thread while the event
    loop calls :meth:`signer_for`.
    """

    def __init__(
        self,
        keystore: Keystore,
        key_set: ProvinceKeySet,
        *,
        path: os.PathLike | str | None = None,
        codes_signed: Callable[[bytes], int] | None = None,
        _stamp: tuple[int, int, int] | None = None,
    ) -> None:
        self._keystore = keystore
        self._path = None if path is None else pathlib.Path(path)
        self._seed = codes_signed
        self._counts: dict[bytes, int] = {}
        self._count_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._recorded: dict[bytes, int] | None = None  # the counts last written back
        self._loaded = _Loaded(key_set, {})
        with self._refresh_lock:
            if self._path is not None:
                self._stamp = _stamp or self._stat(self._path)
            self._install(key_set)

    @classmethod
    def from_file(
        cls, path: os.PathLike | str, keystore: Keystore, *, province: str | None = None,
        codes_signed: Callable[[bytes], int] | None = None,
    ) -> "RotatingSigner":
        """A rotating signer over the key-set file at ``path`` (checked to be ``province``'s)."""
        try:
            st = os.stat(path)  # before reading: a change in between is seen by the next refresh
        except OSError as e:
            raise InvalidKeySet(f"cannot read key set {path}: {e.strerror}") from None
        key_set = load_key_set(path)
        if province is not None and key_set.province != province:
            raise InvalidKeySet(f"key set {path} is province {key_set.province}'s, not {province}'s")
        return cls(keystore, key_set, path=path, codes_signed=codes_signed,
                   _stamp=(st.st_ino, st.st_size, st.st_mtime_ns))

    @property
    def key_set(self) -> ProvinceKeySet:
        return self._loaded.key_set

    def count_codes_from(self, codes_signed: Callable[[bytes], int]) -> None:
        """Seed counts with ``codes_signed(kid)`` (e.g. the store's next serial), for the keys
        loaded now at once and for any other key at its first use. Call before serving."""
        with self._refresh_lock:
            self._seed = codes_signed
            for kid in self._loaded.signers:
                key = self._loaded.key_set.find(kid)
                count = self._initial_count(key)
                with self._count_lock:
                    self._counts[kid] = max(self._counts.get(kid, 0), count)

    def codes_signed(self) -> dict[bytes, int]:
        """Codes counted per kid so far (seeded values included)."""
        with self._count_lock:
            return dict(self._counts)

    # -- the hot path

    def signer_for(self, now: _dt.datetime) -> KeystoreSigner:
        """The signer of the key that signs at ``now``; counts one code against its cap.

        Raises :class:`~keys.errors.NoActiveKey` or :class:`~keys.errors.CodeCapReached`.
        """
        loaded = self._loaded  # one read: key set and signers belong together
        key = loaded.key_set.signing_key_at(now)
        signer = loaded.signers.get(key.kid)
        if signer is None:  # not preloaded (no handle, or a load failed at install): try now
            signer = self._load(key)
        cap = loaded.key_set.policy.max_codes_per_key
        with self._count_lock:
            count = self._counts.get(key.kid)
            if count is None:
                count = self._initial_count(key)
            if count >= cap:
                self._counts[key.kid] = count
                upcoming = loaded.key_set._next_signing_after(key.use_until)
                raise CodeCapReached(
                    f"key {key.kid.hex()} has signed its cap of {cap} codes; "
                    + (f"the next key {upcoming.kid.hex()} signs from {iso_utc(upcoming.use_from)}"
                       if upcoming is not None else "no next key is pre-published: rotate now"))
            self._counts[key.kid] = count + 1
        return signer

    __call__ = signer_for

    def _initial_count(self, key: ManagedKey) -> int:
        seeded = self._seed(key.kid) if self._seed is not None else 0
        return max(int(seeded), key.codes_signed)

    def _load(self, key: ManagedKey) -> KeystoreSigner:
        if key.handle is None:
            raise NoActiveKey(f"key {key.kid.hex()} has no keystore handle: this issuer cannot sign with it")
        signer = self._keystore.load_signer(key.handle)
        if signer.kid != key.kid or signer.public_key() != key.public_key:
            raise KeyNotFound(f"the keystore's key {key.handle.id} is not key {key.kid.hex()}")
        return signer

    # -- installing and reloading

    def _install(self, key_set: ProvinceKeySet) -> None:
        """Load the signers of every key that signs now or later, then swap (refresh lock held)."""
        current = self._loaded
        signers: dict[bytes, KeystoreSigner] = {}
        for key in key_set.keys:
            if key.status not in (KeyState.PREPUBLISHED, KeyState.ACTIVE) or key.handle is None:
                continue
            old = current.signers.get(key.kid)
            old_key = next((k for k in current.key_set.keys if k.kid == key.kid), None)
            if old is not None and old_key is not None and old_key.handle == key.handle:
                signers[key.kid] = old
            else:
                signers[key.kid] = self._load(key)
            if self._seed is not None:
                with self._count_lock:
                    known = key.kid in self._counts
                if not known:
                    count = self._initial_count(key)  # outside the lock: it may read a database
                    with self._count_lock:
                        self._counts.setdefault(key.kid, count)
        self._loaded = _Loaded(key_set, signers)

    @staticmethod
    def _stat(path: pathlib.Path) -> tuple[int, int, int]:
        try:
            st = os.stat(path)
        except OSError as e:
            raise InvalidKeySet(f"cannot read key set {path}: {e.strerror}") from None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def update(self, key_set: ProvinceKeySet) -> None:
        """Install ``key_set`` (same province, revision not lower)."""
        with self._refresh_lock:
            self._check_successor(key_set)
            self._install(key_set)

    def _check_successor(self, key_set: ProvinceKeySet) -> None:
        current = self._loaded.key_set
        if key_set.province != current.province:
            raise InvalidKeySet(f"key set is province {key_set.province}'s, not {current.province}'s")
        if key_set.revision < current.revision:
            raise InvalidKeySet(
                f"key set went back from revision {current.revision} to {key_set.revision}; keeping {current.revision}")

    def refresh(self, *, force: bool = False) -> bool:
        """Re-read the key-set file if it changed on disk (always with ``force``); True if installed.

        On a bad file the current key set stays and the error is raised.
        """
        if self._path is None:
            return False
        with self._refresh_lock:
            stamp = self._stat(self._path)
            if stamp == self._stamp and not force:
                return False
            key_set = load_key_set(self._path)
            self._stamp = stamp
            if key_set == self._loaded.key_set:
                return False
            self._check_successor(key_set)
            self._install(key_set)
        log.info("key set of province %s reloaded: revision %d", key_set.province, key_set.revision)
        return True

    # -- writing the counts back

    def record_codes_signed(self) -> bool:
        """Write this signer's per-key counts into the key-set file; True if the file changed.

        Holds :func:`key_set_lock` (as the ceremonies and KeyAdmin do), re-reads the
        file, raises each key's count to ours where ours is larger
        (:meth:`ProvinceKeySet.with_codes_signed`: the revision stays), and replaces
        the file only if a count went up. So a ceremony's change, before or after,
        is never lost, and no count ever goes down. When the file is still the one
        this signer last loaded, the written file becomes the loaded one (the next
        :meth:`refresh` sees nothing new); when someone changed it since, the next
        refresh installs that change as usual. Raises :class:`~keys.errors.InvalidKeySet`
        (a missing or foreign file, left alone) or ``OSError`` (cannot write). Never
        blocks :meth:`signer_for`, which takes neither lock.
        """
        if self._path is None:
            return False
        counts = self.codes_signed()
        with self._refresh_lock, key_set_lock(self._path):
            before = self._stat(self._path)
            on_disk = load_key_set(self._path)
            current = self._loaded.key_set
            if on_disk.province != current.province:
                raise InvalidKeySet(f"key set {self._path} is province {on_disk.province}'s, not "
                                    f"{current.province}'s: codes signed not recorded")
            merged = on_disk.with_codes_signed(counts)
            if merged is not on_disk:
                save_key_set(self._path, merged)
                if before == self._stamp and on_disk == current:  # our own write: not a change to reload
                    self._stamp = self._stat(self._path)
                    self._loaded = _Loaded(merged, self._loaded.signers)
            self._recorded = counts
        if merged is not on_disk:
            log.info("codes signed recorded in the key set of province %s: %s", current.province,
                     ", ".join(f"{kid.hex()[:16]} {n}" for kid, n in sorted(counts.items())))
        return merged is not on_disk

    async def write_back(self) -> bool:
        """:meth:`record_codes_signed` in a worker thread; a failure is logged, never raised
        (the counts stay in memory and the cap is still enforced). The issuer calls it at
        shutdown, after the last RPC."""
        try:
            return await asyncio.to_thread(self.record_codes_signed)
        except KeyManagementError as exc:
            log.error("codes signed not recorded in the key set: %s", exc)
        except OSError as exc:
            log.error("codes signed not recorded in the key set: %s: %s", type(exc).__name__, exc.strerror or exc)
        except Exception as exc:  # never let the watcher die; never log a message that might quote data
            log.error("codes signed not recorded in the key set: %s", type(exc).__name__)
        return False

    async def watch(self, *, every: float, wake: asyncio.Event | None = None,
                    record_every: float | None = 60.0) -> None:
        """Call :meth:`refresh` in a worker thread every ``every`` seconds, and at once
        (forced) when ``wake`` is set (the issuer sets it on SIGHUP). Runs until cancelled;
        a failed refresh is logged and the current key set kept.

        With ``record_every``, the counts are written back (:meth:`write_back`) after a
        refresh when at least ``record_every`` seconds passed since the last write-back
        (and on every wake) and a count moved since."""
        recorded_at = time.monotonic()
        while True:
            forced = False
            if wake is None:
                await asyncio.sleep(every)
            else:
                try:
                    await asyncio.wait_for(wake.wait(), every)
                    forced = True
                except TimeoutError:
                    pass
                wake.clear()
            try:
                await asyncio.to_thread(self.refresh, force=forced)
            except KeyManagementError as exc:
                log.error("key set reload failed, keeping revision %d: %s", self.key_set.revision, exc)
            except Exception as exc:  # never let the watcher die; never log a message that might quote data
                log.error("key set reload failed, keeping revision %d: %s", self.key_set.revision,
                          type(exc).__name__)
            if record_every is not None and (forced or time.monotonic() - recorded_at >= record_every):
                if self.codes_signed() != self._recorded:
                    await self.write_back()
                recorded_at = time.monotonic()

    def __repr__(self) -> str:
        loaded = self._loaded
        return (f"<RotatingSigner province={loaded.key_set.province} revision={loaded.key_set.revision} "
                f"loaded={sorted(k.hex() for k in loaded.signers)}>")
