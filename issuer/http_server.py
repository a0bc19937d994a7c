"""The issuer's HTTP listener: Connect and gRPC-Web RPCs (:mod:`issuer.http_api`) and the web wallet's files.

:class:`HttpServer` runs `uvicorn <https://www.uvicorn.org>`_ *in the issuer's
process and event loop*, beside the ``grpc.aio`` server, so both transports
call the same servicers, the same store and the same rate-limit buckets.
Why uvicorn: it serves an ASGI application as a task of an existing asyncio
loop (``Server.serve``), its HTTP/1.1 parser is C (httptools), and phones'
H5 pages and mini-programs speak HTTP/1.1; Connect unary and gRPC-Web need no
trailers and no HTTP/2 (native gRPC keeps its own HTTP/2 listener). Hypercorn
(pure-Python h11/h2) costs more CPU a request; granian runs its own Rust
runtime and workers, outside the loop the store and the servicers live on.

Routes (:class:`Router`):

* ``POST /healthcode.issuer.v1.<Service>/<Method>``: Connect (JSON, binary) and gRPC-Web;
* ``GET /wallet/...``: the web wallet's built files (:mod:`issuer.http_static`), when configured, and
  ``/wallet/keys.json``, the issuer's own key list made on each request (:mod:`issuer.key_list`);
* ``GET /healthz``: ``ok`` while serving (for load balancers; no RPC, no admission).

TLS is on unless the server runs with ``insecure_dev_plaintext``: the gRPC
listener's certificate and key. With a client CA, a client certificate is
verified when sent, and its subject CN reaches the authenticator as over
gRPC; it is not required in the handshake (a phone has none; it sends a
wallet API key), but a request without one is admitted in the wallet role
only (:func:`issuer.http_api.wallet_only_without_certificate`): gRPC requires a
certificate on every connection, and the issuance role keeps that factor
over HTTP. Uvicorn's own logs go to the ``issuer.http`` logger's children at WARNING;
each RPC is logged once, by :class:`issuer.handlers.ObservedHandlers`.
RPC answers carry ``Cache-Control: no-store``; native gRPC
(``application/grpc``) is refused with 415 (it has its own listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import pathlib
import socket
import ssl
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import grpc
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from issuer.http_api import CapturingRegistrar, ConnectApp, connect_endpoints
from issuer.http_static import StaticFiles

__all__ = ["HttpOptions", "HttpServer", "Router", "RPC_PREFIX", "WALLET_PREFIX", "capture_handlers", "ssl_context"]

log = logging.getLogger("issuer.http")

RPC_PREFIX = "/healthcode."
#: Idle keep-alive connections are closed after this long (uvicorn's 5 s would make a phone that calls
#: every few seconds pay a new TLS handshake each time).
KEEP_ALIVE_SECONDS = 60
WALLET_PREFIX = "/wallet/"

#: The verified client certificate's subject CNs of the request being served (set by the router).
_PEER_NAMES: contextvars.ContextVar[tuple[bytes, ...]] = contextvars.ContextVar("issuer_http_peer", default=())
#: Whether the request being served lacks the client certificate the listener asks for (set by the router).
_CERTIFICATE_MISSING: contextvars.ContextVar[bool] = contextvars.ContextVar("issuer_http_no_cert", default=False)
_NO_STORE = (b"cache-control", b"no-store")


@dataclass(frozen=True, kw_only=True)
class HttpOptions:
    """The HTTP listener: ``listen`` host:port (port 0 picks a free one), the web wallet's built files
    (``static_dir``; ``None``: no ``/wallet/``), the wallet's ``keys.json`` (``key_list``: returns the
    key list's bytes now; ``issuer.app`` gives the issuer's own, :class:`issuer.key_list.ServedKeyList`),
    and the request body cap (the gRPC server's)."""

    listen: str = "127.0.0.1:8443"
    static_dir: pathlib.Path | None = None
    key_list: Callable[[], bytes] | None = None
    max_request_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        host, sep, port = self.listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("http listen must be host:port (for example 0.0.0.0:8443)")
        if self.max_request_bytes < 1024:
            raise ValueError("max_request_bytes must be at least 1024")


async def _plain(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:  # type: ignore[assignment]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Router:
    """The HTTP listener's ASGI application: RPCs, the wallet's files, ``/healthz``.

    An RPC whose ``Content-Length`` exceeds ``max_request_bytes`` is refused
    before its body is read (RESOURCE_EXHAUSTED, as gRPC refuses an oversized
    message: a Connect error, or a gRPC-Web trailers-only answer); a body sent
    without a length is cut at the same size by the Connect application while
    it is read. Native gRPC (``application/grpc``, ``application/grpc+proto``)
    is refused with 415. ``client_certificates``: the TLS listener asks for
    client certificates (a client CA is configured); an RPC without a verified
    one is then marked for :func:`issuer.http_api.wallet_only_without_certificate`.
    """

    def __init__(self, rpc: ConnectApp, *, static: StaticFiles | None, max_request_bytes: int,
                 client_certificates: bool = False) -> None:
        self._rpc = rpc
        self._static = static
        self._max = max_request_bytes
        self._client_certificates = client_certificates
        self.serving = True

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(RPC_PREFIX):
            await self._serve_rpc(scope, receive, send)
        elif self._static is not None and (path + "/").startswith(self._static.prefix):
            await self._static(scope, receive, send)
        elif path == "/healthz" and scope["method"] in ("GET", "HEAD"):
            await _plain(send, 200 if self.serving else 503, b"ok\n" if self.serving else b"shutting down\n")
        else:
            await _plain(send, 404, b"not found\n")

    async def _serve_rpc(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        content_type, length = b"", None
        for key, value in scope.get("headers", ()):
            if key == b"content-type":
                content_type = value.lower()
            elif key == b"content-length":
                length = value
        if _is_native_grpc(content_type):
            await _plain(send, 415, b"native gRPC is served on the gRPC port; here: Connect and gRPC-Web\n",
                         [_NO_STORE])
            return
        if length is not None and (not length.isdigit() or int(length) > self._max):
            await _too_large(send, self._max, grpc_web=content_type.startswith(b"application/grpc-web"))
            return
        tls = scope.get("extensions", {}).get("tls") or {}
        names = _PEER_NAMES.set(tuple(tls.get("client_cert_cns", ())))
        missing = _CERTIFICATE_MISSING.set(self._client_certificates and not tls.get("client_cert_verified", False))
        try:
            await self._rpc(scope, receive, _with_content_length(send))
        finally:
            _CERTIFICATE_MISSING.reset(missing)
            _PEER_NAMES.reset(names)


def _is_native_grpc(content_type: bytes) -> bool:
    """``application/grpc`` and ``application/grpc+<codec>`` (not gRPC-Web, ``application/grpc-web...``)."""
    media = content_type.partition(b";")[0].strip()
    return media == b"application/grpc" or media.startswith(b"application/grpc+")


def _with_content_length(send: Any) -> Any:
    """``send``, with ``Cache-Control: no-store`` on the response (an RPC's answer is never cached), and a
    ``Content-Length`` added to a response whose whole body comes in one message (every Connect unary
    answer): the server would otherwise send it chunked."""
    start: dict[str, Any] | None = None

    async def wrapped(message: dict[str, Any]) -> None:
        nonlocal start
        kind = message["type"]
        if kind == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), _NO_STORE]}
            if not message.get("trailers"):
                start = message  # held until the body shows whether it is whole
                return
        if start is not None and kind == "http.response.body":
            held, start = start, None
            if not message.get("more_body", False):
                body = message.get("body", b"")
                held = {**held, "headers": [*held.get("headers", ()), (b"content-length", b"%d" % len(body))]}
            await send(held)
        await send(message)

    return wrapped


