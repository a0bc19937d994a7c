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
import contextlib
import datetime as dt
import os
import random
import sqlite3
import stat
import subprocess
import sys

import grpc
import pytest

import healthcode as hc
from healthcode.codec import Signer, decode_unverified, parse_core_claims
from issuer.api import common_pb2, health_codes_pb2
from issuer.documents import make_resident_id, parse_document
from issuer.errors import Conflict, InvalidRequest, NotFound
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.model import CodeRef, CodeState, IssuedCode, RevocationReason
from issuer.privacy import IdentifierVault
from issuer.store import SQLiteStore

from .issuer_server_support import APP, Client, bad_request, harness, loop, pki  # noqa: F401 - fixtures

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
            return world.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="order-0007", now=NOW)

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
        retried = [o for mid, o in zip(mids, outcomes, strict=True) if mid == a]
        conflicting = [o for mid, o in zip(mids, outcomes, strict=True) if mid == b]
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
            return world.issuer.issue_code(caller="app", main_index_id=mid, idempotency_key="order-0008", now=NOW)

        outcomes = await asyncio.gather(*(_outcome(request(mid)) for mid in [b, a, b, a, a, b]))
        winner = outcomes[0]
        assert isinstance(winner, IssuedCode) and winner.main_index_id == b
        assert outcomes == [winner, Conflict, winner, Conflict, Conflict, winner]
        assert await _outcome(request(a)) is Conflict and await request(b) == winner

    asyncio.run(body())


# --------------------------------------------------------------------------- item 5: codes named by text


class ZeroSigner(Signer):
    """Signs nothing: a zeroed signature under a chosen kid (a forger without the key)."""

    def __init__(self, kid: bytes, algorithm) -> None:
        self.kid, self.algorithm = kid, algorithm

    def sign(self, data: bytes) -> bytes:
        return bytes(64)


def _claims(text: str, **change) -> hc.CodeClaims:
    unverified = decode_unverified(text)
    province, sub, iat, exp, serial = parse_core_claims(unverified.claims)
    fields = {"province": province, "subject": sub, "serial": serial, "issued_at": hc.model.from_epoch(iat),
              "expires_at": hc.model.from_epoch(exp), **change}
    return hc.CodeClaims(fields["province"], fields["subject"], fields["serial"], fields["issued_at"],
                         fields["expires_at"])


def forged_texts(genuine: IssuedCode, other: IssuedCode, algorithm) -> dict[str, str]:
    """Texts naming ``genuine``'s code (or ``other``'s) that the issuer never issued."""
    kid = genuine.ref.kid
    zero = ZeroSigner(kid, algorithm)
    impostor = hc.SoftwareSigner(hc.generate_signing_key(algorithm), kid=kid)  # a real signature, not ours
    return {
        "zeroed-signature": hc.sign_code(_claims(genuine.text), zero),
        "other-residents-sub": hc.sign_code(_claims(genuine.text, subject=other.main_index_id), zero),
        "other-serial": hc.sign_code(_claims(genuine.text, serial=other.ref.serial), zero),
        "signed-by-another-key-under-our-kid": hc.sign_code(_claims(genuine.text), impostor),
    }


FORGERIES = ["zeroed-signature", "other-residents-sub", "other-serial", "signed-by-another-key-under-our-kid"]


async def _two_codes(w: World) -> tuple[IssuedCode, IssuedCode]:
    """A code of resident A (the genuine one) and one of resident B."""
    a = await w.index.register_resident(document(1), now=NOW)
    b = await w.index.register_resident(document(2), now=NOW)
    genuine = await w.issuer.issue_code(caller="app", main_index_id=a, idempotency_key=None, now=NOW)
    other = await w.issuer.issue_code(caller="app", main_index_id=b, idempotency_key=None, now=NOW)
    return genuine, other


