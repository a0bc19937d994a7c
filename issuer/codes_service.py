"""The ``HealthCodes`` servicer: issue, renew, revoke, read and render codes, through the steps of
:class:`issuer.service.IssuerService`."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Protocol

from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc
from issuer.errors import Violations
from issuer.wire import (
    CLIENT_REASONS,
    REASONS,
    china_date,
    document_field,
    idempotency_key_field,
    issued_code_pb,
    main_index_id_field,
)

if TYPE_CHECKING:
    from issuer.service import IssuerService

__all__ = ["HealthCodesServicer"]

MAX_SCALE = 64
MAX_BORDER = 16
DEFAULT_SCALE = 4
DEFAULT_BORDER = 4


class _Renderer(Protocol):
    """:func:`issuer.render.render_png` (bytes) or :func:`~issuer.render.render_svg` (text)."""

    def __call__(self, text: str, *, scale: int = ..., border: int = ...) -> bytes | str: ...


class HealthCodesServicer(health_codes_pb2_grpc.HealthCodesServicer):
    def __init__(self, service: IssuerService) -> None:
        self._s = service

    async def IssueCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            which = request.WhichOneof("resident")
            main_index_id = document = None
            if which == "main_index_id":
                main_index_id = main_index_id_field(request.main_index_id, "main_index_id", out)
            elif which == "document":
                document = document_field(request.document, True, "document", china_date(now), out)
            else:
                out.add("resident", "one of main_index_id or document is required", "required")
            key = idempotency_key_field(request.idempotency_key, out)
            out.raise_if_any()
            caller = s._caller()
            if document is not None:
                main_index_id = await s._domain(context, s._index.find_resident(document))
            code = await s._domain(
                context,
                s._codes.issue_code(caller=caller, main_index_id=main_index_id, idempotency_key=key, now=now,
                                    replace_live=True),  # one live static code per resident (issue 13)
                cancel_safe=True,
            )
            response = health_codes_pb2.IssueCodeResponse()
            issued_code_pb(s._issued(code), now, response.code)
            return response

        return await s._serve(context, impl)

    async def RenewCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            named = s._which_code(request, "code", out)
            key = idempotency_key_field(request.idempotency_key, out)
            out.raise_if_any()
            code = await s._domain(
                context, s._codes.renew_code(caller=s._caller(), ref=named.ref, idempotency_key=key, now=now,
                                             text=named.text),
                cancel_safe=True,
            )
            response = health_codes_pb2.RenewCodeResponse()
            issued_code_pb(s._issued(code), now, response.code)
            return response

        return await s._serve(context, impl)

    async def RevokeCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            which = request.WhichOneof("target")
            named = main_index_id = None
            if which in ("ref", "code_text"):
                named = s._which_code(request, "target", out)
            elif which == "main_index_id":
                main_index_id = main_index_id_field(request.main_index_id, "main_index_id", out)
            else:
                out.add("target", "one of ref, code_text or main_index_id is required", "required")
            reason = REASONS.get(request.reason)
            if request.reason == common_pb2.REVOCATION_REASON_UNSPECIFIED:
                out.add("reason", "revocation reason is required", "required")
            elif reason is None:
                out.add("reason", "unknown revocation reason", "reason")
            elif reason not in CLIENT_REASONS:
                out.add("reason", f"reason {reason.value} is set by the issuer only", "reason")
            out.raise_if_any()
            if main_index_id is not None:
                count = await s._domain(
                    context, s._codes.revoke_resident_codes(main_index_id=main_index_id, reason=reason, now=now)
                )
                return health_codes_pb2.RevokeCodeResponse(revoked_count=count)
            # The domain returns the code as stored, and a revoked code keeps its first
            # revocation: read it first to tell "revoked now" from "was revoked already".
            # (Two concurrent revocations of one code may both count 1.)
            # Named by text, both calls check it is the text issued: nothing is revoked otherwise.
            assert named is not None  # a ref or a code_text; without one a violation was raised above
            before = await s._domain(context, s._get_code(named))
            code = await s._domain(context, s._codes.revoke_code(ref=named.ref, reason=reason, now=now,
                                                                 text=named.text))
            fresh = before.revoked_at is None and code.revoked_at is not None
            return health_codes_pb2.RevokeCodeResponse(
                revoked_count=1 if fresh else 0, code=issued_code_pb(code, now)
            )

        return await s._serve(context, impl)

    async def GetCodeStatus(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            named = s._which_code(request, "code", out)
            out.raise_if_any()
            code = await s._domain(context, s._get_code(named))
            return health_codes_pb2.GetCodeStatusResponse(code=issued_code_pb(code, now))

        return await s._serve(context, impl)

    async def RenderCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            from issuer import render  # qrcode is only needed here

            out = Violations()
            named = s._which_code(request, "code", out)
            fn: _Renderer | None
            content_type: str | None
            if request.format == health_codes_pb2.IMAGE_FORMAT_PNG:
                fn, content_type = render.render_png, "image/png"
            elif request.format == health_codes_pb2.IMAGE_FORMAT_SVG:
                fn, content_type = render.render_svg, "image/svg+xml"
            else:
                fn = content_type = None
                if request.format == health_codes_pb2.IMAGE_FORMAT_UNSPECIFIED:
                    out.add("format", "image format is required", "required")
                else:
                    out.add("format", "unknown image format", "format")
            scale = request.scale or DEFAULT_SCALE
            if not 1 <= scale <= MAX_SCALE:
                out.add("scale", f"scale must be 1 to {MAX_SCALE} pixels a module (0: default {DEFAULT_SCALE})",
                        "range")
            border = request.border if request.HasField("border") else DEFAULT_BORDER
            if not 0 <= border <= MAX_BORDER:
                out.add("border", f"border must be 0 to {MAX_BORDER} modules", "range")
            out.raise_if_any()
            assert fn is not None  # an unknown format is a violation raised above
            code = await s._domain(context, s._get_code(named))
            rendered: bytes | str = await asyncio.to_thread(fn, code.text, scale=scale, border=border)
            image = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
            return health_codes_pb2.RenderCodeResponse(image=image, content_type=content_type)

        return await s._serve(context, impl)
