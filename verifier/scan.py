"""Scanner inputs and their framing: bytes from a wedge, a serial port or a folder -> scans.

A :class:`Scan` is one thing a scanner delivered: the text of one candidate
code, or a *problem* saying why there is no usable text (the runtime reports
either as a result; a problem is always INVALID/malformed).

Framing of byte streams (:class:`LineFramer`, pure)
---------------------------------------------------
* CR, LF and CR LF all end a scan; empty lines are ignored (a CR LF is one end).
* A line is capped at ``max_line`` bytes **before** it is accumulated: once a
  line passes the cap, its bytes are dropped up to the next terminator and it
  is reported **once** as too long. Memory is bounded by the cap plus one chunk.
* The bytes must be UTF-8 without NUL; otherwise the scan is a problem
  ("binary data"). An AIM symbology identifier prefix (``]Q1`` etc., sent by
  some scanners) is removed.
* On a tty or a serial port, ``frame_timeout`` of silence after some bytes
  ends the scan (a scanner configured without an Enter suffix). At end of
  input, bytes left over make a last scan.

Readers (:func:`read_stream`) call ``read(timeout)`` in a loop, so they notice a
stop request within one poll, and hand scans over in batches (one :class:`ScanBatch`
per chunk read). A chunk whose lines are all plain ASCII text (what a scanner sends
for our codes) is decoded and split in one go; any other chunk is taken line by line.

:func:`hint` recognises inputs that are not one of our codes but are common at
a hospital desk (another system's code, two codes run together, a wedge typing
in lower case) so that the operator gets a useful reason.
"""

from __future__ import annotations

import errno
import os
import pathlib
import select
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple, TypeGuard

from healthcode.codec import PREFIX
from healthcode.presentation import PRESENTATION_PREFIX
from shellkit.files import ensure_private_file

__all__ = [
    "Scan",
    "ScanBatch",
    "LineFramer",
    "hint",
    "ByteStream",
    "FdStream",
    "SerialStream",
    "read_stream",
    "FolderSource",
    "make_scanner_tty",
]

_AIM_IDS = tuple(f"]Q{d}" for d in range(10))
_new = tuple.__new__


class Scan(NamedTuple):
    """One delivery from a scanner: ``text``, or ``problem`` when there is no usable text."""

    text: str | None
    source: str
    problem: str | None = None
    ended_by: str = "newline"  # newline | timeout | eof | image


class ScanBatch(NamedTuple):
    """The scans of one chunk of input, in order.

    Each item is a :class:`Scan`, or, in short, a ``str``: the text of a clean
    line (decoded, AIM prefix removed, no problem), which stands for
    ``Scan(item, source, None, ended_by)``. A batch of N lines costs one list,
    not N named tuples.
    """

    source: str
    ended_by: str
    items: list  # list[str | Scan]

    def scans(self) -> list[Scan]:
        """The items as :class:`Scan` objects."""
        return [Scan(item, self.source, None, self.ended_by) if item.__class__ is str else item
                for item in self.items]


