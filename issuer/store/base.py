"""The store interface: what the issuer's domain needs from a database, and no more.

:mod:`issuer.store.sql` implements it once, over a dialect: SQLite
(:mod:`issuer.store.sqlite`, the default) or PostgreSQL (:mod:`issuer.store.postgres`).
Records are frozen dataclasses; times are aware UTC ``datetime`` values at this
interface (stores may keep whole seconds: every time the domain passes is
floored to the second before it is stored).

Two kinds of method, deliberately different:

* **reads** block and return records (``None`` when absent). The async domain
  runs them with :func:`asyncio.to_thread`. A read that cannot reach the
  database raises :class:`~issuer.errors.Unavailable` (the PostgreSQL store,
  its server down or unreachable); any other failure (an SQLite I/O error, a
  lock held past ``busy_timeout``) propagates as the driver's error, which the
  service answers as INTERNAL.
* **writes** return a :class:`concurrent.futures.Future` at once; the store
  applies them in submission order and resolves each future only after its
  transaction committed durably (or with the error that refused it). The async
  domain awaits them with :func:`asyncio.wrap_future`. A write's future cannot
  be cancelled: once submitted, a write happens or fails on its own.

Nothing here ever holds a document number: identifiers are a keyed blind index
plus a sealed value (:mod:`issuer.privacy`).

Errors raised by writes are :mod:`issuer.errors` types (so the service maps
them in its one table). The ones that subclass :class:`RowRejected` promise
that *nothing* of the write was stored, so e.g. a serial allocated for a
refused code may be handed out again.
"""

from __future__ import annotations

import abc
import datetime as dt
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol, Sequence

from ..errors import AlreadyExists, Conflict, FieldViolation, InvalidRequest, IssuerError, NotFound, Unavailable
from ..model import ELSEWHERE, Channel, CodeRef, IssuedCode, NationalState, RevocationReason

__all__ = [
    "Store",
    "ResidentRecord",
    "IdentifierRecord",
    "CodeRecord",
    "ChallengeRecord",
    "ChallengeUse",
    "RowRejected",
    "ChallengeRefused",
    "DuplicateIdentifier",
    "DuplicateIdempotencyKey",
    "DuplicateSerial",
    "ResidentNotFound",
    "ResidentMerged",
    "ResidentMoved",
    "AccessRecord",
    "CodeNotRenewable",
    "PresentationResolved",
    "StoreClosed",
    "StoreOverloaded",
    "WriteFailed",
    "SchemaTooNew",
    "StoreInUse",
    "WriterStats",
    "RevocationSource",
    "DEFAULT_BATCH_CAP",
    "DEFAULT_MAX_QUEUED",
    "DEFAULT_RESIDENT_CACHE",
]

#: Most code insertions one group commit takes.
DEFAULT_BATCH_CAP = 512
#: How many resident entries known to exist unmerged a store remembers (saves a read per issuance).
DEFAULT_RESIDENT_CACHE = 200_000
#: How many writes may wait for the writer before new ones are refused (StoreOverloaded).
DEFAULT_MAX_QUEUED = 50_000


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class WriterStats:
    """What a store's writer has done since the store opened (for tests, metrics and benchmarks)."""

    transactions: int  # committed transactions, of all kinds
    batches: int  # committed group-commit batches of code insertions
    codes: int  # codes committed
    largest_batch: int  # most codes committed by one transaction
    fallbacks: int  # batches that fell back to row-by-row


@dataclass(frozen=True, slots=True)
class ResidentRecord:
    """A main index entry. ``merged_into`` names the survivor once merged (then it is read-only).

    ``national_state`` is where it stands with the national index
    (:class:`~issuer.model.NationalState`); ``home_province`` is None while the
    entry is homed here, else the province it moved to (``moved_at``) or whose
    entry survived its national merge (a ``foreign`` stand-in's own province).
    """

    main_index_id: str
    created_at: dt.datetime
    merged_into: str | None = None
    merged_at: dt.datetime | None = None
    national_state: NationalState = NationalState.LOCAL
    home_province: str | None = None
    moved_at: dt.datetime | None = None

    @property
    def active(self) -> bool:
        """Takes new codes and documents here: not merged, not homed in another province."""
        return self.merged_into is None and self.national_state not in ELSEWHERE


