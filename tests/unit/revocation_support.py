"""Shared helpers of the revocation set tests (test_revocation.py, test_revocation_refusals.py)."""

from __future__ import annotations

import random


from healthcode.revocation import (
    RevocationState,
)


KID = bytes.fromhex("0123456789abcdef")
OTHER_KID = bytes.fromhex("fedcba9876543210")


def sample(rng: random.Random, universe: int, count: int) -> list[int]:
    if universe <= 1 << 40:
        return sorted(rng.sample(range(universe), count))
    chosen: set[int] = set()
    while len(chosen) < count:
        chosen.add(rng.randrange(universe))
    return sorted(chosen)


def state(serials=(), *, universe=1000, seq=1, province="33", kid=KID) -> RevocationState:
    return RevocationState(province, kid, seq=seq, universe=universe, serials=serials)


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