async def _too_large(send: Any, limit: int, *, grpc_web: bool) -> None:
    """The answer to a body over the cap, sent before the body is read: a Connect error (HTTP 429), or for
    gRPC-Web, whose clients read the status from ``grpc-status``, a trailers-only answer (HTTP 200,
    RESOURCE_EXHAUSTED in the headers, no body). The connection stays open (no ``Connection: close``):
    uvicorn discards the rest of the body as it arrives, so the client reads this answer instead of a
    reset from a socket closed with unread data."""
    message = b"message is larger than configured max %d" % limit
    if grpc_web:
        status, body = 200, b""
        headers = [(b"content-type", b"application/grpc-web+proto"), (b"grpc-status", b"8"),
                   (b"grpc-message", message.replace(b" ", b"%20"))]
    else:
        status, body = 429, b'{"code":"resource_exhausted","message":"%s"}' % message
        headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body)), _NO_STORE]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _TlsPeerProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, with the verified client certificate's CNs in the scope
    (``extensions.tls.client_cert_cns``, after the ASGI TLS extension) and whether the handshake verified
    one (``client_cert_verified``)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        peer = ssl_object.getpeercert()  # a dict only for a certificate the handshake verified
        cns = tuple(value.encode() for rdn in (peer or {}).get("subject", ()) for key, value in rdn
                    if key == "commonName")
        self.scope["extensions"] = {"tls": {"client_cert_cns": cns, "client_cert_verified": bool(peer)}}


