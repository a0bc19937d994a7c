"""Printed sheets of codes (issuer/sheets.py; issue 11, item 14): layout, quiet zones, text, and a scan back."""

from __future__ import annotations

import datetime as dt

import pytest

from verifier.images import decode_image
from issuer import sheets
from issuer.sheets import (
    MAX_PER_PAGE,
    SHEET_HEADING,
    SheetCode,
    SheetError,
    find_cjk_font,
    province_label,
    render_sheet_png,
)
from verifier.images import decode_image  # noqa: F811 - the imported fixture
from .qr_support import CODE, make_code


EXPIRES = dt.datetime(2026, 12, 14, 4, 17, tzinfo=dt.timezone.utc)  # 12:17 in Beijing


def _slips(count: int) -> list[SheetCode]:
    return [SheetCode(make_code(1000 + i), "33", f"330{'*' * 11}{1000 + i}", EXPIRES, label=f"No. {i + 1}")
            for i in range(count)]


def _layout(count: int, per_page: int):
    return sheets._pages(_slips(count), per_page, str(find_cjk_font()))


@pytest.mark.parametrize("per_page", range(1, MAX_PER_PAGE + 1))
def test_sheet_layout_keeps_text_and_cut_lines_out_of_every_quiet_zone(per_page: int) -> None:
    for ops in _layout(per_page, per_page):
        qrs = [op for op in ops if isinstance(op, sheets._Qr)]
        assert len(qrs) == per_page
        font = str(find_cjk_font())
        for text in (op for op in ops if isinstance(op, sheets._Text)):
            width = sheets._width(font, text.text, text.pt)
            top = text.y - text.pt * 25.4 / 72  # the tallest glyph is below one em
            assert 0 <= text.x and text.x + width <= 210 and 0 <= top and text.y <= 297
            for qr in qrs:  # the box holds the symbol and its 4-module quiet zone
                apart = (text.x + width <= qr.x or text.x >= qr.x + qr.size or text.y + 1 <= qr.y
                         or top >= qr.y + qr.size)
                assert apart, f"{text.text!r} overlaps a QR box"
        for cut in (op for op in ops if isinstance(op, sheets._Cut)):
            for qr in qrs:
                if cut.x1 == cut.x2:
                    assert not qr.x < cut.x1 < qr.x + qr.size or not (cut.y1 < qr.y + qr.size and qr.y < cut.y2)
                else:
                    assert not qr.y < cut.y1 < qr.y + qr.size or not (cut.x1 < qr.x + qr.size and qr.x < cut.x2)
        module = min(qr.size / (qr.symbol.size + 8) for qr in qrs)
        assert module >= 0.5  # mm a module: scannable from paper with a phone


@pytest.mark.parametrize("count, per_page, cuts", [
    (6, 6, 3 + 4),  # 2x3 grid: the left column cuts on its right (3), the upper two rows below (4)
    (1, 4, 2),  # a lone reprint slip on an A4 page: cut right and below
    (1, 1, 0),  # a whole page: nothing to cut
    (3, 3, 2),  # one column of three: two horizontal lines
], ids=["six-a-page", "reprint-slip", "full-page", "one-column"])
def test_dashed_cut_lines_between_slips(count: int, per_page: int, cuts: int) -> None:
    (ops,) = _layout(count, per_page)
    assert sum(isinstance(op, sheets._Cut) for op in ops) == cuts


def test_slip_text_names_province_time_and_instructions_but_no_identity() -> None:
    (ops,) = _layout(1, 6)
    text = "\n".join(op.text for op in ops if isinstance(op, sheets._Text))
    assert SHEET_HEADING in text and "浙江 Zhejiang (33)" in text
    assert "有效期至 Valid until 2026-12-14 12:17 北京时间 (CST)" in text
    assert "证件号码 Document no. 330***********1000" in text and "No. 1" in text
    assert "身份证件" in text and "hospital front desk" in text and "reprint" in text
    assert "EHC1:" not in text  # the code text itself is only in the QR


def test_wrapping_breaks_chinese_anywhere_and_english_at_spaces() -> None:
    font = str(find_cjk_font())
    zh = sheets._wrap(font, "就医时请将此码连同本人有效身份证件一并出示给医院前台。", 7, 30)
    assert len(zh) > 1 and "".join(zh) == "就医时请将此码连同本人有效身份证件一并出示给医院前台。"
    assert not any(line.startswith("。") for line in zh)
    en = sheets._wrap(font, "Show this code at the hospital front desk together with your document.", 7, 40)
    assert len(en) > 1 and " ".join(en) == "Show this code at the hospital front desk together with your document."


def test_png_sheet_scans_back_to_every_code() -> None:
    slips = _slips(6)
    (page,) = render_sheet_png(slips, per_page=6, dpi=150)
    assert sorted(decode_image(page)) == sorted(s.code_text for s in slips)


@pytest.mark.parametrize("make, message", [
    (lambda: SheetCode(CODE, "33", "330***1234", EXPIRES.replace(tzinfo=None)), "timezone-aware"),
    (lambda: SheetCode(CODE, "99", "330***1234", EXPIRES), "province"),
    (lambda: render_sheet_png(_slips(1), per_page=0), "per_page"),
    (lambda: render_sheet_png(_slips(1), per_page=7), "per_page"),
    (lambda: render_sheet_png(_slips(1), dpi=50), "dpi"),
], ids=["naive-expiry", "unknown-province", "zero-per-page", "too-many-per-page", "low-dpi"])
def test_bad_sheet_input_raises_sheet_error(make, message: str) -> None:
    with pytest.raises(SheetError, match=message):
        make()


def test_missing_cjk_font_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sheets, "CJK_FONTS", ("/nonexistent/font.ttc",))
    with pytest.raises(SheetError, match="fonts-wqy-microhei"):
        find_cjk_font()


def test_province_labels_read_chinese_then_english() -> None:
    assert province_label("33") == "浙江 Zhejiang (33)"
    assert province_label("81") == "香港 Hong Kong (81)"
    from healthcode.model import PROVINCES, PROVINCES_EN

    assert set(PROVINCES_EN) == set(PROVINCES)  # every province has its English name
