"""Find QR codes in a PNG or JPEG image (camera frame, screenshot, scan, upload).

Contract of :func:`decode_image`
--------------------------------
* Input is the image's bytes, or a path to it (``str`` or ``os.PathLike``).
  Only PNG and JPEG are opened.
* Limits are enforced *before* any pixel is decoded: the encoded size against
  ``max_bytes`` (a file is checked with ``fstat`` and never read past the cap),
  then the pixel count from the header against ``max_pixels``. Pillow's own
  decompression-bomb check stays on as a second fence. Breaking a limit raises
  :class:`ImageTooLarge`.
* Anything that is not a readable PNG/JPEG (garbage, truncated data, an unknown
  format, an unreadable file) raises :class:`ImageDecodeError`, never a Pillow
  or OS error.
* The result is the texts of the QR codes found, each once, in zbar's order;
  ``[]`` if there is none. Texts are not checked here: that is the verifier's job.

How it looks
------------
The image is flattened to 8-bit grayscale (transparency composited onto
white, 16-bit samples scaled, not clipped) and handed to zbar. If zbar finds
nothing, a fixed, short list of variants is tried, stopping at the first
that yields a code:

1. a working copy: upscaled (bicubic) when the image is small, where zbar
   misses 1-2 px modules, or box-reduced when it is huge, where a smaller
   copy is both faster and less noisy;
2. auto-contrast (very low-contrast prints and dim photos);
3. two unsharp masks, mild and strong (blur, out-of-focus camera frames);
4. the inverted image (light modules on a dark screen).

The working copy never exceeds :data:`FALLBACK_MAX_PIXELS`, so a call costs
at most one zbar pass over the original and :data:`FALLBACK_PASSES` passes
over at most that many pixels, whatever the input. (A plain global
threshold, e.g. Otsu's, was tried as well and never rescued an image that
these did not, so it is left out.)
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError
from pyzbar.pyzbar import ZBarSymbol
from pyzbar.pyzbar import decode as zbar_decode

from .errors import VerifierError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FALLBACK_MAX_PIXELS",
    "FALLBACK_PASSES",
    "FORMATS",
    "ImageDecodeError",
    "ImageTooLarge",
    "decode_image",
]

#: Encoded size cap: a 12-megapixel phone JPEG is 3-8 MiB.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
#: Pixel cap: room for a 24-megapixel photo (~24 MB as 8-bit gray).
DEFAULT_MAX_PIXELS = 25_000_000
#: The only formats opened: fewer parsers, smaller attack surface.
FORMATS = ("PNG", "JPEG")
#: The fallback passes work on a copy of at most this many pixels.
FALLBACK_MAX_PIXELS = 2_000_000
#: At most this many zbar passes follow the first one.
FALLBACK_PASSES = 5
# Below this long side (px) the working copy is upscaled, by at most _MAX_UPSCALE.
_UPSCALE_BELOW = 480
_MAX_UPSCALE = 8


class ImageDecodeError(VerifierError, ValueError):
    """The input is not a PNG/JPEG image that can be read (a ``ValueError`` too, as before)."""

    reason = "image_unreadable"


class ImageTooLarge(ImageDecodeError):
    """The input breaks ``max_bytes`` or ``max_pixels``; refused before decoding."""

    reason = "image_too_large"


def decode_image(
    data: bytes | bytearray | memoryview | str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[str]:
    """The texts of the QR codes in an image, each once; ``[]`` if none is found.

    ``data`` is the encoded image (bytes-like) or a path to it (``str`` or
    path-like). Raises :class:`ImageTooLarge` if the encoded size exceeds
    ``max_bytes`` or the image has more than ``max_pixels`` pixels (both
    checked before pixels are decoded), and :class:`ImageDecodeError` for
    anything that is not a readable PNG or JPEG.
    """
    if max_bytes < 1 or max_pixels < 1:
        raise ValueError("max_bytes and max_pixels must be positive")
    gray = _load_gray(_read(data, max_bytes), max_pixels)
    found = _scan(gray)
    if not found:
        for variant in _fallbacks(gray):
            found = _scan(variant)
            if found:
                break
    return found


# --- input -------------------------------------------------------------------


def _read(data: bytes | bytearray | memoryview | str | os.PathLike[str], max_bytes: int) -> bytes:
    """The encoded image as bytes, refused early if it is larger than ``max_bytes``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        if len(data) > max_bytes:
            raise ImageTooLarge(f"image is {len(data)} bytes; the limit is {max_bytes}")
        return bytes(data)
    if not isinstance(data, (str, os.PathLike)):
        raise ImageDecodeError(f"expected image bytes or a path, not {type(data).__name__}")
    try:
        with open(data, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise ImageTooLarge(f"image file is {size} bytes; the limit is {max_bytes}")
            # Read one byte past the cap: the file may grow after fstat.
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image file: {exc.strerror or exc}") from exc
    if len(raw) > max_bytes:
        raise ImageTooLarge(f"image file is over {max_bytes} bytes")
    return raw


def _load_gray(raw: bytes, max_pixels: int) -> Image.Image:
    """Decode ``raw`` into an 8-bit grayscale image, checking the header first."""
    try:
        im = Image.open(io.BytesIO(raw), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image refused by the decompression-bomb check: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError("not a readable PNG or JPEG image") from exc
    with im:
        width, height = im.size
        if width * height > max_pixels:
            raise ImageTooLarge(f"image is {width}x{height} pixels; the limit is {max_pixels}")
        if width < 1 or height < 1:
            raise ImageDecodeError("image has no pixels")
        if im.format == "JPEG":
            im.draft("L", im.size)  # let libjpeg emit luma only: no colour conversion
        try:
            im.load()
            return _to_gray(im)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"image refused by the decompression-bomb check: {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageDecodeError("image data is corrupt or truncated") from exc


def _to_gray(im: Image.Image) -> Image.Image:
    """8-bit grayscale, with transparency on white and 16-bit depth scaled down."""
    if im.mode == "L":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # convert("L") would clip every value above 255 to white.
        return im.convert("I").point(lambda v: v * (1 / 257)).convert("L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        # A transparent background is black in RGBA; a QR printed on it would vanish.
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")
    return im.convert("L")


# --- scanning ----------------------------------------------------------------


def _scan(gray: Image.Image) -> list[str]:
    """One zbar pass, QR codes only; distinct texts in zbar's order."""
    texts: list[str] = []
    for symbol in zbar_decode(gray, symbols=[ZBarSymbol.QRCODE]):
        try:
            text = symbol.data.decode("utf-8")
        except UnicodeDecodeError:
            text = symbol.data.decode("latin-1")  # lossless for any bytes
        if text not in texts:
            texts.append(text)
    return texts


def _fallbacks(gray: Image.Image) -> Iterator[Image.Image]:
    """The variants tried after a pass over ``gray`` found nothing; at most FALLBACK_PASSES.

    Lazy, so a variant is only computed if the ones before it failed.
    """
    work = _working_copy(gray)
    if work is not gray:
        yield work
    yield ImageOps.autocontrast(work, cutoff=1)
    yield work.filter(ImageFilter.UnsharpMask(radius=2, percent=200, threshold=0))
    yield work.filter(ImageFilter.UnsharpMask(radius=4, percent=400, threshold=0))
    yield ImageOps.invert(ImageOps.autocontrast(work, cutoff=1))


def _working_copy(gray: Image.Image) -> Image.Image:
    """``gray`` resized for the fallbacks: small ones up, huge ones down; else itself."""
    width, height = gray.size
    pixels = width * height
    if pixels > FALLBACK_MAX_PIXELS:
        factor = math.ceil(math.sqrt(pixels / FALLBACK_MAX_PIXELS))
        return gray.reduce(factor)  # box average: cheap, and it smooths sensor noise
    long_side = max(width, height)
    if long_side < _UPSCALE_BELOW:
        factor = min(math.ceil(_UPSCALE_BELOW / long_side), _MAX_UPSCALE)
        while factor > 1 and pixels * factor * factor > FALLBACK_MAX_PIXELS:
            factor -= 1
        if factor > 1:
            return gray.resize((width * factor, height * factor), Image.Resampling.BICUBIC)
    return gray
