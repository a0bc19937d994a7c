"""The issuer's gRPC server: TLS, auth, rate limits, health, reflection, logs, metrics, shutdown.

:class:`IssuerServer` assembles a ``grpc.aio`` server around an
:class:`~issuer.service.IssuerService` (any domain behind its two ports, so
tests can pass fakes) from :class:`ServerOptions` holding bytes and values, not
paths. :func:`run` is the shell ``healthcode-issuer serve`` calls: it reads
the files an :class:`~issuer.config.IssuerConfig` names, opens the store
(SQLite, or PostgreSQL for a ``postgresql://`` database URL), builds the
domain, serves until SIGTERM/SIGINT, then shuts down:

1. health turns NOT_SERVING (load balancers stop sending);
2. ``server.stop(grace)``: new RPCs are refused, in-flight ones get ``grace``
   seconds to finish;
3. domain calls still running after their RPC ended are awaited;
4. the revocation job, if configured, is stopped (a pending publication runs first);
5. the store is closed.

No interceptors: services register through :class:`ObservedHandlers`, which
wraps each method handler once with one JSON log line and metrics per RPC and
with :class:`~issuer.auth.Admission` (authentication, roles, rate limits). Both leave
the standard health service alone. Logs carry the method, caller, status code
and latency, never request contents.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import atexit
import inspect
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

import healthcode as hc
from issuer import auth
from issuer.config import ConfigError, IssuerConfig
from issuer.model import IssuedCode
from issuer.service import CodeIssuerPort, IssuerService, ResidentIndexPort, ServiceSettings
from shellkit.files import InsecureFileMode, read_secret

if TYPE_CHECKING:
    from issuer.issuance import CodeIssuer

__all__ = [
    "TlsMaterial",
    "ServerOptions",
    "Metrics",
    "ObservedHandlers",
    "JsonFormatter",
    "BatchingStreamHandler",
    "IssuerServer",
    "configure_logging",
    "load_signer_pem",
    "parse_vault_secret",
    "run",
    "utc_now",
]

log = logging.getLogger("issuer.app")
rpc_log = logging.getLogger("issuer.rpc")

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
    rate_limit: auth.RateLimit | None = auth.RateLimit(100.0, 200.0)
    metrics_listen: tuple[str, int] | None = None  # (address, port); port 0 picks a free one
    grace: float = 10.0
    max_concurrent_rpcs: int | None = None

    def __post_init__(self) -> None:
        if self.tls is None and not self.insecure_dev_plaintext:
            raise ValueError("TLS material is required (plaintext only with insecure_dev_plaintext)")


# --------------------------------------------------------------------------- logs and metrics

_RECORD_FIELDS = ("event", "method", "caller", "code", "latency_ms", "port", "metrics_port", "source")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the RPC fields if present."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.__dict__.get("json_line")
        if line is not None:  # made with the record (_rpc_record): the same fields, in this order
            return line
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _RECORD_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__  # the type only: a message may quote data
        return _JSON_ENCODER.encode(entry)  # json.dumps(entry, ensure_ascii=False, separators=(",", ":"))


#: One encoder for every line: ``json.dumps`` with non-default options builds a new one per call.
_JSON_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class BatchingStreamHandler(logging.StreamHandler):
    """A stream handler that writes the per-RPC lines (logger ``batch_logger``) in batches.

    Why: under load, one ``write`` per RPC from the event-loop thread releases
    the GIL and then waits to take it back from the store's writer and gRPC's
    poller threads; measured in the issuer, 40-65 µs of wall time per RPC line
    against ~12 µs of formatting. Here RPC lines are written together: when
    ``max_pending`` are waiting, else by a daemon thread every ``interval``
    seconds. Every other record (lifecycle events, warnings, errors) is
    written at once, after the lines pending before it, so order is kept.
    A SIGKILL loses at most ``interval`` seconds of RPC lines; ``close`` (run
    by :func:`logging.shutdown` at exit) writes the rest.
    """

    def __init__(self, stream: Any = None, *, batch_logger: str = "issuer.rpc", interval: float = 0.2,
                 max_pending: int = 256) -> None:
        super().__init__(stream)
        self._batch_logger = batch_logger
        self._interval = interval
        self._max_pending = max_pending
        self._pending: list[str] = []
        self._closed = threading.Event()
        threading.Thread(target=self._flush_periodically, name="log-flusher", daemon=True).start()

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            self._pending.append(self.format(record))
            if (record.name != self._batch_logger or record.levelno >= logging.WARNING
                    or len(self._pending) >= self._max_pending):
                self._write_pending()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _write_pending(self) -> None:
        if self._pending:
            text = "\n".join(self._pending) + "\n"
            self._pending.clear()
            self.stream.write(text)
            self.stream.flush()

    def flush(self) -> None:
        lock = self.lock
        assert lock is not None  # logging.Handler.__init__ created it (createLock)
        with lock:
            try:
                self._write_pending()
            except (OSError, ValueError):  # the stream went away (closed pipe, closed file)
                self._pending.clear()

    def _flush_periodically(self) -> None:
        while not self._closed.wait(self._interval):
            self.flush()

    def close(self) -> None:
        self._closed.set()
        self.flush()
        super().close()


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines (per-RPC lines in batches).

    With the default stream, what native code writes to file descriptor 2 (gRPC's C core
    through absl: ``I1207 04:22:23.065807 14440 ssl_transport_security.cc:2563] Handshake
    failed ...``) becomes JSON lines too (:class:`NativeStderr`), so every line of the
    server's log is JSON.
    """
    for old in logging.getLogger().handlers:
        if isinstance(old, BatchingStreamHandler):
            old.close()
    if stream is None:
        stream = NativeStderr.install().stderr
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