@dataclass(frozen=True, slots=True)
class AccessRecord:
    """One resolution of a resident's code by a hospital (the resident's access log). No document number.

    ``purpose`` is a ``healthcode.national.v1.Purpose`` value; ``code_kind``
    is ``"static"`` or ``"dynamic"``; ``resolved_at`` whole seconds, UTC.
    """

    access_id: str
    main_index_id: str
    hospital_organisation: str
    hospital_province: str
    purpose: int
    resolved_at: dt.datetime
    code_kind: str
    #: a live code's "kid:serial:step" (hex kid): recorded with the access, refused if recorded before
    presentation: str | None = None


@dataclass(frozen=True, slots=True)
class IdentifierRecord:
    """One document linked to a resident, as stored: never the number itself.

    ``blind_index`` is the keyed HMAC of the document's canonical form (unique
    across the store); ``sealed`` is its AES-GCM sealed value, bound to
    ``blind_index`` as associated data; ``doc_type`` is the
    :class:`~issuer.documents.DocumentType` value; ``primary`` marks the
    document the resident registered with.
    """

    blind_index: bytes
    doc_type: str
    sealed: bytes
    main_index_id: str
    primary: bool
    created_at: dt.datetime

    def __repr__(self) -> str:  # the sealed value is opaque, but keep logs short and bland
        return f"IdentifierRecord(doc_type={self.doc_type!r}, primary={self.primary})"


@dataclass(frozen=True, slots=True)
class CodeRecord:
    """An issued code as stored, with what makes retries idempotent.

    ``(province, kid, serial)`` is unique; so is ``(caller, idempotency_key)``
    when the key is set. ``request_fingerprint`` is a digest of the request's
    parameters, so a key reused for a different request is recognised.
    """

    province: str
    kid: bytes
    serial: int
    main_index_id: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    text: str
    caller: str
    idempotency_key: str | None = None
    request_fingerprint: bytes | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: RevocationReason | None = None
    channel: Channel = Channel.STATIC

    @property
    def ref(self) -> CodeRef:
        return CodeRef(self.province, self.kid, self.serial)

    def to_issued_code(self) -> IssuedCode:
        return IssuedCode(
            ref=CodeRef(self.province, self.kid, self.serial),
            main_index_id=self.main_index_id,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            text=self.text,
            revoked_at=self.revoked_at,
            revocation_reason=self.revocation_reason,
            channel=self.channel,
        )


@dataclass(frozen=True, slots=True)
class ChallengeRecord:
    """A single-use enrolment challenge (the Wallets API), bound to a caller and a resident.

    Usable once, before ``expires_at``; ``used_at`` is set when an issuance
    (or a refused proof) consumed it. Stored so that a restart forgets none.
    """

    challenge: bytes
    main_index_id: str
    caller: str
    created_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None = None

    def __repr__(self) -> str:  # no resident in logs
        return f"ChallengeRecord(expires_at={self.expires_at.isoformat()}, used={self.used_at is not None})"


@dataclass(frozen=True, slots=True)
class ChallengeUse:
    """What consuming a challenge checks: the same challenge, resident and caller, unused, unexpired."""

    challenge: bytes
    main_index_id: str
    caller: str


# --------------------------------------------------------------------------- errors


class SchemaTooNew(IssuerError):
    """The database was migrated by newer software than this."""


class StoreInUse(Unavailable):
    """Another process holds this database's writer lease (another issuer is running on it).

    A store takes the lease when it opens and holds it until it closes (or its
    process dies): serials are allocated in the issuer's memory, so two
    issuers on one database would hand out the same serials, and each would
    see the other's refused.
    """

    reason = "store_in_use"


