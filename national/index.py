"""The national index's rules: claim, merge, transfer, events. Values in, values out; the store decides races.

Claim (:meth:`NationalIndex.claim`), for province P, identity M, documents D1..Dn:

1. If M is merged, answer MERGED with its survivor; nothing is stored.
2. If M is homed in another province: answer HELD (M, its home) when M holds
   every Di already, else :class:`~national.errors.HomedElsewhere` (a province
   cannot add documents to an identity homed elsewhere).
3. Holders of the Di other than M: none -> store M (homed in P) and the free
   Di, answer CLAIMED (idempotent: claiming again what M holds changes nothing).
4. Some held by others and the claim is not provisional -> HELD, naming the
   holder of the first such document in request order and its home; nothing stored.
5. Provisional -> a merge of M and every holder. **The survivor is the
   identity registered first** (the smallest ``registered_at``, as the home
   provinces acknowledged it), ties broken by the smaller main index ID: a
   rule that depends only on the identities, never on which province reached
   the national service first, so both orders of reconciliation agree. Every
   loser's documents move to the survivor, the loser is marked merged into
   it, its home gets MERGED_AWAY and the survivor's home gets ABSORBED; then
   the survivor takes the claim's free documents. Answer MERGED (survivor, home).

All of a claim is one transaction: all documents or none.

Transfer (:meth:`NationalIndex.transfer`) to province P of identity M shown with
document D and the resident's consent: M must be active, hold D and be homed
elsewhere (homed in P already after a transfer: the earlier answer, idempotent).
The old home's ``NationalLink.ReleaseResident`` is called **before** anything is
written here; if it cannot be reached the answer is UNAVAILABLE and nothing
changed. Then, in one transaction: M's home becomes P (only if it is still
active in the old home), the transfer and its consent are recorded, and the old
home gets MOVED_AWAY.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import logging
from dataclasses import dataclass
from typing import Protocol, Sequence

from healthcode.model import MainIndexId, to_epoch
from issuer.documents import Document

from .blind_index import BlindIndexer
from .errors import Aborted, Conflict, HomedElsewhere, NotFound
from .store import ACTIVE, MERGED, EventRow, IdentityRow, NationalStore, TransferRow, Tx

__all__ = [
    "ClaimOutcome",
    "ClaimResult",
    "ConsentMethod",
    "Consent",
    "TransferResult",
    "EventKind",
    "ReleasePort",
    "NationalIndex",
    "MAX_DOCUMENTS",
    "DEFAULT_MAX_PROVISIONAL_AGE",
    "survivor_of",
]

log = logging.getLogger("national.index")

MAX_DOCUMENTS = 17
_MAX_CHAIN = 64


class ClaimOutcome(enum.IntEnum):
    """The numbers are the wire's ``ClaimOutcome``."""

    CLAIMED = 1
    HELD = 2
    MERGED = 3


class ConsentMethod(enum.IntEnum):
    IN_PERSON = 1
    APP = 2


class EventKind(enum.IntEnum):
    MERGED_AWAY = 1
    ABSORBED = 2
    MOVED_AWAY = 3


@dataclass(frozen=True)
class ClaimResult:
    outcome: ClaimOutcome
    main_index_id: MainIndexId
    home_province: str


@dataclass(frozen=True)
class Consent:
    """The resident's consent to a transfer, as the new province recorded it (validated at the wire)."""

    method: ConsentMethod
    given_at: dt.datetime
    reference: str


@dataclass(frozen=True)
class TransferResult:
    main_index_id: MainIndexId
    previous_province: str


class ReleasePort(Protocol):
    """The old home province's side of a move (``NationalLink.ReleaseResident``)."""

    async def release_resident(self, province: str, main_index_id: str, *, to_province: str,
                               consent_reference: str) -> int: ...


def survivor_of(a: IdentityRow, b: IdentityRow) -> IdentityRow:
    """The merge rule: registered first wins; ties go to the smaller main index ID."""
    return min(a, b, key=lambda row: (row.registered_at, row.main_index_id))


#: How far back a provisional claim's registration time may reach (the longest partition a province may
#: reconcile with its own times): older times count as this far back. A province's times decide merges
#: ("registered first survives"), so without a bound one province could backdate a claim and take over
#: any resident homed elsewhere; with it, only identities claimed within the bound can lose to a
#: provisional claim, and each such loss of a nationally claimed identity is logged as a warning.
DEFAULT_MAX_PROVISIONAL_AGE = dt.timedelta(days=3)


class _Retry(Exception):
    """A document was taken between reading and inserting (PostgreSQL): rerun the transaction."""


