"""The issuer's public services over HTTP: the Connect protocol (JSON and binary) and gRPC-Web.

``ResidentIndex``, ``HealthCodes`` and ``Wallets`` are served by the
``connectrpc`` library (the reference Connect implementation for Python) from
the *same* servicers and the *same* wrapped method handlers as gRPC
(:class:`issuer.handlers.ObservedHandlers`): admission (API keys, client
certificates, roles, rate limits), validation with field violations,
idempotency, metrics and the per-RPC JSON log line are the gRPC ones, not
copies. What this module adds is only the transport:

* :func:`connect_endpoints` turns each gRPC method handler into a Connect
  endpoint (no generated Connect code: the routes are read from the service
  descriptors, the calls go to the wrapped gRPC handlers);
* :class:`HttpContext` stands in for ``grpc.aio.ServicerContext`` (headers as
  metadata, the TLS client certificate as auth context, the Connect timeout
  as ``time_remaining``, ``abort``/``abort_with_status`` as a
  :class:`~connectrpc.errors.ConnectError` with the same code, message and
  ``google.rpc`` details);
* :class:`StrictJsonCodec` refuses unknown JSON fields, duplicate keys and
  malformed JSON as INVALID_ARGUMENT with a ``google.rpc.BadRequest`` naming
  the field, and never echoes a value from the body (it may be a document number);
* :class:`CapturingRegistrar` puts a certificate check inside admission: when
  the listener asks for client certificates (a client CA is configured) and a
  request brings no verified one, only the wallet role is admitted
  (:func:`wallet_only_without_certificate`). gRPC requires a certificate on
  every connection then; HTTP lets phones in without one, so an issuance key
  alone must not reach IssueCode or RevokeCode over HTTP.

Routes: ``POST /<package>.<Service>/<Method>`` (for example
``/healthcode.issuer.v1.ResidentIndex/RegisterResident``) with
``Content-Type: application/json`` or ``application/proto`` (Connect unary),
``application/grpc-web+proto`` (gRPC-Web). Only POST: a GET would put
request fields (document numbers) in URLs, which proxies log. Bodies larger
than ``max_request_bytes`` (the gRPC server's cap) are refused before they are
parsed, with RESOURCE_EXHAUSTED as over gRPC.

The server (:mod:`issuer.http_server`) mounts this application beside the
web wallet's static files.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from typing import Any, Awaitable, Callable, Iterable, Mapping

import grpc
from connectrpc.code import Code
from connectrpc.compat import google_protobuf_binary_codec
from connectrpc.errors import ConnectError, ErrorDetail
from connectrpc.method import IdempotencyLevel, MethodInfo, StreamType
from connectrpc.request import RequestContext
from connectrpc.server import ConnectASGIApplication, Endpoint
from google.protobuf import descriptor, json_format, symbol_database
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from protobuf.wkt import Any as AnyPb

from issuer import auth
from issuer.errors import IssuerError

__all__ = [
    "HttpContext",
    "StrictJsonCodec",
    "CapturingRegistrar",
    "connect_endpoints",
    "ConnectApp",
    "connect_code",
    "wallet_only_without_certificate",
]

log = logging.getLogger("issuer.http")

_STATUS_DETAILS_KEY = "grpc-status-details-bin"

#: gRPC status code -> Connect code (same names but CANCELLED, spelt CANCELED by Connect).
_CONNECT_CODES: Mapping[grpc.StatusCode, Code] = {
    c: Code.CANCELED if c is grpc.StatusCode.CANCELLED else Code[c.name]
    for c in grpc.StatusCode if c is not grpc.StatusCode.OK
}


def connect_code(code: grpc.StatusCode) -> Code:
    return _CONNECT_CODES[code]


def _details_of(trailing_metadata: Iterable[tuple[str, Any]] | None) -> list[ErrorDetail]:
    for key, value in trailing_metadata or ():
        if key == _STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            return [ErrorDetail(AnyPb(type_url=d.type_url, value=d.value)) for d in status.details]
    return []


class _Abort(grpc.aio.AbortError, IssuerError):
    """What :meth:`HttpContext.abort` raises: a gRPC abort to the servicer code (which lets
    ``AbortError`` through), a Connect error to the client; under the issuer's error root."""

    reason = "aborted"

    def __init__(self, error: ConnectError) -> None:
        IssuerError.__init__(self, error.message)
        self.error = error


