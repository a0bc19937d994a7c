"""Render a health code as a QR symbol: PNG and SVG.

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

import datetime as _dt
import functools
import io
import math
import os
import pathlib
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
from healthcode.model import PROVINCES, PROVINCES_EN, province_label
from shellkit.times import beijing

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
    "SHEET_HEADING",
    "SHEET_INSTRUCTIONS",
    "PROVINCE_EN",
    "MAX_PER_PAGE",
    "SheetError",
    "SheetCode",
    "province_label",
    "find_cjk_font",
    "render_sheet_pdf",
    "render_sheet_png",
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


class RenderError(ValueError):
    """The text or an option cannot be rendered (bad charset, too long, bad scale...)."""


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
    return _png_bytes(sym, scale, border)


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


def _png_bytes(sym: QrSymbol, scale: int, border: int) -> bytes:
    """Encode ``sym`` as a 1-bit grayscale PNG (0 = black, 1 = white).

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


# --- printed sheets ----------------------------------------------------------
#
# A printed code is a slip a resident keeps and shows at a hospital front desk:
# a heading, the province (Chinese and English), the QR large with its quiet
# zone, the masked document number (never a name, never the full number), the
# expiry in Beijing time with the zone named, and short instructions in Chinese
# and English. Slips are laid out on A4 pages with dashed cut lines between
# them. One layout (millimetres, baselines) feeds two backends: a PDF whose
# text is real text (fpdf2, the CJK font embedded as a subset, so it can be
# searched and copied) and PNG pages (Pillow); both draw the QR module by module
# from :func:`qr_matrix`, so a page scans back to exactly the codes on it.

SHEET_HEADING = "电子健康码 Electronic Health Code"
#: What a resident reads under the code (Chinese, then English).
SHEET_INSTRUCTIONS = (
    "就医时请将此码连同本人有效身份证件一并出示给医院前台。请保持干燥、平整；如遗失，请到发码窗口申请补打。",
    "Show this code at the hospital front desk together with your identity document. "
    "Keep it dry and flat; if it is lost, ask for a reprint where it was issued.",
)
#: English names of the provinces (one table, in the core).
PROVINCE_EN = PROVINCES_EN
#: Fonts with both Chinese and Latin glyphs, first found wins (Debian: fonts-wqy-microhei, fonts-noto-cjk).
CJK_FONTS = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
)
#: Slips a page: 1-3 in one column, 4-6 in two.
MAX_PER_PAGE = 6

_A4 = (210.0, 297.0)
_MM_PER_PT = 25.4 / 72
_PAD = 6.0  # mm between a cut line and the slip's content
_QUIET = 4  # quiet-zone modules around the QR (ISO/IEC 18004 asks for 4)


class SheetError(RenderError):
    """A sheet cannot be made (no font with Chinese glyphs, bad layout options)."""


@dataclass(frozen=True)
class SheetCode:
    """What one printed slip shows: the code, its province, the masked number, its expiry, a label.

    ``expires_at`` must be timezone-aware (it is printed in Beijing time);
    ``label`` is a short handle for the front desk, e.g. ``"No. 12"`` (the batch row).
    """

    code_text: str
    province: str
    masked_number: str
    expires_at: _dt.datetime
    label: str = ""

    def __post_init__(self) -> None:
        if self.expires_at.tzinfo is None:
            raise SheetError("expires_at must be timezone-aware")
        if self.province not in PROVINCES:
            raise SheetError(f"unknown province code {self.province!r}")


def find_cjk_font() -> pathlib.Path:
    """The first installed font of :data:`CJK_FONTS`; :class:`SheetError` naming the package if none."""
    for path in CJK_FONTS:
        if os.path.exists(path):
            return pathlib.Path(path)
    raise SheetError("no font with Chinese glyphs found for the printed sheets: "
                     "install fonts-wqy-microhei (Debian/Ubuntu: apt-get install fonts-wqy-microhei)")


@dataclass(frozen=True)
class _Text:
    x: float  # mm from the left edge
    y: float  # mm from the top edge: the baseline
    pt: float
    text: str


@dataclass(frozen=True)
class _Qr:
    x: float  # top-left corner of the box that holds the symbol and its quiet zone
    y: float
    size: float
    symbol: QrSymbol


@dataclass(frozen=True)
class _Cut:
    x1: float
    y1: float
    x2: float
    y2: float


@functools.lru_cache(maxsize=4)
def _metrics_font(path: str):
    from PIL import ImageFont

    return ImageFont.truetype(path, 1000, index=0)


@functools.lru_cache(maxsize=1024)
def _width(font_path: str, text: str, pt: float) -> float:
    """Width of ``text`` in mm at ``pt`` points (the font's own advance widths)."""
    return _metrics_font(font_path).getlength(text) / 1000 * pt * _MM_PER_PT


