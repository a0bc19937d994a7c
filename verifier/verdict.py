"""What one scan is worth at this terminal: the one decision ``verify`` and ``run`` both take.

:class:`Judge` is the scan path's single place of judgement; the scan path
(:func:`verifier.check.check`, taken by ``verify`` and by the run loop alike)
calls it with the trust state in force and the time. In order:

1. a framing problem (binary data, an overlong line) is ``malformed``;
2. **by prefix**: ``EHCD:`` is a *dynamic presentation* (the phone's live code,
   ``docs/code-format.md`` section 16): :func:`healthcode.presentation.verify_presentation`
   with the keyring, the revocation set, the trust-freshness hook and the
   presentation clock skew; then the terminal's replay cache (``replayed`` for a
   second scan of the same presentation);
3. anything else that is plainly not one of our codes (another system's code,
   two codes run together, a wedge typing in lower case) is ``malformed`` with
   that reason in words (:func:`verifier.scan.hint`);
4. anything else is a *static code* (printed, or a v1 code on a screen):
   :func:`healthcode.verify` (a phone-bound credential shown on its own is
   ``presentation_required``), then the terminal's **static-code policy**:
   ``accept``; ``check-id`` (valid, and the operator is told to check the
   holder's identity document); ``refuse`` (``static_code_refused``: a policy
   outcome, the code itself verified).

A verdict's ``code`` holds verified claims: when the scan is valid, and when
the terminal refused a code *after* verifying it (``replayed``,
``static_code_refused``); a refusal by the code's own checks has none.
"""

from __future__ import annotations

import datetime as _dt
import enum
from typing import NamedTuple

import healthcode as hc
from healthcode import Reason, VerificationError, VerifiedCode
from healthcode.codec import PREFIX, _decode_cose, decode_claims, decode_unverified, parse_core_claims
from healthcode.presentation import (
    DEFAULT_PRESENTATION_SKEW,
    PRESENTATION_PREFIX,
    ReplayCache,
    decode_presentation_unverified,
    verify_presentation,
)

from .scan import hint

__all__ = ["StaticCodes", "TerminalReason", "DYNAMIC", "STATIC", "Verdict", "Judge", "unverified_identity"]

#: The kinds of code, by prefix (JSON ``kind``, audit ``kind``).
DYNAMIC, STATIC = "dynamic", "static"

_AFTER_PREFIX = len(PREFIX)
_new = tuple.__new__  # a named tuple from a full tuple, without its Python-level __new__ (per scan)


class StaticCodes(str, enum.Enum):
    """What the terminal does with a valid static code (a printed or copied ``EHC1:`` code)."""

    ACCEPT = "accept"
    CHECK_ID = "check-id"
    REFUSE = "refuse"


class TerminalReason(str, enum.Enum):
    """Refusals decided by this terminal's policy, not by the code: stable strings, like :class:`healthcode.Reason`."""

    STATIC_CODE_REFUSED = "static_code_refused"


class Verdict(NamedTuple):
    """One scan's answer (see the module docstring)."""

    code: VerifiedCode | None
    reason: Reason | TerminalReason | None
    detail: str
    kind: str | None  # "dynamic", "static", or None for input that is not one of our codes
    step: int | None = None  # a dynamic presentation's time step (floor(unix time / 30))
    check_id: bool = False  # valid, and the operator must check the holder's identity document

    @property
    def valid(self) -> bool:
        return self.reason is None


_REFUSED_DETAIL = "static codes are not accepted at this terminal: ask for the live code on the holder's phone"


