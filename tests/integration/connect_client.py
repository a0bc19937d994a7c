"""Small, independent HTTP clients for the issuer's Connect and gRPC-Web endpoints (tests only).

Written from the protocol specifications with the standard library (``http.client``), not with the
server's library, so a test can catch the server and the library agreeing on something the
specification does not say. Every client answers an :class:`Outcome`: the status as a
``grpc.StatusCode``, the ``google.rpc.BadRequest`` violations as ``(field, reason)`` pairs,
the message, the response, and the raw bytes received (to look for identifiers in them).
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import struct
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Iterable

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

__all__ = ["Outcome", "ConnectClient", "GrpcWebClient", "violations_of", "CODE_BY_CONNECT_NAME"]

CODE_BY_CONNECT_NAME = {
    ("canceled" if c is grpc.StatusCode.CANCELLED else c.name.lower()): c for c in grpc.StatusCode
}
_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}


@dataclass
class Outcome:
    code: grpc.StatusCode
    violations: list[tuple[str, str]] = field(default_factory=list)
    message: str = ""
    response: Message | None = None
    raw: bytes = b""
    http_status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def violations_of(details: Iterable[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(field, reason) of every BadRequest among ``(type name, value)`` details."""
    out = []
    for type_name, value in details:
        if type_name.removeprefix("type.googleapis.com/") == "google.rpc.BadRequest":
            out += [(v.field, v.reason) for v in error_details_pb2.BadRequest.FromString(value).field_violations]
    return out


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


class _Http:
    def __init__(self, port: int, ca_pem: bytes | None, *, client_cert: tuple[str, str] | None = None) -> None:
        self.port = port
        self.context = None
        if ca_pem is not None:
            self.context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
            if client_cert is not None:
                self.context.load_cert_chain(*client_cert)
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.context is not None:
                self._conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=30)
            else:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, dict, bytes]:
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                result = response.status, {k.lower(): v for k, v in response.getheaders()}, data
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return result
            except (http.client.RemoteDisconnected, OSError):  # a keep-alive connection the server closed
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ConnectClient(_Http):
    """Connect unary over HTTP/1.1: ``codec`` ``"json"`` or ``"proto"``."""

    def __init__(self, port: int, ca_pem: bytes | None, codec: str = "json", **kw: Any) -> None:
        super().__init__(port, ca_pem, **kw)
        self.codec = codec

    def encode(self, request: Message) -> bytes:
        if self.codec == "json":
            return json_format.MessageToJson(request).encode()
        return request.SerializeToString()

    def call(self, path: str, request: Message | bytes, response_class: type[Message], *,
             metadata: Iterable[tuple[str, str]] = (), content_type: str | None = None,
             method: str = "POST", timeout_ms: int | None = None) -> Outcome:
        body = request if isinstance(request, bytes) else self.encode(request)
        headers = {"Content-Type": content_type or f"application/{self.codec}", "Connect-Protocol-Version": "1"}
        if timeout_ms is not None:
            headers["Connect-Timeout-Ms"] = str(timeout_ms)
        for key, value in metadata:
            headers[key] = value
        if method == "GET":
            query = urllib.parse.urlencode({"encoding": self.codec, "message": body.decode("latin-1")})
            status, got, data = self.request("GET", f"{path}?{query}", None, headers)
        else:
            status, got, data = self.request(method, path, body, headers)
        if status == 200:
            response = response_class()
            if self.codec == "json":
                json_format.Parse(data, response)
            else:
                response.ParseFromString(data)
            return Outcome(grpc.StatusCode.OK, response=response, raw=data, http_status=status, headers=got)
        try:
            error = json.loads(data)
        except ValueError:
            error = None
        if not isinstance(error, dict):  # not a Connect error: an HTTP error (415, 405, 404)
            return Outcome(grpc.StatusCode.UNKNOWN, raw=data, http_status=status, headers=got)
        details = [(d["type"], _b64(d["value"])) for d in error.get("details", [])]
        return Outcome(CODE_BY_CONNECT_NAME[error["code"]], violations_of(details), error.get("message", ""),
                       raw=data, http_status=status, headers=got)


class GrpcWebClient(_Http):
    """gRPC-Web (binary, ``application/grpc-web+proto``) over HTTP/1.1."""

    def call(self, path: str, request: Message, response_class: type[Message], *,
             metadata: Iterable[tuple[str, str]] = ()) -> Outcome:
        message = request.SerializeToString()
        body = b"\x00" + struct.pack(">I", len(message)) + message
        headers = {"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1", "Accept": "application/grpc-web"}
        for key, value in metadata:
            headers[key] = value
        status, got, data = self.request("POST", path, body, headers)
        trailers = {k: v for k, v in got.items() if k.startswith("grpc-")}  # a trailers-only response
        response = None
        offset = 0
        while offset + 5 <= len(data):
            flag, length = data[offset], struct.unpack(">I", data[offset + 1:offset + 5])[0]
            frame = data[offset + 5:offset + 5 + length]
            offset += 5 + length
            if flag & 0x80:
                for line in frame.decode("latin-1").split("\r\n"):
                    if ":" in line:
                        key, _, value = line.partition(":")
                        trailers[key.strip().lower()] = value.strip()
            else:
                response = response_class.FromString(frame)
        code = _CODE_BY_NUMBER[int(trailers.get("grpc-status", "2"))]
        violations: list[tuple[str, str]] = []
        if "grpc-status-details-bin" in trailers:
            st = status_pb2.Status.FromString(_b64(trailers["grpc-status-details-bin"]))
            violations = violations_of((d.type_url, d.value) for d in st.details)
        return Outcome(code, violations, urllib.parse.unquote(trailers.get("grpc-message", "")),
                       response if code is grpc.StatusCode.OK else None, raw=data, http_status=status, headers=got)
