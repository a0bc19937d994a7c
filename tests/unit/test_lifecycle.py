"""The key lifecycle (keys/lifecycle.py), pure: time is a parameter, keys live in memory.

* a year of scheduled rotation, codes signed at and around every rotation
  instant, each verified with ``healthcode.verify`` against ``trusted_keys``:
  when issued, by a verifier whose trust data is ``lead_time`` old, and near
  the end of the code's validity;
* compromise from T, with both compromise policies;
* the code cap: early planning, the cut-short active key, the signer's hard cap;
* invalid transitions and broken invariants, one table row each;
* the JSON form.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json

import pytest

import healthcode as hc
from healthcode import Algorithm, CompromisePolicy, Keyring, KeyStatus, Reason
from keys.errors import (
    CodeCapReached,
    InvalidKeySet,
    KeyManagementError,
    KeyNotFound,
    KeyReason,
    NoActiveKey,
    PolicyViolation,
)
from keys.keystore.base import KeyHandle, Keystore
from keys.keystore.files import FileKeySigner
from keys.lifecycle import PlanReason, ProvinceKeySet
from keys.managed_key import KeyState, ManagedKey, RotationPolicy
from keys.rotating_signer import RotatingSigner

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 1, 1, tzinfo=UTC)
DAY = dt.timedelta(days=1)
SECOND = dt.timedelta(seconds=1)
POLICY = RotationPolicy()
SUBJECT = hc.main_index_id_from_bytes(bytes(range(16)))


class MemoryKeystore(Keystore):
    """Deterministic software keys in a dict: the keystore seam, without files or an HSM."""

    backend = "memory"

    def __init__(self) -> None:
        self.keys: dict[str, hc.SigningKey] = {}
        self.loads = 0

    def generate(self, algorithm, *, label):
        secret = hashlib.sha256(f"lifecycle test {label} {len(self.keys)}".encode()).digest()
        key = hc.signing_key_from_private_bytes(Algorithm(algorithm), secret)
        kid = key.public_key().key_id()
        handle = KeyHandle(backend=self.backend, id=kid.hex(), kid=kid, algorithm=key.algorithm, label=label)
        self.keys[handle.id] = key
        return handle

    def load_signer(self, handle):
        self.loads += 1
        return FileKeySigner(self.keys[self._check_handle(handle).id], handle)

    def public_key(self, handle):
        return self.keys[handle.id].public_key()

    def list(self):
        return ()

    def destroy(self, handle):
        del self.keys[handle.id]


def sign(store: MemoryKeystore, key: ManagedKey, at: dt.datetime, serial: int = 1,
         validity: dt.timedelta = POLICY.max_code_validity) -> str:
    claims = hc.CodeClaims(province="33", subject=SUBJECT, serial=serial, issued_at=at, expires_at=at + validity)
    return hc.sign_code(claims, store.load_signer(key.handle))


def add(ks: ProvinceKeySet, store: MemoryKeystore, *, use_from, now, use_until=None, label="k",
        algorithm=Algorithm.ES256) -> tuple[ProvinceKeySet, KeyHandle]:
    handle = store.generate(algorithm, label=label)
    ks = ks.add_prepublished(store.public_key(handle), handle=handle, use_from=use_from, use_until=use_until, now=now)
    return ks, handle


def reason_of(code: str, ks: ProvinceKeySet, *, now: dt.datetime, trust_at: dt.datetime | None = None):
    """None if valid, else the refusal reason, verifying with ``ks.trusted_keys(trust_at or now)``."""
    result = hc.check(code, Keyring(ks.trusted_keys(trust_at or now)), now=now)
    return None if result.valid else result.reason


# --------------------------------------------------------------------------- a year of rotation


def test_scheduled_rotation_over_a_year_with_codes_across_every_rotation():
    store = MemoryKeystore()
    ks = ProvinceKeySet("33", POLICY)
    published: dict[bytes, dt.datetime] = {}
    use_from: dict[bytes, dt.datetime] = {}
    history: list[ProvinceKeySet] = []  # the key set as it stood on each simulated day
    issued: list[tuple[str, dt.datetime, bytes]] = []
    for day in range(366):
        now = T0 + day * DAY
        plan = ks.plan_next(now)
        if plan is not None:
            assert plan.reason is (PlanReason.NO_SIGNING_KEY if day == 0 else PlanReason.SCHEDULED)
            ks, handle = add(ks, store, use_from=plan.use_from, use_until=plan.use_until, now=now, label=f"d{day}")
            published[handle.kid], use_from[handle.kid] = now, plan.use_from
        ks = ks.activate_due(now).expire_due(now)
        assert ks.plan_next(now) is None  # one plan, then nothing until the next is due
        assert len(ks.keys) <= 3  # previous (verifying), active, next (pre-published)
        history.append(ks)
        # Codes just before midnight (under yesterday's key set) and at midnight and noon under today's.
        moments = [now, now + 12 * 3600 * SECOND] + ([now - SECOND] if day else [])
        for at in moments:
            owner = history[(at - T0) // DAY]
            key = owner.signing_key_at(at)
            issued.append((sign(store, key, at), at, key.kid))

    kids = list(published)
    assert len(kids) == 5  # 366 days of 90-day keys
    rotations = [T0 + 90 * i * DAY for i in range(1, 5)]
    for i, instant in enumerate(rotations):
        # the rotation instant itself belongs to the new key, the second before to the old
        assert history[(instant - T0) // DAY].signing_key_at(instant).kid == kids[i + 1]
        assert history[(instant - T0) // DAY - 1].signing_key_at(instant - SECOND).kid == kids[i]
    for kid in kids[1:]:  # pre-publication lead time respected (with the planning margin on top)
        assert use_from[kid] - published[kid] >= POLICY.lead_time + POLICY.plan_margin

    last = T0 + 365 * DAY
    for code, at, kid in issued:
        day = (at - T0) // DAY
        # (a) when issued, with the trust data of that moment
        assert reason_of(code, history[day], now=at) is None
        assert hc.verify(code, Keyring(history[day].trusted_keys(at)), now=at).kid == kid
        # (b) by an offline verifier whose last sync is lead_time old (it already had the key)
        synced = at - POLICY.lead_time
        if synced >= T0 + DAY:  # the very first key had to be used at once
            assert reason_of(code, history[(synced - T0) // DAY], now=at, trust_at=synced) is None
        # (c) one second before the code expires, with that moment's trust data (retired keys still verify)
        late = at + POLICY.max_code_validity - SECOND
        if late <= last:
            assert reason_of(code, history[(late - T0) // DAY], now=late) is None
            assert reason_of(code, history[(late - T0) // DAY], now=late + SECOND) is Reason.EXPIRED


def test_a_prepublished_key_is_trusted_but_cannot_sign_before_its_use():
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    ks, second = add(ks, store, use_from=T0 + 90 * DAY, now=T0 + 70 * DAY)
    now = T0 + 80 * DAY
    trusted = {k.kid: k for k in ks.trusted_keys(now)}
    assert trusted[second.kid].status is KeyStatus.ACTIVE and trusted[second.kid].use_from == T0 + 90 * DAY
    assert ks.find(second.kid).state_at(now) is KeyState.PREPUBLISHED
    assert ks.signing_key_at(now).kid == first.kid
    early = sign(store, ks.find(second.kid), now)
    assert reason_of(early, ks, now=now) is Reason.KEY_NOT_VALID_AT_ISSUANCE


def test_the_next_key_signs_at_its_use_from_without_activate_due():
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    ks, second = add(ks, store, use_from=T0 + 90 * DAY, now=T0 + 70 * DAY)
    assert ks.signing_key_at(T0 + 90 * DAY - SECOND).kid == first.kid
    assert ks.signing_key_at(T0 + 90 * DAY).kid == second.kid  # status still "prepublished"
    assert ks.find(second.kid).status is KeyState.PREPUBLISHED
    updated = ks.activate_due(T0 + 90 * DAY)
    assert [k.status for k in updated.keys] == [KeyState.RETIRED, KeyState.ACTIVE]
    assert updated.revision == ks.revision + 1 and updated.activate_due(T0 + 90 * DAY) is updated


def test_no_signing_key_names_the_next_one():
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0 + 10 * DAY, now=T0)
    with pytest.raises(NoActiveKey, match=f"key {first.kid.hex()} signs from 2026-01-11T00:00:00Z") as info:
        ks.signing_key_at(T0)
    assert info.value.reason is KeyReason.NO_ACTIVE_KEY
    plan = ks.plan_next(T0)  # a bridge until the scheduled key
    assert (plan.reason, plan.use_from, plan.use_until) == (PlanReason.NO_SIGNING_KEY, T0, T0 + 10 * DAY)


def test_expired_keys_are_dropped_after_verify_until_and_listed_for_destruction():
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    ks, _ = add(ks, store, use_from=T0 + 90 * DAY, now=T0 + 70 * DAY)
    verify_until = ks.find(first.kid).verify_until
    assert verify_until == T0 + 97 * DAY
    assert ks.expire_due(verify_until) is ks
    assert [k.kid for k in ks.due_to_expire(verify_until + SECOND)] == [first.kid]
    later = ks.expire_due(verify_until + SECOND)
    assert first.kid not in {k.kid for k in later.keys} and later.revision == ks.revision + 1
    assert first.kid not in {k.kid for k in ks.trusted_keys(verify_until + SECOND)}


# --------------------------------------------------------------------------- compromise


COMPROMISE = [
    # (name, policy, code issued at (days after T0), reason at a verifier after the marking)
    ("before-T-still-valid", CompromisePolicy.REJECT_FROM_COMPROMISE, 9, None),
    ("at-T-refused", CompromisePolicy.REJECT_FROM_COMPROMISE, 10, Reason.KEY_COMPROMISED),
    ("after-T-refused", CompromisePolicy.REJECT_FROM_COMPROMISE, 11, Reason.KEY_COMPROMISED),
    ("reject-all-before-T", CompromisePolicy.REJECT_ALL, 9, Reason.KEY_COMPROMISED),
]


@pytest.mark.parametrize("name, policy, issued_day, expected", COMPROMISE, ids=[c[0] for c in COMPROMISE])
def test_compromise_from_t(name, policy, issued_day, expected):
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    at = T0 + issued_day * DAY
    code = sign(store, ks.signing_key_at(at), at)
    assert reason_of(code, ks, now=at) is None
    since, now = T0 + 10 * DAY, T0 + 11 * DAY + SECOND
    marked = ks.mark_compromised(first.kid, since, policy)
    key = marked.find(first.kid)
    assert (key.status, key.compromised_since, key.use_until) == (KeyState.COMPROMISED, since, since)
    trusted = marked.trusted_keys(now)[0]
    assert (trusted.status, trusted.compromised_since, trusted.compromise_policy) == (
        KeyStatus.COMPROMISED, since, policy)
    assert reason_of(code, marked, now=now) is expected
    # the compromised key never signs again, and the plan is an immediate replacement
    with pytest.raises(NoActiveKey):
        marked.signing_key_at(now)
    plan = marked.plan_next(now)
    assert (plan.reason, plan.use_from) == (PlanReason.NO_SIGNING_KEY, now.replace(microsecond=0))
    replaced, second = add(marked, store, use_from=plan.use_from, use_until=plan.use_until, now=now)
    assert replaced.signing_key_at(now).kid == second.kid  # short notice allowed: nothing else signs
    fresh = sign(store, replaced.signing_key_at(now), now)
    assert reason_of(fresh, replaced, now=now) is None


def test_compromise_of_a_prepublished_key():
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    ks, second = add(ks, store, use_from=T0 + 90 * DAY, now=T0 + 70 * DAY)
    ks = ks.mark_compromised(second.kid, T0 + 71 * DAY)
    key = ks.find(second.kid)
    assert key.use_until == key.use_from  # it will never sign
    with pytest.raises(NoActiveKey):
        ks.signing_key_at(T0 + 90 * DAY)
    plan = ks.plan_next(T0 + 80 * DAY)  # a successor is due again, at the same instant
    assert (plan.reason, plan.use_from) == (PlanReason.SCHEDULED, T0 + 90 * DAY)
    ks, third = add(ks, store, use_from=plan.use_from, now=T0 + 80 * DAY)
    assert ks.signing_key_at(T0 + 90 * DAY).kid == third.kid


# --------------------------------------------------------------------------- the code cap


def test_nearing_the_cap_plans_an_early_key_and_cuts_the_active_one_short():
    policy = RotationPolicy(max_codes_per_key=1000)
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33", policy), store, use_from=T0, now=T0)
    now = T0 + 20 * DAY
    assert ks.plan_next(now, codes_signed={first.kid: 799}) is None
    plan = ks.plan_next(now, codes_signed={first.kid: 800})
    assert (plan.reason, plan.use_from, plan.replaces) == (PlanReason.CODE_CAP, now + policy.lead_time, first.kid)
    recorded = ks.with_codes_signed({first.kid: 800})
    assert recorded.find(first.kid).codes_signed == 800 and recorded.plan_next(now) == plan
    ks, second = add(ks, store, use_from=plan.use_from, use_until=plan.use_until, now=now)
    old = ks.find(first.kid)
    assert old.use_until == now + policy.lead_time  # cut short at the new key's start
    assert old.verify_until == old.use_until + policy.max_code_validity
    assert ks.signing_key_at(plan.use_from - SECOND).kid == first.kid
    assert ks.signing_key_at(plan.use_from).kid == second.kid


@pytest.mark.parametrize(
    "name, recorded, reported, expected",
    [
        ("a higher count is recorded", 5, 9, 9),
        ("a lower count never lowers it", 9, 5, 9),
        ("an equal count changes nothing", 9, 9, 9),
    ],
)
def test_recording_codes_signed_only_raises_counts_and_keeps_the_revision(name, recorded, reported, expected):
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33", POLICY), store, use_from=T0, now=T0)
    ks = dataclasses.replace(ks, keys=(dataclasses.replace(ks.find(first.kid), codes_signed=recorded),))
    after = ks.with_codes_signed({first.kid: reported, b"unknown kid": 10**9})
    assert after.find(first.kid).codes_signed == expected
    assert after.revision == ks.revision  # counts are merged by maximum: no revision to guard them
    assert (after is ks) is (expected == recorded)


def test_the_rotating_signer_enforces_the_cap_and_says_what_comes_next():
    policy = RotationPolicy(max_codes_per_key=3)
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33", policy), store, use_from=T0, now=T0)
    rotating = RotatingSigner(store, ks, codes_signed=lambda kid: 1)  # one code already in the store
    assert store.loads == 1  # preloaded
    for _ in range(2):
        assert rotating.signer_for(T0 + DAY).kid == first.kid
    with pytest.raises(CodeCapReached, match="no next key is pre-published: rotate now") as info:
        rotating.signer_for(T0 + DAY)
    assert info.value.reason is KeyReason.CODE_CAP_REACHED
    ks, second = add(ks, store, use_from=T0 + 8 * DAY, now=T0 + DAY)
    rotating.update(ks)
    with pytest.raises(CodeCapReached, match=f"the next key {second.kid.hex()} signs from 2026-01-09T00:00:00Z"):
        rotating.signer_for(T0 + 2 * DAY)
    assert rotating.signer_for(T0 + 8 * DAY).kid == second.kid
    assert rotating.codes_signed() == {first.kid: 3, second.kid: 2}  # the second seeded with 1
    assert store.loads == 2  # the first signer was reused, the second loaded once


def test_the_rotating_signer_refuses_a_key_set_that_goes_back_or_changes_province():
    store = MemoryKeystore()
    ks, _ = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    rotating = RotatingSigner(store, ks)
    with pytest.raises(InvalidKeySet, match="went back from revision 1 to 0"):
        rotating.update(dataclasses.replace(ks, revision=0))
    with pytest.raises(InvalidKeySet, match="province 11's, not 33's"):
        rotating.update(ProvinceKeySet("11", revision=5))
    assert rotating.key_set is ks


# --------------------------------------------------------------------------- invalid transitions


def _base():
    store = MemoryKeystore()
    ks, first = add(ProvinceKeySet("33"), store, use_from=T0, now=T0)
    ks, second = add(ks, store, use_from=T0 + 90 * DAY, now=T0 + 70 * DAY)
    return store, ks, first, second


def _add_other(use_from, now, use_until=None):
    def change(store, ks, first, second):
        return add(ks, store, use_from=use_from, now=now, use_until=use_until)
    return change


REFUSED = [
    ("retire-prepublished", lambda s, ks, a, b: ks.retire(b.kid, T0 + 80 * DAY), "is prepublished"),
    ("retire-retired", lambda s, ks, a, b: ks.retire(a.kid, T0 + 10 * DAY).retire(a.kid, T0 + 11 * DAY),
     "is retired"),
    ("retire-compromised", lambda s, ks, a, b: ks.mark_compromised(a.kid, T0).retire(a.kid, T0 + DAY),
     "is compromised"),
    ("retire-unknown", lambda s, ks, a, b: ks.retire(b"\x01" * 8, T0), "has no key 0101"),
    ("compromise-later", lambda s, ks, a, b: ks.mark_compromised(a.kid, T0 + DAY).mark_compromised(a.kid, T0 + 2 * DAY),
     "may only start earlier"),
    ("compromise-softer", lambda s, ks, a, b: ks.mark_compromised(a.kid, T0 + DAY, CompromisePolicy.REJECT_ALL)
     .mark_compromised(a.kid, T0 + DAY), "or reject more"),
    ("add-duplicate-kid", lambda s, ks, a, b: ks.add_prepublished(s.public_key(a), handle=a, use_from=T0 + 200 * DAY,
                                                                   now=T0), "already has a key"),
    ("add-in-the-past", _add_other(T0 + 10 * DAY, T0 + 11 * DAY), "in the past"),
    ("add-short-notice-over-a-signing-key", _add_other(T0 + 20 * DAY, T0 + 15 * DAY), "lead time is 7 d"),
    ("add-overlapping-next-key", _add_other(T0 + 80 * DAY, T0 + 30 * DAY), "overlap"),
    ("add-longer-than-usage", _add_other(T0 + 180 * DAY, T0, T0 + 271 * DAY), "at most the usage period"),
    ("add-empty-window", _add_other(T0 + 180 * DAY, T0, T0 + 180 * DAY), "more than 0"),
    ("naive-time", lambda s, ks, a, b: ks.retire(a.kid, dt.datetime(2026, 1, 2)), "timezone-aware"),
]


@pytest.mark.parametrize("name, change, message", REFUSED, ids=[r[0] for r in REFUSED])
def test_invalid_transitions_are_refused(name, change, message):
    store, ks, first, second = _base()
    with pytest.raises(KeyManagementError, match=message) as info:
        change(store, ks, first, second)
    expected = KeyNotFound if name == "retire-unknown" else PolicyViolation
    assert type(info.value) is expected and info.value.reason.value in ("policy_violation", "key_not_found")


def test_retire_ends_use_now_and_keeps_verifying_for_the_code_validity():
    store, ks, first, second = _base()
    now = T0 + 30 * DAY
    code = sign(store, ks.signing_key_at(now - SECOND), now - SECOND)
    retired = ks.retire(first.kid, now)
    key = retired.find(first.kid)
    assert (key.status, key.use_until, key.verify_until) == (KeyState.RETIRED, now, now + POLICY.max_code_validity)
    assert reason_of(code, retired, now=now + 6 * DAY) is None
    with pytest.raises(NoActiveKey):
        retired.signing_key_at(now)


def _key(store, use_from, use_until, verify_until, **kw):
    handle = store.generate(Algorithm.EDDSA, label=str(use_from))
    return ManagedKey(kid=handle.kid, public_key=store.public_key(handle), handle=handle, use_from=use_from,
                      use_until=use_until, verify_until=verify_until, **kw)


BROKEN = [
    ("overlapping-windows", lambda s: [_key(s, T0, T0 + 10 * DAY, T0 + 17 * DAY),
                                       _key(s, T0 + 9 * DAY, T0 + 20 * DAY, T0 + 27 * DAY)], "overlap"),
    ("verify-too-short", lambda s: [_key(s, T0, T0 + 10 * DAY, T0 + 16 * DAY)], r"use_until \+ max_code_validity"),
    ("windows-reversed", lambda s: [_key(s, T0 + DAY, T0, T0 + 10 * DAY)], "use_from <= use_until"),
    ("compromised-without-time", lambda s: [_key(s, T0, T0 + DAY, T0 + 8 * DAY, status=KeyState.COMPROMISED)],
     "compromised_since"),
    ("time-without-compromise", lambda s: [_key(s, T0, T0 + DAY, T0 + 8 * DAY, compromised_since=T0)],
     "compromised_since"),
    ("expired-stored", lambda s: [_key(s, T0, T0 + DAY, T0 + 8 * DAY, status=KeyState.EXPIRED)], "dropped"),
    ("duplicate-kid", lambda s: (lambda k: [k, dataclasses.replace(k, use_from=T0 + 30 * DAY,
                                                                    use_until=T0 + 31 * DAY,
                                                                    verify_until=T0 + 38 * DAY)])(
        _key(s, T0, T0 + DAY, T0 + 8 * DAY)), "share a kid"),
]


@pytest.mark.parametrize("name, keys, message", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_invariants_are_refused_on_construction(name, keys, message):
    with pytest.raises(PolicyViolation, match=message):
        ProvinceKeySet("33", POLICY, keys(MemoryKeystore()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(usage_period=dt.timedelta(days=10)), "shorter than usage_period"),
    (dict(max_codes_per_key=0), "positive integer"),
    (dict(cap_plan_fraction=1.5), r"\(0, 1\]"),
    (dict(lead_time=dt.timedelta(seconds=-1)), "non-negative"),
], ids=["usage-too-short", "cap-zero", "fraction", "negative-lead"])
def test_bad_policies_are_refused(kwargs, message):
    with pytest.raises(PolicyViolation, match=message):
        RotationPolicy(**kwargs)


def test_times_are_floored_to_whole_seconds_in_utc():
    store = MemoryKeystore()
    beijing = dt.timezone(dt.timedelta(hours=8))
    ks, first = add(ProvinceKeySet("33"), store, use_from=dt.datetime(2026, 1, 1, 8, 0, 0, 900_000, tzinfo=beijing),
                    now=dt.datetime(2026, 1, 1, 8, tzinfo=beijing))
    assert ks.find(first.kid).use_from == T0 and ks.find(first.kid).use_from.tzinfo is UTC


# --------------------------------------------------------------------------- JSON


def test_json_round_trip_keeps_everything():
    store, ks, first, second = _base()
    ks = ks.mark_compromised(first.kid, T0 + 5 * DAY, CompromisePolicy.REJECT_ALL).with_codes_signed({second.kid: 7})
    ks = dataclasses.replace(ks, policy=RotationPolicy(max_codes_per_key=1234, cap_plan_fraction=0.5))
    data = ks.to_bytes()
    again = ProvinceKeySet.from_bytes(data)
    assert again == ks and again.to_bytes() == data
    assert again.find(second.kid).handle == second and again.find(second.kid).codes_signed == 7
    document = json.loads(data)
    assert document["format"] == "healthcode-province-key-set" and document["revision"] == ks.revision
    assert document["keys"][0]["use_from"] == "2026-01-01T00:00:00Z"


def _mutated(mutate):
    store, ks, _, _ = _base()
    document = json.loads(ks.to_bytes())
    mutate(document)
    return json.dumps(document).encode()


BAD_JSON = [
    ("not-json", b"{", "not JSON"),
    ("wrong-format", _mutated(lambda d: d.update(format="other")), "not a healthcode-province-key-set"),
    ("unknown-field", _mutated(lambda d: d.update(extra=1)), "has exactly"),
    ("unknown-key-field", _mutated(lambda d: d["keys"][0].update(note="x")), "a key has exactly"),
    ("algorithm-mismatch", _mutated(lambda d: d["keys"][0].update(algorithm="EdDSA")), "does not match"),
    ("naive-time", _mutated(lambda d: d["keys"][0].update(use_from="2026-01-01T00:00:00")), "ending in Z"),
    ("overlap", _mutated(lambda d: d["keys"][1].update(use_from="2026-02-01T00:00:00Z")), "overlap"),
    ("too-big", b" " * (1024 * 1024 + 1), "over 1048576 bytes"),
]


@pytest.mark.parametrize("name, data, message", BAD_JSON, ids=[b[0] for b in BAD_JSON])
def test_malformed_key_sets_are_refused(name, data, message):
    with pytest.raises(InvalidKeySet, match=message) as info:
        ProvinceKeySet.from_bytes(data)
    assert isinstance(info.value, KeyManagementError) and info.value.reason is KeyReason.INVALID_KEY_SET
