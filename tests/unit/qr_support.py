"""Shared helpers of the QR tests (test_qr*.py): a real, reproducible code and the image makers."""

from __future__ import annotations

import datetime as dt
import io
import random

import pytest
from PIL import Image

from healthcode import (
    Algorithm,
    CodeClaims,
    SoftwareSigner,
    main_index_id_from_bytes,
    sign_code,
    signing_key_from_private_bytes,
)
from issuer.render import (
    render_png,
)


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


def noise(size: tuple[int, int], seed: int) -> Image.Image:
    """Reproducible sensor-like noise: uniform grey 64..191."""
    raw = random.Random(seed).randbytes(size[0] * size[1])
    return Image.frombytes("L", size, raw).point(lambda v: 64 + v // 2)
