"""Revocations from the issuer to an offline verifier, for real: one publish, one refresh.

The world (issuer domain, revocation job, national trust repository, mirror,
verifiers) is built by revocation_flow_support.py. This module: the flow, and
a verifier offline and across key expiry. Refused data (attacks on the mirror,
or a publisher misusing the province's keys) is in
test_revocation_flow_refusals.py; the job's schedule, its configuration and
the serving issuer in test_revocation_flow_job.py.
"""

from __future__ import annotations

import hashlib
import logging
import time

import pytest

from healthcode.revocation import (
    RevocationState,
    delta_target,
    snapshot_target,
)
from issuer.model import RevocationReason
from verifier.revocation_sync import DELTAS, DROPPED, MISSING, SNAPSHOT, UNCHANGED, RevocationStore
from verifier.trustsync import MirrorUnavailable, TrustDataError
from .revocation_flow_support import DAY, HOUR, MIN, NOW, answers, bulk, corrupt, expected
from .revocation_flow_support import issued, world  # noqa: F401 - fixtures


# ------------------------------------------------------------------ the flow


def test_a_revoked_code_answers_revoked_after_one_publish_and_one_refresh(world):  # noqa: F811 - the imported fixture
    codes, everyone = world.codes, world.everyone
    alice, bob, dave, erin, carol = world.mids[:5]
    # RevokeCode for one code and for every code of a resident, a merge, and 600 single codes
    world.revoke(codes[alice][0])
    assert world.revoke_resident(bob) == 10
    assert world.merge(dave, erin) == 10
    spread = bulk(world)
    world.revoke(*spread, reason=RevocationReason.FRAUD)
    assert world.triggers == 1 + 1 + 1 + len(spread)  # every revoking call announced itself
    revoked = [codes[alice][0], *codes[bob], *codes[erin], *spread]

    # one publish: the job writes the shard's first snapshot and pushes it with the province's keys
    run = world.publish(NOW + MIN)
    (publication,) = run.publications
    assert (publication.kid, publication.seq, publication.revoked, publication.universe) == (
        world.k1.kid, 1, len(revoked), 3000)
    assert run.push is not None and run.push.published is not None  # snapshot + timestamp at once
    kid_dir = f"revocation/{world.k1.kid.hex()}"
    assert run.push.added == (f"{kid_dir}/snapshot.hcrs",)  # the delta from nothing weighs more: not listed

    # one refresh of a verifier that never synced
    client = world.verifier("hospital")
    result = client.refresh(NOW + 2 * MIN)
    shard = result.revocation.get("33", world.k1.kid)
    assert shard.action == SNAPSHOT and shard.seq == 1 and shard.added == len(revoked)
    assert result.revocation.get("33", world.old.kid).action == MISSING  # a key that signed nothing yet
    assert answers(everyone, client, NOW + 2 * MIN) == expected(everyone, revoked)
    late = world.verifier("late")
    assert late.refresh(NOW + 2 * MIN).revocation.get("33", world.k1.kid).seq == 1

    # the second round: two more revocations travel as one small delta
    snapshot_bytes = len(world.published(snapshot_target("33", world.k1.kid)))
    world.revoke(codes[carol][1], codes[alice][1])
    revoked += [codes[carol][1], codes[alice][1]]
    run = world.publish(NOW + HOUR)
    assert [p.added for p in run.publications] == [2]
    assert run.push.added == (f"{kid_dir}/snapshot.hcrs",)  # listed, with its seq
    assert run.push.unlisted == (f"{kid_dir}/delta-0000000001.hcrd",)  # served by name, not listed
    role = world.repo.province_targets("33")
    assert [p for p in role.targets if "/revocation/" in p] == [snapshot_target("33", world.k1.kid)]
    assert role.targets[snapshot_target("33", world.k1.kid)].custom == {"seq": 2}
    result = client.refresh(NOW + HOUR + MIN)
    shard = result.revocation.get("33", world.k1.kid)
    delta = world.published(delta_target("33", world.k1.kid, 1))
    assert (shard.action, shard.seq_before, shard.seq, shard.added) == (DELTAS, 1, 2, 2)
    assert (shard.bytes_transferred, shard.files_transferred) == (len(delta), 1)
    assert shard.bytes_transferred < 80 and snapshot_bytes > 300  # 70-byte header + 2 Rice-coded serials
    assert answers(everyone, client, NOW + HOUR + MIN) == expected(everyone, revoked)

    # a third round: the new delta is served beside the first; a verifier at seq 2 fetches only it
    world.revoke(codes[carol][2])
    revoked.append(codes[carol][2])
    run = world.publish(NOW + 2 * HOUR)
    assert run.push.added == (f"{kid_dir}/snapshot.hcrs",) and run.push.removed == ()
    assert run.push.unlisted == (f"{kid_dir}/delta-0000000002.hcrd",) and run.push.unlisted_removed == ()
    shard = client.refresh(NOW + 2 * HOUR + MIN).revocation.get("33", world.k1.kid)
    assert (shard.action, shard.seq, shard.files_transferred) == (DELTAS, 3, 1)
    shard = late.refresh(NOW + 2 * HOUR + MIN).revocation.get("33", world.k1.kid)  # last synced at seq 1
    assert (shard.action, shard.seq_before, shard.seq, shard.files_transferred) == (DELTAS, 1, 3, 2)

    # nothing new: nothing fetched for revocation
    world.publish(NOW + 3 * HOUR)
    result = client.refresh(NOW + 3 * HOUR + MIN)
    shard = result.revocation.get("33", world.k1.kid)
    assert (shard.action, shard.bytes_transferred) == (UNCHANGED, 0)
    assert result.revocation.bytes_transferred == 0
    assert answers(everyone, client, NOW + 3 * HOUR + MIN) == expected(everyone, revoked)


