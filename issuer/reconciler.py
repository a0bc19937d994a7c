"""The reconciler: what the province registered while the national index was away, and what it decided since.

A background task of the issuer process (:meth:`Reconciler.start`), one round
every ``interval`` seconds; :meth:`Reconciler.run_once` is one round, for tests
and tools. The clock is passed in. A round, in order (marked in the code):

1. **claims**: every entry not claimed yet (``provisional``, ``local``, and
   ``pending`` ones older than ``pending_grace``, left by a crash mid-claim) is
   claimed with its documents (opened from the vault) and its registration time;
   provisional and local entries as ``provisional=true``:

   * CLAIMED: the entry becomes ``claimed``;
   * MERGED with this entry surviving: ``claimed``; with another surviving:
     the entry is recorded as merged into the survivor and its home province,
     its live codes revoked as merged (the revocation job publishes them),
     its documents kept (FindResident answers the survivor);
   * HELD by another identity: a ``pending`` entry (never acknowledged) is
     removed; an acknowledged one is merged into the holder as above (nothing
     acknowledged is lost); HELD by this very identity, homed in another
     province: it moved, and is released here (codes superseded);
   * refused outright: a ``pending`` entry is removed; an acknowledged one
     stays as it is (logged with the status, retried next round);
   * the national index unreachable: the round stops here and retries later.

2. **events**: ListEvents after the durable cursor, page by page; each event
   applied idempotently, then the cursor advanced past it: MERGED_AWAY as in
   (1), MOVED_AWAY by releasing the entry (codes superseded, pointing at the
   new home; normally done already by ReleaseResident), ABSORBED recorded in
   the log only (this province's entry survived; nothing changes here).

Logs carry counts and kinds, never a main index ID or a document.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from dataclasses import dataclass
from typing import Callable

from .claims import NationalPort, NationalResidentIndex
from .errors import IssuerError
from .model import NationalState
from .national_client import ClaimOutcome, EventKind, NationalEvent, NationalRefused, NationalUnavailable
from .store.base import ResidentMerged, ResidentNotFound, ResidentRecord, Store

__all__ = ["Reconciler", "ReconcileRun", "DEFAULT_PENDING_GRACE"]

log = logging.getLogger("issuer.national")

DEFAULT_PENDING_GRACE = dt.timedelta(minutes=2)
_CHINA = dt.timezone(dt.timedelta(hours=8))


@dataclass
class ReconcileRun:
    """What one round did."""

    claimed: int = 0
    merged: int = 0
    removed: int = 0
    events: int = 0
    revoked: int = 0
    unreachable: bool = False


class Reconciler:
    """Claims what was registered provisionally and applies the national events (module docstring).

    ``national`` is the client (``claim`` and ``events``), ``clock`` returns
    aware UTC time, ``on_revoked`` is called after a round that revoked codes.
    """

    def __init__(self, *, index: NationalResidentIndex, national: NationalPort, clock: Callable[[], dt.datetime],
                 interval: float, pending_grace: dt.timedelta = DEFAULT_PENDING_GRACE, batch: int = 100,
                 on_revoked: Callable[[], None] | None = None) -> None:
        if not interval > 0 or batch < 1:
            raise ValueError("interval must be positive and batch at least 1")
        self._index = index
        self._store: Store = index.store
        self._national = national
        self._clock = clock
        self._interval = interval
        self._grace = pending_grace
        self._batch = batch
        self._on_revoked = on_revoked or (lambda: None)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._round = asyncio.Lock()

    async def run_once(self) -> ReconcileRun:
        """One round: claims, then events (see the module docstring)."""
        async with self._round:
            run = ReconcileRun()
            now = self._clock()
            try:
                await self._claims(run, now)  # (1)
                await self._events(run, now)  # (2)
            except NationalUnavailable:
                run.unreachable = True
            if run.revoked:
                self._on_revoked()
            if run.claimed or run.merged or run.removed or run.events:
                log.info("reconciled: %d claimed, %d merged away, %d pending removed, %d events, %d codes revoked",
                         run.claimed, run.merged, run.removed, run.events, run.revoked,
                         extra={"event": "reconciled"})
            return run

    # -- (1) claims

    async def _claims(self, run: ReconcileRun, now: dt.datetime) -> None:
        after: tuple[dt.datetime, str] | None = None
        while True:  # page by page: entries that fail stay behind without holding up the ones after them
            records = await asyncio.to_thread(self._store.unclaimed_residents, limit=self._batch, after=after)
            if not records:
                return
            await self._claim_page(run, records, now)
            after = (records[-1].created_at, records[-1].main_index_id)

    async def _claim_page(self, run: ReconcileRun, records: list[ResidentRecord], now: dt.datetime) -> None:
        for record in records:
            if record.national_state is NationalState.PENDING and now - record.created_at < self._grace:
                continue  # its registration may still be claiming it
            try:
                await self._claim(run, record, now)
            except NationalRefused as exc:  # definitive: a pending entry (never acknowledged) goes
                if record.national_state is NationalState.PENDING:
                    if await asyncio.wrap_future(self._store.delete_pending(record.main_index_id)):
                        run.removed += 1
                log.warning("national index refused a reconciliation claim: %s", exc.code,
                            extra={"event": "reconcile_refused"})
            except NationalUnavailable:
                raise
            except IssuerError as exc:  # this entry only; the next round tries it again
                log.warning("reconciliation of an entry failed: %s", exc.reason, extra={"event": "reconcile_failed"})

    async def _claim(self, run: ReconcileRun, record: ResidentRecord, now: dt.datetime) -> None:
        mid = record.main_index_id
        pending = record.national_state is NationalState.PENDING
        documents = await asyncio.to_thread(self._index.documents_of, mid, today=now.astimezone(_CHINA).date())
        if not documents:
            return
        claim = await self._national.claim(mid, documents, provisional=not pending, registered_at=record.created_at)
        if claim.main_index_id == mid and claim.outcome in (ClaimOutcome.CLAIMED, ClaimOutcome.MERGED):
            if await asyncio.wrap_future(self._store.set_national_state(
                    mid, NationalState.CLAIMED, expect=[record.national_state])):
                run.claimed += 1
        elif claim.main_index_id == mid:  # HELD by this very identity: it is homed elsewhere now (it moved)
            run.revoked += await asyncio.wrap_future(self._store.release_resident(
                mid, to_province=claim.home_province, consent_reference="", at=now))
        elif pending and claim.outcome is ClaimOutcome.HELD:
            if await asyncio.wrap_future(self._store.delete_pending(mid)):
                run.removed += 1
        else:
            await self._merge_away(run, mid, claim.main_index_id, claim.home_province, now)

    async def _merge_away(self, run: ReconcileRun, merged: str, survivor: str, province: str,
                          now: dt.datetime) -> None:
        home = None if province == self._index.province else province
        try:
            run.revoked += await asyncio.wrap_future(
                self._store.merge_away(merged=merged, survivor=survivor, survivor_province=home, at=now))
        except (ResidentNotFound, ResidentMerged) as exc:
            log.warning("national merge not applied here: %s", exc.reason, extra={"event": "merge_skipped"})
            return
        run.merged += 1

    # -- (2) events

    async def _events(self, run: ReconcileRun, now: dt.datetime) -> None:
        cursor = await asyncio.to_thread(self._store.national_cursor)
        while True:
            events = await self._national.events(after=cursor)
            if not events:
                return
            for event in events:
                if event.sequence <= cursor:
                    continue  # never goes back, whatever the page holds
                await self._apply(run, event, now)
                await asyncio.wrap_future(self._store.advance_national_cursor(event.sequence))
                cursor = event.sequence
                run.events += 1

    async def _apply(self, run: ReconcileRun, event: NationalEvent, now: dt.datetime) -> None:
        if event.kind is EventKind.MERGED_AWAY:
            await self._merge_away(run, event.main_index_id, event.other_main_index_id, event.other_province, now)
        elif event.kind is EventKind.MOVED_AWAY:
            try:
                run.revoked += await asyncio.wrap_future(self._store.release_resident(
                    event.main_index_id, to_province=event.other_province, consent_reference="", at=now))
            except IssuerError as exc:
                log.warning("national move not applied here: %s", exc.reason, extra={"event": "move_skipped"})
        elif event.kind is EventKind.ABSORBED:
            log.info("an entry of this province absorbed one of province %s", event.other_province,
                     extra={"event": "absorbed"})
        else:
            log.warning("unknown national event kind skipped", extra={"event": "unknown_event"})

    # -- the background task

    def start(self) -> None:
        """Run a round now and then every ``interval`` seconds, in the running loop, until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    def wake(self) -> None:
        """Run the next round now (for example after a registration went provisional)."""
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a round's failure must not end the task; the type only (no data)
                log.error("reconciliation round failed: %s", type(exc).__name__, extra={"event": "reconcile_failed"})
            try:
                await asyncio.wait_for(self._wake.wait(), self._interval)
            except TimeoutError:
                pass
            self._wake.clear()

    async def stop(self) -> None:
        """Stop the task (a round in progress is cancelled at its next await; every step is idempotent)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
