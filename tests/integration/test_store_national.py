"""The store contract's national part (issue 14), on every store: SQLite and PostgreSQL.

Each test gets a fresh database from the ``backend`` fixture (``conftest.py``). What is
checked: an entry's national state changes only from the states expected; a refused pending
entry goes entirely; a national merge or a move is one transaction (state, pointer, live codes
revoked) and idempotent; an entry moving in is adopted under its own ID; the access log reads
newest first in pages; the event cursor never goes back and survives a reopen; none of it
stores a document number.
"""

from __future__ import annotations

import datetime as dt

import pytest

import healthcode as hc
from issuer.documents import canonical_form, make_resident_id, parse_document
from issuer.model import NationalState, RevocationReason
from issuer.privacy import IdentifierVault
from issuer.store import (
    AccessRecord,
    CodeRecord,
    DuplicateIdentifier,
    IdentifierRecord,
    ResidentMerged,
    ResidentMoved,
    ResidentNotFound,
    ResidentRecord,
)

NOW = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.timezone.utc)
VAULT = IdentifierVault(blind_index_key=b"i" * 32, encryption_key=b"e" * 32)
MID_A = hc.main_index_id_from_bytes(bytes([1]) * 16)
MID_B = hc.main_index_id_from_bytes(bytes([2]) * 16)
MID_C = hc.main_index_id_from_bytes(bytes([3]) * 16)
S = NationalState


@pytest.fixture
def store(backend):
    s = backend.open()
    yield s
    s.close()


def number(seq: int) -> str:
    return make_resident_id("330106", dt.date(1980, 1, 1) + dt.timedelta(days=seq), seq % 1000)


def identifier(seq: int, mid: str, *, primary: bool = True) -> IdentifierRecord:
    doc = parse_document("resident_id", number(seq), today=NOW.date())
    blind = VAULT.blind_index(canonical_form(doc))
    return IdentifierRecord(blind, doc.type.value, VAULT.seal(canonical_form(doc), aad=blind), mid, primary, NOW)


def create(store, mid: str, seq: int, state: NationalState = S.CLAIMED, at: dt.datetime = NOW) -> None:
    store.create_resident(ResidentRecord(mid, at, national_state=state), [identifier(seq, mid)]).result()


def code(store, serial: int, mid: str, *, expires: dt.datetime | None = None) -> None:
    store.submit_code(CodeRecord(province="33", kid=b"kid-0001", serial=serial, main_index_id=mid, issued_at=NOW,
                                 expires_at=expires or NOW + dt.timedelta(days=7), text=f"EHC1:T{serial}",
                                 caller="app")).result()


def revocations(store, mid: str) -> list[tuple[int, RevocationReason | None]]:
    return [(c.serial, c.revocation_reason) for c in store.codes_of(mid)]


def test_new_entries_are_local_unless_told_and_states_change_only_from_the_expected(store):
    store.create_resident(ResidentRecord(MID_A, NOW), [identifier(1, MID_A)]).result()
    assert store.get_resident(MID_A).national_state is S.LOCAL
    create(store, MID_B, 2, S.PENDING)
    assert store.set_national_state(MID_B, S.CLAIMED, expect=[S.PROVISIONAL]).result() is False
    assert store.get_resident(MID_B).national_state is S.PENDING
    assert store.set_national_state(MID_B, S.CLAIMED, expect=[S.PENDING, S.PROVISIONAL]).result() is True
    assert store.get_resident(MID_B).national_state is S.CLAIMED
    assert store.set_national_state(MID_C, S.CLAIMED, expect=[S.PENDING]).result() is False  # unknown: no row