class HttpContext:
    """The part of ``grpc.aio.ServicerContext`` the servicers and the admission use, over one HTTP request.

    ``peer_names`` are the subject CNs of a verified TLS client certificate
    (empty without one), given to the authenticator as gRPC's
    ``x509_common_name``. ``certificate_missing``: the listener asks for client
    certificates (a client CA is configured) and this request has no verified
    one, so only the wallet role may be admitted (gRPC would have refused the connection).
    """

    __slots__ = ("_ctx", "_peer_names", "certificate_missing", "_code", "_details")

    def __init__(self, ctx: RequestContext, peer_names: tuple[bytes, ...] = (), *,
                 certificate_missing: bool = False) -> None:
        self._ctx = ctx
        self._peer_names = peer_names
        self.certificate_missing = certificate_missing
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return list(self._ctx.request_headers.allitems())

    def auth_context(self) -> Mapping[str, Any]:
        return {"x509_common_name": list(self._peer_names)} if self._peer_names else {}

    def time_remaining(self) -> float | None:
        remaining = self._ctx.timeout_ms
        return None if remaining is None else remaining / 1000.0

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def set_details(self, details: str) -> None:
        self._details = details

    def error(self) -> ConnectError:
        """The Connect error for a servicer that raised after :meth:`set_code` (an unimplemented RPC),
        or UNKNOWN, as gRPC answers an unexpected exception (its text is not sent)."""
        if self._code is not None and self._code is not grpc.StatusCode.OK:
            return ConnectError(connect_code(self._code), self._details)
        self._code = grpc.StatusCode.UNKNOWN
        return ConnectError(Code.UNKNOWN, "unexpected error")

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> None:
        self._code = code
        raise _Abort(ConnectError(connect_code(code), details, _details_of(trailing_metadata)))

    async def abort_with_status(self, status: grpc.Status) -> None:
        await self.abort(status.code, status.details, status.trailing_metadata)


# --------------------------------------------------------------------------- JSON


_DUPLICATE_KEY = "a key appears twice in one JSON object"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``'s ``object_pairs_hook``: an object, or ``ValueError(_DUPLICATE_KEY)`` when a key repeats
    (the standard library keeps the last, so a body could say one thing to a proxy or a log and another to us)."""
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError(_DUPLICATE_KEY)
    return value


_FAILED_FIELD = re.compile(r"Failed to parse ([A-Za-z0-9_]+) field")
#: An unknown key is named in a violation only if it looks like a field name (letters and underscores):
#: a key is client input, and a document number must not come back in an error.
_SAFE_NAME = re.compile(r"[A-Za-z_]{1,64}")


def _violation(*violations: tuple[str, str, str]) -> ConnectError:
    """INVALID_ARGUMENT with a BadRequest of ``(field, description, reason)`` violations."""
    detail = error_details_pb2.BadRequest(field_violations=[
        error_details_pb2.BadRequest.FieldViolation(field=f, description=d, reason=r) for f, d, r in violations])
    message = "; ".join(f"{f}: {d}" if f else d for f, d, _ in violations)
    return ConnectError(Code.INVALID_ARGUMENT, f"invalid request: {message}",
                        [ErrorDetail(AnyPb(type_url="type.googleapis.com/google.rpc.BadRequest",
                                           value=detail.SerializeToString()))])


def _shape(value: dict[str, Any], desc: Any, path: str, out: list[tuple[str, str, str]]) -> None:
    """Check ``value``'s keys against message ``desc``, and that message fields hold objects (arrays
    of objects when repeated), before ``json_format`` parses it: its errors can quote values."""
    fields = desc.fields_by_name
    by_json = {f.json_name: f for f in desc.fields}
    for key, item in value.items():
        field = by_json.get(key) or fields.get(key)
        if field is None:
            if _SAFE_NAME.fullmatch(key):
                out.append((f"{path}.{key}" if path else key, "unknown field", "UNKNOWN_FIELD"))
            else:
                out.append((path, "unknown field (its name is not repeated)", "UNKNOWN_FIELD"))
            continue
        where = f"{path}.{field.name}" if path else field.name
        if field.type != _FD.TYPE_MESSAGE or field.message_type.full_name.startswith("google.protobuf."):
            continue  # scalars and well-known types: json_format checks them, by field name only
        if field.is_repeated and not field.message_type.GetOptions().map_entry:
            if item is None:
                continue
            if not isinstance(item, list):
                out.append((where, "must be an array of objects", "TYPE"))
                continue
            for i, element in enumerate(item):
                if isinstance(element, dict):
                    _shape(element, field.message_type, f"{where}[{i}]", out)
                else:
                    out.append((f"{where}[{i}]", "must be an object", "TYPE"))
        elif item is not None and not isinstance(item, dict):
            out.append((where, "must be an object", "TYPE"))
        elif isinstance(item, dict) and not field.is_repeated:
            _shape(item, field.message_type, where, out)


_FD = descriptor.FieldDescriptor
_INT64_TYPES = frozenset({_FD.TYPE_INT64, _FD.TYPE_UINT64, _FD.TYPE_SINT64, _FD.TYPE_FIXED64, _FD.TYPE_SFIXED64})
_converters: dict[Any, Callable[[Any], Any]] = {}


def _converter(field: Any) -> Callable[[Any], Any]:
    """The JSON value of one field's (non-repeated) value, as ``json_format`` writes it."""
    kind = field.type
    if kind == _FD.TYPE_MESSAGE:
        if field.message_type.full_name == "google.protobuf.Timestamp":
            return lambda v: v.ToJsonString()
        if field.message_type.full_name.startswith("google.protobuf."):
            return json_format.MessageToDict  # other well-known types: the reference encoder
        return message_to_json
    if kind == _FD.TYPE_ENUM:
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda v: names.get(v, v)
    if kind == _FD.TYPE_BYTES:
        return lambda v: base64.b64encode(v).decode("ascii")
    if kind in _INT64_TYPES:
        return str
    return lambda v: v  # strings, bools, 32-bit integers (floats never get here: see message_to_json)


