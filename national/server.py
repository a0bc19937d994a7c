"""The national gRPC server: mTLS, admission, health, reflection, JSON logs, Prometheus metrics, shutdown.

:class:`NationalServer` assembles a ``grpc.aio`` server around a
:class:`~national.index.NationalIndex` and a :class:`~national.resolution.CodeResolver`,
from :class:`ServerOptions` holding bytes and values, not paths. It reuses the
issuer's shells: :class:`issuer.server.TlsMaterial` (mTLS is required here),
:class:`issuer.handlers.ObservedHandlers` (one JSON log line and metrics per
RPC, admission before the servicer), :class:`issuer.auth.RateLimiter` and the
issuer's reflection v1. :meth:`NationalServer.shutdown`: health NOT_SERVING,
``stop(grace)``, then ``on_close`` (the shell closes links, key and store).

Starting one in a test::

    server = await NationalServer.start(
        ServerOptions(tls=TlsMaterial(cert_pem, key_pem, client_ca_pem=ca_pem), listen="127.0.0.1:0"),
        index=NationalIndex(store=..., blind=..., release=links), resolver=CodeResolver(...))
    ... server.port ...
    await server.shutdown()
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from healthcode import PROVINCES
from issuer import auth
from issuer.handlers import ObservedHandlers
from issuer.server import REFLECTION_V1, TlsMaterial, add_reflection_v1, close_after_stop, start_metrics, utc_now

from .admission import HOSPITAL_RESOLUTION, NATIONAL_INDEX, NationalAdmission
from .api import national_index_pb2_grpc as pb_grpc
from .index import NationalIndex
from .resolution import CodeResolver
from .service import HospitalResolutionServicer, NationalIndexServicer

__all__ = ["NationalServer", "ServerOptions", "NationalMetrics", "TlsMaterial"]

log = logging.getLogger("national.app")
MAX_REQUEST_BYTES = 64 * 1024
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class NationalMetrics:
    """RPCs by method and status, and latency, in their own registry (what ObservedHandlers records)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.rpcs = Counter("healthcode_national_rpcs", "RPCs handled, by method and gRPC status code.",
                            ["method", "code"], registry=self.registry)
        self.latency = Histogram("healthcode_national_rpc_latency_seconds", "RPC latency in the server, by method.",
                                 ["method"], buckets=_LATENCY_BUCKETS, registry=self.registry)

    def observe_rpc(self, method: str, code: str, latency: float) -> None:
        self.rpcs.labels(method, code).inc()
        self.latency.labels(method).observe(latency)


@dataclass(frozen=True, kw_only=True)
class ServerOptions:
    """What the server needs besides the domain. ``tls.client_ca_pem`` is required (mTLS only)."""

    tls: TlsMaterial
    listen: str = "127.0.0.1:50070"
    hospital_limit: auth.RateLimit = auth.RateLimit(20.0, 40.0)
    province_limit: auth.RateLimit = auth.RateLimit(2000.0, 4000.0)
    per_caller: Mapping[str, auth.RateLimit] = field(default_factory=dict)
    metrics_listen: tuple[str, int] | None = None
    grace: float = 10.0

    def __post_init__(self) -> None:
        if self.tls.client_ca_pem is None:
            raise ValueError("the national service is served over mTLS only: a client CA is required")


class NationalServer:
    """A started national server. Build with :meth:`start`; end with :meth:`shutdown`."""

    def __init__(self) -> None:  # use start()
        self.server: grpc.aio.Server
        self.health: HealthServicer
        self.metrics: NationalMetrics
        self.port = 0
        self.metrics_port: int | None = None
        self._metrics_httpd: Any = None
        self._on_close: Callable[[], Awaitable[None] | None] | None = None
        self._grace = 0.0
        self._stopped = asyncio.Event()
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, options: ServerOptions, *, index: NationalIndex, resolver: CodeResolver,
                    clock: Callable[[], dt.datetime] = utc_now, monotonic: Callable[[], float] | None = None,
                    on_close: Callable[[], Awaitable[None] | None] | None = None) -> "NationalServer":
        import time

        self = cls()
        self._grace = options.grace
        self._on_close = on_close
        self.metrics = NationalMetrics()
        per_caller = {f"province:{code}": options.province_limit for code in PROVINCES}
        per_caller.update(options.per_caller)
        limiter = auth.RateLimiter(options.hospital_limit, per_caller, clock=monotonic or time.monotonic)
        observed = ObservedHandlers(self.metrics, admission=NationalAdmission(limiter))  # type: ignore[arg-type]
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
                                               ("grpc.so_reuseport", 0)])
        registrar = observed.registrar(self.server)
        pb_grpc.add_NationalIndexServicer_to_server(NationalIndexServicer(index, clock=clock), registrar)
        pb_grpc.add_HospitalResolutionServicer_to_server(HospitalResolutionServicer(resolver, clock=clock),
                                                         registrar)
        self.health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [NATIONAL_INDEX, HOSPITAL_RESOLUTION]
        reflector = reflection.aio.ReflectionServicer(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME,
             REFLECTION_V1])
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, registrar)
        add_reflection_v1(reflector, registrar)
        self.port = self.server.add_secure_port(options.listen, options.tls.credentials())
        if self.port == 0:
            raise OSError(f"cannot listen on {options.listen}")
        self._metrics_httpd, self.metrics_port = start_metrics(options.metrics_listen, self.metrics.registry)
        await self.server.start()
        for name in names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("national index serving", extra={"event": "start", "port": self.port})
        return self

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain and stop (idempotent): NOT_SERVING, stop(grace), metrics off, ``on_close``."""
        async with self._lock:
            if self._stopped.is_set():
                return
            await self.health.enter_graceful_shutdown()
            await self.server.stop(self._grace if grace is None else grace)
            await close_after_stop(self._metrics_httpd, self._on_close)
            self._stopped.set()
            log.info("national index stopped", extra={"event": "stopped"})

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
