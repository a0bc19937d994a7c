"""The verifier's audit log: one SQLite row per scan, written in batches off the scan path.

Guarantees
----------
* **What a row holds**: time (the verifier's ``now``, UTC ISO 8601), result
  (``valid``/``invalid``), reason, province, kid (hex), serial, whether those
  three were verified (for a refused but well-formed code, e.g. revoked or
  expired, they are read from it unverified), input source, trust-data age
  and the clock-behind flag, the kind of code (``dynamic``: a phone's live
  code; ``static``), a live code's time step (UTC), and whether the operator
  was told to check the holder's identity document. The main index ID and the raw
  code are **not stored** unless ``AuditConfig.keep_subject_for`` is set; then
  they are cleared (set to NULL) once older than that window, at start-up and
  at every maintenance pass. ``secure_delete`` is on, so cleared values are
  overwritten in the file, and the WAL is truncated after maintenance.
* **Rotation**: rows older than ``retention`` (default 90 days) are deleted,
  and at most ``max_rows`` (default 1,000,000) are kept, oldest deleted first.
  No archive is written: the audit log is a bounded ring, not a record store.
* **Batching and what a crash loses**: :meth:`AuditLog.record` and
  :meth:`AuditLog.queue_rows` (the run loop: once per batch of scans) only append to
  an in-memory queue; a writer thread commits every ``batch_rows`` rows or
  every ``batch_interval`` (default 2048 rows / 200 ms), whichever comes first,
  in WAL mode with ``synchronous=FULL``. A crash or power cut loses at most
  the rows of that window.
* **Never stops the scan loop**: any SQLite or OS error (disk full, read-only,
  missing directory) is caught; the rows stay queued (up to ``max_pending``;
  beyond that the oldest are dropped and counted) and writing is retried
  with back-off. :attr:`AuditLog.problem` says what is wrong, for the display.
"""

from __future__ import annotations

import collections
import datetime as _dt
import operator
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, groupby
from pathlib import Path
from typing import NamedTuple

from shellkit.files import create_private_file, ensure_private_file

from .config import AuditConfig

