"""The issuer's QR output: PNG pixels are the modules, SVG is valid and decodes, bad render input is refused."""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET

import pytest
from PIL import Image, ImageDraw

from issuer.render import (
    ALPHANUMERIC,
    RenderError,
    qr_matrix,
    render_png,
    render_svg,
)
from verifier.images import decode_image
from .qr_support import CODE, params, png_bytes


# --- PNG ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scale", "border"), [(1, 0), (3, 4), (4, 4), (7, 2), (10, 4)], ids=lambda v: str(v)
)
def test_png_pixels_are_the_modules(scale: int, border: int) -> None:
    symbol = qr_matrix(CODE)
    data = render_png(CODE, scale=scale, border=border)
    im = Image.open(io.BytesIO(data))
    assert (im.format, im.mode) == ("PNG", "1")
    side = (symbol.size + 2 * border) * scale
    assert im.size == (side, side)
    px = im.convert("L").load()
    for r in range(-border, symbol.size + border):
        for c in range(-border, symbol.size + border):
            dark = 0 <= r < symbol.size and 0 <= c < symbol.size and symbol.is_dark(r, c)
            top, left = (r + border) * scale, (c + border) * scale
            # A module's first and last pixels: catches both shifts and bleed.
            for y, x in ((top, left), (top + scale - 1, left + scale - 1)):
                assert px[x, y] == (0 if dark else 255), (r, c)


def test_png_is_deterministic_and_small() -> None:
    first = render_png(CODE)
    assert first == render_png(CODE)
    assert first.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(first) < 1500


# --- SVG ------------------------------------------------------------------------

SVG_NS = "{http://www.w3.org/2000/svg}"
RUN = re.compile(r"M(\d+) (\d+)h(\d+)v1h-(\d+)z")


def rasterise_svg(svg: str) -> tuple[int, int, set[tuple[int, int]]]:
    """Parse the issuer's SVG: (viewBox side, pixel width, dark (row, col) cells).

    A minimal rasteriser for the one path grammar the issuer writes; anything
    else in ``d`` fails the test.
    """
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg"
    x0, y0, w, h = map(int, root.attrib["viewBox"].split())
    assert (x0, y0) == (0, 0) and w == h
    assert root.attrib["width"] == root.attrib["height"]
    (rect,) = root.findall(f"{SVG_NS}rect")
    assert [rect.attrib[k] for k in ("width", "height", "fill")] == [str(w), str(w), "#fff"]
    (path,) = root.findall(f"{SVG_NS}path")
    d = path.attrib["d"]
    dark: set[tuple[int, int]] = set()
    pos = 0
    for m in RUN.finditer(d):
        assert m.start() == pos, f"unexpected path data at {pos}: {d[pos:pos + 20]!r}"
        pos = m.end()
        x, y, run, back = map(int, m.groups())
        assert run == back
        dark.update((y, x + i) for i in range(run))
    assert pos == len(d)
    return w, int(root.attrib["width"]), dark


@pytest.mark.parametrize(("scale", "border"), [(4, 4), (1, 0), (10, 2)], ids=lambda v: str(v))
def test_svg_is_valid_xml_with_the_expected_modules(scale: int, border: int) -> None:
    symbol = qr_matrix(CODE)
    side, width, dark = rasterise_svg(render_svg(CODE, scale=scale, border=border))
    assert side == symbol.size + 2 * border == 49 + 2 * border
    assert width == side * scale
    expected = {
        (r + border, c + border)
        for r in range(symbol.size)
        for c in range(symbol.size)
        if symbol.is_dark(r, c)
    }
    assert dark == expected


def test_svg_rasterised_decodes() -> None:
    side, _, dark = rasterise_svg(render_svg(CODE))
    scale = 4
    im = Image.new("L", (side * scale,) * 2, 255)
    draw = ImageDraw.Draw(im)
    for r, c in dark:
        draw.rectangle([c * scale, r * scale, (c + 1) * scale - 1, (r + 1) * scale - 1], fill=0)
    assert decode_image(png_bytes(im)) == [CODE]


# --- render input validation ------------------------------------------------------

BAD_RENDER_INPUT = [
    ("lowercase", dict(text="ehc1:abc")),
    ("non-ascii", dict(text="EHC1:É")),
    ("newline", dict(text="EHC1:\nA")),
    ("empty", dict(text="")),
    ("too-long", dict(text="A" * 1025)),
    ("bytes", dict(text=b"EHC1:")),
    ("unknown-ecc", dict(text="EHC1:", ecc="X")),
    ("lowercase-ecc", dict(text="EHC1:", ecc="m")),
    ("scale-0", dict(text="EHC1:", scale=0)),
    ("scale-65", dict(text="EHC1:", scale=65)),
    ("scale-float", dict(text="EHC1:", scale=2.5)),
    ("scale-bool", dict(text="EHC1:", scale=True)),
    ("border-negative", dict(text="EHC1:", border=-1)),
    ("border-17", dict(text="EHC1:", border=17)),
]


@pytest.mark.parametrize("renderer", [render_png, render_svg], ids=["png", "svg"])
@pytest.mark.parametrize("kwargs", params(BAD_RENDER_INPUT))
def test_bad_render_input_raises_render_error(renderer, kwargs: dict) -> None:
    kwargs = dict(kwargs)
    text = kwargs.pop("text")
    with pytest.raises(RenderError):
        renderer(text, **kwargs)
    assert issubclass(RenderError, ValueError)


@pytest.mark.parametrize("mask", [-1, 8, True, "0", 2.0], ids=repr)
def test_bad_mask_raises_render_error(mask) -> None:
    with pytest.raises(RenderError):
        qr_matrix("EHC1:", mask=mask)


def test_every_alphanumeric_character_is_accepted() -> None:
    assert decode_image(render_png("EHC1:" + ALPHANUMERIC)) == ["EHC1:" + ALPHANUMERIC]