def test_renewal_supersedes_and_key_rotation_make_a_second_shard(world):  # noqa: F811 - the imported fixture
    mids, codes = world.mids, world.codes
    old_code = codes[mids[0]][0]
    world.current = world.old  # the province signs with its other key for a while
    renewed = world.run(world.ports_codes.renew_code(caller="test", ref=old_code.ref, idempotency_key=None, now=NOW))
    other = world.issue(mids[1:2], 1)[mids[1]][0]
    world.revoke(other)
    assert world.triggers == 2
    run = world.publish(NOW + MIN)
    assert {p.kid: p.revoked for p in run.publications} == {world.k1.kid: 1, world.old.kid: 1}
    client = world.verifier("hospital")
    result = client.refresh(NOW + 2 * MIN)
    assert {s.kid: s.action for s in result.revocation.shards} == {world.k1.kid: SNAPSHOT, world.old.kid: SNAPSHOT}
    checked = [*codes[mids[0]], *codes[mids[1]], renewed, other]
    assert answers(checked, client, NOW + 2 * MIN) == expected(checked, [old_code, other])


# ------------------------------------------------------------------ offline, expiry


def test_a_restarted_verifier_answers_the_same_offline(world, caplog):  # noqa: F811 - the imported fixture
    everyone = world.everyone
    revoked = bulk(world)
    world.revoke(*revoked)
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    client.refresh(NOW + 2 * MIN)
    online = answers(everyone, client, NOW + 2 * MIN)
    assert online == expected(everyone, revoked)

    # a restart with no mirror at all: everything from the verified cache
    offline = world.verifier("hospital", source=world.tmp / "no-such-mirror")
    with pytest.raises(MirrorUnavailable):
        offline.refresh(NOW + 3 * MIN)
    started = time.perf_counter()
    revocation = offline.load_revocation(NOW + 3 * MIN)
    assert time.perf_counter() - started < 1
    assert answers(everyone, offline, NOW + 3 * MIN) == online
    keyring, _ = offline.load_cached(NOW + 3 * MIN)
    assert revocation.missing(keyring, now=NOW + 3 * MIN) == [("33", world.old.kid)]  # never published

    # a changed cache is not trusted: that shard is left out (and shows as missing), not misread
    store = RevocationStore(world.tmp / "verifiers" / "hospital" / "targets" / "revocation")
    objects = sorted(store.directory.glob("objects/*"))
    snapshot_object = next(p for p in objects if p.read_bytes()[:4] == b"HCRV")
    corrupt(snapshot_object)
    with caplog.at_level(logging.WARNING, logger="verifier.revocation_sync"):
        revocation = offline.load_revocation(NOW + 3 * MIN)
    assert "corrupt" in caplog.text
    assert ("33", world.k1.kid) in revocation.missing(keyring, now=NOW + 3 * MIN)
    # ... and the next refresh fetches it again, though the province published nothing new
    shard = client.refresh(NOW + 4 * MIN).revocation.get("33", world.k1.kid)
    assert (shard.action, shard.seq) == (SNAPSHOT, 1)
    assert answers(everyone, offline, NOW + 4 * MIN) == online
    # a forged but self-consistent state (another set, its own hash) is refused too: no province listed it
    forged = RevocationState("33", world.k1.kid, seq=1, universe=3000, serials=[]).to_snapshot()
    forged_id = hashlib.sha256(forged).hexdigest()
    (store.directory / "objects" / forged_id).write_bytes(forged)
    state = store.directory / "state.json"
    state.write_bytes(state.read_bytes().replace(snapshot_object.name.encode(), forged_id.encode()))
    with caplog.at_level(logging.WARNING, logger="verifier.revocation_sync"):
        assert offline.load_revocation(NOW + 3 * MIN).get("33", world.k1.kid) is None
    assert "does not list this snapshot" in caplog.text
    state.write_bytes(b"{not json")
    with pytest.raises(TrustDataError, match="revocation state file is corrupt"):
        offline.load_revocation(NOW + 3 * MIN)

    # the next refresh from a mirror repairs it (a corrupt cache never keeps a verifier stuck)
    shard = client.refresh(NOW + 5 * MIN).revocation.get("33", world.k1.kid)
    assert shard.action == SNAPSHOT
    assert answers(everyone, offline, NOW + 6 * MIN) == online


