"""A static HTTP mirror of the trust repository that counts what it sends: for benchmarks and tests.

``python -m tools.bench.mirror_server DIR [--port N] [--port-file F] [--log F] [--etag] [--drip SECONDS]
[--tls-cert PEM --tls-key PEM]``

Serves ``DIR`` on 127.0.0.1 as any static web server would (``http.server``'s
handler over HTTP/1.1: ``Last-Modified``, and ``If-Modified-Since`` answered with
304; connections kept alive, after a 404 too, as nginx does), and:

* ``--etag``: an ETag per file (``"<mtime_ns>-<size>"`` in hex, as nginx makes
  them) and ``If-None-Match`` answered with 304;
* ``--log F``: one JSON line per request, appended and flushed:
  ``{"t", "conn", "path", "status", "sent", "received"}`` (``t`` in Unix seconds, ``conn`` the
  connection's number) with ``sent`` the bytes written
  to the socket (status line, headers, body) and ``received`` the request's
  bytes (request line and headers);
* ``--drip S``: a slow mirror: every response is written one byte every
  ``S`` seconds (the "slow-drip" case the terminal's refresh deadline ends).

``--port-file`` receives the port once the socket listens (``--port 0``
picks a free one). Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import email.utils
import functools
import http.server
import io
import json
import os
import signal
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any


class _Counting(io.RawIOBase):
    """A write-only stream that counts the bytes it passes on (and drips them, if asked)."""

    def __init__(self, inner: Any, drip: float) -> None:
        self.inner, self.drip, self.count = inner, drip, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        data = bytes(data)
        if self.drip > 0:
            for i in range(len(data)):
                self.inner.write(data[i:i + 1])
                self.inner.flush()
                self.count += 1
                time.sleep(self.drip)
        else:
            self.inner.write(data)
            self.count += len(data)
        return len(data)

    def flush(self) -> None:
        self.inner.flush()


class MirrorHandler(http.server.SimpleHTTPRequestHandler):
    """``SimpleHTTPRequestHandler`` with ETags (optional), byte counts and a drip (optional)."""

    etag = False
    drip = 0.0
    log_file: Any = None
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"
    _etag_value: str | None = None
    connections = 0  # connections accepted so far (a log record names its connection)

    def setup(self) -> None:
        with self.lock:
            MirrorHandler.connections += 1
            self._connection = MirrorHandler.connections
        super().setup()
        self._counting = _Counting(self.wfile, self.drip)
        self.wfile = self._counting  # type: ignore[assignment]

    def handle_one_request(self) -> None:
        self._counting.count = 0
        self._received = 0
        self.requestline = ""  # a keep-alive connection closed by the client reads no request
        super().handle_one_request()
        if self.log_file is not None and self.requestline:
            record = {"t": round(time.time(), 3), "conn": self._connection, "path": self.path,
                      "status": getattr(self, "_status", 0), "sent": self._counting.count,
                      "received": self._received}
            with self.lock:
                self.log_file.write(json.dumps(record) + "\n")
                self.log_file.flush()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        headers = sum(len(k) + 2 + len(v) + 2 for k, v in self.headers.items()) + 2
        self._received = len(getattr(self, "raw_requestline", b"")) + headers
        return ok

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # a 404 keeps the connection open, as nginx and CDNs do (http.server closes it)
        self._keep_open = code == 404
        try:
            super().send_error(code, message, explain)
        finally:
            self._keep_open = False

    def send_header(self, keyword: str, value: str) -> None:
        if getattr(self, "_keep_open", False) and keyword.lower() == "connection":
            return
        super().send_header(keyword, value)

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def send_head(self) -> Any:
        if self.etag:
            path = self.translate_path(self.path)
            if os.path.isfile(path):
                stat = os.stat(path)
                tag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
                if tag in [t.strip() for t in self.headers.get("If-None-Match", "").split(",")]:
                    self.send_response(304)
                    self.send_header("ETag", tag)
                    self.send_header("Date", email.utils.formatdate(usegmt=True))
                    self.end_headers()
                    return None
                self._etag_value = tag
        return super().send_head()

    def end_headers(self) -> None:
        tag = getattr(self, "_etag_value", None)
        if tag is not None:
            self.send_header("ETag", tag)
            self._etag_value = None
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


def serve(directory: Path, *, port: int = 0, etag: bool = False, drip: float = 0.0,
          log: Path | None = None, tls: tuple[Path, Path] | None = None) -> http.server.ThreadingHTTPServer:
    """A started mirror server (in a daemon thread); ``server_address[1]`` is its port.
    ``tls``: (certificate chain, key) PEM files: HTTPS (TLS 1.2 and 1.3, session tickets on)."""
    log_file = open(log, "a", encoding="utf-8") if log is not None else None  # noqa: SIM115 - lives with the server
    handler = type("Handler", (MirrorHandler,), {"etag": etag, "drip": drip, "log_file": log_file})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port),
                                             functools.partial(handler, directory=str(directory)))
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.mirror_server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--etag", action="store_true")
    parser.add_argument("--drip", type=float, default=0.0)
    parser.add_argument("--tls-cert", type=Path, help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", type=Path, help="... and this key (PEM)")
    args = parser.parse_args(argv)
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server = serve(args.directory, port=args.port, etag=args.etag, drip=args.drip, log=args.log, tls=tls)
    if args.port_file is not None:
        temp = args.port_file.with_suffix(".tmp")
        temp.write_text(str(server.server_address[1]))
        os.replace(temp, args.port_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
