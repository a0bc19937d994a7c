"""The store contract's records, run on every store (SQLite and PostgreSQL; see test_store_contract.py).

Serials, residents, codes (merge, renewal, revocation), channels and challenges.
"""

from __future__ import annotations

import datetime as dt

import pytest

from issuer.documents import DocumentType
from issuer.errors import AlreadyExists, Conflict
from issuer.model import Channel, CodeRef, RevocationReason
from issuer.store import (
    ChallengeRecord,
    ChallengeRefused,
    ChallengeUse,
    CodeNotRenewable,
    CodeRecord,
    DuplicateIdempotencyKey,
    DuplicateIdentifier,
    ResidentMerged,
    ResidentNotFound,
    WriteFailed,
)
from .store_contract_support import KID, MID_A, MID_B, NOW, code, identifier, resident, wait_for_queue
from .store_contract_support import store  # noqa: F401 - fixtures


# --------------------------------------------------------------------------- serials, residents, codes


def test_next_serial_never_goes_back(store, backend):  # noqa: F811 - the imported fixture
    assert store.next_serial("33", KID) == 0
    store.create_resident(resident(), []).result()
    for serial in range(5):
        store.submit_code(code(serial)).result()
    assert store.next_serial("33", KID) == 5
    assert store.next_serial("33", b"other-kid") == 0
    assert store.next_serial("44", KID) == 0
    backend.execute("DELETE FROM codes")  # e.g. a future purge of expired codes
    assert store.next_serial("33", KID) == 5


def test_a_refused_code_takes_no_serial(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="k")).result()
    with pytest.raises(DuplicateIdempotencyKey):
        store.submit_code(code(1, key="k")).result()
    with pytest.raises(ResidentNotFound):
        store.submit_code(code(1, MID_B)).result()
    assert store.next_serial("33", KID) == 1  # RowRejected: serial 1 may be handed out again
    store.submit_code(code(1)).result()
    assert store.next_serial("33", KID) == 2


def test_idempotency_keys_are_unique_per_caller(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="same")).result()
    store.submit_code(code(1, key="same", caller="batch")).result()  # another caller: its own key space
    store.submit_code(code(2)).result()
    store.submit_code(code(3)).result()  # codes without a key never collide
    assert store.find_code_by_idempotency_key("app", "same").serial == 0
    assert store.find_code_by_idempotency_key("batch", "same").serial == 1
    assert store.find_code_by_idempotency_key("app", "other") is None
    assert store.find_code_by_idempotency_key("app", "same").request_fingerprint == b"f" * 16


def test_records_round_trip(store):  # noqa: F811 - the imported fixture
    linked = identifier(1)
    store.create_resident(resident(), [linked]).result()
    record = code(7, key="round-trip")
    store.submit_code(record).result()
    assert store.get_code(record.ref) == record
    assert store.codes_of(MID_A) == [record]
    stored = store.get_resident(MID_A)
    assert stored == resident() and stored.created_at.tzinfo is not None and stored.created_at == NOW
    assert store.find_identifier(linked.blind_index) == linked and store.identifiers_of(MID_A) == [linked]
    assert store.get_resident(MID_B) is None and store.find_identifier(b"\x00" * 32) is None


def test_identifiers_are_unique_and_name_their_position(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(MID_A), [identifier(1), identifier(2, primary=False)]).result()
    with pytest.raises(DuplicateIdentifier) as info:
        store.create_resident(resident(MID_B), [identifier(3, MID_B), identifier(2, MID_B, primary=False)]).result()
    assert info.value.position == 1 and isinstance(info.value, AlreadyExists)
    assert store.get_resident(MID_B) is None  # nothing of the failed registration stayed
    assert store.find_identifier(identifier(3).blind_index) is None
    assert store.add_identifier(identifier(2, primary=False)).result() is False  # same resident: no-op
    with pytest.raises(ResidentNotFound):
        store.add_identifier(identifier(4, MID_B, primary=False)).result()
    kinds = [(r.doc_type, r.primary) for r in store.identifiers_of(MID_A)]
    assert kinds == [("resident_id", True), ("resident_id", False)]
    assert DocumentType(kinds[0][0]) is DocumentType.RESIDENT_ID


