"""Resolving a code for a hospital (``NationalLink.ResolvePatient``): who it belongs to, logged.

The national service routes a hospital's scanned code here, to the province
that issued it. :meth:`PatientResolver.resolve` never trusts the code's
unverified fields; step by step (marked in the code):

1. the form: a static code (``EHC1:``) or a dynamic presentation (``EHCD:``);
   a malformed one is :class:`~issuer.errors.InvalidRequest` on field ``code``;
2. the signature, key windows and expiry with the pure core
   (:func:`healthcode.verify`, :func:`healthcode.presentation.verify_presentation`)
   against **this province's own keys** only (``keyring_at(now)``): another
   province's code, a forged or expired one, a phone credential shown on its
   own, a stale presentation are each :class:`CodeRefused` with the core's reason;
3. the code's state in the store: it must be a code this province issued to
   that resident (the exact text; for a presentation, the exact credential),
   not revoked, superseded or merged away;
4. a presentation is admitted once: it is recorded with the access in step 6, and the store refuses
   one recorded before, by any process of this province or before a restart (a presentation is
   spent only when its access is recorded, so a call that failed before may be retried): resolving
   needs the person present, a replay is refused;
5. the resident, after local merges, and their primary document, opened from the vault;
6. the access, recorded durably before the answer (hospital organisation and
   province, purpose, time, resident, kind of code; never a document number).

Errors are :class:`CodeRefused` (FAILED_PRECONDITION, ErrorInfo reason the
refusal's: ``BAD_SIGNATURE``, ``EXPIRED``, ``REVOKED``, ``SUPERSEDED``,
``OTHER_PROVINCE``...; a revoked code's message never says why it was revoked),
:class:`~issuer.errors.InvalidRequest` and :class:`~issuer.errors.NotFound`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import os
from dataclasses import dataclass
from typing import Callable

import healthcode as hc
from healthcode.codec import decode_unverified, parse_core_claims
from healthcode.errors import HealthCodeError, MalformedCode, VerificationError
from healthcode.model import from_epoch, to_epoch
from healthcode.presentation import (
    decode_presentation_unverified,
    is_presentation,
    verify_presentation,
)

from .documents import Document
from .errors import Conflict, FieldViolation, InvalidRequest, NotFound
from .index import ResidentIndex
from .model import CodeRef, RevocationReason
from .store.base import AccessRecord, PresentationResolved, Store

__all__ = ["Hospital", "Resolution", "PatientResolver", "CodeRefused"]

_CHINA = dt.timezone(dt.timedelta(hours=8))
_MAX_MERGE_HOPS = 64


class CodeRefused(Conflict):
    """The code cannot be resolved (-> FAILED_PRECONDITION); ``reason`` says why, stably."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Hospital:
    """Who resolves, as the national service authenticated it."""

    organisation: str
    province: str


@dataclass(frozen=True, slots=True)
class Resolution:
    """The answer: the resident (after merges), their primary document, and the access log entry."""

    main_index_id: str
    primary_document: Document
    access_id: str
    resolved_at: dt.datetime

    def __repr__(self) -> str:  # no resident, no document in logs
        return f"Resolution(access_id={self.access_id!r})"


