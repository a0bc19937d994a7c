"""Revocation sets: exactness, codecs, files, delta chains, every refusal, and a seeded fuzz."""

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
    FORMAT_VERSION,
    MAGIC,
    MAX_DELTA_BYTES,
    MAX_SNAPSHOT_BYTES,
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

KID = bytes.fromhex("0123456789abcdef")
OTHER_KID = bytes.fromhex("fedcba9876543210")
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, 8, 0, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def sample(rng: random.Random, universe: int, count: int) -> list[int]:
    if universe <= 1 << 40:
        return sorted(rng.sample(range(universe), count))
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.add(rng.randrange(universe))
    return sorted(chosen)


def state(serials=(), *, universe=1000, seq=1, province="33", kid=KID) -> RevocationState:
    return RevocationState(province, kid, seq=seq, universe=universe, serials=serials)


def craft(kind: str, *, province="33", kid=KID, seqs=(1,), universe=1000, count=0, k=None, state_hash=bytes(32),
          body=b"", magic=MAGIC, version=FORMAT_VERSION) -> bytes:
    """A file built field by field from the byte layout in docs/revocation.md."""
    k = rice_parameter(universe, count) if k is None else k
    head = magic + bytes((version, ord("S") if kind == "snapshot" else ord("D"))) + province.encode()
    head += bytes((len(kid),)) + kid
    if kind == "snapshot":
        head += struct.pack(">IQIB", seqs[0], universe, count, k)
    else:
        head += struct.pack(">IIQIB", seqs[0], seqs[1], universe, count, k)
    return head + state_hash + body


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


def chain_of_states(rng: random.Random, steps: int, *, start_universe=10_000):
    states = [RevocationState("33", KID)]  # seq 0: empty, universe 0
    universe, revoked = start_universe, set()
    for seq in range(1, steps + 1):
        universe += rng.choice((0, 0, 1, 50, 5000))
        fresh = rng.choice((0, 1, 3, 30, 200))  # includes empty deltas and a bulk one
        while fresh and len(revoked) < universe:
            revoked.add(rng.randrange(universe))
            fresh -= 1
        states.append(RevocationState("33", KID, seq=seq, universe=universe, serials=sorted(revoked)))
    return states


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


# --------------------------------------------------------------------------- refusals


def assert_unchanged(target: RevocationState, before: tuple) -> None:
    assert (target.seq, target.universe, target.serials(), target.state_hash) == before


def snapshot_of(target: RevocationState) -> tuple:
    return (target.seq, target.universe, target.serials(), target.state_hash)


S1 = state([3, 4, 500], seq=1)
S2 = state([3, 4, 77, 500], seq=2)
S3 = state([3, 4, 77, 500, 999], seq=3, universe=1500)
D12, D23, D13 = encode_delta(S1, S2), encode_delta(S2, S3), encode_delta(S1, S3)


DELTA_REFUSALS = [
    ("gap", S1, D23, RevocationSequenceError, "gap"),
    ("replay", S2, D12, RevocationSequenceError, "replay"),
    ("older", S3, D12, RevocationSequenceError, "replay"),
    ("overlap", S2, D13, RevocationSequenceError, "overlaps"),
    ("wrong shard", state([3, 4, 500], seq=1, kid=OTHER_KID), D12, RevocationDataError, "another shard"),
    ("wrong province", state([3, 4, 500], seq=1, province="34"), D12, RevocationDataError, "another shard"),
    ("wrong base", state([3, 4, 501], seq=1), D12, RevocationDataError, "state hash"),
    ("already revoked", state([3, 4, 77, 500], seq=1), D12, RevocationDataError, "already revoked"),
    ("universe shrinks", state([3, 4, 500], seq=1, universe=1001), D12, RevocationDataError, "shrinks"),
    ("trailing byte", S1, D12 + b"\x00", RevocationDataError, "length"),
    ("truncated body", S1, D12[:-1], RevocationDataError, "length"),
    ("truncated header", S1, D12[:40], RevocationDataError, "truncated"),
    ("a snapshot", S1, S2.to_snapshot(), RevocationDataError, "not a revocation delta"),
    ("oversized", S1, D12 + bytes(MAX_DELTA_BYTES), RevocationDataError, "cap"),
    ("wrong hash", S1, D12[:38] + bytes(32) + D12[70:], RevocationDataError, "state hash"),
]


@pytest.mark.parametrize("name,base,delta,error,message", DELTA_REFUSALS, ids=[c[0] for c in DELTA_REFUSALS])
def test_delta_refusals_leave_the_state_unchanged(name, base, delta, error, message):
    target = RevocationState.from_snapshot(base.to_snapshot())
    before = snapshot_of(target)
    with pytest.raises(error, match=message):
        target.apply_delta(delta)
    assert_unchanged(target, before)