class Judge:
    """The terminal's judgement of one scan (steps in the module docstring).

    ``clock_skew`` is the tolerance for a static code's ``iat`` in the future;
    ``presentation_skew`` the tolerance between the phone's clock and the
    terminal's (the presentation window, ``docs/code-format.md`` section 16.3).
    ``replay`` is the terminal's replay cache, or None for one-off checks
    (``healthcode-verifier verify``). Not thread-safe: the loop owns it.
    """

    __slots__ = ("static_codes", "clock_skew", "presentation_skew", "replay", "_static_valid")

    def __init__(self, *, static_codes: StaticCodes = StaticCodes.CHECK_ID,
                 clock_skew: _dt.timedelta = _dt.timedelta(0),
                 presentation_skew: _dt.timedelta = DEFAULT_PRESENTATION_SKEW,
                 replay: ReplayCache | None = None) -> None:
        self.static_codes = StaticCodes(static_codes)
        self.clock_skew = clock_skew
        self.presentation_skew = presentation_skew
        self.replay = replay
        self._static_valid = self.static_codes is StaticCodes.CHECK_ID  # check_id of a valid static code

    def __call__(self, text: str | None, problem: str | None, keyring: hc.Keyring, revocation, trust,
                 now: _dt.datetime) -> Verdict:
        """The verdict on ``text`` (or on the framing ``problem``) with this trust state at ``now``.

        ``trust`` is the staleness hook handed to the core (None while the
        terminal's policy does not refuse). ``text`` is None exactly when there is
        a framing ``problem`` (the contract of :class:`~verifier.scan.Scan`).
        """
        # (1) framing problems (tested on `text`, which is what the steps below read)
        if text is None:
            return _new(Verdict, (None, Reason.MALFORMED, problem, None, None, False))
        # (2) a dynamic presentation, by its prefix
        if text.startswith(PRESENTATION_PREFIX) and text.find(PRESENTATION_PREFIX, 5) < 0 \
                and text.find(PREFIX, 5) < 0:
            try:
                presentation = verify_presentation(text, keyring, now=now, revocation=revocation, trust=trust,
                                                   clock_skew=self.presentation_skew,
                                                   issuer_clock_skew=max(self.clock_skew, self.presentation_skew))
            except VerificationError as exc:
                return _new(Verdict, (None, exc.reason, exc.detail, DYNAMIC, None, False))
            credential, step = presentation
            if self.replay is not None:
                try:
                    self.replay.admit(presentation, now)
                except VerificationError as exc:  # Replayed: verified, but seen here before
                    return _new(Verdict, (credential, exc.reason, exc.detail, DYNAMIC, step, False))
            return _new(Verdict, (credential, None, "valid", DYNAMIC, step, False))
        # (3) recognisable non-codes (for one code of ours, what hint() answers, without the call)
        if not (text.startswith(PREFIX) and text.find(PREFIX, _AFTER_PREFIX) < 0):
            why = hint(text)
            if why is not None:
                return _new(Verdict, (None, Reason.MALFORMED, why, None, None, False))
        # (4) a static code, then the terminal's policy for static codes
        kind = STATIC if text.startswith(PREFIX) else None
        try:
            code = hc.verify(text, keyring, now=now, revocation=revocation, trust=trust, clock_skew=self.clock_skew)
        except VerificationError as exc:
            return _new(Verdict, (None, exc.reason, exc.detail, kind, None, False))
        if self.static_codes is StaticCodes.REFUSE:
            return _new(Verdict, (code, TerminalReason.STATIC_CODE_REFUSED, _REFUSED_DETAIL, STATIC, None, False))
        return _new(Verdict, (code, None, "valid", STATIC, None, self._static_valid))


_NO_CLAIMS = frozenset({None, Reason.MALFORMED, Reason.UNSUPPORTED_VERSION})


def unverified_identity(text: str | None, reason: Reason | TerminalReason | None) -> tuple[str, bytes, int] | None:
    """(province, kid, serial) of a refused but well-formed code or presentation, *unverified*; else None.

    Lets the audit log and the operator see which code was refused (e.g. the
    serial of a revoked code, or of the credential in a stale presentation)
    without treating its claims as true.
    """
    if text is None or reason in _NO_CLAIMS:
        return None
    try:
        if text.startswith(PRESENTATION_PREFIX):
            _, kid, payload, _, _, _ = _decode_cose(decode_presentation_unverified(text).credential_cose)
            claims = decode_claims(payload)
        else:
            unverified = decode_unverified(text)
            kid, claims = unverified.kid, unverified.claims
        province, _, _, _, serial = parse_core_claims(claims)
    except hc.HealthCodeError:
        return None
    return province, kid, serial
