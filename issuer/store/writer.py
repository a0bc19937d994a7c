"""The group-commit writer: one thread, one queue, futures resolved after commit.

A :class:`GroupCommitWriter` *holds* two small things and owns everything else:

* a :class:`Transactions` (a dialect: how to begin, commit, roll back and
  restart a transaction on the writer's connection, and which driver errors
  mean "some row was refused");
* a :class:`CodeWrites` (the store: what a batch of code insertions does
  inside that transaction, the fast way and row by row).

It owns:

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
* the writer's counters (:class:`~issuer.store.base.WriterStats`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, TypeVar, Union

from ..errors import IssuerError
from ..model import CodeRef
from .base import ChallengeUse, CodeRecord, StoreClosed, StoreOverloaded, WriteFailed, WriterStats

__all__ = ["GroupCommitWriter", "Transactions", "CodeWrites", "CodeItem", "Operation", "Outcome",
           "DEFAULT_COMMIT_LINGER"]

log = logging.getLogger("issuer.store")

#: How long the writer lets a group commit fill up once it has seen concurrent writes (seconds).
DEFAULT_COMMIT_LINGER = 0.002

C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)
R = TypeVar("R")

#: What a row of a batch came to: None (stored) or the error that refused it.
Outcome = Union[IssuerError, None]


@dataclass(slots=True)
class CodeItem:
    """A code insertion and what goes with it in the same transaction (see ``Store.submit_code``):
    ``supersedes``, the code a renewal revokes; ``replace_channel``, revoke the resident's other
    live codes of the channel; ``challenge``, the enrolment challenge to consume."""

    params: tuple[object, ...]
    record: CodeRecord
    supersedes: CodeRef | None
    future: Future[None]
    replace_channel: bool = False
    challenge: ChallengeUse | None = None


@dataclass(slots=True)
class Operation(Generic[C, R]):
    """Any other write: ``run(conn)`` inside its own transaction, its result resolves ``future``."""

    run: Callable[[C], R]
    future: Future[R]
    after_commit: Callable[[R], None] | None = None


class Transactions(Protocol[C]):
    """The writer's connection and transactions, as a dialect provides them."""

    #: Driver errors that belong to one row's values (the batch is retried row by row).
    row_errors: tuple[type[BaseException], ...]
    #: The driver's error root (an operation failing with one fails with :class:`WriteFailed`).
    driver_error: type[BaseException]

    def begin(self) -> C:
        """The writer's connection, in a new write transaction."""
        ...

    def restart(self, conn: C) -> None:
        """Roll back and begin again (before the row-by-row retry)."""
        ...

    def commit(self, conn: C) -> None:
        """Commit durably; raise if the transaction was not committed."""
        ...

    def rollback(self, conn: C | None) -> None:
        """Roll back after a failure, if a transaction is open; never raises."""
        ...


class CodeWrites(Protocol[C_contra]):
    """What a batch of code insertions does inside the writer's transaction (the store's SQL)."""

    def screen(self, batch: list[CodeItem]) -> list[CodeItem]:
        """The items that may be written; the others' futures are failed here."""
        ...

    def apply_fast(self, conn: C_contra, batch: list[CodeItem]) -> list[Outcome]:
        """All rows at once; raises (a row error) if any row is refused."""
        ...

    def apply_one_by_one(self, conn: C_contra, batch: list[CodeItem]) -> list[Outcome]:
        """Row by row: a refused row is undone alone and gets its error."""
        ...

    def bump_counters(self, conn: C_contra, batch: list[CodeItem], outcomes: list[Outcome]) -> None:
        """Raise the serial counters past what this batch stored."""
        ...


_STOP = object()


