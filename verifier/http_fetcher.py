"""The HTTP(S) mirror fetcher: conditional requests, and an overall deadline per refresh.

python-tuf's client asks a fetcher for bytes (``FetcherInterface._fetch(url)``)
and verifies whatever it gets. :class:`HttpMirrorFetcher` is that fetcher for
``http://`` and ``https://`` mirrors, with two things python-tuf's own
``Urllib3Fetcher`` does not do:

* **Conditional requests.** A poll with nothing new costs a ``304 Not
  Modified`` instead of the file. For a small file (``timestamp.json`` is the
  one a terminal fetches on every poll) the body and its validator are kept
  in ``cache_file``; the next request carries ``If-None-Match`` (an ETag) or
  ``If-Modified-Since`` (a ``Last-Modified`` that is a strong validator:
  at least one second older than the response's ``Date``, RFC 9110 §8.8.2.2,
  so a file rewritten within the same second is never mistaken for the old
  one). On ``304`` the kept body is handed to python-tuf, which verifies it as
  it verifies a download: the cache is a saving, never a trust decision. A
  mirror without validators simply gets unconditional requests.
* **Few connections.** Inside one refresh (:meth:`HttpMirrorFetcher.deadline`)
  requests share a kept-alive connection, and a new HTTPS connection resumes
  the TLS session of the last one (a resumed handshake sends no
  certificates), so a poll over HTTPS is one short handshake, not one full
  handshake per file.
* **An overall deadline.** :meth:`HttpMirrorFetcher.deadline` bounds every
  request made inside it (connect, headers, body) by one moment: a watchdog
  shuts the socket down when it passes, so a mirror that answers one byte
  every few seconds (each read well inside the per-read timeout) cannot stall
  a refresh. The error says ``refresh deadline of N s passed``; the terminal
  shows it as its ``trust sync failed`` warning.

Counters (``requests``, ``not_modified``, ``wire_bytes``: status line,
headers and body received; ``connections`` opened and TLS sessions
``resumed``) are for benchmarks and logs. A body replayed from
the cache is a :class:`ReplayedBody`: :class:`verifier.mirror.CountingFetcher`
counts it as zero bytes transferred.

One instance serves one trust sync at a time (like python-tuf's updater).
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import json
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from tuf.api import exceptions as tuf_errors
from tuf.ngclient import FetcherInterface

from shellkit.files import write_file_atomically

from .errors import MirrorUnavailable

__all__ = ["HttpMirrorFetcher", "ReplayedBody", "DeadlinePassed", "CACHE_FORMAT"]

logger = logging.getLogger(__name__)

CACHE_FORMAT = "healthcode-mirror-validators/1"
_CHUNK = 64 * 1024
#: The longest error or 304 body read to keep a connection for the next request.
_MAX_DRAIN = 64 * 1024
#: (scheme, host, port) of a mirror.
_Origin = tuple[str, str, "int | None"]


class DeadlinePassed(tuf_errors.DownloadError, MirrorUnavailable):
    """The refresh's overall deadline passed while a request was under way (a slow mirror).

    A python-tuf ``DownloadError`` (python-tuf passes it through as it is) and the
    verifier's :class:`~verifier.errors.MirrorUnavailable` (a transport failure).
    """

    reason = "mirror_too_slow"


class ReplayedBody:
    """The kept body of a file the mirror answered ``304 Not Modified`` for: an iterator of one chunk."""

    def __init__(self, body: bytes) -> None:
        self.size = len(body)
        self._chunks = iter((body,))

    def __iter__(self) -> "ReplayedBody":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)


@dataclass(frozen=True)
class _Entry:
    etag: str | None
    last_modified: str | None
    body: bytes


class _ResumingHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection that offers a previous TLS session (resumption: no certificates sent again)."""

    def __init__(self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext,
                 session: ssl.SSLSession | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._tls_context = context
        self._resume = session

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)  # TCP (no proxy tunnels: mirrors are reached directly)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self.host, session=self._resume)


