"""The ``ResidentIndex`` servicer: register, link, find, merge and move residents in, and their access log,
through the steps of :class:`issuer.service.IssuerService` (documents parsed by :func:`issuer.wire.document_field`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from issuer.api import common_pb2, resident_index_pb2, resident_index_pb2_grpc
from issuer.documents import Document, canonical_form
from issuer.errors import Violations
from issuer.wire import china_date, document_field, main_index_id_field, set_timestamp

if TYPE_CHECKING:
    from issuer.service import IssuerService

__all__ = ["ResidentIndexServicer", "MAX_SUPPLEMENTARY", "consent_field"]

MAX_SUPPLEMENTARY = 16


class ResidentIndexServicer(resident_index_pb2_grpc.ResidentIndexServicer):
    def __init__(self, service: IssuerService) -> None:
        self._s = service

    async def RegisterResident(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            today = china_date(now)
            primary = document_field(request.primary, request.HasField("primary"), "primary", today, out)
            if len(request.supplementary) > MAX_SUPPLEMENTARY:
                out.add("supplementary", f"at most {MAX_SUPPLEMENTARY} supplementary documents", "count")
                supplementary: list[Document | None] = []
            else:
                supplementary = [
                    document_field(doc, True, f"supplementary[{i}]", today, out)
                    for i, doc in enumerate(request.supplementary)
                ]
            seen: dict[bytes, str] = {}
            for path, doc in [("primary", primary)] + [
                (f"supplementary[{i}]", d) for i, d in enumerate(supplementary)
            ]:
                if doc is None:
                    continue
                key = canonical_form(doc)
                if key in seen:
                    out.add(path, f"same document as {seen[key]}", "duplicate")
                else:
                    seen[key] = path
            out.raise_if_any()
            assert primary is not None
            registration = await s._domain(
                context, s._index.register(primary, [d for d in supplementary if d], now=now)
            )
            return resident_index_pb2.RegisterResidentResponse(main_index_id=registration.main_index_id,
                                                               provisional=registration.provisional)

        return await s._serve(context, impl)

    async def LinkIdentifier(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            main_index_id = main_index_id_field(request.main_index_id, "main_index_id", out)
            document = document_field(request.document, request.HasField("document"), "document", china_date(now), out)
            out.raise_if_any()
            await s._domain(context, s._index.link_identifier(main_index_id, document, now=now))
            return resident_index_pb2.LinkIdentifierResponse()

        return await s._serve(context, impl)

    async def FindResident(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            document = document_field(request.document, request.HasField("document"), "document", china_date(now), out)
            out.raise_if_any()
            found = await s._domain(context, s._index.find(document))
            return resident_index_pb2.FindResidentResponse(main_index_id=found.main_index_id,
                                                           home_province=found.home_province or s._settings.province)

        return await s._serve(context, impl)

    async def MergeResidents(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            survivor = main_index_id_field(request.survivor_main_index_id, "survivor_main_index_id", out)
            merged = main_index_id_field(request.merged_main_index_id, "merged_main_index_id", out)
            if survivor is not None and survivor == merged:
                out.add("merged_main_index_id", "must differ from survivor_main_index_id", "same_resident")
            out.raise_if_any()
            revoked = await s._domain(context, s._index.merge_residents(survivor=survivor, merged=merged, now=now))
            return resident_index_pb2.MergeResidentsResponse(revoked_count=revoked)

        return await s._serve(context, impl)

    async def ListAccesses(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            main_index_id = main_index_id_field(request.main_index_id, "main_index_id", out)
            if request.page_size > MAX_ACCESS_PAGE:
                out.add("page_size", f"at most {MAX_ACCESS_PAGE}", "range")
            if len(request.page_token) > 256:
                out.add("page_token", "not a token from a previous page", "page_token")
            out.raise_if_any()
            page = await s._domain(context, s._index.list_accesses(
                main_index_id, page_size=request.page_size or DEFAULT_ACCESS_PAGE, page_token=request.page_token))
            reply = resident_index_pb2.ListAccessesResponse(next_page_token=page.next_token)
            for a in page.accesses:
                entry = reply.accesses.add(access_id=a.access_id, hospital_organisation=a.hospital_organisation,
                                           hospital_province=a.hospital_province, purpose=a.purpose,
                                           code_kind=a.code_kind)
                set_timestamp(entry.resolved_at, a.resolved_at)
            return reply

        return await s._serve(context, impl)

    async def MoveResidentIn(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            today = china_date(now)
            main_index_id = main_index_id_field(request.main_index_id, "main_index_id", out)
            document = document_field(request.document, request.HasField("document"), "document", today, out)
            supplementary: list[Document | None] = []
            if len(request.supplementary) > MAX_SUPPLEMENTARY:
                out.add("supplementary", f"at most {MAX_SUPPLEMENTARY} supplementary documents", "count")
            else:
                supplementary = [document_field(d, True, f"supplementary[{i}]", today, out)
                                 for i, d in enumerate(request.supplementary)]
            consent = consent_field(request.consent, request.HasField("consent"), now, out)
            out.raise_if_any()
            mid, previous = await s._domain(context, s._index.move_in(
                main_index_id, document, [d for d in supplementary if d], consent, now=now))
            return resident_index_pb2.MoveResidentInResponse(main_index_id=mid, previous_province=previous)

        return await s._serve(context, impl)


MAX_ACCESS_PAGE = 100
DEFAULT_ACCESS_PAGE = 20
#: How old a consent may be when the move is asked for.
MAX_CONSENT_AGE = dt.timedelta(days=1)
_CONSENT_METHODS = {common_pb2.CONSENT_METHOD_IN_PERSON: "in_person", common_pb2.CONSENT_METHOD_APP: "app"}


def consent_field(msg: common_pb2.Consent, present: bool, now: dt.datetime, out: Violations):
    """The request's consent as an :class:`issuer.national_client.Consent`, or None (violations added)."""
    from issuer.national_client import Consent, ConsentMethod

    if not present:
        out.add("consent", "the resident's consent is required to move them", "required")
        return None
    ok = True
    method = _CONSENT_METHODS.get(msg.method)
    if method is None:
        if msg.method == common_pb2.CONSENT_METHOD_UNSPECIFIED:
            out.add("consent.method", "how the resident consented is required (in person or in the app)", "required")
        else:
            out.add("consent.method", "unknown consent method", "method")
        ok = False
    given_at = dt.datetime.fromtimestamp(msg.given_at.seconds, dt.timezone.utc)
    if not msg.HasField("given_at") or msg.given_at.seconds <= 0:
        out.add("consent.given_at", "when the resident consented is required", "required")
        ok = False
    elif given_at > now + dt.timedelta(minutes=5) or given_at < now - MAX_CONSENT_AGE:
        out.add("consent.given_at", "must be within the last day and not in the future", "range")
        ok = False
    reference = msg.reference
    if not 1 <= len(reference) <= 64 or not reference.isascii() or not reference.isprintable():
        out.add("consent.reference", "the consent record's reference is required: 1 to 64 printable ASCII",
                "format")
        ok = False
    return Consent(ConsentMethod(method), given_at, reference) if ok and method else None
