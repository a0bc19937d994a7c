"""Fixtures shared by the integration tests: a PostgreSQL schema per module, and both stores."""

from __future__ import annotations

import pytest

from .postgres_support import PgSchema, require_postgres
from .store_backends import PostgresBackend, SQLiteBackend


@pytest.fixture(scope="module")
def pg_schema():
    """A schema with a random name for this module's tests, dropped at the module's end.

    Skips (fails under CI=true) if PostgreSQL cannot be reached.
    """
    require_postgres()
    schema = PgSchema()
    try:
        yield schema
    finally:
        schema.drop()


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    """Each store on a fresh, empty database: a new SQLite file, or the module's schema dropped."""
    if request.param == "sqlite":
        return SQLiteBackend(tmp_path / "issuer.db")
    schema = request.getfixturevalue("pg_schema")
    schema.drop()  # every test starts from nothing; the store creates the schema again
    return PostgresBackend(schema)
