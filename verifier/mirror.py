"""Where a trust sync reads from, and python-tuf's glue: fetchers, the reference time, the error mapping.

* :class:`SyncConfig`: the client's limits (size caps, timeout) handed to python-tuf and the fetchers;
* :class:`DirectoryFetcher`: a repository mirror in a local directory (a USB stick,
  a LAN share), served as python-tuf would see a web server;
* :class:`CountingFetcher`: wraps any fetcher and counts what a refresh transfers;
* :func:`pin_reference_time`: python-tuf judges expiry at our ``now``, not the wall clock;
* :func:`map_error`: python-tuf's and the OS's errors, in the verifier's tree
  (:mod:`verifier.errors`).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface, Updater

from healthcode.keylist import InvalidKeyList

from .errors import MirrorUnavailable, RollbackError, SyncError, TrustDataError, TrustDataFrozen
from .http_fetcher import ReplayedBody

__all__ = ["SyncConfig", "DIRECTORY_URL", "DirectoryFetcher", "CountingFetcher", "pin_reference_time", "map_error"]

#: The base URL of a directory mirror (its files are ``mirror://directory/<path>``).
DIRECTORY_URL = "mirror://directory/"
_UTC = _dt.timezone.utc


@dataclass(frozen=True)
class SyncConfig:
    """Limits and tolerances of the client."""

    #: Size caps passed to python-tuf (metadata whose length the snapshot does not state).
    root_max_bytes: int = 512 * 1024
    timestamp_max_bytes: int = 16 * 1024
    snapshot_max_bytes: int = 1 << 20
    targets_max_bytes: int = 4 << 20
    #: Hard cap of any one file read from a directory mirror.
    max_file_bytes: int = 32 << 20
    #: Timeout of the HTTP fetcher, in seconds: each connect and each read.
    http_timeout: int = 30
    #: Overall deadline of one refresh over HTTP(S), in seconds (every request of it, together):
    #: a mirror that drips bytes ends the refresh with "trust sync failed". None: no deadline.
    refresh_deadline: float | None = 60.0
    user_agent: str = "healthcode-verifier"


class DirectoryFetcher(FetcherInterface):
    """Reads a repository mirror from a local directory (a USB stick, a mounted share).

    URLs are ``mirror://directory/<path>``; paths may not leave the directory
    (no ``..``, no symlink escapes). A missing file answers HTTP 404, as a web
    server would (python-tuf reads that as "no newer root"); a missing
    directory is a transport error. Files larger than ``max_file_bytes`` are
    refused without being read.
    """

    base_url = DIRECTORY_URL

    def __init__(self, directory: str | os.PathLike[str], *, max_file_bytes: int = 32 << 20) -> None:
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(DIRECTORY_URL):
            raise tuf_errors.DownloadError(f"not a directory mirror URL: {url}")
        relative = unquote(url[len(DIRECTORY_URL) :])
        parts = relative.split("/")
        if any(p in ("", ".", "..") or "\\" in p or "\0" in p for p in parts):
            raise tuf_errors.DownloadError(f"bad path in mirror URL: {url}")
        if not self.directory.is_dir():
            raise tuf_errors.DownloadError(f"mirror directory {self.directory} is not available")
        root = self.directory.resolve()
        path = root.joinpath(*parts).resolve()
        if root not in path.parents:
            raise tuf_errors.DownloadError(f"mirror path escapes the directory: {url}")
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise tuf_errors.DownloadHTTPError(f"{relative} not found on the mirror", 404) from None
        except OSError as exc:
            raise tuf_errors.DownloadError(f"cannot read {relative}: {exc}") from None
        size = os.fstat(handle.fileno()).st_size
        if size > self.max_file_bytes:
            handle.close()
            raise tuf_errors.DownloadLengthMismatchError(
                f"{relative} is {size} bytes, over the cap of {self.max_file_bytes}"
            )
        return _read_chunks(handle, self.max_file_bytes)


def _read_chunks(handle: Any, limit: int) -> Iterator[bytes]:
    with handle:
        total = 0
        while chunk := handle.read(64 * 1024):
            total += len(chunk)
            if total > limit:  # the file grew while being read
                raise tuf_errors.DownloadLengthMismatchError("file grew past the cap while read")
            yield chunk


class CountingFetcher(FetcherInterface):
    """Wraps a fetcher and counts what it transfers (files, bytes, per URL).

    A body the HTTP fetcher replays after ``304 Not Modified``
    (:class:`~verifier.http_fetcher.ReplayedBody`) was not transferred: it
    counts in ``not_modified``, with 0 bytes in the log.
    """

    def __init__(self, inner: FetcherInterface) -> None:
        self._inner = inner
        self.bytes = 0
        self.files = 0
        self.not_modified = 0
        self.log: list[tuple[str, int]] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        chunks = self._inner.fetch(url)  # raises here for 404s and unreachable mirrors
        return self._count(url, chunks)

    def _count(self, url: str, chunks: Iterator[bytes]) -> Iterator[bytes]:
        size = 0
        replayed = isinstance(chunks, ReplayedBody)
        for chunk in chunks:
            if not replayed:
                size += len(chunk)
                self.bytes += len(chunk)
            yield chunk
        if replayed:
            self.not_modified += 1
        self.files += 1
        self.log.append((url, size))


def pin_reference_time(updater: Updater, now: _dt.datetime) -> None:
    """Judge expiry at ``now`` instead of the wall clock.

    python-tuf 7 reads the clock once, in ``TrustedMetadataSet.__init__``, and
    offers no parameter for it. Our time is a parameter (tests, and verifiers
    whose trusted time comes from elsewhere than the system clock), so set the
    one attribute it reads. A python-tuf change that breaks this fails loudly
    here, and the freeze tests catch a silent one.
    """
    trusted = getattr(updater, "_trusted_set", None)
    if trusted is None or not hasattr(trusted, "reference_time"):
        raise RuntimeError("python-tuf changed: cannot set the reference time of the updater")
    trusted.reference_time = now.astimezone(_UTC)


def _expired_at(updater: Updater | None, message: str) -> tuple[str, _dt.datetime | None]:
    """Which role expired, and when, from python-tuf's message and its trusted set."""
    match = re.search(r"(root|timestamp|snapshot|targets|province-\d\d)", message)
    role = match[1] if match else "trust"
    trusted = getattr(updater, "_trusted_set", None)
    try:
        if trusted is not None and role in ("root", "timestamp", "snapshot"):
            return role, trusted[role].expires
    except KeyError:
        pass
    return role, None


