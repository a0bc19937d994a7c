"""Trust sync: a verifier's copy of every province's keys, from the national TUF repository.

:class:`TrustSync` runs python-tuf's client (``tuf.ngclient.Updater``) against
a mirror of the repository that ``keys/trustrepo.py`` writes: an HTTP(S) base
URL, or a directory (a USB stick, a LAN share) read through
:class:`DirectoryFetcher`. The result is one :class:`healthcode.Keyring` of
every province and the time of the last verified refresh.

What is on disk::

    <metadata_dir>/                python-tuf's own verified metadata cache (root_history/,
                                   timestamp.json, snapshot.json, targets.json, province-33.json ...):
                                   its versions are the rollback protection
    <targets_dir>/state.json       the last good state: the commit point, replaced atomically
    <targets_dir>/objects/<SHA256> immutable verified bytes the state names (metadata, key lists)
    <targets_dir>/revocation/      the revocation state per shard (``verifier.revocation_sync``)
    <targets_dir>/mirror-validators.json  an HTTP mirror's ETags/dates and the small files they
                                   name (conditional requests; a saving, never trusted)

:meth:`TrustSync.refresh` steps, marked in the code:

1. the clock floor: expiry is judged at ``now``, or at the last verified refresh if the
   clock reads earlier (winding the clock back cannot make expired metadata look fresh;
   the same floor as ``verifier.trust.assess``);
2. python-tuf refresh of root (N -> N+1 ...), timestamp, snapshot and national targets, with
   expiry judged at ``now``; a failure here fails the refresh and changes nothing;
3. for each province, ``provinces/<code>/keys.json`` through ``get_targetinfo`` (which walks
   the terminating delegation to ``province-<code>``) and ``download_target`` (length and
   SHA-256 checked); then the key list: parsed strictly for that province, serial never
   lower than already seen. A province that fails keeps its last good key list, if that list
   still verifies under the new national delegation, and is reported in ``failed``;
4. the new state passes the checks :meth:`load_cached` will make (the national part from the
   bootstrap root here; each province passed the same function in step 3), so what is
   committed always loads; it is written as objects, then ``state.json`` is replaced;
5. revocation: every live shard of the new keyring is brought up to the snapshot its
   province lists now, by deltas or the snapshot, and committed on its own
   (``verifier.revocation_sync``); a shard that fails keeps its last good state and is
   reported in ``SyncResult.revocation``, never failing the refresh.

:meth:`TrustSync.load_cached` works offline: it re-verifies the committed bytes from the
bootstrap root (root chain, signatures, snapshot and target hashes) and never trusts a
file for being on disk. Expiry is not judged there: the data were unexpired when fetched,
and their age is reported as ``last_verified_refresh`` for the verifier's staleness policy.
That time is the *oldest* verification in the keyring: a province kept on its last good
key list holds it back, so a stuck province is noticed rather than hidden.

:meth:`TrustSync.load_revocation` is the offline counterpart of step 5: the committed
revocation state of the shards live at ``now``, re-verified the same way.

After a refresh, :meth:`TrustSync.province_targets` and :meth:`TrustSync.fetch_target` give
other province files (the revocation issue's ``provinces/<code>/revocation/...``) through
the same verification.

Over HTTP(S), the whole refresh runs inside ``SyncConfig.refresh_deadline``: a mirror that
drips bytes ends it with :class:`MirrorUnavailable` ("refresh deadline of N s passed").

Where each part lives: this module is the client and its steps;
:mod:`verifier.http_fetcher` the HTTP fetcher (conditional requests, the deadline);
:mod:`verifier.mirror` the other fetchers and python-tuf's glue; :mod:`verifier.sync_state`
the committed state; :mod:`verifier.objects` the objects it names;
:mod:`verifier.tuf_verify` the pure re-verification; :mod:`verifier.revocation_sync`
step 5.

Errors (:mod:`verifier.errors`, re-exported here): :class:`SyncError` is the root of the
sync's errors, below the package's ``VerifierError``. :class:`MirrorUnavailable` means
transport (the mirror cannot be reached or read); :class:`TrustDataError` means the data
are bad, with :class:`RollbackError` and :class:`TrustDataFrozen` (expired metadata:
"frozen since T") as its special cases. Whatever fails, the last good state stays in force.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping
from urllib.parse import quote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from healthcode.keylist import KeyList
from healthcode.keyring import Keyring
from healthcode.model import PROVINCES
from shellkit.times import iso_utc

from .errors import MirrorUnavailable, NotSynced, RollbackError, SyncError, TrustDataError, TrustDataFrozen
from .http_fetcher import HttpMirrorFetcher
from .mirror import DIRECTORY_URL, CountingFetcher, DirectoryFetcher, SyncConfig, map_error, pin_reference_time
from .objects import ObjectStore, sha256_hex
from .revocation_sync import REVOCATION_DIR, RevocationStore, RevocationSyncReport
from .sync_state import SHA256_HEX, ProvinceRecord, SyncState, oldest
from .tuf_verify import keyring_of, verify_bundle, verify_national, verify_province, verify_province_role

if TYPE_CHECKING:
    from healthcode.revocation import RevocationSet

__all__ = [
    "SyncConfig", "SyncResult", "TrustSync", "DirectoryFetcher", "SyncError", "MirrorUnavailable",
    "TrustDataError", "RollbackError", "TrustDataFrozen", "NotSynced", "verify_province_role",
]

logger = logging.getLogger(__name__)

_UTC = _dt.timezone.utc
_DEFAULT_CONFIG = SyncConfig()
#: Below ``targets_dir``: the HTTP fetcher's kept validators (``verifier.http_fetcher``).
VALIDATORS_NAME = "mirror-validators.json"


# ---------------------------------------------------------------------- values


@dataclass(frozen=True)
class SyncResult:
    """What a refresh did. ``failed`` provinces kept their last good key list (if any)."""

    keyring: Keyring
    #: Everything in the keyring verified fresh at or after this time: ``now`` of this
    #: refresh, or earlier when a province is kept on its last good key list.
    last_verified_refresh: _dt.datetime
    #: Provinces whose key list is new or changed.
    changed: tuple[str, ...]
    #: Provinces whose keys were dropped (delegation removed, or no key list any more).
    removed: tuple[str, ...]
    #: Provinces whose new data failed, with why; they keep their last good key list.
    failed: Mapping[str, SyncError]
    #: Key list serial of every province in the keyring.
    serials: Mapping[str, int]
    #: When each province's key list last verified (older than this refresh if it failed).
    verified_at: Mapping[str, _dt.datetime]
    root_version: int
    #: Expiry of the timestamp: a refresh after this that finds nothing newer is a freeze.
    fresh_until: _dt.datetime
    bytes_transferred: int
    files_transferred: int
    #: What the revocation sync that follows the key refresh did, per shard
    #: (``verifier.revocation_sync``); its transfers are included above.
    revocation: RevocationSyncReport | None = None

    @property
    def complete(self) -> bool:
        """True when every delegated province verified in this refresh."""
        return not self.failed


@dataclass(frozen=True)
class _National:
    """Step 2's result: the top-level metadata python-tuf verified in this refresh."""

    raw: Mapping[str, bytes]  # timestamp, snapshot, targets: the bytes python-tuf wrote after verifying
    roots: tuple[bytes, ...]  # root versions after the bootstrap, up to the one trusted now
    targets: Targets
    snapshot: Snapshot
    timestamp: Timestamp