class NationalIndex:
    """The domain over a :class:`~national.store.NationalStore` and the blind index.

    Store calls are blocking (run them off the event loop: the servicers use
    ``asyncio.to_thread``); :meth:`transfer` is a coroutine because it calls
    the old home province.
    """

    def __init__(self, *, store: NationalStore, blind: BlindIndexer, release: ReleasePort | None = None,
                 max_provisional_age: dt.timedelta = DEFAULT_MAX_PROVISIONAL_AGE) -> None:
        if max_provisional_age <= dt.timedelta(0):
            raise ValueError("max_provisional_age must be positive")
        self._store = store
        self._blind = blind
        self._release = release
        self._max_provisional_age = max_provisional_age

    # ------------------------------------------------------------------ claim

    def claim(self, *, province: str, main_index_id: MainIndexId, documents: Sequence[Document],
              provisional: bool, registered_at: dt.datetime | None, now: dt.datetime) -> ClaimResult:
        """Claim ``documents`` for ``main_index_id`` homed in ``province`` (see the module docstring).

        Only a provisional claim's ``registered_at`` is the province's word, and only back to
        ``max_provisional_age`` before ``now`` (earlier times count as that bound); a claim made while
        the link was up is registered ``now``, whatever it says.
        """
        if not 1 <= len(documents) <= MAX_DOCUMENTS:
            raise ValueError(f"a claim has 1 to {MAX_DOCUMENTS} documents")
        indexes = list(dict.fromkeys(self._blind.blind_index(d) for d in documents))  # HMACs outside the transaction
        if provisional and registered_at is not None:
            registered_at = min(max(registered_at, now - self._max_provisional_age), now)
        else:
            registered_at = now
        at = to_epoch(registered_at)
        now_s = to_epoch(now)

        def fast(tx: Tx) -> ClaimResult:
            if not tx.claim_new(main_index_id, province, indexes, registered_at=at, now=now_s):
                raise _Retry()  # something exists: roll back, take the full path
            return ClaimResult(ClaimOutcome.CLAIMED, main_index_id, province)

        displaced: list[IdentityRow] = []  # other provinces' identities this claim's merge displaced

        def work(tx: Tx) -> ClaimResult:
            displaced.clear()  # a rerun transaction starts over
            return self._claim(tx, province, main_index_id, indexes, provisional, at, now_s, displaced)

        try:  # the common case, a new resident with new documents: one autocommit statement on PostgreSQL
            return self._store.statement(fast)
        except _Retry:
            pass
        for _ in range(5):
            try:
                result = self._store.transaction(work)
            except _Retry:
                continue
            for loser in displaced:  # committed: worth an operator's look (never a number)
                log.warning("merge: a provisional claim of province %s (registered %.1f h before the national index "
                            "first saw the identity it displaced) took over an identity homed in province %s",
                            province, (loser.created_at - at) / 3600, loser.home_province)
            return result
        raise Aborted("documents of this claim are being claimed concurrently; retry")

    def _claim(self, tx: Tx, province: str, mid: MainIndexId, indexes: list[bytes], provisional: bool,
               registered_at: int, now: int, displaced: list[IdentityRow]) -> ClaimResult:
        own = tx.identity(mid, lock=True)
        if own is not None and own.state == MERGED:  # (1)
            survivor = _follow(tx, own)
            return ClaimResult(ClaimOutcome.MERGED, survivor.main_index_id, survivor.home_province)
        holders = [tx.holder(bi) for bi in indexes]
        if own is not None and own.home_province != province:  # (2)
            if all(h == mid for h in holders):
                return ClaimResult(ClaimOutcome.HELD, mid, own.home_province)
            raise HomedElsewhere(f"the identity is homed in province {own.home_province}: "
                                 "only its home province adds documents to it")
        others = list(dict.fromkeys(h for h in holders if h is not None and h != mid))
        if not others:  # (3)
            if own is None and not tx.insert_identity(mid, province, registered_at=registered_at, now=now):
                raise _Retry()
            for bi, holder in zip(indexes, holders):
                if holder is None and not tx.insert_document(bi, mid):
                    raise _Retry()
            return ClaimResult(ClaimOutcome.CLAIMED, mid, province)
        if not provisional:  # (4)
            first = tx.identity(others[0])
            if first is None:  # pragma: no cover - a document row always has its identity
                raise Conflict("the national index is inconsistent for this document")
            return ClaimResult(ClaimOutcome.HELD, first.main_index_id, first.home_province)
        # (5) a merge case
        if own is None:
            if not tx.insert_identity(mid, province, registered_at=registered_at, now=now):
                raise _Retry()
            own = IdentityRow(mid, province, ACTIVE, None, registered_at, now)
        group = [own]
        for other in others:
            row = tx.identity(other, lock=True)
            if row is None or row.state != ACTIVE:  # pragma: no cover - documents point at active identities
                raise _Retry()
            group.append(row)
        survivor = group[0]
        for row in group[1:]:
            survivor = survivor_of(survivor, row)
        for loser in group:
            if loser is survivor:
                continue
            if loser.home_province != province:
                displaced.append(loser)
            tx.repoint_documents(loser.main_index_id, survivor.main_index_id)
            tx.mark_merged(loser.main_index_id, survivor.main_index_id)
            tx.append_event(loser.home_province, EventKind.MERGED_AWAY, loser.main_index_id,
                            survivor.main_index_id, survivor.home_province, now)
            tx.append_event(survivor.home_province, EventKind.ABSORBED, survivor.main_index_id,
                            loser.main_index_id, loser.home_province, now)
        for bi, holder in zip(indexes, holders):
            if holder is None and not tx.insert_document(bi, survivor.main_index_id):
                raise _Retry()
        return ClaimResult(ClaimOutcome.MERGED, survivor.main_index_id, survivor.home_province)

    # ------------------------------------------------------------------ transfer

    async def transfer(self, *, province: str, main_index_id: MainIndexId, document: Document, consent: Consent,
                       now: dt.datetime) -> TransferResult:
        """Move ``main_index_id`` to ``province`` (see the module docstring)."""
        if self._release is None:
            raise Conflict("transfers need the provinces' NationalLink endpoints (national config [provinces])")
        bi = self._blind.blind_index(document)

        def check(tx: Tx) -> tuple[IdentityRow, TransferRow | None]:
            row = tx.identity(main_index_id)
            if row is None:
                raise NotFound("no national identity with that main index ID")
            if row.state != ACTIVE:
                raise Conflict("the identity was merged into another one: transfer the survivor")
            if tx.holder(bi) != main_index_id:
                raise Conflict("the document shown is not held by that identity")
            return row, tx.last_transfer(main_index_id)

        row, last = await asyncio.to_thread(self._store.transaction, check)
        if row.home_province == province:
            if last is not None and last.to_province == province:  # a retry of a transfer that completed
                return TransferResult(main_index_id, last.from_province)
            raise Conflict("the identity is homed in the calling province already")
        old = row.home_province
        # Before anything is written here: the old home supersedes its codes and points its record at us.
        await self._release.release_resident(old, main_index_id, to_province=province,
                                             consent_reference=consent.reference)
        now_s = to_epoch(now)
        record = TransferRow(main_index_id, old, province, int(consent.method), consent.reference,
                             to_epoch(consent.given_at), now_s)

        def commit(tx: Tx) -> None:
            if not tx.set_home(main_index_id, old=old, new=province):
                raise Aborted("the identity changed during the transfer; retry")
            tx.record_transfer(record)
            tx.append_event(old, EventKind.MOVED_AWAY, main_index_id, None, province, now_s)

        await asyncio.to_thread(self._store.transaction, commit)
        return TransferResult(main_index_id, old)

    # ------------------------------------------------------------------ reads

    def events(self, province: str, *, after: int, limit: int) -> list[EventRow]:
        """``province``'s events with sequence > ``after``, oldest first, at most ``limit``."""
        return self._store.read(lambda tx: tx.events_after(province, after, limit))

    def lookup(self, document: Document) -> IdentityRow | None:
        """The active identity holding ``document`` (after merges), or None."""
        bi = self._blind.blind_index(document)
        return self._store.read(lambda tx: tx.identity_by_document(bi))

    def identity(self, main_index_id: str) -> IdentityRow | None:
        """The identity's row (a merged one names its survivor), or None."""
        return self._store.read(lambda tx: tx.identity(main_index_id))

    def survivor(self, main_index_id: str) -> IdentityRow | None:
        """The active identity ``main_index_id`` is or was merged into, or None if unknown."""

        def read(tx: Tx) -> IdentityRow | None:
            row = tx.identity(main_index_id)
            return None if row is None else _follow(tx, row)

        return self._store.transaction(read)


def _follow(tx: Tx, row: IdentityRow) -> IdentityRow:
    """The active identity at the end of ``row``'s survivor chain."""
    for _ in range(_MAX_CHAIN):
        if row.state != MERGED or row.survivor is None:
            return row
        nxt = tx.identity(row.survivor)
        if nxt is None:  # pragma: no cover - survivors are never deleted
            break
        row = nxt
    raise Conflict("the identity's merge chain is broken")