class PatientResolver:
    """Resolves this province's codes (see the module docstring).

    ``keyring_at(now)`` returns this province's own trusted keys at ``now``;
    ``random_bytes`` makes the random half of access IDs (:meth:`_access_id`).
    """

    def __init__(self, *, index: ResidentIndex, store: Store, province: str,
                 keyring_at: Callable[[dt.datetime], hc.Keyring],
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._index = index
        self._store = store
        self._province = province
        self._keyring_at = keyring_at
        self._random_bytes = random_bytes

    async def resolve(self, text: str, *, purpose: int, hospital: Hospital, now: dt.datetime) -> Resolution:
        """Resolve ``text`` for ``hospital`` with ``purpose``; record the access; see the module docstring."""
        dynamic = is_presentation(text)  # (1)
        ring = self._keyring_at(now)
        try:  # (2)
            if dynamic:
                presentation = verify_presentation(text, ring, now=now)
                code = presentation.credential
            else:
                code = hc.verify(text, ring, now=now)
        except MalformedCode as exc:
            raise InvalidRequest([FieldViolation("code", f"not a well-formed code: {exc.detail}", "malformed")]) \
                from None
        except VerificationError as exc:
            raise self._refusal(text, exc) from None
        except HealthCodeError:
            raise InvalidRequest([FieldViolation("code", "not a well-formed code", "malformed")]) from None
        record = await asyncio.to_thread(self._store.get_code, CodeRef(code.province, code.kid, code.serial))  # (3)
        if record is None or record.main_index_id != code.subject or not self._same(record.text, text, dynamic):
            raise CodeRefused("unknown_code", "not a code this province issued")
        if record.revoked_at is not None:  # why it was revoked (lost device, deceased, fraud) is no hospital's business
            if record.revocation_reason is RevocationReason.SUPERSEDED:
                raise CodeRefused("superseded", "code was replaced by a newer code")
            raise CodeRefused("revoked", "code was revoked")
        mid = await asyncio.to_thread(self._survivor, record.main_index_id)  # (5)
        documents = await asyncio.to_thread(self._index.documents_of, mid, today=now.astimezone(_CHINA).date())
        if not documents:
            raise NotFound("resident has no document")
        access = AccessRecord(  # (6)
            access_id=self._access_id(now), main_index_id=mid,
            hospital_organisation=hospital.organisation, hospital_province=hospital.province, purpose=purpose,
            resolved_at=from_epoch(to_epoch(now)), code_kind="dynamic" if dynamic else "static",
            presentation=f"{code.kid.hex()}:{code.serial}:{presentation.step}" if dynamic else None)
        try:
            await asyncio.wrap_future(self._store.record_access(access))
        except PresentationResolved:  # (4) resolved before, by this or another process of the province
            raise CodeRefused("replayed", "this live code was resolved already: ask the person to show it "
                                          "again") from None
        return Resolution(mid, documents[0], access.access_id, access.resolved_at)

    def _access_id(self, now: dt.datetime) -> str:
        """28 hex digits: the time in milliseconds, then 64 random bits; ordered by time within a second."""
        return f"{int(now.timestamp() * 1000):012x}{self._random_bytes(8).hex()}"

    def _refusal(self, text: str, exc: VerificationError) -> CodeRefused:
        if exc.reason is hc.Reason.UNKNOWN_KEY and not is_presentation(text):
            try:
                province = parse_core_claims(decode_unverified(text).claims)[0]
            except (HealthCodeError, VerificationError):
                province = None
            if isinstance(province, str) and province != self._province:
                return CodeRefused("other_province", f"a code of province {province}: its home province resolves it")
        if exc.reason is hc.Reason.PRESENTATION_REQUIRED:
            return CodeRefused("presentation_required",
                               "the code is bound to a phone: resolve the live code the phone shows")
        return CodeRefused(exc.reason.value, f"code refused: {exc.detail}")

    @staticmethod
    def _same(stored: str, text: str, dynamic: bool) -> bool:
        """The code is exactly the one issued: its text, or a presentation's credential bytes."""
        if not dynamic:
            return hmac.compare_digest(stored.encode(), text.encode("utf-8", "replace"))
        try:
            credential = decode_presentation_unverified(text).credential_cose
            return hmac.compare_digest(decode_unverified(stored).cose, credential)
        except HealthCodeError:
            return False

    def _survivor(self, mid: str) -> str:
        for _ in range(_MAX_MERGE_HOPS):
            resident = self._store.get_resident(mid)
            if resident is None:
                raise NotFound("resident not found")
            if resident.merged_into is None:
                if not resident.active:
                    raise CodeRefused("moved", f"the resident is homed in province {resident.home_province} now")
                return mid
            mid = resident.merged_into
        raise Conflict("merge chain too long")
