"""Revocation files: every refusal (deltas, truncation, snapshot form, states), and a seeded fuzz."""

from __future__ import annotations

import random
import struct

import pytest

from healthcode.revocation import (
    FORMAT_VERSION,
    MAGIC,
    MAX_DELTA_BYTES,
    MAX_SNAPSHOT_BYTES,
    RevocationDataError,
    RevocationSequenceError,
    RevocationSet,
    RevocationState,
    encode_delta,
    read_header,
    rice_encode,
    rice_parameter,
)
from .revocation_support import KID, OTHER_KID, chain_of_states, sample, state


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