def test_unclaimed_entries_are_listed_oldest_first(store):
    create(store, MID_C, 3, S.PROVISIONAL, NOW)
    create(store, MID_A, 1, S.LOCAL, NOW - dt.timedelta(hours=2))
    create(store, MID_B, 2, S.CLAIMED, NOW - dt.timedelta(hours=3))
    mid_d = hc.main_index_id_from_bytes(bytes([4]) * 16)
    create(store, mid_d, 4, S.PENDING, NOW - dt.timedelta(hours=1))
    assert [r.main_index_id for r in store.unclaimed_residents(limit=10)] == [MID_A, mid_d, MID_C]
    assert [r.main_index_id for r in store.unclaimed_residents(limit=1)] == [MID_A]
    page = store.unclaimed_residents(limit=2)
    assert [r.main_index_id for r in store.unclaimed_residents(
        limit=10, after=(page[-1].created_at, page[-1].main_index_id))] == [MID_C]
    store.merge_residents(survivor=MID_C, merged=MID_A, at=NOW).result()  # a local merge: nothing left to claim
    assert [r.main_index_id for r in store.unclaimed_residents(limit=10)] == [mid_d, MID_C]


def test_a_refused_pending_entry_goes_entirely_and_only_a_pending_one(store):
    create(store, MID_A, 1, S.PENDING)
    create(store, MID_B, 2, S.PROVISIONAL)
    assert store.delete_pending(MID_B).result() is False  # acknowledged: never removed
    assert store.delete_pending(MID_A).result() is True
    assert store.get_resident(MID_A) is None and store.identifiers_of(MID_A) == []
    assert store.find_identifier(identifier(1, MID_A).blind_index) is None
    create(store, MID_C, 1, S.PENDING)  # its document is free again
    assert store.delete_pending(MID_A).result() is False


def test_a_national_merge_points_at_the_survivor_revokes_live_codes_and_is_idempotent(store):
    create(store, MID_A, 1)
    code(store, 0, MID_A)
    code(store, 1, MID_A, expires=NOW - dt.timedelta(seconds=1))  # expired: left alone
    assert store.merge_away(merged=MID_A, survivor=MID_B, survivor_province="44", at=NOW).result() == 1
    merged, survivor = store.get_resident(MID_A), store.get_resident(MID_B)
    assert (merged.merged_into, merged.national_state, merged.home_province) == (MID_B, S.MERGED, "44")
    assert not merged.active
    assert (survivor.national_state, survivor.home_province, survivor.active) == (S.FOREIGN, "44", False)
    assert revocations(store, MID_A) == [(0, RevocationReason.MERGED), (1, None)]
    assert store.identifiers_of(MID_A)  # its documents stay: found through the merge
    assert store.merge_away(merged=MID_A, survivor=MID_B, survivor_province="44", at=NOW).result() == 0
    with pytest.raises(ResidentMerged):
        store.merge_away(merged=MID_A, survivor=MID_C, survivor_province="11", at=NOW).result()
    with pytest.raises(ResidentNotFound):
        store.merge_away(merged=MID_C, survivor=MID_B, survivor_province="44", at=NOW).result()
    with pytest.raises(ResidentMoved):  # a foreign stand-in takes no document here
        store.add_identifier(identifier(9, MID_B, primary=False)).result()


def test_a_merge_into_a_local_survivor_keeps_the_survivor_as_it_is(store):
    create(store, MID_A, 1, S.PROVISIONAL)
    create(store, MID_B, 2)
    assert store.merge_away(merged=MID_A, survivor=MID_B, survivor_province=None, at=NOW).result() == 0
    assert store.get_resident(MID_B).national_state is S.CLAIMED and store.get_resident(MID_B).active
    assert store.get_resident(MID_A).home_province is None


def test_a_release_supersedes_live_codes_points_at_the_new_home_and_is_idempotent(store):
    create(store, MID_A, 1)
    code(store, 0, MID_A)
    code(store, 1, MID_A)
    assert store.release_resident(MID_A, to_province="44", consent_reference="c-1", at=NOW).result() == 2
    moved = store.get_resident(MID_A)
    assert (moved.national_state, moved.home_province, moved.moved_at, moved.active) == (S.MOVED, "44", NOW, False)
    assert revocations(store, MID_A) == [(0, RevocationReason.SUPERSEDED), (1, RevocationReason.SUPERSEDED)]
    assert store.release_resident(MID_A, to_province="44", consent_reference="c-1", at=NOW).result() == 0
    with pytest.raises(ResidentMoved):
        store.add_identifier(identifier(2, MID_A, primary=False)).result()
    with pytest.raises(ResidentNotFound):
        store.release_resident(MID_B, to_province="44", consent_reference="", at=NOW).result()