@pytest.mark.parametrize("forgery", FORGERIES)
def test_domain_answers_a_forged_text_not_found_and_changes_nothing(world, forgery):
    """get_code, revoke_code and renew_code (with and without a key) by a text never issued."""

    async def body():
        issuer = world.issuer
        genuine, other = await _two_codes(world)
        text = forged_texts(genuine, other, SIGNER.algorithm)[forgery]
        ref = issuer.ref_from_text(text)
        calls = [
            issuer.get_code(ref, text=text),
            issuer.revoke_code(ref=ref, reason=RevocationReason.FRAUD, now=NOW, text=text),
            issuer.renew_code(caller="app", ref=ref, idempotency_key="renew-0001", now=NOW, text=text),
            issuer.renew_code(caller="app", ref=ref, idempotency_key=None, now=NOW, text=text),
        ]
        for call in calls:
            with pytest.raises(NotFound, match="^code not found$"):
                await call
        for code in (genuine, other):  # neither revoked nor renewed
            assert [c.to_issued_code() for c in world.store.codes_of(code.main_index_id)] == [code]

    asyncio.run(body())


def test_domain_serves_the_genuine_text(world):
    async def body():
        issuer = world.issuer
        genuine, other = await _two_codes(world)
        with pytest.raises(InvalidRequest):  # truncated: not even well-formed
            issuer.ref_from_text(genuine.text[:-7])
        ref = issuer.ref_from_text(genuine.text)
        assert await issuer.get_code(ref, text=genuine.text) == genuine
        renewed = await issuer.renew_code(caller="app", ref=ref, idempotency_key="renew-0001", now=NOW,
                                          text=genuine.text)
        assert renewed.main_index_id == genuine.main_index_id and renewed.ref != genuine.ref
        assert await issuer.renew_code(caller="app", ref=ref, idempotency_key="renew-0001", now=NOW,
                                       text=genuine.text) == renewed  # the idempotent replay
        forged = forged_texts(genuine, other, SIGNER.algorithm)["zeroed-signature"]
        with pytest.raises(NotFound):  # a forged text replaying the key gets nothing, not the renewal
            await issuer.renew_code(caller="app", ref=ref, idempotency_key="renew-0001", now=NOW, text=forged)
        revoked = await issuer.revoke_code(ref=renewed.ref, reason=RevocationReason.LOST_DEVICE, now=NOW,
                                           text=renewed.text)
        assert revoked.state(NOW) is CodeState.REVOKED

    asyncio.run(body())


@pytest.fixture(scope="module")
def served_codes(harness):  # noqa: F811 - the imported fixture
    """A server with the real domain (SQLite), two residents' codes, and the domain's signer."""
    server, domain, _ = harness.start()
    client = Client(server.port, harness.pki)
    genuine = client.issue(client.register())
    other = client.issue(client.register())
    yield client, domain, genuine, other
    client.close()


def _issued(msg) -> IssuedCode:
    return IssuedCode(CodeRef(msg.ref.province, bytes(msg.ref.kid), msg.ref.serial), msg.main_index_id,
                      msg.issued_at.ToDatetime(dt.timezone.utc), msg.expires_at.ToDatetime(dt.timezone.utc),
                      msg.code_text)


def _rpcs(client):
    codes = client.codes
    return {
        "GetCodeStatus": lambda text: codes.GetCodeStatus(
            health_codes_pb2.GetCodeStatusRequest(code_text=text), metadata=APP, timeout=5),
        "RenderCode": lambda text: codes.RenderCode(
            health_codes_pb2.RenderCodeRequest(code_text=text, format=health_codes_pb2.IMAGE_FORMAT_SVG),
            metadata=APP, timeout=5),
        "RevokeCode": lambda text: codes.RevokeCode(
            health_codes_pb2.RevokeCodeRequest(code_text=text, reason=common_pb2.REVOCATION_REASON_FRAUD),
            metadata=APP, timeout=5),
        "RenewCode": lambda text: codes.RenewCode(
            health_codes_pb2.RenewCodeRequest(code_text=text, idempotency_key="renew-forged-1"),
            metadata=APP, timeout=5),
    }


