"""Revocation sets: exactness, codecs, files, delta chains, and the set in the verifier.

Every refusal and a seeded fuzz are in ``test_revocation_refusals.py``; shared
helpers in ``revocation_support.py``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import struct
from array import array

import pytest

import healthcode as hc
from healthcode import Algorithm, Reason
from healthcode.revocation import (
    RevocationDataError,
    RevocationSequenceError,
    RevocationSet,
    RevocationState,
    delta_target,
    encode_delta,
    read_header,
    rice_decode,
    rice_encode,
    rice_parameter,
    snapshot_target,
)
from healthcode.golomb_rice import pack_fields, unpack_fields
from tools.bench.elias_fano import elias_fano_decode, elias_fano_encode
from .revocation_support import KID, OTHER_KID, chain_of_states, sample, state


UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)


# --------------------------------------------------------------------------- bit-level codecs


def naive_pack(values: list[int], width: int) -> bytes:
    x = 0
    for i, v in enumerate(values):
        x |= v << (i * width)
    return x.to_bytes((len(values) * width + 7) // 8, "little")


@pytest.mark.parametrize("width", range(65))
def test_fixed_width_fields_match_a_naive_packer(width):
    rng = random.Random(width)
    for count in (0, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000):
        values = [rng.getrandbits(width) for _ in range(count)]
        if width and count:
            values[0], values[-1] = (1 << width) - 1, 0  # extremes
        packed = pack_fields(values, count, width)
        assert packed == naive_pack(values, width)
        assert list(unpack_fields(packed, count, width)) == values


@pytest.mark.parametrize(
    "universe,count",
    [(0, 0), (1, 0), (1, 1), (2, 1), (2, 2), (17, 17), (100, 1), (100, 50), (1000, 7), (1 << 20, 3000),
     (1 << 32, 100), ((1 << 32) + 1, 100), (2**64 - 1, 40), (14_000_000, 100_000)],
)
def test_rice_and_elias_fano_round_trip(universe, count):
    rng = random.Random(universe * 31 + count)
    serials = sample(rng, universe, count)
    k = rice_parameter(universe, count)
    coded = rice_encode(serials, count, k)
    decoded = rice_decode(coded, count, universe, k)
    assert decoded.tolist() == serials
    assert decoded.itemsize == (4 if universe <= 1 << 32 else 8)
    assert elias_fano_decode(elias_fano_encode(serials, count, universe), count, universe).tolist() == serials


def test_rice_parameter_is_near_the_best_k():
    # the canonical k costs at most 1% more than the best k on random sets
    rng = random.Random(7)
    for universe, count in [(1_000_000, 7_000), (1_000_000, 300_000), (14_000_000, 100), (50_000, 49_000)]:
        serials = sample(rng, universe, count)
        sizes = {k: len(rice_encode(serials, count, k)) for k in range(0, 24)}
        assert sizes[rice_parameter(universe, count)] <= 1.01 * min(sizes.values()) + 2
    assert rice_parameter(1_400_000_000, 10_000_000) == 7
    assert rice_parameter(10, 10) == 0 and rice_parameter(5, 0) == 0
    assert rice_parameter(2**64 - 1, 1) == 63


# --------------------------------------------------------------------------- exactness


@pytest.mark.parametrize(
    "universe,count",
    [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (64, 0), (64, 1), (64, 64), (64, 63), (500, 250),
     (3000, 20), (3000, 2999)],
)
def test_exact_on_small_universes_exhaustively(universe, count):
    rng = random.Random(universe + 7 * count)
    for _ in range(3):
        serials = sample(rng, universe, count)
        loaded = RevocationState.from_snapshot(state(serials, universe=universe).to_snapshot())
        revoked = set(serials)
        assert [s for s in range(universe + 3) if loaded.is_revoked(s)] == serials
        assert all((s in loaded) == (s in revoked) for s in range(universe))


@pytest.mark.parametrize(
    "universe,count", [(1 << 24, 50_000), (1 << 32, 3000), ((1 << 40) + 3, 3000), (2**64 - 1, 500)]
)
def test_exact_on_large_universes(universe, count):
    rng = random.Random(count)
    serials = sample(rng, universe, count - 2) + []
    serials = sorted(set(serials) | {0, universe - 1})
    rset = RevocationSet([RevocationState.from_snapshot(state(serials, universe=universe).to_snapshot())])
    assert all(rset.is_revoked("33", KID, s) for s in serials)
    revoked = set(serials)
    probes = {s + d for s in serials[:: max(1, len(serials) // 500)] for d in (-1, 1)}
    probes |= {rng.randrange(universe) for _ in range(5000)} | {universe, universe + 1, 2**64, -1}
    serials_, directory, shift = rset.get("33", KID)._index
    probes |= {(b << shift) + d for b in range(0, len(directory), max(1, len(directory) // 300)) for d in (-1, 0)}
    for probe in probes - revoked:
        assert not rset.is_revoked("33", KID, probe)
    assert not rset.is_revoked("33", OTHER_KID, serials[0])
    assert not rset.is_revoked("34", KID, serials[0])


def test_full_and_empty_shards():
    full = RevocationState.from_snapshot(state(range(4096), universe=4096).to_snapshot())
    assert len(full) == 4096 and all(full.is_revoked(s) for s in range(4096)) and not full.is_revoked(4096)
    empty = RevocationState.from_snapshot(state((), universe=10**9).to_snapshot())
    assert len(empty) == 0 and not empty.is_revoked(0)


def test_known_answer_snapshot_and_delta():
    # Pins the byte layout of docs/revocation.md; regenerate only with a format version bump.
    old = state([0, 5, 6, 99], universe=100, seq=1)
    new = state([0, 5, 6, 42, 99], universe=120, seq=2)
    assert old.to_snapshot().hex() == (
        "4843525601533333080123456789abcdef0000000100000000000000640000000404"
        + old.state_hash.hex() + "070140c0"  # unary 1,1,1,000001 then 4-bit remainders 0,4,0,12
    )
    assert encode_delta(old, new).hex() == (
        "4843525601443333080123456789abcdef000000010000000200000000000000780000000106"
        + new.state_hash.hex() + "012a"  # one serial, 42: quotient 0, 6-bit remainder 42
    )
    assert old.state_hash == hashlib.sha256(
        b"healthcode revocation state v1\x00" + b"33\x08" + KID + struct.pack(">IQI", 1, 100, 4)
        + struct.pack("<4I", 0, 5, 6, 99)
    ).digest()


def test_target_names():
    assert snapshot_target("33", KID) == "provinces/33/revocation/0123456789abcdef/snapshot.hcrs"
    assert delta_target("33", KID, 41) == "provinces/33/revocation/0123456789abcdef/delta-0000000041.hcrd"


# --------------------------------------------------------------------------- delta chains


def test_fifty_deltas_in_order_equal_the_final_snapshot():
    rng = random.Random(50)
    states = chain_of_states(rng, 50)
    deltas = [encode_delta(a, b) for a, b in zip(states, states[1:])]
    # (a) from nothing: a set starts the shard empty at seq 0
    rset = RevocationSet()
    for delta in deltas:
        rset.apply_delta(delta)
    followed = rset.get("33", KID)
    final = states[-1]
    assert followed.seq == 50 and followed.serials() == final.serials()
    assert followed.state_hash == final.state_hash and followed.to_snapshot() == final.to_snapshot()
    # (b) from a mid-chain snapshot
    mid = RevocationState.from_snapshot(states[20].to_snapshot())
    for delta in deltas[20:]:
        mid.apply_delta(delta)
    assert mid.to_snapshot() == final.to_snapshot()
    # (c) a delta spanning several publications is as good as the steps
    spanning = RevocationState.from_snapshot(states[10].to_snapshot())
    spanning.apply_delta(encode_delta(states[10], states[50]))
    assert spanning.to_snapshot() == final.to_snapshot()


def test_header_is_readable_unverified():
    old, new = state([1, 2], seq=4), state([1, 2, 3], seq=5, universe=1200)
    info = read_header(encode_delta(old, new))
    assert (info.kind, info.province, info.kid, info.from_seq, info.to_seq, info.universe, info.count) == (
        "delta", "33", KID, 4, 5, 1200, 1)
    snap = read_header(new.to_snapshot())
    assert (snap.kind, snap.from_seq, snap.to_seq, snap.count, snap.state_hash) == ("snapshot", None, 5, 3,
                                                                                    new.state_hash)


# --------------------------------------------------------------------------- the set and the verifier


def signer() -> hc.SoftwareSigner:
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(Algorithm.ES256, hashlib.sha256(b"rev").digest()))


def keyring_of(*keys: tuple[hc.SoftwareSigner, str, dt.datetime]) -> hc.Keyring:
    return hc.Keyring([
        hc.TrustedKey(kid=s.kid, province=p, public_key=s.public_key(), use_from=T0 - DAY, use_until=T0 + DAY,
                      verify_until=until)
        for s, p, until in keys
    ])


def test_revocation_set_plugs_into_verify():
    key = signer()
    ring = keyring_of((key, "33", T0 + 30 * DAY))
    rset = RevocationSet([state([7, 4242], universe=5000, kid=key.kid)])
    codes = {
        serial: hc.sign_code(hc.CodeClaims("33", hc.main_index_id_from_bytes(bytes(16)), serial, T0, T0 + DAY), key)
        for serial in (6, 7, 8, 4242, 4999, 70_000)
    }
    results = {serial: hc.check(code, ring, now=T0 + dt.timedelta(hours=1), revocation=rset)
               for serial, code in codes.items()}
    assert {s for s, r in results.items() if r.reason is Reason.REVOKED} == {7, 4242}
    assert all(results[s].valid for s in (6, 8, 4999, 70_000))
    assert rset.is_revoked("33", key.kid, 7) and not rset.is_revoked("33", key.kid, 6)


def test_drop_expired_and_missing_shards():
    live, dead, absent = signer(), hc.SoftwareSigner(hc.generate_signing_key(Algorithm.ES256)), OTHER_KID
    ring = keyring_of((live, "33", T0 + 30 * DAY), (dead, "33", T0 + 2 * DAY))
    rset = RevocationSet([state([1], kid=live.kid), state([2], kid=dead.kid), state([3], kid=absent)])
    assert rset.missing(ring, now=T0) == []
    assert sorted(rset.drop_expired(ring, now=T0 + 3 * DAY)) == sorted([("33", dead.kid), ("33", absent)])
    assert [s.kid for s in rset] == [live.kid]
    assert rset.missing(ring, now=T0) == [("33", dead.kid)]
    with pytest.raises(TypeError):
        rset.drop_expired(ring)
    assert rset.drop_expired({("33", live.kid)}) == [] and len(rset) == 1
    assert rset.drop_expired(set()) == [("33", live.kid)] and len(rset) == 0


def test_set_bookkeeping():
    a, b = state([1, 2, 3]), state([9], kid=OTHER_KID, universe=2**40)
    rset = RevocationSet([a, b])
    assert rset.revoked_count == 4 and len(rset) == 2
    assert rset.nbytes == a.nbytes + b.nbytes and a.nbytes == 3 * 4 + 2 * 4  # serials + a 1-bucket directory
    assert rset.get("33", KID) is a and rset.drop("33", KID) and not rset.drop("33", KID)
    with pytest.raises(RevocationDataError):
        RevocationSet([a, state([5])])
    assert isinstance(a._serials, array) and a.serials() == [1, 2, 3] and list(a) == [1, 2, 3]


def test_delta_diff_matches_set_difference():
    from healthcode.revocation import _added

    rng = random.Random(77)
    for _ in range(300):
        universe = rng.choice((50, 1000, 100_000))
        new = sample(rng, universe, rng.randrange(0, min(universe, 3000)))
        old = sorted(rng.sample(new, rng.randrange(0, len(new) + 1))) if new else []
        old_a, new_a = array("I", old), array("I", new)
        assert _added(old_a, new_a) == sorted(set(new) - set(old))
        if old and rng.random() < 0.5:  # old is no longer a subset
            missing = rng.choice(old)
            assert _added(old_a, array("I", [s for s in new if s != missing])) is None
            stranger = rng.randrange(universe)
            if stranger not in new:
                assert _added(array("I", sorted(old + [stranger])), new_a) is None
    assert _added(array("I", [1, 2]), array("Q", [1, 2, 3])) == [3]


def test_low_level_encoders_refuse_unsorted_serials():
    for serials in ([5, 3], [3, 3]):
        with pytest.raises(RevocationDataError, match="increasing"):
            rice_encode(serials, 2, 3)
        with pytest.raises(RevocationDataError, match="increasing"):
            elias_fano_encode(serials, 2, 10)
    with pytest.raises(RevocationDataError, match="count"):
        rice_encode([1, 2], 3, 3)


@pytest.mark.parametrize("fresh", [0, 1, 5, 60, 400, 3000])
def test_merge_paths_agree(fresh):
    from healthcode.revocation import _merge

    rng = random.Random(fresh)
    universe = 20_000
    both = sample(rng, universe, 4000 + fresh)
    added = sorted(rng.sample(both, fresh))
    old = [s for s in both if s not in set(added)]
    assert _merge(array("I", old), array("I", added), universe).tolist() == both
    assert _merge(array("I", old), array("I", added), 2**40).typecode == "Q"
    if fresh:
        with pytest.raises(RevocationDataError, match="already revoked"):
            _merge(array("I", both), array("I", added), universe)


def test_follow_deltas_walks_the_chain_and_stops_at_the_first_missing_delta():
    rng = random.Random(8)
    states = chain_of_states(rng, 6)
    published = {delta_target("33", KID, a.seq): encode_delta(a, b) for a, b in zip(states, states[1:])}
    asked = []

    def fetch(name):
        asked.append(name)
        return published.get(name)

    rset = RevocationSet()
    assert rset.follow_deltas("33", KID, fetch) == 6
    assert rset.get("33", KID).to_snapshot() == states[-1].to_snapshot()
    assert asked[-1] == delta_target("33", KID, 6) and rset.follow_deltas("33", KID, fetch) == 0
    # behind the retention: the first delta is missing, nothing is applied; the caller loads the snapshot
    del published[delta_target("33", KID, 0)]
    behind = RevocationSet()
    assert behind.follow_deltas("33", KID, fetch) == 0 and behind.get("33", KID) is None
    # a delta from elsewhere in the chain under the expected name: a sequence error, state unchanged
    swapped = RevocationSet([RevocationState.from_snapshot(states[2].to_snapshot())])
    published[delta_target("33", KID, 2)] = published[delta_target("33", KID, 3)]
    with pytest.raises(RevocationSequenceError):
        swapped.follow_deltas("33", KID, fetch)
    assert swapped.get("33", KID).seq == 2