class RowRejected(IssuerError):
    """Mixin: the store refused the write before storing anything of it."""


class DuplicateIdentifier(RowRejected, AlreadyExists):
    """A document is already linked to a resident. ``position`` indexes the identifiers passed."""

    def __init__(self, position: int, message: str = "document is already registered") -> None:
        super().__init__(message)
        self.position = position


class DuplicateIdempotencyKey(RowRejected, Conflict):
    """(caller, idempotency key) already names a stored code."""


class DuplicateSerial(IssuerError):
    """(province, kid, serial) is already stored: two allocators for one key (a bug).

    Not a :class:`RowRejected`: the serial is taken, so it must not be handed out again.
    """

    reason = "internal"


class ResidentNotFound(RowRejected, NotFound):
    """The resident does not exist."""


class ResidentMerged(RowRejected, Conflict):
    """The resident was merged into another entry; only the survivor takes new codes or documents."""


class ResidentMoved(RowRejected, Conflict):
    """The resident is homed in another province now (moved, or another province's entry); it takes nothing here."""


class CodeNotRenewable(RowRejected, Conflict):
    """The code to supersede is missing, revoked, or of another resident."""


class ChallengeRefused(RowRejected, InvalidRequest):
    """The challenge is unknown, used, expired, or another resident's or caller's (field ``challenge``)."""

    reason = "invalid_argument"

    def __init__(self, message: str = "challenge is unknown, expired or already used; ask for a new one") -> None:
        super().__init__([FieldViolation("challenge", message, "challenge")])


class PresentationResolved(RowRejected, Conflict):
    """This live code (the same presentation: kid, serial and step) was resolved already, here or elsewhere."""


class StoreClosed(RowRejected, Unavailable):
    """The store is closed (shutting down)."""


class StoreOverloaded(RowRejected, Unavailable):
    """Too many writes are waiting for the disk; the caller should back off and retry."""


class WriteFailed(Unavailable):
    """The transaction failed for a reason outside the row (I/O, disk full).

    Whether it reached the disk is unknown, so nothing it held may be reused.
    """


# --------------------------------------------------------------------------- the interfaces


class RevocationSource(Protocol):
    """Where the revocation publisher (:mod:`issuer.revocation_publisher`) reads revocations.

    The store's read side (:func:`issuer.store.open_revocation_source`), or a fake in tests.
    """

    def shards(self) -> list[tuple[str, bytes]]:
        """Every (province, kid) that has issued a code."""
        ...

    def revoked(self, province: str, kid: bytes) -> tuple[int, list[int]]:
        """(universe, ascending revoked serials) of one shard, read consistently."""
        ...


