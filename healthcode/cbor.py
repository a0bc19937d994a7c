"""A small, strict CBOR (RFC 8949) codec for the code format.

Decoding is restricted on purpose; everything outside this profile is refused
with :class:`CBORError` rather than interpreted:

* definite lengths only (no indefinite-length items, no "break");
* preferred serialization: every argument in its shortest form;
* map keys are integers or text strings, and a key may occur only once;
* text strings must be valid UTF-8;
* tags are kept as :class:`Tag` values, never given meaning (no value sharing,
  no string references, no bignums);
* simple values false, true and null; floats of 16, 32 or 64 bits;
* nesting deeper than ``max_depth`` and containers with more than
  ``max_items`` entries are refused before they are descended into;
* trailing bytes after the top-level item are refused.

Encoding produces core deterministic encoding (RFC 8949 section 4.2.1):
shortest arguments, definite lengths, map keys sorted by their encoded bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["CBORError", "Tag", "dumps", "loads", "decode_item", "DEFAULT_MAX_DEPTH"]

DEFAULT_MAX_DEPTH = 8
DEFAULT_MAX_ITEMS = 64


class CBORError(ValueError):
    """The bytes are not CBOR in the accepted profile."""


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged item, carried through uninterpreted."""

    number: int
    value: Any


_SIMPLE = {20: False, 21: True, 22: None}
_MINIMUM_FOR_AI = {25: 0x100, 26: 0x10000, 27: 0x100000000}  # 24 handled inline


def loads(data: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH, max_items: int = DEFAULT_MAX_ITEMS) -> Any:
    """Decode exactly one CBOR item that spans all of ``data``."""
    if data and 0xA0 <= data[0] < 0xB8 and max_depth >= 1 and data[0] - 0xA0 <= max_items:
        return _loads_small_map(data, max_depth, max_items)
    value, end = decode_item(data, 0, max_depth, max_items)
    if end != len(data):
        raise CBORError(f"{len(data) - end} trailing byte(s)")
    return value


def _loads_small_map(data: bytes, max_depth: int, max_items: int) -> dict[Any, Any]:
    """:func:`loads` for a map of fewer than 24 entries, the shape of every claims set.

    Same profile and errors as :func:`decode_item`; the common small keys and
    values (small integers, 4-byte integers, short strings) are decoded inline
    because this runs on every verification.
    """
    end_of_data = len(data)
    pos = 1
    result: dict[Any, Any] = {}
    try:
        for _ in range(data[0] - 0xA0):
            b = data[pos]
            if b < 0x18:
                key = b
                pos += 1
            elif 0x20 <= b < 0x38:
                key = 0x1F - b
                pos += 1
            else:
                key, pos = decode_item(data, pos, 0, max_items)
                if type(key) is not int and type(key) is not str:
                    raise CBORError("map key must be an integer or text string")
            if key in result:
                raise CBORError(f"duplicate map key {key!r}")
            b = data[pos]
            value: Any
            if b < 0x18:
                value = b
                pos += 1
            elif b == 0x1A:
                end = pos + 5
                if end > end_of_data:
                    raise CBORError("truncated argument")
                value = int.from_bytes(data[pos + 1 : end], "big")
                if value < 0x10000:
                    raise CBORError("argument not in shortest form")
                pos = end
            elif 0x40 <= b < 0x58:
                end = pos + 1 + b - 0x40
                if end > end_of_data:
                    raise CBORError("truncated string")
                value = data[pos + 1 : end]
                pos = end
            elif 0x60 <= b < 0x78:
                end = pos + 1 + b - 0x60
                if end > end_of_data:
                    raise CBORError("truncated string")
                value = data[pos + 1 : end].decode("utf-8")
                pos = end
            else:
                value, pos = decode_item(data, pos, max_depth - 1, max_items)
            result[key] = value
    except IndexError:
        raise CBORError("truncated: item expected") from None
    except UnicodeDecodeError:
        raise CBORError("text string is not valid UTF-8") from None
    if pos != end_of_data:
        raise CBORError(f"{end_of_data - pos} trailing byte(s)")
    return result


