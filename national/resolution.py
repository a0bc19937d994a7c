"""Hospital resolution: verify the scanned code here, then ask its home province for the patient.

:meth:`CodeResolver.resolve` takes the scanned text, the purpose and the
admitted hospital, and:

1. verifies the code itself with the pure core against the trusted province
   keys (:func:`healthcode.verify` for a static ``EHC1:`` code,
   :func:`healthcode.presentation.verify_presentation` for a dynamic ``EHCD:``
   one): signature, key window, expiry. Nothing unverified is used: the home
   province is the verified code's ``province`` (its key is looked up in that
   province's keys only, so a code signed with another province's key fails);
2. refuses a dynamic presentation seen before (:class:`healthcode.presentation.ReplayCache`):
   resolving needs the person present, not a copy of their screen;
3. routes to the home province's ``NationalLink.ResolvePatient`` with the
   hospital (organisation, province) as authenticated and the purpose; the
   province re-verifies, checks the code's state (revoked, superseded),
   records the access in the resident's access log and answers;
4. checks the answer names the code's identity or the identity it was merged into.

Errors: a code that is not valid (malformed, forged, unknown key) is
:class:`~national.errors.CodeRejected` (INVALID_ARGUMENT); one that is valid in
form but not usable now (expired, not yet valid, a replayed or stale
presentation, a phone-bound credential shown as a copy) is
:class:`~national.errors.CodeNotUsable` (FAILED_PRECONDITION). The reason is the core's.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import healthcode as hc
from healthcode import presentation as hp
from healthcode.errors import Reason

from .errors import CodeNotUsable, CodeRejected, Conflict
from .links import PatientAnswer

__all__ = ["CodeResolver", "Resolved", "PatientPort", "MAX_CODE_CHARS"]

MAX_CODE_CHARS = 4096
_NOT_USABLE = frozenset({Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.KEY_COMPROMISED, Reason.REVOKED,
                         Reason.TRUST_DATA_STALE, Reason.PRESENTATION_REQUIRED, Reason.STALE_PRESENTATION,
                         Reason.FUTURE_PRESENTATION, Reason.REPLAYED, Reason.KEY_NOT_VALID_AT_ISSUANCE})
CHINA = dt.timezone(dt.timedelta(hours=8))


class PatientPort(Protocol):
    async def resolve_patient(self, province: str, *, code: str, purpose: int, organisation: str,
                              hospital_province: str, today: dt.date) -> PatientAnswer: ...


@dataclass(frozen=True)
class Resolved:
    main_index_id: str
    home_province: str
    answer: PatientAnswer


class CodeResolver:
    """Verifies scanned codes against ``keyring()`` (called per request: trust data can be replaced) and routes them.

    ``survivor(main_index_id)`` returns the active identity a merged one went
    into (the national index), for step 4; ``clock_skew`` is the tolerance for an
    issuer clock ahead of ours.
    """

    def __init__(self, *, keyring: Callable[[], hc.Keyring], patients: PatientPort,
                 survivor: Callable[[str], str | None] | None = None,
                 clock_skew: dt.timedelta = dt.timedelta(seconds=60)) -> None:
        self._keyring = keyring
        self._patients = patients
        self._survivor = survivor
        self._skew = clock_skew
        self._replays = hp.ReplayCache()
        self._replay_lock = threading.Lock()

    def verify(self, code: str, now: dt.datetime) -> hc.VerifiedCode:
        """Steps 1 and 2: the verified code (the credential of a presentation), or raise."""
        if len(code) > MAX_CODE_CHARS:
            raise CodeRejected("malformed", f"a code has at most {MAX_CODE_CHARS} characters")
        keyring = self._keyring()
        try:
            if hp.is_presentation(code):
                presentation = hp.verify_presentation(code, keyring, now=now, issuer_clock_skew=self._skew)
                with self._replay_lock:
                    self._replays.admit(presentation, now)
                return presentation.credential
            return hc.verify(code, keyring, now=now, clock_skew=self._skew)
        except hc.VerificationError as e:
            if e.reason in _NOT_USABLE:
                raise CodeNotUsable(e.reason.value, f"code not usable: {e.reason.value}") from None
            raise CodeRejected(e.reason.value, f"code not valid: {e.reason.value}") from None

    async def resolve(self, *, code: str, purpose: int, organisation: str, hospital_province: str,
                      now: dt.datetime) -> Resolved:
        verified = await asyncio.to_thread(self.verify, code, now)  # signatures and the keyring: off the loop
        home = verified.province  # (3) the verified province, never an unverified field
        answer = await self._patients.resolve_patient(
            home, code=code, purpose=purpose, organisation=organisation, hospital_province=hospital_province,
            today=now.astimezone(CHINA).date())
        if answer.main_index_id != verified.subject:  # (4) only the survivor of a merge may differ
            survivor = (await asyncio.to_thread(self._survivor, verified.subject)  # a store read: off the loop
                        if self._survivor is not None else None)
            if survivor != answer.main_index_id:
                raise Conflict("the home province answered for another identity; the resolution was not used")
        return Resolved(answer.main_index_id, home, answer)
