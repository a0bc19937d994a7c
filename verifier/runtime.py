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

One verification, the same steps as ``healthcode-verifier verify`` through the same
functions (:mod:`verifier.check`): the instant (the clock reading with the freshness
and clock policy, :func:`~verifier.check.instant_of`); the scan judged at it by the
runtime's :class:`~verifier.verdict.Judge` (the one that holds the replay cache) and
its :class:`Outcome` (:func:`~verifier.check.check`); its audit row
(:func:`~verifier.check.audit_row`). What the loop does beside, to take them for a
batch (one chunk of input) at a time:

* the trust state and the sync error are read once per batch (a sync that
  lands mid-batch is used from the next one, milliseconds later);
* the instant is derived once per clock reading: the CLI's clock returns one
  object per millisecond, so this is once per millisecond; with it, the parts of a
  valid static code's JSON line that do not depend on the code
  (:class:`verifier.output.ValidLines`; every other scan's line is
  :func:`verifier.output.encode_result` of its outcome, the same bytes);
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

from .audit import AuditLog, AuditRow
from .check import audit_row, check, instant_of, judge_for, outcome_of, verify_scan  # re-exported
from .config import VerifierConfig
from .display import Display
from .outcome import Outcome
from .output import Sink, ValidLines, encode_result, kind_part, source_part, trust_part
from .scan import ByteStream, FolderSource, Scan, ScanBatch, read_stream
from .trust import (
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
from .verdict import STATIC, StaticCodes, unverified_identity

__all__ = ["Outcome", "verify_scan", "outcome_of", "judge_for", "unverified_identity", "Runtime"]

_QUEUE_BATCHES = 16  # batches (one per input chunk, <= 64 KiB): readers wait beyond that


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
        recheck_at = state.recheck_at if state is not None else None
        sync_error = self.sync_error
        policy = self._policy
        judge = self.judge
        clock = self.clock
        display = self.display
        sinks = self.sinks
        audit = self.audit
        keep_subject = audit is not None and audit.keep_subject
        include_subject = self._include_subject
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
                # (1) the instant: once per clock reading
                now = clock()
                if now is not instant:
                    instant = now
                    at = instant_of(policy, now, state, sync_error)
                    if recheck_at is not None and at.now >= recheck_at and state is not None:
                        # a key came into use or left it: the state's warnings change (rare)
                        state = self._recheck(state, at.now)
                        recheck_at = state.recheck_at
                        at = instant_of(policy, now, state, sync_error)
                    if lines is not None:
                        valid_lines.at(at.stamp, trust_part(at.assessment, sync_error, at.trust_warnings))
                seq += 1
                # (2) the judgement and its outcome
                result = check(judge, at, seq, text, problem, source, ended_by)
                if result.reason is None:
                    valid += 1
                    static_valid = result.step is None
                else:
                    static_valid = False
                if lines is not None:
                    if static_valid:
                        # a valid static code: its line from the instant's parts (Judge, step 4: code is set)
                        code = result.code
                        lines.append(valid_lines.line(seq, code, str(code.serial),  # type: ignore[union-attr]
                                                      part or source_part(source, ended_by), static_kind))
                    else:
                        lines.append(encode_result(result, include_subject=include_subject, time_text=at.stamp))
                # (3) the audit row
                if rows is not None:
                    rows.append(audit_row(result, at, keep_subject))
                if display is not None:
                    if warned is not instant:  # the warnings, once per instant
                        warned, warnings = instant, self.warnings(at.assessment)
                    screens.append(display.render(result, warnings))
                if kept is not None:
                    kept.append(result)
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
