"""The claim state machine of :class:`issuer.claims.NationalResidentIndex`, on a real SQLite store.

The national side here is a small in-memory double (:class:`DictNational`: first claim wins, per
document, as the national index's rule 3/4 does) with switches for what the real service cannot be
made to do on demand: refuse outright, fail transiently, or "crash" the issuer between the
national claim and the local confirmation. The real national service is in
``test_national_link.py``; this covers the branches in between.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os

import pytest

import healthcode as hc
from issuer.claims import HeldElsewhere, NationalResidentIndex
from issuer.documents import canonical_form, make_resident_id, parse_document
from issuer.errors import AlreadyExists
from issuer.model import NationalState
from issuer.national_client import Claim, ClaimOutcome, NationalRefused, NationalUnavailable
from issuer.privacy import IdentifierVault
from issuer.reconciler import Reconciler
from issuer.store.sqlite import SQLiteStore

NOW = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.timezone.utc)
S = NationalState


def document(seq: int):
    return parse_document("resident_id", make_resident_id("330106", dt.date(1985, 1, 1) + dt.timedelta(days=seq),
                                                          seq), today=NOW.date())


class Crash(BaseException):
    """The issuer process dying between the national claim and the local confirmation."""


class DictNational:
    """First claim wins per document; ``mode``: ``ok``, ``refuse``, ``transient``, ``crash_after``."""

    def __init__(self) -> None:
        self.holders: dict[bytes, tuple[str, str]] = {}
        self.mode = "ok"
        self.calls = 0
        self.moved: dict[str, str] = {}  # identity -> the province it moved to

    async def claim(self, main_index_id, documents, *, provisional, registered_at):
        self.calls += 1
        if self.mode == "refuse":
            raise NationalRefused("national index: refused", "PERMISSION_DENIED")
        if self.mode == "transient":
            raise NationalUnavailable("national index unreachable (INTERNAL)")
        if main_index_id in self.moved:  # rule 2: homed in another province
            return Claim(ClaimOutcome.HELD, main_index_id, self.moved[main_index_id])
        keys = [canonical_form(d) for d in documents]
        for key in keys:
            holder = self.holders.get(key)
            if holder is not None and holder[0] != main_index_id:
                return Claim(ClaimOutcome.HELD, holder[0], holder[1])
        for key in keys:
            self.holders[key] = (main_index_id, "33")
        if self.mode == "crash_after":
            raise Crash()
        return Claim(ClaimOutcome.CLAIMED, main_index_id, "33")

    async def transfer(self, main_index_id, document, consent):  # pragma: no cover - not used here
        raise NationalUnavailable("no transfers here")

    async def events(self, *, after):  # pragma: no cover - not used here
        return []


@pytest.fixture
def setup(tmp_path):
    store = SQLiteStore(tmp_path / "issuer.db")
    national = DictNational()
    index = NationalResidentIndex(store=store, vault=IdentifierVault.from_secret(os.urandom(32)), national=national,
                                  province="33")
    yield store, national, index
    store.close()


def run(coro):
    return asyncio.run(coro)


def test_claimed_then_held_elsewhere_stores_nothing_the_second_time(setup):
    store, national, index = setup
    first = run(index.register(document(1), now=NOW))
    assert not first.provisional and store.get_resident(first.main_index_id).national_state is S.CLAIMED
    national.holders[canonical_form(document(2))] = (hc.main_index_id_from_bytes(b"\x07" * 16), "44")
    with pytest.raises(HeldElsewhere) as e:
        run(index.register(document(2), [document(3)], now=NOW))
    assert e.value.home_province == "44" and "province 44" in e.value.message
    assert e.value.metadata == {"home_province": "44"}
    assert store.unclaimed_residents(limit=10) == []  # the pending entry went
    assert run(index.register(document(3), now=NOW)).main_index_id  # and its other document is free again


def test_a_definitive_refusal_removes_the_pending_entry_and_a_transient_failure_is_provisional(setup):
    store, national, index = setup
    national.mode = "refuse"
    with pytest.raises(NationalRefused):
        run(index.register(document(4), now=NOW))
    assert store.unclaimed_residents(limit=10) == []
    national.mode = "transient"
    registration = run(index.register(document(4), now=NOW))
    assert registration.provisional
    assert store.get_resident(registration.main_index_id).national_state is S.PROVISIONAL


def test_a_crash_after_the_national_claim_leaves_a_pending_entry_that_a_retry_takes_up(setup):
    store, national, index = setup
    national.mode = "crash_after"
    with pytest.raises(Crash):
        run(index.register(document(5), [document(6)], now=NOW))
    (pending,) = store.unclaimed_residents(limit=10)
    assert pending.national_state is S.PENDING
    national.mode = "ok"
    with pytest.raises(AlreadyExists):  # not the same documents: not that attempt's retry
        run(index.register(document(5), now=NOW))
    again = run(index.register(document(5), [document(6)], now=NOW))
    assert again.main_index_id == pending.main_index_id and not again.provisional
    assert store.get_resident(pending.main_index_id).national_state is S.CLAIMED


def test_links_claim_for_claimed_entries_and_go_provisional_when_the_link_is_down(setup):
    store, national, index = setup
    mid = run(index.register(document(7), now=NOW)).main_index_id
    run(index.link_identifier(mid, document(8), now=NOW))
    assert national.holders[canonical_form(document(8))][0] == mid
    national.mode = "transient"
    run(index.link_identifier(mid, document(9), now=NOW))  # linked here, claimed later
    assert store.get_resident(mid).national_state is S.PROVISIONAL
    calls = national.calls
    run(index.link_identifier(mid, document(10), now=NOW))  # provisional: local only, no national call
    assert national.calls == calls and len(store.identifiers_of(mid)) == 4
    national.mode = "ok"
    other = run(index.register(document(11), now=NOW)).main_index_id
    national.holders[canonical_form(document(12))] = (hc.main_index_id_from_bytes(b"\x08" * 16), "11")
    with pytest.raises(HeldElsewhere):
        run(index.link_identifier(other, document(12), now=NOW))
    assert len(store.identifiers_of(other)) == 1


def test_the_reconciler_releases_an_entry_whose_identity_moved_and_skips_a_failing_one(setup):
    store, national, index = setup
    national.mode = "transient"
    moved = run(index.register(document(20), now=NOW)).main_index_id
    fine = run(index.register(document(21), now=NOW)).main_index_id
    national.mode = "ok"
    national.moved[moved] = "44"
    reconciler = Reconciler(index=index, national=national, clock=lambda: NOW, interval=60, batch=1)  # pages of one
    result = run(reconciler.run_once())
    assert not result.unreachable and result.claimed == 1
    entry = store.get_resident(moved)
    assert (entry.national_state, entry.home_province) == (S.MOVED, "44")
    assert store.get_resident(fine).national_state is S.CLAIMED
    assert run(reconciler.run_once()).claimed == 0  # nothing left: a second round changes nothing
