"""ResidentIndex and CodeIssuer over a real SQLite file: registration, merges, dense
serials, idempotency, renewal, revocation, and a kill -9 durability test."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pathlib
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

import healthcode as hc
from healthcode import Algorithm
from issuer.documents import make_resident_id, parse_document
from issuer.errors import AlreadyExists, Conflict, InvalidRequest, NoSigningKey, NotFound
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import CodeRef, CodeState, RevocationReason
from issuer.privacy import IdentifierVault
from issuer.store import SQLiteStore

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOW = dt.datetime(2026, 11, 22, 8, 0, 0, 250_000, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
VAULT_KEYS = {"blind_index_key": b"I" * 32, "encryption_key": b"E" * 32}
SEED = bytes(range(1, 33))


def signer(seed: bytes = SEED) -> hc.SoftwareSigner:
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(Algorithm.EDDSA, seed))


def keyring(*signers: hc.SoftwareSigner) -> hc.Keyring:
    return hc.Keyring(
        [
            hc.TrustedKey(kid=s.kid, province="33", public_key=s.public_key(), use_from=NOW - dt.timedelta(days=1),
                          use_until=NOW + dt.timedelta(days=30), verify_until=NOW + dt.timedelta(days=60))
            for s in signers
        ]
    )


def resident_id(seq: int, region: str = "330102") -> str:
    return make_resident_id(region, dt.date(1980, 1, 1) + dt.timedelta(days=seq // 1000), seq % 1000)


def rid(seq: int):
    return parse_document("resident_id", resident_id(seq), today=TODAY)


class World:
    """A store, an index and an issuer over one file, opened and closed around a test body."""

    def __init__(self, path, *, signer_=None, signer_for=None, validity=dt.timedelta(days=7)):
        self.path = path
        self.store = SQLiteStore(path)
        self.index = ResidentIndex(store=self.store, vault=IdentifierVault(**VAULT_KEYS))
        if signer_for is None:
            signer_ = signer_ or signer()
        self.issuer = CodeIssuer(store=self.store, province="33", signer=signer_, signer_for=signer_for,
                                 validity=validity)

    def close(self):
        self.store.close()


def run(path, body, **kwargs):
    world = World(path, **kwargs)
    try:
        return asyncio.run(body(world))
    finally:
        world.close()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "issuer.db"


# --------------------------------------------------------------------------- the main index


def test_register_and_find(path):
    passport = parse_document("passport", "E12345678", country="CHN", today=TODAY)

    async def body(w):
        mid = await w.index.register_resident(rid(1), [passport], now=NOW)
        hc.parse_main_index_id(mid)
        assert await w.index.find_resident(rid(1)) == mid
        assert await w.index.find_resident(passport) == mid
        with pytest.raises(NotFound):
            await w.index.find_resident(rid(2))
        record = await w.index.get_resident(mid)
        assert record.active and record.created_at == NOW.replace(microsecond=0)
        kinds = [(i.doc_type, i.primary) for i in w.store.identifiers_of(mid)]
        assert kinds == [("resident_id", True), ("passport", False)]
        return mid

    assert run(path, body) != run(path.with_name("other.db"), body)  # random IDs


def test_foreigner_registers_with_a_permit_or_passport_as_primary(path):
    permit = parse_document("permanent_residence_id", "USA123456789012", today=TODAY)
    passport = parse_document("passport", "123456789", country="USA", today=TODAY)

    async def body(w):
        mid = await w.index.register_resident(permit, [passport], now=NOW)
        assert [(i.doc_type, i.primary) for i in w.store.identifiers_of(mid)] == [
            ("permanent_residence_id", True), ("passport", False)]
        assert await w.index.find_resident(passport) == mid

    run(path, body)


def test_register_refuses_known_documents_naming_the_field_not_the_number(path):
    async def body(w):
        await w.index.register_resident(rid(1), [rid(2)], now=NOW)
        with pytest.raises(AlreadyExists) as info:
            await w.index.register_resident(rid(3), [rid(4), rid(2)], now=NOW)
        assert info.value.message == "supplementary[1] is already registered"
        assert resident_id(2) not in str(info.value)
        with pytest.raises(AlreadyExists, match="^primary is already registered$"):
            await w.index.register_resident(rid(1), now=NOW)
        with pytest.raises(NotFound):  # the refused registration left nothing behind
            await w.index.find_resident(rid(3))
        with pytest.raises(InvalidRequest) as info:
            await w.index.register_resident(rid(5), [rid(6), rid(5)], now=NOW)
        assert info.value.violations[0].field == "supplementary[1]"

    run(path, body)


def test_main_index_id_comes_from_the_injected_random_source(path):
    async def body(w):
        w.index = ResidentIndex(store=w.store, vault=IdentifierVault(**VAULT_KEYS), random_bytes=lambda n: b"\x07" * n)
        assert await w.index.register_resident(rid(1), now=NOW) == hc.main_index_id_from_bytes(b"\x07" * 16)

    run(path, body)


def test_link_identifier(path):
    async def body(w):
        a = await w.index.register_resident(rid(1), now=NOW)
        b = await w.index.register_resident(rid(2), now=NOW)
        hk = parse_document("travel_permit_hk_mo", "H1234567801", today=TODAY)
        await w.index.link_identifier(a, hk, now=NOW)
        await w.index.link_identifier(a, hk, now=NOW)  # again: a no-op
        renewed = parse_document("travel_permit_hk_mo", "H1234567802", today=TODAY)  # same lifetime number
        await w.index.link_identifier(a, renewed, now=NOW)
        assert await w.index.find_resident(renewed) == a
        assert len(w.store.identifiers_of(a)) == 2
        with pytest.raises(AlreadyExists):
            await w.index.link_identifier(b, hk, now=NOW)
        with pytest.raises(NotFound):
            await w.index.link_identifier(hc.main_index_id_from_bytes(bytes(16)), rid(3), now=NOW)
        await w.index.merge_residents(survivor=a, merged=b, now=NOW)
        with pytest.raises(NotFound):
            await w.index.link_identifier(b, rid(3), now=NOW)
        with pytest.raises(InvalidRequest) as info:
            await w.index.link_identifier("not-an-id", rid(3), now=NOW)
        assert info.value.violations[0].field == "main_index_id"

    run(path, body)


def test_merge(path):
    async def body(w):
        survivor = await w.index.register_resident(rid(1), now=NOW)
        merged = await w.index.register_resident(rid(2), [rid(3)], now=NOW)
        live = [await w.issuer.issue_code(caller="app", main_index_id=merged, idempotency_key=None, now=NOW)
                for _ in range(3)]
        lost = await w.issuer.revoke_code(ref=live[2].ref, reason=RevocationReason.LOST_DEVICE, now=NOW)
        kept = await w.issuer.issue_code(caller="app", main_index_id=survivor, idempotency_key=None, now=NOW)
        later = NOW + dt.timedelta(hours=1)
        assert await w.index.merge_residents(survivor=survivor, merged=merged, now=later) == 2
        # documents moved; the merged entry's documents find the survivor
        assert await w.index.find_resident(rid(2)) == survivor
        assert await w.index.find_resident(rid(3)) == survivor
        assert len(w.store.identifiers_of(survivor)) == 3
        assert (await w.index.get_resident(merged)).merged_into == survivor
        for c in live[:2]:
            got = await w.issuer.get_code(c.ref)
            assert got.revocation_reason is RevocationReason.MERGED and got.state(later) is CodeState.REVOKED
        assert (await w.issuer.get_code(lost.ref)).revocation_reason is RevocationReason.LOST_DEVICE
        assert (await w.issuer.get_code(kept.ref)).revoked_at is None
        # the merged entry takes no new code; the survivor does
        with pytest.raises(Conflict):
            await w.issuer.issue_code(caller="app", main_index_id=merged, idempotency_key=None, now=later)
        await w.issuer.issue_code(caller="app", main_index_id=survivor, idempotency_key=None, now=later)
        with pytest.raises(Conflict):
            await w.index.merge_residents(survivor=survivor, merged=merged, now=later)
        with pytest.raises(Conflict):
            await w.index.merge_residents(survivor=merged, merged=survivor, now=later)
        with pytest.raises(Conflict):
            await w.index.merge_residents(survivor=survivor, merged=survivor, now=later)
        with pytest.raises(NotFound):
            await w.index.merge_residents(survivor=survivor, merged=hc.main_index_id_from_bytes(bytes(16)), now=later)

    run(path, body)


def test_merge_while_codes_are_in_flight_loses_no_serial(path):
    async def body(w):
        survivor = await w.index.register_resident(rid(1), now=NOW)
        merged = await w.index.register_resident(rid(2), now=NOW)
        await w.issuer.issue_code(caller="app", main_index_id=survivor, idempotency_key=None, now=NOW)  # warm up
        issues, merge = [], None
        for i in range(300):  # a stream of issuances, with the merge submitted in the middle
            issues.append(asyncio.ensure_future(
                w.issuer.issue_code(caller="app", main_index_id=merged, idempotency_key=None, now=NOW)))
            if i == 100:
                merge = asyncio.ensure_future(w.index.merge_residents(survivor=survivor, merged=merged, now=NOW))
            await asyncio.sleep(0)
        results = await asyncio.gather(*issues, return_exceptions=True)
        revoked = await merge
        issued = [r for r in results if not isinstance(r, BaseException)]
        assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
        assert revoked == len(issued)  # every code that got in was revoked by the merge
        assert 0 < len(issued) < 300, "the merge should land while codes are in flight"
        for _ in range(10):
            await w.issuer.issue_code(caller="app", main_index_id=survivor, idempotency_key=None, now=NOW)
        serials = sorted(r.serial for r in w.store.codes_of(merged) + w.store.codes_of(survivor))
        assert serials == list(range(1 + len(issued) + 10))  # refused serials were handed out again

    run(path, body)


# --------------------------------------------------------------------------- issuing


def test_issued_codes_verify_and_match_the_store(path):
    s = signer()

    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        issued = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        verified = hc.verify(issued.text, keyring(s), now=NOW)
        assert (verified.province, verified.subject, verified.serial, verified.kid) == ("33", mid, 0, s.kid)
        assert issued.issued_at == NOW.replace(microsecond=0) == verified.issued_at
        assert issued.expires_at == issued.issued_at + dt.timedelta(days=7) == verified.expires_at
        assert await w.issuer.get_code(issued.ref) == issued
        assert w.issuer.ref_from_text(issued.text) == issued.ref

    run(path, body, signer_=s)


def test_issue_refuses_unknown_residents_and_bad_input(path):
    async def body(w):
        with pytest.raises(NotFound):
            await w.issuer.issue_code(caller="app", main_index_id=hc.main_index_id_from_bytes(bytes(16)),
                                      idempotency_key=None, now=NOW)
        mid = await w.index.register_resident(rid(1), now=NOW)
        bad = [
            ({"main_index_id": "x"}, "main_index_id"),
            ({"caller": ""}, "caller"),
            ({"idempotency_key": ""}, "idempotency_key"),
            ({"idempotency_key": "k" * 129}, "idempotency_key"),
            ({"idempotency_key": "ключ"}, "idempotency_key"),
        ]
        for change, field in bad:
            args = {"caller": "app", "main_index_id": mid, "idempotency_key": None, "now": NOW, **change}
            with pytest.raises(InvalidRequest) as info:
                await w.issuer.issue_code(**args)
            assert info.value.violations[0].field == field
        assert w.store.codes_of(mid) == []

    run(path, body)


def test_serials_are_dense_under_concurrency(path):
    s = signer()

    async def body(w):
        mids = [await w.index.register_resident(rid(i), now=NOW) for i in range(10)]
        codes = await asyncio.gather(*(
            w.issuer.issue_code(caller="app", main_index_id=mids[i % 10], idempotency_key=None, now=NOW)
            for i in range(1000)
        ))
        ring = keyring(s)
        assert sorted(c.ref.serial for c in codes) == list(range(1000))
        assert all(hc.verify(c.text, ring, now=NOW).serial == c.ref.serial for c in codes)
        stats = w.store.write_stats()
        assert stats.batches < 1000  # group commit at work
        return sorted(c.ref.serial for c in codes)

    run(path, body, signer_=s)
    with sqlite3.connect(path) as raw:
        serials = [r[0] for r in raw.execute("SELECT serial FROM codes ORDER BY serial")]
    assert serials == list(range(1000))

    async def again(w):  # a restart continues after the highest committed serial
        mid = await w.index.find_resident(rid(0))
        return await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)

    assert run(path, again, signer_=s).ref.serial == 1000


def test_signer_lookup_is_per_issuance_and_serials_are_per_kid(path):
    old, new = signer(b"\x01" * 32), signer(b"\x02" * 32)
    switch = NOW + dt.timedelta(days=1)

    def signer_for(now):
        if now < NOW - dt.timedelta(days=1):
            raise NoSigningKey("no key yet")
        return old if now < switch else new

    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        a = [await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
             for _ in range(3)]
        b = [await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=switch)
             for _ in range(2)]
        assert [(c.ref.kid, c.ref.serial) for c in a] == [(old.kid, 0), (old.kid, 1), (old.kid, 2)]
        assert [(c.ref.kid, c.ref.serial) for c in b] == [(new.kid, 0), (new.kid, 1)]
        with pytest.raises(NoSigningKey):
            await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None,
                                      now=NOW - dt.timedelta(days=2))
        c = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        assert c.ref.serial == 3  # the failed attempt used no serial

    run(path, body, signer_for=signer_for)


# --------------------------------------------------------------------------- idempotency


def test_concurrent_identical_requests_get_one_code(path):
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        codes = await asyncio.gather(*(
            w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="request-1", now=NOW)
            for _ in range(100)
        ))
        assert len({c for c in codes}) == 1 and codes[0].ref.serial == 0
        again = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="request-1", now=NOW)
        assert again == codes[0]
        # the key is the caller's: another caller's same key is another request
        other = await w.issuer.issue_code(caller="other-app", main_index_id=mid, idempotency_key="request-1", now=NOW)
        assert other.ref.serial == 1
        assert len(w.store.codes_of(mid)) == 2

    run(path, body)


def test_same_key_for_another_resident_is_a_conflict(path):
    async def body(w):
        a = await w.index.register_resident(rid(1), now=NOW)
        b = await w.index.register_resident(rid(2), now=NOW)
        first = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=a, idempotency_key="key-0001",
                                                          now=NOW))
        await asyncio.sleep(0)
        with pytest.raises(Conflict):  # while the first is in flight
            await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        await first
        with pytest.raises(Conflict):  # after it committed
            await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        with pytest.raises(Conflict):  # and for another kind of request
            await w.issuer.renew_code(caller="app", ref=(await first).ref, idempotency_key="key-0001", now=NOW)
        assert w.store.codes_of(b) == []
        return a

    a = run(path, body)

    async def after_restart(w):
        b = await w.index.find_resident(rid(2))
        with pytest.raises(Conflict):
            await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        c = await w.issuer.issue_code(caller="app", main_index_id=a, idempotency_key="fresh-key", now=NOW)
        assert c.ref.serial == 1  # the refused retry's serial was handed out again

    run(path, after_restart)


def test_retry_after_restart_returns_the_original(path):
    async def first(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        return await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="once-key", now=NOW)

    original = run(path, first)

    async def retry(w):
        later = NOW + dt.timedelta(minutes=5)
        again = await w.issuer.issue_code(caller="app", main_index_id=original.main_index_id,
                                          idempotency_key="once-key", now=later)
        fresh = await w.issuer.issue_code(caller="app", main_index_id=original.main_index_id,
                                          idempotency_key=None, now=later)
        return again, fresh

    again, fresh = run(path, retry)
    assert again == original
    assert fresh.ref.serial == 1  # the retry's tentative serial was not lost


def test_retry_after_merge_returns_the_original(path):
    async def body(w):
        a = await w.index.register_resident(rid(1), now=NOW)
        b = await w.index.register_resident(rid(2), now=NOW)
        original = await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        await w.index.merge_residents(survivor=a, merged=b, now=NOW)
        again = await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key="key-0001", now=NOW)
        assert again.ref == original.ref and again.revocation_reason is RevocationReason.MERGED

    run(path, body)


def test_a_caller_that_gives_up_does_not_lose_its_code(path):
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the writer will wait behind this lock
        task = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="key-0001",
                                                         now=NOW))
        await asyncio.sleep(0.1)
        task.cancel()  # e.g. the client's deadline passed
        with pytest.raises(asyncio.CancelledError):
            await task
        retry = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="key-0001",
                                                          now=NOW))
        await asyncio.sleep(0.1)
        blocker.execute("COMMIT")
        blocker.close()
        code = await retry
        assert code.ref.serial == 0 and len(w.store.codes_of(mid)) == 1

    run(path, body)


def test_cancelled_callers_neither_lose_nor_leak_serials(path):
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        first = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        # (a) a plain issuance whose caller gives up: the code is still committed
        plain = asyncio.ensure_future(w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None,
                                                          now=NOW))
        # (b) a renewal refused after its caller gave up: the code it renews is revoked just before it
        revoke = asyncio.ensure_future(w.issuer.revoke_code(ref=first.ref, reason=RevocationReason.FRAUD, now=NOW))
        renew = asyncio.ensure_future(w.issuer.renew_code(caller="app", ref=first.ref, idempotency_key=None, now=NOW))
        deadline = time.monotonic() + 10
        allocator = w.issuer._allocators[first.ref.kid]
        while allocator.next != 3:  # (a) and (b) hold serials 1 and 2, queued behind the lock
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)
        plain.cancel()
        renew.cancel()
        blocker.execute("COMMIT")
        blocker.close()
        await revoke
        for task in (plain, renew):
            with pytest.raises(asyncio.CancelledError):
                await task
        await asyncio.sleep(0.1)  # the writer resolves the refused renewal; its serial comes back
        later = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        serials = sorted(r.serial for r in w.store.codes_of(mid))
        assert serials == [0, 1, 2] and later.ref.serial == 2

    run(path, body)


# --------------------------------------------------------------------------- renewing, revoking, reading


def test_renew(path):
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        old = await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
        later = NOW + dt.timedelta(days=8)  # renewing an expired code is the usual case
        new = await w.issuer.renew_code(caller="app", ref=old.ref, idempotency_key="renew-r1", now=later)
        assert new.main_index_id == mid and new.ref.serial == 1 and new.issued_at == later.replace(microsecond=0)
        stored_old = await w.issuer.get_code(old.ref)
        assert stored_old.revocation_reason is RevocationReason.SUPERSEDED
        assert stored_old.revoked_at == later.replace(microsecond=0)
        again = await w.issuer.renew_code(caller="app", ref=old.ref, idempotency_key="renew-r1", now=later)
        assert again == new
        with pytest.raises(Conflict):  # already superseded, no key
            await w.issuer.renew_code(caller="app", ref=old.ref, idempotency_key=None, now=later)
        with pytest.raises(NotFound):
            await w.issuer.renew_code(caller="app", ref=CodeRef("33", old.ref.kid, 99), idempotency_key=None,
                                      now=later)
        concurrent = await asyncio.gather(
            *(w.issuer.renew_code(caller="app", ref=new.ref, idempotency_key=None, now=later) for _ in range(5)),
            return_exceptions=True,
        )
        winners = [c for c in concurrent if not isinstance(c, BaseException)]
        assert len(winners) == 1 and all(isinstance(c, Conflict) for c in concurrent if c not in winners)
        serials = sorted(c.ref.serial for c in map(lambda r: r.to_issued_code(), w.store.codes_of(mid)))
        assert serials == [0, 1, 2]  # the refused renewals' serials were handed back

    run(path, body)


def test_revoke(path):
    async def body(w):
        mid = await w.index.register_resident(rid(1), now=NOW)
        codes = [await w.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key=None, now=NOW)
                 for _ in range(4)]
        revoked = await w.issuer.revoke_code(ref=codes[0].ref, reason=RevocationReason.LOST_DEVICE, now=NOW)
        assert revoked.revocation_reason is RevocationReason.LOST_DEVICE and revoked.state(NOW) is CodeState.REVOKED
        again = await w.issuer.revoke_code(ref=codes[0].ref, reason="fraud", now=NOW + dt.timedelta(hours=1))
        assert again == revoked  # the first reason and time stay
        assert await w.issuer.revoke_resident_codes(main_index_id=mid, reason=RevocationReason.DECEASED,
                                                    now=NOW) == 3
        assert await w.issuer.revoke_resident_codes(main_index_id=mid, reason=RevocationReason.DECEASED,
                                                    now=NOW) == 0
        with pytest.raises(NotFound):
            await w.issuer.revoke_resident_codes(main_index_id=hc.main_index_id_from_bytes(bytes(16)),
                                                 reason=RevocationReason.OTHER, now=NOW)
        with pytest.raises(NotFound):
            await w.issuer.revoke_code(ref=CodeRef("33", codes[0].ref.kid, 77), reason=RevocationReason.OTHER,
                                       now=NOW)
        with pytest.raises(NotFound):
            await w.issuer.get_code(CodeRef("33", codes[0].ref.kid, 77))
        with pytest.raises(InvalidRequest) as info:
            await w.issuer.revoke_code(ref=codes[1].ref, reason="bored", now=NOW)
        assert info.value.violations[0].field == "reason"

    run(path, body)


@pytest.mark.parametrize("text", ["", "EHC1:", "EHC2:ABC", "hello", "EHC1:" + "A" * 2000, "EHC1:%%%"])
def test_ref_from_text_refuses_malformed_codes(text):
    with pytest.raises(InvalidRequest) as info:
        CodeIssuer.ref_from_text(text)
    assert info.value.violations[0].field == "code"


# --------------------------------------------------------------------------- kill -9 durability

CHILD = textwrap.dedent(
    """
    import asyncio, datetime as dt, sys
    import healthcode as hc
    from issuer.issuance import CodeIssuer
    from issuer.store import SQLiteStore

    path, seed, mids, first_key = sys.argv[1], bytes.fromhex(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
    now = dt.datetime.fromisoformat(sys.argv[5])
    store = SQLiteStore(path)
    signer = hc.SoftwareSigner(hc.signing_key_from_private_bytes(hc.Algorithm.EDDSA, seed))
    issuer = CodeIssuer(store=store, province="33", signer=signer)
    keys = iter(range(first_key, 10**9))

    async def worker():
        for n in keys:
            code = await issuer.issue_code(caller="app", main_index_id=mids[n % len(mids)],
                                           idempotency_key=f"k{n:07d}", now=now)
            sys.stdout.write(f"{code.ref.serial} k{n:07d}\\n")
            sys.stdout.flush()

    async def main():
        await asyncio.gather(*(worker() for _ in range(32)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_issuance(tmp_path, path):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    s = signer()
    ring = keyring(s)

    async def setup(w):
        return [await w.index.register_resident(rid(i), now=NOW) for i in range(5)]

    mids = run(path, setup)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    acknowledged: dict[int, str] = {}
    first_key = 0
    for cycle in range(3):
        child = subprocess.Popen(
            [sys.executable, str(script), str(path), SEED.hex(), ",".join(mids), str(first_key), NOW.isoformat()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        lines = []
        deadline = time.monotonic() + 60
        while len(lines) < 400 + 100 * cycle and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line)
        child.send_signal(signal.SIGKILL)  # mid-stream: writes are queued and in flight
        rest, err = child.communicate(timeout=30)
        assert child.returncode == -signal.SIGKILL, err.decode()
        lines += rest.splitlines(keepends=True)
        assert len(lines) >= 400, err.decode()
        for line in lines:
            if not line.endswith(b"\n"):
                continue  # cut off by the kill: not acknowledged to the reader
            serial, key = line.decode().split()
            assert int(serial) not in acknowledged, "a serial was acknowledged twice"
            acknowledged[int(serial)] = key
        first_key += 100_000

        # every acknowledged code is stored, verifies, and is what a retry returns
        async def check(w):
            stored = {}
            for mid in mids:
                for r in w.store.codes_of(mid):
                    assert r.serial not in stored
                    stored[r.serial] = r
            for serial, key in acknowledged.items():
                record = stored[serial]
                assert record.idempotency_key == key
                assert hc.verify(record.text, ring, now=NOW).serial == serial
            sample = list(acknowledged.items())[-50:]
            for serial, key in sample:
                n = int(key[1:])
                again = await w.issuer.issue_code(caller="app", main_index_id=mids[n % len(mids)],
                                                  idempotency_key=key, now=NOW)
                assert again.ref.serial == serial and again.text == stored[serial].text
            fresh = await w.issuer.issue_code(caller="app", main_index_id=mids[0], idempotency_key=None, now=NOW)
            assert fresh.ref.serial not in stored
            return len(stored)

        total = run(path, check, signer_=s)
        assert total >= len(acknowledged)
    with sqlite3.connect(path) as raw:
        rows = raw.execute("SELECT count(*), count(DISTINCT serial) FROM codes").fetchone()
    assert rows[0] == rows[1]