def message_to_json(message: Message) -> dict[str, Any]:
    """``json_format.MessageToDict(message)`` for the issuer's messages, several times faster.

    ``json_format`` walks descriptors in Python on every call (~65 µs for an
    IssueCode answer, measured: a tenth of the event loop's time per call);
    this reads only the fields set (``ListFields``, in C) with one converter per
    field, built once. Float and map fields (none in the issuer's API) take the
    reference encoder; ``tests/unit/test_http_json.py`` holds the two equal on
    every message of the API.
    """
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        convert = _converters.get(field)
        if convert is None:
            if field.type in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE) or (
                    field.type == _FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry):
                return json_format.MessageToDict(message)
            convert = _converters[field] = _converter(field)
        if field.is_repeated:
            out[field.json_name] = [convert(v) for v in value]
        else:
            out[field.json_name] = convert(value)
    return out


class StrictJsonCodec:
    """Proto3 JSON for google.protobuf messages; unknown fields refused (a typo must not pass silently).

    A body that does not parse is INVALID_ARGUMENT with field violations:
    ``FORMAT`` on ``""`` (not JSON, not an object, or a key twice in one object), ``UNKNOWN_FIELD`` on each
    unknown field's path (``supplementary[1].nmber``; a key that is not
    letters and underscores is not repeated: the violation names its parent),
    ``TYPE`` on a field of the wrong type or value. The parser's own message,
    which may quote the value, is never returned.
    """

    def name(self) -> str:
        return "json"

    def encode(self, message: Message) -> bytes:
        return json.dumps(message_to_json(message), ensure_ascii=False, separators=(",", ":")).encode()

    def decode(self, data: bytes | bytearray, message_class: type[Message]) -> Message:
        message = message_class()
        try:
            value = json.loads(data, object_pairs_hook=_no_duplicates) if data else {}
        except (ValueError, UnicodeDecodeError) as e:
            duplicate = e.args == (_DUPLICATE_KEY,)
            raise _violation(("", _DUPLICATE_KEY if duplicate else "body is not valid JSON", "FORMAT")) from None
        if not isinstance(value, dict):
            raise _violation(("", "body must be a JSON object", "FORMAT")) from None
        out: list[tuple[str, str, str]] = []
        _shape(value, message.DESCRIPTOR, "", out)
        if out:
            raise _violation(*out) from None
        try:
            json_format.ParseDict(value, message, ignore_unknown_fields=False)
        except json_format.ParseError as e:
            names = _FAILED_FIELD.findall(str(e))  # field names from the descriptor, never values
            if names:
                raise _violation((".".join(names), "wrong type or value for this field", "TYPE")) from None
            raise _violation(("", "body does not match the request message", "FORMAT")) from None
        return message


# --------------------------------------------------------------------------- endpoints