@dataclass
class _Provinces:
    """Step 3's result: every province's key list, new or kept, and what failed."""

    records: dict[str, ProvinceRecord]
    lists: dict[str, KeyList]
    blobs: dict[str, bytes]  # object id -> bytes, for the commit
    failed: dict[str, SyncError]
    highest: dict[str, int]  # highest key list serial seen per province


# ---------------------------------------------------------------------- the client


class TrustSync:
    """A verifier's trust sync from one mirror.

    ``source`` is an ``http://``/``https://`` base URL of the repository (its
    ``metadata/`` and ``targets/`` below), or a directory holding the same.
    ``bootstrap_root`` is the root metadata shipped with the verifier (the
    national root v1, or a later one): the only trust anchor, re-checked on
    every refresh and load. Single instance per directory, like python-tuf.
    """

    def __init__(
        self,
        metadata_dir: str | os.PathLike[str],
        targets_dir: str | os.PathLike[str],
        source: str | os.PathLike[str],
        bootstrap_root: bytes,
        *,
        config: SyncConfig = _DEFAULT_CONFIG,
        fetcher: FetcherInterface | None = None,
    ) -> None:
        self.config = config
        self._metadata_dir = Path(metadata_dir)
        self._targets_dir = Path(targets_dir)
        self._store = ObjectStore(self._targets_dir, what="trust")
        self._objects = self._store.objects
        self._bootstrap = bytes(bootstrap_root)
        try:
            md = Metadata[Root].from_bytes(self._bootstrap)
            if md.signed.type != Root.type:
                raise tuf_errors.RepositoryError("bootstrap is not root metadata")
            md.signed.verify_delegate(Root.type, md.signed_bytes, md.signatures)
        except (tuf_errors.RepositoryError, ValueError) as exc:
            raise TrustDataError(f"bootstrap root does not verify: {exc}") from None
        self._bootstrap_version = md.signed.version
        text = os.fspath(source)
        if text.startswith(("http://", "https://")):
            base = text.rstrip("/") + "/"
            self._fetcher = fetcher or HttpMirrorFetcher(
                read_timeout=config.http_timeout, user_agent=config.user_agent,
                cache_file=self._targets_dir / VALIDATORS_NAME,
            )
        else:
            base = DIRECTORY_URL
            self._fetcher = fetcher or DirectoryFetcher(text, max_file_bytes=config.max_file_bytes)
        self._metadata_url = base + "metadata/"
        self._targets_url = base + "targets/"
        self._updater_config = UpdaterConfig(
            root_max_length=config.root_max_bytes,
            timestamp_max_length=config.timestamp_max_bytes,
            snapshot_max_length=config.snapshot_max_bytes,
            targets_max_length=config.targets_max_bytes,
            app_user_agent=config.user_agent,
        )
        for directory in (self._metadata_dir, self._objects):
            directory.mkdir(parents=True, exist_ok=True)
        # python-tuf's updater, the province roles and the (counting) fetcher of this process's last good refresh
        self._session: tuple[Updater, dict[str, Targets], FetcherInterface] | None = None

    # ------------------------------------------------------------------ public

    def refresh(self, now: _dt.datetime) -> SyncResult:
        """Fetch and verify the newest trust data at time ``now``; commit it; return what changed.

        Raises :class:`SyncError` (transport, bad or rolled-back data, freeze)
        when the national metadata cannot be verified; then nothing changes.
        Per-province failures do not raise: see ``SyncResult.failed``. One
        method per step of the module docstring.
        """
        now = _aware(now)
        previous = self._read_state()
        now = self._clock_floor(now, previous)  # (1)
        deadline = getattr(self._fetcher, "deadline", None)  # the HTTP fetcher's overall bound
        with deadline(self.config.refresh_deadline) if deadline is not None else contextlib.nullcontext():
            return self._refresh(now, previous)

    def _refresh(self, now: _dt.datetime, previous: SyncState | None) -> SyncResult:
        """Steps 2-5 of :meth:`refresh`, inside the refresh deadline."""
        counter = CountingFetcher(self._fetcher)
        updater, national = self._load_national(counter, now, previous)  # (2)
        provinces = self._load_provinces(updater, national, previous, now)  # (3)
        state, blobs = self._checked_state(now, national, provinces)  # (4)
        self._persist(state, blobs)
        roles = self._start_session(updater, counter, state, blobs, now)
        keyring = keyring_of(provinces.lists)
        revocation = self._revocation_store().sync(  # (5)
            keyring, now=now, fetch=self.fetch_target, fetch_unlisted=self.fetch_unlisted,
            roles={code: (blobs[state.provinces[code].role], role) for code, role in roles.items()},
        )
        return self._result(keyring, previous, state, national, provinces.failed, counter, revocation)

    def load_cached(self, now: _dt.datetime) -> tuple[Keyring, _dt.datetime]:
        """The keyring of the last good refresh and its last verified refresh time, offline.

        Every committed byte is re-verified from the bootstrap root (root chain,
        threshold signatures, snapshot and key list hashes, key list parsing);
        expiry is not judged: compare ``last_verified_refresh`` with ``now`` for
        staleness. Raises :class:`NotSynced` before the first refresh,
        and :class:`TrustDataError` if the cache does not verify. ``now`` is
        the caller's time; the staleness judgement is the caller's policy
        (``verifier.trust.assess``), which also floors a clock that reads
        earlier than the returned time.
        """
        now = _aware(now)
        state = self._read_state()
        if state is None:
            raise NotSynced("no verified trust data cached: refresh from a mirror first")
        lists = verify_bundle(self._bootstrap, state, self._store.get)
        return keyring_of(lists), state.last_verified_refresh

    def load_revocation(self, now: _dt.datetime) -> "RevocationSet":
        """The revocation state of every shard live at ``now``, offline: the checker
        ``healthcode.check(..., revocation=)`` takes.

        Verified like :meth:`load_cached`: the national metadata from the bootstrap
        root and every province's key list (the keyring that says which shards
        are live), then each shard's snapshot against the province role that
        listed it (``verifier.revocation_sync``). A shard whose cached data does
        not verify is left out and logged; it and shards never synced show in
        ``RevocationSet.missing(keyring, now=...)``. Raises :class:`NotSynced`
        before the first refresh and :class:`TrustDataError` if the cache does
        not verify.
        """
        now = _aware(now)
        state = self._read_state()
        if state is None:
            raise NotSynced("no verified trust data cached: refresh from a mirror first")
        targets, snapshot = verify_national(self._bootstrap, state, self._store.get)
        lists = {
            code: verify_province(targets, code, self._store.get(rec.role), self._store.get(rec.keys),
                                   snapshot=snapshot, exact=False)
            for code, rec in state.provinces.items()
        }
        return self._revocation_store().load(keyring_of(lists), now=now, national=targets, snapshot=snapshot)

    def province_targets(self, code: str) -> Mapping[str, int]:
        """The files province ``code`` lists (target path -> length), as of this
        process's last successful refresh in which the province verified.

        For syncs built on this one (revocation files under
        ``provinces/<code>/revocation/``): pick paths here, then :meth:`fetch_target`.
        """
        roles = self._require_session()[1]
        role = roles.get(code)
        if role is None:
            raise NotSynced(f"province {code} did not verify in the last refresh")
        return MappingProxyType({path: info.length for path, info in sorted(role.targets.items())})

    def fetch_target(self, path: str) -> bytes:
        """The bytes of target ``path``, verified through the metadata of this
        process's last successful refresh: the delegation walk to the role that
        lists it, then length and SHA-256 while downloading.

        The caller keeps what it needs (e.g. a revocation state); nothing is
        cached here. Raises :class:`NotSynced` without a refresh in this process,
        :class:`TrustDataError` if ``path`` is not a listed target or fails
        verification, :class:`MirrorUnavailable` for transport failures.
        """
        updater = self._require_session()[0]
        try:
            info = updater.get_targetinfo(path)
            if info is None:
                raise TrustDataError(f"{path} is not a target of the trust repository")
            fd, temp = tempfile.mkstemp(dir=self._objects, prefix=".download-")
            os.close(fd)
            try:
                updater.download_target(info, filepath=temp)
                return Path(temp).read_bytes()
            finally:
                os.unlink(temp)
        except Exception as exc:  # noqa: BLE001 - mapped to our error tree
            raise map_error(exc, path, None, None) from exc

    def fetch_unlisted(self, path: str, max_length: int) -> bytes | None:
        """The bytes the mirror serves for ``path`` outside the signed metadata, **unverified**.

        For files whose integrity the caller checks itself (revocation deltas:
        the state they lead to must hash to a listed snapshot). At most
        ``max_length`` bytes: None when the file is missing (404) or longer.
        Raises :class:`NotSynced` without a refresh in this process,
        :class:`MirrorUnavailable` for other transport failures.
        """
        fetcher = self._require_session()[2]
        if max_length < 1:
            return None
        url = self._targets_url + quote(path, safe="/")
        try:
            return fetcher.download_bytes(url, max_length)
        except tuf_errors.DownloadHTTPError as exc:
            if exc.status_code == 404:
                return None
            raise map_error(exc, path, None, None) from exc
        except tuf_errors.DownloadLengthMismatchError:
            return None
        except Exception as exc:  # noqa: BLE001 - mapped to our error tree
            raise map_error(exc, path, None, None) from exc

    # ------------------------------------------------------------------ the steps of refresh

    @staticmethod
    def _clock_floor(now: _dt.datetime, previous: SyncState | None) -> _dt.datetime:
        """(1) Expiry is judged at ``now``, or at the last verified refresh if the clock reads earlier."""
        if previous is not None and now < previous.refreshed_at:
            logger.warning("trust sync: clock %s is behind the last verified refresh %s",
                           iso_utc(now), iso_utc(previous.refreshed_at))
            return previous.refreshed_at
        return now

    def _load_national(
        self, counter: CountingFetcher, now: _dt.datetime, previous: SyncState | None
    ) -> tuple[Updater, _National]:
        """(2) python-tuf's refresh of root, timestamp, snapshot and national targets, expiry at ``now``."""
        updater = None
        try:
            updater = Updater(
                str(self._metadata_dir),
                self._metadata_url,
                str(self._targets_dir),
                self._targets_url,
                counter,
                self._updater_config,
                bootstrap=self._bootstrap,
            )
            pin_reference_time(updater, now)
            updater.refresh()
        except Exception as exc:  # noqa: BLE001 - mapped to our error tree
            raise map_error(exc, "refresh", updater, oldest(previous)) from exc
        raw = self._read_national()
        return updater, _National(
            raw=raw,
            roots=tuple(self._read_root_chain()),
            targets=Metadata[Targets].from_bytes(raw["targets"]).signed,
            snapshot=Metadata[Snapshot].from_bytes(raw["snapshot"]).signed,
            timestamp=Metadata[Timestamp].from_bytes(raw["timestamp"]).signed,
        )

    def _load_provinces(
        self, updater: Updater, national: _National, previous: SyncState | None, now: _dt.datetime
    ) -> _Provinces:
        """(3) Every province's key list; a province that fails keeps its last good one (if it still verifies)."""
        found = _Provinces({}, {}, {}, {}, dict(previous.highest_serial) if previous is not None else {})
        for code in PROVINCES:
            try:
                fetched = self._fetch_province(updater, code, national.targets, national.snapshot, found.highest)
            except Exception as exc:  # noqa: BLE001 - one province never stops the others
                kept = previous.provinces.get(code) if previous is not None else None
                error = map_error(exc, f"province {code}", None, kept.verified_at if kept else None)
                found.failed[code] = error
                logger.warning("trust sync: province %s kept at its last good key list: %s", code, error)
                continue
            if fetched is None:  # not delegated, or no key list: the province has no keys
                continue
            role_bytes, keys_bytes, key_list = fetched
            role_id, keys_id = sha256_hex(role_bytes), sha256_hex(keys_bytes)
            found.blobs[role_id], found.blobs[keys_id] = role_bytes, keys_bytes
            found.records[code] = ProvinceRecord(role_id, keys_id, key_list.serial, now)
            found.lists[code] = key_list
            found.highest[code] = max(found.highest.get(code, 0), key_list.serial)
        if previous is not None:
            self._keep_last_good(found, previous, national)
        return found

    def _keep_last_good(self, found: _Provinces, previous: SyncState, national: _National) -> None:
        """A failed province keeps its last good list only while the national delegation vouches for it."""
        for code in found.failed:
            kept = previous.provinces.get(code)
            if kept is None:
                continue
            try:
                role_bytes, keys_bytes = self._store.get(kept.role), self._store.get(kept.keys)
                found.lists[code] = verify_province(
                    national.targets, code, role_bytes, keys_bytes, snapshot=national.snapshot, exact=False
                )
            except SyncError as exc:
                found.failed[code] = TrustDataError(f"{found.failed[code]}; last good key list dropped: {exc}")
                continue
            found.records[code] = kept
            found.blobs[kept.role], found.blobs[kept.keys] = role_bytes, keys_bytes

    def _checked_state(
        self, now: _dt.datetime, national: _National, provinces: _Provinces
    ) -> tuple[SyncState, dict[str, bytes]]:
        """(4) The new state and its objects, checked as :meth:`load_cached` will check them.

        The national part is verified here from the bootstrap root; each province
        passed the same :func:`~verifier.tuf_verify.verify_province` in step 3.
        """
        state = SyncState(
            refreshed_at=now,
            roots=tuple(sha256_hex(r) for r in national.roots),
            timestamp=sha256_hex(national.raw["timestamp"]),
            snapshot=sha256_hex(national.raw["snapshot"]),
            targets=sha256_hex(national.raw["targets"]),
            provinces=provinces.records,
            highest_serial=provinces.highest,
        )
        blobs = dict(provinces.blobs)
        for data in (*national.roots, *national.raw.values()):
            blobs[sha256_hex(data)] = data
        verify_national(self._bootstrap, state, blobs.__getitem__)
        return state, blobs

    def _persist(self, state: SyncState, blobs: Mapping[str, bytes]) -> None:
        """Objects first, then ``state.json`` (the commit point), then unreferenced objects go."""
        try:
            self._store.commit(state.to_bytes(), blobs)
        except OSError as exc:
            raise SyncError(f"cannot write the trust state: {exc}") from None

    def _start_session(
        self, updater: Updater, counter: CountingFetcher, state: SyncState, blobs: Mapping[str, bytes],
        now: _dt.datetime,
    ) -> dict[str, Targets]:
        """Keep python-tuf's updater and the province roles verified now, for :meth:`fetch_target`."""
        roles = {
            code: Metadata[Targets].from_bytes(blobs[rec.role]).signed
            for code, rec in state.provinces.items()
            if rec.verified_at == now
        }
        self._session = (updater, roles, counter)
        return roles

    def _result(
        self, keyring: Keyring, previous: SyncState | None, state: SyncState, national: _National,
        failed: Mapping[str, SyncError], counter: CountingFetcher, revocation: RevocationSyncReport,
    ) -> SyncResult:
        records = state.provinces
        old = previous.provinces if previous is not None else {}
        changed = tuple(
            code
            for code, rec in sorted(records.items())
            if code not in old or old[code].keys != rec.keys
        )
        removed = tuple(sorted(code for code in old if code not in records))
        root_version = Metadata[Root].from_bytes(
            national.roots[-1] if national.roots else self._bootstrap
        ).signed.version
        logger.info(
            "trust sync: root v%d, %d provinces, changed %s, removed %s, failed %s, %d bytes",
            root_version, len(records), changed, removed, sorted(failed), counter.bytes,
        )
        return SyncResult(
            keyring=keyring,
            last_verified_refresh=state.last_verified_refresh,
            changed=changed,
            removed=removed,
            failed=MappingProxyType(dict(failed)),
            serials=MappingProxyType({code: rec.serial for code, rec in sorted(records.items())}),
            verified_at=MappingProxyType({code: rec.verified_at for code, rec in sorted(records.items())}),
            root_version=root_version,
            fresh_until=national.timestamp.expires,
            bytes_transferred=counter.bytes,
            files_transferred=counter.files,
            revocation=revocation,
        )

    # ------------------------------------------------------------------ internals

    def _revocation_store(self) -> RevocationStore:
        return RevocationStore(self._targets_dir / REVOCATION_DIR)

    def _require_session(self) -> tuple[Updater, dict[str, Targets], FetcherInterface]:
        if self._session is None:
            raise NotSynced("no successful refresh in this process: call refresh() first")
        return self._session

    def _fetch_province(
        self,
        updater: Updater,
        code: str,
        targets: Targets,
        snapshot: Snapshot,
        highest: Mapping[str, int],
    ) -> tuple[bytes, bytes, KeyList] | None:
        path = f"provinces/{code}/keys.json"
        info = updater.get_targetinfo(path)  # walks targets -> province-<code>, verifying each
        if info is None:
            return None
        digest = info.hashes.get("sha256")
        if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
            raise TrustDataError(f"{path} has no SHA-256 in its metadata")
        cached = self._objects / digest
        if updater.find_cached_target(info, str(cached)) is not None:
            keys_bytes = self._store.get(digest)
        else:
            fd, temp = tempfile.mkstemp(dir=self._objects, prefix=".download-")
            os.close(fd)
            try:
                updater.download_target(info, filepath=temp)  # length and hashes checked
                keys_bytes = Path(temp).read_bytes()  # committed as an object with the state
            finally:
                os.unlink(temp)
        role_bytes = (self._metadata_dir / f"province-{code}.json").read_bytes()
        key_list = verify_province(targets, code, role_bytes, keys_bytes, snapshot=snapshot, exact=True)
        seen = highest.get(code)
        if seen is not None and key_list.serial < seen:
            raise RollbackError(f"{path}: serial {key_list.serial} is lower than {seen}, already seen")
        return role_bytes, keys_bytes, key_list

    def _read_national(self) -> dict[str, bytes]:
        """The top-level metadata python-tuf verified in this refresh (it writes only after verifying)."""
        return {
            role: (self._metadata_dir / f"{role}.json").read_bytes()
            for role in ("timestamp", "snapshot", "targets")
        }

    def _read_root_chain(self) -> list[bytes]:
        """Root versions after the bootstrap, up to the one python-tuf trusts now."""
        current = Metadata[Root].from_bytes((self._metadata_dir / "root.json").read_bytes()).signed.version
        history = self._metadata_dir / "root_history"
        return [
            (history / f"{version}.root.json").read_bytes()
            for version in range(self._bootstrap_version + 1, current + 1)
        ]

    def _read_state(self) -> SyncState | None:
        data = self._store.read_state()
        return SyncState.from_bytes(data) if data is not None else None


def _aware(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(_UTC)
