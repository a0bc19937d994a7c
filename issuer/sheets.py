"""Printed sheets of health codes: A4 pages of slips, as PDF (real text) or PNG pages.

A printed code is a slip a resident keeps and shows at a hospital front desk:
a heading, the province (Chinese and English), the QR large with its quiet
zone, the masked document number (never a name, never the full number), the
expiry in Beijing time with the zone named, and short instructions in Chinese
and English. Slips are laid out on A4 pages with dashed cut lines between
them. One layout (millimetres, baselines) feeds two backends: a PDF whose
text is real text (fpdf2, the CJK font embedded as a subset, so it can be
searched and copied) and PNG pages (Pillow); both draw the QR module by module
from :func:`issuer.render.qr_matrix`, so a page scans back to exactly the codes on it.
"""

from __future__ import annotations

import datetime as _dt
import functools
import io
import math
import os
import pathlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from healthcode.model import PROVINCES, province_label
from issuer.render import QrSymbol, RenderError, qr_matrix, symbol_png
from shellkit.times import beijing

__all__ = [
    "SHEET_HEADING",
    "SHEET_INSTRUCTIONS",
    "CJK_FONTS",
    "MAX_PER_PAGE",
    "SheetError",
    "SheetCode",
    "province_label",
    "find_cjk_font",
    "render_sheet_pdf",
    "render_sheet_png",
]

_DARK_RUN_RE = re.compile("1+")

SHEET_HEADING = "电子健康码 Electronic Health Code"
#: What a resident reads under the code (Chinese, then English).
SHEET_INSTRUCTIONS = (
    "就医时请将此码连同本人有效身份证件一并出示给医院前台。请保持干燥、平整；如遗失，请到发码窗口申请补打。",
    "Show this code at the hospital front desk together with your identity document. "
    "Keep it dry and flat; if it is lost, ask for a reprint where it was issued.",
)
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

    reason = "sheet"


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
                image = Image.open(io.BytesIO(symbol_png(sym, scale, _QUIET))).convert("L")
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
