"""A client of the trust publisher, for a provincial issuer (pushes) and for status reads.

:class:`PublisherClient` wraps the generated stub over one mTLS channel; its
methods take and return plain values, never protobuf messages.
:func:`status_lines` renders a :class:`PublicationReport` for people: ages as
human durations, times in Beijing time.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from shellkit.times import beijing, human_duration

from .api import trust_publisher_pb2 as pb
from .api import trust_publisher_pb2_grpc as pb_grpc
from .checks import DEFAULT_LIMITS
from .store import ProvinceState

__all__ = ["PublisherClient", "PushAck", "PublicationReport", "ProvinceReport", "status_lines", "refusal_reason"]

_MAX_MESSAGE = DEFAULT_LIMITS.max_push_bytes + (1 << 20)


@dataclass(frozen=True)
class PushAck:
    """The publisher's acknowledgement: the version accepted, and whether it was accepted before."""

    version: int
    already_accepted: bool
    accepted_at: _dt.datetime | None


#: One province in the publication status: the publisher store's own record, read over the wire.
ProvinceReport = ProvinceState


@dataclass(frozen=True)
class PublicationReport:
    """:class:`pb.PublicationStatus` as plain values (times aware UTC, None when unset)."""

    now: _dt.datetime
    snapshot_version: int
    snapshot_expires: _dt.datetime | None
    timestamp_version: int
    timestamp_expires: _dt.datetime | None
    last_publication: _dt.datetime | None
    provinces: tuple[ProvinceReport, ...]


def _time(message: Any, field: str) -> _dt.datetime | None:
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=_dt.timezone.utc)


def refusal_reason(error: grpc.RpcError) -> str | None:
    """The stable reason (lower case) of a refused push, from the status's ErrorInfo; None if absent."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error) if hasattr(error, "trailing_metadata") else None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return str(info.reason).lower()
    return None


class PublisherClient:
    """One mTLS channel to the publisher at ``address`` (``host:port``).

    ``ca_pem`` is the CA of the publisher's certificate; ``cert_pem``/``key_pem``
    the caller's client certificate (CN ``province:<code>`` or ``national:<name>``).
    ``timeout`` bounds each call in seconds.
    """

    def __init__(self, address: str, *, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
                 timeout: float = 30.0) -> None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem,
                                                   certificate_chain=cert_pem)
        self._channel = grpc.secure_channel(address, credentials, options=[
            ("grpc.max_send_message_length", _MAX_MESSAGE), ("grpc.max_receive_message_length", 4 << 20)])
        self._stub = pb_grpc.TrustPublisherStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "PublisherClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, province: str, role_metadata: bytes, *, targets: Iterable[tuple[str, bytes]] = (),
             unlisted: Iterable[tuple[str, bytes]] = ()) -> PushAck:
        """PushProvinceRole; raises ``grpc.RpcError`` (see :func:`refusal_reason`)."""
        request = pb.PushProvinceRoleRequest(
            province=province, role_metadata=role_metadata,
            targets=[pb.TargetContent(path=p, content=c) for p, c in targets],
            unlisted=[pb.TargetContent(path=p, content=c) for p, c in unlisted])
        reply = self._stub.PushProvinceRole(request, timeout=self.timeout)
        return PushAck(reply.version, reply.already_accepted, _time(reply, "accepted_at"))

    def status(self) -> PublicationReport:
        """GetPublicationStatus as plain values."""
        reply = self._stub.GetPublicationStatus(pb.GetPublicationStatusRequest(), timeout=self.timeout)
        return PublicationReport(
            now=_time(reply, "now") or _dt.datetime.now(_dt.timezone.utc),
            snapshot_version=reply.snapshot_version, snapshot_expires=_time(reply, "snapshot_expires"),
            timestamp_version=reply.timestamp_version, timestamp_expires=_time(reply, "timestamp_expires"),
            last_publication=_time(reply, "last_publication"),
            provinces=tuple(ProvinceReport(p.province, p.published_version, _time(p, "published_at"),
                                           p.accepted_version, _time(p, "accepted_at"), _time(p, "role_expires"))
                            for p in reply.provinces))


def _age(moment: _dt.datetime | None, now: _dt.datetime) -> str:
    return "never" if moment is None else f"{human_duration(now - moment)} ago ({beijing(moment)})"


def status_lines(report: PublicationReport) -> list[str]:
    """The report for people: the timestamp's expiry, and per province what is published, how long ago,
    and what is accepted but not yet published."""
    now = report.now
    out = [f"publisher at {beijing(now)}: snapshot v{report.snapshot_version}, "
           f"timestamp v{report.timestamp_version}"]
    if report.timestamp_expires is not None:
        out.append(f"  timestamp expires {beijing(report.timestamp_expires)} "
                   f"(in {human_duration(report.timestamp_expires - now)})")
    out.append(f"  last publication {_age(report.last_publication, now)}")
    for p in report.provinces:
        line = (f"  province {p.province}: published v{p.published_version}, {_age(p.published_at, now)}"
                if p.published_version else f"  province {p.province}: nothing published")
        if p.accepted_version > p.published_version:
            line += (f"; PUSHED, NOT YET PUBLISHED: v{p.accepted_version} "
                     f"(accepted {_age(p.accepted_at, now)})")
        if p.role_expires is not None:
            line += f"; role expires in {human_duration(p.role_expires - now)}"
        out.append(line)
    return out
