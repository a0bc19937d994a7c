"""Emergency rotation in the pure key lifecycle (keys/lifecycle.py): a new key signs now, when policy allows.

A province normally publishes a key ``lead_time`` (7 days) before it signs.
An emergency rotation starts the new key at once, cutting the signing key
short, only where the key set's policy says ``allow_emergency``; after a
compromise nothing signs, so a new key may start at once without it. Every
refusal names the real signing key, human durations and Beijing time.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

import healthcode as hc
from healthcode import Algorithm
from keys.errors import InvalidKeySet, PolicyViolation
from keys.lifecycle import ProvinceKeySet
from keys.managed_key import KeyState, RotationPolicy

UTC = dt.timezone.utc
T0 = dt.datetime(2030, 3, 1, 8, 0, tzinfo=UTC)  # 16:00 in Beijing
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)


def public(n: int) -> hc.VerificationKey:
    return hc.signing_key_from_private_bytes(Algorithm.ES256, bytes([n]) * 32).public_key()


def key_set(*, allow: bool) -> ProvinceKeySet:
    ks = ProvinceKeySet("33", RotationPolicy(allow_emergency=allow))
    return ks.add_prepublished(public(1), use_from=T0 - 10 * DAY, now=T0 - 10 * DAY)


def test_an_emergency_rotation_starts_the_new_key_now_and_cuts_the_old_one_short():
    ks = key_set(allow=True)
    old = ks.signing_key_at(T0)
    new = ks.add_prepublished(public(2), use_from=T0, now=T0, emergency=True)
    assert new.signing_key_at(T0).kid == public(2).key_id()
    cut = new.find(old.kid)
    assert cut.use_until == T0 and cut.verify_until == T0 + RotationPolicy().max_code_validity
    assert cut.state_at(T0) is KeyState.RETIRED and new.revision == ks.revision + 1


def test_an_emergency_rotation_is_refused_without_the_policy_naming_the_key_and_the_durations():
    ks = key_set(allow=False)
    old = ks.signing_key_at(T0)
    with pytest.raises(PolicyViolation) as caught:
        ks.add_prepublished(public(2), use_from=T0, now=T0, emergency=True)
    message = str(caught.value)
    assert message == (
        "policy_violation: emergency rotation refused: province 33's key policy does not allow it "
        "(healthcode-keys province key policy 33 --allow-emergency); "
        f"key {old.kid.hex()} signs until 2030-05-20 16:00 北京时间 (CST) (for 80 d more); "
        "a normal rotation signs from 2030-03-08 16:00 北京时间 (CST) at the earliest (the lead time of 7 d)")


def test_a_short_notice_rotation_without_emergency_names_the_signing_key_and_human_durations():
    ks = key_set(allow=True)  # allowed, but not asked for: the lead time holds
    old = ks.signing_key_at(T0)
    with pytest.raises(PolicyViolation) as caught:
        ks.add_prepublished(public(2), use_from=T0 + 2 * HOUR, now=T0)
    assert str(caught.value) == (
        f"policy_violation: a new key from 2030-03-01 18:00 北京时间 (CST) would replace the signing key "
        f"{old.kid.hex()} only 2 h after publication; the lead time is 7 d (from 2030-03-08 16:00 北京时间 (CST) "
        "at the earliest), or an emergency rotation where the policy allows it")


def test_after_a_compromise_a_new_key_starts_now_without_the_emergency_policy():
    ks = key_set(allow=False)
    old = ks.signing_key_at(T0)
    marked = ks.mark_compromised(old.kid, T0 - HOUR)
    for emergency in (False, True):  # nothing is cut short: the policy is not asked
        new = marked.add_prepublished(public(2), use_from=T0, now=T0, emergency=emergency)
        assert new.signing_key_at(T0).kid == public(2).key_id()


def test_the_policy_switch_is_a_revision_and_round_trips_in_json():
    ks = key_set(allow=False)
    assert b"allow_emergency" not in ks.to_bytes()  # key sets that never allowed it keep their bytes
    on = ks.with_emergency_rotation(True)
    assert on.revision == ks.revision + 1 and on.policy.allow_emergency
    assert on.with_emergency_rotation(True) is on
    again = ProvinceKeySet.from_bytes(on.to_bytes())
    assert again == on and b'"allow_emergency": true' in on.to_bytes()
    off = again.with_emergency_rotation(False)
    assert ProvinceKeySet.from_bytes(off.to_bytes()).policy.allow_emergency is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_malformed_policy_switch_is_refused(value):
    import json

    document = json.loads(key_set(allow=True).to_bytes())
    document["policy"]["allow_emergency"] = value
    with pytest.raises(InvalidKeySet, match="allow_emergency"):
        ProvinceKeySet.from_bytes(json.dumps(document).encode())
    with pytest.raises(PolicyViolation, match="allow_emergency"):
        dataclasses.replace(RotationPolicy(), allow_emergency=value)
