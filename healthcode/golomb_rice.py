"""Golomb–Rice coding of sorted serial sets, split-stream, decoded in bulk.

The coding of the revocation files (``docs/revocation.md``): gap
g_i = x_i - x_(i-1) - 1 is coded as its quotient ``g >> k`` in a unary stream,
then the ``k`` low bits of every gap in a fixed-width stream. Both streams
encode and decode with int and bytes operations (no per-bit Python loop):
see :func:`decode_unary` and :func:`unpack_fields`. Decoding is strict (one
valid byte string per set) and bounded; every problem raises
:class:`~healthcode.errors.RevocationDataError`.

The stream helpers are public for the benchmark's Elias–Fano coder
(``tools/bench/elias_fano.py``), the measured alternative.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Iterable, Iterator
from itertools import accumulate, chain, islice, repeat
from operator import add, and_, lshift, rshift, sub

from .errors import RevocationDataError

__all__ = [
    "U32",
    "U64",
    "rice_parameter",
    "rice_encode",
    "rice_decode",
    "encode_unary",
    "decode_unary",
    "pack_fields",
    "unpack_fields",
    "check_padding",
    "typecode",
    "to_array",
]

# 4- and 8-byte unsigned array typecodes of this platform ('I' and 'Q' nearly everywhere).
U32 = next(code for code in "IL" if array(code).itemsize == 4)
U64 = "Q"
_SLOTS = tuple((8 * array(code).itemsize, code) for code in ("B", "H", U32, U64))
_LITTLE = sys.byteorder == "little"
_UNARY_CHUNK = 1 << 16  # bytes of unary stream turned into a bit string at a time


# --------------------------------------------------------------------------- bit streams
#
# Both streams are little-endian integers: bit j of a stream is bit (j % 8) of
# byte j // 8. The unary stream codes q as q zero bits then a one bit; the
# fixed-width stream puts value i in bits [i*w, (i+1)*w). Unused high bits of
# the last byte are zero, and a unary stream ends in the byte of its last one.


def encode_unary(values: list[int]) -> bytes:
    if not values:
        return b""
    bits = "1".join(map("0".__mul__, values)) + "1"
    return int(bits[::-1], 2).to_bytes((len(bits) + 7) // 8, "little")


def decode_unary(data: bytes, count: int) -> Iterator[int]:
    """The ``count`` values of a unary stream, lazily; the count and the padding are checked first."""
    if int.from_bytes(data, "little").bit_count() != count:
        raise RevocationDataError("unary stream does not hold the header's count of values")
    if data and not data[-1]:
        raise RevocationDataError("unary stream has trailing bytes")
    return chain.from_iterable(_unary_runs(data))


def _unary_runs(data: bytes) -> Iterator[Iterable[int]]:
    # One Python step per chunk, never per value: the values come out of str.split and len.
    carry = 0  # zeros seen since the last one
    for start in range(0, len(data), _UNARY_CHUNK):
        # The sentinel byte keeps leading zeros; [:2:-1] drops "0b1" and puts bit 0 first.
        bits = bin(int.from_bytes(data[start : start + _UNARY_CHUNK] + b"\x01", "little"))[:2:-1]
        runs = bits.split("1")
        if len(runs) == 1:
            carry += len(bits)
            continue
        yield (carry + len(runs[0]),)
        yield map(len, islice(runs, 1, len(runs) - 1))
        carry = len(runs[-1])


def _slot(width: int) -> tuple[int, str]:
    for bits, code in _SLOTS:
        if width <= bits:
            return bits, code
    raise RevocationDataError("field width over 64 bits")


def _mask(block_bits: int, low_bits: int, blocks: int) -> int:
    """``blocks`` repetitions of a ``block_bits``-wide block whose low ``low_bits`` bits are set."""
    return int.from_bytes(((1 << low_bits) - 1).to_bytes(block_bits // 8, "little") * blocks, "little")


def pack_fields(values: Iterable[int], count: int, width: int) -> bytes:
    """``count`` values below ``2**width`` as a fixed-width stream of ``ceil(count*width/8)`` bytes.

    Values go into 8/16/32/64-bit array slots; then, eight values at a time,
    three mask-and-shift steps over one big integer squeeze each slot to
    ``width`` bits, and strided byte slices gather the groups.
    """
    if count == 0 or width == 0:
        return b""
    slot, code = _slot(width)
    groups = (count + 7) // 8
    slots = array(code, values)
    if not _LITTLE:
        slots.byteswap()
    raw = slots.tobytes() + bytes((groups * 8 - count) * (slot // 8))
    size = (count * width + 7) // 8
    if width == slot:
        return raw[:size]
    x = int.from_bytes(raw, "little")
    for j in (1, 2, 4):  # pairs of j-slot units become 2j-slot units holding 2j packed fields
        mask = _mask(2 * j * slot, j * width, groups * 8 // (2 * j))
        x = (x & mask) | (((x >> (j * slot)) & mask) << (j * width))
    spread = x.to_bytes(groups * slot, "little")  # each group: `slot` bytes, low `width` bytes used
    packed = bytearray(groups * width)
    for b in range(width):
        packed[b::width] = spread[b::slot]
    return bytes(packed[:size])


def unpack_fields(data: bytes, count: int, width: int, *, plus_one: bool = False) -> Iterable[int]:
    """The inverse of :func:`pack_fields` (``data`` has exactly the right length).

    With ``plus_one`` every value comes out one larger: one big-integer
    addition when the slot has a spare bit, which saves the Rice decoder a
    pass over the gaps.
    """
    if width == 0:
        return (b"\x01" if plus_one else b"\x00") * count
    slot, code = _slot(width)
    groups = (count + 7) // 8
    padded = data + bytes(groups * width - len(data))
    if width == slot:
        raw = padded
    else:
        spread = bytearray(groups * slot)
        for b in range(width):
            spread[b::slot] = padded[b::width]
        x = int.from_bytes(spread, "little")
        for j in (4, 2, 1):
            mask = _mask(2 * j * slot, j * width, groups * 8 // (2 * j))
            x = (x & mask) | (((x >> (j * width)) & mask) << (j * slot))
        if plus_one:
            x += int.from_bytes(b"\x01".ljust(slot // 8, b"\x00") * (groups * 8), "little")
            plus_one = False
        raw = x.to_bytes(groups * slot, "little")
    if slot == 8:
        values: bytes | array[int] = raw[:count]
    else:
        values = array(code)
        values.frombytes(raw)
        if not _LITTLE:
            values.byteswap()
        del values[count:]
    return map(add, values, repeat(1)) if plus_one else values


def check_padding(data: bytes, bits: int) -> None:
    if bits % 8 and data[-1] >> (bits % 8):
        raise RevocationDataError("non-zero padding bits")


def typecode(universe: int) -> str:
    return U32 if universe <= 1 << 32 else U64


# --------------------------------------------------------------------------- Golomb-Rice


def rice_parameter(universe: int, count: int) -> int:
    """The canonical Rice parameter k for ``count`` serials among ``universe``.

    Kiely's rule for geometric gaps with p = count/universe,
    k = max(0, 1 + floor(log2(ln(phi) / p))), in integers so every platform
    picks the same k (the decoder requires it: one encoding per state).
    """
    if count == 0:
        return 0
    return (universe * 4812118 // (count * 10_000_000)).bit_length()  # ln(phi) = 0.4812118...


def rice_encode(serials: Iterable[int], count: int, k: int) -> bytes:
    """Golomb–Rice code of sorted distinct serials, split-stream.

    Gap g_i = x_i - x_(i-1) - 1 (with x_(-1) = -1) is coded as its quotient
    ``g >> k`` in a unary stream followed, after all quotients, by the ``k``
    low bits of every gap in a fixed-width stream. The bits are those of
    interleaved Rice codes, regrouped so both streams decode in bulk.
    """
    values = serials if isinstance(serials, (list, array)) else list(serials)
    gaps = list(map(sub, map(sub, values, chain((-1,), values)), repeat(1)))
    if len(gaps) != count:
        raise RevocationDataError("serial count does not match")
    if gaps and min(gaps) < 0:
        raise RevocationDataError("serials must be strictly increasing (sorted, no duplicates)")
    quotients = list(map(rshift, gaps, repeat(k))) if k else gaps
    remainders = map(and_, gaps, repeat((1 << k) - 1))
    return encode_unary(quotients) + pack_fields(remainders, count, k)


def rice_decode(body: bytes, count: int, universe: int, k: int) -> array[int]:
    """The sorted serials coded by :func:`rice_encode`; strict and bounded.

    Raises :class:`RevocationDataError` unless ``body`` is exactly the
    canonical coding of ``count`` distinct serials below ``universe``.
    """
    if count > universe:
        raise RevocationDataError("more serials than the universe holds")
    if count == 0:
        if body:
            raise RevocationDataError("trailing bytes after an empty set")
        return array(typecode(universe))
    remainder_bits = count * k
    split = len(body) - (remainder_bits + 7) // 8
    # every gap sums to at most universe - count, so the quotients sum to at most that >> k
    if split < 1 or split > (count + ((universe - count) >> k) + 7) // 8:
        raise RevocationDataError("coded body has the wrong length for its count and universe")
    unary, fixed = body[:split], body[split:]
    if fixed:
        check_padding(fixed, remainder_bits)
    quotients = decode_unary(unary, count)
    # x_i = sum over j <= i of (g_j + 1), minus 1: accumulate from -1 over (q << k) + r + 1
    gaps_plus_one = unpack_fields(fixed, count, k, plus_one=True)
    steps = map(add, map(lshift, quotients, repeat(k)) if k else quotients, gaps_plus_one)
    serials = to_array(islice(accumulate(steps, initial=-1), 1, None), universe)
    if serials[-1] >= universe:
        raise RevocationDataError("serial out of range of the universe")
    return serials


def to_array(values: Iterable[int], universe: int) -> array[int]:
    try:
        return array(typecode(universe), values)
    except OverflowError:  # over 2**32 (or 2**64): out of any universe of that array
        raise RevocationDataError("serial out of range of the universe") from None
