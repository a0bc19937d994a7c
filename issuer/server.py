"""The issuer's gRPC server: TLS, auth, rate limits, health, reflection, logs, metrics, shutdown.

:class:`IssuerServer` assembles a ``grpc.aio`` server around an
:class:`~issuer.service.IssuerService` (any domain behind its two ports, so
tests can pass fakes) from :class:`ServerOptions` holding bytes and values, not
paths. :meth:`IssuerServer.shutdown` drains:

1. health turns NOT_SERVING (load balancers stop sending);
2. ``server.stop(grace)``: new RPCs are refused, in-flight ones get ``grace``
   seconds to finish;
3. domain calls still running after their RPC ended are awaited;
4. ``on_close`` runs (the serve shell, :mod:`issuer.app`, stops the revocation
   job, a pending publication first, then closes the store).

No interceptors: services register through :class:`~issuer.handlers.ObservedHandlers`,
which wraps each method handler once with one JSON log line and metrics per RPC and
with :class:`~issuer.auth.Admission` (authentication, roles, rate limits). Both leave
the standard health service alone. Logs carry the method, caller, status code
and latency, never request contents.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import start_http_server

from issuer import auth
from issuer.handlers import ObservedHandlers
from issuer.metrics import Metrics
from issuer.service import CodeIssuerPort, IssuerService, ResidentIndexPort, ServiceSettings

__all__ = [
    "TlsMaterial",
    "ServerOptions",
    "IssuerServer",
    "add_reflection_v1",
    "start_metrics",
    "close_after_stop",
    "utc_now",
]

log = logging.getLogger("issuer.app")  # the name the lifecycle lines have always carried (docs/api.md)

MAX_REQUEST_BYTES = 64 * 1024
#: How long shutdown waits for domain calls that outlived their RPCs before closing the store.
DRAIN_TIMEOUT = 30.0
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class TlsMaterial:
    """The server's certificate chain and key (PEM), and the CA its clients' certificates chain to.

    With ``client_ca_pem`` set, every connection must present a client
    certificate signed by it (gRPC Python cannot make client certificates
    optional); the certificate's CN is the caller unless an API key is sent.
    """

    cert_chain_pem: bytes
    key_pem: bytes = field(repr=False)
    client_ca_pem: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_chain_pem)],
            root_certificates=self.client_ca_pem,
            require_client_auth=self.client_ca_pem is not None,
        )


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """Everything the server needs besides the domain. ``tls=None`` means plaintext and is
    refused unless ``insecure_dev_plaintext`` is also set."""

    service: ServiceSettings
    listen: str = "127.0.0.1:50051"
    tls: TlsMaterial | None = None
    insecure_dev_plaintext: bool = False
    api_keys: tuple[auth.ApiKey, ...] = ()
    issuance_clients: frozenset[str] = frozenset()  # client-certificate CNs with the issuance role
    wallet_clients: frozenset[str] = frozenset()  # client-certificate CNs with the wallet role
    rate_limit: auth.RateLimit | None = auth.RateLimit(100.0, 200.0)
    #: The wallet role's default bucket (a keys-file entry's own rate still wins); stricter than ``rate_limit``.
    wallet_rate_limit: auth.RateLimit = auth.DEFAULT_WALLET_RATE_LIMIT
    metrics_listen: tuple[str, int] | None = None  # (address, port); port 0 picks a free one
    grace: float = 10.0
    max_concurrent_rpcs: int | None = None
    #: The HTTP listener (Connect, gRPC-Web, the web wallet's files: issuer/http_server.py); None: gRPC only.
    http: Any = None

    def __post_init__(self) -> None:
        if self.tls is None and not self.insecure_dev_plaintext:
            raise ValueError("TLS material is required (plaintext only with insecure_dev_plaintext)")



# --------------------------------------------------------------------------- reflection v1

REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _v1_reflection_descriptor() -> None:
    """Put ``grpc/reflection/v1/reflection.proto`` in the default descriptor pool (idempotent).

    grpcio-reflection (1.85) ships v1alpha only. v1 has the same messages with the
    same field numbers in package ``grpc.reflection.v1``, so its descriptor is
    v1alpha's renamed, and the v1alpha servicer and message classes serve it.
    """
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName("grpc/reflection/v1/reflection.proto")
        return
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's is marked deprecated; v1 is not
    messages = list(proto.message_type)
    while messages:
        message = messages.pop()
        messages.extend(message.nested_type)
        for f in message.field:
            if f.type_name.startswith(old):
                f.type_name = new + f.type_name[len(old):]
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type[len(old):]
            method.output_type = new + method.output_type[len(old):]
    pool.AddSerializedFile(proto.SerializeToString())


def add_reflection_v1(servicer: Any, server: Any) -> None:
    """Serve ``servicer`` (a v1alpha reflection servicer) as ``grpc.reflection.v1.ServerReflection`` too:
    grpcurl and IDE clients ask for v1 first."""
    _v1_reflection_descriptor()
    handlers = {"ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(REFLECTION_V1, handlers),))
    server.add_registered_method_handlers(REFLECTION_V1, handlers)


def start_metrics(listen: tuple[str, int] | None, registry: Any) -> tuple[Any, int | None]:
    """Serve ``registry`` to Prometheus over HTTP on ``listen`` (address, port; port 0: a free one) in a
    thread: (the HTTP server, for :func:`close_after_stop`; its port), or (None, None) when ``listen`` is None."""
    if listen is None:
        return None, None
    address, port = listen
    httpd, _ = start_http_server(port, addr=address, registry=registry)
    return httpd, httpd.server_port


async def close_after_stop(metrics_httpd: Any, on_close: Callable[[], Awaitable[None] | None] | None) -> None:
    """The last steps of a server's shutdown, once it serves no more (the issuer's, the national index's and
    the trust publisher's): its metrics HTTP server (``prometheus_client.start_http_server``'s; None when off)
    stopped, then ``on_close`` run (awaited when it returns a coroutine)."""
    if metrics_httpd is not None:
        metrics_httpd.shutdown()
        metrics_httpd.server_close()
    if on_close is not None:
        result = on_close()
        if asyncio.iscoroutine(result):
            await result


# --------------------------------------------------------------------------- the server


class IssuerServer:
    """A started issuer server. Build with :meth:`start`; end with :meth:`shutdown`."""

    def __init__(self) -> None:  # use start()
        self.server: grpc.aio.Server
        self.service: IssuerService
        self.health: HealthServicer
        self.metrics: Metrics
        self.port: int
        self.metrics_port: int | None = None
        self.service_names: list[str] = []
        self._metrics_httpd: Any = None
        self.http: Any = None  # issuer.http_server.HttpServer when options.http is set
        self.http_port: int | None = None
        self._on_close: Callable[[], Awaitable[None] | None] | None = None
        self._grace = 0.0
        self._stopped = asyncio.Event()
        self._shutdown_lock = asyncio.Lock()

    @classmethod
    async def start(
        cls,
        options: ServerOptions,
        *,
        index: ResidentIndexPort,
        codes: CodeIssuerPort,
        clock: Callable[[], dt.datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        on_close: Callable[[], Awaitable[None] | None] | None = None,
        key_admin: Any = None,
        wallets: Any = None,
        national_link: Any = None,
    ) -> "IssuerServer":
        self = cls()
        self._grace = options.grace
        self._on_close = on_close
        self.metrics = Metrics()
        self.service = IssuerService(
            index=index, codes=codes, settings=options.service, clock=clock, on_issued=self.metrics.on_issued,
            wallets=wallets,
        )
        per_caller = {k.caller: k.rate_limit for k in options.api_keys if k.rate_limit is not None}
        authenticator = auth.Authenticator(
            options.api_keys, accept_client_certs=options.tls is not None and options.tls.client_ca_pem is not None,
            issuance_clients=options.issuance_clients, wallet_clients=options.wallet_clients,
        )
        # No interceptors: every servicer registers through a registrar that wraps its
        # method handlers once with timing, logs, metrics, authentication and rate limits.
        observed = ObservedHandlers(
            self.metrics,
            admission=auth.Admission(authenticator, auth.RateLimiter(
                options.rate_limit, per_caller, per_role={auth.Role.WALLET: options.wallet_rate_limit},
                clock=monotonic)),
        )
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=options.max_concurrent_rpcs,
        )
        registrar = observed.registrar(self.server)
        self.service_names = self.service.add_to_server(registrar)
        if key_admin is not None:  # issuer/key_admin.py: keys are administered over mTLS only
            if options.tls is None or options.tls.client_ca_pem is None:
                raise ValueError("the KeyAdmin service needs mTLS (a client CA)")
            self.service_names.append(key_admin.add_to_server(registrar))
        if national_link is not None:  # issuer/national_link_service.py: the national service calls over mTLS only
            if options.tls is None or options.tls.client_ca_pem is None:
                raise ValueError("the NationalLink service needs mTLS (a client CA)")
            self.service_names.append(national_link.add_to_server(registrar, self.service))
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        # reflection.enable_server_reflection picks the asyncio servicer only for a grpc.aio.Server itself
        reflector = reflection.aio.ReflectionServicer(
            [*self.service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME,
             REFLECTION_V1])
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, registrar)
        add_reflection_v1(reflector, registrar)
        if options.tls is not None:
            self.port = self.server.add_secure_port(options.listen, options.tls.credentials())
        else:
            log.warning("serving PLAINTEXT gRPC (--insecure-dev-plaintext): development only")
            self.port = self.server.add_insecure_port(options.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {options.listen}")
        self._metrics_httpd, self.metrics_port = start_metrics(options.metrics_listen, self.metrics.registry)
        await self.server.start()
        if options.http is not None:  # the same wrapped handlers over Connect and gRPC-Web (issuer/http_server.py)
            from issuer.http_server import HttpServer, capture_handlers

            try:
                self.http = await HttpServer.start(
                    options.http, handlers=capture_handlers(self.service, observed.wrap), tls=options.tls,
                    grace=options.grace, max_concurrent=options.max_concurrent_rpcs)
            except BaseException:
                await self.server.stop(0)
                raise
            self.http_port = self.http.port
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("issuer serving", extra={"event": "start"})
        return self

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain and stop (idempotent): NOT_SERVING, stop(grace), finish domain calls, close the store."""
        async with self._shutdown_lock:
            if self._stopped.is_set():
                return
            log.info("issuer shutting down", extra={"event": "shutdown"})
            await self.health.enter_graceful_shutdown()  # (1)
            stopping = [self.server.stop(self._grace if grace is None else grace)]  # (2)
            if self.http is not None:
                stopping.append(self.http.stop())
            await asyncio.gather(*stopping)
            try:  # (3)
                await asyncio.wait_for(self.service.drain(), DRAIN_TIMEOUT)
            except TimeoutError:
                log.warning("domain calls still running after %.0f s; closing the store anyway", DRAIN_TIMEOUT)
            await close_after_stop(self._metrics_httpd, self._on_close)  # (4)
            self._stopped.set()
            log.info("issuer stopped", extra={"event": "stopped"})

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

