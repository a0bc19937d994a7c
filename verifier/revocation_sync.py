"""Revocation sync: each live shard's revoked serials from the trust repository, kept verified on disk.

A shard is one province signing key (``healthcode.revocation``). Its province
publishes, as a TUF target of its own delegated role, the shard's latest
``snapshot.hcrs`` (with its seq in the target's ``custom`` object), and serves
its recent ``delta-<from_seq>.hcrd`` files unlisted beside it
(``issuer/revocation_job.py``). :class:`RevocationStore` turns what one
verified refresh of :class:`verifier.trustsync.TrustSync` lists into the
verifier's per-shard state, and loads that state back offline.

The one invariant
-----------------
Every committed shard state **is** a snapshot that its province listed: the
SHA-256 of the state's canonical snapshot (the coding is canonical,
``docs/revocation.md`` §2.4) equals the hash the province role signed for
``snapshot.hcrs``, and that role's bytes are kept beside it. So a state is
replaced only by one the province vouched for, however it was reached, and
:meth:`RevocationStore.load` re-verifies it offline without trusting a file
for being on disk.

:meth:`RevocationStore.sync`, per live shard of the keyring (steps marked in
:meth:`RevocationStore._sync_shard`):

1. the shard's snapshot target in the province role of this refresh; none
   listed means no data (a held state is kept: a live key's revocations do
   not disappear);
2. the listed snapshot hash equals the held one: unchanged, nothing fetched;
3. else, the deltas from the held seq to the seq the province signed for
   the snapshot (its target's ``custom`` ``seq``). They are not listed in
   the metadata: the mirror serves them by name, **unverified**, and they
   are fetched only while the chain weighs less than the snapshot. They are
   applied strictly in order
   (:meth:`~healthcode.revocation.RevocationSet.follow_deltas`: gaps,
   replays, wrong bases and mismatched state hashes are refused), and the
   result must hash to the listed snapshot, which is what makes them
   trustworthy (the invariant above). A bad or missing delta costs only
   the bytes fetched, then step 4;
4. otherwise, or if a delta is refused, the snapshot itself (TUF checked its
   length and hash), which must not be older than the held state, nor
   disagree with it at the same seq, nor lift a revoked serial;
5. if both fail, the last good state stays and the shard is reported
   ``kept`` with the reason.

Shards whose key is past its ``verify_until`` (or gone from the keyring) are
dropped. What is on disk, below the trust sync's ``targets_dir``::

    revocation/state.json          the committed records; replaced atomically (the commit point)
    revocation/objects/<SHA256>    immutable bytes the records name: shard snapshots and
                                   the province role metadata that lists them

The per-shard state is committed after every shard was tried, objects first,
then ``state.json`` (temporary file, fsync, ``os.replace``), then unreferenced
objects are deleted. Key compromise is not handled here: a compromised key's
codes are cut off through the key list (``KeyStatus.COMPROMISED``).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, TypeVar

from tuf.api.metadata import Snapshot, Targets

from healthcode.keyring import Keyring
from healthcode.model import PROVINCES, to_epoch
from healthcode.revocation import (
    MAX_SEQ,
    RevocationDataError,
    RevocationSequenceError,
    RevocationSet,
    RevocationState,
    encode_delta,
    snapshot_target,
)

from .errors import SyncError, TrustDataError
from .objects import ObjectStore, sha256_hex
from .tuf_verify import verify_province_role as _verify_role

__all__ = [
    "RevocationStore",
    "RevocationSyncReport",
    "ShardSync",
    "verify_province_role",
    "REVOCATION_DIR",
    "MAX_DELTA_CHAIN",
    "UNCHANGED",
    "DELTAS",
    "SNAPSHOT",
    "KEPT",
    "MISSING",
    "DROPPED",
]

logger = logging.getLogger(__name__)

#: Below the trust sync's ``targets_dir``.
REVOCATION_DIR = "revocation"
#: Deltas followed for one shard in one sync at most (a week of hourly ones is 168).
MAX_DELTA_CHAIN = 10_000

_STATE_TYPE = "healthcode-revocation-state"
_STATE_FORMAT = 1
_MAX_STATE_BYTES = 4 << 20
_SHA256 = re.compile(r"[0-9a-f]{64}")
_KID_HEX = re.compile(r"(?:[0-9a-f]{2}){1,32}")
_UTC = _dt.timezone.utc
#: What a fetch gave: the bytes of a file a fetch must find, or of one it may not (None).
_Fetched = TypeVar("_Fetched", bytes, "bytes | None")

# What happened to a shard in a sync (ShardSync.action).
UNCHANGED = "unchanged"  # the province lists the snapshot already held: nothing fetched
DELTAS = "deltas"  # advanced by deltas
SNAPSHOT = "snapshot"  # replaced by the listed snapshot (first sync, far behind, or deltas refused)
KEPT = "kept"  # new data refused or unreachable: the last good state stays (see detail)
MISSING = "missing"  # a live shard with no data published and none held
DROPPED = "dropped"  # the shard's key is past verify_until or gone: forgotten


@dataclass(frozen=True)
class ShardSync:
    """What one sync did to one shard."""

    province: str
    kid: bytes
    action: str
    #: The committed seq before and after (None: no state).
    seq_before: int | None
    seq: int | None
    #: Serials revoked since the state held before (all of them on a first sync).
    added: int
    bytes_transferred: int
    files_transferred: int
    #: Why new data was refused (``kept``), or why deltas were not used (``snapshot``).
    detail: str | None = None

    def __str__(self) -> str:
        seqs = f"seq {self.seq_before} -> {self.seq}" if self.seq != self.seq_before else f"seq {self.seq}"
        text = f"{self.province}/{self.kid.hex()}: {self.action}, {seqs}, +{self.added}, {self.bytes_transferred} bytes"
        return f"{text} ({self.detail})" if self.detail else text


@dataclass(frozen=True)
class RevocationSyncReport:
    """What one revocation sync did, per shard, and what it transferred."""

    shards: tuple[ShardSync, ...]
    #: Set when the new state could not be committed (the previous one stays in force).
    error: str | None = None

    @property
    def bytes_transferred(self) -> int:
        return sum(s.bytes_transferred for s in self.shards)

    @property
    def files_transferred(self) -> int:
        return sum(s.files_transferred for s in self.shards)

    @property
    def changed(self) -> tuple[ShardSync, ...]:
        return tuple(s for s in self.shards if s.action in (DELTAS, SNAPSHOT, DROPPED))

    @property
    def failed(self) -> tuple[ShardSync, ...]:
        return tuple(s for s in self.shards if s.action == KEPT)

    def get(self, province: str, kid: bytes) -> ShardSync | None:
        return next((s for s in self.shards if (s.province, s.kid) == (province, kid)), None)


@dataclass(frozen=True)
class _Record:
    """A committed shard: its seq, the snapshot object, the province role object that lists it."""

    seq: int
    snapshot: str  # SHA-256 hex of the canonical snapshot = the listed target hash
    role: str  # SHA-256 hex of the province role metadata that lists it
    verified_at: _dt.datetime


Shard = tuple[str, bytes]


def _shard_key(shard: Shard) -> str:
    return f"{shard[0]}/{shard[1].hex()}"


def _records_to_bytes(records: Mapping[Shard, _Record]) -> bytes:
    document = {
        "type": _STATE_TYPE,
        "version": _STATE_FORMAT,
        "shards": {
            _shard_key(shard): {
                "seq": rec.seq,
                "snapshot": rec.snapshot,
                "role": rec.role,
                "verified_at": rec.verified_at.astimezone(_UTC).isoformat(),
            }
            for shard, rec in sorted(records.items())
        },
    }
    return json.dumps(document, sort_keys=True, indent=1).encode("ascii")


def _records_from_bytes(data: bytes) -> dict[Shard, _Record]:
    if len(data) > _MAX_STATE_BYTES:
        raise TrustDataError("revocation state file is too large")
    try:
        doc = json.loads(data)
        if doc["type"] != _STATE_TYPE or doc["version"] != _STATE_FORMAT:
            raise ValueError("unknown state format")
        records = {}
        for key, rec in doc["shards"].items():
            province, _, kid_hex = key.partition("/")
            if province not in PROVINCES or not _KID_HEX.fullmatch(kid_hex):
                raise ValueError(f"bad shard {key!r}")
            seq = rec["seq"]
            if type(seq) is not int or seq < 0:
                raise ValueError("bad seq")
            if not all(isinstance(rec[f], str) and _SHA256.fullmatch(rec[f]) for f in ("snapshot", "role")):
                raise ValueError("bad object id")
            verified_at = _dt.datetime.fromisoformat(rec["verified_at"])
            if verified_at.tzinfo is None:
                raise ValueError("naive time")
            records[(province, bytes.fromhex(kid_hex))] = _Record(seq, rec["snapshot"], rec["role"], verified_at)
        return records
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrustDataError(f"revocation state file is corrupt: {exc}") from None


def _live(keyring: Keyring, now: _dt.datetime) -> set[Shard]:
    """The shards whose key still verifies something at ``now`` (as ``RevocationSet.drop_expired``)."""
    now_s = to_epoch(now)
    return {(key.province, key.kid) for key in keyring if now_s <= to_epoch(key.verify_until)}


def _listed_sha256(targets: Targets, path: str) -> tuple[str, int] | None:
    info = targets.targets.get(path)
    if info is None:
        return None
    digest = info.hashes.get("sha256")
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise TrustDataError(f"{path} has no SHA-256 in its metadata")
    return digest, info.length


def _listed_seq(targets: Targets, path: str) -> int | None:
    """The ``seq`` the province signed in the snapshot target's ``custom`` object (None: not given)."""
    info = targets.targets.get(path)
    custom = info.unrecognized_fields.get("custom") if info is not None else None
    if custom is None:
        return None
    seq = custom.get("seq") if isinstance(custom, dict) else None
    if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
        raise TrustDataError(f"{path} has a malformed seq in its metadata")
    return seq


