"""Showing a presentation: a QR in a terminal, redrawn in place every step, and as a PNG.

The symbol is the issuer's own encoder (:func:`issuer.render.qr_matrix`: one
alphanumeric segment, ECC M, the smallest version; a presentation with an
ES256 credential and an ES256 device signature is version 12,
``docs/code-format.md`` §16), so what a terminal scans is exactly what the
PNG holds.

Terminal: two module rows per text line with the half blocks ``▀ ▄ █`` and
space, black on white set explicitly with ANSI colours (dark modules stay
dark on a dark-themed terminal too, which scanners need), inside a 4-module
quiet zone. :func:`show_live` redraws the frame in place (cursor up, clear
line) at each step boundary, with the time and clock passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TextIO

from healthcode.presentation import STEP_SECONDS, step_at
from healthcode.model import to_epoch
from issuer.render import qr_matrix, render_png
from shellkit.times import beijing

__all__ = ["terminal_qr", "presentation_png", "show_live", "status_lines", "Frame", "QUIET_ZONE"]

QUIET_ZONE = 4
_COLOURS = "\x1b[30;107m"  # black on bright white
_RESET = "\x1b[0m"
_CLEAR_LINE = "\x1b[2K"
_HALF = {(False, False): " ", (True, False): "▀", (False, True): "▄", (True, True): "█"}


def terminal_qr(text: str, *, colour: bool = True) -> list[str]:
    """The QR of ``text`` as lines of half blocks (dark = block), quiet zone included."""
    symbol = qr_matrix(text, ecc="M")
    size = symbol.size + 2 * QUIET_ZONE
    dark = [[False] * size for _ in range(size + 1)]  # one spare light row for the last half line
    for r in range(symbol.size):
        for c in range(symbol.size):
            dark[r + QUIET_ZONE][c + QUIET_ZONE] = symbol.is_dark(r, c)
    lines = []
    for r in range(0, size, 2):
        row = "".join(_HALF[(dark[r][c], dark[r + 1][c])] for c in range(size))
        lines.append(f"{_COLOURS}{row}{_RESET}" if colour else row)
    return lines


def presentation_png(text: str, *, scale: int = 6) -> bytes:
    """The QR of ``text`` as a PNG (ECC M, 4-module quiet zone, ``scale`` pixels a module)."""
    return render_png(text, scale=scale, border=QUIET_ZONE, ecc="M")


Frame = Callable[[dt.datetime], tuple[str, list[str]]]
"""``frame(now) -> (presentation text, status lines)``: what to show at ``now``."""


def _seconds_to_next_step(now: dt.datetime) -> float:
    next_boundary = (step_at(now) + 1) * STEP_SECONDS
    return max(0.05, next_boundary - now.timestamp())


def show_live(frame: Frame, out: TextIO, *, clock: Callable[[], dt.datetime],
              sleep: Callable[[float], None], frames: int | None = None, colour: bool = True) -> int:
    """Draw ``frame(clock())`` on ``out``, then redraw it in place at every step; return frames drawn.

    ``frames`` bounds the number of frames (``1``: draw once and return, for
    ``show --once``); ``None`` runs until interrupted. The previous frame is
    overwritten: the cursor goes up over it and every line is cleared first.
    """
    drawn = 0
    previous_lines = 0
    while frames is None or drawn < frames:
        now = clock()
        text, status = frame(now)
        lines = [*terminal_qr(text, colour=colour), *status]
        if previous_lines:
            out.write(f"\x1b[{previous_lines}A\r")
        out.write("".join(f"{_CLEAR_LINE}{line}\n" for line in lines))
        out.flush()
        previous_lines = len(lines)
        drawn += 1
        if frames is not None and drawn >= frames:
            break
        sleep(_seconds_to_next_step(clock()))
    return drawn


def status_lines(now: dt.datetime, expires_at: dt.datetime, note: str | None = None) -> list[str]:
    """The lines under the QR: what it is, when it changes, until when the credential is valid."""
    step_end = dt.datetime.fromtimestamp((to_epoch(now) // STEP_SECONDS + 1) * STEP_SECONDS, dt.timezone.utc)
    lines = [
        "动态健康码 Live health code: show it to the scanner; it changes every 30 s",
        f"本码更新于 changes at {beijing(step_end, seconds=True)}",
        f"凭证有效至 credential valid until {beijing(expires_at)}",
    ]
    if note:
        lines.append(note)
    return lines
