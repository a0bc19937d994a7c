"""Publishing revocations: from the issuer's store to snapshot and delta files.

The store says which codes are revoked; this module writes the files of
:mod:`healthcode.revocation`, one shard per (province, kid), laid out exactly
as the TUF targets they will be published as (``issuer/revocation_job.py``
runs it and pushes the directory into the trust repository)::

    <directory>/provinces/<code>/revocation/<kid-hex>/snapshot.hcrs
    <directory>/provinces/<code>/revocation/<kid-hex>/delta-<from_seq:010d>.hcrd

A publication, per shard (marked in :meth:`RevocationPublisher._publish_shard`):

1. the last published state: the shard's snapshot file, parsed and verified
   like a verifier would (or the empty state at seq 0 before the first one);
2. the store's revoked serials and universe (serials issued so far), read in
   one transaction;
3. if a snapshot exists and no serial was added, nothing is written (a grown
   universe alone is not worth a publication: a serial at or above a
   verifier's universe is simply not revoked there);
4. the next state: seq + 1, the larger universe, the store's serials (they
   must include every published one: revocations are never lifted);
5. the delta (last -> next) is written, then the snapshot; each atomically
   (temporary file, fsync, ``os.replace``). The snapshot's replacement is the
   commit point: a crash before it leaves a delta that the next run
   overwrites, and nothing of that run was pushed (the push follows
   :meth:`RevocationPublisher.publish`);
6. deltas more than ``keep_deltas`` publications old are deleted (a verifier
   further behind fetches the snapshot).

Assumption, as for the store: one publisher process per province directory.

Reading the store: a :class:`~issuer.store.RevocationSource` from
:func:`issuer.store.open_revocation_source` (SQLite or PostgreSQL; re-exported
here with :class:`~issuer.store.SQLiteRevocationSource`). Its query is served by
the store's partial index on revoked codes (:mod:`issuer.store.schema`).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
import tempfile
from dataclasses import dataclass
from typing import Iterable

from healthcode.revocation import (
    RevocationDataError,
    RevocationState,
    delta_target,
    encode_delta,
    read_header,
    rice_decode,
    shard_directory,
    snapshot_target,
)

from .errors import IssuerError
from .store import RevocationSource, SQLiteRevocationSource

__all__ = [
    "RevocationSource",
    "SQLiteRevocationSource",
    "RevocationPublisher",
    "ShardPublication",
    "RevocationPublishError",
    "DEFAULT_KEEP_DELTAS",
]

#: A week of hourly publications.
DEFAULT_KEEP_DELTAS = 168

_DELTA_NAME = re.compile(r"delta-(\d{10})\.hcrd")


class RevocationPublishError(IssuerError):
    """The published files and the store disagree in a way the publisher must not paper over."""


@dataclass(frozen=True)
class ShardPublication:
    """What one publication did to one shard. Paths are TUF target names, relative to the directory."""

    province: str
    kid: bytes
    seq: int
    universe: int
    revoked: int  # serials in the new state
    added: int  # serials the delta adds
    written: tuple[str, ...]  # the delta, then the snapshot
    removed: tuple[str, ...]  # deltas past the retention


def _write_atomically(path: pathlib.Path, data: bytes, *, fsync: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        try:
            tmp.write(data)
            tmp.flush()
            if fsync:
                os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    try:
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    if fsync:
        _fsync_directory(path.parent)


def _fsync_directory(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RevocationPublisher:
    """Writes each shard's snapshot and deltas under ``directory`` from a :class:`RevocationSource`.

    ``keep_deltas`` is how many of the latest deltas each shard keeps;
    ``fsync`` may be turned off for tests and benchmarks only.
    """

    def __init__(
        self,
        *,
        source: RevocationSource,
        directory: str | os.PathLike[str],
        keep_deltas: int = DEFAULT_KEEP_DELTAS,
        fsync: bool = True,
    ) -> None:
        if keep_deltas < 1:
            raise ValueError("keep_deltas must be at least 1")
        self._source = source
        self.directory = pathlib.Path(directory)
        self._keep = keep_deltas
        self._fsync = fsync

    # -- reading what was published

    def _path(self, target: str) -> pathlib.Path:
        return self.directory / target

    def published_state(self, province: str, kid: bytes) -> RevocationState:
        """The shard's last published state (verified), or the empty state at seq 0."""
        path = self._path(snapshot_target(province, kid))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return RevocationState(province, kid)
        try:
            return RevocationState.from_snapshot(data, province=province, kid=kid)
        except RevocationDataError as exc:
            raise RevocationPublishError(f"published snapshot {path.name} of {province}/{kid.hex()} "
                                         f"is unreadable: {exc}") from None

    def catch_up_delta(self, province: str, kid: bytes, from_seq: int) -> bytes:
        """One delta from ``from_seq`` to the latest seq, merged from the retained deltas.

        For verifiers that sync rarely (a daily delta instead of 24 hourly
        ones); raises :class:`RevocationPublishError` if a needed delta is no
        longer retained.
        """
        head = self.published_state(province, kid)
        if not 0 <= from_seq < head.seq:
            raise RevocationPublishError(f"no catch-up from seq {from_seq}: the shard is at {head.seq}")
        since: set[int] = set()
        for seq in range(from_seq, head.seq):
            try:
                data = self._path(delta_target(province, kid, seq)).read_bytes()
            except FileNotFoundError:
                raise RevocationPublishError(f"delta from seq {seq} is no longer retained") from None
            info = read_header(data)
            since.update(rice_decode(data[info.body_offset:], info.count, info.universe, info.rice_k))
        base = RevocationState(province, kid, seq=from_seq, universe=head.universe,
                               serials=[s for s in head if s not in since])
        return encode_delta(base, head)

    # -- publishing

    def publish(self, *, shards: Iterable[tuple[str, bytes]] | None = None) -> list[ShardPublication]:
        """Publish every shard of the source (or only ``shards``); return what changed."""
        chosen = self._source.shards() if shards is None else list(shards)
        results = []
        for province, kid in chosen:
            result = self._publish_shard(province, kid)
            if result is not None:
                results.append(result)
        return results

    def _publish_shard(self, province: str, kid: bytes) -> ShardPublication | None:
        directory = self._path(shard_directory(province, kid))
        for stale in directory.glob(".*.hcr?.*"):  # temporary files of a crashed run
            with contextlib.suppress(OSError):
                stale.unlink()
        # (1) what verifiers have
        last = self.published_state(province, kid)
        # (2) what the store says
        universe, serials = self._source.revoked(province, kid)
        # (3) nothing new
        first = not self._path(snapshot_target(province, kid)).exists()
        if not first and len(serials) == len(last):
            if serials != last.serials():
                raise RevocationPublishError(f"shard {province}/{kid.hex()}: the store lost a published revocation")
            return None
        # (4) the next state
        try:
            nxt = RevocationState(province, kid, seq=last.seq + 1, universe=max(universe, last.universe),
                                  serials=serials)
            delta = encode_delta(last, nxt)
        except RevocationDataError as exc:
            raise RevocationPublishError(f"shard {province}/{kid.hex()}: {exc}") from None
        # (5) delta first, then the snapshot: the commit point
        delta_name, snapshot_name = delta_target(province, kid, last.seq), snapshot_target(province, kid)
        _write_atomically(self._path(delta_name), delta, fsync=self._fsync)
        _write_atomically(self._path(snapshot_name), nxt.to_snapshot(), fsync=self._fsync)
        # (6) retention
        removed = []
        for path in sorted(directory.glob("delta-*.hcrd")):
            match = _DELTA_NAME.fullmatch(path.name)
            if match and int(match.group(1)) < nxt.seq - self._keep:
                path.unlink()
                removed.append(f"{shard_directory(province, kid)}/{path.name}")
        return ShardPublication(province, kid, nxt.seq, nxt.universe, len(nxt), len(nxt) - len(last),
                                (delta_name, snapshot_name), tuple(removed))

    def retire(self, province: str, kid: bytes) -> list[str]:
        """Delete a shard whose key's last code has expired; return the removed target names.

        Verifiers drop the shard on their side when the key's ``verify_until``
        passes (:meth:`healthcode.revocation.RevocationSet.drop_expired`).
        """
        directory = self._path(shard_directory(province, kid))
        removed = []
        for path in sorted(directory.glob("*.hcr?")):
            path.unlink()
            removed.append(f"{shard_directory(province, kid)}/{path.name}")
        with contextlib.suppress(OSError):
            directory.rmdir()
        return removed
