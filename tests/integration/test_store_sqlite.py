"""What only the SQLite store has: PRAGMAs, WAL, its reader pool.

The store contract itself (group commit, serials, idempotency, privacy at
rest, ...) runs on SQLite and PostgreSQL alike in ``test_store_contract.py``.
"""

from __future__ import annotations

import sqlite3

import pytest

from issuer.store import SQLiteStore
from issuer.store.schema import MIGRATIONS


@pytest.fixture
def path(tmp_path):
    return tmp_path / "issuer.db"


@pytest.fixture
def store(path):
    s = SQLiteStore(path)
    yield s
    s.close()


def test_schema_is_created_from_empty(store, path):
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) == store.schema_version
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"residents", "identifiers", "codes", "serial_counters"} <= tables
    indexes = {r[0]: r[1] for r in raw.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")}
    assert "UNIQUE" in indexes["codes_by_serial"] and "UNIQUE" in indexes["codes_by_idempotency_key"]
    assert store._operation(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]).result() == 2  # FULL
    assert store._operation(lambda conn: conn.execute("PRAGMA busy_timeout").fetchone()[0]).result() > 0
    raw.close()


def test_the_sqlite_default_never_imports_psycopg(tmp_path):
    """PostgreSQL support is an extra: nothing on the SQLite path may import it."""
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    program = (
        "import pathlib, sys\n"
        "import issuer.__main__, issuer.app, issuer.revocation_job\n"
        "from issuer.config import load_config\n"
        "from issuer.store import open_revocation_source, open_store\n"
        "config = load_config(None, {'province': '33', 'database': sys.argv[1], 'signing_key': pathlib.Path('k'),\n"
        "                            'vault_key': pathlib.Path('v'), 'insecure_dev_plaintext': True,\n"
        "                            'api_keys': pathlib.Path('c.toml')})\n"
        "assert isinstance(config.database, pathlib.Path), config.database\n"
        "open_store(config.database).close()\n"
        "open_revocation_source(config.database).shards()\n"
        "assert 'psycopg' not in sys.modules, 'psycopg was imported'\n"
    )
    subprocess.run([sys.executable, "-c", program, str(tmp_path / "issuer.db")], check=True, cwd=root, timeout=60)


def test_group_commit_lingers_only_once_writes_arrive_concurrently(path):
    # commit_linger is long here so that timing on a busy machine cannot blur the two cases.
    import time

    from .store_contract_support import code, resident

    with SQLiteStore(path, commit_linger=0.08) as s:
        s.create_resident(resident(), []).result()
        start = time.monotonic()
        s.submit_code(code(0)).result()
        assert time.monotonic() - start < 0.06  # a lone write after an idle spell is not delayed
        burst = [s.submit_code(code(serial)) for serial in range(1, 41)]  # concurrent: batches > 1
        for f in burst:
            f.result()
        batches = s.write_stats().batches
        first = s.submit_code(code(41))  # the writer now lingers: the next one joins this batch
        time.sleep(0.01)
        second = s.submit_code(code(42))
        first.result(), second.result()
        assert s.write_stats().batches == batches + 1
        assert s.write_stats().codes == 43


def test_commit_linger_is_bounded(path):
    with pytest.raises(ValueError):
        SQLiteStore(path, commit_linger=0.5)


def test_closing_the_store_leaves_a_running_read_its_connection(path):
    # A read thread can outlive the RPC that started it (the call was cancelled at shutdown):
    # close() must not close the connection under it (the sqlite3 module would crash), and
    # no read starts after close.
    from issuer.store import StoreClosed

    s = SQLiteStore(path)
    conn = s.dialect.readers.take()  # checked out, as during a query in another thread
    s.close()
    assert conn.execute("SELECT count(*) FROM codes").fetchone() == (0,)
    s.dialect.readers.give_back(conn)  # comes back after close: closed now
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("SELECT 1")
    with pytest.raises(StoreClosed):
        s.get_resident("0" * 26)
