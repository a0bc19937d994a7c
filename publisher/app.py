"""``healthcode-publisher serve``: the national trust publisher as a long-running gRPC service.

:func:`run` reads the files a :class:`~publisher.config.PublisherConfig` names
(TLS material, the online keys), opens the repository and the state directory,
starts the publication loop (which first publishes what a killed publisher left
staged) and the server, and serves until SIGTERM or SIGINT. Shutdown: health
NOT_SERVING, ``server.stop(grace)``, then the loop stops after publishing what
is staged.

The server is the issuer's, reused: TLS with required client certificates
(:class:`issuer.server.TlsMaterial`), authentication and roles
(:mod:`issuer.auth`: ``province:<code>`` and ``national:<name>`` CNs), one
JSON log line and metrics per RPC (:class:`issuer.handlers.ObservedHandlers`,
:mod:`issuer.logs`, :class:`issuer.metrics.Metrics`), the standard health
service and reflection.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from issuer import auth
from issuer.handlers import ObservedHandlers
from issuer.metrics import Metrics
from issuer.server import REFLECTION_V1, TlsMaterial, add_reflection_v1, close_after_stop, start_metrics
from keys.ceremony import open_repository
from keys.signers import RoleKeyFile, load_role_signer
from shellkit.files import read_secret
from shellkit.processes import stop_signals

from .checks import DEFAULT_LIMITS
from .config import PublisherConfig
from .errors import ConfigError
from .service import SERVICE_NAME, PublicationLoop, TrustPublisherService
from .store import PublisherStore

__all__ = ["PublisherServer", "run", "open_store"]

log = logging.getLogger("publisher.app")

#: A push carries at most ``max_push_bytes``; the gRPC cap leaves room for the framing.
MAX_MESSAGE_BYTES = DEFAULT_LIMITS.max_push_bytes + (1 << 20)
SERVICE_ROLES = {SERVICE_NAME: frozenset({auth.Role.PROVINCE, auth.Role.NATIONAL}),
                 "grpc.reflection.v1alpha.ServerReflection": frozenset(auth.Role),
                 REFLECTION_V1: frozenset(auth.Role)}


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def open_store(config: PublisherConfig, online_passphrase: bytes) -> PublisherStore:
    """The repository with its online signers, and the publisher's state. Raises :class:`ConfigError`."""
    from keys.errors import KeyManagementError, TrustRepoError

    try:
        online = ([load_role_signer(RoleKeyFile(config.online_keys, "snapshot"), online_passphrase)],
                  [load_role_signer(RoleKeyFile(config.online_keys, "timestamp"), online_passphrase)])
        repo = open_repository(config.repository, online=online)
    except (KeyManagementError, TrustRepoError, OSError) as exc:
        raise ConfigError(f"cannot open the repository or the online keys: {exc}") from None
    # a pushed role must outlive its publication and the next timestamp refresh
    min_validity = _dt.timedelta(seconds=config.batch_window + config.timestamp_refresh)
    return PublisherStore(repo, config.state_dir, min_validity=min_validity)


@dataclass
class PublisherServer:
    """A started publisher: the gRPC server, its servicer, the loop. End with :meth:`shutdown`."""

    server: grpc.aio.Server
    service: TrustPublisherService
    loop: PublicationLoop
    health: HealthServicer
    port: int
    metrics_port: int | None
    _metrics_httpd: Any = None

    @classmethod
    async def start(cls, config: PublisherConfig, store: PublisherStore, tls: TlsMaterial, *,
                    clock: Callable[[], _dt.datetime] = _utc_now) -> "PublisherServer":
        loop = PublicationLoop(store, batch_window=config.batch_window, timestamp_refresh=config.timestamp_refresh,
                               retention=_dt.timedelta(seconds=config.retention) if config.retention else None,
                               clock=clock)
        service = TrustPublisherService(store, loop, clock=clock)
        metrics = Metrics()
        authenticator = auth.Authenticator((), accept_client_certs=True)
        limiter = auth.RateLimiter(auth.RateLimit(config.rate, config.burst), clock=time.monotonic)
        observed = ObservedHandlers(metrics, admission=auth.Admission(authenticator, limiter,
                                                                      service_roles=SERVICE_ROLES))
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                                          ("grpc.so_reuseport", 0)])
        registrar = observed.registrar(server)
        service.add_to_server(registrar)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflector = reflection.aio.ReflectionServicer(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME,
             REFLECTION_V1])
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflector, registrar)
        add_reflection_v1(reflector, registrar)
        port = server.add_secure_port(config.listen, tls.credentials())
        if port == 0:
            raise OSError(f"cannot listen on {config.listen}")
        _publication_gauges(metrics, store, loop, clock)
        httpd, metrics_port = start_metrics((config.metrics_address, config.metrics_port) if config.metrics_port
                                            else None, metrics.registry)
        loop.start()  # what a killed publisher acknowledged is published first
        await server.start()
        await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        return cls(server, service, loop, health, port, metrics_port, httpd)

    async def shutdown(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await close_after_stop(self._metrics_httpd, None)
        await asyncio.to_thread(self.loop.stop)


def _publication_gauges(metrics: Metrics, store: PublisherStore, loop: PublicationLoop,
                        clock: Callable[[], _dt.datetime]) -> None:
    """The publisher's own series beside the per-RPC ones: what to alert on."""
    from prometheus_client import Gauge

    def timestamp_left() -> float:
        try:
            return (store.timestamp().expires - clock()).total_seconds()
        except (OSError, ValueError):
            return float("nan")

    for name, text, read in (
        ("healthcode_publisher_staged_pushes", "Pushes acknowledged but not yet published.",
         lambda: float(len(store.staged()))),
        ("healthcode_publisher_timestamp_expires_in_seconds", "Seconds until the published timestamp expires.",
         timestamp_left),
        ("healthcode_publisher_publications", "Publications (snapshot + timestamp) since start.",
         lambda: float(loop.publications)),
        ("healthcode_publisher_failed_publications", "Failed publication attempts since start.",
         lambda: float(loop.failures)),
    ):
        Gauge(name, text, registry=metrics.registry).set_function(read)


def tls_material(config: PublisherConfig) -> TlsMaterial:
    """The server's certificate, key (owner-only) and client CA, read from the configured files."""
    try:
        return TlsMaterial(config.tls_cert.read_bytes(), read_secret(config.tls_key, what="TLS key"),
                           config.client_ca.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"tls: {exc}") from None


async def run(config: PublisherConfig, *, online_passphrase: bytes,
              ready: Callable[[PublisherServer], None] | None = None) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then shut down gracefully."""
    tls = tls_material(config)
    store = open_store(config, online_passphrase)
    server = await PublisherServer.start(config, store, tls)
    try:
        with stop_signals() as stop:
            log.info("listening on port %d (%s; %d push(es) staged at start)", server.port,
                     "metrics off" if server.metrics_port is None else f"metrics port {server.metrics_port}",
                     len(store.staged()),
                     extra={"event": "listening", "port": server.port, "metrics_port": server.metrics_port})
            if ready is not None:
                ready(server)
            await stop.wait()
    finally:
        log.info("publisher shutting down", extra={"event": "shutdown"})
        await server.shutdown(config.grace_period)
        log.info("publisher stopped", extra={"event": "stopped"})
