"""The scanner loop: inputs -> verification -> JSON lines, audit log, operator display.

Threads, and why
----------------
* one reader thread per input (a tty or stdin, a serial port, a folder of
  images): reading and framing (:mod:`verifier.scan`), handing batches of
  scans to one bounded queue; a reader that fails is reported and, for a
  serial port, reopened;
* the **loop** (the thread that calls :meth:`Runtime.run`): takes scans,
  verifies them with the trust state in force, writes the JSON lines, queues
  the audit rows and updates the display. It is the only thread that touches
  the display and the sinks' buffers;
* the **sync** thread: refreshes trust data on a schedule
  (``SyncConfig.interval``, ``retry`` after a failure, or on
  :meth:`Runtime.request_sync`), then loads it and swaps the state in with
  one reference assignment. Scanning never waits for it. A failure leaves
  the last good state in force and is reported (display, JSON ``trust.sync_error``);
* the audit writer (:mod:`verifier.audit`) and, for a socket sink, its
  writer (:mod:`verifier.output`).

One verification (:func:`verify_scan`), in order:

1. the clock is read once and the freshness/clock policy applied
   (:func:`verifier.trust.assess`);
2. a framing problem (binary data, overlong line...) is INVALID/malformed;
3. a recognisable non-code (another system's code, two codes run together...)
   is INVALID/malformed with that reason in words;
4. otherwise :func:`healthcode.check` with the keyring, the revocation
   checker, the assessment as the staleness hook and the clock-skew tolerance.
"""

from __future__ import annotations

import datetime as _dt
import queue
import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

import healthcode as hc
from healthcode import Reason, VerificationResult, VerifiedCode
from healthcode.codec import decode_unverified, parse_core_claims

from .audit import AuditEntry, AuditLog, iso_utc
from .config import FreshnessPolicy, VerifierConfig
from .display import Display
from .output import Sink, encode_result
from .scan import ByteStream, FolderSource, Scan, hint, read_stream
from .trust import Freshness, TrustAssessment, TrustError, TrustSource, TrustState, assess, format_age

__all__ = ["Outcome", "verify_scan", "unverified_identity", "Runtime"]

_EMPTY_KEYRING = hc.Keyring()
_new_entry = tuple.__new__  # a named tuple from a full tuple, without its Python-level __new__ (per scan)
_QUEUE_BATCHES = 16  # batches (one per input chunk, <= 64 KiB): readers wait beyond that


class Outcome(NamedTuple):
    """The result of one scan, as everything downstream sees it (immutable; one per scan)."""

    seq: int
    source: str
    ended_by: str
    code: VerifiedCode | None
    reason: Reason | None
    detail: str
    trust: TrustAssessment
    sync_error: str | None = None
    text: str | None = None  # the scanned text; reaches the audit log only inside its replay window
    #: (province, kid, serial) read from a refused code whose form is sound: NOT verified
    claimed: tuple[str, bytes, int] | None = None
    #: warnings attached to the trust data in force (e.g. revocation not available)
    trust_warnings: tuple[str, ...] = ()

    @property
    def valid(self) -> bool:
        return self.code is not None


_NO_CLAIMS = frozenset({None, Reason.MALFORMED, Reason.UNSUPPORTED_VERSION})


def unverified_identity(text: str | None, reason: Reason | None) -> tuple[str, bytes, int] | None:
    """(province, kid, serial) of a refused but well-formed code, *unverified*; else None.

    Lets the audit log and the operator see which code was refused (e.g. the
    serial of a revoked code) without treating its claims as true.
    """
    if text is None or reason in _NO_CLAIMS:
        return None
    try:
        unverified = decode_unverified(text)
        province, _, _, _, serial = parse_core_claims(unverified.claims)
    except hc.HealthCodeError:
        return None
    return province, unverified.kid, serial


def verify_scan(
    scan: Scan,
    state: TrustState | None,
    policy: FreshnessPolicy,
    *,
    system_now: _dt.datetime,
) -> tuple[VerificationResult, TrustAssessment]:
    """Verify one scan against ``state`` at ``system_now`` (steps in the module docstring)."""
    # (1) clock and freshness policy
    assessment = assess(policy, system_now=system_now,
                        last_verified=state.last_verified_refresh if state is not None else None)
    # (2) framing problems
    if scan.problem is not None:
        return VerificationResult(None, Reason.MALFORMED, scan.problem), assessment
    text = scan.text
    # (3) recognisable non-codes
    why = hint(text)
    if why is not None:
        return VerificationResult(None, Reason.MALFORMED, why), assessment
    # (4) the core
    if state is None:
        keyring, revocation = _EMPTY_KEYRING, None
    else:
        keyring, revocation = state.keyring, state.revocation
    # The staleness hook is handed over only when the policy refuses: while the data is fresh or
    # aging it would answer None for this very `now` (one Python call fewer per scan).
    refusing = assessment.level is Freshness.STALE or assessment.level is Freshness.MISSING
    result = hc.check(text, keyring, now=assessment.now, revocation=revocation,
                      trust=assessment if refusing else None, clock_skew=policy.clock_skew)
    return result, assessment


