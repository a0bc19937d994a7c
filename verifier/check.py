"""One scan, from the clock reading to its outcome and audit row: the terminal's one scan path.

``healthcode-verifier verify`` (one scan) and the run loop
(:meth:`verifier.runtime.Runtime.process_batch`, a batch of scans from stdin, a
serial port, a wedge or a folder) take the same steps through the same functions:

1. **the instant** (:func:`instant_of`): the clock reading with the freshness and
   clock policy (:func:`verifier.trust.assess`) and what follows from it and the
   trust state in force alone (the staleness hook, the time text, the trust data's
   age), as one :class:`Instant`. The loop derives it once per clock reading (the
   CLI's clock gives one object per millisecond), ``verify`` once;
2. **the judgement and its outcome** (:func:`check`): the scan judged by the
   terminal's :class:`~verifier.verdict.Judge` at that instant, and the
   :class:`~verifier.outcome.Outcome` everything downstream reads (JSON line,
   display, exit status) built from the verdict by :func:`outcome`;
3. **the audit row** (:func:`audit_row`, ``run`` only): a named
   :class:`~verifier.audit.AuditEntry`, or for a valid static code outside a
   replay window its short form :class:`~verifier.audit.ValidEntry`.

:func:`verify_scan` and :func:`outcome_of` are steps 1-2 in two calls, for
callers that hold a :class:`~verifier.scan.Scan` and want the verdict itself.
"""

from __future__ import annotations

import datetime as _dt
from typing import NamedTuple

import healthcode as hc
from healthcode.presentation import STEP_SECONDS, ReplayCache

from .audit import AuditEntry, AuditRow, ValidEntry, iso_utc
from .config import FreshnessPolicy, VerifierConfig
from .outcome import Outcome
from .scan import Scan
from .trust import Freshness, TrustAssessment, TrustState, assess
from .verdict import Judge, StaticCodes, Verdict, unverified_identity

__all__ = ["Instant", "instant_of", "check", "outcome", "audit_row", "verify_scan", "outcome_of", "judge_for"]

_EMPTY_KEYRING = hc.Keyring()
_new = tuple.__new__  # a named tuple from a full tuple, without its Python-level __new__ (per scan)


class Instant(NamedTuple):
    """What one clock reading and the trust state in force decide for every scan judged at it."""

    assessment: TrustAssessment
    #: the time the scan is judged at (``assessment.now``: the clock, floored at the last refresh)
    now: _dt.datetime
    keyring: hc.Keyring
    revocation: hc.RevocationChecker | None
    #: the staleness hook handed to the core: the assessment while the policy refuses, else None
    #: (while the data is fresh or aging it would answer None for this very ``now``)
    hook: TrustAssessment | None
    stamp: str  # ``iso_utc(now)``: the JSON line's and the audit row's time
    age_s: int | None  # the trust data's age in whole seconds (audit ``trust_age_s``)
    behind: int  # 1 when the clock is behind the last refresh (audit ``clock_behind``)
    sync_error: str | None
    trust_warnings: tuple[str, ...]


def instant_of(policy: FreshnessPolicy, system_now: _dt.datetime, state: TrustState | None,
               sync_error: str | None = None) -> Instant:
    """Step 1: the :class:`Instant` of ``system_now`` with ``state`` in force (None: no trust data)."""
    warnings: tuple[str, ...]
    if state is None:
        keyring, revocation, last_verified, warnings = _EMPTY_KEYRING, None, None, ()
    else:
        keyring, revocation = state.keyring, state.revocation
        last_verified, warnings = state.last_verified_refresh, state.warnings
    assessment = assess(policy, system_now=system_now, last_verified=last_verified)
    level, age, now = assessment.level, assessment.age, assessment.now
    return _new(Instant, (
        assessment, now, keyring, revocation,
        assessment if level is Freshness.STALE or level is Freshness.MISSING else None,
        iso_utc(now), None if age is None else int(age.total_seconds()),
        0 if assessment.clock_behind is None else 1, sync_error, warnings))


