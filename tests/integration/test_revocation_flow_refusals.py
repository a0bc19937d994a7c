"""Revocations from the issuer to an offline verifier: refused data.

Attacks are played on the mirror (a file changed) or by a publisher misusing
the province's keys (replayed, gapped or rolled-back files, properly signed).
"""

from __future__ import annotations

import json

import pytest

from healthcode.revocation import (
    RevocationState,
    delta_target,
    encode_delta,
    snapshot_target,
)
from verifier.revocation_sync import DELTAS, KEPT, SNAPSHOT, UNCHANGED
from .revocation_flow_support import HOUR, MIN, NOW, World, answers, bulk, corrupt, expected
from .revocation_flow_support import issued, world  # noqa: F401 - fixtures


# ------------------------------------------------------------------ refused data


def test_tampered_files_on_the_mirror_are_refused_and_the_last_good_state_kept(world):  # noqa: F811 - the imported fixture
    codes, everyone, kid = world.codes, world.everyone, world.k1.kid
    revoked = bulk(world)
    world.revoke(*revoked)
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)

    # a changed delta on the mirror (deltas are unlisted: nothing but the result vouches for them):
    # refused, and the sync falls back to the snapshot
    first = codes[world.mids[0]][0]
    world.revoke(first)
    world.publish(NOW + HOUR)
    assert world.mirror_file(delta_target("33", kid, 1)).exists()
    corrupt(world.mirror_file(delta_target("33", kid, 1)))
    shard = client.refresh(NOW + HOUR + MIN).revocation.get("33", kid)
    assert shard.action == SNAPSHOT and shard.seq == 2 and "delta refused" in shard.detail
    assert answers(everyone, client, NOW + HOUR + MIN) == expected(everyone, revoked + [first])

    # delta and snapshot both changed: nothing new is accepted, the last good state stays
    second = codes[world.mids[1]][0]
    world.revoke(second)
    world.publish(NOW + 2 * HOUR)
    corrupt(world.mirror_file(delta_target("33", kid, 2)))
    corrupt(world.mirror_file(snapshot_target("33", kid)))
    result = client.refresh(NOW + 2 * HOUR + MIN)
    shard = result.revocation.get("33", kid)
    assert shard.action == KEPT and shard.seq == 2 and "snapshot refused" in shard.detail
    assert result.revocation.failed == (shard,) and result.complete  # the keys verified; revocation kept
    assert answers(everyone, client, NOW + 2 * HOUR + MIN) == expected(everyone, revoked + [first])

    # the mirror repaired: the one missing delta brings the shard up to date
    world.sync_mirror()
    shard = client.refresh(NOW + 2 * HOUR + 2 * MIN).revocation.get("33", kid)
    assert (shard.action, shard.seq_before, shard.seq) == (DELTAS, 2, 3)
    assert answers(everyone, client, NOW + 2 * HOUR + 2 * MIN) == expected(everyone, revoked + [first, second])


def _craft(world: World, case: str, kid: bytes, saved: dict[str, bytes]) -> tuple[dict[str, bytes], dict[str, bytes]]:  # noqa: F811 - the imported fixture
    """Wrong revocation files for ``case`` (the verifier holds seq 2, seq 3 is out): deltas as a
    mirror could serve them (unlisted: no key needed), snapshots properly signed with the province's
    keys (a publisher misusing them). Returns (signed, served by the mirror)."""
    d1, d2 = delta_target("33", kid, 1), delta_target("33", kid, 2)
    snap = snapshot_target("33", kid)
    state3 = RevocationState.from_snapshot(saved["snapshot-3"])
    unrevoked = next(s for s in range(state3.universe) if not state3.is_revoked(s))
    if case == "replayed-delta":  # delta 1->2 again, under the name of delta 2->3
        return {}, {d2: saved[d1]}
    if case == "gap":  # delta 3->4 under the name of delta 2->3
        state4 = RevocationState("33", kid, seq=4, universe=state3.universe,
                                 serials=sorted({*state3.serials(), unrevoked}))
        return {}, {d2: encode_delta(state3, state4)}
    if case == "forged-delta":  # a well-formed delta 2->3 to another state than the listed snapshot
        state2 = RevocationState.from_snapshot(saved["snapshot-2"])
        other = RevocationState("33", kid, seq=3, universe=state3.universe,
                                serials=sorted({*state2.serials(), unrevoked}))
        return {}, {d2: encode_delta(state2, other)}
    if case == "rolled-back-snapshot":  # the seq 1 snapshot again
        return {snap: saved["snapshot-1"]}, {}
    if case == "forked-snapshot":  # another state at the held seq 2
        state2 = RevocationState.from_snapshot(saved["snapshot-2"])
        fork = RevocationState("33", kid, seq=2, universe=state2.universe,
                               serials=sorted({*state2.serials(), unrevoked}))
        return {snap: fork.to_snapshot()}, {}
    if case == "lifted-revocation":  # seq 3 without a serial revoked before
        lifted = RevocationState("33", kid, seq=3, universe=state3.universe, serials=state3.serials()[1:])
        return {snap: lifted.to_snapshot()}, {}
    raise AssertionError(case)