def map_error(
    exc: BaseException, what: str, updater: Updater | None, last: _dt.datetime | None
) -> SyncError:
    """python-tuf's and the OS's errors, in our tree."""
    if isinstance(exc, SyncError):
        return exc
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        role, expired = _expired_at(updater, str(exc))
        return TrustDataFrozen(role, expired, last)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        return RollbackError(f"{what}: rollback refused: {exc}")
    if isinstance(exc, tuf_errors.RepositoryError):
        return TrustDataError(f"{what}: {type(exc).__name__}: {exc}")
    if isinstance(exc, tuf_errors.DownloadLengthMismatchError):
        return TrustDataError(f"{what}: a file is larger than its signed or capped length: {exc}")
    if isinstance(exc, tuf_errors.DownloadHTTPError):
        return MirrorUnavailable(f"{what}: mirror answered HTTP {exc.status_code}")
    if isinstance(exc, tuf_errors.DownloadError):
        cause = exc.__cause__ or exc
        return MirrorUnavailable(f"{what}: mirror unavailable: {cause}")
    if isinstance(exc, InvalidKeyList):
        return TrustDataError(f"{what}: {exc}")
    if isinstance(exc, OSError):
        return SyncError(f"{what}: local trust store: {exc}")
    return TrustDataError(f"{what}: {type(exc).__name__}: {exc}")
