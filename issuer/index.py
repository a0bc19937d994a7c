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
import base64
import datetime as dt
import os
from dataclasses import dataclass
from typing import Callable, Sequence

from healthcode.errors import InvalidClaims
from healthcode.model import MainIndexId, from_epoch, main_index_id_from_bytes, parse_main_index_id, to_epoch

from .documents import Document, DocumentError, DocumentType, canonical_form, parse_document
from .errors import AlreadyExists, Conflict, FieldViolation, InvalidRequest, IssuerError, NotFound
from .model import NationalState
from .privacy import IdentifierVault
from .store.base import (
    AccessRecord,
    DuplicateIdentifier,
    IdentifierRecord,
    ResidentMerged,
    ResidentMoved,
    ResidentNotFound,
    ResidentRecord,
    Store,
)

__all__ = ["ResidentIndex", "Registration", "Found", "AccessPage", "parse_main_index_id_field",
           "document_from_canonical"]


@dataclass(frozen=True, slots=True)
class Registration:
    """A new entry's main index ID; ``provisional`` when the national index could not be reached."""

    main_index_id: MainIndexId
    provisional: bool = False


@dataclass(frozen=True, slots=True)
class Found:
    """Who a document identifies (after merges: the survivor) and where they are homed (None: here)."""

    main_index_id: MainIndexId
    home_province: str | None


@dataclass(frozen=True, slots=True)
class AccessPage:
    """One page of a resident's access log, newest first; ``next_token`` empty on the last page."""

    accesses: list[AccessRecord]
    next_token: str


def document_from_canonical(canonical: bytes, *, today: dt.date) -> Document:
    """The :class:`Document` whose :func:`~issuer.documents.canonical_form` is ``canonical`` (an opened sealed value).

    A Hong Kong/Macau travel permit comes back as its 9-character lifetime
    number (the canonical form drops the renewal count). Raises
    :class:`~issuer.errors.IssuerError` (reason ``internal``) for bytes that are no document.
    """
    try:
        text = canonical.decode("ascii")
        kind, _, rest = text.partition(":")
        country, number = rest.split(":", 1) if kind == DocumentType.PASSPORT.value else (None, rest)
        return parse_document(DocumentType(kind), number, country=country, today=today)
    except (UnicodeDecodeError, ValueError, DocumentError):
        raise IssuerError("a stored document does not parse") from None

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
        state: NationalState = NationalState.LOCAL,
    ) -> MainIndexId:
        """Create an entry for a new resident (in national ``state``); return its main index ID.

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
        resident = ResidentRecord(main_index_id=main_index_id, created_at=created_at, national_state=state)
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
        except ResidentMoved as exc:
            raise Conflict(exc.message) from None
        except DuplicateIdentifier:
            raise AlreadyExists("document is already registered to another resident") from None

    async def register(self, primary: Document, supplementary: Sequence[Document] = (), *,
                       now: dt.datetime) -> Registration:
        """:meth:`register_resident`, as the API answers it (province-only: never provisional)."""
        return Registration(await self.register_resident(primary, supplementary, now=now))

    async def find(self, document: Document) -> Found:
        """Like :meth:`find_resident`, with the survivor's home province (None: here)."""
        mid = await self.find_resident(document)
        record = await asyncio.to_thread(self._store.get_resident, mid)
        return Found(mid, None if record is None else record.home_province)

    async def move_in(self, main_index_id: MainIndexId, document: Document, supplementary: Sequence[Document],
                      consent: object, *, now: dt.datetime) -> tuple[MainIndexId, str]:
        """Moving a resident in needs the national index (:class:`issuer.claims.NationalResidentIndex`)."""
        raise Conflict("this issuer has no national link: configure [national] to move residents in")

    async def list_accesses(self, main_index_id: MainIndexId, *, page_size: int, page_token: str) -> AccessPage:
        """The resident's access log, newest first (:class:`NotFound` for an unknown resident).

        ``page_token`` is a previous page's ``next_token`` (empty: the first
        page); a token that does not parse is :class:`InvalidRequest` on field ``page_token``.
        """
        before = _parse_page_token(page_token)
        if await asyncio.to_thread(self._store.get_resident, main_index_id) is None:
            raise NotFound("resident not found")
        rows = await asyncio.to_thread(self._store.accesses_of, main_index_id, limit=page_size + 1, before=before)
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            last = rows[-1]
            token = base64.urlsafe_b64encode(f"{to_epoch(last.resolved_at)}:{last.access_id}".encode()).decode()
        return AccessPage(rows, token)

    def documents_of(self, main_index_id: str, *, today: dt.date) -> list[Document]:
        """The entry's documents, opened from the vault, primary first (blocking: a store read)."""
        return [document_from_canonical(self._vault.open(i.sealed, aad=i.blind_index), today=today)
                for i in self._store.identifiers_of(main_index_id)]

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


def _parse_page_token(token: str) -> tuple[dt.datetime, str] | None:
    if not token:
        return None
    try:
        seconds, _, access_id = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii").partition(":")
        if not access_id or len(access_id) > 64:
            raise ValueError
        return from_epoch(int(seconds)), access_id
    except (ValueError, UnicodeError, OverflowError):
        raise InvalidRequest([FieldViolation("page_token", "not a token from a previous page", "page_token")]) from None