def test_merge_revokes_live_codes_and_moves_identifiers(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(MID_A), [identifier(1, MID_A)]).result()
    store.create_resident(resident(MID_B), [identifier(2, MID_B)]).result()
    store.submit_code(code(0, MID_B)).result()
    store.submit_code(code(1, MID_B, expires=NOW - dt.timedelta(seconds=1))).result()  # expired: left alone
    store.submit_code(code(2, MID_B)).result()
    store.revoke_code(CodeRef("33", KID, 2), reason=RevocationReason.LOST_DEVICE, at=NOW).result()
    store.submit_code(code(3, MID_A)).result()
    assert store.merge_residents(survivor=MID_A, merged=MID_B, at=NOW).result() == 1
    by_serial = {r.serial: r for r in store.codes_of(MID_B)}
    assert by_serial[0].revocation_reason is RevocationReason.MERGED and by_serial[0].revoked_at == NOW
    assert by_serial[1].revoked_at is None
    assert by_serial[2].revocation_reason is RevocationReason.LOST_DEVICE
    assert store.get_code(CodeRef("33", KID, 3)).revoked_at is None
    assert {r.main_index_id for r in store.identifiers_of(MID_A)} == {MID_A}
    assert len(store.identifiers_of(MID_A)) == 2 and store.identifiers_of(MID_B) == []
    assert store.get_resident(MID_B).merged_into == MID_A
    assert not store.known_active(MID_B)
    with pytest.raises(ResidentMerged):
        store.merge_residents(survivor=MID_A, merged=MID_B, at=NOW).result()
    with pytest.raises(ResidentMerged):
        store.submit_code(code(4, MID_B)).result()
    with pytest.raises(ResidentMerged):
        store.add_identifier(identifier(5, MID_B, primary=False)).result()
    with pytest.raises(Conflict):
        store.merge_residents(survivor=MID_A, merged=MID_A, at=NOW).result()


