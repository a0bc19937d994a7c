"""Base45 (RFC 9285), strict, with a decoder fast enough for the verify hot path.

The decoder never loops in Python over the input. It maps characters to digits
with ``bytes.translate`` and reads all digits as one little-endian integer, so
every 3-character group (c, d, e) sits in its own 24-bit slot as
c + 256*d + 65536*e. Masks and shifts pull out the three digit planes and one
multiply-add turns every slot into c + 45*d + 2025*e at once; the slot is wide
enough that no carry crosses groups, and a group whose value exceeds 0xFFFF
(invalid per RFC 9285) shows up as a non-zero high byte and is rejected.
"""

from __future__ import annotations

__all__ = ["ALPHABET", "b45encode", "b45decode", "Base45Error"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"

_INVALID = 0xFF
_digits = bytearray([_INVALID]) * 256
for _i, _c in enumerate(ALPHABET):
    _digits[ord(_c)] = _i
_DIGIT_OF = bytes(_digits)
del _digits


def _low_bytes(groups: int) -> int:
    """0x0000FF repeated ``groups`` times: selects one byte of every 3-byte slot."""
    return int.from_bytes(b"\xff\x00\x00" * groups, "little")


_LOW_BYTES = [_low_bytes(n) for n in range(400)]


class Base45Error(ValueError):
    """The text is not valid Base45."""


def b45encode(data: bytes) -> str:
    """Encode bytes as Base45 text (RFC 9285 section 4).

    Like the decoder, without a Python loop over the input: every 2-byte
    group n sits in its own 48-bit slot of one big integer, and ``n // 45`` is
    taken in all slots at once as ``(n * 93207) >> 22`` (exact for n < 2**16;
    the slot is wide enough that no product crosses into the next one). The
    three digits n % 45, n // 45 % 45, n // 2025 are then packed one per byte
    and mapped to the alphabet with ``bytes.translate``.
    """
    data = bytes(data)
    length = len(data)
    groups = length // 2
    text = b""
    if groups:
        slots = bytearray(6 * groups)
        slots[0::6] = data[1 : 2 * groups : 2]  # low byte of each big-endian pair
        slots[1::6] = data[0 : 2 * groups : 2]
        n = int.from_bytes(slots, "little")
        mask = _SLOT16[groups] if groups < len(_SLOT16) else _slot16(groups)
        q1 = ((n * 93207) >> 22) & mask  # n // 45, per slot
        q2 = ((q1 * 93207) >> 22) & mask  # n // 2025, per slot
        digits = (n - 45 * q1) | ((q1 - 45 * q2) << 8) | (q2 << 16)
        wide = digits.to_bytes(6 * groups, "little")
        packed = bytearray(3 * groups)
        packed[0::3] = wide[0::6]
        packed[1::3] = wide[1::6]
        packed[2::3] = wide[2::6]
        text = bytes(packed)
    if length % 2:
        last = data[-1]
        text += bytes((last % 45, last // 45))
    return text.translate(_CHAR_OF).decode("ascii")


def _slot16(groups: int) -> int:
    """0xFFFF in the low 16 bits of every 48-bit slot."""
    return int.from_bytes(b"\xff\xff\x00\x00\x00\x00" * groups, "little")


_SLOT16 = [_slot16(n) for n in range(400)]
_CHAR_OF = bytes(ALPHABET.encode("ascii") + bytes(256 - len(ALPHABET)))


def b45decode(text: str) -> bytes:
    """Decode Base45 text; raise :class:`Base45Error` on any invalid input.

    Invalid: a character outside the alphabet, a length of 1 mod 3, or a
    group whose value does not fit its byte count.
    """
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise Base45Error("non-ASCII character") from None
    digits = raw.translate(_DIGIT_OF)
    if _INVALID in digits:
        raise Base45Error("character outside the Base45 alphabet")
    length = len(digits)
    tail = length % 3
    if tail == 1:
        raise Base45Error("length is 1 modulo 3")
    full = length - tail
    groups = full // 3
    out = b""
    if groups:
        # Little-endian: group j occupies bits 24j.. as c + 256*d + 65536*e.
        packed = int.from_bytes(digits[:full] if tail else digits, "little")
        mask = _LOW_BYTES[groups] if groups < len(_LOW_BYTES) else _low_bytes(groups)
        value = (
            (packed & mask)
            + 45 * ((packed >> 8) & mask)
            + 2025 * ((packed >> 16) & mask)
        )
        if value & (mask << 16):
            raise Base45Error("a 3-character group exceeds 0xFFFF")
        wide = value.to_bytes(3 * groups, "little")  # per group: low, high, 0
        pairs = bytearray(2 * groups)
        pairs[0::2] = wide[1::3]
        pairs[1::2] = wide[0::3]
        out = bytes(pairs)
    if tail:
        value = digits[full] + 45 * digits[full + 1]
        if value > 0xFF:
            raise Base45Error("a 2-character group exceeds 0xFF")
        out += bytes((value,))
    return out