class Runtime:
    """The verifier loop over a :class:`~verifier.trust.TrustSource` (see the module docstring).

    ``clock`` returns the current aware UTC time; it is the only clock used
    for verification and for the trust data's age (inject one in tests).
    """

    def __init__(
        self,
        source: TrustSource,
        *,
        config: VerifierConfig | None = None,
        clock: Callable[[], _dt.datetime],
        sinks: Sequence[Sink] = (),
        display: Display | None = None,
        audit: AuditLog | None = None,
        background_sync: bool = False,
    ) -> None:
        self.source = source
        self.config = config or VerifierConfig()
        self.clock = clock
        self.sinks = tuple(sinks)
        self.display = display
        self.audit = audit
        self.background_sync = background_sync and self.config.sync.enabled
        self.state: TrustState | None = None
        self.seq = 0
        self.valid_count = 0
        self.sync_error: str | None = None
        self.last_sync = None
        self.sync_attempts = 0
        self.source_problems: dict[str, str] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        self._stop = threading.Event()
        self._sync_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inputs = 0
        self._include_subject = self.config.include_subject_in_output
        self._policy = self.config.freshness

    # -- trust data -------------------------------------------------------------------------

    def load(self) -> TrustState | None:
        """Load the cached trust data (no network); keep what is in force if that fails."""
        try:
            self.state = self.source.load(self.clock())
        except (TrustError, OSError, ValueError) as exc:
            self._notice(f"cannot load trust data: {exc}")
        return self.state

    def sync_once(self) -> bool:
        """One refresh + load; on any failure the state in force stays. True on success."""
        self.sync_attempts += 1
        try:
            report = self.source.refresh(self.clock())
            state = self.source.load(self.clock())
        except Exception as exc:  # noqa: BLE001 - whatever a source does, the loop goes on
            self.sync_error = f"trust sync failed: {exc}"
            kept = "last good trust data stays in force" if self.state else "no trust data yet"
            self._notice(f"{self.sync_error}; {kept}")
            return False
        self.state = state
        self.sync_error = None
        self.last_sync = report
        changed = ", ".join(report.changed) if report.changed else "nothing"
        self._notice(f"trust data synced ({report.bytes_downloaded} bytes); changed: {changed}")
        return True

    def request_sync(self) -> None:
        self._sync_wake.set()

    def _sync_loop(self) -> None:
        wait = 0.0
        while not self._stop.is_set():
            self._sync_wake.wait(wait)
            self._sync_wake.clear()
            if self._stop.is_set():
                return
            ok = self.sync_once()
            sync = self.config.sync
            wait = (sync.interval if ok else sync.retry).total_seconds()

    # -- inputs -----------------------------------------------------------------------------

    def add_stream(self, open_stream: Callable[[], ByteStream], *, name: str, reopen: bool = False) -> None:
        """Read scans from the stream ``open_stream()`` returns; reopen it after errors if ``reopen``."""
        self._inputs += 1
        self._spawn(self._stream_worker, open_stream, name, reopen, name=f"input {name}")

    def add_folder(self, folder: FolderSource) -> None:
        self._inputs += 1
        self._spawn(self._folder_worker, folder, name=f"input {folder.name}")

    def _spawn(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        if self._running:
            thread.start()

    _running = False

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _stream_worker(self, open_stream, name: str, reopen: bool) -> None:
        scan_config = self.config.scan
        try:
            while not self._stop.is_set():
                try:
                    stream = open_stream()
                except (OSError, ValueError) as exc:
                    self._source_problem(name, f"cannot open {name}: {exc}")
                    if not reopen or self._stop.wait(2.0):
                        return
                    continue
                self._source_problem(name, None)
                try:
                    for batch in read_stream(stream, max_line=scan_config.max_line,
                                             frame_timeout=scan_config.frame_timeout.total_seconds(),
                                             stop=self._stop):
                        if not self._put(("scans", batch)):
                            return
                    if not reopen:
                        return  # end of input
                except Exception as exc:  # noqa: BLE001 - report, never crash the loop
                    self._source_problem(name, f"input {name} failed: {exc}")
                    if not reopen:
                        return
                finally:
                    stream.close()
                if self._stop.wait(2.0):
                    return
        finally:
            self._put(("end", name))

    def _folder_worker(self, folder: FolderSource) -> None:
        poll = self.config.scan.folder_poll.total_seconds()
        try:
            while True:
                try:
                    scans = folder.poll_once()
                    self._source_problem(folder.name, None)
                except Exception as exc:  # noqa: BLE001
                    scans = []
                    self._source_problem(folder.name, f"input {folder.name} failed: {exc}")
                while folder.errors:
                    self._notice(folder.errors.pop(0))
                if scans and not self._put(("scans", scans)):
                    return
                if self._stop.wait(poll):
                    return
        finally:
            self._put(("end", folder.name))

    def _source_problem(self, name: str, problem: str | None) -> None:
        if problem is None:
            self.source_problems.pop(name, None)
        elif self.source_problems.get(name) != problem:
            self.source_problems[name] = problem
            self._notice(problem)

    def _notice(self, text: str) -> None:
        if threading.current_thread() is self._loop_thread:
            if self.display is not None:
                self.display.notice(text)
        else:
            try:
                self._queue.put_nowait(("notice", text))
            except queue.Full:
                pass

    _loop_thread: threading.Thread | None = None

    # -- the loop ---------------------------------------------------------------------------

    def process(self, scan: Scan) -> Outcome:
        """Verify one scan and emit it (JSON, audit, display); the loop calls this per scan."""
        state = self.state
        result, assessment = verify_scan(scan, state, self._policy, system_now=self.clock())
        self.seq += 1
        code = result.code
        reason = result.reason
        text = scan.text
        if code is not None:
            self.valid_count += 1
            claimed = None
        else:
            claimed = unverified_identity(text, reason)
        outcome = _new_entry(Outcome, (self.seq, scan.source, scan.ended_by, code, reason, result.detail,
                                       assessment, self.sync_error, text, claimed,
                                       state.warnings if state is not None else ()))
        stamp = iso_utc(assessment.now)
        if self.sinks:
            line = encode_result(outcome, include_subject=self._include_subject, time_text=stamp)
            for sink in self.sinks:
                sink.write(line)
        audit = self.audit
        if audit is not None:
            keep = audit.keep_subject  # outside a replay window they are never even queued
            age = assessment.age
            if code is not None:
                row = (code.province, code.kid.hex(), str(code.serial), 1, scan.source,
                       None if age is None else int(age.total_seconds()),
                       0 if assessment.clock_behind is None else 1,
                       code.subject if keep else None, text if keep else None)
                audit.record(_new_entry(AuditEntry, (stamp, "valid", None, *row)))
            else:
                province, kid, serial = (None, None, None) if claimed is None else (
                    claimed[0], claimed[1].hex(), str(claimed[2]))
                audit.record(_new_entry(AuditEntry, (
                    stamp, "invalid", reason.value if reason is not None else None,
                    province, kid, serial, 0, scan.source,
                    None if age is None else int(age.total_seconds()),
                    0 if assessment.clock_behind is None else 1, None, text if keep else None)))
        if self.display is not None:
            self.display.show(outcome, self.warnings(assessment))
        return outcome

    def warnings(self, assessment: TrustAssessment | None = None) -> list[str]:
        """What the operator should know besides the result."""
        out = []
        if assessment is not None and assessment.warning:
            out.append(assessment.warning)
        state = self.state
        if state is not None and state.warnings:
            out.extend(state.warnings)
        if self.sync_error:
            age = f" (trust data {format_age(assessment.age)} old)" if assessment and assessment.age else ""
            out.append(f"{self.sync_error}; last good data in force{age}")
        if self.audit is not None and self.audit.problem:
            out.append(self.audit.problem)
        for sink in self.sinks:
            if sink.problem:
                out.append(sink.problem)
        out.extend(self.source_problems.values())
        return out

    def run(self) -> int:
        """Run until every input has ended (and its scans are done) or :meth:`stop`; return scans done."""
        self._loop_thread = threading.current_thread()
        self._running = True
        if self.state is None:
            self.load()
        if self.background_sync:
            self._spawn(self._sync_loop, name="trust sync")
        for thread in self._threads:
            if not thread.is_alive() and thread.ident is None:
                thread.start()
        done = 0
        q = self._queue
        try:
            while not self._stop.is_set():
                if self._inputs == 0 and q.empty():
                    break
                try:
                    item = q.get(timeout=0.1)
                except queue.Empty:
                    continue
                done += self._handle(item)
                for sink in self.sinks:  # once per batch (a chunk of input), not per line
                    sink.flush()
        finally:
            self._stop.set()
            self._sync_wake.set()
            for sink in self.sinks:
                sink.flush()
            self._running = False
            while True:  # notices still queued (a sync that just failed) are shown, not lost
                try:
                    kind, payload = q.get_nowait()
                except queue.Empty:
                    break
                if kind == "notice" and self.display is not None:
                    self.display.notice(payload)
        return done

    def _handle(self, item) -> int:
        kind, payload = item
        if kind == "scans":
            process = self.process
            for scan in payload:
                process(scan)
            return len(payload)
        if kind == "notice":
            if self.display is not None:
                self.display.notice(payload)
        elif kind == "end":
            self._inputs -= 1
        return 0

    def stop(self) -> None:
        """Ask the loop and the readers to end (safe from any thread or a signal handler)."""
        self._stop.set()
        self._sync_wake.set()

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the reader and sync threads after :meth:`run` returned."""
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout)