def test_renewal_supersedes_atomically(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.submit_code(code(0)).result()
    store.submit_code(code(1), supersedes=CodeRef("33", KID, 0)).result()
    old = store.get_code(CodeRef("33", KID, 0))
    assert old.revocation_reason is RevocationReason.SUPERSEDED
    with pytest.raises(CodeNotRenewable):  # already superseded
        store.submit_code(code(2), supersedes=CodeRef("33", KID, 0)).result()
    with pytest.raises(CodeNotRenewable):  # someone else's code
        store.submit_code(code(3, MID_B), supersedes=CodeRef("33", KID, 1)).result()
    assert store.get_code(CodeRef("33", KID, 2)) is None and store.get_code(CodeRef("33", KID, 3)) is None
    assert store.get_code(CodeRef("33", KID, 1)).revoked_at is None
    assert store.next_serial("33", KID) == 2


def test_revoke_keeps_the_first_reason_and_time(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    first = store.revoke_code(CodeRef("33", KID, 0), reason=RevocationReason.FRAUD, at=NOW).result()
    later = NOW + dt.timedelta(hours=1)
    second = store.revoke_code(CodeRef("33", KID, 0), reason=RevocationReason.OTHER, at=later).result()
    assert first == second and second.revocation_reason is RevocationReason.FRAUD and second.revoked_at == NOW
    assert store.revoke_code(CodeRef("33", KID, 9), reason=RevocationReason.FRAUD, at=NOW).result() is None


def test_revoke_resident_codes_revokes_only_live_ones(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    store.submit_code(code(1, expires=NOW)).result()  # expires exactly now: not live
    store.submit_code(code(2)).result()
    store.revoke_code(CodeRef("33", KID, 2), reason=RevocationReason.FRAUD, at=NOW).result()
    at = NOW + dt.timedelta(microseconds=999_999)  # stored to the second
    assert store.revoke_resident_codes(MID_A, reason=RevocationReason.DECEASED, at=at).result() == 1
    assert store.get_code(CodeRef("33", KID, 0)).revoked_at == NOW
    assert store.revoke_resident_codes(MID_A, reason=RevocationReason.DECEASED, at=at).result() == 0


def test_serials_past_64_bit_signed_name_no_code_and_fail_only_their_own_row(store):  # noqa: F811 - the imported fixture
    # Refs may name serials up to 2**64 - 1; both databases keep 64-bit signed integers.
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    huge = CodeRef("33", KID, 2**64 - 1)
    assert store.get_code(huge) is None
    assert store.revoke_code(huge, reason=RevocationReason.FRAUD, at=NOW).result() is None
    batch = [store.submit_code(code(2**63)), store.submit_code(code(1))]
    with pytest.raises(WriteFailed):  # a value the database cannot hold fails its own row only
        batch[0].result()
    batch[1].result()
    assert store.get_code(CodeRef("33", KID, 1)) is not None


# --------------------------------------------------------------------------- channels and challenges (issue 13)

PHONE = Channel.PHONE
CHALLENGE = bytes(range(32))


def live(store, mid: str = MID_A) -> list[tuple[int, Channel]]:  # noqa: F811 - the imported fixture
    return [(r.serial, r.channel) for r in store.codes_of(mid) if r.revoked_at is None]


def test_replacing_a_channel_supersedes_only_that_residents_live_codes_of_that_channel(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.submit_code(code(0)).result()  # static
    store.submit_code(code(1, channel=PHONE)).result()
    store.submit_code(code(2, MID_B)).result()  # another resident's static
    store.submit_code(code(3, expires=NOW)).result()  # expired: left alone
    store.submit_code(code(4), replace_channel=True).result()
    assert live(store) == [(1, PHONE), (3, Channel.STATIC), (4, Channel.STATIC)]
    assert store.get_code(CodeRef("33", KID, 0)).revocation_reason is RevocationReason.SUPERSEDED
    store.submit_code(code(5, channel=PHONE), replace_channel=True).result()
    assert live(store) == [(3, Channel.STATIC), (4, Channel.STATIC), (5, PHONE)]
    assert live(store, MID_B) == [(2, Channel.STATIC)]
    assert store.get_code(CodeRef("33", KID, 5)).channel is PHONE  # the channel is stored


def test_two_replacements_of_one_channel_in_one_batch_leave_the_later_one_live(store, backend):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0)).result()
    with backend.write_lock_held():
        blocker = store.submit_code(code(1, MID_A, channel=PHONE))
        wait_for_queue(store, 0)
        first = store.submit_code(code(2), replace_channel=True)
        second = store.submit_code(code(3), replace_channel=True)
    assert blocker.result(timeout=30) is None and first.result(timeout=30) is None and second.result() is None
    assert live(store) == [(1, PHONE), (3, Channel.STATIC)]


def test_a_refused_replacement_revokes_nothing(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.submit_code(code(0, key="k-1")).result()
    with pytest.raises(DuplicateIdempotencyKey):
        store.submit_code(code(1, key="k-1"), replace_channel=True).result()
    assert live(store) == [(0, Channel.STATIC)]


def challenge(mid: str = MID_A, *, caller: str = "app", expires: dt.datetime | None = None,
              value: bytes = CHALLENGE) -> ChallengeRecord:
    return ChallengeRecord(value, mid, caller, NOW, expires or NOW + dt.timedelta(minutes=5))


def test_a_challenge_is_consumed_with_its_code_once(store):  # noqa: F811 - the imported fixture
    store.create_resident(resident(), []).result()
    store.create_challenge(challenge()).result()
    assert store.get_challenge(CHALLENGE).used_at is None
    use = ChallengeUse(CHALLENGE, MID_A, "app")
    store.submit_code(code(0, channel=PHONE), replace_channel=True, challenge=use).result()
    assert store.get_challenge(CHALLENGE).used_at == NOW
    with pytest.raises(ChallengeRefused) as refused:  # reused: nothing stored
        store.submit_code(code(1, channel=PHONE), replace_channel=True, challenge=use).result()
    assert refused.value.violations[0].field == "challenge"
    assert live(store) == [(0, PHONE)] and store.get_code(CodeRef("33", KID, 1)) is None


@pytest.mark.parametrize("use, at", [
    pytest.param(ChallengeUse(CHALLENGE, MID_B, "app"), NOW, id="other_resident"),
    pytest.param(ChallengeUse(CHALLENGE, MID_A, "other-app"), NOW, id="other_caller"),
    pytest.param(ChallengeUse(bytes(32), MID_A, "app"), NOW, id="unknown"),
    pytest.param(ChallengeUse(CHALLENGE, MID_A, "app"), NOW + dt.timedelta(minutes=5), id="expired"),
])
def test_an_unusable_challenge_refuses_its_code_and_stays_unused(store, use, at):  # noqa: F811 - the imported fixture
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.create_challenge(challenge()).result()
    record = CodeRecord("33", KID, 0, use.main_index_id, at, at + dt.timedelta(days=7), "EHC1:T", use.caller,
                        channel=PHONE)
    with pytest.raises(ChallengeRefused):
        store.submit_code(record, replace_channel=True, challenge=use).result()
    assert store.get_code(CodeRef("33", KID, 0)) is None and store.get_challenge(CHALLENGE).used_at is None
    assert store.consume_challenge(use, at=at).result() is False


def test_consume_challenge_spends_it_once_and_challenges_survive_a_reopen(backend):
    with backend.open() as s:
        s.create_resident(resident(), []).result()
        s.create_challenge(challenge()).result()
    with backend.open() as s:
        use = ChallengeUse(CHALLENGE, MID_A, "app")
        assert s.consume_challenge(use, at=NOW).result() is True
    with backend.open() as s:
        assert s.consume_challenge(use, at=NOW).result() is False
        assert s.get_challenge(CHALLENGE).used_at == NOW


def test_challenges_need_an_unmerged_resident_and_expired_ones_are_forgotten(store):  # noqa: F811 - the imported fixture
    with pytest.raises(ResidentNotFound):
        store.create_challenge(challenge()).result()
    store.create_resident(resident(MID_A), []).result()
    store.create_resident(resident(MID_B), []).result()
    store.create_challenge(challenge(expires=NOW + dt.timedelta(seconds=1))).result()
    later = ChallengeRecord(bytes(32), MID_A, "app", NOW + dt.timedelta(minutes=1), NOW + dt.timedelta(minutes=6))
    store.create_challenge(later).result()
    assert store.get_challenge(CHALLENGE) is None and store.get_challenge(bytes(32)) is not None
    store.merge_residents(survivor=MID_A, merged=MID_B, at=NOW).result()
    with pytest.raises(ResidentMerged):
        store.create_challenge(challenge(MID_B, value=b"m" * 32)).result()
