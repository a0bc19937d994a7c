"""The group-commit writer both stores share: one thread, one queue, futures resolved after commit.

:class:`GroupCommitWriter` is a mixin for a :class:`~issuer.store.base.Store`
implementation. It owns what does not depend on the database:

* the write queue with backpressure (:class:`~issuer.store.base.StoreOverloaded`
  past ``max_queued``) and :class:`~issuer.store.base.StoreClosed` once closed;
* the writer thread: takes every queued write up to ``batch_cap`` codes, commits
  consecutive code insertions as one transaction (group commit) and any other
  write in a transaction of its own, in submission order; under concurrent load
  (the last batch held more than one code) it first lets the batch fill for
  ``commit_linger`` seconds, one sleep rather than a wake-up per arrival;
* the batch's outcome: a failing batch is retried row by row so one bad row
  refuses only itself; every future resolves only after its transaction
  committed (or with the error that refused it);
* the resident cache behind :meth:`known_active`, and the writer's counters.

A database implements the transaction steps: ``_params_of(record)`` (a code's
statement parameters), ``_begin_codes()`` (the writer's connection in a new
transaction), ``_restart(conn)`` (roll back and begin again, before the
row-by-row retry), ``_apply_codes_fast`` / ``_apply_codes_one_by_one`` (inside that transaction),
``_bump_counter_sql`` (the serial counter's upsert), ``_commit_tx(conn)``,
``_rollback_tx(conn)`` (after a failure; must not raise), ``_apply_operation``
and the tuple ``_row_errors`` of database errors that mean "some row was refused".
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import IssuerError
from ..model import CodeRef
from .base import CodeRecord, ResidentMerged, StoreClosed, StoreOverloaded, WriteFailed, WriterStats

__all__ = ["GroupCommitWriter", "CodeItem", "Operation", "STOP", "DEFAULT_COMMIT_LINGER"]

log = logging.getLogger("issuer.store")

#: How long the writer lets a group commit fill up once it has seen concurrent writes (seconds).
DEFAULT_COMMIT_LINGER = 0.002


@dataclass(slots=True)
class CodeItem:
    """A code insertion (``supersedes``: the code a renewal revokes in the same transaction)."""

    params: tuple
    record: CodeRecord
    supersedes: CodeRef | None
    future: Future


@dataclass(slots=True)
class Operation:
    """Any other write: ``run(conn)`` inside its own transaction, its result resolves ``future``."""

    run: Callable[[Any], Any]
    future: Future
    after_commit: Callable[[Any], None] | None = None


STOP = object()


class GroupCommitWriter:
    """The database-independent half of a store's writes (see the module docstring)."""

    _row_errors: tuple[type[BaseException], ...] = ()
    _bump_counter_sql: str = ""

    def _init_writer(self, *, batch_cap: int, max_queued: int, resident_cache_size: int,
                     commit_linger: float) -> None:
        if batch_cap < 1 or max_queued < 1:
            raise ValueError("batch_cap and max_queued must be at least 1")
        if not 0 <= commit_linger <= 0.1:
            raise ValueError("commit_linger must be 0 to 0.1 seconds")
        self._batch_cap = batch_cap
        self._max_queued = max_queued
        self._commit_linger = float(commit_linger)
        self._cache_cap = resident_cache_size
        self._active: dict[str, None] = {}  # FIFO-bounded set of entries known to exist unmerged
        self._merged: set[str] = set()  # entries this process merged (guards in-flight codes)
        self._cache_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._submit_lock = threading.Lock()
        self._closed = False
        self._stats = [0, 0, 0, 0, 0]  # transactions, batches, codes, largest batch, fallbacks

    def _start_writer(self, name: str) -> None:
        self._writer = threading.Thread(target=self._run_writer, name=name, daemon=True)
        self._writer.start()

    def _stop_writer(self) -> bool:
        """Queue the stop after every write submitted so far and wait for the writer; False if already closed."""
        with self._submit_lock:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(STOP)
        self._writer.join()
        s = self.write_stats()
        log.info("store closed: %d transactions, %d code batches, %d codes, largest batch %d, %d fallbacks",
                 s.transactions, s.batches, s.codes, s.largest_batch, s.fallbacks, extra={"event": "store_closed"})
        return True

    # -- the resident cache

    def _remember_active(self, main_index_id: str) -> None:
        with self._cache_lock:
            if main_index_id in self._merged:
                return
            active = self._active
            active[main_index_id] = None
            while len(active) > self._cache_cap:
                del active[next(iter(active))]

    def _forget_active(self, main_index_id: str) -> None:
        with self._cache_lock:
            self._merged.add(main_index_id)
            self._active.pop(main_index_id, None)

    def known_active(self, main_index_id: str) -> bool:
        return main_index_id in self._active

    def write_stats(self) -> WriterStats:
        """Counters of the writer (transactions, batches, codes, largest batch, fallbacks)."""
        return WriterStats(*self._stats)

    # -- submission

    def _submit(self, item: Any) -> Future:
        with self._submit_lock:
            if self._closed:
                raise StoreClosed("store is closed")
            if self._queue.qsize() >= self._max_queued:
                raise StoreOverloaded("too many writes are waiting; retry later")
            self._queue.put(item)
        return item.future

    @staticmethod
    def _new_future() -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()  # a submitted write cannot be cancelled
        return future

    def submit_code(self, record: CodeRecord, *, supersedes: CodeRef | None = None) -> Future[None]:
        return self._submit(CodeItem(self._params_of(record), record, supersedes, self._new_future()))

    def _operation(self, run: Callable[[Any], Any], after_commit: Callable[[Any], None] | None = None) -> Future:
        return self._submit(Operation(run, self._new_future(), after_commit))

    # -- the writer thread

    def _run_writer(self) -> None:
        get, get_nowait, cap = self._queue.get, self._queue.get_nowait, self._batch_cap
        linger, sleep = self._commit_linger, time.sleep
        busy = False  # did the last batch hold more than one code (writes arrive concurrently)?
        while True:
            first = get()
            if busy and linger and type(first) is CodeItem:
                # Group commit that fills up: under concurrent load, wait ``linger``
                # for the codes in flight behind this one and commit them together.
                # One sleep, not a wake-up per arrival: the event loop keeps the GIL.
                # A lone caller (last batch of one) is never delayed.
                sleep(linger)
            items = [first]
            codes = type(first) is CodeItem
            while codes < cap:
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
                items.append(item)
                codes += type(item) is CodeItem
            busy = codes > 1
            batch: list[CodeItem] = []
            for item in items:
                if type(item) is CodeItem:
                    batch.append(item)
                    continue
                if batch:
                    self._commit_codes(batch)
                    batch = []
                if item is STOP:
                    return
                self._apply_operation(item)
            if batch:
                self._commit_codes(batch)

    def _commit_codes(self, batch: list[CodeItem]) -> None:
        """Commit a batch of code insertions in one transaction; resolve each future after."""
        merged = self._merged
        if merged:  # entries merged while these codes were in flight take no new code
            kept = []
            for item in batch:
                if item.record.main_index_id in merged:
                    item.future.set_exception(ResidentMerged("resident was merged into another entry"))
                else:
                    kept.append(item)
            batch = kept
            if not batch:
                return
        conn = None
        try:
            conn = self._begin_codes()
            try:
                outcomes = self._apply_codes_fast(conn, batch)
            except self._row_errors:
                self._restart(conn)
                self._stats[4] += 1
                outcomes = self._apply_codes_one_by_one(conn, batch)
            self._bump_counters(conn, batch, outcomes)
            self._commit_tx(conn)
        except BaseException as exc:
            self._rollback_tx(conn)
            error = WriteFailed(f"codes could not be committed: {exc.__class__.__name__}")
            for item in batch:
                item.future.set_exception(error)
            return
        committed = sum(1 for outcome in outcomes if outcome is None)
        stats = self._stats
        stats[0] += 1
        stats[1] += 1
        stats[2] += committed
        if committed > stats[3]:
            stats[3] = committed
        for item, outcome in zip(batch, outcomes):
            if outcome is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(outcome)

    # -- what a database provides

    def _params_of(self, record: CodeRecord) -> tuple:
        raise NotImplementedError

    def _begin_codes(self) -> Any:
        raise NotImplementedError

    def _restart(self, conn: Any) -> None:
        raise NotImplementedError

    def _apply_codes_fast(self, conn: Any, batch: list[CodeItem]) -> list[IssuerError | None]:
        raise NotImplementedError

    def _apply_codes_one_by_one(self, conn: Any, batch: list[CodeItem]) -> list[IssuerError | None]:
        raise NotImplementedError

    def _bump_counters(self, conn: Any, batch: list[CodeItem], outcomes: list[IssuerError | None]) -> None:
        """Raise each (province, kid)'s serial counter past the highest serial this batch stored
        (``_bump_counter_sql``: parameters province, kid, next serial)."""
        highest: dict[tuple[str, bytes], int] = {}
        for item, outcome in zip(batch, outcomes):
            if outcome is None:
                key = (item.record.province, item.record.kid)
                serial = item.record.serial
                if serial >= highest.get(key, -1):
                    highest[key] = serial
        for (province, kid), serial in highest.items():
            conn.execute(self._bump_counter_sql, (province, kid, serial + 1))

    def _commit_tx(self, conn: Any) -> None:
        raise NotImplementedError

    def _rollback_tx(self, conn: Any) -> None:
        raise NotImplementedError

    def _apply_operation(self, op: Operation) -> None:
        raise NotImplementedError
