"""The national-index benchmark's pgbench scripts run what the store runs, against real PostgreSQL.

The store's SQL is recorded from a real connection (a psycopg cursor that notes each
statement it executes, then executes it); the scripts' statements, with their
server-made parameters written back as placeholders, must be the same text. Then
pgbench itself runs each script: lookups find loaded residents, claims add new ones.
"""

from __future__ import annotations

import re
import subprocess

import pytest

from .postgres_support import PgSchema, require_postgres

psycopg = pytest.importorskip("psycopg")

RESIDENTS = 1000


@pytest.fixture(scope="module")
def loaded():
    require_postgres()
    from national.store import open_postgres_store
    from tools.bench.national_index import _load

    schema = PgSchema()
    store = open_postgres_store(f"{schema.server}?schema={schema.name}", partitions=4, pool_size=2)
    admin = psycopg.connect(schema.server, autocommit=True, options=f"-c search_path={schema.name}")
    try:
        _load(admin, RESIDENTS)
        yield schema, admin
    finally:
        store.close()
        admin.close()
        schema.drop()


def _statements(name: str) -> list[str]:
    from tools.bench.national_pgbench import SCRIPTS

    lines = [line.rstrip(";") for line in SCRIPTS[name].format(n=RESIDENTS).splitlines()]
    return [line for line in lines if line and not line.startswith("\\") and line not in ("BEGIN", "END")]


def _as_placeholders(sql: str) -> str:
    sql = re.sub(r"decode\(.*?'hex'\)", "%s", sql)
    return sql.replace("'33', 1, NULL, 1765000000, 1765000000", "%s, %s, NULL, %s, %s")


def _recorded(schema: PgSchema, work) -> list[str]:
    from national.store import Tx

    seen: list[str] = []

    class Recording(psycopg.Cursor):
        def execute(self, query, params=None, **kwargs):
            seen.append(str(query))
            return super().execute(query, params, **kwargs)

    with psycopg.connect(schema.server, autocommit=True, cursor_factory=Recording,
                         options=f"-c search_path={schema.name}") as conn:
        with conn.transaction():
            work(Tx(conn.cursor(), "%s", " FOR UPDATE"))
    return seen


def test_the_scripts_send_the_stores_statements(loaded):
    from tools.bench.national_index import _loaded_key

    schema, _admin = loaded
    lookup = _recorded(schema, lambda tx: tx.identity_by_document(_loaded_key(7)))
    claim = _recorded(schema, lambda tx: tx.claim_new("A" * 26, "33", [b"\x01" * 32], registered_at=1, now=1))
    assert [_as_placeholders(s) for s in _statements("lookup")] == lookup
    assert [_as_placeholders(s) for s in _statements("claim")] == claim
    assert [_as_placeholders(s) for s in _statements("baseline")] == [
        "SELECT main_index_id FROM documents WHERE blind_index = %s"]


def test_the_scripts_key_is_the_loaders(loaded):
    from tools.bench.national_index import _loaded_key

    _schema, admin = loaded
    i = 7
    made = admin.execute(f"SELECT {re.search(r'decode.*?hex.[)]', _statements('lookup')[0]).group(0)}"
                         .replace(":i", str(i))).fetchone()[0]
    assert bytes(made) == _loaded_key(i)


def test_pgbench_runs_each_script(loaded):
    from tools.bench.national_pgbench import run_pgbench

    schema, admin = loaded
    before = admin.execute("SELECT count(*) FROM identities").fetchone()[0]
    claims = 0
    for name in ("baseline", "lookup", "claim", "claim-before"):
        latencies, _took = run_pgbench(name, url=schema.server, schema=schema.name, residents=RESIDENTS,
                                       clients=2, seconds=1)
        assert latencies and all(ms > 0 for ms in latencies)
        if name.startswith("claim"):
            claims += len(latencies)
    assert admin.execute("SELECT count(*) FROM identities").fetchone()[0] == before + claims
    assert admin.execute("SELECT count(*) FROM documents").fetchone()[0] == before + claims


def test_a_failing_pgbench_raises(loaded):
    from tools.bench.national_pgbench import run_pgbench

    schema, _admin = loaded
    with pytest.raises(subprocess.CalledProcessError):
        run_pgbench("lookup", url=schema.server, schema="hc_no_such_schema", residents=RESIDENTS, clients=1,
                    seconds=1)


def test_the_store_calls_from_several_processes_run_and_claim_new_residents(loaded):
    from tools.bench.national_processes import in_processes

    schema, admin = loaded
    url = f"{schema.server}?schema={schema.name}"
    before = admin.execute("SELECT count(*) FROM documents").fetchone()[0]
    lookups = in_processes("lookup", url=url, residents=RESIDENTS, in_flight=4, processes=2, seconds=0.5)
    assert len(lookups) > 10 and all(ms > 0 for ms in lookups)  # a missing resident raises in the child
    claims = in_processes("claim", url=url, residents=RESIDENTS, in_flight=4, processes=2, seconds=0.5)
    after = admin.execute("SELECT count(*) FROM documents").fetchone()[0]
    assert len(claims) > 10
    assert after - before >= len(claims)  # each timed claim (and each warm-up one) added a resident
    with pytest.raises(ValueError):
        in_processes("lookup", url=url, residents=RESIDENTS, in_flight=5, processes=2, seconds=0.1)


def test_a_failing_process_fails_the_run_at_once(loaded):
    from tools.bench.national_processes import in_processes

    schema, _admin = loaded
    with pytest.raises(RuntimeError, match="lookup process failed"):  # residents it never loaded: lookups miss
        in_processes("lookup", url=f"{schema.server}?schema={schema.name}", residents=RESIDENTS * 1000,
                     in_flight=2, processes=2, seconds=0.5)
