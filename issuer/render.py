"""Render a health code as a QR symbol: PNG and SVG (printed sheets of codes: :mod:`issuer.sheets`).

Contract
--------
* Input is the code text (``"EHC1:" + Base45``). Only the QR alphanumeric
  charset (``0-9 A-Z space $ % * + - . / :``) is accepted, at most
  :data:`MAX_TEXT_LENGTH` characters; anything else raises :class:`RenderError`.
* The whole text is encoded as **one alphanumeric segment** (5.5 bits a
  character; byte mode would take 8), at the requested ECC level (``"M"`` by
  default), in the **smallest version** that holds it. A typical ES256 code
  (206-221 characters) is version 8 at ECC M.
* Output is deterministic: the same text and options give the same bytes.
* :func:`render_png` writes a 1-bit grayscale PNG itself (``zlib`` + ``struct``);
  :func:`render_svg` writes one white ``rect`` and one black ``path``.

How it is fast (qrcode's defaults take ~11-15 ms a code; this takes ~2-3 ms)
---------------------------------------------------------------------------
``qrcode`` is used for what it does well and cheaply: the segment bits, the
Reed-Solomon codewords, the function patterns and the zig-zag placement of the
data, all done **once** with mask 0 (``QRCode(mask_pattern=0).make()``).
What qrcode does slowly is choosing the mask: it re-places the data 8 times
and scores each try with a module-by-module pure-Python penalty. Instead:

1. Rows are Python ints (bit ``size-1-c`` is column ``c``, 1 = dark).
2. The data-module region of the version is computed with a few row ORs
   (finders + separators + format areas, timing, alignment, version info).
3. Each of the 8 masks is periodic (rows repeat every 12, columns every 6),
   so a mask row is a 6-character pattern repeated; mask *k* is then obtained
   from the mask-0 symbol by one XOR per row, restricted to the data region,
   plus the 15 format-information bits written for *k*.
4. Each candidate is scored with the ISO/IEC 18004 penalty (N1..N4) using
   C-speed primitives on whole lines instead of per-module Python loops:
   columns come from strided slices of the flattened symbol string; N1 (runs
   of 5+) and N2 (2x2 blocks) are XOR/shift/AND on row and column ints counted
   with ``int.bit_count``; N3 (1:1:3:1:1 finder look-alikes) is ``str.count``;
   N4 (dark ratio) is exact integer arithmetic. About 0.1 ms a mask, where
   qrcode spends ~0.8 ms re-placing and scoring each one.
5. The lowest score wins (ties: lowest mask number, as in qrcode).

The penalty is computed on the *final* symbol of each mask, format
information included, as the standard says; qrcode scores symbols with the
format area blank, so the two may pick a different (equally valid) mask.
:func:`penalty_score` equals ``qrcode.util.lost_point`` on the same symbol;
the tests check that, and check every mask against qrcode's own rendering.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from qrcode import QRCode, constants
from qrcode.util import (
    BCH_type_info,
    BIT_LIMIT_TABLE,
    MODE_ALPHA_NUM,
    QRData,
    pattern_position,
)

from healthcode.codec import MAX_TEXT_LENGTH
from issuer.errors import IssuerError

__all__ = [
    "ALPHANUMERIC",
    "ECC_LEVELS",
    "MAX_TEXT_LENGTH",
    "MAX_SCALE",
    "MAX_BORDER",
    "RenderError",
    "QrSymbol",
    "qr_matrix",
    "qr_version",
    "penalty_score",
    "render_png",
    "render_svg",
    "symbol_png",
]

#: The QR alphanumeric-mode charset; Base45 uses exactly this.
ALPHANUMERIC = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
#: ECC level name -> qrcode constant (also the 2 ECC bits of the format info).
ECC_LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "L": constants.ERROR_CORRECT_L,
        "M": constants.ERROR_CORRECT_M,
        "Q": constants.ERROR_CORRECT_Q,
        "H": constants.ERROR_CORRECT_H,
    }
)
#: Pixels per module and quiet-zone modules are capped so that one call
#: cannot be made to allocate an arbitrarily large image.
MAX_SCALE = 64
MAX_BORDER = 16

_ALNUM_RE = re.compile(r"[0-9A-Z $%*+\-./:]+")
_DARK_RUN_RE = re.compile("1+")
# N3: dark-light-dark(3)-light-dark with 4 light modules on one side. Neither
# pattern overlaps itself, so str.count (non-overlapping) counts every one.
_FINDER_LIKE = ("10111010000", "00001011101")

# The 8 mask conditions of ISO/IEC 18004 (i = row, j = column), in integer
# arithmetic. Every one depends only on (i mod 12, j mod 6).
_MASK_FUNCS = (
    lambda i, j: (i + j) % 2 == 0,
    lambda i, j: i % 2 == 0,
    lambda i, j: j % 3 == 0,
    lambda i, j: (i + j) % 3 == 0,
    lambda i, j: (i // 2 + j // 3) % 2 == 0,
    lambda i, j: (i * j) % 2 + (i * j) % 3 == 0,
    lambda i, j: ((i * j) % 2 + (i * j) % 3) % 2 == 0,
    lambda i, j: ((i * j) % 3 + (i + j) % 2) % 2 == 0,
)
_BOOL_TO_DIGIT = bytes.maketrans(b"\x00\x01", b"01")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class RenderError(IssuerError, ValueError):
    """The text or an option cannot be rendered (bad charset, too long, bad scale...).

    Under the issuer's root; still a :class:`ValueError` for callers that catch that.
    """

    reason = "render"


@dataclass(frozen=True, slots=True)
class QrSymbol:
    """A finished QR symbol, without its quiet zone.

    ``rows[r]`` is row ``r`` as an int: bit ``size - 1 - c`` is column ``c``,
    1 is a dark module.
    """

    version: int
    ecc: str
    mask: int
    rows: tuple[int, ...]

    @property
    def size(self) -> int:
        """Modules per side: ``4 * version + 17``."""
        return len(self.rows)

    def is_dark(self, row: int, col: int) -> bool:
        """Whether the module at (``row``, ``col``) is dark."""
        if not (0 <= row < self.size and 0 <= col < self.size):
            raise IndexError("module outside the symbol")
        return bool(self.rows[row] >> (self.size - 1 - col) & 1)

    def row_strings(self) -> list[str]:
        """Rows as ``"0"``/``"1"`` strings, ``"1"`` dark."""
        return [f"{r:0{self.size}b}" for r in self.rows]

    def to_lists(self) -> list[list[bool]]:
        """A fresh ``list[list[bool]]`` (``True`` dark), row-major."""
        return [[ch == "1" for ch in s] for s in self.row_strings()]


def qr_matrix(text: str, *, ecc: str = "M", mask: int | None = None) -> QrSymbol:
    """Build the QR symbol for ``text``: one alphanumeric segment, smallest version.

    ``mask=None`` (the default) picks the mask with the lowest
    :func:`penalty_score`; 0..7 forces one (for tests and diagnostics).
    Raises :class:`RenderError` for text outside the alphanumeric charset, empty
    or longer than :data:`MAX_TEXT_LENGTH`, an unknown ``ecc`` or a bad ``mask``.
    """
    level = _check(text, ecc)
    if mask is not None and (type(mask) is not int or not 0 <= mask <= 7):
        raise RenderError(f"mask must be None or an int in 0..7, not {mask!r}")
    qr = _qrcode(text, level, _fit_version(len(text), level))
    qr.make(fit=False)
    size = qr.modules_count
    base = [int(bytes(row).translate(_BOOL_TO_DIGIT), 2) for row in qr.modules]
    data = _data_region(qr.version, size)
    templates = [_mask_rows(k, size) for k in range(8)]
    fmt_region = _format_rows(size, (1 << 15) - 1)
    keep = [~f for f in fmt_region]
    # The mask-0 symbol with mask 0 taken off the data modules: the raw placement.
    m0 = templates[0]
    raw = [b ^ (m0[i % 12] & d) for i, (b, d) in enumerate(zip(base, data))]

    best: tuple[int, int, list[int]] | None = None
    for k in range(8) if mask is None else (mask,):
        mk = templates[k]
        fmt = _format_rows(size, BCH_type_info(level << 3 | k))
        rows = [
            ((r ^ (mk[i % 12] & d)) & kp) | f
            for i, (r, d, kp, f) in enumerate(zip(raw, data, keep, fmt))
        ]
        score = penalty_score(rows, size) if mask is None else 0
        if best is None or score < best[0]:
            best = (score, k, rows)
    assert best is not None
    return QrSymbol(version=qr.version, ecc=ecc, mask=best[1], rows=tuple(best[2]))


def qr_version(text: str, *, ecc: str = "M") -> int:
    """The QR version :func:`qr_matrix` uses for ``text`` (1..40); same errors."""
    return _fit_version(len(text), _check(text, ecc))


def penalty_score(rows: Sequence[int], size: int) -> int:
    """ISO/IEC 18004 mask penalty N1+N2+N3+N4 of a symbol given as row ints.

    Rows use the :class:`QrSymbol` layout. N3 looks only inside the symbol
    (not into the quiet zone), as ``qrcode.util.lost_point`` does, so the two agree.
    """
    strs = [f"{r:0{size}b}" for r in rows]
    flat = "".join(strs)
    cols = [flat[j::size] for j in range(size)]  # a strided slice is a C-speed transpose
    # N3 on strings; "|" keeps a match from spanning two lines.
    n3 = 40 * sum(t.count(p) for t in ("|".join(strs), "|".join(cols)) for p in _FINDER_LIKE)
    low = (1 << (size - 1)) - 1  # the size-1 pairs of neighbouring modules
    # N1: a run of L >= 5 equal modules scores L - 2 = (L - 4) + 2, i.e. one point
    # per window of 5 equal modules plus two per run; with e = "equal to the
    # next module", w marks the window starts and each run of ones in w is one run.
    n1 = 0
    for line in (*rows, *(int(c, 2) for c in cols)):
        e = ~(line ^ line >> 1) & low
        w = e & e >> 1 & e >> 2 & e >> 3
        n1 += w.bit_count() + 2 * (w & ~(w >> 1)).bit_count()
    # N2: 2x2 blocks of one colour; v marks vertical differences.
    blocks = 0
    for a, b in zip(rows, rows[1:]):
        v = a ^ b
        blocks += (~(v | v >> 1 | a ^ a >> 1) & low).bit_count()
    dark = sum(r.bit_count() for r in rows)
    total = size * size
    n4 = 10 * (abs(20 * dark - 10 * total) // total)  # exact floor(|pct - 50| / 5)
    return n1 + 3 * blocks + n3 + n4


def render_png(text: str, *, scale: int = 4, border: int = 4, ecc: str = "M") -> bytes:
    """The code as a 1-bit grayscale PNG; ``scale`` px a module, ``border`` modules of quiet zone.

    Black modules on white, no metadata. Raises :class:`RenderError` as
    :func:`qr_matrix` does, or for ``scale`` outside 1..:data:`MAX_SCALE` or
    ``border`` outside 0..:data:`MAX_BORDER`.
    """
    _check_geometry(scale, border)
    sym = qr_matrix(text, ecc=ecc)
    return symbol_png(sym, scale, border)


def render_svg(text: str, *, scale: int = 4, border: int = 4, ecc: str = "M") -> str:
    """The code as a compact SVG document (no XML declaration).

    The ``viewBox`` is in modules (symbol plus ``border`` on each side); ``width``
    and ``height`` are ``scale`` px a module. A white ``rect`` fills the
    background (so the code stays readable on dark pages) and a single
    ``path`` of one rectangle per horizontal run draws the dark modules.
    Errors as :func:`render_png`.
    """
    _check_geometry(scale, border)
    sym = qr_matrix(text, ecc=ecc)
    dim = sym.size + 2 * border
    parts = []
    for y, line in enumerate(sym.row_strings(), start=border):
        for run in _DARK_RUN_RE.finditer(line):
            w = run.end() - run.start()
            parts.append(f"M{run.start() + border} {y}h{w}v1h-{w}z")
    px = dim * scale
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{px}" height="{px}" '
        f'viewBox="0 0 {dim} {dim}" shape-rendering="crispEdges">'
        f'<rect width="{dim}" height="{dim}" fill="#fff"/>'
        f'<path fill="#000" d="{"".join(parts)}"/></svg>'
    )


# --- internals -------------------------------------------------------------


def _check(text: str, ecc: str) -> int:
    """Validate the inputs; return qrcode's ECC constant."""
    if not isinstance(text, str):
        raise RenderError(f"text must be str, not {type(text).__name__}")
    if not text:
        raise RenderError("text is empty")
    if len(text) > MAX_TEXT_LENGTH:
        raise RenderError(f"text is {len(text)} characters; at most {MAX_TEXT_LENGTH}")
    if not _ALNUM_RE.fullmatch(text):
        bad = next(ch for ch in text if ch not in ALPHANUMERIC)
        raise RenderError(
            f"character {bad!r} is outside the QR alphanumeric charset "
            "(0-9 A-Z space $ % * + - . / :)"
        )
    try:
        return ECC_LEVELS[ecc]
    except (KeyError, TypeError):
        raise RenderError(f"ecc must be one of L, M, Q, H, not {ecc!r}") from None


