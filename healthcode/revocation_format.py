"""The revocation file format: constants and caps, target names, headers, the canonical state hash.

``docs/revocation.md`` is the normative description. This module parses and
builds the bytes every snapshot and delta share (magic, version, kind, shard,
the fixed tail); :mod:`healthcode.revocation` holds the shard states that
these files carry. Bytes in, objects out; headers come out *unverified*.
"""

from __future__ import annotations

import hashlib
import struct
import sys
from array import array
from dataclasses import dataclass

from .errors import RevocationDataError
from .golomb_rice import rice_parameter
from .model import PROVINCES

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "KIND_SNAPSHOT",
    "KIND_DELTA",
    "MAX_SNAPSHOT_BYTES",
    "MAX_DELTA_BYTES",
    "MAX_SEQ",
    "MAX_COUNT",
    "MAX_UNIVERSE",
    "MAX_KID",
    "SNAPSHOT_TAIL",
    "DELTA_TAIL",
    "FileInfo",
    "shard_directory",
    "snapshot_target",
    "delta_target",
    "parse_header",
    "read_header",
    "shard_prefix",
    "canonical_state_hash",
]


MAGIC = b"HCRV"
FORMAT_VERSION = 1
KIND_SNAPSHOT = 0x53  # "S"
KIND_DELTA = 0x44  # "D"
#: Hard caps, checked before any decoding. A national shard is ~0.1-0.3 MB.
MAX_SNAPSHOT_BYTES = 64 << 20
MAX_DELTA_BYTES = 16 << 20
MAX_SEQ = 0xFFFFFFFF  # hourly publication for 490,000 years
MAX_COUNT = 0xFFFFFFFF
MAX_UNIVERSE = 0xFFFFFFFFFFFFFFFF  # so serial 2**64 - 1 is never revocable; dense serials never get there
MAX_KID = 32

SNAPSHOT_TAIL = struct.Struct(">IQIB32s")  # seq, universe, count, k, state hash
DELTA_TAIL = struct.Struct(">IIQIB32s")  # from_seq, to_seq, universe, count, k, state hash
_STATE_DOMAIN = b"healthcode revocation state v1\x00"
_LITTLE = sys.byteorder == "little"


# --------------------------------------------------------------------------- target names


def shard_directory(province: str, kid: bytes) -> str:
    """The TUF target directory of a shard: ``provinces/<code>/revocation/<kid-hex>``."""
    return f"provinces/{province}/revocation/{kid.hex()}"


def snapshot_target(province: str, kid: bytes) -> str:
    """The target name of a shard's latest snapshot."""
    return f"{shard_directory(province, kid)}/snapshot.hcrs"


def delta_target(province: str, kid: bytes, from_seq: int) -> str:
    """The target name of the delta that starts at ``from_seq`` (it ends at ``from_seq + 1``)."""
    return f"{shard_directory(province, kid)}/delta-{from_seq:010d}.hcrd"


# --------------------------------------------------------------------------- headers


@dataclass(frozen=True, slots=True)
class FileInfo:
    """The header of a snapshot or delta, parsed but *unverified* (nothing decoded or hashed).

    For a snapshot, ``from_seq`` is None and ``to_seq`` is its sequence number.
    ``count`` is the number of serials coded in the body (the whole set for a
    snapshot, the new ones for a delta); ``state_hash`` is that of the
    resulting state.
    """

    kind: str  # "snapshot" or "delta"
    province: str
    kid: bytes
    from_seq: int | None
    to_seq: int
    universe: int
    count: int
    rice_k: int
    state_hash: bytes
    body_offset: int


def parse_header(data: bytes, kind: int) -> FileInfo:
    cap = MAX_SNAPSHOT_BYTES if kind == KIND_SNAPSHOT else MAX_DELTA_BYTES
    what = "snapshot" if kind == KIND_SNAPSHOT else "delta"
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise RevocationDataError(f"{what} must be bytes")
    if len(data) > cap:
        raise RevocationDataError(f"{what} is larger than the {cap}-byte cap")
    data = bytes(data)
    tail = SNAPSHOT_TAIL if kind == KIND_SNAPSHOT else DELTA_TAIL
    if len(data) < 9 or data[:4] != MAGIC:
        raise RevocationDataError("not a revocation file (bad magic)")
    if data[4] != FORMAT_VERSION:
        raise RevocationDataError(f"unsupported revocation format version {data[4]}")
    if data[5] != kind:
        raise RevocationDataError(f"not a revocation {what}")
    try:
        province = data[6:8].decode("ascii")
    except UnicodeDecodeError:
        province = ""
    if province not in PROVINCES:
        raise RevocationDataError("bad province code")
    kid_length = data[8]
    if not 1 <= kid_length <= MAX_KID:
        raise RevocationDataError(f"kid must be 1 to {MAX_KID} bytes")
    offset = 9 + kid_length
    if len(data) < offset + tail.size:
        raise RevocationDataError(f"truncated {what} header")
    kid = data[9:offset]
    if kind == KIND_SNAPSHOT:
        seq, universe, count, k, state_hash = tail.unpack_from(data, offset)
        from_seq = None
    else:
        from_seq, seq, universe, count, k, state_hash = tail.unpack_from(data, offset)
        if seq <= from_seq:
            raise RevocationDataError("delta must end after it starts (to_seq > from_seq)")
    if universe > MAX_UNIVERSE or count > universe:
        raise RevocationDataError("more serials than the universe holds")
    if k != rice_parameter(universe, count):
        raise RevocationDataError("Rice parameter is not the canonical one for the count and universe")
    return FileInfo(what, province, kid, from_seq, seq, universe, count, k, state_hash, offset + tail.size)


def read_header(data: bytes) -> FileInfo:
    """The *unverified* header of a snapshot or a delta (for sync decisions and diagnostics)."""
    kind = data[5] if isinstance(data, (bytes, bytearray)) and len(data) > 5 else KIND_SNAPSHOT
    return parse_header(data, KIND_DELTA if kind == KIND_DELTA else KIND_SNAPSHOT)


def shard_prefix(kind: int, province: str, kid: bytes) -> bytes:
    return MAGIC + bytes((FORMAT_VERSION, kind)) + province.encode("ascii") + bytes((len(kid),)) + kid


def canonical_state_hash(province: str, kid: bytes, seq: int, universe: int, serials: array[int]) -> bytes:
    """SHA-256 of the canonical state: domain, shard, seq, universe, count, serials.

    Serials are 4-byte little-endian when the universe is at most 2**32, else
    8-byte little-endian; the header fields are big-endian (``docs/revocation.md``).
    """
    digest = hashlib.sha256(_STATE_DOMAIN)
    digest.update(province.encode("ascii") + bytes((len(kid),)) + kid)
    digest.update(struct.pack(">IQI", seq, universe, len(serials)))
    if _LITTLE:
        digest.update(serials)
    else:
        swapped = array(serials.typecode, serials)
        swapped.byteswap()
        digest.update(swapped)
    return digest.digest()