def test_the_shard_of_an_expired_key_is_dropped(world):  # noqa: F811 - the imported fixture
    mids, codes = world.mids, world.codes
    world.current = world.old
    old_revoked = world.issue(mids[:1], 1)[mids[0]][0]
    world.revoke(old_revoked, codes[mids[1]][0])
    world.publish(NOW + MIN)
    client = world.verifier("hospital")
    result = client.refresh(NOW + 2 * MIN)
    assert {s.kid: s.action for s in result.revocation.shards} == {world.k1.kid: SNAPSHOT, world.old.kid: SNAPSHOT}
    assert answers([old_revoked], client, NOW + 2 * MIN) == {(world.old.kid, old_revoked.ref.serial): "revoked"}

    later = NOW + 2 * DAY  # past the old key's verify_until: none of its codes verifies any more
    # offline at once: the verifier loads only live shards
    assert [s.kid for s in client.load_revocation(later)] == [world.k1.kid]
    # the issuer retires the shard, the repository drops its files
    run = world.publish(later)
    assert run.retired == (("33", world.old.kid),)
    listed = world.repo.province_targets("33").targets
    assert not [p for p in listed if world.old.kid.hex() in p]
    assert not (world.revocation_dir / "provinces" / "33" / "revocation" / world.old.kid.hex()).exists()
    # the verifier forgets it, and its cached files go
    result = client.refresh(later + MIN)
    assert result.revocation.get("33", world.old.kid).action == DROPPED
    store = RevocationStore(world.tmp / "verifiers" / "hospital" / "targets" / "revocation")
    assert list(store.held()) == [("33", world.k1.kid)]
    assert len(list((store.directory / "objects").iterdir())) == 2  # one snapshot and its province role
