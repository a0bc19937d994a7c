"""The resident main index: documents in, a random main index ID out.

A resident's entry is created from a primary document (normally the resident
ID; foreigners and Hong Kong, Macau and Taiwan residents register with a
permit or passport) plus any supplementary ones. Documents are stored only as
a keyed blind index and a sealed value (:class:`~issuer.privacy.IdentifierVault`);
the main index ID is 128 random bits, never derived from a document.

Two entries later found to be one person are merged: the survivor keeps every
document, the merged entry stays (read-only, pointing at the survivor) and its
live codes are revoked in the same transaction.

Errors are :mod:`issuer.errors` types whose messages name request fields
(``primary``, ``supplementary[1]``), never a number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Callable, Sequence

from healthcode.errors import InvalidClaims
from healthcode.model import MainIndexId, from_epoch, main_index_id_from_bytes, parse_main_index_id, to_epoch

from .documents import Document, canonical_form
from .errors import AlreadyExists, Conflict, FieldViolation, InvalidRequest, NotFound
from .privacy import IdentifierVault
from .store.base import (
    DuplicateIdentifier,
    IdentifierRecord,
    ResidentMerged,
    ResidentNotFound,
    ResidentRecord,
    Store,
)

__all__ = ["ResidentIndex", "parse_main_index_id_field"]

_MAX_SUPPLEMENTARY = 16
_MAX_MERGE_HOPS = 64


def parse_main_index_id_field(value: object, field: str) -> MainIndexId:
    """``value`` as a main index ID, or :class:`InvalidRequest` naming ``field``."""
    try:
        return parse_main_index_id(value)  # type: ignore[arg-type]
    except InvalidClaims:
        raise InvalidRequest(
            [FieldViolation(field, "must be a main index ID: 26 Base32 characters (128 bits)", "main_index_id")]
        ) from None


def _second(moment: dt.datetime) -> dt.datetime:
    return from_epoch(to_epoch(moment))


class ResidentIndex:
    """Register, link, find and merge residents.

    ``random_bytes`` supplies the 16 random bytes of each new main index ID
    (``os.urandom``; a test may pass a deterministic source).
    """

    def __init__(
        self,
        *,
        store: Store,
        vault: IdentifierVault,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self._store = store
        self._vault = vault
        self._random_bytes = random_bytes

    def _identifier(self, document: Document, main_index_id: str, *, primary: bool, now: dt.datetime,
                    blind_index: bytes | None = None) -> IdentifierRecord:
        canonical = canonical_form(document)
        if blind_index is None:
            blind_index = self._vault.blind_index(canonical)
        # The sealed value is bound to its blind index: it cannot be moved to another row unnoticed.
        return IdentifierRecord(
            blind_index=blind_index,
            doc_type=document.type.value,
            sealed=self._vault.seal(canonical, aad=blind_index),
            main_index_id=main_index_id,
            primary=primary,
            created_at=now,
        )

    @staticmethod
    def _check_document(document: object, field: str) -> Document:
        if not isinstance(document, Document):
            raise TypeError(f"{field} must be a Document from issuer.documents.parse_document()")
        return document

    async def register_resident(
        self,
        primary: Document,
        supplementary: Sequence[Document] = (),
        *,
        now: dt.datetime,
    ) -> MainIndexId:
        """Create an entry for a new resident; return its main index ID.

        Raises :class:`~issuer.errors.AlreadyExists` naming the first document
        already linked to an entry (``primary`` or ``supplementary[i]``), and
        :class:`~issuer.errors.InvalidRequest` if the request lists one
        document twice.
        """
        documents = [self._check_document(primary, "primary")]
        documents += [self._check_document(d, f"supplementary[{i}]") for i, d in enumerate(supplementary)]
        fields = ["primary"] + [f"supplementary[{i}]" for i in range(len(documents) - 1)]
        if len(documents) - 1 > _MAX_SUPPLEMENTARY:
            raise InvalidRequest([FieldViolation("supplementary", f"at most {_MAX_SUPPLEMENTARY} documents", "length")])
        created_at = _second(now)
        blind = [self._vault.blind_index(canonical_form(d)) for d in documents]
        seen: dict[bytes, int] = {}
        for position, value in enumerate(blind):
            if value in seen:
                raise InvalidRequest(
                    [FieldViolation(fields[position], f"is the same document as {fields[seen[value]]}", "duplicate")]
                )
            seen[value] = position
        main_index_id = main_index_id_from_bytes(self._random_bytes(16))
        records = [
            self._identifier(d, main_index_id, primary=(i == 0), now=created_at, blind_index=blind[i])
            for i, d in enumerate(documents)
        ]
        resident = ResidentRecord(main_index_id=main_index_id, created_at=created_at)
        try:
            await asyncio.wrap_future(self._store.create_resident(resident, records))
        except DuplicateIdentifier as exc:
            raise AlreadyExists(f"{fields[exc.position]} is already registered") from None
        return main_index_id

    async def link_identifier(self, main_index_id: MainIndexId, document: Document, *, now: dt.datetime) -> None:
        """Link one more document to an entry. Linking it again to the same entry does nothing.

        Raises :class:`~issuer.errors.NotFound` for an unknown or merged entry,
        :class:`~issuer.errors.AlreadyExists` if the document belongs to another.
        """
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        record = self._identifier(self._check_document(document, "document"), mid, primary=False, now=_second(now))
        try:
            await asyncio.wrap_future(self._store.add_identifier(record))
        except ResidentNotFound:
            raise NotFound("resident not found") from None
        except ResidentMerged:
            raise NotFound("resident was merged into another entry; link to the survivor") from None
        except DuplicateIdentifier:
            raise AlreadyExists("document is already registered to another resident") from None

    async def find_resident(self, document: Document) -> MainIndexId:
        """The main index ID a document belongs to, following merges to the survivor (:class:`NotFound`)."""
        blind_index = self._vault.blind_index(canonical_form(self._check_document(document, "document")))
        return await asyncio.to_thread(self._find_sync, blind_index)

    def _find_sync(self, blind_index: bytes) -> MainIndexId:
        identifier = self._store.find_identifier(blind_index)
        if identifier is None:
            raise NotFound("no resident has this document")
        # A merge moves the documents to the survivor, so this loop normally
        # ends at once; it also follows a chain of merges, defensively.
        mid = identifier.main_index_id
        for _ in range(_MAX_MERGE_HOPS):
            resident = self._store.get_resident(mid)
            if resident is None:
                raise NotFound("no resident has this document")
            if resident.merged_into is None:
                return MainIndexId(mid)
            mid = resident.merged_into
        raise Conflict("merge chain too long")

    async def get_resident(self, main_index_id: str) -> ResidentRecord:
        """The entry itself, merged or not (:class:`NotFound`)."""
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        record = await asyncio.to_thread(self._store.get_resident, mid)
        if record is None:
            raise NotFound("resident not found")
        return record

    async def merge_residents(self, *, survivor: MainIndexId, merged: MainIndexId, now: dt.datetime) -> int:
        """Merge ``merged`` into ``survivor``; return how many of its codes were revoked.

        The survivor keeps every document; the merged entry is marked
        ``merged_into=survivor``; all of its unexpired, unrevoked codes are
        revoked as ``merged`` in the same transaction. Raises
        :class:`~issuer.errors.Conflict` if the two are the same entry or
        either is already merged, :class:`~issuer.errors.NotFound` if either
        does not exist.
        """
        survivor_id = parse_main_index_id_field(survivor, "survivor")
        merged_id = parse_main_index_id_field(merged, "merged")
        if survivor_id == merged_id:
            raise Conflict("survivor and merged are the same resident")
        try:
            return await asyncio.wrap_future(
                self._store.merge_residents(survivor=survivor_id, merged=merged_id, at=_second(now))
            )
        except ResidentNotFound as exc:
            raise NotFound(exc.message) from None
        except ResidentMerged as exc:
            raise Conflict(exc.message) from None
