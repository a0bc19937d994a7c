"""The trust sources behind the seam of :mod:`verifier.trust`: the TUF trust repository and a development bundle.

* :class:`TufTrustSource`, production: the national TUF trust repository and its
  revocation data through :mod:`verifier.trustsync`, its errors mapped onto the seam's;
* :class:`DevBundleSource`, an *unsigned* JSON bundle (:func:`dev_bundle_bytes`) for
  development, tests and benchmarks only.

Both persist through :func:`shellkit.files.write_file_atomically` (owner-only,
fsynced, no temp file left behind on failure).
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import json
import os
import pathlib
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping

import healthcode as hc
from shellkit.files import write_file_atomically

from .errors import NoTrustData, SyncFailed, TrustDataRejected
from .trust import Progress, SetRevocation, SyncReport, TrustState

__all__ = ["DEV_BUNDLE_FORMAT", "DEV_BUNDLE_NAME", "DevBundleSource", "dev_bundle_bytes", "TufTrustSource"]


# --- the development bundle ------------------------------------------------------------------

DEV_BUNDLE_FORMAT = "healthcode-dev-trust-bundle/1"
DEV_BUNDLE_NAME = "bundle.json"
_STATE_NAME = "state.json"


def _iso(moment: _dt.datetime) -> str:
    # Not shellkit.times.iso_utc: this keeps microseconds ("...T08:00:00.250000Z"), and the bundle's
    # times and the last verified refresh must read back exactly as they were written.
    return moment.astimezone(_dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _parse_time(value: str) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("times must carry a zone")
    return moment


def dev_bundle_bytes(
    keys: Iterable[hc.TrustedKey],
    *,
    version: int,
    revoked: Mapping[tuple[str, bytes], Iterable[int]] | None = None,
) -> bytes:
    """Serialise a development trust bundle (what a test mirror serves)."""
    entries = []
    for key in keys:
        entries.append({
            "province": key.province,
            "kid": key.kid.hex(),
            "public_key": base64.b64encode(key.public_key.spki_der()).decode("ascii"),
            "use_from": _iso(key.use_from),
            "use_until": _iso(key.use_until),
            "verify_until": _iso(key.verify_until),
            "status": key.status.value,
            "compromised_since": _iso(key.compromised_since) if key.compromised_since else None,
            "compromise_policy": key.compromise_policy.value,
        })
    shards = [
        {"province": province, "kid": kid.hex(), "serials": sorted(set(serials))}
        for (province, kid), serials in sorted((revoked or {}).items())
    ]
    return json.dumps(
        {"format": DEV_BUNDLE_FORMAT, "version": version, "keys": entries, "revoked": shards},
        sort_keys=True, separators=(",", ":"),
    ).encode()


def _parse_dev_bundle(raw: bytes) -> tuple[int, hc.Keyring, SetRevocation, dict[str, str]]:
    """(version, keyring, revocation, digest per province) or TrustDataRejected."""
    try:
        doc = json.loads(raw)
        if doc.get("format") != DEV_BUNDLE_FORMAT:
            raise ValueError(f"not a {DEV_BUNDLE_FORMAT} document")
        version = doc["version"]
        if type(version) is not int or version < 1:
            raise ValueError("version must be a positive integer")
        keys = []
        per_province: dict[str, list] = {}
        for entry in doc["keys"]:
            keys.append(hc.TrustedKey(
                kid=bytes.fromhex(entry["kid"]),
                province=entry["province"],
                public_key=hc.load_public_key_der(base64.b64decode(entry["public_key"], validate=True)),
                use_from=_parse_time(entry["use_from"]),
                use_until=_parse_time(entry["use_until"]),
                verify_until=_parse_time(entry["verify_until"]),
                status=hc.KeyStatus(entry["status"]),
                compromised_since=_parse_time(entry["compromised_since"]) if entry["compromised_since"] else None,
                compromise_policy=hc.CompromisePolicy(entry["compromise_policy"]),
            ))
            per_province.setdefault(entry["province"], []).append(entry)
        shards = {}
        for shard in doc["revoked"]:
            serials = shard["serials"]
            if not all(type(s) is int and 0 <= s < 2**64 for s in serials):
                raise ValueError("serials must be unsigned 64-bit integers")
            shards[(shard["province"], bytes.fromhex(shard["kid"]))] = serials
            per_province.setdefault(shard["province"], []).append(shard)
        keyring = hc.Keyring(keys)
    except (ValueError, KeyError, TypeError, AttributeError, hc.HealthCodeError) as exc:
        raise TrustDataRejected(f"bad trust bundle: {exc}") from None
    digests = {
        province: hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        for province, items in per_province.items()
    }
    return version, keyring, SetRevocation(shards), digests


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    """Replace ``path`` atomically (owner-only, fsynced, no temp file left behind on failure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomically(path, data)


class DevBundleSource:
    """An UNSIGNED JSON trust bundle: for development, tests and benchmarks only.

    ``source`` is a directory holding ``bundle.json``, a file path, or an
    ``http(s)://`` URL of the bundle. The verified copy and the time of the
    last successful refresh are kept in ``cache_dir``. A bundle with a lower
    version than the cached one is refused (rollback), as the TUF source does.
    It has no signature: anyone who can write the source can change the trust.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None = None,
                 *, max_bytes: int = 256 * 1024 * 1024, timeout: float = 30.0) -> None:
        self.cache_dir = pathlib.Path(cache_dir)
        self.source = source
        self.max_bytes = max_bytes
        self.timeout = timeout

    def _fetch(self, progress: Progress | None) -> bytes:
        source = str(self.source)
        scheme = urllib.parse.urlsplit(source).scheme
        try:
            if scheme in ("http", "https", "file"):
                with urllib.request.urlopen(source, timeout=self.timeout) as response:
                    length = response.headers.get("Content-Length")
                    return self._read_capped(response, int(length) if length else None, progress)
            path = pathlib.Path(source)
            if path.is_dir():
                path = path / DEV_BUNDLE_NAME
            with open(path, "rb") as f:
                return self._read_capped(f, os.fstat(f.fileno()).st_size, progress)
        except (OSError, ValueError) as exc:
            raise SyncFailed(f"cannot read trust bundle from {source}: {exc}") from None

    def _read_capped(self, stream, total: int | None, progress: Progress | None) -> bytes:
        if total is not None and total > self.max_bytes:
            raise TrustDataRejected(f"trust bundle is {total} bytes; the limit is {self.max_bytes}")
        chunks: list[bytes] = []
        done = 0
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                return b"".join(chunks)
            done += len(chunk)
            if done > self.max_bytes:
                raise TrustDataRejected(f"trust bundle is over {self.max_bytes} bytes")
            chunks.append(chunk)
            if progress is not None:
                progress(done, total)

    def _cached(self) -> tuple[bytes, dict] | None:
        try:
            raw = (self.cache_dir / DEV_BUNDLE_NAME).read_bytes()
            state = json.loads((self.cache_dir / _STATE_NAME).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise TrustDataRejected(f"cached trust data unreadable: {exc}") from None
        return raw, state

    def refresh(self, now: _dt.datetime, *, progress: Progress | None = None) -> SyncReport:
        if self.source is None:
            raise SyncFailed("no trust source configured")
        raw = self._fetch(progress)
        version, _, _, digests = _parse_dev_bundle(raw)
        try:
            cached = self._cached()
            old_version, _, _, old_digests = _parse_dev_bundle(cached[0]) if cached else (0, None, None, {})
        except TrustDataRejected:  # a corrupt cache is replaced by good data, never a reason to stay stuck
            cached, old_version, old_digests = None, 0, {}
        if cached is not None:
            if version < old_version:
                raise TrustDataRejected(f"rollback refused: version {version} is older than {old_version}")
        changed = tuple(sorted(p for p in digests.keys() | old_digests.keys()
                               if digests.get(p) != old_digests.get(p)))
        if cached is None or cached[0] != raw:
            _write_atomic(self.cache_dir / DEV_BUNDLE_NAME, raw)
        _write_atomic(self.cache_dir / _STATE_NAME,
                      json.dumps({"version": version, "last_verified_refresh": _iso(now)}).encode())
        return SyncReport(changed, len(raw), now, (f"version {version}",))

    def load(self, now: _dt.datetime) -> TrustState:
        cached = self._cached()
        if cached is None:
            raise NoTrustData(f"no trust data in {self.cache_dir}: run a sync")
        raw, state = cached
        _, keyring, revocation, _ = _parse_dev_bundle(raw)
        try:
            refreshed = _parse_time(state["last_verified_refresh"])
        except (KeyError, ValueError, TypeError, AttributeError):
            raise TrustDataRejected("cached trust state is corrupt") from None
        return TrustState(keyring, revocation, refreshed)


# --- the production source: TUF trust repository + revocation -------------------------------


class TufTrustSource:
    """The national TUF trust repository and its revocation data, behind the seam.

    Everything is ``verifier.trustsync.TrustSync``: ``refresh`` verifies the
    keys (python-tuf, province delegations) and then brings every live
    revocation shard up to date (``verifier.revocation_sync``: deltas or the
    snapshot, each shard committed on its own); ``load_cached`` and
    ``load_revocation`` re-verify the committed data from the bootstrap root,
    offline. This class maps their errors and reports onto the seam's.

    Layout under ``trust_dir``: ``metadata/`` (python-tuf's verified cache),
    ``targets/`` (trustsync's committed state, objects and revocation state)
    and ``bootstrap-root.json``: the root this terminal was set up with, given
    once with ``--root`` for the first sync and pinned there once it succeeds
    (root rotation then follows the signed chain).

    Live keys without revocation data (never published, or a shard whose
    cache failed verification) are a warning of the state: their revoked
    codes cannot be detected, and the operator and the HIS are told so.
    """

    ROOT_NAME = "bootstrap-root.json"

    def __init__(self, trust_dir: str | os.PathLike[str], source: str | os.PathLike[str] | None, *,
                 bootstrap_root: str | os.PathLike[str] | None = None,
                 refresh_deadline: float | None = None) -> None:
        from . import trustsync

        self._ts = trustsync
        #: The client's limits: the defaults, with ``refresh_deadline`` (seconds) when given.
        self.sync_config = trustsync.SyncConfig() if refresh_deadline is None else trustsync.SyncConfig(
            refresh_deadline=refresh_deadline)
        self.trust_dir = pathlib.Path(trust_dir)
        self.source = os.fspath(source) if source is not None else None
        self._given_root = pathlib.Path(bootstrap_root) if bootstrap_root is not None else None
        self._client_cache = None

    @staticmethod
    def available() -> str | None:
        """None when usable; else what is missing."""
        try:
            from . import trustsync  # noqa: F401
        except ImportError as exc:
            return f"cannot import the trust sync: {exc}"
        return None

    def _root(self) -> bytes:
        pinned = self.trust_dir / self.ROOT_NAME
        try:
            return pinned.read_bytes()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise TrustDataRejected(f"cannot read {pinned}: {exc}") from None
        if self._given_root is None:
            raise NoTrustData("no bootstrap root: give --root root.json for the first sync")
        try:
            return self._given_root.read_bytes()
        except OSError as exc:
            raise SyncFailed(f"cannot read the bootstrap root {self._given_root}: {exc}") from None

    def _client(self):
        if self._client_cache is not None:
            return self._client_cache
        ts = self._ts
        source = self.source if self.source is not None else self.trust_dir / "no-mirror"
        try:
            client = ts.TrustSync(self.trust_dir / "metadata", self.trust_dir / "targets", source, self._root(),
                                  config=self.sync_config)
        except ts.SyncError as exc:
            raise TrustDataRejected(str(exc)) from None
        except OSError as exc:
            raise TrustDataRejected(f"trust store unusable: {exc}") from None
        self._client_cache = client  # one per directory, like python-tuf
        return client

    def refresh(self, now: _dt.datetime, *, progress: Progress | None = None) -> SyncReport:
        ts = self._ts
        if self.source is None:
            raise SyncFailed("no trust mirror configured (--source URL|DIR)")
        client = self._client()
        try:
            result = client.refresh(now)
        except ts.MirrorUnavailable as exc:
            raise SyncFailed(str(exc)) from None
        except ts.SyncError as exc:  # bad, rolled back or frozen data
            raise TrustDataRejected(str(exc)) from None
        pinned = self.trust_dir / self.ROOT_NAME
        if not pinned.exists():
            _write_atomic(pinned, self._root())
        if progress is not None:  # trustsync reports no progress while fetching: one step at the end
            progress(result.bytes_transferred, result.bytes_transferred)
        notes = [f"root v{result.root_version}", f"{result.files_transferred} files"]
        notes += [f"province {code} kept its last good keys: {error}" for code, error in sorted(result.failed.items())]
        notes += [f"province {code} removed" for code in result.removed]
        changed = set(result.changed) | set(result.removed)
        revocation = getattr(result, "revocation", None)
        if revocation is not None:
            changed |= {shard.province for shard in revocation.changed}
            if revocation.changed:
                notes.append(f"revocation: {len(revocation.changed)} shard(s) updated")
            notes += [f"revocation {shard} kept its last good state" for shard in revocation.failed]
            if revocation.error:
                notes.append(f"revocation not committed: {revocation.error}")
        return SyncReport(tuple(sorted(changed)), result.bytes_transferred, result.last_verified_refresh,
                          tuple(notes))

    def load(self, now: _dt.datetime) -> TrustState:
        ts = self._ts
        client = self._client()
        try:
            keyring, last = client.load_cached(now)
            revocation = client.load_revocation(now) if hasattr(client, "load_revocation") else None
        except ts.NotSynced as exc:
            raise NoTrustData(str(exc)) from None
        except ts.SyncError as exc:
            raise TrustDataRejected(str(exc)) from None
        if revocation is None:
            uncovered = tuple(keyring)
        else:
            missing = set(revocation.missing(keyring, now=now))
            uncovered = tuple(key for key in keyring if (key.province, key.kid) in missing)
        return TrustState(keyring, revocation, last, uncovered=uncovered).at(now)
