"""The national index's rules on both real stores (an SQLite file, a PostgreSQL schema): claim, merge, events,
transfer (with a real province answering NationalLink over mTLS), concurrency on PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import threading

import pytest

from national.blind_index import NationalBlindIndex, SoftwareHmacKey
from national.errors import Aborted, Conflict, HomedElsewhere, NotFound, ProvinceUnavailable
from national.index import ClaimOutcome, Consent, ConsentMethod, EventKind, NationalIndex
from national.links import LinkTls, ProvinceLinks
from national.store import MERGED, open_national_store

from .national_support import NOW, LoopThread, Pki, TestProvince, new_mid, resident

CLAIMED, HELD, MERGED_ = ClaimOutcome.CLAIMED, ClaimOutcome.HELD, ClaimOutcome.MERGED


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_national_store(tmp_path / "national.db")
    else:
        schema = request.getfixturevalue("pg_schema")  # conftest: this module's schema
        schema.drop()
        s = open_national_store(schema.url, partitions=4)
    yield s
    s.close()


@pytest.fixture
def index(store):
    return NationalIndex(store=store, blind=NationalBlindIndex(SoftwareHmacKey(os.urandom(32))))


def claim(index, province, mid, docs, *, provisional=False, registered_at=None, now=NOW):
    return index.claim(province=province, main_index_id=mid, documents=docs, provisional=provisional,
                       registered_at=registered_at, now=now)


def test_first_claim_wins_and_reclaim_is_idempotent(index):
    a, b = new_mid(), new_mid()
    doc, passport = resident(n=1), resident(n=2)
    assert claim(index, "33", a, [doc]).outcome is CLAIMED
    assert claim(index, "33", a, [doc]).outcome is CLAIMED  # idempotent
    held = claim(index, "44", b, [doc, passport])
    assert (held.outcome, held.main_index_id, held.home_province) == (HELD, a, "33")
    assert index.identity(b) is None  # nothing stored for the loser of a claim race: all or none
    assert index.lookup(passport) is None
    assert claim(index, "33", a, [doc, passport]).outcome is CLAIMED  # a link (supplementary document)
    assert index.lookup(passport).main_index_id == a


def test_adding_a_document_to_an_identity_homed_elsewhere_fails(index):
    a = new_mid()
    claim(index, "33", a, [resident(n=3)])
    with pytest.raises(HomedElsewhere):
        claim(index, "44", a, [resident(n=4)])
    again = claim(index, "44", a, [resident(n=3)])  # only what it holds: HELD naming the home
    assert (again.outcome, again.home_province) == (HELD, "33")


@pytest.mark.parametrize("first_registered", ["claimant", "holder"])
def test_provisional_collision_merges_registered_first_survives(index, first_registered):
    holder, claimant = new_mid(), new_mid()
    doc = resident(n=5)
    early, late = NOW - dt.timedelta(hours=2), NOW - dt.timedelta(hours=1)
    claim(index, "33", holder, [doc], now=early if first_registered == "holder" else late)  # claimed online then
    result = claim(index, "44", claimant, [doc, resident(n=6)], provisional=True,
                   registered_at=early if first_registered == "claimant" else late)
    survivor, loser = (claimant, holder) if first_registered == "claimant" else (holder, claimant)
    assert (result.outcome, result.main_index_id) == (MERGED_, survivor)
    assert index.identity(loser).state == MERGED and index.identity(loser).survivor == survivor
    assert index.lookup(doc).main_index_id == survivor
    assert index.lookup(resident(n=6)).main_index_id == survivor  # the claim's free document went to the survivor
    ev33, ev44 = index.events("33", after=0, limit=10), index.events("44", after=0, limit=10)
    loser_home, survivor_home = ("33", "44") if survivor == claimant else ("44", "33")
    by_home = {"33": ev33, "44": ev44}
    assert [(e.kind, e.main_index_id, e.other_main_index_id, e.other_province) for e in by_home[loser_home]] == [
        (EventKind.MERGED_AWAY, loser, survivor, survivor_home)]
    assert [(e.kind, e.main_index_id, e.other_main_index_id, e.other_province) for e in by_home[survivor_home]] == [
        (EventKind.ABSORBED, survivor, loser, loser_home)]
    # Reconciling again is idempotent: the loser's claim answers MERGED with the survivor, no new events.
    assert claim(index, "44" if loser == claimant else "33", loser, [doc], provisional=True,
                 registered_at=late).main_index_id == survivor
    assert len(index.events("33", after=0, limit=10)) + len(index.events("44", after=0, limit=10)) == 2


def test_a_backdated_provisional_claim_cannot_take_over_an_identity_claimed_before_the_bound(index, caplog):
    """A province's provisional time counts back at most max_provisional_age (3 days by default): a claim
    saying "registered in 2020" cannot displace a resident another province claimed 400 days ago."""
    victim, attacker = new_mid(), new_mid()
    doc = resident(n=15)
    claim(index, "33", victim, [doc], now=NOW - dt.timedelta(days=400))
    assert claim(index, "44", attacker, [doc]).outcome is HELD  # online: held by 33
    result = claim(index, "44", attacker, [doc], provisional=True, registered_at=dt.datetime(2020, 1, 2,
                                                                                               tzinfo=dt.timezone.utc))
    assert (result.outcome, result.main_index_id, result.home_province) == (MERGED_, victim, "33")
    assert index.identity(victim).state != MERGED and index.lookup(doc).main_index_id == victim
    assert [e.kind for e in index.events("33", after=0, limit=10)] == [EventKind.ABSORBED]
    assert "took over" not in caplog.text


def test_within_the_bound_a_provisional_claim_still_wins_and_the_takeover_is_logged(index, caplog):
    holder, claimant = new_mid(), new_mid()
    doc = resident(n=16)
    claim(index, "33", holder, [doc], now=NOW - dt.timedelta(days=1))
    with caplog.at_level("WARNING", logger="national.index"):
        result = claim(index, "44", claimant, [doc], provisional=True, registered_at=NOW - dt.timedelta(days=2))
    assert (result.outcome, result.main_index_id) == (MERGED_, claimant)
    assert "province 44" in caplog.text and "province 33" in caplog.text and doc.number not in caplog.text


def test_only_a_provisional_claim_says_when_it_was_registered(index):
    """An online claim is registered now, whatever it says: it cannot backdate itself to win later merges."""
    online, partitioned = new_mid(), new_mid()
    doc = resident(n=17)
    claim(index, "33", online, [doc], registered_at=NOW - dt.timedelta(days=30))  # says 30 days ago: counts as NOW
    result = claim(index, "44", partitioned, [doc], provisional=True, registered_at=NOW - dt.timedelta(hours=1))
    assert result.main_index_id == partitioned
    future = claim(index, "44", new_mid(), [resident(n=18)], provisional=True,
                   registered_at=NOW + dt.timedelta(days=1))  # never after now
    assert index.identity(future.main_index_id).registered_at == int(NOW.timestamp())


def test_merge_order_does_not_matter(index):
    """Both provinces registered the same person while partitioned; either reconciles first, same survivor."""
    doc = resident(n=7)
    a, b = new_mid(), new_mid()
    at = NOW - dt.timedelta(hours=1)  # same second: the smaller main index ID wins
    first, second = (a, "33"), (b, "44")
    claim(index, first[1], first[0], [doc], provisional=True, registered_at=at)
    result = claim(index, second[1], second[0], [doc], provisional=True, registered_at=at)
    assert result.main_index_id == min(a, b)


def test_events_are_sequenced_per_province(index):
    for i in range(3):
        doc = resident(n=100 + i)
        claim(index, "33", new_mid(), [doc], registered_at=NOW - dt.timedelta(hours=1))
        claim(index, "44", new_mid(), [doc], provisional=True, registered_at=NOW - dt.timedelta(hours=2))
    events = index.events("33", after=0, limit=10)
    assert [e.sequence for e in events] == [1, 2, 3]
    assert [e.sequence for e in index.events("33", after=2, limit=10)] == [3]
    assert [e.sequence for e in index.events("44", after=0, limit=2)] == [1, 2]


def test_concurrent_claims_of_one_document_have_one_winner(index):
    doc = resident(n=200)
    mids = [new_mid() for _ in range(8)]
    results, barrier = [], threading.Barrier(8)

    def go(mid, province):
        barrier.wait()
        try:
            results.append(claim(index, province, mid, [doc]))
        except Aborted:
            results.append(None)

    threads = [threading.Thread(target=go, args=(m, "33" if i % 2 else "44")) for i, m in enumerate(mids)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None and r.outcome is CLAIMED]
    assert len(winners) == 1
    holder = index.lookup(doc).main_index_id
    assert all(r.main_index_id == holder for r in results if r is not None)
    assert [m for m in mids if index.identity(m) is not None] == [holder]  # losers wrote nothing: all or none


# --------------------------------------------------------------------------- transfer, with a real province


@pytest.fixture
def provinces():
    loop, pki = LoopThread(), Pki.create()
    p33 = TestProvince("33", pki)
    loop.run(p33.start())
    yield loop, pki, p33
    loop.run(p33.stop())
    loop.close()


def _consent():
    return Consent(ConsentMethod.IN_PERSON, NOW - dt.timedelta(minutes=5), "desk-44/2026/0001")


def test_transfer_releases_the_old_home_first(store, provinces):
    loop, pki, p33 = provinces
    national = pki.client("national-index:ops")
    links = ProvinceLinks({"33": f"127.0.0.1:{p33.port}"}, LinkTls(pki.pki.ca_cert_pem, national.cert_pem,
                                                                     national.key_pem))
    index = NationalIndex(store=store, blind=NationalBlindIndex(SoftwareHmacKey(os.urandom(32))), release=links)
    mid, doc = new_mid(), resident(n=300)
    claim(index, "33", mid, [doc])
    result = loop.run(index.transfer(province="44", main_index_id=mid, document=doc, consent=_consent(), now=NOW))
    assert (result.main_index_id, result.previous_province) == (mid, "33")
    assert p33.released == [(mid, "44", "desk-44/2026/0001")] and p33.callers == ["national-index:ops"]
    assert index.identity(mid).home_province == "44"
    assert [(e.kind, e.main_index_id, e.other_province) for e in index.events("33", after=0, limit=10)] == [
        (EventKind.MOVED_AWAY, mid, "44")]
    # a retry answers the same, without a second release
    again = loop.run(index.transfer(province="44", main_index_id=mid, document=doc, consent=_consent(), now=NOW))
    assert again.previous_province == "33" and len(p33.released) == 1
    # the new home adds documents now; the old one may not
    assert claim(index, "44", mid, [resident(n=301)]).outcome is CLAIMED
    with pytest.raises(HomedElsewhere):
        claim(index, "33", mid, [resident(n=302)])
    loop.run(links.close())


def test_transfer_with_the_old_home_unreachable_changes_nothing(store, provinces):
    loop, pki, p33 = provinces
    national = pki.client("national-index:ops")
    links = ProvinceLinks({"33": "127.0.0.1:1"}, LinkTls(pki.pki.ca_cert_pem, national.cert_pem, national.key_pem),
                          timeout=1.0)
    index = NationalIndex(store=store, blind=NationalBlindIndex(SoftwareHmacKey(os.urandom(32))), release=links)
    mid, doc = new_mid(), resident(n=310)
    claim(index, "33", mid, [doc])
    with pytest.raises(ProvinceUnavailable):
        loop.run(index.transfer(province="44", main_index_id=mid, document=doc, consent=_consent(), now=NOW))
    assert index.identity(mid).home_province == "33"
    assert index.events("33", after=0, limit=10) == []
    loop.run(links.close())


@pytest.mark.parametrize("case", ["unknown", "wrong_document", "merged", "already_home"])
def test_transfer_refusals(store, provinces, case):
    loop, pki, p33 = provinces
    national = pki.client("national-index:ops")
    links = ProvinceLinks({"33": f"127.0.0.1:{p33.port}"}, LinkTls(pki.pki.ca_cert_pem, national.cert_pem,
                                                                     national.key_pem))
    index = NationalIndex(store=store, blind=NationalBlindIndex(SoftwareHmacKey(os.urandom(32))), release=links)
    mid, doc = new_mid(), resident(n=320)
    claim(index, "33", mid, [doc], registered_at=NOW - dt.timedelta(hours=1))
    target, shown, province, error = mid, doc, "44", Conflict
    if case == "unknown":
        target, error = new_mid(), NotFound
    elif case == "wrong_document":
        claim(index, "33", new_mid(), [resident(n=321)])
        shown = resident(n=321)
    elif case == "merged":
        claim(index, "44", new_mid(), [doc], provisional=True, registered_at=NOW - dt.timedelta(hours=2))
    elif case == "already_home":
        province = "33"
    with pytest.raises(error):
        loop.run(index.transfer(province=province, main_index_id=target, document=shown, consent=_consent(),
                                now=NOW))
    assert p33.released == []
    loop.run(links.close())


def test_asyncio_is_not_needed_for_claims(index):
    """Claims are plain blocking calls (the servicer runs them in a thread); no loop is running here."""
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert claim(index, "11", new_mid(), [resident("110101", n=9)]).outcome is CLAIMED
