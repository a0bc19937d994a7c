"""What only the PostgreSQL store has: its schema in a schema of its own, migrations, durability
settings, connections lost and found, and the URL that selects it.

The store contract itself runs on both stores in ``test_store_contract.py``.
These tests need the server (skipped when unreachable, failing under CI=true).
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

import healthcode as hc
from issuer.errors import Unavailable
from issuer.model import CodeRef, RevocationReason
from issuer.store import (
    CodeRecord,
    ResidentRecord,
    RowRejected,
    SQLiteStore,
    StoreInUse,
    WriteFailed,
    is_postgres_url,
    open_revocation_source,
    open_store,
)

pytestmark = pytest.mark.usefixtures("pg_schema")  # every test here needs psycopg, most the server

NOW = dt.datetime(2026, 11, 22, 8, 0, tzinfo=dt.timezone.utc)
KID = b"kid-0001"
MID = hc.main_index_id_from_bytes(bytes([1]) * 16)


@pytest.fixture
def schema(pg_schema):
    pg_schema.drop()
    return pg_schema


@pytest.fixture
def store(schema):
    s = open_store(schema.url)
    yield s
    s.close()


def code(serial: int, *, expires: dt.datetime | None = None) -> CodeRecord:
    return CodeRecord(province="33", kid=KID, serial=serial, main_index_id=MID, issued_at=NOW,
                      expires_at=expires or NOW + dt.timedelta(days=7), text=f"EHC1:TEST{serial}", caller="app")


def backend_pids(store) -> set[int]:
    writer = store._operation(lambda conn: conn.info.backend_pid).result(timeout=10)
    reader = store._read(lambda conn: conn.info.backend_pid)  # reads here are sequential: one pooled reader
    return {writer, reader}


def terminate(schema, pids) -> None:
    with schema.connect() as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


# --------------------------------------------------------------------------- schema and migrations


def test_schema_is_created_in_its_own_schema(store, schema):
    from issuer.store.schema import MIGRATIONS

    with schema.connect() as raw:
        tables = {t for (t,) in raw.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema.name,))}
        assert tables == {
            "residents", "identifiers", "codes", "serial_counters", "challenges", "schema_version", "accesses",
            "national_cursor", "presentations_resolved",
        }
        version = raw.execute("SELECT version FROM schema_version").fetchone()[0]
        assert version == len(MIGRATIONS) == store.schema_version
        types = dict(raw.execute(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s", (schema.name,)).fetchall())
        indexes = dict(raw.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s",
                                   (schema.name,)).fetchall())
        public = {t for (t,) in raw.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    # no document number in clear: a blind index and sealed bytes
    assert types["identifiers.blind_index"] == types["identifiers.sealed"] == "bytea"
    assert types["codes.kid"] == types["codes.request_fingerprint"] == "bytea"
    assert types["codes.serial"] == types["serial_counters.next_serial"] == "bigint"
    assert types["codes.issued_at"] == "timestamp with time zone"
    assert "UNIQUE" in indexes["codes_by_serial"] and "UNIQUE" in indexes["codes_by_idempotency_key"]
    assert "WHERE (revoked_at IS NOT NULL)" in indexes["codes_revoked"]
    assert not public & {"residents", "codes"}  # nothing leaked into the default schema


def test_tables_go_to_the_servers_current_schema_without_a_schema_parameter(schema):
    # the role's search_path decides, as for any PostgreSQL application; here it points at our schema
    from issuer.store.postgres import PostgresStore

    with schema.connect() as raw:
        raw.execute(f'CREATE SCHEMA "{schema.name}"')
    conninfo = schema.server + ("&" if "?" in schema.server else "?") + f"options=-csearch_path%3D{schema.name}"
    with PostgresStore(conninfo) as s:
        assert s.schema is None
        s.create_resident(ResidentRecord(MID, NOW), []).result()
    with schema.connect() as raw:
        assert raw.execute("SELECT count(*) FROM residents").fetchone()[0] == 1


def test_a_role_that_only_owns_its_schema_runs_the_store(schema):
    # the set-up docs/operations.md gives: CREATE SCHEMA issuer_33 AUTHORIZATION issuer_33
    from psycopg.conninfo import make_conninfo

    from issuer.store.postgres import PostgresStore

    role = f"{schema.name}_role"
    with schema.connect() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE SCHEMA "{schema.name}" AUTHORIZATION "{role}"')
        assert not admin.execute("SELECT has_database_privilege(%s, current_database(), 'CREATE')",
                                 (role,)).fetchone()[0]
    try:
        for _ in range(2):  # creates the tables, then finds them
            with PostgresStore(make_conninfo(schema.server, user=role), schema=schema.name) as s:
                s.create_resident(ResidentRecord(hc.main_index_id_from_bytes(bytes([_]) * 16), NOW), []).result()
        with schema.connect() as raw:
            assert raw.execute("SELECT count(*) FROM residents").fetchone()[0] == 2
            assert raw.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'codes' AND schemaname = %s",
                               (schema.name,)).fetchone()[0] == role
    finally:
        schema.drop()
        with schema.connect() as admin:
            admin.execute(f'DROP ROLE "{role}"')


# --------------------------------------------------------------------------- durability and connections


def test_synchronous_commit_off_is_raised_to_on_for_the_writer(schema):
    # a role or session default of off would acknowledge codes before their WAL is flushed
    url = schema.url + "&options=-c%20synchronous_commit%3Doff"
    with open_store(url) as s:
        assert s._operation(lambda conn: conn.execute("SHOW synchronous_commit").fetchone()[0]).result() == "on"
        assert s._operation(lambda conn: conn.execute("SHOW TimeZone").fetchone()[0]).result() == "UTC"
        assert s._operation(lambda conn: conn.execute("SHOW search_path").fetchone()[0]).result() == schema.name


def test_readers_are_read_only(store):
    import psycopg

    conn = store.dialect.readers.take()
    try:
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO residents (main_index_id, created_at) VALUES ('x', now())")
    finally:
        store.dialect._give_back(conn)


def test_writer_and_readers_reconnect_after_the_server_dropped_them(store, schema):
    store.create_resident(ResidentRecord(MID, NOW), []).result()
    store.submit_code(code(0)).result()
    assert store.get_code(CodeRef("33", KID, 0)) is not None  # a pooled reader exists
    terminate(schema, backend_pids(store))  # what a server restart or a failover does to idle connections
    store.submit_code(code(1)).result(timeout=10)  # dead at BEGIN: nothing was sent, so it reconnects
    assert store.get_code(CodeRef("33", KID, 1)).text == "EHC1:TEST1"
    assert store.next_serial("33", KID) == 2
    assert store.revoke_code(CodeRef("33", KID, 0), reason=RevocationReason.FRAUD, at=NOW).result(timeout=10)


def test_an_unreachable_database_is_unavailable_and_refuses_writes(store, schema):
    store.create_resident(ResidentRecord(MID, NOW), []).result()
    pids = backend_pids(store)
    store.dialect.conninfo = "postgresql://postgres@127.0.0.1:1/test"  # every reconnection now fails
    terminate(schema, pids)
    with pytest.raises(Unavailable):
        store.get_resident(MID)
    with pytest.raises(WriteFailed) as info:  # unknown fate: never a RowRejected, so no serial is reused
        store.submit_code(code(0)).result(timeout=30)
    assert not isinstance(info.value, RowRejected)


def test_a_lock_held_past_the_timeout_fails_the_batch_not_the_store(schema):
    with open_store(schema.url, lock_timeout_ms=200) as s:
        s.create_resident(ResidentRecord(MID, NOW), []).result()
        with schema.connect() as other:
            other.execute("BEGIN")
            other.execute("LOCK TABLE codes IN EXCLUSIVE MODE")
            with pytest.raises(WriteFailed):
                s.submit_code(code(0)).result(timeout=30)
            other.execute("COMMIT")
        assert s.write_stats().fallbacks == 0  # a lock timeout is no row's fault: no row-by-row retry
        s.submit_code(code(0)).result(timeout=30)
        assert s.next_serial("33", KID) == 1


# --------------------------------------------------------------------------- revocations


def test_revocation_source_reads_one_snapshot_and_creates_nothing(store, schema):
    store.create_resident(ResidentRecord(MID, NOW), []).result()
    for serial in range(4):
        store.submit_code(code(serial)).result()
    store.revoke_code(CodeRef("33", KID, 2), reason=RevocationReason.LOST_DEVICE, at=NOW).result()
    store.revoke_code(CodeRef("33", KID, 0), reason=RevocationReason.FRAUD, at=NOW).result()
    source = open_revocation_source(schema.url)
    assert source.shards() == [("33", KID)]
    assert source.revoked("33", KID) == (4, [0, 2])
    assert source.revoked("33", b"other") == (0, [])
    import psycopg

    missing = open_revocation_source(schema.server + ("&" if "?" in schema.server else "?") + "schema=hc_test_missing")
    with pytest.raises(psycopg.errors.UndefinedTable):
        missing.shards()
    with schema.connect() as raw:
        assert raw.execute("SELECT 1 FROM pg_namespace WHERE nspname = 'hc_test_missing'").fetchone() is None


# --------------------------------------------------------------------------- the database setting


@pytest.mark.parametrize("database, expected", [
    ("postgresql://u@h/db", ("postgresql://u@h/db", None)),
    ("postgresql://u@h/db?schema=issuer_33", ("postgresql://u@h/db", "issuer_33")),
    ("postgres://u:p%40ss@h:6432/db?sslmode=require&schema=s1&options=-c%20x%3Dy",
     ("postgres://u:p%40ss@h:6432/db?sslmode=require&options=-c%20x%3Dy", "s1")),
], ids=["plain", "schema", "other-parameters-kept-verbatim"])
def test_split_postgres_url(database, expected):
    from issuer.store.postgres import split_postgres_url

    assert is_postgres_url(database)
    assert split_postgres_url(database) == expected


@pytest.mark.parametrize("name", ["", "Issuer", "a-b", "1abc", "pg_temp", "x" * 64, 'a"b'])
def test_schema_names_are_plain_identifiers(name):
    from issuer.store.postgres import split_postgres_url

    with pytest.raises(ValueError, match="schema"):
        split_postgres_url(f"postgresql://u@h/db?schema={name}")


def test_open_store_picks_the_store_from_the_setting(tmp_path, schema):
    from issuer.store.postgres import PostgresStore

    with open_store(tmp_path / "issuer.db") as s:
        assert isinstance(s, SQLiteStore)
    with open_store(str(tmp_path / "other.db")) as s:
        assert isinstance(s, SQLiteStore)
    with open_store(schema.url) as s:
        assert isinstance(s, PostgresStore) and s.schema == schema.name
    userinfo = schema.url.partition("://")[2].partition("@")
    if userinfo[1] and ":" not in userinfo[0]:  # a user without a password: give it one
        secret_url = schema.url.replace("@", ":not-the-password@", 1)
        with open_store(secret_url) as s:  # trust auth ignores it; the repr never shows it
            assert "not-the-password" not in repr(s) and schema.name in repr(s)
    assert not is_postgres_url(tmp_path / "postgresql:")  # a path is never a URL


def test_config_keeps_a_postgres_url_and_checks_it(tmp_path):
    import pathlib

    from issuer.config import ConfigError, load_config

    base = {"province": "33", "signing_key": pathlib.Path("k.pem"), "vault_key": pathlib.Path("v.key"),
            "insecure_dev_plaintext": True, "api_keys": pathlib.Path("c.toml")}
    url = "postgresql://issuer@db.example:5432/healthcode?schema=issuer_33"
    assert load_config(None, {**base, "database": url}).database == url
    assert load_config(None, {**base, "database": "issuer.db"}).database == pathlib.Path("issuer.db")
    config_file = tmp_path / "conf" / "issuer.toml"
    config_file.parent.mkdir()
    config_file.write_text(f'province = "33"\ndatabase = "{url}"\n[keys]\nsigning_key = "k.pem"\n'
                           'vault_key = "v.key"\n[auth]\napi_keys = "c.toml"\n')
    from_file = load_config(config_file, {"insecure_dev_plaintext": True})
    assert from_file.database == url  # not joined to the file's directory like a path
    assert from_file.vault_key == config_file.parent / "v.key"
    with pytest.raises(ConfigError, match="database: the PostgreSQL schema"):
        load_config(None, {**base, "database": "postgresql://h/db?schema=Bad-Name"})


def test_cli_takes_a_postgres_url_for_database():
    import click

    from issuer.__main__ import _DATABASE

    url = "postgresql://issuer@db:5432/hc?schema=issuer_33"
    assert _DATABASE.convert(url, None, None) == url
    converted = _DATABASE.convert("data/issuer.db", None, None)
    assert str(converted) == "data/issuer.db" and not isinstance(converted, str)
    assert isinstance(_DATABASE, click.ParamType)


def test_the_lease_is_taken_again_after_a_reconnect_and_never_shared(store, schema):
    store.create_resident(ResidentRecord(MID, NOW), []).result()
    store.submit_code(code(0)).result()
    terminate(schema, backend_pids(store))  # the writer's session, and the lease with it, are gone
    other = _open_when_free(schema.url)  # so another issuer may take the schema meanwhile
    try:
        with pytest.raises(WriteFailed) as info:  # the first must not write beside it
            store.submit_code(code(1)).result(timeout=10)
        assert not isinstance(info.value, RowRejected)  # unknown to the allocator: serial 1 is not reused
        assert other.next_serial("33", KID) == 1
    finally:
        other.close()
    store.submit_code(code(2)).result(timeout=10)  # lease free again: reconnected, taken, written
    assert store.get_code(CodeRef("33", KID, 2)).text == "EHC1:TEST2"
    with pytest.raises(StoreInUse):
        open_store(schema.url)


def _open_when_free(url: str, timeout: float = 10.0):
    """Open a store once a terminated session's lease is gone (the backend exits just after the signal)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return open_store(url)
        except StoreInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