@pytest.mark.parametrize("rpc", ["GetCodeStatus", "RenderCode", "RevokeCode", "RenewCode"])
@pytest.mark.parametrize("forgery", FORGERIES + ["truncated"])
def test_rpcs_by_code_text_neither_reveal_nor_change_the_genuine_code(served_codes, forgery, rpc):
    """Before the fix, GetCodeStatus with another resident's sub and a zeroed signature said VALID."""
    client, domain, genuine_pb, other_pb = served_codes
    genuine, other = _issued(genuine_pb), _issued(other_pb)
    if forgery == "truncated":
        text = genuine.text[:-7]
    else:
        text = forged_texts(genuine, other, domain.signer.algorithm)[forgery]
    with pytest.raises(grpc.RpcError) as info:
        _rpcs(client)[rpc](text)
    if forgery == "truncated":
        assert bad_request(info.value) == [("code_text", "MALFORMED")]
    else:
        assert info.value.code() is grpc.StatusCode.NOT_FOUND and info.value.details() == "code not found"
    for code in (genuine_pb, other_pb):  # both untouched: not revoked, not renewed
        status = client.codes.GetCodeStatus(health_codes_pb2.GetCodeStatusRequest(ref=code.ref),
                                            metadata=APP, timeout=5).code
        assert status.state == common_pb2.CODE_STATE_VALID and status.code_text == code.code_text
        assert len(domain.store.codes_of(code.main_index_id)) == 1


def test_rpcs_by_the_genuine_code_text_work(served_codes):
    client = served_codes[0]
    genuine_pb = client.issue(client.register())  # its own code: the forgery cases expect theirs untouched
    rpcs = _rpcs(client)
    text = genuine_pb.code_text
    status = rpcs["GetCodeStatus"](text).code
    assert status.state == common_pb2.CODE_STATE_VALID and status.code_text == text
    assert rpcs["RenderCode"](text).content_type == "image/svg+xml"
    renewed = rpcs["RenewCode"](text).code
    assert renewed.main_index_id == genuine_pb.main_index_id and renewed.ref.serial != genuine_pb.ref.serial
    revoked = rpcs["RevokeCode"](renewed.code_text)
    assert revoked.revoked_count == 1 and revoked.code.state == common_pb2.CODE_STATE_REVOKED


# --------------------------------------------------------------------------- item 1: owner-only database files


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(database) -> dict[str, str]:
    """The permission bits (octal) of the database, its WAL and its shared memory (all three must exist)."""
    return {suffix: f"{stat.S_IMODE(os.stat(f'{database}{suffix}').st_mode):04o}" for suffix in ("", "-wal", "-shm")}


def _write_through(store: SQLiteStore) -> None:
    """Register a resident and issue a code: the WAL and the shared memory now hold data."""

    async def body():
        mid = await ResidentIndex(store=store, vault=VAULT).register_resident(document(1), now=NOW)
        await CodeIssuer(store=store, province="33", signer=SIGNER).issue_code(
            caller="app", main_index_id=mid, idempotency_key=None, now=NOW)

    asyncio.run(body())


def _widen(path, mode: int = 0o644) -> None:
    os.chmod(path, mode)


# (name, what exists before the store opens)
PERMISSION_CASES = [
    ("new-database", lambda db: None),
    ("existing-database-0644", lambda db: (sqlite3.connect(db).close(), _widen(db))),
    ("existing-database-wal-and-shm-0644", lambda db: _leave_wal_behind(db)),
]


def _leave_wal_behind(db) -> None:
    """A database whose last writer died (kill -9) under umask 022: it, its -wal and -shm all 0644."""
    script = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
              "c.execute('PRAGMA journal_mode = WAL'); c.execute('CREATE TABLE leftover (x)'); "
              "c.execute('INSERT INTO leftover VALUES (1)'); os._exit(0)")
    with umask(0o022):
        subprocess.run([sys.executable, "-c", script, str(db)], check=True, timeout=30)
    assert _modes(db) == {"": "0644", "-wal": "0644", "-shm": "0644"}


@pytest.mark.parametrize("name, before", PERMISSION_CASES, ids=[c[0] for c in PERMISSION_CASES])
def test_sqlite_database_wal_and_shm_are_owner_only(tmp_path, name, before):
    """Under umask 022 SQLite would create all three 0644: readable by every local user."""
    db = tmp_path / "issuer.db"
    before(db)
    with umask(0o022):
        store = SQLiteStore(db)
        try:
            _write_through(store)
            assert _modes(db) == {"": "0600", "-wal": "0600", "-shm": "0600"}
        finally:
            store.close()
    assert f"{stat.S_IMODE(os.stat(db).st_mode):04o}" == "0600"