#: absl's log prefix: severity, MMDD, time (``00:00:<unix seconds>`` before absl is initialised),
#: thread id, file:line, "] ".
_ABSL_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ ([^\]\s]+)\] ?(.*)$")
_ABSL_LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}
native_log = logging.getLogger("grpc.core")


class NativeStderr:
    """File descriptor 2 routed into :mod:`logging`: native lines become records of logger ``grpc.core``.

    ``install`` keeps the real stderr on a new descriptor (:attr:`stderr`, also
    ``sys.stderr`` from then on, so Python's own messages and a CLI's ``Error:``
    line go straight out), points descriptor 2 at a pipe, and a daemon thread
    turns each line read from it into a record: absl's severity letter as the
    level, ``file.cc:line`` as ``source``, the rest as the message (an
    unrecognised line is a WARNING as written). At exit, descriptor 2 is put
    back and the lines still in the pipe are logged before logging shuts down.
    What a native crash writes just before the process dies may be lost.
    Installed once per process.
    """

    _installed: "NativeStderr | None" = None

    def __init__(self) -> None:
        sys.stderr.flush()
        self._saved = os.dup(2)
        self.stderr = open(self._saved, "w", encoding="utf-8", errors="replace", buffering=1, closefd=False)  # noqa: SIM115
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
        sys.stderr = self.stderr
        self._reader = threading.Thread(target=self._pump, args=(read_end,), name="native-stderr", daemon=True)
        self._reader.start()
        atexit.register(self.restore)

    @classmethod
    def install(cls) -> "NativeStderr":
        if cls._installed is None:
            cls._installed = cls()
        return cls._installed

    @staticmethod
    def record(line: str) -> None:
        """Log one native line (see the class docstring)."""
        match = _ABSL_LINE.match(line)
        if match is None:
            native_log.warning("%s", line, extra={"event": "native"})
        else:
            native_log.log(_ABSL_LEVELS[match[1]], "%s", match[3], extra={"event": "native", "source": match[2]})

    def _pump(self, fd: int) -> None:
        with open(fd, "rb") as pipe:
            for raw in pipe:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    try:
                        self.record(line)
                    except Exception:  # pragma: no cover - logging must not kill the pump
                        pass

    def restore(self) -> None:
        """Put the real stderr back on descriptor 2 (ending the pipe) and log what was left in it."""
        os.dup2(self._saved, 2)
        self._reader.join(2.0)