def outcome(verdict: Verdict, seq: int, text: str | None, source: str, ended_by: str,
            assessment: TrustAssessment, sync_error: str | None, trust_warnings: tuple[str, ...]) -> Outcome:
    """The :class:`Outcome` of ``verdict`` on the scan ``text`` (its ``claimed`` identity read, unverified,
    from a refused code that holds no verified claims)."""
    code, reason, detail, kind, step, check_id = verdict
    claimed = None if code is not None or reason is None else unverified_identity(text, reason)
    return _new(Outcome, (seq, source, ended_by, code, reason, detail, assessment, sync_error, text, claimed,
                          trust_warnings, kind, step, check_id))


def check(judge: Judge, at: Instant, seq: int, text: str | None, problem: str | None, source: str,
          ended_by: str) -> Outcome:
    """Step 2: judge one scan at ``at`` and return its outcome, numbered ``seq``.

    ``text`` is None exactly when there is a framing ``problem`` (:class:`~verifier.scan.Scan`).
    """
    return outcome(judge(text, problem, at.keyring, at.revocation, at.hook, at.now), seq, text, source, ended_by,
                   at.assessment, at.sync_error, at.trust_warnings)


def audit_row(result: Outcome, at: Instant, keep_subject: bool) -> AuditRow:
    """Step 3: the audit row of ``result`` judged at ``at``.

    A valid static code outside a replay window (``keep_subject`` false) gets the short form
    (:class:`~verifier.audit.ValidEntry`, its constant columns written as literals); any other
    scan a full :class:`~verifier.audit.AuditEntry`, with the main index ID and the raw text only
    inside a replay window.
    """
    code, reason, step = result.code, result.reason, result.step
    if reason is None and step is None and not keep_subject:  # a valid static code: the short form
        return _new(ValidEntry, (at.stamp, code.province, code.kid.hex(), str(code.serial),  # type: ignore[union-attr]
                                 result.source, at.age_s, at.behind, 1 if result.check_id else 0))
    province: str | None
    kid: str | None
    serial: str | None
    if code is not None:  # verified: valid, or refused by the terminal after verifying it
        province, kid, serial, verified = code.province, code.kid.hex(), str(code.serial), 1
    elif (claimed := result.claimed) is not None:
        province, kid, serial, verified = claimed[0], claimed[1].hex(), str(claimed[2]), 0
    else:
        province = kid = serial = None
        verified = 0
    return _new(AuditEntry, (
        at.stamp, "valid" if reason is None else "invalid", None if reason is None else reason.value,
        province, kid, serial, verified, result.source, at.age_s, at.behind,
        code.subject if keep_subject and code is not None else None, result.text if keep_subject else None,
        result.kind,
        None if step is None else iso_utc(_dt.datetime.fromtimestamp(step * STEP_SECONDS, _dt.timezone.utc)),
        1 if result.check_id else 0))


def judge_for(config: VerifierConfig, *, replay: bool) -> Judge:
    """The :class:`~verifier.verdict.Judge` of ``config``, with a replay cache when ``replay`` (``run``)."""
    codes = config.codes
    cache = None
    if replay:  # forget a presentation once it can no longer verify: 2 x skew + the window's two steps
        cache = ReplayCache(capacity=codes.replay_capacity,
                            horizon=2 * codes.presentation_skew + _dt.timedelta(seconds=2 * STEP_SECONDS))
    return Judge(static_codes=StaticCodes(codes.static_codes), clock_skew=config.freshness.clock_skew,
                 presentation_skew=codes.presentation_skew, replay=cache)


def verify_scan(scan: Scan, state: TrustState | None, policy: FreshnessPolicy, *, system_now: _dt.datetime,
                judge: Judge | None = None) -> tuple[Verdict, TrustAssessment]:
    """Steps 1 and 2's judgement for one scan: its verdict against ``state`` at ``system_now``, and the assessment.

    ``judge`` defaults to the default code policy with ``policy``'s clock skew and no replay cache.
    """
    if judge is None:
        judge = Judge(clock_skew=policy.clock_skew)
    at = instant_of(policy, system_now, state)
    return judge(scan.text, scan.problem, at.keyring, at.revocation, at.hook, at.now), at.assessment


def outcome_of(verdict: Verdict, scan: Scan, seq: int, assessment: TrustAssessment, *,
               sync_error: str | None = None, trust_warnings: tuple[str, ...] = ()) -> Outcome:
    """The :class:`Outcome` of ``verdict`` on ``scan`` (:func:`outcome`, for a caller holding a Scan)."""
    return outcome(verdict, seq, scan.text, scan.source, scan.ended_by, assessment, sync_error, trust_warnings)
