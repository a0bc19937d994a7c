"""QR round trips: issuer.render draws real images, verifier.images reads them back.

Every image test renders a code, damages the image the way a phone camera,
a printer or a screenshot would, encodes it as PNG or JPEG bytes and asserts
that ``decode_image`` returns exactly the code text. This module also checks
the symbol (version, masks against qrcode's) and the layering of the imaging
libraries. PNG and SVG output and render input are in ``test_qr_render.py``;
``decode_image``'s inputs and limits in ``test_qr_decode.py``; printed sheets
in ``test_qr_sheets.py``; shared helpers in ``qr_support.py``.
"""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable

import pytest
import qrcode
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from qrcode.util import MODE_ALPHA_NUM, QRData, lost_point

from healthcode import (
    decode_unverified,
)
from issuer import render
from issuer.render import (
    ALPHANUMERIC,
    ECC_LEVELS,
    penalty_score,
    qr_matrix,
    qr_version,
    render_png,
)
from verifier.images import decode_image
from .qr_support import CODE, jpeg_bytes, make_code, noise, params, png_bytes, qr_image


def recolour(im: Image.Image, dark, light, mode: str = "L") -> Image.Image:
    """Black modules -> ``dark``, white -> ``light`` (grey levels or RGB tuples)."""
    out = Image.new(mode, im.size, light)
    out.paste(Image.new(mode, im.size, dark), mask=ImageOps.invert(im))
    return out


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