class Store(abc.ABC):
    """Residents, their identifiers, issued codes and serial counters.

    One writer process per province database: serial allocation relies on it
    (see :mod:`issuer.issuance`). Implementations enforce it with a writer
    lease taken when the store opens (:class:`StoreInUse` when another process
    holds it) and released by :meth:`close` or the process's death.
    """

    # -- residents and identifiers: reads

    @abc.abstractmethod
    def get_resident(self, main_index_id: str) -> ResidentRecord | None:
        """The entry, merged or not."""

    def known_active(self, main_index_id: str) -> bool:
        """Non-blocking hint: True only if the store *knows* (cache) the entry exists unmerged.

        False means "ask :meth:`get_resident`". Writes re-check at commit.
        """
        return False

    @abc.abstractmethod
    def find_identifier(self, blind_index: bytes) -> IdentifierRecord | None:
        """The identifier with this blind index."""

    @abc.abstractmethod
    def identifiers_of(self, main_index_id: str) -> list[IdentifierRecord]:
        """Every identifier linked to the entry, primary first."""

    # -- residents and identifiers: writes

    @abc.abstractmethod
    def create_resident(self, resident: ResidentRecord, identifiers: Sequence[IdentifierRecord]) -> Future[None]:
        """Create the entry with its identifiers, atomically.

        Fails with :class:`DuplicateIdentifier` (``position`` into
        ``identifiers``) if any is linked already.
        """

    @abc.abstractmethod
    def add_identifier(self, identifier: IdentifierRecord) -> Future[bool]:
        """Link one more identifier. True if added, False if already linked to this same entry.

        Fails with :class:`ResidentNotFound`, :class:`ResidentMerged`, or
        :class:`DuplicateIdentifier` (linked to another entry).
        """

    @abc.abstractmethod
    def merge_residents(self, *, survivor: str, merged: str, at: dt.datetime) -> Future[int]:
        """Move ``merged``'s identifiers to ``survivor``, mark it merged, revoke its live codes.

        All in one transaction; codes with ``expires_at > at`` and not yet
        revoked get :attr:`RevocationReason.MERGED` at ``at``. Resolves to how
        many were revoked. Fails with :class:`ResidentNotFound` or
        :class:`ResidentMerged` (either entry already merged), or
        :class:`~issuer.errors.Conflict` if they are the same entry.
        """

    # -- codes: reads

    @abc.abstractmethod
    def get_code(self, ref: CodeRef) -> CodeRecord | None:
        """The code named by ``ref``."""

    @abc.abstractmethod
    def find_code_by_idempotency_key(self, caller: str, idempotency_key: str) -> CodeRecord | None:
        """The code a caller's earlier request with this key produced."""

    @abc.abstractmethod
    def codes_of(self, main_index_id: str) -> list[CodeRecord]:
        """Every code issued to the entry, oldest first."""

    @abc.abstractmethod
    def next_serial(self, province: str, kid: bytes) -> int:
        """One past the highest serial ever committed for (province, kid); 0 if none."""

    # -- codes: writes

    @abc.abstractmethod
    def submit_code(self, record: CodeRecord, *, supersedes: CodeRef | None = None,
                    replace_channel: bool = False, challenge: ChallengeUse | None = None) -> Future[None]:
        """Store a newly issued code; resolve once it is durable.

        With ``supersedes``, that code (which must be the same resident's and
        not revoked, else :class:`CodeNotRenewable`) is revoked as
        :attr:`RevocationReason.SUPERSEDED` in the same transaction. With
        ``replace_channel``, every other live code (unrevoked, ``expires_at``
        after the new code's ``issued_at``) of the same resident and
        ``record.channel`` is revoked as superseded in the same transaction (one
        live code per resident per channel). With ``challenge``, that challenge
        is consumed in the same transaction (:class:`ChallengeRefused`, nothing
        stored, when it is not usable at ``record.issued_at``). Fails with
        :class:`DuplicateIdempotencyKey`, :class:`DuplicateSerial`,
        :class:`ResidentNotFound`, :class:`ResidentMerged`, :class:`StoreClosed`,
        :class:`StoreOverloaded` (all :class:`RowRejected`) or :class:`WriteFailed`.
        """

    # -- enrolment challenges (the Wallets API)

    @abc.abstractmethod
    def create_challenge(self, record: ChallengeRecord) -> Future[None]:
        """Store a new challenge for an unmerged resident; forget the expired ones.

        Fails with :class:`ResidentNotFound` or :class:`ResidentMerged`.
        """

    @abc.abstractmethod
    def get_challenge(self, challenge: bytes) -> ChallengeRecord | None:
        """The challenge as stored (used or not), or None (unknown or forgotten after expiry)."""

    @abc.abstractmethod
    def consume_challenge(self, use: ChallengeUse, *, at: dt.datetime) -> Future[bool]:
        """Mark the challenge used, if it is usable at ``at``; resolve to whether it was.

        For a refused proof of possession: the challenge is spent all the same.
        """

    @abc.abstractmethod
    def revoke_code(self, ref: CodeRef, *, reason: RevocationReason, at: dt.datetime) -> Future[CodeRecord | None]:
        """Revoke one code; a code already revoked keeps its first reason and time.

        Resolves to the code as stored afterwards, or None if there is none.
        """

    @abc.abstractmethod
    def revoke_resident_codes(self, main_index_id: str, *, reason: RevocationReason, at: dt.datetime) -> Future[int]:
        """Revoke every unrevoked code of the entry with ``expires_at > at``; resolve to how many."""

    # -- the national index (issue 14; written once in issuer/store/national.py)

    @abc.abstractmethod
    def unclaimed_residents(self, *, limit: int,
                            after: tuple[dt.datetime, str] | None = None) -> list[ResidentRecord]:
        """Up to ``limit`` unmerged entries not claimed yet (``local``, ``pending``, ``provisional``), oldest first,
        after ``after`` ((created_at, main_index_id) of the last one of the previous page)."""

    @abc.abstractmethod
    def set_national_state(self, main_index_id: str, state: NationalState, *,
                           expect: Sequence[NationalState]) -> Future[bool]:
        """Set the entry's state if it is one of ``expect``; resolve to whether it was."""

    @abc.abstractmethod
    def delete_pending(self, main_index_id: str) -> Future[bool]:
        """Remove a ``pending`` entry and its identifiers (its claim was refused); False if it is not pending."""

    @abc.abstractmethod
    def merge_away(self, *, merged: str, survivor: str, survivor_province: str | None,
                   at: dt.datetime) -> Future[int]:
        """Record a national merge: ``merged`` points at ``survivor`` (homed in ``survivor_province``,
        None for here; a ``foreign`` stand-in is created when the survivor is not here), its state
        becomes ``merged`` and its live codes are revoked as merged, in one transaction; resolves to
        how many. Idempotent: merged into the same survivor already resolves to 0. Its documents stay
        with it (found through the merge). Fails with :class:`ResidentNotFound`, :class:`ResidentMerged`
        (into another survivor) or :class:`~issuer.errors.Conflict` (the same entry)."""

    @abc.abstractmethod
    def release_resident(self, main_index_id: str, *, to_province: str, consent_reference: str,
                         at: dt.datetime) -> Future[int]:
        """The entry moved to ``to_province``: state ``moved`` pointing there, every live code
        superseded, in one transaction; resolves to how many. Idempotent (moved already: 0). Fails with
        :class:`ResidentNotFound` (also for a ``foreign`` stand-in) or :class:`ResidentMerged`."""

    @abc.abstractmethod
    def adopt_resident(self, resident: ResidentRecord, identifiers: Sequence[IdentifierRecord]) -> Future[None]:
        """A resident moving in keeps its main index ID: create the entry (``claimed``), or make a
        ``moved``/``foreign`` one with that ID ours again, with ``identifiers`` (the first primary).
        Idempotent for identifiers it holds already. Fails with :class:`DuplicateIdentifier` (held by
        another entry) or :class:`ResidentMerged`."""

    @abc.abstractmethod
    def record_access(self, record: AccessRecord) -> Future[None]:
        """Append to the resident's access log (:class:`ResidentNotFound` for an unknown resident)."""

    @abc.abstractmethod
    def accesses_of(self, main_index_id: str, *, limit: int,
                    before: tuple[dt.datetime, str] | None = None) -> list[AccessRecord]:
        """The resident's access log, newest first, strictly before ``before`` ((resolved_at, access_id))."""

    @abc.abstractmethod
    def national_cursor(self) -> int:
        """The sequence number of the last national event applied (0: none)."""

    @abc.abstractmethod
    def advance_national_cursor(self, sequence: int) -> Future[None]:
        """Record ``sequence`` as applied; the cursor never goes back."""

    # -- lifecycle

    @abc.abstractmethod
    def close(self) -> None:
        """Apply every write already submitted, then stop. Later writes fail with :class:`StoreClosed`."""

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
