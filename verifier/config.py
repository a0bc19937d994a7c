"""Typed settings of the hospital verifier, one frozen dataclass per component.

Only ``verifier/__main__.py`` reads argv, the environment and the clock; it
builds these and hands them down. Every field has the documented default, so
``VerifierConfig()`` is a working terminal configuration apart from the paths.

Times are ``timedelta`` values; sizes are bytes; counts are plain ints.
"""

from __future__ import annotations

import datetime as _dt
import pathlib
from dataclasses import dataclass, field

__all__ = [
    "FreshnessPolicy",
    "ScanConfig",
    "AuditConfig",
    "SyncConfig",
    "CodePolicy",
    "VerifierConfig",
    "DEFAULT_WARN_AGE",
    "DEFAULT_MAX_AGE",
    "DEFAULT_CLOCK_SKEW",
    "DEFAULT_PRESENTATION_SKEW",
    "STATIC_CODE_POLICIES",
]

#: Trust data older than this is shown with a warning (codes still verify).
DEFAULT_WARN_AGE = _dt.timedelta(hours=72)
#: Trust data older than this refuses every code with ``trust_data_stale``.
DEFAULT_MAX_AGE = _dt.timedelta(days=7)
#: A code's ``iat`` may be this far in the future of the terminal's clock.
DEFAULT_CLOCK_SKEW = _dt.timedelta(minutes=5)
#: How far a phone's clock may differ from the terminal's for its live code (docs/code-format.md 16.3).
DEFAULT_PRESENTATION_SKEW = _dt.timedelta(seconds=30)
#: The terminal's policies for static (printed or copied) codes: see :class:`CodePolicy`.
STATIC_CODE_POLICIES = ("accept", "check-id", "refuse")


@dataclass(frozen=True, kw_only=True)
class FreshnessPolicy:
    """How old trust data may be, and how far clocks may disagree.

    * ``warn_age``: past it the display and the JSON say the data is aging;
    * ``max_age``: past it codes are refused (``trust_data_stale``);
    * ``clock_skew``: tolerance for codes issued "in the future", handed to
      :func:`healthcode.check`; also the tolerance before the terminal's clock
      is flagged as behind the last verified refresh.
    """

    warn_age: _dt.timedelta = DEFAULT_WARN_AGE
    max_age: _dt.timedelta = DEFAULT_MAX_AGE
    clock_skew: _dt.timedelta = DEFAULT_CLOCK_SKEW

    def __post_init__(self) -> None:
        zero = _dt.timedelta(0)
        if self.warn_age <= zero or self.max_age <= zero:
            raise ValueError("warn_age and max_age must be positive")
        if self.warn_age > self.max_age:
            raise ValueError("warn_age must not exceed max_age")
        if self.clock_skew < zero:
            raise ValueError("clock_skew must not be negative")


@dataclass(frozen=True, kw_only=True)
class ScanConfig:
    """Framing of scanner input.

    ``max_line`` caps one scan *before* it is accumulated (a code is at most
    1024 characters; the cap leaves room to recognise other systems' codes).
    ``frame_timeout`` ends a scan that stops without a terminator: used on ttys
    and serial ports (scanners configured without an Enter suffix), never on
    pipes and files. ``read_size`` is the chunk read at once.
    """

    max_line: int = 4096
    frame_timeout: _dt.timedelta = _dt.timedelta(milliseconds=300)
    read_size: int = 65536
    folder_poll: _dt.timedelta = _dt.timedelta(milliseconds=500)
    folder_done: str = "move"  # "move" into <folder>/processed, or "delete"
    max_codes_per_image: int = 4

    def __post_init__(self) -> None:
        if not 64 <= self.max_line <= 1 << 20:
            raise ValueError("max_line must be between 64 and 1 MiB")
        if self.read_size < 1:
            raise ValueError("read_size must be positive")
        if self.folder_done not in ("move", "delete"):
            raise ValueError("folder_done must be 'move' or 'delete'")


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """The SQLite audit log (see ``verifier/audit.py`` for the guarantees).

    ``keep_subject_for``: ``None`` (default) never stores the main index ID or
    the raw code; a duration stores them and clears them once that old
    (a replay window for local investigation). Rows older than
    ``retention`` are deleted, and at most ``max_rows`` rows are kept.
    A crash loses at most the rows of one batch: ``batch_rows`` rows or
    ``batch_interval`` of time, whichever comes first (a commit is an fsync:
    a few ms, so batches are large when scans come fast).
    """

    path: pathlib.Path | None = None
    keep_subject_for: _dt.timedelta | None = None
    retention: _dt.timedelta = _dt.timedelta(days=90)
    max_rows: int = 1_000_000
    batch_rows: int = 2048
    batch_interval: _dt.timedelta = _dt.timedelta(milliseconds=200)
    max_pending: int = 100_000
    maintenance_every: _dt.timedelta = _dt.timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.max_rows < 1 or self.batch_rows < 1 or self.max_pending < self.batch_rows:
            raise ValueError("max_rows, batch_rows must be positive and max_pending >= batch_rows")
        if self.keep_subject_for is not None and self.keep_subject_for <= _dt.timedelta(0):
            raise ValueError("keep_subject_for must be positive (or None: never keep)")


@dataclass(frozen=True, kw_only=True)
class SyncConfig:
    """Background trust sync in ``run``: every ``interval``, and ``retry`` after a failure.

    Two minutes by default: a poll with nothing new is one conditional request
    (about 1 kB, 0.7 MB a day), and revoke -> rejected stays within 5 minutes
    with the other defaults (the arithmetic is in ``docs/revocation.md``,
    "How fast a revocation reaches a terminal").
    """

    interval: _dt.timedelta = _dt.timedelta(minutes=2)
    retry: _dt.timedelta = _dt.timedelta(minutes=1)
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class CodePolicy:
    """Which codes the terminal accepts, and how (``docs/verifier.md``, "Live codes").

    * ``static_codes``: what a valid static code (printed, or an ``EHC1:`` code
      on a screen) gets: ``"accept"``; ``"check-id"`` (the default: valid, and the
      display tells the operator to check the holder's identity document, since a
      static code is a bearer token that anyone holding a copy can show); or
      ``"refuse"`` (``static_code_refused``). Printed codes exist for residents
      without phones: refuse them only where everyone has the live code.
    * ``presentation_skew``: how far the phone's clock may differ from the
      terminal's, either way; a live code verifies for 60-90 s after the phone
      made it with the default 30 s. It also bounds how far in the future a
      credential's ``iat`` may be (the core uses one tolerance for both).
    * ``replay_capacity``: the most presentations the replay cache remembers
      (each is forgotten anyway once it can no longer verify, about 2 minutes).
    """

    static_codes: str = "check-id"
    presentation_skew: _dt.timedelta = DEFAULT_PRESENTATION_SKEW
    replay_capacity: int = 100_000

    def __post_init__(self) -> None:
        if self.static_codes not in STATIC_CODE_POLICIES:
            raise ValueError(f"static_codes must be one of {', '.join(STATIC_CODE_POLICIES)}")
        if self.presentation_skew < _dt.timedelta(0):
            raise ValueError("presentation_skew must not be negative")
        if self.replay_capacity < 1:
            raise ValueError("replay_capacity must be positive")


@dataclass(frozen=True, kw_only=True)
class VerifierConfig:
    """Everything ``run`` needs besides its inputs and outputs."""

    freshness: FreshnessPolicy = field(default_factory=FreshnessPolicy)
    scan: ScanConfig = field(default_factory=ScanConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    codes: CodePolicy = field(default_factory=CodePolicy)
    include_subject_in_output: bool = True