def test_moving_in_adopts_the_same_id_and_moving_back_makes_it_ours_again(store):
    store.adopt_resident(ResidentRecord(MID_A, NOW), [identifier(1, MID_A)]).result()
    adopted = store.get_resident(MID_A)
    assert (adopted.national_state, adopted.active) == (S.CLAIMED, True)
    store.adopt_resident(ResidentRecord(MID_A, NOW), [identifier(1, MID_A)]).result()  # a retry: nothing new
    assert len(store.identifiers_of(MID_A)) == 1
    store.release_resident(MID_A, to_province="44", consent_reference="c", at=NOW).result()
    store.adopt_resident(ResidentRecord(MID_A, NOW), [identifier(2, MID_A)]).result()  # back, with another document
    back = store.get_resident(MID_A)
    assert (back.national_state, back.home_province, back.active) == (S.CLAIMED, None, True)
    assert [i.primary for i in store.identifiers_of(MID_A)] == [True, False]
    code(store, 0, MID_A)  # takes codes again
    create(store, MID_B, 3)
    with pytest.raises(DuplicateIdentifier) as e:
        store.adopt_resident(ResidentRecord(MID_C, NOW), [identifier(4, MID_C), identifier(3, MID_C)]).result()
    assert e.value.position == 1
    assert store.get_resident(MID_C) is None


def test_the_access_log_reads_newest_first_in_pages(store):
    create(store, MID_A, 1)
    for i in range(5):
        store.record_access(AccessRecord(f"ACC{i}", MID_A, "gz-hospital-1", "44", 1 + i % 4,
                                         NOW + dt.timedelta(minutes=i // 2), "static" if i % 2 else "dynamic")).result()
    first = store.accesses_of(MID_A, limit=2)
    assert [a.access_id for a in first] == ["ACC4", "ACC3"]
    assert first[0] == AccessRecord("ACC4", MID_A, "gz-hospital-1", "44", 1, NOW + dt.timedelta(minutes=2), "dynamic")
    rest = store.accesses_of(MID_A, limit=10, before=(first[-1].resolved_at, first[-1].access_id))
    assert [a.access_id for a in rest] == ["ACC2", "ACC1", "ACC0"]
    assert store.accesses_of(MID_B, limit=10) == []
    with pytest.raises(ResidentNotFound):
        store.record_access(AccessRecord("ACCX", MID_B, "h", "44", 1, NOW, "static")).result()


def test_the_event_cursor_never_goes_back_and_survives_a_reopen(backend):
    store = backend.open()
    assert store.national_cursor() == 0
    store.advance_national_cursor(7).result()
    store.advance_national_cursor(3).result()
    assert store.national_cursor() == 7
    store.close()
    store = backend.open()
    try:
        assert store.national_cursor() == 7
    finally:
        store.close()


def test_the_national_tables_hold_no_document_number(backend):
    store = backend.open()
    try:
        create(store, MID_A, 1, S.PENDING)
        store.set_national_state(MID_A, S.CLAIMED, expect=[S.PENDING]).result()
        store.record_access(AccessRecord("ACC0", MID_A, "gz-hospital-1", "44", 2, NOW, "static")).result()
        store.release_resident(MID_A, to_province="44", consent_reference="desk-7/2026", at=NOW).result()
        store.adopt_resident(ResidentRecord(MID_B, NOW), [identifier(2, MID_B)]).result()
    finally:
        store.close()
    data = backend.stored_bytes()
    for seq in (1, 2):
        for form in (number(seq), number(seq)[:17], number(seq)[6:14]):
            assert form.encode() not in data
            assert form.encode("utf-16-le") not in data