def _follow_unlisted(base: RevocationState, seq: int, want: str, fetch: Callable[[str], bytes | None]
                     ) -> tuple[RevocationState | None, bytes, str | None]:
    """Apply the deltas from ``base.seq`` to ``seq`` (``fetch``: unverified bytes, or None).

    Returns the state and its canonical snapshot when that hashes to ``want``
    (the one invariant: the province vouched for this state), else
    ``(None, b"", why)``.
    """
    chain = seq - base.seq
    if chain > MAX_DELTA_CHAIN:
        return None, b"", f"{chain} deltas behind"
    work = RevocationSet([base])
    try:
        work.follow_deltas(base.province, base.kid, fetch, limit=chain)
    except (RevocationDataError, SyncError) as exc:
        return None, b"", f"delta refused: {exc}"
    state = work.get(base.province, base.kid)
    if state is None:  # not expected: the set holds base, and a delta replaces a state, never drops it
        return None, b"", "delta refused: the deltas left no state of the shard"
    if state.seq != seq:
        return None, b"", (f"the deltas from seq {base.seq} end at seq {state.seq}, before the listed {seq} "
                           "(missing, or heavier than the snapshot)")
    data = state.to_snapshot()
    if sha256_hex(data) != want:
        return None, b"", f"delta refused: the deltas to seq {state.seq} do not hash to the listed snapshot"
    return state, data, None


