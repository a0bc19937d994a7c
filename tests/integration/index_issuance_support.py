"""Shared helpers of the index and issuance tests (test_index_issuance*.py): a store, an index and
an issuer over one SQLite file, and the keys that sign.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest

import healthcode as hc
from healthcode import Algorithm
from issuer.documents import make_resident_id, parse_document
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.privacy import IdentifierVault
from issuer.store import SQLiteStore


NOW = dt.datetime(2026, 11, 22, 8, 0, 0, 250_000, tzinfo=dt.timezone.utc)
TODAY = NOW.date()
VAULT_KEYS = {"blind_index_key": b"I" * 32, "encryption_key": b"E" * 32}
SEED = bytes(range(1, 33))


def signer(seed: bytes = SEED) -> hc.SoftwareSigner:
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(Algorithm.EDDSA, seed))


def keyring(*signers: hc.SoftwareSigner) -> hc.Keyring:
    return hc.Keyring(
        [
            hc.TrustedKey(kid=s.kid, province="33", public_key=s.public_key(), use_from=NOW - dt.timedelta(days=1),
                          use_until=NOW + dt.timedelta(days=30), verify_until=NOW + dt.timedelta(days=60))
            for s in signers
        ]
    )


def resident_id(seq: int, region: str = "330102") -> str:
    return make_resident_id(region, dt.date(1980, 1, 1) + dt.timedelta(days=seq // 1000), seq % 1000)


def rid(seq: int):
    return parse_document("resident_id", resident_id(seq), today=TODAY)


class World:
    """A store, an index and an issuer over one file, opened and closed around a test body."""

    def __init__(self, path, *, signer_=None, signer_for=None, validity=dt.timedelta(days=7)):
        self.path = path
        self.store = SQLiteStore(path)
        self.index = ResidentIndex(store=self.store, vault=IdentifierVault(**VAULT_KEYS))
        if signer_for is None:
            signer_ = signer_ or signer()
        self.issuer = CodeIssuer(store=self.store, province="33", signer=signer_, signer_for=signer_for,
                                 validity=validity)

    def close(self):
        self.store.close()


def run(path, body, **kwargs):
    world = World(path, **kwargs)
    try:
        return asyncio.run(body(world))
    finally:
        world.close()


@pytest.fixture
def path(tmp_path):
    return tmp_path / "issuer.db"
