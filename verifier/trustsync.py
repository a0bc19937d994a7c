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

Errors: :class:`SyncError` is the root. :class:`MirrorUnavailable` means transport (the
mirror cannot be reached or read); :class:`TrustDataError` means the data are bad, with
:class:`RollbackError` and :class:`TrustDataFrozen` (expired metadata: "frozen since T") as
its special cases. Whatever fails, the last good state stays in force.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping
from urllib.parse import quote, unquote

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig
from tuf.ngclient.urllib3_fetcher import Urllib3Fetcher

from healthcode.keylist import InvalidKeyList, KeyList, parse_key_list
from healthcode.keyring import Keyring
from healthcode.model import PROVINCES

if TYPE_CHECKING:  # verifier.revocation_sync imports this module's errors
    from healthcode.revocation import RevocationSet

    from .revocation_sync import RevocationStore, RevocationSyncReport

__all__ = [
    "SyncConfig",
    "SyncResult",
    "TrustSync",
    "DirectoryFetcher",
    "SyncError",
    "MirrorUnavailable",
    "TrustDataError",
    "RollbackError",
    "TrustDataFrozen",
    "NotSynced",
    "verify_province_role",
]

logger = logging.getLogger(__name__)

_UTC = _dt.timezone.utc
_STATE_TYPE = "healthcode-trust-state"
_STATE_FORMAT = 1
_MAX_STATE_BYTES = 1 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DIRECTORY_URL = "mirror://directory/"


# ---------------------------------------------------------------------- errors


class SyncError(Exception):
    """Root of every trust sync failure. The last good state stays in force."""

    reason = "sync_failed"


class MirrorUnavailable(SyncError):
    """Transport: the mirror could not be reached or read (network, HTTP error, missing stick)."""

    reason = "transport"


class TrustDataError(SyncError):
    """The data are bad: a signature, hash, version, key list or the cache does not verify."""

    reason = "invalid"


class RollbackError(TrustDataError):
    """Older data than already verified was offered (metadata version or key list serial)."""

    reason = "rollback"


class TrustDataFrozen(TrustDataError):
    """The mirror offers only expired metadata: trust data are frozen at their last verified state."""

    reason = "frozen"

    def __init__(
        self,
        role: str,
        expired_at: _dt.datetime | None,
        last_verified_refresh: _dt.datetime | None,
    ) -> None:
        self.role = role
        self.expired_at = expired_at
        self.last_verified_refresh = last_verified_refresh
        expired = f" at {_iso(expired_at)}" if expired_at is not None else ""
        since = _iso(last_verified_refresh) if last_verified_refresh is not None else "never"
        super().__init__(
            f"trust data frozen: {role} metadata expired{expired}; "
            f"stale since the last verified refresh at {since}"
        )


class NotSynced(SyncError):
    """No verified trust data is cached yet: a first refresh is needed."""

    reason = "not_synced"


# ---------------------------------------------------------------------- values


@dataclass(frozen=True)
class SyncConfig:
    """Limits and tolerances of the client."""

    #: Size caps passed to python-tuf (metadata whose length the snapshot does not state).
    root_max_bytes: int = 512 * 1024
    timestamp_max_bytes: int = 16 * 1024
    snapshot_max_bytes: int = 1 << 20
    targets_max_bytes: int = 4 << 20
    #: Hard cap of any one file read from a directory mirror.
    max_file_bytes: int = 32 << 20
    #: Timeout of the HTTP fetcher, in seconds.
    http_timeout: int = 30
    user_agent: str = "healthcode-verifier"


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
    revocation: "RevocationSyncReport | None" = None

    @property
    def complete(self) -> bool:
        """True when every delegated province verified in this refresh."""
        return not self.failed


@dataclass(frozen=True)
class _ProvinceRecord:
    role: str  # object id (SHA-256) of the province-<code> metadata
    keys: str  # object id of keys.json
    serial: int
    verified_at: _dt.datetime