def decode_item(data: bytes, pos: int, depth: int, max_items: int = DEFAULT_MAX_ITEMS) -> tuple[Any, int]:
    """Decode one item at ``pos``; return it and the position after it.

    ``depth`` is the nesting still allowed: a container needs depth >= 1.
    """
    try:
        initial = data[pos]
    except IndexError:
        raise CBORError("truncated: item expected") from None
    major = initial >> 5
    ai = initial & 0x1F
    pos += 1
    if ai < 24:
        arg = ai
    elif ai == 24:
        if pos >= len(data):
            raise CBORError("truncated argument")
        arg = data[pos]
        pos += 1
        if arg < 24 and major != 7:
            raise CBORError("argument not in shortest form")
    elif ai < 28:
        size = 1 << (ai - 24)
        end = pos + size
        if end > len(data):
            raise CBORError("truncated argument")
        if major == 7:
            return _decode_float(data, pos, end, ai), end
        arg = int.from_bytes(data[pos:end], "big")
        if arg < _MINIMUM_FOR_AI[ai]:
            raise CBORError("argument not in shortest form")
        pos = end
    elif ai == 31:
        raise CBORError("indefinite length not allowed")
    else:
        raise CBORError("reserved additional information")

    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:
        end = pos + arg
        if end > len(data):
            raise CBORError("truncated string")
        chunk = data[pos:end]
        if major == 2:
            return bytes(chunk), end
        try:
            return chunk.decode("utf-8"), end
        except UnicodeDecodeError:
            raise CBORError("text string is not valid UTF-8") from None
    if major == 4 or major == 5:
        if depth < 1:
            raise CBORError("nesting too deep")
        if arg > max_items:
            raise CBORError("container has too many items")
        if major == 4:
            items = []
            for _ in range(arg):
                item, pos = decode_item(data, pos, depth - 1, max_items)
                items.append(item)
            return items, pos
        result: dict[Any, Any] = {}
        for _ in range(arg):
            key, pos = decode_item(data, pos, 0, max_items)
            if type(key) is not int and type(key) is not str:
                raise CBORError("map key must be an integer or text string")
            if key in result:
                raise CBORError(f"duplicate map key {key!r}")
            result[key], pos = decode_item(data, pos, depth - 1, max_items)
        return result, pos
    if major == 6:
        if depth < 1:
            raise CBORError("nesting too deep")
        value, pos = decode_item(data, pos, depth - 1, max_items)
        return Tag(arg, value), pos
    # major 7 with a one-byte or immediate argument
    if ai == 24:
        raise CBORError("unassigned simple value")
    if arg in _SIMPLE:
        return _SIMPLE[arg], pos
    raise CBORError(f"unsupported simple value {arg}")


def _decode_float(data: bytes, start: int, end: int, ai: int) -> float:
    value: float = struct.unpack(_FLOAT_FORMAT[ai], data[start:end])[0]
    if (ai != 25 or value != value) and _encode_float(value) != data[start - 1 : end]:
        raise CBORError("float not in shortest form")
    return value


_FLOAT_FORMAT = {25: ">e", 26: ">f", 27: ">d"}


def _head(major: int, arg: int) -> bytes:
    if arg < 24:
        return bytes((major << 5 | arg,))
    if arg < 0x100:
        return bytes((major << 5 | 24, arg))
    if arg < 0x10000:
        return bytes((major << 5 | 25,)) + arg.to_bytes(2, "big")
    if arg < 0x100000000:
        return bytes((major << 5 | 26,)) + arg.to_bytes(4, "big")
    if arg < 0x10000000000000000:
        return bytes((major << 5 | 27,)) + arg.to_bytes(8, "big")
    raise CBORError("integer does not fit in 64 bits")


def dumps(value: Any) -> bytes:
    """Encode ``value`` in core deterministic encoding."""
    if value is False:
        return b"\xf4"
    if value is True:
        return b"\xf5"
    if value is None:
        return b"\xf6"
    if isinstance(value, int):
        return _head(0, value) if value >= 0 else _head(1, -1 - value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return _head(2, len(raw)) + raw
    if isinstance(value, str):
        encoded = value.encode("utf-8")
        return _head(3, len(encoded)) + encoded
    if isinstance(value, (list, tuple)):
        return _head(4, len(value)) + b"".join(dumps(v) for v in value)
    if isinstance(value, dict):
        pairs = sorted((dumps(k), dumps(v)) for k, v in value.items())
        return _head(5, len(pairs)) + b"".join(k + v for k, v in pairs)
    if isinstance(value, Tag):
        return _head(6, value.number) + dumps(value.value)
    if isinstance(value, float):
        return _encode_float(value)
    raise CBORError(f"cannot encode {type(value).__name__}")


def _encode_float(value: float) -> bytes:
    """The shortest of half, single and double that holds ``value`` exactly (NaN: f97e00)."""
    if value != value:
        return b"\xf9\x7e\x00"
    for ai, fmt in ((25, ">e"), (26, ">f")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == value:
            return bytes((0xE0 | ai,)) + packed
    return b"\xfb" + struct.pack(">d", value)
