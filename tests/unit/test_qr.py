"""QR round trips: issuer.render draws real images, verifier.images reads them back.

Every image test renders a code, damages the image the way a phone camera,
a printer or a screenshot would, encodes it as PNG or JPEG bytes and asserts
that ``decode_image`` returns exactly the code text.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable

import pytest
import qrcode
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from qrcode.util import MODE_ALPHA_NUM, QRData, lost_point

from healthcode import (
    Algorithm,
    CodeClaims,
    SoftwareSigner,
    decode_unverified,
    main_index_id_from_bytes,
    sign_code,
    signing_key_from_private_bytes,
)
from issuer import render
from issuer.render import (
    ALPHANUMERIC,
    ECC_LEVELS,
    RenderError,
    penalty_score,
    qr_matrix,
    qr_version,
    render_png,
    render_svg,
)
from verifier import images
from verifier.images import ImageDecodeError, ImageTooLarge, decode_image

NOW = dt.datetime(2026, 11, 22, tzinfo=dt.timezone.utc)


def make_code(serial: int = 123456) -> str:
    """A real, reproducible ES256 code (RFC 6979 nonces, fixed key and subject)."""
    key = signing_key_from_private_bytes(Algorithm.ES256, bytes(range(1, 33)), deterministic=True)
    claims = CodeClaims(
        province="33",
        subject=main_index_id_from_bytes(bytes(range(16))),
        serial=serial,
        issued_at=NOW,
        expires_at=NOW + dt.timedelta(days=7),
    )
    return sign_code(claims, SoftwareSigner(key))


CODE = make_code()  # 209 characters


def params(table) -> list:
    """``(id, *values)`` rows as pytest params with readable ids."""
    return [pytest.param(*row[1:], id=row[0]) for row in table]


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(im: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def qr_image(scale: int = 4, text: str = CODE, **kw) -> Image.Image:
    """The issuer's PNG, opened as an 8-bit grayscale image."""
    return Image.open(io.BytesIO(render_png(text, scale=scale, **kw))).convert("L")