def _check_geometry(scale: int, border: int) -> None:
    limits = (("scale", scale, 1, MAX_SCALE), ("border", border, 0, MAX_BORDER))
    for name, value, low, high in limits:
        if type(value) is not int or not low <= value <= high:
            raise RenderError(f"{name} must be an int in {low}..{high}, not {value!r}")


def _fit_version(length: int, level: int) -> int:
    """Smallest version whose data capacity at ``level`` holds ``length`` alphanumeric characters.

    Same answer as ``QRCode.best_fit`` for one alphanumeric segment, by
    arithmetic instead of writing the bits out (which costs ~0.4 ms).
    """
    payload = 11 * (length // 2) + 6 * (length % 2)  # 2 characters per 11 bits
    limits = BIT_LIMIT_TABLE[level]
    for version in range(1, 41):
        count_bits = 9 if version < 10 else 11 if version < 27 else 13
        if 4 + count_bits + payload <= limits[version]:  # 4 = mode indicator
            return version
    raise RenderError("text does not fit in a QR symbol")


def _qrcode(text: str, level: int, version: int) -> QRCode:
    """A qrcode object holding ``text`` as a single alphanumeric segment, mask 0."""
    qr = QRCode(version=version, error_correction=level, border=0, mask_pattern=0)
    # An explicit QRData: add_data() would run qrcode's segment optimiser,
    # which may split the text or fall back to byte mode.
    qr.add_data(QRData(text.encode("ascii"), mode=MODE_ALPHA_NUM))
    return qr


def _span(size: int, first: int, last: int) -> int:
    """Row-int bits for columns ``first..last`` inclusive."""
    return ((1 << (last - first + 1)) - 1) << (size - 1 - last)


def _data_region(version: int, size: int) -> list[int]:
    """Per row, the bits of the modules that carry data (not function patterns)."""
    func = [0] * size
    left, right = _span(size, 0, 8), _span(size, size - 8, size - 1)
    # Finders with their separators and the format-information areas.
    for r in range(9):
        func[r] |= left | right
    for r in range(size - 8, size):
        func[r] |= left
    # Timing patterns.
    func[6] = (1 << size) - 1
    col6 = _span(size, 6, 6)
    func = [f | col6 for f in func]
    # Alignment patterns, except the three that would sit on a finder.
    pos = pattern_position(version)
    if pos:
        first, last = pos[0], pos[-1]
        for r in pos:
            for c in pos:
                if (r, c) in ((first, first), (first, last), (last, first)):
                    continue
                bits = _span(size, c - 2, c + 2)
                for rr in range(r - 2, r + 3):
                    func[rr] |= bits
    # Version information (version 7 and up).
    if version >= 7:
        for r in range(6):
            func[r] |= _span(size, size - 11, size - 9)
        for r in range(size - 11, size - 8):
            func[r] |= _span(size, 0, 5)
    full = (1 << size) - 1
    return [full & ~f for f in func]


def _mask_rows(k: int, size: int) -> list[int]:
    """Mask ``k`` as 12 row ints; row ``i`` of the symbol uses entry ``i % 12``."""
    cond = _MASK_FUNCS[k]
    reps = size // 6 + 1
    out = []
    for i in range(12):
        period = "".join("1" if cond(i, j) else "0" for j in range(6))
        out.append(int((period * reps)[:size], 2))
    return out


def _format_rows(size: int, bits: int) -> list[int]:
    """Per row, the 15 format-information bits placed as ISO/IEC 18004 (and qrcode) do.

    Bit ``i`` of ``bits`` goes once near the top-left finder and once split
    between the other two. ``bits = 0x7FFF`` gives the format area itself.
    """
    rows = [0] * size
    for i in range(15):
        if not bits >> i & 1:
            continue
        # Column 8, top to bottom.
        r = i if i < 6 else i + 1 if i < 8 else size - 15 + i
        rows[r] |= 1 << (size - 1 - 8)
        # Row 8, right to left.
        c = size - 1 - i if i < 8 else 7 if i == 8 else 14 - i
        rows[8] |= 1 << (size - 1 - c)
    return rows


def symbol_png(sym: QrSymbol, scale: int, border: int) -> bytes:
    """Encode ``sym`` as a 1-bit grayscale PNG (0 = black, 1 = white), ``scale`` pixels a module.

    Each distinct scanline is written once with filter None; the copies that
    follow use filter Up with all-zero bytes ("same as the line above"), which
    zlib squeezes to nothing at level 6. (Level 9 gains a few bytes and costs
    up to ~10x the time on large scales.)
    """
    width = (sym.size + 2 * border) * scale
    row_bytes = (width + 7) // 8
    edge = "1" * (border * scale)
    pad = "1" * (-width % 8)  # bits past the last pixel: ignored by decoders
    widen = str.maketrans({"0": "1" * scale, "1": "0" * scale})  # dark -> black (0)
    again = b"\x02" + bytes(row_bytes)
    quiet = [b"\x00" + b"\xff" * row_bytes, again * (border * scale - 1)] if border else []
    lines = list(quiet)
    for s in sym.row_strings():
        bits = edge + s.translate(widen) + edge + pad
        lines.append(b"\x00" + int(bits, 2).to_bytes(row_bytes, "big"))
        lines.append(again * (scale - 1))
    lines += quiet
    ihdr = struct.pack(">IIBBBBB", width, width, 1, 0, 0, 0, 0)  # 1-bit gray, no interlace
    return b"".join(
        (
            _PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr),
            _chunk(b"IDAT", zlib.compress(b"".join(lines), 6)),
            _chunk(b"IEND", b""),
        )
    )


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
