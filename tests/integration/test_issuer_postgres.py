"""The issuer on PostgreSQL, for real: the gRPC server over TLS with an API key, a ``postgresql://``
database setting, residents registered and codes issued by clients in several threads.

The in-process server is the real :class:`~issuer.server.IssuerServer` (TLS,
auth, service, resident index, code issuer) over the store
:func:`issuer.store.open_store` opens from the configuration's URL; the last
test runs ``python -m issuer serve --database postgresql://...`` as a child
process. Needs the server (skipped when unreachable, failing under CI=true).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time

import pytest

import healthcode as hc
from issuer import app
from issuer.client import IssuerClient
from issuer.config import load_config
from issuer.devenv import DevEnvironment, ServerProcess
from issuer.documents import DocumentType, canonical_form, make_resident_id, parse_document
from issuer.index import ResidentIndex
from issuer.issuance import CodeIssuer
from issuer.privacy import IdentifierVault
from issuer.server import IssuerServer
from issuer.store import open_store

from .postgres_support import PgSchema

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("pg_schema")]  # skip/fail without the server

THREADS = 8
CODES_PER_THREAD = 25


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def resident_document(seq: int, today: dt.date):
    number = make_resident_id("330106", dt.date(1960, 1, 1) + dt.timedelta(days=seq * 41), seq % 1000)
    return parse_document(DocumentType.RESIDENT_ID, number, today=today)


class InProcessIssuer:
    """``healthcode-issuer serve`` in this process: the real server and domain, the store from the URL."""

    def __init__(self, env: DevEnvironment, database: str) -> None:
        self.config = load_config(env.config_path, {"database": database, "listen": "127.0.0.1:0"})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="pg-issuer-loop", daemon=True)
        self.thread.start()
        self.server: IssuerServer | None = None

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(60)

    def start(self) -> "InProcessIssuer":
        config = self.config
        self.store = open_store(config.database)
        signer = app.load_signer_pem(config.signing_key.read_bytes(), None)
        vault = IdentifierVault.from_secret(app.parse_vault_secret(config.vault_key.read_bytes()))
        index = ResidentIndex(store=self.store, vault=vault)
        codes = CodeIssuer(store=self.store, signer=signer, province=config.province, validity=config.code_validity)
        self.server = self._run(IssuerServer.start(app.server_options(config), index=index, codes=codes,
                                                       on_close=self.store.close))
        self.address = f"127.0.0.1:{self.server.port}"
        return self

    def stop(self) -> None:
        if self.server is not None:
            self._run(self.server.shutdown(1.0))
            self.server = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return DevEnvironment.create(tmp_path_factory.mktemp("pg-issuer"), now=utc_now())


@pytest.fixture(scope="module")
def issuer(env, pg_schema):
    running = InProcessIssuer(env, pg_schema.url).start()
    yield running
    running.close()


def client(env: DevEnvironment, issuer: InProcessIssuer) -> IssuerClient:
    return IssuerClient(issuer.address, ca_pem=env.ca_pem, api_key=env.api_key)


def test_register_and_issue_over_tls(env, issuer, pg_schema):
    now = utc_now()
    document = resident_document(1, now.date())
    with client(env, issuer) as c:
        mid = c.find_or_register(document)
        assert c.find_or_register(document) == mid  # found, not registered twice
        code = c.issue(mid, idempotency_key="pg-first")
        again = c.issue(mid, idempotency_key="pg-first")
        status = c.status(code.code_text)
    assert again.code_text == code.code_text and again.ref.serial == code.ref.serial == 0
    verified = hc.verify(code.code_text, env.keyring(), now=utc_now())
    assert verified.serial == 0 and verified.province == "33"
    assert status.ref.serial == 0 and status.main_index_id == mid
    with pg_schema.connect() as raw:
        assert raw.execute("SELECT text, main_index_id, idempotency_key FROM codes").fetchall() == [
            (code.code_text, mid, "pg-first")]
        (blind_index, sealed), = raw.execute("SELECT blind_index, sealed FROM identifiers").fetchall()
    assert document.number.encode() not in sealed + blind_index and canonical_form(document) not in sealed


def test_concurrent_issuance_from_threads_gives_dense_unique_serials(env, issuer, pg_schema):
    now = utc_now()
    with client(env, issuer) as c:
        mids = [c.find_or_register(resident_document(100 + i, now.date())) for i in range(THREADS)]
    with pg_schema.connect() as raw:
        (before,) = raw.execute("SELECT count(*) FROM codes").fetchone()
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def issue_many(n: int) -> None:
        try:
            with client(env, issuer) as c:
                start.wait()
                results[n] = [c.issue(mids[n], idempotency_key=f"thread-{n}-{i}") for i in range(CODES_PER_THREAD)]
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=issue_many, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    issued = [code for codes in results.values() for code in codes]
    serials = sorted(code.ref.serial for code in issued)
    assert serials == list(range(before, before + THREADS * CODES_PER_THREAD))  # dense and unique
    assert {bytes(code.ref.kid) for code in issued} == {env.public_key.key_id()}
    for code in issued[::17]:
        assert hc.verify(code.code_text, env.keyring(), now=utc_now()).serial == code.ref.serial
    with pg_schema.connect() as raw:
        stored = [s for (s,) in raw.execute("SELECT serial FROM codes ORDER BY serial")]
        (counter,) = raw.execute("SELECT next_serial FROM serial_counters").fetchone()
    assert stored == list(range(before + THREADS * CODES_PER_THREAD)) and counter == len(stored)


def test_a_restart_continues_the_serials_and_keeps_idempotency(env, issuer, pg_schema):
    with pg_schema.connect() as raw:
        (highest,) = raw.execute("SELECT max(serial) FROM codes").fetchone()
    issuer.stop()
    issuer.start()  # a new process would do the same: read next_serial from the database
    now = utc_now()
    with client(env, issuer) as c:
        mid = c.find_or_register(resident_document(1, now.date()))
        first = c.issue(mid, idempotency_key="pg-first")  # answered from the database after the restart
        fresh = c.issue(mid, idempotency_key="after-restart")
    assert first.ref.serial == 0
    assert fresh.ref.serial == highest + 1


def test_cli_serve_with_a_postgres_database(tmp_path):
    """``python -m issuer serve --database postgresql://...`` as a real process, with the revocation job:
    issue, revoke, see it published; restart on the same schema and carry on."""
    from healthcode.revocation import read_header, snapshot_target
    from issuer.api import common_pb2, health_codes_pb2

    schema = PgSchema()
    env = DevEnvironment.create(tmp_path, now=utc_now())
    with open(env.config_path, "a") as config:
        config.write('\n[revocation]\ndirectory = "revocation"\npush_mode = "directory-only"\n'
                     "min_interval_seconds = 0\n")
    snapshot = env.directory / "revocation" / snapshot_target("33", env.public_key.key_id())
    try:
        with ServerProcess(env, extra_args=("--database", schema.url)) as server:
            with IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as c:
                # two residents: a resident's second static code would supersede (revoke) the first
                mid = c.find_or_register(resident_document(7, utc_now().date()))
                other = c.find_or_register(resident_document(8, utc_now().date()))
                code = c.issue(mid, idempotency_key="cli-postgres-1")
                lost = c.issue(other, idempotency_key="cli-postgres-2")
                c.codes.RevokeCode(
                    health_codes_pb2.RevokeCodeRequest(ref=lost.ref, reason=common_pb2.REVOCATION_REASON_FRAUD),
                    metadata=(("authorization", f"Bearer {env.api_key}"),), timeout=10)
            deadline = time.monotonic() + 20  # the job reads the revocation from PostgreSQL and publishes it
            while not (snapshot.exists() and read_header(snapshot.read_bytes()).count == 1):
                assert time.monotonic() < deadline, (env.directory / "server.log").read_text()
                time.sleep(0.1)
            assert server.stop() == 0
        assert hc.verify(code.code_text, env.keyring(), now=utc_now()).serial == 0
        assert not env.database.exists()  # nothing went to the config file's SQLite database
        with schema.connect() as raw:
            assert raw.execute("SELECT serial, text, revocation_reason FROM codes ORDER BY serial").fetchall() == [
                (0, code.code_text, None), (1, lost.code_text, "fraud")]
        with ServerProcess(env, extra_args=("--database", schema.url), log_path=tmp_path / "again.log") as server:
            with IssuerClient(server.address, ca_pem=env.ca_pem, api_key=env.api_key) as c:
                assert c.issue(mid, idempotency_key="cli-postgres-1").code_text == code.code_text
                assert c.issue(mid, idempotency_key="cli-postgres-3").ref.serial == 2
    finally:
        schema.drop()
