"""``verifier.images.decode_image``: its inputs, and limits enforced before any pixel is decoded."""

from __future__ import annotations

import io
import random
import struct
import zlib

import pytest
from PIL import Image

from issuer.render import (
    render_png,
    render_svg,
)
from verifier import images
from verifier.images import ImageDecodeError, ImageTooLarge, decode_image
from .qr_support import CODE, jpeg_bytes, make_code, noise, params, png_bytes, qr_image


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