class LineFramer:
    """Split a byte stream into lines, bounded (see the module docstring)."""

    __slots__ = ("max_line", "_buffer", "_discarding")

    def __init__(self, max_line: int = 4096) -> None:
        self.max_line = max_line
        self._buffer = b""
        self._discarding = False

    @property
    def pending(self) -> bool:
        """True while part of a line (or an overlong line being dropped) is held."""
        return bool(self._buffer) or self._discarding

    def feed(self, data: bytes) -> list[bytes | None]:
        """The complete lines in ``data`` (after what was held); ``None`` stands for an overlong line."""
        if b"\r" in data:
            data = data.replace(b"\r", b"\n")
        pieces = data.split(b"\n")
        rest = pieces.pop()  # the part after the last terminator: incomplete
        out: list[bytes | None] = []
        cap = self.max_line
        for i, piece in enumerate(pieces):
            if i == 0:
                if self._discarding:
                    self._discarding = False
                    out.append(None)
                    continue
                if self._buffer:
                    piece = self._buffer + piece
                    self._buffer = b""
            if len(piece) > cap:
                out.append(None)
            elif piece:
                out.append(piece)
        if rest:
            if self._discarding:
                pass
            elif len(self._buffer) + len(rest) > cap:
                self._buffer = b""
                self._discarding = True
            else:
                self._buffer += rest
        return out

    def feed_items(self, data: bytes, source: str, ended_by: str = "newline") -> list:
        """``to_items(self.feed(data), ...)``: the complete lines in ``data`` as :class:`ScanBatch` items.

        The common case, plain ASCII text without NUL or ``]`` whose lines are all
        within the cap, is decoded and split as one text; anything else goes
        through :meth:`feed` and :func:`to_items`. Same answers, same state after.
        """
        cap = self.max_line
        if not self._discarding:
            whole = self._buffer + data if self._buffer else data
            if whole.isascii() and b"\0" not in whole and b"]" not in whole:
                if b"\r" in whole:
                    whole = whole.replace(b"\r", b"\n")
                lines = whole.decode("ascii").split("\n")
                rest = lines.pop()
                if len(rest) <= cap and (not lines or max(map(len, lines)) <= cap):
                    self._buffer = rest.encode("ascii")
                    return list(filter(None, lines)) if "" in lines else lines
        return to_items(self.feed(data), source, ended_by, cap)

    def flush(self) -> bytes | None | Literal[False]:
        """End the held line (timeout or end of input): its bytes, ``None`` if overlong, False if none."""
        if self._discarding:
            self._discarding = False
            return None
        held, self._buffer = self._buffer, b""
        return held if held else False


def to_scan(line: bytes | None, source: str, ended_by: str, max_line: int) -> Scan:
    """One framed line as a :class:`Scan`: decoded text, or the problem with it."""
    if line is None:
        return Scan(None, source, f"input line too long (over {max_line} bytes): discarded", ended_by)
    if b"\0" in line:
        return Scan(None, source, "input contains NUL bytes: binary data, not a code", ended_by)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return Scan(None, source, "input is not valid UTF-8 text: binary data, not a code", ended_by)
    if text.startswith(_AIM_IDS):
        text = text[3:]
    return _new(Scan, (text, source, None, ended_by))  # skip the named tuple's __new__


def _none_overlong(lines: list[bytes | None]) -> TypeGuard[list[bytes]]:
    """True when no line stands for an overlong one (``None``): the lines are all bytes."""
    return None not in lines


def to_items(lines: list[bytes | None], source: str, ended_by: str, max_line: int) -> list:
    """Framed lines as :class:`ScanBatch` items: the same answers as :func:`to_scan` on each line.

    When no line is overlong and the lines together are ASCII without NUL and
    without ``]`` (so no AIM prefix either), their texts are decoded and split
    in one go; otherwise each line goes through :func:`to_scan`.
    """
    if not lines:
        return []
    if _none_overlong(lines):
        blob = b"\n".join(lines)
        if blob.isascii() and b"\0" not in blob and b"]" not in blob:
            return blob.decode("ascii").split("\n")
    return [to_scan(line, source, ended_by, max_line) for line in lines]


def hint(text: str) -> str | None:
    """Why ``text`` is plainly not one code of ours, in words for the operator; else None."""
    if text.startswith((PREFIX, PRESENTATION_PREFIX)):  # a static code, or a phone's live code
        if text.find(PREFIX, len(PREFIX)) >= 0 or text.find(PRESENTATION_PREFIX, len(PRESENTATION_PREFIX)) >= 0:
            return "two codes run together: scan one code at a time"
        return None
    head = text[:16].lstrip()
    upper = head.upper()
    if upper.startswith((PREFIX, PRESENTATION_PREFIX)):
        return "code typed in lower case: check the scanner's keyboard layout or Caps Lock"
    if upper.startswith("HC1:"):
        return "an EU Digital COVID Certificate (HC1:), not a Chinese health code"
    if head.lower().startswith("shc:/"):
        return "a SMART Health Card (shc:/), not a Chinese health code"
    if head.lower().startswith(("http://", "https://")):
        return "a web link, not a health code"
    if len(text) <= 5:
        return "partial scan: too short to be a health code"
    return None


# --- byte streams --------------------------------------------------------------------------