@dataclass(frozen=True)
class _State:
    """The committed, verified state (``state.json``); object ids are SHA-256 hex."""

    refreshed_at: _dt.datetime
    roots: tuple[str, ...]  # root versions after the bootstrap, in order
    timestamp: str
    snapshot: str
    targets: str
    provinces: Mapping[str, _ProvinceRecord]
    highest_serial: Mapping[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        document = {
            "type": _STATE_TYPE,
            "version": _STATE_FORMAT,
            "refreshed_at": self.refreshed_at.isoformat(),
            "roots": list(self.roots),
            "timestamp": self.timestamp,
            "snapshot": self.snapshot,
            "targets": self.targets,
            "provinces": {
                code: {
                    "role": rec.role,
                    "keys": rec.keys,
                    "serial": rec.serial,
                    "verified_at": rec.verified_at.isoformat(),
                }
                for code, rec in sorted(self.provinces.items())
            },
            "highest_serial": dict(sorted(self.highest_serial.items())),
        }
        return json.dumps(document, sort_keys=True, indent=1).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> "_State":
        if len(data) > _MAX_STATE_BYTES:
            raise TrustDataError("trust state file is too large")
        try:
            doc = json.loads(data)
            if doc["type"] != _STATE_TYPE or doc["version"] != _STATE_FORMAT:
                raise ValueError("unknown state format")
            objects = [doc["timestamp"], doc["snapshot"], doc["targets"], *doc["roots"]]
            provinces = {}
            for code, rec in doc["provinces"].items():
                if code not in PROVINCES:
                    raise ValueError(f"unknown province {code!r}")
                objects += [rec["role"], rec["keys"]]
                provinces[code] = _ProvinceRecord(
                    rec["role"], rec["keys"], _int(rec["serial"]), _parse_time(rec["verified_at"])
                )
            if not all(isinstance(o, str) and _SHA256.fullmatch(o) for o in objects):
                raise ValueError("bad object id")
            highest = {str(k): _int(v) for k, v in doc["highest_serial"].items()}
            return cls(
                _parse_time(doc["refreshed_at"]),
                tuple(doc["roots"]),
                doc["timestamp"],
                doc["snapshot"],
                doc["targets"],
                provinces,
                highest,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrustDataError(f"trust state file is corrupt: {exc}") from None


# ---------------------------------------------------------------------- fetchers


class DirectoryFetcher(FetcherInterface):
    """Reads a repository mirror from a local directory (a USB stick, a mounted share).

    URLs are ``mirror://directory/<path>``; paths may not leave the directory
    (no ``..``, no symlink escapes). A missing file answers HTTP 404, as a web
    server would (python-tuf reads that as "no newer root"); a missing
    directory is a transport error. Files larger than ``max_file_bytes`` are
    refused without being read.
    """

    base_url = _DIRECTORY_URL

    def __init__(self, directory: str | os.PathLike[str], *, max_file_bytes: int = 32 << 20) -> None:
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(_DIRECTORY_URL):
            raise tuf_errors.DownloadError(f"not a directory mirror URL: {url}")
        relative = unquote(url[len(_DIRECTORY_URL) :])
        parts = relative.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise tuf_errors.DownloadError(f"bad path in mirror URL: {url}")
        if not self.directory.is_dir():
            raise tuf_errors.DownloadError(f"mirror directory {self.directory} is not available")
        root = self.directory.resolve()
        path = root.joinpath(*parts).resolve()
        if root not in path.parents:
            raise tuf_errors.DownloadError(f"mirror path escapes the directory: {url}")
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise tuf_errors.DownloadHTTPError(f"{relative} not found on the mirror", 404) from None
        except OSError as exc:
            raise tuf_errors.DownloadError(f"cannot read {relative}: {exc}") from None
        size = os.fstat(handle.fileno()).st_size
        if size > self.max_file_bytes:
            handle.close()
            raise tuf_errors.DownloadLengthMismatchError(
                f"{relative} is {size} bytes, over the cap of {self.max_file_bytes}"
            )
        return _read_chunks(handle, self.max_file_bytes)


def _read_chunks(handle: Any, limit: int) -> Iterator[bytes]:
    with handle:
        total = 0
        while chunk := handle.read(64 * 1024):
            total += len(chunk)
            if total > limit:  # the file grew while being read
                raise tuf_errors.DownloadLengthMismatchError("file grew past the cap while read")
            yield chunk


class _CountingFetcher(FetcherInterface):
    """Wraps a fetcher and counts what it transfers (files, bytes, per URL)."""

    def __init__(self, inner: FetcherInterface) -> None:
        self._inner = inner
        self.bytes = 0
        self.files = 0
        self.log: list[tuple[str, int]] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        chunks = self._inner.fetch(url)  # raises here for 404s and unreachable mirrors
        return self._count(url, chunks)

    def _count(self, url: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        size = 0
        for chunk in chunks:
            size += len(chunk)
            self.bytes += len(chunk)
            yield chunk
        self.files += 1
        self.log.append((url, size))


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
        config: SyncConfig = SyncConfig(),
        fetcher: FetcherInterface | None = None,
    ) -> None:
        self.config = config
        self._metadata_dir = Path(metadata_dir)
        self._targets_dir = Path(targets_dir)
        self._objects = self._targets_dir / "objects"
        self._state_path = self._targets_dir / "state.json"
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
            self._fetcher = fetcher or Urllib3Fetcher(
                socket_timeout=config.http_timeout, app_user_agent=config.user_agent
            )
        else:
            base = _DIRECTORY_URL
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
        # python-tuf's updater and the province roles of this process's last good refresh
        self._session: tuple[Updater, dict[str, Targets]] | None = None
        self._unlisted_fetcher: FetcherInterface | None = None  # the session's (counting) fetcher

    # ------------------------------------------------------------------ public

    def refresh(self, now: _dt.datetime) -> SyncResult:
        """Fetch and verify the newest trust data at time ``now``; commit it; return what changed.

        Raises :class:`SyncError` (transport, bad or rolled-back data, freeze)
        when the national metadata cannot be verified; then nothing changes.
        Per-province failures do not raise: see ``SyncResult.failed``.
        """
        now = _aware(now)
        previous = self._read_state()
        # (1) the clock floor
        if previous is not None and now < previous.refreshed_at:
            logger.warning("trust sync: clock %s is behind the last verified refresh %s",
                           _iso(now), _iso(previous.refreshed_at))
            now = previous.refreshed_at
        counter = _CountingFetcher(self._fetcher)
        # (2) top-level metadata through python-tuf, expiry judged at `now`
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
            _pin_reference_time(updater, now)
            updater.refresh()
        except Exception as exc:  # noqa: BLE001 - mapped to our error tree
            raise _map_error(exc, "refresh", updater, _oldest(previous)) from exc
        national = self._read_national()
        targets = Metadata[Targets].from_bytes(national["targets"]).signed
        snapshot = Metadata[Snapshot].from_bytes(national["snapshot"]).signed
        timestamp = Metadata[Timestamp].from_bytes(national["timestamp"]).signed
        # (3) every province's key list
        records: dict[str, _ProvinceRecord] = {}
        lists: dict[str, KeyList] = {}
        blobs: dict[str, bytes] = {}
        failed: dict[str, SyncError] = {}
        highest = dict(previous.highest_serial) if previous is not None else {}
        for code in PROVINCES:
            try:
                found = self._fetch_province(updater, code, targets, snapshot, highest)
            except Exception as exc:  # noqa: BLE001 - one province never stops the others
                kept = previous.provinces.get(code) if previous is not None else None
                error = _map_error(exc, f"province {code}", None, kept.verified_at if kept else None)
                failed[code] = error
                logger.warning("trust sync: province %s kept at its last good key list: %s", code, error)
                continue
            if found is None:  # not delegated, or no key list: the province has no keys
                continue
            role_bytes, keys_bytes, key_list = found
            role_id, keys_id = _sha256(role_bytes), _sha256(keys_bytes)
            blobs[role_id], blobs[keys_id] = role_bytes, keys_bytes
            records[code] = _ProvinceRecord(role_id, keys_id, key_list.serial, now)
            lists[code] = key_list
            highest[code] = max(highest.get(code, 0), key_list.serial)
        # a failed province keeps its last good list only while the national delegation vouches for it
        if previous is not None:
            for code in failed:
                kept = previous.provinces.get(code)
                if kept is None:
                    continue
                try:
                    role_bytes, keys_bytes = self._get_object(kept.role), self._get_object(kept.keys)
                    lists[code] = _verify_province(
                        targets, code, role_bytes, keys_bytes, snapshot=snapshot, exact=False
                    )
                except SyncError as exc:
                    failed[code] = TrustDataError(f"{failed[code]}; last good key list dropped: {exc}")
                    continue
                records[code] = kept
                blobs[kept.role], blobs[kept.keys] = role_bytes, keys_bytes
        roots = self._read_root_chain()
        state = _State(
            refreshed_at=now,
            roots=tuple(_sha256(r) for r in roots),
            timestamp=_sha256(national["timestamp"]),
            snapshot=_sha256(national["snapshot"]),
            targets=_sha256(national["targets"]),
            provinces=records,
            highest_serial=highest,
        )
        for data in (*roots, *national.values()):
            blobs[_sha256(data)] = data
        # (4) what will be committed must load: the national part is checked here as
        # load_cached will; each province passed the same _verify_province above
        _verify_national(self._bootstrap, state, blobs.__getitem__)
        keyring = _keyring(lists)
        self._commit(state, blobs)
        self._unlisted_fetcher = counter
        self._session = (updater, {
            code: Metadata[Targets].from_bytes(blobs[rec.role]).signed
            for code, rec in records.items()
            if rec.verified_at == now
        })
        # (5) revocation: each live shard from the province roles just verified
        revocation = self._revocation_store().sync(
            keyring, now=now, fetch=self.fetch_target, fetch_unlisted=self.fetch_unlisted,
            roles={code: (blobs[records[code].role], role) for code, role in self._session[1].items()},
        )
        old = previous.provinces if previous is not None else {}
        changed = tuple(
            code
            for code, rec in sorted(records.items())
            if code not in old or old[code].keys != rec.keys
        )
        removed = tuple(sorted(code for code in old if code not in records))
        root_version = Metadata[Root].from_bytes(roots[-1] if roots else self._bootstrap).signed.version
        logger.info(
            "trust sync: root v%d, %d provinces, changed %s, removed %s, failed %s, %d bytes",
            root_version, len(records), changed, removed, sorted(failed), counter.bytes,
        )
        return SyncResult(
            keyring=keyring,
            last_verified_refresh=_oldest(state),
            changed=changed,
            removed=removed,
            failed=MappingProxyType(failed),
            serials=MappingProxyType({code: rec.serial for code, rec in sorted(records.items())}),
            verified_at=MappingProxyType({code: rec.verified_at for code, rec in sorted(records.items())}),
            root_version=root_version,
            fresh_until=timestamp.expires,
            bytes_transferred=counter.bytes,
            files_transferred=counter.files,
            revocation=revocation,
        )

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
        lists = _verify_bundle(self._bootstrap, state, self._get_object)
        return _keyring(lists), _oldest(state)

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
        targets, snapshot = _verify_national(self._bootstrap, state, self._get_object)
        lists = {
            code: _verify_province(targets, code, self._get_object(rec.role), self._get_object(rec.keys),
                                   snapshot=snapshot, exact=False)
            for code, rec in state.provinces.items()
        }
        return self._revocation_store().load(_keyring(lists), now=now, national=targets, snapshot=snapshot)

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
            raise _map_error(exc, path, None, None) from exc

    def fetch_unlisted(self, path: str, max_length: int) -> bytes | None:
        """The bytes the mirror serves for ``path`` outside the signed metadata, **unverified**.

        For files whose integrity the caller checks itself (revocation deltas:
        the state they lead to must hash to a listed snapshot). At most
        ``max_length`` bytes: None when the file is missing (404) or longer.
        Raises :class:`NotSynced` without a refresh in this process,
        :class:`MirrorUnavailable` for other transport failures.
        """
        self._require_session()
        if max_length < 1:
            return None
        url = self._targets_url + quote(path, safe="/")
        try:
            return self._unlisted_fetcher.download_bytes(url, max_length)
        except tuf_errors.DownloadHTTPError as exc:
            if exc.status_code == 404:
                return None
            raise _map_error(exc, path, None, None) from exc
        except tuf_errors.DownloadLengthMismatchError:
            return None
        except Exception as exc:  # noqa: BLE001 - mapped to our error tree
            raise _map_error(exc, path, None, None) from exc

    # ------------------------------------------------------------------ internals

    def _revocation_store(self) -> "RevocationStore":
        from .revocation_sync import REVOCATION_DIR, RevocationStore

        return RevocationStore(self._targets_dir / REVOCATION_DIR)

    def _require_session(self) -> tuple[Updater, dict[str, Targets]]:
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
        if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
            raise TrustDataError(f"{path} has no SHA-256 in its metadata")
        cached = self._objects / digest
        if updater.find_cached_target(info, str(cached)) is not None:
            keys_bytes = self._get_object(digest)
        else:
            fd, temp = tempfile.mkstemp(dir=self._objects, prefix=".download-")
            os.close(fd)
            try:
                updater.download_target(info, filepath=temp)  # length and hashes checked
                keys_bytes = Path(temp).read_bytes()  # committed as an object with the state
            finally:
                os.unlink(temp)
        role_bytes = (self._metadata_dir / f"province-{code}.json").read_bytes()
        key_list = _verify_province(targets, code, role_bytes, keys_bytes, snapshot=snapshot, exact=True)
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

    def _read_state(self) -> _State | None:
        try:
            data = self._state_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SyncError(f"cannot read the trust state: {exc}") from None
        return _State.from_bytes(data)

    def _get_object(self, object_id: str) -> bytes:
        try:
            data = (self._objects / object_id).read_bytes()
        except OSError as exc:
            raise TrustDataError(f"cached trust object {object_id[:16]} is missing: {exc}") from None
        if _sha256(data) != object_id:
            raise TrustDataError(f"cached trust object {object_id[:16]} is corrupt")
        return data

    def _commit(self, state: _State, blobs: Mapping[str, bytes]) -> None:
        """Objects first, then the state file (the commit point), then unreferenced objects go."""
        try:
            for object_id, data in blobs.items():
                path = self._objects / object_id
                if not path.exists() or _sha256(path.read_bytes()) != object_id:
                    _atomic_write(path, data)
            _atomic_write(self._state_path, state.to_bytes())
        except OSError as exc:
            raise SyncError(f"cannot write the trust state: {exc}") from None
        for entry in os.scandir(self._objects):
            if entry.name not in blobs:
                try:
                    os.unlink(entry.path)
                except OSError:  # pragma: no cover - a leftover is harmless
                    pass


# ---------------------------------------------------------------------- pure verification


def _verify_bundle(
    bootstrap: bytes, state: _State, get: Callable[[str], bytes]
) -> dict[str, KeyList]:
    """Re-verify a committed state: bytes in, key lists out (no clock, no I/O but ``get``).

    (1)-(2) the national metadata (:func:`_verify_national`); (3) each
    province's role metadata signed under its national delegation and its key
    list matching the role's hash (:func:`_verify_province`).
    """
    targets, snapshot = _verify_national(bootstrap, state, get)
    # (3) provinces
    return {
        code: _verify_province(targets, code, get(rec.role), get(rec.keys), snapshot=snapshot, exact=False)
        for code, rec in state.provinces.items()
    }


def _verify_national(
    bootstrap: bytes, state: _State, get: Callable[[str], bytes]
) -> tuple[Targets, Snapshot]:
    """(1) the root chain from the bootstrap, each version signed by the old and
    the new root keys; (2) timestamp, snapshot (hash and version from the
    timestamp) and national targets (version from the snapshot), each signed
    by the root's keys for it. Returns the verified targets and snapshot.
    """
    try:
        # (1) root chain
        md = Metadata[Root].from_bytes(bootstrap)
        root = md.signed
        for object_id in state.roots:
            new = Metadata[Root].from_bytes(get(object_id))
            _expect_type(new, Root)
            if new.signed.version <= root.version:
                continue  # the bootstrap is newer than this link
            if new.signed.version != root.version + 1:
                raise TrustDataError(f"root chain skips from v{root.version} to v{new.signed.version}")
            root.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            new.signed.verify_delegate(Root.type, new.signed_bytes, new.signatures)
            root = new.signed
        # (2) top-level roles
        timestamp = Metadata[Timestamp].from_bytes(get(state.timestamp))
        _expect_type(timestamp, Timestamp)
        root.verify_delegate(Timestamp.type, timestamp.signed_bytes, timestamp.signatures)
        snapshot_bytes = get(state.snapshot)
        timestamp.signed.snapshot_meta.verify_length_and_hashes(snapshot_bytes)
        snapshot = Metadata[Snapshot].from_bytes(snapshot_bytes)
        _expect_type(snapshot, Snapshot)
        root.verify_delegate(Snapshot.type, snapshot.signed_bytes, snapshot.signatures)
        if snapshot.signed.version != timestamp.signed.snapshot_meta.version:
            raise TrustDataError("snapshot version differs from the timestamp's")
        targets_bytes = get(state.targets)
        targets = Metadata[Targets].from_bytes(targets_bytes)
        _expect_type(targets, Targets)
        root.verify_delegate(Targets.type, targets.signed_bytes, targets.signatures)
        info = snapshot.signed.meta.get("targets.json")
        if info is None or info.version != targets.signed.version:
            raise TrustDataError("targets version differs from the snapshot's")
        info.verify_length_and_hashes(targets_bytes)
    except SyncError:
        raise
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise TrustDataError(f"cached trust data does not verify: {exc}") from None
    return targets.signed, snapshot.signed


def verify_province_role(
    national: Targets,
    snapshot: Snapshot,
    code: str,
    role_bytes: bytes,
    *,
    probe: str,
    exact: bool = False,
) -> Targets:
    """A province role's metadata, if ``province-<code>`` signed it under ``national``'s delegation.

    Pure: bytes in, verified ``Targets`` out; the one check behind both the key
    lists (:func:`_verify_province`) and the revocation files
    (:mod:`verifier.revocation_sync`). The role must be the first one a lookup
    of ``probe`` (a target path of the province) reaches in the national
    targets, be signed by a threshold of its current keys, and list nothing
    outside its delegation (TUF would only ignore such files; a province key
    signing them is misbehaving, so the role is refused as a whole). ``exact``
    requires the role's version to be the snapshot's (a fresh fetch);
    otherwise it may be older (a province kept at its last good state).
    Expiry is not judged here (as :meth:`TrustSync.load_cached`).
    """
    role = f"province-{code}"
    try:
        delegations = national.delegations
        first = next(delegations.get_roles_for_target(probe), None) if delegations is not None else None
        if first is None or first[0] != role:
            raise TrustDataError(f"{probe} is not delegated to {role}")
        md = Metadata[Targets].from_bytes(role_bytes)
        _expect_type(md, Targets)
        national.verify_delegate(role, md.signed_bytes, md.signatures)
        delegation = national.get_delegated_role(role)
        outside = sorted(p for p in md.signed.targets if not delegation.is_delegated_path(p))
        if outside:
            raise TrustDataError(f"{role} signs {', '.join(outside[:3])}, outside its delegation")
        meta = snapshot.meta.get(f"{role}.json")
        if meta is None or md.signed.version > meta.version or (exact and md.signed.version != meta.version):
            raise TrustDataError(f"{role} v{md.signed.version} is not the snapshot's version")
        return md.signed
    except SyncError:
        raise
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise TrustDataError(f"{role}: {exc}") from None


def _verify_province(
    national: Targets,
    code: str,
    role_bytes: bytes,
    keys_bytes: bytes,
    *,
    snapshot: Snapshot,
    exact: bool,
) -> KeyList:
    """A province's key list, if its role verifies (:func:`verify_province_role`) and lists it."""
    path = f"provinces/{code}/keys.json"
    role = verify_province_role(national, snapshot, code, role_bytes, probe=path, exact=exact)
    try:
        info = role.targets.get(path)
        if info is None:
            raise TrustDataError(f"province-{code} does not list {path}")
        info.verify_length_and_hashes(keys_bytes)
        return parse_key_list(keys_bytes, province=code)
    except SyncError:
        raise
    except InvalidKeyList as exc:
        raise TrustDataError(f"{path}: {exc}") from None
    except (tuf_errors.RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise TrustDataError(f"province-{code}: {exc}") from None


def _keyring(lists: Mapping[str, KeyList]) -> Keyring:
    return Keyring(key for code in sorted(lists) for key in lists[code].trusted_keys())


def _expect_type(md: Metadata, kind: type) -> None:
    if md.signed.type != kind.type:
        raise TrustDataError(f"expected {kind.type} metadata, got {md.signed.type}")


# ---------------------------------------------------------------------- python-tuf glue


def _pin_reference_time(updater: Updater, now: _dt.datetime) -> None:
    """Judge expiry at ``now`` instead of the wall clock.

    python-tuf 7 reads the clock once, in ``TrustedMetadataSet.__init__``, and
    offers no parameter for it. Our time is a parameter (tests, and verifiers
    whose trusted time comes from elsewhere than the system clock), so set the
    one attribute it reads. A python-tuf change that breaks this fails loudly
    here, and the freeze tests catch a silent one.
    """
    trusted = getattr(updater, "_trusted_set", None)
    if trusted is None or not hasattr(trusted, "reference_time"):
        raise RuntimeError("python-tuf changed: cannot set the reference time of the updater")
    trusted.reference_time = now.astimezone(_UTC)


def _expired_at(updater: Updater | None, message: str) -> tuple[str, _dt.datetime | None]:
    """Which role expired, and when, from python-tuf's message and its trusted set."""
    match = re.search(r"(root|timestamp|snapshot|targets|province-\d\d)", message)
    role = match[1] if match else "trust"
    trusted = getattr(updater, "_trusted_set", None)
    try:
        if trusted is not None and role in ("root", "timestamp", "snapshot"):
            return role, trusted[role].expires
    except KeyError:
        pass
    return role, None


def _map_error(
    exc: BaseException, what: str, updater: Updater | None, last: _dt.datetime | None
) -> SyncError:
    """python-tuf's and the OS's errors, in our tree."""
    if isinstance(exc, SyncError):
        return exc
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        role, expired = _expired_at(updater, str(exc))
        return TrustDataFrozen(role, expired, last)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return RollbackError(f"{what}: rollback refused: {exc}")
    if isinstance(exc, tuf_errors.RepositoryError):
        return TrustDataError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return TrustDataError(f"{what}: a file is larger than its signed or capped length: {exc}")
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return MirrorUnavailable(f"{what}: mirror answered HTTP {exc.status_code}")
    if isinstance(exc, tuf_errors.DownloadError):
        cause = exc.__cause__ or exc
        return MirrorUnavailable(f"{what}: mirror unavailable: {cause}")
    if isinstance(exc, InvalidKeyList):
        return TrustDataError(f"{what}: {exc}")
    if isinstance(exc, OSError):
        return SyncError(f"{what}: local trust store: {exc}")
    return TrustDataError(f"{what}: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------- small helpers


def _oldest(state: _State | None) -> _dt.datetime | None:
    """The last verified refresh of a whole keyring: its oldest verified part.

    Equal to the last refresh when every province verified in it; a province
    kept on its last good key list holds it back, so staleness is noticed.
    """
    if state is None:
        return None
    return min([state.refreshed_at, *(rec.verified_at for rec in state.provinces.values())])


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _aware(now: _dt.datetime) -> _dt.datetime:
    if not isinstance(now, _dt.datetime) or now.tzinfo is None:
        raise ValueError("now must be a timezone-aware datetime")
    return now.astimezone(_UTC)


def _iso(moment: _dt.datetime) -> str:
    return moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: Any) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive time in state")
    return moment


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("bad integer")
    return value


def _atomic_write(path: Path, data: bytes) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise
