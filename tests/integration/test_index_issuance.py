"""ResidentIndex and CodeIssuer over a real SQLite file: registration, merges, dense
serials, renewal, revocation. Idempotency and a kill -9 durability test are in
``test_index_issuance_idempotency.py``; shared helpers in ``index_issuance_support.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3

import pytest

import healthcode as hc
from issuer.documents import parse_document
from issuer.errors import AlreadyExists, Conflict, InvalidRequest, NoSigningKey, NotFound
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import CodeRef, CodeState, RevocationReason
from issuer.privacy import IdentifierVault
from .index_issuance_support import NOW, TODAY, VAULT_KEYS, keyring, resident_id, rid, run, signer
from .index_issuance_support import path  # noqa: F401 - fixtures


# --------------------------------------------------------------------------- the main index


def test_register_and_find(path):  # noqa: F811 - the imported fixture
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


def test_foreigner_registers_with_a_permit_or_passport_as_primary(path):  # noqa: F811 - the imported fixture
    permit = parse_document("permanent_residence_id", "USA123456789012", today=TODAY)
    passport = parse_document("passport", "123456789", country="USA", today=TODAY)

    async def body(w):
        mid = await w.index.register_resident(permit, [passport], now=NOW)
        assert [(i.doc_type, i.primary) for i in w.store.identifiers_of(mid)] == [
            ("permanent_residence_id", True), ("passport", False)]
        assert await w.index.find_resident(passport) == mid

    run(path, body)


def test_register_refuses_known_documents_naming_the_field_not_the_number(path):  # noqa: F811 - the imported fixture
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


def test_main_index_id_comes_from_the_injected_random_source(path):  # noqa: F811 - the imported fixture
    async def body(w):
        w.index = ResidentIndex(store=w.store, vault=IdentifierVault(**VAULT_KEYS), random_bytes=lambda n: b"\x07" * n)
        assert await w.index.register_resident(rid(1), now=NOW) == hc.main_index_id_from_bytes(b"\x07" * 16)

    run(path, body)


def test_link_identifier(path):  # noqa: F811 - the imported fixture
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


def test_merge(path):  # noqa: F811 - the imported fixture
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


def test_merge_while_codes_are_in_flight_loses_no_serial(path):  # noqa: F811 - the imported fixture
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


def test_issued_codes_verify_and_match_the_store(path):  # noqa: F811 - the imported fixture
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


def test_issue_refuses_unknown_residents_and_bad_input(path):  # noqa: F811 - the imported fixture
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


def test_serials_are_dense_under_concurrency(path):  # noqa: F811 - the imported fixture
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


def test_signer_lookup_is_per_issuance_and_serials_are_per_kid(path):  # noqa: F811 - the imported fixture
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


# --------------------------------------------------------------------------- renewing, revoking, reading


def test_renew(path):  # noqa: F811 - the imported fixture
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


def test_revoke(path):  # noqa: F811 - the imported fixture
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