def test_every_truncation_of_every_file_is_refused():
    for data, apply in ((S3.to_snapshot(), RevocationState.from_snapshot),
                        (D12, lambda d: RevocationState.from_snapshot(S1.to_snapshot()).apply_delta(d))):
        for cut in range(len(data)):
            with pytest.raises(RevocationDataError):
                apply(data[:cut])


SNAPSHOT_REFUSALS = [
    ("bad magic", craft("snapshot", magic=b"HCRX"), "magic"),
    ("bad version", craft("snapshot", version=2), "version"),
    ("bad province", craft("snapshot", province="99"), "province"),
    ("non-ascii province", craft("snapshot", province="3") + b"", "province"),
    ("empty kid", craft("snapshot", kid=b""), "kid"),
    ("count over universe", craft("snapshot", universe=10, count=11, body=b"\xff" * 4), "more serials"),
    ("huge count, tiny body", craft("snapshot", universe=2**64 - 1, count=2**32 - 1, body=b"\x01"), "length"),
    ("non-canonical k", craft("snapshot", universe=1000, count=3, k=3, body=b"\x07\x00\x00"), "canonical"),
    ("trailing after empty", craft("snapshot", universe=1000, count=0, body=b"\x00"), "trailing"),
    ("oversized", craft("snapshot") + bytes(MAX_SNAPSHOT_BYTES), "cap"),
    ("not bytes", "HCRV", "bytes"),
]


@pytest.mark.parametrize("name,data,message", SNAPSHOT_REFUSALS, ids=[c[0] for c in SNAPSHOT_REFUSALS])
def test_snapshot_form_refusals(name, data, message):
    with pytest.raises(RevocationDataError, match=message):
        RevocationState.from_snapshot(data)


def body_and_hash(serials, universe, *, seq=1):
    count, k = len(serials), rice_parameter(universe, len(serials))
    return rice_encode(serials, count, k), state(serials, universe=universe, seq=seq).state_hash


def test_out_of_range_unary_overflow_and_padding_are_refused():
    serials = [1, 2, 500, 700, 995]
    body, good_hash = body_and_hash(serials, 1000)
    ok = craft("snapshot", universe=1000, count=5, state_hash=good_hash, body=body)
    assert RevocationState.from_snapshot(ok).serials() == serials
    # the same body claimed over a smaller universe (same canonical k): 995 is out of range
    assert rice_parameter(990, 5) == rice_parameter(1000, 5) == 7
    with pytest.raises(RevocationDataError, match="out of range"):
        RevocationState.from_snapshot(craft("snapshot", universe=990, count=5, state_hash=good_hash, body=body))
    # a count one lower than the unary stream holds
    with pytest.raises(RevocationDataError):
        RevocationState.from_snapshot(craft("snapshot", universe=1000, count=4, state_hash=good_hash, body=body))
    # non-zero padding after the remainders (5 * 7 = 35 bits: 5 bits of padding)
    with pytest.raises(RevocationDataError, match="padding"):
        RevocationState.from_snapshot(craft("snapshot", universe=1000, count=5, state_hash=good_hash,
                                            body=body[:-1] + bytes((body[-1] | 0x80,))))
    # a zero byte appended to the unary stream (before the remainders)
    unary_length = len(body) - (5 * 7 + 7) // 8
    padded = body[:unary_length] + b"\x00" + body[unary_length:]
    with pytest.raises(RevocationDataError, match="length|trailing"):
        RevocationState.from_snapshot(craft("snapshot", universe=1000, count=5, state_hash=good_hash, body=padded))
    big_body, big_hash = body_and_hash(serials, 10**6)  # a universe where the length bound is loose
    unary_length = len(big_body) - (5 * rice_parameter(10**6, 5) + 7) // 8
    padded = big_body[:unary_length] + b"\x00" + big_body[unary_length:]
    with pytest.raises(RevocationDataError, match="trailing"):
        RevocationState.from_snapshot(craft("snapshot", universe=10**6, count=5, state_hash=big_hash, body=padded))
    # a wrong hash over a well-formed body
    with pytest.raises(RevocationDataError, match="hash"):
        RevocationState.from_snapshot(craft("snapshot", universe=1000, count=5, state_hash=bytes(32), body=body))


@pytest.mark.parametrize(
    "serials,universe,message",
    [
        ([5, 3], 10, "increasing"),
        ([3, 3], 10, "increasing"),
        ([10], 10, "out of range"),
        ([-1], 10, "integers"),
        ([1.5], 10, "integers"),
        ([2**32], 2**32, "integers|out of range"),
    ],
)
def test_states_refuse_unsorted_duplicate_and_out_of_range_serials(serials, universe, message):
    with pytest.raises(RevocationDataError, match=message):
        RevocationState("33", KID, seq=1, universe=universe, serials=serials)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(province="99"), "province"),
        (dict(kid=b""), "kid"),
        (dict(kid="abc"), "kid"),
        (dict(seq=-1), "seq"),
        (dict(seq=2**32), "seq"),
        (dict(universe=2**64), "universe"),
    ],
)
def test_states_refuse_bad_shards_and_counters(kwargs, message):
    args = dict(province="33", kid=KID, seq=1, universe=10)
    args.update(kwargs)
    with pytest.raises(RevocationDataError, match=message):
        RevocationState(args.pop("province"), args.pop("kid"), **args)