__all__ = ["AuditEntry", "ValidEntry", "AuditRow", "AuditLog", "SCHEMA", "VALID_ROW_FIELDS"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT,
    province TEXT,
    kid TEXT,
    serial TEXT,
    claims_verified INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    trust_age_s INTEGER,
    clock_behind INTEGER NOT NULL DEFAULT 0,
    subject TEXT,
    raw TEXT,
    kind TEXT,
    step_time TEXT,
    check_id INTEGER NOT NULL DEFAULT 0
);
"""
#: Columns added after the first version, with their declarations: added to an older database when it is opened.
_ADDED_COLUMNS = (("kind", "TEXT"), ("step_time", "TEXT"), ("check_id", "INTEGER NOT NULL DEFAULT 0"))
# No index on time: every insert would pay for it, while the only queries by time are the
# maintenance passes (every 10 min, in the writer thread, with the GIL released while SQLite
# scans): a full scan of at most max_rows rows.

_COLUMNS = ("INSERT INTO audit (time, result, reason, province, kid, serial, claims_verified, source, "
            "trust_age_s, clock_behind, subject, raw, kind, step_time, check_id) VALUES ")
#: The placeholders of a row, by its width: a full row (an AuditEntry, 15 values), or the short
#: form of a valid static code's row outside a replay window (a ValidEntry, 8 values), whose
#: constant columns are literals. A NULL given as a parameter costs the sqlite3 module a failed adapter
#: lookup (an exception formatted and cleared) per value: more than the rest of the row.
_ROW = {15: "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", 8: "(?,'valid',NULL,?,?,?,1,?,?,?,NULL,NULL,'static',NULL,?)"}
#: Rows per INSERT statement. One multi-row statement is one sqlite3_step: executemany would
#: release and re-take the GIL for every row, and the scan loop would pay for each hand-over.
_ROWS_PER_STATEMENT = 128
_INSERTS: dict[tuple[int, int], str] = {}  # (row width, rows) -> statement
#: Most rows in one transaction (a burst after an outage is written in several).
_MAX_BATCH = 16384


def _insert(width: int, count: int) -> str:
    sql = _INSERTS.get((width, count))
    if sql is None:
        sql = _INSERTS[(width, count)] = _COLUMNS + ",".join([_ROW[width]] * count)
    return sql


_SUBJECT_AND_RAW = operator.itemgetter(slice(10, 12))  # () for a short row


class AuditEntry(NamedTuple):
    time: str
    result: str
    reason: str | None
    province: str | None
    kid: str | None
    serial: str | None
    claims_verified: int  # 1: from a verified code; 0: read from a refused code, unverified
    source: str
    trust_age_s: int | None
    clock_behind: int
    subject: str | None = None
    raw: str | None = None
    kind: str | None = None  # "dynamic" (a phone's live code), "static", None (not one of our codes)
    step_time: str | None = None  # a live code's time step, UTC as ``time``
    check_id: int = 0  # 1: valid, and the operator was told to check the holder's identity document


class ValidEntry(NamedTuple):
    """The short form of a valid static code's row, outside a replay window (what the run loop
    queues for most scans): the columns it leaves out are constant (``valid``, no reason,
    claims verified, no subject, no raw code, ``static``, no step), written as literals."""

    time: str
    province: str
    kid: str
    serial: str
    source: str
    trust_age_s: int | None
    clock_behind: int
    check_id: int


#: A row as :meth:`AuditLog.queue_rows` takes it: the full form or the short one.
AuditRow = AuditEntry | ValidEntry
#: The fields of the short form (:class:`ValidEntry`).
VALID_ROW_FIELDS = ValidEntry._fields


def iso_utc(moment: _dt.datetime) -> str:
    """Fixed-width UTC ISO 8601 with milliseconds, ``2026-11-22T08:00:00.000Z`` (sorts as text)."""
    if moment.tzinfo is not _dt.timezone.utc:
        moment = moment.astimezone(_dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"


class AuditLog:
    """Batched, privacy-bounded SQLite audit log (see the module docstring).

    ``clock`` gives the time used for purge cut-offs (inject one in tests).
    ``pragmas`` are extra statements run on each new connection (tests use
    ``PRAGMA max_page_count`` to simulate a full disk).
    """

    def __init__(self, config: AuditConfig, *, clock: Callable[[], _dt.datetime],
                 pragmas: Iterable[str] = ()) -> None:
        if config.path is None:
            raise ValueError("AuditConfig.path is required")
        self.config = config
        self._path: Path = config.path  # checked above: the config's own field stays optional
        self.keep_subject = config.keep_subject_for is not None
        self._clock = clock
        self._pragmas = tuple(pragmas)
        self._pending: collections.deque[AuditRow] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self.written = 0
        self.dropped = 0
        self.problem: str | None = None
        self._in_flight = 0

    # -- the scan path ----------------------------------------------------------------------

    def record(self, entry: AuditEntry) -> None:
        """Queue ``entry``; never blocks on disk, never raises."""
        self.queue_rows((entry,))

    def queue_rows(self, rows: Sequence[AuditRow]) -> None:
        """Queue rows, in order: full rows (:class:`AuditEntry`) or, for a valid code outside a
        replay window, the short form (:class:`ValidEntry`).

        The run loop calls this once per batch of scans. Never blocks on disk, never raises.
        Outside a replay window the subject and the raw code are never queued.
        """
        pending = self._pending
        if not self.keep_subject and any(map(any, map(_SUBJECT_AND_RAW, rows))):
            rows = [AuditEntry._make(row)._replace(subject=None, raw=None) if len(row) == 15 else row
                    for row in rows]
        pending.extend(rows)
        self._drop_oldest_over_cap()
        if len(pending) >= self.config.batch_rows:
            with self._cond:
                self._cond.notify()

    def _drop_oldest_over_cap(self) -> None:
        """Beyond ``max_pending`` queued rows, drop (and count) the oldest. Either thread may call it
        while the other pops: it stops when the queue runs short."""
        pending = self._pending
        for _ in range(len(pending) - self.config.max_pending):
            try:
                pending.popleft()
            except IndexError:
                break
            self.dropped += 1

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> "AuditLog":
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()
        return self

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued row is committed (or ``timeout``); True if all were."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify()
        while self._pending or self._in_flight:
            if time.monotonic() > deadline:
                return False
            with self._cond:
                self._cond.notify()
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``), stop the writer, close the database."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._conn is not None and (self._thread is None or not self._thread.is_alive()):
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    def __enter__(self) -> "AuditLog":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the writer thread ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        path = self._path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only before SQLite opens it: SQLite gives the -wal and -shm files the database's
        # mode, and the rows say who came to this hospital when. An existing wider file is tightened.
        create_private_file(path)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            for suffix in ("-wal", "-shm", "-journal"):  # left wider by an older version, or copied in
                ensure_private_file(f"{path}{suffix}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA secure_delete=ON")
            for pragma in self._pragmas:
                conn.execute(pragma)
            conn.executescript(SCHEMA)
            present = {row[1] for row in conn.execute("PRAGMA table_info(audit)")}
            for name, declaration in _ADDED_COLUMNS:  # a database written by an older version
                if name not in present:
                    conn.execute(f"ALTER TABLE audit ADD COLUMN {name} {declaration}")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def _run(self) -> None:
        interval = self.config.batch_interval.total_seconds()
        maintenance_every = self.config.maintenance_every.total_seconds()
        next_maintenance = 0.0
        backoff = 0.0
        while True:
            with self._cond:
                if backoff:  # after a failure: wait it out (record() notifies would wake us early)
                    deadline = time.monotonic() + backoff
                    while not self._closing and (remaining := deadline - time.monotonic()) > 0:
                        self._cond.wait(remaining)
                elif not self._closing and len(self._pending) < self.config.batch_rows:
                    self._cond.wait(interval)
                closing = self._closing
            try:
                if self._conn is None:
                    self._conn = self._connect()
                if time.monotonic() >= next_maintenance:
                    self.maintain()
                    next_maintenance = time.monotonic() + maintenance_every
                self._write_pending()
                self.problem = None
                backoff = 0.0
            except (sqlite3.Error, OSError) as exc:
                self.problem = (f"审计日志无法写入，{len(self._pending)} 条记录等待中 / "
                                f"audit log not writable: {exc}; {len(self._pending)} rows waiting")
                backoff = min(max(backoff * 2, 0.5), 30.0)
                if self._conn is not None and isinstance(exc, sqlite3.DatabaseError) and \
                        "malformed" in str(exc):
                    self._conn.close()
                    self._conn = None
                if closing:
                    return  # give up on close: the rows cannot be written
                continue
            if closing and not self._pending:
                return

    def _write_pending(self) -> None:
        """Commit what is queued now, in one transaction (one fsync).

        Only a snapshot: rows queued meanwhile wait for the next batch. Draining
        "until empty" while the loop keeps queueing would commit a few rows at a
        time, an fsync each, and fight the loop for the GIL.
        """
        pending = self._pending
        if not pending:
            return
        conn = self._conn
        if conn is None:  # not connected yet (the writer connects first): nothing to write to
            return
        self._in_flight = 1  # before popping: flush() must not see an empty queue in between
        batch = []
        try:
            for _ in range(min(len(pending), _MAX_BATCH)):
                batch.append(pending.popleft())
        except IndexError:
            pass
        try:
            conn.execute("BEGIN")
            for width, run in groupby(batch, len):  # consecutive rows of one form, in order
                rows = list(run)
                for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                    chunk = rows[start:start + _ROWS_PER_STATEMENT]
                    conn.execute(_insert(width, len(chunk)), list(chain.from_iterable(chunk)))
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            pending.extendleft(reversed(batch))  # keep them, in order, for the retry
            self._drop_oldest_over_cap()
            raise
        finally:
            self._in_flight = 0
        self.written += len(batch)

    def maintain(self) -> None:
        """Clear subjects past the window, delete rows past retention or over the cap."""
        conn = self._conn
        if conn is None:
            return
        now = self._clock()
        conn.execute("BEGIN")
        try:
            window = self.config.keep_subject_for
            if window is None:
                conn.execute("UPDATE audit SET subject = NULL, raw = NULL "
                             "WHERE subject IS NOT NULL OR raw IS NOT NULL")
            else:
                conn.execute("UPDATE audit SET subject = NULL, raw = NULL "
                             "WHERE (subject IS NOT NULL OR raw IS NOT NULL) AND time < ?",
                             (iso_utc(now - window),))
            conn.execute("DELETE FROM audit WHERE time < ?", (iso_utc(now - self.config.retention),))
            conn.execute("DELETE FROM audit WHERE id <= (SELECT max(id) FROM audit) - ?",
                         (self.config.max_rows,))
            conn.execute("COMMIT")
        except BaseException:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            raise
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
