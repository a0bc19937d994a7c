"""From a real issuer store to a verifier: revoke, publish snapshot and delta, refresh, verify.

The ``world`` runs on each store (SQLite, PostgreSQL: the ``backend`` fixture) with its revocation source.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib

import pytest

import healthcode as hc
from healthcode import Algorithm, Reason
from healthcode.revocation import (
    RevocationSet,
    RevocationState,
    delta_target,
    read_header,
    snapshot_target,
)
from issuer.documents import make_resident_id, parse_document
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import RevocationReason
from issuer.privacy import IdentifierVault
from issuer.revocation_publisher import (
    RevocationPublishError,
    RevocationPublisher,
    SQLiteRevocationSource,
)

NOW = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
VAULT_KEYS = {"blind_index_key": b"I" * 32, "encryption_key": b"E" * 32}


def es256(label: str) -> hc.SoftwareSigner:
    secret = hashlib.sha256(f"revocation publisher test {label}".encode()).digest()
    return hc.SoftwareSigner(hc.signing_key_from_private_bytes(Algorithm.ES256, secret))


def keyring(*signers: hc.SoftwareSigner) -> hc.Keyring:
    return hc.Keyring([
        hc.TrustedKey(kid=s.kid, province="33", public_key=s.public_key(), use_from=NOW - dt.timedelta(days=1),
                      use_until=NOW + dt.timedelta(days=30), verify_until=NOW + dt.timedelta(days=60))
        for s in signers
    ])


def document(seq: int):
    number = make_resident_id("330102", dt.date(1980, 1, 1) + dt.timedelta(days=seq), seq % 1000)
    return parse_document("resident_id", number, today=NOW.date())


class Issuer:
    """A real store, main index and code issuer, driven synchronously."""

    def __init__(self, store, signers):
        self.store = store
        self.index = ResidentIndex(store=self.store, vault=IdentifierVault(**VAULT_KEYS))
        self.current = signers[0]
        self.issuer = CodeIssuer(store=self.store, province="33", signer_for=lambda now: self.current)
        self.loop = asyncio.new_event_loop()

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def resident(self, seq: int) -> str:
        return self.run(self.index.register_resident(document(seq), now=NOW))

    def issue(self, mid: str):
        return self.run(self.issuer.issue_code(caller="test", main_index_id=mid, idempotency_key=None, now=NOW))

    def close(self):
        self.loop.close()
        self.store.close()


@pytest.fixture
def world(backend, tmp_path):
    signers = [es256("k1"), es256("k2")]
    issuer = Issuer(backend.open(), signers)
    issuer.source = backend.revocation_source()
    publisher = RevocationPublisher(source=issuer.source, directory=tmp_path / "targets", fsync=False)
    try:
        yield issuer, publisher, signers
    finally:
        issuer.close()


def read(publisher: RevocationPublisher, target: str) -> bytes:
    return (publisher.directory / target).read_bytes()


def outcomes(codes, ring, revocation) -> dict[int, Reason | None]:
    return {code.ref.serial: hc.check(code.text, ring, now=NOW + dt.timedelta(hours=1), revocation=revocation).reason
            for code in codes}


def test_revoke_publish_refresh_verify(world):
    issuer, publisher, signers = world
    ring = keyring(*signers)
    kid = signers[0].kid
    alice, bob, carol = (issuer.resident(i) for i in (1, 2, 3))
    codes = {mid: [issuer.issue(mid), issuer.issue(mid)] for mid in (alice, bob, carol)}
    everyone = [c for cs in codes.values() for c in cs]
    assert sorted(c.ref.serial for c in everyone) == list(range(6))

    # first publication: an empty snapshot, and the delta from the implicit empty seq 0
    (first,) = publisher.publish()
    assert (first.province, first.kid, first.seq, first.universe, first.revoked) == ("33", kid, 1, 6, 0)
    assert first.written == (delta_target("33", kid, 0), snapshot_target("33", kid))
    verifier = RevocationSet()
    verifier.load_snapshot(read(publisher, snapshot_target("33", kid)))
    assert set(outcomes(everyone, ring, verifier).values()) == {None}
    assert publisher.publish() == []  # nothing changed: nothing written

    # revoke one code: one publish, one refresh
    lost = codes[alice][0]
    issuer.run(issuer.issuer.revoke_code(ref=lost.ref, reason=RevocationReason.LOST_DEVICE, now=NOW))
    (second,) = publisher.publish()
    assert (second.seq, second.added, second.revoked) == (2, 1, 1)
    verifier.apply_delta(read(publisher, delta_target("33", kid, 1)))
    seen = outcomes(everyone, ring, verifier)
    assert seen.pop(lost.ref.serial) is Reason.REVOKED and set(seen.values()) == {None}

    # revoke every code of a resident
    assert issuer.run(issuer.issuer.revoke_resident_codes(main_index_id=bob, reason=RevocationReason.DECEASED,
                                                          now=NOW)) == 2
    (third,) = publisher.publish()
    assert (third.seq, third.added, third.revoked) == (3, 2, 3)
    verifier.apply_delta(read(publisher, delta_target("33", kid, 2)))
    revoked = {lost.ref.serial} | {c.ref.serial for c in codes[bob]}
    expected = {c.ref.serial: (Reason.REVOKED if c.ref.serial in revoked else None) for c in everyone}
    assert outcomes(everyone, ring, verifier) == expected

    # a new verifier: the snapshot alone, or every delta from nothing, gives the same answers
    fresh = RevocationSet()
    fresh.load_snapshot(read(publisher, snapshot_target("33", kid)), province="33", kid=kid)
    assert outcomes(everyone, ring, fresh) == expected
    follower = RevocationSet()
    for seq in range(3):
        follower.apply_delta(read(publisher, delta_target("33", kid, seq)))
    assert follower.get("33", kid).state_hash == fresh.get("33", kid).state_hash == verifier.get("33", kid).state_hash

    # what the run wrote, as target names (issuer.revocation_job.push_directory lists the snapshot
    # and serves the delta unlisted)
    assert sorted(third.written) == [delta_target("33", kid, 2), snapshot_target("33", kid)]
    assert third.removed == ()

    # a verifier that follows the chain through a fetch callable (the sync's unlisted fetch in production)
    chained = RevocationSet()
    assert chained.follow_deltas("33", kid, lambda name: (publisher.directory / name).read_bytes()
                                 if (publisher.directory / name).exists() else None) == 3
    assert outcomes(everyone, ring, chained) == expected

    # a verifier that missed the day catches up with one merged delta
    behind = RevocationSet([RevocationState.from_snapshot(_state_at(publisher, kid, 1).to_snapshot())])
    behind.apply_delta(publisher.catch_up_delta("33", kid, 1))
    assert outcomes(everyone, ring, behind) == expected


def _state_at(publisher, kid, seq) -> RevocationState:
    state = RevocationState("33", kid)
    for s in range(seq):
        state.apply_delta(read(publisher, delta_target("33", kid, s)))
    return state


def test_renewals_and_key_rotation_make_shards(world):
    issuer, publisher, signers = world
    mid = issuer.resident(7)
    old = issuer.issue(mid)
    issuer.current = signers[1]  # the province rotates its signing key
    renewed = issuer.run(issuer.issuer.renew_code(caller="test", ref=old.ref, idempotency_key=None, now=NOW))
    other = issuer.issue(mid)
    published = {p.kid: p for p in publisher.publish()}
    assert set(published) == {signers[0].kid, signers[1].kid}
    assert (published[signers[0].kid].revoked, published[signers[1].kid].revoked) == (1, 0)  # superseded
    verifier = RevocationSet()
    for signer in signers:
        verifier.load_snapshot(read(publisher, snapshot_target("33", signer.kid)))
    ring = keyring(*signers)
    later = NOW + dt.timedelta(hours=1)
    assert [hc.check(c.text, ring, now=later, revocation=verifier).reason for c in (old, renewed, other)] == [
        Reason.REVOKED, None, None]
    assert (old.ref.serial, renewed.ref.serial, other.ref.serial) == (0, 0, 1)  # a fresh shard starts at 0
    assert verifier.missing(ring, now=NOW) == []


def test_retention_and_retirement(world, tmp_path):
    issuer, _, signers = world
    publisher = RevocationPublisher(source=issuer.source, directory=tmp_path / "kept", keep_deltas=2, fsync=False)
    kid = signers[0].kid
    mid = issuer.resident(9)
    codes = [issuer.issue(mid) for _ in range(5)]
    removed = []
    for code in codes:
        issuer.run(issuer.issuer.revoke_code(ref=code.ref, reason=RevocationReason.FRAUD, now=NOW))
        (result,) = publisher.publish()
        removed += result.removed
    assert result.seq == 5
    kept = sorted(p.name for p in (publisher.directory / "provinces/33/revocation" / kid.hex()).iterdir())
    assert kept == ["delta-0000000003.hcrd", "delta-0000000004.hcrd", "snapshot.hcrs"]
    assert removed == [delta_target("33", kid, s) for s in range(3)]
    with pytest.raises(RevocationPublishError, match="no longer retained"):
        publisher.catch_up_delta("33", kid, 1)
    assert read_header(publisher.catch_up_delta("33", kid, 3)).count == 2
    assert publisher.retire("33", kid) == [delta_target("33", kid, 3), delta_target("33", kid, 4),
                                           snapshot_target("33", kid)]
    assert not (publisher.directory / "provinces/33/revocation" / kid.hex()).exists()


def test_publisher_refuses_a_tampered_snapshot_and_a_lifted_revocation(world):
    issuer, publisher, signers = world
    kid = signers[0].kid
    mid = issuer.resident(11)
    code = issuer.issue(mid)
    issuer.run(issuer.issuer.revoke_code(ref=code.ref, reason=RevocationReason.FRAUD, now=NOW))
    publisher.publish()
    path = publisher.directory / snapshot_target("33", kid)
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes((good[-1] ^ 1,)))
    with pytest.raises(RevocationPublishError, match="unreadable"):
        publisher.publish()
    # a published revocation missing from the store (a restored backup, say) is not silently "unrevoked"
    path.write_bytes(RevocationState("33", kid, seq=1, universe=1, serials=[0]).to_snapshot())

    class Forgetful:
        def shards(self):
            return [("33", kid)]

        def revoked(self, province, k):
            return 2, [1]

    with pytest.raises(RevocationPublishError, match="lost a published revocation"):
        RevocationPublisher(source=Forgetful(), directory=publisher.directory, fsync=False).publish()


def test_source_never_creates_a_database(tmp_path):
    import sqlite3

    with pytest.raises(sqlite3.OperationalError):
        SQLiteRevocationSource(tmp_path / "missing.db").shards()
    assert not (tmp_path / "missing.db").exists()
