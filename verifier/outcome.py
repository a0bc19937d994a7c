"""The result of one scan, as everything downstream of the judgement sees it.

:class:`Outcome` is built by the loop (:mod:`verifier.runtime`) and read by the JSON
lines (:mod:`verifier.output`), the display (:mod:`verifier.display`) and the CLI's
``verify``; it lives below all of them so none imports another for it.
"""

from __future__ import annotations

from typing import NamedTuple

from healthcode import Reason, VerifiedCode

from .trust import TrustAssessment
from .verdict import TerminalReason

__all__ = ["Outcome"]


class Outcome(NamedTuple):
    """The result of one scan, as everything downstream sees it (immutable; one per scan)."""

    seq: int
    source: str
    ended_by: str
    #: verified claims: of a valid code, or of one the terminal refused after verifying it
    #: (``replayed``, ``static_code_refused``)
    code: VerifiedCode | None
    reason: Reason | TerminalReason | None
    detail: str
    trust: TrustAssessment
    sync_error: str | None = None
    text: str | None = None  # the scanned text; reaches the audit log only inside its replay window
    #: (province, kid, serial) read from a refused code whose form is sound: NOT verified
    claimed: tuple[str, bytes, int] | None = None
    #: warnings attached to the trust data in force (e.g. revocation not available)
    trust_warnings: tuple[str, ...] = ()
    #: "dynamic" (a phone's live code, EHCD:), "static" (EHC1:), None (not one of our codes)
    kind: str | None = None
    #: a live code's time step (floor(unix time / 30)), whether valid or refused after verification
    step: int | None = None
    #: valid, and the operator must check the holder's identity document (policy ``check-id``)
    check_id: bool = False

    @property
    def valid(self) -> bool:
        return self.reason is None and self.code is not None