_TOKEN_RE = re.compile(r"[\u2e80-\u9fff\u3000-\u303f\uff00-\uffef][\u3000-\u303f\uff0c\uff1b\uff1a\uff01\uff1f]*"
                       r"|[^\s\u2e80-\u9fff\u3000-\u303f\uff00-\uffef]+\s*|\s+")


@functools.lru_cache(maxsize=64)
def _wrap(font_path: str, text: str, pt: float, width: float) -> tuple[str, ...]:
    """Greedy line breaking: Chinese between any two characters (keeping punctuation with its
    character), Latin at spaces."""
    lines, line = [], ""
    for token in _TOKEN_RE.findall(text):
        if line and _width(font_path, (line + token).rstrip(), pt) > width:
            lines.append(line.rstrip())
            line = token.lstrip()
        else:
            line += token
    if line.strip():
        lines.append(line.rstrip())
    return tuple(lines)


def _grid(per_page: int) -> tuple[int, int]:
    """(columns, rows) for ``per_page`` slips on an A4 page."""
    if type(per_page) is not int or not 1 <= per_page <= MAX_PER_PAGE:
        raise SheetError(f"per_page must be an int in 1..{MAX_PER_PAGE}, not {per_page!r}")
    columns = 1 if per_page <= 3 else 2
    return columns, math.ceil(per_page / columns)


def _slip(code: SheetCode, x0: float, y0: float, w: float, h: float, font_path: str) -> list[object]:
    """The drawing operations of one slip in the cell (x0, y0, w, h), its content centred in the cell."""
    k = min(w / 105.0, h / 99.0, 1.5)  # 1 on a six-slip page; a lone slip grows at most by half
    line = lambda pt: pt * _MM_PER_PT * 1.3  # noqa: E731
    column = min(w - 2 * _PAD, 93.0 * k)  # text column width
    left = x0 + (w - column) / 2
    heading_pt, province_pt, body_pt, small_pt = 11 * k, 9 * k, 8 * k, 6.8 * k
    below = [(f"证件号码 Document no. {code.masked_number}", body_pt),
             (f"有效期至 Valid until {beijing(code.expires_at)}", body_pt)]
    instructions = [(text, small_pt) for part in SHEET_INSTRUCTIONS
                    for text in _wrap(font_path, part, small_pt, column)]
    top_block = heading_pt * _MM_PER_PT + line(province_pt) + 1.0 * k
    bottom_block = sum(line(pt) for _, pt in below) + 1.5 * k + sum(line(pt) for _, pt in instructions)
    size = min(column, h - 2 * _PAD - top_block - bottom_block, 60.0 * k)
    if size < 25.0:
        raise SheetError("the slip is too small for a scannable QR; use fewer codes a page")
    y = y0 + (h - (top_block + size + bottom_block)) / 2  # centred vertically
    ops: list[object] = []

    def centred(text: str, pt: float, baseline: float) -> None:
        ops.append(_Text(x0 + (w - _width(font_path, text, pt)) / 2, baseline, pt, text))

    y += heading_pt * _MM_PER_PT
    centred(SHEET_HEADING, heading_pt, y)
    if code.label:
        ops.append(_Text(x0 + w - _PAD - _width(font_path, code.label, small_pt), y0 + _PAD + small_pt * _MM_PER_PT,
                         small_pt, code.label))
    y += line(province_pt)
    centred(province_label(code.province), province_pt, y)
    y += 1.0 * k
    ops.append(_Qr(x0 + (w - size) / 2, y, size, qr_matrix(code.code_text)))
    y += size
    for text, pt in below:
        y += line(pt)
        centred(text, pt, y)
    y += 1.5 * k
    for text, pt in instructions:
        y += line(pt)
        ops.append(_Text(left, y, pt, text))
    # Dashed cut lines on the slip's right and bottom edges, where they are not the page's edge.
    if x0 + w < _A4[0] - 0.1:
        ops.append(_Cut(x0 + w, y0, x0 + w, y0 + h))
    if y0 + h < _A4[1] - 0.1:
        ops.append(_Cut(x0, y0 + h, x0 + w, y0 + h))
    return ops