class _Watchdog:
    """Shuts the connection's socket down at the deadline, unblocking any read in progress."""

    def __init__(self, connection: http.client.HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._connection = connection
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


class HttpMirrorFetcher(FetcherInterface):
    """python-tuf's fetcher for an HTTP(S) mirror, with conditional requests and a refresh deadline.

    ``read_timeout`` bounds each connect and each read (seconds); the deadline
    set by :meth:`deadline` bounds all of them together. ``cache_file`` keeps
    the validators and bodies of files up to ``max_cached_bytes`` (at most
    ``max_entries`` of them, the newest kept), owner-only, written atomically;
    None keeps them in memory only. ``ssl_context`` defaults to the system's
    trust store with hostname checks. ``clock`` is a monotonic clock (tests).
    """

    def __init__(
        self,
        *,
        read_timeout: float = 30.0,
        user_agent: str = "healthcode-verifier",
        cache_file: str | os.PathLike[str] | None = None,
        max_cached_bytes: int = 16 * 1024,
        max_entries: int = 16,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if read_timeout <= 0:
            raise ValueError("read_timeout must be positive")
        self.read_timeout = float(read_timeout)
        self.user_agent = user_agent
        self.cache_file = Path(cache_file) if cache_file is not None else None
        self.max_cached_bytes = max_cached_bytes
        self.max_entries = max_entries
        self._ssl = ssl_context
        self._clock = clock
        self._deadline: tuple[float, float] | None = None  # (monotonic end, the configured seconds)
        self._entries: dict[str, _Entry] | None = None  # loaded on first use
        self._depth = 0  # open deadline blocks: connections are kept between requests inside one
        self._idle: dict[_Origin, http.client.HTTPConnection] = {}
        self._sessions: dict[_Origin, ssl.SSLSession] = {}
        self._context: ssl.SSLContext | None = None
        self.requests = 0
        self.not_modified = 0
        self.wire_bytes = 0
        self.connections = 0  # new connections opened
        self.resumed = 0  # of those over TLS, how many resumed a previous session

    # ------------------------------------------------------------------ the deadline

    @contextlib.contextmanager
    def deadline(self, seconds: float | None) -> Iterator[None]:
        """Every request inside the block ends by ``seconds`` from now (None: no deadline).

        Inside the block a connection is kept open between requests (one refresh's
        requests share it); it is closed when the block ends.
        """
        previous = self._deadline
        self._deadline = None if seconds is None else (self._clock() + seconds, seconds)
        self._depth += 1
        try:
            yield
        finally:
            self._deadline = previous
            self._depth -= 1
            if not self._depth:
                for connection in self._idle.values():
                    connection.close()
                self._idle.clear()

    def _remaining(self, url: str) -> float | None:
        if self._deadline is None:
            return None
        left = self._deadline[0] - self._clock()
        if left <= 0:
            raise self._passed(url)
        return left

    def _expired(self, watchdog: _Watchdog | None) -> bool:
        """Whether a failed read is the deadline's doing (the watchdog fired, or the time is up)."""
        return watchdog is not None and (watchdog.fired or (
            self._deadline is not None and self._clock() >= self._deadline[0]))

    def _passed(self, url: str) -> DeadlinePassed:
        seconds = self._deadline[1] if self._deadline is not None else 0
        return DeadlinePassed(f"mirror too slow: refresh deadline of {seconds:g} s passed "
                              f"(reading {urlsplit(url).path.rsplit('/', 1)[-1] or url})")

    # ------------------------------------------------------------------ connections

    def _connection(self, origin: _Origin, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to ``origin`` kept from this refresh (True), or a new one (False).

        A new HTTPS connection offers the TLS session of the last one to the same
        origin: a resumed handshake is a fraction of a full one (no certificates).
        """
        kept = self._idle.pop(origin, None)
        if kept is not None:
            kept.timeout = timeout
            if kept.sock is not None:
                kept.sock.settimeout(timeout)
            return kept, True
        scheme, host, port = origin
        self.connections += 1
        if scheme == "https":
            if self._context is None:
                self._context = self._ssl or ssl.create_default_context()
            return _ResumingHTTPSConnection(host, port, timeout=timeout, context=self._context,
                                            session=self._sessions.get(origin)), False
        return http.client.HTTPConnection(host, port, timeout=timeout), False

    def _release(self, origin: _Origin, connection: http.client.HTTPConnection,
                 response: http.client.HTTPResponse, watchdog: _Watchdog | None) -> None:
        """After a response read to its end: keep the connection for this refresh's next request, or close it."""
        if watchdog is not None:
            watchdog.cancel()
        sock = connection.sock
        if isinstance(sock, ssl.SSLSocket):
            if sock.session_reused and not getattr(connection, "_counted", False):
                self.resumed += 1
                connection._counted = True  # type: ignore[attr-defined]
            if sock.session is not None:
                self._sessions[origin] = sock.session
        if self._depth and not response.will_close and not (watchdog is not None and watchdog.fired) \
                and response.isclosed() and sock is not None:
            self._idle[origin] = connection
        else:
            connection.close()

    # ------------------------------------------------------------------ fetching

    def _fetch(self, url: str) -> Iterator[bytes]:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise tuf_errors.DownloadError(f"not an http(s) URL: {url}")
        origin = (parts.scheme, parts.hostname, parts.port)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        kept = self._cache().get(url)
        headers = {"User-Agent": self.user_agent}
        if kept is not None and kept.etag:
            headers["If-None-Match"] = kept.etag
        elif kept is not None and kept.last_modified:
            headers["If-Modified-Since"] = kept.last_modified
        while True:
            remaining = self._remaining(url)
            # the watchdog ends a request at the deadline; the socket's own timeout stays a per-read bound
            timeout = self.read_timeout if remaining is None else min(self.read_timeout, remaining + 1.0)
            connection, reused = self._connection(origin, timeout)
            watchdog = _Watchdog(connection, remaining) if remaining is not None else None
            try:
                self.requests += 1
                connection.request("GET", target, headers=headers)
                response = connection.getresponse()
                self.wire_bytes += _head_size(response)
                break
            except (OSError, http.client.HTTPException) as exc:
                self._close(connection, watchdog)
                if self._expired(watchdog):
                    raise self._passed(url) from exc
                if reused:  # the mirror closed a kept connection meanwhile: once more on a new one
                    continue
                raise tuf_errors.DownloadError(f"cannot fetch {url}: {exc}") from exc
        if response.status == 304 and kept is not None:
            self._drain(origin, connection, response, watchdog)
            self.not_modified += 1
            return ReplayedBody(kept.body)
        if response.status != 200:
            self._drain(origin, connection, response, watchdog)
            raise tuf_errors.DownloadHTTPError(f"{url}: HTTP {response.status} {response.reason}", response.status)
        return self._body(url, origin, connection, response, watchdog)

    def _drain(self, origin: _Origin, connection: http.client.HTTPConnection, response: http.client.HTTPResponse,
               watchdog: _Watchdog | None) -> None:
        """Read a short error or empty body so the connection can serve the next request (else close it)."""
        try:
            body = response.read(_MAX_DRAIN + 1)
            self.wire_bytes += len(body)
            if len(body) > _MAX_DRAIN:
                raise http.client.HTTPException("error body too long to keep the connection")
        except (OSError, http.client.HTTPException):
            self._close(connection, watchdog)
            return
        self._release(origin, connection, response, watchdog)

    def _body(self, url: str, origin: _Origin, connection: http.client.HTTPConnection,
              response: http.client.HTTPResponse, watchdog: _Watchdog | None) -> Iterator[bytes]:
        keep: list[bytes] | None = [] if self._cacheable(response) else None
        size = 0
        complete = False
        try:
            while True:
                self._remaining(url)
                try:
                    chunk = response.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    if self._expired(watchdog):
                        raise self._passed(url) from exc
                    raise tuf_errors.DownloadError(f"cannot read {url}: {exc}") from exc
                if not chunk:
                    break
                size += len(chunk)
                self.wire_bytes += len(chunk)
                if keep is not None:
                    keep.append(chunk)
                    if size > self.max_cached_bytes:
                        keep = None
                yield chunk
            if self._expired(watchdog):  # the shutdown read as an early end of the body
                raise self._passed(url)
            if response.length not in (None, 0):
                raise tuf_errors.DownloadError(f"{url}: the mirror closed the connection mid-file")
            response.read()  # b"": marks the response done, so the connection can carry the next request
            complete = True
        finally:
            if complete:
                self._release(origin, connection, response, watchdog)
            else:
                self._close(connection, watchdog)
        if keep is not None:
            self._remember(url, response, b"".join(keep))

    @staticmethod
    def _close(connection: http.client.HTTPConnection, watchdog: _Watchdog | None) -> None:
        if watchdog is not None:
            watchdog.cancel()
        connection.close()

    # ------------------------------------------------------------------ validators

    def _cacheable(self, response: http.client.HTTPResponse) -> bool:
        if self.max_entries < 1:
            return False
        length = response.getheader("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > self.max_cached_bytes):
            return False
        return bool(response.getheader("ETag")) or _strong_date(response) is not None

    def _remember(self, url: str, response: http.client.HTTPResponse, body: bytes) -> None:
        etag = response.getheader("ETag")
        entry = _Entry(etag or None, None if etag else _strong_date(response), body)
        entries = self._cache()
        if entries.get(url) == entry:
            return
        entries.pop(url, None)
        entries[url] = entry
        while len(entries) > self.max_entries:
            entries.pop(next(iter(entries)))
        self._save(entries)

    def _cache(self) -> dict[str, _Entry]:
        if self._entries is None:
            self._entries = self._load()
        return self._entries

    def _load(self) -> dict[str, _Entry]:
        if self.cache_file is None:
            return {}
        try:
            document = json.loads(self.cache_file.read_bytes())
            if document.get("format") != CACHE_FORMAT:
                raise ValueError("unknown format")
            return {
                str(url): _Entry(item.get("etag"), item.get("last_modified"),
                                 base64.b64decode(item["body"], validate=True))
                for url, item in document["entries"].items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # only a saving is lost: the next requests are unconditional and rewrite the file
            logger.warning("mirror validators in %s unreadable, starting without: %s", self.cache_file, exc)
            return {}

    def _save(self, entries: dict[str, _Entry]) -> None:
        if self.cache_file is None:
            return
        document = {
            "format": CACHE_FORMAT,
            "entries": {url: {"etag": e.etag, "last_modified": e.last_modified,
                              "body": base64.b64encode(e.body).decode("ascii")} for url, e in entries.items()},
        }
        try:
            self.cache_file.parent.mkdir(parents=True, exist_ok=True)
            write_file_atomically(self.cache_file, json.dumps(document, sort_keys=True).encode())
        except OSError as exc:
            logger.warning("cannot keep mirror validators in %s: %s", self.cache_file, exc)


def _strong_date(response: http.client.HTTPResponse) -> str | None:
    """``Last-Modified`` when it is a strong validator: at least 1 s before the response's ``Date``."""
    modified, date = response.getheader("Last-Modified"), response.getheader("Date")
    if not modified or not date:
        return None
    try:
        if (email.utils.parsedate_to_datetime(date) - email.utils.parsedate_to_datetime(modified)).total_seconds() >= 1:
            return modified
    except (TypeError, ValueError):
        pass
    return None


def _head_size(response: http.client.HTTPResponse) -> int:
    """Bytes of the status line and headers as received (CRLF line ends)."""
    status = len(f"HTTP/1.x {response.status} {response.reason}\r\n")
    return status + sum(len(name) + 2 + len(value) + 2 for name, value in response.getheaders()) + 2