class Metrics:
    """The issuer's Prometheus metrics, in their own registry (several servers may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.codes_issued = Counter(
            "healthcode_issuer_codes_issued",
            "Codes returned by IssueCode and RenewCode (idempotent replays included), by province.",
            ["province"],
            registry=self.registry,
        )
        self.rpcs = Counter(
            "healthcode_issuer_rpcs",
            "RPCs handled, by method and gRPC status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "healthcode_issuer_rpc_latency_seconds",
            "RPC latency in the server, by method.",
            ["method"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._issued_children: dict[str, Any] = {}

    def observe_rpc(self, method: str, code: str, latency: float) -> None:
        children = self._children.get((method, code))
        if children is None:  # labels() takes a lock and builds a key: do it once per series
            children = self._children[(method, code)] = (
                self.rpcs.labels(method, code), self.latency.labels(method))
        children[0].inc()
        children[1].observe(latency)

    def on_issued(self, code: IssuedCode) -> None:
        province = code.ref.province
        child = self._issued_children.get(province)
        if child is None:
            child = self._issued_children[province] = self.codes_issued.labels(province)
        child.inc()


_RPC_RECORD_TEMPLATE = logging.LogRecord("issuer.rpc", logging.INFO, "(rpc)", 0, "rpc", (), None).__dict__


class _Timestamps:
    """ISO 8601 UTC text of ``time.time()`` values to the millisecond, as :class:`JsonFormatter` writes
    them; the part up to the second is formatted once a second."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{int((created - second) * 1000):03d}+00:00"


def _rpc_record(method: str, caller: str | None, code: str, latency_ms: float) -> logging.LogRecord:
    """The per-RPC log record, its JSON line made here (see :meth:`JsonFormatter.format`).

    ``Logger.makeRecord`` and the generic formatter cost ~13 µs a line, a
    measurable share of a ~300 µs RPC; this costs ~4. Every value is known to
    need no JSON escaping: ``method`` is a registered method name, ``code`` a
    status name, ``caller`` matched :data:`issuer.auth` 's caller-name pattern.
    """
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(_RPC_RECORD_TEMPLATE)
    created = time.time()
    fields.update(created=created, msecs=(created - int(created)) * 1000, event="rpc", method=method, caller=caller,
                  code=code, latency_ms=latency_ms)
    who = "null" if caller is None else f'"{caller}"'
    fields["json_line"] = (
        f'{{"ts":"{_timestamp(created)}","level":"INFO","logger":"issuer.rpc","msg":"rpc","event":"rpc",'
        f'"method":"{method}","caller":{who},"code":"{code}","latency_ms":{latency_ms}}}'
    )
    return record


_timestamp = _Timestamps()