class GroupCommitWriter(Generic[C]):
    """The writer thread of one store (see the module docstring). Starts at once; :meth:`stop` ends it."""

    def __init__(self, transactions: Transactions[C], codes: CodeWrites[C], *, name: str, batch_cap: int,
                 max_queued: int, commit_linger: float) -> None:
        if batch_cap < 1 or max_queued < 1:
            raise ValueError("batch_cap and max_queued must be at least 1")
        if not 0 <= commit_linger <= 0.1:
            raise ValueError("commit_linger must be 0 to 0.1 seconds")
        self._tx = transactions
        self._codes = codes
        self._batch_cap = batch_cap
        self._max_queued = max_queued
        self._commit_linger = float(commit_linger)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()  # CodeItem | Operation | _STOP
        self._submit_lock = threading.Lock()
        self._closed = False
        self._stats = [0, 0, 0, 0, 0]  # transactions, batches, codes, largest batch, fallbacks
        self._name = name
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def stop(self) -> bool:
        """Queue the stop after every write submitted so far and wait for the thread; False if already stopped."""
        with self._submit_lock:
            if self._closed:
                return False
            self._closed = True
            self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join()
        s = self.stats()
        log.info("store closed: %d transactions, %d code batches, %d codes, largest batch %d, %d fallbacks",
                 s.transactions, s.batches, s.codes, s.largest_batch, s.fallbacks, extra={"event": "store_closed"})
        return True

    def stats(self) -> WriterStats:
        return WriterStats(*self._stats)

    def queued(self) -> int:
        """How many writes wait in the queue (approximately: for tests)."""
        return self._queue.qsize()

    # -- submission

    def _submit(self, item: CodeItem | Operation[C, Any]) -> None:
        with self._submit_lock:
            if self._closed:
                raise StoreClosed("store is closed")
            if self._queue.qsize() >= self._max_queued:
                raise StoreOverloaded("too many writes are waiting; retry later")
            self._queue.put(item)

    @staticmethod
    def _new_future() -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()  # a submitted write cannot be cancelled
        return future

    def submit_code(self, params: tuple[object, ...], record: CodeRecord, supersedes: CodeRef | None,
                    replace_channel: bool = False, challenge: ChallengeUse | None = None) -> Future[None]:
        future: Future[None] = self._new_future()
        self._submit(CodeItem(params, record, supersedes, future, replace_channel, challenge))
        return future

    def submit(self, run: Callable[[C], R], after_commit: Callable[[R], None] | None = None) -> Future[R]:
        future: Future[R] = self._new_future()
        self._submit(Operation(run, future, after_commit))
        return future

    # -- the thread

    def _run(self) -> None:
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
            codes = int(type(first) is CodeItem)
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
                if item is _STOP:
                    return
                self._apply(item)
            if batch:
                self._commit_codes(batch)

    def _apply(self, op: Operation[C, Any]) -> None:
        """One operation in its own transaction. A driver error becomes :class:`WriteFailed`;
        an :class:`IssuerError` refuses as it is; a bug in an operation must not kill the writer."""
        tx = self._tx
        conn = None
        try:
            conn = tx.begin()
            result = op.run(conn)
            tx.commit(conn)
        except BaseException as exc:
            tx.rollback(conn)
            if isinstance(exc, tx.driver_error):
                exc = WriteFailed(f"write failed: {exc.__class__.__name__}")
            op.future.set_exception(exc)
            return
        self._stats[0] += 1
        if op.after_commit is not None:
            op.after_commit(result)
        op.future.set_result(result)

    def _commit_codes(self, batch: list[CodeItem]) -> None:
        """Commit a batch of code insertions in one transaction; resolve each future after."""
        batch = self._codes.screen(batch)
        if not batch:
            return
        tx, codes = self._tx, self._codes
        conn = None
        try:
            conn = tx.begin()
            try:
                outcomes = codes.apply_fast(conn, batch)
            except tx.row_errors:
                tx.restart(conn)
                self._stats[4] += 1
                outcomes = codes.apply_one_by_one(conn, batch)
            codes.bump_counters(conn, batch, outcomes)
            tx.commit(conn)
        except BaseException as exc:
            tx.rollback(conn)
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
        for item, outcome in zip(batch, outcomes, strict=True):
            if outcome is None:
                item.future.set_result(None)
            else:
                item.future.set_exception(outcome)