def wallet_only_without_certificate(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``handler``, refusing with PERMISSION_DENIED a caller whose request has no verified client certificate
    where the listener asks for one (:attr:`HttpContext.certificate_missing`) unless admission gave it the
    wallet role. Runs *inside* admission (it reads :func:`issuer.auth.current_role`), so the refusal is logged
    and counted as the RPC's. Streaming handlers (not served over HTTP) are returned as they are."""
    if handler.request_streaming or handler.response_streaming:
        return handler
    behaviour = handler.unary_unary

    async def unary(request: Any, context: Any) -> Any:
        if getattr(context, "certificate_missing", False):
            role = auth.current_role()
            if role is not auth.Role.WALLET:
                caller = auth.peek_caller()
                log.warning("access denied: caller %s, role %s, no client certificate over HTTP", caller,
                            role.value if role else "none", extra={"event": "access_denied", "caller": caller})
                await context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"a client certificate is required for the {role.value if role else 'issuance'} role over "
                    f"HTTP (caller {caller!r}); without one, only API keys with the wallet role are admitted")
        return await behaviour(request, context)

    return grpc.unary_unary_rpc_method_handler(
        unary, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class CapturingRegistrar:
    """Stands in for a ``grpc.aio.Server`` while generated ``add_*_to_server`` functions register:
    keeps each service's method handlers (already wrapped, when given ``wrap``: admission and observability
    around :func:`wallet_only_without_certificate`)."""

    def __init__(self, wrap: Callable[[str, grpc.RpcMethodHandler], grpc.RpcMethodHandler] | None = None) -> None:
        self._wrap = wrap
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}  # "/pkg.Service/Method" -> handler

    def add_generic_rpc_handlers(self, generic_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        pass  # the same handlers also come through add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, method_handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in method_handlers.items():
            path = f"/{service}/{name}"
            self.handlers[path] = (self._wrap(path, wallet_only_without_certificate(handler))
                                   if self._wrap is not None else handler)


def _message_class(full_name: str) -> type[Message]:
    return symbol_database.Default().GetSymbol(full_name)


def connect_endpoints(
    handlers: Mapping[str, grpc.RpcMethodHandler],
    *,
    peer_names: Callable[[RequestContext], tuple[bytes, ...]] = lambda ctx: (),
    certificate_missing: Callable[[RequestContext], bool] = lambda ctx: False,
) -> dict[str, Any]:
    """One Connect unary endpoint per unary gRPC method handler, keyed by its path.

    ``peer_names`` and ``certificate_missing`` tell, per request, what :class:`HttpContext` takes of the TLS
    client certificate.

    The request and response classes come from the default descriptor pool
    (the generated ``_pb2`` modules are imported by the servicers).
    """
    from google.protobuf import descriptor_pool

    pool = descriptor_pool.Default()
    endpoints: dict[str, Any] = {}  # path -> connectrpc's EndpointUnary
    for path, handler in handlers.items():
        if handler.request_streaming or handler.response_streaming:
            continue  # the public services are unary; streaming ones stay gRPC-only
        service_name, _, method_name = path.lstrip("/").partition("/")
        method = pool.FindServiceByName(service_name).methods_by_name[method_name]
        info = MethodInfo(
            name=method_name, service_name=service_name,
            input=_message_class(method.input_type.full_name), output=_message_class(method.output_type.full_name),
            idempotency_level=IdempotencyLevel.UNKNOWN, stream_type=StreamType.UNARY,
        )
        endpoints[path] = Endpoint.unary(info, _call(handler.unary_unary, peer_names, certificate_missing))
    return endpoints


def _call(behaviour: Callable[[Any, Any], Awaitable[Any]],
          peer_names: Callable[[RequestContext], tuple[bytes, ...]],
          certificate_missing: Callable[[RequestContext], bool]) -> Callable[[Any, RequestContext], Awaitable[Any]]:
    async def call(request: Any, ctx: RequestContext) -> Any:
        context = HttpContext(ctx, peer_names(ctx), certificate_missing=certificate_missing(ctx))
        try:
            return await behaviour(request, context)
        except _Abort as abort:
            raise abort.error from None
        except Exception:
            raise context.error() from None

    return call


class ConnectApp(ConnectASGIApplication[None]):
    """The Connect/gRPC-Web ASGI application over ``endpoints`` (see :func:`connect_endpoints`)."""

    def __init__(self, endpoints: Mapping[str, Any], *, max_request_bytes: int) -> None:
        super().__init__(
            service=None,
            endpoints=lambda _service: endpoints,
            read_max_bytes=max_request_bytes,
            codecs=[google_protobuf_binary_codec(), StrictJsonCodec()],
        )

    @property
    def path(self) -> str:
        return "/"
