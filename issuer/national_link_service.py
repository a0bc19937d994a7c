"""The ``NationalLink`` servicer: what the national service asks of this province.

Only the national service reaches it (client certificate CN ``national:<name>``,
:data:`issuer.auth.SERVICE_ROLES`). Both RPCs run the steps of
:class:`issuer.service.IssuerService` (one clock reading, every field checked
and answered together as INVALID_ARGUMENT, the one error table):

* ``ReleaseResident``: the resident moved to ``to_province``; every live code
  superseded and the entry marked moved, in one transaction
  (:meth:`issuer.store.base.Store.release_resident`); idempotent. The
  revocation job is triggered when codes were superseded.
* ``ResolvePatient``: :class:`issuer.resolution.PatientResolver`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
from typing import TYPE_CHECKING, Callable

import grpc

from healthcode import PROVINCES
from issuer.api import national_link_pb2, national_link_pb2_grpc
from issuer.errors import Conflict, NotFound, Violations
from issuer.national_client import document_pb
from issuer.resolution import Hospital, PatientResolver
from issuer.store.base import ResidentMerged, ResidentNotFound, Store
from issuer.wire import main_index_id_field, set_timestamp

if TYPE_CHECKING:
    from issuer.service import IssuerService

__all__ = ["NationalLinkServicer", "PURPOSES", "MAX_CODE_TEXT"]

#: healthcode.national.v1.Purpose values a resolution may state (REGISTRATION .. BILLING).
PURPOSES = frozenset({1, 2, 3, 4})
MAX_CODE_TEXT = 4096
_ORGANISATION = re.compile(r"[A-Za-z0-9._-]{1,64}")


def _printable(value: str, limit: int) -> bool:
    return len(value) <= limit and value.isascii() and value.isprintable()


class NationalLinkServicer(national_link_pb2_grpc.NationalLinkServicer):
    """ReleaseResident and ResolvePatient over the store and the resolver (see the module docstring).

    ``on_revoked`` is called after a release superseded codes (the revocation job's trigger).
    """

    def __init__(self, *, store: Store, resolver: PatientResolver, province: str,
                 on_revoked: Callable[[], None] | None = None) -> None:
        self._store = store
        self._resolver = resolver
        self._province = province
        self._on_revoked = on_revoked or (lambda: None)
        self._s: IssuerService | None = None

    def add_to_server(self, server: grpc.aio.Server, service: IssuerService) -> str:
        """Register on ``server`` running the steps of ``service``; return the full service name."""
        self._s = service
        national_link_pb2_grpc.add_NationalLinkServicer_to_server(self, server)
        return national_link_pb2.DESCRIPTOR.services_by_name["NationalLink"].full_name

    async def ReleaseResident(self, request, context):
        s = self._s
        assert s is not None, "add_to_server first"

        async def impl(now: dt.datetime):
            out = Violations()
            mid = main_index_id_field(request.main_index_id, "main_index_id", out)
            if not request.to_province:
                out.add("to_province", "the new home province is required", "required")
            elif request.to_province not in PROVINCES:
                out.add("to_province", "must be a two-digit GB/T 2260 province code", "province")
            elif request.to_province == self._province:
                out.add("to_province", "the resident is homed in this province: release to another one", "province")
            if not _printable(request.consent_reference, 64):
                out.add("consent_reference", "at most 64 printable ASCII characters", "format")
            out.raise_if_any()
            assert mid is not None
            count = await s._domain(context, self._release(mid, request.to_province, request.consent_reference, now))
            return national_link_pb2.ReleaseResidentResponse(superseded_codes=count)

        return await s._serve(context, impl)

    async def _release(self, mid: str, to_province: str, consent_reference: str, now: dt.datetime) -> int:
        try:
            count: int = await asyncio.wrap_future(self._store.release_resident(
                mid, to_province=to_province, consent_reference=consent_reference, at=now))
        except ResidentNotFound:
            raise NotFound("resident not found in this province") from None
        except ResidentMerged:
            raise Conflict("resident was merged into another entry: release the survivor") from None
        if count:
            self._on_revoked()
        return count

    async def ResolvePatient(self, request, context):
        s = self._s
        assert s is not None, "add_to_server first"

        async def impl(now: dt.datetime):
            out = Violations()
            if not request.code:
                out.add("code", "the scanned code is required", "required")
            elif len(request.code) > MAX_CODE_TEXT:
                out.add("code", f"at most {MAX_CODE_TEXT} characters", "length")
            if request.purpose == 0:
                out.add("purpose", "why the hospital resolves the code is required", "required")
            elif request.purpose not in PURPOSES:
                out.add("purpose", "not a healthcode.national.v1.Purpose value", "purpose")
            if not request.HasField("hospital"):
                out.add("hospital", "the hospital is required", "required")
            else:
                if not _ORGANISATION.fullmatch(request.hospital.organisation):
                    out.add("hospital.organisation", "1 to 64 characters of A-Z a-z 0-9 . _ -", "format")
                if request.hospital.province not in PROVINCES:
                    out.add("hospital.province", "must be a two-digit GB/T 2260 province code", "province")
            out.raise_if_any()
            hospital = Hospital(request.hospital.organisation, request.hospital.province)
            resolution = await s._domain(context, self._resolver.resolve(request.code, purpose=request.purpose,
                                                                          hospital=hospital, now=now))
            reply = national_link_pb2.ResolvePatientResponse(main_index_id=resolution.main_index_id,
                                                             access_id=resolution.access_id)
            reply.primary_document.CopyFrom(document_pb(resolution.primary_document))
            set_timestamp(reply.resolved_at, resolution.resolved_at)
            return reply

        return await s._serve(context, impl)
