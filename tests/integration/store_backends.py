"""The two stores behind one test-facing shape, so the store contract tests run on both.

A backend opens its store on a fresh database (a file; a schema) and gives the
tests what they need from outside the store: raw SQL (``?`` placeholders on
both), another session holding the write lock, the schema version, a dump of
the schema, and every byte the database holds.
"""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3

from issuer.store import SQLiteStore, Store, open_revocation_source, open_store

from .postgres_support import PgSchema


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def open(self, **options) -> Store:
        return SQLiteStore(self.path, **options)

    def revocation_source(self):
        return open_revocation_source(self.path)

    @property
    def migrations(self) -> int:
        from issuer.store.schema import MIGRATIONS

        return len(MIGRATIONS)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return conn.execute(sql, params).fetchall()

    def execute(self, sql: str, params: tuple = ()) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            conn.execute(sql, params)
            conn.commit()

    @contextlib.contextmanager
    def write_lock_held(self):
        """Another connection holds the write lock, so the store's writer queues up behind it."""
        other = sqlite3.connect(self.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("COMMIT")
            other.close()

    def schema_version(self) -> int:
        return self.query("PRAGMA user_version")[0][0]

    def set_schema_version(self, version: int) -> None:
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            conn.execute(f"PRAGMA user_version = {int(version)}")

    def schema_dump(self) -> str:
        return self.query("SELECT group_concat(sql) FROM sqlite_master")[0][0]

    def columns(self, table: str) -> list[str]:
        """The table's columns in order ([] if there is no such table)."""
        return [r[1] for r in self.query(f"PRAGMA table_info({table})")]

    driver_error = sqlite3.Error

    def stored_bytes(self) -> bytes:
        """The file, its WAL and shared memory: what a copy of the disk would hold."""
        blobs = b""
        for suffix in ("", "-wal", "-shm"):
            p = self.path.with_name(self.path.name + suffix)
            if p.exists():
                blobs += p.read_bytes()
        return blobs


class PostgresBackend:
    name = "postgres"

    def __init__(self, schema: PgSchema) -> None:
        self.schema = schema

    def open(self, **options) -> Store:
        return open_store(self.schema.url, **options)  # the issuer's own path: URL with ?schema=

    def revocation_source(self):
        return open_revocation_source(self.schema.url)

    @property
    def migrations(self) -> int:
        from issuer.store.schema import MIGRATIONS

        return len(MIGRATIONS)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.schema.connect() as conn:
            return conn.execute(sql.replace("?", "%s"), params).fetchall()

    def execute(self, sql: str, params: tuple = ()) -> None:
        with self.schema.connect() as conn:
            conn.execute(sql.replace("?", "%s"), params)

    @contextlib.contextmanager
    def write_lock_held(self):
        """Another session locks the codes table (reads still pass), so the writer's INSERT waits."""
        with self.schema.connect() as other:
            other.execute("BEGIN")
            other.execute("LOCK TABLE codes IN EXCLUSIVE MODE")
            try:
                yield
            finally:
                other.execute("COMMIT")

    def schema_version(self) -> int:
        return self.query("SELECT version FROM schema_version")[0][0]

    def set_schema_version(self, version: int) -> None:
        self.execute("UPDATE schema_version SET version = ?", (version,))

    def schema_dump(self) -> str:
        columns = self.query(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
            "WHERE table_schema = ? ORDER BY table_name, ordinal_position", (self.schema.name,))
        indexes = self.query("SELECT indexdef FROM pg_indexes WHERE schemaname = ? ORDER BY indexname",
                             (self.schema.name,))
        return repr(columns + indexes)

    def columns(self, table: str) -> list[str]:
        """The table's columns in order ([] if there is no such table)."""
        return [c for (c,) in self.query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = ? AND table_name = ? "
            "ORDER BY ordinal_position", (self.schema.name, table))]

    @property
    def driver_error(self) -> type[Exception]:
        import psycopg

        return psycopg.Error

    def stored_bytes(self) -> bytes:
        """Every table of the schema, copied out in text and in binary (a bytea travels raw in binary)."""
        with self.schema.connect() as conn:
            tables = [t for (t,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY tablename", (self.schema.name,))]
            blobs = b""
            for table in tables:
                for fmt in ("text", "binary"):
                    with conn.cursor().copy(f'COPY "{table}" TO STDOUT (FORMAT {fmt})') as copy:
                        for chunk in copy:
                            blobs += bytes(chunk)
        return blobs