def _pages(codes: Sequence[SheetCode], per_page: int, font_path: str) -> list[list[object]]:
    columns, rows = _grid(per_page)
    w, h = _A4[0] / columns, _A4[1] / rows
    pages = []
    for start in range(0, len(codes), per_page):
        ops: list[object] = []
        for slot, code in enumerate(codes[start:start + per_page]):
            ops += _slip(code, (slot % columns) * w, (slot // columns) * h, w, h, font_path)
        pages.append(ops)
    return pages


def render_sheet_pdf(codes: Sequence[SheetCode], *, per_page: int = 6, font_path: os.PathLike | str | None = None,
                     title: str = "电子健康码 Electronic Health Codes") -> bytes:
    """A4 pages of slips as one PDF with a real text layer (the font subset embedded).

    The QR is drawn as vector rectangles, one per run of dark modules, so it
    prints sharp at any resolution. Raises :class:`SheetError` / :class:`RenderError`.
    """
    from fpdf import FPDF

    font = str(font_path or find_cjk_font())
    pages = _pages(list(codes), per_page, font)
    pdf = FPDF(unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_margins(0, 0, 0)
    pdf.set_title(title)
    pdf.set_creator("healthcode-issuer")
    pdf.add_font("cjk", fname=font, collection_font_number=0)
    for ops in pages:
        pdf.add_page()
        pdf.set_text_color(0)
        for op in ops:
            if isinstance(op, _Text):
                pdf.set_font("cjk", size=op.pt)
                pdf.text(op.x, op.y, op.text)
            elif isinstance(op, _Qr):
                _pdf_qr(pdf, op)
            elif isinstance(op, _Cut):
                pdf.set_draw_color(90)
                pdf.set_line_width(0.2)
                pdf.set_dash_pattern(dash=2, gap=1.5)
                pdf.line(op.x1, op.y1, op.x2, op.y2)
                pdf.set_dash_pattern()
    return bytes(pdf.output())


def _pdf_qr(pdf, op: _Qr) -> None:
    """The dark modules as filled rectangles in one content-stream block (one ``re`` per run).

    fpdf2's ``rect()`` costs ~30 us a call (600 a code); the same operators
    written at once cost ~1 ms a code. ``_out`` is fpdf2's content-stream
    writer (stable across 2.x, which pyproject pins); the sheet tests rasterise
    the PDF and scan every code back, so a change there cannot go unnoticed.
    """
    symbol = op.symbol
    module = op.size / (symbol.size + 2 * _QUIET) * pdf.k  # points
    left = (op.x + _QUIET * op.size / (symbol.size + 2 * _QUIET)) * pdf.k
    top = (pdf.h - op.y - _QUIET * op.size / (symbol.size + 2 * _QUIET)) * pdf.k  # PDF y grows upwards
    ops = ["q 0 g"]
    strings = symbol.row_strings()
    r = 0
    while r < len(strings):  # runs of identical rows become one taller rectangle
        end = r + 1
        while end < len(strings) and strings[end] == strings[r]:
            end += 1
        for run in _DARK_RUN_RE.finditer(strings[r]):
            # A hair of overlap keeps viewers from drawing seams between modules.
            ops.append(f"{left + run.start() * module:.3f} {top - end * module:.3f} "
                       f"{(run.end() - run.start()) * module + 0.02:.3f} {(end - r) * module + 0.02:.3f} re")
        r = end
    ops.append("f Q")
    pdf._out("\n".join(ops))


def render_sheet_png(codes: Sequence[SheetCode], *, per_page: int = 6, dpi: int = 200,
                     font_path: os.PathLike | str | None = None) -> list[bytes]:
    """The same pages as :func:`render_sheet_pdf`, one grayscale PNG each (``dpi`` 100-600).

    Each QR module is a whole number of pixels (the symbol is centred in its box).
    """
    from PIL import Image, ImageDraw, ImageFont

    if type(dpi) is not int or not 100 <= dpi <= 600:
        raise SheetError(f"dpi must be an int in 100..600, not {dpi!r}")
    font = str(font_path or find_cjk_font())
    px = dpi / 25.4
    fonts: dict[int, ImageFont.FreeTypeFont] = {}
    out = []
    for ops in _pages(list(codes), per_page, font):
        page = Image.new("L", (round(_A4[0] * px), round(_A4[1] * px)), 255)
        draw = ImageDraw.Draw(page)
        for op in ops:
            if isinstance(op, _Text):
                size = max(1, round(op.pt * _MM_PER_PT * px))
                if size not in fonts:
                    fonts[size] = ImageFont.truetype(font, size, index=0)
                draw.text((op.x * px, op.y * px), op.text, fill=0, font=fonts[size], anchor="ls")
            elif isinstance(op, _Qr):
                sym = op.symbol
                modules = sym.size + 2 * _QUIET
                scale = max(1, int(op.size * px) // modules)
                image = Image.open(io.BytesIO(_png_bytes(sym, scale, _QUIET))).convert("L")
                offset = (int(op.size * px) - image.width) // 2
                page.paste(image, (round(op.x * px) + offset, round(op.y * px) + offset))
            elif isinstance(op, _Cut):
                x1, y1, x2, y2 = (v * px for v in (op.x1, op.y1, op.x2, op.y2))
                length = math.hypot(x2 - x1, y2 - y1)
                dash, gap = 2 * px, 1.5 * px
                t = 0.0
                while t < length:
                    e = min(length, t + dash)
                    draw.line([(x1 + (x2 - x1) * t / length, y1 + (y2 - y1) * t / length),
                               (x1 + (x2 - x1) * e / length, y1 + (y2 - y1) * e / length)], fill=90, width=1)
                    t = e + gap
        buffer = io.BytesIO()
        page.save(buffer, "PNG", optimize=False, dpi=(dpi, dpi))
        out.append(buffer.getvalue())
    return out
