"""Reading the rich status (``google.rpc.Status`` details) of a failed gRPC call, for tests.

One place for what several test modules read out of an error: the BadRequest field
violations and the ErrorInfo (the latter through the issuer's own reader,
:func:`issuer.wire.received_error_info`, so a test sees what a client sees).
"""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from issuer.wire import received_error_info

__all__ = ["field_violations", "violations", "error_info", "error_reason"]


def field_violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """(field, reason) of every BadRequest field violation in ``error``, in order; [] when it has none."""
    status = rpc_status.from_call(error)
    out: list[tuple[str, str]] = []
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            out += [(v.field, v.reason) for v in bad.field_violations]
    return out


def violations(error: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations of ``error``: field -> reason."""
    return dict(field_violations(error))


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of ``error``, or None when it carries none."""
    return received_error_info(error)


def error_reason(error: grpc.RpcError) -> str | None:
    """The ErrorInfo reason of ``error``, or None when it carries none."""
    info = received_error_info(error)
    return info.reason if info is not None else None