def recolour(im: Image.Image, dark, light, mode: str = "L") -> Image.Image:
    """Black modules -> ``dark``, white -> ``light`` (grey levels or RGB tuples)."""
    out = Image.new(mode, im.size, light)
    out.paste(Image.new(mode, im.size, dark), mask=ImageOps.invert(im))
    return out


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    """Reproducible sensor-like noise: uniform grey 64..191."""
    raw = random.Random(seed).randbytes(size[0] * size[1])
    return Image.frombytes("L", size, raw).point(lambda v: 64 + v // 2)


def noisy_photo(code: Image.Image, *, angle: float, seed: int) -> Image.Image:
    """``code`` placed on a 1200x900 cluttered, noisy grey scene, rotated a little."""
    rnd = random.Random(seed)
    scene = noise((1200, 900), seed)
    draw = ImageDraw.Draw(scene)
    for _ in range(60):  # clutter: boxes and lines of random tone
        x, y = rnd.randrange(1200), rnd.randrange(900)
        w, h = rnd.randrange(10, 200), rnd.randrange(10, 200)
        if rnd.random() < 0.5:
            draw.rectangle([x, y, x + w, y + h], fill=rnd.randrange(256))
        else:
            draw.line([x, y, x + w, y + h], fill=rnd.randrange(256), width=rnd.randrange(1, 6))
    card = code.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    scene.paste(card, (350, 180))
    return scene.filter(ImageFilter.GaussianBlur(0.8))


def rotated(angle: float) -> Callable[[], bytes]:
    return lambda: png_bytes(
        qr_image().rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
    )


def resized(factor: float, method: Image.Resampling) -> Callable[[], bytes]:
    def make() -> bytes:
        im = qr_image()
        size = round(im.width * factor)
        return png_bytes(im.resize((size, size), method))

    return make


def blurred(radius: float, scale: int) -> Callable[[], bytes]:
    return lambda: png_bytes(qr_image(scale).filter(ImageFilter.GaussianBlur(radius)))


def alpha_on_transparent() -> bytes:
    """Black modules on a fully transparent background (as some web exports do)."""
    im = qr_image()
    rgba = Image.new("RGBA", im.size, (0, 0, 0, 0))
    rgba.putalpha(ImageOps.invert(im))
    return png_bytes(rgba)


def sixteen_bit() -> bytes:
    """The code as a 16-bit grayscale PNG, modules at 1/4 and paper at 15/16 of full scale.

    Grey levels matter: clipping 16-bit samples to 8 bits would turn both to white.
    """
    im = qr_image().convert("I").point(lambda v: 16384 + v * (61440 - 16384) / 255)
    return png_bytes(im.convert("I;16"))


# (id, make the encoded image). Comments mark the cases that only pass
# thanks to a fallback pass (measured with zbar 0.23).
IMAGE_CASES: list[tuple[str, Callable[[], bytes]]] = [
    ("plain-x4", lambda: render_png(CODE)),
    ("x1", lambda: render_png(CODE, scale=1)),
    ("x2", lambda: render_png(CODE, scale=2)),
    ("x3-border1", lambda: render_png(CODE, scale=3, border=1)),
    ("x5", lambda: render_png(CODE, scale=5)),
    ("x8", lambda: render_png(CODE, scale=8)),
    ("resize-0.6-bilinear", resized(0.6, Image.Resampling.BILINEAR)),
    ("resize-0.35-box", resized(0.35, Image.Resampling.BOX)),  # upscale fallback
    ("resize-1.37-bicubic", resized(1.37, Image.Resampling.BICUBIC)),
    ("resize-2.5-lanczos", resized(2.5, Image.Resampling.LANCZOS)),
    ("rotate-7", rotated(7)),
    ("rotate-15", rotated(15)),
    ("rotate-33", rotated(33)),
    ("rotate-45", rotated(45)),
    ("rotate-90", rotated(90)),
    ("rotate-180", rotated(180)),
    ("rotate-270", rotated(270)),
    ("blur-1-x4", blurred(1, 4)),
    ("blur-1.5-x4", blurred(1.5, 4)),
    ("blur-2-x4", blurred(2, 4)),  # unsharp fallback
    ("blur-2-x6", blurred(2, 6)),
    ("blur-1-x2", blurred(1, 2)),  # upscale + unsharp fallback
    ("grey-100-on-160", lambda: png_bytes(recolour(qr_image(), 100, 160))),
    ("grey-60-on-90", lambda: png_bytes(recolour(qr_image(), 60, 90))),
    ("grey-128-on-134", lambda: png_bytes(recolour(qr_image(), 128, 134))),  # autocontrast
    (
        "navy-on-beige-rgb",
        lambda: png_bytes(recolour(qr_image(), (20, 30, 90), (235, 225, 200), "RGB")),
    ),
    ("light-on-dark", lambda: png_bytes(ImageOps.invert(qr_image()))),  # invert fallback
    ("jpeg-q50", lambda: jpeg_bytes(qr_image(), 50)),
    ("jpeg-q40", lambda: jpeg_bytes(qr_image(), 40)),
    ("jpeg-q30", lambda: jpeg_bytes(qr_image(), 30)),
    ("jpeg-q30-x2", lambda: jpeg_bytes(qr_image(2), 30)),
    (
        "jpeg-q35-rotate-20-blur-1",
        lambda: jpeg_bytes(
            qr_image()
            .rotate(20, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255)
            .filter(ImageFilter.GaussianBlur(1)),
            35,
        ),
    ),
    ("photo-png", lambda: png_bytes(noisy_photo(qr_image(), angle=0, seed=1))),
    (
        "photo-jpeg-q60-rotate-12",
        lambda: jpeg_bytes(noisy_photo(qr_image(3), angle=12, seed=2), 60),
    ),
    ("rgba-transparent-background", alpha_on_transparent),
    ("png-16-bit-grey", sixteen_bit),
    ("png-palette", lambda: png_bytes(qr_image().convert("P"))),
    ("png-1-bit-from-pillow", lambda: png_bytes(qr_image().convert("1"))),
]


@pytest.mark.parametrize("make", params(IMAGE_CASES))
def test_image_round_trip(make: Callable[[], bytes]) -> None:
    assert decode_image(make()) == [CODE]


# --- the symbol -----------------------------------------------------------------


@pytest.mark.parametrize(
    "serial", [1, 255, 65535, 123456, 2**32, 2**64 - 1], ids=lambda s: f"serial-{s}"
)
def test_realistic_es256_code_is_version_8_at_ecc_m(serial: int) -> None:
    text = make_code(serial)
    assert 206 <= len(text) <= 221  # 8-byte kid, 64-byte signature
    assert qr_version(text) == 8
    assert qr_matrix(text).size == 49
    assert decode_image(render_png(text)) == [text]


def test_the_sample_code_is_a_209_character_code() -> None:
    assert len(CODE) == 209
    assert decode_unverified(CODE).kid  # well-formed, not a made-up string


# Alphanumeric capacities (characters) from the ISO/IEC 18004 tables:
# the last length that fits the version, and one more needs the next version.
CAPACITY = [
    ("M", 1, 20),
    ("M", 7, 178),
    ("M", 8, 221),
    ("M", 9, 262),
    ("M", 10, 311),
    ("L", 8, 279),
    ("Q", 8, 157),
    ("H", 8, 122),
    ("L", 10, 395),
    ("H", 10, 174),
]


@pytest.mark.parametrize(
    ("ecc", "version", "chars"),
    CAPACITY,
    ids=[f"{e}-v{v}-{n}chars" for e, v, n in CAPACITY],
)
def test_version_is_the_smallest_that_fits_one_alphanumeric_segment(
    ecc: str, version: int, chars: int
) -> None:
    # Byte mode would need far more: 221 bytes at M is version 10, not 8.
    assert qr_version("A" * chars, ecc=ecc) == version
    assert qr_version("A" * (chars + 1), ecc=ecc) == version + 1


def test_longest_allowed_text_renders_and_decodes() -> None:
    rnd = random.Random(5)
    text = "EHC1:" + "".join(rnd.choice(ALPHANUMERIC) for _ in range(1018)) + "Z"
    assert len(text) == render.MAX_TEXT_LENGTH == 1024
    assert qr_version(text) == 21
    assert decode_image(render_png(text, scale=3)) == [text]


def qrcode_reference(text: str, ecc: str, mask: int) -> list[list[bool]]:
    """qrcode's own symbol for one explicit alphanumeric segment and a fixed mask."""
    qr = qrcode.QRCode(error_correction=ECC_LEVELS[ecc], border=0, mask_pattern=mask)
    qr.add_data(QRData(text.encode(), mode=MODE_ALPHA_NUM))
    qr.make()
    return qr.modules


SYMBOL_CASES = [
    ("v1-L", "HELLO WORLD", "L"),
    ("v2-H", "EHC1:6BFOXN*TS0BI$ZD", "H"),
    ("v7-version-info", "A1 $%*+-./:" * 12, "M"),
    ("v8-sample-code", CODE, "M"),
    ("v14-Q", "Z9" * 200, "Q"),
]


@pytest.mark.parametrize(("text", "ecc"), params(SYMBOL_CASES))
@pytest.mark.parametrize("mask", range(8), ids=lambda m: f"mask-{m}")
def test_every_mask_matches_qrcode_and_penalty_matches_lost_point(
    text: str, ecc: str, mask: int
) -> None:
    symbol = qr_matrix(text, ecc=ecc, mask=mask)
    reference = qrcode_reference(text, ecc, mask)
    assert symbol.to_lists() == reference
    assert penalty_score(symbol.rows, symbol.size) == lost_point(reference)


@pytest.mark.parametrize(("text", "ecc"), params(SYMBOL_CASES))
def test_chosen_mask_has_the_lowest_penalty(text: str, ecc: str) -> None:
    symbol = qr_matrix(text, ecc=ecc)
    scores = [
        penalty_score(qr_matrix(text, ecc=ecc, mask=m).rows, symbol.size) for m in range(8)
    ]
    assert symbol.mask == scores.index(min(scores))
    assert symbol.version == qr_version(text, ecc=ecc)


def test_mask_choice_never_runs_qrcodes_slow_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("qrcode's per-module mask search was used")

    monkeypatch.setattr(qrcode.QRCode, "best_mask_pattern", forbidden)
    monkeypatch.setattr(qrcode.util, "lost_point", forbidden)
    assert decode_image(render_png(CODE)) == [CODE]


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


# --- decode_image: inputs and limits ----------------------------------------------


def test_decodes_from_str_and_pathlike(tmp_path) -> None:
    path = tmp_path / "code.png"
    path.write_bytes(render_png(CODE))
    assert decode_image(path) == [CODE]
    assert decode_image(str(path)) == [CODE]
    assert decode_image(bytearray(path.read_bytes())) == [CODE]


def test_two_codes_in_one_image_and_duplicates_once() -> None:
    other = make_code(serial=7)
    a, b = qr_image(), qr_image(text=other)
    canvas = Image.new("L", (a.width + b.width + a.width, a.height), 255)
    canvas.paste(a, (0, 0))
    canvas.paste(b, (a.width, 0))
    canvas.paste(a, (a.width + b.width, 0))  # the first code again
    found = decode_image(png_bytes(canvas))
    assert sorted(found) == sorted([CODE, other])


def test_no_code_gives_empty_list_within_the_pass_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real_scan = images._scan

    def counting_scan(gray):
        seen.append(gray.size)
        return real_scan(gray)

    monkeypatch.setattr(images, "_scan", counting_scan)
    scene = noise((2000, 1500), seed=3)  # 3 MP, no code
    assert decode_image(png_bytes(scene)) == []
    assert seen[0] == (2000, 1500)
    assert 1 < len(seen) <= 1 + images.FALLBACK_PASSES
    assert all(w * h <= images.FALLBACK_MAX_PIXELS for w, h in seen[1:])


def forged_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture
def no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any image's pixel data gets decoded."""
    from PIL import ImageFile

    def forbidden(self):
        raise AssertionError("pixels were decoded before the size was checked")

    monkeypatch.setattr(ImageFile.ImageFile, "load", forbidden)


OVERSIZED = [
    ("pixels-over-max-pixels", lambda: render_png(CODE, scale=8), dict(max_pixels=100_000)),
    ("forged-40000x40000-header", lambda: forged_png_header(40_000, 40_000), {}),
    ("forged-6000x6000-header", lambda: forged_png_header(6_000, 6_000), {}),
    ("bytes-over-max-bytes", lambda: render_png(CODE), dict(max_bytes=100)),
]


@pytest.mark.parametrize(("make", "limits"), params(OVERSIZED))
def test_oversized_image_is_refused_before_decoding(make, limits, no_pixel_decoding) -> None:
    with pytest.raises(ImageTooLarge):
        decode_image(make(), **limits)


def test_oversized_file_is_refused_before_reading(tmp_path, no_pixel_decoding) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(render_png(CODE) + b"\0" * 1000)
    with pytest.raises(ImageTooLarge):
        decode_image(path, max_bytes=1000)


GARBAGE = [
    ("empty", b""),
    ("random-bytes", random.Random(1).randbytes(5000)),
    ("text", b"EHC1:NOT AN IMAGE"),
    ("png-signature-only", b"\x89PNG\r\n\x1a\n"),
    ("truncated-png", render_png(CODE)[:200]),
    ("truncated-jpeg", jpeg_bytes(qr_image(), 50)[:600]),
    ("corrupt-idat", forged_png_header(100, 100)),
    ("gif-not-allowed", (lambda b: (qr_image().save(b, "GIF"), b.getvalue())[1])(io.BytesIO())),
    ("svg-is-not-an-image-here", render_svg(CODE).encode()),
]


@pytest.mark.parametrize("data", params(GARBAGE))
def test_garbage_raises_image_decode_error(data: bytes) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    assert not isinstance(info.value, ImageTooLarge)


@pytest.mark.parametrize(
    "data", [12345, None, ["a"]], ids=["int", "none", "list"]
)
def test_wrong_input_type_raises_image_decode_error(data) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_missing_file_raises_image_decode_error(tmp_path) -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(tmp_path / "nope.png")


# --- layering -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "must_not_load"),
    [
        ("healthcode", ("PIL", "qrcode", "pyzbar")),
        ("issuer.render", ("pyzbar",)),
        ("verifier.images", ("qrcode",)),
    ],
    ids=["core-has-no-imaging", "issuer-does-not-decode", "verifier-does-not-render"],
)
def test_layering(module: str, must_not_load: tuple[str, ...]) -> None:
    probe = (
        f"import sys, {module}; "
        f"print(sorted(m for m in {must_not_load!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- printed sheets (issue 11, item 14) -----------------------------------------------------

from issuer import sheets  # noqa: E402
from issuer.sheets import (  # noqa: E402
    MAX_PER_PAGE,
    SHEET_HEADING,
    SheetCode,
    SheetError,
    find_cjk_font,
    province_label,
    render_sheet_png,
)

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
