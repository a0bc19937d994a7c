"""The phone web wallet's built files (``webwallet/dist``), served by the issuer's HTTP listener.

:class:`StaticFiles` reads a directory once, at start (a few hundred kB:
the wallet's first load is capped at 300 kB compressed), and serves it under
a prefix (``/wallet/``) with:

* a content type per extension (``.js`` ``text/javascript``,
  ``.webmanifest`` ``application/manifest+json``, ``.wasm``, ...), and
  ``X-Content-Type-Options: nosniff``;
* Brotli or gzip by ``Accept-Encoding`` (precompressed ``name.br`` /
  ``name.gz`` files beside a file are used as they are; otherwise compressed
  here, once, when smaller), ``Vary: Accept-Encoding``;
* a strong ``ETag`` (SHA-256 of the file) and ``304 Not Modified`` for
  ``If-None-Match``;
* ``Cache-Control``: ``public, max-age=31536000, immutable`` for names with
  a content hash (``app.3f9a1c2e.js``), ``no-cache`` (always revalidate) for
  the rest, so a service worker (``sw.js``, served with
  ``Service-Worker-Allowed`` for the prefix) and ``index.html`` update as soon
  as they change;
* a Content-Security-Policy that allows the page's own origin only;
* over TLS, ``Strict-Transport-Security: max-age=31536000`` (a phone that
  has loaded the wallet once never asks for it over plain HTTP again).

GET and HEAD only; ``/wallet`` redirects to ``/wallet/``, which serves ``index.html``.

Generated files (``generated``: name -> a function returning the bytes now) are
served the same way, made on each request: the issuer's own key list as
``keys.json`` (:mod:`issuer.key_list`), so that it follows key rotation. A
generated file wins over a file of the same name in the directory.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import mimetypes
import pathlib
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["StaticFiles", "MAX_STATIC_BYTES"]

log = logging.getLogger("issuer.http")

#: Refuse to load a directory larger than this (a misconfigured path, not a wallet build).
MAX_STATIC_BYTES = 32 * 1024 * 1024

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
    ".woff2": "font/woff2",
}
_COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".json", ".map", ".webmanifest", ".svg", ".txt", ".wasm", ".ico"}
_HASHED_NAME = re.compile(r"[.-][0-9A-Za-z_-]{8,}\.[a-z0-9]+$")
_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'")


@dataclass(frozen=True)
class _File:
    body: bytes
    br: bytes | None
    gz: bytes | None
    content_type: str
    etag: str
    cache_control: str
    service_worker: bool


def _compress(path: pathlib.Path | None, body: bytes, suffix: str) -> tuple[bytes | None, bytes | None]:
    br = gz = None
    if path is not None:
        br_file, gz_file = path.with_name(path.name + ".br"), path.with_name(path.name + ".gz")
        br = br_file.read_bytes() if br_file.is_file() else None
        gz = gz_file.read_bytes() if gz_file.is_file() else None
    if suffix not in _COMPRESSIBLE or len(body) < 256:
        return br, gz
    if gz is None:
        gz = gzip.compress(body, compresslevel=9, mtime=0)
    if br is None:
        try:
            import brotli  # type: ignore[import-untyped]  # the issuer extra installs it; without it, gzip only
        except ImportError:
            pass
        else:
            br = brotli.compress(body, quality=11)
    return (br if br is not None and len(br) < len(body) else None,
            gz if gz is not None and len(gz) < len(body) else None)


def _file(name: str, body: bytes, path: pathlib.Path | None) -> _File:
    """What is served for ``name`` (``path``: where it was read, for precompressed siblings)."""
    suffix = pathlib.PurePosixPath(name).suffix.lower()
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    br, gz = _compress(path, body, suffix)
    base = pathlib.PurePosixPath(name).name
    hashed = bool(_HASHED_NAME.search(base)) and suffix not in (".html", ".webmanifest") and path is not None
    return _File(
        body=body, br=br, gz=gz, content_type=content_type,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        cache_control="public, max-age=31536000, immutable" if hashed else "no-cache",
        service_worker=base in ("sw.js", "service-worker.js"),
    )


class StaticFiles:
    """An ASGI application serving the files under ``directory`` at ``prefix`` (ending in ``/``), and the
    ``generated`` ones (name -> the bytes now; served ``no-cache``, made again when the bytes change)."""

    def __init__(self, directory: pathlib.Path, prefix: str = "/wallet/", *,
                 generated: Mapping[str, Callable[[], bytes]] | None = None) -> None:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError("prefix must start and end with /")
        self.prefix = prefix
        self.files: dict[str, _File] = {}
        self._generated = dict(generated or {})
        self._made: dict[str, _File] = {}  # generated name -> the last file made
        self._making = threading.Lock()
        total = 0
        root = directory.resolve()
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.suffix in (".br", ".gz") or path.name.startswith("."):
                continue
            body = path.read_bytes()
            total += len(body)
            if total > MAX_STATIC_BYTES:
                raise ValueError(f"{directory} holds more than {MAX_STATIC_BYTES} bytes: not a web wallet build")
            name = path.relative_to(root).as_posix()
            self.files[name] = _file(name, body, path)
        for name in self._generated:
            if self.files.pop(name, None) is not None:
                log.warning("%s in %s is not served: the issuer serves its own %s", name, directory, name,
                            extra={"event": "static_file_shadowed", "file": name})

    def _file_now(self, name: str) -> _File | None:
        make = self._generated.get(name)
        if make is None:
            return self.files.get(name)
        body = make()
        with self._making:
            made = self._made.get(name)
            if made is None or made.body != body:
                made = self._made[name] = _file(name, body, None)
        return made

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == self.prefix.rstrip("/"):
            await _respond(send, 308, [(b"location", self.prefix.encode())])
            return
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, [(b"allow", b"GET, HEAD")])
            return
        name = path[len(self.prefix):] or "index.html"
        file = self._file_now(name)
        if file is None:
            await _respond(send, 404, [(b"content-type", b"text/plain; charset=utf-8")], b"not found\n")
            return
        headers = _request_headers(scope)
        common = [
            (b"etag", file.etag.encode()),
            (b"cache-control", file.cache_control.encode()),
            (b"vary", b"Accept-Encoding"),
            (b"x-content-type-options", b"nosniff"),
            (b"content-security-policy", _CSP.encode()),
            (b"referrer-policy", b"no-referrer"),
        ]
        if file.service_worker:
            common.append((b"service-worker-allowed", self.prefix.encode()))
        if scope.get("scheme") == "https":  # over plaintext (development only) a browser ignores it anyway
            common.append(_HSTS)
        if file.etag in headers.get("if-none-match", ""):
            await _respond(send, 304, common)
            return
        accepted = _encodings(headers.get("accept-encoding", ""))
        body, encoding = file.body, None
        if file.br is not None and "br" in accepted:
            body, encoding = file.br, b"br"
        elif file.gz is not None and "gzip" in accepted:
            body, encoding = file.gz, b"gzip"
        out = [(b"content-type", file.content_type.encode()), (b"content-length", str(len(body)).encode()), *common]
        if encoding is not None:
            out.append((b"content-encoding", encoding))
        await _respond(send, 200, out, b"" if method == "HEAD" else body)


#: A year, the host only (no includeSubDomains, no preload: the issuer's host name says nothing of its siblings).
_HSTS = (b"strict-transport-security", b"max-age=31536000")


def _request_headers(scope: dict[str, Any]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}


def _encodings(header: str) -> set[str]:
    accepted = set()
    for part in header.split(","):
        token, _, params = part.strip().partition(";")
        if token and params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000"):
            accepted.add(token.strip().lower())
    return accepted


async def _respond(send: Any, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
    if not any(k == b"content-length" for k, _ in headers):
        headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
