"""Revocation: exact, compact sets of revoked serials, one per (province, kid) shard.

A code is revoked by its serial inside its shard, never by its signature bytes
(ECDSA signatures are malleable). The issuer assigns serials densely from 0
per (province, kid), so a shard's revocations are an exact set of integers in
``[0, universe)``: no false positives, close to the information-theoretic size.
``docs/revocation.md`` is the normative description of the files; in short:

* a **snapshot** carries a shard's whole state: its sequence number, its
  universe, the sorted revoked serials (Golomb–Rice coded gaps) and the
  SHA-256 of the canonical state;
* a **delta** takes a shard from ``from_seq`` to ``to_seq`` by adding newly
  revoked serials (coded the same way) and states the SHA-256 of the resulting
  state. There is no "unrevoke": sets only grow, and a shard ends as a whole
  when its key's last code has expired.

Every shard implicitly starts at sequence 0, empty, with universe 0, so a
verifier may follow a shard from its first delta without any snapshot.

Verifier side: :class:`RevocationState` is one shard (``load_snapshot``,
``apply_delta``: strictly in order, unchanged on any failure);
:class:`RevocationSet` holds every shard and is the verifier's
:class:`~healthcode.verify.RevocationChecker`. A shard is held decoded, as a
sorted ``array`` of 32-bit (or 64-bit) serials plus a directory of bucket
starts: a lookup reads the directory and bisects one bucket of ~32 serials,
O(log n) with about 4.1 bytes per revoked code.

Parsing is strict: lengths are capped before anything is decoded, the coding
is canonical (one valid byte string per state), and every problem raises
:class:`RevocationDataError` (sequence problems raise its subclass
:class:`RevocationSequenceError`, on which a verifier falls back to a snapshot).
Bytes in, objects out: no I/O here; the publisher (``issuer``) and the sync
(``verifier``) do the files and the network.

Low level, in :mod:`healthcode.golomb_rice`: the split-stream Golomb–Rice
coding of the serial sets (:func:`rice_encode`/:func:`rice_decode`), decoded
in bulk with int and bytes operations. The measured alternative, Elias–Fano,
lives with the benchmark that measures it (``tools/bench/elias_fano.py``).
"""

from __future__ import annotations

import datetime as _dt
from array import array
from bisect import bisect_left
from itertools import chain, islice, repeat
from operator import lshift, lt
from typing import Callable, Iterable, Iterator

from .errors import RevocationDataError, RevocationSequenceError
from .golomb_rice import U32 as _U32
from .golomb_rice import rice_decode, rice_encode, rice_parameter, typecode as _typecode
from .revocation_format import (
    DELTA_TAIL,
    FORMAT_VERSION,
    FileInfo,
    KIND_DELTA,
    KIND_SNAPSHOT,
    MAGIC,
    MAX_COUNT,
    MAX_DELTA_BYTES,
    MAX_KID,
    MAX_SEQ,
    MAX_SNAPSHOT_BYTES,
    MAX_UNIVERSE,
    SNAPSHOT_TAIL,
    delta_target,
    parse_header,
    read_header,
    shard_directory,
    shard_prefix,
    snapshot_target,
    canonical_state_hash,
)
from .keyring import Keyring
from .model import PROVINCES, to_epoch

__all__ = [
    "RevocationDataError",
    "RevocationSequenceError",
    "RevocationState",
    "RevocationSet",
    "FileInfo",
    "read_header",
    "encode_delta",
    "shard_directory",
    "snapshot_target",
    "delta_target",
    "rice_parameter",
    "MAGIC",
    "FORMAT_VERSION",
    "MAX_SNAPSHOT_BYTES",
    "MAX_DELTA_BYTES",
    "MAX_SEQ",
    "MAX_UNIVERSE",
    "MAX_COUNT",
    # low level (healthcode.golomb_rice)
    "rice_encode",
    "rice_decode",
]


# --------------------------------------------------------------------------- one shard


def _check_shard(province: object, kid: object) -> None:
    if not isinstance(province, str) or province not in PROVINCES:
        raise RevocationDataError(f"not a GB/T 2260 province code: {province!r}")
    if not isinstance(kid, bytes) or not 1 <= len(kid) <= MAX_KID:
        raise RevocationDataError(f"kid must be 1 to {MAX_KID} bytes")


