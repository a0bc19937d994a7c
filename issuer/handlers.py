"""Method handlers wrapped once, at registration: admission (auth, roles, rate limits) and observability.

Services register on :meth:`ObservedHandlers.registrar` instead of the server;
each method handler is wrapped once with :class:`~issuer.auth.Admission` and
with one JSON log line (:func:`issuer.logs.rpc_record`) and metrics
(:class:`issuer.metrics.Metrics`) per RPC. No ``grpc.aio`` interceptors.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from typing import Any, Callable, Iterable

import grpc

from issuer import auth
from issuer.logs import rpc_record
from issuer.metrics import Metrics

__all__ = ["ObservedHandlers"]

rpc_log = logging.getLogger("issuer.rpc")


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
            rpc_log.handle(rpc_record(method, auth.peek_caller(), name, round(latency * 1000, 3)))

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