@pytest.mark.parametrize("case, action, reason", [
    ("replayed-delta", SNAPSHOT, "replay"),
    ("gap", SNAPSHOT, "gap"),
    ("forged-delta", SNAPSHOT, "do not hash to the listed snapshot"),
    ("rolled-back-snapshot", KEPT, "rollback"),
    ("forked-snapshot", KEPT, "disagrees"),
    ("lifted-revocation", KEPT, "lifts a revocation"),
])
def test_replayed_gapped_and_rolled_back_files_are_refused(world, case, action, reason):  # noqa: F811 - the imported fixture
    codes, kid = world.codes, world.k1.kid
    checked = world.everyone[:1000]  # serials 0-999: the rounds below revoke among them
    saved: dict[str, bytes] = {}
    revoked = []
    client = world.verifier("hospital")
    rounds = (bulk(world), [codes[mid][0] for mid in world.mids[:2]], [codes[world.mids[2]][0]])
    for seq, batch in enumerate(rounds, start=1):
        world.revoke(*batch)
        revoked += batch
        world.publish(NOW + seq * HOUR)
        saved[f"snapshot-{seq}"] = world.published(snapshot_target("33", kid))
        if seq > 1:
            saved[delta_target("33", kid, seq - 1)] = world.published(delta_target("33", kid, seq - 1))
        if seq < 3:
            assert client.refresh(NOW + seq * HOUR + MIN).revocation.get("33", kid).seq == seq
    signed, served = _craft(world, case, kid, saved)
    if signed:
        world.sign_as_province(signed, NOW + 3 * HOUR + MIN)
    for target, data in served.items():
        world.mirror_file(target).write_bytes(data)
    shard = client.refresh(NOW + 3 * HOUR + 2 * MIN).revocation.get("33", kid)
    assert shard.action == action and reason in shard.detail
    if action == SNAPSHOT:  # the bad delta was refused; the signed snapshot was the way forward
        assert shard.seq == 3 and "delta refused" in shard.detail
        assert answers(checked, client, NOW + 3 * HOUR + 2 * MIN) == expected(checked, revoked)
    else:  # nothing acceptable: the held seq 2 stays
        assert shard.seq == 2
        assert answers(checked, client, NOW + 3 * HOUR + 2 * MIN) == expected(checked, revoked[:-1])
    # the job's next push puts the published files back (it reconciles what the role lists and
    # what the repository serves); the mirror copies the repository again
    run = world.publish(NOW + 4 * HOUR)
    assert run.publications == () and (run.push is not None) == bool(signed)
    shard = client.refresh(NOW + 4 * HOUR + MIN).revocation.get("33", kid)
    assert shard.seq == 3 and shard.action in (UNCHANGED, DELTAS)
    assert answers(checked, client, NOW + 4 * HOUR + MIN) == expected(checked, revoked)


@pytest.mark.parametrize("case", ["missing", "oversized"])
def test_a_missing_or_oversized_unlisted_delta_costs_at_most_the_snapshot(world, case):  # noqa: F811 - the imported fixture
    """Deltas are fetched unverified, so what a mirror can make a verifier download is capped: the
    chain may weigh less than the snapshot it replaces, then the (listed, verified) snapshot."""
    kid = world.k1.kid
    revoked = bulk(world)
    world.revoke(*revoked)
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    first = world.codes[world.mids[0]][0]
    world.revoke(first)
    world.publish(NOW + HOUR)
    delta = world.mirror_file(delta_target("33", kid, 1))
    snapshot_bytes = len(world.published(snapshot_target("33", kid)))
    if case == "missing":
        delta.unlink()
    else:
        delta.write_bytes(b"\0" * (50 * snapshot_bytes))
    shard = client.refresh(NOW + HOUR + MIN).revocation.get("33", kid)
    assert shard.action == SNAPSHOT and shard.seq == 2
    assert "before the listed 2" in shard.detail
    assert shard.bytes_transferred <= 2 * snapshot_bytes  # the capped attempt, then the snapshot
    assert answers(world.everyone[:1000], client, NOW + HOUR + MIN) == expected(world.everyone[:1000],
                                                                                revoked + [first])


def test_the_province_role_lists_one_target_per_shard_however_many_deltas(world):  # noqa: F811 - the imported fixture
    kid = world.k1.kid
    world.revoke(*bulk(world))
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    role_sizes = set()
    for hour in range(1, 6):
        world.revoke(world.codes[world.mids[hour]][0])
        run = world.publish(NOW + hour * HOUR)
        assert run.push.unlisted == (f"revocation/{kid.hex()}/delta-{hour:010d}.hcrd",)
        role = world.repo.province_targets("33")
        assert [p for p in role.targets if "/revocation/" in p] == [snapshot_target("33", kid)]
        assert role.targets[snapshot_target("33", kid)].custom == {"seq": hour + 1}
        role_sizes.add(len(json.dumps(role.to_dict()["targets"])))
        shard = client.refresh(NOW + hour * HOUR + MIN).revocation.get("33", kid)
        assert (shard.action, shard.seq, shard.files_transferred) == (DELTAS, hour + 1, 1)
    assert max(role_sizes) - min(role_sizes) <= 2  # the role does not grow with the deltas kept
    # served: the newest contiguous chain ending at the snapshot, lighter than the snapshot
    served = world.repo.unlisted("33", "revocation")
    first = 6 - len(served)
    assert sorted(served) == [f"revocation/{kid.hex()}/delta-{s:010d}.hcrd" for s in range(first, 6)]
    assert len(served) >= 2 and sum(map(len, served.values())) < len(world.published(snapshot_target("33", kid)))
    assert run.push.unlisted_removed == (() if first == 1 else (f"revocation/{kid.hex()}/delta-{first - 1:010d}.hcrd",))