def test_encode_delta_refuses_what_no_verifier_could_apply():
    with pytest.raises(RevocationDataError, match="lifts"):
        encode_delta(S2, state([3, 4, 500], seq=3))
    with pytest.raises(RevocationDataError, match="later seq"):
        encode_delta(S2, S1)
    with pytest.raises(RevocationDataError, match="grow"):
        encode_delta(S1, state([3, 4, 500], seq=2, universe=999))
    with pytest.raises(RevocationDataError, match="different shards"):
        encode_delta(S1, state([3, 4, 500], seq=2, kid=OTHER_KID))


def test_snapshot_rollback_fork_and_wrong_shard():
    target = RevocationState.from_snapshot(S2.to_snapshot())
    before = snapshot_of(target)
    with pytest.raises(RevocationSequenceError, match="older"):
        target.load_snapshot(S1.to_snapshot())
    with pytest.raises(RevocationDataError, match="disagrees"):
        target.load_snapshot(state([3, 4, 78, 500], seq=2).to_snapshot())
    with pytest.raises(RevocationDataError, match="another shard"):
        target.load_snapshot(state([1], seq=9, kid=OTHER_KID).to_snapshot())
    assert_unchanged(target, before)
    target.load_snapshot(S2.to_snapshot())  # the same state again: a no-op
    target.load_snapshot(S3.to_snapshot())  # a later one: replaces
    assert snapshot_of(target) == snapshot_of(S3)
    rset = RevocationSet()
    with pytest.raises(RevocationDataError, match="another shard"):
        rset.load_snapshot(S1.to_snapshot(), province="33", kid=OTHER_KID)
    with pytest.raises(RevocationDataError, match="another shard"):
        rset.apply_delta(D12, province="34")
    assert len(rset) == 0
    with pytest.raises(RevocationSequenceError, match="gap"):
        rset.apply_delta(D12)  # an unknown shard starts at seq 0
    assert len(rset) == 0


# --------------------------------------------------------------------------- fuzz


def mutations(rng: random.Random, data: bytes):
    for _ in range(400):
        b = bytearray(data)
        choice = rng.randrange(7)
        if choice == 0:  # flip bits
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(len(b))
                b[i] ^= 1 << rng.randrange(8)
        elif choice == 1:  # a random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif choice == 2:  # truncate
            del b[rng.randrange(len(b)):]
        elif choice == 3:  # insert bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 4))
        elif choice == 4:  # delete bytes
            i = rng.randrange(len(b))
            del b[i : i + rng.randint(1, 4)]
        elif choice == 5:  # a header field set to an extreme
            i = rng.randrange(4, min(len(b), 70))
            b[i : i + 4] = rng.choice((b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff"))
        else:  # a body byte swapped with its neighbour
            i = rng.randrange(60, len(b) - 1)
            b[i], b[i + 1] = b[i + 1], b[i]
        yield bytes(b)


def test_fuzzed_snapshots_fail_only_with_revocation_data_error():
    rng = random.Random(1234)
    for universe, count in [(1000, 30), (100, 100), (1 << 33, 40), (50_000, 2_000)]:
        original = state(sample(rng, universe, count), universe=universe, seq=9)
        data = original.to_snapshot()
        for mutated in mutations(rng, data):
            try:
                loaded = RevocationState.from_snapshot(mutated)
            except RevocationDataError:
                continue
            # accepted: the coding is canonical and the hash matched, so it is the very same file
            assert mutated == data and loaded.to_snapshot() == data


def test_fuzzed_deltas_fail_only_with_revocation_data_error_and_change_nothing():
    rng = random.Random(4321)
    states = chain_of_states(rng, 4, start_universe=5000)
    for old, new in zip(states, states[1:]):
        delta = encode_delta(old, new)
        for mutated in mutations(rng, delta):
            target = RevocationState.from_snapshot(old.to_snapshot())
            before = snapshot_of(target)
            try:
                target.apply_delta(mutated)
            except RevocationDataError:
                assert_unchanged(target, before)
                continue
            assert snapshot_of(target) == snapshot_of(new)


def test_read_header_never_crashes_on_garbage():
    rng = random.Random(99)
    for _ in range(2000):
        data = MAGIC + rng.randbytes(rng.randrange(0, 120))
        try:
            read_header(data)
        except RevocationDataError:
            pass


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
