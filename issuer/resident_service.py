"""The ``ResidentIndex`` servicer: register, link, find and merge residents, through the steps of
:class:`issuer.service.IssuerService` (documents parsed by :func:`issuer.wire.document_field`)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from issuer.api import resident_index_pb2, resident_index_pb2_grpc
from issuer.documents import Document, canonical_form
from issuer.errors import Violations
from issuer.wire import china_date, document_field, main_index_id_field

if TYPE_CHECKING:
    from issuer.service import IssuerService

__all__ = ["ResidentIndexServicer", "MAX_SUPPLEMENTARY"]

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
            main_index_id = await s._domain(
                context, s._index.register_resident(primary, [d for d in supplementary if d], now=now)
            )
            return resident_index_pb2.RegisterResidentResponse(main_index_id=main_index_id)

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
            main_index_id = await s._domain(context, s._index.find_resident(document))
            return resident_index_pb2.FindResidentResponse(main_index_id=main_index_id)

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