class ByteStream:
    """``read(timeout)``: bytes, ``b""`` if none arrived within ``timeout`` s, ``None`` at end."""

    name: str
    timed_frames: bool  # True for ttys and serial ports: silence ends a scan

    def read(self, timeout: float) -> bytes | None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class FdStream(ByteStream):
    """A file descriptor: stdin, a pipe, or a tty (keyboard wedge)."""

    def __init__(self, fd: int, name: str, *, read_size: int = 65536, owns: bool = False) -> None:
        self.fd = fd
        self.name = name
        self.read_size = read_size
        self.owns = owns
        self.timed_frames = os.isatty(fd)
        self._restore: Callable[[], None] | None = None

    @classmethod
    def open_tty(cls, path: str, *, read_size: int = 65536) -> "FdStream":
        """Open a scanner's tty (not our controlling terminal) and make it deliver raw bytes."""
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
        stream = cls(fd, f"tty:{path}", read_size=read_size, owns=True)
        if stream.timed_frames:
            stream._restore = make_scanner_tty(fd, signals=False)
        return stream

    def read(self, timeout: float) -> bytes | None:
        try:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return b""
            data = os.read(self.fd, self.read_size)
        except InterruptedError:
            return b""
        except OSError as exc:
            if exc.errno == errno.EIO:  # a tty whose other side hung up
                return None
            raise
        return data if data else None

    def close(self) -> None:
        if self._restore is not None:
            self._restore()
            self._restore = None
        if self.owns:
            try:
                os.close(self.fd)
            except OSError:
                pass


def make_scanner_tty(fd: int, *, signals: bool) -> Callable[[], None]:
    """Put a tty in byte-at-a-time mode for a wedge; return a function that restores it.

    No canonical editing (its 4 KiB line buffer would truncate long input and
    its line editing would act on scanned bytes), no echo, no XON/XOFF (a
    garbage byte could freeze the terminal); CR still becomes LF. Signal keys
    (Ctrl-C) stay active only when ``signals`` (stdin, where the operator may
    want them); on a scanner-only tty they are plain bytes.
    """
    try:
        old = termios.tcgetattr(fd)
    except termios.error:
        return lambda: None
    new = list(old)
    new[0] &= ~(termios.IXON | termios.IXOFF | termios.ISTRIP | termios.INLCR | termios.IGNCR)
    new[0] |= termios.ICRNL
    lflag = termios.ICANON | termios.ECHO | termios.IEXTEN
    if not signals:
        lflag |= termios.ISIG
    new[3] &= ~lflag
    new[6] = list(old[6])
    new[6][termios.VMIN] = 1
    new[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, new)

    def restore() -> None:
        try:
            termios.tcsetattr(fd, termios.TCSANOW, old)
        except (termios.error, OSError):
            pass

    return restore


class SerialStream(ByteStream):
    """A serial scanner through pyserial (a device path or any pyserial URL, e.g. ``loop://``)."""

    timed_frames = True

    def __init__(self, port: str, baud: int = 9600, *, read_size: int = 65536, poll: float = 0.05) -> None:
        import serial  # the verifier extra

        self._serial_mod = serial
        self.port_name = port
        self.name = f"serial:{port}"
        self.read_size = read_size
        self.port = serial.serial_for_url(port, baudrate=baud, timeout=poll)

    def read(self, timeout: float) -> bytes | None:
        try:
            first = self.port.read(1)  # waits up to the port's timeout
            if not first:
                return b""
            waiting = self.port.in_waiting
            return first + self.port.read(min(waiting, self.read_size)) if waiting else first
        except self._serial_mod.SerialException as exc:
            raise OSError(f"serial port {self.port_name}: {exc}") from None

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:  # noqa: BLE001 - closing a broken port must not raise
            pass


