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
2. the scan is judged (:class:`verifier.verdict.Judge`, the one place of
   judgement): a framing problem or a recognisable non-code is
   INVALID/malformed; an ``EHCD:`` live code goes to
   :func:`healthcode.presentation.verify_presentation` and then the replay
   cache; anything else to :func:`healthcode.verify` and then the terminal's
   policy for static codes (accept, check-id, refuse), with the keyring, the
   revocation checker, the assessment as the staleness hook and the clock skews.

The loop (:meth:`Runtime.process_batch`) takes the same steps for every scan,
in full, a batch (one chunk of input) at a time, with the runtime's judge (the
one that holds the replay cache); its shortcuts change where the work is done,
not what is checked (a test compares it with :func:`verify_scan` scan by scan):

* the trust state and the sync error are read once per batch (a sync that
  lands mid-batch is used from the next one, milliseconds later);
* what depends only on the instant (the assessment, the time text, the trust
  block of the JSON line) is derived once per clock reading: the CLI's clock
  returns one object per millisecond, so this is once per millisecond;
* a valid static code goes straight to its JSON line (:class:`verifier.output.ValidLines`)
  and its audit row (the short form, :class:`verifier.audit.ValidEntry`; every other
  scan's row is a full :class:`verifier.audit.AuditEntry`);
  an :class:`Outcome` is built only for a live code, a refused code, the display or
  :meth:`Runtime.process`;
* the JSON lines, the audit rows and the display's text of a batch are handed
  over once, at its end (the loop then flushes the sinks: one scan typed at a
  desk is a batch of one, shown and sent at once).
"""

from __future__ import annotations

import datetime as _dt
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Literal, overload

import healthcode as hc
from healthcode.presentation import STEP_SECONDS, ReplayCache

from .audit import AuditEntry, AuditLog, AuditRow, ValidEntry, iso_utc
from .config import FreshnessPolicy, VerifierConfig
from .display import Display
from .outcome import Outcome
from .output import Sink, ValidLines, encode_result, kind_part, source_part, trust_part
from .scan import ByteStream, FolderSource, Scan, ScanBatch, read_stream
from .trust import (
    Freshness,
    SyncReport,
    TrustAssessment,
    TrustError,
    TrustSource,
    TrustState,
    assess,
    format_age,
    format_age_zh,
    sync_failure,
)
from .verdict import STATIC, Judge, StaticCodes, Verdict, unverified_identity

__all__ = ["Outcome", "verify_scan", "unverified_identity", "Runtime"]

_EMPTY_KEYRING = hc.Keyring()
#: A named tuple (Outcome, AuditEntry, ValidEntry) from a full tuple, without its Python-level __new__ (per scan)
_new_entry = tuple.__new__
_REFUSING = (Freshness.STALE, Freshness.MISSING)
_QUEUE_BATCHES = 16  # batches (one per input chunk, <= 64 KiB): readers wait beyond that


def judge_for(config: VerifierConfig, *, replay: bool) -> Judge:
    """The :class:`~verifier.verdict.Judge` of ``config``, with a replay cache when ``replay`` (``run``)."""
    codes = config.codes
    cache = None
    if replay:  # forget a presentation once it can no longer verify: 2 x skew + the window's two steps
        cache = ReplayCache(capacity=codes.replay_capacity,
                            horizon=2 * codes.presentation_skew + _dt.timedelta(seconds=2 * STEP_SECONDS))
    return Judge(static_codes=StaticCodes(codes.static_codes), clock_skew=config.freshness.clock_skew,
                 presentation_skew=codes.presentation_skew, replay=cache)


def verify_scan(
    scan: Scan,
    state: TrustState | None,
    policy: FreshnessPolicy,
    *,
    system_now: _dt.datetime,
    judge: Judge | None = None,
) -> tuple[Verdict, TrustAssessment]:
    """Verify one scan against ``state`` at ``system_now`` (steps in the module docstring).

    ``judge`` defaults to the default code policy with ``policy``'s clock skew and no replay cache.
    """
    if judge is None:
        judge = Judge(clock_skew=policy.clock_skew)
    # (1) clock and freshness policy
    assessment = assess(policy, system_now=system_now,
                        last_verified=state.last_verified_refresh if state is not None else None)
    if state is None:
        keyring, revocation = _EMPTY_KEYRING, None
    else:
        keyring, revocation = state.keyring, state.revocation
    # The staleness hook is handed over only when the policy refuses: while the data is fresh or
    # aging it would answer None for this very `now` (one Python call fewer per scan).
    refusing = assessment.level is Freshness.STALE or assessment.level is Freshness.MISSING
    # (2) the judgement
    verdict = judge(scan.text, scan.problem, keyring, revocation, assessment if refusing else None, assessment.now)
    return verdict, assessment


def outcome_of(verdict: Verdict, scan: Scan, seq: int, assessment: TrustAssessment, *,
               sync_error: str | None = None, trust_warnings: tuple[str, ...] = ()) -> Outcome:
    """The :class:`Outcome` of ``verdict`` on ``scan`` (what :meth:`Runtime.process_batch` builds)."""
    code, reason, detail, kind, step, check_id = verdict
    claimed = unverified_identity(scan.text, reason) if code is None else None
    return Outcome(seq, scan.source, scan.ended_by, code, reason, detail, assessment, sync_error, scan.text,
                   claimed, trust_warnings, kind, step, check_id)


def _audit_row(outcome: Outcome, stamp: str, age_s: int | None, behind: int, keep_subject: bool) -> AuditEntry:
    """The full audit row of a scan."""
    code, claimed, reason = outcome.code, outcome.claimed, outcome.reason
    province: str | None
    kid: str | None
    serial: str | None
    if code is not None:  # verified: valid, or refused by the terminal after verifying it
        province, kid, serial, verified = code.province, code.kid.hex(), str(code.serial), 1
    elif claimed is not None:
        province, kid, serial, verified = claimed[0], claimed[1].hex(), str(claimed[2]), 0
    else:
        province = kid = serial = None
        verified = 0
    valid = reason is None
    step = outcome.step
    return _new_entry(AuditEntry, (
        stamp, "valid" if valid else "invalid", None if reason is None else reason.value, province, kid, serial,
        verified, outcome.source, age_s, behind, code.subject if keep_subject and code is not None else None,
        outcome.text if keep_subject else None, outcome.kind,
        None if step is None else iso_utc(_dt.datetime.fromtimestamp(step * STEP_SECONDS, _dt.timezone.utc)),
        1 if outcome.check_id else 0))


class Runtime:
    """The verifier loop over a :class:`~verifier.trust.TrustSource` (see the module docstring).

    ``clock`` returns the current aware UTC time; it is the only clock used
    for verification and for the trust data's age (inject one in tests). A
    clock that returns the very same object while the time has not moved
    (e.g. one per millisecond) lets the loop reuse the policy's answer.
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
        self.last_sync: SyncReport | None = None
        self.sync_attempts = 0
        self.source_problems: dict[str, str] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=_QUEUE_BATCHES)
        self._stop = threading.Event()
        self._sync_wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._inputs = 0
        #: the inputs added (``tty:/dev/...``, ``folder:...``), for the ready screen
        self.input_names: list[str] = []
        #: where the JSON lines go, in words, for the ready screen (the CLI sets it)
        self.output_name: str | None = None
        self._include_subject = self.config.include_subject_in_output
        self._valid_lines = ValidLines(include_subject=self._include_subject)
        self._policy = self.config.freshness
        #: the one judgement of a scan, with this terminal's replay cache (``self.judge.replay``)
        self.judge = judge_for(self.config, replay=True)
        #: the ``kind`` part of a valid static code's JSON line (constant: the policy is fixed per run)
        self._static_kind = kind_part(STATIC, None, self.judge.static_codes is StaticCodes.CHECK_ID)
        self._state_lock = threading.Lock()  # the sync's swap vs. the loop's recheck (rare)

    # -- trust data -------------------------------------------------------------------------

    def load(self) -> TrustState | None:
        """Load the cached trust data (no network); keep what is in force if that fails."""
        try:
            state = self.source.load(self.clock())
        except (TrustError, OSError, ValueError) as exc:
            self._notice(f"无法载入信任数据 / cannot load trust data: {exc}")
        else:
            with self._state_lock:
                self.state = state
        return self.state

    def sync_once(self) -> bool:
        """One refresh + load; on any failure the state in force stays. True on success."""
        self.sync_attempts += 1
        try:
            report = self.source.refresh(self.clock())
            state = self.source.load(self.clock())
        except Exception as exc:  # noqa: BLE001 - whatever a source does, the loop goes on
            self.sync_error = sync_failure(exc)
            kept = ("上次有效的信任数据继续使用 / last good trust data stays in force" if self.state
                    else "尚无信任数据 / no trust data yet")
            self._notice(f"{self.sync_error}; {kept}")
            return False
        with self._state_lock:
            self.state = state
        self.sync_error = None
        self.last_sync = report
        changed = ", ".join(report.changed) if report.changed else "无 / nothing"
        self._notice(f"信任数据已同步 / trust data synced ({report.bytes_downloaded:,} bytes); "
                     f"更新的省份 / changed: {changed}")
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
        self.input_names.append(name)
        self._spawn(self._stream_worker, open_stream, name, reopen, name=f"input {name}")

    def add_folder(self, folder: FolderSource) -> None:
        self._inputs += 1
        self.input_names.append(folder.name)
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
                    self._source_problem(name, f"无法打开扫描输入 {name} / cannot open {name}: {exc}")
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
                    self._source_problem(name, f"扫描输入 {name} 出错 / input {name} failed: {exc}")
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
                    self._source_problem(folder.name,
                                         f"扫描输入 {folder.name} 出错 / input {folder.name} failed: {exc}")
                while folder.errors:
                    self._notice(folder.errors.pop(0))
                if scans and not self._put(("scans", ScanBatch(folder.name, "image", scans))):
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
        """Verify one scan and emit it (JSON, audit, display), synchronously; return its outcome."""
        return self.process_batch(ScanBatch(scan.source, scan.ended_by, [scan]), outcomes=True)[0]

    @overload
    def process_batch(self, batch: ScanBatch, *, outcomes: Literal[True]) -> list[Outcome]: ...
    @overload
    def process_batch(self, batch: ScanBatch, *, outcomes: Literal[False] = False) -> None: ...
    @overload
    def process_batch(self, batch: ScanBatch, *, outcomes: bool) -> list[Outcome] | None: ...

    def process_batch(self, batch: ScanBatch, *, outcomes: bool = False) -> list[Outcome] | None:
        """Verify and emit every scan of ``batch``, in order (see the module docstring).

        The JSON lines go to the sinks' buffers and the rows to the audit queue at
        the end of the batch (the loop flushes the sinks after each batch). Returns
        the outcomes when ``outcomes`` is true, else None.
        """
        state = self.state
        state_warnings: tuple[str, ...]
        if state is None:
            keyring, revocation, last_verified, state_warnings = _EMPTY_KEYRING, None, None, ()
            recheck_at = None
        else:
            keyring, revocation = state.keyring, state.revocation
            last_verified, state_warnings = state.last_verified_refresh, state.warnings
            recheck_at = state.recheck_at
        sync_error = self.sync_error
        policy = self._policy
        judge = self.judge
        clock = self.clock
        display = self.display
        sinks = self.sinks
        audit = self.audit
        keep_subject = audit is not None and audit.keep_subject
        include_subject = self._include_subject
        direct = display is None and not outcomes  # then a valid static code needs no Outcome
        valid_lines = self._valid_lines
        static_kind = self._static_kind
        kept: list[Outcome] | None = [] if outcomes else None
        lines: list[bytes] | None = [] if sinks else None
        rows: list[AuditRow] | None = [] if audit is not None else None
        batch_source, batch_ended_by = batch.source, batch.ended_by
        batch_part = source_part(batch_source, batch_ended_by)
        screens: list[str] = []  # the display's, written once per batch
        warned = None
        warnings: list[str] = []  # the operator's warnings at ``warned`` (taken once per instant)
        seq = self.seq
        valid = 0
        instant = None
        try:
            for item in batch.items:
                if item.__class__ is str:
                    text, source, problem, ended_by, part = item, batch_source, None, batch_ended_by, batch_part
                else:
                    text, source, problem, ended_by = item
                    part = None
                # (1) clock and freshness policy: once per instant
                now = clock()
                if now is not instant:
                    instant = now
                    assessment = assess(policy, system_now=now, last_verified=last_verified)
                    verify_at = assessment.now
                    if recheck_at is not None and verify_at >= recheck_at and state is not None:
                        # a key came into use or left it: the state's warnings change (rare)
                        state = self._recheck(state, verify_at)
                        state_warnings, recheck_at = state.warnings, state.recheck_at
                    stamp = iso_utc(verify_at)
                    # The staleness hook only when the policy refuses: while the data is fresh or aging
                    # it would answer None for this very `now`.
                    hook = assessment if assessment.level in _REFUSING else None
                    age_s = None if assessment.age is None else int(assessment.age.total_seconds())
                    behind = 0 if assessment.clock_behind is None else 1
                    if lines is not None:
                        valid_lines.at(stamp, trust_part(assessment, sync_error, state_warnings))
                seq += 1
                # (2) the judgement: framing, non-codes, live code + replay, static code + policy
                verdict = judge(text, problem, keyring, revocation, hook, verify_at)
                code, reason, detail, kind, step, check_id = verdict
                if reason is None and step is None:
                    # a valid static code: its JSON line and audit row straight from the code.
                    # Its verdict always carries the code (Judge, step 4); mypy cannot see that, and
                    # this loop gets no per-scan check to tell it: hence the ignores below.
                    valid += 1
                    serial = str(code.serial)  # type: ignore[union-attr]  # valid static: code is set
                    if lines is not None:
                        lines.append(valid_lines.line(seq, code, serial, part or source_part(source, ended_by),
                                                      static_kind))
                    if rows is not None:
                        if keep_subject:
                            rows.append(_new_entry(AuditEntry, (
                                stamp, "valid", None, code.province, code.kid.hex(),  # type: ignore[union-attr]
                                serial, 1, source, age_s, behind,
                                code.subject, text, STATIC, None, int(check_id))))  # type: ignore[union-attr]
                        else:  # the short form
                            rows.append(_new_entry(ValidEntry, (
                                stamp, code.province, code.kid.hex(),  # type: ignore[union-attr]
                                serial, source, age_s, behind, int(check_id))))
                    if direct:
                        continue
                    outcome = _new_entry(Outcome, (seq, source, ended_by, code, None, "valid", assessment,
                                                   sync_error, text, None, state_warnings, kind, None, check_id))
                else:
                    # a live code, or a refusal
                    if reason is None:
                        valid += 1
                    claimed = None if code is not None else unverified_identity(text, reason)
                    outcome = _new_entry(Outcome, (seq, source, ended_by, code, reason, detail, assessment,
                                                   sync_error, text, claimed, state_warnings, kind, step, check_id))
                    if lines is not None:
                        lines.append(encode_result(outcome, include_subject=include_subject, time_text=stamp))
                    if rows is not None:
                        rows.append(_audit_row(outcome, stamp, age_s, behind, keep_subject))
                if display is not None:
                    if warned is not instant:  # the warnings, once per instant
                        warned, warnings = instant, self.warnings(assessment)
                    screens.append(display.render(outcome, warnings))
                if kept is not None:
                    kept.append(outcome)
        finally:
            self.seq = seq
            self.valid_count += valid
            if lines:
                for sink in sinks:
                    sink.write_lines(lines)
            if rows and audit is not None:  # rows is a list only with an audit log
                audit.queue_rows(rows)
            if screens and display is not None:  # screens are rendered only with a display
                display.show_rendered(screens)
        return kept

    def _recheck(self, state: TrustState, now: _dt.datetime) -> TrustState:
        """``state`` with the warnings of ``now``, put in force unless a sync swapped in another."""
        fresh = state.at(now)
        with self._state_lock:
            if self.state is state:
                self.state = fresh
        return fresh

    def warnings(self, assessment: TrustAssessment | None = None) -> list[str]:
        """What the operator should know besides the result."""
        out = []
        if assessment is not None and assessment.warning:
            out.append(assessment.warning)
        state = self.state
        if state is not None and state.warnings:
            out.extend(state.warnings)
        if self.sync_error:
            age = (f"（信任数据 {format_age_zh(assessment.age)} 前更新 / trust data {format_age(assessment.age)} old）"
                   if assessment and assessment.age else "")
            out.append(f"{self.sync_error}; 上次有效的数据继续使用 / last good data in force{age}")
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
        if self.display is not None:
            self.show_ready()
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

    def show_ready(self) -> None:
        """The ready screen: the inputs, the trust data's age and freshness, the warnings."""
        display = self.display
        if display is None:  # no screen to show it on
            return
        state = self.state
        assessment = assess(self._policy, system_now=self.clock(),
                            last_verified=state.last_verified_refresh if state is not None else None)
        display.ready(self.input_names, assessment, self.warnings(assessment), output=self.output_name)

    def _handle(self, item) -> int:
        kind, payload = item
        if kind == "scans":
            self.process_batch(payload)
            return len(payload.items)
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
