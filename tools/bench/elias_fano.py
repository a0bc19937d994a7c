"""Elias–Fano coding of sorted serial sets: the alternative the revocation benchmark measures.

The file format uses Golomb–Rice (:mod:`healthcode.golomb_rice`); this coder
lives here, beside the benchmark that compares the two
(``python -m tools.bench revocation``), and reuses the same bulk stream helpers.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from itertools import accumulate, chain, islice, repeat
from operator import and_, lshift, lt, or_, rshift, sub

from healthcode.errors import RevocationDataError
from healthcode.golomb_rice import (
    check_padding,
    decode_unary,
    encode_unary,
    pack_fields,
    to_array,
    typecode,
    unpack_fields,
)

__all__ = ["elias_fano_encode", "elias_fano_decode"]


def _elias_fano_low_bits(universe: int, count: int) -> int:
    return max(0, (universe // count).bit_length() - 1) if count else 0


def elias_fano_encode(serials: Iterable[int], count: int, universe: int) -> bytes:
    """Elias–Fano code of sorted distinct serials: unary high-part increments, then the low bits.

    The measured alternative to :func:`rice_encode` (``docs/revocation.md``);
    the file format does not use it.
    """
    values = serials if isinstance(serials, (list, array)) else list(serials)
    if len(values) != count:
        raise RevocationDataError("serial count does not match")
    if not all(map(lt, values, islice(values, 1, None))):
        raise RevocationDataError("serials must be strictly increasing (sorted, no duplicates)")
    low = _elias_fano_low_bits(universe, count)
    highs = list(map(rshift, values, repeat(low)))
    upper = encode_unary(list(map(sub, highs, chain((0,), highs))))
    return upper + pack_fields(map(and_, values, repeat((1 << low) - 1)), count, low)


def elias_fano_decode(body: bytes, count: int, universe: int) -> array[int]:
    """The serials coded by :func:`elias_fano_encode`; strict and bounded."""
    if count > universe:
        raise RevocationDataError("more serials than the universe holds")
    if count == 0:
        if body:
            raise RevocationDataError("trailing bytes after an empty set")
        return array(typecode(universe))
    low = _elias_fano_low_bits(universe, count)
    split = len(body) - (count * low + 7) // 8
    if split < 1 or split > (count + ((universe - 1) >> low) + 7) // 8:
        raise RevocationDataError("coded body has the wrong length for its count and universe")
    upper, lower = body[:split], body[split:]
    if lower:
        check_padding(lower, count * low)
    highs = accumulate(decode_unary(upper, count))
    lows = unpack_fields(lower, count, low)
    serials = to_array(map(or_, map(lshift, highs, repeat(low)), lows) if low else highs, universe)
    if serials[-1] >= universe:
        raise RevocationDataError("serial out of range of the universe")
    return serials