def _sorted_serials(serials: Iterable[int], universe: int) -> array[int]:
    code = _typecode(universe)
    try:
        values = serials if isinstance(serials, array) and serials.typecode == code else array(code, serials)
    except (OverflowError, TypeError):
        raise RevocationDataError("serials must be integers in [0, universe)") from None
    if values and (values[0] < 0 or values[-1] >= universe):
        raise RevocationDataError("serial out of range of the universe")
    if not all(map(lt, values, islice(values, 1, None))):
        raise RevocationDataError("serials must be strictly increasing (sorted, no duplicates)")
    return array(code, values) if values is serials else values


#: Serials per directory bucket, on average: a lookup bisects about log2 of this.
_BUCKET_TARGET = 32


def _directory(serials: array[int], universe: int) -> tuple[array[int], array[int], int]:
    """(serials, directory, shift): serials below ``b << shift`` are ``serials[:directory[b]]``.

    A lookup reads two directory entries and bisects one bucket of ~32
    serials (5 steps in a few cache lines) instead of the whole shard (18
    steps scattered over ~1 MB for the largest national shard); the
    directory costs ~1/8 byte per revoked serial.
    """
    count = len(serials)
    if count == 0:
        return serials, array(_U32, (0,)), 0  # no bucket: every lookup answers False at once
    shift = max(0, (universe * _BUCKET_TARGET // count).bit_length() - 1)
    buckets = ((universe - 1) >> shift) + 1
    starts = map(bisect_left, repeat(serials, buckets + 1), map(lshift, range(buckets + 1), repeat(shift)))
    return serials, array(_U32, starts), shift


class RevocationState:
    """The revocation state of one shard (province, kid): seq, universe, sorted revoked serials.

    A new state is empty at sequence 0 with universe 0 unless given. The only
    changes are :meth:`load_snapshot` and :meth:`apply_delta`, each checked in
    full before anything is replaced: on any failure the state is unchanged.
    """

    __slots__ = ("_province", "_kid", "_seq", "_universe", "_serials", "_hash", "_index")

    def __init__(
        self, province: str, kid: bytes, *, seq: int = 0, universe: int = 0, serials: Iterable[int] = ()
    ) -> None:
        _check_shard(province, kid)
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            raise RevocationDataError("seq must be an integer in [0, 2**32)")
        if type(universe) is not int or not 0 <= universe <= MAX_UNIVERSE:
            raise RevocationDataError("universe must be an integer in [0, 2**64)")
        values = _sorted_serials(serials, universe)
        if len(values) > MAX_COUNT:
            raise RevocationDataError("too many serials for one shard")
        self._province = province
        self._kid = kid
        self._commit(seq, universe, values, canonical_state_hash(province, kid, seq, universe, values))

    def _commit(self, seq: int, universe: int, serials: array[int], state_hash: bytes) -> None:
        # Everything is computed before the first assignment; readers (is_revoked) load
        # _index once, so the serials and their directory change together.
        index = _directory(serials, universe)
        self._seq, self._universe, self._hash, self._serials, self._index = seq, universe, state_hash, serials, index

    # -- reading

    @property
    def province(self) -> str:
        return self._province

    @property
    def kid(self) -> bytes:
        return self._kid

    @property
    def shard(self) -> tuple[str, bytes]:
        return (self._province, self._kid)

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def universe(self) -> int:
        return self._universe

    @property
    def state_hash(self) -> bytes:
        """SHA-256 of the canonical state (``docs/revocation.md``)."""
        return self._hash

    @property
    def nbytes(self) -> int:
        """Bytes held by the serials array and its directory."""
        serials, directory, _ = self._index
        return len(serials) * serials.itemsize + len(directory) * directory.itemsize

    def serials(self) -> list[int]:
        """A copy of the revoked serials, ascending."""
        return self._serials.tolist()

    def is_revoked(self, serial: int) -> bool:
        serials, directory, shift = self._index
        bucket = serial >> shift
        if not 0 <= bucket < len(directory) - 1:
            return False
        end = directory[bucket + 1]
        i = bisect_left(serials, serial, directory[bucket], end)
        return i != end and serials[i] == serial

    __contains__ = is_revoked

    def __len__(self) -> int:
        return len(self._serials)

    def __iter__(self) -> Iterator[int]:
        return iter(self._serials)

    def __repr__(self) -> str:
        return (f"<RevocationState {self._province}/{self._kid.hex()} seq={self._seq} "
                f"universe={self._universe} revoked={len(self._serials)}>")

    # -- files

    def to_snapshot(self) -> bytes:
        """This state as a snapshot file."""
        count = len(self._serials)
        k = rice_parameter(self._universe, count)
        return (
            shard_prefix(KIND_SNAPSHOT, self._province, self._kid)
            + SNAPSHOT_TAIL.pack(self._seq, self._universe, count, k, self._hash)
            + rice_encode(self._serials, count, k)
        )

    @classmethod
    def from_snapshot(cls, data: bytes, *, province: str | None = None, kid: bytes | None = None) -> RevocationState:
        """The state a snapshot carries, verified against its hash (and its shard, if given)."""
        info, serials = _decode_snapshot(data, province, kid)
        state = cls.__new__(cls)
        state._province, state._kid = info.province, info.kid
        state._commit(info.to_seq, info.universe, serials, info.state_hash)
        return state

    def load_snapshot(self, data: bytes) -> None:
        """Replace this state by a newer snapshot of the same shard.

        An older snapshot is a rollback (:class:`RevocationSequenceError`); one
        at the current sequence must carry the same state, else the publisher
        forked (:class:`RevocationDataError`); either way nothing changes.
        """
        info, serials = _decode_snapshot(data, self._province, self._kid)
        if info.to_seq < self._seq:
            raise RevocationSequenceError(f"snapshot seq {info.to_seq} is older than the state's {self._seq}")
        if info.to_seq == self._seq:
            if info.state_hash != self._hash:
                raise RevocationDataError(f"snapshot at seq {info.to_seq} disagrees with the state at that seq")
            return
        self._commit(info.to_seq, info.universe, serials, info.state_hash)

    def apply_delta(self, data: bytes) -> None:
        """Apply the next delta of this shard, strictly in order; all or nothing.

        (1) the header: caps, form, this shard; (2) the sequence: ``from_seq``
        must be this state's seq (else a gap, or a replay of an older delta);
        (3) the universe may only grow; (4) the new serials: canonical coding,
        below the universe, none already revoked; (5) the hash of the merged
        state must be the one the delta states. Only then is the state replaced.
        """
        # (1)
        info = parse_header(data, KIND_DELTA)
        if (info.province, info.kid) != (self._province, self._kid):
            raise RevocationDataError("delta is for another shard")
        # (2)
        from_seq = info.from_seq
        if from_seq is None:  # pragma: no cover - a delta header always carries one
            raise RevocationDataError("delta without a starting seq")
        if from_seq != self._seq:
            if info.to_seq <= self._seq:
                raise RevocationSequenceError(
                    f"delta {from_seq}->{info.to_seq} is older than the state's seq {self._seq} (replay)")
            if from_seq > self._seq:
                raise RevocationSequenceError(
                    f"gap: delta starts at seq {info.from_seq}, the state is at {self._seq}")
            raise RevocationSequenceError(
                f"delta {info.from_seq}->{info.to_seq} overlaps the state's seq {self._seq}")
        # (3)
        if info.universe < self._universe:
            raise RevocationDataError("delta shrinks the universe")
        # (4)
        added = rice_decode(bytes(data[info.body_offset :]), info.count, info.universe, info.rice_k)
        merged = _merge(self._serials, added, info.universe)
        # (5)
        state_hash = canonical_state_hash(self._province, self._kid, info.to_seq, info.universe, merged)
        if state_hash != info.state_hash:
            raise RevocationDataError("state hash after the delta does not match (wrong base or corrupt delta)")
        self._commit(info.to_seq, info.universe, merged, state_hash)


def _decode_snapshot(data: bytes, province: str | None, kid: bytes | None) -> tuple[FileInfo, array[int]]:
    info = parse_header(data, KIND_SNAPSHOT)
    if (province is not None and info.province != province) or (kid is not None and info.kid != kid):
        raise RevocationDataError("snapshot is for another shard")
    serials = rice_decode(bytes(data[info.body_offset :]), info.count, info.universe, info.rice_k)
    if canonical_state_hash(info.province, info.kid, info.to_seq, info.universe, serials) != info.state_hash:
        raise RevocationDataError("snapshot state hash does not match its serials")
    return info, serials


def _merge(old: array[int], added: array[int], universe: int) -> array[int]:
    """A new sorted array holding both; :class:`RevocationDataError` if ``added`` repeats one of ``old``.

    Up to one addition per 16 serials: slices of ``old`` copied around each
    addition (m bisects, memcpy for the rest); beyond that, one sort of both.
    """
    code = _typecode(universe)
    if old.typecode != code:
        old = array(code, old)
    if len(added) > len(old) // 16:
        values = sorted(chain(old, added))  # two sorted runs: timsort merges them in linear time
        if not all(map(lt, values, islice(values, 1, None))):
            raise RevocationDataError("delta revokes a serial which is already revoked")
        return array(code, values)
    merged = array(code)
    start = 0
    for serial in added:
        i = bisect_left(old, serial, start)
        if i != len(old) and old[i] == serial:
            raise RevocationDataError(f"delta revokes serial {serial} which is already revoked")
        merged += old[start:i]
        merged.append(serial)
        start = i
    merged += old[start:]
    return merged


def _added(old: array[int], new: array[int]) -> list[int] | None:
    """The serials of sorted ``new`` missing from sorted ``old``; None unless ``old`` is a subset.

    A few additions to a large shard (the hourly case) cost O(m log n) bisects
    and C-level slice comparisons instead of hashing every serial: with
    off(i) = (position of old[i] in new) - i, a run of old whose offsets at
    both ends agree must appear unchanged in new; only runs whose offsets
    differ hold additions and are split.
    """
    extra = len(new) - len(old)
    if extra < 0:
        return None
    if not old:
        return new.tolist()
    if extra > len(new) // 64 or old.typecode != new.typecode:  # many additions: hashing is cheaper
        have = set(new)
        have.difference_update(old)
        return sorted(have) if len(have) == extra else None
    first = bisect_left(new, old[0])
    if first > extra or new[first] != old[0]:
        return None
    added = new[:first].tolist()
    segments = [(0, len(old), first, extra)]  # old[a:b], off(a), off(b) with off(len(old)) = extra
    while segments:
        a, b, off_a, off_b = segments.pop()
        if off_a == off_b:
            if old[a:b] != new[a + off_a : b + off_b]:
                return None
            continue
        if b - a == 1:  # old[a] (already matched) then the additions up to the next run
            added.extend(new[a + off_a + 1 : b + off_b])
            continue
        mid = (a + b) // 2
        j = bisect_left(new, old[mid], a + off_a, b + off_b)
        if j == b + off_b or new[j] != old[mid]:
            return None
        segments.append((mid, b, j - mid, off_b))  # right after left: additions come out in order
        segments.append((a, mid, off_a, j - mid))
    return added


def encode_delta(old: RevocationState, new: RevocationState) -> bytes:
    """The delta file that takes ``old`` to ``new`` (publisher side).

    Both must be the same shard, ``new`` later with a universe at least as
    large, and ``new`` must hold every serial ``old`` does: revocations are
    never lifted.
    """
    if old.shard != new.shard:
        raise RevocationDataError("states of different shards")
    if new.seq <= old.seq:
        raise RevocationDataError("the new state must have a later seq")
    if new.universe < old.universe:
        raise RevocationDataError("the universe may only grow")
    added = _added(old._serials, new._serials)
    if added is None:
        raise RevocationDataError("the new state lifts a revocation (never supported: reissue the code)")
    count = len(added)
    k = rice_parameter(new.universe, count)
    return (
        shard_prefix(KIND_DELTA, new.province, new.kid)
        + DELTA_TAIL.pack(old.seq, new.seq, new.universe, count, k, new.state_hash)
        + rice_encode(added, count, k)
    )


# --------------------------------------------------------------------------- every shard


class RevocationSet:
    """Every shard a verifier holds; the :class:`~healthcode.verify.RevocationChecker` it passes to verify.

    :meth:`is_revoked` answers False for a shard it holds no data for; a
    verifier finds those with :meth:`missing` (and reports stale trust data)
    rather than refusing every code of a new key. Each publisher should put
    out a snapshot, even an empty one, for every live key.
    """

    __slots__ = ("_shards",)

    def __init__(self, states: Iterable[RevocationState] = ()) -> None:
        self._shards: dict[tuple[str, bytes], RevocationState] = {}
        for state in states:
            if not isinstance(state, RevocationState):
                raise TypeError("a RevocationSet holds RevocationState values")
            if state.shard in self._shards:
                raise RevocationDataError(f"two states for shard {state.province}/{state.kid.hex()}")
            self._shards[state.shard] = state

    def is_revoked(self, province: str, kid: bytes, serial: int) -> bool:
        """Whether ``serial`` of shard (``province``, ``kid``) is revoked.

        A dict get, a directory read, a short bisect.
        """
        state = self._shards.get((province, kid))
        if state is None:
            return False
        serials, directory, shift = state._index  # inlined RevocationState.is_revoked
        bucket = serial >> shift
        if not 0 <= bucket < len(directory) - 1:
            return False
        end = directory[bucket + 1]
        i = bisect_left(serials, serial, directory[bucket], end)
        return i != end and serials[i] == serial

    def get(self, province: str, kid: bytes) -> RevocationState | None:
        return self._shards.get((province, kid))

    def load_snapshot(self, data: bytes, *, province: str | None = None, kid: bytes | None = None) -> RevocationState:
        """Load a snapshot into its shard (new, or a later state of a held one); return the shard."""
        info = parse_header(data, KIND_SNAPSHOT)
        if (province is not None and province != info.province) or (kid is not None and kid != info.kid):
            raise RevocationDataError("snapshot is for another shard")
        state = self._shards.get((info.province, info.kid))
        if state is None:
            state = RevocationState.from_snapshot(data)
            self._shards[state.shard] = state
        else:
            state.load_snapshot(data)
        return state

    def apply_delta(self, data: bytes, *, province: str | None = None, kid: bytes | None = None) -> RevocationState:
        """Apply a delta to its shard; a shard not held yet starts empty at seq 0."""
        info = parse_header(data, KIND_DELTA)
        if (province is not None and province != info.province) or (kid is not None and kid != info.kid):
            raise RevocationDataError("delta is for another shard")
        state = self._shards.get((info.province, info.kid))
        if state is None:
            state = RevocationState(info.province, info.kid)
            state.apply_delta(data)
            self._shards[state.shard] = state
        else:
            state.apply_delta(data)
        return state

    def follow_deltas(self, province: str, kid: bytes, fetch: Callable[[str], bytes | None], *,
                      limit: int = 10_000) -> int:
        """Apply the shard's published deltas from its current seq on; return how many were applied.

        ``fetch(target_name)`` returns a delta's bytes, or None when there is
        none; it is the caller's I/O, and the caller decides what vouches for
        the result (the verifier's sync serves deltas unverified and commits
        the resulting state only if its snapshot hashes to the one the province
        signed). The chain stops at the first missing delta: either the shard
        is at the latest seq, or it is further behind than the publisher keeps
        deltas for, and the caller loads the snapshot. A
        :class:`RevocationSequenceError` also means: load the snapshot.
        """
        applied = 0
        while applied < limit:
            state = self._shards.get((province, kid))
            data = fetch(delta_target(province, kid, 0 if state is None else state.seq))
            if data is None:
                break
            self.apply_delta(data, province=province, kid=kid)
            applied += 1
        return applied

    def drop(self, province: str, kid: bytes) -> bool:
        return self._shards.pop((province, kid), None) is not None

    def drop_expired(self, live: Keyring | Iterable[tuple[str, bytes]], *, now: _dt.datetime | None = None
                     ) -> list[tuple[str, bytes]]:
        """Drop every shard that is not live; return the dropped (province, kid) pairs.

        ``live`` is a keyring (with ``now``: a shard lives while its key is in
        the keyring and ``now`` is not past its ``verify_until``; after that no
        code of the key verifies, revoked or not) or the set of live shards.
        """
        if isinstance(live, Keyring):
            if now is None:
                raise TypeError("drop_expired with a keyring needs now")
            now_s = to_epoch(now)
            keep: set[tuple[str, bytes]] = {
                (key.province, key.kid) for key in live if now_s <= to_epoch(key.verify_until)}
        else:
            keep = set(live)
        dropped = [shard for shard in list(self._shards) if shard not in keep]
        for shard in dropped:
            del self._shards[shard]
        return dropped

    def missing(self, keyring: Keyring, *, now: _dt.datetime) -> list[tuple[str, bytes]]:
        """The live shards of ``keyring`` at ``now`` this set holds no data for."""
        now_s = to_epoch(now)
        return [
            (key.province, key.kid)
            for key in keyring
            if now_s <= to_epoch(key.verify_until) and (key.province, key.kid) not in self._shards
        ]

    @property
    def revoked_count(self) -> int:
        return sum(len(state) for state in self._shards.values())

    @property
    def nbytes(self) -> int:
        """Bytes held by the serial arrays of every shard."""
        return sum(state.nbytes for state in self._shards.values())

    def __iter__(self) -> Iterator[RevocationState]:
        return iter(list(self._shards.values()))

    def __len__(self) -> int:
        return len(self._shards)

    def __repr__(self) -> str:
        return f"<RevocationSet {len(self._shards)} shards, {self.revoked_count} revoked>"