def read_stream(
    stream: ByteStream,
    *,
    max_line: int,
    frame_timeout: float | None,
    stop: threading.Event,
    poll: float = 0.1,
    monotonic: Callable[[], float] = time.monotonic,
) -> Iterator[ScanBatch]:
    """Batches of scans from ``stream`` (one per chunk read) until it ends or ``stop`` is set.

    ``frame_timeout`` (seconds) applies only to streams with ``timed_frames``.
    Read errors end the iteration by raising ``OSError`` (the caller reports it).
    """
    framer = LineFramer(max_line)
    timeout = frame_timeout if (frame_timeout and stream.timed_frames) else None
    last = monotonic()
    name = stream.name
    while not stop.is_set():
        wait = poll
        if timeout is not None and framer.pending:
            wait = max(0.0, min(poll, last + timeout - monotonic()))
        data = stream.read(wait)
        if data is None:
            held = framer.flush()
            if held is not False:
                yield ScanBatch(name, "eof", [to_scan(held, name, "eof", max_line)])
            return
        if data:
            last = monotonic()
            items = framer.feed_items(data, name)
            if items:
                yield ScanBatch(name, "newline", items)
        elif timeout is not None and framer.pending and monotonic() - last >= timeout:
            held = framer.flush()
            if held is not False:
                yield ScanBatch(name, "timeout", [to_scan(held, name, "timeout", max_line)])


# --- a folder of dropped images --------------------------------------------------------------

_SKIP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp")


class FolderSource:
    """Images dropped into ``directory`` (camera terminals), each processed once.

    A file is taken once it is seen with the same size and mtime on two
    consecutive polls (so a file still being written is left alone; writers
    that rename into place are picked up on the next poll). Hidden files and
    temporary names (``.tmp``, ``.part`` ...) are ignored. After processing the
    file is moved into ``processed/`` (``done="move"``) or deleted
    (``done="delete"``); if that fails it is remembered and not processed again
    in this run.
    """

    def __init__(self, directory: str | os.PathLike[str], *, done: str = "move",
                 processed_dir: str | os.PathLike[str] | None = None, max_codes: int = 4,
                 decode: Callable[[str], list[str]] | None = None) -> None:
        if decode is None:
            from .images import decode_image
            decode = decode_image
        self.directory = pathlib.Path(directory)
        self.processed_dir = pathlib.Path(processed_dir) if processed_dir else self.directory / "processed"
        self.done = done
        self.max_codes = max_codes
        self.decode = decode
        self.name = f"folder:{self.directory}"
        self._seen: dict[str, tuple[int, int]] = {}
        self._finished: set[tuple[str, int, int]] = set()
        self.errors: list[str] = []

    def poll_once(self) -> list[Scan]:
        """Process the files that are ready; return their scans."""
        scans: list[Scan] = []
        seen: dict[str, tuple[int, int]] = {}
        try:
            entries = sorted(os.scandir(self.directory), key=lambda e: e.name)
        except OSError as exc:
            raise OSError(f"cannot list {self.directory}: {exc.strerror or exc}") from None
        for entry in entries:
            name = entry.name
            if name.startswith(".") or name.lower().endswith(_SKIP_SUFFIXES):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            signature = (st.st_size, st.st_mtime_ns)
            if (name, *signature) in self._finished:
                continue
            if self._seen.get(name) != signature:
                seen[name] = signature  # not stable yet: look again next poll
                continue
            scans.extend(self._process(pathlib.Path(entry.path)))
            self._finish(pathlib.Path(entry.path), signature)
        self._seen = seen
        return scans

    def _process(self, path: pathlib.Path) -> list[Scan]:
        from .images import ImageDecodeError

        source = f"folder:{path.name}"
        try:
            texts = self.decode(str(path))
        except ImageDecodeError as exc:
            return [Scan(None, source, f"image unreadable: {exc}", "image")]
        if not texts:
            return [Scan(None, source, "no QR code found in the image", "image")]
        scans = [Scan(text, source, None, "image") for text in texts[: self.max_codes]]
        if len(texts) > self.max_codes:
            scans.append(Scan(None, source, f"more than {self.max_codes} QR codes in one image", "image"))
        return scans

    def _finish(self, path: pathlib.Path, signature: tuple[int, int]) -> None:
        try:
            if self.done == "delete":
                path.unlink()
                return
            self.processed_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            target = self.processed_dir / path.name
            counter = 1
            while target.exists():
                target = self.processed_dir / f"{path.stem}.{counter}{path.suffix}"
                counter += 1
            os.replace(path, target)
            ensure_private_file(target)  # a resident's code, kept: owner-only like the audit log
        except OSError as exc:
            self._finished.add((path.name, *signature))
            verb = "删除" if self.done == "delete" else "移动"
            self.errors.append(f"无法{verb}已处理的图像 {path.name} / cannot {self.done} {path.name}: "
                               f"{exc.strerror or exc}")
