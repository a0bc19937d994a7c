"""The resident index with a national link: every document claimed at the national index, first province wins.

:class:`NationalResidentIndex` is :class:`~issuer.index.ResidentIndex` whose
registrations, links and moves go through the national index
(:class:`~issuer.national_client.NationalClient` or anything with its
``claim``/``transfer``). A registration, step by step (marked in :meth:`register`):

1. the entry is written locally and durably as ``pending`` (local duplicates
   are refused here, as without a link; a pending entry left by an earlier
   attempt with exactly these documents is taken up again);
2. its documents are claimed nationally (ClaimIdentity, not provisional);
3. claimed: the entry becomes ``claimed`` and the registration is acknowledged;
   held by another identity: the pending entry is removed and the answer is
   :class:`HeldElsewhere` (ALREADY_EXISTS naming the home province); refused
   outright (:class:`~issuer.national_client.NationalRefused`): the pending
   entry is removed and the refusal answered (FAILED_PRECONDITION); the
   national index unreachable, too slow or failing: the entry becomes
   ``provisional`` and the registration is acknowledged as provisional (the
   reconciler, :mod:`issuer.reconciler`, claims it when the link returns).

A crash between (1) and (3) leaves a ``pending`` entry nobody was told about:
a retry takes it up, and the reconciler settles it (claimed, or removed) once
it is older than its grace period. Nothing acknowledged is ever removed.

Linking a document to a ``claimed`` entry claims it nationally first (held
elsewhere: :class:`HeldElsewhere`, nothing stored); unreachable, it is linked
locally and the entry becomes ``provisional`` again so the reconciler claims
all its documents. Entries not claimed yet link locally only.

Moving in (:meth:`move_in`): TransferResident with the resident's consent (the
old province supersedes its codes before the national index answers), then the
entry is adopted here under the same main index ID with the document shown as
primary; supplementary documents are then linked (and claimed) one by one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import Any, Callable, Protocol, Sequence

from healthcode.model import PROVINCES, PROVINCES_EN, MainIndexId

from .documents import Document, canonical_form
from .errors import AlreadyExists, Conflict, FieldViolation, InvalidRequest, NotFound
from .index import Registration, ResidentIndex, parse_main_index_id_field
from .model import NationalState
from .national_client import Claim, ClaimOutcome, Consent, NationalEvent, NationalRefused, NationalUnavailable
from .privacy import IdentifierVault
from .store.base import DuplicateIdentifier, ResidentMerged, ResidentRecord, Store

__all__ = ["NationalPort", "NationalResidentIndex", "HeldElsewhere"]

log = logging.getLogger("issuer.national")

_MAX_SUPPLEMENTARY = 16


class NationalPort(Protocol):
    """What the index needs of the national index (:class:`issuer.national_client.NationalClient`)."""

    async def claim(self, main_index_id: str, documents: Sequence[Document], *, provisional: bool,
                    registered_at: dt.datetime) -> Claim: ...

    async def transfer(self, main_index_id: str, document: Document, consent: Consent) -> str: ...

    async def events(self, *, after: int) -> list[NationalEvent]: ...


class HeldElsewhere(AlreadyExists):
    """A document is held nationally by a resident homed in ``home_province`` (-> ALREADY_EXISTS).

    The status carries ErrorInfo reason ``HELD_BY_PROVINCE`` with metadata
    ``home_province``; the message names the province, never a number.
    """

    reason = "held_by_province"

    def __init__(self, home_province: str) -> None:
        name = f"{PROVINCES.get(home_province, '?')} {PROVINCES_EN.get(home_province, '')}".strip()
        where = "this province" if not home_province else f"province {home_province} ({name})"
        super().__init__(f"already registered nationally: the resident's home province is {where}; "
                         "to register them here, move them in (MoveResidentIn) with their consent")
        self.home_province = home_province
        self.metadata = {"home_province": home_province}


class NationalResidentIndex(ResidentIndex):
    """A :class:`ResidentIndex` that claims documents at the national index (see the module docstring).

    ``province`` is this issuer's; ``on_revoked`` is called after a step that
    revoked codes (the revocation job's trigger).
    """

    def __init__(self, *, store: Store, vault: IdentifierVault, national: NationalPort, province: str,
                 random_bytes: Callable[[int], bytes] = os.urandom,
                 on_revoked: Callable[[], None] | None = None) -> None:
        super().__init__(store=store, vault=vault, random_bytes=random_bytes)
        self.national = national
        self.province = province
        self.store = store
        self._on_revoked = on_revoked or (lambda: None)

    async def _write(self, future: Any) -> Any:
        return await asyncio.wrap_future(future)

    # -- registering

    async def register(self, primary: Document, supplementary: Sequence[Document] = (), *,
                       now: dt.datetime) -> Registration:
        """Register with a national claim; see the module docstring for the steps."""
        documents = [primary, *supplementary]
        try:  # (1) pending, durably
            mid = await self.register_resident(primary, supplementary, now=now, state=NationalState.PENDING)
        except AlreadyExists:
            resumed = await asyncio.to_thread(self._pending_holding, documents)
            if resumed is None:
                raise
            mid = resumed
        try:  # (2) the national claim
            claim = await self.national.claim(mid, documents, provisional=False, registered_at=now)
        except NationalUnavailable:  # (3) acknowledged provisionally
            await self._write(self.store.set_national_state(mid, NationalState.PROVISIONAL,
                                                            expect=[NationalState.PENDING]))
            log.warning("national index unreachable: registration acknowledged as provisional",
                        extra={"event": "registration_provisional"})
            return Registration(mid, provisional=True)
        except NationalRefused:  # a definitive refusal: nothing was stored nationally, nothing stays here
            await self._write(self.store.delete_pending(mid))
            raise
        if claim.outcome is ClaimOutcome.CLAIMED and claim.main_index_id == mid:  # (3) claimed
            await self._write(self.store.set_national_state(mid, NationalState.CLAIMED,
                                                            expect=[NationalState.PENDING, NationalState.PROVISIONAL]))
            return Registration(mid)
        await self._write(self.store.delete_pending(mid))  # (3) held elsewhere: nothing stays
        raise HeldElsewhere(claim.home_province)

    def _pending_holding(self, documents: Sequence[Document]) -> MainIndexId | None:
        """The ``pending`` entry holding exactly ``documents`` (an earlier attempt's), else None."""
        blind = {self._vault.blind_index(canonical_form(d)) for d in documents}
        first = self.store.find_identifier(next(iter(blind)))
        if first is None:
            return None
        resident = self.store.get_resident(first.main_index_id)
        if resident is None or resident.national_state is not NationalState.PENDING:
            return None
        held = {i.blind_index for i in self.store.identifiers_of(first.main_index_id)}
        return MainIndexId(first.main_index_id) if held == blind else None

    # -- linking

    async def link_identifier(self, main_index_id: MainIndexId, document: Document, *, now: dt.datetime) -> None:
        """Link a document, claimed nationally first for a ``claimed`` entry (module docstring)."""
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        resident = await self.get_resident(mid)
        if resident.national_state is not NationalState.CLAIMED or not resident.active:
            return await super().link_identifier(mid, document, now=now)  # local rules (and their refusals)
        holder = await asyncio.to_thread(self.store.find_identifier,
                                         self._vault.blind_index(canonical_form(document)))
        if holder is not None:
            if holder.main_index_id == mid:
                return None  # linked already
            raise AlreadyExists("document is already registered to another resident")
        try:
            claim = await self.national.claim(mid, [document], provisional=False, registered_at=resident.created_at)
        except NationalUnavailable:
            await super().link_identifier(mid, document, now=now)
            await self._write(self.store.set_national_state(mid, NationalState.PROVISIONAL,
                                                            expect=[NationalState.CLAIMED]))
            log.warning("national index unreachable: document linked, entry provisional again",
                        extra={"event": "link_provisional"})
            return None
        if claim.outcome is not ClaimOutcome.CLAIMED or claim.main_index_id != mid:
            raise HeldElsewhere(claim.home_province)
        return await super().link_identifier(mid, document, now=now)

    # -- moving in

    async def move_in(self, main_index_id: MainIndexId, document: Document, supplementary: Sequence[Document],
                      consent: object, *, now: dt.datetime) -> tuple[MainIndexId, str]:
        """Take over a resident from another province; return (main index ID, previous province).

        Raises :class:`~issuer.errors.Unavailable` (nothing changed) when the
        national index cannot be reached, :class:`~issuer.errors.NotFound`
        when it knows no such identity, :class:`~issuer.errors.Conflict` when
        it refuses (the document is not the identity's, the identity was
        merged, ...), :class:`~issuer.errors.AlreadyExists` when a document is
        another local entry's.
        """
        if not isinstance(consent, Consent):
            raise TypeError("consent must be an issuer.national_client.Consent")
        mid = parse_main_index_id_field(main_index_id, "main_index_id")
        if len(supplementary) > _MAX_SUPPLEMENTARY:
            raise InvalidRequest([FieldViolation("supplementary", f"at most {_MAX_SUPPLEMENTARY} documents", "length")])
        record = self._identifier(self._check_document(document, "document"), mid, primary=True, now=now)
        holder = await asyncio.to_thread(self.store.find_identifier, record.blind_index)
        if holder is not None and holder.main_index_id != mid:
            raise AlreadyExists("document is registered to another resident of this province")
        try:
            previous = await self.national.transfer(mid, document, consent)
        except NationalRefused as exc:
            if exc.code == "NOT_FOUND":
                raise NotFound("the national index knows no resident with this main index ID") from None
            raise
        try:
            await self._write(self.store.adopt_resident(
                ResidentRecord(main_index_id=mid, created_at=now, national_state=NationalState.CLAIMED), [record]))
        except DuplicateIdentifier:
            raise AlreadyExists("document is registered to another resident of this province") from None
        except ResidentMerged:
            raise Conflict("this province's entry with that main index ID was merged into another") from None
        log.info("resident moved in", extra={"event": "moved_in", "from_province": previous})
        for extra in supplementary:
            await self.link_identifier(mid, extra, now=now)
        return mid, previous