def verify_province_role(national: Targets, snapshot: Snapshot, code: str, role_bytes: bytes) -> Targets:
    """A province role's metadata, verified for its revocation files.

    :func:`verifier.tuf_verify.verify_province_role` (the one check the key
    lists use too), probed with the province's revocation targets; the kept
    role may be older than ``snapshot`` (a province kept at its last good state).
    """
    return _verify_role(national, snapshot, code, role_bytes, probe=f"provinces/{code}/revocation/00/snapshot.hcrs")


class RevocationStore:
    """The verifier's revocation state in ``directory`` (``<targets_dir>/revocation``).

    Single instance per directory, like the trust sync that drives it. I/O is
    the directory only: what to fetch comes in as the verified province roles
    of a refresh and a ``fetch`` callable (:meth:`TrustSync.fetch_target`).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._store = ObjectStore(self.directory, what="revocation")

    # ------------------------------------------------------------------ sync

    def sync(
        self,
        keyring: Keyring,
        *,
        now: _dt.datetime,
        roles: Mapping[str, tuple[bytes, Targets]],
        fetch: Callable[[str], bytes],
        fetch_unlisted: Callable[[str, int], bytes | None] | None = None,
    ) -> RevocationSyncReport:
        """Bring every live shard of ``keyring`` at ``now`` up to what its province lists; commit.

        ``roles`` maps each province that verified in this refresh to its role
        metadata (the exact bytes, and the verified ``Targets``); a province
        missing from it keeps its shards as they are. ``fetch(path)`` returns a
        target's bytes after TUF verification, raising :class:`SyncError`;
        ``fetch_unlisted(path, max_length)`` the unverified bytes the mirror
        serves for an unlisted delta, or None (missing, or longer than
        ``max_length``); without it, shards move by snapshots only.
        Per-shard failures are reported, never raised; a failed commit is
        reported in ``error``.
        """
        try:
            previous = self._read_records()
        except SyncError as exc:  # a corrupt cache is replaced by good data, never a reason to stay stuck
            logger.warning("revocation sync: starting afresh: %s", exc)
            previous = {}
        live = _live(keyring, now)
        records: dict[Shard, _Record] = {}
        blobs: dict[str, bytes] = {}
        reports: list[ShardSync] = []
        for shard in sorted(live):
            role = roles.get(shard[0])
            record, shard_report, new = self._sync_shard(shard, previous.get(shard), role, fetch, fetch_unlisted,
                                                         now)
            if record is not None:
                records[shard] = record
            blobs.update(new)
            reports.append(shard_report)
        for shard, rec in sorted(previous.items()):
            if shard not in live:
                reports.append(ShardSync(shard[0], shard[1], DROPPED, rec.seq, None, 0, 0, 0,
                                         "the key is past verify_until or no longer trusted"))
        error = None
        if records != previous or blobs:
            try:
                self._commit(records, blobs)
            except OSError as exc:
                error = f"cannot write the revocation state: {exc}"
                logger.warning("revocation sync: %s", error)
        report = RevocationSyncReport(tuple(reports), error)
        logger.info("revocation sync: %d shards, %d changed, %d kept on old data, %d bytes",
                    len(reports), len(report.changed), len(report.failed), report.bytes_transferred)
        return report

    def _sync_shard(
        self,
        shard: Shard,
        held: _Record | None,
        role: tuple[bytes, Targets] | None,
        fetch: Callable[[str], bytes],
        fetch_unlisted: Callable[[str, int], bytes | None] | None,
        now: _dt.datetime,
    ) -> tuple[_Record | None, ShardSync, dict[str, bytes]]:
        province, kid = shard
        held_seq = held.seq if held is not None else None
        transferred = [0, 0]  # bytes, files

        def result(action: str, record: _Record | None, added: int = 0, detail: str | None = None,
                   blobs: dict[str, bytes] | None = None):
            seq = record.seq if record is not None else None
            report = ShardSync(province, kid, action, held_seq, seq, added, transferred[0], transferred[1], detail)
            return record, report, blobs or {}

        def keep(detail: str):
            logger.warning("revocation shard %s/%s kept at seq %s: %s", province, kid.hex(), held_seq, detail)
            return result(KEPT if held is not None else MISSING, held, detail=detail)

        if held is not None and not self._store.intact(held.snapshot):  # damaged on disk: fetch afresh
            logger.warning("revocation shard %s/%s: cached snapshot damaged, refetching", province, kid.hex())
            if role is None:
                return keep("cached snapshot damaged; province did not verify in this refresh")
            held, held_seq = None, None
        if role is None:
            return keep(f"province {province} did not verify in this refresh")
        role_bytes, targets = role
        role_id = sha256_hex(role_bytes)
        # (1) the snapshot the province lists now
        snapshot_path = snapshot_target(province, kid)
        try:
            listed = _listed_sha256(targets, snapshot_path)
            listed_seq = _listed_seq(targets, snapshot_path)
        except TrustDataError as exc:
            return keep(str(exc))
        if listed is None:
            if held is not None:
                return keep("the province no longer lists this shard's snapshot")
            return result(MISSING, None)
        want, snapshot_length = listed
        # (2) unchanged: re-vouch the held state by the newest role that lists it
        if held is not None and held.snapshot == want:
            record = _Record(held.seq, held.snapshot, role_id, now)
            return result(UNCHANGED, record, blobs={role_id: role_bytes} if role_id != held.role else {})

        def tally(data: _Fetched) -> _Fetched:
            if data is not None:
                transferred[0] += len(data)
                transferred[1] += 1
            return data

        try:
            base = self._held_state(shard, held)
        except (TrustDataError, RevocationDataError) as exc:
            logger.warning("revocation shard %s/%s: held state unreadable, refetching: %s",
                           province, kid.hex(), exc)
            held, held_seq, base = None, None, RevocationState(province, kid)
        before = len(base)
        # (3) the deltas, unlisted, up to the listed seq, while they weigh less than the snapshot
        note = None
        if listed_seq is None:
            if held is not None:
                note = "the listed snapshot carries no seq: deltas are not followed"
        elif fetch_unlisted is not None and base.seq < listed_seq:
            # every fetch is capped at what is left of one snapshot's size (nothing was fetched before)
            state, data, note = _follow_unlisted(
                base, listed_seq, want, lambda path: tally(fetch_unlisted(path, snapshot_length - 1 - transferred[0])))
            if state is not None:
                record = _Record(state.seq, want, role_id, now)
                return result(DELTAS, record, len(state) - before, blobs={want: data, role_id: role_bytes})
        # (4) the snapshot
        try:
            data = tally(fetch(snapshot_path))  # length and SHA-256 checked by TUF against `want`
            if sha256_hex(data) != want:
                raise TrustDataError(f"{snapshot_path} does not match its listed hash")
            state = RevocationState.from_snapshot(data, province=province, kid=kid)
            if held is not None:
                old = self._held_state(shard, held)
                if state.seq < old.seq:
                    raise RevocationSequenceError(
                        f"snapshot seq {state.seq} is older than the held {old.seq} (rollback)")
                if state.seq == old.seq:
                    raise RevocationDataError(f"snapshot at seq {state.seq} disagrees with the held state at that seq")
                encode_delta(old, state)  # refuses a state that lifts a revocation or shrinks the universe
                before = len(old)
        except (RevocationDataError, SyncError) as exc:
            # (5) the last good state stays
            return keep(f"{note}; snapshot refused: {exc}" if note else f"snapshot refused: {exc}")
        record = _Record(state.seq, want, role_id, now)
        return result(SNAPSHOT, record, len(state) - before, note, blobs={want: data, role_id: role_bytes})

    def _held_state(self, shard: Shard, held: _Record | None) -> RevocationState:
        if held is None:
            return RevocationState(*shard)
        state = RevocationState.from_snapshot(self._store.get(held.snapshot), province=shard[0], kid=shard[1])
        if state.seq != held.seq:
            raise TrustDataError("cached snapshot disagrees with its record")
        return state

    # ------------------------------------------------------------------ load

    def load(self, keyring: Keyring, *, now: _dt.datetime, national: Targets, snapshot: Snapshot) -> RevocationSet:
        """The committed state of every shard live at ``now``, re-verified offline.

        ``national`` and ``snapshot`` are the verified national targets and
        snapshot of the committed trust state. Each shard's snapshot must hash
        to what its kept province role lists, and that role must verify under
        ``national`` (:func:`verify_province_role`). A shard that does not is
        left out and logged: it shows in ``RevocationSet.missing``. Raises
        :class:`TrustDataError` if ``state.json`` itself is corrupt.
        """
        records = self._read_records()
        live = _live(keyring, now)
        roles: dict[str, Targets | TrustDataError] = {}
        states = []
        for shard, rec in sorted(records.items()):
            if shard not in live:
                continue
            province, kid = shard
            try:
                role = roles.get(rec.role)
                if role is None:
                    try:
                        role = verify_province_role(national, snapshot, province, self._store.get(rec.role))
                    except TrustDataError as exc:
                        role = exc
                    roles[rec.role] = role
                if isinstance(role, TrustDataError):
                    raise role
                listed = _listed_sha256(role, snapshot_target(province, kid))
                if listed is None or listed[0] != rec.snapshot:
                    raise TrustDataError("the kept province role does not list this snapshot")
                state = RevocationState.from_snapshot(self._store.get(rec.snapshot), province=province, kid=kid)
                if state.seq != rec.seq:
                    raise TrustDataError("cached snapshot disagrees with its record")
            except (TrustDataError, RevocationDataError) as exc:
                logger.warning("revocation shard %s/%s not loaded: %s", province, kid.hex(), exc)
                continue
            states.append(state)
        return RevocationSet(states)

    def held(self) -> dict[Shard, int]:
        """The seq of every committed shard (unverified; for reports and tests)."""
        return {shard: rec.seq for shard, rec in self._read_records().items()}

    # ------------------------------------------------------------------ disk

    def _read_records(self) -> dict[Shard, _Record]:
        data = self._store.read_state()
        return _records_from_bytes(data) if data is not None else {}

    def _commit(self, records: Mapping[Shard, _Record], blobs: Mapping[str, bytes]) -> None:
        """Objects first, then ``state.json`` (the commit point), then unreferenced objects go."""
        self._store.commit(_records_to_bytes(records), blobs, keep=_referenced(records.values()))


def _referenced(records: Iterable[_Record]) -> set[str]:
    return {object_id for rec in records for object_id in (rec.snapshot, rec.role)}