def _wrap_handler(handler: grpc.RpcMethodHandler, around: Callable[[Any, grpc.aio.ServicerContext, Callable], Any]):
    """A copy of ``handler`` whose behaviour runs inside ``around(request, context, behaviour)``.

    Works for all four RPC kinds. ``around`` returns an awaitable that awaits
    ``behaviour(request, context)``, or, when the behaviour is an async
    generator (streaming responses), an async iterator over it. Streaming
    handlers that write with ``context.write`` are plain coroutines and are
    awaited like unary ones.
    """
    if handler.request_streaming and handler.response_streaming:
        behaviour, factory = handler.stream_stream, grpc.stream_stream_rpc_method_handler
    elif handler.request_streaming:
        behaviour, factory = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    elif handler.response_streaming:
        behaviour, factory = handler.unary_stream, grpc.unary_stream_rpc_method_handler
    else:
        behaviour, factory = handler.unary_unary, grpc.unary_unary_rpc_method_handler

    if handler.response_streaming and inspect.isasyncgenfunction(behaviour):

        async def streaming(request, context):
            async for item in around(request, context, behaviour):
                yield item

        wrapped = streaming
    else:

        async def unary(request, context):
            return await around(request, context, behaviour)

        wrapped = unary
    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ObservedHandlers:
    """Wraps each method handler, once, when its service registers: admission and observability.

    Every RPC outside ``exempt_services`` is timed, counted by status code and
    logged as one JSON line; with ``admission`` (an
    :class:`~issuer.auth.Admission`) every RPC it does not exempt is
    authenticated, checked against its service's roles and rate-limited
    before the servicer runs. Services register
    on :meth:`registrar` instead of the server.

    Why not ``grpc.aio`` interceptors: an interceptor pipeline runs per call,
    before the handler is found, as coroutines; wrapping at registration costs
    nothing per call beyond the wrapper itself (measured: see
    docs/benchmarks.md, "Issuer").
    """

    def __init__(self, metrics: Metrics, *, exempt_services: Iterable[str] = (auth.HEALTH_SERVICE,),
                 admission: auth.Admission | None = None) -> None:
        self._metrics = metrics
        self._exempt = frozenset(exempt_services)
        self._admission = admission

    def registrar(self, server: grpc.aio.Server) -> "_Registrar":
        """A stand-in for ``server`` that generated ``add_*_to_server`` functions register on."""
        return _Registrar(server, self.wrap)

    def _record(self, method: str, context: grpc.aio.ServicerContext, start: float,
                error: BaseException | None) -> None:
        latency = time.perf_counter() - start
        code = context.code()
        if isinstance(error, asyncio.CancelledError):
            remaining = context.time_remaining()
            code = grpc.StatusCode.DEADLINE_EXCEEDED if remaining is not None and remaining <= 0 else (
                grpc.StatusCode.CANCELLED)
        elif code is None:
            code = grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN
        name = code.name if isinstance(code, grpc.StatusCode) else str(code)
        self._metrics.observe_rpc(method, name, latency)
        if rpc_log.isEnabledFor(logging.INFO):
            rpc_log.handle(_rpc_record(method, auth.peek_caller(), name, round(latency * 1000, 3)))

    def wrap(self, full_method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        """``handler`` of ``full_method`` (``/pkg.Service/Method``) with admission and observability."""
        admission = self._admission
        if admission is not None and admission.exempt(full_method):
            admission = None
        observed = auth.service_of(full_method) not in self._exempt
        if not observed and admission is None:
            return handler
        method = full_method.lstrip("/")
        check = admission.checker(full_method) if admission is not None else None  # roles of this service
        if handler.request_streaming or handler.response_streaming or not observed:
            return _wrap_handler(handler, self._around(method, check, observed))
        # Unary-unary (every issuer RPC): one coroutine does timing, admission and the call.
        record, behaviour = self._record, handler.unary_unary
        perf_counter, clear_caller = time.perf_counter, auth.clear_caller

        async def unary(request, context):
            start, error = perf_counter(), None
            clear_caller()
            try:
                if check is not None:
                    refusal = check(context)
                    if refusal is not None:
                        await context.abort(*refusal)
                return await behaviour(request, context)
            except BaseException as e:
                error = e
                raise
            finally:
                record(method, context, start, error)

        return grpc.unary_unary_rpc_method_handler(
            unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _around(self, method: str, check: Callable[[grpc.aio.ServicerContext], Any] | None, observed: bool):
        record = self._record

        async def admit(context) -> None:
            if check is not None:
                refusal = check(context)
                if refusal is not None:
                    await context.abort(*refusal)

        def around(request, context, behaviour):
            if inspect.isasyncgenfunction(behaviour):

                async def gen():
                    start, error = time.perf_counter(), None
                    auth.clear_caller()
                    try:
                        await admit(context)
                        async for item in behaviour(request, context):
                            yield item
                    except BaseException as e:
                        error = e
                        raise
                    finally:
                        if observed:
                            record(method, context, start, error)

                return gen()

            async def call():
                start, error = time.perf_counter(), None
                auth.clear_caller()
                try:
                    await admit(context)
                    return await behaviour(request, context)
                except BaseException as e:
                    error = e
                    raise
                finally:
                    if observed:
                        record(method, context, start, error)

            return call()

        return around


class _Registrar:
    """Stands in for the server while services register: every method handler is wrapped once."""

    def __init__(self, server: grpc.aio.Server, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler]):
        self._server = server
        self._wrap = wrap

    def add_generic_rpc_handlers(self, generic_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGenericHandler(h, self._wrap) for h in generic_handlers))

    def add_registered_method_handlers(self, service: str, method_handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        self._server.add_registered_method_handlers(
            service, {name: self._wrap(f"/{service}/{name}", h) for name, h in method_handlers.items()})


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come wrapped (each wrapped once, on first use)."""

    def __init__(self, inner: grpc.GenericRpcHandler, wrap) -> None:
        self._inner = inner
        self._wrap = wrap
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            wrapped = self._wrapped[method] = self._wrap(method, handler)
        return wrapped


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
            issuance_clients=options.issuance_clients,
        )
        # No interceptors: every servicer registers through a registrar that wraps its
        # method handlers once with timing, logs, metrics, authentication and rate limits.
        observed = ObservedHandlers(
            self.metrics,
            admission=auth.Admission(authenticator, auth.RateLimiter(options.rate_limit, per_caller, clock=monotonic)),
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
        if options.metrics_listen is not None:
            address, port = options.metrics_listen
            self._metrics_httpd, _ = start_http_server(port, addr=address, registry=self.metrics.registry)
            self.metrics_port = self._metrics_httpd.server_port
        await self.server.start()
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
            await self.server.stop(self._grace if grace is None else grace)  # (2)
            try:  # (3)
                await asyncio.wait_for(self.service.drain(), DRAIN_TIMEOUT)
            except TimeoutError:
                log.warning("domain calls still running after %.0f s; closing the store anyway", DRAIN_TIMEOUT)
            if self._metrics_httpd is not None:
                self._metrics_httpd.shutdown()
                self._metrics_httpd.server_close()
            if self._on_close is not None:  # (4)
                result = self._on_close()
                if asyncio.iscoroutine(result):
                    await result
            self._stopped.set()
            log.info("issuer stopped", extra={"event": "stopped"})

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


# --------------------------------------------------------------------------- the serve shell


def load_signer_pem(pem: bytes, passphrase: bytes | None) -> hc.Signer:
    """A software :class:`healthcode.Signer` from a PKCS#8 PEM key (P-256 -> ES256, Ed25519 -> EdDSA).

    Interim: the keystore issue replaces this with real key handling.
    """
    try:
        key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError:
        raise ConfigError("the signing key is encrypted: set keys.signing_key_passphrase_env") from None
    except ValueError:
        raise ConfigError("cannot read the signing key (not a PKCS#8 PEM, or a wrong passphrase)") from None
    if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
        secret = key.private_numbers().private_value.to_bytes(32, "big")
        algorithm = hc.Algorithm.ES256
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        secret = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        algorithm = hc.Algorithm.EDDSA
    else:
        raise ConfigError("the signing key must be a P-256 (ES256) or Ed25519 (EdDSA) key")
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(algorithm, secret))


def parse_vault_secret(text: bytes) -> bytes:
    """The 32-byte vault secret from its file: 64 hex digits (surrounding whitespace ignored)."""
    try:
        secret = bytes.fromhex(text.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise ConfigError("the vault key file must hold 64 hex digits") from None
    if len(secret) != 32:
        raise ConfigError("the vault key file must hold 64 hex digits (32 bytes)")
    return secret


def _read(path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def _read_secret(path, what: str) -> bytes:
    """A secret file's bytes; a :class:`ConfigError` saying ``chmod 600 <path>`` when group or others
    have any permission on it (another local user could read or replace the secret)."""
    try:
        return read_secret(path, what=what)
    except InsecureFileMode as e:
        raise ConfigError(str(e)) from None
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror}") from None


def server_options(config: IssuerConfig) -> ServerOptions:
    """The :class:`ServerOptions` an :class:`IssuerConfig` describes (reads the TLS and key files;
    the TLS private key and the API keys file must be owner-only)."""
    tls = None
    if not config.insecure_dev_plaintext:
        tls = TlsMaterial(
            cert_chain_pem=_read(config.tls_cert, "TLS certificate"),
            key_pem=_read_secret(config.tls_key, "TLS key"),
            client_ca_pem=_read(config.client_ca, "client CA") if config.client_ca else None,
        )
    api_keys: tuple[auth.ApiKey, ...] = ()
    if config.api_keys is not None:
        try:
            api_keys = tuple(auth.load_api_keys(config.api_keys))
        except InsecureFileMode as e:
            raise ConfigError(str(e)) from None
        except OSError as e:
            raise ConfigError(f"cannot read API keys file {config.api_keys}: {e.strerror}") from None
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return ServerOptions(
        service=ServiceSettings(province=config.province, min_time_remaining=config.min_time_remaining),
        listen=config.listen,
        tls=tls,
        insecure_dev_plaintext=config.insecure_dev_plaintext,
        api_keys=api_keys,
        issuance_clients=frozenset(config.issuance_clients),
        rate_limit=auth.RateLimit(config.rate, config.burst),
        metrics_listen=(config.metrics_address, config.metrics_port) if config.metrics_port else None,
        grace=config.grace_period,
        max_concurrent_rpcs=config.max_concurrent_rpcs,
    )


def build_domain(
    config: IssuerConfig, *, signer: Any, vault_secret: bytes
) -> tuple[ResidentIndexPort, CodeIssuer, Callable[[], None]]:
    """Open the store (an SQLite file, or PostgreSQL for a ``postgresql://`` URL) and build the
    resident index and the code issuer over it.

    ``signer`` is one fixed :class:`healthcode.Signer` or a
    :class:`keys.lifecycle.RotatingSigner` (its per-key code counts are then
    seeded from the store's serials). Returns ``(index, codes, close)``;
    ``close`` closes the store.
    """
    from issuer.index import ResidentIndex
    from issuer.issuance import CodeIssuer
    from issuer.privacy import IdentifierVault
    from issuer.store import open_store
    from keys.rotating_signer import RotatingSigner

    store = open_store(config.database)
    try:
        vault = IdentifierVault.from_secret(vault_secret)
        index = ResidentIndex(store=store, vault=vault)
        if isinstance(signer, RotatingSigner):
            signer.count_codes_from(lambda kid: store.next_serial(config.province, kid))
            codes = CodeIssuer(store=store, signer_for=_rotating_signer_for(signer), province=config.province,
                               validity=config.code_validity)
        else:
            codes = CodeIssuer(store=store, signer=signer, province=config.province, validity=config.code_validity)
    except BaseException:
        store.close()
        raise
    return index, codes, store.close


def _rotating_signer_for(rotating: Any) -> Callable[[dt.datetime], hc.Signer]:
    """``rotating.signer_for`` with "no key now" and "cap reached" as :class:`NoSigningKey` (FAILED_PRECONDITION)."""
    from issuer.errors import NoSigningKey
    from keys.errors import CodeCapReached, NoActiveKey

    def signer_for(now: dt.datetime) -> hc.Signer:
        try:
            return rotating.signer_for(now)
        except (NoActiveKey, CodeCapReached) as exc:
            raise NoSigningKey(exc.detail) from None

    return signer_for


def open_rotating_signer(config: IssuerConfig, secret: bytes | None) -> tuple[Any, Callable[[], None]]:
    """The :class:`keys.lifecycle.RotatingSigner` over ``config.key_set`` and its keystore
    (``secret``: the file keystore's passphrase or the token's PIN); returns it and the keystore's close."""
    from keys.errors import KeyManagementError
    from keys.keystore import open_keystore
    from keys.rotating_signer import RotatingSigner

    if config.key_set is None:
        raise ConfigError("rotating keys need keys.key_set")
    try:
        keystore = open_keystore(config.keystore, secret=secret, directory=config.keystore_dir,
                                 module=config.pkcs11_module, token=config.pkcs11_token)
    except (KeyManagementError, ValueError) as exc:
        raise ConfigError(f"cannot open the {config.keystore} keystore: {exc}") from None
    try:
        rotating = RotatingSigner.from_file(config.key_set, keystore, province=config.province)
    except KeyManagementError as exc:
        keystore.close()
        raise ConfigError(f"cannot use key set {config.key_set}: {exc}") from None
    if config.code_validity > rotating.key_set.policy.max_code_validity:
        keystore.close()
        raise ConfigError("code_validity_hours exceeds the key set's max_code_validity: codes would outlive their key")
    return rotating, keystore.close


async def run(
    config: IssuerConfig,
    *,
    signing_key_passphrase: bytes | None = None,
    ready: Callable[[IssuerServer], None] | None = None,
    tuf_keys_passphrase: bytes | None = None,
    online_keys_passphrase: bytes | None = None,
) -> None:
    """Serve ``config`` until SIGTERM or SIGINT, then shut down gracefully.

    With ``config.key_set``, codes are signed by a rotating signer whose key-set
    file is re-read every ``key_set_check_interval`` seconds and on SIGHUP.
    With ``config.revocation_directory``, a revocation job publishes revoked
    codes hourly and soon after each revoking RPC (``issuer/revocation_job.py``).
    """
    options = server_options(config)
    close_keystore: Callable[[], None] | None = None
    if config.key_set is not None:
        signer, close_keystore = open_rotating_signer(config, signing_key_passphrase)
    else:
        signer = load_signer_pem(_read_secret(config.signing_key, "signing key"), signing_key_passphrase)
    vault_secret = parse_vault_secret(_read_secret(config.vault_key, "vault key"))
    try:
        index, codes, close_store = build_domain(config, signer=signer, vault_secret=vault_secret)
    except BaseException:
        if close_keystore is not None:
            close_keystore()
        raise

    key_admin = None
    if config.trust_repo is not None:  # the KeyAdmin service (issuer/key_admin.py)
        from issuer.key_admin import open_key_admin

        try:
            key_admin = open_key_admin(
                config, keystore_secret=signing_key_passphrase, tuf_passphrase=tuf_keys_passphrase,
                online_passphrase=online_keys_passphrase, clock=utc_now,
                on_change=lambda _key_set: signer.refresh(force=True),  # sign with a new key set at once
                live_codes_signed=signer.codes_signed)  # ListKeys shows the counts not yet written back
        except BaseException:
            close_store()
            if close_keystore is not None:
                close_keystore()
            raise

    def close() -> None:
        close_store()
        if close_keystore is not None:
            close_keystore()
        if key_admin is not None:
            key_admin.close()

    served: CodeIssuerPort = codes  # what the API calls: with a revocation job, wrapped to trigger it
    job = None
    if config.revocation_directory is not None:  # the revocation job (issuer/revocation_job.py)
        from issuer.revocation_job import notify_revocations, open_revocation_job

        try:
            job = open_revocation_job(config, tuf_passphrase=tuf_keys_passphrase,
                                      online_passphrase=online_keys_passphrase, clock=utc_now)
        except BaseException:
            close()
            raise
        index, served = notify_revocations(index, codes, job.trigger)
        job.start()  # after the store opened; stopped before it closes

    async def stop_job_and_close() -> None:
        if job is not None:  # off the loop: a run in progress finishes, a pending trigger gets a last run
            await asyncio.to_thread(job.stop)
        close()

    try:
        from issuer.wallets import WalletIssuer

        # The wallet issuer uses CodeIssuer's own steps; the wrapper handed them on unchanged (__getattr__).
        server = await IssuerServer.start(options, index=index, codes=served, on_close=stop_job_and_close,
                                          key_admin=key_admin, wallets=WalletIssuer(codes=codes))
    except BaseException:
        await stop_job_and_close()
        raise
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = None
    if close_keystore is not None:  # rotating keys: re-read the key set periodically and on SIGHUP
        reload_now = asyncio.Event()
        loop.add_signal_handler(signal.SIGHUP, reload_now.set)
        watcher = asyncio.ensure_future(signer.watch(every=config.key_set_check_interval, wake=reload_now))
    metrics = "metrics off" if server.metrics_port is None else f"metrics port {server.metrics_port}"
    log.info(
        "listening on port %d (%s, province %s, %s)",
        server.port, metrics, config.province, "TLS" if options.tls else "PLAINTEXT",
        extra={"event": "listening", "port": server.port, "metrics_port": server.metrics_port},
    )
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if watcher is not None:
            loop.remove_signal_handler(signal.SIGHUP)
            watcher.cancel()
        await server.shutdown()
        if watcher is not None:  # after the last RPC: the key-set file gets the final codes-signed counts
            await signer.write_back()