@contextlib.contextmanager
def _pem_files(cert_pem: bytes, key_pem: bytes) -> Iterator[tuple[str, str]]:
    """The certificate and key as files in a private temporary directory (``ssl`` loads files only),
    removed on exit."""
    with tempfile.TemporaryDirectory(prefix="issuer-http-tls-") as directory:  # mode 0700
        cert, key = pathlib.Path(directory, "cert.pem"), pathlib.Path(directory, "key.pem")
        cert.write_bytes(cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(key_pem)
        yield str(cert), str(key)


def ssl_context(cert_chain_pem: bytes, key_pem: bytes, client_ca_pem: bytes | None) -> ssl.SSLContext:
    """A TLS 1.2+ server context; with ``client_ca_pem``, client certificates optional in the handshake and
    verified if sent (the :class:`Router` admits a request without one in the wallet role only)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with _pem_files(cert_chain_pem, key_pem) as (cert, key):
        context.load_cert_chain(cert, key)
    if client_ca_pem is not None:
        context.load_verify_locations(cadata=client_ca_pem.decode("ascii"))
        context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    return context


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the issuer's shell (``issuer.app``)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpServer:
    """A started HTTP listener. Build with :meth:`start`; end with :meth:`stop`."""

    def __init__(self) -> None:  # use start()
        self.port: int
        self.router: Router
        self._server: _EmbeddedServer
        self._task: asyncio.Task[None]
        self._socket: socket.socket

    @classmethod
    async def start(
        cls,
        options: HttpOptions,
        *,
        handlers: Mapping[str, grpc.RpcMethodHandler],
        tls: Any,
        grace: float,
        max_concurrent: int | None = None,
    ) -> "HttpServer":
        """Serve ``handlers`` (wrapped gRPC method handlers by ``/pkg.Service/Method``, see
        :class:`~issuer.http_api.CapturingRegistrar`) on ``options.listen``; ``tls`` is the gRPC
        listener's :class:`~issuer.server.TlsMaterial`, or ``None`` for plaintext (development only)."""
        self = cls()
        endpoints = connect_endpoints(handlers, peer_names=lambda _ctx: _PEER_NAMES.get(),
                                      certificate_missing=lambda _ctx: _CERTIFICATE_MISSING.get())
        static = None
        if options.static_dir is not None:
            generated = {"keys.json": options.key_list} if options.key_list is not None else None
            static = StaticFiles(options.static_dir, WALLET_PREFIX, generated=generated)
        self.router = Router(ConnectApp(endpoints, max_request_bytes=options.max_request_bytes), static=static,
                             max_request_bytes=options.max_request_bytes,
                             client_certificates=tls is not None and tls.client_ca_pem is not None)
        context = None
        if tls is not None:
            context = ssl_context(tls.cert_chain_pem, tls.key_pem, tls.client_ca_pem)
        else:
            log.warning("serving PLAINTEXT HTTP (--insecure-dev-plaintext): development only")
        host, _, port = options.listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
        # a response's second write waits for the client's delayed ACK (measured: +40 ms a call)
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket.bind((host, int(port)))
            self._socket.listen(1024)
            self._socket.setblocking(False)
            self.port = self._socket.getsockname()[1]
            await self._serve(context, max_concurrent, grace, options.listen)
        except BaseException:
            self._socket.close()
            raise
        log.info("HTTP listening on port %d (%s)", self.port, "TLS" if context else "PLAINTEXT",
                 extra={"event": "http_listening", "port": self.port})
        return self

    async def _serve(self, context: ssl.SSLContext | None, max_concurrent: int | None, grace: float,
                     listen: str) -> None:
        config = uvicorn.Config(
            self.router, http=_TlsPeerProtocol, lifespan="off", log_config=None, access_log=False,
            server_header=False, date_header=True, proxy_headers=False, limit_concurrency=max_concurrent,
            timeout_graceful_shutdown=max(1, int(grace)), ws="none", interface="asgi3",
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        config.load()
        config.ssl = context  # our context (loaded from bytes, optional client certificates), not uvicorn's files
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
        logging.getLogger("uvicorn.access").disabled = True  # each RPC is logged once, by ObservedHandlers
        self._server = _EmbeddedServer(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # raises why it could not start
                raise OSError(f"cannot serve HTTP on {listen}")
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Refuse new connections, let requests in progress finish (within the grace), and stop."""
        self.router.serving = False
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def capture_handlers(service: Any, wrap: Any) -> dict[str, grpc.RpcMethodHandler]:
    """The wrapped method handlers of ``service`` (an :class:`~issuer.service.IssuerService`), by path."""
    registrar = CapturingRegistrar(wrap)
    service.add_to_server(registrar)
    return registrar.handlers
